"""Cascaded calls through the real server (uvicorn, real sockets): the Twilio side played by a test stream,
the three stages by the emulator (a transcription session, streamed chat completions, streamed speech)."""

from __future__ import annotations

import asyncio
import json
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

from app.budget.pricing import CLOSING_MAX_OUTPUT_TOKENS
from app.budget.service import WRAP_UP_INSTRUCTIONS
from app.core.audio import AgentAudioPath
from app.emulator.audio import SpeechSynth
from app.emulator.cascade import CascadeStages
from app.emulator.config import EmulatorConfig
from app.emulator.server import RealtimeEmulator
from app.settings import Settings
from app.simulator.audio import synth_speech_mulaw
from app.simulator.conversation import CallScript
from app.simulator.twilio_caller import simulate_call
from tests.budget.test_enforcement_e2e import enforcements
from tests.support import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    SILENCE,
    TWILIO_API,
    TwilioStream,
    archived,
    make_settings,
    metric,
    open_call,
    post_webhook,
    say_turn,
    serve,
    serve_asgi,
    speech_frames,
    twilio_call_route,
)

pytestmark = [pytest.mark.asyncio, pytest.mark.e2e]


@dataclass
class Rig:
    settings: Settings
    base: str
    emulator: RealtimeEmulator
    stages: CascadeStages
    mock: respx.MockRouter


@asynccontextmanager
async def cascaded(tmp_path: Path, config: EmulatorConfig, **overrides: Any) -> AsyncIterator[Rig]:
    async with (
        RealtimeEmulator(config) as emulator,
        serve_asgi((stages := CascadeStages(config, SpeechSynth(mode="synthetic"))).app) as stages_base,
        respx.mock(assert_all_called=False) as mock,
    ):
        mock.route(host="127.0.0.1").pass_through()
        settings = make_settings(
            tmp_path, realtime_url="ws://127.0.0.1:9/v1", engine="cascaded", stt_url=emulator.url,
            chat_base_url=f"{stages_base}/v1", tts_base_url=f"{stages_base}/v1", **overrides,
        )  # fmt: skip
        async with serve(settings) as base:
            yield Rig(settings, base, emulator, stages, mock)


async def until(tw: TwilioStream, predicate: Callable[[], bool], timeout: float = 15.0) -> None:
    async with asyncio.timeout(timeout), tw._new:
        while not predicate():
            await tw._new.wait()


def mulaw_bytes(pcm_lengths: list[int]) -> int:
    """What one agent turn of these speech streams becomes at Twilio: 24 kHz PCM16 -> 8 kHz mu-law, the
    converter drained at the turn's end (its length depends only on the samples, not on how they came)."""
    path = AgentAudioPath("pcm24k")
    return sum(len(path.convert(b"\0" * n)) for n in pcm_lengths) + len(path.drain())


def expected_audio(stages: CascadeStages) -> int:
    """Twilio bytes of every turn spoken so far: the greeting, then each answer (the speeches asked for
    after each chat request)."""
    turns: list[list[int]] = [[]]
    chats = [c.started_at for c in stages.chats]
    for speech in stages.speeches:
        n_turn = sum(1 for started in chats if started <= speech.started_at)
        while len(turns) <= n_turn:
            turns.append([])
        turns[n_turn].append(speech.bytes_sent)
    return sum(mulaw_bytes(t) for t in turns if t)


def heard_all(tw: TwilioStream, stages: CascadeStages) -> Callable[[], bool]:
    """Every turn asked for has been spoken, sent whole and played out (auto_ack: Twilio plays instantly)."""

    def done() -> bool:
        streams = [*stages.speeches, *stages.chats]
        if not streams or not all(s.finished.is_set() for s in streams):
            return False
        return tw.media_bytes() == expected_audio(stages) and tw.acks_sent >= len(tw.marks())

    return done


def reply(heard: str) -> str:
    return f"Thanks for asking. {heard.rstrip('?')}: yes, we can help with that."


