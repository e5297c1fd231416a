"""Bad input gets a precise answer and hurts no other call."""

from __future__ import annotations

import asyncio
import base64
import time
import uuid
from pathlib import Path

import httpx
import pytest
import websockets
from twilio.request_validator import RequestValidator

from app.core.stream_token import issue_stream_token
from app.emulator.server import RealtimeEmulator
from tests.support import (
    PUBLIC_BASE,
    TwilioStream,
    agent_turn_played,
    archived,
    call_sid,
    make_settings,
    open_call,
    serve,
    sign,
    tone_frames,
    upstream_closed,
)

pytestmark = [pytest.mark.asyncio, pytest.mark.e2e]


async def test_an_unsigned_upgrade_is_refused_in_the_handshake_with_403(
    tmp_path: Path, emulator: RealtimeEmulator
) -> None:
    settings = make_settings(tmp_path, realtime_url=emulator.url)
    wrong_media_url = sign(PUBLIC_BASE.replace("https://", "wss://") + "/twilio/other")
    url_of = PUBLIC_BASE.replace("https://", "wss://") + "/twilio/media"
    async with serve(settings) as base:
        ws_url = base.replace("http://", "ws://") + "/twilio/media"
        statuses = []
        for headers in ({}, {"X-Twilio-Signature": ""}, {"X-Twilio-Signature": "Zm9yZ2Vk"},
                        {"X-Twilio-Signature": wrong_media_url},
                        # a SharedKey this deployment was not given
                        {"X-Twilio-Signature": sign(url_of), "X-Twilio-Webhooks-Signature-Settings":
                         "key=webhooks_sharedkey_unknown,algorithm=HMAC_SHA256"}):  # fmt: skip
            with pytest.raises(websockets.InvalidStatus) as refused:
                async with websockets.connect(ws_url, additional_headers=headers):
                    pass
            statuses.append(refused.value.response.status_code)
        async with httpx.AsyncClient(base_url=base) as client:
            metrics = (await client.get("/metrics")).text
    assert statuses == [403] * 5
    assert 'switchboard_streams_rejected_total{reason="signature"} 5.0' in metrics
    assert emulator.sessions == []


async def test_webhooks_and_streams_signed_with_a_webhook_rules_shared_key_are_accepted(
    tmp_path: Path, emulator: RealtimeEmulator
) -> None:
    key_id, secret = "webhooks_sharedkey_0123", "s3cr3t-shared-key"
    settings = make_settings(tmp_path, realtime_url=emulator.url, twilio_webhook_shared_keys=f"{key_id}:{secret}")
    params = {"CallSid": call_sid(31), "From": "+12125550123", "To": "+12125550100", "Direction": "inbound"}
    async with serve(settings) as base, httpx.AsyncClient(base_url=base) as client:
        answers = {}
        for algorithm in ("HMAC_SHA256", "HMAC_SHA1"):
            header = f"key={key_id},algorithm={algorithm}"
            signature = RequestValidator(secret).compute_signature(PUBLIC_BASE + "/twilio/voice", params, algorithm)
            answers[algorithm] = await client.post("/twilio/voice", data=params, headers={
                "X-Twilio-Signature": signature, "X-Twilio-Webhooks-Signature-Settings": header})  # fmt: skip
        # the Auth Token's signature is no proof for a request that says a SharedKey signed it
        header = f"key={key_id},algorithm=HMAC_SHA256"
        forged = await client.post("/twilio/voice", data=params, headers={
            "X-Twilio-Signature": sign(PUBLIC_BASE + "/twilio/voice", params),
            "X-Twilio-Webhooks-Signature-Settings": header})  # fmt: skip
        url_of = PUBLIC_BASE.replace("https://", "wss://") + "/twilio/media"
        ws_signature = RequestValidator(secret).compute_signature(url_of, {}, "HMAC_SHA256")
        ws_url = base.replace("http://", "ws://") + "/twilio/media"
        async with websockets.connect(ws_url, additional_headers={
                "X-Twilio-Signature": ws_signature, "X-Twilio-Webhooks-Signature-Settings": header}) as ws:  # fmt: skip
            accepted = ws.protocol.state.name
    assert [r.status_code for r in answers.values()] == [200, 200]
    assert all("<Connect>" in r.text for r in answers.values())
    assert forged.status_code == 403
    assert accepted == "OPEN"


