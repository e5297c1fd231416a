"""A small TCP load balancer for tests: least connections over the backends whose /readyz answers 200.

Like a real load balancer with health checks, it sends each new connection only to a ready node; it
checks readiness as each connection arrives (so there is no polling interval to wait out). It remembers
which backend each client connection went to.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import httpx


class ReadyProxy:
    def __init__(self, backends: list[str]) -> None:
        self.backends = backends
        self._next = itertools.cycle(range(len(backends)))
        self.open: dict[str, int] = dict.fromkeys(backends, 0)  # connections open to each backend
        self.routes: dict[tuple[str, int], str] = {}  # client (host, port) -> backend base URL
        self.refused = 0  # connections no ready backend could take
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def _ready(self, backend: str) -> bool:
        try:
            async with httpx.AsyncClient(timeout=30) as client:  # a node just started may take seconds to answer
                return (await client.get(backend + "/readyz")).status_code == 200
        except httpx.HTTPError:
            return False

    async def _pick(self) -> str | None:
        """The ready backend with the fewest open connections (ties: round robin)."""
        start = next(self._next)
        order = self.backends[start:] + self.backends[:start]
        for backend in sorted(order, key=lambda b: self.open[b]):
            if await self._ready(backend):
                return backend
        return None

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            with contextlib.suppress(ConnectionError, OSError):
                writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        backend = await self._pick()
        if backend is None:
            self.refused += 1
            writer.close()
            return
        peer = writer.get_extra_info("peername")
        self.routes[(peer[0], peer[1])] = backend
        parts = urlsplit(backend)
        try:
            up_reader, up_writer = await asyncio.open_connection(parts.hostname, parts.port)
        except OSError:
            self.refused += 1
            writer.close()
            return
        self.open[backend] += 1
        try:
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        finally:
            self.open[backend] -= 1

    def _spawn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.ensure_future(self._handle(reader, writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @contextlib.asynccontextmanager
    async def serve(self) -> AsyncIterator[str]:
        self._server = await asyncio.start_server(self._spawn, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            self._server.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
