"""The Realtime adapters against the emulator and a websockets server: picows (the default) at the SDK
client's address and headers, and the real openai SDK's own connection."""

from __future__ import annotations

import asyncio
import ssl

import orjson
import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from app.adapters.openai_realtime import OpenAIRealtimeUpstream, RealtimeConnector, RealtimeSocketKind
from app.adapters.realtime_socket import RealtimeSocket, tls_context
from app.core.realtime_events import audio_append
from app.emulator.config import EmulatorConfig
from app.emulator.server import RealtimeEmulator

SOCKETS: list[RealtimeSocketKind] = ["picows", "sdk"]


@pytest.mark.parametrize("socket", SOCKETS)
async def test_events_go_out_as_text_frames(socket: RealtimeSocketKind) -> None:
    async with RealtimeEmulator(EmulatorConfig(tts="synthetic")) as emulator:
        connector = RealtimeConnector(
            api_key="test", websocket_base_url=emulator.url, model="gpt-realtime-mini", socket=socket
        )
        upstream = await connector.connect()
        if isinstance(upstream, OpenAIRealtimeUpstream):
            # The fast path exists with this SDK; if an SDK upgrade removes it, this test says so.
            assert upstream.fast_path and upstream.direct_path
        else:
            assert isinstance(upstream, RealtimeSocket)
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


@pytest.mark.parametrize("socket", SOCKETS)
async def test_a_direct_send_waits_like_websockets_once_the_peer_stops_reading(socket: RealtimeSocketKind) -> None:
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
            api_key="test", websocket_base_url=f"ws://127.0.0.1:{port}/v1", model="gpt-realtime", socket=socket
        )
        upstream = await connector.connect()
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


async def test_the_picows_socket_opens_where_the_sdk_would_and_reads_the_session_like_it() -> None:
    # The handshake: the SDK client's URL (model in the query) and headers (the key, its user agent). Then a
    # message in fragments comes out whole, and the peer's close frame surfaces as websockets' ConnectionClosed
    # with its code, which is how a call tells a session's expiry or a server error from a lost network.
    seen: dict[str, object] = {}

    async def handler(ws: ServerConnection) -> None:
        seen["path"] = ws.request.path if ws.request is not None else None
        seen["headers"] = dict(ws.request.headers) if ws.request is not None else {}
        await ws.send(orjson.dumps({"type": "session.created", "event_id": "e0", "session": {}}).decode())
        await ws.send(['{"type": "response.output_audio.delta", ', '"delta": "AAAA"}'])
        seen["first"] = await ws.recv()
        await ws.close(1011, "upstream hiccup")

    async with serve(handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        connector = RealtimeConnector(api_key="sk-test", websocket_base_url=f"ws://127.0.0.1:{port}/v1", model="gpt-x")
        upstream = await connector.connect()
        assert orjson.loads(await upstream.recv())["type"] == "session.created"
        assert orjson.loads(await upstream.recv()) == {"type": "response.output_audio.delta", "delta": "AAAA"}
        await upstream.send(b'{"type": "input_audio_buffer.clear"}')
        with pytest.raises(ConnectionClosed) as lost:
            await upstream.recv()
        await upstream.close()
        await connector.aclose()
    assert seen["path"] == "/v1/realtime?model=gpt-x"
    headers = seen["headers"]
    assert isinstance(headers, dict)
    assert headers["authorization"] == "Bearer sk-test"
    assert headers["user-agent"].startswith("AsyncOpenAI/Python")
    assert seen["first"] == '{"type": "input_audio_buffer.clear"}'
    assert lost.value.rcvd is not None and lost.value.rcvd.code == 1011
    assert lost.value.rcvd.reason == "upstream hiccup"
    with pytest.raises(ConnectionClosed):
        await upstream.send(b"{}")  # a closed session takes nothing more


def test_every_session_shares_one_verifying_tls_context() -> None:
    # Made once (it loads the CA bundle, tens of ms on the event loop), and it checks the service's certificate.
    context = tls_context()
    assert tls_context() is context
    assert context.verify_mode is ssl.CERT_REQUIRED and context.check_hostname
