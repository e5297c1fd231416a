"""What the simulated caller says in each 20 ms slot, and how long the agent took to answer.

Sans-I/O: the media-stream session asks `payload_for_slot(k, now)` before sending frame k,
reports `slot_sent(k, now)` after, and `agent_audio_arrived(now)` for each server media frame.
The caller listens to the greeting, speaks each utterance, waits for the agent's reply to
play out, and finally hangs up. All times are event-loop seconds.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable
from dataclasses import dataclass, field

from app.simulator.audio import FRAME_MS, SILENCE_FRAME_B64, PreparedUtterance, prepare_utterance
from app.simulator.playback import TwilioPlayback


@dataclass
class CallScript:
    """How the simulated caller behaves; reuse one script across many concurrent calls."""

    utterances: list[bytes]  # mu-law 8 kHz audio, one entry per caller turn
    # Before the first utterance: listen at least this long...
    pause_before_first_s: float = 1.0
    # ...and, when wait_for_greeting, until the agent's greeting has played out plus
    # gap_after_reply_s, giving up on a greeting after greeting_timeout_s.
    wait_for_greeting: bool = True
    greeting_timeout_s: float = 8.0
    gap_after_reply_s: float = 0.5  # silence after a reply has played out before speaking again
    reply_timeout_s: float = 10.0  # no agent audio this long after speech ended: move on
    # Barge in: start the next utterance this long after the reply's first audio arrived,
    # even while it is still playing. None waits for the reply to play out.
    interrupt_after_s: float | None = None
    dtmf: list[tuple[float, str]] = field(default_factory=list)  # (seconds after start, digit)
    max_duration_s: float = 30.0  # hard cap: the caller hangs up here whatever happens
    # Hang up once the last reply has played out and trailing_silence_s has passed
    # (or the last reply timed out). When False, keep sending silence until max_duration_s.
    hangup_when_done: bool = True
    trailing_silence_s: float = 1.0
    # Called with an utterance's index and the seconds of speech in it as the caller starts saying it (the
    # simulator tells the emulator its words then); called from the frame loop, so it must not block.
    on_speak: Callable[[int, float], None] | None = None

    _prepared: tuple[PreparedUtterance, ...] = field(default=(), init=False, repr=False, compare=False)
    _prepared_from: tuple[bytes, ...] = field(default=(), init=False, repr=False, compare=False)

    def prepared_utterances(self) -> tuple[PreparedUtterance, ...]:
        """Frames and base64 payloads, computed once per script, not once per call."""
        source = tuple(self.utterances)
        if len(source) != len(self._prepared_from) or any(
            a is not b for a, b in zip(source, self._prepared_from, strict=True)
        ):
            self._prepared = tuple(prepare_utterance(u) for u in source)
            self._prepared_from = source
        return self._prepared


@dataclass(frozen=True, slots=True)
class TurnTiming:
    """One caller turn as seen from the phone: when the turn could end, when the agent answered."""

    utterance_index: int
    speech_end_sent_at: float  # loop time the frame completing vad_silence_ms of silence was sent
    first_agent_audio_at: float | None  # loop time the first agent media frame after that arrived
    latency_ms: float | None


class _Phase(enum.Enum):
    LISTENING_TO_GREETING = "listening_to_greeting"
    SPEAKING = "speaking"
    AWAITING_REPLY = "awaiting_reply"
    FINISHED = "finished"  # nothing left to say; silence until max_duration_s


@dataclass(slots=True)
class _Turn:
    index: int
    started_slot: int
    speech_end_slot: int
    speech_end_sent_at: float | None = None
    first_agent_audio_at: float | None = None


class CallerConversation:
    """The caller's side of the dialogue, slot by slot."""

    def __init__(
        self,
        *,
        script: CallScript,
        playback: TwilioPlayback,
        started_at: float,
        vad_silence_ms: int,
    ) -> None:
        self._script = script
        self._utterances = script.prepared_utterances()
        self._playback = playback
        self._started_at = started_at
        self._vad_silence_frames = max(1, math.ceil(vad_silence_ms / FRAME_MS))
        self._phase = _Phase.LISTENING_TO_GREETING
        self._turns: list[_Turn] = []

    @property
    def phase(self) -> str:
        return self._phase.value

    def turn_timings(self) -> list[TurnTiming]:
        """Turns whose speech end went out; latency is None when no reply came after it."""
        timings: list[TurnTiming] = []
        for turn in self._turns:
            if turn.speech_end_sent_at is None:
                continue
            latency = None
            if turn.first_agent_audio_at is not None:
                latency = (turn.first_agent_audio_at - turn.speech_end_sent_at) * 1000
            timings.append(
                TurnTiming(
                    utterance_index=turn.index,
                    speech_end_sent_at=turn.speech_end_sent_at,
                    first_agent_audio_at=turn.first_agent_audio_at,
                    latency_ms=latency,
                )
            )
        return timings

    def payload_for_slot(self, slot: int, now: float) -> bytes | None:
        """Base64 payload of frame `slot`, or None when the caller hangs up instead."""
        if self._phase is _Phase.LISTENING_TO_GREETING:
            if not self._greeting_heard(now):
                return SILENCE_FRAME_B64
            return self._next_utterance(slot)
        if self._phase is _Phase.FINISHED:
            return SILENCE_FRAME_B64
        turn = self._turns[-1]
        if self._phase is _Phase.SPEAKING:
            frames = self._utterances[turn.index].frames_b64
            position = slot - turn.started_slot
            if position < len(frames):
                return frames[position]
            self._phase = _Phase.AWAITING_REPLY
        if self._reply_finished(turn, now):
            return self._next_utterance(slot)
        return SILENCE_FRAME_B64

    def slot_sent(self, slot: int, now: float) -> None:
        if self._turns:
            turn = self._turns[-1]
            if slot == turn.speech_end_slot:
                turn.speech_end_sent_at = now

    def agent_audio_arrived(self, now: float) -> None:
        if not self._turns:
            return
        turn = self._turns[-1]
        if turn.speech_end_sent_at is not None and turn.first_agent_audio_at is None:
            turn.first_agent_audio_at = now

    def _greeting_heard(self, now: float) -> bool:
        elapsed = now - self._started_at
        if elapsed < self._script.pause_before_first_s:
            return False
        if not self._script.wait_for_greeting or elapsed >= self._script.greeting_timeout_s:
            return True
        idle = self._playback.idle_for(now)
        return idle is not None and idle >= self._script.gap_after_reply_s

    def _reply_finished(self, turn: _Turn, now: float) -> bool:
        if turn.speech_end_sent_at is None:
            return False
        if turn.first_agent_audio_at is None:
            return now - turn.speech_end_sent_at >= self._script.reply_timeout_s
        is_last = turn.index == len(self._utterances) - 1
        interrupt = self._script.interrupt_after_s
        if not is_last and interrupt is not None and now - turn.first_agent_audio_at >= interrupt:
            return True
        gap = self._script.trailing_silence_s if is_last else self._script.gap_after_reply_s
        idle = self._playback.idle_for(now)
        return idle is not None and idle >= gap

    def _next_utterance(self, slot: int) -> bytes | None:
        index = len(self._turns)
        if index >= len(self._utterances):
            if self._script.hangup_when_done:
                return None
            self._phase = _Phase.FINISHED
            return SILENCE_FRAME_B64
        utterance = self._utterances[index]
        last_speech = utterance.last_speech_frame
        if last_speech < 0:  # no frame above the speech gate: treat the whole clip as speech
            last_speech = len(utterance.frames_b64) - 1
        self._turns.append(
            _Turn(
                index=index,
                started_slot=slot,
                speech_end_slot=slot + last_speech + self._vad_silence_frames,
            )
        )
        self._phase = _Phase.SPEAKING
        if self._script.on_speak is not None:
            self._script.on_speak(index, (last_speech + 1) * FRAME_MS / 1000)
        if not utterance.frames_b64:
            self._phase = _Phase.AWAITING_REPLY
            return SILENCE_FRAME_B64
        return utterance.frames_b64[0]
