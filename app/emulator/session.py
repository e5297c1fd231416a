"""One emulated Realtime session: the server side of a single WebSocket connection.

The receive loop handles client events in order; each response runs in its own task so the loop
never blocks on audio pacing. Cancellation is cooperative (a flag checked between deltas), and the
loop waits for a cancelled response's ``response.done`` before reading the next client event, so
events reach the client in the same order as from the real service.
"""

from __future__ import annotations

import asyncio
import binascii
import contextlib
import copy
import math
import re
import time
from base64 import b64decode, b64encode
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import orjson
import structlog
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from app.emulator.audio import AudioFormat, SpeechSynth
from app.emulator.config import EmulatorConfig
from app.emulator.schema import (
    SEMANTIC_SILENCE_MS,
    RequestError,
    apply_session_update,
    default_session,
    default_transcription_session,
    new_id,
    validate_item,
    validate_response_params,
)
from app.emulator.vad import EnergyVad, SpeechStarted, SpeechStopped

log = structlog.get_logger(__name__)

EventPredicate = Callable[[dict[str, Any]], bool]

INPUT_AUDIO_TOKENS_PER_S = 10
OUTPUT_AUDIO_TOKENS_PER_S = 20
MIN_COMMIT_MS = 100
# What a transcription session takes: its configuration and the input audio buffer.
TRANSCRIPTION_EVENTS = frozenset(
    {"session.update", "input_audio_buffer.append", "input_audio_buffer.commit", "input_audio_buffer.clear"}
)
_QUOTED = re.compile(r"[\"“”]([^\"“”]{2,})[\"“”]")
_GREETING = re.compile(r"\b(greet|greeting|hello|welcome)", re.IGNORECASE)
_CLIENT_EVENTS = (
    "session.update",
    "input_audio_buffer.append",
    "input_audio_buffer.commit",
    "input_audio_buffer.clear",
    "conversation.item.create",
    "conversation.item.truncate",
    "conversation.item.delete",
    "conversation.item.retrieve",
    "response.create",
    "response.cancel",
    "output_audio_buffer.clear",
)


def _text_tokens(text: str) -> int:
    return math.ceil(len(text) / 4) if text else 0


