"""The media WebSocket: the only code that awaits both Twilio's socket and the Realtime socket.

All decisions are the bridge's (app/core/bridge.py); this module feeds it events and carries out
its commands. Per caller frame it does: receive, parse, bridge, send; no logging, no model
construction, no awaits besides the sockets. Per agent audio delta the same, then it yields to the other
calls (fair scheduling: a burst of deltas on one call does not delay another's).

Around that hot path it keeps the call alive: live state written through to Redis, a lease that
says which stream drives the call, a new Realtime session when one drops, expires or reaches its
age limit (caller audio is held meanwhile and replayed), and the archive at the end.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol

import structlog
from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError
from websockets.exceptions import ConnectionClosed

from app.adapters.openai_realtime import RealtimeUpstream
from app.adapters.twilio_rest import TwilioError
from app.adapters.twilio_signatures import SETTINGS_HEADER
from app.archive.redaction import redact_values
from app.archive.service import CallEventRecord
from app.budget.policy import Action, CapVerdict
from app.budget.pricing import CLOSING_MAX_OUTPUT_TOKENS
from app.budget.service import WRAP_UP_INSTRUCTIONS
from app.calls.archiving import archive_live_call, event_to_dict
from app.calls.cascaded import CascadedEngine
from app.calls.live import LiveState, line_from_dict
from app.calls.outbound import campaign_bridge_config, campaign_cascade_config
from app.calls.realtime import RealtimeEngine
from app.calls.recorder import CallRecorder
from app.calls.tools import ToolContext
from app.core import twiml
from app.core.bridge import (
    BridgeConfig,
    Command,
    HandOff,
    HangUp,
    HardStop,
    OptOut,
    RecordCallEvent,
    RestartUpstream,
    RunTool,
    SaveTranscript,
    SendToRealtime,
    SendToTwilio,
    Tick,
    ToolFinished,
    TransferCall,
    UpstreamLost,
    UpstreamReady,
    WrapUp,
)
from app.core.caller_input import CallerInput
from app.core.playback import AgentPlayback
from app.core.realtime_events import (
    AudioDelta,
    RealtimeError,
    RealtimeEventError,
    SessionCreated,
    SessionUpdated,
    parse_server_event,
)
from app.core.recording import AGENT, CALLER
from app.core.stream_token import RESUME, StreamTokenError, verify_stream_token
from app.core.transport import TWILIO, BrowserMessageError, TransportAudio
from app.core.twilio_media import (
    MediaReceived,
    StreamConnected,
    StreamStarted,
    StreamStopped,
    TwilioMessageError,
    parse_twilio_message,
)
from app.dialer.location import locate, normalise
from app.dialer.models import Campaign
from app.dialer.service import revoke
from app.recording.consent import ANNOUNCEMENT, RecordingDecision, decide
from app.runtime import Runtime

router = APIRouter()
log = structlog.get_logger()

CLOSE_NORMAL = 1000
CLOSE_INVALID_DATA = 1007
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
CLOSE_SERVICE_RESTART = 1012  # the node drains: Twilio follows the <Redirect>, the call resumes elsewhere
HANDOVER_QUIET_WAIT_S = 5.0
OPT_OUT_RETRY_S = (
    0.0,
    0.5,
    1.0,
    2.0,
    4.0,
    6.0,
)  # waits before each attempt: ~13.5 s in all  # past the drain deadline, wait this long at most for a quiet moment

START_TIMEOUT_S = 10.0
UPSTREAM_CONNECT_TIMEOUT_S = 5.0
TICK_S = 0.25
METER_INTERVAL_S = 1.0  # a call's estimates reach the Redis ledger at most this often
TRANSCRIPT_WAIT_S = 1.5
# Once the server has ended a call, the caller's last words may still be transcribed for this long
# before the Realtime session is closed (the session closes within a second of the decision).
ENDED_TRANSCRIPT_WAIT_S = 0.75
PUMP_STOP_TIMEOUT_S = 5.0
FLUSH_TIMEOUT_S = 5.0
BACKOFF_S = (0.0, 0.25, 0.5, 1.0, 2.0)
CONFIG_ATTEMPTS = 3  # sessions in a row refusing our session.update before the call is handed off
ROLLOVER_MARGIN_S = 5 * 60.0  # roll over this long before the session's expires_at
# A caller's speech starts this long before its speech_started arrives (the VAD's prefix padding, 300 ms by
# default, and the detection itself): a redacted utterance is silenced from there, and held back from there.
SPEECH_LEAD_MS = 500


DIRECTIONS = ("inbound", "outbound", "web")
# Call events that carry an upstream's usage -> the kind the meter prices it as
USAGE_EVENTS = {
    "response_usage": "response",
    "transcription_usage": "transcription",
    "chat_usage": "chat",
    "speech_usage": "speech",
}


class CallMachine(Protocol):
    """What the call's services read and drive of an engine's machine (CallBridge, CascadeCall)."""

    started_at_ms: int
    out: AgentPlayback  # the agent's audio on its way to the caller (a recording taps it)
    caller: CallerInput  # the caller's audio on its way to the upstream session
    history: list[Any]
    usage: list[dict[str, Any]]
    frames_in: int
    greeted: bool
    ended: bool
    stopped_hard: bool

    def handle(self, event: object, now_ms: int) -> list[Any]: ...
    def media(self, payload: bytes) -> bytes | None: ...
    def finish(self, out: list[Any]) -> None: ...
    @property
    def quiet(self) -> bool: ...
    @property
    def awaiting_transcription(self) -> bool: ...
    @property
    def pending_speech_ms(self) -> int | None: ...
    @property
    def caller_seconds_in(self) -> float: ...
    @property
    def agent_seconds_out(self) -> float: ...
    @property
    def frames_held(self) -> int: ...
    @property
    def frames_dropped(self) -> int: ...
    @property
    def frames_replayed(self) -> int: ...


def trusted_direction(meta: dict[str, Any]) -> str:
    """The call's direction as the signed webhook recorded it in the live state (inbound when Redis was
    away then); never the stream's custom parameters, which the stream token does not cover."""
    direction = meta.get("direction")
    return direction if direction in DIRECTIONS else "inbound"


def _stop_fast(socket: object) -> None:
    """A socket's callback no longer hands messages to this call (picows sockets; others have no fast path)."""
    if socket is not None and hasattr(socket, "fast"):
        socket.fast = None


