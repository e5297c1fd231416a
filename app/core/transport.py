"""Where the caller is: how each transport carries audio, and the browser page's messages.

Two transports join a call to an engine. Twilio's media stream carries mu-law at 8 kHz in JSON text frames
(``app.core.twilio_media``). The console's "Talk to the agent" page carries PCM16 at 24 kHz, the engines'
own format, so nothing is resampled: binary WebSocket frames of audio both ways, and small JSON text frames
for the rest. The page speaks the media stream's vocabulary where it can (a named mark after each piece of
agent audio, echoed once it has played; ``clear`` to flush its buffer on a barge-in), so the playback and
barge-in logic the engines share serves both transports unchanged.

Page -> server: first ``{"type": "start", "csrf": ..., "engine": "realtime"|"cascaded"}``; then binary
frames of caller audio (PCM16 24 kHz mono, whole samples, at most ``MAX_BROWSER_FRAME_BYTES``),
``{"type": "mark", "name": ...}`` once the audio before that mark has played, ``{"type": "hangup"}``.
Server -> page: ``{"type": "started", "call_sid": ...}``, binary agent audio, ``{"type": "mark", ...}``,
``{"type": "clear"}``, ``{"type": "transcript", "speaker", "text", "interrupted"}``,
``{"type": "ended", "reason": ...}``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import orjson

from app.core.audio import MULAW_BYTES_PER_MS, PCM24K_BYTES_PER_MS
from app.core.twilio_media import MarkAcknowledged, MediaReceived, StreamStopped, TwilioOutbound

MAX_BROWSER_FRAME_BYTES = 9600  # 200 ms of PCM16 at 24 kHz; the page sends 20 ms (960 bytes)
ENGINES = ("realtime", "cascaded")
_MARK_NAME_MAX = 64


@dataclass(frozen=True, slots=True)
class TransportAudio:
    """How a transport carries the caller's and the agent's audio."""

    name: Literal["twilio", "browser"]
    pcm24k: bool  # the caller's audio is PCM16 24 kHz (the page), not mu-law 8 kHz (Twilio)
    frame_bytes: int  # 20 ms
    chunk_bytes: int  # the most agent audio per media message: 100 ms, each followed by a mark
    bytes_per_ms: int
    rate: int  # samples a second of the caller's audio

    def wire(self, stream_sid: str) -> TwilioOutbound | BrowserOutbound:
        return TwilioOutbound(stream_sid) if self.name == "twilio" else BrowserOutbound()


TWILIO = TransportAudio(
    "twilio", pcm24k=False, frame_bytes=160, chunk_bytes=800, bytes_per_ms=MULAW_BYTES_PER_MS, rate=8000
)
BROWSER = TransportAudio(
    "browser", pcm24k=True, frame_bytes=960, chunk_bytes=4800, bytes_per_ms=PCM24K_BYTES_PER_MS, rate=24000
)


class BrowserOutbound:
    """Messages to the page: agent audio as binary frames, marks and clear as JSON text."""

    __slots__ = ()

    def media(self, pcm: bytes) -> bytes:
        return pcm

    def mark(self, name: str) -> str:
        return '{"type":"mark","name":"' + name + '"}'  # names are ours: [a-z0-9]

    def clear(self) -> str:
        return '{"type":"clear"}'


class Passthrough:
    """The audio path of a transport that speaks the engine's format already: nothing to convert."""

    __slots__ = ()

    def convert(self, audio: bytes) -> bytes:
        return audio

    def drain(self) -> bytes:
        return b""

    def discard(self) -> None:
        return None


@dataclass(frozen=True, slots=True)
class BrowserStart:
    csrf: str
    engine: str | None


class BrowserMessageError(ValueError):
    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


BrowserEvent = BrowserStart | MediaReceived | MarkAcknowledged | StreamStopped


def parse_browser_message(data: str | bytes, *, binary: bool) -> BrowserEvent:
    """One message from the page. ``binary``: it came as a binary frame (caller audio)."""
    if binary:
        if not isinstance(data, bytes) or not data:
            raise BrowserMessageError("empty", "empty audio frame")
        if len(data) > MAX_BROWSER_FRAME_BYTES:
            raise BrowserMessageError("too_big", f"audio frame larger than {MAX_BROWSER_FRAME_BYTES} bytes")
        if len(data) & 1:
            raise BrowserMessageError("odd", "audio frame of an odd number of bytes (PCM16 is two bytes a sample)")
        return MediaReceived(data)
    try:
        message: Any = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise BrowserMessageError("json", "not JSON") from exc
    if not isinstance(message, dict):
        raise BrowserMessageError("shape", "a message is a JSON object")
    kind = message.get("type")
    if kind == "mark":
        name = message.get("name")
        if not isinstance(name, str) or not name or len(name) > _MARK_NAME_MAX:
            raise BrowserMessageError("mark", "a mark needs its name")
        return MarkAcknowledged(name)
    if kind == "hangup":
        return StreamStopped()
    if kind == "start":
        csrf, engine = message.get("csrf"), message.get("engine")
        if not isinstance(csrf, str) or not csrf:
            raise BrowserMessageError("csrf", "the start message carries the page's CSRF token")
        if engine is not None and engine not in ENGINES:
            raise BrowserMessageError("engine", f"engine must be one of {', '.join(ENGINES)}")
        return BrowserStart(csrf, engine)
    raise BrowserMessageError("type", f"unknown message type {str(kind)[:40]!r}")
