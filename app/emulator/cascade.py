"""The cascaded engine's two HTTP stages, emulated as an OpenAI-compatible server: streaming chat
completions (``POST /v1/chat/completions``) and streaming speech (``POST /v1/audio/speech``).

Reached like the real service, through the openai SDK (``AsyncOpenAI(base_url=emulator.http_url)``). What
the real API refuses is refused here with its ``invalid_request_error`` shape: unknown arguments, a
missing model, no messages, a ``tool`` message that answers no tool call before it, speech input past
4,096 characters or in a format it does not make. Replies come from the same script as the Realtime
emulator (``reply_text``, ``function_calls``), streamed a word at a time at ``chat_tokens_per_s`` after
``chat_first_token_delay_s``; speech is the same synthetic voice or espeak-ng, PCM16 24 kHz (``pcm``),
after ``speech_first_bytes_delay_s``. Every request is recorded, with whether its client went away before
the end (a barge-in's cancel) and when.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from app.emulator.audio import SpeechSynth
from app.emulator.config import EmulatorConfig
from app.emulator.structured import fill
from app.results.strict import strict_problems

SPEECH_RATE = 24_000
SPEECH_CHUNK_MS = 100
CHAT_KEYS = frozenset(
    {"model", "messages", "stream", "stream_options", "tools", "tool_choice", "temperature", "top_p", "max_tokens",
     "max_completion_tokens", "parallel_tool_calls", "user", "metadata", "seed", "stop", "n", "frequency_penalty",
     "presence_penalty", "response_format", "store", "service_tier", "logprobs", "top_logprobs", "reasoning_effort",
     "modalities", "prediction", "logit_bias", "verbosity", "prompt_cache_key", "safety_identifier"}
)  # fmt: skip
ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
SPEECH_KEYS = frozenset({"model", "input", "voice", "response_format", "speed", "instructions", "stream_format"})
SPEECH_FORMATS = frozenset({"mp3", "opus", "aac", "flac", "wav", "pcm"})
MAX_SPEECH_INPUT = 4096
_WORD = re.compile(r"\S+\s*")


@dataclass
class StageRequest:
    """One chat or speech request as the emulator took it."""

    body: dict[str, Any]
    started_at: float
    ended_at: float | None = None
    cancelled: bool = False  # the client went away before the end
    sent: list[str] = field(default_factory=list)  # chat: text deltas; speech: nothing
    bytes_sent: int = 0  # speech: the audio streamed so far
    finished: asyncio.Event = field(default_factory=asyncio.Event)  # answered in full, or cancelled


def _server_error(record: StageRequest) -> JSONResponse:
    """A fault: the API's 503 (the request is recorded, answered with an error, and finished)."""
    record.ended_at = time.monotonic()
    record.finished.set()
    error = {"message": "The server is overloaded or not ready yet.", "type": "server_error", "param": None,
             "code": None}  # fmt: skip
    return JSONResponse({"error": error}, status_code=503)


def _invalid(message: str, param: str | None = None, status: int = 400) -> JSONResponse:
    error = {"message": message, "type": "invalid_request_error", "param": param, "code": None}
    return JSONResponse({"error": error}, status_code=status)


