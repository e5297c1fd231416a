"""Twilio's Call resource as the local carrier keeps it: the request checks, the JSON, the errors (pure).

The shapes follow https://www.twilio.com/docs/voice/api/call-resource and Twilio's error bodies
(``{"code", "message", "more_info", "status"}``) with its error codes
(https://www.twilio.com/docs/api/errors), so that the official ``twilio`` client and our adapter read them as
they read Twilio's.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import format_datetime
from typing import Any, Final
from urllib.parse import urlsplit

__all__ = ["CallRecord", "CreateRequest", "RestError", "error_body", "parse_create", "rfc2822"]

API_VERSION: Final = "2010-04-01"
FINAL: Final = frozenset({"completed", "busy", "no-answer", "failed", "canceled"})
STATUSES: Final = frozenset({"queued", "ringing", "in-progress", *FINAL})
_E164: Final = re.compile(r"\+[1-9]\d{6,14}")
_EVENTS: Final = frozenset({"initiated", "ringing", "answered", "completed"})
_AMD: Final = frozenset({"Enable", "DetectMessageEnd"})


class RestError(Exception):
    """What Twilio's API would answer: an HTTP status, one of Twilio's error codes, and its message."""

    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(f"{status} [{code}] {message}")
        self.status, self.code, self.message = status, code, message


def error_body(error: RestError) -> dict[str, Any]:
    return {
        "code": error.code,
        "message": error.message,
        "more_info": f"https://www.twilio.com/docs/errors/{error.code}",
        "status": error.status,
    }


def rfc2822(when: datetime | None) -> str | None:
    """Twilio's date format: ``Tue, 01 Jul 2026 16:00:00 +0000``."""
    return None if when is None else format_datetime(when)


@dataclass(frozen=True, slots=True)
class CreateRequest:
    to: str
    from_: str
    url: str | None
    method: str
    twiml: str | None
    status_callback: str | None
    status_callback_events: frozenset[str]
    timeout_s: float
    machine_detection: str | None
    async_amd: bool
    async_amd_callback: str | None
    time_limit_s: float


def _url(value: str, name: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise RestError(400, 21205, f"{name} is not a valid URL: {value}")
    return value


def parse_create(form: Mapping[str, list[str]]) -> CreateRequest:
    """Check a Calls.json POST as Twilio does; raise the RestError Twilio would answer with."""

    def one(name: str) -> str | None:
        values = form.get(name)
        return values[-1] if values else None

    to, from_ = one("To"), one("From")
    if not to:
        raise RestError(400, 21201, "No 'To' number is specified")
    if not _E164.fullmatch(to):
        raise RestError(400, 21211, f"Invalid 'To' Phone Number: {to}")
    if not from_:
        raise RestError(400, 21213, "No 'From' number is specified")
    if not _E164.fullmatch(from_):
        raise RestError(400, 21212, f"Invalid 'From' Phone Number: {from_}")
    url, twiml = one("Url"), one("Twiml")
    if not url and not twiml:
        raise RestError(400, 21205, "Either a Url or Twiml must be provided")
    events = frozenset(e.strip() for v in form.get("StatusCallbackEvent", []) for e in v.split() if e.strip())
    if not events <= _EVENTS:
        raise RestError(400, 21626, f"Invalid StatusCallbackEvent: {' '.join(sorted(events - _EVENTS))}")
    callback = one("StatusCallback")
    amd = one("MachineDetection")
    if amd is not None and amd not in _AMD:
        raise RestError(400, 21626, f"Invalid MachineDetection: {amd}")
    try:
        timeout = float(one("Timeout") or 60)
        time_limit = float(one("TimeLimit") or 14400)
    except ValueError as exc:
        raise RestError(400, 21626, f"Invalid parameter: {exc}") from exc
    amd_callback = one("AsyncAmdStatusCallback")
    return CreateRequest(
        to=to,
        from_=from_,
        url=_url(url, "Url") if url else None,
        method=(one("Method") or "POST").upper(),
        twiml=twiml or None,
        status_callback=_url(callback, "StatusCallback") if callback else None,
        status_callback_events=events or frozenset({"completed"}),
        timeout_s=min(max(timeout, 5.0), 600.0),  # Twilio clamps Timeout to 5..600
        machine_detection=amd,
        async_amd=(one("AsyncAmd") or "").lower() == "true",
        async_amd_callback=_url(amd_callback, "AsyncAmdStatusCallback") if amd_callback else None,
        time_limit_s=time_limit,
    )


def new_sid(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


@dataclass(slots=True)
class CallRecord:
    """One call as the carrier's REST API shows it, and its log (seconds since creation, event, detail)."""

    sid: str
    account_sid: str
    request: CreateRequest
    created: datetime
    person: str
    status: str = "queued"
    answered_by: str | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None
    duration_s: int | None = None
    log: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        base = f"/{API_VERSION}/Accounts/{self.account_sid}/Calls/{self.sid}"
        return {
            "sid": self.sid,
            "account_sid": self.account_sid,
            "api_version": API_VERSION,
            "to": self.request.to,
            "to_formatted": self.request.to,
            "from": self.request.from_,
            "from_formatted": self.request.from_,
            "direction": "outbound-api",
            "status": self.status,
            "answered_by": self.answered_by,
            "caller_name": None,
            "forwarded_from": None,
            "group_sid": None,
            "parent_call_sid": None,
            "phone_number_sid": None,
            "price": None,
            "price_unit": "USD",
            "queue_time": "0",
            "trunk_sid": None,
            "date_created": rfc2822(self.created),
            "date_updated": rfc2822(self.end_time or self.start_time or self.created),
            "start_time": rfc2822(self.start_time),
            "end_time": rfc2822(self.end_time),
            "duration": None if self.duration_s is None else str(self.duration_s),
            "uri": f"{base}.json",
            "subresource_uris": {
                "notifications": f"{base}/Notifications.json",
                "recordings": f"{base}/Recordings.json",
                "payments": f"{base}/Payments.json",
                "events": f"{base}/Events.json",
                "siprec": f"{base}/Siprec.json",
                "streams": f"{base}/Streams.json",
                "user_defined_message_subscriptions": f"{base}/UserDefinedMessageSubscriptions.json",
                "user_defined_messages": f"{base}/UserDefinedMessages.json",
            },
        }
