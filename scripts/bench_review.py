#!/usr/bin/env python
"""Supervisor review at scale: full-text search and the call page, through the real HTTP API, on PostgreSQL.

    .venv/bin/python scripts/bench_review.py                                   # 50,000 calls, 1,000,000 lines
    .venv/bin/python scripts/bench_review.py --calls 2000 --segments 40000 --requests 50   # a quick run
    .venv/bin/python scripts/bench_review.py --database-url postgresql+asyncpg://u@127.0.0.1:5432/db [--reuse]
    .venv/bin/python scripts/bench_review.py ... --json var/bench_review.json

Without --database-url a throwaway PostgreSQL cluster is started (and removed at the end) by
scripts/lib/services.sh, exactly as scripts/test starts one. The database is migrated to head, then seeded
with --calls calls holding --segments transcript lines in total (about 20 a call, agent and caller in turn),
plus each call's events and tool calls, all generated deterministically from --seed. Seeding goes through
COPY (asyncpg ``copy_records_to_table``), with the tables' secondary indexes dropped during the load and
re-created from their own definitions afterwards (the GIN index on the generated tsvector included), then
ANALYZE. --reuse skips seeding when the database already holds the same data (e.g. before/after a change).

The app then runs under uvicorn on a loopback socket in this process (as tests/support.serve does), with a
supervisor API key, and every request goes through HTTP, one at a time, over one keep-alive connection:

  search kinds  GET /api/v1/calls?q=...  rare word | common word | two words (AND, one line) | "a phrase" |
                a word with filters (date range, direction, disposition) | the next page of a common word
                through the returned cursor (pages 2..10)
  call page     GET /api/v1/calls/{sid} for random calls

Each kind cycles through several queries (see variants(): some are chosen to be hard for a planner that
assumes the words of a search independent). Each kind gets a warm-up, then --requests timed requests; the
requests of all kinds are interleaved in a seeded random order so background load falls on every kind
alike. Latency is client-side wall time for the whole request (HTTP, the app, its SQL, the JSON body read).
Before timing, pages 1-3 of every query (at 50 and 7 a page) are checked against search.build_query run as
is: the same calls, in the same order, with a next cursor exactly when more follow.

For each kind the report gives p50/p95/p99/max, the calls and lines each query matches (counted with the
app's own build_query), and, for the --explain slowest search kinds, EXPLAIN (ANALYZE, BUFFERS) of every
statement search_calls runs for its slowest query, captured from the app's engine; and how often the app's
pooled connection ran its cached search statements with custom or generic plans.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import asyncpg
import httpx
import orjson
import uvicorn
from bench_common import format_table, machine_info, percentile
from sqlalchemy import event, func, select, text
from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect
from sqlalchemy.engine import make_url

from app.archive.facts import DISPOSITIONS
from app.archive.models import TranscriptSegment
from app.archive.router import call_filter
from app.archive.search import CallFilter, build_query, parse_query, search_calls, tsquery_match
from app.auth.keys import Role, create_api_key
from app.db import make_engine, make_sessionmaker
from app.main import create_app
from app.migrate import upgrade
from app.settings import Settings

REPO = Path(__file__).resolve().parent.parent
END = datetime(2026, 11, 20, tzinfo=UTC)  # calls start in the 90 days before this instant
DAYS = 90
SEEDED_TABLES = ("calls", "transcript_segments", "call_events", "tool_invocations")
SEARCH_KINDS = ("rare word", "common word", "two words", "phrase", "word + filters", "next page")
CALL_KIND = "call page"
TARGET_MS = {"search": 200.0, CALL_KIND: 100.0}

# -- a throwaway PostgreSQL, started and stopped by scripts/lib/services.sh ---------------------------------

_SOURCE = f'. "{REPO}/scripts/lib/common.sh"; . "{REPO}/scripts/lib/services.sh"'


class ThrowawayPostgres:
    """``sb_start_postgres`` in a fresh ``sb_svc_tmpdir``; ``sb_svc_stop_all`` at the end."""

    def __init__(self) -> None:
        self.vars: dict[str, str] = {}
        self.url = ""

    def __enter__(self) -> ThrowawayPostgres:
        script = (
            f"set -e; {_SOURCE}\n"
            'SB_SVC_TMP="$(sb_svc_tmpdir)"\n'
            'printf "SB_SVC_TMP=%s\\n" "$SB_SVC_TMP"\n'
            "sb_ensure_postgres_binaries\n"
            'sb_start_postgres "$SB_SVC_TMP/pg" >&2\n'
            'printf "SB_PG_BINDIR=%s\\nSB_PG_USER=%s\\nSB_PG_DATA=%s\\nSB_PG_URL=%s\\n"'
            ' "$SB_PG_BINDIR" "$SB_PG_USER" "$SB_PG_DATA" "$SB_PG_URL"\n'
        )
        done = subprocess.run(["bash", "-c", script], stdout=subprocess.PIPE, text=True, check=False)
        self.vars = dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)
        if done.returncode != 0 or not self.vars.get("SB_PG_URL"):
            self.__exit__()
            raise SystemExit("could not start a throwaway PostgreSQL (see the log above)")
        self.url = self.vars["SB_PG_URL"]
        return self

    def __exit__(self, *_: object) -> None:
        if not self.vars.get("SB_SVC_TMP"):
            return
        assign = "; ".join(f"{k}='{v}'" for k, v in self.vars.items() if k != "SB_PG_URL")
        subprocess.run(["bash", "-c", f"{_SOURCE}; {assign}; sb_svc_stop_all"], check=False)
        self.vars = {}


def asyncpg_dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


# -- what the calls say ---------------------------------------------------------------------------------------

NOUNS = (
    "appointment account order payment bill invoice refund insurance delivery cleaning card plan subscription"
    " reservation prescription claim policy balance estimate checkup package statement address booking warranty"
    " repair deposit receipt password technician filling consultation crown quote installation visit referral"
    " x-ray voucher membership upgrade contract premium copay deductible shipment tracking return exchange"
    " coupon discount credit charge fee penalty schedule slot cancellation confirmation reminder voicemail email"
    " survey complaint manager supervisor specialist hygienist dentist doctor pharmacy clinic office branch"
    " store warehouse courier parcel meter outage router modem signal contractor plumber roof furnace boiler"
).split()
VERBS = (
    ("book", "booked"), ("reschedule", "rescheduled"), ("cancel", "cancelled"), ("confirm", "confirmed"),
    ("change", "changed"), ("update", "updated"), ("check", "checked"), ("pay", "paid"), ("move", "moved"),
    ("add", "added"), ("remove", "removed"), ("renew", "renewed"), ("review", "reviewed"), ("return", "returned"),
    ("replace", "replaced"), ("verify", "verified"), ("upgrade", "upgraded"), ("dispute", "disputed"),
    ("transfer", "transferred"), ("refund", "refunded"), ("track", "tracked"), ("split", "split"),
    ("postpone", "postponed"), ("waive", "waived"), ("escalate", "escalated"), ("activate", "activated"),
    ("suspend", "suspended"), ("reinstate", "reinstated"), ("itemize", "itemized"), ("prorate", "prorated"),
)  # fmt: skip
ADJECTIVES = (
    "wrong late missing new old urgent early damaged broken expensive cheaper different duplicate overdue"
    " incorrect unexpected pending final quick simple annual monthly weekly free extra partial full"
).split()
DAYS_OF_WEEK = "Monday Tuesday Wednesday Thursday Friday Saturday Sunday".split()
DAYPARTS = "morning afternoon evening".split()
FIELDS = ("date of birth", "zip code", "account number", "phone number", "email address", "last name", "policy number")
FIRST_NAMES = (
    "James Mary Robert Patricia John Jennifer Michael Linda David Elizabeth William Barbara Richard Susan Joseph"
    " Jessica Thomas Sarah Charles Karen Christopher Lisa Daniel Nancy Matthew Betty Anthony Margaret Mark Sandra"
    " Donald Ashley Steven Kimberly Paul Emily Andrew Donna Joshua Michelle Kenneth Carol Kevin Amanda Brian"
    " Dorothy George Melissa Timothy Deborah Ronald Stephanie Edward Rebecca Jason Sharon Jeffrey Laura Ryan"
    " Cynthia Jacob Kathleen Gary Amy Nicholas Angela Eric Shirley Jonathan Anna Stephen Brenda Larry Pamela"
    " Justin Emma Scott Nicole Brandon Helen Benjamin Samantha Samuel Katherine Gregory Christine Alexander Debra"
).split()
REAL_SURNAMES = (
    "Smith Johnson Williams Brown Jones Garcia Miller Davis Rodriguez Martinez Hernandez Lopez Gonzalez Wilson"
    " Anderson Thomas Taylor Moore Jackson Martin Lee Perez Thompson White Harris Sanchez Clark Ramirez Lewis"
    " Robinson Walker Young Allen King Wright Scott Torres Nguyen Hill Flores Green Adams Nelson Baker Hall"
).split()
REAL_STREETS = "Main Oak Maple Cedar Pine Elm Washington Lake Hill Park Sunset Lincoln Church River Spring".split()
STREET_TYPES = "Street Avenue Road Drive Lane Court Boulevard Way Place".split()
BUSINESSES = (
    "Acme Dental", "Bright Smile Clinic", "Northwind Insurance", "Harbor Energy", "Summit Telecom",
    "Green Valley Pharmacy", "Metro Movers", "Lakeside Vet",
)  # fmt: skip
AGENT_NAMES = ("Ava", "Sam", "Riley", "Jordan")
CHATTER = (
    "so well actually just really maybe kind sort basically honestly anyway like okay right yeah um uh you know"
    " because though still already again also even ever never always usually sometimes probably definitely"
    " thing stuff time day week month year minute hour while today yesterday tomorrow tonight weekend morning"
    " husband wife son daughter mother father kids family neighbor friend boss landlord roommate dog cat car"
    " work school home house apartment kitchen garage phone computer letter mail website app portal text"
    " called said told asked wanted needed tried waited forgot lost found sent got came went paid moved"
    " problem issue question mistake reason number name price total amount change trouble error message notice"
    " twice three four five ten twenty hundred half dollars cents percent last next first second other same"
    " earlier later soon lately recently online upstairs downstairs outside inside nearby downtown across"
    " confused frustrated happy sorry worried busy tired annoyed surprised grateful glad sure certain"
    " weather traffic parking holiday vacation birthday wedding funeral surgery flu cold tooth knee back"
).split()

# Templates: {noun} {verb} {verbed} {adj} {day} {part} {field} {first} {last} {product} {street} {stype}
# {num} {hour} {amount} {biz} {agent} {chat}. Earlier templates are said more often (Zipf weights).
CALLER_LINES = (
    "Yes, that's right.",
    "Hi, I'd like to {verb} my {noun}.",
    "I'm calling about my {noun}.",
    "Can we {verb} it to {day} {part}?",
    "My name is {first} {last}.",
    "Okay, thank you so much.",
    "No, I don't think so.",
    "I got a {noun} from you and the {noun} looks {adj}.",
    "It's {num} {street} {stype}.",
    "I was charged twice for the {noun}.",
    "Sorry, could you repeat that?",
    "{day} {part} works best for me.",
    "The {product} I ordered never arrived.",
    "Is there anything available {day} {part}?",
    "{chat} {chat} {chat} the {noun} {chat} {chat}.",
    "I need to {verb} the {noun} before {day}.",
    "My {field} is {num} {num}.",
    "Why is my {noun} so {adj} this month?",
    "Can I speak to a {noun} please?",
    "I already {verbed} the {noun} last {day}.",
    "{chat} {chat}, my {noun} is {adj} and I {chat} {chat} {chat}.",
    "The {product} stopped working after {num} days.",
    "I want to {verb} my {noun} and {verb} the {noun}.",
    "Please don't call me again.",
    "That's my {noun}, {first} {last}.",
    "We moved to {num} {street} {stype} in {day}.",
    "Does my {noun} cover the {noun}?",
    "I think the {product} {noun} was {adj}.",
    "{first} told me to {verb} the {noun} with you.",
    "My {noun} number ends in {num}.",
)
AGENT_LINES = (
    "Is there anything else I can help you with?",
    "Let me check that for you.",
    "I can help you {verb} your {noun}.",
    "Could you please confirm your {field}?",
    "I see a {noun} on {day} at {hour}.",
    "I've {verbed} your {noun} for {day} at {hour}.",
    "Thank you, {first}.",
    "Your {noun} of {amount} dollars has been {verbed}.",
    "I'm sorry about the {adj} {noun}.",
    "The {product} is covered under your {noun}.",
    "I have {day} {part} at {hour} or {day} at {hour}.",
    "One moment while I pull up your {noun}.",
    "I've noted that on your {noun}.",
    "Your {noun} will be {verbed} within {num} days.",
    "The {noun} shows a {adj} {noun} from last {day}.",
    "I understand, let me {verb} that {noun} for you.",
    "Can I have the address for the {noun}, please?",
    "We have {num} {street} {stype} on file.",
    "A {noun} will call you back about the {product}.",
    "I'm transferring you to a specialist now.",
    "You won't be called again; I've removed your number.",
    "The {adj} {noun} was {verbed} on {day}.",
    "Your {noun} balance is {amount} dollars.",
    "I can {verb} the {noun} or {verb} the {noun}, whichever you prefer.",
)


def _zipf_cum(n: int, s: float) -> list[float]:
    total, out = 0.0, []
    for rank in range(1, n + 1):
        total += 1.0 / rank**s
        out.append(total)
    return out


def pseudo_words(rng: random.Random, count: int, taken: set[str]) -> list[str]:
    """Made-up names (surnames, products, streets): rare tokens with a realistic long tail."""
    onsets = "b br c ch d dr f g gr h j k l m n p pr r s sh st t tr v w z bl cl fl pl sl qu".split()
    vowels = "a e i o u ai ea ou io".split()
    codas = ["", "n", "r", "l", "s", "t", "m", "nd", "rk", "st", "x", "ck", "th"]
    out: list[str] = []
    while len(out) < count:
        word = "".join(rng.choice(onsets) + rng.choice(vowels) + rng.choice(codas) for _ in range(rng.choice((2, 3))))
        if word not in taken and len(word) >= 5:
            taken.add(word)
            out.append(word.capitalize())
    return out


class Vocabulary:
    """Slot fillers drawn with Zipf weights from deterministic lists, so some words are everywhere and the
    tail (made-up surnames, products, streets) occurs in a handful of calls."""

    def __init__(self, seed: int) -> None:
        rng = random.Random(seed)
        taken = {w.lower() for w in NOUNS + ADJECTIVES + CHATTER + FIRST_NAMES + REAL_SURNAMES + REAL_STREETS}
        self.surnames = REAL_SURNAMES + pseudo_words(rng, 1600, taken)
        self.products = pseudo_words(rng, 700, taken)
        self.streets = REAL_STREETS + pseudo_words(rng, 300, taken)
        self.rng = random.Random(seed + 1)
        verbs = [v for v, _ in VERBS]
        pasts = dict(VERBS)
        self._lists: dict[str, tuple[list[str], float]] = {
            "noun": (list(NOUNS), 1.05),
            "verb": (verbs, 1.0),
            "verbed": ([pasts[v] for v in verbs], 1.0),
            "adj": (list(ADJECTIVES), 1.0),
            "day": (list(DAYS_OF_WEEK), 0.3),
            "part": (list(DAYPARTS), 0.5),
            "field": (list(FIELDS), 0.8),
            "first": (list(FIRST_NAMES), 0.9),
            "last": (self.surnames, 1.1),
            "product": (self.products, 1.1),
            "street": (self.streets, 1.1),
            "stype": (list(STREET_TYPES), 1.0),
            "chat": (list(CHATTER), 0.9),
            "agent": (list(AGENT_NAMES), 0.0),
        }
        self._pools: dict[str, Iterator[str]] = {k: self._pool(*v) for k, v in self._lists.items()}
        self.caller_cum = _zipf_cum(len(CALLER_LINES), 0.9)
        self.agent_cum = _zipf_cum(len(AGENT_LINES), 0.9)
        self.words = len(set().union(*(map(str.lower, w) for w, _ in self._lists.values())))

    def _pool(self, words: list[str], s: float) -> Iterator[str]:
        cum = _zipf_cum(len(words), s)
        while True:
            yield from self.rng.choices(words, cum_weights=cum, k=8192)

    def draw(self, slot: str) -> str:
        if slot == "num":
            return str(self.rng.choice((2, 3, 5, 7, 10, 12, 14, 30, 45, 120, 250, 311, 1024, 4410)))
        if slot == "hour":
            return f"{self.rng.randint(8, 17) % 12 or 12}:{self.rng.choice(('00', '15', '30', '45'))}"
        if slot == "amount":
            return f"{self.rng.randint(5, 900)}.{self.rng.randint(0, 99):02d}"
        return next(self._pools[slot])

    def fill(self, template: str) -> str:
        return _SLOT.sub(lambda m: self.draw(m.group(1)), template)

    def line(self, speaker: str) -> str:
        if speaker == "caller":
            (template,) = self.rng.choices(CALLER_LINES, cum_weights=self.caller_cum)
        else:
            (template,) = self.rng.choices(AGENT_LINES, cum_weights=self.agent_cum)
        text = self.fill(template)
        if self.rng.random() < 0.25:  # a second sentence now and then
            more = CALLER_LINES if speaker == "caller" else AGENT_LINES
            text += " " + self.fill(self.rng.choice(more))
        return text


_SLOT = re.compile(r"\{(\w+)\}")


# -- seeding --------------------------------------------------------------------------------------------------

CALL_COLUMNS = (
    "id", "call_sid", "stream_sid", "direction", "from_number", "to_number", "status", "end_reason", "started_at",
    "ended_at", "duration_ms", "usage", "campaign_id", "disposition", "cost_micros", "price_version", "transferred",
    "opted_out", "turns", "latency_p50_ms", "latency_p95_ms", "redacted", "transcript_purged_at",
)  # fmt: skip
SEGMENT_COLUMNS = ("id", "call_id", "seq", "speaker", "text", "offset_ms", "interrupted")
EVENT_COLUMNS = ("id", "call_sid", "kind", "detail", "offset_ms", "created_at")
TOOL_COLUMNS = ("id", "call_id", "seq", "name", "tool_call_id", "arguments", "status", "output", "offset_ms")
END_REASONS = {
    "completed": "caller hung up",
    "agent_ended": "agent ended the call",
    "transferred": "transferred to a human",
    "opted_out": "caller opted out",
    "budget_ended": "daily budget reached",
    "failed": "upstream unavailable",
}
CAMPAIGNS = 6


def segment_counts(rng: random.Random, calls: int, segments: int) -> list[int]:
    """Lines per call: around the mean (at least 2), summing to exactly ``segments``."""
    mean = segments / calls
    counts = [max(2, round(rng.gauss(mean, mean * 0.35))) for _ in range(calls)]
    diff = segments - sum(counts)
    while diff:
        i = rng.randrange(calls)
        step = 1 if diff > 0 else -1
        if counts[i] + step >= 2:
            counts[i] += step
            diff -= step
    return counts


def phone(rng: random.Random) -> str:
    return f"+1{rng.choice((212, 305, 415, 512, 617, 206, 312, 404, 718, 503))}{rng.randint(2000000, 9999999)}"


@dataclass
class Seeded:
    calls: list[tuple[Any, ...]] = field(default_factory=list)
    segments: list[tuple[Any, ...]] = field(default_factory=list)
    events: list[tuple[Any, ...]] = field(default_factory=list)
    tools: list[tuple[Any, ...]] = field(default_factory=list)


class Generator:
    def __init__(self, seed: int, calls: int, segments: int) -> None:
        self.rng = random.Random(seed)
        self.vocab = Vocabulary(seed)
        self.counts = segment_counts(self.rng, calls, segments)
        self.business_lines = [phone(self.rng) for _ in BUSINESSES]
        self.segment_id = self.event_id = self.tool_id = 0

    def chunk(self, first: int, last: int) -> Seeded:
        out = Seeded()
        for call_id in range(first, last):
            self._call(call_id, out)
        return out

    def _call(self, call_id: int, out: Seeded) -> None:
        rng, vocab = self.rng, self.vocab
        sid = f"CA{rng.getrandbits(128):032x}"
        outbound = rng.random() < 0.4
        campaign = rng.randint(1, CAMPAIGNS) if outbound else None
        biz = (campaign - 1) % len(BUSINESSES) if campaign else rng.randrange(len(BUSINESSES))
        day = rng.randrange(DAYS)
        hour = min(21, max(7, round(rng.gauss(13, 3))))
        started = END - timedelta(days=DAYS - day) + timedelta(hours=hour, seconds=rng.randrange(3600))
        failed = rng.random() < 0.03
        if failed:
            disposition = "failed"
        else:
            weights = (0, 4 if outbound else 0.5, 12, 2, 20, 55)  # DISPOSITIONS order
            (disposition,) = rng.choices(DISPOSITIONS, weights=weights)
        offset = rng.randint(200, 900)
        agent_turns: list[int] = []
        n = self.counts[call_id - 1]
        for seq in range(n):
            speaker = "agent" if seq % 2 == 0 else "caller"
            if seq == 0:
                name = BUSINESSES[biz]
                line = (
                    f"Hi, this is {vocab.draw('agent')} calling from {name} about your {vocab.draw('noun')}."
                    if outbound
                    else f"Thank you for calling {name}. How can I help you today?"
                )
            elif seq == n - 1 and speaker == "agent":
                line = {
                    "transferred": "I'm transferring you to a specialist now.",
                    "opted_out": "You won't be called again; I've removed your number.",
                }.get(disposition, "Thank you for calling, goodbye.")
            else:
                line = vocab.line(speaker)
            words = line.count(" ") + 1
            interrupted = speaker == "agent" and 0 < seq < n - 1 and words > 4 and rng.random() < 0.08
            if interrupted:  # cut to what the caller heard before speaking over it
                line = " ".join(line.split(" ")[: rng.randint(2, words - 1)])
                words = line.count(" ") + 1
            self.segment_id += 1
            out.segments.append((self.segment_id, call_id, seq, speaker, line, offset, interrupted))
            spoken = words * rng.randint(280, 380)
            if speaker == "agent" and seq > 0:
                latency = max(150, round(rng.lognormvariate(6.3, 0.35)))
                agent_turns.append(latency)
                self._event(out, sid, "turn_latency", {"ms": latency}, offset, started)
                self._event(
                    out, sid, "response_usage",
                    {"input_tokens": rng.randint(300, 4000), "output_tokens": rng.randint(20, 300)}, offset, started,
                )  # fmt: skip
            if interrupted:
                self._event(out, sid, "barge_in", {"heard_ms": spoken // 2}, offset + spoken // 2, started)
                spoken //= 2
            offset += spoken + rng.randint(300, 1500)
        duration = offset + rng.randint(500, 3000)
        cost = round(duration / 60000 * rng.uniform(55000, 75000)) + 4000
        self._event(out, sid, "stream_started", {"direction": "outbound" if outbound else "inbound"}, 0, started)
        for kind, share in (("realtime", 0.85), ("telephony", 0.15)):
            self._event(
                out, sid, "cost",
                {"kind": kind, "micros": round(cost * share), "detail": {}, "prices": "2026-11-01"}, duration, started,
            )  # fmt: skip
        if disposition in ("transferred", "agent_ended"):
            action = "TransferCall" if disposition == "transferred" else "HangUp"
            self._event(out, sid, "call_ending", {"action": action}, duration - 800, started)
            self.tool_id += 1
            out.tools.append(
                (self.tool_id, call_id, 0, "transfer_call" if action == "TransferCall" else "end_call",
                 f"call_{rng.getrandbits(48):012x}", json.dumps({"reason": vocab.draw("noun")}), "done", None,
                 duration - 900)
            )  # fmt: skip
        self._event(out, sid, "stream_stopped", {}, duration, started)
        ordered = sorted(agent_turns)
        business = self.business_lines[biz]
        caller = phone(rng)
        out.calls.append(
            (
                call_id, sid, f"MZ{rng.getrandbits(128):032x}", "outbound" if outbound else "inbound",
                business if outbound else caller, caller if outbound else business,
                "failed" if failed else "completed", END_REASONS[disposition], started,
                started + timedelta(milliseconds=duration), duration,
                json.dumps({"input_tokens": rng.randint(2000, 40000), "output_tokens": rng.randint(200, 4000)}),
                campaign, disposition, cost, "2026-11-01", disposition == "transferred",
                disposition == "opted_out", len(agent_turns),
                ordered[len(ordered) // 2] if ordered else None,
                ordered[min(len(ordered) - 1, (len(ordered) * 95 + 99) // 100 - 1)] if ordered else None,
                False, None,
            )
        )  # fmt: skip

    def _event(self, out: Seeded, sid: str, kind: str, detail: dict[str, Any], offset: int, started: datetime) -> None:
        self.event_id += 1
        out.events.append(
            (self.event_id, sid, kind, json.dumps(detail), offset, started + timedelta(milliseconds=offset))
        )


async def secondary_indexes(conn: asyncpg.Connection, table: str) -> list[tuple[str, str]]:
    """(name, definition) of the table's indexes that back no constraint: safe to drop and re-create."""
    rows = await conn.fetch(
        "SELECT c.relname, pg_get_indexdef(i.indexrelid) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
        " WHERE i.indrelid = $1::regclass"
        " AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid) ORDER BY c.relname",
        table,
    )
    return [(r[0], r[1]) for r in rows]


