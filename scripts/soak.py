#!/usr/bin/env python
# ruff: noqa: ASYNC220, ASYNC221, ASYNC230 - an orchestration script: brief blocking calls are fine
"""Soak: N concurrent simulated calls, sustained, across K local nodes behind a local proxy.

    .venv/bin/python scripts/soak.py --calls 5 --duration 60 --call-length 20              # smoke, 1 node
    .venv/bin/python scripts/soak.py --nodes 2 --calls 10 --duration 90 --call-length 30   # smoke, 2 nodes
    .venv/bin/python scripts/soak.py --calls 100 --duration 1980 --warmup 180 --call-length 90 \\
        --json var/soak.json                                                              # the 30-minute soak

Processes (all on loopback, all stopped at the end):
  redis     a real ``redis-server`` on a free port (``--redis auto``: when the binary exists; required for
            K > 1), no persistence.
  database  SQLite (a file shared by the nodes) or, ``--db postgres`` (the default for K > 1 when the
            binaries exist), a throwaway PostgreSQL cluster; ``switchboard migrate`` once.
  emulator  the Realtime emulator in a child process (synthetic voice, renders cached, as in
            scripts/bench_calls.py); it reports each session's input audio and, per turn, the time from
            its speech_stopped to its first audio delta.
  nodes     K ``switchboard serve`` processes (one uvicorn worker each), LOG_LEVEL=INFO.
  proxy     app/simulator/lbproxy.py in a child process: least connections over the ready nodes (/readyz polled
            every second). Callers dial the proxy, never a node; with --direct (one node), the node itself.
  drivers   ``--drivers`` processes running app.simulator.simulate_call: N call slots. Each slot places a
            call, talks for --call-length seconds (a turn every ~6 s: speak, wait for the reply, listen to
            it), hangs up and dials again at once, until --duration. The first call of slot i lasts
            (i+1)/N of a call length, so from then on call ends (and new calls) are spread evenly in time.

Every --sample-every seconds, per node: RSS (/proc/<pid>/status VmRSS), CPU seconds (/proc/<pid>/stat),
/metrics (switchboard_calls_active, upstream reconnects/failures, frames, bad frames); CPU and RSS of
the harness processes and Redis. At the end: calls completed, per call frames sent (simulator) vs
frames_in (the node's ``call.ended`` log line), turn latency p50/p95/p99 per --window (5 min) after the
warm-up, RSS growth per node as a least-squares slope over the steady state (after --warmup), CPU %.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import glob
import json
import multiprocessing as mp
import os
import queue as queue_mod
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_common import format_table, machine_info, percentile, proc_cpu_seconds

from app.simulator.lbproxy import proxy_main

REPO = Path(__file__).resolve().parent.parent
# ``python -c`` with PYTHONPATH=REPO, not the venv's ``switchboard`` entry point: the nodes run this checkout's
# app/ even when the venv's editable install points at another worktree
SWITCHBOARD = [sys.executable, "-c", "from app.cli import main; main()"]
PUBLIC_BASE_URL = "https://switchboard.soak.invalid"
AUTH_TOKEN = "soak-twilio-auth-token"
UTTERANCES = (
    "I need to move my appointment.",
    "Thursday afternoon works best.",
    "Can you also check my address?",
    "Thanks, that is all for today.",
)
REPLY_TEXT = "All right, I can help with that."
TURN_CYCLE_S = 6.0  # ~1.9 s speech + 0.5 s end of turn + ~1.9 s reply playing + 1 s pause, rounded up
FAILED_CALL_PAUSE_S = 5.0  # a slot whose call could not be placed waits this long before the next one
MIN_CALL_S = 10.0  # shorter calls are not placed (the last seconds of a run, the first wave)
P99_STABLE_RATIO = 1.5  # "stable": the worst steady window's p99 within 1.5x the best one's
MEMORY_GROWTH_LIMIT_PCT_PER_10MIN = 1.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _quiet_logs() -> None:
    import logging

    import structlog

    logging.basicConfig(level=logging.WARNING)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))


def proc_rss_kb(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def _cpu(pid: int | None) -> float | None:
    if pid is None:
        return None
    try:
        return proc_cpu_seconds(pid)
    except (OSError, ValueError):
        return None


def _children(ppid: int) -> list[int]:
    out = []
    for stat in glob.glob("/proc/[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            with open(stat, encoding="ascii", errors="replace") as f:
                text = f.read()
            if int(text[text.rindex(")") + 2 :].split()[1]) == ppid:
                out.append(int(stat.split("/")[2]))
    return out


def _system_busy() -> tuple[float, float]:
    with open("/proc/stat", encoding="ascii") as f:
        parts = [int(x) for x in f.readline().split()[1:]]
    idle = parts[3] + parts[4]
    total = sum(parts[:8])
    return float(total - idle), float(total)


# --------------------------------------------------------------------------------------------------------------
# emulator helper process


def emulator_main(conn: Any, port: int, pacing_speed: float) -> None:
    """Child process: the emulator. On "harvest": the turns answered and the sessions closed since last time."""
    _quiet_logs()
    from app.emulator import EmulatorConfig, RealtimeEmulator
    from app.emulator.audio import SpeechSynth
    from app.emulator.session import EmulatedSession

    renders: dict[tuple[str, int, float], Any] = {}
    orig_render = SpeechSynth.render

    async def render(self: Any, text: str, *, rate: int, synthetic_ms: float) -> Any:
        key = (text, rate, synthetic_ms)
        if key not in renders:
            renders[key] = await orig_render(self, text, rate=rate, synthetic_ms=synthetic_ms)
        return renders[key]

    SpeechSynth.render = render  # type: ignore[method-assign]
    deltas: list[tuple[float, float]] = []  # (wall time of speech_stopped, ms to the first audio delta)
    closed: list[dict[str, Any]] = []
    orig_stopped = EmulatedSession._speech_stopped
    orig_send = EmulatedSession._send
    orig_run = EmulatedSession.run

    async def speech_stopped(self: Any, stopped: Any, td: Any) -> None:
        self._soak_stopped_at = (self._loop.time(), time.time())
        await orig_stopped(self, stopped, td)

    async def send(self: Any, event: dict[str, Any], *, audio_bytes: int | None = None) -> None:
        t0 = getattr(self, "_soak_stopped_at", None)
        if t0 is not None and event.get("type") == "response.output_audio.delta":
            deltas.append((t0[1], (self._loop.time() - t0[0]) * 1000))
            self._soak_stopped_at = None
        await orig_send(self, event, audio_bytes=audio_bytes)

    async def run_session(self: Any) -> None:
        opened_at = time.time()
        try:
            await orig_run(self)
        finally:
            fmt = self._input_format
            closed.append(
                {
                    "id": self.id,
                    "opened_at": opened_at,
                    "closed_at": time.time(),
                    # 1000: the server closed the session cleanly; 1006: the connection was cut (e.g. the
                    # server's close handshake timed out while this emulator still had audio to read)
                    "close_code": self._ws.close_code,
                    # _input_ms sums samples*1000/rate: samples are recovered exactly by rounding
                    "input_bytes": round(self.input_audio_ms * fmt.rate / 1000) * fmt.sample_bytes,
                }
            )

    EmulatedSession._speech_stopped = speech_stopped  # type: ignore[method-assign]
    EmulatedSession._send = send  # type: ignore[method-assign]
    EmulatedSession.run = run_session  # type: ignore[method-assign]

    async def run() -> None:
        config = EmulatorConfig(
            tts="synthetic",
            realtime_pacing=True,
            pacing_speed=pacing_speed,
            reply_text=lambda _text: REPLY_TEXT,
        )
        # closed sessions are reported (above) and not retained: the emulator's memory stays flat
        emulator = RealtimeEmulator(config, record_audio=False, max_retained_sessions=8)
        await emulator.start("127.0.0.1", port)
        conn.send(("ready", emulator.port))
        loop = asyncio.get_running_loop()
        while True:
            command = await loop.run_in_executor(None, conn.recv)
            if command == "harvest":
                out_d, out_c = list(deltas), list(closed)
                deltas.clear()
                closed.clear()
                conn.send(("harvest", {"deltas": out_d, "closed": out_c}))
            elif command == "stop":
                break
        await emulator.close()

    asyncio.run(run())


# --------------------------------------------------------------------------------------------------------------
# drivers (simulated callers)


@dataclass
class DriverSpec:
    index: int
    proxy_url: str
    slots: list[int]
    n_total: int
    start_at: float  # wall time load starts
    end_at: float  # wall time every call has ended
    call_length_s: float
    ramp_s: float
    sample_every_s: float


def _script(length_s: float) -> Any:
    from app.simulator import CallScript

    n = max(1, int((length_s - 8.0) / TURN_CYCLE_S))
    return CallScript(
        utterances=[_UTTERANCE_AUDIO[i % len(_UTTERANCE_AUDIO)] for i in range(n)],
        pause_before_first_s=1.0,
        wait_for_greeting=True,
        greeting_timeout_s=8.0,
        gap_after_reply_s=1.0,
        reply_timeout_s=5.0,
        max_duration_s=length_s,
        hangup_when_done=False,  # talk, then silence until exactly length_s
    )


_UTTERANCE_AUDIO: list[bytes] = []


async def run_driver(spec: DriverSpec, results: Any) -> None:
    import httpx

    from app.simulator import CallSetupError, new_call_sid, simulate_call, synth_speech_mulaw

    _UTTERANCE_AUDIO[:] = [synth_speech_mulaw(text, use_espeak=False) for text in UTTERANCES]
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    async def lag_monitor() -> None:
        lags: list[float] = []
        next_report = time.time() + spec.sample_every_s
        while not stop.is_set():
            t = loop.time()
            await asyncio.sleep(0.01)
            lags.append((loop.time() - t - 0.01) * 1000)
            if time.time() >= next_report:
                results.put(("lag", spec.index, time.time(), percentile(lags, 50), percentile(lags, 99), max(lags)))
                lags = []
                next_report += spec.sample_every_s

    async def one(slot: int, length_s: float, http: httpx.AsyncClient) -> dict[str, Any]:
        call_sid = new_call_sid()
        script = _script(length_s)
        t0 = time.time()
        base: dict[str, Any] = {"call_sid": call_sid, "slot": slot, "planned_s": length_s, "placed_at": t0}
        try:
            r = await simulate_call(
                server_url=spec.proxy_url,
                public_base_url=PUBLIC_BASE_URL,
                auth_token=AUTH_TOKEN,
                script=script,
                call_sid=call_sid,
                http=http,
            )
        except CallSetupError as exc:
            return base | {"error": f"setup: {exc}", "ended_at": time.time()}
        except Exception as exc:  # a broken call must not stop the slot
            return base | {"error": f"{type(exc).__name__}: {exc}", "ended_at": time.time()}
        offset = time.time() - loop.time()  # loop clock -> wall clock
        turns = []
        for t in r.turns:
            cut = t.latency_ms is None and t.speech_end_sent_at + script.reply_timeout_s > r.ended_at
            turns.append((round(t.speech_end_sent_at + offset, 3), t.latency_ms, cut))
        return base | {
            "error": None,
            "setup_ms": (r.started_at + offset - t0) * 1000,
            "started_at": r.started_at + offset,
            "ended_at": r.ended_at + offset,
            "frames_sent": r.frames_sent,
            "frames_expected": r.frames_expected,
            "max_send_lag_ms": r.max_send_lag_ms,
            "turns": turns,
            "hung_up_by": r.hung_up_by,
            "close_code": r.close_code,
            "protocol_errors": len(r.protocol_errors),
            "agent_audio_s": len(r.agent_audio) / 8000,
            "marks_acked": len(r.marks_acked),
        }

    async def slot_loop(slot: int, http: httpx.AsyncClient) -> None:
        await asyncio.sleep(max(0.0, spec.start_at + slot * spec.ramp_s / spec.n_total - time.time()))
        planned = max(MIN_CALL_S, spec.call_length_s * (slot + 1) / spec.n_total)
        while True:
            length = min(planned, spec.end_at - time.time() - 1.0)  # ~1 s for the webhook and upgrade
            if length < MIN_CALL_S:
                return
            result = await one(slot, round(length, 2), http)
            results.put(("call", result))
            if result["error"]:
                await asyncio.sleep(FAILED_CALL_PAUSE_S)  # a refused caller does not redial at once
            planned = spec.call_length_s

    monitor = asyncio.create_task(lag_monitor())
    # idle pooled connections are dropped after 2 s, before uvicorn closes them (5 s): no webhook is sent on a
    # connection that is being closed
    limits = httpx.Limits(max_connections=2000, max_keepalive_connections=200, keepalive_expiry=2.0)
    async with httpx.AsyncClient(timeout=30.0, limits=limits) as http:
        await asyncio.gather(*(slot_loop(s, http) for s in spec.slots))
    stop.set()
    await monitor


def driver_main(spec: DriverSpec, results: Any) -> None:
    _quiet_logs()
    try:
        asyncio.run(run_driver(spec, results))
    except BaseException as exc:
        results.put(("driver_error", spec.index, repr(exc)))
    results.put(("done", spec.index))


# --------------------------------------------------------------------------------------------------------------
# services


@dataclass
class Services:
    tmp: Path
    redis: subprocess.Popen[bytes] | None = None
    redis_url: str | None = None
    pg_bindir: Path | None = None
    pg_dir: Path | None = None
    pg_user: str | None = None
    pg_pid: int | None = None
    database_url: str | None = None

    def start_redis(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server not found")
        d = self.tmp / "redis"
        d.mkdir()
        for _ in range(3):
            port = free_port()
            self.redis = subprocess.Popen(
                [
                    *(binary, "--port", str(port), "--bind", "127.0.0.1", "--daemonize", "no", "--dir", str(d)),
                    *("--save", "", "--appendonly", "no", "--logfile", ""),
                ],
                stdout=open(d / "redis.log", "ab"),
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and self.redis.poll() is None:
                with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(64).startswith(b"+PONG"):
                        self.redis_url = f"redis://127.0.0.1:{port}/0"
                        return
                time.sleep(0.1)
            self._stop_redis()
        raise RuntimeError("redis-server did not start")

    def _stop_redis(self) -> None:
        if self.redis is not None and self.redis.poll() is None:
            self.redis.terminate()
            try:
                self.redis.wait(10)
            except subprocess.TimeoutExpired:
                self.redis.kill()
                self.redis.wait()

    @staticmethod
    def find_pg_bindir() -> Path | None:
        p = shutil.which("initdb")
        cands = [Path(p).resolve().parent] if p else []
        cands += [Path(d) for d in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version_key, reverse=True)]
        for d in cands:
            if all((d / t).exists() for t in ("initdb", "pg_ctl", "postgres")):
                return d
        return None

    def _as_pg(self, args: list[str], **kw: Any) -> subprocess.CompletedProcess[bytes]:
        if os.geteuid() == 0:
            args = ["runuser", "-u", str(self.pg_user), "--", *args]
        return subprocess.run(args, cwd=self.pg_dir, capture_output=True, timeout=120, check=False, **kw)

    def start_postgres(self) -> None:
        self.pg_bindir = self.find_pg_bindir()
        if self.pg_bindir is None:
            raise RuntimeError("PostgreSQL server binaries not found")
        # its own directory outside self.tmp (which is private to root): the server refuses to run as root
        self.pg_dir = Path(tempfile.mkdtemp(prefix="soakpg.", dir="/tmp"))
        if os.geteuid() == 0:
            import pwd

            try:
                pw = pwd.getpwnam("postgres")
                self.pg_user = "postgres"
            except KeyError:
                pw = pwd.getpwnam("nobody")
                self.pg_user = "nobody"
            os.chown(self.pg_dir, pw.pw_uid, pw.pw_gid)
        else:
            import getpass

            self.pg_user = getpass.getuser()
        data, sock = self.pg_dir / "data", self.pg_dir / "sock"
        self._as_pg(["mkdir", "-p", str(sock)])
        r = self._as_pg(
            [
                *(str(self.pg_bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", str(self.pg_user)),
                *("-E", "UTF8", "--locale=C", "-N"),
            ]
        )
        if r.returncode:
            raise RuntimeError(f"initdb failed: {r.stderr.decode()[-2000:]}")
        conf = (
            "\nlisten_addresses = '127.0.0.1'\n"
            f"unix_socket_directories = '{sock}'\n"
            "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
            "max_connections = 300\nlog_min_messages = warning\n"
        )
        self._as_pg(["sh", "-c", f"cat >> '{data}/postgresql.conf'"], input=conf.encode())
        for _ in range(3):
            port = free_port()
            r = self._as_pg(
                [
                    *(str(self.pg_bindir / "pg_ctl"), "-D", str(data), "-l", str(self.pg_dir / "postgres.log")),
                    *("-o", f"-p {port}", "-w", "-t", "30", "start"),
                ]
            )
            if r.returncode == 0:
                break
        else:
            raise RuntimeError("postgres did not start")
        with open(data / "postmaster.pid", encoding="ascii") as f:
            self.pg_pid = int(f.readline())
        createdb = self.pg_bindir / "createdb"
        tool = str(createdb) if createdb.exists() else "createdb"
        r = subprocess.run(
            [tool, "-h", "127.0.0.1", "-p", str(port), "-U", str(self.pg_user), "switchboard_soak"],
            capture_output=True,
            timeout=60,
            check=False,
        )
        if r.returncode:
            raise RuntimeError(f"createdb failed: {r.stderr.decode()}")
        self.database_url = f"postgresql+asyncpg://{self.pg_user}@127.0.0.1:{port}/switchboard_soak"

    def stop(self) -> None:
        self._stop_redis()
        if self.pg_dir is not None and self.pg_bindir is not None:
            self._as_pg([str(self.pg_bindir / "pg_ctl"), "-D", str(self.pg_dir / "data"), "stop", "-m", "fast"])
            shutil.rmtree(self.pg_dir, ignore_errors=True)
            self.pg_dir = None


def _version_key(path: str) -> tuple[int, ...]:
    parts = [p for p in path.split("/") if p.replace(".", "").isdigit()]
    return tuple(int(x) for x in parts[0].split(".")) if parts else (0,)


# --------------------------------------------------------------------------------------------------------------
# server logs


class LogTail:
    """Reads what a log file gained since the last call (whole lines only)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.pos = 0
        self.partial = b""

    def new_lines(self) -> list[str]:
        if not self.path.exists():
            return []
        with open(self.path, "rb") as f:
            f.seek(self.pos)
            data = f.read()
        self.pos += len(data)
        data = self.partial + data
        lines = data.split(b"\n")
        self.partial = lines.pop()
        return [line.decode("utf-8", errors="replace") for line in lines]


