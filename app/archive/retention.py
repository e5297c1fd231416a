"""Retention: past TRANSCRIPT_RETENTION_DAYS a call's transcript lines are deleted; past
RECORDING_RETENTION_DAYS (default: the transcript's) its recording is deleted from the recording store.

The call row stays (its times, numbers, disposition, cost and events), marked with when its
transcript was purged and when its recording was deleted, so reports and audits still add up. Every pass
that purges anything writes an audit entry. Safe to run on several nodes at once: each pass deletes what is
still there.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime, timedelta

import structlog
from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.archive.models import AuditEntry, Call, TranscriptSegment
from app.recording.storage import RecordingStore

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


async def purge_recordings(
    sessionmaker: async_sessionmaker[AsyncSession], store: RecordingStore, *, now: datetime, days: int
) -> int:
    """Delete from the store the recordings of calls started more than ``days`` before ``now`` (the file and
    any parts left), then mark each call; return how many. A recording the store failed to delete stays
    unmarked, to be tried again at the next pass."""
    before = cutoff(now, days)
    deleted: list[str] = []
    failed = 0
    after = 0
    while True:
        async with sessionmaker() as session:
            rows = list(
                await session.execute(
                    select(Call.id, Call.call_sid)
                    .where(Call.id > after, Call.started_at < before, Call.recording_key.is_not(None),
                           Call.recording_deleted_at.is_(None))
                    .order_by(Call.id)
                    .limit(BATCH)
                )
            )  # fmt: skip
        if not rows:
            break
        after = rows[-1][0]
        done: list[int] = []
        for call_id, call_sid in rows:
            try:
                await store.delete_prefix(f"{call_sid}/")
            except Exception as exc:  # noqa: BLE001 - the store is away: the next pass tries again
                failed += 1
                log.warning("retention.recording_not_deleted", call_sid=call_sid, error=repr(exc))
                continue
            done.append(call_id)
            deleted.append(call_sid)
        if done:
            async with sessionmaker() as session, session.begin():
                await session.execute(update(Call).where(Call.id.in_(done)).values(recording_deleted_at=now))
    if deleted or failed:
        async with sessionmaker() as session, session.begin():
            session.add(
                AuditEntry(
                    at=now,
                    action="recording_retention",
                    detail={"deleted": len(deleted), "failed": failed, "started_before": before.isoformat(),
                            "retention_days": days, "call_sids": deleted[:1000]},
                    via="job",
                )
            )  # fmt: skip
        log.info("retention.recordings_deleted", calls=len(deleted), failed=failed, started_before=before.isoformat())
    return len(deleted)


async def run_retention(
    sessionmaker: async_sessionmaker[AsyncSession],
    *,
    days: int | None,
    interval_s: float,
    clock: Callable[[], datetime],
    on_pass: Callable[[int | None], None] | None = None,
    recordings: RecordingStore | None = None,
    recording_days: int | None = None,
) -> None:
    """The scheduled job: a pass now, then every ``interval_s``. ``on_pass`` hears each pass's count of
    calls purged of something (None for a failed pass)."""
    while True:
        purged: int | None = None
        try:
            now = clock()
            purged = await purge_transcripts(sessionmaker, now=now, days=days) if days is not None else 0
            if recordings is not None and recording_days is not None:
                purged += await purge_recordings(sessionmaker, recordings, now=now, days=recording_days)
        except Exception:  # a failed pass is retried at the next interval
            log.exception("retention.failed")
        if on_pass is not None:
            on_pass(purged)
        await asyncio.sleep(interval_s)
