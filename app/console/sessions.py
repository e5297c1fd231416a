"""Console sign-in state: a signed session cookie and CSRF tokens.

The session cookie carries the API key's id, an expiry and the session's CSRF token, signed with
itsdangerous; never the key's secret. Every request looks the key up again, so a revoked key is
signed out at its next request. Before sign-in, a signed CSRF cookie guards the login form
(signed double submit: the form must echo the token the cookie carries).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from itsdangerous import BadData, URLSafeSerializer
from redis.asyncio import Redis
from redis.exceptions import RedisError

from app.settings import Settings

log = structlog.get_logger()

SESSION_COOKIE = "sb_console"
CSRF_COOKIE = "sb_console_csrf"
COOKIE_PATH = "/console"
SECRET_FILE = "console_secret"  # noqa: S105 - the name of the file in DATA_DIR
CSRF_TTL_S = 2 * 3600  # how long a login form stays usable


def load_secret(settings: Settings) -> bytes:
    """CONSOLE_SECRET, or a random secret made once and kept in DATA_DIR so restarts keep sessions.

    Two processes starting together agree: the secret is written to a private temporary file and
    linked into place, so exactly one file wins and everyone reads that one."""
    if settings.console_secret is not None:
        return settings.console_secret.get_secret_value().encode()
    path = Path(settings.data_dir) / SECRET_FILE
    try:
        return _read(path)
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temporary = path.with_name(f".{SECRET_FILE}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(48) + "\n")
        try:
            os.link(temporary, path)
        except FileExistsError:
            pass  # another process won the race: use its secret
    finally:
        temporary.unlink(missing_ok=True)
    return _read(path)


def _read(path: Path) -> bytes:
    value = path.read_text().strip()
    if len(value) < 32:
        raise RuntimeError(f"{path} holds no usable console secret; delete it or set CONSOLE_SECRET")
    return value.encode()


@dataclass(frozen=True, slots=True)
class ConsoleSession:
    key_id: str
    expires_at: int  # unix seconds
    csrf: str


class SessionCodec:
    """Signs and reads the console's cookies."""

    def __init__(self, secret: bytes, *, ttl_s: int, secure: bool) -> None:
        self.ttl_s = ttl_s
        self.secure = secure
        self._session = URLSafeSerializer(secret, salt="switchboard.console.session")
        self._csrf = URLSafeSerializer(secret, salt="switchboard.console.csrf")

    # -- the session -------------------------------------------------------------------------

    def new_session(self, key_id: str, *, now: float) -> ConsoleSession:
        return ConsoleSession(key_id=key_id, expires_at=int(now) + self.ttl_s, csrf=secrets.token_urlsafe(32))

    def dump_session(self, session: ConsoleSession) -> str:
        return self._session.dumps({"k": session.key_id, "e": session.expires_at, "c": session.csrf})

    def load_session(self, cookie: str | None, *, now: float) -> ConsoleSession | None:
        """The session a cookie holds, or None when it is missing, forged or expired."""
        data = _loads(self._session, cookie)
        if not isinstance(data, dict):
            return None
        key_id, expires_at, csrf = data.get("k"), data.get("e"), data.get("c")
        if not (isinstance(key_id, str) and isinstance(expires_at, int) and isinstance(csrf, str)):
            return None
        if expires_at <= now:
            return None
        return ConsoleSession(key_id, expires_at, csrf)

    # -- the login form's CSRF token ---------------------------------------------------------

    def new_login_token(self, *, now: float) -> tuple[str, str]:
        """(token for the form, cookie value carrying it)."""
        token = secrets.token_urlsafe(32)
        return token, self._csrf.dumps({"t": token, "e": int(now) + CSRF_TTL_S})

    def login_token(self, cookie: str | None, *, now: float) -> str | None:
        data = _loads(self._csrf, cookie)
        if not isinstance(data, dict):
            return None
        token, expires_at = data.get("t"), data.get("e")
        if not isinstance(token, str) or not isinstance(expires_at, int) or expires_at <= now:
            return None
        return token

    # -- cookie attributes -------------------------------------------------------------------

    def cookie_options(self, max_age: int) -> dict[str, Any]:
        return {
            "max_age": max_age,
            "path": COOKIE_PATH,
            "httponly": True,
            "samesite": "strict",
            "secure": self.secure,
        }


def tokens_match(expected: str | None, sent: str | None) -> bool:
    """Constant-time comparison of a CSRF token; a missing one never matches."""
    if not expected or not sent:
        return False
    return hmac.compare_digest(expected.encode(), sent.encode())


def _loads(serializer: URLSafeSerializer, value: str | None) -> Any:
    if not value:
        return None
    try:
        return serializer.loads(value)
    except BadData:  # a forged, truncated or foreign value
        return None


# -- server-side revocation (sign-out) ------------------------------------------------------------
# A signed cookie cannot be taken back by deleting it in one browser: sign-out records the session
# (by a hash of its CSRF token, unique per session) in Redis until the cookie would have expired.


def _session_id(session: ConsoleSession) -> str:
    return hashlib.sha256(session.csrf.encode()).hexdigest()[:32]


def _revocation_key(session: ConsoleSession) -> str:
    return "sb:console:revoked:" + _session_id(session)


def live_audit_key(session: ConsoleSession) -> str:
    """Set for a minute after a session's live view was audited."""
    return "sb:console:live-audited:" + _session_id(session)


async def revoke_session(redis: Redis, session: ConsoleSession, *, now: float) -> None:
    ttl = max(1, int(session.expires_at - now))
    try:
        await redis.set(_revocation_key(session), "1", ex=ttl)
    except (RedisError, OSError) as exc:
        log.error("console.session_revocation_failed", key_id=session.key_id, error=repr(exc))


async def session_revoked(redis: Redis, session: ConsoleSession) -> bool:
    """Signed out on the server. With Redis away the session stands (the key is still checked)."""
    try:
        return bool(await redis.exists(_revocation_key(session)))
    except (RedisError, OSError) as exc:
        log.warning("console.session_revocation_unchecked", key_id=session.key_id, error=repr(exc))
        return False
