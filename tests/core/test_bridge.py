"""The bridge state machine, driven with plain values: no sockets, no event loop."""

from __future__ import annotations

import base64
from typing import Any

import orjson
import pytest

from app.core import realtime_events as rt
from app.core.bridge import (
    BridgeConfig,
    CallBridge,
    Command,
    HandOff,
    HangUp,
    HardStop,
    OptOut,
    RecordCallEvent,
    RestartUpstream,
    RunTool,
    SaveTranscript,
    SendToRealtime,
    SendToTwilio,
    Tick,
    ToolFinished,
    TransferCall,
    UpstreamLost,
    UpstreamReady,
    WrapUp,
    cut_transcript,
)
from app.core.caller_speech import UNTRANSCRIBED
from app.core.tools import BUILTIN_TOOLS, greeting_instructions
from app.core.twilio_media import DtmfReceived, MarkAcknowledged, MediaReceived, StreamStarted, StreamStopped


def make_bridge(audio_format: str = "pcmu", **overrides: Any) -> CallBridge:
    config = BridgeConfig(
        session=rt.SessionSettings(
            model="gpt-realtime",
            instructions="Be brief.",
            voice="marin",
            audio_format=audio_format,  # type: ignore[arg-type]
            tools=BUILTIN_TOOLS,
        ),
        greeting_instructions=greeting_instructions("Acme Dental"),
        **overrides,
    )
    bridge = CallBridge(config, started_at_ms=0)
    bridge.handle(StreamStarted("MZ1", "CA1", "AC1", {"direction": "inbound"}), 0)
    return bridge


def realtime(cmds: list[Command]) -> list[dict[str, Any]]:
    return [orjson.loads(c.data) for c in cmds if isinstance(c, SendToRealtime)]


def twilio(cmds: list[Command]) -> list[dict[str, Any]]:
    return [orjson.loads(c.text) for c in cmds if isinstance(c, SendToTwilio)]


def of(cmds: list[Command], kind: type) -> list[Any]:
    return [c for c in cmds if isinstance(c, kind)]


def ready(bridge: CallBridge, now: int) -> list[Command]:
    """A (new) session opens and confirms our session.update: what the bridge sends, in order."""
    configure = bridge.handle(UpstreamReady(), now)
    return configure + bridge.handle(rt.SessionUpdated({}), now)


def start_session(bridge: CallBridge) -> list[Command]:
    cmds = ready(bridge, 0)
    bridge.handle(rt.ResponseCreated("resp_greet"), 1)
    return cmds


def deliver_audio(bridge: CallBridge, response_id: str, item_id: str, n_bytes: int, now: int) -> list[Command]:
    return bridge.handle(rt.AudioDelta(response_id, item_id, b"\xff" * n_bytes), now)


def test_session_update_precedes_the_greeting_that_names_the_business() -> None:
    bridge = make_bridge()
    sent = realtime(ready(bridge, 0))
    assert [e["type"] for e in sent] == ["session.update", "response.create"]
    session = sent[0]["session"]
    assert session["type"] == "realtime"
    td = session["audio"]["input"]["turn_detection"]
    assert set(td) >= {
        "type",
        "threshold",
        "prefix_padding_ms",
        "silence_duration_ms",
        "create_response",
        "interrupt_response",
    }
    assert session["audio"]["input"]["transcription"]["model"]
    assert "Acme Dental" in sent[1]["response"]["instructions"]


def test_caller_audio_before_upstream_is_held_and_replayed_in_order() -> None:
    bridge = make_bridge()
    frames = [bytes([i]) * 160 for i in range(3)]
    for i, f in enumerate(frames):
        assert bridge.handle(MediaReceived(f), i * 20) == []
    sent = realtime(ready(bridge, 60))
    appends = [e for e in sent if e["type"] == "input_audio_buffer.append"]
    assert [base64.b64decode(e["audio"]) for e in appends] == frames


def test_held_audio_past_the_bound_drops_the_oldest_frames_and_counts_them() -> None:
    bridge = make_bridge(max_buffered_frames=3)
    frames = [bytes([i]) * 160 for i in range(5)]
    for i, f in enumerate(frames):
        bridge.handle(MediaReceived(f), i * 20)
    cmds = ready(bridge, 100)
    appends = [e for e in realtime(cmds) if e["type"] == "input_audio_buffer.append"]
    assert [base64.b64decode(e["audio"]) for e in appends] == frames[2:]  # the newest 3
    assert (bridge.frames_held, bridge.frames_replayed, bridge.frames_dropped) == (5, 3, 2)
    assert [c.detail for c in of(cmds, RecordCallEvent) if c.kind == "caller_audio_replayed"] == [{"frames": 3}]


def test_each_audio_chunk_to_twilio_is_followed_by_a_uniquely_named_mark() -> None:
    bridge = make_bridge(media_chunk_bytes=160)
    start_session(bridge)
    msgs = twilio(deliver_audio(bridge, "resp_greet", "item_a", 800, 10))
    assert [m["event"] for m in msgs] == ["media", "mark"] * 5
    names = [m["mark"]["name"] for m in msgs if m["event"] == "mark"]
    assert len(set(names)) == 5
    assert all(len(base64.b64decode(m["media"]["payload"])) == 160 for m in msgs if m["event"] == "media")


def test_a_delta_goes_out_as_media_of_at_most_100_ms_and_whole_frames() -> None:
    bridge = make_bridge()  # the default: media_chunk_bytes=800
    start_session(bridge)
    msgs = twilio(deliver_audio(bridge, "resp_greet", "item_a", 2000, 10))  # 250 ms
    assert [m["event"] for m in msgs] == ["media", "mark"] * 3
    sizes = [len(base64.b64decode(m["media"]["payload"])) for m in msgs if m["event"] == "media"]
    assert sizes == [800, 800, 320]  # 40 ms of the delta's last 50 ms: whole frames only
    msgs = twilio(deliver_audio(bridge, "resp_greet", "item_a", 120, 20))  # the 80 B left over + 120 = 200
    assert [len(base64.b64decode(m["media"]["payload"])) for m in msgs if m["event"] == "media"] == [160]
    msgs = twilio(bridge.handle(rt.AudioDone("resp_greet", "item_a"), 30))  # the rest, 40 B, at the item's end
    assert [len(base64.b64decode(m["media"]["payload"])) for m in msgs if m["event"] == "media"] == [40]
    assert bridge.agent_bytes_out == 2120


