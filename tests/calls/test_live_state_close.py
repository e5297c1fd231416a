"""A call's end must not wait forever on its live-state writer.

redis-py 8.1 can hand a command's result to a task that was cancelled mid-command, and the cancellation is
lost (docs/RESILIENCE.md). A 30-minute soak left 7 of 2,243 calls unfinished that way: their writer went
back to waiting on its queue, LiveState.close() waited on the writer, and the call was never archived
by its node nor removed from the node's sessions (a drain then waited for them)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from redis.asyncio import Redis

from app.adapters.call_store import CallStore
from app.calls.live import LiveState
from app.observability import Metrics

pytestmark = [pytest.mark.asyncio, pytest.mark.redis]


class CancellationSwallowingStore(CallStore):
    """A real CallStore whose event writes act as redis-py's can when cancelled mid-command: the command
    completes and returns normally, and the caller never sees the CancelledError."""

    def __init__(self, redis: Redis) -> None:
        super().__init__(redis, prefix=f"test-{uuid.uuid4().hex[:8]}")
        self.writing = asyncio.Event()
        self.reply = asyncio.Event()  # never set: the reply is "in flight" when the writer is cancelled

    async def put_event(self, call_sid: str, key: str, event: dict[str, Any]) -> None:
        self.writing.set()
        try:
            await self.reply.wait()
        except asyncio.CancelledError:
            pass  # swallowed, as the library does
        await super().put_event(call_sid, key, event)


async def test_closing_returns_and_the_writer_stops_when_redis_swallowed_its_cancellation(redis_url: str) -> None:
    redis = Redis.from_url(redis_url)
    store = CancellationSwallowingStore(redis)
    live = LiveState(store, "CA" + uuid.uuid4().hex, Metrics(), epoch=1)
    live.start()
    try:
        live.event("000001", {"kind": "barge_in"})
        await store.writing.wait()  # the write is in flight now
        async with asyncio.timeout(5):  # before the fix: forever
            await live.close()
        assert live._task is not None and live._task.done()  # it stopped at its closing check
        assert "000001" in await store.get_events_by_key(live.call_sid)  # the write landed
    finally:
        await redis.aclose()
