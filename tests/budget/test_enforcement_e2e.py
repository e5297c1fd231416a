"""Caps enforced on live calls (emulator, respx Twilio), on new calls, and on campaigns across days."""

from __future__ import annotations

import asyncio
import json
import uuid
import xml.etree.ElementTree as ET
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs
from zoneinfo import ZoneInfo

import httpx
import pytest
import respx
from redis.asyncio import Redis
from sqlalchemy import select

from app.budget.ledger import BudgetLedger
from app.budget.models import BudgetEnforcement
from app.db import make_engine, make_sessionmaker
from app.dialer.models import Campaign
from app.dialer.worker import Dialer
from app.emulator.config import EmulatorConfig
from app.emulator.server import RealtimeEmulator
from app.main import build_runtime, create_app
from tests.support import (
    ACCOUNT_SID,
    TWILIO_API,
    TwilioStream,
    agent_turn_played,
    call_sid,
    make_settings,
    open_call,
    post_webhook,
    say_turn,
    serve,
    serve_asgi,
)

pytestmark = pytest.mark.asyncio

# Only the agent's audio costs money here (64 µ$ a token, 20 tokens a second: 1,280 µ$ per second
# of agent speech), so the figures below are easy to follow.
AUDIO_ONLY = {
    "version": "test-audio-only",
    "models": {"gpt-realtime": {"text_in": 0, "text_cached_in": 0, "text_out": 0, "audio_in": 0, "audio_cached_in": 0,
                                "audio_out": 64}},
    "telephony_per_minute": {"inbound": 0, "outbound": 0},
    "transcription_per_minute": 0,
    "transcription_tokens": {"audio_in": 0, "text_in": 0, "text_out": 0},
}  # fmt: skip
LONG_REPLY = "Of course. Our hygienists have openings on Tuesday and Thursday mornings, and the whole visit takes about forty minutes, with a short exam and time for questions."  # 162 characters: about 9.7 s of speech


async def enforcements(database_url: str) -> list[BudgetEnforcement]:
    engine = make_engine(database_url)
    try:
        async with make_sessionmaker(engine)() as session:
            return list(await session.scalars(select(BudgetEnforcement).order_by(BudgetEnforcement.id)))
    finally:
        await engine.dispose()


async def test_a_per_call_cap_ends_the_call_with_a_closing_line_then_a_rest_hang_up(tmp_path: Path) -> None:
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps(AUDIO_ONLY))
    # 12.5 s of agent speech (16,000 µ$): the agent is asked to close at 90% (11.25 s), during the
    # long reply. With caps this small the closing line is a large part of the cap, so the runaway
    # margin is widened from 10% to 50% for this test.
    cap_usd = 0.016
    config = EmulatorConfig(tts="synthetic", transcripts=["When can I come in?"], reply_text=lambda _: LONG_REPLY)
    async with RealtimeEmulator(config) as emulator, respx.mock(assert_all_called=False) as mock:
        mock.route(host="127.0.0.1").pass_through()
        settings = make_settings(
            tmp_path,
            realtime_url=emulator.url,
            price_table_file=str(prices),
            budget_per_call_usd=cap_usd,
            budget_runaway_margin=0.5,
        )
        async with serve(settings) as base:
            sid, token = await open_call(base, 4242)
            hung_up = asyncio.Event()
            route = mock.post(f"{TWILIO_API}/2010-04-01/Accounts/{ACCOUNT_SID}/Calls/{sid}.json").mock(
                side_effect=lambda request: (
                    hung_up.set(),
                    httpx.Response(200, json={"sid": sid, "status": "completed"}),
                )[1]
            )
            async with TwilioStream.open(base, call_sid=sid, token=token, auto_ack=True) as tw:
                session = await emulator.wait_for_session(0)
                await agent_turn_played(tw, session, 0)
                await say_turn(tw)
                closing = await session.wait_for(
                    lambda e: e["type"] == "response.create" and "must end now" in str(e.get("response", {})),
                    timeout=20,
                )
                await asyncio.wait_for(hung_up.wait(), 20)
                await tw.stop()
                await tw.wait_closed()
    assert closing and parse_qs(route.calls.last.request.content.decode()) == {"Status": ["completed"]}
    # The hang-up came after the closing line was spoken in full, not by a hard stop.
    responses = [e for e in session.sent if e["type"] == "response.done"]
    assert responses[-1]["response"]["status"] == "completed"
    records = await enforcements(settings.effective_database_url)
    actions = [r.action for r in records]
    assert "wrap_up" in actions and "hard_stop" not in actions
    wrap = next(r for r in records if r.action == "wrap_up")
    assert wrap.cap == "per_call" and wrap.call_sid == sid and wrap.price_version == "test-audio-only"
    assert wrap.spent_micros >= 0.9 * wrap.limit_micros  # type: ignore[operator]


