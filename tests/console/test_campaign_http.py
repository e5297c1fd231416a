"""The ops console's campaign page over plain HTTP: its live part, settings under the API's rules, contacts
filtered, re-queued and released with a reason (audited under the signed-in key), CSRF and role."""

from __future__ import annotations

import html
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from app.auth.keys import Role
from app.db import make_engine, make_sessionmaker
from app.dialer.location import locate
from app.dialer.models import Attempt, Campaign, Contact, DialDecisionRecord
from app.dialer.service import location_to_dict
from tests.console.support import audit_log, console_settings, csrf_token, sign_in
from tests.support import key_for, serve

pytestmark = pytest.mark.asyncio
NOW = datetime(2026, 7, 1, 16, 0, tzinfo=UTC)
DONE, HELD, PENDING = "+12125550101", "+18005550100", "+12125550103"


async def seed(database_url: str) -> tuple[int, dict[str, int]]:
    engine = make_engine(database_url)
    try:
        async with make_sessionmaker(engine)() as session:
            campaign = Campaign(name="Recalls", purpose="informational", subject="recall", caller_id="+12125550100",
                                status="running", created_at=NOW, updated_at=NOW)  # fmt: skip
            session.add(campaign)
            await session.flush()
            contacts = {
                phone: Contact(campaign_id=campaign.id, phone=phone, name=name, status=status, disposition=why,
                               location=location_to_dict(locate(phone)), created_at=NOW, next_attempt_at=NOW)
                for phone, name, status, why in [(DONE, "Dana", "done", "answered"), (HELD, "Toll Free", "held",
                                                 "location.toll_free"), (PENDING, "Lee", "pending", None)]
            }  # fmt: skip
            session.add_all(contacts.values())
            await session.flush()
            attempt = Attempt(campaign_id=campaign.id, contact_id=contacts[DONE].id, phone=DONE, subject="recall",
                              purpose="informational", placed_at=NOW, status="completed", call_sid="CA" + "1" * 32,
                              answered_by="machine_end_beep", disposition="machine", ended_at=NOW)  # fmt: skip
            session.add(attempt)
            await session.flush()
            session.add(DialDecisionRecord(campaign_id=campaign.id, contact_id=contacts[PENDING].id, phone=PENDING,
                                       decided_at=NOW, outcome="defer", defer_until=datetime(2026, 7, 2, 12, tzinfo=UTC),
                                       reasons=[{"code": "window.state", "message": "Wed 07:00 in America/New_York is "
                                                 "outside 08:00-21:00", "source": "47 CFR 64.1200(c)(1)"}]))  # fmt: skip
            await session.commit()
            return campaign.id, {p: c.id for p, c in contacts.items()}
    finally:
        await engine.dispose()


def contacts(page: str) -> str:
    """The contacts table of a campaign page (the attempts and decisions tables name numbers too)."""
    return page.split('id="contacts"', 1)[1].split("</table>", 1)[0]


async def test_the_campaign_page_shows_attempts_decisions_and_filters_contacts_and_its_live_part_alone(
    tmp_path: Path,
) -> None:
    settings = console_settings(tmp_path)
    cid, _ = await seed(settings.effective_database_url)
    ops = await key_for(settings.effective_database_url, Role.ops)
    async with serve(settings) as base, httpx.AsyncClient(base_url=base) as client:
        await sign_in(client, ops)
        page = await client.get(f"/console/campaigns/{cid}")
        held = await client.get(f"/console/campaigns/{cid}", params={"status": "held"})
        live = await client.get(f"/console/campaigns/{cid}/live", params={"phone": "212-555-0103"})
        bogus = await client.get(f"/console/campaigns/{cid}", params={"status": "<script>"})
    assert page.status_code == 200
    text = html.unescape(page.text)
    assert "voicemail (after the beep)" in text and "machine" in text and 'href="/console/calls/CA111' in page.text
    assert "outside 08:00-21:00" in text and 'datetime="2026-07-02T12:00:00+00:00"' in page.text
    assert DONE in text and HELD in text and PENDING in text and 'data-live="/console/campaigns/' in page.text
    listed = [contacts(r.text) for r in (held, live, bogus)]
    assert HELD in listed[0] and DONE not in listed[0] and PENDING not in listed[0]
    assert f'data-live="/console/campaigns/{cid}/live?status=held"' in held.text  # refreshed as filtered
    assert live.status_code == 200 and "<html" not in live.text and PENDING in listed[1] and DONE not in listed[1]
    assert bogus.status_code == 200 and "<script>" not in bogus.text and DONE in listed[2]  # unknown status: all


