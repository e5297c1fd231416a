"""Calls in progress, read from the call store: the live index, each call's metadata and its lines."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from app.adapters.call_store import CallStore

MAX_CALLS = 50
MAX_LINES = 200  # the latest lines of each call


async def live_calls(store: CallStore, *, now_ms: int) -> list[dict[str, Any]]:
    """The calls in the live index, oldest first, each with its running transcript.

    A call whose stream lease lapsed stays in the index until the sweeper archives it; it is shown
    with ``stale`` set rather than hidden."""
    entries = cast(
        list[tuple[bytes | str, float]],
        await store.redis.zrange(store.live_key, 0, MAX_CALLS - 1, withscores=True),
    )
    sids = [sid.decode() if isinstance(sid, bytes) else str(sid) for sid, _ in entries]
    leases = {sid: int(score) for sid, (_, score) in zip(sids, entries, strict=True)}
    metas = await asyncio.gather(*(store.get_meta(sid) for sid in sids))
    lines = await asyncio.gather(*(store.get_lines(sid) for sid in sids))
    calls = []
    for sid, meta, transcript in zip(sids, metas, lines, strict=True):
        if meta.get("status") == "ended":
            continue  # archived a moment from now
        transcript.sort(key=lambda line: (int(line.get("offset_ms") or 0), int(line.get("seq") or 0)))
        calls.append(
            {
                "call_sid": sid,
                "direction": meta.get("direction") or "inbound",
                "from": meta.get("from"),
                "to": meta.get("to"),
                "campaign_id": meta.get("campaign_id"),
                "started_at_ms": meta.get("started_at_ms"),
                "stale": leases[sid] < now_ms,
                "lines": [
                    {
                        "offset_ms": int(line.get("offset_ms") or 0),
                        "speaker": str(line.get("speaker") or ""),
                        "text": str(line.get("text") or ""),
                        "interrupted": bool(line.get("interrupted")),
                    }
                    for line in transcript[-MAX_LINES:]
                ],
            }
        )
    calls.sort(key=lambda call: (call["started_at_ms"] or 0, call["call_sid"]))
    return calls