async def seed(dsn: str, calls: int, segments: int, seed_value: int, chunk: int = 2500) -> dict[str, Any]:
    conn = await asyncpg.connect(dsn)
    timings: dict[str, float] = {"generate_s": 0.0, "copy_s": 0.0}
    try:
        t0 = time.perf_counter()
        await conn.execute("SET maintenance_work_mem = '512MB'")
        dropped: dict[str, list[tuple[str, str]]] = {}
        for table in SEEDED_TABLES:
            dropped[table] = await secondary_indexes(conn, table)
            for name, _ in dropped[table]:
                await conn.execute(f'DROP INDEX "{name}"')
        gen = Generator(seed_value, calls, segments)
        totals = dict.fromkeys(SEEDED_TABLES, 0)
        for first in range(1, calls + 1, chunk):
            g0 = time.perf_counter()
            part = gen.chunk(first, min(calls + 1, first + chunk))
            g1 = time.perf_counter()
            timings["generate_s"] += g1 - g0
            for table, columns, records in (
                ("calls", CALL_COLUMNS, part.calls),
                ("transcript_segments", SEGMENT_COLUMNS, part.segments),
                ("call_events", EVENT_COLUMNS, part.events),
                ("tool_invocations", TOOL_COLUMNS, part.tools),
            ):
                await conn.copy_records_to_table(table, records=records, columns=columns)
                totals[table] += len(records)
            timings["copy_s"] += time.perf_counter() - g1
            print(f"\r  seeded {min(calls, first + chunk - 1):,}/{calls:,} calls", end="", file=sys.stderr, flush=True)
        print(file=sys.stderr)
        i0 = time.perf_counter()
        for table in SEEDED_TABLES:
            for _, definition in dropped[table]:
                await conn.execute(definition)
            await conn.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))")
            assert await secondary_indexes(conn, table) == dropped[table]
        a0 = time.perf_counter()
        timings["index_s"] = a0 - i0
        await conn.execute("ANALYZE")
        timings["analyze_s"] = time.perf_counter() - a0
        timings["total_s"] = time.perf_counter() - t0
        size = await conn.fetchval("SELECT pg_database_size(current_database())")
        gin = await conn.fetchval("SELECT pg_relation_size('ix_transcript_segments_tsv')")
    finally:
        await conn.close()
    return {
        "rows": totals,
        "vocabulary_words": gen.vocab.words,
        **{k: round(v, 1) for k, v in timings.items()},
        "database_mb": round(size / 2**20),
        "gin_index_mb": round(gin / 2**20),
    }


