"""A cascaded call, as a pure state machine: the caller's transport on one side, the cascaded engine's three
stages on the other, the call's services (transcript, events, tools, the end of the call) told what to do.

It is to the cascaded engine what ``CallBridge`` is to the Realtime one, and speaks the same vocabulary
(``app.core.call_events``) to the call's services, so they carry out either without knowing the engine. The
parts both engines share are shared objects: ``CallerInput`` (the caller's audio to the upstream session, held
and replayed across a reconnect), ``AgentPlayback`` (agent audio framed and marked for the transport, and what
the caller heard of it). The conversation itself (when to ask the chat model, when to speak, what a barge-in
cancels) is ``CascadeSequencer``'s; this machine adds the call around it:

- the transcription session: configured on each (re)connection, audio held until it confirms, a refusal or
  no confirmation restarts it;
- the transcript: the caller's lines from the transcription session, the agent's once heard (or cut to what
  was heard), each at the moment it began;
- the built-in tools: ``end_call`` and ``transfer_to_human`` end the call once the last words have played,
  ``opt_out`` opts the number out and the model confirms; the operators' tools go to the shell;
- a cost cap: a closing line held to a token limit, then a hang-up; a hard stop cancels every stream at once;
- a stage that failed twice: the call is handed off (apology, transfer or hang-up).

Latency stages, usage and the barge-ins become call events for the shell to record, meter and observe.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from app.core import cascade as seq
from app.core import realtime_events as rt
from app.core.audio import (
    DEFAULT_RESAMPLE_QUALITY,
    DEFAULT_RESAMPLER,
    AgentAudioPath,
    CallerAudioPath,
    ResampleQuality,
    Resampler,
)
from app.core.audio_counters import AudioCounters
from app.core.call_events import (
    Command,
    HandOff,
    HangUp,
    HardStop,
    OptOut,
    RecordCallEvent,
    RestartUpstream,
    RunTool,
    SaveTranscript,
    SendToRealtime,
    Tick,
    ToolFinished,
    TranscriptLine,
    TransferCall,
    UpstreamLost,
    UpstreamReady,
    WrapUp,
)
from app.core.caller_input import CallerInput
from app.core.caller_speech import UNTRANSCRIBED, CallerSpeech
from app.core.playback import AgentPlayback
from app.core.tools import END_CALL, OPT_OUT, TRANSFER_TO_HUMAN
from app.core.transport import TWILIO, Passthrough, TransportAudio
from app.core.twilio_media import (
    DtmfReceived,
    MarkAcknowledged,
    MediaReceived,
    StreamConnected,
    StreamStarted,
    StreamStopped,
)

STT_CONFIG_EVENT = "sb_stt_session_"

# What the shell carries out: the calls' vocabulary, and the stage requests the sequencer asks for.
CascadeCommand = Command | seq.StartChat | seq.CancelChat | seq.StartSpeech | seq.CancelSpeech


@dataclass(frozen=True, slots=True)
class CascadeConfig:
    instructions: str
    greeting: str | None
    transcription: rt.TranscriptionSettings = field(default_factory=rt.TranscriptionSettings)
    transfer_number: str | None = None
    custom_tools: frozenset[str] = frozenset()
    media_chunk_bytes: int = 800  # as the Realtime bridge: 100 ms per media message, each with its mark
    max_buffered_frames: int = 500
    replay_frames: int = 25
    history_chars: int = 12_000
    history_lines: int = 40  # restored from the live state after a resume
    session_confirm_ms: int = 2000
    end_action_grace_ms: int = 15_000
    resampler: Resampler = DEFAULT_RESAMPLER
    resample_quality: ResampleQuality = DEFAULT_RESAMPLE_QUALITY
    opt_out_digit: str | None = "9"


def _item(turn: int) -> str:
    return f"turn_{turn}"


class CascadeCall(AudioCounters):
    """Decides everything about one cascaded call; ``handle(event, now_ms) -> commands``, like the bridge."""

    def __init__(
        self,
        config: CascadeConfig,
        *,
        started_at_ms: int,
        history: Sequence[TranscriptLine] = (),
        greeted: bool = False,
        transport: TransportAudio = TWILIO,
    ) -> None:
        self.config = config
        self.transport = transport
        self.started_at_ms = started_at_ms
        self.history: list[TranscriptLine] = sorted(history, key=lambda line: (line.offset_ms, line.seq))
        self.greeted = greeted or bool(history)
        self.seq = seq.CascadeSequencer(
            config.instructions, greeting=None if self.greeted else config.greeting, history_chars=config.history_chars
        )
        for line in self.history[-config.history_lines :]:
            self.seq.history.append({"role": "user" if line.speaker == "caller" else "assistant", "content": line.text})
        self.caller = CallerInput(
            Passthrough() if transport.pcm24k else CallerAudioPath("pcm24k", config.resample_quality, config.resampler),
            max_held=config.max_buffered_frames,
            replay=config.replay_frames,
            bytes_per_s=transport.bytes_per_ms * 1000,
        )
        self.out = AgentPlayback(
            Passthrough() if transport.pcm24k else AgentAudioPath("pcm24k", config.resample_quality, config.resampler),
            config.media_chunk_bytes if transport is TWILIO else transport.chunk_bytes,
            transport.frame_bytes,
            transport.bytes_per_ms,
        )
        self.playback = self.out.tracker
        self.call_sid: str | None = None
        self.stream_sid: str | None = None
        self.custom_parameters: dict[str, str] = {}
        self.upstream_ready = False
        self.caller_speaking = False
        self.frames_in = 0
        self.usage: list[dict[str, Any]] = []  # the chat model's usage, one per answer
        self.ended = False
        self.stopped_hard = False
        self.wrapping_up = False
        self._configuring: tuple[str, int] | None = None
        self._sessions = 0
        self.speech = CallerSpeech()  # caller utterances awaiting their transcript, and when each began
        self._turn_offsets: dict[int, int] = {}  # agent turns -> when their first audio went out
        self._streamed: set[int] = set()  # turns whose audio has all been handed out, waiting to be heard
        self._line_seq = max((line.seq for line in self.history), default=0)
        self._dtmf = 0
        self._stopping = False  # the call is being stopped: a flush of the playback is no barge-in
        self._held_said: list[tuple[str, str]] = []  # transcripts that came while the caller was still talking
        self._end_action: HangUp | TransferCall | None = None
        self._end_call_id: str | None = None
        self._end_deadline_ms = 0
        self._dispatch: dict[type, Callable[[Any, int], list[CascadeCommand]]] = {
            StreamStarted: self._on_start,
            StreamConnected: self._ignore,
            MediaReceived: self._on_media,
            MarkAcknowledged: self._on_mark,
            DtmfReceived: self._on_dtmf,
            StreamStopped: self._on_stop,
            UpstreamReady: self._on_upstream_ready,
            UpstreamLost: self._on_upstream_lost,
            rt.SessionUpdated: self._on_session_updated,
            rt.SessionCreated: self._ignore,
            rt.OtherServerEvent: self._ignore,
            rt.RealtimeError: self._on_error,
            rt.SpeechStarted: self._on_speech_started,
            rt.SpeechStopped: self._on_speech_stopped,
            rt.InputTranscribed: self._on_transcribed,
            rt.InputTranscriptionFailed: self._on_transcription_failed,
            seq.ChatDelta: self._stage_event,
            seq.ChatToolCalled: self._stage_event,
            seq.ChatFailed: self._stage_event,
            seq.SpeechAudio: self._stage_event,
            seq.SpeechFinished: self._stage_event,
            seq.SpeechFailed: self._stage_event,
            seq.ChatFinished: self._on_chat_finished,
            ToolFinished: self._on_tool_finished,
            Tick: self._on_tick,
            WrapUp: self._on_wrap_up,
            HardStop: self._on_hard_stop,
        }

    # -- what the call's services read -----------------------------------------------------------

    def handle(self, event: object, now_ms: int) -> list[CascadeCommand]:
        handler = self._dispatch.get(type(event))
        return handler(event, now_ms) if handler is not None else []

    @property
    def pending_speech_ms(self) -> int | None:
        """When the earliest caller speech still awaiting its transcript began (ms from the call's start)."""
        return self.speech.pending_ms

    @property
    def awaiting_transcription(self) -> bool:
        return self.speech.awaiting

    @property
    def quiet(self) -> bool:
        return (
            self.upstream_ready
            and not self.caller_speaking
            and not self.seq.busy
            and not self.playback.unplayed
            and not self.out.unsent
        )

    def media(self, payload: bytes) -> bytes | None:
        """A caller frame: the append for the transcription session now, or None (held, or the call is over)."""
        self.frames_in += 1
        if self.ended:
            return None
        return self.caller.frame(payload)

    def finish(self, out: list[Any]) -> None:
        """The call is over: an answer still playing goes to the transcript as far as it was heard, and
        every stream in flight is cancelled."""
        if not self.seq.given_up:
            self._stopping = True
            self._run(self.seq.stop(self._heard()), 0, out)

    # -- the transport ----------------------------------------------------------------------------

    def _ignore(self, event: object, now_ms: int) -> list[CascadeCommand]:
        return []

    def _offset(self, now_ms: int) -> int:
        return max(0, now_ms - self.started_at_ms)

    def _on_start(self, ev: StreamStarted, now_ms: int) -> list[CascadeCommand]:
        self.call_sid, self.stream_sid, self.custom_parameters = ev.call_sid, ev.stream_sid, ev.custom_parameters
        self.out.wire = self.transport.wire(ev.stream_sid)
        out: list[CascadeCommand] = [RecordCallEvent("stream_started", {"stream_sid": ev.stream_sid})]
        # The greeting does not wait for the transcription session: the caller's audio is held meanwhile.
        self._run(self.seq.start(now_ms), now_ms, out)
        # A resumed call whose caller spoke last is answered now, not left in silence.
        self._run(self.seq.resume(now_ms), now_ms, out)
        return out

    def _on_media(self, ev: MediaReceived, now_ms: int) -> list[CascadeCommand]:
        append = self.media(ev.payload)
        return [SendToRealtime(append)] if append is not None else []

    def _on_mark(self, ev: MarkAcknowledged, now_ms: int) -> list[CascadeCommand]:
        item_id = self.playback.mark_acknowledged(ev.name)
        out: list[CascadeCommand] = []
        if item_id is not None:
            turn = int(item_id.removeprefix("turn_"))
            self._drained(turn, now_ms, out)
        self._maybe_end(now_ms, out)
        return out

    def _drained(self, turn: int, now_ms: int, out: list[CascadeCommand]) -> None:
        item = _item(turn)
        if turn in self._streamed and self.playback.drained(item) and not (self.out.item == item and self.out.unsent):
            self._run(self.seq.handle(seq.PlaybackDrained(turn, now_ms)), now_ms, out)

    def _on_dtmf(self, ev: DtmfReceived, now_ms: int) -> list[CascadeCommand]:
        out: list[CascadeCommand] = [RecordCallEvent("dtmf", {"digit": ev.digit})]
        if self.config.opt_out_digit is not None and ev.digit == self.config.opt_out_digit:
            out.append(OptOut(f"pressed {ev.digit} to opt out", "dtmf"))
            text = "[The callee pressed the opt-out key. They are now on our do-not-call list: confirm it briefly.]"
        else:
            text = f"[The caller pressed the key {ev.digit} on their phone keypad.]"
        self._dtmf += 1
        if not self.ended:
            said = seq.CallerSaid(f"dtmf_{self._dtmf}", text, now_ms, self._heard())
            self._run(self.seq.handle(said), now_ms, out)
        return out

    def _on_stop(self, ev: StreamStopped, now_ms: int) -> list[CascadeCommand]:
        out: list[CascadeCommand] = [RecordCallEvent("stream_stopped", {})]
        self.finish(out)
        return out

    # -- the transcription session ---------------------------------------------------------------

    def _on_upstream_ready(self, ev: UpstreamReady, now_ms: int) -> list[CascadeCommand]:
        self.upstream_ready = self.caller.ready = False
        self._sessions += 1
        event_id = f"{STT_CONFIG_EVENT}{self._sessions}"
        self._configuring = (event_id, now_ms)
        return [SendToRealtime(rt.transcription_session_update(self.config.transcription, event_id=event_id))]

    def _on_session_updated(self, ev: rt.SessionUpdated, now_ms: int) -> list[CascadeCommand]:
        if self._configuring is None:
            return []
        self._configuring = None
        self.upstream_ready = True
        out: list[CascadeCommand] = []
        if self.caller.held:
            out.append(RecordCallEvent("caller_audio_replayed", {"frames": self.caller.held}))
        out += [SendToRealtime(append) for append in self.caller.session_ready()]
        return out

    def _on_error(self, ev: rt.RealtimeError, now_ms: int) -> list[CascadeCommand]:
        out: list[CascadeCommand] = [RecordCallEvent("upstream_error", {"code": ev.code, "message": ev.message})]
        if self._configuring is not None and ev.event_id == self._configuring[0]:
            out += self._configuration_failed(f"session.update refused: {ev.code or ev.message}"[:200])
        return out

    def _configuration_failed(self, reason: str) -> list[CascadeCommand]:
        self._configuring = None
        return [RecordCallEvent("session_config_failed", {"reason": reason}), RestartUpstream(reason)]

    def _on_upstream_lost(self, ev: UpstreamLost, now_ms: int) -> list[CascadeCommand]:
        """The transcription session is gone: hold the caller's audio (the last moments re-sent to the next
        one). Words it had not transcribed yet are lost with it; nothing waits for them."""
        self.upstream_ready = False
        self._configuring = None
        self.caller.session_lost()
        self.caller_speaking = False
        self.speech.clear()
        return [RecordCallEvent("upstream_lost", {"reason": ev.reason})]

    def _on_speech_started(self, ev: rt.SpeechStarted, now_ms: int) -> list[CascadeCommand]:
        self.speech.began(ev.item_id, self._offset(now_ms))
        self.caller_speaking = True
        out: list[CascadeCommand] = []
        self._cancel_hang_up(out)
        self._run(self.seq.handle(seq.CallerStartedSpeaking(now_ms, self._heard())), now_ms, out)
        return out

    def _on_speech_stopped(self, ev: rt.SpeechStopped, now_ms: int) -> list[CascadeCommand]:
        self.caller_speaking = False
        out = self._run(self.seq.handle(seq.CallerStoppedSpeaking(now_ms)), now_ms, [])
        # Words transcribed while the caller went on talking are answered now that they have stopped.
        held, self._held_said = self._held_said, []
        for item_id, text in held:
            self._said(item_id, text, now_ms, out)
        return out

    def _said(self, item_id: str, text: str, now_ms: int, out: list[Any]) -> None:
        if not self.ended:
            self._run(self.seq.handle(seq.CallerSaid(item_id, text, now_ms, self._heard())), now_ms, out)

    def _on_transcribed(self, ev: rt.InputTranscribed, now_ms: int) -> list[CascadeCommand]:
        offset = self.speech.take(ev.item_id, self._offset(now_ms))
        out: list[CascadeCommand] = []
        if ev.usage:
            out.append(RecordCallEvent("transcription_usage", {"item_id": ev.item_id, "usage": ev.usage}))
        text = ev.transcript.strip()
        if text:
            self._save_line("caller", text, offset, False, ev.item_id, out)
            if self.caller_speaking:
                # The caller paused, then went on: answering these words now would talk over them.
                self._held_said.append((ev.item_id, text))
            else:
                self._said(ev.item_id, text, now_ms, out)
        return out

    def _on_transcription_failed(self, ev: rt.InputTranscriptionFailed, now_ms: int) -> list[CascadeCommand]:
        offset = self.speech.take(ev.item_id, self._offset(now_ms))
        out: list[CascadeCommand] = [
            RecordCallEvent("transcription_failed", {"item_id": ev.item_id, "error": ev.error})
        ]
        self._save_line("caller", UNTRANSCRIBED, offset, False, ev.item_id, out)
        return out

    # -- the chat and speech stages --------------------------------------------------------------

    def _stage_event(self, ev: seq.Event, now_ms: int) -> list[CascadeCommand]:
        if self.ended:
            return []
        if isinstance(ev, seq.ChatFailed | seq.SpeechFailed):
            ev = dataclasses.replace(ev, heard_ms=self._heard())
        return self._run(self.seq.handle(ev), now_ms, [])

    def _on_chat_finished(self, ev: seq.ChatFinished, now_ms: int) -> list[CascadeCommand]:
        out: list[CascadeCommand] = []
        if ev.usage:
            self.usage.append(ev.usage)
            out.append(RecordCallEvent("chat_usage", {"request": ev.request, "usage": ev.usage}))
        if self.ended:
            return out  # charged, but nothing more is said (or paid for) after the end
        return self._run(self.seq.handle(ev), now_ms, out)

    def _run(self, commands: list[seq.Command], now_ms: int, out: list[Any]) -> list[Any]:
        """Carry out what the sequencer decided that is the call's to do; pass the stage requests on."""
        for command in commands:
            kind = type(command)
            if kind is seq.PlayAudio:
                self._play(command, now_ms, out)  # type: ignore[arg-type]
            elif kind is seq.StageReached:
                c: Any = command
                out.append(RecordCallEvent("turn_stage", {"turn": c.turn, "stage": c.stage, "ms": c.ms}))
            elif kind is seq.AnswerStreamed:
                turn = command.turn  # type: ignore[union-attr]
                self._streamed.add(turn)
                self.out.finish(_item(turn), out)
                self._drained(turn, now_ms, out)
            elif kind is seq.ClearPlayback:
                self._clear(command.turn, out)  # type: ignore[union-attr]
            elif kind is seq.AgentSaid:
                self._agent_said(command, now_ms, out)  # type: ignore[arg-type]
            elif kind is seq.RunTool:
                self._start_tool(command, now_ms, out)  # type: ignore[arg-type]
            elif kind is seq.GiveUp:
                self.ended = True
                self._end_action = None
                out.append(RecordCallEvent("engine_gave_up", {"reason": command.reason}))  # type: ignore[union-attr]
                out.append(HandOff(command.reason))  # type: ignore[union-attr]
            else:  # StartChat, CancelChat, StartSpeech, CancelSpeech: the engine's shell runs them
                out.append(command)
        return out

    def _play(self, command: seq.PlayAudio, now_ms: int, out: list[Any]) -> None:
        if self.ended:
            return  # after the end (a hard stop, a hand-off) nothing more is played
        self.greeted = True
        self._turn_offsets.setdefault(command.turn, self._offset(now_ms))
        self.out.audio(_item(command.turn), command.pcm, out)

    def _heard(self) -> int | None:
        """How much of the answer being said the caller has heard, in ms, from the marks echoed back."""
        turn = self.seq.current_turn
        if turn is None or turn not in self._turn_offsets:
            return None
        return self.playback.played_ms(_item(turn))

    def _clear(self, turn: int, out: list[Any]) -> None:
        item = _item(turn)
        heard = self.playback.played_ms(item)
        self.out.clear(out)
        self._streamed.discard(turn)
        if not self._stopping:
            out.append(RecordCallEvent("barge_in", {"turn": turn, "heard_ms": heard}))

    def _agent_said(self, command: seq.AgentSaid, now_ms: int, out: list[Any]) -> None:
        item = _item(command.turn)
        self._streamed.discard(command.turn)
        self.out.forget(item)
        offset = self._turn_offsets.pop(command.turn, self._offset(now_ms))
        if command.text:
            self._save_line("agent", command.text, offset, command.interrupted, item, out)

    def _save_line(
        self, speaker: str, text: str, offset_ms: int, interrupted: bool, item_id: str | None, out: list[Any]
    ) -> None:
        self._line_seq += 1
        line = TranscriptLine(self._line_seq, speaker, text, offset_ms, interrupted, item_id)
        at = len(self.history)
        while at > 0 and self.history[at - 1].offset_ms > offset_ms:
            at -= 1
        self.history.insert(at, line)
        out.append(SaveTranscript(line))

    # -- tools -------------------------------------------------------------------------------------

    def _start_tool(self, call: seq.RunTool, now_ms: int, out: list[Any]) -> None:
        try:
            args = orjson.loads(call.arguments or "{}")
        except orjson.JSONDecodeError:
            args = None
        if not isinstance(args, dict):
            self._tool_result(
                call.call_id, call.name, '{"error":"arguments were not a JSON object"}', False, now_ms, out
            )
            return
        reason = str(args.get("reason", ""))
        out.append(RecordCallEvent("tool_called", {"name": call.name, "call_id": call.call_id, "arguments": args}))
        if call.name == END_CALL:
            self._schedule_end(HangUp(reason or "agent ended the call"), now_ms, call.call_id)
            self._tool_result(call.call_id, call.name, '{"status":"ending the call"}', True, now_ms, out, False)
        elif call.name == OPT_OUT:
            out.append(OptOut(str(args.get("words") or "asked not to be called again"), "opt_out_tool"))
            status = '{"status":"opted out: no more calls to this number"}'
            self._tool_result(call.call_id, call.name, status, True, now_ms, out)
        elif call.name == TRANSFER_TO_HUMAN and self.config.transfer_number:
            self._schedule_end(
                TransferCall(self.config.transfer_number, reason or "caller asked for a human"), now_ms, call.call_id
            )
            self._tool_result(call.call_id, call.name, '{"status":"transferring"}', True, now_ms, out, False)
        elif call.name == TRANSFER_TO_HUMAN:
            error = '{"error":"no human agent is available; offer to take a message"}'
            self._tool_result(call.call_id, call.name, error, False, now_ms, out)
        elif call.name in self.config.custom_tools:
            out.append(RunTool(call.call_id, call.name, args))
        else:
            self._tool_result(call.call_id, call.name, '{"error":"unknown tool"}', False, now_ms, out)

    def _tool_result(
        self, call_id: str, name: str, output: str, ok: bool, now_ms: int, out: list[Any], follow_up: bool = True
    ) -> None:
        out.append(RecordCallEvent("tool_result", {"name": name, "call_id": call_id, "ok": ok, "output": output}))
        self._run(self.seq.handle(seq.ToolFinished(call_id, output, now_ms, follow_up)), now_ms, out)

    def _on_tool_finished(self, ev: ToolFinished, now_ms: int) -> list[CascadeCommand]:
        out: list[CascadeCommand] = []
        if not self.ended:
            self._tool_result(ev.call_id, ev.name, ev.output, ev.ok, now_ms, out)
        return out

    # -- the end of the call -----------------------------------------------------------------------

    def _schedule_end(
        self, action: HangUp | TransferCall, now_ms: int, call_id: str | None, grace_ms: int | None = None
    ) -> None:
        if self._end_action is None and not self.ended:
            self._end_action = action
            self._end_call_id = call_id
            self._end_deadline_ms = now_ms + (self.config.end_action_grace_ms if grace_ms is None else grace_ms)

    def _cancel_hang_up(self, out: list[Any]) -> None:
        """The caller spoke before the goodbye finished: do not hang up on them."""
        if isinstance(self._end_action, HangUp) and self._end_call_id is not None:
            out.append(RecordCallEvent("hangup_cancelled", {"reason": "caller spoke"}))
            self._end_action = None
            self._end_call_id = None

    def _maybe_end(self, now_ms: int, out: list[Any]) -> None:
        """Fire a pending hang-up or transfer once the agent's last words have played (or at the deadline)."""
        action = self._end_action
        if action is None:
            return
        settled = (
            not self.seq.busy
            and not self.playback.unplayed
            and not self.out.unsent
            and not self.caller_speaking
            and not self._held_said
        )
        if settled or now_ms >= self._end_deadline_ms:
            self._end_action = None
            self.ended = True
            # Whatever is still being generated (the deadline came mid-answer) is cancelled: nothing more is
            # spoken or paid for, and what was heard goes to the transcript.
            self._stopping = True
            self._run(self.seq.stop(self._heard()), now_ms, out)
            out.append(RecordCallEvent("call_ending", {"action": type(action).__name__, "reason": action.reason}))
            out.append(action)

    def _on_tick(self, ev: Tick, now_ms: int) -> list[CascadeCommand]:
        out: list[CascadeCommand] = []
        if self._configuring is not None and now_ms - self._configuring[1] >= self.config.session_confirm_ms:
            out += self._configuration_failed(f"no session.updated within {self.config.session_confirm_ms} ms")
        self._maybe_end(now_ms, out)
        return out

    def _on_wrap_up(self, ev: WrapUp, now_ms: int) -> list[CascadeCommand]:
        out: list[CascadeCommand] = []
        if self.ended or self.wrapping_up:
            return out
        self.wrapping_up = True
        out.append(RecordCallEvent("wrap_up", {"reason": ev.reason}))
        self._run(self.seq.closing(ev.instructions, ev.max_output_tokens, now_ms), now_ms, out)
        if isinstance(self._end_action, HangUp):
            self._end_call_id = None  # a goodbye in progress may no longer be cancelled by speech
        self._schedule_end(HangUp(ev.reason), now_ms, None, ev.grace_ms)
        return out

    def _on_hard_stop(self, ev: HardStop, now_ms: int) -> list[CascadeCommand]:
        if self.ended:
            return []
        self.ended = True
        self.stopped_hard = True
        self._end_action = None
        out: list[CascadeCommand] = []
        self._stopping = True
        self._run(self.seq.stop(self._heard()), now_ms, out)  # nothing more is generated or paid for
        out += [RecordCallEvent("call_ending", {"action": "HangUp", "reason": ev.reason}), HangUp(ev.reason)]
        return out
