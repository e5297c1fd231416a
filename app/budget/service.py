"""The budget's I/O shell: meter calls into the Redis ledger, enforce caps, record and alert."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.budget.ledger import BudgetLedger, Totals
from app.budget.models import BudgetEnforcement
from app.budget.policy import (
    Action,
    Caps,
    CapVerdict,
    Spend,
    admit_call,
    check_call,
    crossed_thresholds,
    dollars,
    operator_day,
)
from app.budget.pricing import (
    DEFAULT_PRICES,
    Cost,
    PriceTable,
    audio_estimate,
    chat_cost,
    closing_reserve,
    input_micros,
    load_price_table,
    response_cost,
    speech_cost,
    telephony_cost,
    transcription_cost,
)
from app.settings import Settings

log = structlog.get_logger()

CAPS_REFRESH_S = 5.0
RESERVE_TOUCH_S = 5.0  # a live call charges (maybe 0) at least this often, so its reserve is not reaped
WRAP_UP_INSTRUCTIONS = (
    "This call has reached its time limit and must end now. Do not start anything new. Say only: "
    '"I am sorry, I must go now. Goodbye."'
)


def holds_reserve(caps: Caps, campaign_id: int | None) -> bool:
    """A call holds a closing reserve when its day, or its campaign's day, has a cap (a pool)."""
    return caps.per_day is not None or (campaign_id is not None and caps.per_campaign_day is not None)


def micros(usd: float | None) -> int | None:
    return None if usd is None else round(usd * 1_000_000)


def load_prices(settings: Settings) -> PriceTable:
    if settings.price_table_file is None:
        return DEFAULT_PRICES
    return load_price_table(orjson.loads(Path(settings.price_table_file).read_bytes()))