async def existing_rows(dsn: str) -> dict[str, int]:
    conn = await asyncpg.connect(dsn)
    try:
        return {t: await conn.fetchval(f"SELECT count(*) FROM {t}") for t in SEEDED_TABLES}
    finally:
        await conn.close()


# -- the requests ---------------------------------------------------------------------------------------------


@dataclass
class Variant:
    kind: str
    params: dict[str, Any]
    label: str


def variants(vocab: Vocabulary) -> dict[str, list[Variant]]:
    """The queries of each kind. Words come from the generator's lists by rank: low ranks are common, the
    made-up tail is rare (the counts actually matched are measured and reported). Some are chosen to be hard
    for a planner that assumes words independent: "goodbye help" are two very common words that no line says
    together, "thank invoice" two common ones that a few do, "charged twice" two that nearly always come
    together; "goodbye" never ends a transferred call."""
    rare = [w.lower() for w in vocab.surnames[700:1600:90]] + [w.lower() for w in vocab.products[400:700:60]]
    common = ["help", "appointment", "account", "thank", "check"]
    two = ["cancel appointment", "refund invoice", "insurance claim", "help payment", "tuesday morning",
           "charged twice", "wrong delivery", "confirm address", "thank invoice", "goodbye help"]  # fmt: skip
    phrases = ['"cancel my appointment"', '"charged twice"', '"thank you for calling"', '"check that for you"',
               '"my refund"', '"repeat that"', f'"{vocab.surnames[2].lower()} {vocab.surnames[3].lower()}"']  # fmt: skip
    week = {
        "started_from": (END - timedelta(days=30)).isoformat(),
        "started_to": (END - timedelta(days=23)).isoformat(),
    }
    filtered: list[tuple[str, dict[str, Any]]] = [
        ("appointment, one week", {"q": "appointment", **week}),
        ("help, inbound, completed", {"q": "help", "direction": "inbound", "disposition": ["completed"]}),
        ("refund, outbound, transferred/agent_ended",
         {"q": "refund", "direction": "outbound", "disposition": ["transferred", "agent_ended"]}),
        ("invoice, one week, inbound", {"q": "invoice", **week, "direction": "inbound"}),
        (f"{rare[0]}, inbound", {"q": rare[0], "direction": "inbound"}),
        ('"cancel my appointment", one week, completed',
         {"q": '"cancel my appointment"', **week, "disposition": ["completed"]}),
        ("goodbye, transferred", {"q": "goodbye", "disposition": ["transferred"]}),
        ("refund, sorted by -duration", {"q": "refund", "sort": "-duration"}),
    ]  # fmt: skip
    out: dict[str, list[Variant]] = {
        "rare word": [Variant("rare word", {"q": w}, w) for w in rare],
        "common word": [Variant("common word", {"q": w}, w) for w in common],
        "two words": [Variant("two words", {"q": w}, w) for w in two],
        "phrase": [Variant("phrase", {"q": w}, w) for w in phrases],
        "word + filters": [Variant("word + filters", p, label) for label, p in filtered],
        "next page": [Variant("next page", {"q": w}, w) for w in ("help", "appointment", "account")],
    }
    return out


