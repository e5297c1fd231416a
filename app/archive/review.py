"""What a supervisor reads about one call, what gets exported, and the audit log of both.

Shared by the REST API and the web console, so both show the same call and audit the same way.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.archive import service
from app.archive.models import AuditEntry, Call, CallEvent, TranscriptSegment
from app.archive.search import CallFilter, search_calls
from app.auth.keys import Principal
from app.budget.models import BudgetEnforcement
from app.dialer.models import Attempt, DialDecisionRecord

EXPORT_PAGE = 500
SUMMARY_FIELDS = (
    "call_sid", "direction", "from_number", "to_number", "campaign_id", "status", "disposition", "end_reason",
    "started_at", "ended_at", "duration_ms", "cost_micros", "price_version", "transferred", "opted_out", "turns",
    "latency_p50_ms", "latency_p95_ms", "redacted", "transcript_purged_at", "recording_ms", "recording_deleted_at",
    "results_status", "results_detail", "summary", "extraction",
)  # fmt: skip
LINE_FIELDS = ("call_sid", "seq", "offset_ms", "speaker", "interrupted", "text")


def summary(call: Call) -> dict[str, Any]:
    out = {name: getattr(call, name) for name in SUMMARY_FIELDS}
    out["cost_usd"] = None if call.cost_micros is None else call.cost_micros / 1_000_000
    return out


def line(call_sid: str | None, segment: TranscriptSegment) -> dict[str, Any]:
    """A transcript line; with ``call_sid`` (CSV rows) it says which call it belongs to."""
    head = {"call_sid": call_sid} if call_sid is not None else {}
    return {
        **head,
        "seq": segment.seq,
        "offset_ms": segment.offset_ms,
        "speaker": segment.speaker,
        "interrupted": segment.interrupted,
        "text": segment.text,
    }


@dataclass(slots=True)
class CallView:
    """Everything about one archived call."""

    call: Call
    events: list[CallEvent]
    decisions: list[DialDecisionRecord]
    enforcements: list[BudgetEnforcement]

    def as_dict(self) -> dict[str, Any]:
        call = self.call
        costs = [e for e in self.events if e.kind == "cost"]
        return {
            **summary(call),
            "usage": call.usage,
            "transcript": [line(None, s) for s in call.segments],
            "tools": [
                {
                    "seq": t.seq,
                    "name": t.name,
                    "tool_call_id": t.tool_call_id,
                    "arguments": t.arguments,
                    "status": t.status,
                    "output": t.output,
                    "offset_ms": t.offset_ms,
                }
                for t in call.tools
            ],
            "events": [
                {"kind": e.kind, "detail": e.detail, "offset_ms": e.offset_ms, "created_at": e.created_at}
                for e in self.events
            ],
            "costs": [
                {
                    "offset_ms": e.offset_ms,
                    "kind": e.detail.get("kind"),
                    "micros": e.detail.get("micros"),
                    "detail": e.detail.get("detail"),
                    "prices": e.detail.get("prices"),
                }
                for e in costs
            ],
            "turn_latencies_ms": [e.detail.get("ms") for e in self.events if e.kind == "turn_latency"],
            "dial_decisions": [
                {
                    "decided_at": d.decided_at,
                    "outcome": d.outcome,
                    "defer_until": d.defer_until,
                    "reasons": d.reasons,
                    "campaign_id": d.campaign_id,
                }
                for d in self.decisions
            ],
            "budget_enforcements": [
                {
                    "at": b.at,
                    "action": b.action,
                    "cap": b.cap,
                    "spent_micros": b.spent_micros,
                    "limit_micros": b.limit_micros,
                    "reason": b.reason,
                    "price_version": b.price_version,
                }
                for b in self.enforcements
            ],
        }


async def load_call(session: AsyncSession, call_sid: str) -> CallView | None:
    call = await service.get_call(session, call_sid=call_sid)
    if call is None:
        return None
    events = await service.get_call_events(session, call_sid=call_sid)
    decisions = list(
        await session.scalars(
            select(DialDecisionRecord)
            .join(Attempt, Attempt.id == DialDecisionRecord.attempt_id)
            .where(Attempt.call_sid == call_sid)
            .order_by(DialDecisionRecord.id)
        )
    )
    enforcements = list(
        await session.scalars(
            select(BudgetEnforcement).where(BudgetEnforcement.call_sid == call_sid).order_by(BudgetEnforcement.id)
        )
    )
    return CallView(call, events, decisions, enforcements)


async def audit(
    session: AsyncSession,
    principal: Principal | None,
    action: str,
    *,
    target: str | None = None,
    detail: dict[str, Any] | None = None,
    via: str = "api",
) -> None:
    """Write who read or exported what. Committed at once: the read happened whatever comes next."""
    session.add(
        AuditEntry(
            at=datetime.now(UTC),
            key_id=principal.key_id if principal else None,
            role=principal.role.value if principal else None,
            action=action,
            target=target,
            detail=detail or {},
            via=via,
        )
    )
    await session.commit()


# -- exports --------------------------------------------------------------------------------------


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_PLAIN_NUMBER = re.compile(r"[+-]?[0-9]+(\.[0-9]+)?")


def csv_cell(value: Any) -> Any:
    """A value as a spreadsheet should show it: text that a spreadsheet would run as a formula (it starts
    with = + - @, a tab or a carriage return) gets a leading apostrophe, so a caller who says
    "=HYPERLINK(...)" is shown, not run. Plain numbers (an E.164 phone number, -3) stay as they are."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict | list):  # the extraction: JSON, which a spreadsheet shows as text
        value = orjson.dumps(value).decode()
    if isinstance(value, str) and value.startswith(_FORMULA_START) and not _PLAIN_NUMBER.fullmatch(value):
        return "'" + value
    return value


