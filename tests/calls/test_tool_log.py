"""Tool invocations read off a call's event log (pure)."""

from __future__ import annotations

from datetime import UTC, datetime

from app.archive.service import CallEventRecord, invocations_from_events

AT = datetime(2026, 11, 21, tzinfo=UTC)


def ev(kind: str, offset: int, **detail: object) -> CallEventRecord:
    return CallEventRecord(kind, dict(detail), offset, AT)


def test_each_call_id_becomes_one_invocation_with_its_outcome() -> None:
    events = [
        ev("tool_called", 100, name="lookup", call_id="c1", arguments={"q": "x"}),
        ev("barge_in", 150, item_id="i"),
        ev("tool_result", 180, name="lookup", call_id="c1", ok=True, output='{"found":1}'),
        ev("tool_skipped", 200, name="lookup", call_id="c2", status="cancelled"),
        ev(
            "tool_result",
            220,
            name="bad",
            call_id="c3",
            ok=False,
            output='{"error":"arguments were not a JSON object"}',
        ),
        ev("tool_called", 300, name="end_call", call_id="c4", arguments={}),
        ev("call_ending", 900, action="HangUp", reason="done"),
    ]
    got = [(t.name, t.tool_call_id, t.status, t.output, t.offset_ms) for t in invocations_from_events(events)]
    assert got == [
        ("lookup", "c1", "ok", '{"found":1}', 100),
        ("lookup", "c2", "skipped", "not run: cancelled", 200),
        ("bad", "c3", "error", '{"error":"arguments were not a JSON object"}', 220),
        ("end_call", "c4", "done", "hung up", 300),
    ]


def test_a_builtin_tool_whose_call_never_ended_stays_pending() -> None:
    events = [ev("tool_called", 10, name="transfer_to_human", call_id="t1", arguments={})]
    assert [t.status for t in invocations_from_events(events)] == ["pending"]