def test_barge_in_truncates_at_the_last_acknowledged_100_ms_chunk_by_default() -> None:
    bridge = make_bridge()
    start_session(bridge)
    msgs = twilio(deliver_audio(bridge, "resp_greet", "item_a", 2400, 10))  # 300 ms sent as 3 chunks
    marks = [m["mark"]["name"] for m in msgs if m["event"] == "mark"]
    bridge.handle(MarkAcknowledged(marks[0]), 110)  # Twilio played the first 100 ms
    cmds = bridge.handle(rt.SpeechStarted(500, "item_user"), 150)
    truncates = [e for e in realtime(cmds) if e["type"] == "conversation.item.truncate"]
    assert [t["audio_end_ms"] for t in truncates] == [100]


def test_barge_in_clears_twilio_and_truncates_at_the_acknowledged_position() -> None:
    bridge = make_bridge(media_chunk_bytes=160)
    start_session(bridge)
    msgs = twilio(deliver_audio(bridge, "resp_greet", "item_a", 1600, 10))  # 200 ms sent
    marks = [m["mark"]["name"] for m in msgs if m["event"] == "mark"]
    for name in marks[:3]:  # Twilio played 60 ms
        bridge.handle(MarkAcknowledged(name), 100)
    cmds = bridge.handle(rt.SpeechStarted(500, "item_user"), 120)
    assert [m["event"] for m in twilio(cmds)] == ["clear"]
    truncates = [e for e in realtime(cmds) if e["type"] == "conversation.item.truncate"]
    assert truncates == [
        {"type": "conversation.item.truncate", "item_id": "item_a", "content_index": 0, "audio_end_ms": 60}
    ]
    assert not [e for e in realtime(cmds) if e["type"] == "response.cancel"]  # the server cancels itself


def test_marks_echoed_after_a_clear_do_not_corrupt_the_next_response() -> None:
    bridge = make_bridge(media_chunk_bytes=160)
    start_session(bridge)
    first = twilio(deliver_audio(bridge, "resp_greet", "item_a", 800, 10))
    stale = [m["mark"]["name"] for m in first if m["event"] == "mark"]
    bridge.handle(rt.SpeechStarted(0, "u1"), 20)  # clear: Twilio will echo every pending mark
    assert not bridge.playback.unplayed
    bridge.handle(rt.ResponseDone("resp_greet", "cancelled"), 21)
    bridge.handle(rt.SpeechStopped(400, "u1"), 25)
    bridge.handle(rt.ResponseCreated("resp_2"), 30)
    second = twilio(deliver_audio(bridge, "resp_2", "item_b", 800, 31))
    bridge.handle(rt.AudioDone("resp_2", "item_b"), 32)
    bridge.handle(rt.FunctionCallReady("resp_2", "call_9", "end_call", "{}"), 33)
    bridge.handle(rt.ResponseDone("resp_2", "completed"), 34)
    for name in stale:  # the echoes of the cleared marks arrive now
        assert of(bridge.handle(MarkAcknowledged(name), 40), HangUp) == []
    assert bridge.playback.played_ms("item_b") == 0 and bridge.playback.unplayed
    new_marks = [m["mark"]["name"] for m in second if m["event"] == "mark"]
    bridge.handle(MarkAcknowledged(new_marks[0]), 60)
    bridge.handle(MarkAcknowledged(new_marks[1]), 80)
    assert bridge.playback.played_ms("item_b") == 40
    hang = [c for name in new_marks[2:] for c in of(bridge.handle(MarkAcknowledged(name), 130), HangUp)]
    assert len(hang) == 1  # the hang-up waited for the new item's own marks


def test_the_agent_does_not_hang_up_on_a_caller_who_interrupts_its_goodbye() -> None:
    bridge = make_bridge()
    start_session(bridge)
    msgs = twilio(deliver_audio(bridge, "resp_greet", "item_bye", 800, 10))
    bridge.handle(rt.AudioDone("resp_greet", "item_bye"), 11)
    bridge.handle(rt.FunctionCallReady("resp_greet", "call_1", "end_call", "{}"), 12)
    bridge.handle(rt.ResponseDone("resp_greet", "completed"), 13)
    cmds = bridge.handle(rt.SpeechStarted(0, "u1"), 50)  # "wait, one more thing"
    outputs = [e for e in realtime(cmds) if e["type"] == "conversation.item.create"]
    assert outputs[0]["item"]["call_id"] == "call_1" and "not ended" in outputs[0]["item"]["output"]
    later: list[Command] = []
    for m in msgs:
        if m["event"] == "mark":
            later += bridge.handle(MarkAcknowledged(m["mark"]["name"]), 60)
    later += bridge.handle(Tick(), 60_000)
    assert of(later, HangUp) == [] and not bridge.ended


def test_a_failed_response_create_lets_the_queued_one_go() -> None:
    bridge = make_bridge()
    ready(bridge, 0)  # greeting in flight as sb_resp_1
    bridge.handle(DtmfReceived("1"), 5)  # queued behind it
    cmds = bridge.handle(rt.RealtimeError("server_error", "oops", "server_error", "sb_resp_1"), 6)
    assert [e["type"] for e in realtime(cmds)] == ["response.create"]


def test_a_tool_of_a_failed_response_is_not_run_but_the_model_hears_why() -> None:
    bridge = make_bridge(custom_tools=frozenset({"lookup"}))
    start_session(bridge)
    bridge.handle(rt.FunctionCallReady("resp_greet", "call_1", "lookup", "{}"), 10)
    cmds = bridge.handle(rt.ResponseDone("resp_greet", "failed", {}, {"type": "failed"}), 11)
    assert of(cmds, RunTool) == []
    sent = realtime(cmds)
    assert sent[0]["item"]["call_id"] == "call_1" and "failed" in sent[0]["item"]["output"]
    assert sent[1]["type"] == "response.create"


