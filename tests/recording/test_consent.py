"""Recording consent by the callee's state, as data: each case is a number (located as the dialer locates it)
and a RECORDING mode, with the decision the law table gives."""

from __future__ import annotations

import pytest

from app.dialer.location import locate
from app.recording.consent import ALL_PARTY_CONSENT_STATES, decide

CASES = [
    # (number, mode, recorded, announced, the all-party states that decided it)
    ("+14155550123", "announce", True, True, ("CA",)),  # San Francisco
    ("+14155550123", "on", False, False, ("CA",)),
    ("+14155550123", "off", False, False, ()),
    ("+12125550123", "on", True, False, ()),  # New York: one-party
    ("+12125550123", "announce", True, True, ()),  # announced anyway: the deployment asked for it
    ("+13055550123", "on", False, False, ("FL",)),  # Miami
    ("+13125550123", "on", False, False, ("IL",)),  # Chicago
    ("+16175550123", "on", False, False, ("MA",)),  # Boston
    ("+12065550123", "on", False, False, ("WA",)),  # Seattle
    ("+12155550123", "on", False, False, ("PA",)),  # Philadelphia
    ("+14065550123", "on", False, False, ("MT",)),  # Montana
    ("+16035550123", "on", False, False, ("NH",)),  # New Hampshire
    ("+14105550123", "on", False, False, ("MD",)),  # Baltimore
    ("+15035550123", "on", True, False, ()),  # Portland, Oregon: one-party for telephone calls
    ("+17025550123", "on", False, False, ("NV",)),  # Las Vegas
]


@pytest.mark.parametrize(("number", "mode", "recorded", "announced", "states"), CASES)
def test_the_decision_follows_the_table_for_every_state_the_number_may_be_in(
    number: str, mode: str, recorded: bool, announced: bool, states: tuple[str, ...]
) -> None:
    decision = decide(mode, locate(number).states)  # type: ignore[arg-type]
    assert (decision.record, decision.announce, decision.all_party_states) == (recorded, announced, states)
    assert decision.table_version and decision.reason


def test_a_contact_recorded_in_an_all_party_state_counts_whatever_its_area_code() -> None:
    """A New York number whose contact lives in California: both states are candidates."""
    location = locate("+12125550123", state="CA")
    assert decide("on", location.states).all_party_states == ("CA",)


def test_a_number_that_cannot_be_placed_is_treated_as_all_party() -> None:
    decision = decide("on", None)
    assert (decision.record, decision.all_party_states) == (False, ("unknown",))
    assert decide("announce", None).record


def test_every_rule_names_its_statute_and_the_table_holds_the_states_the_law_lists() -> None:
    assert {"CA", "FL", "IL", "MD", "MA", "MT", "NH", "PA", "WA"} <= set(ALL_PARTY_CONSENT_STATES)
    assert all(rule.statute for rule in ALL_PARTY_CONSENT_STATES.values())
    assert "OR" not in ALL_PARTY_CONSENT_STATES  # in-person conversations only
