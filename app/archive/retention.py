"""Transcript retention: past TRANSCRIPT_RETENTION_DAYS a call's transcript lines are deleted.

The call row stays (its times, numbers, disposition, cost and events), marked with when its
transcript was purged, so reports and audits still add up. Every pass that purges anything writes
an audit entry. Safe to run on several nodes at once: each pass deletes what is still there.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime, timedelta

import structlog
from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.archive.models import AuditEntry, Call, TranscriptSegment

log = structlog.get_logger()
BATCH = 500


def cutoff(now: datetime, days: int) -> datetime:
    """Calls that started before this instant have outlived their transcripts."""
    return now - timedelta(days=days)


async def purge_transcripts(sessionmaker: async_sessionmaker[AsyncSession], *, now: datetime, days: int) -> int:
    """Delete the transcripts of calls started more than ``days`` before ``now``; return how many calls."""
    before = cutoff(now, days)
    purged = 0
    while True:
        async with sessionmaker() as session, session.begin():
            ids = list(
                await session.scalars(
                    select(Call.id)
                    .where(Call.started_at < before, Call.transcript_purged_at.is_(None))
                    .order_by(Call.id)
                    .limit(BATCH)
                )
            )
            if not ids:
                break
            await session.execute(delete(TranscriptSegment).where(TranscriptSegment.call_id.in_(ids)))
            await session.execute(update(Call).where(Call.id.in_(ids)).values(transcript_purged_at=now))
            purged += len(ids)
    if purged:
        async with sessionmaker() as session, session.begin():
            session.add(
                AuditEntry(
                    at=now,
                    action="retention_purge",
                    detail={"calls": purged, "started_before": before.isoformat(), "retention_days": days},
                    via="job",
                )
            )
        log.info("retention.purged", calls=purged, started_before=before.isoformat())
    return purged


async def run_retention(
    sessionmaker: async_sessionmaker[AsyncSession],
    *,
    days: int,
    interval_s: float,
    clock: Callable[[], datetime],
    on_pass: Callable[[int | None], None] | None = None,
) -> None:
    """The scheduled job: a pass now, then every ``interval_s``. ``on_pass`` hears each pass's count
    (None for a failed pass)."""
    while True:
        purged: int | None = None
        try:
            purged = await purge_transcripts(sessionmaker, now=clock(), days=days)
        except Exception:  # a failed pass is retried at the next interval
            log.exception("retention.failed")
        if on_pass is not None:
            on_pass(purged)
        await asyncio.sleep(interval_s)
