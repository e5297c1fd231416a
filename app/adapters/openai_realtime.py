"""The OpenAI Realtime adapter: a session on picows (``app.adapters.realtime_socket``, the default) or on the
openai SDK's own websocket, used raw (recv_bytes / send_raw; ``REALTIME_SOCKET=sdk``).

The SDK's own reconnect (``on_reconnecting``) is deliberately not used: it would open a fresh
server session with default config and no history. Reconnection is ours (see the resilience issue).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Literal, Protocol

from openai import AsyncOpenAI
from openai.resources.realtime.realtime import AsyncRealtimeConnection
from websockets.asyncio.client import ClientConnection
from websockets.protocol import OPEN

from app.adapters.realtime_socket import open_realtime_socket


class RealtimeUpstream(Protocol):
    async def send(self, data: bytes) -> None: ...
    async def recv(self) -> bytes: ...
    async def close(self) -> None: ...


CLOSE_TIMEOUT_S = 1.0


class OpenAIRealtimeUpstream:
    """One Realtime session over the SDK connection.

    Sends skip the SDK's ``send_raw`` (reconnect-queue bookkeeping on every message: a task lookup, queue
    checks, a context manager; ~20% of server CPU at 50 frames per second per call) and, while the socket
    takes data, websockets' own ``send`` too: its async context manager and drain cost more than framing
    the message. The frame goes through the connection's protocol object and out to the transport at
    once, exactly as ``send`` would write it. When the write buffer is full (the peer reads slowly), a
    message is being fragmented, or the connection is not open, the message takes websockets' ``send``,
    which waits for the buffer to drain or raises ConnectionClosed. ``send_raw`` is the fallback for a
    connection that is not websockets' ClientConnection.
    """

    __slots__ = ("_conn", "_raw", "_send_text")

    def __init__(self, conn: AsyncRealtimeConnection) -> None:
        self._conn = conn
        raw = getattr(conn, "_connection", None)
        if isinstance(raw, ClientConnection):
            # A closing handshake waits on the peer's close frame, which sits behind any events nobody
            # reads any more: give up (and drop the connection) after a second, not websockets' 10 s.
            raw.close_timeout = CLOSE_TIMEOUT_S
        self._send_text: Callable[..., Awaitable[None]] | None = raw.send if isinstance(raw, ClientConnection) else None
        # The synchronous path needs these attributes of websockets' asyncio Connection; without them
        # (another websockets version), every message takes ``send``.
        usable = isinstance(raw, ClientConnection) and all(
            hasattr(raw, name) for name in ("paused", "send_in_progress", "protocol", "send_data")
        )
        self._raw: ClientConnection | None = raw if usable else None

    @property
    def fast_path(self) -> bool:
        return self._send_text is not None

    @property
    def direct_path(self) -> bool:
        """Messages are framed and written without awaiting while the socket takes them."""
        return self._raw is not None

    async def send(self, data: bytes) -> None:
        raw = self._raw
        if (
            raw is not None
            and not raw.paused
            and raw.send_in_progress is None
            and raw.protocol.state is OPEN
            and not raw.transport.is_closing()
        ):
            raw.protocol.send_text(data)
            raw.send_data()
            return
        if self._send_text is not None:
            await self._send_text(data, text=True)
        else:
            await self._conn.send_raw(data.decode())

    async def recv(self) -> bytes:
        return await self._conn.recv_bytes()

    async def close(self) -> None:
        try:
            await self._conn.close()
        except Exception:  # noqa: BLE001 - closing a broken socket is best effort
            pass


RealtimeSocketKind = Literal["picows", "sdk"]


class RealtimeConnector:
    """Opens Realtime sessions; one AsyncOpenAI client per process.

    ``socket="picows"`` (the default, ``REALTIME_SOCKET``) opens the session on picows
    (``app.adapters.realtime_socket``) at the address and with the headers the SDK's client gives;
    ``"sdk"`` through the SDK's own connection (websockets)."""

    def __init__(
        self, *, api_key: str, websocket_base_url: str, model: str, socket: RealtimeSocketKind = "picows"
    ) -> None:
        self.model = model
        self.socket = socket
        self._client = AsyncOpenAI(api_key=api_key, websocket_base_url=websocket_base_url, max_retries=0)

    async def connect(self) -> RealtimeUpstream:
        if self.socket == "picows":
            return await open_realtime_socket(self._client, {"model": self.model})
        conn = await self._client.realtime.connect(model=self.model).enter()
        return OpenAIRealtimeUpstream(conn)

    async def aclose(self) -> None:
        await self._client.close()
