"""Calls through the real server (uvicorn, real sockets) and the Realtime emulator."""

from __future__ import annotations

import audioop
from pathlib import Path

import numpy as np
import pytest
import soxr

from app.core.audio import CallerAudioPath
from app.core.resample import upsample_once
from app.emulator.server import RealtimeEmulator
from tests.support import (
    SILENCE,
    TwilioStream,
    make_settings,
    open_call,
    serve,
    speech_frames,
    tone_frames,
    upstream_closed,
)

pytestmark = [pytest.mark.asyncio, pytest.mark.e2e]


@pytest.mark.parametrize("resampler", ["fir", "soxr"])
async def test_caller_audio_arrives_as_24k_pcm_three_samples_per_mulaw_sample(
    tmp_path: Path, emulator: RealtimeEmulator, resampler: str
) -> None:
    settings = make_settings(tmp_path, realtime_url=emulator.url, resampler=resampler)
    frames = tone_frames(1000, 2.0)
    async with serve(settings) as base:
        sid, token = await open_call(base, 1)
        async with TwilioStream.open(base, call_sid=sid, token=token) as tw:
            session = await emulator.wait_for_session(0)
            await tw.wait_for(lambda m: m["event"] == "media")  # the greeting: the session is configured
            for frame in frames:
                await tw.media(frame)
            await tw.stop()
            await tw.wait_closed()
            await upstream_closed(session)
    upstream = np.frombuffer(bytes(session.audio_in), dtype=np.int16).astype(np.float64)
    reference_path = CallerAudioPath("pcm24k", settings.resample_quality, settings.resampler)
    for frame in frames:
        reference_path.convert(frame)
    sent = sum(len(f) for f in frames)
    # no frame lost, none doubled: soxr trims its fixed delay off the start, the FIR trims nothing
    assert len(upstream) == 3 * sent - reference_path.withheld_samples
    if resampler == "fir":
        assert session.appends == len(frames)  # one whole append per frame
    # Nothing the real service would refuse: while soxr fills its delay line, no empty append goes up.
    assert [e for e in session.sent if e["type"] == "error"] == []

    pcm8 = np.frombuffer(audioop.ulaw2lin(b"".join(frames), 2), dtype=np.int16).astype(np.float64)
    if resampler == "fir":
        reference = upsample_once(pcm8)  # one pass of the same filter over the whole signal
        aligned = upstream
    else:
        one_shot = soxr.resample(pcm8, 8000, 24000, quality=settings.resample_quality)
        aligned = upstream[: len(one_shot) - reference_path.withheld_samples]  # soxr's one-shot is delay-compensated
        reference = one_shot[: len(aligned)]
    noise = reference[240:] - aligned[240:]
    snr = 10 * np.log10(np.sum(reference[240:] ** 2) / np.sum(noise**2))
    assert snr >= 60.0


async def test_pcmu_mode_forwards_mulaw_untouched(tmp_path: Path, emulator: RealtimeEmulator) -> None:
    settings = make_settings(tmp_path, realtime_url=emulator.url, audio_format="pcmu")
    frames = tone_frames(440, 0.5)
    async with serve(settings) as base:
        sid, token = await open_call(base, 2)
        async with TwilioStream.open(base, call_sid=sid, token=token) as tw:
            session = await emulator.wait_for_session(0)
            first = await tw.wait_for(lambda m: m["event"] == "media")  # the greeting, as mu-law
            for frame in frames:
                await tw.media(frame)
            await tw.stop()
            await tw.wait_closed()
            await upstream_closed(session)
    assert session.session_config["audio"]["input"]["format"] == {"type": "audio/pcmu"}
    assert bytes(session.audio_in) == b"".join(frames)
    assert session.binary_frames == 0  # JSON events travel as text frames, as the SDK sends them
    assert tw.received[first]["streamSid"] == tw.stream_sid


async def test_barge_in_clears_twilio_and_truncates_at_the_acknowledged_position(
    tmp_path: Path, emulator: RealtimeEmulator
) -> None:
    settings = make_settings(tmp_path, realtime_url=emulator.url)
    async with serve(settings) as base:
        sid, token = await open_call(base, 3)
        async with TwilioStream.open(base, call_sid=sid, token=token) as tw:
            session = await emulator.wait_for_session(0)
            # The greeting streams in; Twilio has played the chunks up to the fifth mark.
            fifth = await tw.wait_nth(lambda m: m["event"] == "mark", 5)
            await tw.wait_nth(lambda m: m["event"] == "mark", 10)
            marks = tw.marks(0, fifth + 1)
            heard_ms = tw.media_bytes(0, fifth + 1) // 8  # mu-law 8 kHz: 8 bytes per ms
            assert 0 < heard_ms < 1000
            for name in marks[:5]:
                await tw.mark(name)
            for frame in speech_frames(0.4):
                await tw.media(frame)
            clear = await tw.wait_for(lambda m: m["event"] == "clear")
            truncate = await session.wait_for(lambda e: e["type"] == "conversation.item.truncate")
            assert truncate["audio_end_ms"] == heard_ms
            # Twilio echoes every pending mark after a clear; none of them was heard.
            for name in tw.marks(0, clear):
                if name not in marks[:5]:
                    await tw.mark(name)
            # End the caller's turn; the agent answers with a new response.
            for _ in range(40):
                await tw.media(SILENCE)
            fresh = await tw.wait_for(lambda m: m["event"] == "media", start=clear + 1)
            third = await tw.wait_nth(lambda m: m["event"] == "mark", 3, start=fresh)
            second_heard_ms = tw.media_bytes(fresh, third + 1) // 8
            for name in tw.marks(fresh, third + 1)[:3]:
                await tw.mark(name)
            for frame in speech_frames(0.4):
                await tw.media(frame)
            await tw.wait_for(lambda m: m["event"] == "clear", start=clear + 1)
            second = await session.wait_for(
                lambda e: e["type"] == "conversation.item.truncate" and e["item_id"] != truncate["item_id"]
            )
            assert second["audio_end_ms"] == second_heard_ms > 0
            await tw.stop()
            await tw.wait_closed()
    errors = [e for e in session.sent if e["type"] == "error"]
    assert errors == []  # no truncate past the audio sent, no double cancel


async def test_forged_webhook_is_refused_with_problem_details(tmp_path: Path, emulator: RealtimeEmulator) -> None:
    from tests.support import post_webhook

    settings = make_settings(tmp_path, realtime_url=emulator.url)
    async with serve(settings) as base:
        params = {"CallSid": "CA" + "9" * 32, "From": "+15005550006", "To": "+15005550001"}
        forged = await post_webhook(base, "/twilio/voice", params, signature="bm90IGEgc2lnbmF0dXJl")
        unsigned = await post_webhook(base, "/twilio/voice", params, signature="")
        tampered = await post_webhook(
            base,
            "/twilio/voice",
            {**params, "From": "+19995550000"},
            signature=__import__("tests.support", fromlist=["sign"]).sign(
                "https://sb.example.test/twilio/voice", params
            ),
        )
    for response in (forged, unsigned, tampered):
        assert response.status_code == 403
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["title"] == "Invalid Twilio signature"
    assert emulator.sessions == []