async def test_budget_shared_through_real_redis_refuses_new_calls_on_every_node(tmp_path: Path, redis_url: str) -> None:
    async with RealtimeEmulator(EmulatorConfig(tts="synthetic")) as emulator:
        settings = make_settings(
            tmp_path, realtime_url=emulator.url, redis_url=redis_url, budget_per_day_usd=1.0,
            transfer_number="+15550001111", budget_timezone="America/Chicago",
        )  # fmt: skip
        ledger = BudgetLedger(Redis.from_url(redis_url))
        day = datetime.now(UTC).astimezone(ZoneInfo("America/Chicago")).date()
        await ledger.redis.delete(f"sb:spend:day:{day.isoformat()}")
        async with serve(settings) as node_a, serve(settings) as node_b:
            open_before = await post_webhook(
                node_a, "/twilio/voice", {"CallSid": call_sid(78), "From": "+12125550123", "To": "+12125550100"}
            )
            await ledger.charge(
                call_sid="CAother", day=day, campaign_id=None, micros=1_000_000
            )  # another node spent it
            refused = [
                await post_webhook(
                    node, "/twilio/voice", {"CallSid": call_sid(79 + i), "From": "+12125550123", "To": "+12125550100"}
                )
                for i, node in enumerate((node_a, node_b))
            ]
        await ledger.redis.delete(f"sb:spend:day:{day.isoformat()}")
        await ledger.redis.aclose()
    assert ET.fromstring(open_before.text).find("./Connect/Stream") is not None
    for response in refused:
        root = ET.fromstring(response.text)
        assert [c.tag for c in root] == ["Say", "Dial"]
        assert root.find("./Dial/Number").text == "+15550001111"  # type: ignore[union-attr]
    assert emulator.sessions == []
    records = await enforcements(settings.effective_database_url)
    refusals = [r for r in records if r.action == "refuse_call"]
    assert len(refusals) == 2 and all(r.cap == "per_day" and r.spent_micros >= 1_000_000 for r in refusals)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


async def test_a_spent_campaign_pauses_and_resumes_at_the_operators_midnight(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path, realtime_url="ws://127.0.0.1:9/v1", budget_per_day_usd=0.5, budget_timezone="America/Los_Angeles",
        dialer_in_process=False,
    )  # fmt: skip
    rt = build_runtime(settings)
    # 23:30 in Los Angeles on 2026-07-01 (06:30Z on the 2nd); midnight there is 07:00Z.
    clock = Clock(datetime(2026, 7, 2, 6, 30, tzinfo=UTC))
    try:
        async with rt.sessionmaker() as session:
            campaign = Campaign(name="c", purpose="emergency", subject="s", caller_id="+12125550100", status="running",
                                created_at=clock.now, updated_at=clock.now)  # fmt: skip
            session.add(campaign)
            await session.commit()
            campaign_id = campaign.id
        await rt.budget.ledger.charge(call_sid="CAx", day=date(2026, 7, 1), campaign_id=campaign_id, micros=600_000)
        dialer = Dialer(rt, clock=clock)
        await dialer.run_once()
        statuses = [await status_of(rt, campaign_id)]
        clock.now = datetime(2026, 7, 2, 6, 59, tzinfo=UTC)  # 23:59: still the spent day
        await dialer.run_once()
        statuses.append(await status_of(rt, campaign_id))
        clock.now = datetime(2026, 7, 2, 7, 0, 30, tzinfo=UTC)  # 00:00:30 on the 2nd in Los Angeles
        await dialer.run_once()
        statuses.append(await status_of(rt, campaign_id))
        async with rt.sessionmaker() as session:
            actions = [
                r.action for r in await session.scalars(select(BudgetEnforcement).order_by(BudgetEnforcement.id))
            ]
    finally:
        await rt.redis.aclose()
        await rt.engine.dispose()
        await rt.twilio.aclose()
    assert statuses == ["paused_budget", "paused_budget", "running"]
    assert actions == ["pause_campaign", "resume_campaign"]


