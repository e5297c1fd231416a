"""The supervisor API on PostgreSQL (and the embedded SQLite): every filter, full-text search, cursor pages, sorting, roles,
exports (JSON, CSV, streamed) and the audit log of every read.

Calls are archived through the real archive path (app.archive.service.archive_call) into a time window
of their own, with a word no other test uses, so the shared database's other calls never interfere.
"""

from __future__ import annotations

import csv
import io
import random
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from sqlalchemy import select

from app.archive import review
from app.archive.models import AuditEntry
from app.archive.service import CallEventRecord, CallRecord, archive_call
from app.auth.keys import Role
from app.budget.models import BudgetEnforcement
from app.core.bridge import TranscriptLine
from app.db import make_engine, make_sessionmaker
from app.dialer.models import Attempt, Campaign, Contact, DialDecisionRecord
from tests.support import key_for, make_settings, serve

pytestmark = [pytest.mark.asyncio]


@dataclass
class World:
    api: httpx.AsyncClient
    database_url: str
    window: dict[str, str]  # started_from / started_to around this test's calls
    word: str  # a word only this test's calls say
    sids: dict[str, str]  # name -> call sid
    keys: dict[str, str]
    campaign: int

    async def get(self, path: str, role: str = "supervisor", **params: Any) -> httpx.Response:
        merged = {**self.window, **params} if path == "/api/v1/calls" or path.endswith("/export") else params
        return await self.api.get(path, params=merged, headers={"Authorization": f"Bearer {self.keys[role]}"})

    async def found(self, **params: Any) -> list[str]:
        response = await self.get("/api/v1/calls", limit=200, **params)
        assert response.status_code == 200, response.text
        names = {sid: name for name, sid in self.sids.items()}
        return sorted(names[item["call_sid"]] for item in response.json()["items"])


def line(seq: int, speaker: str, text: str, offset_ms: int, interrupted: bool = False) -> TranscriptLine:
    return TranscriptLine(seq, speaker, text, offset_ms, interrupted, f"item_{seq}")


def event(event_kind: str, at: datetime, offset_ms: int | None = None, **detail: Any) -> CallEventRecord:
    return CallEventRecord(event_kind, detail, offset_ms, at)


