"""A node's Redis client: a bounded pool whose commands wait for a free connection instead of failing.

redis-py's default pool raises MaxConnectionsError as soon as its connections are all in use; at 100
concurrent calls that lost budget meter charges and live transcript writes (a soak found 12,339)."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest

from app.runtime import make_redis
from app.settings import Settings

pytestmark = [pytest.mark.asyncio, pytest.mark.redis]


def settings(tmp_path: Path, redis_url: str, **overrides: object) -> Settings:
    return Settings(redis_url=redis_url, data_dir=tmp_path, log_json=False, **overrides)  # type: ignore[arg-type]


async def test_more_concurrent_commands_than_connections_all_succeed(tmp_path: Path, redis_url: str) -> None:
    name = f"pool-test-{uuid.uuid4().hex}"  # redis-py passes ?client_name= to CLIENT SETNAME on each connection
    sep = "&" if "?" in redis_url else "?"
    client = make_redis(settings(tmp_path, f"{redis_url}{sep}client_name={name}", redis_max_connections=2))
    key = f"{name}:n"
    try:
        # 40 commands in flight at once over 2 connections: each waits its turn, none fails
        results = await asyncio.gather(*(client.incr(key) for _ in range(40)))
        assert sorted(results) == list(range(1, 41))
        opened = [c for c in await client.client_list() if c.get("name") == name]
        assert 1 <= len(opened) <= 2
    finally:
        await client.delete(key)
        await client.aclose()


async def test_the_url_pool_size_wins_over_the_setting(tmp_path: Path, redis_url: str) -> None:
    sep = "&" if "?" in redis_url else "?"
    client = make_redis(settings(tmp_path, redis_url + f"{sep}max_connections=7", redis_max_connections=2))
    try:
        assert client.connection_pool.max_connections == 7
        assert await client.ping()
    finally:
        await client.aclose()