def to_filter(params: dict[str, Any]) -> CallFilter:
    """The CallFilter the router builds from these query parameters (its own function)."""
    kw = {k: v for k, v in params.items() if k not in ("sort", "cursor", "limit")}
    for name in ("started_from", "started_to"):
        if name in kw:
            kw[name] = datetime.fromisoformat(kw[name])
    return call_filter(**kw)


def reference(params: dict[str, Any], cursor: str | None, limit: int = 50) -> Any:
    """The plain page query (search.build_query): what every page the API returns must equal."""
    sort = params.get("sort", "-started_at")
    return build_query("postgresql", to_filter(params), sort=sort, cursor=cursor, limit=limit)


@dataclass
class Sample:
    kind: str
    label: str
    ms: float
    items: int
    cpu_app_ms: float = 0.0  # this process: the app, uvicorn and the HTTP client
    cpu_pg_ms: float | None = None  # the PostgreSQL backends serving the app's connections


class CpuMeter:
    """CPU time, which background load inflates far less than wall time: this process's, and that of the
    PostgreSQL backends of the app's pooled connections (their /proc/<pid>/schedstat, when the database runs
    on this machine)."""

    def __init__(self, backend_pids: list[int]) -> None:
        self.pids = [p for p in backend_pids if os.path.exists(f"/proc/{p}/schedstat")]

    def read(self) -> tuple[float, float | None]:
        pg = None
        if self.pids:
            pg = 0.0
            for pid in self.pids:
                try:
                    with open(f"/proc/{pid}/schedstat", encoding="ascii") as f:
                        pg += int(f.read().split()[0]) / 1e6
                except OSError:
                    pass
        return time.process_time() * 1000, pg


