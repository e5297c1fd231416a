"""The call list's filter form: query-string values in, a CallFilter (and what was wrong) out.

Plain HTML forms send every field, empty or not, as text; this reads them the way a person filled
them in (a blank field is no filter) and says what it could not use instead of failing the page."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import urlencode

from app.archive.facts import DISPOSITIONS
from app.archive.search import CallFilter

FIELDS = (
    "started_from", "started_to", "direction", "number", "campaign", "disposition",
    "min_duration_s", "max_duration_s", "min_cost_usd", "max_cost_usd", "transferred", "opted_out", "q",
)  # fmt: skip
DIRECTIONS = ("inbound", "outbound")
YES_NO = {"yes": True, "no": False}
E164 = re.compile(r"^\+[1-9]\d{1,14}$")


@dataclass(slots=True)
class FilterForm:
    """What the form said (to fill it in again), the filter it makes, and the fields it could not use."""

    values: dict[str, str]
    filters: CallFilter
    errors: list[str] = field(default_factory=list)

    def query(self, **extra: str) -> str:
        """The query string of this search (blank fields left out), plus ``extra``."""
        items = [(k, v) for k, v in self.values.items() if v]
        items.extend((k, v) for k, v in extra.items() if v)
        return urlencode(items)


def read_filter_form(params: Mapping[str, str], *, allow_search: bool) -> FilterForm:
    values = {name: (params.get(name) or "").strip() for name in FIELDS}
    errors: list[str] = []

    def when(name: str, label: str) -> datetime | None:
        raw = values[name]
        if not raw:
            return None
        try:
            parsed = datetime.fromisoformat(raw)
        except ValueError:
            errors.append(f"{label}: not a date and time ({raw!r}).")
            return None
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed

    def number(name: str, label: str) -> float | None:
        raw = values[name]
        if not raw:
            return None
        try:
            value = float(raw)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or value < 0:
            errors.append(f"{label}: a number of zero or more, please ({raw!r}).")
            return None
        return value

    def choice(name: str, label: str, allowed: tuple[str, ...]) -> str | None:
        raw = values[name]
        if not raw:
            return None
        if raw not in allowed:
            errors.append(f"{label}: one of {', '.join(allowed)}.")
            return None
        return raw

    started_from = when("started_from", "From")
    started_to = when("started_to", "To")
    if started_from and started_to and started_to <= started_from:
        errors.append("To must be after From.")
        started_to = None
    phone = values["number"] or None
    if phone is not None and not E164.match(phone):
        errors.append(f"Number: an E.164 number such as +15005550006 ({phone!r}).")
        phone = None
    campaign: int | None = None
    if values["campaign"]:
        if values["campaign"].isdigit() and int(values["campaign"]) >= 1:
            campaign = int(values["campaign"])
        else:
            errors.append(f"Campaign: a campaign number ({values['campaign']!r}).")
    disposition = choice("disposition", "Disposition", DISPOSITIONS)
    transferred = choice("transferred", "Transferred", tuple(YES_NO))
    opted_out = choice("opted_out", "Opted out", tuple(YES_NO))
    q = values["q"] or None
    if q is not None and not allow_search:
        errors.append("Phrase search needs the transcripts grant; the search was left out.")
        values["q"] = ""
        q = None

    def ms(seconds: float | None) -> int | None:
        return None if seconds is None else round(seconds * 1000)

    def micros(usd: float | None) -> int | None:
        return None if usd is None else round(usd * 1_000_000)

    filters = CallFilter(
        started_from=started_from,
        started_to=started_to,
        direction=choice("direction", "Direction", DIRECTIONS),
        number=phone,
        campaign_id=campaign,
        dispositions=(disposition,) if disposition else (),
        min_duration_ms=ms(number("min_duration_s", "Minimum duration")),
        max_duration_ms=ms(number("max_duration_s", "Maximum duration")),
        min_cost_micros=micros(number("min_cost_usd", "Minimum cost")),
        max_cost_micros=micros(number("max_cost_usd", "Maximum cost")),
        transferred=None if transferred is None else YES_NO[transferred],
        opted_out=None if opted_out is None else YES_NO[opted_out],
        q=q,
    )
    return FilterForm(values=values, filters=filters, errors=errors)
