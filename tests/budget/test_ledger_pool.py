"""The day's budget as a pool of closing reserves, settled by one Lua script on a real Redis."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import date

import pytest
import pytest_asyncio
from redis.asyncio import Redis

from app.budget.ledger import BudgetLedger
from app.budget.policy import Action, Caps, Spend, admit_call, check_call

pytestmark = pytest.mark.asyncio
DAY = date(2026, 11, 21)
CAP = 100_000  # $0.10


@pytest_asyncio.fixture
async def ledger(redis_url: str) -> AsyncIterator[BudgetLedger]:
    redis = Redis.from_url(redis_url)
    try:
        yield BudgetLedger(redis, prefix=f"t{uuid.uuid4().hex[:8]}")
    finally:
        await redis.aclose()


async def charge(
    ledger: BudgetLedger, sid: str, micros: int, reserve: int | None = 10_000
) -> tuple[int, int, int, int]:
    t = await ledger.charge(call_sid=sid, day=DAY, campaign_id=None, micros=micros, day_cap=CAP, reserve=reserve)
    assert t.reserve_left is not None
    return t.day, t.day_reserved, t.reserve_left, t.overrun


async def test_each_call_holds_its_reserve_and_new_spend_comes_from_the_free_pool(ledger: BudgetLedger) -> None:
    assert await charge(ledger, "CA1", 30_000) == (30_000, 10_000, 10_000, 0)
    assert await charge(ledger, "CA2", 30_000) == (60_000, 20_000, 10_000, 0)
    # 20,000 free: CA1 spends 15,000 of it, and the last 5,000 now come out of its own reserve
    assert await charge(ledger, "CA1", 15_000) == (75_000, 20_000, 10_000, 0)
    assert await charge(ledger, "CA1", 10_000) == (85_000, 15_000, 5_000, 0)
    # closing (reserve None: keep what it holds), CA1 spends its reserve down to nothing, then overruns
    assert await charge(ledger, "CA1", 5_000, None) == (90_000, 10_000, 0, 0)
    assert await charge(ledger, "CA1", 700, None) == (90_700, 10_000, 0, 700)
    # CA1's 700 overrun came out of CA2's reserve: CA2 closing on 9,300 leaves the day exactly at the cap
    assert await charge(ledger, "CA2", 9_300, None) == (100_000, 0, 0, 0)
    # and any more is CA2's overrun, the day's only way past its cap
    assert await charge(ledger, "CA2", 1, None) == (100_001, 0, 0, 1)
    assert await ledger.day_total(DAY) == 100_001


async def test_a_call_never_asks_for_more_than_the_pool_has(ledger: BudgetLedger) -> None:
    await charge(ledger, "CA1", 85_000)
    assert await charge(ledger, "CA2", 0) == (85_000, 15_000, 5_000, 0)  # CA2 gets half its reserve
    # releasing CA1's reserve lets CA2 have its whole reserve on its next charge
    assert await ledger.release(call_sid="CA1", day=DAY) == 10_000
    assert await charge(ledger, "CA2", 0) == (85_000, 10_000, 10_000, 0)
    assert await ledger.day_reserved(DAY) == 10_000
    assert await ledger.release(call_sid="CA2", day=DAY) == 10_000
    assert await ledger.release(call_sid="CA2", day=DAY) == 0  # twice is harmless
    assert await ledger.day_reserved(DAY) == 0


async def test_no_day_cap_holds_nothing(ledger: BudgetLedger) -> None:
    t = await ledger.charge(call_sid="CA1", day=DAY, campaign_id=7, micros=5, day_cap=None, reserve=10_000)
    assert (t.call, t.day, t.campaign_day, t.day_reserved, t.reserve_left, t.overrun) == (5, 5, 5, 0, None, 0)
    assert await ledger.day_reserved(DAY) == 0


async def test_the_reserve_of_a_call_that_stopped_charging_is_reaped(ledger: BudgetLedger, redis_url: str) -> None:
    await charge(ledger, "CA_dead", 0)
    await charge(ledger, "CA_live", 0)
    # the dead call's node went away 31 s ago: age its last touch rather than wait
    touched = f"{ledger.prefix}:spend:reserve:{DAY.isoformat()}:touched"
    score = await ledger.redis.zscore(touched, "CA_dead")
    assert score is not None
    await ledger.redis.zadd(touched, {"CA_dead": score - 31_000})
    assert await charge(ledger, "CA_live", 0) == (0, 10_000, 10_000, 0)
    assert await ledger.redis.hget(f"{ledger.prefix}:spend:reserve:{DAY.isoformat()}", "CA_dead") is None


async def test_many_concurrent_charges_never_take_the_day_past_the_cap_but_by_overruns(ledger: BudgetLedger) -> None:
    # 20 calls, each admitted only if the pool grants its whole 3,000 reserve (a charge of 0), charge 1,000 at
    # a time until told to close, then close on their reserve: whatever the interleaving, day + reserved stays
    # within the cap and nobody overruns. Half the calls start only once the first half is closing, so the
    # late ones meet a pool that is (nearly) spent, whatever order the connections happen to be served in.
    first_closing = asyncio.Event()

    async def call(sid: str, late: bool) -> int:
        if late:
            await first_closing.wait()
        day, reserved, left, overrun = await charge(ledger, sid, 0, 3_000)
        assert day + reserved <= CAP and overrun == 0
        if left < 3_000:  # refused: what the pool could give goes back
            await ledger.release(call_sid=sid, day=DAY)
            return 0
        closing = False
        while not closing or left >= 1_000:
            day, reserved, left, overrun = await charge(ledger, sid, 1_000, None if closing else 3_000)
            assert day + reserved <= CAP and overrun == 0
            if not closing and left < 3_000:
                closing = True
                first_closing.set()
        await ledger.release(call_sid=sid, day=DAY)
        return 1

    admitted = await asyncio.gather(*(call(f"CA{i}", late=i >= 10) for i in range(20)))
    assert sum(admitted[:10]) == 10  # the early calls all fit (10 x 3,000 held of 100,000)
    assert await ledger.day_total(DAY) <= CAP
    assert await ledger.day_reserved(DAY) == 0


async def test_telephony_minutes_are_billed_once_across_nodes(ledger: BudgetLedger) -> None:
    # node A carried the call through minute 2; it resumed on node B, whose meter starts from scratch
    assert await ledger.claim_minutes("CAmoved", 1) == 1
    assert await ledger.claim_minutes("CAmoved", 2) == 1
    assert await ledger.claim_minutes("CAmoved", 2) == 0  # B, 1:30 into the call: nothing new
    assert await ledger.claim_minutes("CAmoved", 1) == 0
    assert await ledger.claim_minutes("CAmoved", 4) == 2  # B missed a tick: both minutes, once


async def test_the_pool_is_read_as_one_snapshot_of_spend_and_reserves(ledger: BudgetLedger) -> None:
    assert await ledger.day_pool(DAY) == (0, 0)
    await charge(ledger, "CA1", 85_000)
    await charge(ledger, "CA2", 0)
    assert await ledger.day_pool(DAY) == (85_000, 15_000)
    await ledger.release(call_sid="CA1", day=DAY)  # a call that ended hands its reserve back
    assert await ledger.day_pool(DAY) == (85_000, 5_000)


async def campaign_charge(
    ledger: BudgetLedger, sid: str, micros: int, reserve: int | None = 10_000
) -> tuple[int, int, int, int]:
    t = await ledger.charge(
        call_sid=sid, day=DAY, campaign_id=7, micros=micros, reserve=reserve, campaign_cap=CAP
    )  # no day cap: only the campaign day's pool
    assert t.reserve_left is None and t.campaign_reserve_left is not None
    return t.campaign_day, t.campaign_reserved, t.campaign_reserve_left, t.campaign_overrun


async def test_a_capped_campaign_day_is_a_pool_of_its_calls_closing_reserves(ledger: BudgetLedger) -> None:
    assert await campaign_charge(ledger, "CA1", 40_000) == (40_000, 10_000, 10_000, 0)
    assert await campaign_charge(ledger, "CA2", 40_000) == (80_000, 20_000, 10_000, 0)
    # 0 free: CA1's next 5,000 come out of its own reserve (it is told to close) ...
    assert await campaign_charge(ledger, "CA1", 5_000) == (85_000, 15_000, 5_000, 0)
    # ... and closing on what it holds, past it is its overrun (it is stopped); CA2's reserve is intact.
    assert await campaign_charge(ledger, "CA1", 6_000, None) == (91_000, 10_000, 0, 1_000)
    assert await ledger.campaign_pool(7, DAY) == (91_000, 10_000)
    # Another campaign's calls, and the day, are not in this pool.
    other = await ledger.charge(call_sid="CA3", day=DAY, campaign_id=8, micros=50_000, campaign_cap=CAP, reserve=10_000)
    assert (other.campaign_reserve_left, other.campaign_overrun) == (10_000, 0)
    assert await ledger.day_reserved(DAY) == 0
    # The call ends: its reserve goes back to its campaign day's pool.
    await ledger.release(call_sid="CA2", day=DAY, campaign_id=7)
    assert await ledger.campaign_pool(7, DAY) == (91_000, 0)


async def test_a_campaign_call_holds_its_reserve_in_both_pools_when_both_are_capped(ledger: BudgetLedger) -> None:
    t = await ledger.charge(call_sid="CA1", day=DAY, campaign_id=7, micros=95_000, day_cap=200_000, reserve=10_000,
                            campaign_cap=CAP)  # fmt: skip
    assert (t.reserve_left, t.campaign_reserve_left) == (10_000, 5_000)  # the campaign's pool is the tighter
    assert (t.day_reserved, t.campaign_reserved) == (10_000, 5_000)


async def test_the_campaign_pool_wraps_up_stops_and_refuses_like_the_days() -> None:
    caps = Caps(per_call=None, per_day=None, per_campaign_day=CAP)
    short = Spend(call=10, day=10, campaign_day=85_000, closing_reserve=10_000, campaign_reserve_left=5_000)
    assert check_call(short, caps, wrap_up_started_s=None, now_s=0).action is Action.wrap_up
    whole = Spend(call=10, day=10, campaign_day=85_000, closing_reserve=10_000, campaign_reserve_left=10_000)
    assert check_call(whole, caps, wrap_up_started_s=None, now_s=0).action is Action.ok
    over = Spend(call=10, day=10, campaign_day=91_000, campaign_reserve_left=0, campaign_overrun=1_000)
    verdict = check_call(over, caps, wrap_up_started_s=None, now_s=0)
    assert (verdict.action, verdict.cap) == (Action.hard_stop, "per_campaign_day")
    # 80,000 spent and 15,000 held by the campaign's calls: a new one's 10,000 reserve does not fit.
    refused = admit_call(0, caps, campaign_day_spent=80_000, campaign_reserved=15_000, closing_reserve=10_000)
    assert (refused.action, refused.cap) == (Action.hard_stop, "per_campaign_day")
    assert "held for closing lines of the campaign's calls" in refused.reason
    fits = admit_call(0, caps, campaign_day_spent=80_000, campaign_reserved=5_000, closing_reserve=10_000)
    assert fits.action is Action.ok
