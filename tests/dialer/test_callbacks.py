"""Twilio callbacks for placed calls: status drives dispositions and retries, AMD drives voicemail,
and progress reports the 30-day abandonment rate."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs

import httpx
import pytest
import respx

from app.archive.service import CallRecord, archive_call
from app.auth.keys import Role
from app.core.bridge import TranscriptLine
from app.db import make_engine, make_sessionmaker
from app.dialer.location import locate
from app.dialer.models import Attempt, Campaign, Contact
from app.dialer.service import location_to_dict
from app.settings import Settings
from tests.support import ACCOUNT_SID, TWILIO_API, key_for, make_settings, post_webhook, serve

pytestmark = pytest.mark.asyncio

NOW = datetime.now(UTC)


async def seed(
    settings: Settings, *, machine_action: str = "voicemail", attempts: int = 1
) -> tuple[int, int, list[str]]:
    engine = make_engine(settings.effective_database_url)
    try:
        async with make_sessionmaker(engine)() as session:
            campaign = Campaign(name="c", purpose="informational", subject="s", caller_id="+12125550100", status="running",
                                machine_action=machine_action, retry_spacing_min=90, max_attempts=3,
                                created_at=NOW, updated_at=NOW)  # fmt: skip
            session.add(campaign)
            await session.flush()
            contact = Contact(campaign_id=campaign.id, phone="+12125550123", location=location_to_dict(locate("+12125550123")),
                              status="in_progress", attempts=1, created_at=NOW)  # fmt: skip
            session.add(contact)
            await session.flush()
            sids = []
            for i in range(attempts):
                sid = f"CA{i:032d}"
                session.add(Attempt(campaign_id=campaign.id, contact_id=contact.id, phone=contact.phone, subject="s",
                                    purpose="informational", placed_at=NOW, status="queued", call_sid=sid))  # fmt: skip
                sids.append(sid)
            await session.commit()
            return campaign.id, contact.id, sids
    finally:
        await engine.dispose()


async def read(settings: Settings, model: type, ident: int) -> object:
    engine = make_engine(settings.effective_database_url)
    try:
        async with make_sessionmaker(engine)() as session:
            return await session.get(model, ident)
    finally:
        await engine.dispose()


async def test_a_no_answer_is_recorded_and_retried_after_the_spacing(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, realtime_url="ws://127.0.0.1:9/v1", dialer_in_process=False)
    _, contact_id, (sid,) = await seed(settings)
    before = datetime.now(UTC)
    async with serve(settings) as base:
        ringing = await post_webhook(base, "/twilio/status?attempt=1", {"CallSid": sid, "CallStatus": "ringing"})
        ended = await post_webhook(base, "/twilio/status?attempt=1", {"CallSid": sid, "CallStatus": "no-answer"})
        late = await post_webhook(base, "/twilio/status?attempt=1", {"CallSid": sid, "CallStatus": "completed"})
    assert (ringing.status_code, ended.status_code, late.status_code) == (204, 204, 204)
    attempt = await read(settings, Attempt, 1)
    contact = await read(settings, Contact, contact_id)
    assert isinstance(attempt, Attempt) and isinstance(contact, Contact)
    assert (attempt.status, attempt.disposition) == ("no-answer", "no-answer")  # a late callback changes nothing
    assert contact.status == "pending" and contact.disposition == "no-answer"
    due = contact.next_attempt_at if contact.next_attempt_at.tzinfo else contact.next_attempt_at.replace(tzinfo=UTC)
    assert before + timedelta(minutes=90) <= due <= datetime.now(UTC) + timedelta(minutes=90)


@pytest.mark.parametrize("action", ["voicemail", "hangup"])
async def test_a_machine_gets_the_campaigns_voicemail_or_a_hang_up(tmp_path: Path, action: str) -> None:
    settings = make_settings(tmp_path, realtime_url="ws://127.0.0.1:9/v1", dialer_in_process=False)
    _, _, (sid,) = await seed(settings, machine_action=action)
    with respx.mock(assert_all_called=False) as mock:
        mock.route(host="127.0.0.1").pass_through()
        route = mock.post(f"{TWILIO_API}/2010-04-01/Accounts/{ACCOUNT_SID}/Calls/{sid}.json").respond(
            200, json={"sid": sid, "status": "in-progress"}
        )
        async with serve(settings) as base:
            human = await post_webhook(base, "/twilio/amd?attempt=1", {"CallSid": sid, "AnsweredBy": "human"})
            assert human.status_code == 204 and route.call_count == 0  # a person: the agent talks
            machine = await post_webhook(
                base, "/twilio/amd?attempt=1", {"CallSid": sid, "AnsweredBy": "machine_end_beep"}
            )
    assert machine.status_code == 204 and route.call_count == 1
    form = parse_qs(route.calls.last.request.content.decode())
    if action == "voicemail":
        twiml = form["Twiml"][0]
        assert "Acme Dental" in twiml and "2 1 2 5 5 5 0 1 0 0" in twiml and twiml.endswith("<Hangup /></Response>")
    else:
        assert form == {"Status": ["completed"]}
    attempt = await read(settings, Attempt, 1)
    assert isinstance(attempt, Attempt) and attempt.answered_by == "machine_end_beep"


async def test_a_fax_is_hung_up_on_whatever_the_campaign_does_with_machines(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, realtime_url="ws://127.0.0.1:9/v1", dialer_in_process=False)
    _, _, (sid,) = await seed(settings, machine_action="voicemail")
    with respx.mock(assert_all_called=False) as mock:
        mock.route(host="127.0.0.1").pass_through()
        route = mock.post(f"{TWILIO_API}/2010-04-01/Accounts/{ACCOUNT_SID}/Calls/{sid}.json").respond(
            200, json={"sid": sid, "status": "completed"}
        )
        async with serve(settings) as base:
            fax = await post_webhook(base, "/twilio/amd?attempt=1", {"CallSid": sid, "AnsweredBy": "fax"})
            await post_webhook(base, "/twilio/status?attempt=1", {"CallSid": sid, "CallStatus": "completed"})
    assert fax.status_code == 204 and route.call_count == 1
    assert parse_qs(route.calls.last.request.content.decode()) == {"Status": ["completed"]}  # no voicemail to a fax
    attempt = await read(settings, Attempt, 1)
    assert isinstance(attempt, Attempt) and (attempt.answered_by, attempt.disposition) == ("fax", "machine")


async def test_progress_reports_the_30_day_abandonment_rate(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, realtime_url="ws://127.0.0.1:9/v1", dialer_in_process=False)
    campaign_id, _, sids = await seed(settings, attempts=3)
    engine = make_engine(settings.effective_database_url)
    sessionmaker = make_sessionmaker(engine)
    for sid, first_words_ms in ((sids[0], 600), (sids[1], 3500)):  # the second caller heard silence too long
        line = TranscriptLine(1, "agent", "Hello, this is Acme Dental.", first_words_ms)
        await archive_call(sessionmaker, CallRecord(call_sid=sid, direction="outbound", started_at=NOW, lines=[line]))
    await engine.dispose()
    key = await key_for(settings.effective_database_url, Role.ops)
    async with serve(settings) as base:
        for sid, status in ((sids[0], "completed"), (sids[1], "completed"), (sids[2], "busy")):
            await post_webhook(base, "/twilio/status", {"CallSid": sid, "CallStatus": status})
        async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {key}"}) as api:
            progress = (await api.get(f"/api/v1/campaigns/{campaign_id}/progress")).json()
    assert progress["attempts"] == {"answered": 2, "busy": 1}
    assert (progress["answered_30d"], progress["abandoned_30d"], progress["abandonment_rate_30d"]) == (2, 1, 0.5)
