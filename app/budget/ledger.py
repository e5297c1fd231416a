"""Spend counters in Redis, shared by every node, updated atomically; caps; alerts once per threshold.

Keys (µ$ integers): ``{prefix}:spend:day:{YYYY-MM-DD}``, ``{prefix}:spend:campaign:{id}:{day}``,
``{prefix}:spend:call:{sid}``. One Lua script increments all of a charge's counters together, so N
nodes charging at once cannot exceed a cap by more than their own in-flight increments.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

import orjson
from redis.asyncio import Redis

DAY_TTL_S = 4 * 24 * 3600
CALL_TTL_S = 2 * 24 * 3600

# KEYS: call, day, campaign-day (may be ""); ARGV: amount, call ttl, day ttl
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
return {call, day, campaign}
"""


@dataclass(frozen=True, slots=True)
class Totals:
    call: int
    day: int
    campaign_day: int


class BudgetLedger:
    def __init__(self, redis: Redis, *, prefix: str = "sb") -> None:
        self.redis = redis
        self.prefix = prefix
        self._charge = redis.register_script(_CHARGE)

    def _day_key(self, day: date) -> str:
        return f"{self.prefix}:spend:day:{day.isoformat()}"

    def _campaign_key(self, campaign_id: int, day: date) -> str:
        return f"{self.prefix}:spend:campaign:{campaign_id}:{day.isoformat()}"

    def _call_key(self, call_sid: str) -> str:
        return f"{self.prefix}:spend:call:{call_sid}"

    async def charge(self, *, call_sid: str, day: date, campaign_id: int | None, micros: int) -> Totals:
        keys = [
            self._call_key(call_sid),
            self._day_key(day),
            self._campaign_key(campaign_id, day) if campaign_id is not None else "",
        ]
        call, day_total, campaign = await self._charge(keys=keys, args=[micros, CALL_TTL_S, DAY_TTL_S])
        return Totals(int(call), int(day_total), int(campaign))

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
