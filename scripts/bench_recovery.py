#!/usr/bin/env python
"""How long a call goes without a Realtime session when the upstream fails, and what the caller notices.

    .venv/bin/python scripts/bench_recovery.py                       # 4 scenarios x 10 calls, in-process Redis
    .venv/bin/python scripts/bench_recovery.py --redis-url redis://127.0.0.1:6390/0 --json var/recovery.json
    .venv/bin/python scripts/bench_recovery.py --scenarios none,drop-1006 --calls 5 --fault-at speech

Everything runs in this process, on one event loop, over loopback sockets: the Realtime emulator
(``RealtimeEmulator(EmulatorConfig(tts="synthetic", ...))``), the server (``app.main.create_app`` under
uvicorn on a pre-bound socket, SQLite in a temp dir, Redis from ``--redis-url`` or the in-process stand-in)
and the callers (``app.simulator.simulate_call``). Per scenario, ``--calls`` calls run one after another;
each caller waits for the greeting and says 3 short utterances. At the moment ``--fault-at`` picks (below;
by default once the emulator has sent the greeting's ``response.done``), the fault is injected on that call's
emulator session:

  drop-1006        ``session.drop(1006)``: TCP aborted, no close frame
  drop-1011        ``session.drop(1011)``: close frame 1011
  session-expired  ``session.expire()``: error ``session_expired``, then close 1001
  rollover         no fault; ``realtime_session_max_s=1.0``, so the server replaces its session at quiet moments
  none             no fault (a baseline for the turn latencies)
  outage-<N>s      the emulator stops listening (its session is closed with 1001) and comes back after N s:
                   exercises the backoff, the held caller audio and, past the deadline, the apology
  redis-down-<N>s  not an upstream fault: a private redis-server (append-only, ``--redis-server``) is stopped
                   for N s and started again with its data; the caller stays on the line until N + 10 s

``--fault-at`` picks the moment: ``greeting`` (the greeting's ``response.done``), ``speech`` (the caller's first
utterance heard: ``input_audio_buffer.speech_started``), ``transcribed`` (its transcription sent) or ``reply``
(the first audio delta of the agent's answer to it).

Every other setting is the default (``upstream_recovery_deadline_s`` included). Per call, after the call is
archived, it reads from the database the ``upstream_recovered`` events (``recovery_ms``, ``attempts``, as the
server measured them) and the transcript; from ``GET /metrics`` deltas and the ``call.ended`` log the frames
the server received; from the emulator, when each session closed, when its successor got ``session.update``
and its first audio, and how much caller audio each session got; from ``CallResult.turns`` the turn latencies
(end of the caller's speech + 500 ms to the first agent audio frame back at the phone).

The emulator's transcripts are scripted: the n-th caller turn it commits is transcribed as the n-th utterance,
whatever audio it heard, so an utterance lost in a gap shows as a short transcript (a missing caller line and
its reply at the end), not as a wrong word. Its synthetic voice runs at 30 ms/char (default 60) to keep the
default run (4 scenarios x 10 calls, ~7 s per call) under 5 minutes; the caller's synthetic voice is unchanged.
Bounded: each call is capped by the caller script's ``max_duration_s`` plus fixed timeouts.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
import structlog
import uvicorn
from bench_common import format_table, machine_info, percentile
from twilio.request_validator import RequestValidator

from app.archive.service import get_call, get_call_events
from app.db import make_engine, make_sessionmaker
from app.emulator.config import EmulatorConfig
from app.emulator.server import RealtimeEmulator
from app.emulator.session import EmulatedSession
from app.main import create_app
from app.migrate import upgrade
from app.settings import Settings
from app.simulator import CallResult, CallScript, new_call_sid, simulate_call, synth_speech_mulaw

SCENARIOS = ("drop-1006", "drop-1011", "session-expired", "rollover", "none")
DEFAULT_SCENARIOS = ("drop-1006", "drop-1011", "session-expired", "rollover")
PUBLIC_BASE_URL = "https://switchboard.bench.invalid"
AUTH_TOKEN = "bench-recovery-auth-token"
BUSINESS = "Acme"
UTTERANCES = ("Tuesday.", "Yes.", "Bye now.")
AGENT_MS_PER_CHAR = 30.0  # the emulator's synthetic voice (default 60): shorter calls, same protocol
ROLLOVER_MAX_S = 1.0
CALL_CAP_S = 40.0  # the caller hangs up here whatever happens
FAULT_WAIT_S = 15.0
ARCHIVE_WAIT_S = 20.0
FRAME_MS = 20


def reply_text(heard: str) -> str:
    return f"Noted: {heard}"


def expected_lines() -> list[tuple[str, str]]:
    lines = [("agent", f"Thank you for calling {BUSINESS}. How can I help you today?")]
    for text in UTTERANCES:
        lines += [("caller", text), ("agent", reply_text(text))]
    return lines


# --------------------------------------------------------------------------------------------------------------
# logs: keep call.ended and warnings, print nothing


class LogCapture:
    """A structlog processor: remembers call.ended/stream_detached records and warnings, drops every event."""

    def __init__(self) -> None:
        self.ended: dict[str, dict[str, Any]] = {}
        self.warnings: list[dict[str, Any]] = []

    def __call__(self, logger: Any, method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
        event = event_dict.get("event")
        sid = event_dict.get("call_sid")
        if event in ("call.ended", "call.stream_detached") and sid:
            self.ended[str(sid)] = {k: v for k, v in event_dict.items() if isinstance(v, str | int | float | bool)}
        elif method in ("warning", "error", "critical", "exception"):
            self.warnings.append({"event": str(event), "level": method, "call_sid": sid})
        raise structlog.DropEvent


def configure_logs(capture: LogCapture) -> None:
    logging.basicConfig(level=logging.WARNING)
    structlog.configure(
        processors=[structlog.contextvars.merge_contextvars, capture],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        cache_logger_on_first_use=False,
    )


# --------------------------------------------------------------------------------------------------------------
# the server, in this process


def migrate(database_url: str) -> None:
    """Alembic's env runs asyncio.run itself: migrate from a worker thread."""
    with ThreadPoolExecutor(1) as pool:
        pool.submit(upgrade, database_url).result()


