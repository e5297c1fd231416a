"""What the caller has actually heard, from Twilio's mark echoes.

Each chunk of agent audio sent to Twilio is followed by a uniquely named mark; Twilio echoes the
mark once the audio before it has played. The heard position of an assistant item is its last
echoed mark's byte count (mu-law 8 kHz: 8 bytes per ms). Elapsed wall time would be wrong:
playback starts late, stalls, and is cut short by ``clear``.
"""

from __future__ import annotations

from collections.abc import Callable

from app.core.audio import MULAW_BYTES_PER_MS, AgentAudioPath
from app.core.call_events import Command, SendToTwilio
from app.core.transport import BrowserOutbound, Passthrough
from app.core.twilio_media import TwilioOutbound

TWILIO_FRAME_BYTES = 160  # 20 ms of mu-law at 8 kHz


class PlaybackTracker:
    __slots__ = ("_acked", "_bytes_per_ms", "_pending", "_sent", "_seq")

    def __init__(self, bytes_per_ms: int = MULAW_BYTES_PER_MS) -> None:
        self._bytes_per_ms = bytes_per_ms
        self._seq = 0
        self._pending: dict[str, tuple[str, int]] = {}
        self._sent: dict[str, int] = {}
        self._acked: dict[str, int] = {}

    def audio_sent(self, item_id: str, n_bytes: int) -> str:
        """Record ``n_bytes`` of mu-law sent for ``item_id``; return the mark name to send after it."""
        position = self._sent.get(item_id, 0) + n_bytes
        self._sent[item_id] = position
        self._acked.setdefault(item_id, 0)
        self._seq += 1
        name = f"m{self._seq}"
        self._pending[name] = (item_id, position)
        return name

    def mark_acknowledged(self, name: str) -> str | None:
        """Apply an echo; return the item it advanced. Unknown or stale (pre-clear) marks: None."""
        entry = self._pending.pop(name, None)
        if entry is None:
            return None
        item_id, position = entry
        if position > self._acked.get(item_id, 0):
            self._acked[item_id] = position
        return item_id

    def played_ms(self, item_id: str) -> int:
        return self._acked.get(item_id, 0) // self._bytes_per_ms

    def sent_ms(self, item_id: str) -> int:
        return self._sent.get(item_id, 0) // self._bytes_per_ms

    def drained(self, item_id: str) -> bool:
        return self._sent.get(item_id, 0) <= self._acked.get(item_id, 0)

    @property
    def unplayed(self) -> bool:
        return bool(self._pending)

    def clear(self) -> list[tuple[str, int]]:
        """Twilio's queue was flushed: forget pending marks; return (item, heard ms) of each cut item."""
        cut = [
            (item_id, self._acked[item_id] // self._bytes_per_ms)
            for item_id, sent in self._sent.items()
            if sent > self._acked[item_id]
        ]
        self._pending.clear()
        for item_id, _ in cut:
            self._sent[item_id] = self._acked[item_id]
        return cut

    def forget(self, item_id: str) -> None:
        if self.drained(item_id):
            self._sent.pop(item_id, None)
            self._acked.pop(item_id, None)


class AgentPlayback:
    """Agent audio on its way to the caller, whichever engine made it: converted to the transport's format,
    sent in whole 20 ms frames, at most ``chunk_bytes`` per media message, each followed by a named mark, and
    flushed on a barge-in. ``tracker`` says how much of each item (a Realtime response item, a cascaded turn)
    the caller heard.

    One item's audio is framed at a time (``item``); audio of another item first pushes out the partial
    frame of the one before. ``finish`` ends an item: the converter's tail and the partial frame go out.
    """

    __slots__ = (
        "_buf", "_chunk", "_frame", "_path", "bytes_out", "bytes_per_ms", "item", "on_clear", "tap", "tracker", "wire",
    )  # fmt: skip

    def __init__(
        self,
        path: AgentAudioPath | Passthrough,
        chunk_bytes: int,
        frame_bytes: int = TWILIO_FRAME_BYTES,
        bytes_per_ms: int = MULAW_BYTES_PER_MS,
    ) -> None:
        self.tracker = PlaybackTracker(bytes_per_ms)
        self.bytes_per_ms = bytes_per_ms
        self.wire: TwilioOutbound | BrowserOutbound | None = None  # set once the transport has started
        # A recording, when the call has one: each chunk of audio as it is sent, and each clear
        self.tap: Callable[[bytes], None] | None = None
        self.on_clear: Callable[[], None] | None = None
        self.item: str | None = None
        self.bytes_out = 0  # audio sent to the caller, in the transport's format
        self._path = path
        self._chunk = chunk_bytes
        self._frame = frame_bytes
        self._buf = bytearray()

    @property
    def seconds_out(self) -> float:
        """Agent audio sent to the caller so far, in seconds."""
        return self.bytes_out / (self.bytes_per_ms * 1000)

    @property
    def unsent(self) -> bool:
        """Part of a frame waits for more audio."""
        return bool(self._buf)

    def audio(self, item_id: str, audio: bytes, out: list[Command]) -> bool:
        """Agent audio of ``item_id`` in the engine's format; the whole frames it completes go out.
        True when something was sent."""
        wire = self.wire
        if wire is None:
            return False
        if self.item != item_id:
            self.flush(out)
            self.item = item_id
        buf = self._buf
        buf += self._path.convert(audio)
        frame = self._frame
        if len(buf) < frame:
            return False
        n = len(buf) - len(buf) % frame  # whole frames now; a partial one waits for the next delta
        self.bytes_out += n
        step = self._chunk
        tracker = self.tracker
        tap = self.tap
        for i in range(0, n, step):
            chunk = bytes(buf[i : min(i + step, n)])
            out.append(SendToTwilio(wire.media(chunk)))
            out.append(SendToTwilio(wire.mark(tracker.audio_sent(item_id, len(chunk)))))
            if tap is not None:
                tap(chunk)
        del buf[:n]
        return True

    def flush(self, out: list[Command]) -> None:
        """The partial frame of the current item goes out as it is."""
        if self._buf and self.item is not None and self.wire is not None:
            self.bytes_out += len(self._buf)
            chunk = bytes(self._buf)
            out.append(SendToTwilio(self.wire.media(chunk)))
            out.append(SendToTwilio(self.wire.mark(self.tracker.audio_sent(self.item, len(chunk)))))
            if self.tap is not None:
                self.tap(chunk)
        self._buf.clear()

    def finish(self, item_id: str, out: list[Command], *, drain: bool = True) -> None:
        """``item_id`` has no more audio: the converter's tail (unless ``drain`` is False) and the partial
        frame go out."""
        if item_id != self.item:
            return
        if drain:
            self._buf += self._path.drain()
        self.flush(out)

    def clear(self, out: list[Command], also: dict[str, int] | None = None) -> dict[str, int]:
        """Barge-in: flush the caller's playback. Returns each item cut short, with the ms the caller heard
        of it (``also``: items the engine knows were cut though all their audio sent so far has played).
        Nothing was playing and nothing waits: no ``clear`` is sent and {} comes back."""
        had_unsent = bool(self._buf)
        cut = dict(self.tracker.clear())
        if also:
            for item_id, heard in also.items():
                cut.setdefault(item_id, heard)
        if not cut and not had_unsent:
            return cut
        if self.wire is not None:
            out.append(SendToTwilio(self.wire.clear()))
            if self.on_clear is not None:
                self.on_clear()
        self._buf.clear()
        self._path.discard()
        return cut

    def forget(self, item_id: str) -> None:
        """An item's line is written: its playback records go (when it has played out), and it is no longer
        the current item unless audio waits."""
        self.tracker.forget(item_id)
        if self.item == item_id and not self._buf:
            self.item = None