async def test_a_cascaded_call_greets_answers_three_turns_archives_both_sides_and_hangs_up_after_goodbye(
    tmp_path: Path,
) -> None:
    said = ["When are you open on Monday?", "Do you take walk-ins?", "That is all, goodbye"]
    config = EmulatorConfig(tts="synthetic", transcripts=list(said), reply_text=reply,
                            function_calls={"goodbye": ("end_call", {"reason": "caller said goodbye"})},
                            tool_call_text={"end_call": "Goodbye, and thanks for calling Acme Dental."})  # fmt: skip
    async with cascaded(tmp_path, config) as rig:
        sid, token = await open_call(rig.base, 1)
        route, hung_up = twilio_call_route(rig.mock, sid)
        async with TwilioStream.open(rig.base, call_sid=sid, token=token, auto_ack=True) as tw:
            await until(tw, heard_all(tw, rig.stages))  # the greeting, heard whole
            for turn in range(3):
                await say_turn(tw)
                await until(tw, lambda turn=turn: len(rig.stages.chats) > turn)  # type: ignore[misc]
                await until(tw, heard_all(tw, rig.stages))
            await asyncio.wait_for(hung_up.wait(), 15)
            await tw.wait_closed()  # the server ends the stream itself, whatever the carrier does
        record = await archived(rig.base, rig.settings, sid)
        stage_turns = await metric(rig.base, "switchboard_turn_stage_seconds_count")
    lines = [(s["speaker"], s["text"], s["interrupted"]) for s in record["transcript"]]
    assert lines == [
        ("agent", "Thank you for calling Acme Dental. How can I help you today?", False),
        ("caller", said[0], False),
        ("agent", reply(said[0]), False),
        ("caller", said[1], False),
        ("agent", reply(said[1]), False),
        ("caller", said[2], False),
        ("agent", "Goodbye, and thanks for calling Acme Dental.", False),
    ]
    assert record["end_reason"] == "agent hung up: caller said goodbye"
    assert route.called
    events = record["events"]
    assert {"engine": "cascaded", "model": "gpt-4.1-mini"} in [e["detail"] for e in events if e["kind"] == "engine"]
    # Every answered turn has its four stages, in order of time.
    stages = [e["detail"] for e in events if e["kind"] == "turn_stage"]
    for turn in {s["turn"] for s in stages}:
        mine = [s for s in stages if s["turn"] == turn]
        assert [s["stage"] for s in mine] == ["transcript", "chat_first_token", "speech_first_bytes", "first_audio"]
        assert [s["ms"] for s in mine] == sorted(s["ms"] for s in mine)
    assert len({s["turn"] for s in stages}) == 3
    assert stage_turns == 12
    # Metered as it came: each chat answer and each spoken clause, at its stage's price.
    kinds = [c["kind"] for c in record["costs"]]
    assert kinds.count("chat") == 3 and kinds.count("speech") >= len(rig.stages.speeches)
    # Speech is charged as it streams, a second at a time: in all, exactly the audio and characters made.
    speech = [e["detail"]["usage"] for e in events if e["kind"] == "speech_usage"]
    assert sum(u["audio_seconds"] for u in speech) == pytest.approx(
        sum(s.bytes_sent for s in rig.stages.speeches) / 48_000
    )
    assert sum(u["characters"] for u in speech) == sum(len(s.body["input"]) for s in rig.stages.speeches)
    assert "transcription" in kinds
    # The chat model was offered the same tools as the Realtime model, in the chat completions shape.
    offered = {t["function"]["name"] for t in rig.stages.chats[0].body["tools"]}
    assert {"end_call", "transfer_to_human", "opt_out"} <= offered


