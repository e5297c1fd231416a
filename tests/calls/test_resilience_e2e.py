"""Calls survive a dropped, expired or aged Realtime session, and duplicate streams (real Redis)."""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.auth.keys import Role
from app.emulator.config import EmulatorConfig
from app.emulator.server import RealtimeEmulator
from app.emulator.session import EmulatedSession
from tests.calls.test_archive_e2e import key_for
from tests.calls.test_tools_e2e import say_turn
from tests.support import (
    TwilioStream,
    agent_turn_played,
    make_settings,
    open_call,
    post_webhook,
    serve,
    tone_frames,
    twiml_stream,
)

pytestmark = [pytest.mark.asyncio, pytest.mark.e2e, pytest.mark.redis]


def unique_call() -> int:
    return uuid.uuid4().int % (1 << 96)


def conversation(config_transcripts: list[str]) -> EmulatorConfig:
    return EmulatorConfig(tts="synthetic", transcripts=config_transcripts, reply_text=lambda heard: f"Noted: {heard}.")


async def archived(base: str, settings: Any, sid: str) -> dict[str, Any]:
    key = await key_for(settings.effective_database_url, Role.supervisor)
    async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {key}"}) as api:
        response = await api.get(f"/api/v1/calls/{sid}")
    assert response.status_code == 200, response.text
    return response.json()


async def metric(base: str, name: str) -> float:
    async with httpx.AsyncClient(base_url=base) as client:
        text = (await client.get("/metrics")).text
    total = 0.0
    for match in re.finditer(rf"^{re.escape(name)}(?:{{[^}}]*}})? ([0-9.e+-]+)$", text, re.MULTILINE):
        total += float(match.group(1))
    return total


def restored_before_audio(session: EmulatedSession) -> list[dict[str, Any]]:
    """The client events a new session got before its first audio append."""
    before: list[dict[str, Any]] = []
    for event in session.received:
        if event["type"] == "input_audio_buffer.append":
            break
        before.append(event)
    return before


async def talk_a_little(tw: TwilioStream, session: EmulatedSession) -> None:
    """Greeting heard, one caller turn, the agent's answer heard."""
    await agent_turn_played(tw, session, 0)
    await say_turn(tw)
    await agent_turn_played(tw, session, 1)


@pytest.mark.parametrize("close_code", [1006, 1011])
async def test_a_dropped_realtime_socket_is_replaced_and_the_call_goes_on(
    tmp_path: Path, redis_url: str, close_code: int
) -> None:
    async with RealtimeEmulator(conversation(["I need a cleaning", "Tuesday works"])) as emulator:
        settings = make_settings(tmp_path, realtime_url=emulator.url, redis_url=redis_url, audio_format="pcmu")
        async with serve(settings) as base:
            sid, token = await open_call(base, unique_call())
            gap = b"".join(tone_frames(600, 0.4))
            async with TwilioStream.open(base, call_sid=sid, token=token, auto_ack=True) as tw:
                first = await emulator.wait_for_session(0)
                await talk_a_little(tw, first)
                await first.drop(close_code)
                for i in range(0, len(gap), 160):  # the caller keeps talking through the gap
                    await tw.media(gap[i : i + 160])
                second = await emulator.wait_for_session(1)
                await second.wait_for(lambda e: e["type"] == "input_audio_buffer.append")
                await say_turn(tw)
                await agent_turn_played(tw, second, 0)
                await tw.stop()
                await tw.wait_closed()
            recoveries = await metric(base, "switchboard_upstream_recovery_seconds_count")
            record = await archived(base, settings, sid)
    restored = restored_before_audio(second)
    assert restored[0]["type"] == "session.update"
    items = [e["item"] for e in restored[1:] if e["type"] == "conversation.item.create"]
    assert [(i["role"], i["content"][0]["type"]) for i in items] == [
        ("assistant", "output_text"),
        ("user", "input_text"),
        ("assistant", "output_text"),
    ]
    assert "Acme Dental" in items[0]["content"][0]["text"] and items[1]["content"][0]["text"] == "I need a cleaning"
    assert not any(e["type"] == "response.create" for e in restored)  # no second greeting
    assert gap in bytes(second.audio_in)  # caller audio from the gap reached the new session
    assert recoveries == 1
    events = {e["kind"]: e["detail"] for e in record["events"]}
    assert events["upstream_lost"]["reason"] == f"closed {close_code}"
    assert events["upstream_recovered"]["recovery_ms"] >= 0
    lines = [(s["speaker"], s["text"]) for s in record["transcript"]]
    assert lines[1:] == [
        ("caller", "I need a cleaning"),
        ("agent", "Noted: I need a cleaning."),
        ("caller", "Tuesday works"),
        ("agent", "Noted: Tuesday works."),
    ]
    assert record["status"] == "completed"


