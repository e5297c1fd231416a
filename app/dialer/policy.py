"""The compliance engine: may this number be dialed for this campaign at this instant, and why (not).

``decide(contact, campaign, now, history) -> DialDecision`` is pure: time is an argument, facts
(consent, DNC, past attempts) are plain values the caller looked up. It fails closed: an unknown
location, number or consent never yields an allow. Every outcome carries the rules that decided it,
each with its source (app/dialer/rules.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from functools import lru_cache

import holidays

from app.dialer import rules
from app.dialer.location import Location, zone
from app.dialer.rules import StateRule, Window

SEARCH_DAYS = 14


class Purpose(StrEnum):
    marketing = "marketing"
    informational = "informational"
    healthcare = "healthcare"
    emergency = "emergency"


class Consent(StrEnum):
    written = "written"  # prior express written consent
    express = "express"  # prior express consent


class Outcome(StrEnum):
    allow = "allow"
    deny = "deny"
    defer = "defer"  # lawful later: see defer_until
    review = "review"  # not dialed automatically; a person must look at it


@dataclass(frozen=True, slots=True)
class Reason:
    code: str
    message: str
    source: str


@dataclass(frozen=True, slots=True)
class DialDecision:
    outcome: Outcome
    reasons: tuple[Reason, ...]
    defer_until: datetime | None = None

    @property
    def allowed(self) -> bool:
        return self.outcome is Outcome.allow

    @property
    def codes(self) -> tuple[str, ...]:
        return tuple(r.code for r in self.reasons)


@dataclass(frozen=True, slots=True)
class ContactFacts:
    location: Location
    consent: Consent | None = None
    revoked: bool = False
    internal_dnc: bool = False
    national_dnc: bool = False
    existing_customer: bool = False


@dataclass(frozen=True, slots=True)
class CampaignRules:
    purpose: Purpose
    subject: str
    window: Window | None = None  # an operator's narrower daily window, callee-local
    national_dnc_as_of: date | None = None  # date of the registry copy the deployment imported


@dataclass(frozen=True, slots=True)
class PastAttempt:
    at: datetime
    subject: str
    purpose: Purpose


@dataclass(frozen=True, slots=True)
class Jurisdiction:
    """Deployment-wide facts: the rule tables in force and declared states of emergency."""

    states: Mapping[str, StateRule] = field(default_factory=lambda: rules.STATE_RULES)
    emergencies: frozenset[str] = frozenset()


DEFAULT_JURISDICTION = Jurisdiction()


def decide(
    contact: ContactFacts,
    campaign: CampaignRules,
    now: datetime,
    history: Sequence[PastAttempt] = (),
    jurisdiction: Jurisdiction = DEFAULT_JURISDICTION,
) -> DialDecision:
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    loc = contact.location
    blocked = _number_and_location(loc) or _consent_and_lists(contact, campaign, now)
    if blocked is not None:
        return blocked
    table = jurisdiction.states
    states = tuple(table[s] for s in loc.states if s in table)
    if jurisdiction.emergencies:
        for rule in states:
            if rule.banned_in_declared_emergency and rule.state in jurisdiction.emergencies:
                reason = Reason("state.emergency", f"{rule.state} is under a declared state of emergency", rule.source)
                return DialDecision(Outcome.deny, (reason,))
    earliest, cap_reasons = _frequency_caps(contact, campaign, now, history, states)
    windows = _windows(loc.zones, states, campaign.window)
    if not cap_reasons:
        closed = windows.closed_at(now)
        if closed is None:
            return DialDecision(Outcome.allow, (_allowed_reason(loc.zones, tuple(r.state for r in states)),))
        cap_reasons = [closed]
    when = windows.next_open(max(now, earliest))
    if when is None:
        reason = Reason("window.none", f"no lawful instant in the next {SEARCH_DAYS} days", rules.LOCATION_SOURCE)
        return DialDecision(Outcome.deny, (*cap_reasons, reason))
    return DialDecision(Outcome.defer, tuple(cap_reasons), when.astimezone(UTC))


def _number_and_location(loc: Location) -> DialDecision | None:
    if loc.kind == "invalid":
        return DialDecision(Outcome.review, (Reason("number.invalid", "; ".join(loc.notes), rules.NUMBER_SOURCE),))
    if loc.kind == "non_geographic":
        reason = Reason("number.non_geographic", "toll-free or non-geographic number", rules.NUMBER_SOURCE)
        return DialDecision(Outcome.review, (reason,))
    if loc.kind == "foreign":
        return DialDecision(Outcome.review, (Reason("number.foreign", "; ".join(loc.notes), rules.NUMBER_SOURCE),))
    if not loc.zones:
        reason = Reason("location.unknown", "no candidate time zone for this number", rules.LOCATION_SOURCE)
        return DialDecision(Outcome.review, (reason,))
    if not loc.states:
        # State rules only narrow the federal window: without a state we cannot know what they forbid.
        reason = Reason("location.state_unknown", "no candidate state for this number", rules.LOCATION_SOURCE)
        return DialDecision(Outcome.review, (reason,))
    return None


def _consent_and_lists(contact: ContactFacts, campaign: CampaignRules, now: datetime) -> DialDecision | None:
    if contact.revoked:
        return _deny("consent.revoked", "the callee revoked consent", rules.REVOCATION_SOURCE)
    if contact.internal_dnc:
        return _deny("dnc.internal", "the number is on our do-not-call list", rules.INTERNAL_DNC_SOURCE)
    purpose = campaign.purpose
    if purpose is Purpose.marketing and contact.consent is not Consent.written:
        return _deny(
            "consent.written_required", "marketing needs prior express written consent", rules.WRITTEN_CONSENT_SOURCE
        )
    if purpose in (Purpose.informational, Purpose.healthcare) and contact.consent is None:
        return _deny(
            "consent.required",
            f"{purpose.value} artificial-voice calls need prior express consent",
            rules.CONSENT_SOURCE,
        )
    if purpose is Purpose.marketing:
        as_of = campaign.national_dnc_as_of
        age = (now.date() - as_of).days if as_of is not None else None
        if age is None or age > rules.NATIONAL_DNC_MAX_AGE_DAYS:
            told = "no national registry copy" if age is None else f"the national registry copy is {age} days old"
            return _deny(
                "dnc.national_stale", f"{told}; marketing needs one at most 31 days old", rules.NATIONAL_DNC_SOURCE
            )
        if contact.national_dnc:
            return _deny(
                "dnc.national", "the number is on the national do-not-call registry", rules.NATIONAL_DNC_SOURCE
            )
    return None


def _deny(code: str, message: str, source: str) -> DialDecision:
    return DialDecision(Outcome.deny, (Reason(code, message, source),))


def _frequency_caps(
    contact: ContactFacts,
    campaign: CampaignRules,
    now: datetime,
    history: Sequence[PastAttempt],
    states: Iterable[StateRule],
) -> tuple[datetime, list[Reason]]:
    """(earliest instant the caps allow, reasons they bind now)."""
    if campaign.purpose is Purpose.emergency or not history:
        return now, []
    caps: list[tuple[int, int, str, str, Sequence[PastAttempt]]] = []
    if campaign.purpose is Purpose.healthcare:
        healthcare = [a for a in history if a.purpose is Purpose.healthcare]
        for calls, window_h in rules.HEALTHCARE_CAPS:
            caps.append((calls, window_h, "cap.healthcare", rules.HEALTHCARE_CAP_SOURCE, healthcare))
    elif campaign.purpose is Purpose.informational:
        exempt = [a for a in history if a.purpose is not Purpose.marketing and a.purpose is not Purpose.emergency]
        calls, window_h = rules.EXEMPT_CAP
        caps.append((calls, window_h, "cap.exempt", rules.EXEMPT_CAP_SOURCE, exempt))
    same_subject = [a for a in history if a.subject == campaign.subject]
    for rule in states:
        cap = rule.cap
        if cap is None or (cap.waived_for_existing_customers and contact.existing_customer):
            continue
        caps.append((cap.calls, cap.window_h, f"cap.state.{rule.state}", rule.source, same_subject))
    earliest = now
    reasons: list[Reason] = []
    for calls, window_h, code, source, attempts in caps:
        span = timedelta(hours=window_h)
        recent = sorted(a.at for a in attempts if now - span < a.at <= now)
        if len(recent) >= calls:
            free_at = recent[len(recent) - calls] + span
            earliest = max(earliest, free_at)
            message = f"{len(recent)} calls in the last {window_h} h (limit {calls})"
            reasons.append(Reason(code, message, source))
    return earliest, reasons


@lru_cache(maxsize=4096)
def _allowed_reason(zones: tuple[str, ...], states: tuple[str, ...]) -> Reason:
    where = ", ".join(zones)
    under = ", ".join(states) or "federal rules only"
    return Reason("window.open", f"inside the calling window in {where} ({under})", rules.FEDERAL_WINDOW_SOURCE)


@lru_cache(maxsize=2048)
def _state_holidays(state: str, year: int) -> frozenset[date]:
    return frozenset(holidays.country_holidays("US", subdiv=state, years=year))


def _state_window(rule: StateRule, day: date) -> Window | None:
    if rule.no_calls_on_state_holidays and day in _state_holidays(rule.state, day.year):
        return None
    weekday = day.weekday()
    return rule.weekday if weekday < 5 else rule.saturday if weekday == 5 else rule.sunday


@lru_cache(maxsize=65536)
def _day_interval(states: tuple[StateRule, ...], campaign: Window | None, day: date) -> Window | None:
    """Where every rule allows calls on a callee-local ``day``: one interval (all rules are intervals)."""
    start, end = rules.FEDERAL_WINDOW
    if campaign is not None:
        start, end = max(start, campaign[0]), min(end, campaign[1])
    for rule in states:
        window = _state_window(rule, day)
        if window is None:
            return None
        start, end = max(start, window[0]), min(end, window[1])
    return (start, end) if start < end else None


@lru_cache(maxsize=8192)
def _windows(zones: tuple[str, ...], states: tuple[StateRule, ...], campaign: Window | None) -> _Windows:
    return _Windows(zones, states, campaign)


class _Windows:
    """Every candidate zone under the federal window, every candidate state's rule, the campaign's."""

    __slots__ = ("_campaign", "_states", "_zones")

    def __init__(self, zones: Sequence[str], states: Sequence[StateRule], campaign: Window | None) -> None:
        self._zones = [(name, zone(name)) for name in zones]
        self._states = tuple(states)
        self._campaign = campaign

    def _closed_zone(self, instant: datetime) -> tuple[str, datetime] | None:
        for name, tz in self._zones:
            local = instant.astimezone(tz)
            interval = _day_interval(self._states, self._campaign, local.date())
            minute = local.hour * 60 + local.minute
            if interval is None or not interval[0] <= minute < interval[1]:
                return name, local
        return None

    def closed_at(self, instant: datetime) -> Reason | None:
        """The first rule that forbids a call at ``instant``, or None if every one allows it."""
        closed = self._closed_zone(instant)
        if closed is None:
            return None
        name, local = closed
        minute = local.hour * 60 + local.minute
        day = local.date()
        checks: list[tuple[Window | None, str, str]] = [
            (rules.FEDERAL_WINDOW, "window.federal", rules.FEDERAL_WINDOW_SOURCE)
        ]
        if self._campaign is not None:
            checks.append((self._campaign, "window.campaign", "campaign calling window"))
        for rule in self._states:
            holiday = rule.no_calls_on_state_holidays and day in _state_holidays(rule.state, day.year)
            code = f"window.state.{rule.state}.holiday" if holiday else f"window.state.{rule.state}"
            checks.append((_state_window(rule, day), code, rule.source))
        for window, code, source in checks:
            if window is None:
                return Reason(code, f"no calls on {local:%A %Y-%m-%d} in {name}", source)
            if not window[0] <= minute < window[1]:
                span = f"{window[0] // 60:02d}:{window[0] % 60:02d}-{window[1] // 60:02d}:{window[1] % 60:02d}"
                return Reason(code, f"{local:%a %H:%M} in {name} is outside {span}", source)
        raise AssertionError("closed, yet no rule forbids the call")  # pragma: no cover - intervals agree

    def next_open(self, after: datetime) -> datetime | None:
        """The earliest instant >= ``after`` when every zone is inside its day's interval.

        Each step jumps to the next opening in a zone that is closed, which no lawful instant can
        precede, so the first instant found open is the earliest."""
        t = after
        limit = after + timedelta(days=SEARCH_DAYS)
        while t <= limit:
            moved = False
            for _, tz in self._zones:
                local = t.astimezone(tz)
                day = local.date()
                minute = local.hour * 60 + local.minute
                interval = _day_interval(self._states, self._campaign, day)
                if interval is not None and interval[0] <= minute < interval[1]:
                    continue
                if interval is None or minute >= interval[1]:
                    day += timedelta(days=1)
                    interval = _day_interval(self._states, self._campaign, day)
                    while interval is None and day <= limit.date():
                        day += timedelta(days=1)
                        interval = _day_interval(self._states, self._campaign, day)
                    if interval is None:
                        return None
                opening = datetime.combine(day, time(interval[0] // 60, interval[0] % 60), tz)
                t = max(t, opening)
                moved = True
                break
            if not moved:
                return t
        return None
