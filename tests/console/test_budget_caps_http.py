"""Admins set the caps from the console under the API's rules, and every change of caps (console or API) is in
the audit log with the caps before and after, in dollars."""

from __future__ import annotations

import html
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from app.auth.keys import Role
from app.db import make_engine, make_sessionmaker
from app.dialer.models import Campaign
from tests.console.support import audit_log, console_settings, csrf_token, sign_in
from tests.support import key_for, serve

pytestmark = pytest.mark.asyncio
NOW = datetime(2026, 7, 1, 16, 0, tzinfo=UTC)


async def a_campaign(database_url: str) -> int:
    engine = make_engine(database_url)
    try:
        async with make_sessionmaker(engine)() as session:
            campaign = Campaign(name="Recalls", purpose="informational", subject="recall", caller_id="+12125550100",
                                status="draft", created_at=NOW, updated_at=NOW)  # fmt: skip
            session.add(campaign)
            await session.commit()
            return campaign.id
    finally:
        await engine.dispose()


async def test_an_admin_sets_caps_from_the_budget_page_and_each_change_is_audited_with_before_and_after(
    tmp_path: Path,
) -> None:
    settings = console_settings(tmp_path, budget_per_day_usd=25.0)
    cid = await a_campaign(settings.effective_database_url)
    admin = await key_for(settings.effective_database_url, Role.admin)
    async with serve(settings) as base:
        async with httpx.AsyncClient(base_url=base) as client:
            await sign_in(client, admin)
            page = await client.get("/console/budget")
            token = csrf_token(page.text)
            form = {"csrf_token": token, "per_day_usd": "$1,000.50", "per_call_usd": "",
                    f"c{cid}_per_day_usd": "40", f"c{cid}_per_call_usd": " "}  # fmt: skip
            saved = await client.post("/console/budget/caps", data=form)
            typo = await client.post("/console/budget/caps", data=form | {"per_call_usd": "2,5o"})
            too_big = await client.post("/console/budget/caps", data=form | {f"c{cid}_per_day_usd": "1e9"})
            forged = await client.post("/console/budget/caps", data=form | {"csrf_token": "nope"})
            caps = (await client.get("/api/v1/budget/caps", headers={"Authorization": f"Bearer {admin}"})).json()
            api = await client.put("/api/v1/budget/caps", headers={"Authorization": f"Bearer {admin}"},
                                   json={"per_call_usd": 2.0, "per_day_usd": None, "campaigns": {}})  # fmt: skip
    assert page.status_code == 200 and 'value="25.00"' in page.text  # the cap in force, in its box
    assert saved.status_code == 200 and "Caps saved" in saved.text
    assert (caps["per_day_usd"], caps["per_call_usd"]) == (1000.5, None)
    assert caps["campaigns"] == {str(cid): {"per_day_usd": 40.0, "per_call_usd": None}}
    assert typo.status_code == 422 and "Per-call cap: '2,5o' is not an amount in dollars" in html.unescape(typo.text)
    assert too_big.status_code == 422 and f"Campaign {cid}, daily cap: an amount from $0" in too_big.text
    assert forged.status_code == 403 and api.status_code == 200
    changes = [a for a in await audit_log(settings) if a.action == "set_caps"]
    assert [(a.via, a.key_id) for a in changes] == [("console", admin.split("_")[1]), ("api", admin.split("_")[1])]
    assert changes[0].detail["before"]["per_day_usd"] == 25.0 and changes[0].detail["after"]["per_day_usd"] == 1000.5
    assert changes[1].detail["before"]["campaigns"] == {str(cid): {"per_day_usd": 40.0, "per_call_usd": None}}
    assert changes[1].detail["after"] == {"per_call_usd": 2.0, "per_day_usd": None, "campaigns": {}}
