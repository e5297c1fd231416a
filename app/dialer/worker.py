"""The dialer worker: claims due contacts, decides again at the moment of dialing, places calls.

Several workers may run (``switchboard dialer`` on several nodes, or inside ``serve``). On
PostgreSQL they claim contacts with ``FOR UPDATE SKIP LOCKED``, so no contact is claimed twice;
SQLite has no row locks, so there a single worker must run (the embedded default). Concurrency
is counted from the attempts table; calls per second are shared through Redis.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import structlog
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.adapters.twilio_rest import TwilioError
from app.budget.policy import Action
from app.dialer import service
from app.dialer.models import Attempt, Campaign, Contact
from app.dialer.policy import Outcome
from app.runtime import Runtime

log = structlog.get_logger()

ACTIVE = ("placing", "queued", "initiated", "ringing", "in-progress")
RETRYABLE = {"busy", "no-answer", "failed", "machine"}
FINAL = {"completed", "busy", "no-answer", "failed", "canceled"}
RING_TIMEOUT_S = 25  # at least 15 s of ringing before giving up


def utcnow() -> datetime:
    return datetime.now(UTC)


class CallsPerSecond:
    """A fixed-window limiter in Redis, shared by every worker: at most ``rate`` calls in each second."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt

    async def acquire(self, campaign_id: int, rate: float) -> int:
        """Wait for a slot; returns the (unix) second the call was admitted in."""
        per_window = max(1, int(rate))
        while True:
            now = time.time()
            second = int(now)
            key = f"{self.rt.call_store.prefix}:cps:{campaign_id}:{second}"
            async with self.rt.redis.pipeline(transaction=True) as pipe:
                pipe.incr(key)
                pipe.expire(key, 5)
                count, _ = await pipe.execute()
            if int(count) <= per_window:
                return second
            await asyncio.sleep(second + 1 - now)


