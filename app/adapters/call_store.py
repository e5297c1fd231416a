"""Live call state in Redis (real Redis, or the in-process stand-in on embedded defaults)."""

from __future__ import annotations

from typing import Any

import orjson
from redis.asyncio import Redis

CALL_TTL_S = 6 * 3600


class CallStore:
    def __init__(self, redis: Redis, *, prefix: str = "sb") -> None:
        self.redis = redis
        self.prefix = prefix

    def _meta_key(self, call_sid: str) -> str:
        return f"{self.prefix}:call:{call_sid}:meta"

    async def put_meta(self, call_sid: str, meta: dict[str, Any]) -> None:
        key = self._meta_key(call_sid)
        await self.redis.hset(key, mapping={k: orjson.dumps(v) for k, v in meta.items()})
        await self.redis.expire(key, CALL_TTL_S)

    async def get_meta(self, call_sid: str) -> dict[str, Any]:
        raw = await self.redis.hgetall(self._meta_key(call_sid))
        return {(k.decode() if isinstance(k, bytes) else k): orjson.loads(v) for k, v in raw.items()}