def _exception_line(traceback: str) -> str:
    """The last "SomeError: message" line of a formatted traceback (the SQL echo and hints dropped)."""
    import re

    lines = traceback.strip().splitlines()
    found = [ln for ln in lines if re.match(r"^[A-Za-z_][\w.]*(Error|Exception|Timeout|Exit)\b.*", ln)]
    return (found[-1] if found else lines[-1] if lines else "")[:400]


@dataclass
class NodeLogs:
    tails: list[LogTail]
    ends: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    problems: Counter[str] = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)
    lines: int = 0

    def poll(self) -> None:
        for tail in self.tails:
            for line in tail.new_lines():
                self.lines += 1
                key: str | None = None
                if line.startswith("{"):
                    try:
                        rec = json.loads(line)
                    except ValueError:
                        rec = None
                    if isinstance(rec, dict):
                        event = str(rec.get("event"))
                        if event in ("call.ended", "call.stream_detached") and rec.get("call_sid"):
                            self.ends[rec["call_sid"]].append(rec)
                        level = str(rec.get("level", ""))
                        if level in ("warning", "error", "critical", "exception"):
                            key = f"{level}: {event}"
                            if isinstance(rec.get("exception"), str):  # keep the exception, not the traceback
                                rec["exception"] = _exception_line(rec["exception"])
                                line = json.dumps(rec)
                elif "Traceback" in line or line.startswith(("ERROR", "WARNING", "CRITICAL")):
                    key = "stderr: " + line.strip()[:100]
                if key is not None:
                    self.problems[key] += 1
                    ex = self.examples.setdefault(key, [])
                    if len(ex) < 3:
                        ex.append(line.strip()[:1000])


