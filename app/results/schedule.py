"""When a post-call job or a webhook delivery is tried again (pure).

Both back off by a factor of three from a base, capped at an hour. A job gives up after ``JOB_ATTEMPTS``
tries; a delivery keeps trying until ``retry_for_s`` (24 h) after it was first due, then gives up.
"""

from __future__ import annotations

from datetime import datetime, timedelta

JOB_ATTEMPTS = 6
CAP_S = 3600.0


def backoff_s(attempts: int, base_s: float) -> float:
    """The wait after the ``attempts``-th failed try (1: the first)."""
    return float(min(CAP_S, base_s * 3 ** max(0, attempts - 1)))


def next_job_try(attempts: int, now: datetime, base_s: float) -> datetime | None:
    """None: the job has had its tries."""
    if attempts >= JOB_ATTEMPTS:
        return None
    return now + timedelta(seconds=backoff_s(attempts, base_s))


def next_delivery_try(
    attempts: int, first_due: datetime, now: datetime, base_s: float, retry_for_s: float
) -> datetime | None:
    """None: the delivery's retry window (``retry_for_s`` from when it was first due) is over. The last try
    falls at the window's end."""
    deadline = first_due + timedelta(seconds=retry_for_s)
    if now >= deadline:
        return None
    return min(now + timedelta(seconds=backoff_s(attempts, base_s)), deadline)