def _csv_row(values: Iterable[Any]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerow(csv_cell(v) for v in values)
    return buffer.getvalue()


def _json(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_UTC_Z | orjson.OPT_NAIVE_UTC)


def call_csv(view: CallView) -> str:
    """One call as CSV: its transcript, a line per row."""
    rows = [_csv_row(LINE_FIELDS)]
    rows.extend(_csv_row(line(view.call.call_sid, s).values()) for s in view.call.segments)
    return "".join(rows)


def call_json(view: CallView) -> bytes:
    return _json(view.as_dict())


async def export_search(
    sessionmaker: async_sessionmaker[AsyncSession], filters: CallFilter, *, sort: str, fmt: str, lines: bool
) -> AsyncIterator[bytes]:
    """A search result, streamed page by page (keyset pagination: constant memory, any size).

    CSV: a call per row, or with ``lines`` a transcript line per row. JSON: an array of calls, each with
    its ``transcript`` when ``lines``. Its own session: the response outlives the request's."""
    async with sessionmaker() as session:
        async for chunk in _export_pages(session, filters, sort=sort, fmt=fmt, lines=lines):
            yield chunk


async def _export_pages(
    session: AsyncSession, filters: CallFilter, *, sort: str, fmt: str, lines: bool
) -> AsyncIterator[bytes]:
    cursor: str | None = None
    first = True
    if fmt == "csv":
        yield _csv_row(LINE_FIELDS if lines else (*SUMMARY_FIELDS, "cost_usd")).encode()
    else:
        yield b"["
    while True:
        page = await search_calls(session, filters, sort=sort, cursor=cursor, limit=EXPORT_PAGE)
        segments: dict[int, list[TranscriptSegment]] = {}
        if lines and page.calls:
            rows = await session.scalars(
                select(TranscriptSegment)
                .where(TranscriptSegment.call_id.in_([c.id for c in page.calls]))
                .order_by(TranscriptSegment.call_id, TranscriptSegment.seq)
            )
            for segment in rows:
                segments.setdefault(segment.call_id, []).append(segment)
        chunk: list[bytes] = []
        for call in page.calls:
            if fmt == "csv":
                if lines:
                    chunk.extend(_csv_row(line(call.call_sid, s).values()).encode() for s in segments.get(call.id, []))
                else:
                    chunk.append(_csv_row(summary(call).values()).encode())
            else:
                item = summary(call)
                if lines:
                    item["transcript"] = [line(None, s) for s in segments.get(call.id, [])]
                chunk.append((b"" if first else b",") + _json(item))
                first = False
        session.expunge_all()  # keep memory flat across pages
        if chunk:
            yield b"".join(chunk)
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    if fmt != "csv":
        yield b"]"
