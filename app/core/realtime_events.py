"""OpenAI Realtime API (GA) events: client events we build, server events we act on.

Spec: ../shared/PROTOCOLS.md, "OpenAI Realtime API, GA interface". Server frames arrive as raw bytes
(``recv_bytes``) and are decoded with orjson into the small typed events the bridge consumes; the
SDK's pydantic models are not built on the hot path.
"""

from __future__ import annotations

import binascii
from base64 import b64encode
from dataclasses import dataclass, field
from typing import Any

import orjson

from app.core.audio import AudioFormat

IDLE_TIMEOUT_MIN_MS, IDLE_TIMEOUT_MAX_MS = 5_000, 30_000


@dataclass(frozen=True, slots=True)
class SessionSettings:
    """Everything session.update carries; built once per call."""

    model: str
    instructions: str
    voice: str
    audio_format: AudioFormat
    tools: tuple[dict[str, Any], ...] = ()
    vad_threshold: float = 0.5
    prefix_padding_ms: int = 300
    silence_duration_ms: int = 500
    idle_timeout_ms: int | None = None  # the API takes 5000-30000, or none
    transcription_model: str = "gpt-4o-transcribe"

    def __post_init__(self) -> None:
        if self.idle_timeout_ms is not None and not IDLE_TIMEOUT_MIN_MS <= self.idle_timeout_ms <= IDLE_TIMEOUT_MAX_MS:
            raise ValueError(
                f"idle_timeout_ms must be {IDLE_TIMEOUT_MIN_MS}-{IDLE_TIMEOUT_MAX_MS} or None, not {self.idle_timeout_ms}"
            )


def _format(audio_format: AudioFormat) -> dict[str, Any]:
    return {"type": "audio/pcm", "rate": 24000} if audio_format == "pcm24k" else {"type": "audio/pcmu"}


def session_update(s: SessionSettings, *, event_id: str | None = None) -> bytes:
    """GA session.update with every turn_detection field given explicitly, and our ``event_id`` so that
    an error about it (one bad field rejects all of it) can be matched back."""
    turn_detection: dict[str, Any] = {
        "type": "server_vad",
        "threshold": s.vad_threshold,
        "prefix_padding_ms": s.prefix_padding_ms,
        "silence_duration_ms": s.silence_duration_ms,
        "create_response": True,
        "interrupt_response": True,
    }
    if s.idle_timeout_ms is not None:
        turn_detection["idle_timeout_ms"] = s.idle_timeout_ms
    fmt = _format(s.audio_format)
    session: dict[str, Any] = {
        "type": "realtime",
        "model": s.model,
        "output_modalities": ["audio"],
        "instructions": s.instructions,
        "audio": {
            "input": {
                "format": fmt,
                "transcription": {"model": s.transcription_model},
                "noise_reduction": {"type": "near_field"},
                "turn_detection": turn_detection,
            },
            "output": {"format": fmt, "voice": s.voice},
        },
        "tools": list(s.tools),
        "tool_choice": "auto",
    }
    event: dict[str, Any] = {"type": "session.update", "session": session}
    if event_id is not None:
        event["event_id"] = event_id
    return orjson.dumps(event)


@dataclass(frozen=True, slots=True)
class TranscriptionSettings:
    """What a transcription session's session.update carries (the cascaded engine's speech-to-text)."""

    model: str = "gpt-4o-mini-transcribe"
    audio_format: AudioFormat = "pcm24k"
    language: str | None = None
    vad_threshold: float = 0.5
    prefix_padding_ms: int = 300
    silence_duration_ms: int = 500


def transcription_session_update(s: TranscriptionSettings, *, event_id: str | None = None) -> bytes:
    """GA session.update for a session opened with ``intent=transcription``: only audio input (format,
    the transcription model, noise reduction, server VAD); nothing about answering."""
    transcription: dict[str, Any] = {"model": s.model}
    if s.language:
        transcription["language"] = s.language
    session = {
        "type": "transcription",
        "audio": {
            "input": {
                "format": _format(s.audio_format),
                "transcription": transcription,
                "noise_reduction": {"type": "near_field"},
                "turn_detection": {
                    "type": "server_vad",
                    "threshold": s.vad_threshold,
                    "prefix_padding_ms": s.prefix_padding_ms,
                    "silence_duration_ms": s.silence_duration_ms,
                },
            }
        },
    }
    event: dict[str, Any] = {"type": "session.update", "session": session}
    if event_id is not None:
        event["event_id"] = event_id
    return orjson.dumps(event)


_APPEND_PREFIX = b'{"type":"input_audio_buffer.append","audio":"'


def audio_append(audio: bytes) -> bytes:
    """input_audio_buffer.append, formatted by hand: it is sent 50 times a second per call."""
    return _APPEND_PREFIX + b64encode(audio) + b'"}'


def response_create(event_id: str, instructions: str | None = None, max_output_tokens: int | None = None) -> bytes:
    """response.create with our event_id, so an error about it can be matched back."""
    response: dict[str, Any] = {"output_modalities": ["audio"]}
    if instructions is not None:
        response["instructions"] = instructions
    if max_output_tokens is not None:
        response["max_output_tokens"] = max_output_tokens
    return orjson.dumps({"type": "response.create", "event_id": event_id, "response": response})


def response_cancel(response_id: str) -> bytes:
    """response.cancel for the response in progress: it stops generating (and costing) at once."""
    return orjson.dumps({"type": "response.cancel", "response_id": response_id})


def item_truncate(item_id: str, audio_end_ms: int) -> bytes:
    return orjson.dumps(
        {"type": "conversation.item.truncate", "item_id": item_id, "content_index": 0, "audio_end_ms": audio_end_ms}
    )


