"""The cascaded engine's sequencing, as a pure state machine: transcription -> chat model -> speech.

Events in (with the time passed in), commands out, like the Realtime bridge. What this machine decides:

- when to ask the chat model (a caller's final transcript), with the conversation trimmed to a budget;
- when to start speech: on the answer's first complete clause (``ClauseSplitter``), each later clause as it
  completes, at most ``speech_in_flight`` requests at once; audio goes out in clause order, a later clause's
  audio held until the one before it has finished;
- what a barge-in cancels (the chat stream, every speech stream, the caller's playback) and what stays in
  the history: only what the caller heard, cut at a word;
- tools: the chat model's calls run, their results go back to it for the rest of the answer;
- failure: a failed chat or speech request is retried once, then the call gives up (``GiveUp``: the shell
  plays the apology rendered at start-up and transfers or ends the call);
- the per-turn stages, measured from the end of the caller's speech: final transcript, first chat token,
  first speech bytes, first audio to the caller.

The shell (transports, adapters, the call's services) carries out the commands; the shared playback
tracker tells it how much of an answer the caller heard, which it passes in with ``CallerStartedSpeaking``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from app.core.clauses import ClauseSplitter

PCM24K_BYTES_PER_MS = 48  # 24 kHz, 16-bit mono: the speech stage's output format

# -- events ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CallerStartedSpeaking:
    """Voice activity from the transcription session. ``heard_ms``: how much of the current answer's
    audio the caller has heard (the playback tracker), None when none of it reached them yet."""

    at_ms: int
    heard_ms: int | None = None


@dataclass(frozen=True, slots=True)
class CallerStoppedSpeaking:
    at_ms: int


@dataclass(frozen=True, slots=True)
class CallerSaid:
    """A final transcript of one caller turn (or a key press, told as words). ``heard_ms``: how much of the
    answer being played the caller had heard, should these words interrupt it."""

    item_id: str
    text: str
    at_ms: int
    heard_ms: int | None = None


@dataclass(frozen=True, slots=True)
class ChatDelta:
    request: int
    text: str
    at_ms: int


@dataclass(frozen=True, slots=True)
class ChatToolCalled:
    request: int
    call_id: str
    name: str
    arguments: str  # JSON, as the model wrote it


@dataclass(frozen=True, slots=True)
class ChatFinished:
    request: int
    at_ms: int
    usage: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class ChatFailed:
    request: int
    error: str
    at_ms: int
    heard_ms: int | None = None  # of the answer being played, should the call give up now


@dataclass(frozen=True, slots=True)
class SpeechAudio:
    clause: int
    pcm: bytes
    at_ms: int


@dataclass(frozen=True, slots=True)
class SpeechFinished:
    clause: int
    at_ms: int


@dataclass(frozen=True, slots=True)
class SpeechFailed:
    clause: int
    error: str
    at_ms: int
    heard_ms: int | None = None  # of the answer being played, should the call give up now


@dataclass(frozen=True, slots=True)
class ToolFinished:
    """A tool's result. ``follow_up`` False: it goes into the history but asks the model for nothing more
    (ending the call, transferring it: what was said before the call is the last of the answer)."""

    call_id: str
    output: str
    at_ms: int
    follow_up: bool = True


@dataclass(frozen=True, slots=True)
class PlaybackDrained:
    """Everything handed out for the turn has played at the caller's end (after ``AnswerStreamed``)."""

    turn: int
    at_ms: int


Event = (
    CallerStartedSpeaking
    | CallerStoppedSpeaking
    | CallerSaid
    | ChatDelta
    | ChatToolCalled
    | ChatFinished
    | ChatFailed
    | SpeechAudio
    | SpeechFinished
    | SpeechFailed
    | ToolFinished
    | PlaybackDrained
)

# -- commands ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StartChat:
    request: int
    messages: tuple[dict[str, Any], ...]
    max_tokens: int | None = None  # a closing line (a cost cap's wrap-up) is held to this


@dataclass(frozen=True, slots=True)
class CancelChat:
    request: int


@dataclass(frozen=True, slots=True)
class StartSpeech:
    clause: int
    text: str


@dataclass(frozen=True, slots=True)
class CancelSpeech:
    clause: int


@dataclass(frozen=True, slots=True)
class PlayAudio:
    """Agent audio (PCM16 24 kHz) for the caller, in order."""

    turn: int
    pcm: bytes


@dataclass(frozen=True, slots=True)
class ClearPlayback:
    """Barge-in: the caller's playback buffer is flushed (Twilio ``clear``, the page's jitter buffer)."""

    turn: int