class EventLog:
    """An append-only list of events that coroutines can wait on (no polling)."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.times: list[float] = []  # time.monotonic() of each event, as it was appended
        self._waiters: list[tuple[EventPredicate, asyncio.Future[dict[str, Any]], int]] = []

    def append(self, event: dict[str, Any]) -> None:
        index = len(self.events)
        self.events.append(event)
        self.times.append(time.monotonic())
        for waiter in list(self._waiters):
            predicate, future, start = waiter
            if future.done() or index < start:
                continue
            try:
                matched = predicate(event)
            except Exception as exc:  # a broken predicate fails its waiter, not the session
                future.set_exception(exc)
                continue
            if matched:
                future.set_result(event)

    async def wait(self, predicate: EventPredicate, timeout: float, start: int = 0) -> dict[str, Any]:
        for event in self.events[start:]:
            if predicate(event):
                return event
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        waiter = (predicate, future, max(start, len(self.events)))
        self._waiters.append(waiter)
        try:
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            recent = [e.get("type") for e in self.events[-12:]]
            raise TimeoutError(f"no matching event within {timeout} s; most recent: {recent}") from None
        finally:
            self._waiters.remove(waiter)


@dataclass(eq=False)
class _ItemRecord:
    item: dict[str, Any]
    input_audio_ms: float = 0.0
    output_format: AudioFormat | None = None
    output_audio_bytes: int = 0
    truncated_ms: int | None = None

    @property
    def output_audio_ms(self) -> float:
        if self.output_format is None:
            return 0.0
        return self.output_format.duration_ms(self.output_audio_bytes)


def transcription_usage(model: str, seconds: float, transcript: str) -> dict[str, Any]:
    """What the real service bills a transcription with: tokens for the gpt-4o transcribe models (about
    10 audio tokens a second in, the transcript's tokens out), the audio's duration for whisper-1."""
    if model.startswith("gpt-4o"):
        audio_tokens = max(1, round(seconds * 10))
        text_out = max(1, len(transcript) // 4)
        return {
            "type": "tokens",
            "input_tokens": audio_tokens,
            "input_token_details": {"text_tokens": 0, "audio_tokens": audio_tokens},
            "output_tokens": text_out,
            "total_tokens": audio_tokens + text_out,
        }
    return {"type": "duration", "seconds": seconds}


@dataclass(eq=False)
class _Response:
    id: str
    params: dict[str, Any]
    in_conversation: bool
    modalities: list[str]
    output_format: AudioFormat
    voice: Any
    input_tokens: tuple[int, int]
    started_at: float
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)
    cancel_reason: str | None = None
    incomplete_reason: str | None = None  # "max_output_tokens": the output limit cut it short
    failed: bool = False  # ended by a server error (the fail_responses fault)
    task: asyncio.Task[None] | None = None
    output: list[dict[str, Any]] = field(default_factory=list)
    audio_bytes: int = 0
    text_sent: str = ""
    function_arguments: str = ""
    first_audio_at: float | None = None

    @property
    def audio_ms(self) -> float:
        return self.output_format.duration_ms(self.audio_bytes)


class EmulatedSession:
    """Server side of one connection; tests inspect and steer it."""

    def __init__(
        self,
        ws: ServerConnection,
        config: EmulatorConfig,
        *,
        model: str,
        synth: SpeechSynth,
        record_audio: bool = True,
        transcription: bool = False,
    ) -> None:
        self.id = new_id("sess")
        self.model = model
        self.transcription_only = transcription
        """A transcription session (``?intent=transcription``): transcripts of the caller, no answers."""
        lifetime_s = config.faults.session_lifetime_s
        self.session_config: dict[str, Any] = (
            default_transcription_session(session_id=self.id, lifetime_s=lifetime_s)
            if transcription
            else default_session(session_id=self.id, model=model, lifetime_s=lifetime_s)
        )
        self._received = EventLog()
        self._sent = EventLog()
        self.received: list[dict[str, Any]] = self._received.events
        """Every parsed client event, in order (append payloads dropped if not recording audio)."""
        self.sent: list[dict[str, Any]] = self._sent.events
        self.sent_times: list[float] = self._sent.times
        """Every server event sent; audio deltas carry ``delta_bytes`` instead of ``delta``."""
        self.audio_in = bytearray()
        self.appends = 0  # input_audio_buffer.append events taken
        self.binary_frames = 0
        """Decoded input audio, in the input format it arrived in."""
        self.truncations: list[dict[str, Any]] = []
        self.responses: list[dict[str, Any]] = []
        """Final response objects (as in response.done), in order."""
        self.closed = asyncio.Event()
        self.server_close_code: int | None = None
        """Set when the emulator itself ended the connection (faults, drop(), expire())."""
        self._ws = ws
        self._config = config
        self._synth = synth
        self._record_audio = record_audio
        self._loop = asyncio.get_running_loop()
        self._started_at = self._loop.time()
        self._items: dict[str, _ItemRecord] = {}
        self._order: list[str] = []
        self._response: _Response | None = None
        self._pending_call: tuple[str, dict[str, Any]] | None = None
        self._last_input: tuple[str, str] = ("user", "")
        self._last_context_tokens = (0, 0)
        self._vad = EnergyVad(threshold_rms=config.vad_threshold_rms)
        self._pcm_tail = b""
        self._input_ms = 0.0
        self._buffer_start_ms = 0
        self._speech_item_id: str | None = None
        self._fault_timers: list[asyncio.TimerHandle] = []
        self._idle_timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._ending = False
        self._handlers: dict[str, Callable[[dict[str, Any]], Awaitable[None]]] = {
            "session.update": self._on_session_update,
            "input_audio_buffer.append": self._on_append,
            "input_audio_buffer.commit": self._on_commit,
            "input_audio_buffer.clear": self._on_clear,
            "conversation.item.create": self._on_item_create,
            "conversation.item.truncate": self._on_truncate,
            "conversation.item.delete": self._on_item_delete,
            "conversation.item.retrieve": self._on_item_retrieve,
            "response.create": self._on_response_create,
            "response.cancel": self._on_response_cancel,
            "output_audio_buffer.clear": self._on_output_audio_buffer_clear,
        }

    # ----- public, for tests ---------------------------------------------------------------

    @property
    def items(self) -> list[dict[str, Any]]:
        """The conversation, in order (snapshots)."""
        return [copy.deepcopy(self._items[i].item) for i in self._order]

    @property
    def input_audio_ms(self) -> float:
        return self._input_ms

    async def wait_for(self, predicate: EventPredicate, timeout: float = 15.0, *, start: int = 0) -> dict[str, Any]:
        """The first received client event (from index ``start``) matching ``predicate``."""
        return await self._received.wait(predicate, timeout, start)

    async def wait_sent(self, predicate: EventPredicate, timeout: float = 15.0, *, start: int = 0) -> dict[str, Any]:
        """The first sent server event (from index ``start``) matching ``predicate``."""
        return await self._sent.wait(predicate, timeout, start)

    async def inject(self, event: dict[str, Any]) -> None:
        """Send an arbitrary server event (an ``event_id`` is added if missing)."""
        await self._send(dict(event))

    async def drop(self, code: int = 1006, reason: str = "") -> None:
        """End the connection now: 1006 aborts TCP without a close frame, else a close frame."""
        if self._ending:
            return
        self._ending = True
        await self._terminate(code, reason)

    async def expire(self) -> None:
        """Hit the session limit: error ``session_expired``, then close 1001."""
        if self._ending:
            return
        self._ending = True
        await self._stop_response_now()
        with contextlib.suppress(ConnectionClosed):
            await self._error("session_expired", "Your session hit the maximum duration of 60 minutes.")
        await self._terminate(1001, "session expired")

    async def _terminate(self, code: int, reason: str) -> None:
        self.server_close_code = code
        self._cancel_idle_timer()
        await self._stop_response_now()
        if code == 1006:
            self._ws.transport.abort()
        else:
            await self._ws.close(code, reason)

    # ----- connection lifecycle ------------------------------------------------------------

    async def run(self) -> None:
        faults = self._config.faults
        faults.subscribe(self._arm_fault_timers)
        try:
            await self._send({"type": "session.created", "session": copy.deepcopy(self.session_config)})
            for error in list(faults.error_events):
                event = (
                    {"type": "error", **copy.deepcopy(error)}
                    if "error" in error
                    else {"type": "error", "error": dict(error)}
                )
                await self._send(event)
            self._arm_fault_timers()
            async for message in self._ws:
                await self._handle_message(message)
        except ConnectionClosed:
            pass
        finally:
            faults.unsubscribe(self._arm_fault_timers)
            for timer in self._fault_timers:
                timer.cancel()
            self._cancel_idle_timer()
            await self._stop_response_now()
            for task in list(self._tasks):
                task.cancel()
            self.closed.set()

    def _spawn(self, factory: Callable[[], Coroutine[Any, Any, None]]) -> None:
        task = self._loop.create_task(self._guard(factory()))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _guard(self, coro: Coroutine[Any, Any, None]) -> None:
        try:
            await coro
        except ConnectionClosed:
            pass
        except Exception:
            log.exception("emulator_task_failed", session_id=self.id)

    def _arm_fault_timers(self) -> None:
        for timer in self._fault_timers:
            timer.cancel()
        self._fault_timers.clear()
        if self._ending or self.closed.is_set():
            return
        faults = self._config.faults
        elapsed = self._loop.time() - self._started_at
        if faults.close_code_after_s is not None:
            code, after = faults.close_code_after_s
            self._fault_timers.append(
                self._loop.call_later(max(0.0, after - elapsed), self._spawn, lambda: self.drop(code))
            )
        if faults.session_expired_after_s is not None:
            delay = max(0.0, faults.session_expired_after_s - elapsed)
            self._fault_timers.append(self._loop.call_later(delay, self._spawn, self.expire))

    # ----- sending -------------------------------------------------------------------------

    async def _send(self, event: dict[str, Any], *, audio_bytes: int | None = None) -> None:
        event.setdefault("event_id", new_id("event"))
        await self._ws.send(orjson.dumps(event), text=True)
        if audio_bytes is not None:
            event = {k: v for k, v in event.items() if k != "delta"}
            event["delta_bytes"] = audio_bytes
        self._sent.append(event)

    async def _error(
        self,
        code: str | None,
        message: str,
        *,
        param: str | None = None,
        event_id: str | None = None,
        error_type: str = "invalid_request_error",
    ) -> None:
        error = {"type": error_type, "code": code, "message": message, "param": param, "event_id": event_id}
        await self._send({"type": "error", "error": error})

    # ----- receiving -----------------------------------------------------------------------

    async def _handle_message(self, message: str | bytes) -> None:
        if isinstance(message, bytes):
            # Clients send JSON events as text frames; count binary ones so tests can insist on text.
            self.binary_frames += 1
        try:
            event = orjson.loads(message)
        except orjson.JSONDecodeError as exc:
            await self._error(
                "invalid_json",
                f"We could not parse the JSON body of your request. ({exc})",
            )
            return
        if not isinstance(event, dict):
            await self._error(
                "invalid_type",
                "Invalid type for client event: expected an object.",
            )
            return
        if not self._record_audio and event.get("type") == "input_audio_buffer.append":
            audio = event.get("audio")
            recorded = {k: v for k, v in event.items() if k != "audio"}
            recorded["audio_chars"] = len(audio) if isinstance(audio, str) else 0
            self._received.append(recorded)
        else:
            self._received.append(event)
        client_event_id = event.get("event_id") if isinstance(event.get("event_id"), str) else None
        event_type = event.get("type")
        if event_type is None:
            await self._error(
                "missing_required_parameter",
                "Missing required parameter: 'type'.",
                param="type",
                event_id=client_event_id,
            )
            return
        handler = self._handlers.get(event_type) if isinstance(event_type, str) else None
        if handler is None:
            supported = ", ".join(f"'{t}'" for t in _CLIENT_EVENTS)
            await self._error(
                "invalid_value",
                f"Invalid value: '{event_type}'. Supported values are: {supported}.",
                param="type",
                event_id=client_event_id,
            )
            return
        if self.transcription_only and event_type not in TRANSCRIPTION_EVENTS:
            await self._error(
                "invalid_value",
                f"'{event_type}' is not supported in a transcription session: it transcribes audio, it does not "
                "answer.",
                param="type",
                event_id=client_event_id,
            )
            return
        try:
            await handler(event)
        except RequestError as exc:
            await self._error(exc.code, exc.message, param=exc.param, event_id=client_event_id)
        except ConnectionClosed:
            raise
        except Exception:
            log.exception("emulator_handler_failed", event_type=event_type, session_id=self.id)
            await self._error(
                None,
                "The server had an error while processing your request.",
                event_id=client_event_id,
                error_type="server_error",
            )

    async def _on_session_update(self, event: dict[str, Any]) -> None:
        faults = self._config.faults
        if faults.refuse_session_updates > 0:
            faults.refuse_session_updates -= 1
            raise RequestError(
                "unknown_parameter",
                "Unknown parameter: 'session.audio.input.noise_reduction.level'.",
                "session.audio.input.noise_reduction.level",
            )
        if faults.unconfirmed_session_updates > 0:
            faults.unconfirmed_session_updates -= 1
            return
        before = self._input_format
        self.session_config = apply_session_update(self.session_config, event)
        if self._input_format != before:
            self._pcm_tail = b""
        self.model = str(self.session_config.get("model", self.model))
        await self._send({"type": "session.updated", "session": copy.deepcopy(self.session_config)})

    # ----- input audio and turn detection --------------------------------------------------

    @property
    def _input_format(self) -> AudioFormat:
        return AudioFormat.from_session(self.session_config["audio"]["input"]["format"])

    @property
    def _turn_detection(self) -> dict[str, Any] | None:
        td: dict[str, Any] | None = self.session_config["audio"]["input"]["turn_detection"]
        return td

    async def _on_append(self, event: dict[str, Any]) -> None:
        audio = event.get("audio")
        if not isinstance(audio, str):
            raise RequestError("missing_required_parameter", "Missing required parameter: 'audio'.", "audio")
        try:
            raw = b64decode(audio, validate=True)
        except (binascii.Error, ValueError):
            raise RequestError("invalid_value", "Invalid 'audio'. Expected base64-encoded audio.", "audio") from None
        if not raw:  # the API requires audio; OpenAI's own clients never send an empty append
            raise RequestError("invalid_value", "Invalid 'audio': the audio is empty.", "audio")
        self.appends += 1
        if self._record_audio:
            self.audio_in.extend(raw)
        fmt = self._input_format
        if fmt.sample_bytes == 2:
            raw = self._pcm_tail + raw
            self._pcm_tail = raw[len(raw) - len(raw) % 2 :]
        pcm = fmt.decode(raw)
        self._input_ms += pcm.size * 1000 / fmt.rate
        td = self._turn_detection
        if td is None:
            self._vad.skip(pcm, fmt.rate)
            return
        silence_ms = self._config.silence_duration_ms
        if silence_ms is None:
            silence_ms = (
                td.get("silence_duration_ms", 500)
                if td["type"] == "server_vad"
                else SEMANTIC_SILENCE_MS[td.get("eagerness", "auto")]
            )
        prefix_ms = int(td.get("prefix_padding_ms", 300)) if td["type"] == "server_vad" else 300
        for vad_event in self._vad.feed(
            pcm, fmt.rate, silence_ms=silence_ms, prefix_padding_ms=prefix_ms, floor_ms=self._buffer_start_ms
        ):
            if isinstance(vad_event, SpeechStarted):
                await self._speech_started(vad_event, td)
            else:
                await self._speech_stopped(vad_event, td)

    async def _speech_started(self, started: SpeechStarted, td: dict[str, Any]) -> None:
        self._cancel_idle_timer()
        self._speech_item_id = new_id("item")
        await self._send(
            {
                "type": "input_audio_buffer.speech_started",
                "audio_start_ms": started.audio_start_ms,
                "item_id": self._speech_item_id,
            }
        )
        response = self._response
        if td.get("interrupt_response", True) and response is not None and response.in_conversation:
            await self._cancel_response("turn_detected")

    async def _speech_stopped(self, stopped: SpeechStopped, td: dict[str, Any]) -> None:
        item_id = self._speech_item_id or new_id("item")
        self._speech_item_id = None
        await self._send(
            {"type": "input_audio_buffer.speech_stopped", "audio_end_ms": stopped.audio_end_ms, "item_id": item_id}
        )
        await self._commit_audio(item_id, stopped.audio_start_ms, stopped.audio_end_ms)
        if td.get("create_response", True) and self._response is None and not self.transcription_only:
            self._start_response({})

    async def _commit_audio(self, item_id: str, start_ms: int, end_ms: int, transcript: str | None = None) -> None:
        """Buffer [start_ms, end_ms) becomes a user item; transcription follows if configured."""
        previous = self._order[-1] if self._order else None
        self._buffer_start_ms = end_ms
        content: dict[str, Any] = {"type": "input_audio", "transcript": None}
        item: dict[str, Any] = {
            "id": item_id,
            "object": "realtime.item",
            "type": "message",
            "status": "completed",
            "role": "user",
            "content": [content],
        }
        duration_ms = max(0, end_ms - start_ms)
        self._add_item(_ItemRecord(item=item, input_audio_ms=duration_ms))
        await self._send({"type": "input_audio_buffer.committed", "previous_item_id": previous, "item_id": item_id})
        await self._send({"type": "conversation.item.added", "previous_item_id": previous, "item": copy.deepcopy(item)})
        await self._send({"type": "conversation.item.done", "previous_item_id": previous, "item": copy.deepcopy(item)})
        seconds = round(duration_ms / 1000, 3)
        if transcript is None:
            told = self._config.said.take(seconds, time.monotonic())
            scripted = self._config.transcripts
            if told is not None:
                transcript = told
            else:
                transcript = scripted.pop(0) if scripted else f"(caller speech {seconds:.2f} s)"
        content["transcript"] = transcript
        self._heard_user(transcript)
        transcription = self.session_config["audio"]["input"].get("transcription")
        if transcription is not None:
            faults = self._config.faults
            if faults.late_transcript_s > 0:
                delay = faults.late_transcript_s
                self._spawn(lambda: self._send_transcript(item_id, transcript, seconds, transcription, delay))
            else:
                await self._send_transcript(item_id, transcript, seconds, transcription, 0.0)

    async def _send_transcript(
        self, item_id: str, transcript: str, seconds: float, transcription: dict[str, Any], delay: float
    ) -> None:
        if delay > 0:
            await asyncio.sleep(delay)
        faults = self._config.faults
        if faults.fail_transcriptions > 0:
            faults.fail_transcriptions -= 1
            await self._send(
                {
                    "type": "conversation.item.input_audio_transcription.failed",
                    "item_id": item_id,
                    "content_index": 0,
                    "error": {"type": "transcription_error", "code": "audio_unintelligible",
                              "message": "Audio could not be transcribed.", "param": None},
                }
            )  # fmt: skip
            return
        await self._send(
            {
                "type": "conversation.item.input_audio_transcription.delta",
                "item_id": item_id,
                "content_index": 0,
                "delta": transcript,
            }
        )
        await self._send(
            {
                "type": "conversation.item.input_audio_transcription.completed",
                "item_id": item_id,
                "content_index": 0,
                "transcript": transcript,
                "usage": transcription_usage(str(transcription.get("model", "")), seconds, transcript),
            }
        )

    async def _on_commit(self, event: dict[str, Any]) -> None:
        end_ms = int(self._input_ms)
        buffered = end_ms - self._buffer_start_ms
        if buffered < MIN_COMMIT_MS:
            raise RequestError(
                "input_audio_buffer_commit_empty",
                "Error committing input audio buffer: buffer too small. Expected at least 100ms of audio, "
                f"but buffer only has {max(0, buffered):.2f}ms of audio.",
            )
        item_id = self._speech_item_id or new_id("item")
        self._speech_item_id = None
        self._vad.reset()
        await self._commit_audio(item_id, self._buffer_start_ms, end_ms)

    async def _on_clear(self, event: dict[str, Any]) -> None:
        self._buffer_start_ms = int(self._input_ms)
        self._speech_item_id = None
        self._vad.reset()
        await self._send({"type": "input_audio_buffer.cleared"})

    async def _on_output_audio_buffer_clear(self, event: dict[str, Any]) -> None:
        raise RequestError("invalid_value", "output_audio_buffer.clear is only supported for WebRTC sessions.", "type")

    # ----- conversation items --------------------------------------------------------------

    def _add_item(self, record: _ItemRecord, after: str | None = None) -> None:
        item_id = record.item["id"]
        self._items[item_id] = record
        if after is None or after not in self._order:
            self._order.append(item_id)
        else:
            self._order.insert(self._order.index(after) + 1, item_id)

    def _heard_user(self, text: str) -> None:
        self._last_input = ("user", text)
        lowered = text.lower()
        for phrase, call in self._config.function_calls.items():
            if phrase.lower() in lowered:
                self._pending_call = (call[0], dict(call[1]))
                break

    async def _on_item_create(self, event: dict[str, Any]) -> None:
        if "item" not in event:
            raise RequestError("missing_required_parameter", "Missing required parameter: 'item'.", "item")
        item = validate_item(event["item"])
        if item["id"] in self._items:
            raise RequestError("invalid_value", f"Item with id '{item['id']}' already exists.", "item.id")
        if item["type"] == "function_call_output" and not self._has_call(str(item.get("call_id"))):
            raise RequestError(
                "invalid_tool_call_id",
                f"Tool call ID '{item.get('call_id')}' not found in conversation.",
                "item.call_id",
            )
        after = event.get("previous_item_id")
        if after is not None and after != "root" and after not in self._items:
            raise RequestError("invalid_value", f"Previous item with id '{after}' does not exist.", "previous_item_id")
        if after is None:
            previous = self._order[-1] if self._order else None
        else:
            previous = None if after == "root" else after
        record = _ItemRecord(item=item)
        for part in item.get("content", ()):
            if part.get("type") == "input_audio" and isinstance(part.get("audio"), str):
                with contextlib.suppress(binascii.Error, ValueError):
                    n_bytes = len(b64decode(part["audio"]))
                    record.input_audio_ms += self._input_format.duration_ms(n_bytes)
        if after == "root":
            self._items[item["id"]] = record
            self._order.insert(0, item["id"])
        else:
            self._add_item(record, after=after)
        self._cancel_idle_timer()
        if item["type"] == "message" and item["role"] == "user":
            texts = [p.get("text", "") for p in item["content"] if p.get("type") == "input_text"]
            if texts:
                self._heard_user(" ".join(texts))
        elif item["type"] == "function_call_output":
            self._last_input = ("tool", item["output"])
        await self._send({"type": "conversation.item.added", "previous_item_id": previous, "item": copy.deepcopy(item)})
        await self._send({"type": "conversation.item.done", "previous_item_id": previous, "item": copy.deepcopy(item)})

    def _has_call(self, call_id: str) -> bool:
        """A function call with this id is in this session's conversation."""
        return any(
            r.item.get("type") == "function_call" and r.item.get("call_id") == call_id for r in self._items.values()
        )

    def _require_item(self, event: dict[str, Any]) -> tuple[str, _ItemRecord]:
        item_id = event.get("item_id")
        if item_id is None:
            raise RequestError("missing_required_parameter", "Missing required parameter: 'item_id'.", "item_id")
        record = self._items.get(item_id) if isinstance(item_id, str) else None
        if record is None:
            raise RequestError("invalid_value", f"Item with item_id '{item_id}' not found.", "item_id")
        return item_id, record

    async def _on_truncate(self, event: dict[str, Any]) -> None:
        item_id, record = self._require_item(event)
        item = record.item
        if item.get("role") != "assistant" or record.output_format is None:
            raise RequestError(
                "invalid_value", "Only assistant messages with audio content can be truncated.", "item_id"
            )
        content_index = event.get("content_index", 0)
        if content_index != 0:
            raise RequestError("invalid_value", f"Invalid content_index: {content_index!r}.", "content_index")
        audio_end_ms = event.get("audio_end_ms")
        if not isinstance(audio_end_ms, int) or isinstance(audio_end_ms, bool) or audio_end_ms < 0:
            raise RequestError(
                "invalid_value", "Invalid 'audio_end_ms': expected a non-negative integer.", "audio_end_ms"
            )
        sent_ms = record.output_audio_ms
        if audio_end_ms > sent_ms:
            raise RequestError(
                "invalid_value",
                f"Audio content of {sent_ms:.0f}ms is already shorter than {audio_end_ms}ms "
                "(audio_end_ms exceeds the audio length).",
                "audio_end_ms",
            )
        record.truncated_ms = audio_end_ms
        for part in item.get("content", ()):
            if part.get("type") == "output_audio":
                part["transcript"] = ""
        truncation = {"item_id": item_id, "content_index": 0, "audio_end_ms": audio_end_ms, "audio_sent_ms": sent_ms}
        self.truncations.append(truncation)
        await self._send(
            {
                "type": "conversation.item.truncated",
                "item_id": item_id,
                "content_index": 0,
                "audio_end_ms": audio_end_ms,
            }
        )

    async def _on_item_delete(self, event: dict[str, Any]) -> None:
        item_id, _ = self._require_item(event)
        del self._items[item_id]
        self._order.remove(item_id)
        await self._send({"type": "conversation.item.deleted", "item_id": item_id})

    async def _on_item_retrieve(self, event: dict[str, Any]) -> None:
        _, record = self._require_item(event)
        await self._send({"type": "conversation.item.retrieved", "item": copy.deepcopy(record.item)})

    # ----- responses -----------------------------------------------------------------------

    async def _on_response_create(self, event: dict[str, Any]) -> None:
        params = validate_response_params(event)
        active = self._response
        if active is not None:
            raise RequestError(
                "conversation_already_has_active_response",
                f"Conversation already has an active response in progress: {active.id}. "
                "Wait until the response is finished before creating a new one.",
            )
        self._start_response(params)

    async def _on_response_cancel(self, event: dict[str, Any]) -> None:
        active = self._response
        wanted = event.get("response_id")
        if active is None or (wanted is not None and wanted != active.id):
            raise RequestError("response_cancel_not_active", "Cancellation failed: no active response found.", None)
        await self._cancel_response("client_cancelled")

    async def _cancel_response(self, reason: str) -> None:
        """Stop the active response and wait until its response.done has been sent."""
        response = self._response
        if response is None:
            return
        if response.cancel_reason is None:
            response.cancel_reason = reason
            response.cancelled.set()
        if response.task is not None:
            await self._join(response.task)

    async def _stop_response_now(self) -> None:
        """Kill the response task without further events (the connection is going away)."""
        response = self._response
        self._response = None
        if response is not None and response.task is not None:
            response.task.cancel()
            await self._join(response.task)

    @staticmethod
    async def _join(task: asyncio.Task[None]) -> None:
        """Wait for a response task; its own cancellation is not ours."""
        current = asyncio.current_task()
        if task is current:
            return
        try:
            await task
        except ConnectionClosed:
            pass
        except asyncio.CancelledError:
            if current is not None and current.cancelling():
                raise

    def _start_response(self, params: dict[str, Any]) -> None:
        self._cancel_idle_timer()
        output = self.session_config["audio"]["output"]
        response = _Response(
            id=new_id("resp"),
            params=params,
            in_conversation=params.get("conversation", "auto") != "none",
            modalities=list(params.get("output_modalities") or self.session_config["output_modalities"]),
            output_format=AudioFormat.from_session(output["format"]),
            voice=output.get("voice"),
            input_tokens=self._context_tokens(str(params.get("instructions", ""))),
            started_at=self._loop.time(),
        )
        self._response = response
        response.task = self._loop.create_task(self._run_response(response))

    def _response_object(self, response: _Response, status: str) -> dict[str, Any]:
        details: dict[str, Any] | None = None
        if status == "cancelled":
            details = {"type": "cancelled", "reason": response.cancel_reason}
        elif status == "incomplete":
            details = {"type": "incomplete", "reason": response.incomplete_reason}
        elif status == "failed":
            details = {
                "type": "failed",
                "error": {"type": "server_error", "code": "internal_error", "message": "The model failed."},
            }
        return {
            "object": "realtime.response",
            "id": response.id,
            "status": status,
            "status_details": details,
            "output": copy.deepcopy(response.output),
            "conversation_id": "conv_" + self.id[5:] if response.in_conversation else None,
            "output_modalities": response.modalities,
            "max_output_tokens": response.params.get(
                "max_output_tokens", self.session_config.get("max_output_tokens", "inf")
            ),
            "audio": {
                "output": {
                    "format": response.output_format.as_session(),
                    "voice": response.voice,
                }
            },
            "usage": None,
            "metadata": response.params.get("metadata"),
        }

    async def _run_response(self, response: _Response) -> None:
        try:
            await self._send({"type": "response.created", "response": self._response_object(response, "in_progress")})
            await self._send_rate_limits(response)
            faults = self._config.faults
            delay = faults.response_delay_s
            if faults.fail_responses > 0:
                faults.fail_responses -= 1
                response.failed = True
            elif faults.cut_responses > 0:
                faults.cut_responses -= 1
                response.incomplete_reason = "content_filter"
            elif delay <= 0 or not await self._pause(response, delay):
                call = self._take_function_call(response.params)
                if call is not None:
                    await self._stream_function_call(response, *call)
                else:
                    await self._stream_message(response, self._reply_text(response.params))
            status = "completed"
            if response.failed:
                status = "failed"
            elif response.cancel_reason is not None:
                status = "cancelled"
            elif response.incomplete_reason is not None:
                status = "incomplete"
            final = self._response_object(response, status)
            final["usage"] = self._usage(response)
            self.responses.append(final)
            if self._response is response:
                self._response = None
            await self._send({"type": "response.done", "response": final})
            if status == "completed":
                self._arm_idle_timer(response)
        except ConnectionClosed:
            pass
        finally:
            if self._response is response:
                self._response = None

    async def _pause(self, response: _Response, seconds: float) -> bool:
        """Sleep unless cancelled first; True if the response was cancelled."""
        if response.cancelled.is_set():
            return True
        if seconds <= 0:
            await asyncio.sleep(0)
            return response.cancelled.is_set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(response.cancelled.wait(), seconds)
        return response.cancelled.is_set()

    async def _send_rate_limits(self, response: _Response) -> None:
        used = sum(response.input_tokens)
        await self._send(
            {
                "type": "rate_limits.updated",
                "rate_limits": [
                    {"name": "requests", "limit": 5000, "remaining": 4999, "reset_seconds": 0.012},
                    {"name": "tokens", "limit": 40000, "remaining": max(0, 40000 - used), "reset_seconds": 0.5},
                ],
            }
        )

    def _take_function_call(self, params: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
        """The pending scripted call, if the session (or response) declares that tool."""
        call = self._pending_call
        if call is None:
            return None
        self._pending_call = None
        tools = params.get("tools", self.session_config.get("tools") or [])
        choice = params.get("tool_choice", self.session_config.get("tool_choice", "auto"))
        names = {t.get("name") for t in tools if t.get("type", "function") == "function"}
        if choice == "none" or call[0] not in names:
            log.warning("emulator_tool_not_declared", tool=call[0], declared=sorted(map(str, names)))
            return None
        return call

    def _reply_text(self, params: dict[str, Any]) -> str:
        instructions = params.get("instructions")
        if isinstance(instructions, str) and instructions.strip():
            quoted = _QUOTED.findall(instructions)
            if quoted:  # every quoted sentence, in order (an announcement, then the greeting)
                return " ".join(q.strip() for q in quoted)
            if _GREETING.search(instructions):
                return self._config.greeting_text
        kind, text = self._last_input
        if kind == "tool":
            return self._config.tool_followup_text
        if kind == "idle":
            return self._config.idle_prompt_text
        if self._config.reply_text is not None:
            return self._config.reply_text(text)
        return f"You said: {text.rstrip('.!? ')}. How else can I help?" if text else "Sure, I can help with that."

    async def _open_output_item(self, response: _Response, item: dict[str, Any], record: _ItemRecord) -> None:
        previous = self._order[-1] if self._order else None
        if response.in_conversation:
            self._add_item(record)
        response.output.append(item)
        base = {"response_id": response.id, "output_index": len(response.output) - 1}
        await self._send({"type": "response.output_item.added", **base, "item": copy.deepcopy(item)})
        if response.in_conversation:
            await self._send(
                {"type": "conversation.item.added", "previous_item_id": previous, "item": copy.deepcopy(item)}
            )

    async def _close_output_item(self, response: _Response, item: dict[str, Any]) -> None:
        index = response.output.index(item)
        await self._send(
            {
                "type": "response.output_item.done",
                "response_id": response.id,
                "output_index": index,
                "item": copy.deepcopy(item),
            }
        )
        if response.in_conversation:
            position = self._order.index(item["id"]) if item["id"] in self._order else -1
            previous = self._order[position - 1] if position > 0 else None
            await self._send(
                {"type": "conversation.item.done", "previous_item_id": previous, "item": copy.deepcopy(item)}
            )

    async def _stream_message(self, response: _Response, text: str) -> None:
        audio_mode = "audio" in response.modalities
        item_id = new_id("item")
        item: dict[str, Any] = {
            "id": item_id,
            "object": "realtime.item",
            "type": "message",
            "status": "in_progress",
            "role": "assistant",
            "content": [],
        }
        record = _ItemRecord(item=item, output_format=response.output_format if audio_mode else None)
        await self._open_output_item(response, item, record)
        ids = {"response_id": response.id, "item_id": item_id, "output_index": 0, "content_index": 0}
        part_type = "audio" if audio_mode else "text"
        empty_part = {"type": "audio", "transcript": ""} if audio_mode else {"type": "text", "text": ""}
        await self._send({"type": "response.content_part.added", **ids, "part": empty_part})
        words = re.findall(r"\S+\s*", text)
        if audio_mode:
            await self._stream_audio(response, record, text, words, ids)
        else:
            for word in words:
                if await self._pause(response, 0):
                    break
                response.text_sent += word
                await self._send({"type": "response.output_text.delta", **ids, "delta": word})
        said = response.text_sent
        complete = response.cancel_reason is None and response.incomplete_reason is None
        if audio_mode:
            await self._send({"type": "response.output_audio.done", **ids})
            await self._send({"type": "response.output_audio_transcript.done", **ids, "transcript": said})
            part = {"type": part_type, "transcript": said}
            item["content"] = [{"type": "output_audio", "transcript": said}]
        else:
            await self._send({"type": "response.output_text.done", **ids, "text": said})
            part = {"type": part_type, "text": said}
            item["content"] = [{"type": "output_text", "text": said}]
        await self._send({"type": "response.content_part.done", **ids, "part": part})
        item["status"] = "completed" if complete else "incomplete"
        await self._close_output_item(response, item)

    async def _stream_audio(
        self, response: _Response, record: _ItemRecord, text: str, words: list[str], ids: dict[str, Any]
    ) -> None:
        fmt = response.output_format
        speed = float(self.session_config["audio"]["output"].get("speed") or 1.0)
        pcm = await self._synth.render(
            text, rate=fmt.rate, synthetic_ms=self._config.audio_ms_per_char * len(text) / speed
        )
        audio = fmt.encode(pcm)
        chunk = max(
            fmt.sample_bytes, int(fmt.bytes_per_ms * self._config.chunk_ms) // fmt.sample_bytes * fmt.sample_bytes
        )
        n_chunks = max(1, math.ceil(len(audio) / chunk))
        # word i is due once the audio sent passes its character position
        due: list[int] = []
        position = 0
        for word in words:
            due.append(min(n_chunks - 1, int(position / max(1, len(text)) * n_chunks)))
            position += len(word)
        next_word = 0
        pace = self._config.chunk_ms / 1000 / max(self._config.pacing_speed, 1e-6)
        began = self._loop.time()
        limit = response.params.get("max_output_tokens", self.session_config.get("max_output_tokens", "inf"))
        max_bytes = len(audio) if limit == "inf" else int(limit / OUTPUT_AUDIO_TOKENS_PER_S * 1000 * fmt.bytes_per_ms)
        for index in range(n_chunks):
            if response.cancelled.is_set():
                break
            if index * chunk >= max_bytes:
                response.incomplete_reason = "max_output_tokens"
                break
            while next_word < len(words) and due[next_word] <= index:
                response.text_sent += words[next_word]
                await self._send({"type": "response.output_audio_transcript.delta", **ids, "delta": words[next_word]})
                next_word += 1
            data = audio[index * chunk : min((index + 1) * chunk, max_bytes // fmt.sample_bytes * fmt.sample_bytes)]
            if not data:
                continue
            if response.first_audio_at is None:
                response.first_audio_at = self._loop.time()
            await self._send(
                {"type": "response.output_audio.delta", **ids, "delta": b64encode(data).decode()}, audio_bytes=len(data)
            )
            response.audio_bytes += len(data)
            record.output_audio_bytes += len(data)
            if self._config.realtime_pacing:
                wait = began + (index + 1) * pace - self._loop.time()
                if await self._pause(response, max(0.0, wait)):
                    break
            elif await self._pause(response, 0):
                break

    async def _stream_function_call(self, response: _Response, name: str, arguments: dict[str, Any]) -> None:
        item_id = new_id("item")
        call_id = new_id("call")
        item: dict[str, Any] = {
            "id": item_id,
            "object": "realtime.item",
            "type": "function_call",
            "status": "in_progress",
            "name": name,
            "call_id": call_id,
            "arguments": "",
        }
        await self._open_output_item(response, item, _ItemRecord(item=item))
        ids = {"response_id": response.id, "item_id": item_id, "output_index": 0, "call_id": call_id}
        encoded = orjson.dumps(arguments).decode()
        step = max(1, math.ceil(len(encoded) / 3))
        for start in range(0, len(encoded), step):
            piece = encoded[start : start + step]
            response.function_arguments += piece
            await self._send({"type": "response.function_call_arguments.delta", **ids, "delta": piece})
            if await self._pause(response, 0):
                break
        # Like the real service, arguments.done arrives even when the response was cancelled:
        # clients must check response.done's status before acting on it.
        await self._send({"type": "response.function_call_arguments.done", **ids, "name": name, "arguments": encoded})
        item["arguments"] = encoded
        item["status"] = "completed" if response.cancel_reason is None else "incomplete"
        await self._close_output_item(response, item)

    # ----- usage ---------------------------------------------------------------------------

    def _context_tokens(self, response_instructions: str) -> tuple[int, int]:
        """(text, audio) input tokens of the conversation a new response reads."""
        text = 30 + _text_tokens(str(self.session_config.get("instructions") or ""))
        text += _text_tokens(response_instructions)
        tools = self.session_config.get("tools") or []
        text += _text_tokens(orjson.dumps(tools).decode()) if tools else 0
        audio = 0
        for item_id in self._order:
            record = self._items[item_id]
            item = record.item
            text += 4
            if item["type"] == "message":
                for part in item.get("content", ()):
                    if part.get("type") in ("input_text", "output_text"):
                        text += _text_tokens(part.get("text", ""))
                audio += round(record.input_audio_ms / 1000 * INPUT_AUDIO_TOKENS_PER_S)
                heard_ms = record.output_audio_ms if record.truncated_ms is None else record.truncated_ms
                audio += round(heard_ms / 1000 * INPUT_AUDIO_TOKENS_PER_S)
            elif item["type"] == "function_call":
                text += _text_tokens(item.get("name", "") + item.get("arguments", ""))
            elif item["type"] == "function_call_output":
                text += _text_tokens(item.get("output", ""))
        return text, audio

    def _usage(self, response: _Response) -> dict[str, Any]:
        text_in, audio_in = response.input_tokens
        prev_text, prev_audio = self._last_context_tokens
        self._last_context_tokens = response.input_tokens
        cacheable = text_in + audio_in >= 1024
        cached_text = min(prev_text, text_in) // 64 * 64 if cacheable else 0
        cached_audio = min(prev_audio, audio_in) // 64 * 64 if cacheable else 0
        audio_out = round(response.audio_ms / 1000 * OUTPUT_AUDIO_TOKENS_PER_S)
        text_out = _text_tokens(response.text_sent) + _text_tokens(response.function_arguments)
        input_tokens = text_in + audio_in
        output_tokens = text_out + audio_out
        return {
            "total_tokens": input_tokens + output_tokens,
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "input_token_details": {
                "text_tokens": text_in,
                "audio_tokens": audio_in,
                "image_tokens": 0,
                "cached_tokens": cached_text + cached_audio,
                "cached_tokens_details": {"text_tokens": cached_text, "audio_tokens": cached_audio, "image_tokens": 0},
            },
            "output_token_details": {"text_tokens": text_out, "audio_tokens": audio_out},
        }

    # ----- idle timeout --------------------------------------------------------------------

    def _cancel_idle_timer(self) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None

    def _arm_idle_timer(self, response: _Response) -> None:
        td = self._turn_detection
        if td is None or td.get("type") != "server_vad" or not td.get("idle_timeout_ms"):
            return
        playback_left = 0.0
        if response.first_audio_at is not None:
            playback_left = max(0.0, response.audio_ms / 1000 - (self._loop.time() - response.first_audio_at))
        delay = td["idle_timeout_ms"] / 1000 + playback_left
        self._cancel_idle_timer()
        self._idle_timer = self._loop.call_later(delay, self._spawn, self._idle_timeout)

    async def _idle_timeout(self) -> None:
        self._idle_timer = None
        if self._response is not None or self._vad.in_speech or self._ending:
            return
        item_id = new_id("item")
        start_ms, end_ms = self._buffer_start_ms, max(self._buffer_start_ms, int(self._input_ms))
        await self._send(
            {
                "type": "input_audio_buffer.timeout_triggered",
                "audio_start_ms": start_ms,
                "audio_end_ms": end_ms,
                "item_id": item_id,
            }
        )
        await self._commit_audio(item_id, start_ms, end_ms, transcript="")
        self._last_input = ("idle", "")
        if self._response is None:
            self._start_response({})
