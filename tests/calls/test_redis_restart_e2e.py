"""Redis restarts mid-call: audio keeps flowing, live-state writes are retried, nothing is lost."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from redis.asyncio import Redis

from app.emulator.config import EmulatorConfig
from app.emulator.server import RealtimeEmulator
from tests.calls.redis_server import RedisServer
from tests.support import TwilioStream, agent_turn_played, archived, make_settings, metric, open_call, say_turn, serve

pytestmark = [pytest.mark.asyncio, pytest.mark.e2e, pytest.mark.redis]


async def test_a_redis_restart_mid_call_loses_no_transcript_line(tmp_path: Path, redis_server_bin: str) -> None:
    redis_dir = tmp_path / "redis"
    redis_dir.mkdir()
    server = RedisServer(redis_server_bin, redis_dir)
    await server.start()
    config = EmulatorConfig(tts="synthetic", transcripts=["Is Tuesday free?"], reply_text=lambda t: "Tuesday is free.")
    try:
        async with RealtimeEmulator(config) as emulator:
            settings = make_settings(tmp_path, realtime_url=emulator.url, redis_url=server.url)
            async with serve(settings) as base:
                sid, token = await open_call(base, uuid.uuid4().int % (1 << 96))
                async with TwilioStream.open(base, call_sid=sid, token=token, auto_ack=True) as tw:
                    session = await emulator.wait_for_session(0)
                    await agent_turn_played(tw, session, 0)
                    await server.stop()  # Redis goes away mid-call
                    audio_before = len(session.audio_in)
                    await say_turn(tw)  # the caller talks, the agent answers: two lines to write
                    await agent_turn_played(tw, session, 1)
                    assert len(session.audio_in) > audio_before  # audio kept streaming meanwhile
                    await server.start()  # same port, same append-only file
                    await tw.stop()
                    await tw.wait_closed()
                retries = await metric(base, "switchboard_live_state_write_retries_total")
                record = await archived(base, settings, sid)
        redis = Redis.from_url(server.url)
        stored = await redis.hlen(f"sb:call:{sid}:lines")
        await redis.aclose()
    finally:
        await server.stop()
    assert retries > 0  # writes failed while Redis was down and were retried
    assert stored == 3  # ...and landed once it was back: greeting, caller, answer
    lines = [(s["speaker"], s["text"]) for s in record["transcript"]]
    assert lines[1:] == [("caller", "Is Tuesday free?"), ("agent", "Tuesday is free.")]
    assert record["status"] == "completed"
