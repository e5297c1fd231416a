"""A Realtime session's WebSocket on picows: framing, masking and parsing in C, a send that writes at once.

The openai SDK's connection runs on websockets, whose per-message work (an async context manager per
send, a drain, an assembler and a queue per received message) was about a fifth of a node's CPU at 100
calls. picows calls back per frame and writes a frame straight to the socket. The session's address and
headers still come from the SDK's client (its ``websocket_base_url``, ``auth_headers`` and
``default_headers``): what the service sees is what the SDK would send.

``recv`` hands out whole text messages in order; ``send`` writes at once while the socket takes data and
waits, like websockets' ``send``, once the transport has paused writing (the peer reads slowly). A lost or
closed connection raises websockets' ``ConnectionClosed`` with the close frame received, as the SDK's
connection did, so the call's code reads the loss the same way from either adapter.
"""

from __future__ import annotations

import asyncio
import functools
import ssl
import urllib.parse
from typing import Any

from openai import AsyncOpenAI
from picows import WSTransport, ws_connect
from websockets.exceptions import ConnectionClosed
from websockets.frames import Close

from app.adapters.picows_socket import MessageSocket

HANDSHAKE_TIMEOUT_S = 10.0
CLOSE_TIMEOUT_S = 1.0
MAX_MESSAGE_BYTES = 64 * 1024 * 1024  # a whole response's audio can come as one message; none reaches this


class RealtimeSocket(MessageSocket):
    """One Realtime session's socket (``RealtimeUpstream``)."""

    text_only = True

    def __init__(self) -> None:
        super().__init__()
        self._disconnected = asyncio.get_running_loop().create_future()

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        super().on_ws_disconnected(transport)
        if not self._disconnected.done():
            self._disconnected.set_result(None)

    def _lost(self) -> ConnectionClosed:
        code = self.close_code
        return ConnectionClosed(Close(code, self.close_reason) if code is not None else None, None)

    async def recv(self) -> bytes:
        message = await self._next()
        if message is None:
            raise self._lost()
        return message

    async def send(self, data: bytes) -> None:
        await self._wait_writable()
        if not self.send_now(data):
            raise self._lost()

    async def close(self) -> None:
        transport = self._transport
        if transport is None:
            return
        self._closed = True
        self._send_close(1000)
        transport.disconnect()
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                await asyncio.shield(self._disconnected)
        except TimeoutError:
            transport.underlying_transport.abort()


def session_address(client: AsyncOpenAI, query: dict[str, str]) -> tuple[str, dict[str, str]]:
    """The session's URL and headers, as the SDK's own ``realtime.connect`` builds them."""
    base = str(client.websocket_base_url or client.base_url)
    parts = urllib.parse.urlsplit(base)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    path = parts.path.rstrip("/") + "/realtime"
    params = urllib.parse.parse_qsl(parts.query) + list(query.items())
    url = urllib.parse.urlunsplit((scheme, parts.netloc, path, urllib.parse.urlencode(params), ""))
    headers: dict[str, str] = {}
    for header_set in (client.auth_headers, client.default_headers):
        for name, value in header_set.items():
            if isinstance(value, str):
                headers[name] = value
    return url, headers


@functools.cache
def tls_context() -> ssl.SSLContext:
    """One verifying TLS context for every session: making one loads the CA bundle (tens of ms of CPU on the
    event loop), which asyncio would otherwise do again for each call's session."""
    return ssl.create_default_context()


async def open_realtime_socket(client: AsyncOpenAI, query: dict[str, str]) -> RealtimeSocket:
    url, headers = session_address(client, query)
    kwargs: dict[str, Any] = {}
    if url.startswith("wss:"):
        kwargs["ssl_context"] = tls_context()
    _, listener = await ws_connect(
        RealtimeSocket,
        url,
        extra_headers=headers,
        websocket_handshake_timeout=HANDSHAKE_TIMEOUT_S,
        max_frame_size=MAX_MESSAGE_BYTES,
        logger_name="realtime",
        use_aiofastnet=False,
        **kwargs,
    )
    assert isinstance(listener, RealtimeSocket)
    return listener
