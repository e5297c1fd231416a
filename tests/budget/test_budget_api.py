"""The budget REST API: caps (admin), spend by day, campaign and call, and enforcements (ops, supervisor)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest
from redis.asyncio import Redis

from app.auth.keys import Role
from app.budget.ledger import BudgetLedger
from app.db import make_engine, make_sessionmaker
from app.dialer.models import Campaign
from tests.support import call_sid, key_for, make_settings, post_webhook, serve

pytestmark = [pytest.mark.asyncio, pytest.mark.redis]
ZONE = "America/Denver"


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def add_campaign(database_url: str, campaign_id: int) -> None:
    engine = make_engine(database_url)
    try:
        async with make_sessionmaker(engine)() as session:
            now = datetime.now(UTC)
            session.add(Campaign(id=campaign_id, name="Recalls", purpose="informational", subject="recall",
                                 caller_id="+12125550100", created_at=now, updated_at=now))  # fmt: skip
            await session.commit()
    finally:
        await engine.dispose()


async def test_caps_spend_and_enforcements_over_rest(tmp_path: Path, redis_url: str) -> None:
    settings = make_settings(
        tmp_path, realtime_url="ws://127.0.0.1:9/v1", redis_url=redis_url, budget_timezone=ZONE, budget_per_call_usd=1.5
    )
    redis = Redis.from_url(redis_url)
    ledger = BudgetLedger(redis)
    day = datetime.now(UTC).astimezone(ZoneInfo(ZONE)).date()
    await redis.delete(*[f"sb:spend:{k}" for k in (f"day:{day}", "call:CAapi1", f"campaign:7:{day}",
                                                    f"reserve:{day}", f"reserve:{day}:total")],
                       "sb:budget:caps")  # fmt: skip
    # other tests' campaigns spent today on this Redis too (the spend is listed per campaign)
    others = [key async for key in redis.scan_iter(match=f"sb:spend:campaign:*:{day}")]
    if others:
        await redis.delete(*others)
    keys = {role: await key_for(settings.effective_database_url, role) for role in Role}
    await add_campaign(settings.effective_database_url, 7)
    try:
        async with serve(settings) as base, httpx.AsyncClient(base_url=base) as api:
            # Reading needs a key; ops and supervisors may read; only an admin may set caps.
            assert (await api.get("/api/v1/budget/caps")).status_code == 401
            before = await api.get("/api/v1/budget/caps", headers=bearer(keys[Role.ops]))
            assert before.status_code == 200
            assert before.json() == {"per_call_usd": 1.5, "per_day_usd": None, "timezone": ZONE, "campaigns": {}}
            body = {"per_call_usd": 2.0, "per_day_usd": 0.05, "campaigns": {"7": {"per_day_usd": 0.02}}}
            denied = await api.put("/api/v1/budget/caps", json=body, headers=bearer(keys[Role.ops]))
            assert denied.status_code == 403 and denied.headers["content-type"] == "application/problem+json"
            bad = await api.put("/api/v1/budget/caps", json={"per_day_usd": -1}, headers=bearer(keys[Role.admin]))
            assert bad.status_code == 422
            put = await api.put("/api/v1/budget/caps", json=body, headers=bearer(keys[Role.admin]))
            assert put.status_code == 200
            caps = (await api.get("/api/v1/budget/caps", headers=bearer(keys[Role.supervisor]))).json()
            assert caps == {
                "per_call_usd": 2.0,
                "per_day_usd": 0.05,
                "timezone": ZONE,
                "campaigns": {"7": {"per_call_usd": None, "per_day_usd": 0.02}},
            }

            # Another node spends: 30,000 µ$ on a campaign call that holds a 12,000 µ$ closing reserve.
            await ledger.charge(call_sid="CAapi1", day=day, campaign_id=7, micros=30_000, day_cap=50_000,
                                reserve=12_000)  # fmt: skip
            spend = (await api.get("/api/v1/budget/spend", headers=bearer(keys[Role.ops]))).json()
            assert spend["day"] == day.isoformat() and spend["timezone"] == ZONE
            assert (spend["spent_usd"], spend["reserved_usd"], spend["cap_usd"]) == (0.03, 0.012, 0.05)
            assert spend["campaigns"] == {"7": 0.03}
            call = (await api.get("/api/v1/budget/calls/CAapi1", headers=bearer(keys[Role.supervisor]))).json()
            assert call == {"call_sid": "CAapi1", "spent_usd": 0.03, "cap_usd": 2.0}

            # 30,000 spent + 12,000 held + a new call's closing reserve > 50,000: the call is refused,
            # politely, and the refusal is recorded with its figures.
            refused = await post_webhook(base, "/twilio/voice", {"CallSid": call_sid(555), "From": "+13035550123",
                                                                 "To": "+13035550100", "Direction": "inbound"})  # fmt: skip
            assert [c.tag for c in ET.fromstring(refused.text)] == ["Say", "Hangup"]
            listed = (await api.get("/api/v1/budget/enforcements", headers=bearer(keys[Role.ops]))).json()
            refusal = next(e for e in listed["items"] if e["call_sid"] == call_sid(555))
            assert refusal["action"] == "refuse_call" and refusal["cap"] == "per_day"
            assert (refusal["spent_micros"], refusal["limit_micros"]) == (30_000, 50_000)
            assert "$0.01 held for closing lines" in refusal["reason"]
            assert refusal["price_version"] and refusal["day"] == day.isoformat()
    finally:
        await redis.delete(*[f"sb:spend:{k}" for k in (f"day:{day}", "call:CAapi1", f"campaign:7:{day}",
                                                        f"reserve:{day}", f"reserve:{day}:total")],
                           "sb:budget:caps")  # fmt: skip
        await redis.aclose()


async def test_caps_are_replaced_whole_by_put_changed_in_part_by_patch_and_bad_ones_refused(
    tmp_path: Path, redis_url: str
) -> None:
    settings = make_settings(tmp_path, realtime_url="ws://127.0.0.1:9/v1", redis_url=redis_url)
    redis = Redis.from_url(redis_url)
    await redis.delete("sb:budget:caps")
    admin = await key_for(settings.effective_database_url, Role.admin)
    await add_campaign(settings.effective_database_url, 3)
    try:
        async with serve(settings) as base, httpx.AsyncClient(base_url=base, headers=bearer(admin)) as api:
            full = {"per_call_usd": 2.0, "per_day_usd": 50.0, "campaigns": {"3": {"per_day_usd": 10.0}}}
            assert (await api.put("/api/v1/budget/caps", json=full)).status_code == 200
            # A PUT that leaves a field out would drop that cap silently: it is refused, nothing changes.
            partial = await api.put("/api/v1/budget/caps", json={"per_day_usd": 40.0})
            assert partial.status_code == 422 and partial.headers["content-type"] == "application/problem+json"
            assert {tuple(e["loc"]) for e in partial.json()["errors"]} == {("body", "per_call_usd"),
                                                                          ("body", "campaigns")}  # fmt: skip
            # PATCH changes what it names only.
            patched = await api.patch("/api/v1/budget/caps", json={"per_day_usd": 40.0,
                                                                   "campaigns": {"3": {"per_call_usd": 1.0}}})  # fmt: skip
            assert patched.status_code == 200
            assert patched.json()["per_call_usd"] == 2.0 and patched.json()["per_day_usd"] == 40.0
            assert patched.json()["campaigns"] == {"3": {"per_call_usd": 1.0, "per_day_usd": 10.0}}
            removed = await api.patch("/api/v1/budget/caps", json={"per_call_usd": None, "campaigns": {"3": None}})
            assert removed.json()["per_call_usd"] is None and removed.json()["campaigns"] == {}
            refused = {
                name: (await api.request(method, "/api/v1/budget/caps", json=body)).status_code
                for name, method, body in [
                    ("negative campaign cap", "PATCH", {"campaigns": {"3": {"per_day_usd": -1}}}),
                    ("unknown campaign", "PATCH", {"campaigns": {"999": {"per_day_usd": 1}}}),
                    ("campaign id 0", "PATCH", {"campaigns": {"0": {"per_day_usd": 1}}}),
                    ("huge", "PATCH", {"per_day_usd": 1e308}),
                    ("unknown field", "PATCH", {"per_week_usd": 1}),
                    ("unknown campaign field", "PATCH", {"campaigns": {"3": {"per_week_usd": 1}}}),
                    ("unknown campaign in PUT", "PUT", {**full, "campaigns": {"999": {"per_day_usd": 1}}}),
                ]
            }
            for literal in ("NaN", "Infinity", "-Infinity"):
                raw = await api.patch("/api/v1/budget/caps", content=f'{{"per_day_usd": {literal}}}',
                                      headers={"content-type": "application/json"})  # fmt: skip
                refused[literal] = raw.status_code
            after = (await api.get("/api/v1/budget/caps")).json()
    finally:
        await redis.delete("sb:budget:caps")
        await redis.aclose()
    assert refused == dict.fromkeys(refused, 422), refused
    assert after["per_day_usd"] == 40.0 and after["per_call_usd"] is None  # the refusals changed nothing
