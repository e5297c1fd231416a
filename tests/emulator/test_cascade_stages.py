"""The cascaded engine's chat and speech stages, emulated, through the real openai SDK over a real socket:
what the SDK sends is taken, what the real API refuses is refused, and what comes back parses as the SDK's
own types."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Literal

import openai
import pytest
from openai import AsyncOpenAI
from pydantic import BaseModel

from app.emulator.audio import SpeechSynth
from app.emulator.cascade import CascadeStages
from app.emulator.config import EmulatorConfig
from tests.support import serve_asgi

pytestmark = pytest.mark.asyncio

TOOLS = [{"type": "function", "function": {"name": "check_balance", "description": "balance",
                                           "parameters": {"type": "object", "properties": {}}}}]  # fmt: skip


@pytest.fixture
async def stages() -> AsyncIterator[tuple[CascadeStages, AsyncOpenAI]]:
    config = EmulatorConfig(
        tts="synthetic",
        reply_text=lambda heard: f"We open at nine. You asked: {heard}",
        function_calls={"balance": ("check_balance", {})},
    )
    emulated = CascadeStages(config, SpeechSynth(mode="synthetic"))
    async with serve_asgi(emulated.app) as base:
        client = AsyncOpenAI(api_key="test-key", base_url=f"{base}/v1", max_retries=0)
        yield emulated, client
        await client.close()


async def test_a_streamed_chat_answer_arrives_word_by_word_with_its_usage_last(
    stages: tuple[CascadeStages, AsyncOpenAI],
) -> None:
    emulated, client = stages
    stream = await client.chat.completions.create(
        model="gpt-4.1-mini", stream=True, stream_options={"include_usage": True},
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "When do you open?"}],
    )  # fmt: skip
    chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "We open at nine. You asked: When do you open?"
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) == 10  # a word a chunk
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    (record,) = emulated.chats
    assert not record.cancelled and record.finished.is_set()


async def test_a_scripted_tool_call_streams_as_the_sdk_expects_and_its_result_gets_the_follow_up(
    stages: tuple[CascadeStages, AsyncOpenAI],
) -> None:
    _, client = stages
    question = {"role": "user", "content": "What is my balance?"}
    stream = await client.chat.completions.create(model="m", stream=True, tools=TOOLS, messages=[question])  # type: ignore[arg-type, list-item]
    chunks = [chunk async for chunk in stream]
    (call,) = [t for c in chunks for t in c.choices[0].delta.tool_calls or []]
    assert call.function is not None and call.function.name == "check_balance" and call.function.arguments == "{}"
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    follow_up = await client.chat.completions.create(
        model="m", tools=TOOLS,  # type: ignore[arg-type]
        messages=[question, {"role": "assistant", "content": None, "tool_calls": [
            {"id": call.id or "", "type": "function", "function": {"name": "check_balance", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": call.id or "", "content": '{"balance": "42.00"}'}],
    )  # fmt: skip
    assert follow_up.choices[0].message.content == "All right, that's done. Is there anything else I can help with?"


@pytest.mark.parametrize(
    ("arguments", "param"),
    [
        ({"messages": [{"role": "user", "content": "hi"}], "extra_body": {"frobnicate": 1}}, "frobnicate"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "tool", "tool_call_id": "call_x", "content": "42"}]}, "messages.[0].role"),
    ],
    ids=["unknown-argument", "no-messages", "tool-answering-nothing"],
)
async def test_what_the_real_api_refuses_is_refused(
    stages: tuple[CascadeStages, AsyncOpenAI], arguments: dict[str, object], param: str
) -> None:
    _, client = stages
    with pytest.raises(openai.BadRequestError) as refused:
        await client.chat.completions.create(model="m", **arguments)  # type: ignore[call-overload]
    assert refused.value.body["param"] == param  # type: ignore[index]


async def test_speech_streams_pcm_at_24_khz_for_as_long_as_the_text_takes(
    stages: tuple[CascadeStages, AsyncOpenAI],
) -> None:
    emulated, client = stages
    text = "We open at nine."
    async with client.audio.speech.with_streaming_response.create(
        model="gpt-4o-mini-tts", voice="alloy", input=text, response_format="pcm"
    ) as response:
        pieces = [piece async for piece in response.iter_bytes()]
    audio = b"".join(pieces)
    assert len(audio) == round(emulated.config.audio_ms_per_char * len(text) * 24) * 2  # 24 samples a ms
    assert len(pieces) > 1  # streamed, not one body
    with pytest.raises(openai.BadRequestError):
        await client.audio.speech.create(
            model="gpt-4o-mini-tts", voice="alloy", input="x" * 4097, response_format="pcm"
        )


async def test_a_client_that_goes_away_mid_answer_is_recorded_as_a_cancel(
    stages: tuple[CascadeStages, AsyncOpenAI],
) -> None:
    emulated, client = stages
    emulated.config.chat_tokens_per_s = 20  # slow enough that the answer is still streaming
    stream = await client.chat.completions.create(
        model="m", stream=True, messages=[{"role": "user", "content": "Tell me everything about your hours."}]
    )
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            break
    await stream.close()  # a barge-in: the engine closes the stream
    (record,) = emulated.chats
    await asyncio.wait_for(record.finished.wait(), 10)
    assert record.cancelled and 0 < len(record.sent) < 10


async def test_the_voice_is_rendered_while_the_first_bytes_delay_runs() -> None:
    """The stage's delay is the whole wait for the first bytes: rendering does not come on top of it."""
    rendering = asyncio.Event()

    class RecordingSynth(SpeechSynth):
        async def render(self, text: str, *, rate: int, synthetic_ms: float):  # type: ignore[no-untyped-def]
            rendering.set()
            return await super().render(text, rate=rate, synthetic_ms=synthetic_ms)

    config = EmulatorConfig(tts="synthetic", speech_first_bytes_delay_s=30.0)
    emulated = CascadeStages(config, RecordingSynth(mode="synthetic"))
    async with serve_asgi(emulated.app) as base:
        client = AsyncOpenAI(api_key="test-key", base_url=f"{base}/v1", max_retries=0)
        request = asyncio.create_task(
            client.audio.speech.create(model="gpt-4o-mini-tts", voice="alloy", input="Hello.", response_format="pcm")
        )
        await asyncio.wait_for(rendering.wait(), 10)  # long before the 30 s delay is over
        request.cancel()
        await asyncio.gather(request, return_exceptions=True)
        await client.close()


