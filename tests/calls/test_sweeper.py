"""Orphaned calls (lease expired, no stream came back) are archived once, whichever node sweeps."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import pytest
from sqlalchemy import func, select

from app.archive.models import Call, TranscriptSegment
from app.calls.archiving import archive_live_call
from app.calls.live import line_to_dict
from app.calls.sweeper import sweep_once
from app.core.bridge import TranscriptLine
from app.main import build_runtime
from app.runtime import Runtime
from tests.support import close_runtime, make_settings

pytestmark = [pytest.mark.asyncio, pytest.mark.redis, pytest.mark.postgres]


async def orphan(rt: Runtime, sid: str, lines: list[TranscriptLine]) -> None:
    """What a node that died mid-call leaves in Redis: state, lines, and a lease nobody renews."""
    now = int(time.time() * 1000)
    await rt.call_store.put_meta(sid, {"call_sid": sid, "direction": "inbound", "started_at_ms": now - 60_000})
    for line in lines:
        await rt.call_store.put_line(sid, f"000001-{line.seq:06d}", line_to_dict(line))
    epoch, _ = await rt.call_store.acquire_lease(
        sid, node="dead-node", ttl_ms=5000, now_ms=now - 120_000, takeover=False
    )
    assert epoch > 0
    await rt.call_store.release_lease(sid, holder=f"dead-node:{epoch}")  # as if its TTL ran out


async def count(rt: Runtime, sid: str) -> tuple[int, int]:
    async with rt.sessionmaker() as session:
        calls = await session.scalar(select(func.count()).select_from(Call).where(Call.call_sid == sid))
        segments = await session.scalar(
            select(func.count()).select_from(TranscriptSegment).join(Call).where(Call.call_sid == sid)
        )
    return int(calls or 0), int(segments or 0)


async def test_two_nodes_sweeping_archive_an_orphan_exactly_once(
    tmp_path: Path, redis_url: str, postgres_url: str
) -> None:
    settings = make_settings(
        tmp_path, realtime_url="ws://127.0.0.1:9/v1", redis_url=redis_url, database_url=postgres_url
    )
    node_a, node_b = build_runtime(settings), build_runtime(settings)
    sid = "CA" + uuid.uuid4().hex
    lines = [
        TranscriptLine(1, "agent", "Thank you for calling.", 100),
        TranscriptLine(2, "caller", "Hi there.", 3000),
        TranscriptLine(3, "agent", "How can I help?", 4500, interrupted=True),
    ]
    try:
        await orphan(node_a, sid, lines)
        later = int(time.time() * 1000) + 60_000  # past the orphan grace
        swept = await asyncio.gather(sweep_once(node_a, now_ms=later), sweep_once(node_b, now_ms=later))
        # one node held the lock and archived it (with any orphans other tests left in this Redis)
        assert [sid in s for s in sorted(swept, key=len)] == [False, True] and min(map(len, swept)) == 0
        assert await count(node_a, sid) == (1, 3)
        assert sid not in await sweep_once(node_b, now_ms=later + 60_000)  # nothing left of it to sweep
        # Archiving again (a late node, a retried sweep) yields no second copy.
        assert await archive_live_call(node_b, sid, status="orphaned", end_reason="again", lines=lines) is False
        assert await count(node_b, sid) == (1, 3)
        async with node_a.sessionmaker() as session:
            call = await session.scalar(select(Call).where(Call.call_sid == sid))
        assert call is not None and call.status == "orphaned" and call.end_reason == "stream lost; lease expired"
    finally:
        await close_runtime(node_a, node_b)


async def test_a_call_with_a_live_lease_is_not_swept(tmp_path: Path, redis_url: str) -> None:
    settings = make_settings(tmp_path, realtime_url="ws://127.0.0.1:9/v1", redis_url=redis_url)
    rt = build_runtime(settings)
    sid = "CA" + uuid.uuid4().hex
    try:
        now = int(time.time() * 1000)
        await rt.call_store.put_meta(sid, {"call_sid": sid})
        await rt.call_store.acquire_lease(sid, node="alive", ttl_ms=60_000, now_ms=now - 120_000, takeover=False)
        assert sid not in await sweep_once(rt, now_ms=now + 60_000)
        assert await count(rt, sid) == (0, 0)
    finally:
        await close_runtime(rt)


async def test_what_twilio_and_the_model_really_send_is_archived_on_postgresql(
    tmp_path: Path, redis_url: str, postgres_url: str
) -> None:
    """A SIP caller, a long end_call reason and a long tool call id fit their columns; a value past even
    those is cut, never the archive."""
    settings = make_settings(
        tmp_path, realtime_url="ws://127.0.0.1:9/v1", redis_url=redis_url, database_url=postgres_url
    )
    rt = build_runtime(settings)
    sid = "CA" + uuid.uuid4().hex
    sip = "sip:alice.longname@customer-pbx.example.sip.twilio.com"
    reason = "agent hung up: " + "the caller confirmed the appointment and asked nothing else; " * 8
    try:
        await rt.call_store.put_meta(sid, {"call_sid": sid, "direction": "inbound", "from": sip, "to": "x" * 400,
                                           "started_at_ms": int(time.time() * 1000)})  # fmt: skip
        await rt.call_store.put_event(sid, "000001-000001", {"kind": "tool_call", "offset_ms": 10,
                                      "at": "2026-12-02T08:00:00+00:00", "detail": {"name": "end_call",
                                      "call_id": "call_" + "z" * 150, "arguments": {"reason": reason}}})  # fmt: skip
        assert await archive_live_call(rt, sid, status="completed", end_reason=reason) is True
        async with rt.sessionmaker() as session:
            call = await session.scalar(select(Call).where(Call.call_sid == sid))
    finally:
        await close_runtime(rt)
    assert call is not None
    assert call.from_number == sip and call.end_reason == reason
    assert call.to_number is not None and len(call.to_number) == 255 and call.to_number.endswith("…")


async def test_a_call_that_cannot_be_archived_is_passed_over_and_counted_and_the_rest_are_archived(
    tmp_path: Path, redis_url: str, postgres_url: str
) -> None:
    settings = make_settings(
        tmp_path, realtime_url="ws://127.0.0.1:9/v1", redis_url=redis_url, database_url=postgres_url
    )
    rt = build_runtime(settings)
    broken, fine = "CA" + uuid.uuid4().hex, "CA" + uuid.uuid4().hex
    try:
        await orphan(rt, broken, [])
        await orphan(rt, fine, [TranscriptLine(1, "agent", "Hello.", 100)])
        # A value no column can take: the start time is not a number (what a corrupt write could leave).
        await rt.call_store.put_meta(broken, {"started_at_ms": "not-a-time"})
        later = int(time.time() * 1000) + 60_000
        swept = await sweep_once(rt, now_ms=later)
        failures = rt.metrics.orphan_archive_failures._value.get()
        assert await count(rt, fine) == (1, 1)
        assert fine in swept and broken not in swept
        assert failures >= 1
    finally:
        await rt.call_store.finish(broken)  # no later sweep (of any test's server) trips on it again
        await close_runtime(rt)
