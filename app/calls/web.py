"""The browser doorway: a call from the console's "Talk to the agent" page, over a WebSocket.

The page is the transport (PCM16 24 kHz both ways, ``app.core.transport``); the engine and the call's
services are those of a phone call: admission against the day's budget, live state in Redis, metering and
caps, tools, the archive (direction ``web``, with the key that made it). What differs from Twilio's stream:

- who may call: a signed-in console session (its cookie) whose key is an admin's, a supervisor's, or an ops
  key with the ``talk`` grant; the socket's Origin must be this site; the page's first message carries the
  session's CSRF token. Anything else is refused before a byte of audio is read.
- the call's end: no carrier to hang up or transfer through; the page is told (``ended``) and the socket
  closed. A web call cannot resume elsewhere: a lost socket ends it (and it is archived).
"""

from __future__ import annotations

import asyncio
import hmac
import secrets
import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import orjson
import structlog
from fastapi import APIRouter, WebSocket
from redis.exceptions import RedisError

from app.auth.keys import Principal
from app.budget.policy import Action
from app.calls.media import CLOSE_NORMAL, CLOSE_POLICY, CLOSE_TOO_BIG, START_TIMEOUT_S, CallSession, StreamRefused
from app.console.router import socket_viewer
from app.core.call_events import HangUp, TransferCall
from app.core.stream_token import STREAM
from app.core.transport import BROWSER, BrowserMessageError, BrowserStart, parse_browser_message
from app.core.twilio_media import StreamStarted
from app.runtime import Runtime

router = APIRouter()
log = structlog.get_logger()


def same_origin(origin: str | None, host: str | None, public_base_url: str) -> bool:
    """The page that opened the socket is this site's: its Origin names the host it connected to, or the
    public URL's (behind a proxy that rewrites Host). A missing Origin (not a browser) is refused too."""
    if not origin:
        return False
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return False
    return parts.netloc == host or f"{parts.scheme}://{parts.netloc}" == public_base_url


def _parse_page_message(data: str | bytes) -> Any:
    """A message of the page once the call runs (a second ``start`` is a bad frame)."""
    event = parse_browser_message(data, binary=isinstance(data, bytes))
    if type(event) is BrowserStart:
        raise BrowserMessageError("start", "the call has already started")
    return event


@router.websocket("/console/talk/ws")
async def talk(ws: WebSocket) -> None:
    rt: Runtime = ws.app.state.runtime
    if not same_origin(ws.headers.get("origin"), ws.headers.get("host"), rt.settings.public_base_url):
        rt.metrics.streams_rejected.labels("origin").inc()
        await ws.close(CLOSE_POLICY, "the page is not this site's")
        return
    viewer = await socket_viewer(ws)
    if viewer is None:
        rt.metrics.streams_rejected.labels("console_session").inc()
        await ws.close(CLOSE_POLICY, "sign in to the console first")
        return
    if not viewer.principal.may_talk:
        rt.metrics.streams_rejected.labels("role").inc()
        await ws.close(CLOSE_POLICY, "your key may not talk to the agent (it needs the 'talk' grant)")
        return
    await ws.accept()
    await WebCallSession(rt, ws, viewer.principal, viewer.session.csrf).run()


