"""An answered campaign call: the agent identifies the business with the callback number, offers the
opt-out on marketing calls, and the opt-out key blocks the number for every campaign at once."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import httpx
import pytest

from app.auth.keys import Role
from app.db import make_engine, make_sessionmaker
from app.dialer.location import locate
from app.dialer.models import Attempt, Campaign, ConsentRecord, Contact, NationalDncImport
from app.dialer.service import location_to_dict
from app.emulator.audio import SpeechSynth
from app.emulator.cascade import CascadeStages
from app.emulator.config import EmulatorConfig
from app.emulator.server import RealtimeEmulator
from tests.support import TwilioStream, key_for, make_settings, post_webhook, serve, serve_asgi, twiml_stream

pytestmark = [pytest.mark.asyncio, pytest.mark.e2e]

CALLEE = "+12125550123"
NOW = datetime(2026, 7, 1, 16, 0, tzinfo=UTC)


async def seed(database_url: str, answered_by: str | None = None) -> tuple[int, int, int]:
    engine = make_engine(database_url)
    try:
        async with make_sessionmaker(engine)() as session:
            campaigns = [
                Campaign(name=name, purpose="marketing", subject=name, caller_id="+12125550100", status="running",
                         instructions="Offer the summer cleaning special.", created_at=NOW, updated_at=NOW,
                         engine=answered_by)
                for name in ("summer", "autumn")
            ]  # fmt: skip
            session.add_all(campaigns)
            await session.flush()
            contacts = [
                Contact(campaign_id=c.id, phone=CALLEE, location=location_to_dict(locate(CALLEE)), created_at=NOW)
                for c in campaigns
            ]
            session.add_all(contacts)
            session.add(ConsentRecord(phone=CALLEE, kind="written", source="web form", recorded_at=NOW))
            session.add(NationalDncImport(as_of=date(2026, 6, 25), numbers=0, imported_at=NOW))
            await session.flush()
            attempt = Attempt(campaign_id=campaigns[0].id, contact_id=contacts[0].id, phone=CALLEE, subject="summer",
                              purpose="marketing", placed_at=NOW, status="queued", call_sid="CA" + "7" * 32)  # fmt: skip
            session.add(attempt)
            await session.commit()
            return attempt.id, campaigns[1].id, contacts[1].id
    finally:
        await engine.dispose()


async def test_an_answered_marketing_call_identifies_offers_opt_out_and_the_key_blocks_every_campaign(
    tmp_path: Path,
) -> None:
    async with RealtimeEmulator(EmulatorConfig(tts="synthetic")) as emulator:
        settings = make_settings(tmp_path, realtime_url=emulator.url)
        attempt_id, other_campaign, other_contact = await seed(settings.effective_database_url)
        key = await key_for(settings.effective_database_url, Role.ops)
        async with serve(settings) as base:
            sid = "CA" + "7" * 32
            answered = await post_webhook(
                base,
                f"/twilio/outbound?attempt={attempt_id}",
                {"CallSid": sid, "From": "+12125550100", "To": CALLEE, "Direction": "outbound-api"},
            )
            assert answered.status_code == 200, answered.text
            _, params = twiml_stream(answered.text)
            assert params["direction"] == "outbound"
            custom = {"direction": "outbound"}
            async with TwilioStream.open(base, call_sid=sid, token=params["token"], custom=custom, auto_ack=True) as tw:
                session = await emulator.wait_for_session(0)
                update = await session.wait_for(lambda e: e["type"] == "session.update")
                greeting = await session.wait_for(lambda e: e["type"] == "response.create")
                await tw.dtmf("9")
                await session.wait_for(lambda e: e["type"] == "conversation.item.create")
                await tw.stop()
                await tw.wait_closed()
            async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {key}"}) as api:
                decision = (
                    await api.get(
                        f"/api/v1/campaigns/{other_campaign}/contacts/{other_contact}/decision",
                        params={"at": "2026-07-01T16:00:00Z"},
                    )
                ).json()
                dnc = (await api.get(f"/api/v1/dnc/{CALLEE}")).json()
    said = greeting["response"]["instructions"]
    assert "Switchboard" not in said or "Acme Dental" in said
    assert "Acme Dental" in said and "212-555-0100" in said and "press 9" in said
    assert "summer cleaning special" in update["session"]["instructions"]
    assert decision["outcome"] == "deny" and decision["reasons"][0]["code"] == "consent.revoked"
    assert dnc["internal"] is True


async def test_a_campaign_that_chose_the_cascaded_engine_speaks_its_identification_word_for_word(
    tmp_path: Path,
) -> None:
    config = EmulatorConfig(tts="synthetic")
    async with (
        RealtimeEmulator(config) as emulator,
        serve_asgi((stages := CascadeStages(config, SpeechSynth(mode="synthetic"))).app) as stages_base,
    ):
        # The deployment's engine is Realtime: the campaign's choice wins for its calls.
        settings = make_settings(tmp_path, realtime_url=emulator.url, stt_url=emulator.url,
                                 chat_base_url=f"{stages_base}/v1", tts_base_url=f"{stages_base}/v1")  # fmt: skip
        attempt_id, _, _ = await seed(settings.effective_database_url, answered_by="cascaded")
        async with serve(settings) as base:
            sid = "CA" + "7" * 32
            answered = await post_webhook(
                base,
                f"/twilio/outbound?attempt={attempt_id}",
                {"CallSid": sid, "From": "+12125550100", "To": CALLEE, "Direction": "outbound-api"},
            )
            _, params = twiml_stream(answered.text)
            custom = {"direction": "outbound"}
            async with TwilioStream.open(base, call_sid=sid, token=params["token"], custom=custom, auto_ack=True) as tw:
                session = await emulator.wait_for_session(0)
                await tw.wait_for(lambda m: m["event"] == "media")
                await tw.dtmf("9")
                await tw.wait_for(lambda m: bool(stages.chats))
                await tw.stop()
                await tw.wait_closed()
    assert session.transcription_only  # the campaign's call is heard by a transcription session
    assert stages.speeches[0].body["input"] == (
        "Hello, this is an automated call from Acme Dental. You can call us back at 212-555-0100. "
        "If you do not want these calls, say stop or press 9 and we will not call you again."
    )
    system = stages.chats[0].body["messages"][0]["content"]
    assert "summer cleaning special" in system and "212-555-0100" in system
    assert "press" in stages.chats[0].body["messages"][-1]["content"]  # the key press, told to the model
