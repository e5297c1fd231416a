"""Spend counters in Redis, shared by every node, updated atomically; caps; alerts once per threshold.

Keys (µ$ integers): ``{prefix}:spend:day:{YYYY-MM-DD}``, ``{prefix}:spend:campaign:{id}:{day}``,
``{prefix}:spend:call:{sid}``; the day's closing reserves under ``{prefix}:spend:reserve:{day}``, a
capped campaign day's under ``{prefix}:spend:campaign-reserve:{id}:{day}``. One
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

# KEYS: call, day, campaign-day (may be ""), then the day pool's reserves (hash sid -> µ$), touches
# (zset sid -> ms) and reserved total, then the campaign-day pool's three keys (may be "").
# ARGV: amount, call ttl, day ttl, call sid, wanted reserve (-1: keep what is held), day cap (-1: none),
# stale ms, campaign-day cap (-1: none).
# Returns {call, day, campaign-day, day reserved total, reserve held in the day pool (-1: no pool), day
# overrun, campaign reserved total, reserve held in the campaign pool (-1: no pool), campaign overrun}.
#
# A capped day (and a capped campaign day) is a pool: every live call holds a closing reserve out of
# it. A charge first comes out of the free pool; once that is empty, out of the charging call's own
# reserve, which shrinks (the call is told to close); past its reserve the excess is its overrun (the
# call is stopped at once). So spent + reserved <= cap holds after every charge except by an overrun,
# and an overrun stops its call. Both pools are settled in the same step.
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
local sid = ARGV[4]
local want_arg = tonumber(ARGV[5])
local stale_ms = tonumber(ARGV[7])
local ttl = ARGV[3]
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)

local function pool(spent, cap, hkey, zkey, tkey)
  if cap < 0 or hkey == '' then
    return {0, -1, 0}
  end
  local total = tonumber(redis.call('GET', tkey) or '0')
  local stale = redis.call('ZRANGEBYSCORE', zkey, '-inf', now - stale_ms, 'LIMIT', 0, 16)
  for _, other in ipairs(stale) do
    if other ~= sid then
      total = total - tonumber(redis.call('HGET', hkey, other) or '0')
      redis.call('HDEL', hkey, other)
      redis.call('ZREM', zkey, other)
    end
  end
  local held = tonumber(redis.call('HGET', hkey, sid) or '0')
  local want = want_arg
  if want < 0 then
    want = held
  end
  local others = total - held
  local keep = cap - spent - others
  if keep > want then
    keep = want
  end
  local overrun = 0
  if keep < 0 then
    overrun = -keep
    keep = 0
  end
  total = others + keep
  redis.call('SET', tkey, total, 'EX', ttl)
  redis.call('HSET', hkey, sid, keep)
  redis.call('EXPIRE', hkey, ttl)
  redis.call('ZADD', zkey, now, sid)
  redis.call('EXPIRE', zkey, ttl)
  return {total, keep, overrun}
end

local d = pool(day, tonumber(ARGV[6]), KEYS[4], KEYS[5], KEYS[6])
local c = pool(campaign, tonumber(ARGV[8]), KEYS[7], KEYS[8], KEYS[9])
return {call, day, campaign, d[1], d[2], d[3], c[1], c[2], c[3]}
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
    campaign_reserved: int = 0  # the same, in the campaign day's pool
    campaign_reserve_left: int | None = None  # None: no campaign-day cap
    campaign_overrun: int = 0


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

    def _campaign_reserve_keys(self, campaign_id: int, day: date) -> list[str]:
        base = f"{self.prefix}:spend:campaign-reserve:{campaign_id}:{day.isoformat()}"
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
        campaign_cap: int | None = None,
    ) -> Totals:
        """Add ``micros`` to the call's, the day's and the campaign-day's spend, in one step.

        With a ``day_cap`` (and with a ``campaign_cap``, for a campaign's call), the call also holds a
        closing reserve in that day's pool: ``reserve`` is what it wants held (``None``: keep what it
        holds, as a call that is closing does), and the result says what it got and any overrun.
        """
        campaign_pool = (
            self._campaign_reserve_keys(campaign_id, day) if campaign_id is not None and campaign_cap is not None
            else ["", "", ""]
        )  # fmt: skip
        keys = [
            self._call_key(call_sid),
            self._day_key(day),
            self._campaign_key(campaign_id, day) if campaign_id is not None else "",
            *self._reserve_keys(day),
            *campaign_pool,
        ]
        args: list[int | str] = [
            micros, CALL_TTL_S, DAY_TTL_S, call_sid,
            -1 if reserve is None else reserve, -1 if day_cap is None else day_cap, RESERVE_STALE_MS,
            -1 if campaign_cap is None or campaign_id is None else campaign_cap,
        ]  # fmt: skip
        call, day_total, campaign, reserved, held, overrun, c_reserved, c_held, c_overrun = await self._charge(
            keys=keys, args=args
        )
        return Totals(
            int(call),
            int(day_total),
            int(campaign),
            day_reserved=int(reserved),
            reserve_left=None if int(held) < 0 else int(held),
            overrun=int(overrun),
            campaign_reserved=int(c_reserved),
            campaign_reserve_left=None if int(c_held) < 0 else int(c_held),
            campaign_overrun=int(c_overrun),
        )

    async def claim_minutes(self, call_sid: str, started: int) -> int:
        """Of the ``started`` telephony minutes of a call, how many no node has billed yet."""
        key = f"{self._call_key(call_sid)}:minutes"
        return int(await self._claim_minutes(keys=[key], args=[started, CALL_TTL_S]))

    async def release(self, *, call_sid: str, day: date, campaign_id: int | None = None) -> int:
        """The call has ended: what it held for its closing line goes back to the day's pool (and to its
        campaign day's)."""
        held = int(await self._release(keys=self._reserve_keys(day), args=[call_sid]))
        if campaign_id is not None:
            await self._release(keys=self._campaign_reserve_keys(campaign_id, day), args=[call_sid])
        return held

    async def campaign_pool(self, campaign_id: int, day: date) -> tuple[int, int]:
        """The campaign day's spend and what its calls in progress hold for their closing lines, together."""
        spent, reserved = await self.redis.mget(
            [self._campaign_key(campaign_id, day), self._campaign_reserve_keys(campaign_id, day)[2]]
        )
        return int(spent or 0), int(reserved or 0)

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
