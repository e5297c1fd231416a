"""Calls survive a dropped, expired or aged Realtime session, and duplicate streams (real Redis)."""

from __future__ import annotations

import asyncio
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from app.calls.tools import AgentTool, ToolContext, ToolRegistry
from app.emulator.config import EmulatorConfig
from app.emulator.server import RealtimeEmulator
from app.emulator.session import EmulatedSession
from tests.support import (
    TwilioStream,
    agent_turn_played,
    archived,
    lines_stored,
    make_settings,
    metric,
    open_call,
    post_webhook,
    say_turn,
    serve,
    tone_frames,
    twiml_stream,
)

pytestmark = [pytest.mark.asyncio, pytest.mark.e2e, pytest.mark.redis]


def unique_call() -> int:
    return uuid.uuid4().int % (1 << 96)


def conversation(config_transcripts: list[str]) -> EmulatorConfig:
    return EmulatorConfig(tts="synthetic", transcripts=config_transcripts, reply_text=lambda heard: f"Noted: {heard}.")


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
                # Heard whole is not yet written whole: the answer's transcript may still be on its way to the
                # server when its audio has played. Hang up once all five lines are in the live state.
                await lines_stored(redis_url, sid, 5)
                await tw.stop()
                await tw.wait_closed()
            recoveries = await metric(base, "switchboard_upstream_recovery_seconds_count")
            record = await archived(base, settings, sid)
            held = await metric(base, "switchboard_caller_frames_held_total")
            replayed = await metric(base, "switchboard_caller_frames_replayed_total")
            dropped = await metric(base, "switchboard_caller_frames_dropped_total")
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
    # the metrics say what the bridge held and replayed (events), counted once a session is ready
    assert replayed == sum(e["detail"]["frames"] for e in record["events"] if e["kind"] == "caller_audio_replayed") > 0
    assert dropped == 0
    assert 0 <= replayed - held <= 25  # replayed = every held frame + the last 500 ms re-sent after the loss
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
    # Nothing was playing and the caller was silent; the new session was opened at the first attempt.
    assert recovered["detail"]["attempts"] == 1
    greeting_requests = [e for e in first.received + second.received if e["type"] == "response.create"]
    assert len(greeting_requests) == 1


async def test_a_live_call_gets_no_second_stream_and_its_tokens_admit_one_stream_each(
    tmp_path: Path, redis_url: str
) -> None:
    async with RealtimeEmulator(conversation([])) as emulator:
        settings = make_settings(
            tmp_path, realtime_url=emulator.url, redis_url=redis_url, lease_ttl_s=2.0, lease_renew_s=0.5
        )
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
                # A copy of the first stream's token is refused outright: a token admits one stream.
                async with TwilioStream.open(base, call_sid=sid, token=token) as replay:
                    await replay.wait_closed()
                assert (replay.close_code, replay.close_reason) == (1008, "stream token already used")
                # While the stream renews its lease, /twilio/resume hands out no token for the call.
                refused = await post_webhook(base, "/twilio/resume", {"CallSid": sid})
                assert refused.status_code == 409, refused.text
                # Twilio loses the stream (no stop): the node lets go of the lease at once, and the
                # <Redirect> to /twilio/resume gets a resume token for a new stream.
                await first.ws.close()
                await first.wait_closed()
            resume = await post_webhook(base, "/twilio/resume", {"CallSid": sid})
            _, params = twiml_stream(resume.text)
            async with TwilioStream.open(base, call_sid=sid, token=params["token"], auto_ack=True) as third:
                replacement = await emulator.wait_for_session(1)
                await replacement.wait_for(lambda e: e["type"] == "session.update")
                await third.stop()
                await third.wait_closed()
            async with TwilioStream.open(base, call_sid=sid, token=params["token"]) as again:
                await again.wait_closed()
            record = await archived(base, settings, sid)
    assert (again.close_code, again.close_reason) == (1008, "stream token already used")
    assert len(emulator.sessions) == 2  # the refused streams never opened a Realtime session
    kinds = [e["kind"] for e in record["events"]]
    assert "stream_resumed" in kinds
    assert [s["speaker"] for s in record["transcript"]] == ["agent"]  # one greeting, not two


