"""Bad input gets a precise answer and hurts no other call."""

from __future__ import annotations

import asyncio
import base64
import time
from pathlib import Path

import pytest

from app.core.stream_token import issue_stream_token
from app.emulator.server import RealtimeEmulator
from tests.support import PUBLIC_BASE, TwilioStream, make_settings, open_call, serve, sign, tone_frames, upstream_closed

pytestmark = [pytest.mark.asyncio, pytest.mark.e2e]


async def test_upgrades_and_start_events_that_fail_admission_close_1008_before_any_upstream(
    tmp_path: Path, emulator: RealtimeEmulator
) -> None:
    settings = make_settings(tmp_path, realtime_url=emulator.url)
    secret = settings.stream_secret
    async with serve(settings) as base:
        sid, token = await open_call(base, 10)
        other_sid, other_token = await open_call(base, 11)
        expired = issue_stream_token(secret=secret, call_sid=sid, now_s=time.time() - 600, ttl_s=60)
        wrong_media_url = sign(PUBLIC_BASE.replace("https://", "wss://") + "/twilio/other")
        cases = [
            ({"signature": ""}, None, "invalid Twilio signature"),
            ({"signature": "Zm9yZ2Vk"}, None, "invalid Twilio signature"),
            ({"signature": wrong_media_url}, None, "invalid Twilio signature"),
            ({}, "missing", "stream token missing"),
            ({}, expired, "stream token expired"),
            ({}, other_token, "stream token bound to another call"),
            ({}, token[:-3] + "abc", "stream token signature invalid"),
        ]
        for kwargs, tok, reason in cases:
            send_start = "signature" not in kwargs
            async with TwilioStream.open(
                base, call_sid=sid, token=None if tok == "missing" else tok, send_start=send_start, **kwargs
            ) as tw:
                await tw.wait_closed()
            assert (tw.close_code, tw.close_reason) == (1008, reason)
        assert other_sid != sid
    assert emulator.sessions == []  # no OpenAI session was opened for any of them


async def test_malformed_frames_are_skipped_and_an_oversized_frame_ends_only_that_call(
    tmp_path: Path, emulator: RealtimeEmulator
) -> None:
    settings = make_settings(tmp_path, realtime_url=emulator.url)
    good = tone_frames(700, 0.4)
    steady = tone_frames(500, 1.0)
    async with serve(settings) as base:
        sid_a, token_a = await open_call(base, 20)
        sid_b, token_b = await open_call(base, 21)
        async with (
            TwilioStream.open(base, call_sid=sid_a, token=token_a) as a,
            TwilioStream.open(base, call_sid=sid_b, token=token_b) as b,
        ):
            session_a = await emulator.wait_for_session(0)
            session_b = await emulator.wait_for_session(1)
            if session_a.id != (await emulator.wait_for_session(0)).id:
                raise AssertionError("unstable session order")

            async def misbehave() -> None:
                await a.media(good[0])
                await a.send("{this is not json")
                await a.send('{"event":"dance","streamSid":"MZx"}')
                await a.send('{"event":"media","media":{"payload":"%%%not-base64%%%"}}')
                await a.send("[]")
                for frame in good[1:]:
                    await a.media(frame)
                await a.send(
                    '{"event":"media","media":{"payload":"' + base64.b64encode(b"\xff" * 786432).decode() + '"}}'
                )
                await a.wait_closed()

            async def behave() -> None:
                for frame in steady:
                    await b.media(frame)
                await b.stop()
                await b.wait_closed()

            await asyncio.gather(misbehave(), behave())
            await upstream_closed(session_a, session_b)
    assert (a.close_code, a.close_reason) == (1009, f"frame larger than {settings.max_ws_message_bytes} bytes")
    assert b.close_code == 1000
    # Which emulator session served which call depends on connection order: tell them apart by audio length.
    sessions = sorted([session_a, session_b], key=lambda s: len(s.audio_in))
    from app.core.audio import CallerAudioPath

    def expected(frames: list[bytes]) -> int:
        path = CallerAudioPath("pcm24k", settings.resample_quality)
        return sum(len(path.convert(f)) for f in frames)

    assert len(sessions[0].audio_in) == expected(good)  # every good frame of A arrived, bad ones skipped
    assert len(sessions[1].audio_in) == expected(steady)  # B lost nothing
