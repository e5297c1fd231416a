"""A transcription session (the cascaded engine's speech-to-text), as the real service opens it:
``/v1/realtime?intent=transcription`` without a model, then ``session.update`` of type ``transcription``.
Every server event is validated against the SDK's GA models."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from openai import AsyncOpenAI

from app.emulator.server import RealtimeEmulator
from tests.emulator.helpers import RealtimeTestClient, silence, voiced

pytestmark = pytest.mark.asyncio

TRANSCRIBE = {
    "type": "transcription",
    "audio": {
        "input": {
            "format": {"type": "audio/pcm", "rate": 24000},
            "transcription": {"model": "gpt-4o-mini-transcribe", "language": "en"},
            "turn_detection": {"type": "server_vad", "silence_duration_ms": 500},
        }
    },
}


@contextlib.asynccontextmanager
async def transcription(emulator: RealtimeEmulator) -> AsyncIterator[tuple[RealtimeTestClient, dict[str, Any]]]:
    client = AsyncOpenAI(api_key="sk-test", websocket_base_url=emulator.url)
    connection = await client.realtime.connect(extra_query={"intent": "transcription"}).enter()
    try:
        test_client = RealtimeTestClient(connection)
        created = await test_client.recv()
        yield test_client, created
    finally:
        with contextlib.suppress(Exception):
            await connection.close()
        await client.close()


async def test_a_turn_of_speech_is_detected_committed_and_transcribed_and_nothing_answers(
    emulator: RealtimeEmulator,
) -> None:
    emulator.config.transcripts.append("When are you open on Saturday?")
    async with transcription(emulator) as (client, created):
        assert created["session"]["type"] == "transcription"
        assert created["session"]["object"] == "realtime.transcription_session"
        await client.send({"type": "session.update", "session": TRANSCRIBE})
        updated = (await client.recv_until("session.updated"))[-1]
        assert updated["session"]["audio"]["input"]["transcription"]["model"] == "gpt-4o-mini-transcribe"
        await client.send_audio(voiced(800).tobytes() + silence(900).tobytes())
        events = await client.recv_until("conversation.item.input_audio_transcription.completed")
    kinds = [e["type"] for e in events]
    assert kinds.index("input_audio_buffer.speech_started") < kinds.index("input_audio_buffer.speech_stopped")
    assert kinds.index("input_audio_buffer.committed") < kinds.index(
        "conversation.item.input_audio_transcription.delta"
    )
    assert events[-1]["transcript"] == "When are you open on Saturday?"
    assert events[-1]["usage"]["type"] == "tokens"  # the gpt-4o transcribe models bill tokens
    assert not [k for k in kinds if k.startswith("response.")]
    session = emulator.sessions[0]
    assert session.transcription_only and session.responses == []


async def test_a_transcription_session_takes_only_its_own_configuration_and_the_audio_buffer(
    emulator: RealtimeEmulator,
) -> None:
    async with transcription(emulator) as (client, _):
        await client.send({"type": "session.update", "session": {"type": "realtime", "instructions": "hi"}})
        wrong_type = (await client.recv_until("error"))[-1]
        await client.send({"type": "session.update", "session": {"type": "transcription", "instructions": "hi"}})
        unknown = (await client.recv_until("error"))[-1]
        await client.send({"type": "response.create"})
        answer = (await client.recv_until("error"))[-1]
    assert wrong_type["error"]["param"] == "session.type"
    assert unknown["error"]["code"] == "unknown_parameter"
    assert answer["error"]["param"] == "type" and "transcription session" in answer["error"]["message"]


async def test_a_conversation_session_refuses_a_transcription_configuration(emulator: RealtimeEmulator) -> None:
    from tests.emulator.helpers import connect

    async with connect(emulator) as client:
        await client.send({"type": "session.update", "session": TRANSCRIBE})
        refused = (await client.recv_until("error"))[-1]
    assert refused["error"]["param"] == "session.type"