async def status_of(rt: Any, campaign_id: int) -> str:
    async with rt.sessionmaker() as session:
        campaign = await session.get(Campaign, campaign_id)
        return str(campaign.status)


async def test_a_calls_spend_is_the_sum_of_its_responses_exact_costs(tmp_path: Path, redis_url: str) -> None:
    """Estimates between usage events are replaced by the exact cost, never billed on top of it: agent
    audio streamed before a ``response.done`` but metered after it belongs to that response."""
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps(AUDIO_ONLY))
    config = EmulatorConfig(tts="synthetic", reply_text=lambda _: "Noted. Anything else today?")
    async with RealtimeEmulator(config) as emulator:
        settings = make_settings(tmp_path, realtime_url=emulator.url, redis_url=redis_url, price_table_file=str(prices))
        async with serve(settings) as base:
            sid, token = await open_call(base, uuid.uuid4().int % (1 << 90))
            async with TwilioStream.open(base, call_sid=sid, token=token, auto_ack=True) as tw:
                session = await emulator.wait_for_session(0)
                await agent_turn_played(tw, session, 0)
                for turn in (1, 2, 3):
                    await say_turn(tw)
                    await agent_turn_played(tw, session, turn)
                await tw.stop()
                await tw.wait_closed()
        ledger = BudgetLedger(Redis.from_url(redis_url))
        total = await ledger.call_total(sid)
        await ledger.redis.aclose()
    exact = [
        e["response"]["usage"]["output_token_details"]["audio_tokens"] * 64
        for e in session.sent
        if e["type"] == "response.done" and e["response"].get("usage")
    ]
    assert len(exact) == 4 and all(exact)
    assert total == sum(exact), (total, exact)


async def test_a_call_charges_the_redis_ledger_at_most_once_a_second_besides_its_exact_costs(
    tmp_path: Path, redis_url: str
) -> None:
    """Estimates are charged at most once a second per call (usage events, which replace them, still at
    once); what the call spends is still the sum of its exact costs."""
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps(AUDIO_ONLY))
    config = EmulatorConfig(tts="synthetic", reply_text=lambda _: "Noted. Anything else today?")
    charges: list[int] = []
    async with RealtimeEmulator(config) as emulator:
        settings = make_settings(tmp_path, realtime_url=emulator.url, redis_url=redis_url, price_table_file=str(prices))
        app = create_app(settings)
        async with serve_asgi(app) as base:
            async with httpx.AsyncClient(base_url=base) as client:  # served once its lifespan has started
                assert (await client.get("/healthz")).status_code == 200
            ledger = app.state.runtime.budget.ledger
            real_charge = ledger.charge

            async def counted(**kwargs: Any) -> Any:
                charges.append(kwargs["micros"])
                return await real_charge(**kwargs)

            ledger.charge = counted
            loop = asyncio.get_running_loop()
            sid, token = await open_call(base, uuid.uuid4().int % (1 << 90))
            opened = loop.time()
            async with TwilioStream.open(base, call_sid=sid, token=token, auto_ack=True) as tw:
                session = await emulator.wait_for_session(0)
                await agent_turn_played(tw, session, 0)
                for turn in (1, 2):
                    await say_turn(tw)
                    await agent_turn_played(tw, session, turn)
                await tw.stop()
                await tw.wait_closed()
            elapsed = loop.time() - opened
        total = await BudgetLedger(Redis.from_url(redis_url)).call_total(sid)
    usage_events = sum(
        1 for e in session.sent
        if (e["type"] == "response.done" and e["response"].get("usage"))
        or (e["type"] == "conversation.item.input_audio_transcription.completed" and e.get("usage"))
    )  # fmt: skip
    # one estimate a second at most, the first telephony minute, and each usage event
    assert len(charges) <= int(elapsed) + 1 + 1 + usage_events, (len(charges), elapsed, usage_events)
    exact = [
        e["response"]["usage"]["output_token_details"]["audio_tokens"] * 64
        for e in session.sent
        if e["type"] == "response.done" and e["response"].get("usage")
    ]
    assert total == sum(exact)
