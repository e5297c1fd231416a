"""Properties of the engine over any number and instant (hypothesis)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import holidays
import phonenumbers
from hypothesis import given, settings
from hypothesis import strategies as st

from app.dialer import rules
from app.dialer.location import locate
from app.dialer.policy import CampaignRules, Consent, ContactFacts, Outcome, Purpose, decide


def _geographic_area_codes() -> list[str]:
    codes = []
    for npa in range(201, 990):
        parsed = phonenumbers.parse(f"+1{npa}5550123")
        if phonenumbers.is_valid_number(parsed) and locate(f"+1{npa}5550123").kind == "geographic":
            codes.append(str(npa))
    return codes


AREA_CODES = _geographic_area_codes()
numbers = st.builds(
    lambda npa, line: f"+1{npa}555{line:04d}", st.sampled_from(AREA_CODES), st.integers(min_value=100, max_value=199)
)
instants = st.datetimes(min_value=datetime(2026, 1, 1), max_value=datetime(2027, 12, 31)).map(
    lambda d: d.replace(tzinfo=UTC)
)
states = st.one_of(st.none(), st.sampled_from(sorted(rules.STATE_ZONES)))
purposes = st.sampled_from([Purpose.informational, Purpose.emergency])


def inside_every_window(number: str, state: str | None, at: datetime) -> bool:
    """An independent reading of the rules: every candidate zone, every candidate state."""
    loc = locate(number, state=state)
    for name in loc.zones:
        local = at.astimezone(ZoneInfo(name))
        minute = local.hour * 60 + local.minute
        if not rules.FEDERAL_WINDOW[0] <= minute < rules.FEDERAL_WINDOW[1]:
            return False
        for code in loc.states:
            rule = rules.STATE_RULES.get(code)
            if rule is None:
                continue
            if rule.no_calls_on_state_holidays and local.date() in holidays.country_holidays("US", subdiv=code):
                return False
            day = local.weekday()
            window = rule.weekday if day < 5 else rule.saturday if day == 5 else rule.sunday
            if window is None or not window[0] <= minute < window[1]:
                return False
    return True


@settings(max_examples=400, deadline=None)
@given(numbers, states, instants, purposes)
def test_an_allow_is_inside_the_window_of_every_candidate_zone(
    number: str, state: str | None, at: datetime, purpose: Purpose
) -> None:
    contact = ContactFacts(locate(number, state=state), consent=Consent.written)
    decision = decide(contact, CampaignRules(purpose, "s"), at)
    if decision.outcome is Outcome.allow:
        assert inside_every_window(number, state, at)
    else:
        assert not inside_every_window(number, state, at)


@settings(max_examples=200, deadline=None)
@given(numbers, states, instants)
def test_a_deferral_names_the_earliest_lawful_instant(number: str, state: str | None, at: datetime) -> None:
    contact = ContactFacts(locate(number, state=state), consent=Consent.written)
    campaign = CampaignRules(Purpose.informational, "s")
    decision = decide(contact, campaign, at)
    if decision.outcome is Outcome.defer:
        assert decision.defer_until is not None and decision.defer_until > at
        assert inside_every_window(number, state, decision.defer_until)
        assert not inside_every_window(number, state, decision.defer_until - timedelta(minutes=1))