@pytest.mark.parametrize("transfer_number", ["+15550001111", None])
async def test_past_the_reconnect_deadline_the_caller_hears_an_apology_and_is_handed_over(
    tmp_path: Path, redis_url: str, transfer_number: str | None
) -> None:
    emulator = RealtimeEmulator(conversation([]))
    await emulator.start()
    settings = make_settings(
        tmp_path,
        realtime_url=emulator.url,
        redis_url=redis_url,
        upstream_recovery_deadline_s=1.0,
        transfer_number=transfer_number,
    )
    async with serve(settings) as base:
        sid, token = await open_call(base, unique_call())
        async with TwilioStream.open(base, call_sid=sid, token=token, auto_ack=True) as tw:
            session = await emulator.wait_for_session(0)
            await agent_turn_played(tw, session, 0)
            await emulator.close()  # the Realtime service is gone and stays gone
            await tw.wait_closed()
        resume = await post_webhook(base, "/twilio/resume", {"CallSid": sid})
        record = await archived(base, settings, sid)
    assert (tw.close_code, tw.close_reason) == (1000, "realtime unavailable")
    root = ET.fromstring(resume.text)
    if transfer_number:
        assert [c.tag for c in root] == ["Say", "Dial"]
        assert root.find("./Dial/Number").text == transfer_number  # type: ignore[union-attr]
    else:
        assert [c.tag for c in root] == ["Say", "Hangup"]
    assert record["status"] == "failed"
    assert record["end_reason"] == "realtime unavailable past the reconnect deadline"
    failed = next(e for e in record["events"] if e["kind"] == "upstream_failed")
    assert failed["detail"]["transfer_to"] == transfer_number


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        ("refuse_session_updates", "session.update refused: unknown_parameter"),
        ("unconfirmed_session_updates", "no session.updated within 2000 ms"),
    ],
)
async def test_a_session_that_refuses_or_never_confirms_its_configuration_is_replaced_before_anything_is_said(
    tmp_path: Path, redis_url: str, fault: str, reason: str
) -> None:
    config = conversation([])
    setattr(config.faults, fault, 1)
    async with RealtimeEmulator(config) as emulator:
        settings = make_settings(tmp_path, realtime_url=emulator.url, redis_url=redis_url, audio_format="pcmu")
        async with serve(settings) as base:
            sid, token = await open_call(base, unique_call())
            async with TwilioStream.open(base, call_sid=sid, token=token, auto_ack=True) as tw:
                second = await emulator.wait_for_session(1)
                await agent_turn_played(tw, second, 0)
                await tw.stop()
                await tw.wait_closed()
            record = await archived(base, settings, sid)
    first = emulator.sessions[0]
    # The replaced session was sent its configuration and nothing else: no greeting on defaults.
    assert [e["type"] for e in first.received] == ["session.update"]
    assert second.session_config["audio"]["input"]["format"] == {"type": "audio/pcmu"}
    failed = next(e for e in record["events"] if e["kind"] == "session_config_failed")
    assert failed["detail"]["reason"] == reason
    kinds = [e["kind"] for e in record["events"]]
    assert kinds.index("session_config_failed") < kinds.index("upstream_recovered")
    assert sum("Acme Dental" in s["text"] for s in record["transcript"]) == 1


