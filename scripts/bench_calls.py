#!/usr/bin/env python
# ruff: noqa: ASYNC220, ASYNC221, ASYNC230, ASYNC240 - an orchestration script: brief blocking calls are fine
"""N concurrent simulated Twilio calls against ONE uvicorn worker, Realtime emulator in its own process.

    .venv/bin/python scripts/bench_calls.py --calls 50 --duration 20
    .venv/bin/python scripts/bench_calls.py --ramp 50,100,150,200,250 --duration 20 --json var/bench_calls.json
    .venv/bin/python scripts/bench_calls.py --calls 200 --audio-format pcm24k,pcmu --drivers 1
    .venv/bin/python scripts/bench_calls.py --calls 200 --profile var/profile   # py-spy the server

Processes per step (all on loopback, all stopped at the end of the step):
  server    ``switchboard serve`` (one uvicorn worker), LOG_LEVEL=INFO so it logs ``call.ended frames_in=``;
            fresh temp DATA_DIR + SQLite (``switchboard migrate`` first), fixed PUBLIC_BASE_URL/TWILIO_AUTH_TOKEN.
  emulator  ``--emulator helper`` (default): RealtimeEmulator(EmulatorConfig(tts="synthetic")) in a multiprocessing
            child that reports, per session, how much input audio it received and how long it took from
            speech_stopped to its first audio delta. ``--emulator cli``: the stock ``switchboard emulator``
            (its default config uses espeak-ng when installed, and it reports nothing back).
  drivers   ``--drivers K`` processes running app.simulator.simulate_call (K=0: in this process).

Every caller frame must be delivered: per call, the server's frames_in == the simulator's frames_sent, no bad
frames, status completed, and (helper emulator) every session's received audio equals what a fresh
CallerAudioPath makes of that many frames. Runs are bounded: each step lasts about duration + stagger + ~10 s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing as mp
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_common import format_table, machine_info, percentile, proc_cpu_seconds

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
SWITCHBOARD = str(VENV_BIN / "switchboard")
PUBLIC_BASE_URL = "https://switchboard.bench.invalid"
AUTH_TOKEN = "bench-twilio-auth-token"
UTTERANCES = (
    "I need to move my appointment.",
    "Thursday afternoon works best.",
    "Thanks, that is all for today.",
)
REPLY_TEXT = "All right, I can help with that."
# "on time": the callers kept their 20 ms clock (worst lag of 99% of calls under one frame) and turns were answered
# promptly; a step can deliver every frame (TCP is reliable) while the machine is far behind real time.
ON_TIME_SEND_LAG_MS = 20.0
ON_TIME_TURN_P99_MS = 250.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _use_uvloop(enabled: bool) -> None:
    """Harness processes use the stock asyncio loop by default: uvloop's loop.time() is libuv's cached
    millisecond clock, which would quantize (and under load, understate) the simulator's latencies."""
    if not enabled:
        return
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def _set_affinity(cpus: set[int] | None) -> None:
    if cpus:
        os.sched_setaffinity(0, cpus)


def _quiet_logs() -> None:
    """Harness processes log warnings only (structlog's default would print every session open/close)."""
    import logging

    import structlog

    logging.basicConfig(level=logging.WARNING)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))


# --------------------------------------------------------------------------------------------------------------
# emulator helper process


def emulator_main(conn: Any, port: int, pacing_speed: float, cpus: set[int] | None, uvloop: bool) -> None:
    """Child process: serve the emulator; on "report", send per-session input audio and reply timing."""
    _set_affinity(cpus)
    _use_uvloop(uvloop)
    _quiet_logs()
    from app.emulator import EmulatorConfig, RealtimeEmulator
    from app.emulator.audio import SpeechSynth
    from app.emulator.session import EmulatedSession

    # The synthetic voice is re-rendered (numpy, in a thread) for every response; every call here says the
    # same few texts, so cache the renders: the emulator then answers as fast as it can send events.
    renders: dict[tuple[str, int, float], Any] = {}
    orig_render = SpeechSynth.render

    async def render(self: Any, text: str, *, rate: int, synthetic_ms: float) -> Any:
        key = (text, rate, synthetic_ms)
        if key not in renders:
            renders[key] = await orig_render(self, text, rate=rate, synthetic_ms=synthetic_ms)
        return renders[key]

    SpeechSynth.render = render  # type: ignore[method-assign]
    first_delta_ms: dict[str, list[float]] = {}
    orig_stopped = EmulatedSession._speech_stopped
    orig_send = EmulatedSession._send

    async def speech_stopped(self: Any, stopped: Any, td: Any) -> None:
        self._bench_stopped_at = self._loop.time()
        await orig_stopped(self, stopped, td)

    async def send(self: Any, event: dict[str, Any], *, audio_bytes: int | None = None) -> None:
        t0 = getattr(self, "_bench_stopped_at", None)
        if t0 is not None and event.get("type") == "response.output_audio.delta":
            first_delta_ms.setdefault(self.id, []).append((self._loop.time() - t0) * 1000)
            self._bench_stopped_at = None
        await orig_send(self, event, audio_bytes=audio_bytes)

    EmulatedSession._speech_stopped = speech_stopped  # type: ignore[method-assign]
    EmulatedSession._send = send  # type: ignore[method-assign]

    async def run() -> None:
        config = EmulatorConfig(
            tts="synthetic",
            realtime_pacing=pacing_speed > 0,  # 0: --bursty, each reply's audio as fast as the socket takes it
            pacing_speed=pacing_speed or 1.0,
            reply_text=lambda _text: REPLY_TEXT,
        )
        emulator = RealtimeEmulator(config, record_audio=False, max_retained_sessions=None)
        await emulator.start("127.0.0.1", port)
        conn.send(("ready", emulator.port))
        loop = asyncio.get_running_loop()
        while True:
            command = await loop.run_in_executor(None, conn.recv)
            if command == "report":
                sessions = []
                for s in emulator.sessions:
                    fmt = s._input_format
                    sessions.append(
                        {
                            "id": s.id,
                            "closed": s.closed.is_set(),
                            "input_rate": fmt.rate,
                            "input_sample_bytes": fmt.sample_bytes,
                            # _input_ms sums samples*1000/rate: samples are recovered exactly by rounding
                            "input_bytes": round(s.input_audio_ms * fmt.rate / 1000) * fmt.sample_bytes,
                            "first_delta_ms": first_delta_ms.get(s.id, []),
                        }
                    )
                conn.send(("report", sessions))
            elif command == "stop":
                break
        await emulator.close()

    asyncio.run(run())