async def test_a_barge_in_clears_twilio_cancels_the_chat_and_speech_streams_and_cuts_the_line_to_what_was_heard(
    tmp_path: Path,
) -> None:
    answer = ("Our hygienists have openings on Tuesday and Thursday mornings. The whole visit takes about forty "
              "minutes. There is a short exam and time for questions at the end.")  # fmt: skip
    # The chat streams slowly (4 words a second) and speech at twice real time: both are mid-stream when the
    # caller speaks over the first sentence.
    config = EmulatorConfig(tts="synthetic", transcripts=["Can I book a cleaning?", "Wait, one question"],
                            reply_text=lambda heard: answer if "cleaning" in heard else "Sure, go ahead.",
                            chat_tokens_per_s=4, speech_speed=2.0)  # fmt: skip
    async with cascaded(tmp_path, config) as rig:
        sid, token = await open_call(rig.base, 2)
        async with TwilioStream.open(rig.base, call_sid=sid, token=token, auto_ack=True) as tw:
            await until(tw, heard_all(tw, rig.stages))  # the greeting
            tw.auto_ack = False  # from here Twilio plays only what the test acknowledges
            session = await rig.emulator.wait_for_session(0)
            await say_turn(tw)
            first = len(tw.received)
            await until(tw, lambda: len(tw.marks(first)) >= 6)  # 600 ms of the answer has reached Twilio
            for name in tw.marks(first)[:5]:
                await tw.mark(name)  # the caller heard the audio up to the fifth mark
            fifth = [i for i, m in enumerate(tw.received) if i >= first and m["event"] == "mark"][4]
            heard_ms = tw.media_bytes(first, fifth) // 8
            (answering,) = [c for c in rig.stages.chats if not c.finished.is_set()]
            speaking = [s for s in rig.stages.speeches if not s.finished.is_set()]
            assert speaking  # a speech stream is in flight too
            barge = len(tw.received)
            for frame in speech_frames(0.6):  # the caller talks over the answer
                await tw.media(frame)
            started = await session.wait_sent(lambda e: e["type"] == "input_audio_buffer.speech_started", start=8)
            await until(tw, lambda: any(m["event"] == "clear" for m in tw.received[barge:]))
            await asyncio.wait_for(answering.finished.wait(), 5)
            for speech in speaking:
                await asyncio.wait_for(speech.finished.wait(), 5)
            for _ in range(40):
                await tw.media(SILENCE)
            await until(tw, lambda: len(rig.stages.chats) >= 2)
            await tw.stop()
            await tw.wait_closed()
        record = await archived(rig.base, rig.settings, sid)
    spoke_at = session.sent_times[session.sent.index(started)]
    # Both streams were cancelled upstream (the emulator saw the client go), within 100 ms of the speech.
    assert answering.cancelled and all(s.cancelled for s in speaking)
    assert answering.ended_at is not None and answering.ended_at - spoke_at <= 0.1
    assert all(s.ended_at is not None and s.ended_at - spoke_at <= 0.1 for s in speaking)
    # The archive keeps what the caller heard of the answer: the first words of its first sentence.
    agent = [s for s in record["transcript"] if s["speaker"] == "agent"]
    cut = agent[1]
    assert cut["interrupted"] and cut["text"] and answer.startswith(cut["text"])
    assert len(cut["text"].split()) < len("Our hygienists have openings on Tuesday and Thursday mornings.".split())
    # The model's next request carries the cut answer as what it said, then the caller's words.
    follow_up = rig.stages.chats[1].body["messages"]
    assert follow_up[-2:] == [{"role": "assistant", "content": cut["text"]},
                              {"role": "user", "content": "Wait, one question"}]  # fmt: skip
    assert [e["detail"]["heard_ms"] for e in record["events"] if e["kind"] == "barge_in"] == [heard_ms]
    # The cancelled chat request sent no usage; it is charged all the same, estimated.
    chats = [e["detail"]["usage"] for e in record["events"] if e["kind"] == "chat_usage"]
    assert chats[0]["estimated"] and chats[0]["prompt_tokens"] > 0 and chats[0]["completion_tokens"] > 0