def test_audio_of_an_interrupted_response_is_not_forwarded() -> None:
    bridge = make_bridge()
    start_session(bridge)
    deliver_audio(bridge, "resp_greet", "item_a", 800, 10)
    bridge.handle(rt.SpeechStarted(0, "u1"), 20)
    assert twilio(deliver_audio(bridge, "resp_greet", "item_a", 800, 25)) == []


def test_speech_with_nothing_unplayed_sends_no_clear_or_truncate() -> None:
    bridge = make_bridge()
    start_session(bridge)
    msgs = twilio(deliver_audio(bridge, "resp_greet", "item_a", 320, 10))
    for m in msgs:
        if m["event"] == "mark":
            bridge.handle(MarkAcknowledged(m["mark"]["name"]), 60)
    assert bridge.handle(rt.SpeechStarted(0, "u1"), 100) == []


def test_response_create_waits_for_the_previous_response_done() -> None:
    bridge = make_bridge()
    start_session(bridge)  # greeting active
    cmds = bridge.handle(DtmfReceived("5"), 10)
    sent = realtime(cmds)
    assert [e["type"] for e in sent] == ["conversation.item.create"]
    assert "5" in sent[0]["item"]["content"][0]["text"]
    after = realtime(bridge.handle(rt.ResponseDone("resp_greet", "completed"), 20))
    assert [e["type"] for e in after] == ["response.create"]


def test_a_rejected_response_create_is_retried_after_the_active_response() -> None:
    bridge = make_bridge()
    ready(bridge, 0)  # greeting response.create in flight (event id sb_resp_1)
    cmds = bridge.handle(
        rt.RealtimeError("conversation_already_has_active_response", "busy", "invalid_request_error", "sb_resp_1"), 5
    )
    assert realtime(cmds) == []
    bridge.handle(rt.ResponseCreated("resp_vad"), 6)
    again = realtime(bridge.handle(rt.ResponseDone("resp_vad", "completed"), 50))
    assert [e["type"] for e in again] == ["response.create"]
    assert "Acme Dental" in again[0]["response"]["instructions"]


def test_a_tool_of_a_cancelled_response_never_runs() -> None:
    bridge = make_bridge(custom_tools=frozenset({"lookup"}))
    start_session(bridge)
    bridge.handle(rt.FunctionCallReady("resp_greet", "call_1", "lookup", "{}"), 10)
    cmds = bridge.handle(rt.ResponseDone("resp_greet", "cancelled"), 11)
    assert of(cmds, RunTool) == []
    assert any(isinstance(c, RecordCallEvent) and c.kind == "tool_skipped" for c in cmds)


def test_a_completed_custom_tool_runs_and_its_result_goes_back_with_a_new_response() -> None:
    bridge = make_bridge(custom_tools=frozenset({"lookup"}))
    start_session(bridge)
    bridge.handle(rt.FunctionCallReady("resp_greet", "call_1", "lookup", '{"q": "x"}'), 10)
    cmds = bridge.handle(rt.ResponseDone("resp_greet", "completed"), 11)
    assert [(c.name, c.arguments) for c in of(cmds, RunTool)] == [("lookup", {"q": "x"})]
    back = realtime(bridge.handle(ToolFinished("call_1", "lookup", '{"error":"boom"}', False), 20))
    assert back[0]["item"] == {"type": "function_call_output", "call_id": "call_1", "output": '{"error":"boom"}'}
    assert back[1]["type"] == "response.create"


def test_end_call_hangs_up_only_after_the_goodbye_has_played() -> None:
    bridge = make_bridge()
    start_session(bridge)
    msgs = twilio(deliver_audio(bridge, "resp_greet", "item_bye", 480, 10))
    bridge.handle(rt.AudioDone("resp_greet", "item_bye"), 11)
    bridge.handle(rt.FunctionCallReady("resp_greet", "call_1", "end_call", '{"reason":"done"}'), 12)
    cmds = bridge.handle(rt.ResponseDone("resp_greet", "completed"), 13)
    assert of(cmds, HangUp) == []  # goodbye still playing
    marks = [m["mark"]["name"] for m in msgs if m["event"] == "mark"]
    for name in marks[:-1]:
        assert of(bridge.handle(MarkAcknowledged(name), 40), HangUp) == []
    hang = of(bridge.handle(MarkAcknowledged(marks[-1]), 70), HangUp)
    assert [h.reason for h in hang] == ["done"]


def test_end_call_still_hangs_up_when_twilio_never_echoes_the_last_mark() -> None:
    bridge = make_bridge(end_action_grace_ms=5000)
    start_session(bridge)
    deliver_audio(bridge, "resp_greet", "item_bye", 480, 10)
    bridge.handle(rt.FunctionCallReady("resp_greet", "call_1", "end_call", "{}"), 12)
    bridge.handle(rt.ResponseDone("resp_greet", "completed"), 13)
    assert of(bridge.handle(Tick(), 4000), HangUp) == []
    assert len(of(bridge.handle(Tick(), 5100), HangUp)) == 1


def test_transfer_says_a_handoff_line_then_dials_the_transfer_number() -> None:
    bridge = make_bridge(transfer_number="+15550001111")
    start_session(bridge)
    bridge.handle(rt.FunctionCallReady("resp_greet", "call_1", "transfer_to_human", "{}"), 10)
    cmds = bridge.handle(rt.ResponseDone("resp_greet", "completed"), 11)
    sent = realtime(cmds)
    assert sent[0]["item"]["type"] == "function_call_output"
    assert sent[1]["type"] == "response.create" and "transfer" in sent[1]["response"]["instructions"]
    assert of(cmds, TransferCall) == []
    bridge.handle(rt.ResponseCreated("resp_handoff"), 12)
    msgs = twilio(deliver_audio(bridge, "resp_handoff", "item_h", 160, 13))
    assert of(bridge.handle(rt.ResponseDone("resp_handoff", "completed"), 14), TransferCall) == []
    done = bridge.handle(MarkAcknowledged(msgs[-1]["mark"]["name"]), 40)
    assert [t.number for t in of(done, TransferCall)] == ["+15550001111"]


