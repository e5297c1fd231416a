"""The cascaded engine's three OpenAI-compatible stages, each with its own base URL, key and model.

- Speech-to-text: a Realtime transcription session (``/v1/realtime?intent=transcription``), opened here;
  audio goes in and events come out through the same upstream object as a Realtime session.
- The chat model: ``POST /v1/chat/completions`` streamed, with tools; text and tool-call fragments as they
  arrive, usage from the last chunk (``stream_options.include_usage``). Closing the stream cancels it.
- Speech: ``POST /v1/audio/speech`` with ``response_format: pcm`` (24 kHz 16-bit mono), read as it streams.

Any server that speaks these endpoints will do (a local Whisper or Kokoro server, vLLM, Ollama, Groq).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any

from openai import AsyncOpenAI

from app.adapters.openai_realtime import OpenAIRealtimeUpstream, RealtimeSocketKind, RealtimeUpstream
from app.adapters.realtime_socket import open_realtime_socket


@dataclass(frozen=True, slots=True)
class ChatText:
    text: str


@dataclass(frozen=True, slots=True)
class ChatToolCall:
    call_id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class ChatUsage:
    usage: dict[str, Any]


ChatPiece = ChatText | ChatToolCall | ChatUsage


class TranscriptionConnector:
    """Opens transcription sessions (no model in the URL: the session's configuration names it)."""

    def __init__(self, *, api_key: str, websocket_base_url: str, socket: RealtimeSocketKind = "picows") -> None:
        self.socket = socket
        self._client = AsyncOpenAI(api_key=api_key, websocket_base_url=websocket_base_url, max_retries=0)

    async def connect(self) -> RealtimeUpstream:
        if self.socket == "picows":
            return await open_realtime_socket(self._client, {"intent": "transcription"})
        conn = await self._client.realtime.connect(extra_query={"intent": "transcription"}).enter()
        return OpenAIRealtimeUpstream(conn)

    async def aclose(self) -> None:
        await self._client.close()


class ChatStage:
    """Streams one answer of the chat model."""

    def __init__(self, *, api_key: str, base_url: str, model: str, timeout_s: float = 30.0) -> None:
        self.model = model
        self._client = AsyncOpenAI(api_key=api_key, base_url=base_url, max_retries=0, timeout=timeout_s)

    async def stream(
        self,
        messages: tuple[dict[str, Any], ...],
        tools: list[dict[str, Any]] | None = None,
        *,
        max_tokens: int | None = None,
    ) -> AsyncGenerator[ChatPiece, None]:
        """Text as it comes; each tool call once whole (its argument fragments joined); usage last. Closing
        the iterator early (``aclose``) closes the HTTP stream, which cancels the generation."""
        arguments: dict[str, Any] = {"model": self.model, "messages": list(messages), "stream": True,
                                     "stream_options": {"include_usage": True}}  # fmt: skip
        if tools:
            arguments["tools"] = tools
        if max_tokens is not None:
            arguments["max_completion_tokens"] = max_tokens
        stream = await self._client.chat.completions.create(**arguments)
        calls: dict[int, dict[str, str]] = {}
        try:
            async for chunk in stream:
                if chunk.usage is not None:
                    yield ChatUsage(chunk.usage.model_dump(exclude_none=True))
                for choice in chunk.choices:
                    delta = choice.delta
                    if delta.content:
                        yield ChatText(delta.content)
                    for fragment in delta.tool_calls or []:
                        call = calls.setdefault(fragment.index, {"id": "", "name": "", "arguments": ""})
                        call["id"] = fragment.id or call["id"]
                        if fragment.function is not None:
                            call["name"] = fragment.function.name or call["name"]
                            call["arguments"] += fragment.function.arguments or ""
                    if choice.finish_reason is not None:
                        for index in sorted(calls):
                            call = calls.pop(index)
                            yield ChatToolCall(call["id"], call["name"], call["arguments"] or "{}")
        finally:
            await stream.close()

    async def aclose(self) -> None:
        await self._client.close()


class SpeechStage:
    """Streams the speech of one clause as PCM16 at 24 kHz."""

    RATE = 24_000

    def __init__(
        self, *, api_key: str, base_url: str, model: str, voice: str, instructions: str | None = None,
        timeout_s: float = 30.0,
    ) -> None:  # fmt: skip
        self.model = model
        self.voice = voice
        self.instructions = instructions
        self._client = AsyncOpenAI(api_key=api_key, base_url=base_url, max_retries=0, timeout=timeout_s)

    async def stream(self, text: str) -> AsyncGenerator[bytes, None]:
        """The audio as it arrives, in whole samples (an odd byte waits for its pair)."""
        extra: dict[str, Any] = {"instructions": self.instructions} if self.instructions else {}
        async with self._client.audio.speech.with_streaming_response.create(
            model=self.model, voice=self.voice, input=text, response_format="pcm", **extra
        ) as response:
            carry = b""
            async for piece in response.iter_bytes():
                data = carry + piece
                cut = len(data) & ~1
                carry = data[cut:]
                if cut:
                    yield data[:cut]

    async def aclose(self) -> None:
        await self._client.close()