class Party(BaseModel):
    adults: int
    children: int


class Booking(BaseModel):
    booked: bool
    slot: str | None
    party: Party
    mood: Literal["positive", "neutral", "upset"]
    topics: list[str]


async def test_structured_outputs_from_the_sdks_own_strict_schema_fit_it_and_parse(
    stages: tuple[CascadeStages, AsyncOpenAI],
) -> None:
    """The SDK's ``parse`` makes its strict schema from a pydantic model (its own reading of the rules, not
    ours): the emulator takes it and answers in its shape, derived from what the user said."""
    _, client = stages
    completion = await client.chat.completions.parse(
        model="gpt-4.1-mini",
        messages=[{"role": "user", "content": "caller: I booked for 2 adults and I am upset"}],
        response_format=Booking,
    )
    parsed = completion.choices[0].message.parsed
    assert parsed == Booking(booked=True, slot="I booked for 2 adults and I am upset", party=Party(adults=2, children=2),
                             mood="upset", topics=[])  # fmt: skip


async def test_a_schema_that_is_not_strict_is_refused_in_strict_mode_as_the_api_does(
    stages: tuple[CascadeStages, AsyncOpenAI],
) -> None:
    _, client = stages
    loose = {"type": "object", "properties": {"booked": {"type": "boolean"}}}
    with pytest.raises(openai.BadRequestError) as refused:
        await client.chat.completions.create(
            model="gpt-4.1-mini", messages=[{"role": "user", "content": "hi"}],
            response_format={"type": "json_schema", "json_schema": {"name": "booking", "strict": True,
                                                                    "schema": loose}},
        )  # fmt: skip
    body = refused.value.body
    assert body["param"] == "response_format"  # type: ignore[index]
    assert body["message"] == (  # type: ignore[index]
        "Invalid schema for response_format 'booking': In context=(), 'additionalProperties' is required to be "
        "supplied and to be false."
    )
    answered = await client.chat.completions.create(  # not strict: taken as it is
        model="gpt-4.1-mini", messages=[{"role": "user", "content": "hi"}],
        response_format={"type": "json_schema", "json_schema": {"name": "booking", "schema": loose}},
    )  # fmt: skip
    assert answered.choices[0].message.content == '{"booked":false}'
