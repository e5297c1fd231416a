"""The OpenAI Realtime adapter: the openai SDK's websocket, used raw (recv_bytes / send_raw).

The SDK's own reconnect (``on_reconnecting``) is deliberately not used: it would open a fresh
server session with default config and no history. Reconnection is ours (see the resilience issue).
"""

from __future__ import annotations

from typing import Protocol

from openai import AsyncOpenAI
from openai.resources.realtime.realtime import AsyncRealtimeConnection


class RealtimeUpstream(Protocol):
    async def send(self, data: bytes) -> None: ...
    async def recv(self) -> bytes: ...
    async def close(self) -> None: ...


class OpenAIRealtimeUpstream:
    """One Realtime session over the SDK connection."""

    __slots__ = ("_conn",)

    def __init__(self, conn: AsyncRealtimeConnection) -> None:
        self._conn = conn

    async def send(self, data: bytes) -> None:
        await self._conn.send_raw(data)

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