@contextlib.asynccontextmanager
async def serve(settings: Settings) -> AsyncIterator[str]:
    """uvicorn on a loopback socket that is listening before it starts (clients queue in the kernel)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    config = uvicorn.Config(
        create_app(settings),
        log_level="warning",
        lifespan="on",
        ws_max_size=4 * 1024 * 1024,
        timeout_graceful_shutdown=5,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(15):
                await task
        sock.close()


async def metrics(http: httpx.AsyncClient, base: str) -> dict[str, float]:
    text = (await http.get(base + "/metrics")).text
    out: dict[str, float] = {}
    for line in text.splitlines():
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)$", line)
        if m and not line.startswith("#"):
            out[m.group(1)] = out.get(m.group(1), 0.0) + float(m.group(3))
    return out


# --------------------------------------------------------------------------------------------------------------
# one call


@dataclass
class Swap:
    """One replacement of the call's Realtime session, seen from the emulator."""

    reason: str  # the fault, or "server" when the server closed the old session itself (rollover)
    gap_ms: float | None  # old session gone (fault injected / emulator saw it close) -> new session.update
    audio_gap_ms: float | None  # ... -> the new session's first input_audio_buffer.append


@dataclass
class CallOutcome:
    scenario: str
    call_sid: str
    error: str | None = None
    fault_injected: bool = False
    status: str | None = None
    end_reason: str | None = None
    recovery_ms: list[int] = field(default_factory=list)
    attempts: list[int] = field(default_factory=list)
    lost_reasons: list[str] = field(default_factory=list)
    rollovers: int = 0
    upstream_failed: bool = False
    swaps: list[Swap] = field(default_factory=list)
    sessions: int = 0
    lines: list[tuple[str, str]] = field(default_factory=list)
    lines_kept: bool = False
    frames_sent: int = 0
    frames_in_metric: int | None = None
    frames_in_log: int | None = None
    frames_dropped_log: int | None = None
    frames_replayed: list[int] = field(default_factory=list)  # caller_audio_replayed events: frames sent on
    metric_frames_held: int = 0  # switchboard_caller_frames_held_total delta
    metric_frames_replayed: int = 0  # switchboard_caller_frames_replayed_total delta
    caller_audio_ms: float = 0.0
    upstream_audio_ms: float = 0.0  # caller audio the emulator sessions received, all sessions of the call
    turn_latencies_ms: list[float | None] = field(default_factory=list)
    turns_after_fault_ms: list[float | None] = field(default_factory=list)
    hung_up_by: str | None = None
    close_code: int | None = None
    close_reason: str | None = None
    server_closed_after_fault_ms: float | None = None  # the server ended the call (e.g. past the deadline)
    server_closed_after_back_ms: float | None = None  # ... this long after the service (outage, Redis) was back
    detached: bool = False  # closed by the server with a code other than 1000 and not archived: goes on elsewhere
    live_write_retries: int = 0
    streams_active_after: int = 0  # switchboard_calls_active once this call was over: streams that never ended
    resume_twiml: list[str] = field(default_factory=list)
    protocol_errors: int = 0
    max_send_lag_ms: float = 0.0
    duration_s: float = 0.0