# --------------------------------------------------------------------------------------------------------------
# driver (simulated callers)


@dataclass
class DriverSpec:
    server_url: str
    calls: list[tuple[str, float]]  # (call_sid, start offset s)
    start_at_wall: float
    duration_s: float
    cpus: set[int] | None = None
    uvloop: bool = False


def _script(duration_s: float) -> Any:
    from app.simulator import CallScript, synth_speech_mulaw

    return CallScript(
        utterances=[synth_speech_mulaw(text, use_espeak=False) for text in UTTERANCES],
        pause_before_first_s=1.0,
        wait_for_greeting=True,
        greeting_timeout_s=8.0,
        gap_after_reply_s=0.5,
        reply_timeout_s=5.0,
        max_duration_s=duration_s,
        hangup_when_done=False,  # every call lasts exactly duration_s: a clean steady state
    )


async def run_driver(spec: DriverSpec) -> dict[str, Any]:
    import httpx

    from app.simulator import CallSetupError, simulate_call

    script = _script(spec.duration_s)
    script.prepared_utterances()  # base64 once, before the clock starts
    loop = asyncio.get_running_loop()
    lags: list[float] = []
    stop = asyncio.Event()

    async def lag_monitor() -> None:
        while not stop.is_set():
            t = loop.time()
            await asyncio.sleep(0.01)
            lags.append((loop.time() - t - 0.01) * 1000)

    async def one(call_sid: str, offset: float, http: httpx.AsyncClient) -> dict[str, Any]:
        delay = spec.start_at_wall + offset - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
        t0 = time.time()
        try:
            r = await simulate_call(
                server_url=spec.server_url,
                public_base_url=PUBLIC_BASE_URL,
                auth_token=AUTH_TOKEN,
                script=script,
                call_sid=call_sid,
                http=http,
            )
        except CallSetupError as exc:
            return {"call_sid": call_sid, "error": f"setup: {exc}"}
        except Exception as exc:  # a broken call must not hide the others' results
            return {"call_sid": call_sid, "error": f"{type(exc).__name__}: {exc}"}
        return {
            "call_sid": call_sid,
            "error": None,
            "setup_ms": (time.time() - t0 - (r.ended_at - r.started_at)) * 1000,
            "frames_sent": r.frames_sent,
            "frames_expected": r.frames_expected,
            "max_send_lag_ms": r.max_send_lag_ms,
            "turn_latencies_ms": [t.latency_ms for t in r.turns],
            "hung_up_by": r.hung_up_by,
            "close_code": r.close_code,
            "protocol_errors": len(r.protocol_errors),
            "agent_audio_s": len(r.agent_audio) / 8000,
            "marks_acked": len(r.marks_acked),
            "duration_s": r.ended_at - r.started_at,
        }

    monitor = asyncio.create_task(lag_monitor())
    limits = httpx.Limits(max_connections=2000, max_keepalive_connections=200)
    async with httpx.AsyncClient(timeout=30.0, limits=limits) as http:
        results = await asyncio.gather(*(one(sid, off, http) for sid, off in spec.calls))
    stop.set()
    await monitor
    return {"calls": list(results), "loop_lag_ms": lags}


def driver_main(conn: Any, spec: DriverSpec) -> None:
    _set_affinity(spec.cpus)
    _use_uvloop(spec.uvloop)
    _quiet_logs()
    try:
        conn.send(asyncio.run(run_driver(spec)))
    except BaseException as exc:
        conn.send({"calls": [], "loop_lag_ms": [], "error": repr(exc)})


