"""switchboard_event_loop_lag_seconds: how late the node's event loop runs a timer."""

from __future__ import annotations

import asyncio
import time

import pytest
from prometheus_client import CollectorRegistry, Histogram

from app.observability import watch_event_loop_lag

pytestmark = pytest.mark.asyncio


def observed(hist: Histogram) -> tuple[float, float]:
    samples = {s.name: s.value for m in hist.collect() for s in m.samples}
    return samples["lag_seconds_count"], samples["lag_seconds_sum"]


async def test_a_blocked_loop_shows_up_as_lag() -> None:
    hist = Histogram("lag_seconds", "test", registry=CollectorRegistry())
    watcher = asyncio.create_task(watch_event_loop_lag(hist, interval_s=0.01))
    try:
        await asyncio.sleep(0)  # the watcher is now waiting on its 10 ms timer
        time.sleep(0.12)  # the stimulus: something holds the event loop for 120 ms
        while observed(hist)[0] < 1:  # the watcher's first wake-up, however late
            await asyncio.sleep(0.001)
        count, total = observed(hist)
        assert count >= 1
        assert total >= 0.1  # the 120 ms block less its 10 ms timer, at least
    finally:
        watcher.cancel()