def test_transfer_without_a_number_tells_the_model_and_the_call_goes_on() -> None:
    bridge = make_bridge(transfer_number=None)
    start_session(bridge)
    bridge.handle(rt.FunctionCallReady("resp_greet", "call_1", "transfer_to_human", "{}"), 10)
    cmds = bridge.handle(rt.ResponseDone("resp_greet", "completed"), 11)
    output = realtime(cmds)[0]["item"]["output"]
    assert "error" in output
    assert of(cmds, TransferCall) == [] and not bridge.ended


def test_transcript_keeps_caller_lines_and_cuts_agent_lines_to_what_was_heard() -> None:
    bridge = make_bridge(media_chunk_bytes=160)
    start_session(bridge)
    text = "Thank you for calling Acme Dental. How can I help you today?"
    msgs = twilio(deliver_audio(bridge, "resp_greet", "item_a", 8000, 10))  # 1 s
    bridge.handle(rt.TranscriptDone("resp_greet", "item_a", text), 11)
    bridge.handle(rt.AudioDone("resp_greet", "item_a"), 12)
    marks = [m["mark"]["name"] for m in msgs if m["event"] == "mark"]
    for name in marks[:25]:  # half heard
        bridge.handle(MarkAcknowledged(name), 500)
    cmds = bridge.handle(rt.SpeechStarted(0, "u1"), 510)
    (agent,) = [c.line for c in of(cmds, SaveTranscript)]
    assert agent.speaker == "agent" and agent.interrupted
    assert text.startswith(agent.text) and 0 < len(agent.text) < len(text)
    caller = of(bridge.handle(rt.InputTranscribed("u1", " I need an appointment "), 900), SaveTranscript)
    assert [(c.line.speaker, c.line.text, c.line.offset_ms) for c in caller] == [
        ("caller", "I need an appointment", 510)
    ]


def test_a_fully_played_agent_line_is_saved_whole_once() -> None:
    bridge = make_bridge()
    start_session(bridge)
    msgs = twilio(deliver_audio(bridge, "resp_greet", "item_a", 320, 10))
    bridge.handle(rt.AudioDone("resp_greet", "item_a"), 11)
    bridge.handle(rt.TranscriptDone("resp_greet", "item_a", "Hello there."), 12)
    saved: list[Command] = []
    for m in msgs:
        if m["event"] == "mark":
            saved += bridge.handle(MarkAcknowledged(m["mark"]["name"]), 60)
    saved += bridge.handle(StreamStopped(), 100)
    lines = [c.line for c in of(saved, SaveTranscript)]
    assert [(line.text, line.interrupted) for line in lines] == [("Hello there.", False)]


def test_cut_transcript_breaks_at_a_word_boundary() -> None:
    assert cut_transcript("hello wonderful world", 500, 1000) == "hello"
    assert cut_transcript("hello world", 200, 1000) == ""  # never half a word
    assert cut_transcript("hello world", 1000, 1000) == "hello world"
    assert cut_transcript("hello world", 0, 1000) == ""


def test_barge_in_truncates_an_item_whose_sent_audio_all_played_but_more_was_generated() -> None:
    bridge = make_bridge()
    start_session(bridge)
    msgs = twilio(deliver_audio(bridge, "resp_greet", "item_a", 400, 10))  # 2 chunks sent, 80 bytes held
    for m in msgs:
        if m["event"] == "mark":
            bridge.handle(MarkAcknowledged(m["mark"]["name"]), 50)
    cmds = bridge.handle(rt.SpeechStarted(0, "u1"), 60)
    assert [m["event"] for m in twilio(cmds)] == ["clear"]
    truncate = next(e for e in realtime(cmds) if e["type"] == "conversation.item.truncate")
    assert truncate["audio_end_ms"] == 40


def test_the_opt_out_tool_revokes_at_once_and_the_model_confirms() -> None:
    bridge = make_bridge()
    start_session(bridge)
    bridge.handle(rt.FunctionCallReady("resp_greet", "call_1", "opt_out", '{"words":"stop calling me"}'), 10)
    cmds = bridge.handle(rt.ResponseDone("resp_greet", "completed"), 11)
    assert [(c.reason, c.source) for c in of(cmds, OptOut)] == [("stop calling me", "opt_out_tool")]
    sent = realtime(cmds)
    assert "opted out" in sent[0]["item"]["output"] and sent[1]["type"] == "response.create"


def test_the_opt_out_key_revokes_and_other_keys_do_not() -> None:
    bridge = make_bridge()
    start_session(bridge)
    assert of(bridge.handle(DtmfReceived("3"), 10), OptOut) == []
    assert [c.source for c in of(bridge.handle(DtmfReceived("9"), 20), OptOut)] == ["dtmf"]


def test_a_wrap_up_asks_for_a_closing_line_then_hangs_up_even_if_the_caller_talks() -> None:
    bridge = make_bridge()
    start_session(bridge)
    bridge.handle(rt.ResponseDone("resp_greet", "completed"), 5)
    cmds = bridge.handle(WrapUp("Close the call politely now.", "per-call cap", 5000), 10)
    assert [e["type"] for e in realtime(cmds)] == ["response.create"]
    assert realtime(cmds)[0]["response"]["instructions"] == "Close the call politely now."
    bridge.handle(rt.ResponseCreated("resp_bye"), 11)
    msgs = twilio(deliver_audio(bridge, "resp_bye", "item_bye", 320, 12))
    assert of(bridge.handle(rt.SpeechStarted(0, "u1"), 13), HangUp) == []  # barge-in cuts the line...
    done = bridge.handle(rt.ResponseDone("resp_bye", "cancelled"), 14)
    done += [c for m in msgs if m["event"] == "mark" for c in bridge.handle(MarkAcknowledged(m["mark"]["name"]), 20)]
    done += bridge.handle(Tick(), 900)
    assert of(done, HangUp) == []  # ...the caller is not cut off mid-sentence...
    ended = bridge.handle(rt.SpeechStopped(800, "u1"), 950) + bridge.handle(Tick(), 1000)
    assert [h.reason for h in of(ended, HangUp)] == ["per-call cap"]  # ...but the budget still ends the call


