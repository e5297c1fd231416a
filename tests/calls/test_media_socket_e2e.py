"""Twilio's media streams on picows (MEDIA_SOCKET=picows, the default) and on the ASGI route (asgi): the same
call either way, through the real server's one port; every other WebSocket stays on uvicorn's own."""

from __future__ import annotations

import asyncio
import base64
import socket
from pathlib import Path

import orjson
import pytest
import websockets

from app.calls.media_socket import MediaSocket
from app.emulator.server import RealtimeEmulator
from app.main import create_app
from app.runtime import Runtime
from tests.support import (
    ACCOUNT_SID,
    PUBLIC_BASE,
    TwilioStream,
    make_settings,
    open_call,
    serve_asgi,
    sign,
    tone_frames,
    until,
    upstream_closed,
)

pytestmark = [pytest.mark.asyncio, pytest.mark.e2e]

MEDIA_URL = PUBLIC_BASE.replace("https://", "wss://") + "/twilio/media"


@pytest.mark.parametrize("media_socket", ["picows", "asgi"])
async def test_a_call_is_the_same_on_either_socket(
    tmp_path: Path, emulator: RealtimeEmulator, media_socket: str
) -> None:
    settings = make_settings(tmp_path, realtime_url=emulator.url, audio_format="pcmu", media_socket=media_socket)
    frames = tone_frames(440, 1.0)
    app = create_app(settings)
    async with serve_asgi(app) as base:
        sid, token = await open_call(base, 1)
        rt: Runtime = app.state.runtime  # started: the webhook was answered
        async with TwilioStream.open(base, call_sid=sid, token=token) as tw:
            session = await emulator.wait_for_session(0)
            await tw.wait_for(lambda m: m["event"] == "media")  # the greeting reached the caller
            sockets = [type(s.ws) for s in rt.sessions.values()]  # type: ignore[attr-defined]
            # A burst: every frame at once, as after a stall on the carrier's side.
            await asyncio.gather(*(tw.media(frame) for frame in frames))
            await tw.stop()
            await tw.wait_closed()
            await upstream_closed(session)
    assert (sockets == [MediaSocket]) is (media_socket == "picows")
    assert bytes(session.audio_in) == b"".join(frames)  # every frame, in order, untouched
    assert tw.close_code == 1000


async def test_a_stream_is_refused_before_a_frame_is_read_and_other_websockets_still_reach_asgi(
    tmp_path: Path, emulator: RealtimeEmulator
) -> None:
    settings = make_settings(tmp_path, realtime_url=emulator.url)
    app = create_app(settings)
    async with serve_asgi(app) as base:
        ws_base = base.replace("http://", "ws://")
        with pytest.raises(websockets.InvalidStatus) as refused:
            async with websockets.connect(ws_base + "/twilio/media", additional_headers={"X-Twilio-Signature": "x"}):
                pass
        # A query string does not take a stream around the check: the path is what is routed.
        with pytest.raises(websockets.InvalidStatus) as refused_query:
            async with websockets.connect(ws_base + "/twilio/media?x=1"):
                pass
        # Another WebSocket path is uvicorn's and the app's as before: no such route, refused by the app.
        with pytest.raises(websockets.InvalidStatus) as other:
            async with websockets.connect(ws_base + "/twilio/not-media"):
                pass
    assert refused.value.response.status_code == 403
    assert refused.value.response.body == b"invalid Twilio signature"
    assert refused_query.value.response.status_code == 403
    assert other.value.response.status_code == 403  # Starlette's answer to a WebSocket with no route
    assert emulator.sessions == []