async def test_a_per_call_cap_on_a_cascaded_call_asks_for_a_closing_line_then_hangs_up_after_it(tmp_path: Path) -> None:
    long_reply = ("Of course. Our hygienists have openings on Tuesday and Thursday mornings, and the whole visit "
                  "takes about forty minutes, with a short exam and time for questions.")  # fmt: skip
    closing = "I am sorry, I must go now. Goodbye."
    prices = tmp_path / "prices.json"
    # Only speech costs money: a dollar a minute of agent audio (the greeting's 3.6 s: 60,000 µ$).
    prices.write_text(json.dumps({
        "version": "test-speech-only",
        "models": {name: {k: 0 for k in ("text_in", "text_cached_in", "text_out", "audio_in", "audio_cached_in",
                                         "audio_out")} for name in ("gpt-realtime", "gpt-4.1-mini")},
        "telephony_per_minute": {"inbound": 0, "outbound": 0}, "transcription_per_minute": 0,
        "transcription_tokens": {"audio_in": 0, "text_in": 0, "text_out": 0},
        "speech": {"gpt-4o-mini-tts": {"per_minute": 1}},
    }))  # fmt: skip
    config = EmulatorConfig(tts="synthetic", transcripts=["When can I come in?"],
                            reply_text=lambda heard: long_reply if heard else closing)  # fmt: skip
    async with cascaded(
        tmp_path, config, price_table_file=str(prices), budget_per_call_usd=0.2, budget_runaway_margin=0.5
    ) as rig:
        sid, token = await open_call(rig.base, 3)
        route, hung_up = twilio_call_route(rig.mock, sid)
        async with TwilioStream.open(rig.base, call_sid=sid, token=token, auto_ack=True) as tw:
            await until(tw, heard_all(tw, rig.stages))
            await say_turn(tw)
            await asyncio.wait_for(hung_up.wait(), 20)
            await tw.wait_closed()
        record = await archived(rig.base, rig.settings, sid)
        records = await enforcements(rig.settings.effective_database_url)
    assert route.called
    actions = [r.action for r in records]
    assert "wrap_up" in actions and "hard_stop" not in actions
    wrap = next(r for r in records if r.action == "wrap_up")
    assert wrap.cap == "per_call" and wrap.call_sid == sid and wrap.price_version == "test-speech-only"
    # The closing line was asked for with the wrap-up's instructions, held to the closing token limit...
    last = rig.stages.chats[-1].body
    assert last["messages"][-1] == {"role": "system", "content": WRAP_UP_INSTRUCTIONS}
    assert last["max_completion_tokens"] == CLOSING_MAX_OUTPUT_TOKENS
    # ...and heard whole before the hang-up; the answer before it too.
    agent = [(s["text"], s["interrupted"]) for s in record["transcript"] if s["speaker"] == "agent"]
    assert agent[-2:] == [(long_reply, False), (closing, False)]
    assert record["end_reason"].startswith("agent hung up")


async def test_a_chat_model_failing_twice_hands_the_call_to_a_human_with_an_apology(tmp_path: Path) -> None:
    config = EmulatorConfig(tts="synthetic", transcripts=["I need help with my bill"])
    config.faults.fail_chats = 2  # the request and its one retry
    async with cascaded(tmp_path, config, transfer_number="+15005550099") as rig:
        sid, token = await open_call(rig.base, 4)
        async with TwilioStream.open(rig.base, call_sid=sid, token=token, auto_ack=True) as tw:
            await until(tw, heard_all(tw, rig.stages))
            await say_turn(tw)
            await tw.wait_closed()
        # Twilio follows the <Redirect>: an apology, then the human.
        resume = await post_webhook(rig.base, "/twilio/resume", {"CallSid": sid})
        record = await archived(rig.base, rig.settings, sid)
    assert len(rig.stages.chats) == 2
    assert (tw.close_code, tw.close_reason) == (1000, "cascaded unavailable")
    assert record["status"] == "failed" and record["end_reason"].startswith("handed off: chat model failed")
    doc = ET.fromstring(resume.text)
    assert [child.tag for child in doc] == ["Say", "Dial"] and "+15005550099" in ET.tostring(doc[1]).decode()
    assert [e["kind"] for e in record["events"] if e["kind"] in ("engine_gave_up", "upstream_failed")] == [
        "engine_gave_up", "upstream_failed"
    ]  # fmt: skip


