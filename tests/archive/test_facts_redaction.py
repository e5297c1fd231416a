"""Pure pieces of supervisor review: call facts from events, percentiles, transcript redaction."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.archive.facts import call_facts, percentile
from app.archive.redaction import CARD, SSN, luhn_ok, redactor


def test_disposition_precedence_and_flags() -> None:
    assert call_facts("completed", []).disposition == "completed"
    assert call_facts("failed", [("opted_out", {})]).disposition == "failed"
    hung = [("call_ending", {"action": "HangUp"})]
    assert call_facts("completed", hung).disposition == "agent_ended"
    transfer = call_facts("completed", [("call_ending", {"action": "TransferCall"})])
    assert (transfer.disposition, transfer.transferred, transfer.opted_out) == ("transferred", True, False)
    both = call_facts("completed", [("opted_out", {"source": "dtmf"}), ("call_ending", {"action": "HangUp"})])
    assert (both.disposition, both.opted_out) == ("opted_out", True)
    assert call_facts("completed", [("budget_wrap_up", {}), *hung]).disposition == "budget_ended"


def test_turn_latencies_give_p50_and_p95() -> None:
    events = [("turn_latency", {"ms": ms}) for ms in (300, 100, 200, 400, 1000)] + [("turn_latency", {"ms": -1})]
    facts = call_facts("completed", events)
    assert (facts.turns, facts.latency_p50_ms, facts.latency_p95_ms) == (5, 300, 1000)
    assert call_facts("completed", []).latency_p50_ms is None


def test_percentile_nearest_rank() -> None:
    assert percentile([], 50) is None
    assert percentile([7], 95) == 7
    assert percentile(list(range(1, 101)), 95) == 95
    assert percentile(list(range(1, 101)), 50) == 50


ALL = redactor(["card", "ssn", "email", "cvv"])


@pytest.mark.parametrize(
    ("said", "stored"),
    [
        ("my card is 4111 1111 1111 1111 thanks", f"my card is {CARD} thanks"),
        ("it's 4111-1111-1111-1111", f"it's {CARD}"),
        ("amex 378282246310005", f"amex {CARD}"),
        ("my social is 123-45-6789", f"my social is {SSN}"),
        ("my social is 123 45 6789", f"my social is {SSN}"),
        ("the security code is 123", "the security code is [cvv]"),
        ("write to jane.doe+x@example.com please", "write to [email] please"),
        # left alone: a failed Luhn check, a phone number, an impossible SSN, a date
        ("order 4111 1111 1111 1112", "order 4111 1111 1111 1112"),
        ("call me on 212 555 0123", "call me on 212 555 0123"),
        ("ref 666-12-3456", "ref 666-12-3456"),
        ("on 2026-11-21", "on 2026-11-21"),
    ],
)
def test_redaction(said: str, stored: str) -> None:
    assert ALL(said) == stored


def test_only_the_chosen_patterns_and_unknown_ones_refused() -> None:
    assert redactor(["ssn"])("4111 1111 1111 1111 and 123-45-6789") == f"4111 1111 1111 1111 and {SSN}"
    assert redactor([])("123-45-6789") == "123-45-6789"
    with pytest.raises(ValueError, match="unknown redaction pattern"):
        redactor(["cards"])


@given(st.lists(st.integers(0, 9), min_size=12, max_size=18))
def test_any_luhn_valid_card_number_is_redacted(body: list[int]) -> None:
    digits = "".join(map(str, body))
    check = next(str(d) for d in range(10) if luhn_ok(digits + str(d)))
    number = digits + check
    grouped = " ".join(number[i : i + 4] for i in range(0, len(number), 4))
    assert ALL(f"card {number} ok") == f"card {CARD} ok"
    assert ALL(f"card {grouped} ok") == f"card {CARD} ok"


def test_a_calls_recording_is_read_off_its_recording_event() -> None:
    joined = call_facts("completed", [("recording", {"key": "CA1/recording.ogg", "seconds": 12.34, "gaps": []})])
    assert (joined.recording_key, joined.recording_ms, joined.recording_unjoined) == ("CA1/recording.ogg", 12340, False)
    unjoined = call_facts("completed", [("recording", {"key": None, "parts": 3, "error": "OSError()"})])
    assert (unjoined.recording_key, unjoined.recording_unjoined) == (None, True)
    nothing = call_facts("completed", [("recording", {"key": None, "reason": "nothing recorded"})])
    assert (nothing.recording_key, nothing.recording_unjoined) == (None, False)
    assert call_facts("completed", []).recording_key is None
