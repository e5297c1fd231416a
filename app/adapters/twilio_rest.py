"""Twilio Programmable Voice REST adapter (Calls resource) over ``httpx.AsyncClient``.

Spec: /work/shared/PROTOCOLS.md, "Twilio REST and webhooks"; Twilio's Call resource,
``POST /2010-04-01/Accounts/{AccountSid}/Calls.json`` and ``.../Calls/{CallSid}.json``.

Retry policy (why it differs per operation):

* ``hangup``, ``update_twiml``, ``redirect`` and ``fetch_call`` set or read state, so replaying
  them is harmless: they retry on 429, 5xx and any ``httpx.TransportError``.
* ``create_call`` is NOT idempotent: after a 5xx or a read timeout Twilio may already have placed
  the call, and a retry would dial the person twice. It retries only when Twilio certainly did not
  act on the request: a 429, or a connection failure before the request was sent
  (``ConnectError``, ``ConnectTimeout``, ``PoolTimeout``). Any other failure raises at once; the
  caller must reconcile (e.g. look the call up) before dialling again.

Backoff is exponential with full jitter: ``random() * min(backoff_max_s, backoff_base_s * 2**n)``.
A ``Retry-After`` header is obeyed exactly when it is at most ``retry_after_max_s``; a longer one
ends the retries (retrying earlier than told would only earn another 429).
"""

from __future__ import annotations

import asyncio
import email.utils
import math
import random as _random
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from types import TracebackType
from typing import Any, Final, Self
from urllib.parse import quote

import httpx
import structlog

__all__ = [
    "CallResource",
    "TwilioAuthError",
    "TwilioBadRequest",
    "TwilioError",
    "TwilioNotFound",
    "TwilioRateLimited",
    "TwilioRest",
    "TwilioUnavailable",
]

log = structlog.get_logger(__name__)

API_VERSION: Final = "2010-04-01"
DEFAULT_STATUS_CALLBACK_EVENTS: Final = (
    "initiated",
    "ringing",
    "answered",
    "completed",
)
_CALL_SID_RE: Final = re.compile(r"CA[0-9a-fA-F]{32}")

#: Failures that happen before any byte of the request reaches Twilio, so even a
#: non-idempotent POST is safe to resend.
_NOT_SENT_ERRORS: Final = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)

FormData = dict[str, str | list[str]]


def _user_agent() -> str:
    try:
        version = metadata.version("switchboard")
    except metadata.PackageNotFoundError:
        version = "0"
    return f"switchboard/{version} (twilio-rest) httpx/{httpx.__version__}"


USER_AGENT: Final = _user_agent()


class TwilioError(Exception):
    """A failed Twilio REST call, parsed from Twilio's error body ``{code, message, more_info, status}``.

    ``status`` is the HTTP status, or 0 when no response was received (network failure).
    """

    def __init__(
        self,
        *,
        status: int,
        message: str,
        code: int | None = None,
        more_info: str | None = None,
    ) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.more_info = more_info
        super().__init__(f"Twilio {status}" + (f" [{code}]" if code is not None else "") + f": {message}")


class TwilioAuthError(TwilioError):
    """401/403: bad credentials or the account may not do this."""


class TwilioNotFound(TwilioError):
    """404: no such call (or account)."""


class TwilioRateLimited(TwilioError):
    """429 after retries were exhausted (or Retry-After exceeded our cap)."""


class TwilioUnavailable(TwilioError):
    """5xx or a network failure after retries were exhausted (or not retried, for create_call)."""


class TwilioBadRequest(TwilioError):
    """Any other 4xx, e.g. 400 code 21211 "Invalid 'To' Phone Number"."""


@dataclass(frozen=True, slots=True)
class CallResource:
    """The fields of Twilio's Call resource that we act on; ``raw`` keeps the full JSON."""

    sid: str
    status: str
    to: str | None
    from_: str | None
    direction: str | None
    raw: dict[str, Any] = field(repr=False, hash=False)

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> CallResource:
        """Build from a Call resource JSON object (note Twilio's key is ``from``)."""
        return cls(
            sid=str(body["sid"]),
            status=str(body["status"]),
            to=_opt_str(body.get("to")),
            from_=_opt_str(body.get("from")),
            direction=_opt_str(body.get("direction")),
            raw=dict(body),
        )