async def test_settings_are_saved_under_the_apis_rules_and_what_they_refuse_is_listed(tmp_path: Path) -> None:
    settings = console_settings(tmp_path)
    cid, _ = await seed(settings.effective_database_url)
    ops = await key_for(settings.effective_database_url, Role.ops)
    async with serve(settings) as base, httpx.AsyncClient(base_url=base) as client:
        await sign_in(client, ops)
        token = csrf_token((await client.get(f"/console/campaigns/{cid}")).text)
        form = {"csrf_token": token, "name": "Recalls, July", "instructions": "Be brief.", "max_attempts": "4",
                "retry_spacing_min": "30", "daily_attempt_limit": "2", "concurrency": "3", "calls_per_second": "0.5",
                "machine_action": "hangup", "window_start": "09:00", "window_end": "17:30"}  # fmt: skip
        saved = await client.post(f"/console/campaigns/{cid}/settings", data=form)
        refused = await client.post(f"/console/campaigns/{cid}/settings", data=form | {"max_attempts": "99",
                                                                                         "window_end": "08:00"})  # fmt: skip
        no_csrf = await client.post(f"/console/campaigns/{cid}/settings", data=form | {"csrf_token": "x"})
        api = await client.get(f"/api/v1/campaigns/{cid}", headers={"Authorization": f"Bearer {ops}"})
    assert saved.status_code == 200 and "Settings saved." in saved.text
    got = api.json()
    assert (got["name"], got["max_attempts"], got["retry_spacing_min"], got["machine_action"]) == (
        "Recalls, July",
        4,
        30,
        "hangup",
    )
    assert (got["window_start"], got["window_end"], got["calls_per_second"]) == ("09:00", "17:30", 0.5)
    assert refused.status_code == 422 and "max_attempts" in refused.text and 'value="99"' in refused.text
    assert no_csrf.status_code == 403


async def test_re_queue_and_release_take_a_reason_are_audited_and_the_apis_refusals_are_shown(tmp_path: Path) -> None:
    settings = console_settings(tmp_path)
    cid, ids = await seed(settings.effective_database_url)
    ops = await key_for(settings.effective_database_url, Role.ops)
    supervisor = await key_for(settings.effective_database_url, Role.supervisor)
    async with serve(settings) as base:
        async with httpx.AsyncClient(base_url=base) as client:
            await sign_in(client, ops)
            token = csrf_token((await client.get(f"/console/campaigns/{cid}")).text)
            url = f"/console/campaigns/{cid}/contacts"
            no_reason = await client.post(f"{url}/{ids[DONE]}/requeue", data={"csrf_token": token, "reason": " "})
            requeued = await client.post(f"{url}/{ids[DONE]}/requeue", data={"csrf_token": token,
                                                                              "reason": "consent recorded by phone"})  # fmt: skip
            stateless = await client.post(f"{url}/{ids[HELD]}/release", data={"csrf_token": token, "reason": "ok"})
            released = await client.post(f"{url}/{ids[HELD]}/release", data={"csrf_token": token,
                                                                               "reason": "customer lives in NY",
                                                                               "state": "ny"})  # fmt: skip
            not_held = await client.post(f"{url}/{ids[PENDING]}/release", data={"csrf_token": token, "reason": "x"})
            forged = await client.post(f"{url}/{ids[PENDING]}/release", data={"csrf_token": "nope", "reason": "x"})
        async with httpx.AsyncClient(base_url=base) as client:
            await sign_in(client, supervisor)
            not_ops = await client.get(f"/console/campaigns/{cid}")
    assert "Give a reason" in no_reason.text
    assert requeued.status_code == 200 and f"{DONE} is back in the queue" in requeued.text
    assert "give the callee" in html.unescape(stateless.text)
    assert f"{HELD} is released into the queue" in released.text
    assert "only a held one is released" in not_held.text and forged.status_code == 403
    assert not_ops.status_code == 403
    entries = [a for a in await audit_log(settings) if a.action in ("requeue_contact", "release_contact")]
    assert [(a.action, a.via, a.key_id, a.detail["reason"]) for a in entries] == [
        ("requeue_contact", "console", ops.split("_")[1], "consent recorded by phone"),
        ("release_contact", "console", ops.split("_")[1], "customer lives in NY"),
    ]
    assert entries[1].detail["state"] == "NY"