@dataclass
class PageState:
    cursor: str | None = None
    depth: int = 0


async def measure(
    api: httpx.AsyncClient,
    plan: list[tuple[str, Any]],
    pages: dict[str, PageState],
    last_cursor: dict[str, str],
    cpu: CpuMeter | None = None,
) -> list[Sample]:
    samples = []
    meter = cpu or CpuMeter([])
    for kind, what in plan:
        label = "random call"
        path = f"/api/v1/calls/{what}"
        params: dict[str, Any] = {}
        if kind != CALL_KIND:
            variant: Variant = what
            label, path, params = variant.label, "/api/v1/calls", dict(variant.params)
            if kind == "next page":
                state = pages[variant.label]
                if state.cursor is None or state.depth >= 9:  # back to page 1, untimed
                    first = await api.get("/api/v1/calls", params=params)
                    assert first.status_code == 200, first.text
                    state.cursor, state.depth = first.json()["next_cursor"], 0
                    assert state.cursor, f"{variant.label!r} has a single page"
                params["cursor"] = state.cursor
                last_cursor[variant.label] = state.cursor
        app0, pg0 = meter.read()
        t0 = time.perf_counter()
        response = await api.get(path, params=params)
        ms = (time.perf_counter() - t0) * 1000
        app1, pg1 = meter.read()
        assert response.status_code == 200, response.text
        body = response.json()
        if kind == "next page":
            pages[label] = PageState(body["next_cursor"], pages[label].depth + 1)
        items = len(body["transcript"]) if kind == CALL_KIND else len(body["items"])
        pg_ms = None if pg0 is None or pg1 is None else pg1 - pg0
        samples.append(Sample(kind, label, ms, items, app1 - app0, pg_ms))
    return samples