def test_after_a_wrap_up_the_servers_own_answer_is_cancelled_unheard_and_the_closing_line_asked_again() -> None:
    """Turn detection answers the caller who cut the closing line with the session's limits: that answer
    is never played nor paid in full, and the closing line (held to its token limit) comes instead."""
    bridge = make_bridge()
    start_session(bridge)
    bridge.handle(rt.ResponseDone("resp_greet", "completed"), 5)
    bridge.handle(WrapUp("Close now.", "per-call cap", 8000, 160), 10)
    bridge.handle(rt.ResponseCreated("resp_bye"), 11)
    deliver_audio(bridge, "resp_bye", "item_bye", 320, 12)
    bridge.handle(rt.SpeechStarted(0, "u1"), 13)  # "but wait, what about my appointment?"
    bridge.handle(rt.ResponseDone("resp_bye", "cancelled"), 14)
    bridge.handle(rt.SpeechStopped(900, "u1"), 950)
    created = bridge.handle(rt.ResponseCreated("resp_auto"), 960)  # the server's own, unasked
    assert realtime(created) == [{"type": "response.cancel", "response_id": "resp_auto"}]
    assert twilio(deliver_audio(bridge, "resp_auto", "item_auto", 1600, 965)) == []  # never played...
    bridge.handle(rt.TranscriptDelta("resp_auto", "item_auto", "Your appointment is"), 966)
    unsaid = bridge.handle(rt.TranscriptDone("resp_auto", "item_auto", "Your appointment is"), 967)
    assert of(unsaid, SaveTranscript) == []  # ...nor written as said
    assert of(bridge.handle(Tick(), 970), HangUp) == []
    again = realtime(bridge.handle(rt.ResponseDone("resp_auto", "cancelled"), 980))
    assert [e["response"] for e in again if e["type"] == "response.create"] == [
        {"output_modalities": ["audio"], "instructions": "Close now.", "max_output_tokens": 160}
    ]
    bridge.handle(rt.ResponseCreated("resp_bye_2"), 990)
    msgs = twilio(deliver_audio(bridge, "resp_bye_2", "item_bye_2", 320, 1000))
    assert realtime(bridge.handle(rt.ResponseDone("resp_bye_2", "completed"), 1010)) == []  # ours: played
    ended = [c for m in msgs if m["event"] == "mark" for c in bridge.handle(MarkAcknowledged(m["mark"]["name"]), 1100)]
    assert [h.reason for h in of(ended, HangUp)] == ["per-call cap"]


def test_a_closing_line_said_in_full_is_not_said_again_to_a_caller_who_talked_through_it() -> None:
    bridge = make_bridge()
    start_session(bridge)
    bridge.handle(rt.ResponseDone("resp_greet", "completed"), 5)
    bridge.handle(rt.SpeechStarted(0, "u1"), 8)  # the caller is talking as the cap is reached
    bridge.handle(WrapUp("Close now.", "per-call cap", 8000, 160), 10)
    bridge.handle(rt.ResponseCreated("resp_bye"), 11)
    msgs = twilio(deliver_audio(bridge, "resp_bye", "item_bye", 320, 12))
    bridge.handle(rt.AudioDone("resp_bye", "item_bye"), 13)
    bridge.handle(rt.TranscriptDone("resp_bye", "item_bye", "I must end the call now. Goodbye."), 13)
    bridge.handle(rt.ResponseDone("resp_bye", "completed"), 14)
    played = [c for m in msgs if m["event"] == "mark" for c in bridge.handle(MarkAcknowledged(m["mark"]["name"]), 20)]
    assert of(played, HangUp) == []  # the caller is still talking
    bridge.handle(rt.SpeechStopped(900, "u1"), 950)
    created = bridge.handle(rt.ResponseCreated("resp_auto"), 960)
    assert realtime(created) == [{"type": "response.cancel", "response_id": "resp_auto"}]  # and no second goodbye
    ended = bridge.handle(rt.ResponseDone("resp_auto", "cancelled"), 980)
    assert [e["type"] for e in realtime(ended)] == [] and [h.reason for h in of(ended, HangUp)] == ["per-call cap"]


def test_a_caller_who_cuts_the_closing_line_twice_is_hung_up_once_they_stop() -> None:
    bridge = make_bridge()
    start_session(bridge)
    bridge.handle(rt.ResponseDone("resp_greet", "completed"), 5)
    bridge.handle(WrapUp("Close now.", "per-call cap", 8000, 160), 10)
    creates = 1
    for n, at in enumerate((100, 2000)):
        bridge.handle(rt.ResponseCreated(f"resp_bye{n}"), at)
        deliver_audio(bridge, f"resp_bye{n}", f"item_bye{n}", 320, at + 1)
        bridge.handle(rt.SpeechStarted(0, f"u{n}"), at + 2)
        bridge.handle(rt.ResponseDone(f"resp_bye{n}", "cancelled"), at + 3)
        bridge.handle(rt.SpeechStopped(900, f"u{n}"), at + 900)
        sent = realtime(bridge.handle(rt.ResponseCreated(f"resp_auto{n}"), at + 910))
        sent += realtime(ended := bridge.handle(rt.ResponseDone(f"resp_auto{n}", "cancelled"), at + 920))
        creates += len([e for e in sent if e["type"] == "response.create"])
    assert creates == 2  # the closing line, and once more
    assert [h.reason for h in of(ended, HangUp)] == ["per-call cap"]


