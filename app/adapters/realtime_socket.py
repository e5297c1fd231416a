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
import ssl
import urllib.parse
from collections import deque
from collections.abc import Callable
from typing import Any

from openai import AsyncOpenAI
from picows import WSCloseCode, WSFrame, WSListener, WSMsgType, WSTransport, ws_connect
from websockets.exceptions import ConnectionClosed
from websockets.frames import Close

HANDSHAKE_TIMEOUT_S = 10.0
CLOSE_TIMEOUT_S = 1.0
MAX_MESSAGE_BYTES = 64 * 1024 * 1024  # a whole response's audio can come as one message; none reaches this
_TEXT = WSMsgType.TEXT
_BINARY = WSMsgType.BINARY
_CONTINUATION = WSMsgType.CONTINUATION
_CLOSE = WSMsgType.CLOSE


class RealtimeSocket(WSListener):
    """One Realtime session's socket (``RealtimeUpstream``)."""

    def __init__(self) -> None:
        self._transport: WSTransport | None = None
        self._socket: asyncio.Transport | None = None
        self._messages: deque[bytes] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._fragments: list[bytes] = []
        self._fragment_type: WSMsgType | None = None
        self._paused = False
        self._resumed: asyncio.Future[None] | None = None
        self._closed = False
        self._rcvd: Close | None = None
        self._disconnected = asyncio.get_running_loop().create_future()
        self._failure: BaseException | None = None
        # Set by the call: takes a message at once, in picows' callback, while the reader waits with nothing
        # queued (so order holds); True when it was handled there, False to queue it for ``recv`` as usual.
        self.fast: Callable[[bytes], bool] | None = None

    # -- picows' callbacks ---------------------------------------------------------------------

    def on_ws_connected(self, transport: WSTransport) -> None:
        self._transport = transport
        self._socket = transport.underlying_transport

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        kind = frame.msg_type
        if kind is _TEXT and frame.fin:  # nearly every message: one whole frame
            data = frame.get_payload_as_bytes()
            fast = self.fast
            waiter = self._waiter
            if fast is not None and waiter is not None and not waiter.done() and not self._messages:
                try:
                    if fast(data):
                        return
                except Exception as exc:  # noqa: BLE001 - raised to the reader, as if it had handled it
                    self._failure = exc
                    data = b""
            self._messages.append(data)
        elif kind is _TEXT or kind is _BINARY:
            self._fragments = [frame.get_payload_as_bytes()]
            self._fragment_type = kind
            return
        elif kind is _CONTINUATION:
            if self._fragment_type is None:
                return
            self._fragments.append(frame.get_payload_as_bytes())
            if not frame.fin:
                return
            whole = b"".join(self._fragments)
            is_text = self._fragment_type is _TEXT
            self._fragments, self._fragment_type = [], None
            if not is_text:
                return  # the Realtime protocol is text; binary messages are not events
            self._messages.append(whole)
        elif kind is _CLOSE:
            self._rcvd = Close(frame.get_close_code().value, frame.get_close_reason())
            self._closed = True
            transport.send_close(frame.get_close_code(), frame.get_close_message())
            transport.disconnect()
        else:  # binary (one frame), pong: nothing the session uses
            return
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self._closed = True
        for future in (self._waiter, self._resumed):
            if future is not None and not future.done():
                future.set_result(None)
        self._waiter = self._resumed = None
        if not self._disconnected.done():
            self._disconnected.set_result(None)

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        resumed, self._resumed = self._resumed, None
        if resumed is not None and not resumed.done():
            resumed.set_result(None)

    # -- RealtimeUpstream ------------------------------------------------------------------------

    def _lost(self) -> ConnectionClosed:
        return ConnectionClosed(self._rcvd, None)

    async def recv(self) -> bytes:
        messages = self._messages
        while not messages:
            if self._closed:
                raise self._lost()
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
        if self._failure is not None:
            failure, self._failure = self._failure, None
            messages.clear()
            raise failure
        return messages.popleft()

    @property
    def writable(self) -> bool:
        """A message sent now goes out at once (``send_now``)."""
        socket = self._socket
        return not self._paused and not self._closed and socket is not None and not socket.is_closing()

    def send_now(self, data: bytes) -> bool:
        """Write a message now if the socket takes it (False: it did not, nothing was sent)."""
        transport, socket = self._transport, self._socket
        if self._paused or self._closed or transport is None or socket is None or socket.is_closing():
            return False
        transport.send(_TEXT, data)
        return True

    async def send(self, data: bytes) -> None:
        while self._paused and not self._closed:
            if self._resumed is None:
                self._resumed = asyncio.get_running_loop().create_future()
            await self._resumed
        transport, socket = self._transport, self._socket
        if self._closed or transport is None or socket is None or socket.is_closing():
            # (A write already failed: the loss is on its way to ``on_ws_disconnected``; nothing more goes out.)
            raise self._lost()
        transport.send(_TEXT, data)

    async def close(self) -> None:
        transport = self._transport
        if transport is None:
            return
        if not self._closed:
            self._closed = True
            transport.send_close(WSCloseCode.OK)
        transport.disconnect()  # picows flushes the close frame, then closes the socket
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


async def open_realtime_socket(client: AsyncOpenAI, query: dict[str, str]) -> RealtimeSocket:
    url, headers = session_address(client, query)
    kwargs: dict[str, Any] = {}
    if url.startswith("wss:"):
        kwargs["ssl_context"] = ssl.create_default_context()
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
