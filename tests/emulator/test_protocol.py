"""The emulator speaks the GA Realtime protocol to the real openai SDK connection."""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
import orjson
import pytest
from openai import AsyncOpenAI
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import InvalidStatus

from app.emulator.audio import AudioFormat
from app.emulator.server import RealtimeEmulator
from tests.emulator.helpers import FULL_SERVER_VAD, connect, fast_config, silence, voiced


def _audio_bytes(events: list[dict[str, Any]], response_id: str | None = None) -> int:
    return sum(
        len(base64.b64decode(e["delta"]))
        for e in events
        if e["type"] == "response.output_audio.delta" and (response_id is None or e["response_id"] == response_id)
    )


def _types(events: list[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in events if not e["type"].endswith(".delta")]


@pytest.mark.asyncio
async def test_session_created_then_update_round_trips_the_merged_ga_session(emulator: RealtimeEmulator) -> None:
    async with connect(emulator) as client:
        created = client.events[0]["session"]
        assert created["type"] == "realtime" and created["id"].startswith("sess_")
        assert created["model"] == "gpt-realtime"
        assert created["output_modalities"] == ["audio"]
        assert created["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}

        tools = [{"type": "function", "name": "lookup", "description": "d", "parameters": {"type": "object"}}]
        updated = await client.session_update(
            {
                "instructions": "Be brief.",
                "audio": {
                    "input": {
                        "format": {"type": "audio/pcmu"},
                        "transcription": {"model": "gpt-4o-transcribe"},
                        "turn_detection": {"type": "server_vad", "silence_duration_ms": 700},
                    },
                    "output": {"format": {"type": "audio/pcmu"}, "voice": "cedar"},
                },
                "tools": tools,
            }
        )
        assert updated["type"] == "session.updated"
        session = updated["session"]
        assert session["id"] == created["id"]
        assert session["instructions"] == "Be brief."
        assert session["audio"]["input"]["format"] == {"type": "audio/pcmu"}
        assert session["audio"]["output"] == {"format": {"type": "audio/pcmu"}, "voice": "cedar", "speed": 1.0}
        assert session["tools"] == tools
        # a partial turn_detection falls back to defaults for the omitted fields
        assert session["audio"]["input"]["turn_detection"] == {
            **FULL_SERVER_VAD,
            "silence_duration_ms": 700,
            "idle_timeout_ms": None,
        }

        emulated = await emulator.wait_for_session(0)
        assert emulated.session_config == session
        sent = await emulated.wait_for(lambda e: e["type"] == "session.update")
        assert sent["session"]["instructions"] == "Be brief."


@pytest.mark.asyncio
async def test_invalid_session_update_is_an_invalid_request_error_and_changes_nothing(
    emulator: RealtimeEmulator,
) -> None:
    async with connect(emulator) as client:
        await client.send(
            {
                "type": "session.update",
                "event_id": "evt_client_1",
                "session": {"type": "realtime", "audio": {"input": {"format": {"type": "audio/pcm", "rate": 16000}}}},
            }
        )
        error = (await client.recv_until("error"))[-1]["error"]
        assert error["type"] == "invalid_request_error"
        assert error["code"] == "invalid_value"
        assert error["param"] == "session.audio.input.format.rate"
        assert error["event_id"] == "evt_client_1"

        error = (await client.session_update({"voices": "marin"}))["error"]
        assert (error["code"], error["param"]) == ("unknown_parameter", "session.voices")

        await client.send({"type": "session.update", "session": {"instructions": "x"}})
        error = (await client.recv_until("error"))[-1]["error"]
        assert (error["code"], error["param"]) == ("missing_required_parameter", "session.type")

        session = emulator.sessions[0]
        assert session.session_config["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}


@pytest.mark.asyncio
async def test_upgrade_without_authorization_is_rejected_with_401() -> None:
    async with RealtimeEmulator(fast_config()) as emu:
        with pytest.raises(InvalidStatus) as caught:
            async with ws_connect(f"{emu.url}/realtime?model=gpt-realtime"):
                pass
        assert caught.value.response.status_code == 401
        assert emu.sessions == []


@pytest.mark.asyncio
async def test_upgrade_on_a_wrong_path_is_rejected_with_404() -> None:
    async with RealtimeEmulator(fast_config()) as emu:
        client = AsyncOpenAI(api_key="sk-test", websocket_base_url=f"ws://127.0.0.1:{emu.port}/v2")
        with pytest.raises(InvalidStatus) as caught:
            await client.realtime.connect(model="gpt-realtime").enter()
        assert caught.value.response.status_code == 404
        await client.close()


@pytest.mark.asyncio
async def test_spoken_turn_is_detected_committed_transcribed_and_answered_with_audio() -> None:
    async with RealtimeEmulator(fast_config(transcripts=["I'd like to book a table"])) as emu, connect(emu) as client:
        await client.session_update(
            {"audio": {"input": {"transcription": {"model": "gpt-4o-transcribe"}, "turn_detection": FULL_SERVER_VAD}}}
        )
        # 500 ms quiet, 1 s voiced, 600 ms quiet, in 20 ms frames
        audio = np.concatenate([silence(500), voiced(1000), silence(600)]).tobytes()
        await client.send_audio(audio)

        events = await client.recv_until("response.done")
        started = next(e for e in events if e["type"] == "input_audio_buffer.speech_started")
        stopped = next(e for e in events if e["type"] == "input_audio_buffer.speech_stopped")
        assert started["audio_start_ms"] == 500 - 300  # onset minus prefix_padding_ms
        assert stopped["audio_end_ms"] == 1500 + 500  # speech end plus silence_duration_ms
        assert stopped["item_id"] == started["item_id"]
        assert _types(events)[:7] == [
            "input_audio_buffer.speech_started",
            "input_audio_buffer.speech_stopped",
            "input_audio_buffer.committed",
            "conversation.item.added",
            "conversation.item.done",
            "conversation.item.input_audio_transcription.completed",
            "response.created",
        ]
        transcription = next(e for e in events if e["type"] == "conversation.item.input_audio_transcription.completed")
        assert transcription["transcript"] == "I'd like to book a table"
        # gpt-4o-transcribe bills tokens, as the real service does (whisper-1 would bill the duration)
        usage = transcription["usage"]
        assert (usage["type"], usage["input_token_details"]["audio_tokens"]) == ("tokens", 18)
        assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
        assert _types(events)[6:] == [
            "response.created",
            "rate_limits.updated",
            "response.output_item.added",
            "conversation.item.added",
            "response.content_part.added",
            "response.output_audio.done",
            "response.output_audio_transcript.done",
            "response.content_part.done",
            "response.output_item.done",
            "conversation.item.done",
            "response.done",
        ]

        spoken = next(e for e in events if e["type"] == "response.output_audio_transcript.done")["transcript"]
        assert "I'd like to book a table" in spoken
        deltas = "".join(e["delta"] for e in events if e["type"] == "response.output_audio_transcript.delta")
        assert deltas == spoken
        audio_ms = _audio_bytes(events) / 48  # PCM16 at 24 kHz
        assert audio_ms == pytest.approx(60.0 * len(spoken), abs=1)

        done = events[-1]["response"]
        assert done["status"] == "completed"
        usage = done["usage"]
        assert usage["input_token_details"]["audio_tokens"] == 18  # 1.8 s of committed audio at 10/s
        assert usage["output_token_details"]["audio_tokens"] == round(audio_ms / 1000 * 20)
        assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
        assert done["output"][0]["content"] == [{"type": "output_audio", "transcript": spoken}]

        session = emu.sessions[0]
        assert bytes(session.audio_in) == audio
        assert session.items[0]["content"][0]["transcript"] == "I'd like to book a table"


@pytest.mark.asyncio
async def test_pcmu_session_hears_mulaw_and_answers_in_mulaw() -> None:
    async with RealtimeEmulator(fast_config()) as emu, connect(emu) as client:
        await client.session_update(
            {
                "audio": {
                    "input": {"format": {"type": "audio/pcmu"}, "turn_detection": FULL_SERVER_VAD},
                    "output": {"format": {"type": "audio/pcmu"}},
                }
            }
        )
        pcmu = AudioFormat("audio/pcmu")
        speech = pcmu.encode(np.concatenate([voiced(800, rate=8000), silence(600, rate=8000)]))
        await client.send_audio(speech, chunk=160)
        events = await client.recv_until("response.done")
        stopped = next(e for e in events if e["type"] == "input_audio_buffer.speech_stopped")
        assert stopped["audio_end_ms"] == 800 + 500
        spoken = next(e for e in events if e["type"] == "response.output_audio_transcript.done")["transcript"]
        assert _audio_bytes(events) == pytest.approx(8 * 60.0 * len(spoken), abs=8)  # 8 bytes per ms
        assert bytes(emu.sessions[0].audio_in) == speech


@pytest.mark.asyncio
async def test_greeting_response_speaks_the_quoted_text_from_its_instructions(emulator: RealtimeEmulator) -> None:
    async with connect(emulator) as client:
        await client.send(
            {
                "type": "response.create",
                "response": {
                    "instructions": 'Greet the caller. Say: "Thanks for calling Acme Dental, how can I help?"',
                    "output_modalities": ["audio"],
                },
            }
        )
        events = await client.recv_until("response.done")
        spoken = next(e for e in events if e["type"] == "response.output_audio_transcript.done")["transcript"]
        assert spoken == "Thanks for calling Acme Dental, how can I help?"
        added = next(e for e in events if e["type"] == "response.output_item.added")["item"]
        assert (added["type"], added["role"]) == ("message", "assistant")


@pytest.mark.asyncio
async def test_max_output_tokens_cuts_the_audio_and_ends_the_response_incomplete(emulator: RealtimeEmulator) -> None:
    long_line = 'Say: "' + "We are open every weekday from eight until six, and on Saturdays until noon. " * 3 + '"'
    async with connect(emulator) as client:
        await client.send({"type": "response.create", "response": {"instructions": long_line}})
        whole = await client.recv_until("response.done")
        await client.send({"type": "response.create", "response": {"instructions": long_line, "max_output_tokens": 20}})
        cut = await client.recv_until("response.done")
    assert whole[-1]["response"]["status"] == "completed" and _audio_bytes(whole) > 48_000 * 3
    done = cut[-1]["response"]
    assert done["status"] == "incomplete" and done["max_output_tokens"] == 20
    assert done["status_details"] == {"type": "incomplete", "reason": "max_output_tokens"}
    # 20 audio tokens at 20 a second: one second of pcm16 at 24 kHz, no more
    assert _audio_bytes(cut) == 48_000 and done["usage"]["output_token_details"]["audio_tokens"] == 20
    assert done["output"][0]["status"] == "incomplete"


@pytest.mark.asyncio
async def test_truncate_within_sent_audio_succeeds_and_past_it_fails(emulator: RealtimeEmulator) -> None:
    async with connect(emulator) as client:
        await client.send({"type": "response.create"})
        events = await client.recv_until("response.done")
        item_id = events[-1]["response"]["output"][0]["id"]
        sent_ms = _audio_bytes(events) / 48

        await client.send(
            {
                "type": "conversation.item.truncate",
                "item_id": item_id,
                "content_index": 0,
                "audio_end_ms": int(sent_ms) + 200,
            }
        )
        error = (await client.recv_until("error"))[-1]["error"]
        assert error["code"] == "invalid_value" and "shorter than" in error["message"]

        await client.send(
            {"type": "conversation.item.truncate", "item_id": "item_nope", "content_index": 0, "audio_end_ms": 10}
        )
        assert (await client.recv_until("error"))[-1]["error"]["param"] == "item_id"

        await client.send(
            {"type": "conversation.item.truncate", "item_id": item_id, "content_index": 0, "audio_end_ms": 750}
        )
        truncated = (await client.recv_until(lambda e: e["type"] in ("conversation.item.truncated", "error")))[-1]
        assert truncated == {
            **truncated,
            "type": "conversation.item.truncated",
            "item_id": item_id,
            "audio_end_ms": 750,
        }

        session = emulator.sessions[0]
        assert [(t["item_id"], t["audio_end_ms"]) for t in session.truncations] == [(item_id, 750)]


@pytest.mark.asyncio
async def test_response_create_during_an_active_response_fails_and_cancel_ends_it() -> None:
    config = fast_config(realtime_pacing=True, pacing_speed=1.0, audio_ms_per_char=200.0)
    async with RealtimeEmulator(config) as emu, connect(emu) as client:
        await client.send({"type": "response.create"})
        created = (await client.recv_until("response.output_audio.delta"))[0]
        response_id = created["response"]["id"]

        await client.send({"type": "response.create", "event_id": "evt_2"})
        error = (await client.recv_until("error"))[-1]["error"]
        assert (error["code"], error["type"], error["event_id"]) == (
            "conversation_already_has_active_response",
            "invalid_request_error",
            "evt_2",
        )

        await client.send({"type": "response.cancel"})
        events = await client.recv_until("response.done")
        done = events[-1]["response"]
        assert (done["id"], done["status"]) == (response_id, "cancelled")
        assert done["status_details"] == {"type": "cancelled", "reason": "client_cancelled"}
        assert done["output"][0]["status"] == "incomplete"
        # a cancelled response bills the audio it generated, not the whole reply
        generated_ms = _audio_bytes(client.events, response_id) / 48
        assert done["usage"]["output_token_details"]["audio_tokens"] == round(generated_ms / 1000 * 20)
        assert generated_ms < 200.0 * 20

        await client.send({"type": "response.cancel"})
        assert (await client.recv_until("error"))[-1]["error"]["code"] == "response_cancel_not_active"


@pytest.mark.asyncio
async def test_caller_speech_interrupts_the_response_and_stops_its_audio() -> None:
    config = fast_config(realtime_pacing=True, pacing_speed=1.0, audio_ms_per_char=200.0)
    async with RealtimeEmulator(config) as emu, connect(emu) as client:
        await client.session_update({"audio": {"input": {"turn_detection": FULL_SERVER_VAD}}})
        await client.send({"type": "response.create"})
        response_id = (await client.recv_until("response.output_audio.delta"))[0]["response"]["id"]

        await client.send_audio(voiced(100).tobytes())
        events = await client.recv_until("response.done")
        assert events[-1]["response"]["status_details"] == {"type": "cancelled", "reason": "turn_detected"}
        types = [e["type"] for e in events]
        assert types.index("input_audio_buffer.speech_started") < types.index("response.done")

        session = emu.sessions[0]
        done_index = next(i for i, e in enumerate(session.sent) if e["type"] == "response.done")
        late = [e for e in session.sent[done_index:] if e.get("response_id") == response_id]
        assert late == []


@pytest.mark.asyncio
async def test_trigger_phrase_makes_the_next_response_a_function_call() -> None:
    config = fast_config(function_calls={"book a table": ("book_table", {"party_size": 2, "time": "19:00"})})
    async with RealtimeEmulator(config) as emu, connect(emu) as client:
        tool = {"type": "function", "name": "book_table", "parameters": {"type": "object"}}
        await client.session_update({"tools": [tool], "tool_choice": "auto"})
        await client.send(
            {
                "type": "conversation.item.create",
                "item": {
                    "type": "message",
                    "role": "user",
                    "content": [{"type": "input_text", "text": "Please BOOK A TABLE"}],
                },
            }
        )
        await client.recv_until("conversation.item.done")
        await client.send({"type": "response.create"})
        events = await client.recv_until("response.done")
        added = next(e for e in events if e["type"] == "response.output_item.added")["item"]
        assert added["type"] == "function_call" and added["name"] == "book_table"
        args_done = next(e for e in events if e["type"] == "response.function_call_arguments.done")
        assert args_done["call_id"] == added["call_id"] and args_done["name"] == "book_table"
        assert orjson.loads(args_done["arguments"]) == {"party_size": 2, "time": "19:00"}
        streamed = "".join(e["delta"] for e in events if e["type"] == "response.function_call_arguments.delta")
        assert streamed == args_done["arguments"]
        done = events[-1]["response"]
        assert done["status"] == "completed"
        assert done["output"][0]["type"] == "function_call"
        assert not any(e["type"] == "response.output_audio.delta" for e in events)

        await client.send(
            {
                "type": "conversation.item.create",
                "item": {"type": "function_call_output", "call_id": added["call_id"], "output": '{"ok": true}'},
            }
        )
        await client.recv_until("conversation.item.done")
        await client.send({"type": "response.create"})
        events = await client.recv_until("response.done")
        spoken = next(e for e in events if e["type"] == "response.output_audio_transcript.done")["transcript"]
        assert spoken == emu.config.tool_followup_text


@pytest.mark.asyncio
async def test_trigger_phrase_for_an_undeclared_tool_is_answered_with_speech() -> None:
    config = fast_config(function_calls={"transfer me": ("transfer_call", {})})
    async with RealtimeEmulator(config) as emu, connect(emu) as client:
        await client.send(
            {
                "type": "conversation.item.create",
                "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "transfer me"}]},
            }
        )
        await client.send({"type": "response.create"})
        events = await client.recv_until("response.done")
        assert next(e for e in events if e["type"] == "response.output_item.added")["item"]["type"] == "message"
        assert emu.sessions[0].responses[0]["status"] == "completed"


@pytest.mark.asyncio
async def test_unknown_event_and_malformed_json_are_errors_and_the_session_keeps_working(
    emulator: RealtimeEmulator,
) -> None:
    async with connect(emulator) as client:
        await client.send({"type": "conversation.item.explode", "event_id": "evt_x"})
        error = (await client.recv_until("error"))[-1]["error"]
        assert (error["type"], error["code"], error["event_id"]) == ("invalid_request_error", "invalid_value", "evt_x")

        await client.connection.send_raw(b'{"type": "session.update", ')
        error = (await client.recv_until("error"))[-1]["error"]
        assert error["type"] == "invalid_request_error" and error["code"] == "invalid_json"

        updated = await client.session_update({"instructions": "still here"})
        assert updated["type"] == "session.updated"
        assert updated["session"]["instructions"] == "still here"


@pytest.mark.asyncio
async def test_manual_commit_without_turn_detection_needs_100_ms_of_audio(emulator: RealtimeEmulator) -> None:
    async with connect(emulator) as client:
        await client.session_update({"audio": {"input": {"turn_detection": None}}})
        await client.send_audio(voiced(60).tobytes())
        await client.send({"type": "input_audio_buffer.commit"})
        assert (await client.recv_until("error"))[-1]["error"]["code"] == "input_audio_buffer_commit_empty"

        await client.send_audio(voiced(240).tobytes())
        await client.send({"type": "input_audio_buffer.commit"})
        events = await client.recv_until("conversation.item.done")
        assert events[0]["type"] == "input_audio_buffer.committed"
        assert not any(e["type"].startswith("input_audio_buffer.speech") for e in client.events)


@pytest.mark.asyncio
async def test_wait_helpers_see_received_and_sent_events_and_inject_reaches_the_client(
    emulator: RealtimeEmulator,
) -> None:
    async with connect(emulator) as client:
        session = await emulator.wait_for_session(0)
        created = await session.wait_sent(lambda e: e["type"] == "session.created")
        assert created["session"]["id"] == session.id

        await client.send({"type": "input_audio_buffer.clear", "event_id": "evt_clear"})
        received = await session.wait_for(lambda e: e.get("event_id") == "evt_clear")
        assert received["type"] == "input_audio_buffer.clear"

        await session.inject({"type": "input_audio_buffer.speech_started", "audio_start_ms": 0, "item_id": "item_x"})
        injected = (await client.recv_until("input_audio_buffer.speech_started"))[-1]
        assert injected["item_id"] == "item_x"

        with pytest.raises(TimeoutError):
            await session.wait_for(lambda e: e["type"] == "never.sent", timeout=0.05)


@pytest.mark.asyncio
async def test_text_only_response_streams_output_text(emulator: RealtimeEmulator) -> None:
    async with connect(emulator) as client:
        await client.send(
            {"type": "response.create", "response": {"output_modalities": ["text"], "instructions": 'Say: "Hi there."'}}
        )
        events = await client.recv_until("response.done")
        text = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
        assert text == "Hi there."
        assert next(e for e in events if e["type"] == "response.output_text.done")["text"] == "Hi there."
        assert not any(e["type"].startswith("response.output_audio") for e in events)
        assert events[-1]["response"]["usage"]["output_token_details"]["audio_tokens"] == 0


@pytest.mark.asyncio
async def test_without_create_response_or_interrupt_the_vad_only_reports_turns() -> None:
    config = fast_config(realtime_pacing=True, pacing_speed=1.0, audio_ms_per_char=200.0)
    async with RealtimeEmulator(config) as emu, connect(emu) as client:
        vad = {**FULL_SERVER_VAD, "create_response": False, "interrupt_response": False}
        await client.session_update({"audio": {"input": {"turn_detection": vad}}})
        await client.send({"type": "response.create", "response": {"instructions": 'Say: "One two three four."'}})
        await client.recv_until("response.output_audio.delta")
        await client.send_audio(np.concatenate([voiced(200), silence(520)]).tobytes())
        events = await client.recv_until("conversation.item.done")
        assert events[-1]["item"]["role"] == "user"
        session = emu.sessions[0]
        await client.send({"type": "response.cancel"})
        done = (await client.recv_until("response.done"))[-1]["response"]
        assert done["status_details"]["reason"] == "client_cancelled"  # speech did not cancel it
        assert len(session.responses) == 1  # and no response was created for the turn


@pytest.mark.asyncio
async def test_idle_timeout_prompts_the_caller_after_the_reply_has_played() -> None:
    config = fast_config(reply_text=lambda _: "Ok.", idle_prompt_text="Are you still there?")
    async with RealtimeEmulator(config) as emu, connect(emu) as client:
        vad = {**FULL_SERVER_VAD, "idle_timeout_ms": 5000}  # the least the API takes
        await client.session_update({"audio": {"input": {"turn_detection": vad}}})
        await client.send({"type": "response.create"})
        await client.recv_until("response.done")
        events = await client.recv_until("response.done", timeout=15)
        types = [e["type"] for e in events]
        assert types[0] == "input_audio_buffer.timeout_triggered"
        assert types.index("input_audio_buffer.committed") < types.index("response.created")
        spoken = next(e for e in events if e["type"] == "response.output_audio_transcript.done")["transcript"]
        assert spoken == "Are you still there?"
        assert len(emu.sessions[0].responses) == 2


@pytest.mark.asyncio
@pytest.mark.parametrize(("idle_ms", "code"), [(200, "integer_below_min_value"), (30_001, "integer_above_max_value")])
async def test_an_idle_timeout_outside_the_apis_range_refuses_the_whole_update(idle_ms: int, code: str) -> None:
    async with RealtimeEmulator(fast_config()) as emu, connect(emu) as client:
        await client.send({"type": "session.update", "event_id": "evt_cfg",
                           "session": {"type": "realtime", "audio": {"input": {"turn_detection":
                                       {**FULL_SERVER_VAD, "idle_timeout_ms": idle_ms}}}}})  # fmt: skip
        error = (await client.recv_until("error"))[-1]["error"]
        assert (error["code"], error["event_id"]) == (code, "evt_cfg")
        assert emu.sessions[0].session_config["audio"]["input"]["turn_detection"]["idle_timeout_ms"] is None


@pytest.mark.asyncio
async def test_an_empty_append_and_an_output_for_a_call_the_session_never_made_are_refused() -> None:
    async with RealtimeEmulator(fast_config()) as emu, connect(emu) as client:
        await client.send({"type": "input_audio_buffer.append", "event_id": "evt_empty", "audio": ""})
        empty = (await client.recv_until("error"))[-1]["error"]
        await client.send({"type": "conversation.item.create", "event_id": "evt_out", "item": {
            "type": "function_call_output", "call_id": "call_from_another_session", "output": "{}"}})  # fmt: skip
        unknown = (await client.recv_until("error"))[-1]["error"]
    assert (empty["code"], empty["param"], empty["event_id"]) == ("invalid_value", "audio", "evt_empty")
    assert (unknown["code"], unknown["event_id"]) == ("invalid_tool_call_id", "evt_out")
