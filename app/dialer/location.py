"""Where a callee may be: every candidate time zone and state for a number and what we know of them.

Pure: phonenumbers and zoneinfo carry their data with them. Candidate zones are the union of the
package's exchange-level zones, the maintained area-code additions (rules.AREA_CODE_EXTRA_ZONES),
and the contact's own time zone, address state and ZIP (zipcodes' bundled USPS data); candidate states are the area code's state and
the contact's. Computed once per contact (at import), not per decision: parsing costs ~35 us.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Literal
from zoneinfo import ZoneInfo, available_timezones

import phonenumbers
from phonenumbers import PhoneNumberType, geocoder
from phonenumbers import timezone as number_zones

from app.dialer.rules import AREA_CODE_EXTRA_ZONES, STATE_NAMES, STATE_ZONES

NumberKind = Literal["geographic", "non_geographic", "invalid", "foreign"]

_GEOGRAPHIC = {PhoneNumberType.FIXED_LINE, PhoneNumberType.MOBILE, PhoneNumberType.FIXED_LINE_OR_MOBILE}


@dataclass(frozen=True, slots=True)
class Location:
    e164: str
    kind: NumberKind
    zones: tuple[str, ...] = ()
    states: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()


@lru_cache(maxsize=1)
def _known_zones() -> frozenset[str]:
    return frozenset(available_timezones())


def normalise(number: str) -> str | None:
    """E.164 form of a US-style number, or None if it cannot be parsed."""
    try:
        parsed = phonenumbers.parse(number, "US")
    except phonenumbers.NumberParseException:
        return None
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def _area_code_state(parsed: phonenumbers.PhoneNumber) -> str | None:
    description = geocoder.description_for_number(parsed, "en")
    if not description:
        return None
    if ", " in description:
        tail = description.rsplit(", ", 1)[1]
        return tail if tail in STATE_ZONES else STATE_NAMES.get(tail)
    return STATE_NAMES.get(description)


@lru_cache(maxsize=1)
def _zip_index() -> dict[str, tuple[str, str | None]]:
    """ZIP -> (state, IANA zone), from the zipcodes package's bundled USPS data (loaded once)."""
    import zipcodes

    return {z["zip_code"]: (z["state"], z.get("timezone") or None) for z in zipcodes.list_all()}  # type: ignore[no-untyped-call]


def zip_location(zip_code: str) -> tuple[str, str | None] | None:
    return _zip_index().get(zip_code[:5])


@lru_cache(maxsize=65536)
def locate(
    number: str, *, state: str | None = None, timezone: str | None = None, zip_code: str | None = None
) -> Location:
    try:
        parsed = phonenumbers.parse(number, "US")
    except phonenumbers.NumberParseException:
        return Location(number, "invalid", notes=("not a phone number",))
    e164 = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
    if not phonenumbers.is_valid_number(parsed):
        return Location(e164, "invalid", notes=("phonenumbers says the number is invalid",))
    region = phonenumbers.region_code_for_number(parsed)
    if region not in ("US", "PR"):
        return Location(e164, "foreign", notes=(f"number is in region {region}, outside these rules",))
    if phonenumbers.number_type(parsed) not in _GEOGRAPHIC:
        return Location(e164, "non_geographic", notes=("toll-free, premium or personal number",))
    zones: list[str] = [z for z in number_zones.time_zones_for_number(parsed) if z in _known_zones()]
    notes: list[str] = []
    npa = str(parsed.national_number)[:3]
    for extra in AREA_CODE_EXTRA_ZONES.get(npa, ()):
        if extra not in zones:
            zones.append(extra)
            notes.append(f"area code {npa}: added {extra}")
    states: list[str] = []
    area_state = _area_code_state(parsed)
    if area_state:
        states.append(area_state)
    if state:
        code = state.strip().upper()
        code = STATE_NAMES.get(state.strip(), code)
        if code in STATE_ZONES:
            if code not in states:
                states.append(code)
            for z in STATE_ZONES[code]:
                if z not in zones:
                    zones.append(z)
                    notes.append(f"contact state {code}: added {z}")
    if zip_code:
        found = zip_location(zip_code)
        if found is None:
            notes.append(f"ZIP {zip_code} unknown")
        else:
            zip_state, zip_zone = found
            if zip_state in STATE_ZONES and zip_state not in states:
                states.append(zip_state)
                notes.append(f"ZIP {zip_code}: state {zip_state}")
            if zip_zone and zip_zone in _known_zones() and zip_zone not in zones:
                zones.append(zip_zone)
                notes.append(f"ZIP {zip_code}: added {zip_zone}")
    if timezone and timezone in _known_zones() and timezone not in zones:
        zones.append(timezone)
        notes.append(f"contact time zone {timezone}")
    return Location(e164, "geographic", tuple(zones), tuple(states), tuple(notes))


@lru_cache(maxsize=512)
def zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)
