"""Fuzz the HTTP API from its own OpenAPI document with schemathesis, as an admin and as an ops key.

    .venv/bin/python scripts/fuzz_api.py [--examples 50] [--database postgres|sqlite] [--seed 1]

Starts `switchboard serve` on a loopback port (PostgreSQL and real Redis from SWITCHBOARD_TEST_POSTGRES_URL
and SWITCHBOARD_TEST_REDIS_URL when set, as scripts/test exports them; else SQLite and the in-process
Redis stand-in), seeds an archived call so the read routes have something to find, makes one admin and one
ops key, then runs `schemathesis run` with the examples, coverage and fuzzing phases and every check (no 5xx,
responses that match the document, status codes and content types it declares...) twice per key: once as it
makes up every value, and once with `campaign_id` and `contact_id` set to a campaign and contact made through
the API first, so the campaign routes' own logic is fuzzed and not only their 404. Exits non-zero if any run
found a failure; the schemathesis reports go to var/fuzz/. docs/API_FUZZING.md has the last full run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.archive.service import CallRecord, archive_call  # noqa: E402
from app.auth.keys import Role, create_api_key  # noqa: E402
from app.core.bridge import TranscriptLine  # noqa: E402
from app.db import make_engine, make_sessionmaker  # noqa: E402
from app.migrate import upgrade  # noqa: E402

CHECKS = "all"
# Left out, with their reason (docs/API_FUZZING.md): positive_data_acceptance expects every request the
# document allows to succeed, but a phone number, a window's order or a campaign's existence cannot be
# said in JSON Schema, so a well-formed '0' is rightly a 422; negative_data_rejection expects
# pydantic's documented lax coercions ("0" as a date, 1 as true) to be refused.
EXCLUDED_CHECKS = "positive_data_acceptance,negative_data_rejection"


FUZZ_REDIS_DB = 9  # the fuzzer sets caps and DNC entries: never in the database other tests use


def own_redis(url: str) -> str:
    """The same Redis server, database FUZZ_REDIS_DB, emptied."""
    from redis import Redis

    base = url.rsplit("/", 1)[0] if url.count("/") >= 3 else url
    fuzz = f"{base}/{FUZZ_REDIS_DB}"
    client = Redis.from_url(fuzz)
    client.flushdb()
    client.close()
    return fuzz


async def _on_server(url: str, statement: str) -> None:
    """Run one statement on the PostgreSQL server of ``url``, from its maintenance database."""
    import asyncpg
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    conn = await asyncpg.connect(
        host=parsed.host, port=parsed.port, user=parsed.username, password=parsed.password, database="postgres"
    )
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


async def own_database(url: str) -> tuple[str, str]:
    """A new PostgreSQL database on the same server (the fuzzer replaces the national registry, adds
    DNC entries and consents: none of that may reach other tests' data). Returns (url, name)."""
    from sqlalchemy.engine import make_url

    name = f"sb_fuzz_{os.urandom(4).hex()}"
    await _on_server(url, f'CREATE DATABASE "{name}"')
    return make_url(url).set(database=name).render_as_string(hide_password=False), name


async def drop_database(url: str, name: str) -> None:
    await _on_server(url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def seed(database_url: str) -> tuple[str, str]:
    """An admin and an ops key, and an archived call for the read routes."""
    engine = make_engine(database_url)
    try:
        sessions = make_sessionmaker(engine)
        now = datetime.now(UTC)
        async with sessions() as session:
            admin = await create_api_key(session, role=Role.admin, name="fuzz admin", now=now)
        async with sessions() as session:
            ops = await create_api_key(session, role=Role.ops, name="fuzz ops", now=now, grants=("transcripts",))
        sid = "CA" + os.urandom(16).hex()
        await archive_call(
            sessions,
            CallRecord(
                call_sid=sid, stream_sid="MZ" + os.urandom(16).hex(), direction="inbound", from_number="+12125550123",
                to_number="+12125550100", status="completed", end_reason="caller hung up", started_at=now,
                ended_at=now, usage=None, lines=[TranscriptLine(1, "agent", "Thank you for calling.", 100),
                                                 TranscriptLine(2, "caller", "I need a cleaning.", 2500)],
                events=[], campaign_id=None, cost_micros=1234, price_version="fuzz", redacted=False,
            ),
        )  # fmt: skip
        return admin, ops
    finally:
        await engine.dispose()


def seed_campaign(base: str, key: str, data: Path) -> Path:
    """A campaign with one contact, made through the API; a schemathesis config that names them."""
    headers = {"Authorization": f"Bearer {key}"}
    campaign = httpx.post(f"{base}/api/v1/campaigns", headers=headers, timeout=30, json={
        "name": "July reminders", "purpose": "informational", "subject": "appointment reminders",
        "caller_id": "+12125550100", "window_start": "10:00", "window_end": "18:00",
    })  # fmt: skip
    campaign.raise_for_status()
    cid = campaign.json()["id"]
    imported = httpx.post(f"{base}/api/v1/campaigns/{cid}/contacts", headers=headers, timeout=30, json=[{
        "phone": "(212) 555-0123", "name": "Ada", "state": "NY", "consent": "written",
        "consent_at": "2026-05-01T10:00:00Z", "consent_source": "web form",
    }])  # fmt: skip
    imported.raise_for_status()
    (row,) = imported.json()["rows"]
    config = data / "schemathesis.toml"
    config.write_text(f"[parameters]\ncampaign_id = {cid}\ncontact_id = {row['contact_id']}\n")
    return config


def run_schemathesis(
    base: str, key: str, label: str, args: argparse.Namespace, reports: Path, config: Path | None = None
) -> int:
    command = [
        str(Path(sys.executable).parent / "schemathesis"),
        *(["--config-file", str(config)] if config is not None else []),
        "run", f"{base}/openapi.json",
        "--phases", "examples,coverage,fuzzing", "--checks", CHECKS, "--exclude-checks", EXCLUDED_CHECKS,
        "--max-examples", str(args.examples),
        "--seed", str(args.seed), "--header", f"Authorization: Bearer {key}", "--request-timeout", "30",
        "--workers", "1", "--continue-on-failure", "--generation-allow-x00", "true",
        "--report", "junit", "--report-dir", str(reports / label),
        "--exclude-path-regex", "^/twilio/",  # signed by Twilio: every fuzzed request is a 403 there
    ]  # fmt: skip
    print(f"\n== schemathesis as {label}: {' '.join(command[: command.index('run') + 2])} ...", flush=True)
    started = time.monotonic()
    rc = subprocess.call(command, cwd=ROOT)
    print(f"== {label}: exit {rc} in {time.monotonic() - started:.0f} s", flush=True)
    return rc


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=50, help="max examples per operation (fuzzing phase)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--database", choices=["postgres", "sqlite"], default=None)
    args = parser.parse_args()
    data = Path(tempfile.mkdtemp(prefix="sb-fuzz-"))
    pg = os.environ.get("SWITCHBOARD_TEST_POSTGRES_URL")
    database = args.database or ("postgres" if pg else "sqlite")
    made: str | None = None
    if database == "postgres" and pg:
        database_url, made = asyncio.run(own_database(pg))
    else:
        database_url = f"sqlite+aiosqlite:///{data / 'fuzz.db'}"
    redis_url = os.environ.get("SWITCHBOARD_TEST_REDIS_URL", "")
    redis_url = own_redis(redis_url) if redis_url else ""
    try:
        return run(args, data, database, database_url, redis_url)
    finally:
        if made is not None and pg:
            asyncio.run(drop_database(pg, made))
        if redis_url:
            own_redis(redis_url)


def run(args: argparse.Namespace, data: Path, database: str, database_url: str, redis_url: str) -> int:
    upgrade(database_url)
    admin, ops = asyncio.run(seed(database_url))
    port = free_port()
    env = {
        **os.environ, "DATABASE_URL": database_url, "REDIS_URL": redis_url,
        "DATA_DIR": str(data), "LOG_LEVEL": "WARNING", "OPENAI_REALTIME_URL": "ws://127.0.0.1:9/v1",
        "AUTH_FAILURE_BURST": "1000000",  # the fuzzer sends invalid keys on purpose: it checks they get 401
    }  # fmt: skip
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "switchboard"), "serve", "--host", "127.0.0.1", "--port", str(port)],
        cwd=ROOT,
        env=env,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                print("server did not start", file=sys.stderr)
                return 2
            time.sleep(0.2)
        reports = ROOT / "var" / "fuzz"
        config = seed_campaign(base, admin, data)
        results = {}
        for label, key in (("admin", admin), ("ops", ops)):
            results[label] = run_schemathesis(base, key, label, args, reports)
            results[f"{label} on a campaign"] = run_schemathesis(base, key, f"{label}-campaign", args, reports, config)
    finally:
        server.terminate()
        server.wait(timeout=30)
    print(f"\n== database {database}; results {results}")
    return 0 if all(rc == 0 for rc in results.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
