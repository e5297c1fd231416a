"""A server process killed mid-call (SIGKILL, a real subprocess): another one resumes the call."""

from __future__ import annotations

import signal
import uuid
from pathlib import Path

import pytest

from app.emulator.config import EmulatorConfig
from app.emulator.server import RealtimeEmulator
from tests.calls.test_resilience_e2e import restored_before_audio, talk_a_little
from tests.support import (
    TwilioStream,
    agent_turn_played,
    archived,
    lines_stored,
    make_settings,
    open_call,
    post_webhook,
    say_turn,
    server_process,
    twiml_stream,
)

pytestmark = [pytest.mark.asyncio, pytest.mark.e2e, pytest.mark.redis, pytest.mark.postgres]


async def test_a_call_survives_its_server_being_killed(tmp_path: Path, redis_url: str, postgres_url: str) -> None:
    config = EmulatorConfig(
        tts="synthetic",
        transcripts=["I need a cleaning", "Tuesday works"],
        reply_text=lambda heard: f"Noted: {heard}.",
    )
    async with RealtimeEmulator(config) as emulator:
        settings = make_settings(tmp_path, realtime_url=emulator.url, redis_url=redis_url, database_url=postgres_url)
        n = uuid.uuid4().int % (1 << 96)
        with server_process(settings) as (base_a, node_a):
            sid, token = await open_call(base_a, n)
            async with TwilioStream.open(base_a, call_sid=sid, token=token, auto_ack=True) as tw:
                first = await emulator.wait_for_session(0)
                await talk_a_little(tw, first)
                await lines_stored(redis_url, sid, 3)
                node_a.send_signal(signal.SIGKILL)
                node_a.wait(timeout=10)
                await tw.wait_closed()
            assert tw.close_code == 1006  # the node vanished without a close frame
        with server_process(settings) as (base_b, _node_b):
            # Twilio runs the <Redirect> after </Connect>: the resume webhook, on any node.
            resume = await post_webhook(base_b, "/twilio/resume", {"CallSid": sid})
            url, params = twiml_stream(resume.text)
            assert url == "wss://sb.example.test/twilio/media"
            async with TwilioStream.open(base_b, call_sid=sid, token=params["token"], auto_ack=True) as tw2:
                second = await emulator.wait_for_session(1)
                await say_turn(tw2)
                await agent_turn_played(tw2, second, 0)
                await tw2.stop()
                await tw2.wait_closed()
            record = await archived(base_b, settings, sid)
    restored = restored_before_audio(second)
    assert [e["type"] for e in restored] == ["session.update"] + ["conversation.item.create"] * 3
    assert not any(e["type"] == "response.create" for e in second.received)  # no second greeting
    lines = [(s["speaker"], s["text"]) for s in record["transcript"]]
    assert lines[0][0] == "agent" and "Acme Dental" in lines[0][1]
    assert lines[1:] == [
        ("caller", "I need a cleaning"),
        ("agent", "Noted: I need a cleaning."),
        ("caller", "Tuesday works"),
        ("agent", "Noted: Tuesday works."),
    ]
    assert sum("Acme Dental" in text for _, text in lines) == 1
    kinds = [e["kind"] for e in record["events"]]
    # "stream_took_over" too when the dead node's lease had not yet lapsed (6 s), which a slow machine
    # may not manage: resuming must not depend on it.
    assert "stream_resumed" in kinds and record["status"] == "completed"
