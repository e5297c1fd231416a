"""The caller's audio on its way to the engine's upstream session, whichever engine it is (a Realtime session,
or the cascaded engine's transcription session): converted to the session's format, held while no session
is ready, and the last moments re-sent to a new session after a loss (the old socket may have eaten them)."""

from __future__ import annotations

from collections import deque

from app.core import realtime_events as rt
from app.core.audio import CallerAudioPath
from app.core.transport import Passthrough


class CallerInput:
    __slots__ = (
        "_bytes_per_s", "_held", "_path", "_recent", "bytes_in", "frames_dropped", "frames_held", "frames_replayed",
        "ready",
    )  # fmt: skip

    def __init__(
        self, path: CallerAudioPath | Passthrough, *, max_held: int, replay: int, bytes_per_s: int = 8000
    ) -> None:
        self._path = path
        self._bytes_per_s = bytes_per_s  # of the transport's audio: 8,000 (mu-law 8 kHz), 48,000 (PCM16 24 kHz)
        self.bytes_in = 0
        self._held: deque[bytes] = deque(maxlen=max_held)
        self._recent: deque[bytes] = deque(maxlen=replay)
        self.ready = False  # a session is configured and takes audio
        self.frames_held = 0
        self.frames_dropped = 0  # held frames pushed out by newer ones (the hold is bounded)
        self.frames_replayed = 0  # held frames sent to a (new) session once it was ready

    def frame(self, payload: bytes) -> bytes | None:
        """A transport frame: the ``input_audio_buffer.append`` to send now, or None (held, or a resampler
        still filling up: the API takes no empty append)."""
        self.bytes_in += len(payload)
        audio = self._path.convert(payload)
        if not audio:
            return None
        if not self.ready:
            self.frames_held += 1
            if len(self._held) == self._held.maxlen:
                self.frames_dropped += 1
            self._held.append(audio)
            return None
        self._recent.append(audio)
        return rt.audio_append(audio)

    @property
    def seconds_in(self) -> float:
        """The caller's audio received so far, in seconds, whatever the frames' sizes."""
        return self.bytes_in / self._bytes_per_s

    @property
    def held(self) -> int:
        return len(self._held)

    def session_ready(self) -> list[bytes]:
        """A session is configured: the held audio to send it, in order, as appends."""
        self.ready = True
        self.frames_replayed += len(self._held)
        appends = [rt.audio_append(audio) for audio in self._held]
        self._held.clear()
        return appends

    def session_lost(self) -> None:
        """Hold audio from now on, starting with the last moments sent to the lost session."""
        self.ready = False
        self._held.extendleft(reversed(self._recent))
        self._recent.clear()