@dataclass(frozen=True, slots=True)
class AnswerStreamed:
    """The turn's last audio has been handed out (``PlayAudio``): the shell pushes out what its converter
    holds and says ``PlaybackDrained`` once the caller has heard it all. Until then the turn is still
    playing: caller speech is a barge-in, and the transcript line waits."""

    turn: int


@dataclass(frozen=True, slots=True)
class RunTool:
    call_id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class AgentSaid:
    """An answer for the transcript: all of it, or what the caller heard of it (``interrupted``)."""

    turn: int
    text: str
    interrupted: bool


@dataclass(frozen=True, slots=True)
class StageReached:
    """A latency stage of a turn, in ms from the end of the caller's speech."""

    turn: int
    stage: str  # "transcript" | "chat_first_token" | "speech_first_bytes" | "first_audio"
    ms: int


@dataclass(frozen=True, slots=True)
class GiveUp:
    """A stage failed twice in a row: the shell apologises, then transfers or ends the call."""

    reason: str


Command = (
    StartChat
    | CancelChat
    | StartSpeech
    | CancelSpeech
    | PlayAudio
    | ClearPlayback
    | AnswerStreamed
    | RunTool
    | AgentSaid
    | StageReached
    | GiveUp
)

# -- the machine -------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Clause:
    text: str
    audio: list[bytes] = field(default_factory=list)  # held until the clauses before it have played out
    audio_bytes: int = 0
    requested: bool = False
    finished: bool = False
    failures: int = 0


@dataclass(slots=True)
class _Turn:
    number: int
    speech_end_ms: int | None
    clauses: dict[int, _Clause] = field(default_factory=dict)
    next_out: int = 0  # the clause whose audio goes out now
    stages: set[str] = field(default_factory=set)
    answer_index: int | None = None  # the history entry of the answer's final words, once the chat ended
    streamed: bool = False  # all its audio handed out; it ends once played (PlaybackDrained)


