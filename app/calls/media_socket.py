"""Twilio's media streams on picows, under the same uvicorn server and port as everything else.

A media stream is 50 small JSON messages a second each way per call. Through ASGI each one crossed
websockets' Python frame parser, an asyncio queue, Starlette's and uvicorn's message dicts and, on the way
out, the same layers back: about as much CPU per message as the call's own work. Here uvicorn still parses
the HTTP request; when it is an upgrade to ``/twilio/media``, ``MediaStreamRouter`` (uvicorn's ``ws=``
protocol class) hands the connection to picows, which does the handshake, parses and writes frames in C and
calls back per frame. Every other WebSocket (the browser page, the console) goes to uvicorn's own
implementation, and the ASGI route for ``/twilio/media`` stays for a server started without this class.

The call itself is the same ``CallSession``: ``MediaSocket`` offers it the calls it makes of Starlette's
WebSocket (``receive`` with ASGI's message shapes, ``send_text``/``send_bytes``, ``close``) with picows
underneath. The request is refused (HTTP 403) before any frame is read when its Twilio signature is wrong.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, cast

import structlog
from picows import (
    WSAutoPingStrategy,
    WSTransport,
    WSUpgradeRequest,
    WSUpgradeResponse,
    WSUpgradeResponseWithListener,
)
from picows.picows import WSProtocol  # type: ignore[attr-defined]  # the class ws_create_server builds
from uvicorn.protocols.websockets.auto import AutoWebSocketsProtocol

from app.adapters.picows_socket import MessageSocket
from app.adapters.twilio_signatures import SETTINGS_HEADER

if TYPE_CHECKING:
    from app.runtime import Runtime

log = structlog.get_logger(__name__)

MEDIA_PATH = b"/twilio/media"
CLOSE_INTERNAL_ERROR = 1011
BURST_YIELD = 8


class MediaSocket(MessageSocket):
    """One media stream's socket, shaped as the parts of Starlette's WebSocket a ``CallSession`` uses."""

    def __init__(self, rt: Runtime, request: WSUpgradeRequest) -> None:
        super().__init__()
        self.rt = rt
        self.headers: Mapping[str, str] = request.headers
        self.limit = rt.settings.max_ws_message_bytes  # the call refuses a message past it, with its reason
        self._burst = 0  # messages read in a row without waiting
        self.task: asyncio.Task[None] | None = None

    def on_ws_connected(self, transport: WSTransport) -> None:
        super().on_ws_connected(transport)
        self.task = asyncio.get_running_loop().create_task(self._run(), name="media-stream")

    # -- what CallSession calls ------------------------------------------------------------------

    async def accept(self) -> None:
        """Accepted in the handshake already."""

    async def receive(self) -> dict[str, Any]:
        if self._messages:
            # A burst (frames that queued while the loop was busy, or a client sending faster than real
            # time) is read without waiting; every BURST_YIELD messages the other calls get their turn,
            # and so do this call's own events (a lost upstream session heard before more audio goes to it).
            self._burst += 1
            if self._burst >= BURST_YIELD:
                self._burst = 0
                await asyncio.sleep(0)
        else:
            self._burst = 0
        # As bytes: the parser takes them (orjson refuses what is not UTF-8: a bad frame like any other).
        message = await self._next()
        if message is None:
            return {"type": "websocket.disconnect", "code": self.close_code or 1006, "reason": self.close_reason}
        return {"type": "websocket.receive", "bytes": message}

    _receive = receive  # the pump reads the raw receive where there is one

    async def send_text(self, data: str) -> None:
        await self.send_bytes(data)  # type: ignore[arg-type]  # picows encodes a str as UTF-8

    async def send_bytes(self, data: bytes) -> None:
        await self._wait_writable()
        if not self.send_now(data):
            raise RuntimeError("the media stream is closed")  # as Starlette's WebSocket raises

    async def close(self, code: int = 1000, reason: str = "") -> None:
        self._send_close(code, reason)

    async def _run(self) -> None:
        from app.calls.media import CallSession

        try:
            await CallSession(self.rt, self).run()  # type: ignore[arg-type]  # the WebSocket's shape, see above
        except Exception:
            log.exception("call.stream_failed")
            self._send_close(CLOSE_INTERNAL_ERROR, "internal error")
        finally:
            self._send_close(1000)


def media_listener(rt: Runtime, request: WSUpgradeRequest) -> Any:
    """picows' listener factory: a MediaSocket for a stream Twilio signed, else HTTP 403 (read nothing)."""
    headers = request.headers
    signature = headers.get("x-twilio-signature", "")
    url = rt.settings.public_ws_base + "/twilio/media"
    if not rt.twilio_signatures.validate(url, {}, signature, headers.get(SETTINGS_HEADER)):
        rt.metrics.streams_rejected.labels("signature").inc()
        response = WSUpgradeResponse.create_error_response(HTTPStatus.FORBIDDEN, b"invalid Twilio signature")
        return WSUpgradeResponseWithListener(response, None)
    return MediaSocket(rt, request)


class MediaStreamRouter(asyncio.Protocol):
    """uvicorn's WebSocket protocol class (``uvicorn.Config(ws=MediaStreamRouter)``).

    uvicorn calls it with the connection once it has parsed an upgrade request, then feeds it that request,
    re-serialised. The media-stream path goes to picows; everything else to uvicorn's own class, as if
    this one were not there."""

    def __init__(self, config: Any, server_state: Any, app_state: Any, **kwargs: Any) -> None:
        self._config = config
        self._server_state = server_state
        self._app_state = app_state
        self._kwargs = kwargs
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        transport = self._transport
        assert transport is not None
        target = data.split(b" ", 2)[1] if data.count(b" ", 0, 4096) >= 2 else b""
        rt = _runtime(self._config)
        protocol: asyncio.Protocol | asyncio.BufferedProtocol
        if target.split(b"?", 1)[0] == MEDIA_PATH and rt is not None and rt.settings.media_socket == "picows":
            max_bytes = int(self._config.ws_max_size)

            def factory(request: WSUpgradeRequest) -> Any:
                return media_listener(rt, request)

            protocol = WSProtocol(
                None,  # host and port: a server
                None,  # path
                False,  # not the client side
                factory,
                logging.getLogger("picows.media"),
                True,  # disconnect on an exception in a callback
                None,  # handshake timeout: the request is here already
                False,  # no pings of our own: Twilio needs none
                20.0,
                20.0,
                WSAutoPingStrategy.PING_WHEN_IDLE,
                True,  # answer Twilio's pings
                max_bytes,  # the frame limit uvicorn had
                None,
                16 * 1024,
            )
        else:
            assert AutoWebSocketsProtocol is not None
            protocol = AutoWebSocketsProtocol(
                config=self._config, server_state=self._server_state, app_state=self._app_state, **self._kwargs
            )
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        if isinstance(protocol, asyncio.BufferedProtocol):  # picows reads into its own buffer
            view = memoryview(data)
            while view:
                buffer = memoryview(protocol.get_buffer(len(view)))
                n = min(len(buffer), len(view))
                buffer[:n] = view[:n]
                protocol.buffer_updated(n)
                view = view[n:]
        else:
            protocol.data_received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        """Lost before the request came: nothing was started."""


def _runtime(config: Any) -> Runtime | None:
    state = getattr(config.app, "state", None)
    return getattr(state, "runtime", None)