async def test_a_message_in_fragments_is_read_whole_and_one_past_the_limit_closes_1009(
    tmp_path: Path, emulator: RealtimeEmulator
) -> None:
    settings = make_settings(tmp_path, realtime_url=emulator.url, audio_format="pcmu")
    app = create_app(settings)
    async with serve_asgi(app) as base:
        sid, token = await open_call(base, 2)
        url = base.replace("http://", "ws://") + "/twilio/media"
        async with websockets.connect(url, additional_headers={"X-Twilio-Signature": sign(MEDIA_URL)}) as ws:
            start = orjson.dumps(
                {
                    "event": "start",
                    "sequenceNumber": "1",
                    "streamSid": "MZ" + sid[2:],
                    "start": {
                        "streamSid": "MZ" + sid[2:],
                        "accountSid": ACCOUNT_SID,
                        "callSid": sid,
                        "tracks": ["inbound"],
                        "customParameters": {"token": token, "direction": "inbound"},
                        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                    },
                }
            ).decode()
            await ws.send([start[:40], start[40:100], start[100:]])  # one text message in three frames
            session = await emulator.wait_for_session(0)
            first = orjson.loads(await ws.recv())
            # 1 MiB in 16 fragments of 64 KiB: past the call's message limit (64 KiB) however it is cut
            await ws.send(["x" * (64 * 1024)] * 16)
            with pytest.raises(websockets.ConnectionClosed):
                while True:
                    await ws.recv()
            code, reason = ws.close_code, ws.close_reason
        await upstream_closed(session)
    assert first["event"] == "media" and first["streamSid"] == "MZ" + sid[2:]  # the call started: the greeting
    assert (code, reason) == (1009, f"frame larger than {settings.max_ws_message_bytes} bytes")


async def test_a_caller_that_reads_slowly_gets_the_whole_reply_once_it_reads_again(
    tmp_path: Path, emulator: RealtimeEmulator
) -> None:
    # Real backpressure on the media stream: small kernel buffers both ends, a 1-byte write buffer mark on the node,
    # and a caller that stops reading. The node's transport pauses writing mid-reply (often in the middle of
    # what one agent delta makes: a media message and its mark); once the caller reads again, every byte of
    # the greeting arrives. (A pause taken for a closed stream stopped the rest of the reply.)
    emulator.config.pacing_speed = 10.0  # deltas 10 ms apart: each is handled as it comes
    settings = make_settings(tmp_path, realtime_url=emulator.url, audio_format="pcmu")
    app = create_app(settings)
    async with serve_asgi(app) as base:
        sid, token = await open_call(base, 3)
        rt: Runtime = app.state.runtime
        raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
        raw.setblocking(False)
        await asyncio.get_running_loop().sock_connect(
            raw, (base.split("//")[1].split(":")[0], int(base.rsplit(":", 1)[1]))
        )
        url = base.replace("http://", "ws://") + "/twilio/media"
        headers = {"X-Twilio-Signature": sign(MEDIA_URL)}
        async with websockets.connect(url, sock=raw, additional_headers=headers, max_queue=1) as ws:
            stream = TwilioStream(ws, sid, "MZ" + sid[2:])
            stream._reader.cancel()  # this caller reads when the test says so
            await stream.start(token)
            server_socket = await until(lambda: _media_socket(rt), "the node's media socket")
            transport = server_socket._socket
            transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 2048)
            transport.set_write_buffer_limits(high=1)  # paused by any byte the kernel did not take
            session = await emulator.wait_for_session(0)
            await until(lambda: _paused(server_socket), "the node's transport to pause writing")
            received = b""
            deadline = asyncio.get_running_loop().time() + 30
            while True:  # read again: the rest of the greeting (its end is known once the emulator sent it all)
                sent = sum(e.get("delta_bytes", 0) for e in session.sent if e["type"] == "response.output_audio.delta")
                if any(e["type"] == "response.done" for e in session.sent) and len(received) >= sent:
                    break
                assert asyncio.get_running_loop().time() < deadline, f"{len(received)} of {sent} bytes"
                try:
                    message = orjson.loads(await asyncio.wait_for(ws.recv(), 0.5))
                except TimeoutError:
                    continue  # nothing more yet: look at what the emulator has sent since
                if message["event"] == "media":
                    received += base64.b64decode(message["media"]["payload"])
            await stream.stop()
    assert len(received) == sent > 20_000  # seconds of audio, every byte of it


async def _media_socket(rt: Runtime) -> MediaSocket | None:
    sockets = [s.ws for s in rt.sessions.values()]  # type: ignore[attr-defined]
    return sockets[0] if sockets and isinstance(sockets[0], MediaSocket) else None


async def _paused(sock: MediaSocket) -> bool:
    return sock._paused