async def test_start_events_that_fail_admission_close_1008_before_any_upstream(
    tmp_path: Path, emulator: RealtimeEmulator
) -> None:
    settings = make_settings(tmp_path, realtime_url=emulator.url)
    secret = settings.stream_secret
    async with serve(settings) as base:
        sid, token = await open_call(base, 10)
        other_sid, other_token = await open_call(base, 11)
        expired = issue_stream_token(secret=secret, call_sid=sid, now_s=time.time() - 600, ttl_s=60)
        cases = [
            ({}, "missing", "stream token missing"),
            ({}, expired, "stream token expired"),
            ({}, other_token, "stream token bound to another call"),
            ({}, token[:-3] + "abc", "stream token signature invalid"),
        ]
        for kwargs, tok, reason in cases:
            async with TwilioStream.open(base, call_sid=sid, token=None if tok == "missing" else tok, **kwargs) as tw:
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
            # Both sessions configured (their greetings play): a frame sent before that is held, and a hang-up
            # right after it would leave it unsent, which is not what this test is about.
            await a.wait_for(lambda m: m["event"] == "media")
            await b.wait_for(lambda m: m["event"] == "media")

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
        path = CallerAudioPath("pcm24k", settings.resample_quality, settings.resampler)
        return sum(len(path.convert(f)) for f in frames)

    assert len(sessions[0].audio_in) == expected(good)  # every good frame of A arrived, bad ones skipped
    assert len(sessions[1].audio_in) == expected(steady)  # B lost nothing


async def test_a_start_with_an_unusable_media_format_is_refused_with_a_reason_and_mid_call_it_is_skipped(
    tmp_path: Path, emulator: RealtimeEmulator
) -> None:
    settings = make_settings(tmp_path, realtime_url=emulator.url)
    async with serve(settings) as base:
        sid, token = await open_call(base, 41)
        async with TwilioStream.open(base, call_sid=sid, token=token, send_start=False) as refused:
            await refused.send({"event": "start", "start": {"streamSid": "MZ" + sid[2:], "callSid": sid,
                                "customParameters": {"token": token}, "mediaFormat": {"sampleRate": "abc"}}})  # fmt: skip
            await refused.wait_closed()
        async with TwilioStream.open(base, call_sid=sid, token=token) as tw:
            session = await emulator.wait_for_session(0)
            await tw.wait_for(lambda m: m["event"] == "media")  # the greeting: the session is configured
            await tw.send({"event": "start", "start": {"streamSid": tw.stream_sid, "callSid": sid,
                                                       "mediaFormat": "x"}})  # fmt: skip
            for frame in tone_frames(600, 0.2):
                await tw.media(frame)
            await tw.stop()
            await tw.wait_closed()
            await upstream_closed(session)
    assert (refused.close_code, refused.close_reason) == (
        1008,
        "invalid frame before start: mediaFormat.sampleRate is not a whole number",
    )
    assert tw.close_code == 1000 and len(session.audio_in) > 0  # the call went on past the bad frame


@pytest.mark.parametrize("database", ["sqlite", "postgres"])
async def test_a_forged_direction_parameter_is_ignored_and_the_call_is_metered_as_the_webhook_said(
    tmp_path: Path, emulator: RealtimeEmulator, request: pytest.FixtureRequest, database: str
) -> None:
    """The forged value is longer than the archive's direction column (PostgreSQL enforces it): it never
    reaches the meter or the archive, only the mismatch event that records it."""
    database_url = request.getfixturevalue("postgres_url") if database == "postgres" else None
    settings = make_settings(tmp_path, realtime_url=emulator.url, budget_per_call_usd=5.0, database_url=database_url)
    forged = "outbound-but-really-something-else"
    async with serve(settings) as base:
        sid, token = await open_call(base, uuid.uuid4().int % (1 << 90))  # inbound, as the signed webhook says
        async with TwilioStream.open(
            base, call_sid=sid, token=token, custom={"direction": forged}, auto_ack=True
        ) as tw:
            session = await emulator.wait_for_session(0)
            await agent_turn_played(tw, session, 0)
            await tw.stop()
            await tw.wait_closed()
        record = await archived(base, settings, sid)
    kinds = [e["kind"] for e in record["events"]]
    assert record["direction"] == "inbound"
    mismatch = next(e for e in record["events"] if e["kind"] == "direction_mismatch")
    assert mismatch["detail"] == {"stream_parameter": forged, "used": "inbound"}
    assert "cost" in kinds  # metered, with the per-call cap in force