# --------------------------------------------------------------------------------------------------------------
# one step: N calls, one audio format


@dataclass
class StepConfig:
    calls: int
    audio_format: str
    duration_s: float
    stagger_s: float
    drivers: int
    emulator: str
    pacing_speed: float
    server_cpus: set[int] | None
    harness_cpus: set[int] | None
    profile_dir: Path | None
    keep_logs: Path | None
    harness_uvloop: bool = False


@dataclass
class Procs:
    server: subprocess.Popen[bytes] | None = None
    emulator_proc: Any = None  # mp.Process or Popen
    emulator_conn: Any = None
    drivers: list[tuple[Any, Any]] = field(default_factory=list)  # (Process, conn)
    profiler: subprocess.Popen[bytes] | None = None

    def pids(self) -> dict[str, list[int]]:
        out: dict[str, list[int]] = {"server": [], "emulator": [], "drivers": []}
        if self.server is not None:
            out["server"].append(self.server.pid)
        if self.emulator_proc is not None:
            out["emulator"].append(self.emulator_proc.pid)
        out["drivers"] = [p.pid for p, _ in self.drivers]
        return out

    def stop_all(self) -> None:
        if self.profiler is not None and self.profiler.poll() is None:
            self.profiler.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.profiler.wait(20)
            if self.profiler.poll() is None:
                self.profiler.kill()
                self.profiler.wait()
        for proc, conn in self.drivers:
            if proc.is_alive():
                proc.terminate()
            proc.join(5)
            if proc.is_alive():
                proc.kill()
                proc.join()
            conn.close()
        if self.server is not None and self.server.poll() is None:
            self.server.terminate()
            try:
                self.server.wait(15)
            except subprocess.TimeoutExpired:
                self.server.kill()
                self.server.wait()
        if self.emulator_proc is not None:
            if isinstance(self.emulator_proc, subprocess.Popen):
                if self.emulator_proc.poll() is None:
                    self.emulator_proc.terminate()
                    try:
                        self.emulator_proc.wait(10)
                    except subprocess.TimeoutExpired:
                        self.emulator_proc.kill()
                        self.emulator_proc.wait()
            else:
                with contextlib.suppress(Exception):
                    if self.emulator_proc.is_alive():
                        self.emulator_conn.send("stop")
                self.emulator_proc.join(10)
                if self.emulator_proc.is_alive():
                    self.emulator_proc.terminate()
                    self.emulator_proc.join(5)
                if self.emulator_proc.is_alive():
                    self.emulator_proc.kill()
                    self.emulator_proc.join()
                if self.emulator_conn is not None:
                    self.emulator_conn.close()


def _system_busy() -> tuple[float, float]:
    """(busy jiffies, total jiffies) over all CPUs, from /proc/stat."""
    with open("/proc/stat", encoding="ascii") as f:
        parts = [int(x) for x in f.readline().split()[1:]]
    idle = parts[3] + parts[4]
    total = sum(parts[:8])
    return total - idle, total


def _cpu_snapshot(pids: dict[str, list[int]]) -> dict[str, float]:
    snap: dict[str, float] = {}
    for role, plist in pids.items():
        total = 0.0
        for pid in plist:
            with contextlib.suppress(OSError, ValueError):
                total += proc_cpu_seconds(pid)
        snap[role] = total
    snap["bench_main"] = proc_cpu_seconds(os.getpid())
    busy, total = _system_busy()
    snap["_sys_busy"], snap["_sys_total"] = float(busy), float(total)
    snap["_wall"] = time.time()
    return snap


