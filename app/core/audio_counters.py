"""What an engine's call machine reports of a call's audio, read off the two pure parts both engines share:
the caller's input (held, dropped, replayed frames; seconds in) and the agent's playback (seconds and bytes
out). One definition for the Realtime bridge and the cascaded call."""

from __future__ import annotations

from app.core.caller_input import CallerInput
from app.core.playback import AgentPlayback


class AudioCounters:
    """A mixin: the class sets ``caller`` and ``out``."""

    __slots__ = ()
    caller: CallerInput
    out: AgentPlayback

    @property
    def frames_held(self) -> int:
        return self.caller.frames_held

    @property
    def frames_dropped(self) -> int:
        return self.caller.frames_dropped

    @property
    def frames_replayed(self) -> int:
        return self.caller.frames_replayed

    @property
    def caller_seconds_in(self) -> float:
        return self.caller.seconds_in

    @property
    def agent_seconds_out(self) -> float:
        return self.out.seconds_out

    @property
    def agent_bytes_out(self) -> int:
        """Agent audio sent to the caller so far (transport bytes)."""
        return self.out.bytes_out
