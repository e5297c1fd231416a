"""The cascaded engine's I/O shell: a transcription session, chat streams and speech streams, driven by
the pure ``CascadeSequencer``.

The transport hands it the caller's audio (in the transcription session's format) and asks, on a barge-in,
how much of the current answer the caller heard; it hands the transport agent audio (PCM16 24 kHz) and
flush requests. Everything else the sequencer decides (the transcript lines, the latency stages, tool
runs, giving up) goes to ``on_command`` for the call's services. Chat and speech requests run as tasks;
cancelling one closes its HTTP stream, which is what cancels it upstream.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import structlog

from app.adapters.openai_cascade import (
    ChatStage,
    ChatText,
    ChatToolCall,
    ChatUsage,
    SpeechStage,
    TranscriptionConnector,
)
from app.adapters.openai_realtime import OpenAIRealtimeUpstream
from app.core import cascade as seq
from app.core import realtime_events as rt

log = structlog.get_logger(__name__)

CONFIRM_TIMEOUT_S = 2.0


class TranscriptionRefused(Exception):
    """The transcription session refused its configuration, or never confirmed it."""


class CascadedEngine:
    def __init__(
        self,
        *,
        sequencer: seq.CascadeSequencer,
        transcription: TranscriptionConnector,
        transcription_settings: rt.TranscriptionSettings,
        chat: ChatStage,
        speech: SpeechStage,
        tools: list[dict[str, Any]],
        play: Callable[[int, bytes], None],
        clear: Callable[[int], None],
        heard_ms: Callable[[], int | None],
        on_command: Callable[[seq.Command], None],
        now_ms: Callable[[], int],
    ) -> None:
        self.sequencer = sequencer
        self._connector = transcription
        self._stt_settings = transcription_settings
        self._chat = chat
        self._speech = speech
        self._tools = tools
        self._play = play
        self._clear = clear
        self._heard_ms = heard_ms
        self._on_command = on_command
        self.now_ms = now_ms
        self.upstream: OpenAIRealtimeUpstream | None = None
        self._chats: dict[int, asyncio.Task[None]] = {}
        self._speeches: dict[int, asyncio.Task[None]] = {}
        self.usage: list[tuple[str, dict[str, Any]]] = []  # ("chat", usage) / ("speech", {"characters": n})

    # -- the transport's side ------------------------------------------------------------------

    async def caller_audio(self, audio: bytes) -> None:
        upstream = self.upstream
        if upstream is not None and audio:
            await upstream.send(rt.audio_append(audio))

    def tool_finished(self, call_id: str, output: str) -> None:
        self._execute(self.sequencer.handle(seq.ToolFinished(call_id, output, self.now_ms())))

    # -- the engine's life ---------------------------------------------------------------------

    async def run(self) -> None:
        """Open and configure the transcription session, greet, then follow the caller until the session
        ends (the caller hung up, or it was lost: the caller of ``run`` decides what follows)."""
        upstream = await self._connector.connect()
        self.upstream = upstream
        await upstream.send(rt.transcription_session_update(self._stt_settings, event_id="evt_stt_config"))
        await self._confirmed(upstream)
        self._execute(self.sequencer.start(self.now_ms()))
        while True:
            try:
                raw = await upstream.recv()
            except Exception:  # noqa: BLE001 - the session is gone: the caller of run() decides
                return
            try:
                ev = rt.parse_server_event(raw)
            except rt.RealtimeEventError as exc:
                log.warning("cascade.bad_transcription_event", error=str(exc))
                continue
            self._on_transcription_event(ev)

    async def _confirmed(self, upstream: OpenAIRealtimeUpstream) -> None:
        try:
            async with asyncio.timeout(CONFIRM_TIMEOUT_S):
                while True:
                    ev = rt.parse_server_event(await upstream.recv())
                    if isinstance(ev, rt.SessionUpdated):
                        return
                    if isinstance(ev, rt.RealtimeError) and ev.event_id == "evt_stt_config":
                        raise TranscriptionRefused(f"session.update refused: {ev.code or ev.message}")
        except TimeoutError:
            raise TranscriptionRefused(f"no session.updated within {CONFIRM_TIMEOUT_S} s") from None

    def _on_transcription_event(self, ev: rt.RealtimeEvent) -> None:
        now = self.now_ms()
        if isinstance(ev, rt.SpeechStarted):
            self._execute(self.sequencer.handle(seq.CallerStartedSpeaking(now, self._heard_ms())))
        elif isinstance(ev, rt.SpeechStopped):
            self._execute(self.sequencer.handle(seq.CallerStoppedSpeaking(now)))
        elif isinstance(ev, rt.InputTranscribed):
            self.usage.append(("transcription", ev.usage))
            self._execute(self.sequencer.handle(seq.CallerSaid(ev.item_id, ev.transcript, now)))

    async def close(self) -> None:
        for task in [*self._chats.values(), *self._speeches.values()]:
            task.cancel()
        await asyncio.gather(*self._chats.values(), *self._speeches.values(), return_exceptions=True)
        if self.upstream is not None:
            await self.upstream.close()

    # -- commands ------------------------------------------------------------------------------

    def _execute(self, commands: list[seq.Command]) -> None:
        for command in commands:
            if isinstance(command, seq.PlayAudio):
                self._play(command.turn, command.pcm)
            elif isinstance(command, seq.StartSpeech):
                self._speeches[command.clause] = asyncio.create_task(self._speak(command.clause, command.text))
            elif isinstance(command, seq.StartChat):
                self._chats[command.request] = asyncio.create_task(self._ask(command.request, command.messages))
            elif isinstance(command, seq.CancelSpeech):
                task = self._speeches.pop(command.clause, None)
                if task is not None:
                    task.cancel()
            elif isinstance(command, seq.CancelChat):
                task = self._chats.pop(command.request, None)
                if task is not None:
                    task.cancel()
            elif isinstance(command, seq.ClearPlayback):
                self._clear(command.turn)
            else:
                self._on_command(command)

    async def _ask(self, request: int, messages: tuple[dict[str, Any], ...]) -> None:
        usage: dict[str, Any] | None = None
        try:
            async for piece in self._chat.stream(messages, self._tools):
                if isinstance(piece, ChatText):
                    self._execute(self.sequencer.handle(seq.ChatDelta(request, piece.text, self.now_ms())))
                elif isinstance(piece, ChatToolCall):
                    called = seq.ChatToolCalled(request, piece.call_id, piece.name, piece.arguments)
                    self._execute(self.sequencer.handle(called))
                elif isinstance(piece, ChatUsage):
                    usage = piece.usage
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - any failure of the stage is the sequencer's to judge
            self._chats.pop(request, None)
            self._execute(self.sequencer.handle(seq.ChatFailed(request, repr(exc)[:200], self.now_ms())))
            return
        self._chats.pop(request, None)
        if usage is not None:
            self.usage.append(("chat", usage))
        self._execute(self.sequencer.handle(seq.ChatFinished(request, self.now_ms(), usage)))

    async def _speak(self, clause: int, text: str) -> None:
        self.usage.append(("speech", {"characters": len(text)}))
        try:
            async for pcm in self._speech.stream(text):
                self._execute(self.sequencer.handle(seq.SpeechAudio(clause, pcm, self.now_ms())))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001
            self._speeches.pop(clause, None)
            self._execute(self.sequencer.handle(seq.SpeechFailed(clause, repr(exc)[:200], self.now_ms())))
            return
        self._speeches.pop(clause, None)
        self._execute(self.sequencer.handle(seq.SpeechFinished(clause, self.now_ms())))
