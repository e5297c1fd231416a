"""Short-lived HMAC tokens that bind a media stream to the CallSid whose webhook issued it."""

from __future__ import annotations

import base64
import hashlib
import hmac


class StreamTokenError(ValueError):
    """The token cannot admit this stream; ``reason`` is safe to send as a close reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _sign(secret: bytes, body: bytes) -> str:
    digest = hmac.new(secret, body, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


STREAM = "stream"
RESUME = "resume"  # issued by the resume webhook: may take the call over from a lost stream


def issue_stream_token(*, secret: bytes, call_sid: str, now_s: float, ttl_s: int, kind: str = STREAM) -> str:
    expires = int(now_s) + ttl_s
    body = f"{call_sid}.{expires}.{kind}".encode()
    payload = base64.urlsafe_b64encode(body).rstrip(b"=").decode()
    return f"{payload}.{_sign(secret, body)}"


def verify_stream_token(token: str | None, *, secret: bytes, call_sid: str, now_s: float) -> str:
    """The token's kind; StreamTokenError unless it is genuine, unexpired and bound to ``call_sid``."""
    if not token:
        raise StreamTokenError("stream token missing")
    payload, sep, signature = token.partition(".")
    if not sep:
        raise StreamTokenError("stream token malformed")
    try:
        body = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
        head, _, kind = body.decode().rpartition(".")
        bound_sid, _, expires_s = head.rpartition(".")
        expires = int(expires_s)
    except (ValueError, UnicodeDecodeError) as exc:
        raise StreamTokenError("stream token malformed") from exc
    if not hmac.compare_digest(_sign(secret, body).encode(), signature.encode("utf-8", "replace")):
        raise StreamTokenError("stream token signature invalid")
    if bound_sid != call_sid:
        raise StreamTokenError("stream token bound to another call")
    if now_s >= expires:
        raise StreamTokenError("stream token expired")
    if kind not in (STREAM, RESUME):
        raise StreamTokenError("stream token malformed")
    return kind
