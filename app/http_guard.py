"""Refuse untrusted HTTP input before it costs anything: a pure ASGI middleware in front of every route.

- A body larger than its route allows is answered 413 from its Content-Length, before a byte of it is
  read; a body without one (chunked) is counted as it is read and cut off at the limit, also with 413.
- ``/api/`` requests are authenticated from their headers before their body is read: a request without
  a valid key gets its 401 having sent nothing the server keeps, and the key found is handed to the
  route's role check so it is not looked up twice.
- Failed authentications are counted per client: past a burst the client gets 429 for a while, and each
  failure is logged with the key id it named (never the secret) and the client's address.

Which routes take large bodies, and the failure budget, are pure functions tested with plain values.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

import orjson
import structlog
from fastapi import HTTPException

from app.auth.keys import presented_key
from app.problems import PROBLEM_JSON

log = structlog.get_logger()

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# Routes whose documented input is a file or a long list; everything else takes the small limit.
_BULK_SUFFIXES = ("/contacts", "/contacts/csv")
_BULK_PATHS = ("/api/v1/dnc/import", "/api/v1/national-dnc")


def body_limit(path: str, *, small: int, bulk: int) -> int:
    """The most bytes a request to ``path`` may send."""
    if path in _BULK_PATHS or (path.startswith("/api/v1/campaigns/") and path.endswith(_BULK_SUFFIXES)):
        return bulk
    if path.startswith("/console/campaigns/") and path.endswith("/import"):  # the console's contacts upload
        return bulk
    return small


def needs_key(path: str) -> bool:
    return path.startswith("/api/")


def key_id_of(token: str) -> str | None:
    """The id part of ``sb_<id>_<secret>``, safe to log; None when the token has no such shape."""
    prefix, _, rest = token.partition("_")
    key_id, _, _ = rest.partition("_")
    return key_id[:32] if prefix == "sb" and key_id else None


@dataclass
class FailureBudget:
    """At most ``burst`` failed authentications per client within ``window_s``; then refused until the
    oldest failure in the window ages out."""

    burst: int = 20
    window_s: float = 60.0
    max_clients: int = 10_000
    _failures: dict[str, deque[float]] = field(default_factory=dict)

    def _recent(self, client: str, now: float) -> deque[float]:
        times = self._failures.get(client)
        if times is None:
            return deque()
        while times and now - times[0] >= self.window_s:
            times.popleft()
        if not times:
            del self._failures[client]
        return times

    def retry_after(self, client: str, now: float) -> float | None:
        """Seconds until ``client`` may try again, or None when it may now."""
        times = self._recent(client, now)
        if len(times) < self.burst:
            return None
        return max(0.0, times[0] + self.window_s - now)

    def failed(self, client: str, now: float) -> None:
        if client not in self._failures and len(self._failures) >= self.max_clients:
            # Bounded memory: forget the client whose failures are oldest.
            oldest = min(self._failures, key=lambda c: self._failures[c][-1] if self._failures[c] else 0.0)
            del self._failures[oldest]
        self._recent(client, now)
        self._failures.setdefault(client, deque()).append(now)


class PayloadTooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"This endpoint takes at most {limit} bytes of request body.")


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return str(value.decode("latin-1"))
    return None


def bearer_token(scope: Scope) -> str:
    return presented_key(_header(scope, b"authorization") or "", _header(scope, b"x-api-key") or "")


async def _problem(send: Send, status: int, title: str, detail: str, instance: str, **headers: str) -> None:
    body = orjson.dumps(
        {"type": "about:blank", "title": title, "status": status, "instance": instance, "detail": detail}
    )
    raw_headers = [(b"content-type", PROBLEM_JSON.encode()), (b"content-length", str(len(body)).encode())]
    raw_headers += [(k.replace("_", "-").encode(), v.encode()) for k, v in headers.items()]
    # No "Connection: close": the server then discards (never keeps) whatever of the body still comes,
    # instead of resetting a connection whose client is still sending, which could lose this answer.
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": body})


Authenticate = Callable[[str], Awaitable[Any]]


class RequestGuard:
    def __init__(
        self,
        app: ASGIApp,
        *,
        authenticate: Authenticate,
        small_body_bytes: int,
        bulk_body_bytes: int,
        failures: FailureBudget | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.app = app
        self.authenticate = authenticate
        self.small = small_body_bytes
        self.bulk = bulk_body_bytes
        self.failures = failures or FailureBudget()
        self.clock = clock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        limit = body_limit(path, small=self.small, bulk=self.bulk)
        length = _header(scope, b"content-length")
        if length is not None:
            if not length.isdigit():
                await _problem(send, 400, "Bad request", "Content-Length is not a number.", path)
                return
            if int(length) > limit:
                await _problem(
                    send, 413, "Payload too large", f"This endpoint takes at most {limit} bytes of request body.", path
                )
                return
        if needs_key(path) and not await self._authenticated(scope, send, path):
            return

        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise PayloadTooLarge(limit)
            return message

        await self.app(scope, counted, send)

    async def _authenticated(self, scope: Scope, send: Send, path: str) -> bool:
        client = (scope.get("client") or ("unknown", 0))[0]
        now = self.clock()
        wait = self.failures.retry_after(client, now)
        if wait is not None:
            await _problem(
                send, 429, "Too many failed authentications",
                "This client sent too many invalid API keys; try again later.", path, retry_after=str(int(wait) + 1),
            )  # fmt: skip
            return False
        token = bearer_token(scope)
        principal = await self.authenticate(token) if token else None
        if principal is None:
            self.failures.failed(client, now)
            log.warning("auth.failed", key_id=key_id_of(token), client=client, path=path, presented=bool(token))
            await _problem(
                send, 401, "Unauthorized", "A valid API key is required (Authorization: Bearer sb_...).", path,
                www_authenticate="Bearer",
            )  # fmt: skip
            return False
        scope.setdefault("state", {})["principal"] = principal
        return True
