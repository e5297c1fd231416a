"""The Realtime adapter against the emulator, through the real openai SDK."""

from __future__ import annotations

import orjson

from app.adapters.openai_realtime import RealtimeConnector
from app.core.realtime_events import audio_append
from app.emulator.config import EmulatorConfig
from app.emulator.server import RealtimeEmulator


async def test_events_go_out_as_text_frames_on_the_sdk_websocket() -> None:
    async with RealtimeEmulator(EmulatorConfig(tts="synthetic")) as emulator:
        connector = RealtimeConnector(api_key="test", websocket_base_url=emulator.url, model="gpt-realtime-mini")
        upstream = await connector.connect()
        # The fast path exists with this SDK; if an SDK upgrade removes it, this test says so.
        assert upstream.fast_path
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