async def seed(database_url: str, base: datetime, word: str) -> tuple[dict[str, str], int]:
    engine = make_engine(database_url)
    sessionmaker = make_sessionmaker(engine)
    n = uuid.uuid4().hex[:10]
    sids = {name: f"CA{name}{uuid.uuid4().hex}" for name in ("book", "transfer", "optout", "failed", "long")}
    async with sessionmaker() as session:
        now = datetime.now(UTC)
        campaign = Campaign(name=f"review {n}", purpose="informational", subject="reminders", caller_id="+12125550000",
                            created_at=now, updated_at=now)  # fmt: skip
        session.add(campaign)
        await session.flush()
        contact = Contact(campaign_id=campaign.id, phone="+13105550102", location={"kind": "geographic"},
                          created_at=now)  # fmt: skip
        session.add(contact)
        await session.flush()
        attempt = Attempt(campaign_id=campaign.id, contact_id=contact.id, phone=contact.phone, subject="reminders",
                          purpose="informational", placed_at=base, call_sid=sids["transfer"], status="completed")  # fmt: skip
        session.add(attempt)
        await session.flush()
        session.add(DialDecisionRecord(campaign_id=campaign.id, contact_id=contact.id, phone=contact.phone,
                                       decided_at=base, outcome="allow", reasons=[{"rule": "window.federal",
                                       "detail": "10:00 in America/Los_Angeles"}], attempt_id=attempt.id))  # fmt: skip
        session.add(BudgetEnforcement(at=base, day=base.date(), action="wrap_up", cap="per_call", spent_micros=1_900_000,
                                      limit_micros=2_000_000, call_sid=sids["long"], reason="wrap up: $1.90 of $2.00",
                                      price_version="2026-list"))  # fmt: skip
        await session.commit()
        campaign_id = campaign.id

    def record(name: str, minute: int, **kw: Any) -> CallRecord:
        started = base + timedelta(minutes=minute)
        return CallRecord(call_sid=sids[name], started_at=started, ended_at=started + timedelta(seconds=kw.pop("secs")),
                          **kw)  # fmt: skip

    at = base
    records = [
        record("book", 0, secs=60, direction="inbound", from_number="+12125550101", to_number="+12125550100",
               cost_micros=10_000, lines=[line(1, "agent", "Thanks for calling Acme Dental.", 0),
                                          line(2, "caller", f"I would like booking a cleaning {word}", 3_000),
                                          line(3, "agent", "Sure, Tuesday at nine works for", 6_000, interrupted=True),
                                          line(4, "caller", "Actually Wednesday please", 7_000)],
               events=[event("turn_latency", at, 3_500, ms=300), event("turn_latency", at, 7_600, ms=500),
                       event("cost", at, 9_000, kind="response", micros=4_000, detail={"audio_out": 4_000},
                             prices="2026-list")]),
        record("transfer", 1, secs=120, direction="outbound", from_number="+12125550000", to_number="+13105550102",
               campaign_id=campaign_id, cost_micros=50_000,
               lines=[line(1, "agent", "Hello, this is Acme Dental with a reminder.", 0),
                      line(2, "caller", f"Can I speak to a real person {word}", 4_000)],
               events=[event("tool_called", at, 5_000, name="transfer_to_human", call_id="c1", arguments={"reason": "asked"}),
                       event("call_ending", at, 6_000, action="TransferCall")]),
        record("optout", 2, secs=30, direction="inbound", from_number="+14155550103", to_number="+12125550100",
               cost_micros=2_000, lines=[line(1, "caller", f"Please stop calling me {word}", 1_000)],
               events=[event("opted_out", at, 2_000, source="dtmf")]),
        record("failed", 3, secs=5, direction="inbound", from_number="+14155550104", to_number="+12125550100",
               status="failed", lines=[]),
        record("long", 4, secs=300, direction="outbound", from_number="+12125550000", to_number="+16175550105",
               campaign_id=campaign_id, cost_micros=200_000,
               lines=[line(1, "agent", f"The purple elephant appointment is confirmed {word}", 0)],
               events=[event("budget_wrap_up", at, 290_000, cap="per_call"),
                       event("call_ending", at, 295_000, action="HangUp")]),
    ]  # fmt: skip
    for r in records:
        assert await archive_call(sessionmaker, r)
    await engine.dispose()
    return sids, campaign_id