def _opt_str(value: object) -> str | None:
    return None if value is None else str(value)


class TwilioRest:
    """Async client for the Calls resource with safe, jittered retries.

    Pass ``client`` to share a connection pool (it is then not closed by ``aclose``); pass ``sleep``
    and ``random`` to make retry timing deterministic in tests.
    """

    def __init__(
        self,
        *,
        account_sid: str,
        auth_token: str,
        base_url: str = "https://api.twilio.com",
        client: httpx.AsyncClient | None = None,
        max_retries: int = 3,
        backoff_base_s: float = 0.2,
        backoff_max_s: float = 2.0,
        retry_after_max_s: float = 5.0,
        timeout_s: float = 10.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        random: Callable[[], float] = _random.random,
    ) -> None:
        if max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        self._auth = httpx.BasicAuth(account_sid, auth_token)
        account_path = f"/{API_VERSION}/Accounts/{quote(account_sid, safe='')}"
        self._calls_url = f"{base_url.rstrip('/')}{account_path}/Calls"
        self._owns_client = client is None
        self._client = client if client is not None else httpx.AsyncClient(timeout=timeout_s)
        self._timeout = httpx.Timeout(timeout_s)
        self._max_retries = max_retries
        self._backoff_base_s = backoff_base_s
        self._backoff_max_s = backoff_max_s
        self._retry_after_max_s = retry_after_max_s
        self._sleep = sleep
        self._random = random

    async def aclose(self) -> None:
        """Close the HTTP client, but only if this adapter created it."""
        if self._owns_client:
            await self._client.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- operations ---------------------------------------------------------------------------

    async def create_call(
        self,
        *,
        to: str,
        from_: str,
        url: str | None = None,
        twiml: str | None = None,
        status_callback: str | None = None,
        status_callback_event: Sequence[str] = DEFAULT_STATUS_CALLBACK_EVENTS,
        timeout_s: int | None = None,
        machine_detection: str | None = None,
        async_amd: bool = False,
        async_amd_status_callback: str | None = None,
        record: bool = False,
        time_limit_s: int | None = None,
    ) -> CallResource:
        """Place an outbound call. Exactly one of ``url`` / ``twiml`` is required.

        Not retried after 5xx or read timeouts (see module docstring): a raised TwilioUnavailable
        means the call may or may not exist. Status callback fields are sent only with
        ``status_callback``; ``timeout_s`` is Twilio's ring timeout, not the HTTP timeout.
        """
        if (url is None) == (twiml is None):
            raise ValueError("create_call needs exactly one of url or twiml")
        if (async_amd or async_amd_status_callback) and machine_detection is None:
            raise ValueError("async AMD requires machine_detection")
        form: FormData = {"To": to, "From": from_}
        if url is not None:
            form["Url"] = url
        if twiml is not None:
            form["Twiml"] = twiml
        if status_callback is not None:
            form["StatusCallback"] = status_callback
            form["StatusCallbackEvent"] = list(status_callback_event)
            form["StatusCallbackMethod"] = "POST"
        if timeout_s is not None:
            form["Timeout"] = str(timeout_s)
        if machine_detection is not None:
            form["MachineDetection"] = machine_detection
        if async_amd:
            form["AsyncAmd"] = "true"
        if async_amd_status_callback is not None:
            form["AsyncAmdStatusCallback"] = async_amd_status_callback
        if record:
            form["Record"] = "true"
        if time_limit_s is not None:
            form["TimeLimit"] = str(time_limit_s)
        body = await self._request("POST", f"{self._calls_url}.json", form=form, idempotent=False)
        return CallResource.from_json(body)

    async def hangup(self, call_sid: str) -> CallResource:
        """End the call (``Status=completed``); works for ringing and in-progress calls."""
        return await self._update(call_sid, {"Status": "completed"})

    async def update_twiml(self, call_sid: str, twiml: str) -> CallResource:
        """Replace the live call's instructions with ``twiml`` (e.g. a ``<Dial>`` transfer)."""
        return await self._update(call_sid, {"Twiml": twiml})

    async def redirect(self, call_sid: str, url: str) -> CallResource:
        """Make Twilio fetch new TwiML for the live call from ``url`` via POST."""
        return await self._update(call_sid, {"Url": url, "Method": "POST"})

    async def fetch_call(self, call_sid: str) -> CallResource:
        """Read the call's current state."""
        body = await self._request("GET", self._call_url(call_sid), form=None, idempotent=True)
        return CallResource.from_json(body)

    # -- internals ----------------------------------------------------------------------------

    async def _update(self, call_sid: str, form: FormData) -> CallResource:
        body = await self._request("POST", self._call_url(call_sid), form=form, idempotent=True)
        return CallResource.from_json(body)

    def _call_url(self, call_sid: str) -> str:
        if not _CALL_SID_RE.fullmatch(call_sid):
            raise ValueError(f"not a Twilio Call SID: {call_sid!r}")
        return f"{self._calls_url}/{call_sid}.json"

    async def _request(self, method: str, url: str, *, form: FormData | None, idempotent: bool) -> dict[str, Any]:
        """Send with retries; return the JSON object of a 2xx or raise a TwilioError subclass."""
        attempt = 0
        while True:
            try:
                response = await self._client.request(
                    method,
                    url,
                    data=form,
                    auth=self._auth,
                    headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
                    timeout=self._timeout,
                )
            except httpx.TransportError as exc:
                retryable = idempotent or isinstance(exc, _NOT_SENT_ERRORS)
                if not retryable or attempt >= self._max_retries:
                    raise TwilioUnavailable(status=0, message=f"{type(exc).__name__}: {exc}") from exc
                delay = self._backoff(attempt)
                log.warning(
                    "twilio_rest.retry",
                    method=method,
                    url=url,
                    attempt=attempt + 1,
                    delay_s=delay,
                    error=type(exc).__name__,
                )
            else:
                if response.is_success:
                    return _success_body(response)
                error = _error_from_response(response)
                retryable = response.status_code == 429 or (idempotent and response.status_code >= 500)
                if not retryable or attempt >= self._max_retries:
                    raise error
                retry_after = _retry_after_s(response)
                if retry_after is None:
                    delay = self._backoff(attempt)
                elif retry_after <= self._retry_after_max_s:
                    delay = retry_after
                else:
                    raise error
                log.warning(
                    "twilio_rest.retry",
                    method=method,
                    url=url,
                    attempt=attempt + 1,
                    delay_s=delay,
                    status=response.status_code,
                    code=error.code,
                )
            await self._sleep(delay)
            attempt += 1

    def _backoff(self, attempt: int) -> float:
        """Full jitter: uniform in [0, min(max, base * 2**attempt))."""
        ceiling = min(self._backoff_max_s, self._backoff_base_s * 2.0**attempt)
        return self._random() * ceiling


