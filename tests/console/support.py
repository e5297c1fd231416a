"""Seeding and sign-in helpers for the console tests: calls archived through the real archive
service, keys made the way the CLI makes them, and a login that goes through the real form."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select, update

from app.adapters.call_store import CallStore
from app.archive.models import AuditEntry
from app.archive.service import CallEventRecord, CallRecord, archive_call
from app.auth.models import ApiKey
from app.core.bridge import TranscriptLine
from app.db import make_engine, make_sessionmaker
from app.settings import Settings
from tests.support import make_settings

UNUSED_REALTIME = "ws://127.0.0.1:9/v1"
LOCAL_BASE = "http://127.0.0.1:8000"  # the console's own base: plain http, so cookies are not Secure

BOOKING_SID = "CA" + "b0" * 16
BILLING_SID = "CA" + "b1" * 16
TRANSFER_SID = "CA" + "b2" * 16
CUT_OFF_TEXT = "Tuesday works. We have openings at nine and at"
STARTED = datetime(2026, 3, 2, 15, 4, 5, tzinfo=UTC)


def console_settings(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {"public_base_url": LOCAL_BASE, "realtime_url": UNUSED_REALTIME}
    values.update(overrides)
    return make_settings(tmp_path, **values)


def _latencies(at: datetime, *ms: int) -> list[CallEventRecord]:
    return [CallEventRecord("turn_latency", {"ms": value}, 1000 * (i + 1), at) for i, value in enumerate(ms)]


def _stages(at: datetime, *stages: tuple[str, int, int]) -> list[CallEventRecord]:
    """Two turns' latency stages (stage, turn 1 ms, turn 2 ms), as the cascaded engine records them."""
    return [
        CallEventRecord("turn_stage", {"turn": turn, "stage": stage, "ms": ms}, 1000 * turn, at)
        for stage, *values in stages
        for turn, ms in enumerate(values, start=1)
    ]


async def seed_calls(settings: Settings) -> None:
    """Three archived calls: a booking with a barge-in (the agent's second line was cut off), a billing
    question whose caller typed markup, and an outbound call transferred to a person."""
    engine = make_engine(settings.effective_database_url)
    sessions = make_sessionmaker(engine)
    try:
        at = STARTED
        await archive_call(
            sessions,
            CallRecord(
                call_sid=BOOKING_SID,
                direction="inbound",
                started_at=at,
                ended_at=at + timedelta(seconds=74, milliseconds=500),
                from_number="+15005550006",
                to_number="+15005550001",
                cost_micros=123_400,
                price_version="2026-01-list",
                lines=[
                    TranscriptLine(1, "agent", "Thank you for calling Acme Dental. How can I help?", 40),
                    TranscriptLine(2, "caller", "I would like to book a cleaning next week.", 4_200),
                    TranscriptLine(3, "agent", CUT_OFF_TEXT, 7_000, interrupted=True),
                    TranscriptLine(4, "caller", "Actually, Wednesday afternoon is better.", 9_100),
                    TranscriptLine(5, "agent", "Wednesday at two o'clock is booked for your cleaning.", 61_500),
                ],
                events=[
                    *_latencies(at, 420, 380, 900),
                    CallEventRecord("barge_in", {}, 9_000, at),
                    *_stages(
                        at,
                        ("transcript", 300, 320),
                        ("chat_first_token", 650, 700),
                        ("speech_first_bytes", 860, 900),
                        ("first_audio", 870, 905),
                    ),
                ],
            ),
        )
        at = STARTED + timedelta(hours=1)
        await archive_call(
            sessions,
            CallRecord(
                call_sid=BILLING_SID,
                direction="inbound",
                started_at=at,
                ended_at=at + timedelta(seconds=20),
                from_number="+15005550007",
                to_number="+15005550001",
                cost_micros=40_000,
                price_version="2026-01-list",
                lines=[
                    TranscriptLine(1, "agent", "Thank you for calling Acme Dental.", 40),
                    TranscriptLine(2, "caller", "Why is my <script>alert(1)</script> bill so high?", 3_000),
                ],
                events=_latencies(at, 510),
            ),
        )
        at = STARTED + timedelta(hours=2)
        await archive_call(
            sessions,
            CallRecord(
                call_sid=TRANSFER_SID,
                direction="outbound",
                started_at=at,
                ended_at=at + timedelta(seconds=30),
                from_number="+15005550001",
                to_number="+15005550008",
                lines=[TranscriptLine(1, "caller", "Can I talk to a person please?", 2_000)],
                events=[
                    CallEventRecord(
                        "call_ending", {"action": "TransferCall", "reason": "asked for a person"}, 5_000, at
                    )
                ],
            ),
        )
    finally:
        await engine.dispose()


CSRF_INPUT = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_token(html: str) -> str:
    match = CSRF_INPUT.search(html)
    assert match is not None, html
    return match.group(1)


async def sign_in(client: httpx.AsyncClient, key: str) -> httpx.Response:
    """Through the real form: fetch it (which sets the CSRF cookie), post the key with its token."""
    form = await client.get("/console/login")
    assert form.status_code == 200, form.text
    return await client.post(
        "/console/login", data={"api_key": key, "csrf_token": csrf_token(form.text), "next": "/console"}
    )


@dataclass(frozen=True, slots=True)
class Audit:
    key_id: str | None
    role: str | None
    action: str
    target: str | None
    detail: dict[str, Any]
    via: str


async def audit_log(settings: Settings) -> list[Audit]:
    engine = make_engine(settings.effective_database_url)
    try:
        async with make_sessionmaker(engine)() as session:
            rows = await session.scalars(select(AuditEntry).order_by(AuditEntry.id))
            return [Audit(r.key_id, r.role, r.action, r.target, r.detail, r.via) for r in rows]
    finally:
        await engine.dispose()


async def revoke(settings: Settings, key: str) -> None:
    key_id = key.split("_")[1]
    engine = make_engine(settings.effective_database_url)
    try:
        async with make_sessionmaker(engine)() as session:
            await session.execute(update(ApiKey).where(ApiKey.key_id == key_id).values(revoked_at=datetime.now(UTC)))
            await session.commit()
    finally:
        await engine.dispose()


async def forget(store: CallStore, call_sid: str) -> None:
    """Take a test's live call out of Redis altogether, so no other test's sweeper archives it."""
    await store.redis.zrem(store.live_key, call_sid)
    await store.redis.delete(*(store.key(call_sid, part) for part in ("meta", "lines", "events", "epoch", "lease")))


async def sign_in_page(page: Any, base: str, key: str) -> None:
    """Sign in through the console's form in a browser page (playwright)."""
    await page.goto(f"{base}/console/login")
    await page.get_by_label("API key").fill(key)
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url(f"{base}/console")
