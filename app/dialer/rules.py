"""Calling rules as data, each with its source (an engineering reading of COMPLIANCE.md, not legal advice).

Operators review these tables and override them per deployment; the defaults are the strictest
reading. A window is (start, end) in minutes after local midnight, start inclusive, end exclusive;
``None`` means no calls at all that day.
"""

from __future__ import annotations

from dataclasses import dataclass

Window = tuple[int, int]

SPEC = "../shared/COMPLIANCE.md"


def hours(start_h: float, end_h: float) -> Window:
    return (int(start_h * 60), int(end_h * 60))


@dataclass(frozen=True, slots=True)
class FrequencyCap:
    calls: int
    window_h: int
    scope: str  # "subject": same subject, any caller ID, across campaigns
    waived_for_existing_customers: bool = False


@dataclass(frozen=True, slots=True)
class StateRule:
    state: str
    weekday: Window | None
    saturday: Window | None
    sunday: Window | None
    no_calls_on_state_holidays: bool = False
    banned_in_declared_emergency: bool = False
    cap: FrequencyCap | None = None
    source: str = ""


FEDERAL_WINDOW: Window = hours(8, 21)
FEDERAL_WINDOW_SOURCE = "47 CFR 64.1200(c)(1); 16 CFR 310.4(c) (8 a.m. to 9 p.m. at the called party's location)"

CONSENT_SOURCE = "47 U.S.C. 227(b)(1); 47 CFR 64.1200(a)(2)-(3); FCC 24-17 (AI voices are artificial voices)"
WRITTEN_CONSENT_SOURCE = "47 CFR 64.1200(a)(2) (prior express written consent for telemarketing)"
REVOCATION_SOURCE = "47 CFR 64.1200(a)(10) (revocation by any reasonable means, honoured at once here)"
INTERNAL_DNC_SOURCE = "47 CFR 64.1200(d) (company-specific do-not-call list)"
NATIONAL_DNC_SOURCE = "47 CFR 64.1200(c)(2); 16 CFR 310.4(b)(3)(iv) (registry copy at most 31 days old)"
EXEMPT_CAP_SOURCE = "47 CFR 64.1200(a)(3) (exempt artificial-voice calls: 3 per 30 days per residential line)"
HEALTHCARE_CAP_SOURCE = "47 CFR 64.1200(a)(9) (healthcare calls: 1 per day and 3 per week)"
NUMBER_SOURCE = f"{SPEC}, 'Where is the callee?' (non-geographic and invalid numbers are held for review)"
LOCATION_SOURCE = f"{SPEC}, 'Where is the callee?' (every candidate zone, every candidate state)"

NATIONAL_DNC_MAX_AGE_DAYS = 31
EXEMPT_CAP = (3, 30 * 24)  # calls, hours
HEALTHCARE_CAPS = ((1, 24), (3, 7 * 24))

_SUBJECT_CAP = FrequencyCap(3, 24, "subject")


def _row(state: str) -> str:
    return f"{SPEC}, state table, {state} row"


_EVERY_DAY_8_20 = (hours(8, 20), hours(8, 20), hours(8, 20))

STATE_RULES: dict[str, StateRule] = {
    r.state: r
    for r in (
        StateRule("FL", *_EVERY_DAY_8_20, cap=_SUBJECT_CAP, source=_row("FL")),
        StateRule("OK", *_EVERY_DAY_8_20, cap=_SUBJECT_CAP, source=_row("OK")),
        StateRule("MD", *_EVERY_DAY_8_20, cap=_SUBJECT_CAP, source=_row("MD")),
        StateRule(
            "OR",
            *_EVERY_DAY_8_20,
            cap=FrequencyCap(3, 24, "subject", waived_for_existing_customers=True),
            source=_row("OR") + " (in force from 2026-01-01)",
        ),
        StateRule("TX", hours(9, 21), hours(9, 21), hours(12, 21), source=_row("TX")),
        StateRule("WA", *_EVERY_DAY_8_20, source=_row("WA")),
        StateRule("MA", *_EVERY_DAY_8_20, source=_row("MA")),
        StateRule("WY", *_EVERY_DAY_8_20, source=_row("WY")),
        StateRule("CT", hours(9, 20), hours(9, 20), hours(9, 20), source=_row("CT")),
        StateRule("AL", hours(8, 20), hours(8, 20), None, no_calls_on_state_holidays=True, source=_row("AL")),
        StateRule(
            "LA",
            hours(8, 20),
            hours(8, 20),
            None,
            no_calls_on_state_holidays=True,
            banned_in_declared_emergency=True,
            source=_row("LA"),
        ),
        StateRule("MS", hours(8, 20), hours(8, 20), None, source=_row("MS")),
        StateRule("UT", hours(8, 21), hours(8, 21), None, no_calls_on_state_holidays=True, source=_row("UT")),
        StateRule("RI", hours(9, 18), hours(10, 17), None, no_calls_on_state_holidays=True, source=_row("RI")),
        StateRule("KY", hours(10, 21), hours(10, 21), hours(10, 21), source=_row("KY")),
        StateRule("SD", hours(9, 21), None, None, source=_row("SD") + " (autodialed calls)"),
        StateRule("ME", hours(9, 17), hours(9, 17), hours(9, 17), source=_row("ME") + " (automated calls)"),
        StateRule("NV", hours(9, 20), hours(9, 20), hours(9, 20), source=_row("NV")),
        StateRule("IN", hours(9, 20), hours(9, 20), hours(9, 20), source=_row("IN")),
        StateRule("MI", hours(9, 21), hours(9, 21), hours(9, 21), source=_row("MI")),
        StateRule("MN", hours(9, 21), hours(9, 21), hours(9, 21), source=_row("MN")),
        StateRule("NM", hours(9, 21), hours(9, 21), hours(9, 21), source=_row("NM")),
        # The 2026 change (9-19, no Sundays) is one edit: StateRule("PA", hours(9, 19), hours(9, 19), None, ...)
        StateRule("PA", hours(8, 21), hours(8, 21), hours(8, 21), source=_row("PA")),
        StateRule("NY", hours(8, 21), hours(8, 21), hours(8, 21), banned_in_declared_emergency=True, source=_row("NY")),
    )
}

