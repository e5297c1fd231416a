"""What a call's machines and its I/O shell say to each other, whichever engine answers the call.

Events the shell feeds a call's machine besides its transport's and its engine's own (the upstream is ready or
lost, a tool finished, a cap, the clock), and the commands a machine gives the shell: audio and control for the
caller's transport, data for the engine's upstream session, the transcript, call events, tools and the end of
the call. The Realtime bridge (``app.core.bridge``) and the cascaded call (``app.core.cascade_call``) both
speak it, so the call's services carry out either without knowing which engine is behind it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class UpstreamReady:
    """The Realtime socket is open; session.update may be sent."""


@dataclass(slots=True)
class UpstreamLost:
    """The Realtime socket is gone (dropped, expired, or closed by us to roll over)."""

    reason: str


@dataclass(slots=True)
class ToolFinished:
    call_id: str
    name: str
    output: str
    ok: bool


@dataclass(slots=True)
class WrapUp:
    """A cost cap is near: the agent closes politely; the call ends after that, or at ``grace_ms``."""

    instructions: str
    reason: str
    grace_ms: int
    max_output_tokens: int | None = None  # every response from here on is held to this


@dataclass(slots=True)
class HardStop:
    """Past a cap and past the grace: hang up now."""

    reason: str


@dataclass(slots=True)
class Tick:
    """Periodic clock tick so deadlines fire without a frame arriving."""


# --- commands the shell carries out ----------------------------------------------------------


@dataclass(slots=True)
class SendToCaller:
    """To the caller's transport: a Twilio media-stream message (text), or for the page, agent audio
    (bytes, a binary frame) or a control message (text)."""

    text: str | bytes


SendToTwilio = SendToCaller  # the name the Twilio-only code knew it by


@dataclass(slots=True)
class SendToRealtime:
    data: bytes


@dataclass(slots=True)
class RunTool:
    call_id: str
    name: str
    arguments: dict[str, Any]


@dataclass(slots=True)
class OptOut:
    """Revoke consent and add the number to the internal do-not-call list, now."""

    reason: str
    source: str  # "opt_out_tool" | "dtmf"


@dataclass(slots=True)
class HangUp:
    reason: str


@dataclass(slots=True)
class HandOff:
    """The model cannot carry the call (it failed to answer twice in a row): the caller is apologised to
    and transferred, or the call ends, as when the Realtime service is gone."""

    reason: str


@dataclass(slots=True)
class RestartUpstream:
    """The Realtime session is unusable (it refused our configuration, or never confirmed it): close it
    and open a new one, as after any loss of the session."""

    reason: str


@dataclass(slots=True)
class TransferCall:
    number: str
    reason: str


@dataclass(frozen=True, slots=True)
class TranscriptLine:
    seq: int
    speaker: str  # "caller" | "agent"
    text: str
    offset_ms: int
    interrupted: bool = False
    item_id: str | None = None


@dataclass(slots=True)
class SaveTranscript:
    line: TranscriptLine


@dataclass(slots=True)
class RecordCallEvent:
    kind: str
    detail: dict[str, Any] = field(default_factory=dict)


Command = (
    SendToTwilio
    | SendToRealtime
    | RunTool
    | HangUp
    | TransferCall
    | OptOut
    | SaveTranscript
    | RecordCallEvent
    | RestartUpstream
    | HandOff
)