def _cpu_delta(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
    wall = b["_wall"] - a["_wall"]
    out = {f"{k}_pct_core": (b[k] - a[k]) / wall * 100 for k in a if not k.startswith("_")}
    out.update({f"{k}_cpu_s": b[k] - a[k] for k in a if not k.startswith("_")})
    out["system_busy_pct"] = (b["_sys_busy"] - a["_sys_busy"]) / max(1.0, b["_sys_total"] - a["_sys_total"]) * 100
    out["wall_s"] = wall
    return out


def _parse_metrics(text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)$", line)
        if m:
            out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return out


def _metric_sum(metrics: dict[str, float], name: str) -> float:
    return sum(v for k, v in metrics.items() if k == name or k.startswith(name + "{"))


def _log_lines(paths: Sequence[Path]) -> Any:
    for path in paths:
        if path.exists():
            with open(path, encoding="utf-8", errors="replace") as f:
                yield from f


def _server_call_ends(log_paths: Sequence[Path]) -> dict[str, dict[str, Any]]:
    """call.ended records by call_sid. structlog prints to stdout (no logger_factory is configured in
    app/observability.py) while uvicorn logs to stderr: read both."""
    ends: dict[str, dict[str, Any]] = {}
    for line in _log_lines(log_paths):
        if '"call.ended"' not in line:
            continue
        with contextlib.suppress(ValueError):
            rec = json.loads(line)
            if rec.get("event") == "call.ended" and rec.get("call_sid"):
                ends[rec["call_sid"]] = rec
    return ends


def _server_errors(log_paths: Sequence[Path], limit: int = 5) -> list[str]:
    errors: list[str] = []
    for line in _log_lines(log_paths):
        if '"level": "error"' in line or '"level": "warning"' in line or "Traceback" in line:
            errors.append(line.strip()[:300])
            if len(errors) >= limit:
                break
    return errors


_EXPECTED_BYTES: dict[str, list[int]] = {}


def expected_upstream_bytes(audio_format: str, frames: int) -> int:
    """Bytes a fresh CallerAudioPath emits for ``frames`` 160-byte frames (content does not matter)."""
    from app.core.audio import CallerAudioPath

    cum = _EXPECTED_BYTES.setdefault(audio_format, [0])
    if len(cum) <= frames:
        path = CallerAudioPath(audio_format)  # type: ignore[arg-type]
        # replay from scratch so the resampler state matches
        total = 0
        cum.clear()
        cum.append(0)
        silence = b"\xff" * 160
        for _ in range(frames + 500):
            total += len(path.convert(silence))
            cum.append(total)
    return cum[frames]


async def _wait_ready(url: str, server: subprocess.Popen[bytes], timeout_s: float = 30.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient(timeout=2.0) as http:
        while time.monotonic() < deadline:
            if server.poll() is not None:
                raise RuntimeError(f"server exited with {server.returncode} before it was ready")
            with contextlib.suppress(httpx.HTTPError):
                r = await http.get(url + "/readyz")
                if r.status_code == 200:
                    return
            await asyncio.sleep(0.2)
    raise RuntimeError("server not ready in time")


def _profile_summary(raw_path: Path, top: int = 25) -> dict[str, Any]:
    """Self and inclusive shares of py-spy's collapsed ("raw") output, idle samples excluded by py-spy."""
    self_counts: dict[str, int] = {}
    incl_counts: dict[str, int] = {}
    total = 0
    with open(raw_path, encoding="utf-8", errors="replace") as f:
        for line in f:
            stack, _, count_s = line.rstrip("\n").rpartition(" ")
            if not stack or not count_s.isdigit():
                continue
            count = int(count_s)
            total += count
            names = [re.sub(r":\d+\)$", ")", fr) for fr in stack.split(";")]
            self_counts[names[-1]] = self_counts.get(names[-1], 0) + count
            for name in set(names):
                incl_counts[name] = incl_counts.get(name, 0) + count

    def rows(d: dict[str, int]) -> list[tuple[str, float]]:
        return [(k, v / max(1, total) * 100) for k, v in sorted(d.items(), key=lambda kv: -kv[1])[:top]]

    return {"samples": total, "self": rows(self_counts), "inclusive": rows(incl_counts)}


async def run_step(cfg: StepConfig, log_dir: Path) -> dict[str, Any]:
    import httpx

    procs = Procs()
    tmp = Path(tempfile.mkdtemp(prefix="bench_calls_"))
    result: dict[str, Any] = {"calls": cfg.calls, "audio_format": cfg.audio_format, "duration_s": cfg.duration_s}
    try:
        # -- emulator -----------------------------------------------------------------------------------------
        emu_port = free_port()
        if cfg.emulator == "helper":
            ctx = mp.get_context("spawn")
            parent, child = ctx.Pipe()
            proc = ctx.Process(
                target=emulator_main,
                args=(child, emu_port, cfg.pacing_speed, cfg.harness_cpus, cfg.harness_uvloop),
                daemon=True,
            )
            proc.start()
            procs.emulator_proc, procs.emulator_conn = proc, parent
            if not parent.poll(30):
                raise RuntimeError("emulator helper did not start")
            _tag, emu_port = parent.recv()
        else:
            procs.emulator_proc = subprocess.Popen(
                [SWITCHBOARD, "emulator", "--port", str(emu_port)],
                stdout=subprocess.DEVNULL,
                stderr=open(tmp / "emulator.log", "wb"),
                preexec_fn=(lambda: _set_affinity(cfg.harness_cpus)) if cfg.harness_cpus else None,
            )
        # -- server -------------------------------------------------------------------------------------------
        port = free_port()
        server_url = f"http://127.0.0.1:{port}"
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("OPENAI_", "TWILIO_", "DATABASE_", "REDIS_", "AUDIO_", "PUBLIC_"))
        }
        env.update(
            PUBLIC_BASE_URL=PUBLIC_BASE_URL,
            TWILIO_AUTH_TOKEN=AUTH_TOKEN,
            OPENAI_API_KEY="bench-key",
            OPENAI_REALTIME_URL=f"ws://127.0.0.1:{emu_port}/v1",
            AUDIO_FORMAT=cfg.audio_format,
            DATA_DIR=str(tmp),
            LOG_LEVEL="INFO",
            HOST="127.0.0.1",
        )
        subprocess.run([SWITCHBOARD, "migrate"], env=env, check=True, capture_output=True, timeout=60, cwd=tmp)
        server_log = tmp / "server.log"
        server_out = tmp / "server.out"
        procs.server = subprocess.Popen(
            [SWITCHBOARD, "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            cwd=tmp,
            stdout=open(server_out, "wb"),
            stderr=open(server_log, "wb"),
            preexec_fn=(lambda: _set_affinity(cfg.server_cpus)) if cfg.server_cpus else None,
        )
        await _wait_ready(server_url, procs.server)

        # -- callers ------------------------------------------------------------------------------------------
        sids = [f"CA{i:08d}" + os.urandom(12).hex() for i in range(cfg.calls)]
        offsets = [i * cfg.stagger_s / max(1, cfg.calls) for i in range(cfg.calls)]
        lead_s = 1.0 + 0.5 * max(1, cfg.drivers)  # time for driver processes to import and synthesize
        start_at = time.time() + lead_s
        specs: list[DriverSpec] = []
        k = max(1, cfg.drivers)
        for d in range(k):
            mine = [(sids[i], offsets[i]) for i in range(d, cfg.calls, k)]
            specs.append(DriverSpec(server_url, mine, start_at, cfg.duration_s, cfg.harness_cpus, cfg.harness_uvloop))
        in_process: asyncio.Task[dict[str, Any]] | None = None
        if cfg.drivers == 0:
            _set_affinity(cfg.harness_cpus)
            in_process = asyncio.create_task(run_driver(specs[0]))
        else:
            ctx = mp.get_context("spawn")
            for spec in specs:
                parent, child = ctx.Pipe()
                p = ctx.Process(target=driver_main, args=(child, spec), daemon=True)
                p.start()
                procs.drivers.append((p, parent))

        t_run0 = _cpu_snapshot(procs.pids())
        # steady state: every call connected, none ended yet
        window_start = start_at + cfg.stagger_s + 1.5
        window_end = start_at + cfg.duration_s - 0.5
        if window_end - window_start < 3:
            window_start = start_at + cfg.stagger_s
        await asyncio.sleep(max(0.0, window_start - time.time()))
        t_w0 = _cpu_snapshot(procs.pids())
        if cfg.profile_dir is not None and shutil.which(str(VENV_BIN / "py-spy")):
            cfg.profile_dir.mkdir(parents=True, exist_ok=True)
            prof_out = cfg.profile_dir / f"server_{cfg.audio_format}_{cfg.calls}.txt"
            procs.profiler = subprocess.Popen(
                [
                    str(VENV_BIN / "py-spy"),
                    "record",
                    "--pid",
                    str(procs.server.pid),
                    "--rate",
                    "100",
                    "--duration",
                    str(max(1, int(window_end - time.time()))),
                    "--format",
                    "raw",
                    "--nonblocking",
                    "--output",
                    str(prof_out),
                ],
                stdout=subprocess.DEVNULL,
                stderr=open(cfg.profile_dir / "py-spy.log", "ab"),
            )
            result["profile_raw"] = str(prof_out)
        await asyncio.sleep(max(0.0, window_end - time.time()))
        t_w1 = _cpu_snapshot(procs.pids())
        result["steady_window"] = _cpu_delta(t_w0, t_w1)

        # -- collect the callers ------------------------------------------------------------------------------
        deadline = start_at + cfg.stagger_s + cfg.duration_s + 60
        driver_out: list[dict[str, Any]] = []
        if in_process is not None:
            driver_out.append(await asyncio.wait_for(in_process, max(1.0, deadline - time.time())))
        else:
            for p, conn in procs.drivers:
                while not conn.poll(0.2):
                    if time.time() > deadline or not p.is_alive():
                        break
                    await asyncio.sleep(0.2)
                if conn.poll(0):
                    driver_out.append(conn.recv())
                else:
                    driver_out.append({"calls": [], "loop_lag_ms": [], "error": "driver produced no result"})
        t_run1 = _cpu_snapshot(procs.pids())
        calls = [c for d in driver_out for c in d["calls"]]
        lags = [x for d in driver_out for x in d["loop_lag_ms"]]
        result["driver_errors"] = [d["error"] for d in driver_out if d.get("error")]

        # -- the server's account (a benchmark may poll for the archive/log to catch up) ------------------------
        ends: dict[str, dict[str, Any]] = {}
        for _ in range(150):
            ends = _server_call_ends([server_out, server_log])
            if len(ends) >= sum(1 for c in calls if not c.get("error")):
                break
            await asyncio.sleep(0.1)
        async with httpx.AsyncClient(timeout=10.0) as http:
            metrics = _parse_metrics((await http.get(server_url + "/metrics")).text)
        emu_sessions: list[dict[str, Any]] | None = None
        if cfg.emulator == "helper":
            for _ in range(50):
                procs.emulator_conn.send("report")
                _tag, emu_sessions = procs.emulator_conn.recv()
                if all(s["closed"] for s in emu_sessions):
                    break
                await asyncio.sleep(0.1)

        # -- verdicts -----------------------------------------------------------------------------------------
        ok_calls = [c for c in calls if not c.get("error")]
        mismatched = []
        for c in ok_calls:
            end = ends.get(c["call_sid"])
            if end is None or end.get("frames_in") != c["frames_sent"] or end.get("status") != "completed":
                mismatched.append(
                    {
                        "call_sid": c["call_sid"],
                        "frames_sent": c["frames_sent"],
                        "frames_in": None if end is None else end.get("frames_in"),
                        "status": None if end is None else end.get("status"),
                        "reason": None if end is None else end.get("reason"),
                    }
                )
        bad_frames = _metric_sum(metrics, "switchboard_bad_frames_total")
        completed_metric = metrics.get('switchboard_calls_ended_total{reason="completed"}', 0.0)
        ended_metric = _metric_sum(metrics, "switchboard_calls_ended_total")
        frames_metric = _metric_sum(metrics, "switchboard_caller_frames_total")
        frames_sent_total = sum(c["frames_sent"] for c in ok_calls)
        emulator_check: dict[str, Any] | None = None
        if emu_sessions is not None:
            got = sorted(s["input_bytes"] for s in emu_sessions)
            want = sorted(expected_upstream_bytes(cfg.audio_format, c["frames_sent"]) for c in ok_calls)
            emulator_check = {
                "sessions": len(emu_sessions),
                "bytes_expected": sum(want),
                "bytes_received": sum(got),
                "exact_match": got == want,
                "sessions_short": sum(1 for g, w in zip(got, want, strict=False) if g < w),
            }
        latencies = [x for c in ok_calls for x in c["turn_latencies_ms"] if x is not None]
        no_reply = sum(1 for c in ok_calls for x in c["turn_latencies_ms"] if x is None)
        emu_first_delta = [x for s in (emu_sessions or []) for x in s["first_delta_ms"]]
        send_lags = [c["max_send_lag_ms"] for c in ok_calls]
        all_delivered = (
            len(ok_calls) == cfg.calls
            and not mismatched
            and bad_frames == 0
            and completed_metric == cfg.calls
            and frames_metric == frames_sent_total
            and (emulator_check is None or emulator_check["exact_match"])
            and not result["driver_errors"]
        )
        result.update(
            {
                "pass_all_frames_delivered": all_delivered,
                "setup_errors": [c["error"] for c in calls if c.get("error")][:5],
                "calls_ok": len(ok_calls),
                "frames_sent": frames_sent_total,
                "frames_in_logged": sum((ends.get(c["call_sid"]) or {}).get("frames_in", 0) for c in ok_calls),
                "frames_metric": frames_metric,
                "calls_mismatched": len(mismatched),
                "mismatch_examples": mismatched[:5],
                "bad_frames": bad_frames,
                "calls_ended_metric": ended_metric,
                "calls_completed_metric": completed_metric,
                "streams_rejected": _metric_sum(metrics, "switchboard_streams_rejected_total"),
                "emulator": emulator_check,
                "turns": len(latencies) + no_reply,
                "turns_no_reply": no_reply,
                "turn_ms_p50": percentile(latencies, 50),
                "turn_ms_p99": percentile(latencies, 99),
                "turn_ms_max": max(latencies) if latencies else float("nan"),
                "emulator_first_delta_ms_p50": percentile(emu_first_delta, 50),
                "emulator_first_delta_ms_p99": percentile(emu_first_delta, 99),
                "emulator_first_delta_ms_max": max(emu_first_delta) if emu_first_delta else float("nan"),
                "emulator_first_delta_ms_all": sorted(round(x, 2) for x in emu_first_delta),
                "turn_ms_all": sorted(round(x, 2) for x in latencies),
                "send_lag_ms_max": max(send_lags) if send_lags else float("nan"),
                "send_lag_ms_p99_of_calls": percentile(send_lags, 99),
                "send_lag_ms_p50_of_calls": percentile(send_lags, 50),
                "driver_loop_lag_ms_p99": percentile(lags, 99),
                "driver_loop_lag_ms_max": max(lags) if lags else float("nan"),
                "setup_ms_p99": percentile([c["setup_ms"] for c in ok_calls], 99),
                "protocol_errors": sum(c["protocol_errors"] for c in ok_calls),
                "whole_run": _cpu_delta(t_run0, t_run1),
                "server_errors": _server_errors([server_out, server_log]),
            }
        )
        call_seconds = sum(c["duration_s"] for c in ok_calls)
        w = result["steady_window"]
        # calls that failed to connect carry no load: divide by the calls that ran
        result["server_cpu_s_per_call_s_steady"] = w["server_cpu_s"] / max(1e-9, len(ok_calls) * w["wall_s"])
        result["on_time"] = bool(
            all_delivered
            and result["send_lag_ms_p99_of_calls"] < ON_TIME_SEND_LAG_MS
            and result["turn_ms_p99"] < ON_TIME_TURN_P99_MS
        )
        result["server_cpu_s_per_call_s_whole"] = result["whole_run"]["server_cpu_s"] / max(1e-9, call_seconds)
        if procs.profiler is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                procs.profiler.wait(30)
            raw = Path(result["profile_raw"])
            if raw.exists() and raw.stat().st_size:
                result["profile"] = _profile_summary(raw)
        if cfg.keep_logs is not None:
            cfg.keep_logs.mkdir(parents=True, exist_ok=True)
            shutil.copy(server_log, cfg.keep_logs / f"server_{cfg.audio_format}_{cfg.calls}.stderr")
            shutil.copy(server_out, cfg.keep_logs / f"server_{cfg.audio_format}_{cfg.calls}.stdout")
        return result
    finally:
        procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------------------------------------------


def _cpus(spec: str | None) -> set[int] | None:
    if not spec:
        return None
    out: set[int] = set()
    for part in spec.split(","):
        if "-" in part:
            a, b = part.split("-")
            out.update(range(int(a), int(b) + 1))
        else:
            out.add(int(part))
    return out


def _row(r: dict[str, Any]) -> list[Any]:
    w = r["steady_window"]
    emu = r.get("emulator")
    return [
        r["audio_format"],
        r["calls"],
        ("PASS" if r["pass_all_frames_delivered"] else "FAIL") + (" on time" if r.get("on_time") else " late"),
        f"{r['frames_in_logged']}/{r['frames_sent']}",
        r["calls_mismatched"],
        int(r["bad_frames"]),
        "-" if emu is None else ("exact" if emu["exact_match"] else f"{emu['bytes_received']}/{emu['bytes_expected']}"),
        r["turns"],
        r["turn_ms_p50"],
        r["turn_ms_p99"],
        r["turn_ms_max"],
        r["emulator_first_delta_ms_p99"],
        w["server_pct_core"],
        r["server_cpu_s_per_call_s_steady"] * 1000,
        w["emulator_pct_core"],
        w["drivers_pct_core"] + w["bench_main_pct_core"],
        w["system_busy_pct"],
        r["send_lag_ms_max"],
        r["send_lag_ms_p99_of_calls"],
        r["driver_loop_lag_ms_p99"],
    ]


HEADERS = [
    "format",
    "N",
    "delivered",
    "frames in/sent",
    "bad calls",
    "bad frames",
    "emulator bytes",
    "turns",
    "turn p50 ms",
    "turn p99 ms",
    "turn max ms",
    "emu stop->delta p99 ms",
    "server %core",
    "server ms CPU/call-s",
    "emulator %core",
    "drivers %core",
    "machine busy %",
    "send lag max ms",
    "send lag p99 ms",
    "driver loop lag p99 ms",
]


def run_side_by_side(args: argparse.Namespace, ns: list[int]) -> list[dict[str, Any]]:
    """The shared harness's side-by-side run at each N: the sample, then pcm24k and pcmu, in one run."""
    script = args.harness / "side_by_side.sh"
    if not script.is_file():
        print(f"\nside by side: {script} not found (--harness)")
        return []
    lines: list[dict[str, Any]] = []
    for n in ns:
        env = {**os.environ, "ANCHOR_MIRROR": str(args.side_by_side), "N": str(n), "DUR": str(int(args.duration))}
        print(f"\nside by side, N={n}: {script}", flush=True)
        proc = subprocess.run(["bash", str(script)], env=env, cwd=Path(__file__).resolve().parents[1],
                              capture_output=True, text=True, timeout=1800)  # fmt: skip
        for raw in proc.stdout.splitlines():
            if raw.startswith("{"):
                lines.append({"calls": n, **json.loads(raw)})
        if proc.returncode:
            print(f"  harness exited {proc.returncode}: {proc.stderr.strip()[-300:]}")
    headers = ["N", "config", "CPU ms/call-s", "x sample", "turn p50 ms", "turn p99 ms", "errors", "empty appends"]
    rows = []
    for line in lines:
        sample = next((x for x in lines if x["calls"] == line["calls"] and x["config"] == "sample"), None)
        ratio = line["cpu_ms_per_call_s"] / sample["cpu_ms_per_call_s"] if sample else None
        rows.append([line["calls"], line["config"], f"{line['cpu_ms_per_call_s']:.2f}",
                     f"{ratio:.2f}" if ratio else "-", line["rtt_p50_ms"], line["rtt_p99_ms"], line["errors"],
                     line["empty_appends"]])  # fmt: skip
    print()
    print(format_table(headers, rows))
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=None, help="concurrent calls (one step)")
    ap.add_argument("--ramp", default=None, help="comma list of N, e.g. 50,100,150,200,250")
    ap.add_argument("--duration", type=float, default=20.0, help="seconds per call (default 20)")
    ap.add_argument("--stagger", type=float, default=3.0, help="spread call starts over this many seconds")
    ap.add_argument("--audio-format", default="pcm24k", help="pcm24k, pcmu, or both: pcm24k,pcmu")
    ap.add_argument("--drivers", type=int, default=1, help="caller processes (0: in this process)")
    ap.add_argument("--emulator", choices=["helper", "cli"], default="helper")
    ap.add_argument("--pacing-speed", type=float, default=2.0, help="emulator audio pacing (x real time)")
    ap.add_argument(
        "--bursty", action="store_true",
        help="the emulator sends each reply's audio as fast as the socket takes it, as the real service does",
    )  # fmt: skip
    ap.add_argument(
        "--side-by-side", metavar="SAMPLE_GIT", type=Path, default=None,
        help="then run the shared harness (sample vs pcm24k vs pcmu, same N and duration, fresh real Redis "
        "each) with the Twilio/OpenAI sample from this git copy; its lines join the report",
    )  # fmt: skip
    ap.add_argument("--harness", type=Path, default=Path(__file__).resolve().parents[2] / "shared/bench",
                    help="where side_by_side.sh lives (default ../shared/bench)")  # fmt: skip
    ap.add_argument("--server-cpus", default=None, help="pin the server, e.g. 0")
    ap.add_argument("--harness-cpus", default=None, help="pin emulator and drivers, e.g. 1")
    ap.add_argument("--harness-uvloop", action="store_true", help="uvloop in emulator/drivers (ms clock)")
    ap.add_argument("--stop-on-fail", action="store_true", help="stop the ramp at the first failing step")
    ap.add_argument("--profile", type=Path, default=None, help="py-spy the server's steady state into this dir")
    ap.add_argument("--keep-logs", type=Path, default=None, help="copy server logs here")
    ap.add_argument("--json", dest="json_path", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.bursty:
        args.pacing_speed = 0.0
    if args.ramp:
        ns = [int(x) for x in args.ramp.split(",") if x.strip()]
    else:
        ns = [args.calls or 50]
    if max(ns) > 1000 or args.duration > 120:
        ap.error("bounded runs only: at most 1000 calls and 120 s per call")
    formats = [f.strip() for f in args.audio_format.split(",") if f.strip()]
    for f in formats:
        if f not in ("pcm24k", "pcmu"):
            ap.error(f"unknown audio format {f!r}")

    info = machine_info()
    print(f"# {info['cpu_model']}, {info['nproc']} CPUs, Python {info['python']}")
    print(
        f"# steps {ns} x {formats}, {args.duration:.0f} s per call, starts staggered over {args.stagger:.1f} s, "
        f"drivers={args.drivers}, emulator={args.emulator} "
        f"({'bursty: unpaced' if args.bursty else f'pacing {args.pacing_speed}x'})",
        flush=True,
    )
    results: list[dict[str, Any]] = []
    for n in ns:
        failed = False
        for fmt in formats:
            cfg = StepConfig(
                calls=n,
                audio_format=fmt,
                duration_s=args.duration,
                stagger_s=args.stagger,
                drivers=args.drivers,
                emulator=args.emulator,
                pacing_speed=args.pacing_speed,
                server_cpus=_cpus(args.server_cpus),
                harness_cpus=_cpus(args.harness_cpus),
                profile_dir=args.profile,
                keep_logs=args.keep_logs,
                harness_uvloop=args.harness_uvloop,
            )
            t0 = time.time()
            r = asyncio.run(run_step(cfg, Path(tempfile.gettempdir())))
            r["step_wall_s"] = time.time() - t0
            results.append(r)
            print(format_table(HEADERS, [_row(r)]).splitlines()[-1], flush=True)
            if r["mismatch_examples"]:
                print(f"    mismatches: {r['mismatch_examples'][:3]}")
            if r["setup_errors"] or r["driver_errors"]:
                print(f"    errors: {r['setup_errors'][:3]} {r['driver_errors'][:3]}")
            if r["server_errors"]:
                print(f"    server log: {r['server_errors'][:2]}")
            failed = failed or not r["pass_all_frames_delivered"]
        if failed and args.stop_on_fail:
            break

    print()
    print(format_table(HEADERS, [_row(r) for r in results]))
    passing = [r["calls"] for r in results if r["pass_all_frames_delivered"]]
    print()
    print(f"largest N with every frame delivered: {max(passing) if passing else 'none'}")
    timely = [r["calls"] for r in results if r.get("on_time")]
    print(
        f"largest N delivered and on time (send lag p99 < {ON_TIME_SEND_LAG_MS:.0f} ms, "
        f"turn p99 < {ON_TIME_TURN_P99_MS:.0f} ms): {max(timely) if timely else 'none'}"
    )
    side_by_side = run_side_by_side(args, ns) if args.side_by_side else []
    for r in results:
        if "profile" in r:
            print(
                f"\nserver profile, {r['audio_format']} N={r['calls']} ({r['profile']['samples']} samples), top self:"
            )
            for name, share in r["profile"]["self"][:15]:
                print(f"  {share:5.1f}%  {name}")
    if args.json_path:
        args.json_path.parent.mkdir(parents=True, exist_ok=True)
        args.json_path.write_text(
            json.dumps(
                {
                    "machine": info,
                    "args": vars(args)
                    | {
                        "profile": str(args.profile),
                        "keep_logs": str(args.keep_logs),
                        "json_path": str(args.json_path),
                    },
                    "results": results,
                    "side_by_side": side_by_side,
                },
                indent=2,
                default=str,
            )
        )
        print(f"wrote {args.json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
