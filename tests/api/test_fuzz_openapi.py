"""The API fuzzed from its own OpenAPI document (schemathesis: examples, coverage and fuzzing phases), as
an admin and as an ops key, on made-up ids and on a real campaign, through a real server: no 5xx, and every
response (status, content type, headers, body) is one the document declares. scripts/fuzz_api.py is the
whole run; this is its smaller form (docs/API_FUZZING.md has a full run)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.redis, pytest.mark.postgres]

ROOT = Path(__file__).resolve().parents[2]


def test_schemathesis_finds_no_server_error_and_no_response_outside_the_document(
    redis_url: str, postgres_url: str
) -> None:
    run = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "fuzz_api.py"), "--examples", "8", "--database", "postgres"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
        env={**__import__("os").environ, "SWITCHBOARD_TEST_REDIS_URL": redis_url,
             "SWITCHBOARD_TEST_POSTGRES_URL": postgres_url},
    )  # fmt: skip
    summary = [line for line in run.stdout.splitlines() if line.startswith("==") or "generated" in line]
    # schemathesis' own report (each failure with its curl line), without the server's JSON log lines
    report = "\n".join(line for line in run.stdout.splitlines() if not line.startswith("{"))
    assert run.returncode == 0, "\n".join(summary) + "\n" + report[-8000:]
    # as each key, on made-up ids and on a real campaign and contact
    assert "results {'admin': 0, 'admin on a campaign': 0, 'ops': 0, 'ops on a campaign': 0}" in run.stdout
