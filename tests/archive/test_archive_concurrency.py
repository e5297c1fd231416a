"""Many calls ending at once on the embedded SQLite: every one is archived (none lost to a lock)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from app.archive.models import Call, TranscriptSegment
from app.archive.service import CallRecord, archive_call
from app.core.bridge import TranscriptLine
from app.db import make_engine, make_sessionmaker
from tests.support import make_settings

pytestmark = pytest.mark.asyncio
CALLS = 60


async def test_sixty_calls_archived_at_once_on_sqlite_are_all_kept(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, realtime_url="ws://127.0.0.1:9/v1")
    engine = make_engine(settings.effective_database_url)
    sessionmaker = make_sessionmaker(engine)
    start = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)
    lines = [TranscriptLine(i, "caller" if i % 2 else "agent", f"line {i} of the call", i * 1000, False, f"it{i}")
             for i in range(1, 21)]  # fmt: skip

    def record(n: int) -> CallRecord:
        return CallRecord(call_sid=f"CAconc{n:04d}", direction="inbound", started_at=start,
                          ended_at=start + timedelta(minutes=1), lines=lines)  # fmt: skip

    try:
        results = await asyncio.gather(*(archive_call(sessionmaker, record(n)) for n in range(CALLS)))
        again = await asyncio.gather(*(archive_call(sessionmaker, record(n)) for n in range(5)))
        async with sessionmaker() as session:
            calls = await session.scalar(select(func.count()).select_from(Call))
            segments = await session.scalar(select(func.count()).select_from(TranscriptSegment))
    finally:
        await engine.dispose()
    assert results == [True] * CALLS and again == [False] * 5  # a second archive is "already archived"
    assert (calls, segments) == (CALLS, CALLS * 20)
