"""Energy VAD over the session's input stream (sans-I/O: samples in, speech events out).

Positions are milliseconds of input audio received, as in the Realtime API's ``audio_start_ms``
and ``audio_end_ms``, never wall-clock time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from app.emulator.audio import Pcm16, rms

FRAME_MS = 10


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    audio_start_ms: int
    """Onset minus prefix padding, never before the uncommitted buffer's start."""


@dataclass(frozen=True, slots=True)
class SpeechStopped:
    audio_start_ms: int
    audio_end_ms: int
    """Where the silence reached ``silence_duration_ms`` (it includes that silence)."""


SpeechEvent = SpeechStarted | SpeechStopped


class EnergyVad:
    """Speech starts after ``min_speech_ms`` of loud 10 ms frames, stops after enough quiet ones."""

    def __init__(self, *, threshold_rms: float, min_speech_ms: int = 20) -> None:
        self.threshold_rms = threshold_rms
        self.min_speech_ms = min_speech_ms
        self.position_ms = 0
        """Milliseconds of audio analysed so far (whole frames)."""
        self.in_speech = False
        self._pending = np.zeros(0, dtype=np.int16)
        self._rate = 0
        self._voiced_run_ms = 0
        self._voiced_run_start_ms = 0
        self._silence_run_ms = 0
        self._speech_start_ms = 0

    def reset(self) -> None:
        """Forget any speech in progress (buffer committed or cleared by the client)."""
        self.in_speech = False
        self._voiced_run_ms = 0
        self._silence_run_ms = 0

    def skip(self, pcm: Pcm16, rate: int) -> None:
        """Advance the stream position without detecting (turn detection is off)."""
        self._feed_frames(pcm, rate, analyse=None)

    def feed(
        self, pcm: Pcm16, rate: int, *, silence_ms: int, prefix_padding_ms: int, floor_ms: int
    ) -> list[SpeechEvent]:
        events: list[SpeechEvent] = []

        def analyse(frame: Pcm16, start_ms: int) -> None:
            loud = rms(frame) >= self.threshold_rms
            end_ms = start_ms + FRAME_MS
            if not self.in_speech:
                if not loud:
                    self._voiced_run_ms = 0
                    return
                if self._voiced_run_ms == 0:
                    self._voiced_run_start_ms = start_ms
                self._voiced_run_ms += FRAME_MS
                if self._voiced_run_ms >= self.min_speech_ms:
                    self.in_speech = True
                    self._silence_run_ms = 0
                    onset = max(floor_ms, self._voiced_run_start_ms - prefix_padding_ms)
                    self._speech_start_ms = onset
                    events.append(SpeechStarted(audio_start_ms=onset))
                return
            self._silence_run_ms = 0 if loud else self._silence_run_ms + FRAME_MS
            if self._silence_run_ms >= max(silence_ms, FRAME_MS):
                self.in_speech = False
                self._voiced_run_ms = 0
                self._silence_run_ms = 0
                events.append(SpeechStopped(audio_start_ms=self._speech_start_ms, audio_end_ms=end_ms))

        self._feed_frames(pcm, rate, analyse=analyse)
        return events

    def _feed_frames(self, pcm: Pcm16, rate: int, *, analyse: Callable[[Pcm16, int], None] | None) -> None:
        if rate != self._rate:
            self._pending = np.zeros(0, dtype=np.int16)
            self._rate = rate
        samples = np.concatenate([self._pending, pcm]) if self._pending.size else pcm
        frame = rate * FRAME_MS // 1000
        whole = samples.size - samples.size % frame
        for offset in range(0, whole, frame):
            if analyse is not None:
                analyse(samples[offset : offset + frame], self.position_ms)
            self.position_ms += FRAME_MS
        self._pending = samples[whole:].copy()