def test_a_wrap_up_hangs_up_at_its_grace_on_a_caller_who_never_stops_talking() -> None:
    bridge = make_bridge()
    start_session(bridge)
    bridge.handle(rt.ResponseDone("resp_greet", "completed"), 5)
    bridge.handle(rt.SpeechStarted(0, "u1"), 8)  # and never a speech_stopped: a long speech, or a noisy line
    bridge.handle(WrapUp("Close now.", "per-call cap", 3000), 10)
    bridge.handle(rt.ResponseCreated("resp_bye"), 11)
    bridge.handle(rt.ResponseDone("resp_bye", "cancelled"), 14)
    assert of(bridge.handle(Tick(), 3000), HangUp) == []
    assert [h.reason for h in of(bridge.handle(Tick(), 3010), HangUp)] == ["per-call cap"]


def test_a_transfer_waits_for_the_caller_to_finish_speaking() -> None:
    bridge = make_bridge(transfer_number="+15550001111")
    start_session(bridge)
    bridge.handle(rt.FunctionCallReady("resp_greet", "call_1", "transfer_to_human", "{}"), 10)
    bridge.handle(rt.ResponseDone("resp_greet", "completed"), 11)
    bridge.handle(rt.ResponseCreated("resp_handoff"), 12)
    msgs = twilio(deliver_audio(bridge, "resp_handoff", "item_h", 160, 13))
    bridge.handle(rt.ResponseDone("resp_handoff", "completed"), 14)
    assert of(bridge.handle(rt.SpeechStarted(0, "u1"), 15), TransferCall) == []  # "thank you so much"
    done = bridge.handle(MarkAcknowledged(msgs[-1]["mark"]["name"]), 40) + bridge.handle(Tick(), 500)
    assert of(done, TransferCall) == []
    done = bridge.handle(rt.SpeechStopped(600, "u1"), 700) + bridge.handle(Tick(), 710)
    assert [t.number for t in of(done, TransferCall)] == ["+15550001111"]


def test_after_a_wrap_up_every_response_is_held_to_the_closing_token_limit() -> None:
    bridge = make_bridge()
    start_session(bridge)
    bridge.handle(rt.ResponseDone("resp_greet", "completed"), 5)
    before = realtime(bridge.handle(DtmfReceived("1"), 6))
    assert [e["type"] for e in before][-1] == "response.create" and "max_output_tokens" not in before[-1]["response"]
    bridge.handle(rt.ResponseCreated("resp_dtmf"), 7)
    # a response is active: the closing line waits for it, and still carries the limit when it goes
    assert realtime(bridge.handle(WrapUp("Close now.", "per-day cap", 5000, 160), 10)) == []
    queued = realtime(bridge.handle(rt.ResponseDone("resp_dtmf", "completed"), 12))
    assert [e["response"] for e in queued if e["type"] == "response.create"] == [
        {"output_modalities": ["audio"], "instructions": "Close now.", "max_output_tokens": 160}
    ]


def test_a_wrap_up_hangs_up_at_its_grace_when_no_line_comes() -> None:
    bridge = make_bridge()
    start_session(bridge)  # a response is in flight and never finishes
    bridge.handle(WrapUp("Close now.", "per-day cap", 3000), 100)
    assert of(bridge.handle(Tick(), 3000), HangUp) == []
    assert len(of(bridge.handle(Tick(), 3100), HangUp)) == 1


def test_a_hard_stop_hangs_up_at_once_and_only_once() -> None:
    bridge = make_bridge()
    start_session(bridge)
    assert [h.reason for h in of(bridge.handle(HardStop("runaway"), 10), HangUp)] == ["runaway"]
    assert bridge.handle(HardStop("again"), 20) == []


def test_a_hard_stop_cancels_the_response_in_progress_and_nothing_more_flows_either_way() -> None:
    bridge = make_bridge()
    start_session(bridge)  # the greeting is being generated
    deliver_audio(bridge, "resp_greet", "item_1", 1600, 2)
    stop = bridge.handle(HardStop("runaway"), 10)
    assert [e for e in realtime(stop)] == [{"type": "response.cancel", "response_id": "resp_greet"}]
    assert bridge.ended and bridge.stopped_hard
    # caller audio goes nowhere (nothing appended, nothing held), agent audio still arriving is not played
    assert bridge.handle(MediaReceived(b"\x00" * 160), 30) == []
    assert deliver_audio(bridge, "resp_greet", "item_1", 1600, 40) == []
    assert bridge.frames_in == 1 and bridge.frames_held == 0


def test_after_the_goodbye_hang_up_caller_audio_is_no_longer_sent() -> None:
    bridge = make_bridge()
    start_session(bridge)
    bridge.handle(rt.ResponseDone("resp_greet", "completed"), 5)
    assert of(bridge.handle(WrapUp("Close now.", "per-call cap", 0), 6), SendToRealtime)
    assert of(bridge.handle(Tick(), 10), HangUp)  # nothing in flight: the hang-up goes at once
    assert bridge.handle(MediaReceived(b"\x00" * 160), 20) == []
    assert not bridge.stopped_hard


def test_after_a_loss_a_question_already_transcribed_is_answered_by_the_new_session() -> None:
    bridge = make_bridge()
    start_session(bridge)
    bridge.handle(rt.ResponseDone("resp_greet", "completed"), 5)
    bridge.handle(MediaReceived(b"\xff" * 160), 10)  # audio in flight: the loss re-sends it
    bridge.handle(rt.SpeechStarted(0, "u1"), 20)
    bridge.handle(rt.InputTranscribed("u1", "Is Tuesday free?"), 30)
    bridge.handle(UpstreamLost("closed 1006"), 40)
    sent = [e["type"] for e in realtime(ready(bridge, 50))]
    assert "response.create" in sent and sent.index("response.create") < sent.index("input_audio_buffer.append")


