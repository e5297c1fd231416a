"""A capped campaign day is a pool of its calls' closing reserves: concurrent campaign calls through the
real server (real Redis, the emulator, a Twilio REST double) keep the campaign's day within its cap by at
most one in-flight increment, however many of them are talking when it runs out.

Only the agent's audio costs money (1,280 µ$ a second), each call holds a 10,240 µ$ closing reserve, and
the campaign's day may spend 75,000 µ$: the greetings and a few turns, not every turn the callees want.
The deployment's own day has no cap, so only the campaign's pool decides."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from datetime import UTC, date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest
import respx
from redis.asyncio import Redis

from app.auth.keys import Role
from app.budget.ledger import BudgetLedger
from app.db import make_engine, make_sessionmaker
from app.dialer.models import Attempt, Campaign, Contact
from app.emulator.config import EmulatorConfig
from app.emulator.server import RealtimeEmulator
from tests.budget.test_daily_cap_two_nodes_e2e import (
    WANTED_TURNS,
    closing_requested,
    converse,
    response_costs,
)
from tests.budget.test_enforcement_e2e import AUDIO_ONLY, enforcements
from tests.support import (
    ACCOUNT_SID,
    TWILIO_API,
    TwilioStream,
    call_sid,
    key_for,
    make_settings,
    post_webhook,
    serve,
    twiml_stream,
)

pytestmark = [pytest.mark.asyncio, pytest.mark.e2e, pytest.mark.redis]

CAP = 75_000
CALLS = 4
ZONE = "America/Chicago"
CAPS_KEY = "sb:budget:caps"


async def place_attempts(database_url: str, n0: int) -> tuple[int, list[int]]:
    """A running campaign with one answered attempt per callee, as the dialer leaves them."""
    now = datetime.now(UTC)
    engine = make_engine(database_url)
    try:
        async with make_sessionmaker(engine)() as session:
            campaign = Campaign(name=f"pool {n0}", purpose="informational", subject="your appointment",
                                caller_id="+12125550100", status="running", created_at=now, updated_at=now)  # fmt: skip
            session.add(campaign)
            await session.flush()
            attempts = []
            for i in range(CALLS):
                phone = f"+1312555{i:04d}"
                contact = Contact(campaign_id=campaign.id, phone=phone, state="IL", location={}, status="in_progress",
                                  attempts=1, created_at=now)  # fmt: skip
                session.add(contact)
                await session.flush()
                attempt = Attempt(campaign_id=campaign.id, contact_id=contact.id, phone=phone, subject="s",
                                  purpose="informational", placed_at=now, call_sid=call_sid(n0 + i), status="placing")  # fmt: skip
                session.add(attempt)
                attempts.append(attempt)
            await session.commit()
            return campaign.id, [a.id for a in attempts]
    finally:
        await engine.dispose()


async def clear_campaign_day(redis_url: str, campaign_id: int, day: date) -> None:
    redis = Redis.from_url(redis_url)
    try:
        keys = [k async for k in redis.scan_iter(match=f"sb:spend:campaign*:{campaign_id}:{day.isoformat()}*")]
        if keys:
            await redis.delete(*keys)
    finally:
        await redis.aclose()


@pytest.fixture
async def caps_put_back(redis_url: str) -> AsyncIterator[None]:
    """The caps live in Redis, shared by every test on it: as they were before, afterwards."""
    redis = Redis.from_url(redis_url)
    saved = await redis.get(CAPS_KEY)
    try:
        yield
    finally:
        await (redis.set(CAPS_KEY, saved) if saved is not None else redis.delete(CAPS_KEY))
        await redis.aclose()


@pytest.mark.usefixtures("caps_put_back")
async def test_concurrent_campaign_calls_keep_the_campaign_day_within_its_cap(tmp_path: Path, redis_url: str) -> None:
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps(AUDIO_ONLY))
    day = datetime.now(UTC).astimezone(ZoneInfo(ZONE)).date()
    n0 = uuid.uuid4().int % (1 << 96)
    sids = [call_sid(n0 + i) for i in range(CALLS)]
    hung_up = {sid: asyncio.Event() for sid in sids}
    may_leave = asyncio.Event()
    may_leave.set()  # a callee who said all they wanted hangs up at once
    config = EmulatorConfig(tts="synthetic", reply_text=lambda heard: "Noted. Anything else today?")
    async with (
        RealtimeEmulator(config) as emulator,
        respx.mock(assert_all_called=False) as mock,
        AsyncExitStack() as stack,
    ):
        mock.route(host="127.0.0.1").pass_through()

        def rest(request: httpx.Request) -> httpx.Response:
            sid = request.url.path.rsplit("/", 1)[-1][:-5]
            hung_up[sid].set()
            return httpx.Response(200, json={"sid": sid, "status": "completed"})

        updates = mock.post(url__regex=rf"{TWILIO_API}/2010-04-01/Accounts/{ACCOUNT_SID}/Calls/CA\w+\.json").mock(
            side_effect=rest
        )
        settings = make_settings(tmp_path, realtime_url=emulator.url, redis_url=redis_url, price_table_file=prices,
                                 budget_timezone=ZONE, dialer_in_process=False)  # fmt: skip
        admin = await key_for(settings.effective_database_url, Role.admin)
        async with serve(settings) as base:
            campaign_id, attempt_ids = await place_attempts(settings.effective_database_url, n0)
            await clear_campaign_day(redis_url, campaign_id, day)  # a fresh database numbers campaigns from 1
            async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {admin}"}) as api:
                caps = await api.patch("/api/v1/budget/caps",
                                       json={"campaigns": {str(campaign_id): {"per_day_usd": CAP / 1_000_000}}})  # fmt: skip
                assert caps.status_code == 200, caps.text
            streams = []
            for i, (sid, attempt_id) in enumerate(zip(sids, attempt_ids, strict=True)):
                answered = await post_webhook(base, f"/twilio/outbound?attempt={attempt_id}",
                                              {"CallSid": sid, "From": "+12125550100", "To": f"+1312555{i:04d}"})  # fmt: skip
                assert answered.status_code == 200, answered.text
                token = twiml_stream(answered.text)[1]["token"]
                tw = await stack.enter_async_context(TwilioStream.open(base, call_sid=sid, token=token, auto_ack=True))
                streams.append((tw, await emulator.wait_for_session(i)))
            turns = await asyncio.wait_for(
                asyncio.gather(*(converse(tw, s, hung_up[sid], may_leave) for (tw, s), sid in zip(streams, sids, strict=True))),
                120,
            )  # fmt: skip
        ledger = BudgetLedger(Redis.from_url(redis_url))
        campaign_total, held = await ledger.campaign_pool(campaign_id, day)
        call_totals = [await ledger.call_total(sid) for sid in sids]
        await ledger.redis.aclose()

    # The campaign's day could not pay for every turn the callees wanted: calls were wrapped up, each
    # with its closing line and a REST hang-up.
    wrapped = [sid for sid, (_, session) in zip(sids, streams, strict=True) if closing_requested(session)]
    assert wrapped and sum(turns) < CALLS * WANTED_TURNS, turns
    assert all(hung_up[sid].is_set() for sid in wrapped) and updates.called
    # Every charge reached the campaign's counter, and every reserve went back to the pool.
    assert campaign_total == sum(call_totals) and held == 0
    # Never past the campaign's cap by more than one call's single in-flight increment.
    largest_increment = max(cost for _, session in streams for cost in response_costs(session))
    assert campaign_total <= CAP + largest_increment, (campaign_total, largest_increment)
    records = [r for r in await enforcements(settings.effective_database_url) if r.call_sid in set(sids)]
    wrap_ups = [r for r in records if r.action == "wrap_up"]
    assert {r.call_sid for r in wrap_ups} == set(wrapped)
    assert all(r.cap == "per_campaign_day" and r.limit_micros == CAP for r in wrap_ups), wrap_ups
    assert [r for r in records if r.action == "hard_stop"] == []  # every closing line fitted its reserve
