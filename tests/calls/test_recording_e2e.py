"""Recordings of calls through the real server (Realtime emulator, a Twilio stream played by the test): two
channels on the call's timeline, the agent cut where the clear came; consent decided by the caller's state."""

from __future__ import annotations

import asyncio
import audioop
import base64
import signal
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiobotocore.session import get_session

from app.calls.tools import AgentTool, ToolContext, ToolRegistry
from app.emulator.config import EmulatorConfig
from app.emulator.server import RealtimeEmulator
from app.recording.codec import decode
from tests.support import (
    SILENCE,
    TwilioStream,
    agent_turn_played,
    archived,
    make_settings,
    open_call,
    post_webhook,
    serve,
    server_process,
    speech_frames,
    tone_frames,
    twiml_stream,
)

pytestmark = [pytest.mark.asyncio, pytest.mark.e2e]

NEW_YORK = "+12125550123"  # one-party consent
SAN_FRANCISCO = "+14155550123"  # all-party consent


def loud(channel: np.ndarray, rate: int = 8000) -> list[tuple[float, float]]:
    """Stretches (s) where a channel is not silent, in 20 ms windows, gaps under 100 ms joined."""
    windows = channel[: len(channel) // 160 * 160].reshape(-1, 160).astype(float)
    on = np.sqrt((windows**2).mean(axis=1)) > 200
    spans: list[list[float]] = []
    for i, flag in enumerate(on):
        if not flag:
            continue
        t = i * 0.02
        if spans and t - spans[-1][1] <= 0.1:
            spans[-1][1] = t + 0.02
        else:
            spans.append([t, t + 0.02])
    return [(round(a, 2), round(b, 2)) for a, b in spans]


def best_match(channel: np.ndarray, piece: np.ndarray, *, around: int, rate: int = 8000) -> tuple[int, float]:
    """Where ``piece`` sits in ``channel`` within a second of ``around`` (samples), and how alike they are
    there (normalised correlation, 1.0: the same waveform)."""
    x, y = channel.astype(float), piece.astype(float)
    best = (0, -1.0)
    for start in range(max(0, around - rate), min(len(x) - len(y), around + rate) + 1):
        window = x[start : start + len(y)]
        denominator = np.linalg.norm(window) * np.linalg.norm(y)
        score = float(window @ y / denominator) if denominator else 0.0
        if score > best[1]:
            best = (start, score)
    return best


async def test_a_recorded_call_has_the_caller_and_the_agent_cut_where_the_clear_came(tmp_path: Path) -> None:
    config = EmulatorConfig(tts="synthetic", greeting_text="Hello! Thanks for calling Acme Dental. " * 3)
    async with RealtimeEmulator(config) as emulator:
        settings = make_settings(tmp_path, realtime_url=emulator.url, recording="on", recording_segment_s=0.5,
                                 recording_holdback_s=0.2)  # fmt: skip
        async with serve(settings) as base:
            sid, token = await open_call(base, 1, direction_params={"From": NEW_YORK})
            async with TwilioStream.open(base, call_sid=sid, token=token) as tw:
                loop = asyncio.get_running_loop()
                first = await tw.wait_for(lambda m: m["event"] == "media")
                first_at = loop.time()
                # The caller's frames on a 20 ms clock, as a phone sends them: a second of silence while the
                # greeting plays, then 0.8 s of speech over it, then silence.
                frames = [SILENCE] * 50 + speech_frames(0.8) + [SILENCE] * 60
                spoke_at = first_at + 50 * 0.02

                async def clear_seen() -> tuple[float, int]:
                    at = await tw.wait_for(lambda m: m["event"] == "clear", start=first, timeout=20)
                    return loop.time(), at

                async def answer_begun() -> None:
                    _, clear_at = await watcher
                    await tw.wait_for(lambda m: m["event"] == "media", start=clear_at, timeout=30)

                watcher = asyncio.create_task(clear_seen())
                answering = asyncio.create_task(answer_begun())
                # The caller stays on the line, silent, until the agent's answer has begun, then 10 frames more:
                # a loaded machine may take longer than the scripted silence to answer.
                n, after = 0, 10
                while n < len(frames) or after > 0:
                    await asyncio.sleep(max(0.0, first_at + n * 0.02 - loop.time()))  # the caller's clock
                    await tw.media(frames[n] if n < len(frames) else SILENCE)
                    n += 1
                    if n >= len(frames) and answering.done():
                        answering.result()
                        after -= 1
                cleared_at, _ = await watcher
                await tw.stop()
                await tw.wait_closed()
            record = await archived(base, settings, sid)
    (decision,) = [e["detail"] for e in record["events"] if e["kind"] == "recording_decision"]
    assert decision["record"] and not decision["announce"] and decision["all_party_states"] == []
    (info,) = [e["detail"] for e in record["events"] if e["kind"] == "recording"]
    path = tmp_path / "recordings" / info["key"]
    samples, rate = decode(path.read_bytes())
    assert (
        rate == 8000
        and info["key"] == f"{sid}/recording.ogg"
        and not (tmp_path / "recordings" / sid / "parts").exists()
    )
    caller, agent = loud(samples[:, 0]), loud(samples[:, 1])
    # The caller channel holds the caller's speech: 0.8 s of it, a second after the greeting began.
    (speech,) = caller
    assert abs((speech[1] - speech[0]) - 0.8) <= 0.1
    # The agent channel: the greeting from its first audio until the clear and nothing of it after, then
    # the answer once the caller had finished.
    greeting, answer = agent
    assert abs((greeting[1] - greeting[0]) - (cleared_at - first_at)) <= 0.15
    assert abs((speech[0] - greeting[0]) - (spoke_at - first_at)) <= 0.1  # on one timeline
    assert answer[0] >= speech[1]
    assert len(samples) / rate < 60 and info["bytes"] <= 250 * 1024 * max(1.0, len(samples) / rate / 60)
    # The very audio: the agent channel is what the Twilio side received (until the clear), the caller
    # channel what it sent, each where the timeline puts it (through Opus: correlated, not identical).
    received = b"".join(base64.b64decode(m["media"]["payload"]) for m in tw.received if m["event"] == "media")
    heard = np.frombuffer(audioop.ulaw2lin(received, 2), dtype=np.int16)[: int((cleared_at - first_at) * rate)]
    at, similarity = best_match(samples[:, 1], heard[: rate // 2], around=int(greeting[0] * rate))
    assert similarity > 0.8 and abs(at / rate - greeting[0]) <= 0.03, (at / rate, greeting, similarity)
    said = np.frombuffer(audioop.ulaw2lin(b"".join(frames[50:90]), 2), dtype=np.int16)
    at, similarity = best_match(samples[:, 0], said, around=int(speech[0] * rate))
    assert similarity > 0.8 and abs(at / rate - speech[0]) <= 0.03, (at / rate, speech, similarity)


@pytest.mark.parametrize(("mode", "recorded", "announced"), [("on", False, False), ("announce", True, True)])
async def test_a_caller_in_an_all_party_consent_state_is_recorded_only_after_the_announcement(
    tmp_path: Path, mode: str, recorded: bool, announced: bool
) -> None:
    async with RealtimeEmulator(EmulatorConfig(tts="synthetic")) as emulator:
        settings = make_settings(tmp_path, realtime_url=emulator.url, recording=mode, recording_segment_s=0.5)
        async with serve(settings) as base:
            sid, token = await open_call(base, 2, direction_params={"From": SAN_FRANCISCO})
            async with TwilioStream.open(base, call_sid=sid, token=token, auto_ack=True) as tw:
                session = await emulator.wait_for_session(0)
                greeting = await session.wait_for(lambda e: e["type"] == "response.create")
                await tw.wait_for(lambda m: m["event"] == "media")
                await tw.stop()
                await tw.wait_closed()
            record = await archived(base, settings, sid)
    (decision,) = [e["detail"] for e in record["events"] if e["kind"] == "recording_decision"]
    assert (decision["record"], decision["announce"], decision["all_party_states"]) == (recorded, announced, ["CA"])
    said = greeting["response"]["instructions"]
    assert ("This call is recorded." in said) is announced
    assert said.index("This call is recorded.") < said.index("Thank you for calling") if announced else True
    recordings = [e["detail"] for e in record["events"] if e["kind"] == "recording"]
    assert (len(recordings) == 1 and recordings[0]["key"] is not None) is recorded
    assert (tmp_path / "recordings" / sid / "recording.ogg").exists() is recorded


async def paced(tw: TwilioStream, frames: list[bytes]) -> None:
    """Frames on the caller's 20 ms clock, as a phone sends them."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    for n, frame in enumerate(frames):
        await asyncio.sleep(max(0.0, start + n * 0.02 - loop.time()))  # the caller's clock
        await tw.media(frame)


async def recording_of(tmp_path: Path, record: dict[str, Any]) -> np.ndarray:
    (info,) = [e["detail"] for e in record["events"] if e["kind"] == "recording"]
    samples, _ = decode((tmp_path / "recordings" / info["key"]).read_bytes())
    return samples


async def test_a_card_number_said_by_the_caller_is_silent_in_the_recording(tmp_path: Path) -> None:
    config = EmulatorConfig(tts="synthetic", transcripts=["my card is 4111 1111 1111 1111"],
                            reply_text=lambda heard: "Thank you.")  # fmt: skip
    async with RealtimeEmulator(config) as emulator:
        settings = make_settings(tmp_path, realtime_url=emulator.url, recording="on", recording_segment_s=0.2,
                                 recording_holdback_s=0, redact_transcripts="card")  # fmt: skip
        async with serve(settings) as base:
            sid, token = await open_call(base, 3, direction_params={"From": NEW_YORK})
            async with TwilioStream.open(base, call_sid=sid, token=token, auto_ack=True) as tw:
                session = await emulator.wait_for_session(0)
                await agent_turn_played(tw, session, 0)
                await paced(tw, speech_frames(1.2) + [SILENCE] * 60)
                await session.wait_sent(lambda e: e["type"].endswith("input_audio_transcription.completed"))
                await paced(tw, [SILENCE] * 25)
                await tw.stop()
                await tw.wait_closed()
            record = await archived(base, settings, sid)
    (silenced,) = [e["detail"] for e in record["events"] if e["kind"] == "recording_silenced"]
    assert silenced["in_time"] and silenced["speaker"] == "caller"
    assert "4111" not in str(record["transcript"])
    samples = await recording_of(tmp_path, record)
    assert loud(samples[:, 0]) == []  # the caller said nothing but the card: nothing of them is in the file
    assert loud(samples[:, 1])  # the agent is


async def test_a_sensitive_tool_pauses_the_recording_for_its_span_and_the_gap_is_kept(tmp_path: Path) -> None:
    release = asyncio.Event()

    async def collect_card(arguments: dict[str, Any], context: ToolContext) -> dict[str, Any]:
        await release.wait()  # the caller reads their card out meanwhile
        return {"status": "card stored"}

    tools = ToolRegistry(default_timeout_s=30)
    tools.add(AgentTool("collect_card", "Collect the caller's card by voice.", {"type": "object", "properties": {}},
                        collect_card, sensitive=True))  # fmt: skip
    config = EmulatorConfig(tts="synthetic", transcripts=["I want to pay by card"],
                            function_calls={"pay by card": ("collect_card", {})})  # fmt: skip
    async with RealtimeEmulator(config) as emulator:
        settings = make_settings(tmp_path, realtime_url=emulator.url, recording="on", recording_segment_s=0.2,
                                 recording_holdback_s=0)  # fmt: skip
        async with serve(settings, tools=tools) as base:
            sid, token = await open_call(base, 4, direction_params={"From": NEW_YORK})
            async with TwilioStream.open(base, call_sid=sid, token=token, auto_ack=True) as tw:
                session = await emulator.wait_for_session(0)
                await agent_turn_played(tw, session, 0)
                await paced(tw, speech_frames(0.8) + [SILENCE] * 40)
                await session.wait_sent(lambda e: e["type"] == "response.function_call_arguments.done")
                await paced(tw, [SILENCE] * 10 + speech_frames(1.0) + [SILENCE] * 10)  # the card, read out
                release.set()
                await session.wait_for(lambda e: e["type"] == "conversation.item.create"
                                       and e["item"].get("type") == "function_call_output")  # fmt: skip
                await paced(tw, [SILENCE] * 25)
                await tw.stop()
                await tw.wait_closed()
            record = await archived(base, settings, sid)
    kinds = [e["kind"] for e in record["events"]]
    assert kinds.index("recording_paused") < kinds.index("recording_resumed")
    (info,) = [e["detail"] for e in record["events"] if e["kind"] == "recording"]
    ((gap_from, gap_to, reason),) = info["gaps"]
    assert reason == "tool collect_card" and gap_to - gap_from >= 1_200
    samples = await recording_of(tmp_path, record)
    caller = loud(samples[:, 0])
    assert len(caller) == 1  # "I want to pay by card": the card read out during the tool is not there
    assert caller[0][1] <= gap_from / 1000 + 0.05
    gap = samples[int(gap_from * 8) + 160 : int(gap_to * 8)]  # after the codec's ring-out at its edge
    assert loud(gap[:, 0]) == [] and loud(gap[:, 1]) == []  # both channels silent for the span
    assert np.sqrt(np.mean(gap.astype(float) ** 2)) < 20  # against speech at ~8,000


async def test_a_recording_on_s3_compatible_storage_is_one_object_once_the_call_ends(
    tmp_path: Path, s3_url: str
) -> None:
    bucket = f"calls-{uuid.uuid4().hex[:10]}"
    options = {"endpoint_url": s3_url, "region_name": "us-east-1", "aws_access_key_id": "test",
               "aws_secret_access_key": "test"}  # fmt: skip
    async with get_session().create_client("s3", **options) as s3:
        await s3.create_bucket(Bucket=bucket)
        async with RealtimeEmulator(EmulatorConfig(tts="synthetic")) as emulator:
            settings = make_settings(
                tmp_path, realtime_url=emulator.url, recording="on", recording_segment_s=0.2,
                recording_store="s3", recording_s3_bucket=bucket, recording_s3_endpoint_url=s3_url,
                recording_s3_access_key="test", recording_s3_secret_key="test",
            )  # fmt: skip
            async with serve(settings) as base:
                sid, token = await open_call(base, 5, direction_params={"From": NEW_YORK})
                async with TwilioStream.open(base, call_sid=sid, token=token, auto_ack=True) as tw:
                    session = await emulator.wait_for_session(0)
                    await agent_turn_played(tw, session, 0)
                    await paced(tw, speech_frames(0.6) + [SILENCE] * 30)
                    await tw.stop()
                    await tw.wait_closed()
                record = await archived(base, settings, sid)
        listed = await s3.list_objects_v2(Bucket=bucket, Prefix=f"{sid}/")
        keys = [item["Key"] for item in listed.get("Contents", [])]
        stored = await s3.get_object(Bucket=bucket, Key=f"{sid}/recording.ogg")
        async with stored["Body"] as body:
            data = await body.read()
    assert keys == [f"{sid}/recording.ogg"]  # the parts were joined, then removed
    assert stored["ContentType"].startswith("audio/ogg")
    samples, rate = decode(data)
    (info,) = [e["detail"] for e in record["events"] if e["kind"] == "recording"]
    assert rate == 8000 and info["bytes"] == len(data) and loud(samples[:, 0]) and loud(samples[:, 1])


@pytest.mark.redis
@pytest.mark.postgres
async def test_a_node_killed_mid_call_loses_under_a_second_and_the_resumed_call_is_one_recording_on_s3(
    tmp_path: Path, s3_url: str, redis_url: str, postgres_url: str
) -> None:
    """Two server processes, the first SIGKILLed while the caller talks; the second resumes the call. The
    recording (default part and hold-back settings) is one object with both nodes' audio on the call's
    timeline; what the dead node had not stored yet, and the handover, are one "not recorded" gap, which
    starts less than a second before the kill."""
    bucket = f"calls-{uuid.uuid4().hex[:10]}"
    options = {"endpoint_url": s3_url, "region_name": "us-east-1", "aws_access_key_id": "test",
               "aws_secret_access_key": "test"}  # fmt: skip
    quiet = tone_frames(300, 2.0, amplitude=0.015)  # heard in the file, under the emulator's VAD: no turn
    async with get_session().create_client("s3", **options) as s3:
        await s3.create_bucket(Bucket=bucket)
        async with RealtimeEmulator(EmulatorConfig(tts="synthetic")) as emulator:
            settings = make_settings(tmp_path, realtime_url=emulator.url, redis_url=redis_url,
                                     database_url=postgres_url)  # fmt: skip
            env = {"RECORDING": "on", "RECORDING_STORE": "s3", "RECORDING_S3_BUCKET": bucket,
                   "RECORDING_S3_ENDPOINT_URL": s3_url, "RECORDING_S3_ACCESS_KEY": "test",
                   "RECORDING_S3_SECRET_KEY": "test"}  # fmt: skip
            n = uuid.uuid4().int % (1 << 96)
            with server_process(settings, env) as (base_a, node_a):
                sid, token = await open_call(base_a, n, direction_params={"From": NEW_YORK})
                async with TwilioStream.open(base_a, call_sid=sid, token=token, auto_ack=True) as tw:
                    first = await emulator.wait_for_session(0)
                    await agent_turn_played(tw, first, 0)  # the greeting
                    await paced(tw, quiet)
                    killed_at = time.time()
                    node_a.send_signal(signal.SIGKILL)
                    node_a.wait(timeout=10)
                    await tw.wait_closed()
            with server_process(settings, env) as (base_b, _node_b):
                resume = await post_webhook(base_b, "/twilio/resume", {"CallSid": sid})
                _, params = twiml_stream(resume.text)
                async with TwilioStream.open(base_b, call_sid=sid, token=params["token"], auto_ack=True) as tw2:
                    await emulator.wait_for_session(1)
                    resumed_at = time.time()
                    await paced(tw2, quiet[:50])
                    await tw2.stop()
                    await tw2.wait_closed()
                record = await archived(base_b, settings, sid)
        listed = await s3.list_objects_v2(Bucket=bucket, Prefix=f"{sid}/")
        keys = [item["Key"] for item in listed.get("Contents", [])]
        stored = await s3.get_object(Bucket=bucket, Key=f"{sid}/recording.ogg")
        async with stored["Body"] as body:
            samples, rate = decode(await body.read())
    assert keys == [f"{sid}/recording.ogg"]  # one recording: both nodes' parts joined, then removed
    started = datetime.fromisoformat(record["started_at"]).timestamp()
    kill_ms, resume_ms = (killed_at - started) * 1000, (resumed_at - started) * 1000
    (info,) = [e["detail"] for e in record["events"] if e["kind"] == "recording"]
    ((gap_from, gap_to, reason),) = [gap for gap in info["gaps"] if gap[2] == "not recorded"]
    assert reason == "not recorded" and kill_ms - 1000 < gap_from < kill_ms and kill_ms < gap_to < resume_ms
    caller = loud(samples[:, 0], rate)
    # node A's stretch of the caller, up to the gap; node B's, after it
    assert any(a * 1000 < kill_ms - 2000 + 100 and abs(b * 1000 - gap_from) < 60 for a, b in caller), (caller, info)
    assert any(abs(a * 1000 - gap_to) < 300 for a, _ in caller), (caller, info)
    assert loud(samples[:, 1], rate)[0][0] * 1000 < kill_ms - 2000  # the greeting, from node A
