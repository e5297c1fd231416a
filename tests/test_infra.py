"""The test services are real: a Redis server and a PostgreSQL database.

scripts/test starts both; under CI=true these tests fail (never skip) if the
services are missing.
"""

from __future__ import annotations

import os
import uuid

import pytest
import redis.asyncio as aioredis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine


@pytest.mark.redis
@pytest.mark.asyncio
async def test_redis_is_a_real_server(redis_url: str) -> None:
    client = aioredis.from_url(redis_url)
    key = f"switchboard:test_infra:{uuid.uuid4().hex}"
    try:
        assert await client.ping() is True
        await client.set(key, b"hello", ex=60)
        assert await client.get(key) == b"hello"
        info = await client.info("server")
        assert info.get("redis_version"), info
        assert info.get("tcp_port") == int(redis_url.rsplit(":", 1)[1].split("/", 1)[0])
    finally:
        await client.delete(key)
        await client.aclose()


@pytest.mark.postgres
@pytest.mark.asyncio
async def test_postgres_is_a_real_server(postgres_url: str) -> None:
    engine = create_async_engine(postgres_url)
    try:
        async with engine.connect() as conn:
            version = (await conn.execute(text("select version()"))).scalar_one()
            assert "PostgreSQL" in version
            db = (await conn.execute(text("select current_database()"))).scalar_one()
            assert db == "switchboard_test"
    finally:
        await engine.dispose()


@pytest.mark.postgres
@pytest.mark.asyncio
async def test_postgres_round_trips_rows(postgres_url: str) -> None:
    engine = create_async_engine(postgres_url)
    table = f"infra_{uuid.uuid4().hex[:12]}"
    try:
        async with engine.begin() as conn:
            await conn.execute(text(f"create temporary table {table} (id int, name text)"))
            await conn.execute(
                text(f"insert into {table} values (:id, :name)"),
                {"id": 1, "name": "alice"},
            )
            rows = (await conn.execute(text(f"select id, name from {table}"))).all()
            assert [tuple(r) for r in rows] == [(1, "alice")]
    finally:
        await engine.dispose()


@pytest.mark.redis
def test_redis_server_binary_is_available(redis_server_bin: str) -> None:
    assert os.path.isfile(redis_server_bin), redis_server_bin
    assert os.access(redis_server_bin, os.X_OK), redis_server_bin