class Budget:
    """One per process: caps from settings overridden by the API (stored in Redis for every node)."""

    def __init__(
        self,
        *,
        settings: Settings,
        ledger: BudgetLedger,
        sessionmaker: async_sessionmaker[AsyncSession],
        prices: PriceTable,
    ) -> None:
        self.settings = settings
        self.ledger = ledger
        self.sessionmaker = sessionmaker
        self.prices = prices
        self.zone = settings.budget_timezone
        self.hard_stop_grace_s = Caps(per_call=None, per_day=None).hard_stop_grace_s
        self._alerts: set[asyncio.Task[Any]] = set()

    def today(self, now: datetime) -> Any:
        return operator_day(now, self.zone)

    async def caps_for(self, campaign_id: int | None) -> Caps:
        stored = await self.ledger.caps()
        per_call = stored.get("per_call", micros(self.settings.budget_per_call_usd))
        per_day = stored.get("per_day", micros(self.settings.budget_per_day_usd))
        per_campaign_day = None
        if campaign_id is not None:
            campaign = stored.get("campaigns", {}).get(str(campaign_id), {})
            per_call = campaign.get("per_call", per_call)
            per_campaign_day = campaign.get("per_day")
        return Caps(
            per_call=per_call,
            per_day=per_day,
            per_campaign_day=per_campaign_day,
            runaway_margin=self.settings.budget_runaway_margin,
        )

    def closing_reserve(self, *, direction: str, context_micros: int = 0) -> int:
        """What a call holds out of the day's budget for its closing line (µ$)."""
        return closing_reserve(
            self.settings.openai_realtime_model,
            self.prices,
            direction=direction,
            context_micros=context_micros,
            listen_s=self.hard_stop_grace_s,
        ).micros

    async def open_for(
        self, *, now: datetime, campaign_id: int | None = None, direction: str = "inbound"
    ) -> CapVerdict:
        """Is there budget left today (for the campaign too, if given) for one more call, counting what
        the calls in progress hold for their closing lines? Nothing is recorded."""
        day = self.today(now)
        caps = await self.caps_for(campaign_id)
        campaign_spent: int | None = None
        campaign_reserved = 0
        if campaign_id is not None:
            campaign_spent, campaign_reserved = await self.ledger.campaign_pool(campaign_id, day)
        spent, reserved = await self.ledger.day_pool(day)
        pooled = holds_reserve(caps, campaign_id)
        return admit_call(
            spent,
            caps,
            campaign_day_spent=campaign_spent,
            day_reserved=reserved if caps.per_day is not None else 0,
            closing_reserve=self.closing_reserve(direction=direction) if pooled else 0,
            campaign_reserved=campaign_reserved if caps.per_campaign_day is not None else 0,
        )

    async def admit(
        self, *, now: datetime, call_sid: str, campaign_id: int | None = None, direction: str = "inbound"
    ) -> CapVerdict:
        """May a new call start? Refused (and recorded) when the day's budget is spent."""
        verdict = await self.open_for(now=now, campaign_id=campaign_id, direction=direction)
        if verdict.action is not Action.ok:
            await self.record("refuse_call", verdict, now=now, call_sid=call_sid, campaign_id=campaign_id)
        return verdict

    def meter(self, *, call_sid: str, campaign_id: int | None, direction: str, model: str) -> CallMeter:
        return CallMeter(self, call_sid=call_sid, campaign_id=campaign_id, direction=direction, model=model)

    async def record(
        self,
        action: str,
        verdict: CapVerdict,
        *,
        now: datetime,
        call_sid: str | None = None,
        campaign_id: int | None = None,
    ) -> None:
        log.warning(
            "budget.enforced", action=action, cap=verdict.cap, spent=verdict.spent, limit=verdict.limit,
            call_sid=call_sid, reason=verdict.reason,
        )  # fmt: skip
        async with self.sessionmaker() as session:
            session.add(
                BudgetEnforcement(
                    at=now,
                    day=self.today(now),
                    action=action,
                    cap=verdict.cap,
                    spent_micros=verdict.spent,
                    limit_micros=verdict.limit,
                    call_sid=call_sid,
                    campaign_id=campaign_id,
                    reason=verdict.reason[:300],
                    price_version=self.prices.version,
                )
            )
            await session.commit()

    async def alerts(
        self, before: Totals, after: Totals, caps: Caps, *, now: datetime, call_sid: str, campaign_id: int | None
    ) -> None:
        """Cross-node alerts at the configured thresholds, once per threshold per period."""
        day = self.today(now).isoformat()
        checks = [
            ("per_day", day, before.day, after.day, caps.per_day),
            ("per_call", call_sid, before.call, after.call, caps.per_call),
        ]
        if campaign_id is not None:
            checks.append(
                (
                    "per_campaign_day",
                    f"{campaign_id}:{day}",
                    before.campaign_day,
                    after.campaign_day,
                    caps.per_campaign_day,
                )
            )
        for cap, period, spent_before, spent_after, limit in checks:
            for threshold in crossed_thresholds(spent_before, spent_after, limit, caps.alert_thresholds):
                if await self.ledger.first_to_cross(period, cap, threshold):
                    reason = f"{cap} spend reached {threshold:.0%}: {dollars(spent_after)} of {dollars(limit or 0)}"
                    verdict = CapVerdict(Action.ok, cap, spent_after, limit, reason)
                    await self.record("alert", verdict, now=now, call_sid=call_sid, campaign_id=campaign_id)
                    self._post_alert({"cap": cap, "threshold": threshold, "spent_micros": spent_after,
                                      "limit_micros": limit, "period": period, "reason": reason})  # fmt: skip

    def _post_alert(self, body: dict[str, Any]) -> None:
        url = self.settings.budget_alert_webhook
        if not url:
            return

        async def post() -> None:
            try:
                async with httpx.AsyncClient(timeout=5) as client:
                    await client.post(url, json=body)
            except httpx.HTTPError as exc:
                log.warning("budget.alert_webhook_failed", error=repr(exc))

        task = asyncio.create_task(post())
        self._alerts.add(task)
        task.add_done_callback(self._alerts.discard)


