"""What became of a placed call: Twilio status and answering-machine callbacks, per attempt."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.dialer.models import Attempt, Campaign, Contact
from app.dialer.worker import FINAL, schedule_retry


async def attempt_for(session: AsyncSession, *, attempt_id: str | None, call_sid: str) -> Attempt | None:
    if attempt_id and attempt_id.isdigit():
        attempt = await session.get(Attempt, int(attempt_id))
        if attempt is not None and (attempt.call_sid in (None, call_sid)):
            return attempt
    if call_sid:
        return await session.scalar(select(Attempt).where(Attempt.call_sid == call_sid))
    return None


async def record_status(
    session: AsyncSession, *, attempt: Attempt, status: str, answered_by: str | None, now: datetime
) -> None:
    """Apply a status callback; at a final status, the contact's disposition and any retry follow."""
    if attempt.ended_at is not None:
        return  # callbacks can repeat or arrive late: the first final one counts
    attempt.status = status
    if answered_by:
        attempt.answered_by = answered_by
    if status not in FINAL:
        return
    attempt.ended_at = now
    machine = (attempt.answered_by or "").startswith("machine") or attempt.answered_by == "fax"
    outcome = "machine" if machine and status == "completed" else status
    attempt.disposition = "answered" if outcome == "completed" else outcome
    contact = await session.get(Contact, attempt.contact_id)
    campaign = await session.get(Campaign, attempt.campaign_id)
    if contact is not None and campaign is not None:
        schedule_retry(campaign, contact, attempt.disposition, now)
