"""Graceful drain: on SIGTERM a node stops being ready, lets its calls finish up to a deadline, then
hands the rest over to other nodes through the resume path, and only then exits.

Handing over: the call's live state is already in Redis; the stream lets go of its lease and closes
with 1012. Twilio then runs the <Redirect> that follows <Connect> in the call's TwiML: /twilio/resume,
through the load balancer, on a ready node, which answers with a resume token; the new stream takes
the call from Redis with its transcript (the same path that survives a killed node, without waiting
for a lease to lapse).
"""

from __future__ import annotations

import asyncio
import signal
from dataclasses import dataclass
from types import FrameType
from typing import Any

import structlog
import uvicorn

from app.runtime import Runtime

log = structlog.get_logger()
HANDOVER_WAIT_S = 15.0  # after asking, how long the calls get to detach (a quiet moment, at most 5 s, + flush)


@dataclass(frozen=True, slots=True)
class DrainReport:
    active_at_start: int
    finished: int  # ended on this node during the drain
    handed_over: int  # asked to resume elsewhere
    left: int  # still here when the drain gave up waiting


async def _wait_until_empty(rt: Runtime, until: float) -> None:
    loop = asyncio.get_running_loop()
    while rt.sessions:
        remaining = until - loop.time()
        if remaining <= 0:
            return
        rt.sessions_changed.clear()
        try:
            await asyncio.wait_for(rt.sessions_changed.wait(), remaining)
        except TimeoutError:
            return


async def drain(rt: Runtime, *, deadline_s: float) -> DrainReport:
    """Stop being ready; wait up to ``deadline_s`` for calls to end; hand over the rest."""
    loop = asyncio.get_running_loop()
    rt.draining = True
    rt.metrics.draining.set(1)
    at_start = len(rt.sessions)
    finishing = {sid: p for sid, x in rt.sessions.items() if (p := getattr(x, "phase", "in call")) != "in call"}
    log.warning("drain.started", active_calls=at_start, deadline_s=deadline_s, finishing=finishing)
    await _wait_until_empty(rt, loop.time() + deadline_s)
    finished = at_start - len(rt.sessions)
    remaining = list(rt.sessions.values())
    for session in remaining:
        session.request_handover()
    await _wait_until_empty(rt, loop.time() + HANDOVER_WAIT_S)
    if rt.sessions:
        log.error(
            "drain.calls_left",
            call_sids=sorted(rt.sessions),
            phases={sid: getattr(session, "phase", "?") for sid, session in rt.sessions.items()},
        )
    report = DrainReport(at_start, finished, len(remaining), len(rt.sessions))
    log.warning("drain.finished", **{k: getattr(report, k) for k in report.__slots__})
    return report


class DrainingServer(uvicorn.Server):
    """uvicorn, but the first SIGTERM drains before the usual graceful shutdown."""

    def __init__(self, config: uvicorn.Config, app: Any, deadline_s: float) -> None:
        super().__init__(config)
        self._app = app
        self._deadline_s = deadline_s
        self._drain_task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def startup(self, sockets: list[Any] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().startup(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        runtime: Runtime | None = getattr(self._app.state, "runtime", None)
        if sig == signal.SIGTERM and self._drain_task is None and runtime is not None and self._loop is not None:
            self._captured_signals.append(sig)  # re-raised once shut down, as uvicorn does
            self._loop.call_soon_threadsafe(self._start_drain, runtime)
            return
        super().handle_exit(sig, frame)  # SIGINT, a second SIGTERM, or before startup: as usual

    def _start_drain(self, runtime: Runtime) -> None:
        async def run() -> None:
            try:
                await drain(runtime, deadline_s=self._deadline_s)
            finally:
                self.should_exit = True

        self._drain_task = asyncio.create_task(run(), name="drain")
