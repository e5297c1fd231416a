"""Spend counters in Redis, shared by every node, updated atomically; caps; alerts once per threshold.

Keys (µ$ integers): ``{prefix}:spend:day:{YYYY-MM-DD}``, ``{prefix}:spend:campaign:{id}:{day}``,
``{prefix}:spend:call:{sid}``; the day's closing reserves under ``{prefix}:spend:reserve:{day}``. One
Lua script increments all of a charge's counters together and settles the charging call's reserve, so
N nodes charging at once cannot take the day past its cap by more than one call's overrun, and that
call is stopped.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

import orjson
from redis.asyncio import Redis

DAY_TTL_S = 4 * 24 * 3600
CALL_TTL_S = 2 * 24 * 3600

# A live call that has not charged for this long has gone (its node died): its reserve is released.
RESERVE_STALE_MS = 30_000

# KEYS: call, day, campaign-day (may be ""), day reserves (hash sid -> µ$), day reserve touches (zset
# sid -> ms), day reserved total.
# ARGV: amount, call ttl, day ttl, call sid, wanted reserve (-1: keep what is held), day cap (-1: none),
# stale ms.
# Returns {call, day, campaign-day, reserved total, reserve held for this call, overrun}.
#
# The day's cap is a pool: every live call holds a closing reserve out of it. A charge first comes out
# of the free pool; once that is empty, out of the charging call's own reserve, which shrinks (the call
# is told to close); past its reserve the excess is its overrun (the call is stopped at once). So
# day + reserved <= cap holds after every charge except by an overrun, and an overrun stops its call.
_CHARGE = """
local amount = tonumber(ARGV[1])
local call = redis.call('INCRBY', KEYS[1], amount)
redis.call('EXPIRE', KEYS[1], ARGV[2])
local day = redis.call('INCRBY', KEYS[2], amount)
redis.call('EXPIRE', KEYS[2], ARGV[3])
local campaign = 0
if KEYS[3] ~= '' then
  campaign = redis.call('INCRBY', KEYS[3], amount)
  redis.call('EXPIRE', KEYS[3], ARGV[3])
end
local cap = tonumber(ARGV[6])
if cap < 0 then
  return {call, day, campaign, 0, 0, 0}
end
local sid = ARGV[4]
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local total = tonumber(redis.call('GET', KEYS[6]) or '0')
local stale = redis.call('ZRANGEBYSCORE', KEYS[5], '-inf', now - tonumber(ARGV[7]), 'LIMIT', 0, 16)
for _, other in ipairs(stale) do
  if other ~= sid then
    total = total - tonumber(redis.call('HGET', KEYS[4], other) or '0')
    redis.call('HDEL', KEYS[4], other)
    redis.call('ZREM', KEYS[5], other)
  end
end
local held = tonumber(redis.call('HGET', KEYS[4], sid) or '0')
local want = tonumber(ARGV[5])
if want < 0 then
  want = held
end
local others = total - held
local keep = cap - day - others
if keep > want then
  keep = want
end
local overrun = 0
if keep < 0 then
  overrun = -keep
  keep = 0
end
total = others + keep
redis.call('SET', KEYS[6], total, 'EX', ARGV[3])
redis.call('HSET', KEYS[4], sid, keep)
redis.call('EXPIRE', KEYS[4], ARGV[3])
redis.call('ZADD', KEYS[5], now, sid)
redis.call('EXPIRE', KEYS[5], ARGV[3])
return {call, day, campaign, total, keep, overrun}
"""

# KEYS: day reserves, day reserve touches, day reserved total; ARGV: call sid
_RELEASE = """
local held = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
if held ~= 0 then
  redis.call('DECRBY', KEYS[3], held)
end
return held
"""


# KEYS: the call's billed-minutes counter; ARGV: minutes started so far, ttl. Returns how many of them
# nobody has billed yet (and marks them billed): a call resumed on another node does not pay twice.
_CLAIM_MINUTES = """
local billed = tonumber(redis.call('GET', KEYS[1]) or '0')
local started = tonumber(ARGV[1])
if started <= billed then
  return 0
