"""Contact import through the API: 100,000 CSV rows with some bad ones, then the same file again.

    .venv/bin/python scripts/bench_import.py --rows 100000 [--database-url postgresql+asyncpg://...]

Runs the real app in-process (uvicorn on a loopback socket, SQLite in a temp dir unless
--database-url), uploads the file as an ops user, and prints the time, the per-row report summary and
what the re-import changed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import socket
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import httpx
import uvicorn

from app.auth.keys import Role, create_api_key
from app.db import make_engine, make_sessionmaker
from app.main import create_app
from app.migrate import upgrade
from app.settings import Settings


def make_csv(rows: int, seed: int) -> tuple[bytes, int]:
    rng = random.Random(seed)
    lines = ["phone,name,state,consent,consent_at,consent_source"]
    bad = 0
    for i in range(rows):
        if i % 997 == 0:
            lines.append(f"not-a-number-{i},Bad {i},NY,written,2026-05-01T10:00:00Z,web")
            bad += 1
            continue
        npa = rng.choice(["212", "305", "512", "415", "206", "617", "312", "404"])
        lines.append(f"+1{npa}{200 + i // 10000}{i % 10000:04d},Person {i},,written,2026-05-01T10:00:00Z,web form")
    return ("\n".join(lines) + "\n").encode(), bad


async def run(rows: int, database_url: str | None, data_dir: Path) -> dict[str, object]:
    settings = Settings(
        public_base_url="http://127.0.0.1:8000",
        database_url=database_url,
        data_dir=data_dir,
        dialer_in_process=False,
        log_level="WARNING",
    )
    with ThreadPoolExecutor(1) as pool:  # alembic's env runs its own event loop
        pool.submit(upgrade, settings.effective_database_url).result()
    engine = make_engine(settings.effective_database_url)
    async with make_sessionmaker(engine)() as session:
        key = await create_api_key(session, role=Role.ops, name="bench", now=datetime.now(UTC))
    await engine.dispose()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    server = uvicorn.Server(uvicorn.Config(create_app(settings), log_level="warning", lifespan="on"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    data, bad = make_csv(rows, 7)
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    try:
        async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=600) as api:
            campaign = (
                await api.post(
                    "/api/v1/campaigns",
                    json={"name": "bench", "purpose": "informational", "subject": "bench", "caller_id": "+12125550100"},
                )
            ).json()["id"]
            url = f"/api/v1/campaigns/{campaign}/contacts/csv"
            t0 = time.perf_counter()
            first = (await api.post(url, files={"file": ("c.csv", data, "text/csv")})).json()
            first_s = time.perf_counter() - t0
            t1 = time.perf_counter()
            second = (await api.post(url, files={"file": ("c.csv", data, "text/csv")})).json()
            second_s = time.perf_counter() - t1
    finally:
        server.should_exit = True
        await task
        sock.close()
    return {
        "rows": rows,
        "bad_rows_planted": bad,
        "database": settings.effective_database_url.split(":")[0],
        "first_import_s": round(first_s, 1),
        "first": {k: first[k] for k in ("total", "accepted", "rejected", "created", "updated", "unchanged")},
        "error_codes": dict(Counter(e["code"] for e in first["errors"])),
        "reimport_s": round(second_s, 1),
        "reimport": {k: second[k] for k in ("created", "updated", "unchanged")},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--database-url")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        print(json.dumps(asyncio.run(run(args.rows, args.database_url, Path(tmp))), indent=2))


if __name__ == "__main__":
    main()
