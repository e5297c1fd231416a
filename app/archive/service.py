"""Writing finished calls to SQL and reading them back."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import selectinload

from app.archive.models import Call, CallEvent, TranscriptSegment
from app.core.bridge import TranscriptLine


@dataclass(slots=True)
class CallEventRecord:
    kind: str
    detail: dict[str, Any]
    offset_ms: int | None
    at: datetime


@dataclass(slots=True)
class CallRecord:
    call_sid: str
    direction: str
    started_at: datetime
    stream_sid: str | None = None
    from_number: str | None = None
    to_number: str | None = None
    status: str = "completed"
    end_reason: str | None = None
    ended_at: datetime | None = None
    usage: dict[str, Any] | None = None
    lines: list[TranscriptLine] = field(default_factory=list)
    events: list[CallEventRecord] = field(default_factory=list)


async def archive_call(sessionmaker: async_sessionmaker[AsyncSession], record: CallRecord) -> bool:
    """Insert the call, its transcript and events in one transaction. False if already archived.

    Idempotent across processes: the unique call_sid makes a racing second insert fail, which is
    reported as "already archived"."""
    try:
        return await _insert_call(sessionmaker, record)
    except IntegrityError:
        return False


async def _insert_call(sessionmaker: async_sessionmaker[AsyncSession], record: CallRecord) -> bool:
    async with sessionmaker() as session, session.begin():
        existing = await session.scalar(select(Call.id).where(Call.call_sid == record.call_sid))
        if existing is not None:
            return False
        duration = (
            int((record.ended_at - record.started_at).total_seconds() * 1000) if record.ended_at is not None else None
        )
        call = Call(
            call_sid=record.call_sid,
            stream_sid=record.stream_sid,
            direction=record.direction,
            from_number=record.from_number,
            to_number=record.to_number,
            status=record.status,
            end_reason=record.end_reason,
            started_at=record.started_at,
            ended_at=record.ended_at,
            duration_ms=duration,
            usage=record.usage,
        )
        call.segments = [
            TranscriptSegment(
                seq=line.seq,
                speaker=line.speaker,
                text=line.text,
                offset_ms=line.offset_ms,
                interrupted=line.interrupted,
            )
            for line in record.lines
        ]
        session.add(call)
        session.add_all(
            CallEvent(call_sid=record.call_sid, kind=e.kind, detail=e.detail, offset_ms=e.offset_ms, created_at=e.at)
            for e in record.events
        )
    return True


async def record_call_event(
    sessionmaker: async_sessionmaker[AsyncSession], *, call_sid: str, kind: str, detail: dict[str, Any], at: datetime
) -> None:
    async with sessionmaker() as session, session.begin():
        session.add(CallEvent(call_sid=call_sid, kind=kind, detail=detail, created_at=at))


async def list_calls(session: AsyncSession, *, limit: int, offset: int) -> tuple[list[Call], int]:
    total = await session.scalar(select(func.count()).select_from(Call)) or 0
    rows = await session.scalars(
        select(Call).order_by(Call.started_at.desc(), Call.id.desc()).limit(limit).offset(offset)
    )
    return list(rows), total


async def get_call(session: AsyncSession, *, call_sid: str) -> Call | None:
    return await session.scalar(select(Call).where(Call.call_sid == call_sid).options(selectinload(Call.segments)))


async def get_call_events(session: AsyncSession, *, call_sid: str) -> list[CallEvent]:
    rows = await session.scalars(select(CallEvent).where(CallEvent.call_sid == call_sid).order_by(CallEvent.id))
    return list(rows)