async def test_a_dropped_transcription_session_reconnects_and_the_held_audio_is_heard(tmp_path: Path) -> None:
    config = EmulatorConfig(tts="synthetic", transcripts=["Are you open on Sunday?"],
                            reply_text=lambda heard: "No, we are closed on Sundays.")  # fmt: skip
    async with cascaded(tmp_path, config) as rig:
        sid, token = await open_call(rig.base, 5)
        async with TwilioStream.open(rig.base, call_sid=sid, token=token, auto_ack=True) as tw:
            first = await rig.emulator.wait_for_session(0)
            await until(tw, heard_all(tw, rig.stages))
            await first.drop(1006)  # the transcription session is lost (no close frame)
            await say_turn(tw)  # the caller speaks at once: held until the next session is ready, then replayed
            second = await rig.emulator.wait_for_session(1)
            await until(tw, lambda: len(rig.stages.chats) == 1)
            await until(tw, heard_all(tw, rig.stages))
            await tw.stop()
            await tw.wait_closed()
        record = await archived(rig.base, rig.settings, sid)
    assert first.transcription_only and second.transcription_only
    kinds = [e["kind"] for e in record["events"]]
    assert kinds.index("upstream_lost") < kinds.index("upstream_recovered")
    lines = [(s["speaker"], s["text"]) for s in record["transcript"]]
    assert lines[-2:] == [("caller", "Are you open on Sunday?"), ("agent", "No, we are closed on Sundays.")]


async def test_the_twilio_simulator_calls_a_cascaded_agent_in_real_time_three_turns_to_goodbye(tmp_path: Path) -> None:
    """Acceptance 1 as a caller lives it: the simulator plays Twilio (real-time frames, marks echoed as the
    audio plays, Twilio's protocol rules checked), the words spoken are the emulator's transcripts."""
    said = ["When are you open?", "Do you take walk-ins?", "Thanks, goodbye"]
    config = EmulatorConfig(tts="synthetic", transcripts=list(said), reply_text=lambda heard: "Yes, we can.",
                            function_calls={"goodbye": ("end_call", {"reason": "caller said goodbye"})},
                            tool_call_text={"end_call": "Goodbye!"}, audio_ms_per_char=40)  # fmt: skip
    async with cascaded(tmp_path, config) as rig:
        rig.mock.post(url__regex=rf"{TWILIO_API}/2010-04-01/Accounts/{ACCOUNT_SID}/Calls/CA[0-9a-f]+\.json").mock(
            return_value=httpx.Response(200, json={"status": "completed"})
        )
        script = CallScript(utterances=[synth_speech_mulaw(words, use_espeak=False) for words in said],
                            max_duration_s=40, gap_after_reply_s=0.3)  # fmt: skip
        result = await simulate_call(
            server_url=rig.base, public_base_url=rig.settings.public_base_url, auth_token=AUTH_TOKEN,
            account_sid=ACCOUNT_SID, script=script,
        )  # fmt: skip
        record = await archived(rig.base, rig.settings, result.call_sid)
    assert result.protocol_errors == [] and result.hung_up_by == "server"
    assert [t.latency_ms is not None for t in result.turns] == [True, True, True]
    lines = [(s["speaker"], s["text"]) for s in record["transcript"]]
    assert lines == [
        ("agent", "Thank you for calling Acme Dental. How can I help you today?"),
        ("caller", said[0]), ("agent", "Yes, we can."),
        ("caller", said[1]), ("agent", "Yes, we can."),
        ("caller", said[2]), ("agent", "Goodbye!"),
    ]  # fmt: skip
    assert record["end_reason"] == "agent hung up: caller said goodbye"
