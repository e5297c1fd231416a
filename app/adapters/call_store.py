"""Live call state in Redis (real Redis, or the in-process stand-in on embedded defaults).

Keys, all under ``{prefix}:call:{sid}:`` and TTL'd:
  meta    hash   call metadata (JSON values): sids, direction, started_at, status, end request...
  lines   hash   transcript lines by ``{epoch}-{seq}`` (HSET: a retried write cannot duplicate a line,
                 and two streams of one call, each numbering from what it restored, cannot collide)
  events  hash   call events by ``{epoch}-{n}``
  lease   string ``{node}:{epoch}`` with a PX expiry: which stream drives the call
  epoch   int    bumped by every lease acquisition; a stale owner can no longer renew
and ``{prefix}:calls:live``, a sorted set of live calls scored by lease expiry (ms), which the
orphan sweeper reads.
"""

from __future__ import annotations

from typing import Any

import orjson
from redis.asyncio import Redis

CALL_TTL_S = 6 * 3600
ENDED_TTL_S = 3600

# KEYS: lease, epoch, live; ARGV: node, ttl_ms, now_ms, sid, takeover(0/1), key ttl s
_ACQUIRE = """
local holder = redis.call('GET', KEYS[1])
if holder and ARGV[5] ~= '1' then
  return {0, holder}
end
local epoch = redis.call('INCR', KEYS[2])
redis.call('EXPIRE', KEYS[2], ARGV[6])
redis.call('SET', KEYS[1], ARGV[1] .. ':' .. epoch, 'PX', ARGV[2])
redis.call('ZADD', KEYS[3], tonumber(ARGV[3]) + tonumber(ARGV[2]), ARGV[4])
return {epoch, holder or ''}
"""

# KEYS: lease, live; ARGV: expected holder, ttl_ms, now_ms, sid
_RENEW = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('ZADD', KEYS[2], tonumber(ARGV[3]) + tonumber(ARGV[2]), ARGV[4])
return 1
"""

# KEYS: lease; ARGV: expected holder
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

# KEYS: lock; ARGV: token
_UNLOCK = _RELEASE


class CallStore:
    def __init__(self, redis: Redis, *, prefix: str = "sb") -> None:
        self.redis = redis
        self.prefix = prefix
        self.live_key = f"{prefix}:calls:live"
        self._acquire = redis.register_script(_ACQUIRE)
        self._renew = redis.register_script(_RENEW)
        self._release = redis.register_script(_RELEASE)
        self._unlock = redis.register_script(_UNLOCK)

    def key(self, call_sid: str, part: str) -> str:
        return f"{self.prefix}:call:{call_sid}:{part}"

    def takeover_channel(self, call_sid: str) -> str:
        return f"{self.prefix}:call:{call_sid}:takeover"

    # -- metadata ----------------------------------------------------------------------------

    async def put_meta(self, call_sid: str, meta: dict[str, Any]) -> None:
        key = self.key(call_sid, "meta")
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping={k: orjson.dumps(v) for k, v in meta.items()})
            pipe.expire(key, CALL_TTL_S)
            await pipe.execute()

    async def get_meta(self, call_sid: str) -> dict[str, Any]:
        raw = await self.redis.hgetall(self.key(call_sid, "meta"))
        return {_text(k): orjson.loads(v) for k, v in raw.items()}

    # -- transcript lines and events ---------------------------------------------------------

    async def put_line(self, call_sid: str, field: str, line: dict[str, Any]) -> None:
        key = self.key(call_sid, "lines")
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, field, orjson.dumps(line))
            pipe.expire(key, CALL_TTL_S)
            await pipe.execute()

    async def get_lines(self, call_sid: str) -> list[dict[str, Any]]:
        raw = await self.redis.hgetall(self.key(call_sid, "lines"))
        return [orjson.loads(raw[k]) for k in sorted(raw)]

    async def put_event(self, call_sid: str, key: str, event: dict[str, Any]) -> None:
        """Events are keyed ``{epoch}-{n}`` by the stream that recorded them (several per call)."""
        hkey = self.key(call_sid, "events")
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(hkey, key, orjson.dumps(event))
            pipe.expire(hkey, CALL_TTL_S)
            await pipe.execute()

    async def get_events_by_key(self, call_sid: str) -> dict[str, dict[str, Any]]:
        raw = await self.redis.hgetall(self.key(call_sid, "events"))
        return {_text(k): orjson.loads(v) for k, v in raw.items()}

    # -- who drives the call -----------------------------------------------------------------

    async def acquire_lease(
        self, call_sid: str, *, node: str, ttl_ms: int, now_ms: int, takeover: bool
    ) -> tuple[int, str]:
        """(epoch, previous holder). Epoch 0: refused, someone holds it and takeover was not asked."""
        keys = [self.key(call_sid, "lease"), self.key(call_sid, "epoch"), self.live_key]
        args: list[str | int] = [node, ttl_ms, now_ms, call_sid, int(takeover), CALL_TTL_S]
        epoch, holder = await self._acquire(keys=keys, args=args)
        return int(epoch), _text(holder)

    async def renew_lease(self, call_sid: str, *, holder: str, ttl_ms: int, now_ms: int) -> bool:
        keys = [self.key(call_sid, "lease"), self.live_key]
        return bool(await self._renew(keys=keys, args=[holder, ttl_ms, now_ms, call_sid]))

    async def release_lease(self, call_sid: str, *, holder: str) -> None:
        await self._release(keys=[self.key(call_sid, "lease")], args=[holder])

    async def lease_holder(self, call_sid: str) -> str | None:
        raw = await self.redis.get(self.key(call_sid, "lease"))
        return _text(raw) if raw is not None else None

    async def finish(self, call_sid: str) -> None:
        """The call is archived: drop it from the live index and let its keys expire soon."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.zrem(self.live_key, call_sid)
            for part in ("meta", "lines", "events", "epoch"):
                pipe.expire(self.key(call_sid, part), ENDED_TTL_S)
            pipe.delete(self.key(call_sid, "lease"))
            await pipe.execute()

    async def expired_calls(self, now_ms: int, *, limit: int = 100) -> list[str]:
        raw = await self.redis.zrangebyscore(self.live_key, 0, now_ms, start=0, num=limit)
        return [_text(sid) for sid in raw]

    # -- a cluster-wide lock -----------------------------------------------------------------

    async def try_lock(self, name: str, *, token: str, ttl_ms: int) -> bool:
        return bool(await self.redis.set(f"{self.prefix}:lock:{name}", token, nx=True, px=ttl_ms))

    async def unlock(self, name: str, *, token: str) -> None:
        await self._unlock(keys=[f"{self.prefix}:lock:{name}"], args=[token])


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
