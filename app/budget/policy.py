"""Spending caps: when a call must wrap up or stop, whether a new call may start, which alert
thresholds a charge crossed, and the operator's calendar day the daily caps reset on.

Pure: amounts are integer micro-dollars (µ$), time is an argument (``now_s`` is any monotonic clock in
seconds, ``now`` an aware datetime). Fractions of a cap are compared exactly: ``0.9`` means 9/10 of the
cap, not the nearest binary float.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_HALF_UP, Decimal
from enum import StrEnum
from fractions import Fraction
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

# Past 100% of a cap by more than this, a call is cut at once, without waiting out the grace period.
RUNAWAY_MARGIN = Fraction(1, 10)

CAP_NAMES = ("per_call", "per_day", "per_campaign_day")


@dataclass(frozen=True, slots=True)
class Caps:
    """µ$; None = no cap."""

    per_call: int | None
    per_day: int | None
    per_campaign_day: int | None = None
    wrap_up_at: float = 0.9  # fraction of a cap where the agent is asked to close
    hard_stop_grace_s: float = 8.0  # past the cap, the call is cut this long after wrap-up began
    alert_thresholds: tuple[float, ...] = (0.8, 1.0)
    runaway_margin: float = float(RUNAWAY_MARGIN)  # past cap * (1 + margin) the call is cut at once


@dataclass(frozen=True, slots=True)
class Spend:
    """What a call, its day and its campaign's day have spent, and where the call stands in the day's pool.

    The daily cap is a pool shared by the calls in progress: each holds a *closing reserve* out of it,
    enough for a polite closing line, so that when the pool runs dry every call can still close without
    the day passing its cap. ``closing_reserve`` is what this call wants held, ``reserve_left`` what the
    ledger holds for it now (``None``: as if no other call were live), ``overrun`` what it spent past its
    reserve once the pool was empty (it must stop: anything more eats other calls' reserves).
    """

    call: int
    day: int
    campaign_day: int = 0
    closing_reserve: int = 0
    reserve_left: int | None = None
    overrun: int = 0
    # The same for a campaign day with a cap: its own pool of the campaign's calls' closing reserves.
    campaign_reserve_left: int | None = None
    campaign_overrun: int = 0


class Action(StrEnum):
    ok = "ok"
    wrap_up = "wrap_up"
    hard_stop = "hard_stop"


_SEVERITY = {Action.ok: 0, Action.wrap_up: 1, Action.hard_stop: 2}


@dataclass(frozen=True, slots=True)
class CapVerdict:
    action: Action
    cap: str | None  # "per_call" | "per_day" | "per_campaign_day"; None when no cap applies
    spent: int
    limit: int | None
    reason: str


def _fraction(value: float) -> Fraction:
    # Through repr: 0.9 is exactly 9/10 here, so 90% of a cap is reached at exactly 90%.
    return Fraction(repr(value)) if isinstance(value, float) else Fraction(value)


def dollars(micros: int) -> str:
    """``1_834_999`` -> ``"$1.83"``; whole cents, rounded half-up; negative amounts as ``"-$1.83"``."""
    cents = (Decimal(abs(micros)) / 10_000).quantize(Decimal(1), rounding=ROUND_HALF_UP)
    whole, part = divmod(int(cents), 100)
    sign = "-" if micros < 0 and cents else ""
    return f"{sign}${whole:,}.{part:02d}"


def _label(cap: str) -> str:
    return cap.replace("_", "-")


def _figures(spent: int, limit: int, cap: str) -> str:
    return f"{dollars(spent)} of the {dollars(limit)} {_label(cap)} cap"


def _ratio(spent: int, limit: int) -> Fraction:
    return Fraction(spent, limit) if limit > 0 else (Fraction(0) if spent <= 0 else Fraction(10**9))


def _limits(spend: Spend, caps: Caps) -> list[tuple[str, int, int]]:
    pairs = ((caps.per_call, spend.call), (caps.per_day, spend.day), (caps.per_campaign_day, spend.campaign_day))
    return [(name, spent, limit) for name, (limit, spent) in zip(CAP_NAMES, pairs, strict=True) if limit is not None]


def _nearest_ok(limits: list[tuple[str, int, int]]) -> CapVerdict:
    if not limits:
        return CapVerdict(Action.ok, None, 0, None, "no caps set")
    name, spent, limit = max(limits, key=lambda item: _ratio(item[1], item[2]))
    return CapVerdict(Action.ok, name, spent, limit, f"within caps: {_figures(spent, limit, name)}")


def check_call(spend: Spend, caps: Caps, *, wrap_up_started_s: float | None, now_s: float) -> CapVerdict:
    """What a live call should do now, given what it, the day and its campaign's day have spent.

    The per-day cap is a pool (see :class:`Spend`): ``wrap_up`` once what is left of the day only covers
    the closing reserves of the calls in progress (this call no longer gets its whole reserve), or the
    day reached its cap; ``hard_stop`` at once when the call overran its reserve or the day passed its
    cap, since every call was given its closing line's worth before that.

    Per-call and per-campaign-day caps: ``ok`` below ``wrap_up_at`` of it; ``wrap_up`` from there (the agent is asked to close);
    ``hard_stop`` once the cap is reached (at or over 100%) and wrap-up began at least
    ``hard_stop_grace_s`` ago, or at once past 110% of the cap (a runaway). Reaching the cap before
    wrap-up began still yields ``wrap_up``: the caller starts wrap-up and the grace period from there.
    The most severe verdict over all caps wins; among equals, the cap most used (by fraction). An ``ok``
    verdict names the cap closest to its limit (``cap`` is None only with no caps set).
    """
    limits = _limits(spend, caps)
    wrap_at = _fraction(caps.wrap_up_at)
    runaway_at = 1 + Fraction(str(caps.runaway_margin))
    waited = None if wrap_up_started_s is None else now_s - wrap_up_started_s
    graced = waited is not None and waited >= caps.hard_stop_grace_s

    best: tuple[int, Fraction, CapVerdict] | None = None
    for name, spent, limit in limits:
        figures = _figures(spent, limit, name)
        if name == "per_day" or (name == "per_campaign_day" and spend.campaign_reserve_left is not None):
            day_verdict = (
                _day_verdict(spend, limit, figures)
                if name == "per_day"
                else _pool_verdict(
                    name, spend.campaign_day, limit, spend.campaign_reserve_left, spend.closing_reserve,
                    spend.campaign_overrun, figures,
                )
            )  # fmt: skip
            if day_verdict is None:
                continue
            verdict = day_verdict
        elif spent > runaway_at * limit:
            verdict = CapVerdict(
                Action.hard_stop, name, spent, limit, f"hard stop: {figures}, over the 10% runaway margin"
            )
        elif spent >= limit and graced:
            verdict = CapVerdict(
                Action.hard_stop, name, spent, limit, f"hard stop: {figures}, wrap-up began {waited:.1f} s ago"
            )
        elif spent >= wrap_at * limit:
            verdict = CapVerdict(
                Action.wrap_up, name, spent, limit, f"wrap up: {figures} (wrap-up from {float(wrap_at):.0%})"
            )
        else:
            continue
        rank = (_SEVERITY[verdict.action], _ratio(spent, limit), verdict)
        if best is None or rank[:2] > best[:2]:
            best = rank
    return best[2] if best is not None else _nearest_ok(limits)


def _day_verdict(spend: Spend, limit: int, figures: str) -> CapVerdict | None:
    return _pool_verdict("per_day", spend.day, limit, spend.reserve_left, spend.closing_reserve, spend.overrun, figures)


def _pool_verdict(
    cap: str, spent: int, limit: int, held: int | None, closing_reserve: int, overrun: int, figures: str
) -> CapVerdict | None:
    """A pooled cap (the day's, or a campaign day's): wrap up once this call no longer holds its whole
    closing reserve or the cap is reached; stop at once past the reserve or the cap."""
    if held is None:
        held = max(0, min(closing_reserve, limit - spent))
    if overrun > 0:
        reason = f"hard stop: {figures}, {dollars(overrun)} past this call's closing reserve"
        return CapVerdict(Action.hard_stop, cap, spent, limit, reason)
    if spent > limit:
        return CapVerdict(Action.hard_stop, cap, spent, limit, f"hard stop: {figures}, over the cap")
    if spent >= limit or held < closing_reserve:
        reason = f"wrap up: {figures}, what is left only covers the closing lines of calls in progress"
        return CapVerdict(Action.wrap_up, cap, spent, limit, reason)
    return None


def admit_call(
    day_spent: int,
    caps: Caps,
    *,
    campaign_day_spent: int | None = None,
    day_reserved: int = 0,
    closing_reserve: int = 0,
    campaign_reserved: int = 0,
) -> CapVerdict:
    """May a NEW call start? ``hard_stop`` (refuse) when the day, or the campaign's day, is at or over
    its cap, counting what the calls in progress hold for their closing lines (``day_reserved``, and
    ``campaign_reserved`` for the campaign's day) and the new call's own closing reserve: a call that
    could not close within either cap is not started. ``ok`` otherwise. Without ``campaign_day_spent``
    (a call outside any campaign) the campaign-day cap is not consulted."""
    refusals: list[tuple[Fraction, CapVerdict]] = []
    limits: list[tuple[str, int, int]] = []
    if caps.per_day is not None:
        limits.append(("per_day", day_spent, caps.per_day))
        committed = day_spent + day_reserved + closing_reserve
        if committed >= caps.per_day:
            reason = f"refused: {_figures(day_spent, caps.per_day, 'per_day')} spent"
            if day_reserved or closing_reserve:
                reason += (
                    f", {dollars(day_reserved)} held for closing lines of calls in progress,"
                    f" {dollars(closing_reserve)} needed for this call's"
                )
            verdict = CapVerdict(Action.hard_stop, "per_day", day_spent, caps.per_day, reason)
            refusals.append((_ratio(committed, caps.per_day), verdict))
    if caps.per_campaign_day is not None and campaign_day_spent is not None:
        limits.append(("per_campaign_day", campaign_day_spent, caps.per_campaign_day))
        committed = campaign_day_spent + campaign_reserved + closing_reserve
        if committed >= caps.per_campaign_day:
            figures = _figures(campaign_day_spent, caps.per_campaign_day, "per_campaign_day")
            reason = f"refused: {figures} spent"
            if campaign_reserved or closing_reserve:
                reason += (
                    f", {dollars(campaign_reserved)} held for closing lines of the campaign's calls in progress,"
                    f" {dollars(closing_reserve)} needed for this call's"
                )
            verdict = CapVerdict(
                Action.hard_stop, "per_campaign_day", campaign_day_spent, caps.per_campaign_day, reason
            )
            refusals.append((_ratio(committed, caps.per_campaign_day), verdict))
    if refusals:
        return max(refusals, key=lambda item: item[0])[1]
    return _nearest_ok(limits)


def crossed_thresholds(before: int, after: int, cap: int | None, thresholds: Sequence[float]) -> list[float]:
    """The thresholds (fractions of ``cap``) this increment crossed, ascending: ``before < t*cap <= after``.
    None for a cap, or no increase, crosses nothing."""
    if cap is None or after <= before:
        return []
    return sorted(t for t in thresholds if before < _fraction(t) * cap <= after)


def _zone(zone: str) -> ZoneInfo:
    try:
        return ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {zone!r}") from exc


def _aware(now: datetime) -> datetime:
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError(f"a naive datetime has no instant: {now.isoformat()} (give it a time zone)")
    return now


def operator_day(now: datetime, zone: str) -> date:
    """The operator's calendar day (in ``zone``) at the instant ``now``."""
    return _aware(now).astimezone(_zone(zone)).date()


def next_midnight(now: datetime, zone: str) -> datetime:
    """The instant the operator's next day begins, as an aware UTC datetime.

    Computed from the local date, not by adding 24 h, so a 23 h or 25 h DST day resets on time. Where a
    DST change skips local midnight (clocks jump 00:00 -> 01:00), zoneinfo's fold=0 reading of 00:00
    lands on the transition instant itself, the first instant of the new day.
    """
    tz = _zone(zone)
    local_day = operator_day(now, zone) + timedelta(days=1)
    return datetime.combine(local_day, time(0), tzinfo=tz).astimezone(UTC)