end
redis.call('SET', KEYS[1], started, 'EX', ARGV[2])
return started - billed
"""


@dataclass(frozen=True, slots=True)
class Totals:
    call: int
    day: int
    campaign_day: int
    day_reserved: int = 0  # what every live call holds for its closing line, together
    reserve_left: int | None = None  # what is held for this call (None: no day cap, nothing held)
    overrun: int = 0  # spent past its reserve with the pool empty


class BudgetLedger:
    def __init__(self, redis: Redis, *, prefix: str = "sb") -> None:
        self.redis = redis
        self.prefix = prefix
        self._charge = redis.register_script(_CHARGE)
        self._release = redis.register_script(_RELEASE)
        self._claim_minutes = redis.register_script(_CLAIM_MINUTES)

    def _day_key(self, day: date) -> str:
        return f"{self.prefix}:spend:day:{day.isoformat()}"

    def _campaign_key(self, campaign_id: int, day: date) -> str:
        return f"{self.prefix}:spend:campaign:{campaign_id}:{day.isoformat()}"

    def _call_key(self, call_sid: str) -> str:
        return f"{self.prefix}:spend:call:{call_sid}"

    def _reserve_keys(self, day: date) -> list[str]:
        base = f"{self.prefix}:spend:reserve:{day.isoformat()}"
        return [base, f"{base}:touched", f"{base}:total"]

    async def charge(
        self,
        *,
        call_sid: str,
        day: date,
        campaign_id: int | None,
        micros: int,
        day_cap: int | None = None,
        reserve: int | None = None,
    ) -> Totals:
        """Add ``micros`` to the call's, the day's and the campaign-day's spend, in one step.

        With a ``day_cap``, the call also holds a closing reserve in the day's pool: ``reserve`` is
        what it wants held (``None``: keep what it holds, as a call that is closing does), and the
        result says what it got (``reserve_left``) and any ``overrun``.
        """
        keys = [
            self._call_key(call_sid),
            self._day_key(day),
            self._campaign_key(campaign_id, day) if campaign_id is not None else "",
            *self._reserve_keys(day),
        ]
        args: list[int | str] = [
            micros, CALL_TTL_S, DAY_TTL_S, call_sid,
            -1 if reserve is None else reserve, -1 if day_cap is None else day_cap, RESERVE_STALE_MS,
        ]  # fmt: skip
        call, day_total, campaign, reserved, held, overrun = await self._charge(keys=keys, args=args)
        return Totals(
            int(call),
            int(day_total),
            int(campaign),
            day_reserved=int(reserved),
            reserve_left=None if day_cap is None else int(held),
            overrun=int(overrun),
        )

    async def claim_minutes(self, call_sid: str, started: int) -> int:
        """Of the ``started`` telephony minutes of a call, how many no node has billed yet."""
        key = f"{self._call_key(call_sid)}:minutes"
        return int(await self._claim_minutes(keys=[key], args=[started, CALL_TTL_S]))

    async def release(self, *, call_sid: str, day: date) -> int:
        """The call has ended: what it held for its closing line goes back to the day's pool."""
        return int(await self._release(keys=self._reserve_keys(day), args=[call_sid]))

    async def day_pool(self, day: date) -> tuple[int, int]:
        """The day's spend and what the calls in progress hold for their closing lines, read together
        (one MGET), so a charge that moves µ$ from a reserve into the spend is seen whole or not at all."""
        spent, reserved = await self.redis.mget([self._day_key(day), self._reserve_keys(day)[2]])
        return int(spent or 0), int(reserved or 0)

    async def day_reserved(self, day: date) -> int:
        return int(await self.redis.get(self._reserve_keys(day)[2]) or 0)

    async def day_total(self, day: date) -> int:
        return int(await self.redis.get(self._day_key(day)) or 0)

    async def campaign_day_total(self, campaign_id: int, day: date) -> int:
        return int(await self.redis.get(self._campaign_key(campaign_id, day)) or 0)

    async def call_total(self, call_sid: str) -> int:
        return int(await self.redis.get(self._call_key(call_sid)) or 0)

    async def campaign_totals(self, day: date) -> dict[int, int]:
        out: dict[int, int] = {}
        pattern = f"{self.prefix}:spend:campaign:*:{day.isoformat()}"
        async for key in self.redis.scan_iter(match=pattern, count=500):
            name = key.decode() if isinstance(key, bytes) else str(key)
            out[int(name.split(":")[-2])] = int(await self.redis.get(key) or 0)
        return out

    # -- caps (set over the API; every node reads the same) --------------------------------------

    async def caps(self) -> dict[str, Any]:
        raw = await self.redis.get(f"{self.prefix}:budget:caps")
        return dict(orjson.loads(raw)) if raw else {}

    async def set_caps(self, caps: dict[str, Any]) -> None:
        await self.redis.set(f"{self.prefix}:budget:caps", orjson.dumps(caps))

    # -- alerts: once per threshold per period, whichever node crosses it first -------------------

    async def first_to_cross(self, period: str, cap: str, threshold: float) -> bool:
        key = f"{self.prefix}:budget:alert:{period}:{cap}:{threshold:g}"
        return bool(await self.redis.set(key, "1", nx=True, ex=DAY_TTL_S))
