"""The OpenAI Realtime adapter: the openai SDK's websocket, used raw (recv_bytes / send_raw).

The SDK's own reconnect (``on_reconnecting``) is deliberately not used: it would open a fresh
server session with default config and no history. Reconnection is ours (see the resilience issue).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

from openai import AsyncOpenAI
from openai.resources.realtime.realtime import AsyncRealtimeConnection
from websockets.asyncio.client import ClientConnection


class RealtimeUpstream(Protocol):
    async def send(self, data: bytes) -> None: ...
    async def recv(self) -> bytes: ...
    async def close(self) -> None: ...


CLOSE_TIMEOUT_S = 1.0


class OpenAIRealtimeUpstream:
    """One Realtime session over the SDK connection.

    Sends go straight to the SDK's underlying websockets connection as text frames when it is
    there: the SDK's ``send_raw`` wraps every message in reconnect-queue bookkeeping (a task
    lookup, queue checks, a context manager) that we never use, and that was ~20% of server CPU at
    50 frames per second per call (docs/PERFORMANCE.md). ``send_raw`` remains the fallback.
    """

    __slots__ = ("_conn", "_send_text")

    def __init__(self, conn: AsyncRealtimeConnection) -> None:
        self._conn = conn
        raw = getattr(conn, "_connection", None)
        if isinstance(raw, ClientConnection):
            # A closing handshake waits on the peer's close frame, which sits behind any events nobody
            # reads any more: give up (and drop the connection) after a second, not websockets' 10 s.
            raw.close_timeout = CLOSE_TIMEOUT_S
        self._send_text: Callable[..., Awaitable[None]] | None = raw.send if isinstance(raw, ClientConnection) else None

    @property
    def fast_path(self) -> bool:
        return self._send_text is not None

    async def send(self, data: bytes) -> None:
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


class RealtimeConnector:
    """Opens Realtime sessions; one AsyncOpenAI client per process."""

    def __init__(self, *, api_key: str, websocket_base_url: str, model: str) -> None:
        self.model = model
        self._client = AsyncOpenAI(api_key=api_key, websocket_base_url=websocket_base_url, max_retries=0)

    async def connect(self) -> OpenAIRealtimeUpstream:
        conn = await self._client.realtime.connect(model=self.model).enter()
        return OpenAIRealtimeUpstream(conn)

    async def aclose(self) -> None:
        await self._client.close()