async def test_session_expired_is_replaced_the_same_way(tmp_path: Path, redis_url: str) -> None:
    async with RealtimeEmulator(conversation(["I need a cleaning"])) as emulator:
        settings = make_settings(tmp_path, realtime_url=emulator.url, redis_url=redis_url)
        async with serve(settings) as base:
            sid, token = await open_call(base, unique_call())
            async with TwilioStream.open(base, call_sid=sid, token=token, auto_ack=True) as tw:
                first = await emulator.wait_for_session(0)
                await talk_a_little(tw, first)
                await first.expire()
                second = await emulator.wait_for_session(1)
                await second.wait_for(lambda e: e["type"] == "input_audio_buffer.append")
                await tw.stop()
                await tw.wait_closed()
            record = await archived(base, settings, sid)
    assert first.server_close_code == 1001
    restored = restored_before_audio(second)
    assert [e["type"] for e in restored] == ["session.update"] + ["conversation.item.create"] * 3
    events = {e["kind"]: e["detail"] for e in record["events"]}
    assert events["upstream_lost"]["reason"] == "session_expired"


async def test_an_aged_session_rolls_over_at_a_quiet_moment_without_a_gap(tmp_path: Path, redis_url: str) -> None:
    async with RealtimeEmulator(conversation([])) as emulator:
        settings = make_settings(tmp_path, realtime_url=emulator.url, redis_url=redis_url, realtime_session_max_s=0.5)
        async with serve(settings) as base:
            sid, token = await open_call(base, unique_call())
            async with TwilioStream.open(base, call_sid=sid, token=token, auto_ack=True) as tw:
                first = await emulator.wait_for_session(0)
                await agent_turn_played(tw, first, 0)
                second = await emulator.wait_for_session(1)  # rolled over once the greeting had played
                await second.wait_for(lambda e: e["type"] == "session.update")
                await tw.stop()
                await tw.wait_closed()
            record = await archived(base, settings, sid)
    kinds = [e["kind"] for e in record["events"]]
    assert "upstream_rollover" in kinds
    rollover_at = kinds.index("upstream_rollover")
    recovered = next(e for e in record["events"][rollover_at:] if e["kind"] == "upstream_recovered")
    # Nothing was playing and the caller was silent; the swap took less than the first backoff step.
    assert recovered["detail"]["recovery_ms"] < 250
    greeting_requests = [e for e in first.received + second.received if e["type"] == "response.create"]
    assert len(greeting_requests) == 1


async def test_a_second_stream_for_a_live_call_is_refused_and_a_resume_stream_takes_over(
    tmp_path: Path, redis_url: str
) -> None:
    async with RealtimeEmulator(conversation([])) as emulator:
        settings = make_settings(tmp_path, realtime_url=emulator.url, redis_url=redis_url)
        async with serve(settings) as base:
            sid, token = await open_call(base, unique_call())
            async with TwilioStream.open(base, call_sid=sid, token=token, auto_ack=True) as first:
                session = await emulator.wait_for_session(0)
                await agent_turn_played(first, session, 0)
                # Same CallSid, a fresh (valid) stream token: never two streams driving one call.
                _, token2 = await open_call(base, int(sid[2:], 16))
                async with TwilioStream.open(base, call_sid=sid, token=token2) as second:
                    await second.wait_closed()
                assert (second.close_code, second.close_reason) == (1008, "call already has an active media stream")
                # Twilio runs the <Redirect> when it has lost a stream: that stream may take over.
                resume = await post_webhook(base, "/twilio/resume", {"CallSid": sid})
                _, params = twiml_stream(resume.text)
                async with TwilioStream.open(base, call_sid=sid, token=params["token"], auto_ack=True) as third:
                    await first.wait_closed()
                    assert (first.close_code, first.close_reason) == (1008, "call taken over by another stream")
                    replacement = await emulator.wait_for_session(1)
                    await replacement.wait_for(lambda e: e["type"] == "session.update")
                    await third.stop()
                    await third.wait_closed()
            record = await archived(base, settings, sid)
    assert len(emulator.sessions) == 2  # the refused stream never opened a Realtime session
    kinds = [e["kind"] for e in record["events"]]
    assert "stream_took_over" in kinds and "stream_resumed" in kinds
    assert [s["speaker"] for s in record["transcript"]] == ["agent"]  # one greeting, not two
