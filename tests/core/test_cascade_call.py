"""The cascaded call's machine, driven with plain values: Twilio's events, the transcription session's, the
stages' and the clock's in; commands for Twilio, the session, the stages and the call's services out."""

from __future__ import annotations

from typing import Any

import orjson

from app.core import cascade as seq
from app.core import realtime_events as rt
from app.core.call_events import (
    HandOff,
    HangUp,
    HardStop,
    RecordCallEvent,
    RestartUpstream,
    SaveTranscript,
    SendToRealtime,
    SendToTwilio,
    Tick,
    UpstreamLost,
    UpstreamReady,
    WrapUp,
)
from app.core.cascade_call import CascadeCall, CascadeConfig
from app.core.transport import BROWSER
from app.core.twilio_media import DtmfReceived, MarkAcknowledged, MediaReceived, StreamStarted

GREETING = "Thanks for calling Acme Dental."
SILENT_FRAME = b"\xff" * 160


def of(kind: type, commands: list[Any]) -> list[Any]:
    return [c for c in commands if isinstance(c, kind)]


def twilio(commands: list[Any], event: str) -> list[dict[str, Any]]:
    messages = [orjson.loads(c.text) for c in of(SendToTwilio, commands)]
    return [m for m in messages if m["event"] == event]


def pcm(ms: int) -> bytes:
    return b"\x10\x00" * (24 * ms)


def started() -> tuple[CascadeCall, list[Any]]:
    call = CascadeCall(CascadeConfig("Be brief.", GREETING), started_at_ms=0)
    out = call.handle(StreamStarted("MZ" + "1" * 32, "CA" + "1" * 32, "AC" + "1" * 32), 0)
    return call, out


def play_out(call: CascadeCall, commands: list[Any], now_ms: int) -> list[Any]:
    """Twilio plays everything sent so far: each mark echoed."""
    out: list[Any] = []
    for mark in twilio(commands, "mark"):
        out += call.handle(MarkAcknowledged(mark["mark"]["name"]), now_ms)
    return out


def test_the_greeting_is_spoken_at_once_and_written_once_heard_whole() -> None:
    call, out = started()
    assert of(seq.StartSpeech, out) == [seq.StartSpeech(1, GREETING)]
    sent = call.handle(seq.SpeechAudio(1, pcm(300), 50), 50)
    assert len(twilio(sent, "media")) == 3 and len(twilio(sent, "mark")) == 3  # 100 ms per message
    sent += call.handle(seq.SpeechFinished(1, 60), 60)
    assert of(SaveTranscript, sent) == []  # not heard yet
    heard = play_out(call, sent, 400)
    (line,) = [c.line for c in of(SaveTranscript, heard)]
    assert (line.speaker, line.text, line.interrupted) == ("agent", GREETING, False)


def test_caller_audio_is_held_until_the_transcription_session_confirms_then_replayed() -> None:
    call, _ = started()
    for _ in range(3):
        assert call.handle(MediaReceived(SILENT_FRAME), 10) == []
    (update,) = call.handle(UpstreamReady(), 20)
    assert orjson.loads(update.data)["session"]["type"] == "transcription"
    replayed = call.handle(rt.SessionUpdated({}), 30)
    assert len(of(SendToRealtime, replayed)) == 3
    assert call.handle(MediaReceived(SILENT_FRAME), 40)  # straight through now
    # A lost session: audio is held again, the last moments re-sent to the next one.
    call.handle(UpstreamLost("closed 1006"), 50)
    assert call.handle(MediaReceived(SILENT_FRAME), 60) == []
    call.handle(UpstreamReady(), 70)
    # the frame sent to the lost session (it may have eaten it), then the one held meanwhile
    assert len(of(SendToRealtime, call.handle(rt.SessionUpdated({}), 80))) == 2


def test_a_transcription_session_that_never_confirms_is_restarted() -> None:
    call, _ = started()
    call.handle(UpstreamReady(), 0)
    assert of(RestartUpstream, call.handle(Tick(), 2_500))


def answer(call: CascadeCall, text: str, tool: tuple[str, str] | None, at: int) -> list[Any]:
    out = call.handle(rt.SpeechStopped(0, "item_1"), at)
    out += call.handle(rt.InputTranscribed("item_1", "that is all"), at + 100)
    (chat,) = of(seq.StartChat, out)
    out += call.handle(seq.ChatDelta(chat.request, text, at + 200), at + 200)
    if tool is not None:
        out += call.handle(seq.ChatToolCalled(chat.request, "call_1", tool[0], tool[1]), at + 210)
    out += call.handle(seq.ChatFinished(chat.request, at + 220, {"total_tokens": 9}), at + 220)
    for start in of(seq.StartSpeech, out):
        out += call.handle(seq.SpeechAudio(start.clause, pcm(200), at + 300), at + 300)
        out += call.handle(seq.SpeechFinished(start.clause, at + 310), at + 310)
    return out


def test_end_call_hangs_up_only_once_the_goodbye_has_played() -> None:
    call, out = started()
    out += call.handle(seq.SpeechAudio(1, pcm(200), 10), 10) + call.handle(seq.SpeechFinished(1, 20), 20)
    play_out(call, out, 300)
    out = answer(call, "Goodbye, take care!", ("end_call", '{"reason": "done"}'), 1_000)
    assert of(HangUp, out) == []
    ended = play_out(call, out, 1_600)
    assert of(HangUp, ended) == [HangUp("done")]
    (line,) = [c.line for c in of(SaveTranscript, ended)]
    assert line.text == "Goodbye, take care!" and not line.interrupted


