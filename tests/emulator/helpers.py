"""Emulator test helpers: a client on the real openai SDK connection, test audio."""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import numpy as np
import orjson
from openai import AsyncOpenAI
from openai.resources.realtime.realtime import AsyncRealtimeConnection
from openai.types.realtime import RealtimeServerEvent
from pydantic import TypeAdapter

from app.emulator.server import EmulatorConfig, RealtimeEmulator

SERVER_EVENT = TypeAdapter(RealtimeServerEvent)
RATE = 24000

FULL_SERVER_VAD: dict[str, Any] = {
    "type": "server_vad",
    "threshold": 0.5,
    "prefix_padding_ms": 300,
    "silence_duration_ms": 500,
    "create_response": True,
    "interrupt_response": True,
}


def voiced(ms: int, *, rate: int = RATE, f0: float = 150.0) -> np.ndarray:
    """A steady voiced sound (harmonics of ``f0``), far above the VAD threshold."""
    t = np.arange(rate * ms // 1000) / rate
    wave = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 6))
    return np.asarray(wave * 8000, dtype=np.int16)


def silence(ms: int, *, rate: int = RATE) -> np.ndarray:
    return np.zeros(rate * ms // 1000, dtype=np.int16)


class RealtimeTestClient:
    """The server's view of the SDK connection: raw frames in, orjson out, shapes validated."""

    def __init__(self, connection: AsyncRealtimeConnection) -> None:
        self.connection = connection
        self.events: list[dict[str, Any]] = []

    async def send(self, event: dict[str, Any]) -> None:
        await self.connection.send_raw(orjson.dumps(event))

    async def send_audio(self, audio: bytes, *, chunk: int = 960) -> None:
        for start in range(0, len(audio), chunk):
            payload = base64.b64encode(audio[start : start + chunk]).decode()
            await self.send({"type": "input_audio_buffer.append", "audio": payload})

    async def recv(self, timeout: float = 5.0) -> dict[str, Any]:
        raw = await asyncio.wait_for(self.connection.recv_bytes(), timeout)
        event: dict[str, Any] = orjson.loads(raw)
        SERVER_EVENT.validate_python(event)  # GA shape per the installed SDK
        assert isinstance(event.get("event_id"), str) and event["event_id"].startswith("event_")
        self.events.append(event)
        return event

    async def recv_until(
        self, match: str | Callable[[dict[str, Any]], bool], timeout: float = 5.0
    ) -> list[dict[str, Any]]:
        """Events up to and including the first match."""
        predicate = (lambda e: e["type"] == match) if isinstance(match, str) else match
        got: list[dict[str, Any]] = []
        while True:
            event = await self.recv(timeout)
            got.append(event)
            if predicate(event):
                return got

    async def session_update(self, session: dict[str, Any]) -> dict[str, Any]:
        await self.send({"type": "session.update", "session": {"type": "realtime", **session}})
        return (await self.recv_until(lambda e: e["type"] in ("session.updated", "error")))[-1]


@contextlib.asynccontextmanager
async def connect(emulator: RealtimeEmulator, model: str = "gpt-realtime") -> AsyncIterator[RealtimeTestClient]:
    client = AsyncOpenAI(api_key="sk-test", websocket_base_url=emulator.url)
    connection = await client.realtime.connect(model=model).enter()
    try:
        test_client = RealtimeTestClient(connection)
        created = await test_client.recv()
        assert created["type"] == "session.created"
        yield test_client
    finally:
        with contextlib.suppress(Exception):
            await connection.close()
        await client.close()


def fast_config(**overrides: Any) -> EmulatorConfig:
    """Deterministic synthetic voice, no pacing: tests run as fast as the loop allows."""
    return EmulatorConfig(**{"tts": "synthetic", "realtime_pacing": False, **overrides})