class StreamRefused(Exception):
    def __init__(self, code: int, reason: str, metric: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.metric = metric


@router.websocket("/twilio/media")
async def media_stream(ws: WebSocket) -> None:
    rt: Runtime = ws.app.state.runtime
    signature = ws.headers.get("x-twilio-signature", "")
    settings_header = ws.headers.get(SETTINGS_HEADER)
    if not rt.twilio_signatures.validate(rt.settings.public_ws_base + "/twilio/media", {}, signature, settings_header):
        # Refused in the handshake (closing before accepting answers HTTP 403): Twilio reports an error
        # instead of running the <Redirect>, which with a wrong PUBLIC_BASE_URL would loop forever.
        rt.metrics.streams_rejected.labels("signature").inc()
        await ws.close(CLOSE_POLICY, "invalid Twilio signature")
        return
    await ws.accept()
    await CallSession(rt, ws).run()


class CallSession:
    """One media stream for one call, from its start event to the archive (or a hand-over).

    The transport here is Twilio's media stream; ``app.calls.web.WebCallSession`` swaps in the console page's
    (its admission, its messages, its way of ending a call). The engine is ``self.engine``: whichever engine
    answers, the call's services here carry out its machine's commands."""

    transport_audio: TransportAudio = TWILIO
    resumable = True  # a lost stream may come back (Twilio follows the <Redirect>): the call is not over
    # One message of the transport's socket as an event (raises on a bad one); called per frame, unwrapped
    _parse: Callable[[str | bytes], Any] = staticmethod(parse_twilio_message)

    def __init__(self, rt: Runtime, ws: WebSocket) -> None:
        self.rt = rt
        self.ws = ws
        self._loop = asyncio.get_running_loop()
        self.bridge: CallMachine  # the engine's machine: CallBridge (Realtime) or CascadeCall (cascaded)
        self.engine: RealtimeEngine | CascadedEngine
        self.live: LiveState
        self.upstream: RealtimeUpstream | None = None
        self.start: StreamStarted
        self.events: dict[str, CallEventRecord] = {}
        self._event_seq = 0
        self._epoch = 0
        self._holder = ""
        self.end_reason = "unknown"
        self.status = "completed"
        self.final = True  # False: the call goes on elsewhere (stream lost, taken over)
        self.bad_frames = 0
        self._closed = False
        self._stopped = False
        self._ending = False
        self._server_ended = False  # we decided the call is over: no caller audio upstream, no new session
        self._rolling_over = False
        self._restarting = False  # we closed a session that refused (or never confirmed) its configuration
        self._config_failures = 0  # sessions in a row that did so
        self._upstream_expires_at: float | None = None  # loop time the session's expires_at falls at
        self._close_reason = "call ended"
        self._close_code = CLOSE_NORMAL
        self._upstream_opened_at = 0.0
        self._meta: dict[str, Any] = {}
        self._direction = "inbound"
        self._metered_seconds_in = 0.0
        self._metered_seconds_out = 0.0
        self._charged_at_s = float("-inf")
        self._frames_counted = (0, 0, 0)  # held, replayed, dropped caller frames already in the metrics
        self.phase = "in call"  # then the step of _finish it is in: a drain names the steps calls hang in
        self._transcripts_settled = asyncio.Event()
        self._taken_over = asyncio.Event()
        self._handover = asyncio.Event()  # set: detach so the call resumes on another node
        self._handover_due: float | None = None  # loop time past which we hand over even mid-sentence
        self._tasks: set[asyncio.Task[Any]] = set()
        self._queue: asyncio.Queue[object] | None = None
        self.recorder: CallRecorder | None = None

    def now_ms(self) -> int:
        return int(self._loop.time() * 1000)

    # -- admission ---------------------------------------------------------------------------

    async def _receive_start(self) -> StreamStarted:
        limit = self.rt.settings.max_ws_message_bytes
        async with asyncio.timeout(START_TIMEOUT_S):
            while True:
                msg = await self.ws.receive()
                if msg["type"] == "websocket.disconnect":
                    raise StreamRefused(CLOSE_NORMAL, "disconnected before start", "no_start")
                data = msg.get("text") or msg.get("bytes") or b""
                if len(data) > limit:
                    raise StreamRefused(CLOSE_TOO_BIG, f"frame larger than {limit} bytes", "too_big")
                try:
                    ev = parse_twilio_message(data)
                except TwilioMessageError as exc:
                    raise StreamRefused(CLOSE_POLICY, f"invalid frame before start: {exc.reason}", "bad_start") from exc
                if isinstance(ev, StreamConnected):
                    continue
                if not isinstance(ev, StreamStarted):
                    raise StreamRefused(CLOSE_POLICY, "expected a start event", "bad_start")
                return ev

    async def _admit(self) -> tuple[StreamStarted, str]:
        try:
            start = await self._receive_start()
        except TimeoutError as exc:
            raise StreamRefused(CLOSE_POLICY, "no start event received", "no_start") from exc
        settings = self.rt.settings
        if start.account_sid and start.account_sid != settings.twilio_account_sid:
            raise StreamRefused(CLOSE_POLICY, "stream for another Twilio account", "account")
        try:
            kind = verify_stream_token(
                start.custom_parameters.get("token"),
                secret=settings.stream_secret,
                call_sid=start.call_sid,
                now_s=time.time(),
            )
        except StreamTokenError as exc:
            raise StreamRefused(CLOSE_POLICY, exc.reason, "token") from exc
        if not await self._first_use(str(start.custom_parameters.get("token"))):
            raise StreamRefused(CLOSE_POLICY, "stream token already used", "token_reused")
        return start, kind

    async def _first_use(self, token: str) -> bool:
        """A stream token admits one stream: a copy replayed within its lifetime is refused. With Redis
        away the token is taken (the call matters more) and that is said."""
        key = "sb:stream-token-used:" + hashlib.sha256(token.encode()).hexdigest()[:32]
        try:
            return bool(await self.rt.redis.set(key, "1", nx=True, ex=self.rt.settings.stream_token_ttl_s + 60))
        except (RedisError, OSError) as exc:
            log.warning("call.token_use_unchecked", error=repr(exc))
            return True

    async def _claim(self, kind: str, meta: dict[str, Any]) -> None:
        """Take the call's lease: refused while another stream holds it, unless this one resumes."""
        rt = self.rt
        if meta.get("status") == "ended":
            raise StreamRefused(CLOSE_POLICY, "call already ended", "ended")
        try:
            epoch, previous = await rt.call_store.acquire_lease(
                self.start.call_sid,
                node=rt.node_id,
                ttl_ms=int(rt.settings.lease_ttl_s * 1000),
                now_ms=int(time.time() * 1000),
                takeover=kind == RESUME,
            )
        except (RedisError, OSError) as exc:
            # Redis away at admission: drive the call anyway (it matters more) and say so.
            log.warning("call.lease_unavailable", error=repr(exc))
            self._event("lease_unavailable", {"error": type(exc).__name__})
            return
        if epoch == 0:
            raise StreamRefused(CLOSE_POLICY, "call already has an active media stream", "duplicate")
        self._epoch = epoch
        self._holder = f"{rt.node_id}:{epoch}"
        if previous:
            # Tell the old stream, wherever it is, to stop driving this call.
            try:
                await rt.call_store.redis.publish(rt.call_store.takeover_channel(self.start.call_sid), self._holder)
            except (RedisError, OSError) as exc:
                log.warning("call.takeover_notice_failed", error=repr(exc))
            self._event("stream_took_over", {"previous": previous})

    # -- the call ----------------------------------------------------------------------------

    async def run(self) -> None:
        rt = self.rt
        try:
            self.start, kind = await self._admit()
            structlog.contextvars.bind_contextvars(call_sid=self.start.call_sid)
            meta, lines = await self._load_live_state()
            await self._claim(kind, meta)
        except StreamRefused as refused:
            rt.metrics.streams_rejected.labels(refused.metric).inc()
            await self._close(refused.code, refused.reason)
            structlog.contextvars.unbind_contextvars("call_sid")
            return
        try:
            await self._drive(kind, meta, lines)
        finally:
            structlog.contextvars.unbind_contextvars("call_sid")

    async def _load_live_state(self) -> tuple[dict[str, Any], list[Any]]:
        try:
            meta = await self.rt.call_store.get_meta(self.start.call_sid)
            lines = [line_from_dict(d) for d in await self.rt.call_store.get_lines(self.start.call_sid)]
            return meta, lines
        except (RedisError, OSError) as exc:
            log.warning("call.live_state_unavailable", error=repr(exc))
            self._event("live_state_unavailable", {"error": type(exc).__name__})
            return {}, []

    async def _drive(self, kind: str, meta: dict[str, Any], lines: list[Any]) -> None:
        rt = self.rt
        start = self.start
        self._meta = meta
        wall_ms = int(time.time() * 1000)
        started_ms = int(meta.get("started_at_ms") or wall_ms)
        direction = trusted_direction(meta)
        self._direction = direction
        claimed = start.custom_parameters.get("direction")
        if claimed is not None and claimed != direction:
            # The stream's parameters are not covered by its token: what they say is never used.
            self._event("direction_mismatch", {"stream_parameter": claimed[:40], "used": direction})
        self.live = LiveState(rt.call_store, start.call_sid, rt.metrics, epoch=self._epoch)
        self.live.start()
        self.live.meta(
            {
                "call_sid": start.call_sid,
                "stream_sid": start.stream_sid,
                "direction": direction,
                "started_at_ms": started_ms,
                "status": "in-progress",
                "owner": self._holder or rt.node_id,
            }
        )
        rt.takeovers.register(start.call_sid, self._on_taken_over)
        resumed = kind == RESUME or bool(lines)
        self.engine = await self._engine(meta)
        decision = self._recording_decision(meta, direction)
        if decision is not None and decision.announce and not (meta.get("greeted") or lines):
            self.engine.announce(ANNOUNCEMENT)  # the agent's first words
        self.bridge = self.engine.machine(
            started_at_ms=self.now_ms() - max(0, wall_ms - started_ms),
            history=lines,
            greeted=bool(meta.get("greeted")),
            transport=self.transport_audio,
        )
        self.engine.bind(self._feed)
        # An engine whose own tasks feed its machine has every event go through one queue (see _handle)
        self._queue = asyncio.Queue() if self.engine.serial_events else None
        campaign_id = meta.get("campaign_id")
        self.meter = rt.budget.meter(
            call_sid=start.call_sid,
            campaign_id=int(campaign_id) if campaign_id else None,
            direction=direction,
            model=rt.settings.openai_realtime_model,
        )
        self.live.meta({"engine": self.engine.name})  # a resumed call keeps its engine, whatever ENGINE says then
        self._event("engine", {"engine": self.engine.name, "model": self.engine.model})
        if decision is not None:
            self._event("recording_decision", decision.as_dict())
            if decision.record:
                self._start_recording()
        rt.metrics.calls_started.labels(direction).inc()
        if resumed:
            rt.metrics.calls_resumed.inc()
        rt.metrics.calls_active.inc()
        rt.sessions[start.call_sid] = self
        log.info(
            "call.stream_started", stream_sid=start.stream_sid, direction=direction, resumed=resumed, lines=len(lines)
        )
        try:
            await self._handle(start)
            if resumed:
                self._event("stream_resumed", {"lines_restored": len(lines), "kind": kind})
            await self._run_pumps()
        except Exception as exc:
            log.exception("call.failed")
            self.status, self.end_reason = "failed", f"internal error: {type(exc).__name__}"
        finally:
            try:
                await self._finish(direction)
            finally:  # last, once the stream is closed: a drain waits for this, then the server stops
                # Active until here, archive included: a call whose end hangs stays visible as active.
                rt.metrics.calls_active.dec()
                if rt.sessions.get(self.start.call_sid) is self:
                    del rt.sessions[self.start.call_sid]
                    rt.sessions_changed.set()

    async def _engine(self, meta: dict[str, Any]) -> RealtimeEngine | CascadedEngine:
        """The engine that answers: the one the webhook recorded for the call (a resumed call keeps its
        engine), else the deployment's; with the deployment's agent, or for a campaign call, the campaign's."""
        rt = self.rt
        campaign: Campaign | None = None
        campaign_id = meta.get("campaign_id")
        if campaign_id:
            async with rt.sessionmaker() as session:
                campaign = await session.get(Campaign, int(campaign_id))
        name = meta.get("engine") or (campaign.engine if campaign is not None else None) or rt.settings.engine
        if name == "cascaded":
            config = rt.cascade_config
            if campaign is not None:
                config = campaign_cascade_config(config, rt.settings, campaign)
            return CascadedEngine(rt.cascade, config, rt.chat_tools)
        bridge_config: BridgeConfig = rt.bridge_config
        if campaign is not None:
            bridge_config = campaign_bridge_config(bridge_config, rt.settings, campaign)
        return RealtimeEngine(rt.realtime, bridge_config)

    def _recording_decision(self, meta: dict[str, Any], direction: str) -> RecordingDecision | None:
        """Whether this call is recorded, and announced, by the states its other party may be in. None: the
        deployment records nothing (nothing is decided or recorded on the call)."""
        mode = self.rt.settings.recording
        if mode == "off":
            return None
        number = meta.get("to") if direction == "outbound" else meta.get("from")
        location = locate(str(number)) if number else None
        states = location.states if location is not None and location.kind == "geographic" else None
        return decide(mode, states)

    def _start_recording(self) -> None:
        """Record from now, on the call's timeline (from its start, whichever node began it): the caller's
        frames (the pump), the agent's audio and clears (the playback)."""
        audio = self.transport_audio
        redacting, holdback = bool(self.rt.settings.redaction_patterns), self.rt.settings.recording_holdback_s
        self.recorder = CallRecorder(
            self.rt.recordings, self.start.call_sid, rate=audio.rate,
            mulaw=not audio.pcm24k, call_started_ms=self.bridge.started_at_ms, now_ms=self.now_ms,
            segment_s=self.rt.settings.recording_segment_s,
            # Only when a transcript can be redacted does audio wait for it: at least the lead (speech detected
            # late must not have been handed out before its redaction), and caller speech until transcribed.
            holdback_s=max(holdback, SPEECH_LEAD_MS / 1000) if redacting else holdback,
            hold_from=self._recording_hold_from if redacting else None,
        )  # fmt: skip
        out = self.bridge.out
        out.tap, out.on_clear = self.recorder.agent, self.recorder.clear

    def _recording_hold_from(self) -> int | None:
        pending = self.bridge.pending_speech_ms
        return None if pending is None else max(0, pending - SPEECH_LEAD_MS)

    def _silence_redacted(self, line: Any) -> None:
        """What was redacted from a line is silenced in the recording: the whole utterance, from a little
        before its start (voice activity is detected after the voice begins) to now (its transcript comes
        after it ended), on the speaker's channel."""
        assert self.recorder is not None
        start_ms = max(0, line.offset_ms - (SPEECH_LEAD_MS if line.speaker == "caller" else 0))
        end_ms = self.now_ms() - self.bridge.started_at_ms
        channel = CALLER if line.speaker == "caller" else AGENT
        in_time = self.recorder.timeline.silence(channel, start_ms, end_ms, "redacted")
        self._event("recording_silenced", {"from_ms": start_ms, "to_ms": end_ms, "speaker": line.speaker,
                                           "in_time": in_time})  # fmt: skip

    async def _feed(self, event: object) -> None:
        """What the engine's own tasks receive (chat and speech streams) goes to the call's machine."""
        if isinstance(event, RecordCallEvent):
            self._on_call_event(event)
            return
        if self._ending:
            return  # the call is over: nothing more is said or started
        await self._handle(event)

    async def _handle(self, event: object) -> None:
        """Feed the machine one event and carry out its commands. When the engine's own tasks feed it too
        (cascaded), every event goes through one queue instead, so that no two command lists interleave
        on the caller's socket (audio after the clear that cut it, clauses out of order)."""
        queue = self._queue
        if queue is not None:
            queue.put_nowait(event)
            return
        commands = self.bridge.handle(event, self.now_ms())
        if commands:
            await self._execute(commands)

    async def _machine_loop(self) -> None:
        """The one consumer of the queue (see ``_handle``)."""
        queue = self._queue
        assert queue is not None
        bridge = self.bridge
        while True:
            event = await queue.get()
            commands = bridge.handle(event, self.now_ms())
            if commands:
                await self._execute(commands)
            self._settle_transcripts()

    def _drain_queue(self) -> None:
        """The call is over: events still queued are applied for the record (transcript lines, events);
        nothing they would start or send happens."""
        queue = self._queue
        while queue is not None and not queue.empty():
            commands = self.bridge.handle(queue.get_nowait(), self.now_ms())
            for command in commands:
                if type(command) is SaveTranscript or type(command) is RecordCallEvent:
                    self._spawn(self._execute([command]), "record")

    def _settle_transcripts(self) -> None:
        if (self._stopped or self._server_ended) and not self.bridge.awaiting_transcription:
            self._transcripts_settled.set()

    async def _run_pumps(self) -> None:
        twilio = asyncio.create_task(self._twilio_pump(), name="twilio-pump")
        upstream = asyncio.create_task(self._upstream_supervisor(), name="upstream")
        ticker = asyncio.create_task(self._ticker(), name="ticker")
        taken = asyncio.create_task(self._taken_over.wait(), name="takeover")
        machine = asyncio.create_task(self._machine_loop(), name="machine") if self._queue is not None else None
        recording = asyncio.create_task(self.recorder.run(), name="recording") if self.recorder is not None else None
        handover = asyncio.create_task(self._handover.wait(), name="handover")
        pumps = [twilio, upstream, ticker, taken, handover, *(t for t in (machine, recording) if t is not None)]
        try:
            done, _ = await asyncio.wait([twilio, upstream, taken, handover], return_when=asyncio.FIRST_COMPLETED)
            if twilio in done and self._stopped and not upstream.done() and self.bridge.awaiting_transcription:
                # The caller hung up right after speaking: let their last words' transcription land.
                self._transcripts_settled.clear()
                waiter = asyncio.create_task(self._transcripts_settled.wait())
                await asyncio.wait([waiter, upstream], timeout=TRANSCRIPT_WAIT_S, return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
        finally:
            self._ending = True
            _stop_fast(self.ws)
            _stop_fast(self.upstream)
            for task in pumps:
                task.cancel()
            # Bounded: a pump stuck in a library that swallowed its cancellation must not hold the call.
            finished, stuck = await asyncio.wait(pumps, timeout=PUMP_STOP_TIMEOUT_S)
            if stuck:
                log.warning("call.pumps_stuck", pumps=[t.get_name() for t in stuck])
            self._drain_queue()
        for task in finished:
            if not task.cancelled() and isinstance(task.exception(), Exception):
                raise task.exception()  # type: ignore[misc]

    async def _twilio_pump(self) -> None:
        bridge = self.bridge
        # The ASGI server's receive itself: Starlette's WebSocket.receive only re-checks the message type,
        # per frame. Its wrapper if a Starlette version no longer keeps the raw one under that name.
        receive = getattr(self.ws, "_receive", None) or self.ws.receive
        media = bridge.media
        send_upstream = self._send_upstream
        handle = bridge.handle
        execute = self._execute
        now_ms = self.now_ms
        limit = self.rt.settings.max_ws_message_bytes
        max_bad = self.rt.settings.max_bad_frames
        parse = self._parse
        queue = self._queue
        record = self.recorder.caller if self.recorder is not None else None
        if hasattr(self.ws, "fast"):
            self.ws.fast = self._fast_caller_frames(record)
        while True:
            msg = await receive()
            if msg["type"] == "websocket.disconnect":
                self._closed = True
                if self.end_reason == "unknown":
                    # No stop event: Twilio lost us, not the caller. It follows the <Redirect> to
                    # /twilio/resume and a new stream carries on; the live state stays for it.
                    self.end_reason = "stream lost"
                    self.final = not self.resumable
                return
            data = msg.get("text")
            if data is None:
                data = msg.get("bytes") or b""
            if len(data) > limit:
                self._bad_frame("too_big", "frame too large")
                await self._end_with(
                    CLOSE_TOO_BIG,
                    f"frame larger than {limit} bytes",
                    "oversized frame from " + ("Twilio" if self.transport_audio is TWILIO else "the page"),
                )
                return
            try:
                ev = parse(data)
            except (TwilioMessageError, BrowserMessageError) as exc:
                self._bad_frame(exc.code, exc.reason)
                if self.bad_frames > max_bad:
                    await self._end_with(CLOSE_INVALID_DATA, "too many invalid frames", "too many invalid frames")
                    return
                continue
            if type(ev) is MediaReceived:  # 50 a second: straight to the bridge and upstream
                if record is not None:
                    record(ev.payload)  # bytes into the recording's buffer, nothing more
                append = media(ev.payload)
                if append is not None:
                    await send_upstream(append)
                continue
            if queue is not None:
                queue.put_nowait(ev)
            else:
                commands = handle(ev, now_ms())
                if commands:
                    await execute(commands)
            if type(ev) is StreamStopped:
                self._stopped = True
                if self.end_reason == "unknown":
                    self.end_reason = "caller hung up"
                return

    def _fast_caller_frames(self, record: Callable[[bytes], None] | None) -> Callable[[bytes], bool]:
        """A caller frame taken in the socket's callback, as the pump would take it, with no task woken: the
        call's reader is waiting with nothing queued, and the upstream socket takes the append at once.
        Anything else (another event, a bad or oversized frame, no session or a full socket) goes the
        pump's way, in order."""
        media = self.bridge.media
        parse = self._parse
        limit = self.rt.settings.max_ws_message_bytes

        def take(data: bytes) -> bool:
            upstream = self.upstream
            if upstream is None or len(data) > limit or not getattr(upstream, "writable", False):
                return False
            try:
                ev = parse(data)
            except (TwilioMessageError, BrowserMessageError):
                return False  # the pump counts it
            if type(ev) is not MediaReceived:
                return False
            if record is not None:
                record(ev.payload)
            append = media(ev.payload)
            if append is not None:
                upstream.send_now(append)  # type: ignore[attr-defined]  # writable: it goes out now
            return True

        return take

    def _fast_agent_audio(self) -> Callable[[bytes], bool] | None:
        """An agent audio delta taken in the upstream socket's callback, as the reader would take it, with no
        task woken: the reader is waiting with nothing queued, the machine is fed where events arrive (no
        queue), and the caller's socket takes the media at once. Anything else goes the reader's way."""
        ws: Any = self.ws  # a MediaSocket has send_now; Starlette's WebSocket has no fast path
        if self._queue is not None or not hasattr(ws, "send_now"):
            return None
        bridge = self.bridge
        handle = bridge.handle
        now_ms = self.now_ms
        send_now = ws.send_now
        on_call_event = self._on_call_event

        def take(raw: bytes) -> bool:
            if self._closed or not ws.writable:
                return False
            try:
                ev = parse_server_event(raw)
            except RealtimeEventError:
                return False  # the reader records it
            if type(ev) is not AudioDelta:
                return False
            rest: list[Any] = []
            for command in handle(ev, now_ms()):
                kind = type(command)
                if kind is SendToTwilio:
                    # Writable as this began: what the delta makes goes out whole, even if its first message
                    # filled the transport's buffer (a pause bounds the next message, not this one's rest).
                    if not self._closed and not send_now(command.text, paused_ok=True):
                        self._closed = True  # the caller's side went away mid-send; its pump sees it
                elif kind is RecordCallEvent:
                    on_call_event(command)
                else:
                    rest.append(command)
            if rest:  # none that an audio delta makes today; carried out as the reader would, next
                self._spawn(self._execute(rest), "commands")
            if (self._stopped or self._server_ended) and not bridge.awaiting_transcription:
                self._transcripts_settled.set()
            return True

        return take

    def _line_saved(self, line: Any) -> None:
        """A transcript line was written (the page shows it live; Twilio has no use for it)."""

    async def _end_with(self, code: int, reason: str, end_reason: str) -> None:
        """We end the stream for bad input: the call ends (resume hangs up instead of reconnecting)."""
        self.status, self.end_reason = "failed", end_reason
        self.live.meta({"end_requested": "failed"})
        await self._close(code, reason)

    # -- the Realtime side -------------------------------------------------------------------

    async def _upstream_supervisor(self) -> None:
        """Keep a Realtime session open: reconnect with backoff, give up past the deadline."""
        rt = self.rt
        deadline_s = rt.settings.upstream_recovery_deadline_s
        lost_at: float | None = None
        attempt = 0
        while not self._server_ended:
            try:
                with rt.metrics.upstream_connect_seconds.time():
                    async with asyncio.timeout(UPSTREAM_CONNECT_TIMEOUT_S):
                        upstream = await self.engine.connect()
            except Exception as exc:  # noqa: BLE001 - any failure to reach upstream is retried
                now = self._loop.time()
                lost_at = lost_at if lost_at is not None else now
                if now - lost_at >= deadline_s:
                    await self._upstream_failed(repr(exc))
                    return
                log.warning("call.upstream_connect_failed", error=repr(exc), attempt=attempt)
                await asyncio.sleep(BACKOFF_S[min(attempt, len(BACKOFF_S) - 1)] or 0.05)
                attempt += 1
                continue
            if self._server_ended:  # the call ended while this session was opening
                await upstream.close()
                return
            self.upstream = upstream
            self._upstream_opened_at = self._loop.time()
            self._upstream_expires_at = None
            await self._handle(UpstreamReady())
            self._count_held_frames()
            if lost_at is not None:
                recovery_s = self._loop.time() - lost_at
                rt.metrics.upstream_recovery_seconds.observe(recovery_s)
                self._event("upstream_recovered", {"recovery_ms": round(recovery_s * 1000), "attempts": attempt + 1})
                log.info("call.upstream_recovered", recovery_ms=round(recovery_s * 1000), attempts=attempt + 1)
            lost_at, attempt = None, 0
            reason = await self._read_upstream(upstream)
            _stop_fast(upstream)
            self.upstream = None
            if reason is not None:
                # From this moment the caller's audio is held for the next session, with the last moments
                # the lost one may have eaten. The machine hears of the loss in turn (through its queue, for
                # an engine that has one), but caller frames reach it at once: until then they would go to
                # no session at all.
                self.bridge.caller.session_lost()
            await upstream.close()
            if reason is None:
                return
            lost_at = self._loop.time()
            rt.metrics.upstream_reconnects.labels(reason.split(" ")[0]).inc()
            if reason == "session_config_failed":
                self._config_failures += 1
                if self._config_failures >= CONFIG_ATTEMPTS:
                    # Our configuration itself is refused: no new session will take it either.
                    await self._handle(UpstreamLost(reason))
                    await self._upstream_failed(f"session configuration refused {CONFIG_ATTEMPTS} times")
                    return
            log.info("call.upstream_lost", reason=reason)
            await self._handle(UpstreamLost(reason))

    def _count_held_frames(self) -> None:
        """Add the bridge's held, replayed and dropped caller frames since the last count to the metrics.

        Counted when a session becomes ready and at the call's end, never per frame."""
        b, m, c = self.bridge, self.rt.metrics, self._frames_counted
        m.caller_frames_held.inc(b.frames_held - c[0])
        m.caller_frames_replayed.inc(b.frames_replayed - c[1])
        m.caller_frames_dropped.inc(b.frames_dropped - c[2])
        self._frames_counted = (b.frames_held, b.frames_replayed, b.frames_dropped)

    async def _read_upstream(self, upstream: RealtimeUpstream) -> str | None:
        """Feed the bridge until the session is lost (returns why) or the call ends (None)."""
        bridge = self.bridge
        recv = upstream.recv
        handle = bridge.handle
        execute = self._execute
        now_ms = self.now_ms
        queue = self._queue
        expired = False
        if hasattr(upstream, "fast"):
            upstream.fast = self._fast_agent_audio()
        while True:
            try:
                raw = await recv()
            except ConnectionClosed as exc:
                if self._ending or self._server_ended:
                    return None
                if self._rolling_over:
                    self._rolling_over = False
                    return "rollover"
                if self._restarting:
                    self._restarting = False
                    return "session_config_failed"
                code = exc.rcvd.code if exc.rcvd is not None else 1006
                return "session_expired" if expired else f"closed {code}"
            except OSError as exc:
                return f"network {type(exc).__name__}"
            try:
                ev = parse_server_event(raw)
            except RealtimeEventError as exc:
                self._event("upstream_bad_event", {"error": str(exc)})
                continue
            kind = type(ev)
            if kind is RealtimeError and ev.code == "session_expired":  # type: ignore[union-attr]
                expired = True
            elif kind is SessionCreated and ev.expires_at:  # type: ignore[union-attr]
                self._upstream_expires_at = self._loop.time() + (ev.expires_at - time.time())  # type: ignore[union-attr]
            elif kind is SessionUpdated:
                self._config_failures = 0
            if queue is not None:
                queue.put_nowait(ev)
                continue
            commands = handle(ev, now_ms())
            if commands:
                await execute(commands)
            if (self._stopped or self._server_ended) and not bridge.awaiting_transcription:
                self._transcripts_settled.set()
            if kind is AudioDelta:
                # Realtime sends a reply's audio faster than real time, a burst of deltas at once: after
                # each, the other calls get their turn (the loop is a round robin), so one call's burst
                # never holds back another call's first audio or its caller's frames.
                await asyncio.sleep(0)

    async def _upstream_failed(self, error: str, end_reason: str | None = None) -> None:
        """No upstream session (Realtime, or the cascaded engine's transcription session) within the
        deadline: apologise and hand over (or hang up), via resume."""
        rt = self.rt
        rt.metrics.upstream_failures.inc()
        engine = self.engine.name
        self.status = "failed"
        self.end_reason = end_reason or f"{engine} unavailable past the reconnect deadline"
        number = rt.settings.transfer_number
        self.live.meta({"end_requested": "upstream_failed", **({"transfer_to": number} if number else {})})
        self._event("upstream_failed", {"error": error, "transfer_to": number})
        # The call ends here: once archived, the stream is closed and Twilio runs the <Redirect>, where
        # /twilio/resume apologises, then dials the human or hangs up.
        self._close_reason = f"{engine} unavailable"

    async def _hand_off(self, reason: str) -> None:
        """The model cannot carry the call: end it as when Realtime is gone (the <Redirect> apologises,
        then dials a human or hangs up), and close the session now."""
        await self._upstream_failed(reason, f"handed off: {reason}")
        self._server_ends()

    def _restart_upstream(self, reason: str) -> None:
        upstream = self.upstream
        if upstream is None or self._restarting or self._server_ended:
            return
        self._restarting = True
        log.warning("call.upstream_restart", reason=reason)
        self._spawn(upstream.close(), "restart")

    def _maybe_roll_over(self) -> None:
        """Replace the Realtime session before it expires (its own expires_at, less a margin, or our
        age limit, whichever comes first), at a quiet moment."""
        upstream = self.upstream
        if upstream is None or self._rolling_over:
            return
        now = self._loop.time()
        age = now - self._upstream_opened_at
        expiring = self._upstream_expires_at is not None and self._upstream_expires_at - now <= ROLLOVER_MARGIN_S
        if (age >= self.rt.settings.realtime_session_max_s or expiring) and self.bridge.quiet:
            self._rolling_over = True
            self._event("upstream_rollover", {"age_s": round(age)})
            self._spawn(upstream.close(), "rollover")

    # -- drain: hand the call over to another node ---------------------------------------------

    def request_handover(self) -> None:
        """The node is draining and the deadline has passed: hand the call over at its next quiet
        moment (nobody talking, nothing in flight; the ticker looks), or in HANDOVER_QUIET_WAIT_S regardless."""
        if self._handover_due is None and not self._handover.is_set():
            self._handover_due = self._loop.time() + HANDOVER_QUIET_WAIT_S
            self._loop.call_later(HANDOVER_QUIET_WAIT_S, self._maybe_hand_over, True)
            self._maybe_hand_over()

    def _maybe_hand_over(self, force: bool = False) -> None:
        due = self._handover_due
        if due is None or self._handover.is_set() or self.bridge.ended:
            return
        quiet = self.bridge.quiet
        if quiet or force or self._loop.time() >= due:
            self.final = False  # the call goes on elsewhere: no archive here
            self.end_reason = "handed over: node draining"
            self._close_code, self._close_reason = (
                CLOSE_SERVICE_RESTART,
                "node draining: the call resumes on another node",
            )
            self._event("handed_over", {"node": self.rt.node_id, "quiet": quiet})
            self.rt.metrics.calls_handed_over.inc()
            self._handover.set()

    # -- lease and takeover ------------------------------------------------------------------

    def _on_taken_over(self, holder: str) -> None:
        if holder != self._holder:
            self._taken_over.set()

    async def _renew_lease(self) -> None:
        if not self._holder:
            return
        try:
            ok = await self.rt.call_store.renew_lease(
                self.start.call_sid,
                holder=self._holder,
                ttl_ms=int(self.rt.settings.lease_ttl_s * 1000),
                now_ms=int(time.time() * 1000),
            )
            if not ok:
                holder = await self.rt.call_store.lease_holder(self.start.call_sid)
                if holder is None:
                    # The lease lapsed (Redis was away longer than its TTL), nobody took it: claim it again.
                    epoch, _ = await self.rt.call_store.acquire_lease(
                        self.start.call_sid,
                        node=self.rt.node_id,
                        ttl_ms=int(self.rt.settings.lease_ttl_s * 1000),
                        now_ms=int(time.time() * 1000),
                        takeover=False,
                    )
                    if epoch:
                        self._epoch, self._holder = epoch, f"{self.rt.node_id}:{epoch}"
                        self._event("lease_reclaimed", {"epoch": epoch})
                        return
        except (RedisError, OSError):
            return  # Redis away: keep driving; the lease is renewed when it is back
        if not ok:
            self._taken_over.set()

    async def _ticker(self) -> None:
        bridge = self.bridge
        renew_every = max(1, int(self.rt.settings.lease_renew_s / TICK_S))
        ticks = 0
        greeted = bridge.greeted
        while not self._ending:  # a cancellation swallowed by a client library must not keep it alive
            await asyncio.sleep(TICK_S)
            ticks += 1
            await self._handle(Tick())
            if bridge.greeted and not greeted:
                greeted = True
                self.live.meta({"greeted": True})
            if self._handover_due is not None:
                self._maybe_hand_over()
            if ticks % renew_every == 0:
                await self._renew_lease()
            try:
                await self._meter_tick()
            except Exception:
                log.exception("budget.meter_failed")
            self._maybe_roll_over()

    # -- commands ----------------------------------------------------------------------------

    async def _send_upstream(self, data: bytes) -> None:
        upstream = self.upstream
        if upstream is not None:
            try:
                await upstream.send(data)
            except ConnectionClosed:
                pass  # the reader sees the loss; the bridge re-sends recent audio to the next session

    async def _execute(self, commands: list[Any]) -> None:
        for command in commands:
            kind = type(command)
            if kind is SendToTwilio:
                if not self._closed:
                    try:
                        data = command.text
                        if type(data) is str:
                            await self.ws.send_text(data)
                        else:
                            await self.ws.send_bytes(data)
                    except (WebSocketDisconnect, RuntimeError):
                        # Twilio went away mid-send; its pump sees the disconnect.
                        self._closed = True
            elif kind is SendToRealtime:
                await self._send_upstream(command.data)
            elif kind is SaveTranscript:
                line = command.line
                redact = self.rt.redact
                saved = dataclasses.replace(line, text=redact(line.text)) if redact else line
                self.live.line(saved)
                self._line_saved(saved)
                if saved is not line and saved.text != line.text and self.recorder is not None:
                    self._silence_redacted(saved)
            elif kind is RecordCallEvent:
                self._on_call_event(command)
            elif kind is RunTool:
                self._spawn(self._run_tool(command), "tool")
            elif kind is RestartUpstream:
                self._restart_upstream(command.reason)
            elif kind is HandOff:
                self._spawn(self._hand_off(command.reason), "hand-off")
            elif kind is HangUp or kind is TransferCall:
                self._server_ends()
                self._spawn(self._end_call(command), "end-call")
            elif kind is OptOut:
                self._spawn(self._opt_out(command), "opt-out")
            else:
                self.engine.execute(command)

    def _on_call_event(self, command: RecordCallEvent) -> None:
        self._event(command.kind, command.detail)
        if command.kind == "barge_in":
            self.rt.metrics.barge_ins.inc()
        elif command.kind == "turn_stage":
            self.rt.metrics.turn_stage_seconds.labels(self.engine.name, command.detail["stage"]).observe(
                command.detail["ms"] / 1000
            )
        elif command.kind in USAGE_EVENTS:
            kind = USAGE_EVENTS[command.kind]
            if kind == "response":
                # The audio streamed for this response and not charged yet is in its exact cost: it is
                # never estimated on top of it.
                self._take_unmetered()
            model = command.detail.get("model") or (self.engine.model if kind == "chat" else None)
            self._spawn(self._meter_usage(kind, command.detail.get("usage") or {}, model), "meter")

    async def _meter_usage(self, kind: str, usage: dict[str, Any], model: str | None = None) -> None:
        try:
            cost = await self.meter.usage(kind, usage, datetime.now(UTC), model=model)
        except (RedisError, OSError) as exc:
            log.warning("budget.meter_unavailable", error=repr(exc))
            return
        except ValueError as exc:  # a usage the price table cannot price: said, never silently dropped
            log.error("budget.usage_unpriced", kind=kind, error=str(exc))
            self._event("usage_unpriced", {"kind": kind, "usage": usage, "error": str(exc)[:200]})
            return
        self._event(
            "cost", {"kind": cost.kind, "micros": cost.micros, "detail": cost.detail, "prices": cost.price_version}
        )
        await self._enforce()

    def _take_unmetered(self) -> tuple[float, float]:
        """Seconds of caller and agent audio streamed since last taken."""
        bridge = self.bridge
        seconds_in = bridge.caller_seconds_in - self._metered_seconds_in
        seconds_out = bridge.agent_seconds_out - self._metered_seconds_out
        self._metered_seconds_in, self._metered_seconds_out = bridge.caller_seconds_in, bridge.agent_seconds_out
        return seconds_in, seconds_out

    async def _meter_tick(self) -> None:
        """Every tick: enforce the caps; at most once a second, charge the estimate of the audio streamed
        since (and any new telephony minute) to the ledger in Redis.

        OpenAI sends speech faster than real time, so a long turn is metered as it streams. Between two
        charges the estimate waits here; the caps are checked against the last charge on every tick."""
        if self._server_ended:
            return  # caller audio goes nowhere now; a last usage event is still charged as it arrives
        now_s = self._loop.time()
        if now_s - self._charged_at_s >= METER_INTERVAL_S:
            self._charged_at_s = now_s
            seconds_in, seconds_out = self._take_unmetered()
            if not self.engine.estimates_audio:  # its stages' usage is charged exactly as it arrives
                seconds_in = seconds_out = 0.0
            now = datetime.now(UTC)
            try:
                await self.meter.estimate(seconds_in, seconds_out, now)
                await self.meter.telephony((self.now_ms() - self.bridge.started_at_ms) / 1000, now)
            except (RedisError, OSError) as exc:
                log.warning("budget.meter_unavailable", error=repr(exc))
                return
        await self._enforce()

    async def _enforce(self) -> None:
        bridge = self.bridge
        try:
            verdict = await self.meter.verdict(self._loop.time())
        except (RedisError, OSError) as exc:
            log.warning("budget.meter_unavailable", error=repr(exc))
            return
        if verdict.action is Action.wrap_up and self.meter.wrap_up_started_s is None and not bridge.ended:
            self.meter.wrap_up_started_s = self._loop.time()
            grace_ms = int(self.rt.budget.hard_stop_grace_s * 1000)
            wrap_up = WrapUp(WRAP_UP_INSTRUCTIONS, verdict.reason, grace_ms, CLOSING_MAX_OUTPUT_TOKENS)
            await self._handle(wrap_up)
            await self._enforced("wrap_up", verdict)
        elif verdict.action is Action.hard_stop and not bridge.ended:
            await self._handle(HardStop(verdict.reason))
            await self._enforced("hard_stop", verdict)

    async def _enforced(self, action: str, verdict: CapVerdict) -> None:
        self._event(f"budget_{action}", {"cap": verdict.cap, "spent_micros": verdict.spent, "limit_micros": verdict.limit,
                                         "reason": verdict.reason})  # fmt: skip
        # A task of the call's own: a hard stop ends the pumps (the ticker among them) at once, and the
        # call's end waits for its tasks, so the record is written whatever stops first.
        self._spawn(
            self.rt.budget.record(
                action, verdict, now=datetime.now(UTC), call_sid=self.start.call_sid, campaign_id=self.meter.campaign_id
            ),
            "budget-record",
        )

    def _event(self, kind: str, detail: dict[str, Any]) -> None:
        bridge = getattr(self, "bridge", None)
        offset = self.now_ms() - bridge.started_at_ms if bridge is not None else None
        self._event_seq += 1
        key = f"{self._epoch:06d}-{self._event_seq:06d}"
        redact = self.rt.redact
        if redact is not None:  # tool arguments, reasons, outputs: what the model or caller said
            detail = redact_values(detail, redact)
        record = CallEventRecord(kind, detail, offset, datetime.now(UTC))
        self.events[key] = record
        live = getattr(self, "live", None)
        if live is not None:
            live.event(key, event_to_dict(record))

    def _bad_frame(self, code: str, reason: str) -> None:
        self.bad_frames += 1
        self.rt.metrics.bad_frames.labels(code).inc()
        if self.bad_frames <= 5:
            self._event("bad_frame", {"reason": reason})

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run_tool(self, command: RunTool) -> None:
        start = self.start
        context = ToolContext(
            call_sid=start.call_sid,
            direction=self._direction,
            custom_parameters=start.custom_parameters,
        )
        recorder = self.recorder if self.rt.tools.is_sensitive(command.name) else None
        if recorder is not None:  # nothing of a sensitive moment is recorded, from either side
            recorder.timeline.pause(self.now_ms(), f"tool {command.name}")
            self._event("recording_paused", {"tool": command.name, "call_id": command.call_id})
        try:
            ok, output = await self.rt.tools.run(command.name, command.arguments, context)
        finally:
            if recorder is not None:
                recorder.timeline.resume(self.now_ms())
                self._event("recording_resumed", {"tool": command.name, "call_id": command.call_id})
        self.rt.metrics.tool_calls.labels(command.name, "ok" if ok else "error").inc()
        try:
            await self._handle(ToolFinished(command.call_id, command.name, output, ok))
        except Exception as exc:  # noqa: BLE001 - the call may have ended meanwhile
            log.warning("call.tool_result_undelivered", tool=command.name, error=repr(exc))

    async def _opt_out(self, command: OptOut) -> None:
        """Revoke consent and list the number on the internal DNC before anything else is dialed."""
        meta = self._meta
        direction = self._direction
        raw = meta.get("to") if direction == "outbound" else meta.get("from")
        phone = normalise(str(raw)) if raw else None
        if phone is None:
            self._event("opt_out_failed", {"reason": "the call's number is unknown", "source": command.source})
            return
        # A database outage must not lose an opt-out: retry for about as long as a call's end waits.
        for attempt, delay in enumerate(OPT_OUT_RETRY_S):
            await asyncio.sleep(delay)
            try:
                async with self.rt.sessionmaker() as session:
                    await revoke(
                        session, phone=phone, reason=command.reason, source=command.source, now=datetime.now(UTC)
                    )
                    await session.commit()
                break
            except (SQLAlchemyError, OSError) as exc:
                log.warning("call.opt_out_retry", attempt=attempt + 1, error=repr(exc))
        else:
            log.error("call.opt_out_not_recorded", source=command.source, phone=phone)
            self._event("opt_out_failed", {"reason": "database unavailable", "source": command.source, "phone": phone})
            return
        self._event("opted_out", {"phone": phone, "source": command.source, "reason": command.reason})
        log.info("call.opted_out", source=command.source)

    def _server_ends(self) -> None:
        """We decided the call is over (hang-up, transfer, a hard stop): caller audio stops going
        upstream at once (the bridge drops it), the Realtime session closes within a second, then the
        hang-up or transfer goes through Twilio REST and the stream is closed from our side, whether or
        not the carrier ends it."""
        if self._server_ended:
            return
        self._server_ended = True
        self._spawn(self._close_upstream_after_last_words(), "close-upstream")

    async def _close_upstream_after_last_words(self) -> None:
        self._transcripts_settled.clear()
        if self.bridge.awaiting_transcription and not self.bridge.stopped_hard:
            try:
                async with asyncio.timeout(ENDED_TRANSCRIPT_WAIT_S):
                    await self._transcripts_settled.wait()
            except TimeoutError:
                pass
        upstream = self.upstream
        if upstream is not None:
            await upstream.close()
        self._event("upstream_closed", {"reason": "call ended"})

    async def _end_call(self, command: HangUp | TransferCall) -> None:
        """Hang up or transfer through Twilio REST; if REST fails, close the stream and let the
        <Redirect> to /twilio/resume do the same from the recorded end request."""
        rt = self.rt
        sid = self.start.call_sid
        if isinstance(command, HangUp):
            name, request, twiml_doc = "end_call", {"end_requested": "hangup"}, None
            self.end_reason = f"agent hung up: {command.reason}"
        else:
            name = "transfer_to_human"
            request = {"end_requested": "transfer", "transfer_to": command.number}
            twiml_doc = twiml.dial(command.number)
            self.end_reason = f"transferred to a human: {command.reason}"
        self.live.meta(request)
        try:
            if twiml_doc is None:
                await rt.twilio.hangup(sid)
            else:
                await rt.twilio.update_twiml(sid, twiml_doc)
            rt.metrics.tool_calls.labels(name, "ok").inc()
        except Exception as exc:  # noqa: BLE001 - any failure falls back to the redirect
            rt.metrics.twilio_rest_errors.labels(name).inc()
            detail = (
                {"status": exc.status, "code": exc.code, "message": exc.message}
                if isinstance(exc, TwilioError)
                else {"error": repr(exc)}
            )
            self._event(f"{name}_rest_failed", detail)
            await self.live.flush(FLUSH_TIMEOUT_S)
            await self._close(CLOSE_NORMAL, "call ended")

    # -- the end -----------------------------------------------------------------------------

    async def _close(self, code: int, reason: str) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            await self.ws.close(code, reason)
        except Exception as exc:  # noqa: BLE001 - the peer may already be gone
            log.debug("call.close_failed", error=repr(exc))

    async def _finish(self, direction: str) -> None:
        rt = self.rt
        bridge = self.bridge
        sid = self.start.call_sid
        rt.takeovers.unregister(sid)
        taken_over = self._taken_over.is_set()
        if taken_over:
            self.final = False
            self.end_reason = "taken over by another stream"
            rt.metrics.streams_taken_over.inc()
        # Nothing listens to the model any more: its session closes before anything else is waited for
        # (a hang-up's REST call, an opt-out's retries), so it costs nothing while the call winds down.
        self.phase = "finishing: closing Realtime"
        if self.upstream is not None:
            await self.upstream.close()
        await self.engine.close()
        self.phase = "finishing: waiting for its tasks"
        pending = list(self._tasks)
        if pending:
            # Hang-up and transfer REST calls complete; tools of a finished call need not.
            for task in pending:
                if task.get_name() == "tool":
                    task.cancel()
            await asyncio.wait(pending, timeout=15)
        if not taken_over:  # the new owner restored the call from Redis and writes from here on
            tail: list[Command] = []
            bridge.finish(tail)
            await self._execute([c for c in tail if isinstance(c, SaveTranscript | RecordCallEvent)])
        rt.metrics.frames_in.inc(bridge.frames_in)
        if self.final:
            rt.metrics.calls_ended.labels(self.status).inc()
            self.phase = "finishing: releasing its budget reserve"
            try:
                if hasattr(self, "meter"):
                    await self.meter.release()
            except (RedisError, OSError) as exc:  # reaped once stale instead
                log.warning("budget.release_failed", call_sid=sid, error=repr(exc))
            redact = rt.redact
            self.live.meta({"status": "ended", "end_reason": redact(self.end_reason) if redact else self.end_reason})
            if self.recorder is not None:
                self.phase = "finishing: joining the recording"
                self._event("recording", await self.recorder.finish() or {"key": None, "reason": "nothing recorded"})
            flushed = await self.live.flush(FLUSH_TIMEOUT_S)
            self.phase = "finishing: archiving"
            try:
                await archive_live_call(
                    rt,
                    sid,
                    status=self.status,
                    end_reason=self.end_reason,
                    lines=bridge.history,
                    events=self.events,
                    usage={"responses" if self.engine.name == "realtime" else "chat": bridge.usage}
                    if bridge.usage
                    else None,
                )
            except Exception:
                log.exception("call.archive_failed", live_state_flushed=flushed)
        else:
            # The call goes on elsewhere: make sure our part is in Redis (and our part of the recording in
            # its store), then let go of the lease.
            if self.recorder is not None:
                await self.recorder.detach()
            await self.live.flush(FLUSH_TIMEOUT_S)
            if self._holder and not taken_over:
                try:
                    await rt.call_store.release_lease(sid, holder=self._holder)
                except (RedisError, OSError):
                    pass
        self.phase = "finishing: stopping its live-state writer"
        await self.live.close()
        self.phase = "finishing: closing the stream"
        close_reason = "call taken over by another stream" if taken_over else self._close_reason
        await self._close(CLOSE_POLICY if taken_over else self._close_code, close_reason)
        self._count_held_frames()
        log.info(
            "call.ended" if self.final else "call.stream_detached",
            status=self.status,
            reason=self.end_reason,
            lines=len(bridge.history),
            frames_in=bridge.frames_in,
            frames_dropped=bridge.frames_dropped,
            bad_frames=self.bad_frames,
        )
