"""The call bridge: one pure state machine between Twilio's media stream and a Realtime session.

``CallBridge.handle(event, now_ms) -> list[Command]``, synchronous and free of I/O, in the manner
of h11 and websockets' sans-I/O protocols. The socket glue (app/calls/media.py) feeds it events
from both sockets and carries out the commands; a unit test can replay a whole call with plain
values. Time is always passed in.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from app.core import realtime_events as rt
from app.core.audio import (
    DEFAULT_RESAMPLE_QUALITY,
    DEFAULT_RESAMPLER,
    AgentAudioPath,
    AudioFormat,
    CallerAudioPath,
    ResampleQuality,
    Resampler,
    upstream_ms,
)
from app.core.audio_counters import AudioCounters
from app.core.call_events import (  # the calls' vocabulary, re-exported (``X as X``): the bridge speaks it
    Command as Command,
)
from app.core.call_events import (
    HandOff as HandOff,
)
from app.core.call_events import (
    HangUp as HangUp,
)
from app.core.call_events import (
    HardStop as HardStop,
)
from app.core.call_events import (
    OptOut as OptOut,
)
from app.core.call_events import (
    RecordCallEvent as RecordCallEvent,
)
from app.core.call_events import (
    RestartUpstream as RestartUpstream,
)
from app.core.call_events import (
    RunTool as RunTool,
)
from app.core.call_events import (
    SaveTranscript as SaveTranscript,
)
from app.core.call_events import (
    SendToRealtime as SendToRealtime,
)
from app.core.call_events import (
    SendToTwilio as SendToTwilio,
)
from app.core.call_events import (
    Tick as Tick,
)
from app.core.call_events import (
    ToolFinished as ToolFinished,
)
from app.core.call_events import (
    TranscriptLine as TranscriptLine,
)
from app.core.call_events import (
    TransferCall as TransferCall,
)
from app.core.call_events import (
    UpstreamLost as UpstreamLost,
)
from app.core.call_events import (
    UpstreamReady as UpstreamReady,
)
from app.core.call_events import (
    WrapUp as WrapUp,
)
from app.core.caller_input import CallerInput
from app.core.caller_speech import UNTRANSCRIBED, CallerSpeech
from app.core.playback import AgentPlayback
from app.core.tools import END_CALL, HANDOFF_INSTRUCTIONS, OPT_OUT, TRANSFER_TO_HUMAN
from app.core.transport import TWILIO, Passthrough, TransportAudio
from app.core.twilio_media import (
    DtmfReceived,
    MarkAcknowledged,
    MediaReceived,
    StreamConnected,
    StreamStarted,
    StreamStopped,
)


@dataclass(frozen=True, slots=True)
class BridgeConfig:
    session: rt.SessionSettings
    greeting_instructions: str
    transfer_number: str | None = None
    custom_tools: frozenset[str] = frozenset()
    # Agent audio goes to Twilio as whole 20 ms frames, at most this many bytes per media message, each
    # followed by a mark (Twilio takes media of any size and plays it in order). 800 = 100 ms: a Realtime
    # delta is one media + one mark instead of five of each, and barge-in truncation is exact to 100 ms.
    media_chunk_bytes: int = 800
    # Caller audio held while no Realtime session is ready: 10 s, as long as a reconnect may take
    # (UPSTREAM_RECOVERY_DEADLINE_S), and call set-up on a busy node (a 3 s bound lost frames at 100 calls).
    max_buffered_frames: int = 500
    replay_frames: int = 25  # caller audio re-sent after an upstream loss: the old socket may have eaten it
    history_items: int = 40  # restored as conversation items; older turns are summarised in instructions
    summary_chars: int = 4000
    session_confirm_ms: int = 2000  # a session that has not confirmed our session.update by then is replaced
    end_action_grace_ms: int = 15_000  # hang up/transfer even if no last mark comes back or the caller never stops
    handoff_instructions: str = HANDOFF_INSTRUCTIONS
    resampler: Resampler = DEFAULT_RESAMPLER
    resample_quality: ResampleQuality = DEFAULT_RESAMPLE_QUALITY
    opt_out_digit: str | None = "9"  # this key opts the number out, on any call (the strict reading)

    @property
    def audio_format(self) -> AudioFormat:
        return self.session.audio_format


@dataclass(slots=True)
class _AgentItem:
    item_id: str
    response_id: str
    offset_ms: int
    upstream_bytes: int = 0
    transcript_parts: list[str] = field(default_factory=list)
    transcript: str | None = None
    audio_done: bool = False
    finalized: bool = False

    @property
    def text(self) -> str:
        """The final transcript, or what has streamed of it so far."""
        return self.transcript if self.transcript is not None else "".join(self.transcript_parts)


def cut_transcript(text: str, heard_ms: int, total_ms: float) -> str:
    """The part of ``text`` the caller heard, assuming speech evenly spread over ``total_ms``."""
    if total_ms <= 0 or heard_ms >= total_ms:
        return text
    keep = int(len(text) * max(0.0, heard_ms / total_ms))
    if keep >= len(text):
        return text
    head = text[:keep]
    if not text[keep].isspace():
        # never keep part of a word
        head = head[: head.rfind(" ")] if " " in head else ""
    return head.rstrip()


def _summary(lines: Sequence[TranscriptLine], max_chars: int) -> str:
    """Older turns folded into the instructions of a new session (its items hold the recent ones)."""
    said = [f"{'Caller' if line.speaker == 'caller' else 'You'}: {line.text}" for line in lines]
    text = "\n".join(said)
    if len(text) > max_chars:
        text = "...\n" + text[-max_chars:]
    return "Earlier in this call (continue from here; do not greet the caller again):\n" + text


class CallBridge(AudioCounters):
    """Decides everything about one call; see the module docstring."""

    def __init__(
        self,
        config: BridgeConfig,
        *,
        started_at_ms: int,
        history: Sequence[TranscriptLine] = (),
        greeted: bool = False,
        transport: TransportAudio = TWILIO,
    ) -> None:
        self.config = config
        self.transport = transport
        # The page speaks PCM16 24 kHz, the session's own format (a browser call's session is always pcm24k)
        passthrough = transport.pcm24k and config.audio_format == "pcm24k"
        self.started_at_ms = started_at_ms
        self.history: list[TranscriptLine] = sorted(history, key=lambda line: (line.offset_ms, line.seq))
        self.greeted = greeted or bool(history)
        self.call_sid: str | None = None
        self.stream_sid: str | None = None
        self.custom_parameters: dict[str, str] = {}
        self.caller = CallerInput(
            Passthrough()
            if passthrough
            else CallerAudioPath(config.audio_format, config.resample_quality, config.resampler),
            max_held=config.max_buffered_frames,
            replay=config.replay_frames,
            bytes_per_s=transport.bytes_per_ms * 1000,
        )
        # Agent audio to the caller, and what they heard of it: the playback both engines share
        self.out = AgentPlayback(
            Passthrough()
            if passthrough
            else AgentAudioPath(config.audio_format, config.resample_quality, config.resampler),
            config.media_chunk_bytes if transport is TWILIO else transport.chunk_bytes,
            transport.frame_bytes,
            transport.bytes_per_ms,
        )
        self.playback = self.out.tracker
        self.upstream_ready = False
        # (event_id, sent at ms) of the session.update awaiting its session.updated; audio waits meanwhile
        self._configuring: tuple[str, int] | None = None
        self._session_seq = 0
        self.frames_in = 0
        self.caller_speaking = False

        # response sequencing
        self._server_response: str | None = None
        self._create_inflight: str | None = None
        self._create_seq = 0
        self._sent_creates: dict[str, str | None] = {}
        self._queued_creates: deque[str | None] = deque()
        self._muted_responses: set[str] = set()
        self._function_calls: dict[str, list[rt.FunctionCallReady]] = {}
        self._response_instructions: dict[str, str | None] = {}  # what each response was asked to do
        self._failed_in_row = 0  # responses that failed (or were cut) one after another
        # What the current session knows: a lost session's items and tool call ids mean nothing to the next.
        self._session_items: set[str] = set()
        self._session_calls: set[str] = set()

        # agent audio and transcript
        self._items: dict[str, _AgentItem] = {}
        self._finished_items: set[str] = set()
        self.speech = CallerSpeech()  # caller utterances awaiting their transcript, and when each began
        self._line_seq = max((line.seq for line in self.history), default=0)
        self.usage: list[dict[str, Any]] = []

        # pending end of call
        self._end_action: HangUp | TransferCall | None = None
        self._end_call_id: str | None = None
        self._end_deadline_ms = 0
        self.ended = False
        self.stopped_hard = False  # ended by a cap's hard stop: no waiting for anything before closing
        self.wrapping_up = False
        self._closing_instructions: str | None = None
        self._closing_asks = 0  # closing lines asked for: the first, and at most one more if the caller cut it
        self._closing_heard: str | None = None  # the closing line's response, once it has been said in full
        self._response_token_limit: int | None = None
        self._turn_stopped_ms: int | None = None
        self._turns = 0  # caller turns (speech stopped), for the per-turn latency stages
        self._turn_stages: set[str] = set()

        self._dispatch: dict[type, Callable[[Any, int], list[Command]]] = {
            MediaReceived: self._on_media,
            rt.AudioDelta: self._on_audio_delta,
            MarkAcknowledged: self._on_mark,
            rt.TranscriptDelta: self._on_transcript_delta,
            rt.SpeechStarted: self._on_speech_started,
            rt.SpeechStopped: self._on_speech_stopped,
            rt.ResponseCreated: self._on_response_created,
            rt.ResponseDone: self._on_response_done,
            rt.AudioDone: self._on_audio_done,
            rt.TranscriptDone: self._on_transcript_done,
            rt.InputTranscribed: self._on_input_transcribed,
            rt.InputTranscriptionFailed: self._on_transcription_failed,
            rt.FunctionCallReady: self._on_function_call,
            rt.RealtimeError: self._on_error,
            rt.SessionUpdated: self._on_session_updated,
            rt.SessionCreated: self._ignore,
            rt.OtherServerEvent: self._ignore,
            StreamStarted: self._on_start,
            StreamConnected: self._ignore,
            DtmfReceived: self._on_dtmf,
            StreamStopped: self._on_stop,
            UpstreamReady: self._on_upstream_ready,
            UpstreamLost: self._on_upstream_lost,
            ToolFinished: self._on_tool_finished,
            Tick: self._on_tick,
            WrapUp: self._on_wrap_up,
            HardStop: self._on_hard_stop,
        }

    # -- entry point ----------------------------------------------------------------------

    def handle(self, event: object, now_ms: int) -> list[Command]:
        return self._dispatch[type(event)](event, now_ms)

    def _ignore(self, event: object, now_ms: int) -> list[Command]:
        return []

    def _offset(self, now_ms: int) -> int:
        return max(0, now_ms - self.started_at_ms)

    # -- Twilio side ----------------------------------------------------------------------

    def _on_start(self, ev: StreamStarted, now_ms: int) -> list[Command]:
        self.call_sid = ev.call_sid
        self.stream_sid = ev.stream_sid
        self.custom_parameters = ev.custom_parameters
        self.out.wire = self.transport.wire(ev.stream_sid)
        return [RecordCallEvent("stream_started", {"stream_sid": ev.stream_sid})]

    def _on_media(self, ev: MediaReceived, now_ms: int) -> list[Command]:
        append = self.media(ev.payload)
        return [SendToRealtime(append)] if append is not None else []

    def media(self, payload: bytes) -> bytes | None:
        """A caller frame: the ``input_audio_buffer.append`` to send now, or None (held for a session not
        ready yet, or the call is over). The per-frame path calls this directly, not through handle()."""
        self.frames_in += 1
        if self.ended:
            return None  # the call is over on our side: nothing more goes upstream (or costs anything)
        return self.caller.frame(payload)

    def _on_dtmf(self, ev: DtmfReceived, now_ms: int) -> list[Command]:
        out: list[Command] = [RecordCallEvent("dtmf", {"digit": ev.digit})]
        if self.config.opt_out_digit is not None and ev.digit == self.config.opt_out_digit:
            out.append(OptOut(f"pressed {ev.digit} to opt out", "dtmf"))
            text = "[The callee pressed the opt-out key. They are now on our do-not-call list: confirm it briefly.]"
        else:
            text = f"[The caller pressed the key {ev.digit} on their phone keypad.]"
        out.append(SendToRealtime(rt.user_text(text)))
        self._request_response(None, out)
        return out

    def _on_mark(self, ev: MarkAcknowledged, now_ms: int) -> list[Command]:
        item_id = self.playback.mark_acknowledged(ev.name)
        out: list[Command] = []
        if item_id is not None:
            item = self._items.get(item_id)
            if item is not None and item.audio_done and item.transcript is not None:
                self._finalize_if_played(item, out)
        self._maybe_end(now_ms, out)
        return out

    def _on_stop(self, ev: StreamStopped, now_ms: int) -> list[Command]:
        out: list[Command] = [RecordCallEvent("stream_stopped", {})]
        self.finish(out)
        return out

    def finish(self, out: list[Command]) -> None:
        """Write what remains of the transcript: unfinished agent lines cut to what was heard."""
        for item in list(self._items.values()):
            if item.finalized:
                continue
            heard = self.playback.played_ms(item.item_id)
            total = upstream_ms(self.config.audio_format, item.upstream_bytes)
            self._emit_agent_line(item, item.text, heard, total, out)

    # -- Realtime side --------------------------------------------------------------------

    def _on_upstream_ready(self, ev: UpstreamReady, now_ms: int) -> list[Command]:
        """A (new) session: configure it. Nothing else is sent until the session confirms the whole
        configuration (one bad field rejects all of it, and the session would then run on its defaults:
        no tools, no transcription, 24 kHz PCM)."""
        self.upstream_ready = self.caller.ready = False
        self._session_seq += 1
        event_id = f"sb_session_{self._session_seq}"
        self._configuring = (event_id, now_ms)
        session = self.config.session
        older = self.history[: max(0, len(self.history) - self.config.history_items)]
        if older:
            summary = _summary(older, self.config.summary_chars)
            session = dataclasses.replace(session, instructions=f"{session.instructions}\n\n{summary}")
        return [SendToRealtime(rt.session_update(session, event_id=event_id))]

    def _on_session_updated(self, ev: rt.SessionUpdated, now_ms: int) -> list[Command]:
        if self._configuring is None:
            return []
        self._configuring = None
        return self._session_configured(now_ms)

    def _configuration_failed(self, reason: str) -> list[Command]:
        self._configuring = None
        return [RecordCallEvent("session_config_failed", {"reason": reason}), RestartUpstream(reason)]

    def _session_configured(self, now_ms: int) -> list[Command]:
        """The session runs our configuration: restore the conversation, greet once, replay held audio."""
        self.upstream_ready = True
        recent = self.history[-self.config.history_items :]
        out: list[Command] = []
        for line in recent:
            out.append(SendToRealtime(rt.history_item("user" if line.speaker == "caller" else "assistant", line.text)))
        if not self.greeted:
            self._request_response(self.config.greeting_instructions, out)
        elif recent and recent[-1].speaker == "caller":
            self._request_response(None, out)  # the caller spoke last and is waiting for an answer
        if self.caller.held:
            out.append(RecordCallEvent("caller_audio_replayed", {"frames": self.caller.held}))
        out += [SendToRealtime(append) for append in self.caller.session_ready()]
        return out

    def _on_upstream_lost(self, ev: UpstreamLost, now_ms: int) -> list[Command]:
        """Forget the dead session's state; hold caller audio (and re-send the last moments) until the next."""
        out: list[Command] = [RecordCallEvent("upstream_lost", {"reason": ev.reason})]
        self.upstream_ready = False
        self._configuring = None
        self._session_items.clear()
        self._session_calls.clear()
        self.caller.session_lost()
        self._server_response = None
        self._create_inflight = None
        self._sent_creates.clear()
        for calls in self._function_calls.values():
            for call in calls:
                out.append(
                    RecordCallEvent(
                        "tool_skipped", {"name": call.name, "call_id": call.call_id, "status": "upstream lost"}
                    )
                )
        self._function_calls.clear()
        self.caller_speaking = False
        # Agent audio already sent keeps playing at Twilio; its line is written as far as it got.
        self.out.flush(out)
        for item in list(self._items.values()):
            if not item.finalized:
                self._muted_responses.add(item.response_id)
                total = upstream_ms(self.config.audio_format, item.upstream_bytes)
                self._emit_agent_line(item, item.text, int(total), total, out, cut_short=item.transcript is None)
        return out

    @property
    def pending_speech_ms(self) -> int | None:
        """When the earliest caller speech still awaiting its transcript began (ms from the call's start)."""
        return self.speech.pending_ms

    @property
    def awaiting_transcription(self) -> bool:
        """The caller started speaking and their words have not been transcribed yet."""
        return self.speech.awaiting

    @property
    def quiet(self) -> bool:
        """Nobody is talking and nothing is in flight: a good moment to roll the session over."""
        return (
            self.upstream_ready
            and not self.caller_speaking
            and self._server_response is None
            and self._create_inflight is None
            and not self._queued_creates
            and not self.playback.unplayed
            and not self.out.unsent
        )

    def _on_audio_delta(self, ev: rt.AudioDelta, now_ms: int) -> list[Command]:
        if self.ended or ev.response_id in self._muted_responses or self.out.wire is None:
            return []  # after the end (a hard stop mid-sentence) nothing more is played
        self.greeted = True
        item = self._item(ev.item_id, ev.response_id, now_ms)
        if item is None:
            return []
        out: list[Command] = []
        item.upstream_bytes += len(ev.audio)
        if self._turn_stopped_ms is not None:
            self._turn_stage("first_delta", now_ms, out)
        if self.out.audio(ev.item_id, ev.audio, out) and self._turn_stopped_ms is not None:
            # once per turn: the first agent audio after the caller stopped
            self._turn_stage("first_audio", now_ms, out)
            out.append(RecordCallEvent("turn_latency", {"ms": now_ms - self._turn_stopped_ms, "item_id": ev.item_id}))
            self._turn_stopped_ms = None
        return out

    def _on_audio_done(self, ev: rt.AudioDone, now_ms: int) -> list[Command]:
        out: list[Command] = []
        self.out.finish(ev.item_id, out, drain=ev.response_id not in self._muted_responses)
        item = self._items.get(ev.item_id)
        if item is not None:
            item.audio_done = True
            self._finalize_if_played(item, out)
        return out

    def _item(self, item_id: str, response_id: str, now_ms: int) -> _AgentItem | None:
        """The agent item being received; None once its line was written (late events are moot)."""
        item = self._items.get(item_id)
        if item is None:
            if item_id in self._finished_items or response_id in self._muted_responses:
                return None  # written already, or of a response never played: nothing of it was heard
            item = self._items[item_id] = _AgentItem(item_id, response_id, self._offset(now_ms))
            self._session_items.add(item_id)
        return item

    def _on_transcript_delta(self, ev: rt.TranscriptDelta, now_ms: int) -> list[Command]:
        item = self._item(ev.item_id, ev.response_id, now_ms)
        if item is not None:
            item.transcript_parts.append(ev.delta)
        return []

    def _on_transcript_done(self, ev: rt.TranscriptDone, now_ms: int) -> list[Command]:
        item = self._item(ev.item_id, ev.response_id, now_ms)
        if item is None:
            return []
        item.transcript = ev.transcript
        out: list[Command] = []
        if item.upstream_bytes == 0:
            item.audio_done = True
        self._finalize_if_played(item, out)
        return out

    def _finalize_if_played(self, item: _AgentItem, out: list[Command]) -> None:
        if item.finalized or item.transcript is None or not item.audio_done:
            return
        if item.item_id == self.out.item and self.out.unsent:
            return
        if not self.playback.drained(item.item_id):
            return
        total = upstream_ms(self.config.audio_format, item.upstream_bytes)
        self._emit_agent_line(item, item.transcript, int(total), total, out)

    def _emit_agent_line(
        self,
        item: _AgentItem,
        text: str,
        heard_ms: int,
        total_ms: float,
        out: list[Command],
        *,
        cut_short: bool = False,
    ) -> None:
        item.finalized = True
        self.out.forget(item.item_id)
        self._items.pop(item.item_id, None)
        self._finished_items.add(item.item_id)
        interrupted = cut_short or (item.upstream_bytes > 0 and heard_ms < total_ms - 20)
        spoken = cut_transcript(text, heard_ms, total_ms) if interrupted else text
        if not spoken:
            return  # nothing of it was heard (or said): the barge_in event records the cut
        self._save_line("agent", spoken, item.offset_ms, interrupted, item.item_id, out)

    def _save_line(
        self, speaker: str, text: str, offset_ms: int, interrupted: bool, item_id: str | None, out: list[Command]
    ) -> None:
        self._line_seq += 1
        line = TranscriptLine(self._line_seq, speaker, text, offset_ms, interrupted, item_id)
        # In conversation order (when each turn began), not arrival order: a caller's transcript can
        # arrive after the agent has started answering, and a restored session must see the question
        # before its answer.
        at = len(self.history)
        while at > 0 and self.history[at - 1].offset_ms > offset_ms:
            at -= 1
        self.history.insert(at, line)
        out.append(SaveTranscript(line))

    def _on_speech_stopped(self, ev: rt.SpeechStopped, now_ms: int) -> list[Command]:
        self.caller_speaking = False
        self._turn_stopped_ms = now_ms  # the turn's latency runs until its answer's first audio goes out
        self._turns += 1
        self._turn_stages = set()
        return []

    def _turn_stage(self, stage: str, now_ms: int, out: list[Command]) -> None:
        """A latency stage of the current caller turn, once: response_created, first_delta, first_audio."""
        if self._turn_stopped_ms is not None and stage not in self._turn_stages:
            self._turn_stages.add(stage)
            detail = {"turn": self._turns, "stage": stage, "ms": now_ms - self._turn_stopped_ms}
            out.append(RecordCallEvent("turn_stage", detail))

    def _on_speech_started(self, ev: rt.SpeechStarted, now_ms: int) -> list[Command]:
        self.speech.began(ev.item_id, self._offset(now_ms))
        self.caller_speaking = True
        out: list[Command] = []
        self._cancel_hang_up(out)
        # The item being streamed may be fully played so far, yet OpenAI generated more of it than
        # the caller heard (the rest was still on its way): it is cut too.
        also: dict[str, int] = {}
        streaming = self._items.get(self.out.item) if self.out.item is not None else None
        if streaming is not None and not streaming.finalized:
            heard = self.playback.played_ms(streaming.item_id)
            if heard < upstream_ms(self.config.audio_format, streaming.upstream_bytes) - 1:
                also[streaming.item_id] = heard
        cut = self.out.clear(out, also)
        if not cut:
            return out
        for item_id, heard_ms in cut.items():
            item = self._items.get(item_id)
            sent_upstream = upstream_ms(self.config.audio_format, item.upstream_bytes) if item else 0.0
            audio_end_ms = int(min(heard_ms, sent_upstream))
            if item_id in self._session_items:  # a lost session's item is not the new session's to cut
                out.append(SendToRealtime(rt.item_truncate(item_id, audio_end_ms)))
            out.append(RecordCallEvent("barge_in", {"item_id": item_id, "audio_end_ms": audio_end_ms}))
            if item is not None:
                if item.response_id == self._closing_heard:
                    self._closing_heard = None  # the caller did not hear the closing line out
                self._muted_responses.add(item.response_id)
                if not item.finalized:
                    self._emit_agent_line(item, item.text, audio_end_ms, sent_upstream, out)
        return out

    def _on_transcription_failed(self, ev: rt.InputTranscriptionFailed, now_ms: int) -> list[Command]:
        """The caller said something that could not be transcribed: the transcript says so (at its place),
        and nothing waits for words that will never come."""
        offset = self.speech.take(ev.item_id, self._offset(now_ms))
        out: list[Command] = [RecordCallEvent("transcription_failed", {"item_id": ev.item_id, "error": ev.error})]
        self._save_line("caller", UNTRANSCRIBED, offset, False, ev.item_id, out)
        return out

    def _on_input_transcribed(self, ev: rt.InputTranscribed, now_ms: int) -> list[Command]:
        text = ev.transcript.strip()
        offset = self.speech.take(ev.item_id, self._offset(now_ms))
        out: list[Command] = []
        if ev.usage:
            out.append(RecordCallEvent("transcription_usage", {"item_id": ev.item_id, "usage": ev.usage}))
        if text:
            self._save_line("caller", text, offset, False, ev.item_id, out)
        return out

    # -- responses and tools --------------------------------------------------------------

    def _request_response(self, instructions: str | None, out: list[Command]) -> None:
        """response.create now if nothing is active, else once the current response is done."""
        if self._server_response is None and self._create_inflight is None:
            self._create_seq += 1
            event_id = f"sb_resp_{self._create_seq}"
            self._create_inflight = event_id
            self._sent_creates[event_id] = instructions
            out.append(SendToRealtime(rt.response_create(event_id, instructions, self._response_token_limit)))
        elif instructions is not None or None not in self._queued_creates:
            self._queued_creates.append(instructions)

    def _on_response_created(self, ev: rt.ResponseCreated, now_ms: int) -> list[Command]:
        self._server_response = ev.response_id
        inflight, self._create_inflight = self._create_inflight, None
        if inflight is not None:
            self._response_instructions[ev.response_id] = self._sent_creates.get(inflight)
        out: list[Command] = []
        if inflight is None and self.wrapping_up:
            # The server answered the caller by itself (turn detection), with the session's limits, not the
            # closing line's: that answer is cancelled unheard. If the caller cut the closing line short, it is
            # asked for once more (held to its token limit); else the call ends once the caller has finished.
            out.append(SendToRealtime(rt.response_cancel(ev.response_id)))
            self._muted_responses.add(ev.response_id)
            if (
                not self.ended
                and self._closing_heard is None
                and self._closing_asks < 2
                and self._closing_instructions not in self._queued_creates
            ):
                self._closing_asks += 1
                self._request_response(self._closing_instructions, out)
            return out
        self._turn_stage("response_created", now_ms, out)
        return out

    def _on_response_done(self, ev: rt.ResponseDone, now_ms: int) -> list[Command]:
        if self._server_response == ev.response_id:
            self._server_response = None
        self._sent_creates.clear()
        out: list[Command] = []
        if ev.usage:
            self.usage.append(ev.usage)
            out.append(RecordCallEvent("response_usage", {"response_id": ev.response_id, "usage": ev.usage}))
        calls = self._function_calls.pop(ev.response_id, [])
        instructions = self._response_instructions.pop(ev.response_id, None)
        said = ev.status == "completed" or (ev.status == "incomplete" and ev.response_id not in self._muted_responses)
        if self.wrapping_up and said and instructions is not None and instructions == self._closing_instructions:
            self._closing_heard = ev.response_id  # unless the caller cuts what is still playing of it
        lost = ev.status != "completed" and self._answer_lost(ev) and not self.ended and not self.wrapping_up
        self._failed_in_row = (
            self._failed_in_row + 1 if lost else 0 if ev.status == "completed" else self._failed_in_row
        )
        if ev.status != "completed":
            self._muted_responses.add(ev.response_id)
            if ev.status != "cancelled" or ev.status_details:
                out.append(
                    RecordCallEvent("response_not_completed", {"status": ev.status, "details": ev.status_details})
                )
            for call in calls:
                out.append(
                    RecordCallEvent("tool_skipped", {"name": call.name, "call_id": call.call_id, "status": ev.status})
                )
                if ev.status != "cancelled":
                    # A cancelled response means the caller is talking and a new turn follows; a failed
                    # or incomplete one would leave the model waiting for a result that never comes.
                    self._tool_result(
                        call.call_id, call.name, f'{{"error":"not run: the response was {ev.status}"}}', False, out
                    )
        else:
            for call in calls:
                self._start_tool(call, now_ms, out)
        if lost:
            detail = {"status": ev.status, "details": ev.status_details, "in_a_row": self._failed_in_row}
            if self._failed_in_row == 1:
                out.append(RecordCallEvent("response_retried", detail))
                if not calls:  # a failed tool call already asked for the next response, with its error
                    self._request_response(instructions, out)  # once more, as asked
            else:
                self.ended = True
                out.append(RecordCallEvent("responses_failing", detail))
                out.append(HandOff(f"the model failed to answer {self._failed_in_row} times in a row"))
        if self._queued_creates and self._server_response is None and self._create_inflight is None:
            self._request_response(self._queued_creates.popleft(), out)
        self._maybe_end(now_ms, out)
        return out

    @staticmethod
    def _answer_lost(ev: rt.ResponseDone) -> bool:
        """A response that failed, or was cut for a reason other than the token limit we set (a closing
        line held to its length is as meant): the caller would be left in silence."""
        if ev.status == "failed":
            return True
        reason = (ev.status_details or {}).get("reason")
        return ev.status == "incomplete" and reason != "max_output_tokens"

    def _on_function_call(self, ev: rt.FunctionCallReady, now_ms: int) -> list[Command]:
        # Run only once the response is known to have completed (it may yet be cancelled).
        self._function_calls.setdefault(ev.response_id, []).append(ev)
        self._session_calls.add(ev.call_id)
        return []

    def _start_tool(self, call: rt.FunctionCallReady, now_ms: int, out: list[Command]) -> None:
        try:
            args = orjson.loads(call.arguments or "{}")
        except orjson.JSONDecodeError:
            args = None
        if not isinstance(args, dict):
            self._tool_result(call.call_id, call.name, '{"error":"arguments were not a JSON object"}', False, out)
            return
        reason = str(args.get("reason", ""))
        out.append(RecordCallEvent("tool_called", {"name": call.name, "call_id": call.call_id, "arguments": args}))
        if call.name == END_CALL:
            self._schedule_end(HangUp(reason or "agent ended the call"), now_ms, call.call_id)
        elif call.name == OPT_OUT:
            out.append(OptOut(str(args.get("words") or "asked not to be called again"), "opt_out_tool"))
            self._tool_result(
                call.call_id, call.name, '{"status":"opted out: no more calls to this number"}', True, out
            )
        elif call.name == TRANSFER_TO_HUMAN:
            number = self.config.transfer_number
            if number:
                out.append(SendToRealtime(rt.function_call_output(call.call_id, '{"status":"transferring"}')))
                self._request_response(self.config.handoff_instructions, out)
                self._schedule_end(TransferCall(number, reason or "caller asked for a human"), now_ms, call.call_id)
            else:
                self._tool_result(
                    call.call_id,
                    call.name,
                    '{"error":"no human agent is available; offer to take a message"}',
                    False,
                    out,
                )
        elif call.name in self.config.custom_tools:
            out.append(RunTool(call.call_id, call.name, args))
        else:
            self._tool_result(call.call_id, call.name, '{"error":"unknown tool"}', False, out)

    def _tool_result(self, call_id: str, name: str, output: str, ok: bool, out: list[Command]) -> None:
        if call_id in self._session_calls:
            out.append(SendToRealtime(rt.function_call_output(call_id, output)))
        else:
            # The session that asked for it was lost: the new one never saw the call id, so the result
            # reaches it as context.
            note = f"[The {name} tool, asked for before a reconnection, finished: {output[:2000]}]"
            out.append(SendToRealtime(rt.user_text(note)))
        out.append(RecordCallEvent("tool_result", {"name": name, "call_id": call_id, "ok": ok, "output": output}))
        self._request_response(None, out)

    def _on_tool_finished(self, ev: ToolFinished, now_ms: int) -> list[Command]:
        out: list[Command] = []
        if not self.ended:
            self._tool_result(ev.call_id, ev.name, ev.output, ev.ok, out)
        return out

    def _on_error(self, ev: rt.RealtimeError, now_ms: int) -> list[Command]:
        out: list[Command] = [RecordCallEvent("upstream_error", {"code": ev.code, "message": ev.message})]
        if self._configuring is not None and ev.event_id == self._configuring[0]:
            return out + self._configuration_failed(f"session.update refused: {ev.code or ev.message}"[:200])
        if ev.event_id is not None and ev.event_id in self._sent_creates:
            instructions = self._sent_creates.pop(ev.event_id)
            if self._create_inflight == ev.event_id:
                self._create_inflight = None
            if ev.code == "conversation_already_has_active_response":
                self._queued_creates.appendleft(instructions)
            elif self._queued_creates and self._server_response is None and self._create_inflight is None:
                self._request_response(self._queued_creates.popleft(), out)
        return out

    # -- ending the call ------------------------------------------------------------------

    def _schedule_end(
        self, action: HangUp | TransferCall, now_ms: int, call_id: str | None, grace_ms: int | None = None
    ) -> None:
        if self._end_action is None and not self.ended:
            self._end_action = action
            self._end_call_id = call_id
            self._end_deadline_ms = now_ms + (self.config.end_action_grace_ms if grace_ms is None else grace_ms)

    def _on_wrap_up(self, ev: WrapUp, now_ms: int) -> list[Command]:
        out: list[Command] = []
        if self.ended or self.wrapping_up:
            return out
        self.wrapping_up = True
        self._closing_instructions = ev.instructions
        self._closing_asks = 1
        self._response_token_limit = ev.max_output_tokens
        out.append(RecordCallEvent("wrap_up", {"reason": ev.reason}))
        self._request_response(ev.instructions, out)
        if isinstance(self._end_action, HangUp):
            self._end_call_id = None  # an end_call goodbye in progress may no longer be cancelled by speech
        # No tool call id: the caller speaking does not cancel this end. A pending transfer stays.
        self._schedule_end(HangUp(ev.reason), now_ms, None, ev.grace_ms)
        return out

    def _on_hard_stop(self, ev: HardStop, now_ms: int) -> list[Command]:
        if self.ended:
            return []
        self.ended = True
        self.stopped_hard = True
        self._end_action = None
        out: list[Command] = []
        if self._server_response is not None:  # whatever it is still saying is never played: stop paying for it
            out.append(SendToRealtime(rt.response_cancel(self._server_response)))
        out += [RecordCallEvent("call_ending", {"action": "HangUp", "reason": ev.reason}), HangUp(ev.reason)]
        return out

    def _cancel_hang_up(self, out: list[Command]) -> None:
        """The caller spoke before the goodbye finished: do not hang up on them."""
        if isinstance(self._end_action, HangUp) and self._end_call_id is not None:
            if self._end_call_id in self._session_calls:
                out.append(
                    SendToRealtime(
                        rt.function_call_output(self._end_call_id, '{"status":"not ended: the caller kept talking"}')
                    )
                )
            out.append(RecordCallEvent("hangup_cancelled", {"reason": "caller spoke"}))
            self._end_action = None
            self._end_call_id = None

    def _maybe_end(self, now_ms: int, out: list[Command]) -> None:
        """Fire a pending hang-up/transfer once the agent's last words have played and the caller is not
        mid-sentence (as the cascaded engine does), or at the deadline whatever is going on."""
        action = self._end_action
        if action is None:
            return
        settled = (
            not self.caller_speaking
            and self._server_response is None
            and self._create_inflight is None
            and not self._queued_creates
            and not self.playback.unplayed
            and not self.out.unsent
        )
        if settled or now_ms >= self._end_deadline_ms:
            self._end_action = None
            self.ended = True
            out.append(RecordCallEvent("call_ending", {"action": type(action).__name__, "reason": action.reason}))
            out.append(action)

    def _on_tick(self, ev: Tick, now_ms: int) -> list[Command]:
        out: list[Command] = []
        if self._configuring is not None and now_ms - self._configuring[1] >= self.config.session_confirm_ms:
            out += self._configuration_failed(f"no session.updated within {self.config.session_confirm_ms} ms")
        self._maybe_end(now_ms, out)
        return out