class Watcher:
    """Follows one call's chain of emulator sessions: when each closed, when the next was configured/fed."""

    def __init__(self, emulator: RealtimeEmulator, first_index: int) -> None:
        self.emulator = emulator
        self.first_index = first_index
        self.loop = asyncio.get_running_loop()
        self.fault_at: float | None = None
        self.fault_reason = ""
        self.swaps: list[Swap] = []
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        index = self.first_index
        session = await self.emulator.wait_for_session(index, timeout=CALL_CAP_S)
        while True:
            await session.closed.wait()
            closed_at = self.loop.time()
            fault_at = self.fault_at
            start, reason = (fault_at, self.fault_reason) if fault_at is not None else (closed_at, "server")
            self.fault_at = None
            index += 1
            session = await self.emulator.wait_for_session(index, timeout=CALL_CAP_S)
            configured = await self._when(session, "session.update")
            fed = await self._when(session, "input_audio_buffer.append")
            self.swaps.append(
                Swap(
                    reason=reason,
                    gap_ms=None if configured is None else (configured - start) * 1000,
                    audio_gap_ms=None if fed is None else (fed - start) * 1000,
                )
            )

    async def _when(self, session: EmulatedSession, kind: str) -> float | None:
        try:
            await session.wait_for(lambda e: e["type"] == kind, timeout=CALL_CAP_S)
        except TimeoutError:
            return None
        return self.loop.time()

    async def stop(self) -> list[Swap]:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError, TimeoutError, LookupError):
            await self.task
        return self.swaps


def no_fault(scenario: str) -> bool:
    return scenario in ("rollover", "none")


def outage_s(scenario: str) -> float | None:
    m = re.fullmatch(r"outage-([0-9]+(?:\.[0-9]+)?)s", scenario)
    return float(m.group(1)) if m else None


def redis_down_s(scenario: str) -> float | None:
    m = re.fullmatch(r"redis-down-([0-9]+(?:\.[0-9]+)?)s", scenario)
    return float(m.group(1)) if m else None


