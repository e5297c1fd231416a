"""Writing finished calls to SQL and reading them back."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, overload

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import selectinload

from app.archive.facts import call_facts
from app.archive.models import Call, CallEvent, ToolInvocation, TranscriptSegment
from app.core.bridge import TranscriptLine
from app.results.models import PostCallJob


@dataclass(slots=True)
class CallEventRecord:
    kind: str
    detail: dict[str, Any]
    offset_ms: int | None
    at: datetime


@dataclass(slots=True)
class ToolInvocationRecord:
    name: str
    tool_call_id: str | None
    arguments: dict[str, Any] | None
    status: str
    output: str | None
    offset_ms: int | None


ARCHIVE_ATTEMPTS = 5
_BUILTIN_OUTCOMES = {"HangUp": "hung up", "TransferCall": "transferred"}


def invocations_from_events(events: list[CallEventRecord]) -> list[ToolInvocationRecord]:
    """The call's tool invocations, read off its event log (tool_called / tool_result / tool_skipped
    / call_ending), in the order they were called."""
    by_call: dict[str, ToolInvocationRecord] = {}
    order: list[ToolInvocationRecord] = []
    for event in events:
        detail = event.detail
        call_id = detail.get("call_id")
        key = str(call_id) if call_id else f"#{len(order)}"
        record = by_call.get(key)
        if event.kind in ("tool_called", "tool_result", "tool_skipped") and record is None:
            record = ToolInvocationRecord(str(detail.get("name", "")), call_id, None, "pending", None, event.offset_ms)
            by_call[key] = record
            order.append(record)
        if record is None and event.kind != "call_ending":
            continue
        if event.kind == "tool_called" and record is not None:
            record.arguments = detail.get("arguments")
        elif event.kind == "tool_result" and record is not None:
            record.status = "ok" if detail.get("ok") else "error"
            record.output = detail.get("output")
        elif event.kind == "tool_skipped" and record is not None:
            record.status = "skipped"
            record.output = f"not run: {detail.get('status')}"
        elif event.kind == "call_ending":
            for pending in order:
                if pending.status == "pending" and pending.name in ("end_call", "transfer_to_human"):
                    pending.status = "done"
                    pending.output = _BUILTIN_OUTCOMES.get(str(detail.get("action")), str(detail.get("action")))
    return order


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
    campaign_id: int | None = None
    cost_micros: int | None = None
    price_version: str | None = None
    redacted: bool = False


async def archive_call(
    sessionmaker: async_sessionmaker[AsyncSession], record: CallRecord, *, post_call: bool = False
) -> bool:
    """Insert the call, its transcript and events in one transaction. False if already archived.
    With ``post_call``, its post-call results job too, in the same transaction (one per call).

    Idempotent across processes: the unique call_sid makes a racing second insert fail, which is
    reported as "already archived"."""
    for attempt in range(ARCHIVE_ATTEMPTS):
        try:
            return await _insert_call(sessionmaker, record, post_call=post_call)
        except IntegrityError:
            return False
        except OperationalError as exc:  # SQLite busy past its timeout: the archive must not be lost
            if "locked" not in str(exc) or attempt == ARCHIVE_ATTEMPTS - 1:
                raise
            await asyncio.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")


@overload
def _clip(value: str, limit: int) -> str: ...
@overload
def _clip(value: str | None, limit: int) -> str | None: ...
def _clip(value: str | None, limit: int) -> str | None:
    """What the peer or the model sent, cut to its column: an archive is never lost to a long value."""
    if value is None or len(value) <= limit:
        return value
    return value[: limit - 1] + "…"


async def _insert_call(sessionmaker: async_sessionmaker[AsyncSession], record: CallRecord, *, post_call: bool) -> bool:
    # No "is it there already?" read first: the unique call_sid answers that (IntegrityError), and on
    # SQLite a transaction that reads before it writes cannot wait for the write lock (a concurrent
    # commit makes its snapshot stale and the write fails at once with "database is locked").
    async with sessionmaker() as session, session.begin():
        duration = (
            int((record.ended_at - record.started_at).total_seconds() * 1000) if record.ended_at is not None else None
        )
        facts = call_facts(record.status, ((e.kind, e.detail) for e in record.events))
        call = Call(
            campaign_id=record.campaign_id,
            cost_micros=record.cost_micros,
            price_version=record.price_version,
            redacted=record.redacted,
            disposition=facts.disposition,
            transferred=facts.transferred,
            opted_out=facts.opted_out,
            turns=facts.turns,
            latency_p50_ms=facts.latency_p50_ms,
            latency_p95_ms=facts.latency_p95_ms,
            # parts that were never joined are still the call's audio: keyed so that retention deletes them
            recording_key=facts.recording_key or (f"{record.call_sid}/parts/" if facts.recording_unjoined else None),
            recording_ms=facts.recording_ms,
            call_sid=record.call_sid,
            stream_sid=_clip(record.stream_sid, 64),
            direction=_clip(record.direction, 16),
            from_number=_clip(record.from_number, 255),
            to_number=_clip(record.to_number, 255),
            status=_clip(record.status, 32),
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
        call.tools = [
            ToolInvocation(
                seq=i,
                name=_clip(t.name, 128),
                tool_call_id=_clip(t.tool_call_id, 255),
                arguments=t.arguments,
                status=t.status,
                output=t.output,
                offset_ms=t.offset_ms,
            )
            for i, t in enumerate(invocations_from_events(record.events), start=1)
        ]
        session.add(call)
        if post_call:
            now = datetime.now(UTC)
            call.results_status = "pending"
            session.add(
                PostCallJob(call_sid=record.call_sid, status="pending", attempts=0, next_at=now, created_at=now)
            )
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
    return await session.scalar(
        select(Call).where(Call.call_sid == call_sid).options(selectinload(Call.segments), selectinload(Call.tools))
    )


async def get_call_events(session: AsyncSession, *, call_sid: str) -> list[CallEvent]:
    rows = await session.scalars(select(CallEvent).where(CallEvent.call_sid == call_sid).order_by(CallEvent.id))
    return list(rows)