@dataclass
class CallMeter:
    """One call's spend: exact costs from usage events, estimates in between, telephony per minute, and
    its closing reserve in the day's pool."""

    budget: Budget
    call_sid: str
    campaign_id: int | None
    direction: str
    model: str
    estimated_outstanding: int = 0
    minutes_billed: int = 0
    last: Totals = field(default_factory=lambda: Totals(0, 0, 0))
    wrap_up_started_s: float | None = None
    context_micros: int = 0  # input cost of the last response: what the closing line will re-read
    reserve_day: Any = None  # the operator day the call's reserve is held in
    _caps: Caps | None = None
    _caps_at: float = 0.0
    _charged_at: float = float("-inf")
    # The last verdict and what it was drawn from (totals, caps, the closing line's cost): the ticker asks
    # four times a second, the totals change at most once a second, and the policy's exact arithmetic
    # (Fractions) was ~4% of a busy node's CPU.
    _verdict: tuple[Totals, Caps, int, CapVerdict] | None = None

    def wanted_reserve(self) -> int | None:
        """None once wrapping up: the call keeps (and spends) what it holds; it never asks for more."""
        if self.wrap_up_started_s is not None:
            return None
        return self.budget.closing_reserve(direction=self.direction, context_micros=self.context_micros)

    async def _charge(self, cost: Cost, now: datetime) -> Totals:
        before = self.last
        now_s = time.monotonic()  # the loop's clock: shares the caps cache with verdict()
        caps = await self.caps(now_s)
        day = self.budget.today(now)
        if self.reserve_day is not None and self.reserve_day != day:
            await self.budget.ledger.release(call_sid=self.call_sid, day=self.reserve_day, campaign_id=self.campaign_id)
        pooled = holds_reserve(caps, self.campaign_id)
        self.reserve_day = day if pooled else None
        totals = await self.budget.ledger.charge(
            call_sid=self.call_sid,
            day=day,
            campaign_id=self.campaign_id,
            micros=cost.micros,
            day_cap=caps.per_day,
            reserve=self.wanted_reserve(),
            campaign_cap=caps.per_campaign_day,
        )
        self.last = totals
        self._charged_at = now_s
        await self.budget.alerts(before, totals, caps, now=now, call_sid=self.call_sid, campaign_id=self.campaign_id)
        return totals

    async def usage(self, kind: str, usage: dict[str, Any], now: datetime, *, model: str | None = None) -> Cost:
        """Exact cost of a Realtime response, a transcription, or (cascaded engine) a chat completion or a
        speech request (``model``: the stage's model); a response's replaces the estimate made meanwhile."""
        prices = self.budget.prices
        if kind == "response":
            exact = response_cost(usage, self.model, prices)
        elif kind == "transcription":
            exact = transcription_cost(usage, prices)
        elif kind == "chat":
            exact = chat_cost(usage, model or self.model, prices)
        elif kind == "speech":
            exact = speech_cost(
                model or "", characters=int(usage.get("characters") or 0),
                audio_seconds=float(usage.get("audio_seconds") or 0.0), table=prices,
            )  # fmt: skip
        else:
            raise ValueError(f"unknown usage kind {kind!r}")
        correction = exact.micros - (self.estimated_outstanding if kind == "response" else 0)
        if kind == "response":
            self.estimated_outstanding = 0
            self.context_micros = input_micros(exact)
        await self._charge(Cost(correction, exact.kind, exact.detail, exact.price_version), now)
        return exact

    async def estimate(self, seconds_in: float, seconds_out: float, now: datetime) -> None:
        cost = audio_estimate(seconds_in, seconds_out, self.model, self.budget.prices)
        if cost.micros:
            self.estimated_outstanding += cost.micros
            await self._charge(cost, now)
        elif time.monotonic() - self._charged_at >= RESERVE_TOUCH_S:
            await self._charge(cost, now)  # nothing to add: keeps the call's reserve held

    async def telephony(self, elapsed_s: float, now: datetime) -> None:
        """Bill each started minute once, whichever node carried the call when it started."""
        started_minutes = int(elapsed_s // 60) + 1
        if started_minutes <= self.minutes_billed:
            return
        new = await self.budget.ledger.claim_minutes(self.call_sid, started_minutes)
        self.minutes_billed = started_minutes
        if new:
            await self._charge(telephony_cost(60 * new, self.direction, self.budget.prices), now)

    async def release(self) -> None:
        """The call is over: its closing reserve goes back to the day's pool."""
        if self.reserve_day is not None:
            await self.budget.ledger.release(call_sid=self.call_sid, day=self.reserve_day, campaign_id=self.campaign_id)
            self.reserve_day = None

    async def caps(self, now_s: float) -> Caps:
        """This call's caps, re-read from Redis at most every few seconds (an API change lands soon)."""
        if self._caps is None or now_s - self._caps_at >= CAPS_REFRESH_S:
            self._caps, self._caps_at = await self.budget.caps_for(self.campaign_id), now_s
        return self._caps

    async def verdict(self, now_s: float) -> CapVerdict:
        caps = await self.caps(now_s)
        last = self.last
        memo = self._verdict
        if (
            memo is not None
            and self.wrap_up_started_s is None  # wrapping up, the verdict depends on the time: drawn every time
            and memo[0] is last
            and memo[1] is caps
            and memo[2] == self.context_micros
        ):
            return memo[3]
        wanted = self.wanted_reserve()
        pooled = last.reserve_left is not None or last.campaign_reserve_left is not None
        spend = Spend(
            call=last.call,
            day=last.day,
            campaign_day=last.campaign_day,
            closing_reserve=0 if wanted is None or not pooled else wanted,
            reserve_left=last.reserve_left,
            overrun=last.overrun,
            campaign_reserve_left=last.campaign_reserve_left,
            campaign_overrun=last.campaign_overrun,
        )
        verdict = check_call(spend, caps, wrap_up_started_s=self.wrap_up_started_s, now_s=now_s)
        self._verdict = (last, caps, self.context_micros, verdict)
        return verdict
