"""What the server writes to disk and to its logs keeps callers' data private."""

from __future__ import annotations

import asyncio
import stat
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from app.console.sessions import load_secret
from app.db import make_engine
from app.settings import Settings


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_sqlite_file_its_directory_and_the_console_secret_are_private(tmp_path: Path) -> None:
    data = tmp_path / "var"
    engine = make_engine(f"sqlite+aiosqlite:///{data / 'switchboard.db'}")

    async def touch() -> None:
        async with engine.begin() as conn:
            await conn.execute(text("CREATE TABLE t (x INTEGER)"))
        await engine.dispose()

    asyncio.run(touch())
    load_secret(Settings(data_dir=data))
    assert mode(data) == 0o700
    assert mode(data / "switchboard.db") == 0o600
    assert mode(data / "console_secret") == 0o600
    # a database file left readable by an older version is narrowed
    (data / "switchboard.db").chmod(0o644)
    make_engine(f"sqlite+aiosqlite:///{data / 'switchboard.db'}")
    assert mode(data / "switchboard.db") == 0o600


@pytest.mark.asyncio
async def test_a_failed_statement_does_not_carry_its_parameters_into_the_error(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'x.db'}")
    try:
        with pytest.raises(DBAPIError) as failed:
            async with engine.begin() as conn:
                await conn.execute(text("INSERT INTO missing_table VALUES (:phone)"), {"phone": "+12125550123"})
    finally:
        await engine.dispose()
    assert "+12125550123" not in str(failed.value)
    assert "hidden" in str(failed.value)


@pytest.mark.asyncio
async def test_instants_come_back_with_their_offset_from_sqlite(tmp_path: Path) -> None:
    from datetime import UTC, datetime, timedelta, timezone

    from sqlalchemy import Column, Integer, MetaData, Table, insert, select
    from sqlalchemy.exc import StatementError

    from app.db import UtcDateTime

    table = Table("t", MetaData(), Column("id", Integer, primary_key=True), Column("at", UtcDateTime()))
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 't.db'}")
    new_york = datetime(2026, 12, 2, 9, 30, tzinfo=timezone(timedelta(hours=-5)))
    try:
        async with engine.begin() as conn:
            await conn.run_sync(table.metadata.create_all)
            await conn.execute(insert(table).values(id=1, at=new_york))
            back = (await conn.execute(select(table.c.at))).scalar_one()
            with pytest.raises(StatementError, match="names no instant"):
                await conn.execute(insert(table).values(id=2, at=datetime(2026, 12, 2, 9, 30)))
    finally:
        await engine.dispose()
    assert back == new_york and back.tzinfo is UTC and back.isoformat() == "2026-12-02T14:30:00+00:00"


def test_every_instant_column_is_stored_as_an_instant() -> None:
    """Lists, contacts, decisions, attempts, calls and exports all read instants through these columns:
    none of them may come back without its offset on SQLite."""
    from sqlalchemy import DateTime

    from app.db import Base, UtcDateTime
    from app.models import import_all_models

    import_all_models()

    plain = [
        f"{table.name}.{column.name}"
        for table in Base.metadata.tables.values()
        for column in table.columns
        if isinstance(column.type, DateTime) and not isinstance(column.type, UtcDateTime)
    ]
    instants = [
        f"{table.name}.{column.name}"
        for table in Base.metadata.tables.values()
        for column in table.columns
        if isinstance(column.type, UtcDateTime)
    ]
    assert plain == []
    assert {"calls.started_at", "contacts.created_at", "consents.granted_at"} <= set(instants), instants
