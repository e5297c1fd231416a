"""The Realtime adapter against the emulator, through the real openai SDK."""

from __future__ import annotations

import asyncio

import orjson
from websockets.asyncio.server import ServerConnection, serve

from app.adapters.openai_realtime import RealtimeConnector
from app.core.realtime_events import audio_append
from app.emulator.config import EmulatorConfig
from app.emulator.server import RealtimeEmulator


async def test_events_go_out_as_text_frames_on_the_sdk_websocket() -> None:
    async with RealtimeEmulator(EmulatorConfig(tts="synthetic")) as emulator:
        connector = RealtimeConnector(api_key="test", websocket_base_url=emulator.url, model="gpt-realtime-mini")
        upstream = await connector.connect()
        # The fast path exists with this SDK; if an SDK upgrade removes it, this test says so.
        assert upstream.fast_path and upstream.direct_path
        created = orjson.loads(await upstream.recv())
        assert created["type"] == "session.created" and created["session"]["model"] == "gpt-realtime-mini"
        await upstream.send(audio_append(b"\x00\x01" * 480))
        await upstream.send(orjson.dumps({"type": "dance"}))
        error = orjson.loads(await upstream.recv())
        session = await emulator.wait_for_session(0)
        await upstream.close()
        await connector.aclose()
    assert error["type"] == "error" and error["error"]["param"] == "type"
    assert bytes(session.audio_in) == b"\x00\x01" * 480
    assert session.binary_frames == 0


async def test_a_direct_send_waits_like_websockets_once_the_peer_stops_reading() -> None:
    # A Realtime peer that reads nothing until told: the socket's buffers fill, the transport pauses
    # writing, and from then on a send waits (backpressure) instead of piling audio up in memory.
    reading, committed = asyncio.Event(), asyncio.Event()
    received: list[str] = []

    async def handler(ws: ServerConnection) -> None:
        await ws.send(orjson.dumps({"type": "session.created", "event_id": "e0", "session": {}}).decode())
        await reading.wait()
        async for message in ws:
            received.append(str(message))
            if orjson.loads(message)["type"] == "input_audio_buffer.commit":
                committed.set()

    async with serve(handler, "127.0.0.1", 0, max_queue=1, max_size=None) as server:
        port = server.sockets[0].getsockname()[1]
        connector = RealtimeConnector(
            api_key="test", websocket_base_url=f"ws://127.0.0.1:{port}/v1", model="gpt-realtime"
        )
        upstream = await connector.connect()
        assert upstream.direct_path
        await upstream.recv()
        message = audio_append(b"\x01\x02" * 4800)
        sent = 0
        while True:
            task = asyncio.create_task(upstream.send(message))
            await asyncio.sleep(0)  # one turn of the loop: a direct send is done by now
            if not task.done():
                break
            sent += 1
        assert sent > 10  # the direct path did the sending until the buffers were full
        reading.set()
        await task  # and the waiting send goes out once the peer reads again
        await upstream.send(orjson.dumps({"type": "input_audio_buffer.commit"}))
        await asyncio.wait_for(committed.wait(), 30)
        await upstream.close()
        await connector.aclose()
    # every message arrived, whole and in order
    assert len(received) == sent + 2
    assert received[:-1] == [message.decode()] * (sent + 1)
    assert orjson.loads(received[-1])["type"] == "input_audio_buffer.commit"