# --------------------------------------------------------------------------------------------------------------
# metrics


def parse_metrics(text: str) -> dict[str, float]:
    import re

    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)$", line)
        if m:
            out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return out


def metric_sum(metrics: dict[str, float], name: str) -> float:
    return sum(v for k, v in metrics.items() if k == name or k.startswith(name + "{"))


def metric_labels(metrics: dict[str, float], name: str) -> dict[str, float]:
    return {k[len(name) :]: v for k, v in metrics.items() if k.startswith(name + "{") and v}


NODE_METRICS = {
    "active": "switchboard_calls_active",
    "started": "switchboard_calls_started_total",
    "ended": "switchboard_calls_ended_total",
    "caller_frames": "switchboard_caller_frames_total",
    "bad_frames": "switchboard_bad_frames_total",
    "streams_rejected": "switchboard_streams_rejected_total",
    "upstream_reconnects": "switchboard_upstream_reconnects_total",
    "upstream_failures": "switchboard_upstream_failures_total",
    "frames_held": "switchboard_caller_frames_held_total",
    "frames_replayed": "switchboard_caller_frames_replayed_total",
    "frames_dropped": "switchboard_caller_frames_dropped_total",
    "calls_resumed": "switchboard_calls_resumed_total",
    "streams_taken_over": "switchboard_streams_taken_over_total",
    "live_write_retries": "switchboard_live_state_write_retries_total",
    "orphans_archived": "switchboard_orphans_archived_total",
    "barge_ins": "switchboard_barge_ins_total",
}


async def redis_inventory(client: Any) -> list[dict[str, Any]]:
    """The keys left in Redis, grouped by shape (call SIDs and other ids replaced by *), with how many of
    each have no expiry: what a finished call leaves behind."""
    import re

    groups: dict[str, dict[str, Any]] = {}
    async for raw in client.scan_iter(count=1000):
        key = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
        shape = re.sub(r"CA[0-9a-f]{32}", "CA*", key)
        shape = re.sub(r"[0-9a-f]{16,}|\d{3,}", "*", shape)
        g = groups.setdefault(shape, {"shape": shape, "keys": 0, "no_expiry": 0, "type": None})
        g["keys"] += 1
        if await client.ttl(raw) == -1:
            g["no_expiry"] += 1
        if g["type"] is None:
            t = await client.type(raw)
            g["type"] = t.decode() if isinstance(t, bytes) else str(t)
        if g["type"] == "zset":  # an index (e.g. of live calls): how many members it still holds
            g["members"] = g.get("members", 0) + await client.zcard(raw)
    return sorted(groups.values(), key=lambda g: -g["keys"])


# --------------------------------------------------------------------------------------------------------------
# statistics


def lsq_slope(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float]:
    """Least-squares (slope, intercept) of ys over xs."""
    n = len(xs)
    if n < 2:
        return float("nan"), float("nan")
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        return float("nan"), float("nan")
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx
    return slope, my - slope * mx


