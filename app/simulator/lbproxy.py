"""A small local TCP load balancer: least connections over the backends whose /readyz answers 200.

The drain test (tests/calls/test_drain_e2e.py) and scripts/soak.py put nodes behind it. Like a real load
balancer with health checks, it sends each new connection only to a ready backend and remembers which
backend each client connection went to. Readiness is checked either as each connection arrives
(``check_interval_s=0``, what the tests use: nothing to wait out) or by polling every backend's
/readyz every ``check_interval_s`` seconds (what a load test wants: one health check per interval, not
one per call). When polling, a backend that answers anything but 200 (a draining node says 503) is out
at once, but one that does not answer in time (a busy node) is out only after ``fall`` checks in a row
failed, as load balancers do (HAProxy's default is 3); a single good answer brings it back.

    .venv/bin/python -m app.simulator.lbproxy --port 9000 --backend http://127.0.0.1:8001 --backend http://127.0.0.1:8002

scripts/soak.py runs it in a child process (``proxy_main``) and asks it for its counters over a pipe.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import sys
from collections.abc import AsyncIterator, Sequence
from typing import Any
from urllib.parse import urlsplit

import httpx


class ReadyProxy:
    def __init__(
        self,
        backends: list[str],
        *,
        check_interval_s: float = 0.0,
        check_timeout_s: float = 5.0,
        fall: int = 3,
        half_close_timeout_s: float = 10.0,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.backends = backends
        self.check_interval_s = check_interval_s
        self.check_timeout_s = check_timeout_s
        self.fall = fall
        self.half_close_timeout_s = half_close_timeout_s
        self.host = host
        self.port = port
        self._next = itertools.cycle(range(len(backends)))
        self.open: dict[str, int] = dict.fromkeys(backends, 0)  # connections open to each backend
        self.accepted: dict[str, int] = dict.fromkeys(backends, 0)  # connections ever sent to each backend
        self.ready: dict[str, bool] = dict.fromkeys(backends, False)  # last health check (polling mode)
        self.routes: dict[tuple[str, int], str] = {}  # client (host, port) -> backend base URL
        self.remember_routes = True  # a long load test turns this off (the map would only grow)
        self.refused = 0  # connections no ready backend could take
        self.health_checks = 0
        self.reset_connections = 0  # spliced connections ended by a reset (one side broke, or a half-close timed out)
        self.health_check_failures: dict[str, int] = dict.fromkeys(backends, 0)  # timeouts and errors, total
        self.marked_down: dict[str, int] = dict.fromkeys(backends, 0)  # times a backend went out of rotation
        self._failed_in_row: dict[str, int] = dict.fromkeys(backends, 0)
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._http: httpx.AsyncClient | None = None
        self._poller: asyncio.Task[None] | None = None

    async def _check(self, backend: str) -> bool:
        """Per-connection mode: is this backend ready right now?"""
        self.health_checks += 1
        try:
            async with httpx.AsyncClient(timeout=30) as client:  # a node just started may take seconds to answer
                return (await client.get(backend + "/readyz")).status_code == 200
        except httpx.HTTPError:
            return False

    async def _poll_once(self) -> None:
        assert self._http is not None
        for backend, outcome in zip(
            self.backends,
            await asyncio.gather(*(self._http.get(b + "/readyz") for b in self.backends), return_exceptions=True),
            strict=True,
        ):
            self.health_checks += 1
            if isinstance(outcome, httpx.Response):
                self._failed_in_row[backend] = 0
                up = outcome.status_code == 200
            elif isinstance(outcome, httpx.HTTPError):  # no answer in time, refused, reset: a busy or dead node
                self.health_check_failures[backend] += 1
                self._failed_in_row[backend] += 1
                up = self.ready[backend] and self._failed_in_row[backend] < self.fall
            else:
                raise outcome
            if self.ready[backend] and not up:
                self.marked_down[backend] += 1
            self.ready[backend] = up

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.check_interval_s)
            await self._poll_once()

    async def _pick(self) -> str | None:
        """The ready backend with the fewest open connections (ties: round robin)."""
        start = next(self._next)
        order = self.backends[start:] + self.backends[:start]
        for backend in sorted(order, key=lambda b: self.open[b]):
            if self.check_interval_s > 0:
                if self.ready[backend]:
                    return backend
            elif await self._check(backend):
                return backend
        return None

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Copy until EOF (True: pass the half-close on) or a broken connection (False)."""
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            return False
        with contextlib.suppress(ConnectionError, OSError, RuntimeError):
            if writer.can_write_eof():
                writer.write_eof()  # half-close: the other direction may still be talking
        return True

    async def _splice(
        self,
        client: tuple[asyncio.StreamReader, asyncio.StreamWriter],
        up: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    ) -> None:
        """Both directions until both ended. Like a load balancer's client-fin/server-fin timeouts: once
        one direction ended with EOF, the other gets ``half_close_timeout_s``; once one broke, both are
        reset at once, so neither end keeps writing into a connection nobody reads."""
        a = asyncio.ensure_future(self._pipe(client[0], up[1]))
        b = asyncio.ensure_future(self._pipe(up[0], client[1]))
        try:
            done, pending = await asyncio.wait({a, b}, return_when=asyncio.FIRST_COMPLETED)
            if pending and all(t.result() for t in done):
                done, pending = await asyncio.wait(pending, timeout=self.half_close_timeout_s)
            if pending:
                self.reset_connections += 1
                for w in (client[1], up[1]):
                    w.transport.abort()
        finally:
            for t in (a, b):
                t.cancel()
            await asyncio.gather(a, b, return_exceptions=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        backend = await self._pick()
        if backend is None:
            self.refused += 1
            writer.close()
            return
        peer = writer.get_extra_info("peername")
        if self.remember_routes:
            self.routes[(peer[0], peer[1])] = backend
        parts = urlsplit(backend)
        try:
            up_reader, up_writer = await asyncio.open_connection(parts.hostname, parts.port)
        except OSError:
            self.refused += 1
            writer.close()
            return
        self.open[backend] += 1
        self.accepted[backend] += 1
        try:
            await self._splice((reader, writer), (up_reader, up_writer))
        finally:
            self.open[backend] -= 1
            for w in (writer, up_writer):
                with contextlib.suppress(ConnectionError, OSError, RuntimeError):
                    w.close()

    def _spawn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.ensure_future(self._handle(reader, writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def stats(self) -> dict[str, Any]:
        return {
            "open": dict(self.open),
            "accepted": dict(self.accepted),
            "ready": dict(self.ready),
            "refused": self.refused,
            "health_checks": self.health_checks,
            "health_check_failures": dict(self.health_check_failures),
            "marked_down": dict(self.marked_down),
            "reset_connections": self.reset_connections,
        }

    @contextlib.asynccontextmanager
    async def serve(self) -> AsyncIterator[str]:
        if self.check_interval_s > 0:
            # no keep-alive: a fresh connection per check, as a load balancer's health checker opens
            self._http = httpx.AsyncClient(
                timeout=self.check_timeout_s, limits=httpx.Limits(max_keepalive_connections=0)
            )
            await self._poll_once()  # the first round of checks before accepting anything
            self._poller = asyncio.create_task(self._poll())
        self._server = await asyncio.start_server(self._spawn, self.host, self.port, backlog=1024)
        port = self._server.sockets[0].getsockname()[1]
        try:
            yield f"http://{self.host}:{port}"
        finally:
            self._server.close()
            if self._poller is not None:
                self._poller.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._poller
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            if self._http is not None:
                await self._http.aclose()


def proxy_main(conn: Any, backends: list[str], check_interval_s: float, cpus: set[int] | None = None) -> None:
    """Child-process entry (multiprocessing, spawn): serve until told "stop"; answer "stats"."""
    import os

    if cpus:
        os.sched_setaffinity(0, cpus)
    with contextlib.suppress(ImportError):  # a proxy measures nothing itself: uvloop is only cheaper
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())

    async def run() -> None:
        proxy = ReadyProxy(backends, check_interval_s=check_interval_s)
        proxy.remember_routes = False
        async with proxy.serve() as url:
            conn.send(("ready", url))
            loop = asyncio.get_running_loop()
            while True:
                command = await loop.run_in_executor(None, conn.recv)
                if command == "stats":
                    conn.send(("stats", proxy.stats()))
                elif command == "stop":
                    conn.send(("stats", proxy.stats()))
                    break

    asyncio.run(run())


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--backend", action="append", required=True, help="http://host:port, repeatable")
    ap.add_argument("--check-interval", type=float, default=1.0, help="poll /readyz every N s (0: per connection)")
    args = ap.parse_args(argv)

    async def run() -> None:
        proxy = ReadyProxy(args.backend, check_interval_s=args.check_interval, host=args.host, port=args.port)
        proxy.remember_routes = False
        async with proxy.serve() as url:
            print(f"listening on {url}, backends {args.backend}", flush=True)
            await asyncio.Event().wait()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
