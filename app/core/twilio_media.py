"""Twilio Media Streams messages: parse what Twilio sends, build what we send back.

Spec: https://www.twilio.com/docs/voice/media-streams/websocket-messages
Parsing is on the per-frame path: orjson, plain slotted dataclasses, no validation library.
"""

from __future__ import annotations

import binascii
import re
from base64 import b64encode
from dataclasses import dataclass, field
from typing import Any

import orjson

_SID = re.compile(r"^[A-Za-z0-9]{2,64}$")


class TwilioMessageError(ValueError):
    """A frame from Twilio that cannot be used: ``reason`` says why, ``code`` is a fixed category
    (safe as a metric label; the reason may quote the peer)."""

    def __init__(self, reason: str, code: str = "shape") -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code


@dataclass(slots=True)
class StreamConnected:
    protocol: str


@dataclass(slots=True)
class StreamStarted:
    stream_sid: str
    call_sid: str
    account_sid: str
    custom_parameters: dict[str, str] = field(default_factory=dict)
    encoding: str = "audio/x-mulaw"
    sample_rate: int = 8000


@dataclass(slots=True)
class MediaReceived:
    """Caller audio. Twilio's timestamp is not used: some calls send no silent frames, so it stalls."""

    payload: bytes


@dataclass(slots=True)
class MarkAcknowledged:
    name: str


@dataclass(slots=True)
class DtmfReceived:
    digit: str


@dataclass(slots=True)
class StreamStopped:
    reason: str = "stop"


TwilioEvent = StreamConnected | StreamStarted | MediaReceived | MarkAcknowledged | DtmfReceived | StreamStopped


def _str(d: dict[str, Any], key: str) -> str:
    v = d.get(key)
    if not isinstance(v, str):
        raise TwilioMessageError(f"field {key!r} missing or not a string")
    return v


def parse_twilio_message(raw: str | bytes) -> TwilioEvent:
    """Parse one text frame from Twilio. Raises TwilioMessageError for anything unusable."""
    try:
        msg = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise TwilioMessageError("malformed JSON", "json") from exc
    if not isinstance(msg, dict):
        raise TwilioMessageError("frame is not a JSON object")
    event = msg.get("event")
    if event == "media":
        media = msg.get("media")
        if not isinstance(media, dict):
            raise TwilioMessageError("media frame without media object")
        payload = media.get("payload")
        if not isinstance(payload, str):
            raise TwilioMessageError("media frame without payload")
        try:
            audio = binascii.a2b_base64(payload, strict_mode=True)
        except binascii.Error as exc:
            raise TwilioMessageError("media payload is not valid base64", "base64") from exc
        return MediaReceived(audio)
    if event == "mark":
        mark = msg.get("mark")
        if not isinstance(mark, dict):
            raise TwilioMessageError("mark frame without mark object")
        return MarkAcknowledged(_str(mark, "name"))
    if event == "dtmf":
        dtmf = msg.get("dtmf")
        if not isinstance(dtmf, dict):
            raise TwilioMessageError("dtmf frame without dtmf object")
        return DtmfReceived(_str(dtmf, "digit"))
    if event == "start":
        start = msg.get("start")
        if not isinstance(start, dict):
            raise TwilioMessageError("start frame without start object")
        stream_sid = _str(start, "streamSid")
        call_sid = _str(start, "callSid")
        if not _SID.match(stream_sid) or not _SID.match(call_sid):
            raise TwilioMessageError("start frame with malformed sids", "sids")
        params = start.get("customParameters") or {}
        if not isinstance(params, dict):
            raise TwilioMessageError("customParameters is not an object")
        fmt = start.get("mediaFormat") or {}
        if not isinstance(fmt, dict):
            raise TwilioMessageError("mediaFormat is not an object", "media_format")
        rate = fmt.get("sampleRate", 8000)
        # Twilio sends the number; a numeric string is tolerated, anything else is a bad frame.
        if isinstance(rate, str) and rate.isdigit() and len(rate) <= 6:
            rate = int(rate)
        if type(rate) is not int:
            raise TwilioMessageError("mediaFormat.sampleRate is not a whole number", "media_format")
        encoding = fmt.get("encoding", "audio/x-mulaw")
        if not isinstance(encoding, str):
            raise TwilioMessageError("mediaFormat.encoding is not a string", "media_format")
        if (encoding, rate) != ("audio/x-mulaw", 8000):
            raise TwilioMessageError(
                f"media format {encoding[:40]!r} at {rate} Hz is not mu-law 8 kHz, the only one streams carry",
                "media_format",
            )
        return StreamStarted(
            stream_sid=stream_sid,
            call_sid=call_sid,
            account_sid=str(start.get("accountSid", "")),
            custom_parameters={str(k): str(v) for k, v in params.items()},
            encoding=encoding,
            sample_rate=rate,
        )
    if event == "connected":
        return StreamConnected(str(msg.get("protocol", "")))
    if event == "stop":
        return StreamStopped()
    raise TwilioMessageError(f"unknown event {str(event)[:40]!r}", "unknown_event")


class TwilioOutbound:
    """Pre-formatted messages to Twilio for one stream (the streamSid is checked once)."""

    __slots__ = ("_clear", "_mark_prefix", "_media_prefix")

    def __init__(self, stream_sid: str) -> None:
        if not _SID.match(stream_sid):
            raise TwilioMessageError("malformed streamSid")
        self._media_prefix = '{"event":"media","streamSid":"' + stream_sid + '","media":{"payload":"'
        self._mark_prefix = '{"event":"mark","streamSid":"' + stream_sid + '","mark":{"name":"'
        self._clear = '{"event":"clear","streamSid":"' + stream_sid + '"}'

    def media(self, mulaw: bytes) -> str:
        return self._media_prefix + b64encode(mulaw).decode("ascii") + '"}}'

    def mark(self, name: str) -> str:
        # Mark names are generated by us from [a-z0-9-]; no escaping needed.
        return self._mark_prefix + name + '"}}'

    def clear(self) -> str:
        return self._clear
