"""Webhook signatures (pure): HMAC-SHA256 over ``"{timestamp}.{body}"``, sent as
``Switchboard-Signature: t=<unix seconds>,v1=<hex>``.

The receiver recomputes it with the shared secret and refuses a timestamp older than its tolerance (five
minutes here), so a captured request cannot be replayed later; ``Switchboard-Delivery`` (the delivery's id)
lets it drop a redelivery it already took. ``verify`` is what a receiver runs (the tests run it).
"""

from __future__ import annotations

import hashlib
import hmac

HEADER = "Switchboard-Signature"
TOLERANCE_S = 300


def signature(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify(secret: str, header: str, body: bytes, *, now: int, tolerance_s: int = TOLERANCE_S) -> bool:
    """True when ``header`` signs ``body`` with ``secret`` and is at most ``tolerance_s`` old (or ahead)."""
    fields: dict[str, list[str]] = {}
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        fields.setdefault(key, []).append(value)
    try:
        timestamp = int(fields.get("t", [""])[0])
    except ValueError:
        return False
    if abs(now - timestamp) > tolerance_s:
        return False
    expected = signature(secret, timestamp, body).split("v1=", 1)[1]
    return any(hmac.compare_digest(expected, candidate) for candidate in fields.get("v1", []))