async def test_a_configuration_refused_by_three_sessions_in_a_row_hands_the_call_off(
    tmp_path: Path, redis_url: str
) -> None:
    config = conversation([])
    config.faults.refuse_session_updates = 3
    async with RealtimeEmulator(config) as emulator:
        settings = make_settings(tmp_path, realtime_url=emulator.url, redis_url=redis_url,
                                 transfer_number="+15550001111")  # fmt: skip
        async with serve(settings) as base:
            sid, token = await open_call(base, unique_call())
            async with TwilioStream.open(base, call_sid=sid, token=token, auto_ack=True) as tw:
                await tw.wait_closed(timeout=30)
            resume = await post_webhook(base, "/twilio/resume", {"CallSid": sid})
            record = await archived(base, settings, sid)
    assert len(emulator.sessions) == 3 and (tw.close_code, tw.close_reason) == (1000, "realtime unavailable")
    assert [c.tag for c in ET.fromstring(resume.text)] == ["Say", "Dial"]
    failed = next(e for e in record["events"] if e["kind"] == "upstream_failed")
    assert "refused 3 times" in failed["detail"]["error"]


@pytest.mark.parametrize(("fault", "status"), [("fail_responses", "failed"), ("cut_responses", "incomplete")])
async def test_a_failed_greeting_is_asked_for_again_and_a_model_that_keeps_failing_hands_the_call_off(
    tmp_path: Path, redis_url: str, fault: str, status: str
) -> None:
    """A response that fails (a server error) or is cut short for its content leaves no silence: it is
    asked for once more, and a model that keeps failing hands the call off."""
    config = conversation([])
    setattr(config.faults, fault, 1)
    async with RealtimeEmulator(config) as emulator:
        settings = make_settings(tmp_path, realtime_url=emulator.url, redis_url=redis_url,
                                 transfer_number="+15550001111")  # fmt: skip
        async with serve(settings) as base:
            sid, token = await open_call(base, unique_call())
            async with TwilioStream.open(base, call_sid=sid, token=token, auto_ack=True) as tw:
                session = await emulator.wait_for_session(0)
                await agent_turn_played(tw, session, 1)  # the failed greeting, then the greeting
                setattr(config.faults, fault, 2)  # from here the model cannot answer at all
                await say_turn(tw)
                await tw.wait_closed(timeout=30)
            resume = await post_webhook(base, "/twilio/resume", {"CallSid": sid})
            record = await archived(base, settings, sid)
    statuses = [e["response"]["status"] for e in session.sent if e["type"] == "response.done"]
    assert statuses == [status, "completed", status, status]
    assert sum("Acme Dental" in s["text"] for s in record["transcript"]) == 1
    kinds = [e["kind"] for e in record["events"]]
    assert "response_retried" in kinds and "responses_failing" in kinds
    assert record["status"] == "failed" and record["end_reason"].startswith("handed off")
    assert [c.tag for c in ET.fromstring(resume.text)] == ["Say", "Dial"]  # an apology, then a person


async def test_an_untranscribable_turn_is_in_the_transcript_and_a_late_one_in_its_place(
    tmp_path: Path, redis_url: str
) -> None:
    config = conversation(["(mumbled)", "When do you open?"])
    config.faults.fail_transcriptions = 1
    async with RealtimeEmulator(config) as emulator:
        settings = make_settings(tmp_path, realtime_url=emulator.url, redis_url=redis_url)
        async with serve(settings) as base:
            sid, token = await open_call(base, unique_call())
            async with TwilioStream.open(base, call_sid=sid, token=token, auto_ack=True) as tw:
                session = await emulator.wait_for_session(0)
                await agent_turn_played(tw, session, 0)
                await say_turn(tw)  # not transcribed
                await agent_turn_played(tw, session, 1)
                config.faults.late_transcript_s = 1.0  # the next transcript lands after the answer began
                await say_turn(tw)
                await agent_turn_played(tw, session, 2)
                await session.wait_sent(lambda e: e["type"] == "conversation.item.input_audio_transcription.completed")
                await tw.stop()
                await tw.wait_closed()
            record = await archived(base, settings, sid)
    lines = [(s["speaker"], s["text"]) for s in record["transcript"]]
    assert [speaker for speaker, _ in lines] == ["agent", "caller", "agent", "caller", "agent"], lines
    assert lines[1][1] == "[the caller spoke; it could not be transcribed]"
    assert lines[3][1] == "When do you open?"  # before the answer it prompted, though it arrived after
    assert "transcription_failed" in [e["kind"] for e in record["events"]]


