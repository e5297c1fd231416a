"""The cascaded engine's stage adapters against the emulated stages, over real sockets."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import orjson
import pytest

from app.adapters.openai_cascade import (
    ChatStage,
    ChatText,
    ChatToolCall,
    ChatUsage,
    SpeechStage,
    TranscriptionConnector,
)
from app.emulator.audio import SpeechSynth
from app.emulator.cascade import CascadeStages
from app.emulator.config import EmulatorConfig
from app.emulator.server import RealtimeEmulator
from tests.support import serve_asgi

pytestmark = pytest.mark.asyncio
TOOLS = [{"type": "function", "function": {"name": "end_call", "description": "hang up",
                                           "parameters": {"type": "object", "properties": {"reason": {"type": "string"}}}}}]  # fmt: skip


@pytest.fixture
async def stages() -> AsyncIterator[tuple[CascadeStages, str]]:
    config = EmulatorConfig(tts="synthetic", reply_text=lambda heard: "We open at nine. See you then.",
                            function_calls={"goodbye": ("end_call", {"reason": "caller is done"})})  # fmt: skip
    emulated = CascadeStages(config, SpeechSynth(mode="synthetic"))
    async with serve_asgi(emulated.app) as base:
        yield emulated, f"{base}/v1"


async def test_the_chat_stage_gives_text_as_it_comes_then_the_usage(stages: tuple[CascadeStages, str]) -> None:
    _, base = stages
    chat = ChatStage(api_key="k", base_url=base, model="gpt-4.1-mini")
    pieces = [p async for p in chat.stream(({"role": "user", "content": "When do you open?"},))]
    await chat.aclose()
    assert "".join(p.text for p in pieces if isinstance(p, ChatText)) == "We open at nine. See you then."
    assert isinstance(pieces[-1], ChatUsage) and pieces[-1].usage["total_tokens"] > 0


async def test_the_chat_stage_gives_a_tool_call_whole(stages: tuple[CascadeStages, str]) -> None:
    emulated, base = stages
    chat = ChatStage(api_key="k", base_url=base, model="m")
    pieces = [p async for p in chat.stream(({"role": "user", "content": "ok goodbye"},), TOOLS)]
    await chat.aclose()
    (call,) = [p for p in pieces if isinstance(p, ChatToolCall)]
    assert call.name == "end_call" and orjson.loads(call.arguments) == {"reason": "caller is done"}
    assert emulated.chats[0].body["stream_options"] == {"include_usage": True}


async def test_closing_the_chat_stream_early_cancels_it_upstream(stages: tuple[CascadeStages, str]) -> None:
    emulated, base = stages
    emulated.config.chat_tokens_per_s = 20
    chat = ChatStage(api_key="k", base_url=base, model="m")
    answer = chat.stream(({"role": "user", "content": "Tell me everything"},))
    assert isinstance(await anext(answer), ChatText)
    await answer.aclose()  # a barge-in
    await asyncio.wait_for(emulated.chats[0].finished.wait(), 10)
    await chat.aclose()
    assert emulated.chats[0].cancelled


async def test_the_speech_stage_streams_whole_samples_of_24_khz_pcm(stages: tuple[CascadeStages, str]) -> None:
    emulated, base = stages
    speech = SpeechStage(api_key="k", base_url=base, model="gpt-4o-mini-tts", voice="alloy")
    pieces = [p async for p in speech.stream("See you then.")]
    await speech.aclose()
    assert all(len(p) % 2 == 0 for p in pieces)
    assert sum(map(len, pieces)) == round(emulated.config.audio_ms_per_char * len("See you then.") * 24) * 2
    assert emulated.speeches[0].body["response_format"] == "pcm"


async def test_the_transcription_connector_opens_a_transcription_session() -> None:
    async with RealtimeEmulator(EmulatorConfig(tts="synthetic")) as emulator:
        connector = TranscriptionConnector(api_key="k", websocket_base_url=emulator.url)
        upstream = await connector.connect()
        created = orjson.loads(await upstream.recv())
        await upstream.close()
        await connector.aclose()
    assert created["type"] == "session.created" and created["session"]["type"] == "transcription"
    assert emulator.sessions[0].transcription_only
