"""The cascaded engine's I/O: its upstream session is a transcription session; its chat and speech requests
run as tasks. The call's machine (``CascadeCall``) decides; the call (``app.calls.media.CallSession``)
carries out what is common to every engine, and hands this engine the commands only it knows.

Chat and speech requests run as tasks that feed what they receive back to the call's machine through
``feed``. Cancelling one closes its HTTP stream, which is what cancels it upstream.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
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
from app.adapters.openai_realtime import RealtimeUpstream
from app.core import cascade as seq
from app.core.call_events import RecordCallEvent, TranscriptLine
from app.core.cascade_call import CascadeCall, CascadeConfig
from app.core.transport import TransportAudio

log = structlog.get_logger(__name__)

Feed = Callable[[object], Awaitable[None]]
PCM24K_BYTES_PER_S = 48_000


@dataclass
class CascadeStages:
    """The three stages' clients, made once per process (each keeps its connection pool)."""

    transcription: TranscriptionConnector
    chat: ChatStage
    speech: SpeechStage

    async def aclose(self) -> None:
        for client in (self.transcription, self.chat, self.speech):
            await client.aclose()


class CascadedEngine:
    """One call's cascaded engine."""

    name = "cascaded"
    estimates_audio = False  # each stage's usage is charged as it arrives; nothing is estimated between
    serial_events = True  # its stage tasks feed the machine too: every event goes through one queue

    def __init__(self, stages: CascadeStages, config: CascadeConfig, tools: list[dict[str, Any]]) -> None:
        self.stages = stages
        self.config = config
        self.tools = tools
        self.model = stages.chat.model
        self._feed: Feed | None = None
        self._chats: dict[int, asyncio.Task[None]] = {}
        self._speeches: dict[int, asyncio.Task[None]] = {}
        self._closed = False

    def machine(
        self, *, started_at_ms: int, history: Sequence[TranscriptLine], greeted: bool, transport: TransportAudio
    ) -> CascadeCall:
        return CascadeCall(
            self.config, started_at_ms=started_at_ms, history=history, greeted=greeted, transport=transport
        )

    def announce(self, words: str) -> None:
        """The greeting starts with these words (the recording's announcement)."""
        self.config = dataclasses.replace(self.config, greeting=f"{words} {self.config.greeting or ''}".strip())

    def bind(self, feed: Feed) -> None:
        """How the stage tasks hand what they receive to the call's machine."""
        self._feed = feed

    async def connect(self) -> RealtimeUpstream:
        return await self.stages.transcription.connect()

    def execute(self, command: object) -> bool:
        """Carry out a command only this engine knows; False: not one of them. After ``close`` nothing new
        starts (a tool finishing as the call ends must not open a stream nobody will cancel)."""
        kind = type(command)
        c: Any = command
        if kind is seq.StartSpeech:
            if not self._closed:
                self._speeches[c.clause] = self._start(self._speak(c.clause, c.text), "speech")
        elif kind is seq.StartChat:
            if not self._closed:
                self._chats[c.request] = self._start(self._ask(c.request, c.messages, c.max_tokens), "chat")
        elif kind is seq.CancelSpeech:
            task = self._speeches.pop(c.clause, None)
            if task is not None:
                task.cancel()
        elif kind is seq.CancelChat:
            task = self._chats.pop(c.request, None)
            if task is not None:
                task.cancel()
        else:
            return False
        return True

    def _start(self, coro: Any, name: str) -> asyncio.Task[None]:
        task = asyncio.create_task(coro, name=name)
        task.add_done_callback(_log_failure)
        return task

    async def close(self) -> None:
        """The call is over: every request still streaming is cancelled (nothing more is paid for)."""
        self._closed = True
        tasks = [*self._chats.values(), *self._speeches.values()]
        self._chats.clear()
        self._speeches.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _emit(self, event: object) -> None:
        if self._feed is not None:
            await self._feed(event)

    async def _ask(self, request: int, messages: tuple[dict[str, Any], ...], max_tokens: int | None) -> None:
        """One chat request. Only the stage's own failures are the machine's to judge (retried, then a
        hand-off); a failure of ours past it propagates and is logged as the bug it is."""
        loop = asyncio.get_running_loop()
        usage: dict[str, Any] | None = None
        said: list[str] = []
        async with contextlib.aclosing(self.stages.chat.stream(messages, self.tools, max_tokens=max_tokens)) as stream:
            while True:
                try:
                    piece = await anext(stream)
                except StopAsyncIteration:
                    break
                except asyncio.CancelledError:
                    await self._chat_estimate(messages, said)  # billed though cut: the prompt, and what was said
                    raise
                except Exception as exc:  # noqa: BLE001 - the stage failed: the machine retries or gives up
                    self._chats.pop(request, None)
                    log.warning("cascade.chat_failed", error=repr(exc))
                    await self._chat_estimate(messages, said)
                    await self._emit(seq.ChatFailed(request, repr(exc)[:200], int(loop.time() * 1000)))
                    return
                if isinstance(piece, ChatText):
                    said.append(piece.text)
                    await self._emit(seq.ChatDelta(request, piece.text, int(loop.time() * 1000)))
                elif isinstance(piece, ChatToolCall):
                    await self._emit(seq.ChatToolCalled(request, piece.call_id, piece.name, piece.arguments))
                elif isinstance(piece, ChatUsage):
                    usage = piece.usage
        self._chats.pop(request, None)
        if usage is None:  # a server that sends no usage: estimated, never free
            await self._chat_estimate(messages, said)
        await self._emit(seq.ChatFinished(request, int(loop.time() * 1000), usage))

    async def _chat_estimate(self, messages: tuple[dict[str, Any], ...], said: list[str]) -> None:
        """A request cut short (a barge-in, a failure) sends no usage, yet its prompt was read and its
        words made: charged at ~4 characters a token."""
        prompt = sum(len(str(m.get("content") or "")) + len(str(m.get("tool_calls") or "")) for m in messages)
        usage = {"prompt_tokens": prompt // 4 + 4 * len(messages), "completion_tokens": len("".join(said)) // 4,
                 "estimated": True}  # fmt: skip
        await self._emit(RecordCallEvent("chat_usage", {"usage": usage}))

    async def _speak(self, clause: int, text: str) -> None:
        """One clause's speech. Its cost is charged as the audio arrives, a second of audio at a time (and the
        characters with the first), so a cap sees a long answer's spend while it streams."""
        loop = asyncio.get_running_loop()
        charged = [0, 0]  # characters, bytes
        received = 0
        async with contextlib.aclosing(self.stages.speech.stream(text)) as stream:
            while True:
                try:
                    pcm = await anext(stream)
                except StopAsyncIteration:
                    break
                except asyncio.CancelledError:
                    await self._speech_usage(text, received, charged)  # what was made before the cancel
                    raise
                except Exception as exc:  # noqa: BLE001 - the stage failed: the machine retries or gives up
                    self._speeches.pop(clause, None)
                    log.warning("cascade.speech_failed", error=repr(exc))
                    await self._speech_usage(text, received, charged)
                    await self._emit(seq.SpeechFailed(clause, repr(exc)[:200], int(loop.time() * 1000)))
                    return
                received += len(pcm)
                if received - charged[1] >= PCM24K_BYTES_PER_S:
                    await self._speech_usage(text, received, charged)
                await self._emit(seq.SpeechAudio(clause, pcm, int(loop.time() * 1000)))
        self._speeches.pop(clause, None)
        await self._speech_usage(text, received, charged)
        await self._emit(seq.SpeechFinished(clause, int(loop.time() * 1000)))

    async def _speech_usage(self, text: str, received: int, charged: list[int]) -> None:
        """Charge what has not been charged yet of this clause: its characters once, the audio since."""
        characters = len(text) - charged[0]
        audio = received - charged[1]
        if not characters and not audio:
            return
        charged[0], charged[1] = len(text), received
        usage = {"characters": characters, "audio_seconds": audio / PCM24K_BYTES_PER_S}
        await self._emit(RecordCallEvent("speech_usage", {"model": self.stages.speech.model, "usage": usage}))


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("cascade.task_failed", task=task.get_name(), exc_info=task.exception())
