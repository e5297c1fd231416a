"""The cascaded engine against the emulator's three stages over real sockets (no transport yet: the test
plays the caller's side, as a transport would)."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest

from app.adapters.openai_cascade import ChatStage, SpeechStage, TranscriptionConnector
from app.calls.cascaded import CascadedEngine
from app.core import cascade as seq
from app.core.realtime_events import TranscriptionSettings
from app.emulator.audio import SpeechSynth
from app.emulator.cascade import CascadeStages
from app.emulator.config import EmulatorConfig
from app.emulator.server import RealtimeEmulator
from tests.emulator.helpers import silence, voiced
from tests.support import serve_asgi

pytestmark = pytest.mark.asyncio

GREETING = "Thanks for calling Acme Dental."


@dataclass
class CallerSide:
    """What a transport would do: collect the agent's audio per turn, honour flushes, say what was heard."""

    played: dict[int, bytearray] = field(default_factory=lambda: defaultdict(bytearray))
    cleared: list[int] = field(default_factory=list)
    commands: list[seq.Command] = field(default_factory=list)
    heard: int | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def play(self, turn: int, pcm: bytes) -> None:
        self.played[turn] += pcm
        self.changed.set()

    def clear(self, turn: int) -> None:
        self.cleared.append(turn)
        self.changed.set()

    def command(self, command: seq.Command) -> None:
        self.commands.append(command)
        self.changed.set()

    async def until(self, predicate: Callable[[], bool], timeout: float = 15.0) -> None:
        async with asyncio.timeout(timeout):
            while not predicate():
                self.changed.clear()
                await self.changed.wait()

    def said(self, turn: int) -> list[seq.AgentSaid]:
        return [c for c in self.commands if isinstance(c, seq.AgentSaid) and c.turn == turn]


@dataclass
class Rig:
    engine: CascadedEngine
    caller: CallerSide
    stages: CascadeStages
    emulator: RealtimeEmulator


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    config = EmulatorConfig(tts="synthetic", transcripts=["When are you open?", "Sorry, what about Saturday?"],
                            reply_text=lambda heard: "We open at nine. We close at six. See you soon.")  # fmt: skip
    synth = SpeechSynth(mode="synthetic")
    stages = CascadeStages(config, synth)
    async with RealtimeEmulator(config) as emulator, serve_asgi(stages.app) as base:
        loop = asyncio.get_running_loop()
        caller = CallerSide()
        stt = TranscriptionConnector(api_key="k", websocket_base_url=emulator.url)
        chat = ChatStage(api_key="k", base_url=f"{base}/v1", model="gpt-4.1-mini")
        speech = SpeechStage(api_key="k", base_url=f"{base}/v1", model="gpt-4o-mini-tts", voice="alloy")
        engine = CascadedEngine(
            sequencer=seq.CascadeSequencer("You are Acme Dental's receptionist.", greeting=GREETING),
            transcription=stt, transcription_settings=TranscriptionSettings(), chat=chat, speech=speech, tools=[],
            play=caller.play, clear=caller.clear, heard_ms=lambda: caller.heard, on_command=caller.command,
            now_ms=lambda: int(loop.time() * 1000),
        )  # fmt: skip
        runner = asyncio.create_task(engine.run())
        try:
            yield Rig(engine, caller, stages, emulator)
        finally:
            await engine.close()
            runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)
            for client in (stt, chat, speech):
                await client.aclose()


async def speak(engine: CascadedEngine, audio: bytes) -> None:
    for start in range(0, len(audio), 960):  # 20 ms at 24 kHz
        await engine.caller_audio(audio[start : start + 960])


async def test_the_greeting_then_an_answer_spoken_clause_by_clause_from_what_the_caller_said(rig: Rig) -> None:
    caller = rig.caller
    await caller.until(lambda: bool(caller.said(1)))
    assert caller.said(1) == [seq.AgentSaid(1, GREETING, interrupted=False)]
    await speak(rig.engine, voiced(800).tobytes() + silence(900).tobytes())
    await caller.until(lambda: bool(caller.said(2)))
    answer = "We open at nine. We close at six. See you soon."
    assert caller.said(2) == [seq.AgentSaid(2, answer, interrupted=False)]
    ms_per_char = rig.stages.config.audio_ms_per_char
    clauses = ["We open at nine.", "We close at six.", "See you soon."]
    assert len(caller.played[2]) == sum(round(ms_per_char * len(c) * 24) * 2 for c in clauses)
    assert [s.body["input"] for s in rig.stages.speeches] == [GREETING, *clauses]
    (chat,) = rig.stages.chats
    assert chat.body["messages"][-1] == {"role": "user", "content": "When are you open?"}
    stages = [c.stage for c in caller.commands if isinstance(c, seq.StageReached) and c.turn == 2]
    assert stages == ["transcript", "chat_first_token", "speech_first_bytes", "first_audio"]


async def test_a_barge_in_cancels_the_streams_upstream_flushes_playback_and_keeps_what_was_heard(rig: Rig) -> None:
    caller, stages = rig.caller, rig.stages
    await caller.until(lambda: bool(caller.said(1)))
    stages.config.chat_tokens_per_s = 10  # the answer is still streaming when the caller speaks again
    await speak(rig.engine, voiced(800).tobytes() + silence(900).tobytes())
    await caller.until(lambda: len(caller.played[2]) > 0)
    caller.heard = 500
    await speak(rig.engine, voiced(600).tobytes() + silence(900).tobytes())
    await caller.until(lambda: bool(caller.said(2)))
    (interrupted,) = caller.said(2)
    assert interrupted.interrupted and caller.cleared == [2]
    assert len(interrupted.text) < len("We open at nine.")  # half a second of a 960 ms clause
    await asyncio.wait_for(stages.chats[0].finished.wait(), 10)
    assert stages.chats[0].cancelled  # the chat stream was closed, upstream sees the cancel
    await caller.until(lambda: bool(caller.said(3)))  # the caller's new words are answered
    assert stages.chats[1].body["messages"][-2]["role"] == "assistant"
    assert stages.chats[1].body["messages"][-2]["content"] == interrupted.text
