"""What the call page's player marks on its track (pure)."""

from __future__ import annotations

from app.console.present import recording_marks


def test_the_player_marks_barge_ins_tools_pauses_and_silenced_spans_in_time_order() -> None:
    events = [
        {"kind": "barge_in", "detail": {"item_id": "i1"}, "offset_ms": 4_200},
        {"kind": "recording_paused", "detail": {"tool": "take_card"}, "offset_ms": 9_000},
        {"kind": "recording_silenced", "detail": {"from_ms": 1_500, "to_ms": 3_000, "speaker": "caller"},
         "offset_ms": 3_100},
        {"kind": "turn_latency", "detail": {"ms": 700}, "offset_ms": 2_000},  # not a mark
        {"kind": "barge_in", "detail": {}, "offset_ms": None},  # no time: nowhere to put it
    ]  # fmt: skip
    tools = [
        {"name": "take_card", "status": "ok", "offset_ms": 8_990},
        {"name": "x", "status": "ok", "offset_ms": None},
    ]
    marks = recording_marks(events, tools)
    assert [(m["kind"], m["at_ms"]) for m in marks] == [
        ("silenced", 1_500), ("barge_in", 4_200), ("tool", 8_990), ("paused", 9_000)
    ]  # fmt: skip
    assert marks[0]["label"] == "Silenced: redacted caller speech"
    assert marks[2]["label"] == "Tool: take_card (ok)" and "sensitive" in marks[3]["label"]


def test_a_cut_line_says_why_it_was_cut() -> None:
    from app.console.present import cut_reasons

    lines = [
        {"seq": 1, "speaker": "agent", "interrupted": False},
        {"seq": 2, "speaker": "agent", "interrupted": True},  # the caller spoke next: a barge-in
        {"seq": 3, "speaker": "caller", "interrupted": False},
        {"seq": 4, "speaker": "agent", "interrupted": True},  # nothing after it: the call's end cut it
    ]
    assert cut_reasons(lines, [{"kind": "barge_in"}]) == {2: "barge_in", 4: "ended"}
    assert cut_reasons(lines, [{"kind": "budget_hard_stop"}]) == {2: "barge_in", 4: "budget"}


def test_events_read_as_plain_words_and_an_unknown_one_by_its_name() -> None:
    from app.console.present import event_text

    assert event_text("dtmf", {"digit": "9"}) == "The caller pressed 9"
    assert event_text("turn_latency", {"ms": 412}) == "The agent answered 412 ms after the caller stopped speaking"
    assert event_text("call_ending", {"action": "TransferCall", "reason": "billing question"}) == (
        "The agent transferred the call: billing question"
    )
    assert event_text("tool_result", {"name": "book", "ok": False}) == "The tool book failed"
    assert event_text("recording_decision", {"record": True, "announce": True, "reason": "RECORDING=announce"}) == (
        "Recorded after an announcement: RECORDING=announce"
    )
    assert (
        event_text("barge_in", {"audio_end_ms": 2300})
        == "The caller spoke over the agent, whose audio was cut after 2.3 s"
    )
    assert event_text("something_new", {}) == "Something new"
    assert (
        event_text("barge_in", {"audio_end_ms": "x"}) == "The caller spoke over the agent, whose audio was cut after ?"
    )