@pytest_asyncio.fixture(params=["postgresql", "sqlite"])
async def world(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[World]:
    """Each test runs on PostgreSQL (tsvector) and on the embedded SQLite (FTS5)."""
    if request.param == "postgresql":
        database_url = request.getfixturevalue("postgres_url")
    else:
        database_url = f"sqlite+aiosqlite:///{tmp_path / 'review.db'}"
    settings = make_settings(tmp_path, realtime_url="ws://127.0.0.1:9/v1", database_url=database_url)
    postgres_url = settings.effective_database_url
    # A window of its own, decades before any other test's calls (so never among the newest either).
    base = datetime(1950, 1, 1, tzinfo=UTC) + timedelta(days=random.randrange(10_000), microseconds=0)
    word = "zq" + uuid.uuid4().hex[:8]
    sids, campaign = await seed(postgres_url, base, word)
    keys = {
        "supervisor": await key_for(postgres_url, Role.supervisor),
        "admin": await key_for(postgres_url, Role.admin),
        "ops": await key_for(postgres_url, Role.ops),
        "ops+transcripts": await key_for(postgres_url, Role.ops, grants=("transcripts",)),
    }
    window = {"started_from": base.isoformat(), "started_to": (base + timedelta(hours=1)).isoformat()}
    async with serve(settings) as url, httpx.AsyncClient(base_url=url, timeout=30) as api:
        yield World(api, postgres_url, window, word, sids, keys, campaign)


async def test_every_filter(world: World) -> None:
    w = world
    assert await w.found() == ["book", "failed", "long", "optout", "transfer"]
    assert await w.found(direction="outbound") == ["long", "transfer"]
    assert await w.found(number="+13105550102") == ["transfer"]  # the callee's number
    assert await w.found(number="+14155550103") == ["optout"]  # the caller's number
    assert await w.found(campaign_id=w.campaign) == ["long", "transfer"]
    assert await w.found(disposition="transferred") == ["transfer"]
    assert await w.found(disposition=["failed", "budget_ended"]) == ["failed", "long"]
    assert await w.found(disposition="completed") == ["book"]
    assert await w.found(disposition="opted_out") == ["optout"]
    assert await w.found(min_duration_s=60) == ["book", "long", "transfer"]
    assert await w.found(max_duration_s=30) == ["failed", "optout"]
    assert await w.found(min_duration_s=60, max_duration_s=120) == ["book", "transfer"]
    assert await w.found(min_cost_usd=0.01) == ["book", "long", "transfer"]
    assert await w.found(max_cost_usd=0.01) == ["book", "optout"]  # a failed call has no cost: not "cheap"
    assert await w.found(transferred="true") == ["transfer"]
    assert await w.found(transferred="false") == ["book", "failed", "long", "optout"]
    assert await w.found(opted_out="true") == ["optout"]
    # time range: half open, [from, to)
    base = datetime.fromisoformat(w.window["started_from"])
    narrow = {"started_from": (base + timedelta(minutes=1)).isoformat(),
              "started_to": (base + timedelta(minutes=3)).isoformat()}  # fmt: skip
    assert await w.found(**narrow) == ["optout", "transfer"]


async def test_filter_values_are_checked(world: World) -> None:
    w = world
    for params, status in [
        ({"disposition": "lost"}, 400),
        ({"direction": "sideways"}, 422),
        ({"number": "212-555-0101"}, 422),
        ({"min_cost_usd": -1}, 422),
        ({"started_to": w.window["started_from"]}, 400),
    ]:
        response = await w.get("/api/v1/calls", **params)
        assert response.status_code == status, (params, response.text)
        assert response.headers["content-type"] == "application/problem+json"


async def test_summary_carries_the_facts(world: World) -> None:
    w = world
    items = (await w.get("/api/v1/calls", limit=200)).json()["items"]
    book = next(i for i in items if i["call_sid"] == w.sids["book"])
    assert (book["disposition"], book["cost_usd"], book["duration_ms"], book["turns"]) == ("completed", 0.01, 60_000, 2)
    assert (book["latency_p50_ms"], book["latency_p95_ms"]) == (300, 500)
    transfer = next(i for i in items if i["call_sid"] == w.sids["transfer"])
    assert transfer["transferred"] is True and transfer["campaign_id"] == w.campaign


async def test_full_text_search(world: World) -> None:
    w = world
    assert await w.found(q=w.word) == ["book", "long", "optout", "transfer"]
    assert await w.found(q=f"{w.word} cleaning") == ["book"]  # all words, in one line
    assert await w.found(q=f"{w.word} Wednesday") == []  # words in different lines do not match
    assert await w.found(q=f"{w.word} book") == ["book"]  # stemming: "booking" is found by "book"
    assert await w.found(q=f'"purple elephant" {w.word}') == ["long"]
    assert await w.found(q=f'"elephant purple" {w.word}') == []  # a phrase keeps its order
    assert await w.found(q=f"{w.word} -stop") == ["book", "long", "transfer"]
    assert await w.found(q=f"{w.word} OR nothing") == []  # no operators: OR is just a word
    page = (await w.get("/api/v1/calls", q=f"{w.word} cleaning")).json()
    assert [(m["seq"], m["speaker"]) for m in page["items"][0]["matches"]] == [(2, "caller")]
    for bad in ("!!!", "-" + w.word, "x" * 201):
        response = await w.get("/api/v1/calls", q=bad)
        assert response.status_code == 400, bad
        assert response.json()["title"] == "Bad query"


async def test_cursor_pages_visit_every_call_once_in_order(world: World) -> None:
    w = world
    for sort in ("-started_at", "started_at", "duration", "-cost", "cost"):
        seen: list[dict[str, Any]] = []
        cursor = None
        pages = 0
        while True:
            params: dict[str, Any] = {"limit": 2, "sort": sort}
            if cursor:
                params["cursor"] = cursor
            body = (await w.get("/api/v1/calls", **params)).json()
            seen.extend(body["items"])
            pages += 1
            cursor = body["next_cursor"]
            if cursor is None:
                break
        assert pages == 3 and len({i["call_sid"] for i in seen}) == len(seen) == 5, sort
        key = {"started_at": "started_at", "duration": "duration_ms", "cost": "cost_micros"}[sort.lstrip("-")]
        values = [(i[key] if i[key] is not None else -1) for i in seen]
        assert values == sorted(values, reverse=sort.startswith("-")), sort
    first = (await w.get("/api/v1/calls", limit=2, sort="duration")).json()
    other_sort = await w.get("/api/v1/calls", limit=2, sort="cost", cursor=first["next_cursor"])
    assert other_sort.status_code == 400 and "another sort order" in other_sort.json()["detail"]
    assert (await w.get("/api/v1/calls", cursor="not-a-cursor")).status_code == 400
    assert (await w.get("/api/v1/calls", limit=0)).status_code == 422
    assert (await w.get("/api/v1/calls", limit=201)).status_code == 422
    assert (await w.get("/api/v1/calls", sort="name")).status_code == 422
    exact = (await w.get("/api/v1/calls", limit=5)).json()
    assert len(exact["items"]) == 5 and exact["next_cursor"] is None  # a full last page has no next page


async def test_roles(world: World) -> None:
    w = world
    sid = w.sids["book"]
    assert (await w.api.get("/api/v1/calls")).status_code == 401
    # ops: may list and filter, not read what was said
    assert (await w.get("/api/v1/calls", "ops")).status_code == 200
    for path, params in [("/api/v1/calls", {"q": w.word}), (f"/api/v1/calls/{sid}", {}),
                         (f"/api/v1/calls/{sid}/export", {}), ("/api/v1/calls/export", {})]:  # fmt: skip
        denied = await w.get(path, "ops", **params)
        assert denied.status_code == 403, path
        assert "transcripts" in denied.json()["detail"]
        for role in ("ops+transcripts", "supervisor", "admin"):
            assert (await w.get(path, role, **params)).status_code == 200, (path, role)


async def test_one_call_in_full(world: World) -> None:
    w = world
    book = (await w.get(f"/api/v1/calls/{w.sids['book']}")).json()
    assert [(s["seq"], s["speaker"], s["interrupted"]) for s in book["transcript"]] == [
        (1, "agent", False), (2, "caller", False), (3, "agent", True), (4, "caller", False)]  # fmt: skip
    assert book["turn_latencies_ms"] == [300, 500]
    assert book["costs"] == [{"offset_ms": 9_000, "kind": "response", "micros": 4_000,
                              "detail": {"audio_out": 4_000}, "prices": "2026-list"}]  # fmt: skip
    transfer = (await w.get(f"/api/v1/calls/{w.sids['transfer']}")).json()
    assert [t["name"] for t in transfer["tools"]] == ["transfer_to_human"]
    assert transfer["tools"][0]["output"] == "transferred"
    assert [(d["outcome"], d["reasons"][0]["rule"]) for d in transfer["dial_decisions"]] == [
        ("allow", "window.federal")
    ]
    long = (await w.get(f"/api/v1/calls/{w.sids['long']}")).json()
    assert [(b["action"], b["cap"], b["spent_micros"]) for b in long["budget_enforcements"]] == [
        ("wrap_up", "per_call", 1_900_000)]  # fmt: skip
    missing = await w.get("/api/v1/calls/CAnope")
    assert missing.status_code == 404 and missing.headers["content-type"] == "application/problem+json"


async def test_exports(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    w = world
    sid = w.sids["book"]
    as_json = await w.get(f"/api/v1/calls/{sid}/export", format="json")
    assert as_json.headers["content-disposition"] == f'attachment; filename="{sid}.json"'
    detail = (await w.get(f"/api/v1/calls/{sid}")).json()
    assert as_json.json()["transcript"] == detail["transcript"] and as_json.json()["cost_usd"] == 0.01
    as_csv = await w.get(f"/api/v1/calls/{sid}/export", format="csv")
    assert as_csv.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(as_csv.text)))
    assert [(r["seq"], r["speaker"], r["interrupted"]) for r in rows] == [
        ("1", "agent", "False"), ("2", "caller", "False"), ("3", "agent", "True"), ("4", "caller", "False")]  # fmt: skip
    assert rows[1]["text"] == f"I would like booking a cleaning {w.word}"

    # A search result streams in pages of its own: make them small so this one takes several.
    monkeypatch.setattr(review, "EXPORT_PAGE", 2)
    calls_csv = await w.get("/api/v1/calls/export", format="csv", sort="started_at")
    calls = list(csv.DictReader(io.StringIO(calls_csv.text)))
    assert [r["call_sid"] for r in calls] == [w.sids[n] for n in ("book", "transfer", "optout", "failed", "long")]
    assert calls[1]["transferred"] == "True" and calls[0]["cost_usd"] == "0.01"
    lines_csv = await w.get("/api/v1/calls/export", format="csv", lines="true", q=w.word, sort="started_at")
    lines = list(csv.DictReader(io.StringIO(lines_csv.text)))
    assert len(lines) == 4 + 2 + 1 + 1 and lines[0]["call_sid"] == w.sids["book"]
    as_json_lines = (await w.get("/api/v1/calls/export", format="json", lines="true", sort="started_at")).json()
    assert [len(c["transcript"]) for c in as_json_lines] == [4, 2, 1, 0, 1]
    empty = await w.get("/api/v1/calls/export", format="json", q="nothingmatchesthis")
    assert empty.json() == []
    assert (await w.get("/api/v1/calls/export", format="xml")).status_code == 422


