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
from tests.support import make_settings

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
        assert sorted(len(s) for s in swept) == [0, 1]  # one node held the lock and archived it
        assert await count(node_a, sid) == (1, 3)
        assert await sweep_once(node_b, now_ms=later + 60_000) == []  # nothing left to sweep
        # Archiving again (a late node, a retried sweep) yields no second copy.
        assert await archive_live_call(node_b, sid, status="orphaned", end_reason="again", lines=lines) is False
        assert await count(node_b, sid) == (1, 3)
        async with node_a.sessionmaker() as session:
            call = await session.scalar(select(Call).where(Call.call_sid == sid))
        assert call is not None and call.status == "orphaned" and call.end_reason == "stream lost; lease expired"
    finally:
        for rt in (node_a, node_b):
            await rt.redis.aclose()
            await rt.engine.dispose()
            await rt.twilio.aclose()


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
        await rt.redis.aclose()
        await rt.engine.dispose()
        await rt.twilio.aclose()