async def verify(api: httpx.AsyncClient, conn: asyncpg.Connection, kinds: dict[str, list[Variant]]) -> int:
    """Every page the API returns equals the plain query's (search.build_query run as is): the same calls in
    the same order, and a next cursor exactly when more follow. Pages 1-3 of each search, at two page sizes."""
    checked = 0
    for vs in kinds.values():
        for v in vs:
            for limit in (50, 7):
                cursor = None
                for _ in range(3):
                    params = {**v.params, "limit": limit, **({"cursor": cursor} if cursor else {})}
                    response = await api.get("/api/v1/calls", params=params)
                    assert response.status_code == 200, response.text
                    body = response.json()
                    sql, args = compiled(reference(v.params, cursor, limit))
                    want = [r["call_sid"] for r in await conn.fetch(sql, *args)]
                    got = [item["call_sid"] for item in body["items"]]
                    more = body["next_cursor"] is not None
                    assert got == want[:limit] and more == (len(want) > limit), (v.kind, v.label, limit, cursor)
                    checked += 1
                    cursor = body["next_cursor"]
                    if cursor is None:
                        break
    return checked


# -- what each query matches, and its plan --------------------------------------------------------------------


async def matched(conn: asyncpg.Connection, params: dict[str, Any]) -> dict[str, int]:
    """Calls the search matches (all pages; the app's own WHERE clause) and lines that contain it."""
    filters = to_filter(params)
    query = reference(params, None, 0)
    counted = select(func.count()).select_from(query.order_by(None).limit(None).subquery())
    sql, args = compiled(counted)
    calls = await conn.fetchval(sql, *args)
    lines_sql, lines_args = compiled(
        select(func.count()).select_from(TranscriptSegment).where(tsquery_match(parse_query(filters.q or "")))
    )
    return {"calls": calls, "lines": await conn.fetchval(lines_sql, *lines_args)}


def compiled(statement: Any) -> tuple[str, list[Any]]:
    """SQL text and positional arguments, as the app's asyncpg dialect sends them."""
    c = statement.compile(dialect=asyncpg_dialect(), compile_kwargs={"render_postcompile": True})
    params = c.construct_params()
    return c.string, [params[name] for name in (c.positiontup or [])]


async def explain(
    conn: asyncpg.Connection, database_url: str, params: dict[str, Any], cursor: str | None
) -> dict[str, Any]:
    """EXPLAIN (ANALYZE, BUFFERS) of every statement search_calls runs for one page of this search (limit
    50): the statements are captured as the app's engine sends them, then explained with their arguments."""
    engine = make_engine(database_url)
    captured: list[tuple[str, list[Any]]] = []

    @event.listens_for(engine.sync_engine, "before_cursor_execute")
    def grab(_conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, _many: bool) -> None:
        captured.append((statement, list(parameters or ())))

    try:
        async with make_sessionmaker(engine)() as session:
            sort = params.get("sort", "-started_at")
            await search_calls(session, to_filter(params), sort=sort, cursor=cursor, limit=50)
    finally:
        await engine.dispose()
    statements = []
    for sql, args in captured:
        if "transcript_segments" not in sql and "FROM calls" not in sql:
            continue
        rows = await conn.fetch("EXPLAIN (ANALYZE, BUFFERS) " + sql, *args)
        statements.append({"sql": sql, "args": [str(a) for a in args], "plan": [r[0] for r in rows]})
    return {"statements": statements}