FAULT_MOMENTS = {
    "greeting": None,  # the greeting's response.done itself
    "speech": "input_audio_buffer.speech_started",  # the caller's first utterance heard
    "transcribed": "conversation.item.input_audio_transcription.completed",  # ... and transcribed
    "reply": "response.output_audio.delta",  # the first audio of the agent's answer to it
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """A private redis-server that can be stopped and started again on the same port with the same data
    (append-only file, fsync always: what tests/calls/test_redis_restart_e2e.py runs)."""

    def __init__(self, binary: str, data_dir: Path) -> None:
        self.binary = binary
        self.data_dir = data_dir
        self.port = free_port()
        self.proc: asyncio.subprocess.Process | None = None
        self._drain: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.proc = await asyncio.create_subprocess_exec(
            self.binary,
            *("--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.data_dir)),
            *("--appendonly", "yes", "--appendfsync", "always", "--save", ""),
            *("--daemonize", "no", "--protected-mode", "no"),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        assert self.proc.stdout is not None
        async with asyncio.timeout(20):
            while True:
                line = await self.proc.stdout.readline()
                if not line:
                    raise RuntimeError("redis-server exited during start-up")
                if b"Ready to accept connections" in line:
                    break
        self._drain = asyncio.create_task(self._drain_output())

    async def _drain_output(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        while await self.proc.stdout.readline():
            pass

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()  # SIGTERM: a clean shutdown, the append-only file flushed
            await self.proc.wait()
            if self._drain is not None:
                await self._drain
        self.proc = None


class Injector:
    """Waits for the moment, then breaks the call's first session (rollover/none: only notes the moment, so
    that turns after it can be told apart). ``at`` is the loop time of the fault once injected."""

    def __init__(
        self,
        emulator: RealtimeEmulator,
        watcher: Watcher,
        scenario: str,
        fault_at: str,
        redis: RedisServer | None = None,
    ) -> None:
        self.emulator = emulator
        self.watcher = watcher
        self.scenario = scenario
        self.fault_at = fault_at
        self.redis = redis
        self.at: float | None = None
        self.back_at: float | None = None  # an outage or a Redis stop: when the service was back
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        emulator, scenario = self.emulator, self.scenario
        session = await emulator.wait_for_session(self.watcher.first_index, timeout=FAULT_WAIT_S)
        done = await session.wait_sent(lambda e: e["type"] == "response.done", timeout=FAULT_WAIT_S)
        moment = FAULT_MOMENTS[self.fault_at]
        if moment is not None and not no_fault(scenario):
            after = session.sent.index(done) + 1
            await session.wait_sent(lambda e: e["type"] == moment, timeout=FAULT_WAIT_S, start=after)
        now = asyncio.get_running_loop().time()
        if not no_fault(scenario):
            self.watcher.fault_at, self.watcher.fault_reason = now, scenario
        self.at = now
        if scenario == "drop-1006":
            await session.drop(1006)
        elif scenario == "drop-1011":
            await session.drop(1011)
        elif scenario == "session-expired":
            await session.expire()
        elif (seconds := outage_s(scenario)) is not None:
            # The service goes away: its sessions are closed with 1001 and connections are refused for a while.
            port = emulator.port
            await emulator.close()
            try:
                await asyncio.sleep(seconds)
            finally:
                await emulator.start(port=port)
                self.back_at = asyncio.get_running_loop().time()
        elif (seconds := redis_down_s(scenario)) is not None and self.redis is not None:
            # Redis goes away mid-call and comes back, same port, same data (its keys' expiry times still count).
            await self.redis.stop()
            try:
                await asyncio.sleep(seconds)
            finally:
                await self.redis.start()
                self.back_at = asyncio.get_running_loop().time()

    async def finish(self) -> None:
        """Let an outage end (the emulator must be back for the next call); cancel a fault never injected."""
        lasts = outage_s(self.scenario) or redis_down_s(self.scenario)
        if self.at is not None and lasts is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self.task), lasts + 25)
        if not self.task.done():
            self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self.task


async def resume_twiml(http: httpx.AsyncClient, base: str, sid: str) -> list[str]:
    """What Twilio's <Redirect> to /twilio/resume would get now: the TwiML verbs."""
    params = {"CallSid": sid, "AccountSid": "AC" + "0" * 32}
    signature = RequestValidator(AUTH_TOKEN).compute_signature(PUBLIC_BASE_URL + "/twilio/resume", params)
    response = await http.post(base + "/twilio/resume", data=params, headers={"X-Twilio-Signature": signature})
    return [child.tag for child in ET.fromstring(response.text)]


def make_script(scenario: str) -> CallScript:
    """3 utterances, then hang up; with Redis stopped mid-call, stay on the line (silent) until well after
    Redis is back, so that the call lives through the return."""
    down = redis_down_s(scenario)
    return CallScript(
        utterances=[synth_speech_mulaw(text, use_espeak=False) for text in UTTERANCES],
        pause_before_first_s=0.2,
        wait_for_greeting=True,
        greeting_timeout_s=10.0,
        gap_after_reply_s=0.2,
        reply_timeout_s=6.0,
        max_duration_s=CALL_CAP_S if down is None else min(CALL_CAP_S, down + 10),
        hangup_when_done=down is None,
        trailing_silence_s=0.2,
    )


async def wait_archived(sessionmaker: Any, sid: str, timeout_s: float = ARCHIVE_WAIT_S) -> Any:
    async with asyncio.timeout(timeout_s):
        while True:
            async with sessionmaker() as session:
                call = await get_call(session, call_sid=sid)
                if call is not None:
                    events = await get_call_events(session, call_sid=sid)
                    return call, events
            await asyncio.sleep(0.05)


async def run_call(
    scenario: str,
    *,
    emulator: RealtimeEmulator,
    base: str,
    http: httpx.AsyncClient,
    sessionmaker: Any,
    capture: LogCapture,
    script: CallScript,
    fault_at: str,
    redis: RedisServer | None = None,
) -> CallOutcome:
    emulator.config.transcripts[:] = list(UTTERANCES)  # consumed one per committed caller turn
    sid = new_call_sid()
    out = CallOutcome(scenario=scenario, call_sid=sid)
    first_index = len(emulator.sessions)
    before = await metrics(http, base)
    watcher = Watcher(emulator, first_index)
    injector = Injector(emulator, watcher, scenario, fault_at, redis)
    result: CallResult | None = None
    call, events = None, []
    try:
        async with asyncio.timeout(CALL_CAP_S + 15):
            result = await simulate_call(
                server_url=base, public_base_url=PUBLIC_BASE_URL, auth_token=AUTH_TOKEN, script=script, call_sid=sid
            )
        # A stream the server closed with anything but 1000 goes on elsewhere (Twilio would follow the
        # <Redirect>): this node does not archive it.
        detached = result.hung_up_by == "server" and result.close_code != 1000
        try:
            call, events = await wait_archived(sessionmaker, sid, 3.0 if detached else ARCHIVE_WAIT_S)
        except TimeoutError:
            if not detached:
                raise TimeoutError(f"not archived within {ARCHIVE_WAIT_S:.0f} s of the caller hanging up") from None
            out.detached = True
    except Exception as exc:  # one broken call must not hide the others
        out.error = f"{type(exc).__name__}: {exc}"
    fault_time = injector.at
    out.fault_injected = fault_time is not None and not no_fault(scenario)
    if fault_time is None and out.error is None and not no_fault(scenario):
        out.error = "fault not injected"
    await injector.finish()
    out.swaps = await watcher.stop()
    after = await metrics(http, base)
    sessions = emulator.sessions[first_index:]
    out.sessions = len(sessions)
    out.upstream_audio_ms = sum(s.input_audio_ms for s in sessions)
    if result is not None:
        out.frames_sent = result.frames_sent
        out.caller_audio_ms = result.frames_sent * FRAME_MS
        out.turn_latencies_ms = [t.latency_ms for t in result.turns]
        if fault_time is not None:
            # Turns not answered before the fault: the one in flight when it hit, and every later one.
            out.turns_after_fault_ms = [
                t.latency_ms
                for t in result.turns
                if t.first_agent_audio_at is None or t.first_agent_audio_at >= fault_time
            ]
        out.hung_up_by = result.hung_up_by
        out.close_code = result.close_code
        out.protocol_errors = len(result.protocol_errors)
        out.max_send_lag_ms = result.max_send_lag_ms
        out.duration_s = result.ended_at - result.started_at
        out.close_reason = result.close_reason
        if result.hung_up_by == "server" and fault_time is not None:
            out.server_closed_after_fault_ms = (result.ended_at - fault_time) * 1000
        if result.hung_up_by == "server" and injector.back_at is not None:
            out.server_closed_after_back_ms = (result.ended_at - injector.back_at) * 1000
    if call is not None:
        out.status, out.end_reason = call.status, call.end_reason
        out.lines = [(s.speaker, s.text) for s in sorted(call.segments, key=lambda s: s.seq)]
        out.lines_kept = out.lines == expected_lines()
    for event in events:
        if event.kind == "upstream_recovered":
            out.recovery_ms.append(int(event.detail["recovery_ms"]))
            out.attempts.append(int(event.detail["attempts"]))
        elif event.kind == "upstream_lost":
            out.lost_reasons.append(str(event.detail.get("reason")))
        elif event.kind == "caller_audio_replayed":
            out.frames_replayed.append(int(event.detail.get("frames", 0)))
        elif event.kind == "upstream_rollover":
            out.rollovers += 1
        elif event.kind == "upstream_failed":
            out.upstream_failed = True
    if out.upstream_failed or out.detached:
        out.resume_twiml = await resume_twiml(http, base, sid)

    def delta(name: str) -> int:
        return round(after.get(name, 0.0) - before.get(name, 0.0))

    out.frames_in_metric = delta("switchboard_caller_frames_total")
    out.metric_frames_held = delta("switchboard_caller_frames_held_total")
    out.metric_frames_replayed = delta("switchboard_caller_frames_replayed_total")
    out.live_write_retries = delta("switchboard_live_state_write_retries_total")
    out.streams_active_after = round(after.get("switchboard_calls_active", 0.0))
    ended = capture.ended.get(sid, {})
    out.frames_in_log = ended.get("frames_in")
    out.frames_dropped_log = ended.get("frames_dropped")
    return out


# --------------------------------------------------------------------------------------------------------------
# one scenario


async def run_scenario(
    scenario: str,
    *,
    calls: int,
    redis_url: str | None,
    redis_server: str | None,
    fault_at: str,
    capture: LogCapture,
    workdir: Path,
) -> dict[str, Any]:
    tmp = workdir / scenario
    tmp.mkdir()
    database_url = f"sqlite+aiosqlite:///{(tmp / 'bench.db').as_posix()}"
    await asyncio.get_running_loop().run_in_executor(None, migrate, database_url)
    config = EmulatorConfig(
        tts="synthetic", transcripts=list(UTTERANCES), reply_text=reply_text, audio_ms_per_char=AGENT_MS_PER_CHAR
    )
    overrides: dict[str, Any] = {"realtime_session_max_s": ROLLOVER_MAX_S} if scenario == "rollover" else {}
    script = make_script(scenario)
    script.prepared_utterances()
    outcomes: list[CallOutcome] = []
    warnings_before = len(capture.warnings)
    redis: RedisServer | None = None
    if redis_down_s(scenario) is not None:
        if redis_server is None:
            raise SystemExit(f"{scenario} needs a redis-server binary (--redis-server)")
        redis = RedisServer(redis_server, tmp / "redis")
        await redis.start()
        redis_url = redis.url
        print(f"  private redis-server (append-only, fsync always) at {redis_url}", flush=True)
    async with contextlib.AsyncExitStack() as stack:
        if redis is not None:
            stack.push_async_callback(redis.stop)
        emulator = await stack.enter_async_context(RealtimeEmulator(config, record_audio=False))
        settings = Settings(
            public_base_url=PUBLIC_BASE_URL,
            twilio_auth_token=AUTH_TOKEN,
            openai_api_key="bench-key",
            openai_realtime_url=emulator.url,
            redis_url=redis_url,
            database_url=database_url,
            data_dir=tmp,
            business_name=BUSINESS,
            log_json=False,
            **overrides,
        )
        engine = make_engine(database_url)
        sessionmaker = make_sessionmaker(engine)
        try:
            async with serve(settings) as base, httpx.AsyncClient(timeout=10.0) as http:
                for i in range(calls):
                    outcome = await run_call(
                        scenario,
                        emulator=emulator,
                        base=base,
                        http=http,
                        sessionmaker=sessionmaker,
                        capture=capture,
                        script=script,
                        fault_at=fault_at,
                        redis=redis,
                    )
                    outcomes.append(outcome)
                    print(f"  {scenario} call {i + 1}/{calls}: {call_line(outcome)}", flush=True)
        finally:
            await engine.dispose()
    effective = {
        "upstream_recovery_deadline_s": settings.upstream_recovery_deadline_s,
        "realtime_session_max_s": settings.realtime_session_max_s,
        "lease_ttl_s": settings.lease_ttl_s,
        "lease_renew_s": settings.lease_renew_s,
        "audio_format": settings.audio_format,
        "redis": redis_url or "in-process stand-in",
    }
    return {
        "scenario": scenario,
        "settings": effective,
        "summary": summarize(outcomes),
        "warnings": capture.warnings[warnings_before:],
        "calls": [asdict(o) for o in outcomes],
    }


def call_line(o: CallOutcome) -> str:
    if o.error:
        return f"ERROR {o.error}"
    rec = ",".join(str(r) for r in o.recovery_ms) or "-"
    gaps = ",".join(f"{s.gap_ms:.0f}" for s in o.swaps if s.gap_ms is not None) or "-"
    lat = ",".join("-" if t is None else f"{t:.0f}" for t in o.turn_latencies_ms)
    return (
        f"recovery_ms={rec} gap_ms={gaps} lines={len(o.lines)}{'' if o.lines_kept else ' (MISMATCH)'} "
        f"frames {o.frames_sent}->{o.frames_in_metric} upstream-caller audio {o.upstream_audio_ms - o.caller_audio_ms:+.0f} ms "
        f"turns_ms={lat} {o.status}"
    )


def _pct(values: Sequence[float], q: float) -> float:
    return percentile(values, q) if values else float("nan")


def summarize(outcomes: list[CallOutcome]) -> dict[str, Any]:
    ok = [o for o in outcomes if o.error is None]
    recovery = [float(r) for o in ok for r in o.recovery_ms]
    attempts = [a for o in ok for a in o.attempts]
    gaps = [s.gap_ms for o in ok for s in o.swaps if s.gap_ms is not None]
    audio_gaps = [s.audio_gap_ms for o in ok for s in o.swaps if s.audio_gap_ms is not None]
    after = [t for o in ok for t in o.turns_after_fault_ms]
    answered = [t for t in after if t is not None]
    return {
        "calls": len(outcomes),
        "errors": len(outcomes) - len(ok),
        "recoveries": len(recovery),
        "recovery_ms_p50": _pct(recovery, 50),
        "recovery_ms_p95": _pct(recovery, 95),
        "recovery_ms_max": max(recovery) if recovery else float("nan"),
        "attempts_max": max(attempts) if attempts else 0,
        "attempts_total": sum(attempts),
        "emulator_gap_ms_p50": _pct(gaps, 50),
        "emulator_gap_ms_max": max(gaps) if gaps else float("nan"),
        "audio_gap_ms_p50": _pct(audio_gaps, 50),
        "audio_gap_ms_max": max(audio_gaps) if audio_gaps else float("nan"),
        "calls_lines_kept": sum(o.lines_kept for o in ok),
        "calls_completed": sum(o.status == "completed" for o in ok),
        "calls_upstream_failed": sum(o.upstream_failed for o in ok),
        "frames_sent": sum(o.frames_sent for o in ok),
        "frames_in": sum(o.frames_in_metric or 0 for o in ok),
        "calls_all_frames_in": sum(o.frames_in_metric == o.frames_sent for o in ok),
        "frames_replayed": sum(sum(o.frames_replayed) for o in ok),
        "metric_frames_held": sum(o.metric_frames_held for o in ok),
        "metric_frames_replayed": sum(o.metric_frames_replayed for o in ok),
        "frames_dropped": sum(o.frames_dropped_log or 0 for o in ok),
        "upstream_minus_caller_audio_ms_p50": _pct([o.upstream_audio_ms - o.caller_audio_ms for o in ok], 50),
        "turns_after_fault": len(after),
        "turns_after_fault_unanswered": len(after) - len(answered),
        "turn_ms_after_fault_p50": _pct(answered, 50),
        "turn_ms_after_fault_p99": _pct(answered, 99),
        "turn_ms_after_fault_max": max(answered) if answered else float("nan"),
        "rollovers": sum(o.rollovers for o in ok),
        "server_closed_after_fault_ms": [o.server_closed_after_fault_ms for o in ok if o.server_closed_after_fault_ms],
        "resume_twiml": sorted({"/".join(o.resume_twiml) for o in ok if o.resume_twiml}),
        "calls_detached": sum(o.detached for o in ok),
        "close_reasons": sorted({f"{o.close_code} {o.close_reason}" for o in ok if o.hung_up_by == "server"}),
        "server_closed_after_back_ms": [o.server_closed_after_back_ms for o in ok if o.server_closed_after_back_ms],
        "live_write_retries": sum(o.live_write_retries for o in ok),
        "streams_active_after_last_call": outcomes[-1].streams_active_after if outcomes else 0,
        "call_s_p50": _pct([o.duration_s for o in ok], 50),
        "max_send_lag_ms": max((o.max_send_lag_ms for o in ok), default=float("nan")),
    }


def print_scenario(result: dict[str, Any]) -> None:
    rows = []
    for c in result["calls"]:
        if c["error"]:
            rows.append([c["call_sid"][:10], "ERROR", c["error"][:60], *[""] * 7])
            continue
        rows.append(
            [
                c["call_sid"][:10],
                ",".join(str(r) for r in c["recovery_ms"]) or "-",
                ",".join(str(a) for a in c["attempts"]) or "-",
                ",".join(f"{s['gap_ms']:.0f}" for s in c["swaps"] if s["gap_ms"] is not None) or "-",
                f"{len(c['lines'])}/{len(expected_lines())}" + ("" if c["lines_kept"] else " !"),
                f"{c['frames_in_metric']}/{c['frames_sent']}",
                f"{','.join(str(f) for f in c['frames_replayed']) or '-'}/{c['frames_dropped_log']}",
                f"{c['metric_frames_held']}/{c['metric_frames_replayed']}",
                " ".join("-" if t is None else f"{t:.0f}" for t in c["turns_after_fault_ms"]),
                (
                    f"{c['status']} ({c['close_code']} {c['close_reason']})"
                    if c["upstream_failed"]
                    else f"not archived ({c['close_code']} {c['close_reason']})"
                    if c["detached"]
                    else c["status"]
                ),
            ]
        )
    headers = [
        "call",
        "recovery_ms",
        "attempts",
        "emu gap ms",
        "lines",
        "frames in/sent",
        "replayed/dropped",
        "metric held/replayed",
        "turn ms after fault",
        "status",
    ]
    print(f"\n## {result['scenario']}  (settings: {result['settings']})")
    print(format_table(headers, rows))
    s = result["summary"]
    if s["close_reasons"]:
        closed = ", ".join(f"{ms:.0f}" for ms in s["server_closed_after_fault_ms"])
        back = ", ".join(f"{ms:.0f}" for ms in s["server_closed_after_back_ms"]) or "-"
        print(
            f"server closed the stream: {s['close_reasons']}; ms after the fault: {closed}; ms after the service was "
            f"back: {back}; /twilio/resume then answers: {s['resume_twiml'] or '-'}"
        )
    if s["live_write_retries"]:
        print(f"live-state writes retried: {s['live_write_retries']}")
    if s["streams_active_after_last_call"]:
        print(f"media streams still active on the server after the last call: {s['streams_active_after_last_call']}")
    if result["warnings"]:
        kinds: dict[str, int] = {}
        for w in result["warnings"]:
            kinds[w["event"]] = kinds.get(w["event"], 0) + 1
        print(f"server warnings: {kinds}")


def print_summary(results: list[dict[str, Any]]) -> None:
    headers = [
        "scenario",
        "calls",
        "recoveries",
        "recovery_ms p50",
        "p95",
        "max",
        "attempts max",
        "emu gap ms p50",
        "max",
        "lines kept",
        "frames in/sent",
        "held dropped",
        "turns after fault",
        "turn ms p50",
        "p99",
    ]
    rows = []
    for r in results:
        s = r["summary"]
        rows.append(
            [
                r["scenario"],
                s["calls"] - s["errors"] if not s["errors"] else f"{s['calls'] - s['errors']} (+{s['errors']} err)",
                s["recoveries"],
                s["recovery_ms_p50"],
                s["recovery_ms_p95"],
                s["recovery_ms_max"],
                s["attempts_max"],
                s["emulator_gap_ms_p50"],
                s["emulator_gap_ms_max"],
                f"{s['calls_lines_kept']}/{s['calls'] - s['errors']}",
                f"{s['frames_in']}/{s['frames_sent']}",
                s["frames_dropped"],
                f"{s['turns_after_fault']} ({s['turns_after_fault_unanswered']} unanswered)",
                s["turn_ms_after_fault_p50"],
                s["turn_ms_after_fault_p99"],
            ]
        )
    print("\n## summary")
    print(format_table(headers, rows))


# --------------------------------------------------------------------------------------------------------------


def git_revision() -> str:
    """HEAD, and whether app/ differs from it (other people edit the tree while benchmarks run)."""
    repo = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "app"], cwd=repo, capture_output=True, text=True)
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head.stdout.strip() + (" (app/ modified)" if dirty.stdout.strip() else "")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--calls", type=int, default=10, help="calls per scenario, one after another (default 10)")
    p.add_argument(
        "--scenarios",
        default=",".join(DEFAULT_SCENARIOS),
        help=f"comma-separated, from {', '.join(SCENARIOS)}, outage-<N>s, redis-down-<N>s "
        f"(default: {','.join(DEFAULT_SCENARIOS)})",
    )
    p.add_argument(
        "--fault-at",
        choices=tuple(FAULT_MOMENTS),
        default="greeting",
        help="inject at the greeting's response.done (default); when the caller's first utterance is heard "
        "(speech), transcribed (transcribed), or when the agent's answer to it starts (reply)",
    )
    p.add_argument("--redis-url", default=None, help="a real Redis (default: the in-process stand-in)")
    p.add_argument(
        "--redis-server",
        default=shutil.which("redis-server"),
        help="redis-server binary for the redis-down-<N>s scenarios (default: from PATH)",
    )
    p.add_argument("--json", type=Path, default=None, help="write all results here")
    args = p.parse_args(argv)
    args.scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = [s for s in args.scenarios if s not in SCENARIOS and outage_s(s) is None and redis_down_s(s) is None]
    if unknown:
        p.error(f"unknown scenario(s): {', '.join(unknown)}")
    if args.calls < 1:
        p.error("--calls must be at least 1")
    return args