def test_turn_latency_runs_from_the_caller_stopping_to_the_answers_first_audio_once() -> None:
    bridge = make_bridge()
    start_session(bridge)
    assert not [
        c for c in deliver_audio(bridge, "resp_greet", "item_g", 4800, 10) if getattr(c, "kind", "") == "turn_latency"
    ]
    bridge.handle(rt.ResponseDone("resp_greet", "completed"), 20)
    bridge.handle(rt.SpeechStarted(0, "item_c"), 1_000)
    bridge.handle(rt.SpeechStopped(900, "item_c"), 1_900)
    bridge.handle(rt.ResponseCreated("resp_2"), 2_000)
    first = of(deliver_audio(bridge, "resp_2", "item_a", 4800, 2_250), RecordCallEvent)
    later = of(deliver_audio(bridge, "resp_2", "item_a", 4800, 2_300), RecordCallEvent)
    assert [(e.kind, e.detail["ms"]) for e in first if e.kind == "turn_latency"] == [("turn_latency", 350)]
    assert [e for e in later if e.kind == "turn_latency"] == []


def test_nothing_but_the_configuration_is_sent_until_the_session_confirms_it() -> None:
    bridge = make_bridge()
    configure = realtime(bridge.handle(UpstreamReady(), 0))
    assert [e["type"] for e in configure] == ["session.update"] and configure[0]["event_id"] == "sb_session_1"
    # caller audio meanwhile is held, not sent to a session that may still be on its defaults
    assert bridge.handle(MediaReceived(b"\xff" * 160), 10) == [] and bridge.frames_held == 1
    confirmed = realtime(bridge.handle(rt.SessionUpdated({}), 20))
    assert [e["type"] for e in confirmed] == ["response.create", "input_audio_buffer.append"]  # greeting, held audio


def test_a_refused_configuration_replaces_the_session() -> None:
    bridge = make_bridge()
    bridge.handle(UpstreamReady(), 0)
    other = bridge.handle(rt.RealtimeError("invalid_value", "bad", "invalid_request_error", "sb_resp_9"), 5)
    assert of(other, RestartUpstream) == []  # an error about another event is not about the configuration
    refused = bridge.handle(rt.RealtimeError("unknown_parameter", "Unknown parameter: 'session.x'.",
                                             "invalid_request_error", "sb_session_1"), 10)  # fmt: skip
    assert [r.reason for r in of(refused, RestartUpstream)] == ["session.update refused: unknown_parameter"]
    assert not bridge.upstream_ready
    # the next session is configured afresh, with a new event id
    assert realtime(bridge.handle(UpstreamReady(), 50))[0]["event_id"] == "sb_session_2"


def test_a_session_that_never_confirms_its_configuration_is_replaced_after_two_seconds() -> None:
    bridge = make_bridge()
    bridge.handle(UpstreamReady(), 1000)
    assert of(bridge.handle(Tick(), 2999), RestartUpstream) == []
    assert len(of(bridge.handle(Tick(), 3000), RestartUpstream)) == 1
    assert of(bridge.handle(Tick(), 3250), RestartUpstream) == []  # asked once


def test_idle_timeout_is_held_to_the_range_the_api_takes() -> None:
    base = {"model": "gpt-realtime", "instructions": "x", "voice": "marin", "audio_format": "pcmu"}
    for ms in (5_000, 30_000, None):
        rt.SessionSettings(**base, idle_timeout_ms=ms)  # type: ignore[arg-type]
    for ms in (4_999, 30_001, 200):
        with pytest.raises(ValueError, match="5000-30000"):
            rt.SessionSettings(**base, idle_timeout_ms=ms)  # type: ignore[arg-type]


def test_a_tool_that_finishes_after_its_session_was_lost_reaches_the_next_one_as_context() -> None:
    bridge = make_bridge(custom_tools=("lookup",))
    start_session(bridge)
    deliver_audio(bridge, "resp_greet", "item_greet", 800, 2)  # greeted: the next session does not greet again
    bridge.handle(rt.ResponseDone("resp_greet", "completed"), 5)
    bridge.handle(rt.ResponseCreated("resp_2"), 10)
    bridge.handle(rt.FunctionCallReady("resp_2", "call_old", "lookup", '{"q": "hours"}'), 11)
    started = bridge.handle(rt.ResponseDone("resp_2", "completed"), 12)
    assert [c.call_id for c in of(started, RunTool)] == ["call_old"]
    bridge.handle(UpstreamLost("closed 1006"), 20)
    ready(bridge, 30)  # the new session: it never saw call_old
    sent = realtime(bridge.handle(ToolFinished("call_old", "lookup", '{"open": "9-5"}', True), 40))
    assert "function_call_output" not in str(sent)
    [note] = [e for e in sent if e["type"] == "conversation.item.create"]
    assert note["item"]["role"] == "user" and '{"open": "9-5"}' in note["item"]["content"][0]["text"]
    assert sent[-1]["type"] == "response.create"


def test_a_barge_in_after_a_reconnection_never_truncates_the_lost_sessions_item() -> None:
    bridge = make_bridge()
    start_session(bridge)
    deliver_audio(bridge, "resp_greet", "item_old", 1600, 2)  # playing at Twilio, unacknowledged
    bridge.handle(UpstreamLost("closed 1006"), 20)
    ready(bridge, 30)
    cut = bridge.handle(rt.SpeechStarted(100, "item_caller"), 40)
    assert not [e for e in realtime(cut) if e["type"] == "conversation.item.truncate"]
    assert [t["event"] for t in twilio(cut)] == ["clear"]  # what still plays at Twilio is flushed all the same


def test_a_pending_goodbye_of_a_lost_session_is_not_cancelled_with_its_old_call_id() -> None:
    bridge = make_bridge()
    start_session(bridge)
    bridge.handle(rt.ResponseDone("resp_greet", "completed"), 5)
    bridge.handle(rt.ResponseCreated("resp_2"), 10)
    deliver_audio(bridge, "resp_2", "item_bye", 1600, 11)  # the goodbye is still playing at Twilio
    bridge.handle(rt.FunctionCallReady("resp_2", "call_bye", "end_call", '{"reason": "done"}'), 11)
    bridge.handle(rt.ResponseDone("resp_2", "completed"), 12)
    assert not bridge.ended  # the hang-up waits for the goodbye to play
    bridge.handle(UpstreamLost("closed 1006"), 20)
    ready(bridge, 30)
    spoke = realtime(bridge.handle(rt.SpeechStarted(100, "item_caller"), 40))
    assert not [e for e in spoke if "call_bye" in str(e)]


