"""What the caller has actually heard, from Twilio's mark echoes.

Each chunk of agent audio sent to Twilio is followed by a uniquely named mark; Twilio echoes the
mark once the audio before it has played. The heard position of an assistant item is its last
echoed mark's byte count (mu-law 8 kHz: 8 bytes per ms). Elapsed wall time would be wrong:
playback starts late, stalls, and is cut short by ``clear``.
"""

from __future__ import annotations

from app.core.audio import MULAW_BYTES_PER_MS


class PlaybackTracker:
    __slots__ = ("_acked", "_pending", "_sent", "_seq")

    def __init__(self) -> None:
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
        return self._acked.get(item_id, 0) // MULAW_BYTES_PER_MS

    def sent_ms(self, item_id: str) -> int:
        return self._sent.get(item_id, 0) // MULAW_BYTES_PER_MS

    def drained(self, item_id: str) -> bool:
        return self._sent.get(item_id, 0) <= self._acked.get(item_id, 0)

    @property
    def unplayed(self) -> bool:
        return bool(self._pending)

    def clear(self) -> list[tuple[str, int]]:
        """Twilio's queue was flushed: forget pending marks; return (item, heard ms) of each cut item."""
        cut = [
            (item_id, self._acked[item_id] // MULAW_BYTES_PER_MS)
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