class CascadeSequencer:
    """One call's cascaded conversation. ``handle(event)`` returns the commands to carry out, in order."""

    def __init__(
        self,
        instructions: str,
        *,
        greeting: str | None = None,
        history_chars: int = 12_000,
        speech_in_flight: int = 2,
        first_clause_min_chars: int = 16,
    ) -> None:
        self.instructions = instructions
        self.greeting = greeting
        self.history: list[dict[str, Any]] = []
        self.history_chars = history_chars
        self.speech_in_flight = speech_in_flight
        self._splitter = ClauseSplitter(first_min_chars=first_clause_min_chars)
        self._turn: _Turn | None = None
        self._turns = 0
        self._clauses = 0  # clause numbers are unique for the call: a late event of a cancelled one is ignored
        self._request = 0  # chat request in flight (0: none)
        self._requests = 0
        self._chat_failures = 0
        self._answer_text = ""  # the current chat request's text so far
        self._tool_calls: list[dict[str, Any]] = []
        self._tools_pending: set[str] = set()
        self._follow_up = True  # every result of the pending tools asks the model to go on
        self._speech_end_ms: int | None = None
        self._max_tokens: int | None = None  # from a closing line on, every answer is held to this
        self._closing: str | None = None  # a closing line asked for while a turn was playing: asked after it
        self.given_up = False  # gave up, or stopped: nothing more happens

    # -- public ------------------------------------------------------------------------------

    def start(self, now_ms: int) -> list[Command]:
        """The call is connected: the greeting, spoken as the first turn's only clause."""
        if not self.greeting:
            return []
        turn = self._new_turn(None)
        out: list[Command] = []
        self.history.append({"role": "assistant", "content": self.greeting})
        turn.answer_index = len(self.history) - 1
        self._add_clause(turn, self.greeting, out)
        return out

    def closing(self, instructions: str, max_tokens: int | None, now_ms: int) -> list[Command]:
        """Ask for a closing line (a cost cap's wrap-up): at once when nothing is being said, else once the
        current answer has played. Every answer from here on is held to ``max_tokens``."""
        self._max_tokens = max_tokens
        if self.given_up:
            return []
        if self._turn is not None:
            self._closing = instructions
            return []
        out: list[Command] = []
        self._new_turn(None)
        self._ask(out, instructions)
        return out

    def stop(self, heard_ms: int | None) -> list[Command]:
        """The call is over now (a hard stop): every stream in flight is cancelled, what was heard of the
        answer goes to the transcript, and nothing more happens."""
        out: list[Command] = []
        if self._turn is not None:
            out += self._interrupt(heard_ms)
        elif self._request:
            out.append(CancelChat(self._request))
            self._request = 0
        self.given_up = True
        return out

    @property
    def current_turn(self) -> int | None:
        """The turn being answered or played, if any."""
        return self._turn.number if self._turn is not None else None

    def resume(self, now_ms: int) -> list[Command]:
        """A call resumed on a new stream: when the caller spoke last (their words are in the history, no
        answer after them), they are answered now rather than left waiting in silence."""
        if self.given_up or self._turn is not None or not self.history or self.history[-1]["role"] != "user":
            return []
        out: list[Command] = []
        self._new_turn(None)
        self._ask(out)
        return out

    @property
    def busy(self) -> bool:
        """A turn is being answered or played, or a closing line waits to be asked for."""
        return self._turn is not None or self._closing is not None

    def handle(self, event: Event) -> list[Command]:
        if self.given_up:
            return []
        kind = type(event)
        if kind is SpeechAudio:
            return self._on_speech_audio(event)  # type: ignore[arg-type]
        if kind is ChatDelta:
            return self._on_chat_delta(event)  # type: ignore[arg-type]
        if kind is CallerStartedSpeaking:
            return self._on_caller_started(event)  # type: ignore[arg-type]
        if kind is CallerStoppedSpeaking:
            self._speech_end_ms = event.at_ms  # type: ignore[union-attr]
            return []
        if kind is CallerSaid:
            return self._on_caller_said(event)  # type: ignore[arg-type]
        if kind is ChatToolCalled:
            return self._on_tool_called(event)  # type: ignore[arg-type]
        if kind is ChatFinished:
            return self._on_chat_finished(event)  # type: ignore[arg-type]
        if kind is ChatFailed:
            return self._on_chat_failed(event)  # type: ignore[arg-type]
        if kind is SpeechFinished:
            return self._on_speech_finished(event)  # type: ignore[arg-type]
        if kind is SpeechFailed:
            return self._on_speech_failed(event)  # type: ignore[arg-type]
        if kind is ToolFinished:
            return self._on_tool_finished(event)  # type: ignore[arg-type]
        if kind is PlaybackDrained:
            return self._on_playback_drained(event)  # type: ignore[arg-type]
        return []

    def messages(self) -> tuple[dict[str, Any], ...]:
        """The chat request's messages: the instructions, then the most recent history within the
        budget, never starting with a tool result cut off from the call that asked for it."""
        kept: list[dict[str, Any]] = []
        size = 0
        for message in reversed(self.history):
            size += len(str(message.get("content") or "")) + len(str(message.get("tool_calls") or ""))
            if size > self.history_chars and kept:
                break
            kept.append(message)
        kept.reverse()
        while kept and kept[0]["role"] == "tool":
            kept.pop(0)
        return ({"role": "system", "content": self.instructions}, *kept)

    # -- the caller ----------------------------------------------------------------------------

    def _on_caller_said(self, ev: CallerSaid) -> list[Command]:
        text = ev.text.strip()
        if not text:
            return []
        out: list[Command] = []
        if self._turn is not None:  # an answer still in progress: the caller's new words replace it
            out += self._interrupt(ev.heard_ms)
        self.history.append({"role": "user", "content": text})
        turn = self._new_turn(self._speech_end_ms)
        self._stage(turn, "transcript", ev.at_ms, out)
        # A closing line asked for meanwhile (a cap's wrap-up) is this answer: the caller is answered and
        # told goodbye in one.
        closing, self._closing = self._closing, None
        self._ask(out, closing)
        return out

    def _on_caller_started(self, ev: CallerStartedSpeaking) -> list[Command]:
        self._speech_end_ms = None
        if self._turn is None:
            return []
        return self._interrupt(ev.heard_ms)

    def _interrupt(self, heard_ms: int | None) -> list[Command]:
        """Barge-in: stop the answer everywhere and keep, in the history, only what the caller heard."""
        turn = self._turn
        assert turn is not None
        out: list[Command] = []
        if self._request:
            out.append(CancelChat(self._request))
            self._request = 0
        for number, clause in sorted(turn.clauses.items()):
            if clause.requested and not clause.finished:
                out.append(CancelSpeech(number))
        out.append(ClearPlayback(turn.number))
        for call_id in sorted(self._tools_pending):
            # The model asked for a tool it will not hear back from: its answer goes in the history as such,
            # or every later request would carry a tool call without its result (the API refuses those).
            self.history.append({"role": "tool", "tool_call_id": call_id,
                                 "content": '{"error":"not finished: the caller interrupted"}'})  # fmt: skip
        heard = self._heard_text(turn, heard_ms or 0)
        if turn.answer_index is not None:  # the chat had finished: its words give way to what was heard
            if heard:
                self.history[turn.answer_index] = {"role": "assistant", "content": heard}
            else:
                del self.history[turn.answer_index]
        elif heard:
            self.history.append({"role": "assistant", "content": heard})
        out.append(AgentSaid(turn.number, heard, interrupted=True))
        self._splitter.reset()
        self._answer_text = ""
        self._tool_calls = []
        self._tools_pending.clear()
        self._turn = None
        return out

    @staticmethod
    def _heard_text(turn: _Turn, heard_ms: int) -> str:
        """The clauses the caller heard whole, and the words of the one they were hearing, in proportion."""
        left = heard_ms * PCM24K_BYTES_PER_MS
        words: list[str] = []
        for number in sorted(turn.clauses):
            clause = turn.clauses[number]
            if left <= 0 or not clause.audio_bytes:
                break
            if left >= clause.audio_bytes and clause.finished:
                words.append(clause.text)
                left -= clause.audio_bytes
                continue
            parts = clause.text.split()
            share = min(1.0, left / clause.audio_bytes)
            take = int(len(parts) * share)
            if take:
                words.append(" ".join(parts[:take]))
            break
        return " ".join(words)

    # -- the chat model --------------------------------------------------------------------------

    def _ask(self, out: list[Command], instructions: str | None = None) -> None:
        self._requests += 1
        self._request = self._requests
        self._answer_text = ""
        self._tool_calls = []
        messages = self.messages()
        if instructions:
            messages = (*messages, {"role": "system", "content": instructions})
        out.append(StartChat(self._request, messages, self._max_tokens))

    def _on_chat_delta(self, ev: ChatDelta) -> list[Command]:
        turn = self._turn
        if ev.request != self._request or turn is None or not ev.text:
            return []
        out: list[Command] = []
        self._stage(turn, "chat_first_token", ev.at_ms, out)
        self._answer_text += ev.text
        for text in self._splitter.feed(ev.text):
            self._add_clause(turn, text, out)
        return out

    def _on_tool_called(self, ev: ChatToolCalled) -> list[Command]:
        if ev.request != self._request:
            return []
        self._tool_calls.append(
            {"id": ev.call_id, "type": "function", "function": {"name": ev.name, "arguments": ev.arguments}}
        )
        return []

    def _on_chat_finished(self, ev: ChatFinished) -> list[Command]:
        turn = self._turn
        if ev.request != self._request or turn is None:
            return []
        self._request = 0
        self._chat_failures = 0
        out: list[Command] = []
        for text in self._splitter.flush():
            self._add_clause(turn, text, out)
        message: dict[str, Any] = {"role": "assistant", "content": self._answer_text or None}
        if self._tool_calls:
            message["tool_calls"] = self._tool_calls
            self.history.append(message)
            self._answer_text = ""
            self._follow_up = True
            for call in self._tool_calls:
                self._tools_pending.add(call["id"])
                out.append(RunTool(call["id"], call["function"]["name"], call["function"]["arguments"]))
            self._tool_calls = []
            return out  # the answer goes on once the tools have answered
        if self._answer_text:
            self.history.append({"role": "assistant", "content": self._answer_text})
            turn.answer_index = len(self.history) - 1
        self._close_answer(turn, out)
        return out

    def _on_tool_finished(self, ev: ToolFinished) -> list[Command]:
        if ev.call_id not in self._tools_pending:
            return []  # a tool of an interrupted turn
        self._tools_pending.discard(ev.call_id)
        self.history.append({"role": "tool", "tool_call_id": ev.call_id, "content": ev.output})
        self._follow_up = self._follow_up and ev.follow_up
        out: list[Command] = []
        turn = self._turn
        if not self._tools_pending and turn is not None:
            if self._follow_up:
                self._ask(out)
            else:
                self._close_answer(turn, out)
        return out

    def _on_chat_failed(self, ev: ChatFailed) -> list[Command]:
        if ev.request != self._request:
            return []
        self._chat_failures += 1
        self._request = 0
        if self._chat_failures > 1 or self._answer_text:  # twice, or after part of it was already said
            return self._give_up(f"chat model failed: {ev.error}"[:200], ev.heard_ms)
        out: list[Command] = []
        self._ask(out)
        return out

    # -- speech ------------------------------------------------------------------------------

    def _add_clause(self, turn: _Turn, text: str, out: list[Command]) -> None:
        self._clauses += 1
        if not turn.clauses:
            turn.next_out = self._clauses
        turn.clauses[self._clauses] = _Clause(text)
        self._request_speech(turn, out)

    def _request_speech(self, turn: _Turn, out: list[Command]) -> None:
        in_flight = sum(1 for c in turn.clauses.values() if c.requested and not c.finished)
        for number in sorted(turn.clauses):
            if in_flight >= self.speech_in_flight:
                return
            clause = turn.clauses[number]
            if not clause.requested:
                clause.requested = True
                in_flight += 1
                out.append(StartSpeech(number, clause.text))

    def _on_speech_audio(self, ev: SpeechAudio) -> list[Command]:
        turn = self._turn
        clause = turn.clauses.get(ev.clause) if turn is not None else None
        if clause is None or clause.finished or turn is None:
            return []  # a cancelled clause's late audio
        out: list[Command] = []
        self._stage(turn, "speech_first_bytes", ev.at_ms, out)
        clause.audio_bytes += len(ev.pcm)
        if ev.clause == turn.next_out:
            self._stage(turn, "first_audio", ev.at_ms, out)
            out.append(PlayAudio(turn.number, ev.pcm))
        else:
            clause.audio.append(ev.pcm)
        return out

    def _on_speech_finished(self, ev: SpeechFinished) -> list[Command]:
        turn = self._turn
        clause = turn.clauses.get(ev.clause) if turn is not None else None
        if clause is None or clause.finished or turn is None:
            return []
        clause.finished = True
        out: list[Command] = []
        # The clause that was going out is done: the next one's held audio follows at once.
        while turn.next_out in turn.clauses and turn.clauses[turn.next_out].finished:
            turn.next_out += 1
            following = turn.clauses.get(turn.next_out)
            if following is None:
                break
            if following.audio:
                self._stage(turn, "first_audio", ev.at_ms, out)
                out += [PlayAudio(turn.number, pcm) for pcm in following.audio]
                following.audio = []
        self._request_speech(turn, out)
        self._close_answer(turn, out)
        return out

    def _on_speech_failed(self, ev: SpeechFailed) -> list[Command]:
        turn = self._turn
        clause = turn.clauses.get(ev.clause) if turn is not None else None
        if clause is None or clause.finished:
            return []
        clause.failures += 1
        if clause.failures > 1 or clause.audio_bytes:  # twice, or part of it was already played
            return self._give_up(f"speech failed: {ev.error}"[:200], ev.heard_ms)
        return [StartSpeech(ev.clause, clause.text)]

    # -- the turn ------------------------------------------------------------------------------

    def _new_turn(self, speech_end_ms: int | None) -> _Turn:
        self._turns += 1
        self._turn = _Turn(self._turns, speech_end_ms)
        return self._turn

    def _close_answer(self, turn: _Turn, out: list[Command]) -> None:
        """Once the chat has answered and every clause's audio has been handed out, the answer is streamed;
        it ends when the caller has heard it (``PlaybackDrained``)."""
        if turn.streamed or self._request != 0 or self._tools_pending:
            return
        if not all(c.finished for c in turn.clauses.values()):
            return
        turn.streamed = True
        out.append(AnswerStreamed(turn.number))

    def _on_playback_drained(self, ev: PlaybackDrained) -> list[Command]:
        """The caller heard the whole answer: it goes to the transcript whole (the history already has the
        model's words, from the chat's end), and a closing line asked for meanwhile is asked now."""
        turn = self._turn
        if turn is None or turn.number != ev.turn or not turn.streamed:
            return []
        out: list[Command] = []
        text = " ".join(c.text for _, c in sorted(turn.clauses.items()))
        if text:
            out.append(AgentSaid(turn.number, text, interrupted=False))
        self._turn = None
        if self._closing is not None:
            instructions, self._closing = self._closing, None
            self._new_turn(None)
            self._ask(out, instructions)
        return out

    def _stage(self, turn: _Turn, stage: str, at_ms: int, out: list[Command]) -> None:
        if stage in turn.stages or turn.speech_end_ms is None:
            return
        turn.stages.add(stage)
        out.append(StageReached(turn.number, stage, at_ms - turn.speech_end_ms))

    def _give_up(self, reason: str, heard_ms: int | None = None) -> list[Command]:
        out: list[Command] = []
        if self._turn is not None:
            out += self._interrupt(heard_ms)
        self.given_up = True
        out.append(GiveUp(reason))
        return out