def test_a_hard_stop_cancels_the_streams_in_flight_and_hangs_up_at_once() -> None:
    call, out = started()
    out = call.handle(seq.SpeechAudio(1, pcm(500), 10), 10)  # the greeting, half heard
    play_out(call, out[:4], 200)
    stopped = call.handle(HardStop("per-call cap"), 300)
    assert of(seq.CancelSpeech, stopped) == [seq.CancelSpeech(1)]
    assert of(HangUp, stopped) == [HangUp("per-call cap")]
    assert twilio(stopped, "clear")
    (line,) = [c.line for c in of(SaveTranscript, stopped)]
    assert line.interrupted and GREETING.startswith(line.text)
    assert [c for c in of(RecordCallEvent, stopped) if c.kind == "barge_in"] == []  # no barge-in: a stop
    assert call.handle(seq.SpeechAudio(1, pcm(100), 310), 310) == []


def test_a_chat_model_failing_twice_hands_the_call_off() -> None:
    call, out = started()
    out = call.handle(rt.SpeechStopped(0, "item_1"), 1_000)
    out += call.handle(rt.InputTranscribed("item_1", "hello?"), 1_100)
    (chat,) = of(seq.StartChat, out)
    (retry,) = of(seq.StartChat, call.handle(seq.ChatFailed(chat.request, "503", 1_200), 1_200))
    gave_up = call.handle(seq.ChatFailed(retry.request, "503", 1_300), 1_300)
    assert of(HandOff, gave_up) == [HandOff("chat model failed: 503")]
    assert call.ended


def test_a_hang_up_at_its_deadline_cancels_what_is_still_generated_and_nothing_starts_after_it() -> None:
    call, out = started()
    out += call.handle(seq.SpeechAudio(1, pcm(200), 10), 10) + call.handle(seq.SpeechFinished(1, 20), 20)
    play_out(call, out, 300)
    out = call.handle(rt.SpeechStopped(0, "item_1"), 1_000)
    out += call.handle(rt.InputTranscribed("item_1", "tell me everything"), 1_100)
    (chat,) = of(seq.StartChat, out)
    call.handle(WrapUp("Close now.", "per-call cap", 2_000), 1_200)  # the closing waits for this answer
    ended = call.handle(Tick(), 3_300)  # past the grace: the hang-up goes, mid-answer
    assert of(HangUp, ended) == [HangUp("per-call cap")]
    assert of(seq.CancelChat, ended) == [seq.CancelChat(chat.request)]
    late = call.handle(seq.ChatFinished(chat.request, 3_400, {"total_tokens": 5}), 3_400)
    assert of(seq.StartSpeech, late) == [] and [c.kind for c in of(RecordCallEvent, late)] == ["chat_usage"]
    assert call.handle(DtmfReceived("5"), 3_500) == [RecordCallEvent("dtmf", {"digit": "5"})]


def test_words_transcribed_while_the_caller_goes_on_talking_are_answered_once_they_stop() -> None:
    call, out = started()
    out += call.handle(seq.SpeechAudio(1, pcm(200), 10), 10) + call.handle(seq.SpeechFinished(1, 20), 20)
    play_out(call, out, 300)
    call.handle(rt.SpeechStopped(0, "item_1"), 1_000)
    call.handle(rt.SpeechStarted(0, "item_2"), 1_200)  # a pause, then more words
    held = call.handle(rt.InputTranscribed("item_1", "I would like to book"), 1_300)
    assert of(seq.StartChat, held) == [] and len(of(SaveTranscript, held)) == 1  # written, not yet answered
    released = call.handle(rt.SpeechStopped(0, "item_2"), 2_000)
    (chat,) = of(seq.StartChat, released)
    assert chat.messages[-1] == {"role": "user", "content": "I would like to book"}


def test_a_wrap_up_does_not_hang_up_on_a_caller_who_is_talking() -> None:
    call, out = started()
    out += call.handle(seq.SpeechAudio(1, pcm(200), 10), 10) + call.handle(seq.SpeechFinished(1, 20), 20)
    play_out(call, out, 300)
    call.handle(rt.SpeechStarted(0, "item_1"), 900)
    wrap = call.handle(WrapUp("Close now.", "per-call cap", 10_000), 1_000)
    assert of(seq.StartChat, wrap)  # asked at once: nothing is being said
    assert of(HangUp, call.handle(Tick(), 1_100)) == []


def test_caller_audio_is_metered_by_its_length_whatever_the_frames_sizes() -> None:
    """A page may send 200 ms frames: a call's caller seconds come from the bytes, not a count of frames."""
    call = CascadeCall(CascadeConfig("x", None), started_at_ms=0, transport=BROWSER)
    call.handle(StreamStarted("WS" + "1" * 32, "WB" + "1" * 32, ""), 0)
    call.handle(MediaReceived(b"\x00" * 9600), 10)
    call.handle(MediaReceived(b"\x00" * 960), 20)
    assert call.caller_seconds_in == 0.22
    twilio_call, _ = started()
    twilio_call.handle(MediaReceived(SILENT_FRAME), 10)
    assert twilio_call.caller_seconds_in == 0.02
