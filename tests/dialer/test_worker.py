"""Two dialer workers on PostgreSQL against respx-mocked Twilio: each due contact dialed once per
attempt, limits honoured, no-answers retried, nothing outside the calling window."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs

import httpx
import pytest
import respx
from sqlalchemy import func, select

from app.dialer.contacts_import import parse_contacts_json
from app.dialer.models import Attempt, Campaign, Contact, DialDecisionRecord
from app.dialer.outcomes import record_status
from app.dialer.policy import Outcome
from app.dialer.service import import_contacts
from app.dialer.worker import CallsPerSecond, Dialer, placement_failure
from app.main import build_runtime
from app.runtime import Runtime
from tests.support import ACCOUNT_SID, TWILIO_API, close_runtime, make_settings

pytestmark = [pytest.mark.asyncio, pytest.mark.postgres, pytest.mark.redis]

# 2026-07-01 16:00Z: 12:00 in New York, 09:00 in Los Angeles: inside every window used below.
NOON_EAST = datetime(2026, 7, 1, 16, 0, tzinfo=UTC)


class RecordedLimiter(CallsPerSecond):
    """The real Redis limiter, noting the second each call was admitted in (what the limit is about)."""

    def __init__(self, rt: Runtime, admitted: list[int]) -> None:
        super().__init__(rt)
        self.admitted = admitted

    async def acquire(self, campaign_id: int, rate: float) -> int:
        second = await super().acquire(campaign_id, rate)
        self.admitted.append(second)
        return second


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


async def seed(
    rt: Runtime, *, contacts: int, concurrency: int, cps: float, imported_at: datetime = NOON_EAST - timedelta(hours=1)
) -> int:
    """A running campaign with contacts spread over New York and Los Angeles numbers."""
    async with rt.sessionmaker() as session:
        campaign = Campaign(
            name=f"load {uuid.uuid4().hex[:6]}", purpose="emergency", subject=f"s-{uuid.uuid4().hex}", caller_id="+12125550100",
            status="running", max_attempts=2, retry_spacing_min=60, daily_attempt_limit=3,
            concurrency=concurrency, calls_per_second=cps, created_at=NOON_EAST, updated_at=NOON_EAST,
        )  # fmt: skip
        session.add(campaign)
        await session.flush()
        base = uuid.uuid4().int % 9000 + 1000
        items = [
            {"phone": f"+1{'212' if i % 2 else '415'}{200 + (base + i // 10000) % 700}{i % 10000:04d}"}
            for i in range(contacts)
        ]
        report = parse_contacts_json(items, now=NOON_EAST)
        assert report.rejected == 0, report.errors[:3]
        await import_contacts(session, campaign=campaign, rows=report.rows, now=imported_at)
        await session.commit()
        return campaign.id


async def test_two_workers_place_each_due_contact_once_within_the_limits(
    tmp_path: Path, redis_url: str, postgres_url: str
) -> None:
    settings = make_settings(
        tmp_path, realtime_url="ws://127.0.0.1:9/v1", redis_url=redis_url, database_url=postgres_url
    )
    rt_a, rt_b = build_runtime(settings), build_runtime(settings)
    cps, concurrency, total = 100.0, 400, 1000
    placed: list[tuple[float, str]] = []
    in_flight = 0
    peak = 0

    def twilio_create(request: httpx.Request) -> httpx.Response:
        form = parse_qs(request.content.decode())
        placed.append((time.time(), form["To"][0]))
        return httpx.Response(201, json={"sid": "CA" + uuid.uuid4().hex, "status": "queued", "to": form["To"][0]})

    try:
        campaign_id = await seed(rt_a, contacts=total, concurrency=concurrency, cps=cps)
        clock = Clock(NOON_EAST)
        workers = [Dialer(rt_a, clock=clock, batch=100), Dialer(rt_b, clock=clock, batch=100)]
        admitted: list[int] = []
        for worker, rt in zip(workers, (rt_a, rt_b), strict=True):
            worker.cps = RecordedLimiter(rt, admitted)  # both share one Redis-backed limit
        with respx.mock(assert_all_called=False) as mock:
            mock.post(f"{TWILIO_API}/2010-04-01/Accounts/{ACCOUNT_SID}/Calls.json").mock(side_effect=twilio_create)

            async def drain() -> None:
                nonlocal in_flight, peak
                while True:
                    handled = await asyncio.gather(*(w.run_once() for w in workers))
                    async with rt_a.sessionmaker() as session:
                        active = await session.scalar(
                            select(func.count())
                            .select_from(Attempt)
                            .where(Attempt.campaign_id == campaign_id, Attempt.ended_at.is_(None))
                        )
                    peak = max(peak, int(active or 0))
                    if sum(handled) == 0:
                        break
                    # Calls end: every third is not answered (retried later), the rest complete.
                    async with rt_a.sessionmaker() as session:
                        open_attempts = list(
                            await session.scalars(
                                select(Attempt).where(Attempt.campaign_id == campaign_id, Attempt.ended_at.is_(None))
                            )
                        )
                        for attempt in open_attempts:
                            status = "no-answer" if attempt.contact_id % 3 == 0 else "completed"
                            await record_status(
                                session, attempt=attempt, status=status, answered_by=None, now=clock.now
                            )
                        await session.commit()

            await drain()
            first_round = len(placed)
            clock.now = NOON_EAST + timedelta(minutes=61)  # past the retry spacing
            await drain()
        async with rt_a.sessionmaker() as session:
            attempts = list(await session.scalars(select(Attempt).where(Attempt.campaign_id == campaign_id)))
            contacts = list(await session.scalars(select(Contact).where(Contact.campaign_id == campaign_id)))
            decisions = await session.scalar(
                select(func.count())
                .select_from(DialDecisionRecord)
                .where(DialDecisionRecord.campaign_id == campaign_id)
            )
    finally:
        await close_runtime(rt_a, rt_b)

    assert first_round == total  # every due contact dialed once in the first round
    per_contact = Counter(a.contact_id for a in attempts)
    no_answer = {c.id for c in contacts if c.id % 3 == 0}
    assert all(per_contact[c.id] == (2 if c.id in no_answer else 1) for c in contacts)  # retried once, per campaign
    assert len(placed) == len(attempts) == total + len(no_answer)
    assert peak <= concurrency
    per_second = Counter(admitted)  # two workers, one shared limit
    assert len(admitted) == len(placed) and max(per_second.values()) <= cps
    assert decisions == len(attempts)  # every dial decision recorded, with its reasons
    assert {c.disposition for c in contacts} <= {"answered", "no-answer"}


async def test_a_fixed_clock_outside_the_window_places_nothing_and_defers_everyone(
    tmp_path: Path, redis_url: str, postgres_url: str
) -> None:
    settings = make_settings(
        tmp_path, realtime_url="ws://127.0.0.1:9/v1", redis_url=redis_url, database_url=postgres_url
    )
    rt = build_runtime(settings)
    try:
        night = datetime(2026, 7, 1, 4, 0, tzinfo=UTC)  # midnight in New York, 21:00 in Los Angeles
        campaign_id = await seed(rt, contacts=50, concurrency=50, cps=50, imported_at=night - timedelta(hours=1))
        with respx.mock(assert_all_called=False) as mock:
            route = mock.post(f"{TWILIO_API}/2010-04-01/Accounts/{ACCOUNT_SID}/Calls.json")
            assert await Dialer(rt, clock=Clock(night)).run_once() == 50
            assert route.call_count == 0
        async with rt.sessionmaker() as session:
            records = list(
                await session.scalars(select(DialDecisionRecord).where(DialDecisionRecord.campaign_id == campaign_id))
            )
            contacts = list(await session.scalars(select(Contact).where(Contact.campaign_id == campaign_id)))
    finally:
        await close_runtime(rt)
    assert {r.outcome for r in records} == {Outcome.defer.value}
    assert all(r.reasons[0]["code"] == "window.federal" for r in records)
    assert all(c.status == "pending" and c.next_attempt_at is not None and c.next_attempt_at > night for c in contacts)


async def test_two_workers_never_exceed_a_small_concurrency_together(
    tmp_path: Path, redis_url: str, postgres_url: str
) -> None:
    settings = make_settings(
        tmp_path, realtime_url="ws://127.0.0.1:9/v1", redis_url=redis_url, database_url=postgres_url
    )
    rt_a, rt_b = build_runtime(settings), build_runtime(settings)
    try:
        campaign_id = await seed(rt_a, contacts=40, concurrency=3, cps=100)
        clock = Clock(NOON_EAST)
        workers = [Dialer(rt_a, clock=clock, batch=50), Dialer(rt_b, clock=clock, batch=50)]
        peaks: list[int] = []
        with respx.mock(assert_all_called=False) as mock:
            mock.post(f"{TWILIO_API}/2010-04-01/Accounts/{ACCOUNT_SID}/Calls.json").respond(
                201, json={"sid": "CA" + "0" * 32, "status": "queued"}
            )
            while True:
                handled = await asyncio.gather(*(w.run_once() for w in workers))
                async with rt_a.sessionmaker() as session:
                    open_attempts = list(
                        await session.scalars(
                            select(Attempt).where(Attempt.campaign_id == campaign_id, Attempt.ended_at.is_(None))
                        )
                    )
                    peaks.append(len(open_attempts))
                    for attempt in open_attempts:
                        await record_status(
                            session, attempt=attempt, status="completed", answered_by=None, now=clock.now
                        )
                    await session.commit()
                if sum(handled) == 0:
                    break
    finally:
        await close_runtime(rt_a, rt_b)
    assert max(peaks) == 3  # both workers together, never more than the campaign allows
    assert sum(peaks) == 40


async def test_refused_call_requests_are_classified_by_what_a_retry_could_change() -> None:
    assert placement_failure(400, 21217) == ("never", "uncallable (twilio 21217)")
    assert placement_failure(400, 13224) == ("never", "uncallable (twilio 13224)")
    assert placement_failure(400, 21215) == ("review", "refused (twilio 21215)")  # geo permissions: ops fix it
    assert placement_failure(401, 20003) == ("review", "refused (twilio 20003)")
    assert placement_failure(429, 20429) == ("retry", "failed (twilio 20429)")
    assert placement_failure(503, None) == ("retry", "failed (twilio 503)")
    assert placement_failure(0, None) == ("retry", "failed (twilio network)")
    assert all(len(placement_failure(s, c)[1]) <= 32 for s, c in [(400, 21217), (400, 99999), (0, None)])


async def test_a_number_twilio_says_can_never_be_called_is_not_retried_and_says_why(
    tmp_path: Path, redis_url: str, postgres_url: str
) -> None:
    settings = make_settings(
        tmp_path, realtime_url="ws://127.0.0.1:9/v1", redis_url=redis_url, database_url=postgres_url
    )
    rt = build_runtime(settings)
    answers = {  # by the last digit of the number dialed
        "0": httpx.Response(
            400, json={"code": 21217, "message": "Phone number does not appear to be valid", "status": 400}
        ),
        "1": httpx.Response(400, json={"code": 21215, "message": "Geo permission", "status": 400}),
        "2": httpx.Response(503, json={"code": 20500, "message": "Internal error", "status": 503}),
    }

    def twilio_create(request: httpx.Request) -> httpx.Response:
        return answers[parse_qs(request.content.decode())["To"][0][-1]]

    try:
        campaign_id = await seed(rt, contacts=3, concurrency=5, cps=50)
        clock = Clock(NOON_EAST)
        dialer = Dialer(rt, clock=clock, batch=10)
        with respx.mock(assert_all_called=False) as mock:
            route = mock.post(f"{TWILIO_API}/2010-04-01/Accounts/{ACCOUNT_SID}/Calls.json")
            route.mock(side_effect=twilio_create)
            while await dialer.run_once():
                pass
            clock.now = NOON_EAST + timedelta(minutes=61)  # past the retry spacing
            while await dialer.run_once():
                pass
        async with rt.sessionmaker() as session:
            contacts = {
                c.phone[-1]: c for c in await session.scalars(select(Contact).where(Contact.campaign_id == campaign_id))
            }
            attempts = Counter(
                c.phone[-1]
                for c in await session.scalars(select(Contact).join(Attempt, Attempt.contact_id == Contact.id)
                                               .where(Attempt.campaign_id == campaign_id))
            )  # fmt: skip
    finally:
        await close_runtime(rt)
    assert (contacts["0"].status, contacts["0"].disposition) == ("done", "uncallable (twilio 21217)")
    assert (contacts["1"].status, contacts["1"].disposition) == ("held", "refused (twilio 21215)")
    assert attempts == {"0": 1, "1": 1, "2": 2}  # only the server error was tried again