async def cached_plans(engine: Any) -> dict[str, Any]:
    """How the app's pooled connection ran its cached (prepared) search statements: PostgreSQL switches a
    prepared statement to a generic plan, blind to the words searched for, after five custom ones when it
    estimates the generic plan no dearer."""
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                text(
                    "SELECT statement, generic_plans, custom_plans FROM pg_prepared_statements"
                    " WHERE statement LIKE '%tsv @@%' AND statement NOT LIKE '%pg_prepared_statements%'"
                )
            )
        ).all()
    generic = []
    for statement, generic_plans, _ in rows:
        if generic_plans:
            flat = " ".join(statement.split())
            generic.append({"generic_plans": generic_plans, "statement": flat[flat.find("FROM") :][:400]})
    return {
        "statements": len(rows),
        "custom_plans": sum(r[2] for r in rows),
        "generic_plans": sum(r[1] for r in rows),
        "with_generic_plans": generic,
    }


# -- the run --------------------------------------------------------------------------------------------------


def cpu_busy() -> tuple[int, int]:
    with open("/proc/stat", encoding="ascii") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


def summarize(samples: list[Sample]) -> dict[str, Any]:
    ms = [s.ms for s in samples]
    return {
        "n": len(ms),
        "p50": round(percentile(ms, 50), 1),
        "p95": round(percentile(ms, 95), 1),
        "p99": round(percentile(ms, 99), 1),
        "max": round(max(ms), 1),
        "mean": round(statistics.fmean(ms), 1),
        "cpu_app_ms": round(statistics.fmean(s.cpu_app_ms for s in samples), 2),
        "cpu_pg_ms": None
        if any(s.cpu_pg_ms is None for s in samples)
        else round(statistics.fmean(s.cpu_pg_ms or 0.0 for s in samples), 2),
    }


async def run(args: argparse.Namespace, database_url: str, data_dir: Path) -> dict[str, Any]:
    dsn = asyncpg_dsn(database_url)
    with ThreadPoolExecutor(1) as pool:  # alembic's env runs its own event loop
        pool.submit(upgrade, database_url).result()
    have = await existing_rows(dsn)
    if have["calls"] == 0:
        print(f"== seeding {args.calls:,} calls, {args.segments:,} lines", file=sys.stderr)
        seeding: dict[str, Any] = await seed(dsn, args.calls, args.segments, args.seed)
    elif args.reuse and have["calls"] == args.calls and have["transcript_segments"] == args.segments:
        print(f"== reusing the seeded database ({have})", file=sys.stderr)
        seeding = {"rows": have, "reused": True}
        conn = await asyncpg.connect(dsn)
        await conn.execute("ANALYZE")
        await conn.close()
    else:
        raise SystemExit(f"the database already holds {have}; give a fresh one (or --reuse with the same sizes)")
    print(f"   {seeding}", file=sys.stderr)

    settings = Settings(
        public_base_url="http://127.0.0.1:8000",
        database_url=database_url,
        data_dir=data_dir,
        dialer_in_process=False,
        log_level="WARNING",
    )
    engine = make_engine(database_url)
    async with make_sessionmaker(engine)() as session:
        key = await create_api_key(session, role=Role.supervisor, name="bench", now=datetime.now(UTC))
    await engine.dispose()

    rng = random.Random(args.seed + 2)
    vocab = Vocabulary(args.seed)
    kinds = variants(vocab)
    conn = await asyncpg.connect(dsn)
    sids = [r[0] for r in await conn.fetch("SELECT call_sid FROM calls ORDER BY id")]
    plan: list[tuple[str, Any]] = []
    warmup: list[tuple[str, Any]] = []
    for kind, vs in kinds.items():
        warmup += [(kind, vs[i % len(vs)]) for i in range(max(args.warmup, len(vs)))]
        plan += [(kind, vs[i % len(vs)]) for i in range(args.requests)]
    warmup += [(CALL_KIND, rng.choice(sids)) for _ in range(args.warmup)]
    plan += [(CALL_KIND, rng.choice(sids)) for _ in range(args.requests)]
    rng.shuffle(plan)

    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY on accepted connections only when the listening
    # socket's proto says TCP. A plain socket.socket() has proto 0, and then every keep-alive response
    # written in two parts (headers, body) waits ~40 ms for the client's delayed ACK (Nagle).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(256)
    app = create_app(settings)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    pages = {v.label: PageState() for v in kinds["next page"]}
    last_cursor: dict[str, str] = {}
    try:
        async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=120) as api:
            print(f"== warm-up: {len(warmup)} requests", file=sys.stderr)
            await measure(api, warmup, pages, last_cursor)
            checked = await verify(api, conn, kinds)
            print(f"== {checked} pages equal the plain query's", file=sys.stderr)
            backends = await conn.fetch(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
                " AND backend_type = 'client backend'"
            )
            cpu = CpuMeter([r[0] for r in backends])
            load_before = os.getloadavg()
            busy0 = cpu_busy()
            print(f"== measuring: {len(plan)} requests, load average {load_before}", file=sys.stderr)
            t0 = time.perf_counter()
            samples = await measure(api, plan, pages, last_cursor, cpu)
            wall = time.perf_counter() - t0
            busy1 = cpu_busy()
            load_after = os.getloadavg()
        plans_cached = await cached_plans(app.state.runtime.engine)
    finally:
        server.should_exit = True
        await task
        sock.close()

    by_kind: dict[str, Any] = {}
    for kind in (*SEARCH_KINDS, CALL_KIND):
        mine = [s for s in samples if s.kind == kind]
        entry = summarize(mine)
        per_variant = {}
        for v in kinds.get(kind, []):
            vs = [s.ms for s in mine if s.label == v.label]
            per_variant[v.label] = {
                "n": len(vs),
                "p50": round(percentile(vs, 50), 1) if vs else None,
                "max": round(max(vs), 1) if vs else None,
                **(await matched(conn, v.params)),
                "items_per_page": max((s.items for s in mine if s.label == v.label), default=0),
                "cpu_ms": round(
                    statistics.fmean(s.cpu_app_ms + (s.cpu_pg_ms or 0.0) for s in mine if s.label == v.label), 1
                )
                if vs
                else None,
            }
        if per_variant:
            entry["variants"] = per_variant
            entry["matched_calls"] = [x["calls"] for x in per_variant.values()]
        else:
            entry["transcript_lines"] = round(statistics.fmean(s.items for s in mine), 1)
        by_kind[kind] = entry

    explained = {}
    slowest = sorted(SEARCH_KINDS, key=lambda k: by_kind[k]["p95"], reverse=True)[: args.explain]
    for kind in slowest:
        worst = max(by_kind[kind]["variants"].items(), key=lambda kv: kv[1]["p50"] or 0.0)[0]
        variant = next(v for v in kinds[kind] if v.label == worst)
        explained[kind] = {
            "variant": worst,
            **(
                await explain(
                    conn, database_url, variant.params, last_cursor.get(worst) if kind == "next page" else None
                )
            ),
        }
    settings_rows = await conn.fetch(
        "SELECT name, setting, unit FROM pg_settings WHERE name IN"
        " ('shared_buffers', 'work_mem', 'jit', 'effective_cache_size', 'random_page_cost', 'plan_cache_mode',"
        " 'server_version', 'fsync')"
    )
    await conn.close()

    search_p95 = max(by_kind[k]["p95"] for k in SEARCH_KINDS)
    busy = (busy1[0] - busy0[0]) / max(1, busy1[1] - busy0[1])
    return {
        "machine": machine_info(),
        "postgres": {r[0]: r[1] + (r[2] or "") for r in settings_rows},
        "seeding": seeding,
        "requests_per_kind": args.requests,
        "warmup_per_kind": args.warmup,
        "measure_wall_s": round(wall, 1),
        "pages_verified": checked,
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in load_after],
        "machine_busy_during": round(busy, 2),
        "kinds": by_kind,
        "targets": {
            "search_p95_ms": TARGET_MS["search"],
            "search_worst_p95_ms": search_p95,
            "search_met": search_p95 < TARGET_MS["search"],
            "call_page_p95_ms": TARGET_MS[CALL_KIND],
            "call_page_worst_p95_ms": by_kind[CALL_KIND]["p95"],
            "call_page_met": by_kind[CALL_KIND]["p95"] < TARGET_MS[CALL_KIND],
        },
        "explain": explained,
        "app_prepared_statements": plans_cached,
    }


