"""A whole call lands in the SQL archive with its transcript, readable through the supervisor API."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import pytest

from app.auth.keys import Role
from app.emulator.config import EmulatorConfig
from app.emulator.server import RealtimeEmulator
from tests.support import TwilioStream, agent_turn_played, key_for, make_settings, open_call, say_turn, serve

pytestmark = [pytest.mark.asyncio, pytest.mark.e2e]


@pytest.fixture(params=["sqlite+in-process-redis", "postgresql+redis"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str | None]:
    if request.param.startswith("sqlite"):
        return {"database_url": None, "redis_url": None}
    return {"database_url": request.getfixturevalue("postgres_url"), "redis_url": request.getfixturevalue("redis_url")}


async def test_a_finished_call_is_archived_with_its_whole_transcript(
    tmp_path: Path, backend: dict[str, str | None]
) -> None:
    config = EmulatorConfig(
        tts="synthetic",
        transcripts=["I would like to book a cleaning"],
        reply_text=lambda heard: "Sure, I can help you book a cleaning.",
    )
    async with RealtimeEmulator(config) as emulator:
        settings = make_settings(tmp_path, realtime_url=emulator.url, **backend)
        key = await key_for(settings.effective_database_url, Role.supervisor)
        n = uuid.uuid4().int % (1 << 64)
        async with serve(settings) as base:
            sid, token = await open_call(base, n)
            async with TwilioStream.open(base, call_sid=sid, token=token, auto_ack=True) as tw:
                session = await emulator.wait_for_session(0)
                await agent_turn_played(tw, session)
                await say_turn(tw)
                await session.wait_sent(lambda e: e["type"] == "response.done" and "book a cleaning" in str(e))
                await tw.wait_nth(lambda m: m["event"] == "mark", 1, start=len(tw.received))
                await tw.stop()
                await tw.wait_closed()
            async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {key}"}) as api:
                detail = (await api.get(f"/api/v1/calls/{sid}")).json()
                listing = (await api.get("/api/v1/calls", params={"limit": 5})).json()
    assert detail["call_sid"] == sid and detail["direction"] == "inbound"
    assert detail["from_number"] == "+15005550006"
    lines = [(s["speaker"], s["text"]) for s in detail["transcript"]]
    assert lines[0][0] == "agent" and "Acme Dental" in lines[0][1]
    assert ("caller", "I would like to book a cleaning") in lines
    assert ("agent", "Sure, I can help you book a cleaning.") in lines
    offsets = [s["offset_ms"] for s in detail["transcript"]]
    assert offsets == sorted(offsets)
    assert [s["seq"] for s in detail["transcript"]] == list(range(1, len(lines) + 1))
    assert detail["end_reason"] == "caller hung up"
    assert any(e["kind"] == "response_usage" for e in detail["events"])
    assert sid in [c["call_sid"] for c in listing["items"]]
