"""The compliance engine with fixed instants: each case asserts the outcome, the deciding rule and,
for a deferral, the next lawful instant."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from app.dialer.location import Location, locate
from app.dialer.policy import (
    CampaignRules,
    Consent,
    ContactFacts,
    Jurisdiction,
    Outcome,
    PastAttempt,
    Purpose,
    decide,
)


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@dataclass
class Case:
    id: str
    number: str
    at: str  # UTC
    outcome: Outcome
    code: str
    defer_until: str | None = None  # UTC
    state: str | None = None
    zip_code: str | None = None
    purpose: Purpose = Purpose.informational
    consent: Consent | None = Consent.written
    facts: dict[str, Any] = field(default_factory=dict)
    campaign: dict[str, Any] = field(default_factory=dict)
    history: list[tuple[float, str, Purpose]] = field(default_factory=list)  # (hours ago, subject, purpose)
    emergencies: frozenset[str] = frozenset()


A, D, DENY, REVIEW = Outcome.allow, Outcome.defer, Outcome.deny, Outcome.review
FRESH = date(2026, 6, 20)  # a national registry copy 11 days before the July cases

CASES = [
    # Federal window in the callee's zone: start inclusive, end exclusive (2026-07-01 is a Wednesday).
    Case("ny-08:00-opens", "+12125550123", "2026-07-01T12:00:00", A, "window.open"),
    Case("ny-07:59-defers-to-08:00", "+12125550123", "2026-07-01T11:59:00", D, "window.federal", "2026-07-01T12:00:00"),
    Case("ny-20:59-open", "+12125550123", "2026-07-02T00:59:00", A, "window.open"),
    Case("ny-21:00-closed", "+12125550123", "2026-07-02T01:00:00", D, "window.federal", "2026-07-02T12:00:00"),
    Case("ca-08:00-pacific", "+14155550123", "2026-07-01T15:00:00", A, "window.open"),
    Case(
        "ca-still-night-when-ny-opens",
        "+14155550123",
        "2026-07-01T12:00:00",
        D,
        "window.federal",
        "2026-07-01T15:00:00",
    ),
    # DST changeover days, computed from the instant (a fixed offset would be an hour wrong).
    Case("spring-forward-08:00-edt", "+12125550123", "2026-03-08T12:00:00", A, "window.open"),
    Case("spring-forward-07:30-edt", "+12125550123", "2026-03-08T11:30:00", D, "window.federal", "2026-03-08T12:00:00"),
    Case("fall-back-07:30-est", "+12125550123", "2026-11-01T12:30:00", D, "window.federal", "2026-11-01T13:00:00"),
    Case("fall-back-08:00-est", "+12125550123", "2026-11-01T13:00:00", A, "window.open"),
    Case(
        "day-before-spring-forward-est",
        "+12125550123",
        "2026-03-07T12:30:00",
        D,
        "window.federal",
        "2026-03-07T13:00:00",
    ),
    # Arizona keeps standard time; the Navajo Nation (in 928) does not.
    Case("phoenix-08:00-mst-in-july", "+16025550123", "2026-07-01T15:00:00", A, "window.open"),
    Case("phoenix-07:59", "+16025550123", "2026-07-01T14:59:00", D, "window.federal", "2026-07-01T15:00:00"),
    Case(
        "928-evening-navajo-dst-closes-first",
        "+19285550123",
        "2026-07-02T03:30:00",
        D,
        "window.federal",
        "2026-07-02T15:00:00",
    ),
    # Split and overlay area codes the package gets wrong: the extra zone binds.
    Case("364-central-still-07:30", "+13645550123", "2026-07-01T15:30:00", A, "window.open"),
    Case(
        "364-eastern-10:30-central-09:30",
        "+13645550123",
        "2026-07-01T14:30:00",
        D,
        "window.state.KY",
        "2026-07-01T15:00:00",
    ),
    Case("448-panhandle-central", "+14485550123", "2026-07-01T12:30:00", D, "window.federal", "2026-07-01T13:00:00"),
    Case(
        "930-southwest-indiana-central",
        "+19305550123",
        "2026-07-01T13:30:00",
        D,
        "window.state.IN",
        "2026-07-01T14:00:00",
    ),
    Case("458-malheur-mountain", "+14585550123", "2026-07-02T02:30:00", D, "window.state.OR", "2026-07-02T15:00:00"),
    Case("270-western-kentucky", "+12705550123", "2026-07-02T01:30:00", D, "window.federal", "2026-07-02T15:00:00"),
    # Each state row of COMPLIANCE.md.
    Case("fl-20:00-closed", "+13055550123", "2026-07-02T00:00:00", D, "window.state.FL", "2026-07-02T12:00:00"),
    Case("ok-19:59-open", "+14055550123", "2026-07-02T00:59:00", A, "window.open"),
    Case("md-20:00-closed", "+14105550123", "2026-07-02T00:00:00", D, "window.state.MD", "2026-07-02T12:00:00"),
    Case("or-20:00-closed", "+15035550123", "2026-07-02T03:00:00", D, "window.state.OR", "2026-07-02T15:00:00"),
    Case("tx-weekday-08:30", "+15125550123", "2026-07-01T13:30:00", D, "window.state.TX", "2026-07-01T14:00:00"),
    Case("tx-saturday-09:00", "+15125550123", "2026-07-04T14:00:00", A, "window.open"),
    Case(
        "tx-sunday-11:00-waits-for-noon",
        "+15125550123",
        "2026-07-05T16:00:00",
        D,
        "window.state.TX",
        "2026-07-05T17:00:00",
    ),
    Case("wa-20:00-closed", "+12065550123", "2026-07-02T03:00:00", D, "window.state.WA", "2026-07-02T15:00:00"),
    Case("ma-19:30-open", "+16175550123", "2026-07-01T23:30:00", A, "window.open"),
    Case("wy-20:00-closed", "+13075550123", "2026-07-02T02:00:00", D, "window.state.WY", "2026-07-02T14:00:00"),
    Case("ct-08:30-closed", "+12035550123", "2026-07-01T12:30:00", D, "window.state.CT", "2026-07-01T13:00:00"),
    Case("al-sunday-none", "+12055550123", "2026-07-05T15:00:00", D, "window.state.AL", "2026-07-06T13:00:00"),
    Case(
        "al-state-holiday-none",
        "+12055550123",
        "2026-01-19T15:00:00",
        D,
        "window.state.AL.holiday",
        "2026-01-20T14:00:00",
    ),
    Case("la-sunday-none", "+15045550123", "2026-07-05T15:00:00", D, "window.state.LA", "2026-07-06T13:00:00"),
    Case("ms-sunday-none", "+16015550123", "2026-07-05T15:00:00", D, "window.state.MS", "2026-07-06T13:00:00"),
    Case("ut-weekday-20:30-open", "+18015550123", "2026-07-02T02:30:00", A, "window.open"),
    Case("ut-sunday-none", "+18015550123", "2026-07-05T16:00:00", D, "window.state.UT", "2026-07-06T14:00:00"),
    Case(
        "ri-saturday-09:30-waits-for-10",
        "+14015550123",
        "2026-07-11T13:30:00",
        D,
        "window.state.RI",
        "2026-07-11T14:00:00",
    ),
    Case(
        "ri-saturday-17:00-closed-till-monday",
        "+14015550123",
        "2026-07-11T21:00:00",
        D,
        "window.state.RI",
        "2026-07-13T13:00:00",
    ),
    Case("ri-holiday", "+14015550123", "2026-08-10T14:00:00", D, "window.state.RI.holiday", "2026-08-11T13:00:00"),
    Case("ky-09:30-closed", "+15025550123", "2026-07-01T13:30:00", D, "window.state.KY", "2026-07-01T14:00:00"),
    Case("sd-saturday-none", "+16055550123", "2026-07-04T16:00:00", D, "window.state.SD", "2026-07-06T15:00:00"),
    Case("me-17:00-closed", "+12075550123", "2026-07-01T21:00:00", D, "window.state.ME", "2026-07-02T13:00:00"),
    Case("nv-08:30-closed", "+17025550123", "2026-07-01T15:30:00", D, "window.state.NV", "2026-07-01T16:00:00"),
    Case("in-20:00-closed", "+13175550123", "2026-07-02T00:00:00", D, "window.state.IN", "2026-07-02T13:00:00"),
    Case("mi-08:30-closed", "+13135550123", "2026-07-01T12:30:00", D, "window.state.MI", "2026-07-01T13:00:00"),
    Case("mn-20:30-open", "+16125550123", "2026-07-02T01:30:00", A, "window.open"),
    Case("nm-08:30-closed", "+15055550123", "2026-07-01T14:30:00", D, "window.state.NM", "2026-07-01T15:00:00"),
    Case("pa-20:30-open", "+12155550123", "2026-07-02T00:30:00", A, "window.open"),
    Case("ny-emergency", "+12125550123", "2026-07-01T15:00:00", DENY, "state.emergency", emergencies=frozenset({"NY"})),
    Case("la-emergency", "+15045550123", "2026-07-01T15:00:00", DENY, "state.emergency", emergencies=frozenset({"LA"})),
    Case(
        "other-states-emergency-does-not-bind",
        "+12125550123",
        "2026-07-01T15:00:00",
        A,
        "window.open",
        emergencies=frozenset({"LA"}),
    ),
    # Frequency caps.
    Case(
        "fl-3-calls-same-subject-in-24h",
        "+13055550123",
        "2026-07-01T16:00:00",
        D,
        "cap.state.FL",
        "2026-07-01T17:00:00",
        purpose=Purpose.marketing,
        campaign={"national_dnc_as_of": FRESH},
        history=[
            (23, "reminders", Purpose.marketing),
            (10, "reminders", Purpose.marketing),
            (1, "reminders", Purpose.marketing),
        ],
    ),
    Case(
        "ri-independence-day-saturday",
        "+14015550123",
        "2026-07-04T15:00:00",
        D,
        "window.state.RI.holiday",
        "2026-07-06T13:00:00",
    ),
    Case(
        "fl-other-subjects-do-not-count",
        "+13055550123",
        "2026-07-01T16:00:00",
        A,
        "window.open",
        history=[
            (23, "billing", Purpose.informational),
            (10, "billing", Purpose.informational),
            (1, "billing", Purpose.informational),
        ],
        purpose=Purpose.emergency,
    ),
    Case(
        "or-existing-customer-waived",
        "+15035550123",
        "2026-07-01T18:00:00",
        A,
        "window.open",
        facts={"existing_customer": True},
        purpose=Purpose.emergency,
        history=[(20, "reminders", Purpose.emergency)] * 3,
    ),
    Case(
        "exempt-3-per-30-days",
        "+12125550123",
        "2026-07-01T15:00:00",
        D,
        "cap.exempt",
        "2026-07-03T15:00:00",
        history=[
            (24 * 28, "a", Purpose.informational),
            (24 * 10, "b", Purpose.informational),
            (24 * 1, "c", Purpose.informational),
        ],
    ),
    Case(
        "healthcare-1-per-day",
        "+12125550123",
        "2026-07-01T15:00:00",
        D,
        "cap.healthcare",
        "2026-07-01T20:00:00",
        purpose=Purpose.healthcare,
        history=[(19, "visit", Purpose.healthcare)],
    ),
    # Consent, revocation, lists.
    Case("revoked-consent", "+12125550123", "2026-07-01T15:00:00", DENY, "consent.revoked", facts={"revoked": True}),
    Case("internal-dnc", "+12125550123", "2026-07-01T15:00:00", DENY, "dnc.internal", facts={"internal_dnc": True}),
    Case(
        "marketing-needs-written",
        "+12125550123",
        "2026-07-01T15:00:00",
        DENY,
        "consent.written_required",
        purpose=Purpose.marketing,
        consent=Consent.express,
        campaign={"national_dnc_as_of": FRESH},
    ),
    Case("informational-needs-consent", "+12125550123", "2026-07-01T15:00:00", DENY, "consent.required", consent=None),
    Case(
        "emergency-needs-none",
        "+12125550123",
        "2026-07-01T15:00:00",
        A,
        "window.open",
        purpose=Purpose.emergency,
        consent=None,
    ),
    Case(
        "marketing-fresh-registry",
        "+12125550123",
        "2026-07-01T15:00:00",
        A,
        "window.open",
        purpose=Purpose.marketing,
        campaign={"national_dnc_as_of": FRESH},
    ),
    Case(
        "marketing-registry-32-days",
        "+12125550123",
        "2026-07-01T15:00:00",
        DENY,
        "dnc.national_stale",
        purpose=Purpose.marketing,
        campaign={"national_dnc_as_of": date(2026, 5, 30)},
    ),
    Case(
        "marketing-no-registry",
        "+12125550123",
        "2026-07-01T15:00:00",
        DENY,
        "dnc.national_stale",
        purpose=Purpose.marketing,
    ),
    Case(
        "informational-exempt-from-registry",
        "+12125550123",
        "2026-07-01T15:00:00",
        A,
        "window.open",
        facts={"national_dnc": True},
    ),
    Case(
        "marketing-on-national-dnc",
        "+12125550123",
        "2026-07-01T15:00:00",
        DENY,
        "dnc.national",
        purpose=Purpose.marketing,
        facts={"national_dnc": True},
        campaign={"national_dnc_as_of": FRESH},
    ),
    # Numbers and locations held for review, never dialed blindly.
    Case("toll-free", "+18005550123", "2026-07-01T15:00:00", REVIEW, "number.non_geographic"),
    Case("five-hundred", "+15005550123", "2026-07-01T15:00:00", REVIEW, "number.non_geographic"),
    Case("nine-hundred", "+19005550123", "2026-07-01T15:00:00", REVIEW, "number.non_geographic"),
    Case("invalid", "+1212555", "2026-07-01T15:00:00", REVIEW, "number.invalid"),
    Case("foreign", "+442071234567", "2026-07-01T15:00:00", REVIEW, "number.foreign"),
    # The contact's own address narrows: a New York number whose owner lives in California.
    Case(
        "ny-number-ca-resident",
        "+12125550123",
        "2026-07-01T12:30:00",
        D,
        "window.federal",
        "2026-07-01T15:00:00",
        state="CA",
    ),
    Case(
        "ny-number-zip-in-san-francisco",
        "+12125550123",
        "2026-07-01T12:30:00",
        D,
        "window.federal",
        "2026-07-01T15:00:00",
        zip_code="94105",
    ),
    Case(
        "tx-number-zip-in-florida-adds-fl-hours",
        "+15125550123",
        "2026-07-02T00:30:00",
        D,
        "window.state.FL",
        "2026-07-02T14:00:00",
        zip_code="33101",
    ),
    # A campaign window may narrow the law, never widen it.
    Case(
        "campaign-narrows-to-10",
        "+12125550123",
        "2026-07-01T13:30:00",
        D,
        "window.campaign",
        "2026-07-01T14:00:00",
        campaign={"window": (600, 960)},
    ),
    Case(
        "campaign-cannot-widen",
        "+12125550123",
        "2026-07-01T11:00:00",
        D,
        "window.federal",
        "2026-07-01T12:00:00",
        campaign={"window": (360, 1380)},
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_decision(case: Case) -> None:
    now = utc(case.at)
    contact = ContactFacts(
        locate(case.number, state=case.state, zip_code=case.zip_code), consent=case.consent, **case.facts
    )
    campaign = CampaignRules(case.purpose, "reminders", **case.campaign)
    history = [PastAttempt(now - timedelta(hours=h), subject, purpose) for h, subject, purpose in case.history]
    decision = decide(contact, campaign, now, history, Jurisdiction(emergencies=case.emergencies))
    assert (decision.outcome, decision.codes[0]) == (case.outcome, case.code), decision.reasons
    assert all(r.source for r in decision.reasons)
    if case.outcome is Outcome.defer:
        assert decision.defer_until == utc(case.defer_until or "")
        # the deferral is itself lawful
        later = decide(contact, campaign, decision.defer_until, history, Jurisdiction(emergencies=case.emergencies))
        assert later.outcome is Outcome.allow, later.reasons
        before = decide(
            contact,
            campaign,
            decision.defer_until - timedelta(minutes=1),
            history,
            Jurisdiction(emergencies=case.emergencies),
        )
        assert before.outcome is not Outcome.allow  # and it is the earliest such instant
    else:
        assert decision.defer_until is None


def test_there_are_at_least_forty_cases() -> None:
    assert len(CASES) >= 40


def test_an_unknown_location_is_never_allowed() -> None:
    nowhere = ContactFacts(Location("+12125550123", "geographic", zones=(), states=()), consent=Consent.written)
    decision = decide(nowhere, CampaignRules(Purpose.informational, "x"), utc("2026-07-01T15:00:00"))
    assert decision.outcome is Outcome.review and decision.codes == ("location.unknown",)


def test_a_naive_instant_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        decide(ContactFacts(locate("+12125550123")), CampaignRules(Purpose.emergency, "x"), datetime(2026, 7, 1, 12))


def test_reasons_name_the_zone_and_local_time() -> None:
    contact = ContactFacts(locate("+13645550123"), consent=Consent.written)
    decision = decide(contact, CampaignRules(Purpose.informational, "x"), utc("2026-07-01T14:30:00"))
    assert "America/Chicago" in decision.reasons[0].message or "America/New_York" in decision.reasons[0].message
    assert replace(decision, reasons=()).outcome is Outcome.defer