def shown(args: list[str]) -> str:
    return ", ".join(args[:6]) + (f", ... ({len(args)} in all)" if len(args) > 6 else "")


def report(result: dict[str, Any]) -> str:
    kinds = result["kinds"]
    rows = []
    for kind, k in kinds.items():
        if "matched_calls" in k:
            m = k["matched_calls"]
            matched_text = f"{min(m):,} to {max(m):,} calls"
        else:
            matched_text = f"{k['transcript_lines']} lines/call"
        pg = "-" if k["cpu_pg_ms"] is None else f"{k['cpu_pg_ms']:.1f}"
        cpu_text = f"{k['cpu_app_ms']:.1f} / {pg}"
        rows.append((kind, k["n"], k["p50"], k["p95"], k["p99"], k["max"], cpu_text, matched_text))
    headers = ("kind", "n", "p50 ms", "p95 ms", "p99 ms", "max ms", "CPU ms app / pg", "matched")
    out = [format_table(headers, rows), ""]
    for kind, k in kinds.items():
        for label, v in k.get("variants", {}).items():
            if not v["n"]:
                continue
            out.append(f"  {kind:15} {label[:50]:50} p50 {v['p50']:7.1f} max {v['max']:7.1f} CPU {v['cpu_ms']:6.1f}"
                       f"  calls {v['calls']:>6,}  lines {v['lines']:>7,}")  # fmt: skip
    t = result["targets"]
    out.append("")
    out.append(
        f"targets: search p95 < {t['search_p95_ms']:.0f} ms: {'met' if t['search_met'] else 'MISSED'}"
        f" (worst kind {t['search_worst_p95_ms']} ms); call page p95 < {t['call_page_p95_ms']:.0f} ms:"
        f" {'met' if t['call_page_met'] else 'MISSED'} ({t['call_page_worst_p95_ms']} ms)"
    )
    out.append(
        f"load average before {result['load_average_before']} after {result['load_average_after']};"
        f" machine busy {result['machine_busy_during']:.0%} while measuring ({result['measure_wall_s']} s)"
    )
    for kind, e in result["explain"].items():
        for n, st in enumerate(e["statements"], 1):
            out.append(f"\nEXPLAIN (ANALYZE, BUFFERS), {kind}: {e['variant']}, statement {n}: args {shown(st['args'])}")
            out.extend("    " + line for line in st["plan"])
    p = result["app_prepared_statements"]
    out.append(
        f"\nprepared search statements on the app's pooled connection: {p['statements']},"
        f" run {p['custom_plans']} times with custom plans, {p['generic_plans']} with generic ones"
    )
    for g in p["with_generic_plans"]:
        out.append(f"    generic x{g['generic_plans']}: {g['statement']}")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=50_000)
    parser.add_argument("--segments", type=int, default=1_000_000, help="transcript lines in total")
    parser.add_argument("--requests", type=int, default=200, help="timed requests per kind")
    parser.add_argument("--warmup", type=int, default=20, help="untimed requests per kind first")
    parser.add_argument("--seed", type=int, default=6)
    parser.add_argument("--database-url", help="postgresql+asyncpg://...; default: a throwaway cluster")
    parser.add_argument("--reuse", action="store_true", help="use an already seeded database of the same size")
    parser.add_argument("--explain", type=int, default=3, help="EXPLAIN the N slowest search kinds")
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args()
    if args.segments < 2 * args.calls:
        parser.error("--segments must be at least twice --calls")

    def go(url: str) -> dict[str, Any]:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            return asyncio.run(run(args, url, Path(tmp)))

    if args.database_url:
        if make_url(args.database_url).get_backend_name() != "postgresql":
            parser.error("--database-url must be a PostgreSQL URL")
        result = go(args.database_url)
    else:
        with ThrowawayPostgres() as pg:
            result = go(pg.url)
    print(report(result))
    print(json.dumps(result, indent=2, default=str))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))


if __name__ == "__main__":
    main()
