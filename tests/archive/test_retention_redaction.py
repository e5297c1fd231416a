"""Transcript retention (the scheduled purge) and redaction before anything is stored."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from redis.asyncio import Redis
from sqlalchemy import func, select

from app.adapters.call_store import CallStore
from app.archive.models import AuditEntry, Call, TranscriptSegment
from app.archive.retention import purge_transcripts, run_retention
from app.archive.search import CallFilter, search_calls
from app.archive.service import CallRecord, archive_call
from app.core.bridge import TranscriptLine
from app.db import make_engine, make_sessionmaker
from app.emulator.config import EmulatorConfig
from app.emulator.server import RealtimeEmulator
from tests.support import (
    TwilioStream,
    agent_turn_played,
    archived,
    make_settings,
    open_call,
    say_turn,
    serve,
)

pytestmark = pytest.mark.asyncio
NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


def record(sid: str, started: datetime, text: str) -> CallRecord:
    lines = [TranscriptLine(1, "caller", text, 0, False, "i1"), TranscriptLine(2, "agent", "Noted.", 900, False, "i2")]
    return CallRecord(call_sid=sid, direction="inbound", started_at=started, ended_at=started + timedelta(minutes=1),
                      lines=lines)  # fmt: skip


async def test_transcripts_past_retention_are_purged_and_the_calls_kept(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, realtime_url="ws://127.0.0.1:9/v1")
    engine = make_engine(settings.effective_database_url)
    sessionmaker = make_sessionmaker(engine)
    try:
        await archive_call(sessionmaker, record("CAold", NOW - timedelta(days=31), "my old appointment"))
        await archive_call(sessionmaker, record("CAedge", NOW - timedelta(days=30), "an edge appointment"))
        await archive_call(sessionmaker, record("CAnew", NOW - timedelta(days=2), "a new appointment"))
        assert await purge_transcripts(sessionmaker, now=NOW, days=30) == 1
        assert await purge_transcripts(sessionmaker, now=NOW, days=30) == 0  # nothing left to purge
        async with sessionmaker() as session:
            calls = {c.call_sid: c for c in await session.scalars(select(Call))}
            counts = dict(
                (await session.execute(
                    select(Call.call_sid, func.count(TranscriptSegment.id))
                    .join(TranscriptSegment, TranscriptSegment.call_id == Call.id, isouter=True)
                    .group_by(Call.call_sid)
                )).all()  # type: ignore[arg-type]
            )  # fmt: skip
            found = await search_calls(session, CallFilter(q="appointment"))
            audits = list(await session.scalars(select(AuditEntry).where(AuditEntry.action == "retention_purge")))
        assert set(calls) == {"CAold", "CAedge", "CAnew"}  # the calls stay
        assert counts == {"CAold": 0, "CAedge": 2, "CAnew": 2}  # the 30-day-old one is exactly at the cutoff
        assert calls["CAold"].transcript_purged_at is not None and calls["CAnew"].transcript_purged_at is None
        assert sorted(c.call_sid for c in found.calls) == ["CAedge", "CAnew"]  # the search index forgot it too
        assert [(a.detail["calls"], a.detail["retention_days"], a.via) for a in audits] == [(1, 30, "job")]
    finally:
        await engine.dispose()


async def test_the_scheduled_job_survives_a_failed_pass_and_purges_on_the_next(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, realtime_url="ws://127.0.0.1:9/v1")
    engine = make_engine(settings.effective_database_url)
    sessionmaker = make_sessionmaker(engine)
    await archive_call(sessionmaker, record("CAold", NOW - timedelta(days=400), "an old call"))
    passes: asyncio.Queue[int | None] = asyncio.Queue()
    ticks = iter([None, NOW])

    def clock() -> datetime:
        now = next(ticks, NOW)
        if now is None:
            raise OSError("the database went away")  # the first pass fails
        return now

    job = asyncio.create_task(
        run_retention(sessionmaker, days=365, interval_s=0, clock=clock, on_pass=passes.put_nowait)
    )
    try:
        assert await asyncio.wait_for(passes.get(), 10) is None
        assert await asyncio.wait_for(passes.get(), 10) == 1
        assert await asyncio.wait_for(passes.get(), 10) == 0
    finally:
        job.cancel()
        await asyncio.gather(job, return_exceptions=True)
        await engine.dispose()


CARD_SENTENCE = "My card number is 4111 1111 1111 1111 and my social is 123-45-6789"


async def test_with_redaction_on_the_original_is_stored_nowhere(tmp_path: Path, redis_url: str) -> None:
    config = EmulatorConfig(tts="synthetic", transcripts=[CARD_SENTENCE], reply_text=lambda _: "Thank you.")
    async with RealtimeEmulator(config) as emulator:
        settings = make_settings(tmp_path, realtime_url=emulator.url, redis_url=redis_url,
                                 redact_transcripts="card, ssn")  # fmt: skip
        redis = Redis.from_url(redis_url)
        store = CallStore(redis)
        try:
            async with serve(settings) as base:
                sid, token = await open_call(base, uuid.uuid4().int % (1 << 96))
                async with TwilioStream.open(base, call_sid=sid, token=token, auto_ack=True) as tw:
                    session = await emulator.wait_for_session(0)
                    await agent_turn_played(tw, session, 0)
                    await say_turn(tw)
                    await agent_turn_played(tw, session, 1)
                    live_lines = [line["text"] for line in await store.get_lines(sid)]
                    await tw.stop()
                    await tw.wait_closed()
                record_ = await archived(base, settings, sid)
        finally:
            await redis.aclose()
    redacted = "My card number is [card] and my social is [ssn]"
    assert redacted in live_lines  # Redis, while the call went on
    assert [s["text"] for s in record_["transcript"] if s["speaker"] == "caller"] == [redacted]
    assert record_["redacted"] is True
    assert all("4111" not in text and "6789" not in text for text in live_lines)
    # and nothing else the archive kept carries it
    assert "4111" not in str(record_) and "123-45-6789" not in str(record_)


async def test_an_unknown_redaction_pattern_is_refused_at_startup(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown redaction pattern"):
        make_settings(tmp_path, realtime_url="ws://127.0.0.1:9/v1", redact_transcripts="cards")
