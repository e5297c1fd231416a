"""Twilio's outbound playback, emulated: a real-time queue of the audio our server sends.

Sans-I/O: the media-stream session feeds it received audio, marks and clears with the loop
time, and asks which marks are due. Twilio semantics
(https://www.twilio.com/docs/voice/media-streams/websocket-messages#send-websocket-messages-to-twilio):
media is buffered and played in order at 8000 bytes/s; a mark is echoed once all audio sent
before it has played; clear flushes queued audio and echoes every pending mark.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from app.simulator.audio import SAMPLE_RATE


@dataclass(slots=True)
class _Segment:
    """A stretch of uninterrupted playback: `length` bytes of received audio from `offset`."""

    starts_at: float
    offset: int
    length: int

    @property
    def ends_at(self) -> float:
        return self.starts_at + self.length / SAMPLE_RATE


class TwilioPlayback:
    """Playout queue of one call's outbound audio, timed on the event loop clock (seconds)."""

    def __init__(self) -> None:
        self._received = bytearray()
        self._segments: list[_Segment] = []
        self._pending_marks: deque[tuple[float, str]] = deque()  # (due at, name), due ascending
        self.busy_until: float | None = None  # when queued audio runs out; None before any audio

    @property
    def received_audio(self) -> bytes:
        """Everything the server sent, including audio a clear dropped before it played."""
        return bytes(self._received)

    @property
    def has_received_audio(self) -> bool:
        return bool(self._received)

    def idle_for(self, now: float) -> float | None:
        """Seconds since the queue ran dry, or None while audio is playing or none ever came."""
        if self.busy_until is None or now < self.busy_until:
            return None
        return now - self.busy_until

    def audio_received(self, audio: bytes, now: float) -> None:
        """Queue audio: it plays from now if idle, else right after what is queued."""
        if not audio:
            return
        offset = len(self._received)
        self._received += audio
        last = self._segments[-1] if self._segments else None
        if last is not None and self.busy_until is not None and now < self.busy_until:
            # Still playing: the new audio continues the current segment without a gap.
            last.length += len(audio)
        else:
            self._segments.append(_Segment(starts_at=now, offset=offset, length=len(audio)))
        self.busy_until = self._segments[-1].ends_at

    def mark_received(self, name: str, now: float) -> float:
        """Queue a mark behind the audio sent before it; return when it falls due."""
        due = now if self.busy_until is None else max(now, self.busy_until)
        self._pending_marks.append((due, name))
        return due

    def next_mark_due(self) -> float | None:
        return self._pending_marks[0][0] if self._pending_marks else None

    def pop_due_marks(self, now: float) -> list[str]:
        """Marks whose audio has fully played by `now`, in the order they were sent."""
        due: list[str] = []
        while self._pending_marks and self._pending_marks[0][0] <= now:
            due.append(self._pending_marks.popleft()[1])
        return due

    def clear(self, now: float) -> list[str]:
        """Drop unplayed audio; return every pending mark, to be echoed immediately."""
        self._truncate_at(now)
        if self.busy_until is not None and self.busy_until > now:
            self.busy_until = now
        flushed = [name for _, name in self._pending_marks]
        self._pending_marks.clear()
        return flushed

    def stretches(self) -> list[tuple[float, float]]:
        """(start, end) of each stretch of uninterrupted playback, in order."""
        return [(segment.starts_at, segment.ends_at) for segment in self._segments]

    def played_audio(self, until: float) -> bytes:
        """The audio the caller heard up to `until` (unplayed and cleared parts excluded)."""
        played = bytearray()
        for segment in self._segments:
            heard = _bytes_played(segment, until)
            played += self._received[segment.offset : segment.offset + heard]
        return bytes(played)

    def _truncate_at(self, now: float) -> None:
        while self._segments and self._segments[-1].starts_at >= now:
            self._segments.pop()
        if self._segments:
            last = self._segments[-1]
            last.length = _bytes_played(last, now)


def _bytes_played(segment: _Segment, until: float) -> int:
    if until >= segment.ends_at:
        return segment.length
    if until <= segment.starts_at:
        return 0
    return min(segment.length, int((until - segment.starts_at) * SAMPLE_RATE))
