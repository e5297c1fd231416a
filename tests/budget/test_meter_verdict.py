"""A call's verdict, asked for on every tick: drawn again when what it depends on changes, and only then."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import pytest_asyncio
from redis.asyncio import Redis

from app.budget.ledger import BudgetLedger
from app.budget.policy import Action
from app.budget.pricing import DEFAULT_PRICES
from app.budget.service import Budget, CallMeter
from app.db import make_engine, make_sessionmaker
from tests.support import make_settings

pytestmark = pytest.mark.asyncio


@pytest_asyncio.fixture
async def meter(redis_url: str, tmp_path: Path) -> AsyncIterator[CallMeter]:
    redis = Redis.from_url(redis_url)
    settings = make_settings(tmp_path, realtime_url="ws://127.0.0.1:9/v1", budget_per_call_usd=0.01)
    engine = make_engine(settings.effective_database_url)
    budget = Budget(
        settings=settings,
        ledger=BudgetLedger(redis, prefix=f"t{uuid.uuid4().hex[:8]}"),
        sessionmaker=make_sessionmaker(engine),  # the alerts are recorded there
        prices=DEFAULT_PRICES,
    )
    try:
        yield budget.meter(
            call_sid="CA" + uuid.uuid4().hex, campaign_id=None, direction="inbound", model="gpt-realtime"
        )
    finally:
        await redis.aclose()
        await engine.dispose()


async def test_the_verdict_follows_the_spend_and_the_clock_of_a_wrap_up(meter: CallMeter) -> None:
    now = datetime.now(UTC)
    first = await meter.verdict(10.0)
    assert first.action is Action.ok
    assert await meter.verdict(10.25) is first  # nothing changed: the same verdict, not drawn again
    await meter.estimate(6.0, 6.0, now)  # 96% of the $0.01 cap
    wrap = await meter.verdict(10.5)
    assert wrap.action is Action.wrap_up and wrap is not first
    # Wrapping up, the verdict depends on the time since the wrap-up began: drawn on every tick.
    meter.wrap_up_started_s = 10.5
    await meter.estimate(0.3, 0.3, now)  # at the cap (100.8%), within the runaway margin
    assert (await meter.verdict(11.0)).action is Action.wrap_up
    stopped = await meter.verdict(10.5 + meter.budget.hard_stop_grace_s + 0.25)
    assert stopped.action is Action.hard_stop
