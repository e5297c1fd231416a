"""Where each caller utterance began, until its words come: both engines place a caller's transcript line at
the moment the caller started speaking (ms from the call's start), whether the transcript arrives or fails."""

from __future__ import annotations

UNTRANSCRIBED = "[the caller spoke; it could not be transcribed]"


class CallerSpeech:
    """Utterances (by their input item's id) whose transcript has not come yet, and when each began."""

    __slots__ = ("_began",)

    def __init__(self) -> None:
        self._began: dict[str, int] = {}

    def began(self, item_id: str, offset_ms: int) -> None:
        self._began[item_id] = offset_ms

    def take(self, item_id: str, fallback_ms: int) -> int:
        """When the utterance began (``fallback_ms`` if its start was never seen); it is no longer awaited."""
        return self._began.pop(item_id, fallback_ms)

    def clear(self) -> None:
        self._began.clear()

    @property
    def pending_ms(self) -> int | None:
        """When the earliest utterance still awaiting its transcript began."""
        return min(self._began.values(), default=None)

    @property
    def awaiting(self) -> bool:
        """The caller started speaking and their words have not been transcribed yet."""
        return bool(self._began)
