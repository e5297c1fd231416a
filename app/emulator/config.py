"""Emulator settings and fault switches (tests mutate the switches while sessions run)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from app.emulator.said import SaidWords

TtsMode = Literal["auto", "synthetic", "espeak"]


@dataclass
class Faults:
    """Failure modes of the remote peer.

    Timers count from each session's start. Assigning a field re-arms the timers of live
    sessions, so ``faults.close_code_after_s = (1006, 0.0)`` drops open sessions at once.
    """

    close_code_after_s: tuple[int, float] | None = None
    """(code, seconds): 1006 aborts the TCP connection without a close frame; other codes
    send a close frame with that code."""
    error_events: list[dict[str, Any]] = field(default_factory=list)
    """Sent right after session.created: a full ``{"type": "error", "error": {...}}`` event or
    just the inner error object."""
    session_expired_after_s: float | None = None
    """Send error ``session_expired`` then close with 1001 (the 60-minute limit, shortened)."""
    response_delay_s: float = 0.0
    """Latency between response.created and the first output event of every response."""
    refuse_session_updates: int = 0
    """The next N session.update events (any session) are refused with an error naming their event_id,
    as the real service refuses a whole update for one field it does not take."""
    unconfirmed_session_updates: int = 0
    """The next N session.update events get neither session.updated nor an error."""
    fail_responses: int = 0
    """The next N responses end at once with status ``failed`` (a server error), saying nothing."""
    cut_responses: int = 0
    """The next N responses end at once ``incomplete`` for ``content_filter``, saying nothing."""
    fail_transcriptions: int = 0
    """The next N caller turns get ``conversation.item.input_audio_transcription.failed``."""
    fail_chats: int = 0
    """Cascaded engine: the next N chat completion requests are answered 503 (the API's server_error)."""
    fail_speeches: int = 0
    """Cascaded engine: the next N speech requests are answered 503."""
    late_transcript_s: float = 0.0
    """Each caller transcript arrives this long after the turn was committed (after the answer began)."""
    session_lifetime_s: int = 3600
    """What session.created says in ``expires_at`` (from now): the real service's limit is 60 minutes."""
    _listeners: list[Callable[[], None]] = field(default_factory=list, init=False, repr=False, compare=False)

    def __setattr__(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)
        if not name.startswith("_"):
            for listener in list(getattr(self, "_listeners", ())):
                listener()

    def subscribe(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` after any fault switch is assigned."""
        self._listeners.append(listener)

    def unsubscribe(self, listener: Callable[[], None]) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)


@dataclass
class EmulatorConfig:
    """How the emulated model hears, answers and sounds."""

    faults: Faults = field(default_factory=Faults)
    said: SaidWords = field(default_factory=SaidWords)
    """Words a scripted caller said it would say (the control channel, ``app.emulator.said``): a committed
    turn of about their length is "transcribed" as them, before ``transcripts`` is consulted."""
    vad_threshold_rms: int = 500
    """Energy VAD threshold on PCM16 RMS; the session's 0..1 ``threshold`` is ignored."""
    silence_duration_ms: int | None = None
    """None: use ``turn_detection.silence_duration_ms`` from the session."""
    reply_text: Callable[[str], str] | None = None
    """User text or transcript -> assistant reply text. None: a short canned reply."""
    transcripts: list[str] = field(default_factory=list)
    """What the caller "said": one per committed audio turn, in order, shared by all sessions,
    consumed whether or not transcription is enabled (it drives replies and function triggers)."""
    function_calls: dict[str, tuple[str, dict[str, Any]]] = field(default_factory=dict)
    """Trigger phrase (case-insensitive, in user text or transcript) -> (tool name, arguments).
    The next response calls the tool instead of speaking, if the session declares it."""
    tool_call_text: dict[str, str] = field(default_factory=dict)
    """Cascaded engine, chat completions: tool name -> the words streamed before a scripted call of it (a chat
    model may answer with text and a tool call at once: "Goodbye!" and end_call)."""
    structured_reply: Callable[[dict[str, Any], str], Any] | None = None
    """Chat completions with ``response_format`` of type ``json_schema``: (the schema, the conversation's text)
    -> the answer (any JSON value: a scripted answer may break the schema, as a non-OpenAI server may). None:
    an answer derived from the conversation that fits the schema (``app.emulator.structured``)."""
    audio_ms_per_char: float = 60.0
    chunk_ms: int = 100
    realtime_pacing: bool = True
    """Pace audio deltas against the clock (at ``pacing_speed``); False: as fast as possible."""
    pacing_speed: float = 2.0
    """Multiple of real time when paced; the real service also sends faster than real time."""
    tts: TtsMode = "auto"
    """``auto``: espeak-ng when on PATH, else synthetic. ``synthetic`` is deterministic and lasts
    exactly ``audio_ms_per_char * len(text)`` ms: use it when a test checks audio lengths."""
    greeting_text: str = "Hello! Thanks for calling. How can I help you today?"
    tool_followup_text: str = "All right, that's done. Is there anything else I can help with?"
    idle_prompt_text: str = "Are you still there?"
    chat_first_token_delay_s: float = 0.0
    """Cascaded engine, chat completions: from the request to the first content chunk."""
    chat_tokens_per_s: float = 0.0
    """Cascaded engine: a word per token at this rate after the first (0: as fast as the socket takes)."""
    speech_first_bytes_delay_s: float = 0.0
    """Cascaded engine, speech: from the request to the first audio bytes."""
    speech_speed: float = 0.0
    """Cascaded engine, speech: stream the audio at this multiple of real time (0: as fast as the socket takes)."""


# What `switchboard emulator` (scripts/dev's) does with a caller's words: asking not to be called calls opt_out,
# asking for a person calls transfer_to_human, so both can be shown locally (the simulator's --say, the local
# carrier's people). Tests script their own.
LOCAL_FUNCTION_CALLS: dict[str, tuple[str, dict[str, Any]]] = {
    "stop calling": ("opt_out", {}),
    "do not call": ("opt_out", {}),
    "don't call": ("opt_out", {}),
    "remove me": ("opt_out", {}),
    "speak to a person": ("transfer_to_human", {"reason": "the caller asked for a person"}),
    "talk to a person": ("transfer_to_human", {"reason": "the caller asked for a person"}),
    "representative": ("transfer_to_human", {"reason": "the caller asked for a person"}),
}


def local_config() -> EmulatorConfig:
    return EmulatorConfig(function_calls=dict(LOCAL_FUNCTION_CALLS))
