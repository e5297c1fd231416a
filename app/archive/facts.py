"""What a supervisor filters on, read off a finished call's events: pure, driven by plain values."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# How a call ended, most telling first: a call that opted out and was then hung up is "opted_out".
DISPOSITIONS = ("failed", "opted_out", "transferred", "budget_ended", "agent_ended", "completed")


@dataclass(frozen=True, slots=True)
class CallFacts:
    disposition: str
    transferred: bool
    opted_out: bool
    turns: int  # caller turns that got an agent answer with a measured latency
    latency_p50_ms: int | None
    latency_p95_ms: int | None
    recording_key: str | None = None  # the stored recording, when the call was recorded and its parts joined
    recording_ms: int | None = None
    recording_unjoined: bool = False  # parts were stored but not joined (the store failed at the end)


def percentile(values: Sequence[int], q: float) -> int | None:
    """Nearest-rank percentile (``q`` in 0..100) of integer values; None for none."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def call_facts(status: str, events: Iterable[tuple[str, Mapping[str, Any]]]) -> CallFacts:
    """``events`` are (kind, detail) in order. ``status`` is the archive status ("completed"/"failed")."""
    transferred = opted_out = budget = agent = False
    latencies: list[int] = []
    recording_key: str | None = None
    recording_ms: int | None = None
    unjoined = False
    for kind, detail in events:
        if kind == "recording" and isinstance(detail.get("key"), str):
            recording_key = detail["key"]
            seconds = detail.get("seconds")
            recording_ms = int(seconds * 1000) if isinstance(seconds, int | float) else None
        elif kind == "recording" and detail.get("parts"):
            unjoined = True
        elif kind == "opted_out":
            opted_out = True
        elif kind == "call_ending":
            action = detail.get("action")
            if action == "TransferCall":
                transferred = True
            elif action == "HangUp":
                agent = True
        elif kind in ("budget_wrap_up", "budget_hard_stop"):
            budget = True
        elif kind == "turn_latency":
            ms = detail.get("ms")
            if isinstance(ms, int | float) and ms >= 0:
                latencies.append(int(ms))
    if status == "failed":
        disposition = "failed"
    elif opted_out:
        disposition = "opted_out"
    elif transferred:
        disposition = "transferred"
    elif budget:
        disposition = "budget_ended"
    elif agent:
        disposition = "agent_ended"
    else:
        disposition = "completed"
    return CallFacts(
        disposition=disposition,
        transferred=transferred,
        opted_out=opted_out,
        turns=len(latencies),
        latency_p50_ms=percentile(latencies, 50),
        latency_p95_ms=percentile(latencies, 95),
        recording_key=recording_key,
        recording_ms=recording_ms,
        recording_unjoined=unjoined and recording_key is None,
    )
