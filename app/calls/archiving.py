"""Archiving a call from its live state in Redis (merged with what the process still holds)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import structlog
from redis.exceptions import RedisError

from app.archive.redaction import redact_values
from app.archive.service import CallEventRecord, CallRecord, archive_call
from app.calls.live import line_from_dict
from app.core.bridge import TranscriptLine
from app.runtime import Runtime

log = structlog.get_logger()


def _identity(line: TranscriptLine) -> str:
    """The same line from Redis and from memory: OpenAI item ids are unique per call."""
    return line.item_id or f"{line.speaker}|{line.offset_ms}|{line.text}"


def event_to_dict(event: CallEventRecord) -> dict[str, Any]:
    return {"kind": event.kind, "detail": event.detail, "offset_ms": event.offset_ms, "at": event.at.isoformat()}


def event_from_dict(data: dict[str, Any]) -> CallEventRecord:
    return CallEventRecord(
        kind=str(data["kind"]),
        detail=dict(data.get("detail") or {}),
        offset_ms=data.get("offset_ms"),
        at=datetime.fromisoformat(str(data["at"])),
    )


async def archive_live_call(
    rt: Runtime,
    call_sid: str,
    *,
    status: str,
    end_reason: str,
    lines: Iterable[TranscriptLine] = (),
    events: dict[str, CallEventRecord] | None = None,
    usage: dict[str, Any] | None = None,
) -> bool:
    """Archive once: Redis holds every node's part of the call, memory what may not have landed yet.

    Returns False when the call was already archived (by another node or the sweeper)."""
    store = rt.call_store
    meta: dict[str, Any] = {}
    stored_lines: list[dict[str, Any]] = []
    stored_events: dict[str, dict[str, Any]] = {}
    try:
        meta = await store.get_meta(call_sid)
        stored_lines = await store.get_lines(call_sid)
        stored_events = await store.get_events_by_key(call_sid)
    except (RedisError, OSError) as exc:
        log.warning("archive.live_state_unavailable", call_sid=call_sid, error=repr(exc))
    by_identity = {_identity(line): line for line in map(line_from_dict, stored_lines)}
    for line in lines:
        by_identity[_identity(line)] = line
    ordered = [
        dataclasses.replace(line, seq=seq)
        for seq, line in enumerate(sorted(by_identity.values(), key=lambda line: (line.offset_ms, line.seq)), start=1)
    ]
    redact = rt.redact
    if redact is not None:  # lines (and events) that never reached Redis are still the originals
        ordered = [dataclasses.replace(line, text=redact(line.text)) for line in ordered]
        end_reason = redact(end_reason)
    cost: int | None = None
    try:
        cost = await rt.budget.ledger.call_total(call_sid)
    except (RedisError, OSError) as exc:
        log.warning("archive.cost_unavailable", call_sid=call_sid, error=repr(exc))
    campaign = meta.get("campaign_id")
    merged_events = {key: event_from_dict(d) for key, d in stored_events.items()}
    merged_events.update(events or {})
    if redact is not None:
        merged_events = {
            key: dataclasses.replace(e, detail=redact_values(e.detail, redact)) for key, e in merged_events.items()
        }
    started = meta.get("started_at_ms")
    record = CallRecord(
        call_sid=call_sid,
        stream_sid=meta.get("stream_sid"),
        direction=str(meta.get("direction") or "inbound"),
        from_number=meta.get("from"),
        to_number=meta.get("to"),
        status=status,
        end_reason=end_reason,
        started_at=datetime.fromtimestamp(started / 1000, UTC) if started else datetime.now(UTC),
        ended_at=datetime.now(UTC),
        usage=usage,
        lines=ordered,
        events=sorted(merged_events.values(), key=lambda e: e.at),
        campaign_id=int(campaign) if campaign else None,
        cost_micros=cost,
        price_version=rt.budget.prices.version,
        redacted=redact is not None,
    )
    archived = await archive_call(rt.sessionmaker, record, post_call=rt.settings.post_call_results)
    if archived and rt.post_call is not None:
        rt.post_call.wake()  # this node looks at once (the others at their next poll)
    try:
        await store.finish(call_sid)
    except (RedisError, OSError) as exc:
        log.warning("archive.finish_failed", call_sid=call_sid, error=repr(exc))
    return archived
