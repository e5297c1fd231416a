"""The media WebSocket: the only code that awaits both Twilio's socket and the Realtime socket.

All decisions are the bridge's (app/core/bridge.py); this module feeds it events from two pumps
and carries out its commands. Per frame it does: receive, parse, bridge, send. No logging, no
model construction, no awaits besides the sockets.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import structlog
from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from twilio.request_validator import RequestValidator
from websockets.exceptions import ConnectionClosed

from app.adapters.openai_realtime import RealtimeUpstream
from app.adapters.twilio_rest import TwilioError
from app.archive.service import CallEventRecord, CallRecord, archive_call
from app.calls.tools import ToolContext
from app.core import twiml
from app.core.bridge import (
    CallBridge,
    Command,
    HangUp,
    RecordCallEvent,
    RunTool,
    SaveTranscript,
    SendToRealtime,
    SendToTwilio,
    Tick,
    ToolFinished,
    TranscriptLine,
    TransferCall,
    UpstreamReady,
)
from app.core.realtime_events import RealtimeEventError, parse_server_event
from app.core.stream_token import StreamTokenError, verify_stream_token
from app.core.twilio_media import (
    StreamConnected,
    StreamStarted,
    StreamStopped,
    TwilioMessageError,
    parse_twilio_message,
)
from app.runtime import Runtime

router = APIRouter()
log = structlog.get_logger()

CLOSE_NORMAL = 1000
CLOSE_INVALID_DATA = 1007
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
CLOSE_INTERNAL = 1011

START_TIMEOUT_S = 10.0
UPSTREAM_CONNECT_TIMEOUT_S = 10.0
TICK_S = 0.25


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
    await ws.accept()
    validator = RequestValidator(rt.settings.twilio_auth_token.get_secret_value())
    if not signature or not validator.validate(rt.settings.public_ws_base + "/twilio/media", {}, signature):
        rt.metrics.streams_rejected.labels("signature").inc()
        await ws.close(CLOSE_POLICY, "invalid Twilio signature")
        return
    await CallSession(rt, ws).run()


class CallSession:
    """One admitted media stream, from its start event to the archive."""

    def __init__(self, rt: Runtime, ws: WebSocket) -> None:
        self.rt = rt
        self.ws = ws
        self._loop = asyncio.get_running_loop()
        self.bridge: CallBridge | None = None
        self.upstream: RealtimeUpstream | None = None
        self.lines: list[TranscriptLine] = []
        self.events: list[CallEventRecord] = []
        self.end_reason = "unknown"
        self.status = "completed"
        self.bad_frames = 0
        self._closed = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self._start: StreamStarted | None = None
        self._meta: dict[str, Any] = {}
        self._started_at = datetime.now(UTC)

    def now_ms(self) -> int:
        return int(self._loop.time() * 1000)

    # -- admission ---------------------------------------------------------------------------

    async def _receive_start(self) -> StreamStarted:
        """Read up to the start event; refuse the stream on anything unusable."""
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

    async def _admit(self) -> StreamStarted:
        try:
            start = await self._receive_start()
        except TimeoutError as exc:
            raise StreamRefused(CLOSE_POLICY, "no start event received", "no_start") from exc
        settings = self.rt.settings
        if start.account_sid and start.account_sid != settings.twilio_account_sid:
            raise StreamRefused(CLOSE_POLICY, "stream for another Twilio account", "account")
        try:
            verify_stream_token(
                start.custom_parameters.get("token"),
                secret=settings.stream_secret,
                call_sid=start.call_sid,
                now_s=time.time(),
            )
        except StreamTokenError as exc:
            raise StreamRefused(CLOSE_POLICY, exc.reason, "token") from exc
        return start

    # -- the call ----------------------------------------------------------------------------

    async def run(self) -> None:
        rt = self.rt
        try:
            start = await self._admit()
        except StreamRefused as refused:
            rt.metrics.streams_rejected.labels(refused.metric).inc()
            await self._close(refused.code, refused.reason)
            return
        self._start = start
        structlog.contextvars.bind_contextvars(call_sid=start.call_sid)
        try:
            await self._bridge_call(start)
        finally:
            structlog.contextvars.unbind_contextvars("call_sid")

    async def _bridge_call(self, start: StreamStarted) -> None:
        rt = self.rt
        self._started_at = datetime.now(UTC)
        self._meta = await rt.call_store.get_meta(start.call_sid)
        direction = start.custom_parameters.get("direction") or self._meta.get("direction", "inbound")
        rt.metrics.calls_started.labels(direction).inc()
        rt.metrics.calls_active.inc()
        bridge = self.bridge = CallBridge(rt.bridge_config, started_at_ms=self.now_ms())
        log.info("call.stream_started", stream_sid=start.stream_sid, direction=direction)
        try:
            await self._execute(bridge.handle(start, self.now_ms()))
            try:
                with rt.metrics.upstream_connect_seconds.time():
                    async with asyncio.timeout(UPSTREAM_CONNECT_TIMEOUT_S):
                        self.upstream = await rt.realtime.connect()
            except Exception as exc:  # noqa: BLE001 - any failure to reach upstream ends this call only
                log.error("call.upstream_unavailable", error=repr(exc))
                self.status, self.end_reason = "failed", "realtime upstream unavailable"
                self._event("upstream_unavailable", {"error": type(exc).__name__})
                await self._close(CLOSE_INTERNAL, "realtime upstream unavailable")
                return
            await self._execute(bridge.handle(UpstreamReady(), self.now_ms()))
            await self._pump_until_done()
        except Exception as exc:
            log.exception("call.failed")
            self.status, self.end_reason = "failed", f"internal error: {type(exc).__name__}"
        finally:
            await self._finish(direction)

    async def _pump_until_done(self) -> None:
        pumps = [
            asyncio.create_task(self._twilio_pump(), name="twilio-pump"),
            asyncio.create_task(self._upstream_pump(), name="upstream-pump"),
            asyncio.create_task(self._ticker(), name="ticker"),
        ]
        try:
            done, _ = await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in pumps:
                task.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]

    async def _twilio_pump(self) -> None:
        bridge = self.bridge
        assert bridge is not None
        receive = self.ws.receive
        handle = bridge.handle
        execute = self._execute
        now_ms = self.now_ms
        limit = self.rt.settings.max_ws_message_bytes
        max_bad = self.rt.settings.max_bad_frames
        while True:
            msg = await receive()
            if msg["type"] == "websocket.disconnect":
                self.end_reason = self.end_reason if self.end_reason != "unknown" else "twilio disconnected"
                self._closed = True
                return
            data = msg.get("text")
            if data is None:
                data = msg.get("bytes") or b""
            if len(data) > limit:
                self._bad_frame("too_big")
                self.status, self.end_reason = "failed", "oversized frame from Twilio"
                await self._close(CLOSE_TOO_BIG, f"frame larger than {limit} bytes")
                return
            try:
                ev = parse_twilio_message(data)
            except TwilioMessageError as exc:
                self._bad_frame(exc.reason)
                if self.bad_frames > max_bad:
                    self.status, self.end_reason = "failed", "too many invalid frames from Twilio"
                    await self._close(CLOSE_INVALID_DATA, "too many invalid frames")
                    return
                continue
            commands = handle(ev, now_ms())
            if commands:
                await execute(commands)
            if type(ev) is StreamStopped:
                if self.end_reason == "unknown":
                    self.end_reason = "caller hung up"
                return

    async def _upstream_pump(self) -> None:
        bridge = self.bridge
        upstream = self.upstream
        assert bridge is not None and upstream is not None
        recv = upstream.recv
        handle = bridge.handle
        execute = self._execute
        now_ms = self.now_ms
        while True:
            try:
                raw = await recv()
            except ConnectionClosed as exc:
                code = exc.rcvd.code if exc.rcvd is not None else 1006
                self.status, self.end_reason = "failed", f"realtime session closed ({code})"
                self._event("upstream_closed", {"code": code})
                await self._close(CLOSE_NORMAL, "realtime session ended")
                return
            try:
                ev = parse_server_event(raw)
            except RealtimeEventError as exc:
                self._event("upstream_bad_event", {"error": str(exc)})
                continue
            commands = handle(ev, now_ms())
            if commands:
                await execute(commands)

    async def _ticker(self) -> None:
        bridge = self.bridge
        assert bridge is not None
        while True:
            await asyncio.sleep(TICK_S)
            commands = bridge.handle(Tick(), self.now_ms())
            if commands:
                await self._execute(commands)

    # -- commands ----------------------------------------------------------------------------

    async def _execute(self, commands: list[Command]) -> None:
        for command in commands:
            kind = type(command)
            if kind is SendToTwilio:
                if not self._closed:
                    try:
                        await self.ws.send_text(command.text)  # type: ignore[union-attr]
                    except (WebSocketDisconnect, RuntimeError):
                        # Twilio went away mid-send; its pump sees the disconnect and ends the call.
                        self._closed = True
            elif kind is SendToRealtime:
                if self.upstream is not None:
                    await self.upstream.send(command.data)  # type: ignore[union-attr]
            elif kind is SaveTranscript:
                self.lines.append(command.line)  # type: ignore[union-attr]
            elif kind is RecordCallEvent:
                self._on_call_event(command)  # type: ignore[arg-type]
            elif kind is RunTool:
                self._spawn(self._run_tool(command), "tool")  # type: ignore[arg-type]
            elif kind is HangUp:
                self._spawn(self._hang_up(command), "hangup")  # type: ignore[arg-type]
            elif kind is TransferCall:
                self._spawn(self._transfer(command), "transfer")  # type: ignore[arg-type]

    def _on_call_event(self, command: RecordCallEvent) -> None:
        self._event(command.kind, command.detail)
        if command.kind == "barge_in":
            self.rt.metrics.barge_ins.inc()

    def _event(self, kind: str, detail: dict[str, Any]) -> None:
        offset = self.now_ms() - self.bridge.started_at_ms if self.bridge is not None else None
        self.events.append(CallEventRecord(kind, detail, offset, datetime.now(UTC)))

    def _bad_frame(self, reason: str) -> None:
        self.bad_frames += 1
        self.rt.metrics.bad_frames.labels(reason.split(" ")[0] if len(reason) > 40 else reason).inc()
        if self.bad_frames <= 5:
            self._event("bad_frame", {"reason": reason})

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run_tool(self, command: RunTool) -> None:
        start = self._start
        assert start is not None and self.bridge is not None
        context = ToolContext(
            call_sid=start.call_sid,
            direction=start.custom_parameters.get("direction", "inbound"),
            custom_parameters=start.custom_parameters,
        )
        ok, output = await self.rt.tools.run(command.name, command.arguments, context)
        self.rt.metrics.tool_calls.labels(command.name, "ok" if ok else "error").inc()
        commands = self.bridge.handle(ToolFinished(command.call_id, command.name, output, ok), self.now_ms())
        try:
            await self._execute(commands)
        except Exception as exc:  # noqa: BLE001 - the call may have ended meanwhile
            log.warning("call.tool_result_undelivered", tool=command.name, error=repr(exc))

    async def _hang_up(self, command: HangUp) -> None:
        start = self._start
        assert start is not None
        self.end_reason = f"agent hung up: {command.reason}"
        await self.rt.call_store.put_meta(start.call_sid, {"end_requested": "hangup"})
        try:
            await self.rt.twilio.hangup(start.call_sid)
            self.rt.metrics.tool_calls.labels("end_call", "ok").inc()
        except TwilioError as exc:
            self.rt.metrics.twilio_rest_errors.labels("hangup").inc()
            self._event("hangup_failed", {"status": exc.status, "code": exc.code, "message": exc.message})
            # Closing the stream makes Twilio fetch /twilio/resume, which hangs up ended calls.
            await self._close(CLOSE_NORMAL, "call ended")

    async def _transfer(self, command: TransferCall) -> None:
        start = self._start
        assert start is not None
        self.end_reason = f"transferred to a human: {command.reason}"
        await self.rt.call_store.put_meta(start.call_sid, {"end_requested": "transfer", "transfer_to": command.number})
        try:
            await self.rt.twilio.update_twiml(start.call_sid, twiml.dial(command.number))
            self.rt.metrics.tool_calls.labels("transfer_to_human", "ok").inc()
        except TwilioError as exc:
            self.rt.metrics.twilio_rest_errors.labels("transfer").inc()
            self._event("transfer_failed", {"status": exc.status, "code": exc.code, "message": exc.message})
            await self._close(CLOSE_NORMAL, "transfer")

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
        assert bridge is not None and self._start is not None
        pending = list(self._tasks)
        if pending:
            # Hang-up and transfer REST calls must complete; tools of a finished call need not.
            for task in pending:
                if task.get_name() == "tool":
                    task.cancel()
            await asyncio.wait(pending, timeout=15)
        tail: list[Command] = []
        bridge.finish(tail)
        for command in tail:
            if isinstance(command, SaveTranscript):
                self.lines.append(command.line)
        if self.upstream is not None:
            await self.upstream.close()
        rt.metrics.calls_active.dec()
        rt.metrics.calls_ended.labels(self.status).inc()
        rt.metrics.frames_in.inc(bridge.frames_in)
        record = CallRecord(
            call_sid=self._start.call_sid,
            stream_sid=self._start.stream_sid,
            direction=direction,
            from_number=self._meta.get("from"),
            to_number=self._meta.get("to"),
            status=self.status,
            end_reason=self.end_reason,
            started_at=self._started_at,
            ended_at=datetime.now(UTC),
            usage={"responses": bridge.usage} if bridge.usage else None,
            lines=[
                dataclasses.replace(line, seq=i) for i, line in enumerate(sorted(self.lines, key=_line_order), start=1)
            ],
            events=self.events,
        )
        try:
            await archive_call(rt.sessionmaker, record)
        except Exception:
            log.exception("call.archive_failed")
        # Closed after archiving, so whoever waits for the close can read the archive.
        await self._close(CLOSE_NORMAL, "call ended")
        log.info(
            "call.ended",
            status=self.status,
            reason=self.end_reason,
            lines=len(self.lines),
            frames_in=bridge.frames_in,
            bad_frames=self.bad_frames,
        )


_line_order: Callable[[TranscriptLine], tuple[int, int]] = lambda line: (line.offset_ms, line.seq)  # noqa: E731
