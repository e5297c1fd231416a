"""What a scripted caller says, told to the emulator so that it can "transcribe" it: the control channel.

The emulator cannot recognise speech. A simulated caller (``switchboard simulate-call``) or a scripted person
of the local carrier (``switchboard carrier``) knows its words: before speaking, it sends them with the length
of the audio they were rendered to, over a WebSocket to ``ws://<emulator>/v1/emulator/said`` (one JSON object
a message: ``{"text": "...", "seconds": 2.73}``). When a caller turn is committed, the session takes the
words whose length is nearest the turn's (within ``TOLERANCE_S``: the turn also holds the VAD's padding and
the silence that ended it), told in the last ``FRESH_S``, and whose turn should have ended nearest now (told
as the speech began: it ends about its length, and the VAD's silence, later); unclaimed words expire. Several
calls at once are told apart by their lengths and times; words of the same length said at the same moment may
swap (local use).
"""

from __future__ import annotations

from dataclasses import dataclass, field

TOLERANCE_S = 1.2
FRESH_S = 60.0


@dataclass(slots=True)
class _Said:
    text: str
    seconds: float
    at: float


@dataclass
class SaidWords:
    pending: list[_Said] = field(default_factory=list)

    def tell(self, text: str, seconds: float, now: float) -> None:
        self.pending.append(_Said(text.strip(), max(0.0, seconds), now))

    def take(self, heard_s: float, now: float) -> str | None:
        """The words of a committed turn ``heard_s`` long, if some were told; None otherwise."""
        self.pending = [s for s in self.pending if now - s.at <= FRESH_S]
        # a turn holds the speech, the VAD's prefix padding before it and some of the silence after it
        fits = [s for s in self.pending if -0.3 <= heard_s - s.seconds <= TOLERANCE_S]
        if not fits:
            return None
        best = min(fits, key=lambda s: (abs(heard_s - s.seconds - 0.4) + abs(now - s.at - s.seconds - 0.6), s.at))
        self.pending.remove(best)
        return best.text