async def test_every_read_and_export_is_audited(world: World) -> None:
    w = world
    sid = w.sids["optout"]
    await w.get(f"/api/v1/calls/{sid}", "admin")
    await w.get(f"/api/v1/calls/{sid}/export", "supervisor", format="csv")
    await w.get("/api/v1/calls/export", "ops+transcripts", format="csv", q=w.word)
    await w.get("/api/v1/calls", "supervisor", q=w.word)
    await w.get("/api/v1/calls", "supervisor")  # a list without a phrase shows no transcript: not audited
    await w.get(f"/api/v1/calls/{sid}", "ops")  # refused: nothing was read
    engine = make_engine(w.database_url)
    async with make_sessionmaker(engine)() as session:
        entries = list(await session.scalars(select(AuditEntry).where(
            AuditEntry.key_id.in_([k.split("_")[1] for k in w.keys.values()])).order_by(AuditEntry.id)))  # fmt: skip
    await engine.dispose()
    got = [(e.action, e.role, e.target, e.via) for e in entries]
    assert got == [
        ("read_call", "admin", sid, "api"),
        ("export_call", "supervisor", sid, "api"),
        ("export_search", "ops", None, "api"),
        ("search", "supervisor", None, "api"),
    ]
    assert entries[2].detail["filters"]["q"] == w.word and entries[2].detail["format"] == "csv"
    assert entries[3].detail["results"] == 4