def pcts(values: Sequence[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "p50": percentile(values, 50),
        "p95": percentile(values, 95),
        "p99": percentile(values, 99),
        "max": max(values) if values else float("nan"),
    }


_EXPECTED_BYTES: dict[str, list[int]] = {}


def expected_upstream_bytes(audio_format: str, frames: int) -> int:
    """Bytes a fresh CallerAudioPath emits for ``frames`` 160-byte frames (content does not matter)."""
    from app.core.audio import CallerAudioPath

    cum = _EXPECTED_BYTES.setdefault(audio_format, [0])
    if len(cum) <= frames:
        path = CallerAudioPath(audio_format)  # type: ignore[arg-type]
        total = 0
        cum.clear()
        cum.append(0)
        silence = b"\xff" * 160
        for _ in range(frames + 500):
            total += len(path.convert(silence))
            cum.append(total)
    return cum[frames]


# --------------------------------------------------------------------------------------------------------------
# the run


@dataclass
class Config:
    nodes: int
    calls: int
    duration_s: float
    warmup_s: float
    call_length_s: float
    audio_format: str
    sample_every_s: float
    window_s: float
    drivers: int
    ramp_s: float
    pacing_speed: float
    redis: str
    redis_max_connections: int | None
    db: str
    keep_logs: Path | None
    direct: bool = False


@dataclass
class Node:
    index: int
    url: str
    proc: subprocess.Popen[bytes]
    logs: NodeLogs


async def _wait_ready(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 60.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient(timeout=2.0) as http:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"node exited with {proc.returncode} before it was ready")
            with contextlib.suppress(httpx.HTTPError):
                if (await http.get(url + "/readyz")).status_code == 200:
                    return
            await asyncio.sleep(0.2)
    raise RuntimeError(f"node {url} not ready in time")


def _stop_popen(p: subprocess.Popen[bytes] | None, timeout: float = 20.0) -> None:
    if p is None or p.poll() is not None:
        return
    p.terminate()
    try:
        p.wait(timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


def _stop_mp(p: Any, conn: Any | None = None) -> None:
    if p is None:
        return
    if conn is not None:
        with contextlib.suppress(Exception):
            if p.is_alive():
                conn.send("stop")
    p.join(10)
    if p.is_alive():
        p.terminate()
        p.join(5)
    if p.is_alive():
        p.kill()
        p.join()


async def run_soak(cfg: Config) -> dict[str, Any]:
    import httpx

    tmp = Path(tempfile.mkdtemp(prefix="soak_"))
    services = Services(tmp)
    nodes: list[Node] = []
    emu_proc = emu_conn = proxy_proc = proxy_conn = None
    driver_procs: list[Any] = []
    result: dict[str, Any] = {}
    ctx = mp.get_context("spawn")
    try:
        # -- services -----------------------------------------------------------------------------------------
        use_redis = cfg.redis == "real" or (cfg.redis == "auto" and shutil.which("redis-server") is not None)
        if cfg.nodes > 1 and not use_redis:
            raise RuntimeError("several nodes need a shared Redis: install redis-server (or pass --redis real)")
        if use_redis:
            services.start_redis()
        use_pg = cfg.db == "postgres" or (cfg.db == "auto" and cfg.nodes > 1 and Services.find_pg_bindir())
        if use_pg:
            services.start_postgres()
        elif cfg.nodes > 1:
            services.database_url = f"sqlite+aiosqlite:///{tmp / 'shared.db'}"
        result["services"] = {
            "redis": services.redis_url or "in-process stand-in (fakeredis)",
            "database": services.database_url or "SQLite in the node's DATA_DIR",
        }
        print(f"# redis: {result['services']['redis']}; database: {result['services']['database']}", flush=True)

        # -- emulator -----------------------------------------------------------------------------------------
        parent, child = ctx.Pipe()
        emu_proc = ctx.Process(target=emulator_main, args=(child, free_port(), cfg.pacing_speed), daemon=True)
        emu_proc.start()
        emu_conn = parent
        if not parent.poll(60):
            raise RuntimeError("emulator helper did not start")
        _tag, emu_port = parent.recv()

        # -- nodes --------------------------------------------------------------------------------------------
        base_env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("OPENAI_", "TWILIO_", "DATABASE_", "REDIS_", "AUDIO_", "PUBLIC_", "CONSOLE_"))
        }
        base_env.update(
            PUBLIC_BASE_URL=PUBLIC_BASE_URL,
            TWILIO_AUTH_TOKEN=AUTH_TOKEN,
            OPENAI_API_KEY="soak-key",
            OPENAI_REALTIME_URL=f"ws://127.0.0.1:{emu_port}/v1",
            AUDIO_FORMAT=cfg.audio_format,
            LOG_LEVEL="INFO",
            CONSOLE_SECRET="soak-console-secret-" + "0" * 24,
            PYTHONPATH=os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]),
        )
        if services.redis_url:
            base_env["REDIS_URL"] = services.redis_url
            if cfg.redis_max_connections:  # redis-py reads the pool size from the URL
                base_env["REDIS_URL"] += f"?max_connections={cfg.redis_max_connections}"
        if services.database_url:
            base_env["DATABASE_URL"] = services.database_url
        envs = []
        for i in range(cfg.nodes):
            d = tmp / f"node{i}"
            d.mkdir()
            envs.append(base_env | {"DATA_DIR": str(d)})
        subprocess.run(
            [*SWITCHBOARD, "migrate"], env=envs[0], check=True, capture_output=True, timeout=120, cwd=tmp / "node0"
        )
        result["app_imported_from"] = subprocess.run(
            [sys.executable, "-c", "import app; print(app.__file__)"],
            env=envs[0],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout.strip()
        print(f"# nodes run {result['app_imported_from']}", flush=True)
        for i in range(cfg.nodes):
            port = free_port()
            d = tmp / f"node{i}"
            proc = subprocess.Popen(
                [*SWITCHBOARD, "serve", "--host", "127.0.0.1", "--port", str(port)],
                env=envs[i],
                cwd=d,
                stdout=open(d / "server.out", "wb"),
                stderr=open(d / "server.log", "wb"),
            )
            nodes.append(
                Node(
                    i,
                    f"http://127.0.0.1:{port}",
                    proc,
                    NodeLogs([LogTail(d / "server.out"), LogTail(d / "server.log")]),
                )
            )
        for node in nodes:
            await _wait_ready(node.url, node.proc)

        # -- proxy --------------------------------------------------------------------------------------------
        if cfg.direct:  # one node, dialled directly: the proxy's CPU stays out of a shared machine
            proxy_url = nodes[0].url
            print(f"# node {proxy_url}, dialled directly (no proxy)", flush=True)
        else:
            parent, child = ctx.Pipe()
            proxy_proc = ctx.Process(target=proxy_main, args=(child, [n.url for n in nodes], 1.0), daemon=True)
            proxy_proc.start()
            proxy_conn = parent
            if not parent.poll(60):
                raise RuntimeError("proxy did not start")
            _tag, proxy_url = parent.recv()
            print(f"# nodes {[n.url for n in nodes]} behind {proxy_url}", flush=True)

        # -- baseline: idle nodes after start-up --------------------------------------------------------------
        await asyncio.sleep(2.0)
        result["rss_idle_before_kb"] = [proc_rss_kb(n.proc.pid) for n in nodes]

        # -- drivers ------------------------------------------------------------------------------------------
        results_q: Any = ctx.Queue()
        k = max(1, cfg.drivers)
        lead_s = 3.0 + 1.0 * k  # time for driver processes to import and synthesize
        start_at = time.time() + lead_s
        end_at = start_at + cfg.duration_s
        for d in range(k):
            spec = DriverSpec(
                index=d,
                proxy_url=proxy_url,
                slots=list(range(d, cfg.calls, k)),
                n_total=cfg.calls,
                start_at=start_at,
                end_at=end_at,
                call_length_s=cfg.call_length_s,
                ramp_s=cfg.ramp_s,
                sample_every_s=cfg.sample_every_s,
            )
            p = ctx.Process(target=driver_main, args=(spec, results_q), daemon=True)
            p.start()
            driver_procs.append(p)

        # -- sampling -----------------------------------------------------------------------------------------
        redis_client = None
        if services.redis_url:
            import redis.asyncio as aioredis

            redis_client = aioredis.from_url(services.redis_url)
        calls: list[dict[str, Any]] = []
        lags: list[tuple[int, float, float, float, float]] = []
        driver_errors: list[str] = []
        done: set[int] = set()
        emu_deltas: list[tuple[float, float]] = []
        emu_closed: list[dict[str, Any]] = []
        samples: list[dict[str, Any]] = []

        def drain_queue() -> None:
            while True:
                try:
                    item = results_q.get_nowait()
                except queue_mod.Empty:
                    return
                if item[0] == "call":
                    calls.append(item[1])
                elif item[0] == "lag":
                    lags.append(tuple(item[1:]))  # type: ignore[arg-type]
                elif item[0] == "driver_error":
                    driver_errors.append(f"driver {item[1]}: {item[2]}")
                elif item[0] == "done":
                    done.add(item[1])

        def harvest_emulator() -> None:
            emu_conn.send("harvest")
            if emu_conn.poll(10):
                _t, h = emu_conn.recv()
                emu_deltas.extend(h["deltas"])
                emu_closed.extend(h["closed"])

        def proxy_stats() -> dict[str, Any] | None:
            if proxy_conn is None:
                return None
            proxy_conn.send("stats")
            if proxy_conn.poll(10):
                return proxy_conn.recv()[1]
            return None

        harness_pids = {"emulator": [emu_proc.pid], "drivers": [p.pid for p in driver_procs]}
        if proxy_proc is not None:
            harness_pids["proxy"] = [proxy_proc.pid]
        if services.redis is not None:
            harness_pids["redis"] = [services.redis.pid]

        async def sample(http: httpx.AsyncClient, label: str) -> dict[str, Any]:
            now = time.time()
            s: dict[str, Any] = {"t": round(now - start_at, 2), "wall": now, "label": label, "nodes": []}
            for node in nodes:
                entry: dict[str, Any] = {
                    "rss_kb": proc_rss_kb(node.proc.pid),
                    "cpu_s": _cpu(node.proc.pid),
                }
                try:
                    m = parse_metrics((await http.get(node.url + "/metrics")).text)
                    entry.update({key: metric_sum(m, name) for key, name in NODE_METRICS.items()})
                    entry["reconnect_reasons"] = metric_labels(m, "switchboard_upstream_reconnects_total")
                    entry["upstream_connect_buckets"] = metric_labels(m, "switchboard_upstream_connect_seconds_bucket")
                    entry["upstream_connect_sum"] = m.get("switchboard_upstream_connect_seconds_sum", 0.0)
                    entry["upstream_connect_count"] = m.get("switchboard_upstream_connect_seconds_count", 0.0)
                    entry["loop_lag_buckets"] = metric_labels(m, "switchboard_event_loop_lag_seconds_bucket")
                    entry["loop_lag_count"] = m.get("switchboard_event_loop_lag_seconds_count", 0.0)
                    entry["loop_lag_sum"] = m.get("switchboard_event_loop_lag_seconds_sum", 0.0)
                    entry["ended_by_status"] = metric_labels(m, "switchboard_calls_ended_total")
                except httpx.HTTPError as exc:
                    entry["metrics_error"] = repr(exc)
                s["nodes"].append(entry)
            harness: dict[str, Any] = {}
            for role, pids in harness_pids.items():
                harness[role] = {
                    "cpu_s": sum(_cpu(p) or 0.0 for p in pids),
                    "rss_kb": sum(proc_rss_kb(p) or 0 for p in pids),
                }
            if services.pg_pid is not None:
                pg = [services.pg_pid, *_children(services.pg_pid)]
                harness["postgres"] = {
                    "cpu_s": sum(_cpu(p) or 0.0 for p in pg),
                    "rss_kb": sum(proc_rss_kb(p) or 0 for p in pg),
                }
            harness["soak_main"] = {"cpu_s": _cpu(os.getpid()), "rss_kb": proc_rss_kb(os.getpid())}
            s["harness"] = harness
            s["sys_busy"], s["sys_total"] = _system_busy()
            if redis_client is not None:
                with contextlib.suppress(Exception):
                    info = await redis_client.info("memory")
                    s["redis_used_memory"] = info.get("used_memory")
                    s["redis_keys"] = await redis_client.dbsize()
            return s

        # no keep-alive: a pooled connection the node closes (uvicorn: after 5 s idle) just as a sample reuses
        # it would fail that sample
        async with httpx.AsyncClient(timeout=10.0, limits=httpx.Limits(max_keepalive_connections=0)) as http:
            samples.append(await sample(http, "before"))
            next_at = start_at
            hdr_every = 20
            printed = 0
            while time.time() < end_at + cfg.call_length_s + 120 and len(done) < k:
                await asyncio.sleep(max(0.0, next_at - time.time()))
                next_at += cfg.sample_every_s
                drain_queue()
                harvest_emulator()
                for node in nodes:
                    node.logs.poll()
                s = await sample(http, "load" if time.time() <= end_at else "ending")
                prev = samples[-1]
                samples.append(s)
                if printed % hdr_every == 0:
                    print(
                        "#     t  | per node: active, RSS MB, CPU % | calls done, failed | turns p50/p99 ms (reported "
                        "in interval) | machine busy %",
                        flush=True,
                    )
                printed += 1
                dt = max(1e-9, s["wall"] - prev["wall"])
                parts = []
                for a, b in zip(prev["nodes"], s["nodes"], strict=True):
                    cpu = ((b["cpu_s"] or 0) - (a["cpu_s"] or 0)) / dt * 100
                    parts.append(f"{int(b.get('active', -1)):4d} {(b['rss_kb'] or 0) / 1024:7.1f} {cpu:5.1f}")
                recent = [
                    t[1]
                    for c in calls
                    if not c["error"] and c["ended_at"] > prev["wall"]
                    for t in c["turns"]
                    if t[1] is not None
                ]
                busy = (s["sys_busy"] - prev["sys_busy"]) / max(1.0, s["sys_total"] - prev["sys_total"]) * 100
                print(
                    f"{s['t']:7.0f}s | "
                    + " | ".join(parts)
                    + f" | {sum(1 for c in calls if not c['error']):5d} {sum(1 for c in calls if c['error']):3d}"
                    + f" | {percentile(recent, 50):7.1f} {percentile(recent, 99):7.1f} | {busy:5.1f}",
                    flush=True,
                )
                if any(n.proc.poll() is not None for n in nodes):
                    raise RuntimeError("a node exited during the run: " + str([n.proc.returncode for n in nodes]))
            # -- wind down: every call ended; let archives and logs settle, then an idle sample ---------------
            for _ in range(120):
                drain_queue()
                if len(done) >= k:
                    break
                await asyncio.sleep(0.5)
            await asyncio.sleep(5.0)
            drain_queue()
            harvest_emulator()
            ok_calls = [c for c in calls if not c["error"]]
            # a call's end is logged after its archive is written, which may wait for a database connection
            # (up to the pool timeout, 30 s): wait until every node has no call left and every end is logged
            for _ in range(900):
                idle = True
                for node in nodes:
                    try:
                        m = parse_metrics((await http.get(node.url + "/metrics")).text)
                        idle = idle and metric_sum(m, "switchboard_calls_active") == 0
                    except httpx.HTTPError:
                        idle = False
                for node in nodes:
                    node.logs.poll()
                got = {
                    sid
                    for node in nodes
                    for sid, recs in node.logs.ends.items()
                    if any(r["event"] == "call.ended" for r in recs)
                }
                if idle and all(c["call_sid"] in got for c in ok_calls):
                    break
                await asyncio.sleep(0.2)
            samples.append(await sample(http, "after"))
            result["proxy"] = proxy_stats()
        if redis_client is not None:
            result["redis_keys_after"] = await redis_inventory(redis_client)
            await redis_client.aclose()
        result["rss_idle_after_kb"] = [proc_rss_kb(n.proc.pid) for n in nodes]

        # -- verdicts and figures -----------------------------------------------------------------------------
        result.update(
            summarize(cfg, start_at, end_at, nodes, calls, samples, lags, emu_deltas, emu_closed, driver_errors)
        )
        result["samples"] = samples
        result["calls_detail"] = calls
        return result
    finally:
        for p in driver_procs:
            _stop_mp(p)
        _stop_mp(proxy_proc, proxy_conn)
        for node in nodes:
            _stop_popen(node.proc)
        if cfg.keep_logs is not None and nodes:
            cfg.keep_logs.mkdir(parents=True, exist_ok=True)
            for node in nodes:
                for name in ("server.out", "server.log"):
                    with contextlib.suppress(OSError):
                        shutil.copy(tmp / f"node{node.index}" / name, cfg.keep_logs / f"node{node.index}_{name}")
        _stop_mp(emu_proc, emu_conn)
        services.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def summarize(
    cfg: Config,
    start_at: float,
    end_at: float,
    nodes: list[Node],
    calls: list[dict[str, Any]],
    samples: list[dict[str, Any]],
    lags: list[tuple[int, float, float, float, float]],
    emu_deltas: list[tuple[float, float]],
    emu_closed: list[dict[str, Any]],
    driver_errors: list[str],
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    ok = [c for c in calls if not c["error"]]
    failed = [c for c in calls if c["error"]]
    steady_t0 = cfg.warmup_s
    steady_t1 = cfg.duration_s - MIN_CALL_S  # slots stop dialing in the last seconds

    # -- frames: per call, the simulator's frames_sent against the node's frames_in ---------------------------
    ends: dict[str, list[tuple[int, dict[str, Any]]]] = defaultdict(list)
    for node in nodes:
        for sid, recs in node.logs.ends.items():
            ends[sid].extend((node.index, r) for r in recs)
    mismatched = []
    per_node_calls: Counter[int] = Counter()
    for c in ok:
        recs = ends.get(c["call_sid"], [])
        final = [r for _, r in recs if r.get("event") == "call.ended"]
        frames_in = sum(int(r.get("frames_in", 0)) for _, r in recs)
        c["frames_in"] = frames_in if recs else None
        c["node"] = recs[-1][0] if recs else None
        c["status"] = final[-1].get("status") if final else None
        c["end_reason"] = final[-1].get("reason") if final else None
        c["streams"] = len(recs)
        if c["node"] is not None:
            per_node_calls[c["node"]] += 1
        if not final or frames_in != c["frames_sent"] or c["status"] != "completed":
            mismatched.append(
                {k: c.get(k) for k in ("call_sid", "frames_sent", "frames_in", "status", "end_reason", "streams")}
            )
    last = samples[-1]["nodes"]
    frames_sent = sum(c["frames_sent"] for c in ok)
    frames_in_logged = sum(c["frames_in"] or 0 for c in ok)
    frames_metric = sum(n.get("caller_frames", 0) for n in last)
    bad_frames = sum(n.get("bad_frames", 0) for n in last)
    got = sorted(s["input_bytes"] for s in emu_closed)
    want = sorted(expected_upstream_bytes(cfg.audio_format, c["frames_sent"]) for c in ok)
    emulator_check = {
        "sessions": len(emu_closed),
        "bytes_expected": sum(want),
        "bytes_received": sum(got),
        "exact_match": got == want,
        # rank by rank (sessions cannot be told apart from calls): how many fell short, and by how much at most
        "short_by_rank": sum(1 for g, w in zip(got, want, strict=False) if g < w),
        "max_short_bytes": max((w - g for g, w in zip(got, want, strict=False)), default=0),
        "close_codes": dict(Counter(str(s.get("close_code")) for s in emu_closed)),
        "received_sorted": got,
        "expected_sorted": want,
    }
    unlogged = [m for m in mismatched if m["frames_in"] is None]
    unlogged_frames = sum(m["frames_sent"] for m in unlogged)
    logged_in = sum(c["frames_in"] for c in ok if c["frames_in"] is not None)
    short = [m for m in mismatched if m["frames_in"] is not None and m["frames_in"] != m["frames_sent"]]
    not_completed = [m for m in mismatched if m["frames_in"] == m["frames_sent"] and m["status"] != "completed"]
    # The acceptance test: every frame a caller sent reached the node (frames_in == frames_sent per call). A
    # call whose end the node has not logged yet counts when the node's frame total accounts for its frames.
    all_delivered = bool(
        ok
        and not short
        and bad_frames == 0
        and frames_metric == frames_sent
        and (not unlogged or frames_metric - logged_in == unlogged_frames)
        and not driver_errors
    )
    # The next hop: caller audio the node dropped (held while a Realtime session was not ready, past the bound
    # of BridgeConfig.max_buffered_frames), and what the emulator received.
    frames_dropped = sum(int(r.get("frames_dropped", 0)) for recs in ends.values() for _, r in recs)
    # calls the node still holds after every caller hung up and the end-of-run wait (a call end that hangs)
    left_open = sum(int(n.get("active") or 0) for n in samples[-1]["nodes"]) if samples else 0
    calls_dropping = sum(1 for recs in ends.values() if any(int(r.get("frames_dropped", 0)) for _, r in recs))
    out["frames"] = {
        "calls_completed": len(ok),
        "calls_failed": len(failed),
        "failed_examples": [c["error"] for c in failed[:5]],
        "failed_by_kind": dict(Counter(c["error"].split(" failed: ")[-1].split("(")[0] for c in failed)),
        "frames_sent": frames_sent,
        "frames_in_logged": frames_in_logged,
        "frames_metric": frames_metric,
        "frames_expected_by_clock": sum(c["frames_expected"] for c in ok),
        "calls_frames_mismatched": len(mismatched),
        # calls whose end the node never logged (so no per-call frames_in): are their frames in the node's total?
        "calls_end_not_logged": len(unlogged),
        "unlogged_frames_in_metric_total": bool(unlogged) and frames_metric - logged_in == unlogged_frames,
        "calls_frames_short": len(short),
        "calls_left_open_on_node": left_open,
        "calls_not_completed": len(not_completed),
        "frames_dropped_by_node": frames_dropped,
        "calls_dropping_frames": calls_dropping,
        "frames_lost_by_metric": frames_sent - frames_metric,
        "mismatch_examples": mismatched[:5],
        "bad_frames": bad_frames,
        "emulator": emulator_check,
        "every_frame_delivered": all_delivered,
        "calls_per_node": {str(k): v for k, v in sorted(per_node_calls.items())},
        "close_codes": dict(Counter(str(c["close_code"]) for c in ok)),
        "hung_up_by": dict(Counter(c["hung_up_by"] for c in ok)),
        "protocol_errors": sum(c["protocol_errors"] for c in ok),
        "driver_errors": driver_errors,
    }

    # -- reconnects and recovery --------------------------------------------------------------------------------
    rec: dict[str, Any] = {}
    for key in (
        "upstream_reconnects",
        "upstream_failures",
        "frames_held",
        "frames_dropped",
        "frames_replayed",
        "calls_resumed",
        "streams_taken_over",
        "live_write_retries",
        "orphans_archived",
        "streams_rejected",
    ):
        rec[key] = sum(n.get(key, 0) for n in last)
    rec["reconnect_reasons"] = [n.get("reconnect_reasons", {}) for n in last]
    rec["streams_per_call_gt1"] = sum(1 for c in ok if (c.get("streams") or 0) > 1)
    out["reconnects"] = rec
    count = sum(n.get("upstream_connect_count", 0) for n in last)
    if count:

        def above(le: str) -> float:  # sessions that took longer than the bucket bound
            return count - sum(n.get("upstream_connect_buckets", {}).get('{le="' + le + '"}', 0) for n in last)

        out["upstream_connect"] = {
            "count": count,
            "mean_s": sum(n.get("upstream_connect_sum", 0) for n in last) / count,
            "over_2_5_s": above("2.5"),
            "over_5_s": above("5.0"),
        }

    # -- event-loop lag over the steady state (switchboard_event_loop_lag_seconds, 4 timers a second) ------------
    steady = [x for x in samples if steady_t0 <= x["t"] <= cfg.duration_s and x["nodes"][0].get("loop_lag_count")]
    if len(steady) >= 2:
        lag_nodes = []
        for i in range(len(steady[0]["nodes"])):
            a, b = steady[0]["nodes"][i], steady[-1]["nodes"][i]
            n = b["loop_lag_count"] - a["loop_lag_count"]
            if n <= 0:
                continue
            ba, bb = a.get("loop_lag_buckets", {}), b.get("loop_lag_buckets", {})
            cum = sorted(
                ((float(k.split('"')[1]), bb[k] - ba.get(k, 0)) for k in bb if "+Inf" not in k), key=lambda kv: kv[0]
            )

            def quantile(q: float, cum: list[tuple[float, float]] = cum, n: float = n) -> str:
                return next((f"<= {le:g} s" for le, c in cum if c >= q * n), "> 5 s")

            over = {f"{le:g}": n - c for le, c in cum if le in (0.05, 0.1, 0.25, 1.0)}
            mean_ms = (b["loop_lag_sum"] - a["loop_lag_sum"]) / n * 1000
            lag_nodes.append({"node": i, "timers": n, "mean_ms": mean_ms, "p50": quantile(0.5), "p99": quantile(0.99),
                              "late_over_s": over})  # fmt: skip
        out["loop_lag"] = lag_nodes

    # -- turn latency: per window after the warm-up, and per sample interval -----------------------------------
    turns = [(t[0] - start_at, t[1]) for c in ok for t in c["turns"] if t[1] is not None]
    no_reply = [(t[0] - start_at) for c in ok for t in c["turns"] if t[1] is None and not t[2]]
    cut = sum(1 for c in ok for t in c["turns"] if t[1] is None and t[2])
    deltas = [(w - start_at, ms) for w, ms in emu_deltas]
    edges = [0.0, steady_t0]
    x = steady_t0
    while cfg.duration_s - x > cfg.window_s * 1.5:  # the last window: between 0.5 and 1.5 windows long
        x += cfg.window_s
        edges.append(x)
    edges.append(cfg.duration_s)
    windows = []
    for i in range(len(edges) - 1):
        a, b = edges[i], edges[i + 1]
        lat = [ms for t, ms in turns if a <= t < b]
        emu = [ms for t, ms in deltas if a <= t < b]
        node_cpu, node_rss = [], []
        sa = [s for s in samples if s["label"] in ("load", "ending") and a <= s["t"] <= b]
        if len(sa) >= 2:
            dt = sa[-1]["wall"] - sa[0]["wall"]
            for j in range(len(nodes)):
                c0, c1 = sa[0]["nodes"][j]["cpu_s"], sa[-1]["nodes"][j]["cpu_s"]
                node_cpu.append((c1 - c0) / dt * 100 if c0 is not None and c1 is not None else float("nan"))
                node_rss.append((sa[-1]["nodes"][j]["rss_kb"] or 0) / 1024)
        others = float("nan")
        if len(sa) >= 2:
            busy = (sa[-1]["sys_busy"] - sa[0]["sys_busy"]) / os.sysconf("SC_CLK_TCK")
            mine = sum(sa[-1]["harness"][r]["cpu_s"] - sa[0]["harness"][r]["cpu_s"] for r in sa[0]["harness"])
            mine += sum(
                (sa[-1]["nodes"][j]["cpu_s"] or 0) - (sa[0]["nodes"][j]["cpu_s"] or 0) for j in range(len(nodes))
            )
            others = (busy - mine) / (sa[-1]["wall"] - sa[0]["wall"]) * 100
        lag99 = [p99 for _i, w, _p50, p99, _mx in lags if a <= w - start_at < b]
        windows.append(
            {
                "from_s": a,
                "to_s": b,
                "warmup": i == 0,
                "turns": pcts(lat),
                "no_reply": sum(1 for t in no_reply if a <= t < b),
                "emulator_stop_to_delta": pcts(emu),
                "node_cpu_pct": node_cpu,
                "node_rss_mb_at_end": node_rss,
                "other_processes_cpu_pct": others,
                "driver_loop_lag_p99_ms_max": max(lag99) if lag99 else float("nan"),
                "calls_ended": sum(1 for c in ok if a <= c["ended_at"] - start_at < b),
                "send_lag_ms_p99_of_calls": percentile(
                    [c["max_send_lag_ms"] for c in ok if a <= c["ended_at"] - start_at < b], 99
                ),
            }
        )
    out["windows"] = windows
    steady_windows = [w for w in windows if not w["warmup"] and w["turns"]["n"]]
    p99s = [w["turns"]["p99"] for w in steady_windows]
    steady_lat = [ms for t, ms in turns if steady_t0 <= t < cfg.duration_s]
    out["turns"] = {
        "all": pcts([ms for _, ms in turns]),
        "steady": pcts(steady_lat),
        "no_reply": len(no_reply),
        "cut_by_hangup": cut,
        "emulator_stop_to_delta_steady": pcts([ms for t, ms in deltas if steady_t0 <= t < cfg.duration_s]),
        "window_p99_min": min(p99s) if p99s else float("nan"),
        "window_p99_max": max(p99s) if p99s else float("nan"),
        "window_p99_ratio": (max(p99s) / min(p99s)) if p99s and min(p99s) > 0 else float("nan"),
        # None: fewer than two steady windows, nothing to compare
        "p99_stable": (max(p99s) <= P99_STABLE_RATIO * min(p99s)) if len(p99s) >= 2 else None,
    }
    # per sample interval percentiles (attributed by the time the turn could end)
    load = [s for s in samples if s["label"] in ("load", "ending")]
    prev_t = 0.0
    for s in load:
        lat = [ms for t, ms in turns if prev_t <= t < s["t"]]
        s["turns_interval"] = {k: v for k, v in pcts(lat).items() if k != "max"}
        prev_t = s["t"]

    # -- memory and CPU per node ----------------------------------------------------------------------------------
    steady = [s for s in samples if s["label"] == "load" and steady_t0 <= s["t"] <= steady_t1]
    mem_nodes = []
    for j in range(len(nodes)):
        xs = [s["t"] for s in steady if s["nodes"][j]["rss_kb"]]
        ys = [s["nodes"][j]["rss_kb"] / 1024 for s in steady if s["nodes"][j]["rss_kb"]]
        slope, icpt = lsq_slope(xs, ys)  # MB per second
        fitted0 = icpt + slope * steady_t0 if xs else float("nan")
        half = len(xs) // 2  # does the growth slow down? the same fit over the second half of the steady state
        slope2, _ = lsq_slope(xs[half:], ys[half:])
        entry: dict[str, Any] = {
            "node": j,
            "rss_idle_before_mb": (samples[0]["nodes"][j]["rss_kb"] or 0) / 1024,
            "rss_steady_start_mb": ys[0] if ys else float("nan"),
            "rss_end_mb": ys[-1] if ys else float("nan"),
            "rss_max_mb": max(ys) if ys else float("nan"),
            "rss_idle_after_mb": (samples[-1]["nodes"][j]["rss_kb"] or 0) / 1024,
            "steady_samples": len(xs),
            "steady_from_s": xs[0] if xs else float("nan"),
            "steady_to_s": xs[-1] if xs else float("nan"),
            "slope_mb_per_hour": slope * 3600,
            "growth_pct_per_10min": slope * 600 / fitted0 * 100 if fitted0 else float("nan"),
            "growth_pct_per_hour": slope * 3600 / fitted0 * 100 if fitted0 else float("nan"),
            "slope_second_half_mb_per_hour": slope2 * 3600,
            "growth_second_half_pct_per_10min": slope2 * 600 / fitted0 * 100 if fitted0 else float("nan"),
        }
        entry["memory_ok"] = bool(
            entry["growth_pct_per_10min"] == entry["growth_pct_per_10min"]
            and entry["growth_pct_per_10min"] < MEMORY_GROWTH_LIMIT_PCT_PER_10MIN
        )
        if len(steady) >= 2:
            dt = steady[-1]["wall"] - steady[0]["wall"]
            c0, c1 = steady[0]["nodes"][j]["cpu_s"], steady[-1]["nodes"][j]["cpu_s"]
            entry["cpu_pct_steady"] = (c1 - c0) / dt * 100
            actives = [s["nodes"][j].get("active", 0) for s in steady]
            entry["active_calls_mean"] = sum(actives) / len(actives)
            entry["active_calls_min"], entry["active_calls_max"] = min(actives), max(actives)
        mem_nodes.append(entry)
    out["nodes"] = mem_nodes
    if len(steady) >= 2:
        dt = steady[-1]["wall"] - steady[0]["wall"]
        out["harness_cpu_pct_steady"] = {
            role: (steady[-1]["harness"][role]["cpu_s"] - steady[0]["harness"][role]["cpu_s"]) / dt * 100
            for role in steady[0]["harness"]
        }
        out["harness_rss_mb_end"] = {role: v["rss_kb"] / 1024 for role, v in steady[-1]["harness"].items()}
        # CPU the machine spent outside this run's processes (other work on a shared machine), % of a core
        busy_core_s = (steady[-1]["sys_busy"] - steady[0]["sys_busy"]) / os.sysconf("SC_CLK_TCK")
        mine = sum(out["harness_cpu_pct_steady"].values()) / 100 * dt + sum(
            (steady[-1]["nodes"][j]["cpu_s"] or 0) - (steady[0]["nodes"][j]["cpu_s"] or 0) for j in range(len(nodes))
        )
        out["other_processes_cpu_pct_steady"] = (busy_core_s - mine) / dt * 100
        out["machine_busy_pct_steady"] = (
            (steady[-1]["sys_busy"] - steady[0]["sys_busy"])
            / max(1.0, steady[-1]["sys_total"] - steady[0]["sys_total"])
        ) * 100
        if "redis_used_memory" in steady[0]:
            out["redis"] = {
                "used_memory_mb_start": steady[0]["redis_used_memory"] / 2**20,
                "used_memory_mb_end": steady[-1]["redis_used_memory"] / 2**20,
                "keys_start": steady[0].get("redis_keys"),
                "keys_end": steady[-1].get("redis_keys"),
                "keys_after": samples[-1].get("redis_keys"),
            }
    out["send_lag_ms"] = pcts([c["max_send_lag_ms"] for c in ok])
    out["setup_ms"] = pcts([c["setup_ms"] for c in ok])
    out["server_log_problems"] = [
        {"what": k, "count": v, "examples": next(n.logs.examples[k] for n in nodes if k in n.logs.examples)}
        for k, v in sum((n.logs.problems for n in nodes), Counter()).most_common(20)
    ]
    out["server_log_lines"] = [n.logs.lines for n in nodes]
    out["steady_window_s"] = [steady_t0, steady_t1]
    out["acceptance"] = {
        "every_frame_delivered": all_delivered,
        "every_call_placed": not failed,
        "every_call_ended_on_node": left_open == 0 and not unlogged,
        "node_to_realtime_exact": frames_dropped == 0 and emulator_check["exact_match"],
        "turn_p99_stable": out["turns"]["p99_stable"],
        "memory_growth_under_1pct_per_10min": all(n["memory_ok"] for n in mem_nodes),
    }
    return out


# --------------------------------------------------------------------------------------------------------------
# report


def print_report(cfg: Config, r: dict[str, Any]) -> None:
    print()
    f = r["frames"]
    print(
        f"calls completed {f['calls_completed']}, failed {f['calls_failed']}; per node {f['calls_per_node']}; "
        f"close codes {f['close_codes']}; hung up by {f['hung_up_by']}"
    )
    emu = f["emulator"]
    print(
        f"frames sent {f['frames_sent']}, frames_in logged {f['frames_in_logged']}, /metrics "
        f"{f['frames_metric']:.0f}; calls with frames_in != frames_sent: {f['calls_frames_mismatched']}; "
        f"bad frames {f['bad_frames']:.0f}; emulator bytes "
        + (
            "exact"
            if emu["exact_match"]
            else f"{emu['bytes_received']}/{emu['bytes_expected']} ({emu['short_by_rank']} sessions short by rank, "
            f"at most {emu['max_short_bytes']} B; sessions closed with {emu['close_codes']})"
        )
        + f" over {emu['sessions']} sessions"
    )
    if f["mismatch_examples"]:
        print(
            f"  of which: end never logged by the node {f['calls_end_not_logged']} (their frames "
            + ("are" if f["unlogged_frames_in_metric_total"] else "are NOT")
            + f" in the node's frame total), frames_in short {f['calls_frames_short']}; frames sent - /metrics "
            f"total = {f['frames_lost_by_metric']:.0f}"
        )
        print(f"  e.g. {f['mismatch_examples'][:2]}")
    if f["failed_examples"]:
        print(f"  failed calls by kind: {f['failed_by_kind']}; e.g. {f['failed_examples'][:2]}")
    rec = r["reconnects"]
    print(
        f"upstream reconnects {rec['upstream_reconnects']:.0f} {rec['reconnect_reasons']}, failures "
        f"{rec['upstream_failures']:.0f}, frames held/replayed/dropped {rec['frames_held']:.0f}/{rec['frames_replayed']:.0f}/"
        f"{rec['frames_dropped']:.0f}, "
        f"resumed {rec['calls_resumed']:.0f}, taken over {rec['streams_taken_over']:.0f}, streams rejected "
        f"{rec['streams_rejected']:.0f}, live-state write retries {rec['live_write_retries']:.0f}"
    )
    px = r.get("proxy")
    if px:
        print(
            f"proxy: connections {sum(px['accepted'].values())}, refused {px['refused']} (no ready node), health "
            f"checks {px['health_checks']}, failed {sum(px['health_check_failures'].values())}, nodes taken out of "
            f"rotation {sum(px['marked_down'].values())} times"
        )
    print()
    rows = []
    for w in r["windows"]:
        t, e = w["turns"], w["emulator_stop_to_delta"]
        rows.append(
            [
                f"{w['from_s'] / 60:.1f}-{w['to_s'] / 60:.1f} min" + (" (warm-up)" if w["warmup"] else ""),
                t["n"],
                w["no_reply"],
                t["p50"],
                t["p95"],
                t["p99"],
                t["max"],
                e["p99"],
                " / ".join(f"{x:.0f}" for x in w["node_cpu_pct"]),
                " / ".join(f"{x:.1f}" for x in w["node_rss_mb_at_end"]),
                w["send_lag_ms_p99_of_calls"],
                w["other_processes_cpu_pct"],
            ]
        )
    print(
        format_table(
            [
                "window",
                "turns",
                "no reply",
                "p50 ms",
                "p95 ms",
                "p99 ms",
                "max ms",
                "emu stop->delta p99",
                "node CPU %",
                "node RSS MB (end)",
                "send lag p99 ms",
                "others' CPU %",
            ],
            rows,
        )
    )
    t = r["turns"]
    print(
        f"\nsteady turns: p50 {t['steady']['p50']:.1f} / p95 {t['steady']['p95']:.1f} / p99 {t['steady']['p99']:.1f} ms "
        f"(n={t['steady']['n']}); window p99 {t['window_p99_min']:.1f}..{t['window_p99_max']:.1f} ms "
        f"(ratio {t['window_p99_ratio']:.2f}, stable if <= {P99_STABLE_RATIO}); no reply {t['no_reply']}, "
        f"cut by hang-up {t['cut_by_hangup']}"
    )
    print()
    rows = []
    for n in r["nodes"]:
        rows.append(
            [
                n["node"],
                n.get("active_calls_mean", float("nan")),
                n.get("cpu_pct_steady", float("nan")),
                n["rss_idle_before_mb"],
                n["rss_steady_start_mb"],
                n["rss_end_mb"],
                n["rss_max_mb"],
                n["rss_idle_after_mb"],
                n["slope_mb_per_hour"],
                n["growth_pct_per_10min"],
                n["growth_pct_per_hour"],
                n["growth_second_half_pct_per_10min"],
                "yes" if n["memory_ok"] else "NO",
            ]
        )
    print(
        format_table(
            [
                "node",
                "active (mean)",
                "CPU % core",
                "RSS idle MB",
                "RSS steady start",
                "RSS end",
                "RSS max",
                "RSS idle after",
                "slope MB/h",
                "growth %/10 min",
                "growth %/h",
                "2nd half %/10 min",
                "< 1%/10 min",
            ],
            rows,
        )
    )
    if "harness_cpu_pct_steady" in r:
        hc = ", ".join(f"{k} {v:.0f}%" for k, v in r["harness_cpu_pct_steady"].items())
        print(
            f"\nharness CPU (steady, % of a core): {hc}; machine busy {r['machine_busy_pct_steady']:.0f}%; "
            f"processes outside this run {r['other_processes_cpu_pct_steady']:.0f}% of a core"
        )
    if "redis" in r:
        rd = r["redis"]
        print(
            f"redis used_memory {rd['used_memory_mb_start']:.1f} -> {rd['used_memory_mb_end']:.1f} MB, keys "
            f"{rd['keys_start']} -> {rd['keys_end']} (after the run: {rd['keys_after']})"
        )
    sl = r["send_lag_ms"]
    print(f"caller send lag (worst per call): p50 {sl['p50']:.1f}, p99 {sl['p99']:.1f}, max {sl['max']:.1f} ms")
    if r["server_log_problems"]:
        print("server log warnings/errors:")
        for p in r["server_log_problems"][:10]:
            print(f"  {p['count']:6d}  {p['what']}")
    if r.get("redis_keys_after"):
        print("redis keys after the run (shape: keys, of which without expiry):")
        for g in r["redis_keys_after"][:10]:
            members = f", {g['members']} members" if "members" in g else ""
            print(f"  {g['keys']:6d} {g['no_expiry']:6d}  {g['shape']} ({g['type']}{members})")
    print(
        f"node -> Realtime: caller frames dropped by the node (held past its bound while no Realtime session was ready) "
        f"{f['frames_dropped_by_node']} in {f['calls_dropping_frames']} calls"
    )
    for lag in r.get("loop_lag", []):
        print(
            f"node {lag['node']} event-loop lag (steady, {lag['timers']:.0f} timers): mean {lag['mean_ms']:.1f} ms, "
            f"p50 {lag['p50']}, p99 {lag['p99']}; timers later than 50/100/250/1000 ms: "
            + "/".join(f"{lag['late_over_s'].get(k, 0):.0f}" for k in ("0.05", "0.1", "0.25", "1"))
        )
    uc = r.get("upstream_connect")
    if uc:
        print(
            f"Realtime session opening (switchboard_upstream_connect_seconds): {uc['count']:.0f} opened, mean "
            f"{uc['mean_s']:.2f} s, over 2.5 s: {uc['over_2_5_s']:.0f}, over 5 s: {uc['over_5_s']:.0f}"
        )
    a = r["acceptance"]
    stable = a["turn_p99_stable"]
    print(
        "\nacceptance: every frame delivered (caller -> node): "
        + ("yes" if a["every_frame_delivered"] else "NO")
        + "; every call placed: "
        + ("yes" if a["every_call_placed"] else "NO")
        + "; every call ended on the node: "
        + ("yes" if a["every_call_ended_on_node"] else f"NO ({f['calls_left_open_on_node']} left open)")
        + "; node -> Realtime exact: "
        + ("yes" if a["node_to_realtime_exact"] else "NO")
        + "; turn p99 stable: "
        + ("n/a (one steady window)" if stable is None else "yes" if stable else "NO")
        + "; memory growth < 1%/10 min: "
        + ("yes" if a["memory_growth_under_1pct_per_10min"] else "NO")
    )


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", type=int, default=1, help="server processes behind the proxy (default 1)")
    ap.add_argument("--calls", type=int, default=10, help="concurrent calls (default 10)")
    ap.add_argument("--duration", type=float, default=120.0, help="seconds of load in total, warm-up included")
    ap.add_argument("--warmup", type=float, default=None, help="seconds left out of the steady state (default: "
                    "180, or a fifth of --duration when that is shorter)")  # fmt: skip
    ap.add_argument("--call-length", type=float, default=90.0, help="seconds per call (default 90)")
    ap.add_argument("--audio-format", default="pcm24k", choices=["pcm24k", "pcmu"])
    ap.add_argument("--sample-every", type=float, default=10.0, help="seconds between samples (default 10)")
    ap.add_argument("--window", type=float, default=300.0, help="latency window in seconds (default 300)")
    ap.add_argument("--drivers", type=int, default=1, help="caller processes (default 1)")
    ap.add_argument("--ramp", type=float, default=None, help="spread the first call starts over N s (default "
                    "min(10, call length / 2))")  # fmt: skip
    ap.add_argument("--pacing-speed", type=float, default=2.0, help="emulator audio pacing (x real time)")
    ap.add_argument("--redis", choices=["auto", "real", "embedded"], default="auto")
    ap.add_argument("--redis-max-connections", type=int, default=None, help="the nodes' Redis pool size "
                    "(?max_connections= in REDIS_URL; default: REDIS_MAX_CONNECTIONS, 200)")  # fmt: skip
    ap.add_argument("--db", choices=["auto", "sqlite", "postgres"], default="auto")
    ap.add_argument("--keep-logs", type=Path, default=None, help="copy the nodes' logs here")
    ap.add_argument("--json", dest="json_path", type=Path, default=None)
    ap.add_argument("--direct", action="store_true", help="one node only: callers dial it directly, no proxy")
    args = ap.parse_args(argv)
    if args.calls < 1 or args.nodes < 1 or args.calls > 1000 or args.nodes > 16:
        ap.error("1..1000 calls and 1..16 nodes")
    if args.direct and args.nodes != 1:
        ap.error("--direct needs --nodes 1")
    if args.call_length < MIN_CALL_S:
        ap.error(f"--call-length must be at least {MIN_CALL_S:.0f} s")
    if args.duration < args.call_length + 10:
        ap.error("--duration must exceed --call-length by 10 s at least")
    warmup = args.warmup if args.warmup is not None else min(180.0, args.duration / 5)
    cfg = Config(
        nodes=args.nodes,
        calls=args.calls,
        duration_s=args.duration,
        warmup_s=warmup,
        call_length_s=args.call_length,
        audio_format=args.audio_format,
        sample_every_s=args.sample_every,
        window_s=args.window,
        drivers=args.drivers,
        ramp_s=args.ramp if args.ramp is not None else min(10.0, args.call_length / 2),
        pacing_speed=args.pacing_speed,
        redis=args.redis,
        redis_max_connections=args.redis_max_connections,
        db=args.db,
        keep_logs=args.keep_logs,
        direct=args.direct,
    )
    info = machine_info()
    print(f"# {info['cpu_model']}, {info['nproc']} CPUs, Python {info['python']}")
    print(
        f"# soak: {cfg.calls} concurrent calls on {cfg.nodes} node(s), {cfg.audio_format}, {cfg.duration_s:.0f} s "
        f"(warm-up {cfg.warmup_s:.0f} s), {cfg.call_length_s:.0f} s per call, sample every {cfg.sample_every_s:.0f} s",
        flush=True,
    )
    t0 = time.time()
    r = asyncio.run(run_soak(cfg))
    r["wall_s"] = time.time() - t0
    print_report(cfg, r)
    if args.json_path:
        args.json_path.parent.mkdir(parents=True, exist_ok=True)
        doc = {
            "machine": info,
            "command": " ".join([".venv/bin/python", "scripts/soak.py", *(argv if argv is not None else sys.argv[1:])]),
            "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(cfg).items()},
            **r,
        }
        args.json_path.write_text(json.dumps(doc, indent=1, default=str))
        print(f"wrote {args.json_path}")
    a = r["acceptance"]
    return 0 if a["every_frame_delivered"] else 1


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally blocks: stop every child
    sys.exit(main())