async def test_a_session_rolls_over_ahead_of_its_own_expires_at(tmp_path: Path, redis_url: str) -> None:
    config = conversation([])
    config.faults.session_lifetime_s = 301  # session.created says it ends in 301 s: 5 minutes' margin is past
    async with RealtimeEmulator(config) as emulator:
        settings = make_settings(tmp_path, realtime_url=emulator.url, redis_url=redis_url)  # 55-minute age limit
        async with serve(settings) as base:
            sid, token = await open_call(base, unique_call())
            async with TwilioStream.open(base, call_sid=sid, token=token, auto_ack=True) as tw:
                first = await emulator.wait_for_session(0)
                await agent_turn_played(tw, first, 0)
                config.faults.session_lifetime_s = 3600
                second = await emulator.wait_for_session(1)  # rolled over once the greeting had played
                await second.wait_for(lambda e: e["type"] == "session.update")
                await tw.stop()
                await tw.wait_closed()
            record = await archived(base, settings, sid)
    assert "upstream_rollover" in [e["kind"] for e in record["events"]]
    assert len(emulator.sessions) == 2


async def test_a_tool_that_finishes_after_its_session_was_lost_tells_the_next_session_as_context(
    tmp_path: Path, redis_url: str
) -> None:
    """The real service refuses a function_call_output for a call id its session never saw
    (invalid_tool_call_id), as the emulator does: a result that arrives after the session that asked
    for it was lost reaches the new session as context, and nothing of the old one is sent to it."""
    started, release = asyncio.Event(), asyncio.Event()

    async def slow_lookup(arguments: dict[str, Any], context: ToolContext) -> Any:
        started.set()
        await release.wait()
        return {"balance": "42.00"}

    tools = ToolRegistry()
    tools.add(AgentTool("check_balance", "Look up the balance", {"type": "object", "properties": {}}, slow_lookup))
    config = EmulatorConfig(
        tts="synthetic", transcripts=["what is my balance"], function_calls={"balance": ("check_balance", {})}
    )
    async with RealtimeEmulator(config) as emulator:
        settings = make_settings(tmp_path, realtime_url=emulator.url, redis_url=redis_url)
        async with serve(settings, tools=tools) as base:
            sid, token = await open_call(base, unique_call())
            async with TwilioStream.open(base, call_sid=sid, token=token, auto_ack=True) as tw:
                first = await emulator.wait_for_session(0)
                await agent_turn_played(tw, first, 0)
                await say_turn(tw)
                await asyncio.wait_for(started.wait(), 15)
                await first.drop(1006)
                second = await emulator.wait_for_session(1)
                await second.wait_sent(lambda e: e["type"] == "session.updated")
                release.set()
                note = await second.wait_for(
                    lambda e: e["type"] == "conversation.item.create" and "42.00" in str(e["item"])
                )
                await second.wait_for(lambda e: e["type"] == "response.create", start=second.received.index(note))
                await second.wait_sent(lambda e: e["type"] == "response.done", start=len(second.sent))
                await tw.stop()
                await tw.wait_closed()
            record = await archived(base, settings, sid)
    (asked,) = [e["call_id"] for e in first.sent if e["type"] == "response.function_call_arguments.done"]
    assert note["item"]["type"] == "message" and note["item"]["role"] == "user"
    outputs = [e["item"]["call_id"] for e in second.received if e.get("item", {}).get("type") == "function_call_output"]
    assert asked not in outputs  # (the new session may call the tool again itself: those are its own ids)
    assert [e for e in second.sent if e["type"] == "error"] == []  # no invalid_tool_call_id, nothing refused
    assert (record["tools"][0]["name"], record["tools"][0]["status"]) == ("check_balance", "ok")
