"""``switchboard serve`` on embedded defaults: a fresh DATA_DIR is ready to archive calls, with no other step."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import httpx
import pytest

from app.migrate import MIGRATIONS_DIR
from app.settings import Settings
from tests.support import AUTH_TOKEN, PUBLIC_BASE, server_process

pytestmark = pytest.mark.e2e


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    from app.migrate import alembic_config

    return str(ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head())


def test_serve_brings_a_fresh_embedded_database_to_head(tmp_path: Path) -> None:
    assert MIGRATIONS_DIR.is_dir()
    db = tmp_path / "data" / "switchboard.db"
    settings = Settings(
        public_base_url=PUBLIC_BASE,
        twilio_auth_token=AUTH_TOKEN,
        data_dir=tmp_path / "data",
        openai_realtime_url="ws://127.0.0.1:9/v1",
    )
    assert not db.exists()
    with server_process(settings, {"DATA_DIR": str(tmp_path / "data")}) as (base, _proc):
        # served at all means start-up (and its migration) finished
        assert httpx.get(base + "/healthz", timeout=60).status_code == 200
        with sqlite3.connect(db) as conn:
            tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            (revision,) = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    assert {"calls", "transcript_segments", "campaigns", "contacts"} <= tables
    assert revision == head_revision()


def test_serve_puts_what_start_up_built_out_of_the_collectors_reach() -> None:
    import gc

    from app.cli import GC_THRESHOLDS, quiet_garbage_collector

    before, thresholds = gc.get_freeze_count(), gc.get_threshold()
    try:
        quiet_garbage_collector()
        assert gc.get_freeze_count() > before  # a full collection no longer walks the modules and the app
        assert gc.get_threshold() == GC_THRESHOLDS
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)


def test_a_full_collection_runs_on_its_own_clock() -> None:
    import gc

    from app.cli import collect_every

    before = gc.get_stats()[2]["collections"]
    collect_every(0.0, rounds=2)
    assert gc.get_stats()[2]["collections"] >= before + 2
