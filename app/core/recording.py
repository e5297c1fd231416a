"""A call's recording as a pure timeline: two channels at the transport's rate, handed out in chunks.

Channel 0 is the caller as received: each frame follows the one before (the caller's clock), from the first
frame's arrival. Channel 1 is the agent as the caller heard it: audio is sent faster than real time and queues
behind what is playing (as Twilio plays it, or the page), a ``clear`` drops what had not played yet, and
silence fills the time nobody spoke. Both are PCM16 on one timeline, from the moment the recording began.

While a sensitive tool runs the recording pauses (both channels silent, the span kept as a gap); a span of the
caller's speech whose transcript was redacted is silenced. Audio is handed out (``take``) only once it is
``holdback_ms`` old, so a redaction known a few seconds after the words (their transcript) still reaches it.
Nothing here runs per frame beyond appending bytes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

CALLER, AGENT = 0, 1


@dataclass(slots=True)
class _Span:
    start: int  # samples from the recording's start
    end: int
    channel: int | None  # None: both (a pause)
    reason: str


@dataclass(slots=True)
class Chunk:
    start: int  # sample index of the first frame
    samples: np.ndarray  # int16, shape (n, 2)


@dataclass
class CallRecording:
    """``sample_bytes`` and ``decode``: the transport's audio is kept as it came (mu-law, one byte a sample,
    for Twilio: nothing is converted per frame) and decoded to PCM16 only when handed out."""

    rate: int
    started_at_ms: int
    holdback_ms: int = 8000
    sample_bytes: int = 2
    max_caller_lag_ms: int = 1000
    """A part waits for caller frames still on their way (network jitter) up to this long behind the clock;
    a caller further behind than that (a stream that stalled) is silence in the part, and the agent goes on."""
    decode: Callable[[bytes], bytes] | None = None
    _caller: bytearray = field(default_factory=bytearray)
    _caller_start: int | None = None
    _agent: list[tuple[int, bytearray]] = field(default_factory=list)  # (start sample, PCM16) stretches
    _busy_until: int = 0
    _spans: list[_Span] = field(default_factory=list)
    _paused_at: int | None = None
    _taken: int = 0  # samples handed out so far

    def begin(self, now_ms: int) -> None:
        """This recording starts now, on the call's timeline (a resumed call's node records from its own start:
        what came before is another node's parts)."""
        self._taken = max(self._taken, self._at(now_ms))

    @property
    def taken(self) -> int:
        """Samples handed out so far, from the recording's start."""
        return self._taken

    def _at(self, now_ms: int) -> int:
        return max(0, (now_ms - self.started_at_ms) * self.rate // 1000)

    # -- what happened ---------------------------------------------------------------------------------

    def caller(self, audio: bytes, now_ms: int) -> None:
        """A caller frame, as the transport carried it."""
        if self._caller_start is None:
            self._caller_start = self._at(now_ms)
        self._caller += audio

    def agent(self, audio: bytes, now_ms: int) -> None:
        """Agent audio sent to the caller: it plays from now if nothing is playing, else after what is queued."""
        if not audio:
            return
        now = self._at(now_ms)
        if self._agent and self._busy_until >= now:
            start, stretch = self._agent[-1]
            stretch += audio
        else:
            self._agent.append((now, bytearray(audio)))
        start, stretch = self._agent[-1]
        self._busy_until = start + len(stretch) // self.sample_bytes

    def clear(self, now_ms: int) -> None:
        """The caller's playback was flushed: what had not played is not in the recording."""
        now = self._at(now_ms)
        while self._agent and self._agent[-1][0] >= now:
            self._agent.pop()
        if self._agent:
            start, stretch = self._agent[-1]
            played = (now - start) * self.sample_bytes
            del stretch[played:]
        self._busy_until = min(self._busy_until, now)

    def pause(self, now_ms: int, reason: str) -> None:
        if self._paused_at is None:
            self._paused_at = self._at(now_ms)
            self._spans.append(_Span(self._paused_at, -1, None, reason))

    def resume(self, now_ms: int) -> None:
        if self._paused_at is not None:
            self._spans[-1].end = self._at(now_ms)
            self._paused_at = None

    def silence(self, channel: int, start_ms: int, end_ms: int, reason: str) -> bool:
        """Silence a span of one channel (ms from the recording's start). False when part of it was handed
        out already (older than the holdback): the caller must deal with it (say so, or rewrite)."""
        start, end = start_ms * self.rate // 1000, end_ms * self.rate // 1000
        self._spans.append(_Span(start, end, channel, reason))
        return start >= self._taken

    @property
    def gaps(self) -> list[tuple[int, int, str]]:
        """Paused spans, in ms from the recording's start (an open one ends now: -1)."""
        return [(s.start * 1000 // self.rate, s.end * 1000 // self.rate if s.end >= 0 else -1, s.reason)
                for s in self._spans if s.channel is None]  # fmt: skip

    # -- handing it out --------------------------------------------------------------------------------

    def take(self, now_ms: int, *, final: bool = False, hold_from_ms: int | None = None) -> Chunk | None:
        """The next stretch of both channels, up to ``holdback_ms`` ago (everything, when ``final``), and not
        past ``hold_from_ms`` (ms from the recording's start: caller speech whose transcript, and so whose
        redaction, is still to come)."""
        if final:  # to the end of whatever was received or queued to play
            until = max((self._caller_start or 0) + len(self._caller) // self.sample_bytes, self._busy_until)
        else:
            until = self._at(now_ms - self.holdback_ms)
            if self._caller_start is not None:  # the caller's frames follow each other: wait for late ones
                received = self._caller_start + len(self._caller) // self.sample_bytes
                if until - received <= self.max_caller_lag_ms * self.rate // 1000:
                    until = min(until, received)
            if hold_from_ms is not None:
                until = min(until, hold_from_ms * self.rate // 1000)
        if until <= self._taken:
            return None
        start = self._taken
        out = np.zeros((until - start, 2), dtype=np.int16)
        if self._caller_start is not None:
            self._place(out, start, CALLER, self._caller_start, self._caller)
        for stretch_start, stretch in self._agent:
            self._place(out, start, AGENT, stretch_start, stretch)
        for span in self._spans:
            end = span.end if span.end >= 0 else until
            lo, hi = max(span.start, start), min(end, until)
            if lo < hi:
                if span.channel is None:
                    out[lo - start : hi - start, :] = 0
                else:
                    out[lo - start : hi - start, span.channel] = 0
        self._taken = until
        self._forget(until)
        return Chunk(start, out)

    def _place(self, out: np.ndarray, start: int, channel: int, at: int, audio: bytearray) -> None:
        n = len(audio) // self.sample_bytes
        lo, hi = max(at, start), min(at + n, start + len(out))
        if lo >= hi:
            return
        raw = bytes(audio[(lo - at) * self.sample_bytes : (hi - at) * self.sample_bytes])
        samples = np.frombuffer(self.decode(raw) if self.decode is not None else raw, dtype=np.int16)
        out[lo - start : hi - start, channel] = samples

    def _forget(self, until: int) -> None:
        """Drop what was handed out (the caller's bytes and the agent's stretches before ``until``)."""
        if self._caller_start is not None and until > self._caller_start:
            drop = min(len(self._caller) // self.sample_bytes, until - self._caller_start)
            del self._caller[: drop * self.sample_bytes]
            self._caller_start += drop
        kept: list[tuple[int, bytearray]] = []
        for at, stretch in self._agent:
            end = at + len(stretch) // self.sample_bytes
            if end <= until:
                continue
            if at < until:
                del stretch[: (until - at) * self.sample_bytes]
                at = until
            kept.append((at, stretch))
        self._agent = kept