def _success_body(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise TwilioError(
            status=response.status_code,
            message=f"unexpected non-object body: {response.text[:200]!r}",
        )
    return body


_ERROR_BY_STATUS: Final[Mapping[int, type[TwilioError]]] = {
    401: TwilioAuthError,
    403: TwilioAuthError,
    404: TwilioNotFound,
    429: TwilioRateLimited,
}


def _error_from_response(response: httpx.Response) -> TwilioError:
    """Map status to exception class; take code/message/more_info from Twilio's JSON if present."""
    status = response.status_code
    if status in _ERROR_BY_STATUS:
        cls = _ERROR_BY_STATUS[status]
    elif status >= 500:
        cls = TwilioUnavailable
    elif status >= 400:
        cls = TwilioBadRequest
    else:
        cls = TwilioError
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        code = body.get("code")
        message = body.get("message")
        more_info = body.get("more_info")
        return cls(
            status=status,
            code=code if isinstance(code, int) and not isinstance(code, bool) else None,
            message=str(message) if message else response.reason_phrase or "error",
            more_info=str(more_info) if more_info else None,
        )
    text = response.text.strip()[:200]
    return cls(status=status, message=text or response.reason_phrase or "error")


def _retry_after_s(response: httpx.Response) -> float | None:
    """Parse Retry-After as delta-seconds or an HTTP-date; None if absent or unparseable."""
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)