class CascadeStages:
    """The Starlette app for both stages; ``chats`` and ``speeches`` record what was asked, in order."""

    def __init__(self, config: EmulatorConfig, synth: SpeechSynth) -> None:
        self.config = config
        self.synth = synth
        self.chats: list[StageRequest] = []
        self.speeches: list[StageRequest] = []
        self.app = Starlette(
            routes=[
                Route("/v1/chat/completions", self.chat, methods=["POST"]),
                Route("/v1/audio/speech", self.speech, methods=["POST"]),
            ]
        )

    # -- chat --------------------------------------------------------------------------------

    async def chat(self, request: Request) -> Response:
        body = await _authorised_json(request)
        if isinstance(body, JSONResponse):
            return body
        refused = _check_chat(body)
        if refused is not None:
            return refused
        record = StageRequest(body, time.monotonic())
        self.chats.append(record)
        if self.config.faults.fail_chats > 0:
            self.config.faults.fail_chats -= 1
            return _server_error(record)
        call = self._scripted_call(body)
        text = self.config.tool_call_text.get(call[0], "") if call is not None else self._reply(body)
        structured = (body.get("response_format") or {}).get("json_schema")
        if structured is not None:  # an answer in the schema's shape (checked by _check_chat)
            conversation = "\n".join(_text_of(m) for m in body["messages"] if m.get("role") != "system")
            script = self.config.structured_reply
            schema = structured.get("schema") or {}
            answer = script(schema, conversation) if script else fill(schema, conversation)
            call, text = None, orjson.dumps(answer).decode()
        if not body.get("stream"):
            record.ended_at = time.monotonic()
            record.sent.append(text)
            record.finished.set()
            return JSONResponse(self._completion(body, text, call))
        return StreamingResponse(self._chunks(record, body, text, call), media_type="text/event-stream")

    def _reply(self, body: dict[str, Any]) -> str:
        last = body["messages"][-1]
        if last.get("role") == "tool":
            return self.config.tool_followup_text
        heard = _text_of(last) if last.get("role") == "user" else ""
        if self.config.reply_text is not None:
            return self.config.reply_text(heard)
        return f"You said: {heard.rstrip('.!? ')}. How else can I help?" if heard else self.config.greeting_text

    def _scripted_call(self, body: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
        """A scripted tool call, when the caller's last words trigger it and the request offers that tool."""
        last = body["messages"][-1]
        if last.get("role") != "user" or body.get("tool_choice") == "none":
            return None
        offered = {t.get("function", {}).get("name") for t in body.get("tools") or [] if t.get("type") == "function"}
        heard = _text_of(last).lower()
        for phrase, (name, arguments) in self.config.function_calls.items():
            if phrase.lower() in heard and name in offered:
                return name, arguments
        return None

    def _usage(self, body: dict[str, Any], text: str) -> dict[str, Any]:
        prompt = sum(len(_text_of(m)) // 4 + 4 for m in body["messages"])
        completion = max(1, len(text) // 4)
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

    def _completion(self, body: dict[str, Any], text: str, call: tuple[str, dict[str, Any]] | None) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": text or None, "refusal": None}
        if call is not None:
            message["tool_calls"] = [_tool_call(call)]
        return {
            "id": f"chatcmpl-{id(body):x}", "object": "chat.completion", "created": int(time.time()),
            "model": body["model"], "choices": [{"index": 0, "message": message, "logprobs": None,
                                                 "finish_reason": "tool_calls" if call else "stop"}],
            "usage": self._usage(body, text),
        }  # fmt: skip

    async def _chunks(
        self, record: StageRequest, body: dict[str, Any], text: str, call: tuple[str, dict[str, Any]] | None
    ) -> AsyncIterator[bytes]:
        base = {"id": f"chatcmpl-{id(record):x}", "object": "chat.completion.chunk", "created": int(time.time()),
                "model": body["model"]}  # fmt: skip

        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            return b"data: " + orjson.dumps({**base, "choices": [choice]}) + b"\n\n"

        config = self.config
        try:
            await asyncio.sleep(config.chat_first_token_delay_s)
            yield chunk({"role": "assistant", "content": "", "refusal": None})
            gap = 1.0 / config.chat_tokens_per_s if config.chat_tokens_per_s > 0 else 0.0
            loop = asyncio.get_running_loop()
            start = loop.time()
            for n, word in enumerate(_WORD.findall(text)):
                if gap:
                    await asyncio.sleep(max(0.0, start + n * gap - loop.time()))
                record.sent.append(word)
                yield chunk({"content": word})
            if call is not None:
                yield chunk({"tool_calls": [{"index": 0, **_tool_call(call)}]})
            yield chunk({}, "tool_calls" if call is not None else "stop")
            if (body.get("stream_options") or {}).get("include_usage"):
                yield b"data: " + orjson.dumps({**base, "choices": [], "usage": self._usage(body, text)}) + b"\n\n"
            yield b"data: [DONE]\n\n"
        except (asyncio.CancelledError, GeneratorExit):
            record.cancelled = True
            raise
        finally:
            record.ended_at = time.monotonic()
            record.finished.set()

    # -- speech ------------------------------------------------------------------------------

    async def speech(self, request: Request) -> Response:
        body = await _authorised_json(request)
        if isinstance(body, JSONResponse):
            return body
        unknown = sorted(set(body) - SPEECH_KEYS)
        if unknown:
            return _invalid(f"Unrecognized request argument supplied: {unknown[0]}", unknown[0])
        for required in ("model", "input", "voice"):
            if not isinstance(body.get(required), str) or not body[required]:
                return _invalid(f"Missing required parameter: '{required}'.", required)
        if len(body["input"]) > MAX_SPEECH_INPUT:
            return _invalid(f"'input' is too long: at most {MAX_SPEECH_INPUT} characters.", "input")
        fmt = body.get("response_format", "mp3")
        if fmt not in SPEECH_FORMATS:
            return _invalid(
                f"Invalid value: '{fmt}'. Supported values are: {sorted(SPEECH_FORMATS)}.", "response_format"
            )
        if fmt != "pcm":
            return _invalid(f"The emulator makes only 'pcm' speech, not '{fmt}'.", "response_format")
        record = StageRequest(body, time.monotonic())
        self.speeches.append(record)
        if self.config.faults.fail_speeches > 0:
            self.config.faults.fail_speeches -= 1
            return _server_error(record)
        return StreamingResponse(self._audio(record, body["input"]), media_type="audio/pcm")

    async def _audio(self, record: StageRequest, text: str) -> AsyncIterator[bytes]:
        config = self.config
        # The voice is rendered while the stage's delay runs: the first bytes leave after the delay, not
        # after the delay and our own rendering.
        render = asyncio.ensure_future(
            self.synth.render(text, rate=SPEECH_RATE, synthetic_ms=config.audio_ms_per_char * len(text))
        )
        try:
            await asyncio.sleep(config.speech_first_bytes_delay_s)
            pcm = await render
            data = pcm.astype("<i2").tobytes()
            step = SPEECH_RATE * 2 * SPEECH_CHUNK_MS // 1000
            loop = asyncio.get_running_loop()
            start = loop.time()
            per_s = SPEECH_RATE * 2 * config.speech_speed
            for offset in range(0, len(data), step):
                if per_s:
                    await asyncio.sleep(max(0.0, start + offset / per_s - loop.time()))
                piece = data[offset : offset + step]
                record.bytes_sent += len(piece)
                yield piece
                await asyncio.sleep(0)
        except (asyncio.CancelledError, GeneratorExit):
            record.cancelled = True
            raise
        finally:
            render.cancel()
            record.ended_at = time.monotonic()
            record.finished.set()


async def _authorised_json(request: Request) -> dict[str, Any] | JSONResponse:
    """The request's JSON object, or the refusal the real API gives: no key, or a body that is not one."""
    if not request.headers.get("authorization", "").lower().startswith("bearer "):
        return _invalid("You didn't provide an API key.", status=401)
    try:
        body = orjson.loads(await request.body())
    except orjson.JSONDecodeError:
        return _invalid("We could not parse the JSON body of your request.")
    if not isinstance(body, dict):
        return _invalid("The request body must be a JSON object.")
    return body


def _text_of(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return ""


def _tool_call(call: tuple[str, dict[str, Any]]) -> dict[str, Any]:
    name, arguments = call
    return {"id": f"call_{abs(hash((name, orjson.dumps(arguments)))):x}"[:29], "type": "function",
            "function": {"name": name, "arguments": orjson.dumps(arguments).decode()}}  # fmt: skip


def _check_chat(body: dict[str, Any]) -> JSONResponse | None:
    """What the real API refuses before it answers."""
    unknown = sorted(set(body) - CHAT_KEYS)
    if unknown:
        return _invalid(f"Unrecognized request argument supplied: {unknown[0]}", unknown[0])
    if not isinstance(body.get("model"), str) or not body["model"]:
        return _invalid("you must provide a model parameter", "model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return _invalid("[] is too short - 'messages'", "messages")
    asked: set[str] = set()
    for i, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        if role not in ROLES:
            return _invalid(f"Invalid value for 'messages[{i}].role'.", f"messages.[{i}].role")
        if role == "assistant":
            asked |= {str(c.get("id")) for c in message.get("tool_calls") or [] if isinstance(c, dict)}
        if role == "tool" and message.get("tool_call_id") not in asked:
            return _invalid(
                "Invalid parameter: messages with role 'tool' must be a response to a preceeding message with "
                "'tool_calls'.",
                f"messages.[{i}].role",
            )
    if body.get("stream_options") is not None and not body.get("stream"):
        return _invalid("The 'stream_options' parameter is only allowed when 'stream' is enabled.", "stream_options")
    return _check_response_format(body.get("response_format"))


def _check_response_format(fmt: Any) -> JSONResponse | None:
    """``text``, ``json_object``, or ``json_schema`` (a name, a schema; with ``strict``, the strict subset)."""
    if fmt is None:
        return None
    kinds = ("text", "json_object", "json_schema")
    if not isinstance(fmt, dict) or fmt.get("type") not in kinds:
        return _invalid(f"Invalid value: '{fmt.get('type') if isinstance(fmt, dict) else fmt}'. Supported values "
                        f"are: {', '.join(repr(k) for k in kinds)}.", "response_format.type")  # fmt: skip
    if fmt["type"] != "json_schema":
        return None
    spec = fmt.get("json_schema")
    if not isinstance(spec, dict) or "name" not in spec:
        return _invalid("Missing required parameter: 'response_format.json_schema.name'.", "response_format")
    if spec.get("strict"):
        problems = strict_problems(spec["name"], spec.get("schema"))
        if problems:
            return _invalid(problems[0], "response_format")
    elif not isinstance(spec.get("schema", {}), dict):
        return _invalid("Invalid type for 'response_format.json_schema.schema': expected an object.", "response_format")
    return None
