"""Write-through of a call's live state to Redis, and node-wide notice of stream takeovers.

Writes are queued and applied in order by one task per call, retried with backoff while Redis is
unreachable: the call never waits for Redis, and no transcript line is dropped (the archive also
merges what the process still holds in memory).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from typing import Any

import structlog
from redis.exceptions import RedisError

from app.adapters.call_store import CallStore
from app.core.bridge import TranscriptLine
from app.observability import Metrics

log = structlog.get_logger()

RETRY_BASE_S = 0.1
RETRY_MAX_S = 2.0
STOP_TIMEOUT_S = 2.0  # a task cancelled inside a Redis command may not stop (redis-py can swallow it)


async def stop_task(task: asyncio.Task[None] | None, *, name: str, timeout_s: float = STOP_TIMEOUT_S) -> None:
    """Cancel ``task`` and wait for it, but not forever.

    redis-py 8.1 can return a command's result to a task cancelled mid-command, losing the cancellation
    (docs/RESILIENCE.md). A loop that then waits on a queue would keep its stopper waiting for good, and a
    call's end (or a node's shutdown) with it. The loops below also check a closing flag."""
    if task is None or task.done():
        return
    task.cancel()
    _done, pending = await asyncio.wait([task], timeout=timeout_s)
    if pending:
        log.warning("task.stop_timed_out", task=name, timeout_s=timeout_s)


def line_to_dict(line: TranscriptLine) -> dict[str, Any]:
    return dataclasses.asdict(line)


def line_from_dict(data: dict[str, Any]) -> TranscriptLine:
    return TranscriptLine(
        seq=int(data["seq"]),
        speaker=str(data["speaker"]),
        text=str(data["text"]),
        offset_ms=int(data["offset_ms"]),
        interrupted=bool(data.get("interrupted", False)),
        item_id=data.get("item_id"),
    )


class LiveState:
    """One call's queued writes to the CallStore."""

    def __init__(self, store: CallStore, call_sid: str, metrics: Metrics, *, epoch: int) -> None:
        self.store = store
        self.call_sid = call_sid
        self.epoch = epoch
        self.metrics = metrics
        self._queue: asyncio.Queue[tuple[str, Any, Any]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.failures = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"live-state-{self.call_sid}")

    def meta(self, values: dict[str, Any]) -> None:
        self._queue.put_nowait(("meta", values, None))

    def line(self, line: TranscriptLine) -> None:
        self._queue.put_nowait(("line", f"{self.epoch:06d}-{line.seq:06d}", line_to_dict(line)))

    def event(self, key: str, event: dict[str, Any]) -> None:
        self._queue.put_nowait(("event", key, event))

    @property
    def pending(self) -> int:
        return self._queue.qsize()

    async def flush(self, timeout_s: float) -> bool:
        """Wait until every queued write landed; False if Redis stayed away for ``timeout_s``."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._queue.join()
            return True
        except TimeoutError:
            return False

    async def close(self) -> None:
        """Stop the writer (after ``flush``: what is still queued is dropped). Bounded in time."""
        self._closing = True
        await stop_task(self._task, name="live-state")

    async def _apply(self, kind: str, a: Any, b: Any) -> None:
        if kind == "meta":
            await self.store.put_meta(self.call_sid, a)
        elif kind == "line":
            await self.store.put_line(self.call_sid, a, b)
        else:
            await self.store.put_event(self.call_sid, a, b)

    async def _run(self) -> None:
        while not self._closing:
            kind, a, b = await self._queue.get()
            delay = RETRY_BASE_S
            while not self._closing:
                try:
                    await self._apply(kind, a, b)
                    break
                except (RedisError, OSError) as exc:
                    self.failures += 1
                    self.metrics.live_write_retries.inc()
                    if self.failures == 1 or self.failures % 50 == 0:
                        log.warning("live_state.write_retry", kind=kind, error=repr(exc), failures=self.failures)
                    await asyncio.sleep(delay)
                    delay = min(RETRY_MAX_S, delay * 2)
            self._queue.task_done()


class TakeoverListener:
    """One pub/sub subscription per node: tells a local stream that another stream took its call."""

    def __init__(self, store: CallStore) -> None:
        self.store = store
        self._callbacks: dict[str, Callable[[str], None]] = {}
        self._task: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()

    def register(self, call_sid: str, callback: Callable[[str], None]) -> None:
        self._callbacks[call_sid] = callback

    def unregister(self, call_sid: str) -> None:
        self._callbacks.pop(call_sid, None)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="takeover-listener")

    async def wait_subscribed(self, timeout_s: float = 5.0) -> None:
        async with asyncio.timeout(timeout_s):
            await self._subscribed.wait()

    async def stop(self) -> None:
        await stop_task(self._task, name="takeover-listener")

    async def _run(self) -> None:
        pattern = self.store.takeover_channel("*")
        delay = RETRY_BASE_S
        while True:
            try:
                async with self.store.redis.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.psubscribe(pattern)
                    self._subscribed.set()
                    delay = RETRY_BASE_S
                    async for message in pubsub.listen():
                        if message.get("type") != "pmessage":
                            continue
                        channel = message["channel"]
                        channel = channel.decode() if isinstance(channel, bytes) else str(channel)
                        call_sid = channel.split(":")[-2]
                        data = message.get("data")
                        holder = data.decode() if isinstance(data, bytes) else str(data)
                        callback = self._callbacks.get(call_sid)
                        if callback is not None:
                            callback(holder)
            except (RedisError, OSError) as exc:
                self._subscribed.clear()
                log.warning("takeover_listener.reconnecting", error=repr(exc))
                await asyncio.sleep(delay)
                delay = min(RETRY_MAX_S, delay * 2)
