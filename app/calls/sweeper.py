"""Archives orphaned calls: live in Redis, lease expired, no stream came back for them."""

from __future__ import annotations

import asyncio
import time

import structlog
from redis.exceptions import RedisError

from app.calls.archiving import archive_live_call
from app.runtime import Runtime

log = structlog.get_logger()

LOCK = "orphan-sweeper"


async def sweep_once(rt: Runtime, *, now_ms: int) -> list[str]:
    """One pass, on whichever node holds the sweeper lock; the others skip. Returns what it archived."""
    store = rt.call_store
    grace_ms = int(rt.settings.orphan_grace_s * 1000)
    lock_ms = int(max(rt.settings.sweep_interval_s * 2, 10) * 1000)
    if not await store.try_lock(LOCK, token=rt.node_id, ttl_ms=lock_ms):
        return []
    archived: list[str] = []
    try:
        for call_sid in await store.expired_calls(now_ms - grace_ms):
            if await store.lease_holder(call_sid) is not None:
                continue  # a stream took it back meanwhile
            try:
                done = await archive_live_call(rt, call_sid, status="orphaned", end_reason="stream lost; lease expired")
            except (RedisError, OSError):
                raise  # Redis or the network away: the whole pass waits for the next
            except Exception:
                # This call only: counted (alerted on) and passed over, so the orphans after it are archived
                # before their live state expires. It is tried again on the next pass.
                rt.metrics.orphan_archive_failures.inc()
                log.exception("sweeper.archive_failed", call_sid=call_sid)
                continue
            if done:
                archived.append(call_sid)
                rt.metrics.orphans_archived.inc()
                log.info("sweeper.archived_orphan", call_sid=call_sid)
    finally:
        await store.unlock(LOCK, token=rt.node_id)
    return archived


async def run_sweeper(rt: Runtime) -> None:
    while True:
        await asyncio.sleep(rt.settings.sweep_interval_s)
        try:
            await sweep_once(rt, now_ms=int(time.time() * 1000))
        except (RedisError, OSError) as exc:
            log.warning("sweeper.redis_unavailable", error=repr(exc))
        except Exception:
            log.exception("sweeper.failed")