# Area codes whose exchanges the phonenumbers package places in too few zones: the zones added to
# every number in them. Overlays share their parent's geography.
AREA_CODE_EXTRA_ZONES: dict[str, tuple[str, ...]] = {
    "270": ("America/Chicago",),  # western Kentucky is Central; the package says Eastern only
    "364": ("America/Chicago",),  # overlays 270
    "850": ("America/Chicago",),  # Florida panhandle west of the Apalachicola is Central
    "448": ("America/Chicago",),  # overlays 850
    "812": ("America/Chicago",),  # south-western Indiana (Evansville) is Central
    "930": ("America/Chicago",),  # overlays 812
    "541": ("America/Boise",),  # Malheur County, Oregon, is Mountain
    "458": ("America/Boise",),  # overlays 541
    "928": ("America/Denver",),  # the Navajo Nation in Arizona observes DST
    "308": ("America/Denver",),  # western Nebraska is Mountain
    "620": ("America/Denver",),  # four south-western Kansas counties are Mountain
}
AREA_CODE_SOURCE = f"{SPEC}, 'Where is the callee?' (split and overlay area codes the package gets wrong)"

# Zones a state spans, for a contact whose address state is known.
STATE_ZONES: dict[str, tuple[str, ...]] = {
    "AL": ("America/Chicago",), "AK": ("America/Anchorage", "America/Adak"), "AZ": ("America/Phoenix", "America/Denver"),
    "AR": ("America/Chicago",), "CA": ("America/Los_Angeles",), "CO": ("America/Denver",),
    "CT": ("America/New_York",), "DE": ("America/New_York",), "DC": ("America/New_York",),
    "FL": ("America/New_York", "America/Chicago"), "GA": ("America/New_York",), "HI": ("Pacific/Honolulu",),
    "ID": ("America/Boise", "America/Los_Angeles"), "IL": ("America/Chicago",),
    "IN": ("America/Indiana/Indianapolis", "America/Chicago"), "IA": ("America/Chicago",),
    "KS": ("America/Chicago", "America/Denver"), "KY": ("America/New_York", "America/Chicago"),
    "LA": ("America/Chicago",), "ME": ("America/New_York",), "MD": ("America/New_York",),
    "MA": ("America/New_York",), "MI": ("America/Detroit", "America/Menominee"), "MN": ("America/Chicago",),
    "MS": ("America/Chicago",), "MO": ("America/Chicago",), "MT": ("America/Denver",),
    "NE": ("America/Chicago", "America/Denver"), "NV": ("America/Los_Angeles", "America/Boise"),
    "NH": ("America/New_York",), "NJ": ("America/New_York",), "NM": ("America/Denver",),
    "NY": ("America/New_York",), "NC": ("America/New_York",), "ND": ("America/Chicago", "America/Denver"),
    "OH": ("America/New_York",), "OK": ("America/Chicago",), "OR": ("America/Los_Angeles", "America/Boise"),
    "PA": ("America/New_York",), "RI": ("America/New_York",), "SC": ("America/New_York",),
    "SD": ("America/Chicago", "America/Denver"), "TN": ("America/Chicago", "America/New_York"),
    "TX": ("America/Chicago", "America/Denver"), "UT": ("America/Denver",), "VT": ("America/New_York",),
    "VA": ("America/New_York",), "WA": ("America/Los_Angeles",), "WV": ("America/New_York",),
    "WI": ("America/Chicago",), "WY": ("America/Denver",), "PR": ("America/Puerto_Rico",),
}  # fmt: skip

STATE_NAMES: dict[str, str] = {
    "Alabama": "AL", "Alaska": "AK", "Arizona": "AZ", "Arkansas": "AR", "California": "CA", "Colorado": "CO",
    "Connecticut": "CT", "Delaware": "DE", "District of Columbia": "DC", "Washington D.C.": "DC", "Florida": "FL",
    "Georgia": "GA", "Hawaii": "HI", "Idaho": "ID", "Illinois": "IL", "Indiana": "IN", "Iowa": "IA",
    "Kansas": "KS", "Kentucky": "KY", "Louisiana": "LA", "Maine": "ME", "Maryland": "MD", "Massachusetts": "MA",
    "Michigan": "MI", "Minnesota": "MN", "Mississippi": "MS", "Missouri": "MO", "Montana": "MT", "Nebraska": "NE",
    "Nevada": "NV", "New Hampshire": "NH", "New Jersey": "NJ", "New Mexico": "NM", "New York": "NY",
    "North Carolina": "NC", "North Dakota": "ND", "Ohio": "OH", "Oklahoma": "OK", "Oregon": "OR",
    "Pennsylvania": "PA", "Rhode Island": "RI", "South Carolina": "SC", "South Dakota": "SD", "Tennessee": "TN",
    "Texas": "TX", "Utah": "UT", "Vermont": "VT", "Virginia": "VA", "Washington": "WA", "Washington State": "WA",
    "West Virginia": "WV",
    "Wisconsin": "WI", "Wyoming": "WY", "Puerto Rico": "PR",
}  # fmt: skip