def function_call_output(call_id: str, output: str) -> bytes:
    return orjson.dumps(
        {
            "type": "conversation.item.create",
            "item": {"type": "function_call_output", "call_id": call_id, "output": output},
        }
    )


def history_item(role: str, text: str) -> bytes:
    """A past turn restored into a new session: user turns as input_text, agent turns as output_text."""
    kind = "input_text" if role == "user" else "output_text"
    return orjson.dumps(
        {
            "type": "conversation.item.create",
            "item": {"type": "message", "role": role, "content": [{"type": kind, "text": text}]},
        }
    )


def user_text(text: str) -> bytes:
    return orjson.dumps(
        {
            "type": "conversation.item.create",
            "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]},
        }
    )


# --- server events the bridge acts on ------------------------------------------------------


@dataclass(slots=True)
class SessionCreated:
    expires_at: int | None  # unix seconds: the session ends then (60 minutes today)


@dataclass(slots=True)
class SessionUpdated:
    session: dict[str, Any]


@dataclass(slots=True)
class AudioDelta:
    response_id: str
    item_id: str
    audio: bytes


@dataclass(slots=True)
class AudioDone:
    response_id: str
    item_id: str


@dataclass(slots=True)
class TranscriptDelta:
    response_id: str
    item_id: str
    delta: str


@dataclass(slots=True)
class TranscriptDone:
    response_id: str
    item_id: str
    transcript: str


@dataclass(slots=True)
class SpeechStarted:
    audio_start_ms: int
    item_id: str


@dataclass(slots=True)
class SpeechStopped:
    audio_end_ms: int
    item_id: str


@dataclass(slots=True)
class InputTranscribed:
    item_id: str
    transcript: str
    usage: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class InputTranscriptionFailed:
    item_id: str
    error: str


@dataclass(slots=True)
class ResponseCreated:
    response_id: str


@dataclass(slots=True)
class ResponseDone:
    response_id: str
    status: str
    usage: dict[str, Any] = field(default_factory=dict)
    status_details: dict[str, Any] | None = None


@dataclass(slots=True)
class FunctionCallReady:
    response_id: str
    call_id: str
    name: str
    arguments: str


@dataclass(slots=True)
class RealtimeError:
    code: str
    message: str
    error_type: str = ""
    event_id: str | None = None


@dataclass(slots=True)
class OtherServerEvent:
    type: str


RealtimeEvent = (
    SessionCreated
    | SessionUpdated
    | AudioDelta
    | AudioDone
    | TranscriptDelta
    | TranscriptDone
    | SpeechStarted
    | SpeechStopped
    | InputTranscribed
    | InputTranscriptionFailed
    | ResponseCreated
    | ResponseDone
    | FunctionCallReady
    | RealtimeError
    | OtherServerEvent
)


class RealtimeEventError(ValueError):
    pass


def parse_server_event(raw: bytes | str) -> RealtimeEvent:
    """Decode one server frame. Unknown types become OtherServerEvent; garbage raises."""
    try:
        ev = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise RealtimeEventError("malformed JSON from Realtime") from exc
    if not isinstance(ev, dict):
        raise RealtimeEventError("Realtime frame is not an object")
    t = ev.get("type")
    try:
        if t == "response.output_audio.delta":
            return AudioDelta(ev["response_id"], ev["item_id"], binascii.a2b_base64(ev["delta"]))
        if t == "response.output_audio_transcript.delta":
            return TranscriptDelta(ev["response_id"], ev["item_id"], ev.get("delta", ""))
        if t == "input_audio_buffer.speech_started":
            return SpeechStarted(int(ev.get("audio_start_ms", 0)), ev.get("item_id", ""))
        if t == "input_audio_buffer.speech_stopped":
            return SpeechStopped(int(ev.get("audio_end_ms", 0)), ev.get("item_id", ""))
        if t == "response.created":
            return ResponseCreated(ev["response"]["id"])
        if t == "response.done":
            r = ev["response"]
            return ResponseDone(r["id"], r.get("status", "completed"), r.get("usage") or {}, r.get("status_details"))
        if t == "response.output_audio.done":
            return AudioDone(ev["response_id"], ev["item_id"])
        if t == "response.output_audio_transcript.done":
            return TranscriptDone(ev["response_id"], ev["item_id"], ev.get("transcript", ""))
        if t == "conversation.item.input_audio_transcription.completed":
            return InputTranscribed(ev["item_id"], ev.get("transcript", ""), ev.get("usage") or {})
        if t == "conversation.item.input_audio_transcription.failed":
            err = ev.get("error") or {}
            return InputTranscriptionFailed(ev["item_id"], str(err.get("code") or err.get("message") or "failed")[:200])
        if t == "response.function_call_arguments.done":
            return FunctionCallReady(ev["response_id"], ev["call_id"], ev["name"], ev.get("arguments", "{}"))
        if t == "session.updated":
            return SessionUpdated(ev.get("session") or {})
        if t == "session.created":
            expires = (ev.get("session") or {}).get("expires_at")
            return SessionCreated(expires if type(expires) is int else None)
        if t == "error":
            err = ev.get("error") or {}
            return RealtimeError(
                str(err.get("code") or ""),
                str(err.get("message") or ""),
                str(err.get("type") or ""),
                err.get("event_id") if isinstance(err.get("event_id"), str) else None,
            )
    except (KeyError, TypeError, binascii.Error) as exc:
        raise RealtimeEventError(f"malformed {t} event") from exc
    return OtherServerEvent(str(t))