class WebCallSession(CallSession):
    transport_audio = BROWSER
    resumable = False
    _parse = staticmethod(_parse_page_message)

    def __init__(self, rt: Runtime, ws: WebSocket, principal: Principal, csrf: str) -> None:
        super().__init__(rt, ws)
        self.principal = principal
        self._csrf = csrf
        self._ended_told = False

    async def _admit(self) -> tuple[StreamStarted, str]:
        start = await self._receive_page_start()
        rt = self.rt
        call_sid = "WB" + secrets.token_hex(16)
        try:
            verdict = await rt.budget.admit(now=datetime.now(UTC), call_sid=call_sid, direction="web")
        except (RedisError, OSError) as exc:
            log.warning("budget.unavailable", call_sid=call_sid, error=repr(exc))
            verdict = None
        if verdict is not None and verdict.action is not Action.ok:
            raise StreamRefused(CLOSE_POLICY, "today's budget is spent: no new calls", "budget")
        engine = start.engine or rt.settings.engine
        try:
            await rt.call_store.put_meta(
                call_sid,
                {
                    "call_sid": call_sid,
                    "direction": "web",
                    "from": f"console:{self.principal.name}"[:255],
                    "to": rt.settings.business_name[:255],
                    "key_id": self.principal.key_id,
                    "engine": engine,
                    "started_at_ms": int(time.time() * 1000),
                },
            )
        except (RedisError, OSError) as exc:  # the call goes on; the archive has what the call itself saw
            log.warning("call.live_state_unavailable", call_sid=call_sid, error=repr(exc))
        self._event("web_call", {"key_id": self.principal.key_id, "key_name": self.principal.name, "engine": engine})
        await self._send_page({"type": "started", "call_sid": call_sid, "engine": engine})
        return StreamStarted("WS" + secrets.token_hex(16), call_sid, ""), STREAM

    async def _receive_page_start(self) -> BrowserStart:
        limit = self.rt.settings.max_ws_message_bytes
        try:
            async with asyncio.timeout(START_TIMEOUT_S):
                msg = await self.ws.receive()
        except TimeoutError as exc:
            raise StreamRefused(CLOSE_POLICY, "no start message received", "no_start") from exc
        if msg["type"] == "websocket.disconnect":
            raise StreamRefused(CLOSE_NORMAL, "disconnected before start", "no_start")
        text = msg.get("text")
        if text is None:
            raise StreamRefused(CLOSE_POLICY, "the first message is the start message (JSON text)", "bad_start")
        if len(text) > limit:
            raise StreamRefused(CLOSE_TOO_BIG, f"frame larger than {limit} bytes", "too_big")
        try:
            start = parse_browser_message(text, binary=False)
        except BrowserMessageError as exc:
            raise StreamRefused(CLOSE_POLICY, f"invalid start: {exc.reason}", "bad_start") from exc
        if not isinstance(start, BrowserStart):
            raise StreamRefused(CLOSE_POLICY, "expected a start message", "bad_start")
        if not hmac.compare_digest(start.csrf.encode(), self._csrf.encode()):
            raise StreamRefused(CLOSE_POLICY, "the start message's CSRF token is not this session's", "csrf")
        return start

    def _line_saved(self, line: Any) -> None:
        message = {"type": "transcript", "speaker": line.speaker, "text": line.text, "interrupted": line.interrupted}
        self._spawn(self._send_page(message), "page-transcript")

    async def _send_page(self, message: dict[str, Any]) -> None:
        if self._closed:
            return
        try:
            await self.ws.send_text(orjson.dumps(message).decode())
        except Exception as exc:  # noqa: BLE001 - the page may be gone; its pump sees the disconnect
            log.debug("web.send_failed", error=repr(exc))

    async def _end_call(self, command: HangUp | TransferCall) -> None:
        """No carrier: the page is told the call is over; the socket closes once the call is archived (the
        model's session is closed already: nothing more is spent meanwhile)."""
        if isinstance(command, HangUp):
            self.end_reason = f"agent hung up: {command.reason}"
            reason = "The agent ended the call."
        else:
            self.end_reason = f"transfer asked for: {command.reason} (a web call ends instead)"
            reason = "The agent would transfer you to a colleague; from this page, the call ends here."
        self.live.meta({"end_requested": "hangup"})
        self._close_reason = reason
        await self._tell_ended(reason)

    async def _tell_ended(self, reason: str) -> None:
        if not self._ended_told:
            self._ended_told = True
            await self._send_page({"type": "ended", "reason": reason})

    async def _close(self, code: int, reason: str) -> None:
        if not self._closed:
            await self._tell_ended(reason)
        await super()._close(code, reason[:120])

    def request_handover(self) -> None:
        """The node is draining: a web call cannot move to another node; it ends, said so to the page."""
        if not self._ending:
            self.end_reason = "ended: the server is restarting"
            self._spawn(self._close(1012, "the server is restarting: call again in a moment"), "web-drain")
