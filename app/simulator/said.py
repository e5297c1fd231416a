"""The simulated caller tells the emulator what it is about to say (``app.emulator.said``): best effort, off
the frame path (a queue and a task), so that the emulator's "transcript" is the caller's words."""

from __future__ import annotations

import asyncio
from contextlib import suppress

import orjson
import structlog
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import WebSocketException

log = structlog.get_logger()

DEFAULT_EMULATOR = "ws://127.0.0.1:8765/v1"  # scripts/dev's emulator


def said_url(emulator: str) -> str:
    """The control channel's address from the emulator's Realtime base URL (ws://host:port/v1)."""
    return emulator.rstrip("/").removesuffix("/realtime").removesuffix("/v1") + "/v1/emulator/said"


class SaidTeller:
    def __init__(self, emulator: str) -> None:
        self.url = said_url(emulator)
        self._queue: asyncio.Queue[tuple[str, float] | None] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self.connected = False

    async def open(self) -> bool:
        """Connect; False (and nothing told) when no emulator listens there, e.g. against the real API."""
        try:
            ws = await asyncio.wait_for(connect(self.url, open_timeout=2), 3)
        except (OSError, TimeoutError, WebSocketException):
            return False
        self.connected = True
        self._task = asyncio.create_task(self._send(ws))
        return True

    def tell(self, text: str, seconds: float) -> None:
        """Called as the caller starts an utterance (from the frame loop: only a queue put)."""
        if self.connected and text.strip():
            self._queue.put_nowait((text, seconds))

    async def _send(self, ws: ClientConnection) -> None:
        try:
            while (item := await self._queue.get()) is not None:
                await ws.send(orjson.dumps({"text": item[0], "seconds": round(item[1], 3)}).decode())
        except WebSocketException as exc:
            log.warning("simulator.said_lost", error=repr(exc))
        finally:
            with suppress(WebSocketException):
                await ws.close()

    async def close(self) -> None:
        if self._task is not None:
            self._queue.put_nowait(None)
            with suppress(asyncio.CancelledError):
                await self._task