class Dialer:
    def __init__(self, rt: Runtime, *, clock: Callable[[], datetime] = utcnow, batch: int = 50) -> None:
        self.rt = rt
        self.clock = clock
        self.batch = batch
        self.cps = CallsPerSecond(rt)
        self._postgres = rt.engine.dialect.name == "postgresql"

    async def run_forever(self, *, idle_s: float = 1.0) -> None:
        while True:
            try:
                placed = await self.run_once()
            except Exception:
                log.exception("dialer.pass_failed")
                placed = 0
            if placed == 0:
                await asyncio.sleep(idle_s)

    async def run_once(self) -> int:
        """One pass over running campaigns; returns how many contacts were decided."""
        async with self.rt.sessionmaker() as session:
            campaigns = list(
                await session.scalars(select(Campaign).where(Campaign.status.in_(("running", "paused_budget"))))
            )
        handled = 0
        for campaign in campaigns:
            if await self._within_budget(campaign):
                handled += await self._campaign_pass(campaign)
        return handled

    async def _within_budget(self, campaign: Campaign) -> bool:
        """Pause a campaign whose day (or campaign day) budget is spent; resume it when a new day opens."""
        now = self.clock()
        verdict = await self.rt.budget.open_for(now=now, campaign_id=campaign.id, direction="outbound")
        spent = verdict.action is not Action.ok
        if spent == (campaign.status == "paused_budget"):
            return not spent
        status, action = ("paused_budget", "pause_campaign") if spent else ("running", "resume_campaign")
        async with self.rt.sessionmaker() as session:
            await session.execute(
                update(Campaign).where(Campaign.id == campaign.id).values(status=status, updated_at=now)
            )
            await session.commit()
        campaign.status = status
        await self.rt.budget.record(action, verdict, now=now, campaign_id=campaign.id)
        return not spent

    async def _campaign_pass(self, campaign: Campaign) -> int:
        claimed = await self._claim(campaign)
        for contact_id in claimed:
            await self._dial(campaign, contact_id)
        return len(claimed)

    async def _claim(self, campaign: Campaign) -> list[int]:
        """Mark up to the free concurrency of due contacts as ours, atomically across workers."""
        now = self.clock()
        async with self.rt.sessionmaker() as session, session.begin():
            if self._postgres:
                # One claimant per campaign at a time: the capacity count below is then not stale.
                await session.execute(select(Campaign.id).where(Campaign.id == campaign.id).with_for_update())
            calling = await session.scalar(
                select(func.count())
                .select_from(Attempt)
                .where(Attempt.campaign_id == campaign.id, Attempt.status.in_(ACTIVE), Attempt.ended_at.is_(None))
            )
            claimed = await session.scalar(
                select(func.count())
                .select_from(Contact)
                .where(Contact.campaign_id == campaign.id, Contact.status == "dialing")
            )
            free = min(self.batch, campaign.concurrency - int(calling or 0) - int(claimed or 0))
            if free <= 0:
                return []
            query = (
                select(Contact.id)
                .where(
                    Contact.campaign_id == campaign.id,
                    Contact.status == "pending",
                    Contact.next_attempt_at <= now,
                )
                .order_by(Contact.next_attempt_at, Contact.id)
                .limit(free)
            )
            if self._postgres:
                query = query.with_for_update(skip_locked=True)
            ids = list(await session.scalars(query))
            if ids:
                await session.execute(update(Contact).where(Contact.id.in_(ids)).values(status="dialing"))
        return ids

    async def _dial(self, campaign: Campaign, contact_id: int) -> None:
        rt = self.rt
        async with rt.sessionmaker() as session:
            contact = await session.get(Contact, contact_id)
            assert contact is not None
            now = self.clock()
            decision = await service.decide_for_contact(
                session, campaign=campaign, contact=contact, now=now, jurisdiction=rt.jurisdiction
            )
            if decision.outcome is not Outcome.allow:
                self._park(contact, decision.outcome, decision.defer_until, decision.codes[0] if decision.codes else "")
                session.add(service.decision_record(decision, campaign_id=campaign.id, contact=contact, now=now))
                await session.commit()
                return
            if await self._attempted_today(session, contact, now) >= campaign.daily_attempt_limit:
                contact.status, contact.next_attempt_at = "pending", now + timedelta(hours=24)
                await session.commit()
                return
            attempt = Attempt(
                campaign_id=campaign.id,
                contact_id=contact.id,
                phone=contact.phone,
                subject=campaign.subject,
                purpose=campaign.purpose,
                placed_at=now,
                status="placing",
            )
            session.add(attempt)
            await session.flush()
            session.add(
                service.decision_record(
                    decision, campaign_id=campaign.id, contact=contact, now=now, attempt_id=attempt.id
                )
            )
            contact.attempts += 1
            contact.status = "in_progress"
            await session.commit()
            await self.cps.acquire(campaign.id, campaign.calls_per_second)
            base = rt.settings.public_base_url
            try:
                call = await rt.twilio.create_call(
                    to=contact.phone,
                    from_=campaign.caller_id,
                    url=f"{base}/twilio/outbound?attempt={attempt.id}",
                    status_callback=f"{base}/twilio/status?attempt={attempt.id}",
                    timeout_s=RING_TIMEOUT_S,
                    machine_detection="DetectMessageEnd",
                    async_amd=True,
                    async_amd_status_callback=f"{base}/twilio/amd?attempt={attempt.id}",
                )
            except TwilioError as exc:
                verdict, why = placement_failure(exc.status, exc.code)
                log.warning(
                    "dialer.call_failed", attempt=attempt.id, status=exc.status, code=exc.code, verdict=verdict,
                    reason=NEVER_CALLABLE.get(exc.code or 0, exc.message[:200]),
                )  # fmt: skip
                attempt.status, attempt.disposition, attempt.ended_at = "failed", why, now
                if verdict == "retry":
                    schedule_retry(campaign, contact, "failed", now)
                else:  # never dialed again: done for a number that cannot be called, held for an operator
                    contact.status = "done" if verdict == "never" else "held"
                    contact.disposition = why
                    contact.next_attempt_at = None
                await session.commit()
                return
            attempt.call_sid, attempt.status = call.sid, call.status or "queued"
            await session.commit()

    @staticmethod
    def _park(contact: Contact, outcome: Outcome, defer_until: datetime | None, code: str) -> None:
        if outcome is Outcome.defer and defer_until is not None:
            contact.status, contact.next_attempt_at = "pending", defer_until
        else:
            contact.status, contact.disposition = ("held" if outcome is Outcome.review else "done"), code

    @staticmethod
    async def _attempted_today(session: AsyncSession, contact: Contact, now: datetime) -> int:
        count = await session.scalar(
            select(func.count())
            .select_from(Attempt)
            .where(Attempt.contact_id == contact.id, Attempt.placed_at > now - timedelta(hours=24))
        )
        return int(count or 0)


# Twilio errors that say this number can never be called from here (invalid, unreachable, not a phone
# number): dialing it again only spends an attempt. https://www.twilio.com/docs/api/errors
NEVER_CALLABLE = {
    13224: "invalid phone number",
    13225: "forbidden phone number",
    13226: "invalid country code",
    21211: "invalid 'To' phone number",
    21214: "'To' phone number cannot be reached",
    21217: "phone number does not appear to be valid",
    21401: "invalid phone number",
    21421: "phone number is invalid",
    21614: "'To' number is not a valid mobile number",
}


def placement_failure(status: int, code: int | None) -> tuple[str, str]:
    """What a refused call request means for the contact, and the disposition that says why (at most
    32 characters): ("never", "uncallable (twilio 21217)") for a number that can never be called;
    ("review", "refused (twilio 21215)") for any other 4xx (the request itself is refused: account,
    caller ID or geographic permissions an operator must fix; the contact is held until released);
    ("retry", "failed (twilio 503)") for rate limits, Twilio's 5xx and network failures."""
    if code in NEVER_CALLABLE:
        return "never", f"uncallable (twilio {code})"
    if 400 <= status < 500 and status != 429:
        return "review", f"refused (twilio {code or status})"
    return "retry", f"failed (twilio {code or status or 'network'})"


def schedule_retry(campaign: Campaign, contact: Contact, outcome: str, now: datetime) -> None:
    """After an attempt ends: retry busy, no-answer, failed and machine outcomes within the limits."""
    contact.disposition = outcome
    if outcome in RETRYABLE and contact.attempts < campaign.max_attempts:
        contact.status = "pending"
        contact.next_attempt_at = now + timedelta(minutes=campaign.retry_spacing_min)
    else:
        contact.status = "done"
        contact.next_attempt_at = None