def test_no_empty_append_goes_upstream_while_the_resampler_fills() -> None:
    bridge = make_bridge("pcm24k")
    ready(bridge, 0)
    sent = [e for n in range(10) for e in realtime(bridge.handle(MediaReceived(b"\x7f" * 160), 20 * n))]
    appends = [e for e in sent if e["type"] == "input_audio_buffer.append"]
    assert appends and all(e["audio"] for e in appends)
    assert bridge.frames_in == 10


def test_a_failed_response_is_asked_for_once_more_then_the_call_is_handed_off() -> None:
    bridge = make_bridge()
    bridge.handle(UpstreamReady(), 0)
    greeting = realtime(bridge.handle(rt.SessionUpdated({}), 0))[0]["response"]["instructions"]
    bridge.handle(rt.ResponseCreated("resp_1"), 1)
    retry = bridge.handle(rt.ResponseDone("resp_1", "failed", {}, {"type": "failed"}), 5)
    again = [e for e in realtime(retry) if e["type"] == "response.create"]
    assert [e["response"]["instructions"] for e in again] == [greeting]  # the greeting, as first asked
    assert [c.kind for c in of(retry, RecordCallEvent) if c.kind == "response_retried"] == ["response_retried"]
    bridge.handle(rt.ResponseCreated("resp_2"), 6)
    gave_up = bridge.handle(rt.ResponseDone("resp_2", "incomplete", {}, {"type": "incomplete",
                                                                        "reason": "content_filter"}), 9)  # fmt: skip
    assert [h.reason for h in of(gave_up, HandOff)] == ["the model failed to answer 2 times in a row"]
    assert bridge.ended


def test_a_closing_line_held_to_its_token_limit_is_not_a_failure() -> None:
    bridge = make_bridge()
    start_session(bridge)
    bridge.handle(rt.ResponseDone("resp_greet", "completed"), 5)
    bridge.handle(WrapUp("Close now.", "per-call cap", 5000, 160), 6)
    bridge.handle(rt.ResponseCreated("resp_close"), 7)
    done = bridge.handle(rt.ResponseDone("resp_close", "incomplete", {}, {"type": "incomplete",
                                                                         "reason": "max_output_tokens"}), 9)  # fmt: skip
    assert of(done, HandOff) == [] and not [e for e in realtime(done) if e["type"] == "response.create"]


def test_a_failed_transcription_is_a_caller_line_that_says_so_and_nothing_waits_for_it() -> None:
    bridge = make_bridge()
    start_session(bridge)
    bridge.handle(rt.SpeechStarted(1000, "item_c1"), 1000)
    assert bridge.awaiting_transcription
    failed = bridge.handle(rt.InputTranscriptionFailed("item_c1", "audio_unintelligible"), 1800)
    assert not bridge.awaiting_transcription
    [saved] = of(failed, SaveTranscript)
    assert (saved.line.speaker, saved.line.text, saved.line.offset_ms) == ("caller", UNTRANSCRIBED, 1000)


def test_a_late_transcript_takes_its_place_before_the_answer_it_prompted() -> None:
    bridge = make_bridge()
    start_session(bridge)
    bridge.handle(rt.SpeechStarted(1000, "item_q"), 1000)  # the caller asks ...
    bridge.handle(rt.ResponseDone("resp_greet", "completed"), 1500)
    bridge.handle(rt.ResponseCreated("resp_a"), 2000)
    sent = deliver_audio(bridge, "resp_a", "item_a", 1600, 2100)  # ... the agent answers ...
    bridge.handle(rt.AudioDone("resp_a", "item_a"), 2200)
    bridge.handle(rt.TranscriptDone("resp_a", "item_a", "We open at nine."), 2200)
    for mark in [m["mark"]["name"] for m in twilio(sent) if m["event"] == "mark"]:
        bridge.handle(MarkAcknowledged(mark), 2300)  # ... the caller heard all of it ...
    assert [line.speaker for line in bridge.history] == ["agent"]
    bridge.handle(rt.InputTranscribed("item_q", "When do you open?"), 2600)  # ... and the question lands last
    assert [line.speaker for line in bridge.history] == ["caller", "agent"]
    assert bridge.history[0].text == "When do you open?"


def test_the_realtime_engine_reports_its_stages_per_turn_from_the_end_of_speech() -> None:
    """Speech end -> response created -> first audio delta -> first frame to the caller, once per turn."""
    bridge = make_bridge()
    start_session(bridge)
    bridge.handle(rt.ResponseDone("resp_greet", "completed"), 20)
    stages: list[tuple[int, str, int]] = []

    def record(commands: list[Any]) -> None:
        stages.extend(
            (e.detail["turn"], e.detail["stage"], e.detail["ms"]) for e in of(commands, RecordCallEvent)
            if e.kind == "turn_stage"
        )  # fmt: skip

    for turn, at in ((1, 1_000), (2, 5_000)):
        bridge.handle(rt.SpeechStarted(0, f"c{turn}"), at - 900)
        record(bridge.handle(rt.SpeechStopped(0, f"c{turn}"), at))
        record(bridge.handle(rt.ResponseCreated(f"r{turn}"), at + 120))
        record(deliver_audio(bridge, f"r{turn}", f"a{turn}", 4800, at + 300))
        record(deliver_audio(bridge, f"r{turn}", f"a{turn}", 4800, at + 400))
        bridge.handle(rt.ResponseDone(f"r{turn}", "completed"), at + 500)
    assert stages == [
        (1, "response_created", 120), (1, "first_delta", 300), (1, "first_audio", 300),
        (2, "response_created", 120), (2, "first_delta", 300), (2, "first_audio", 300),
    ]  # fmt: skip