async def amain(args: argparse.Namespace) -> list[dict[str, Any]]:
    capture = LogCapture()
    configure_logs(capture)
    # SIGTERM/SIGINT unwind like an error, so a private redis-server and the temp dir do not outlive the run.
    main_task = asyncio.current_task()
    assert main_task is not None
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, main_task.cancel)
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-recovery-") as workdir:
        for scenario in args.scenarios:
            print(f"scenario {scenario}: {args.calls} calls", flush=True)
            result = await run_scenario(
                scenario,
                calls=args.calls,
                redis_url=args.redis_url,
                redis_server=args.redis_server,
                fault_at=args.fault_at,
                capture=capture,
                workdir=Path(workdir),
            )
            results.append(result)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    redis = f"real Redis at {args.redis_url}" if args.redis_url else "in-process Redis stand-in (fakeredis)"
    print(
        f"redis: {redis}; database: SQLite in a temp dir; fault at: {args.fault_at}; git {git_revision()}", flush=True
    )
    started = time.monotonic()
    try:
        results = asyncio.run(amain(args))
    except (asyncio.CancelledError, KeyboardInterrupt):
        print("interrupted: nothing written", file=sys.stderr)
        return 130
    wall = time.monotonic() - started
    for result in results:
        print_scenario(result)
    print_summary(results)
    print(
        f"\ncolumns: recovery_ms = the server's upstream_recovered.recovery_ms; emu gap = old session gone (fault "
        f"injected, or closed by the server) to the new session's session.update, at the emulator; turns after "
        f"fault = caller turns not answered before the fault (unanswered: no agent audio before the caller moved "
        f"on); lines = transcript segments matching the "
        f"{len(expected_lines())} expected; replayed/dropped = caller frames sent to a new session (caller_audio_replayed events) / dropped from the full hold buffer (call.ended log); metric held/replayed = switchboard_caller_frames_held/replayed_total deltas.\n"
        f"wall time {wall:.0f} s",
        flush=True,
    )
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "command": " ".join(sys.argv),
            "git": git_revision(),
            "redis": redis,
            "fault_at": args.fault_at,
            "machine": machine_info(),
            "wall_s": wall,
            "utterances": list(UTTERANCES),
            "expected_lines": expected_lines(),
            "scenarios": results,
        }
        args.json.write_text(json.dumps(payload, indent=2, default=str))
        print(f"wrote {args.json}")
    errors = sum(r["summary"]["errors"] for r in results)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
