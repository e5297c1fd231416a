"""The simulator plays Twilio's side of a call against a fake Switchboard server.

Timing assertions compare loop times (client and fake server share one event loop) and are
lower bounds implied by causality: an echo cannot precede the instant its audio finished
playing, a frame cannot leave before its slot. EPS only absorbs float rounding.
"""

from __future__ import annotations

import base64
import re
import time
from itertools import pairwise

import pytest

from app.simulator import CallScript, CallSetupError
from app.simulator.audio import FRAME_BYTES
from tests.simulator.fake_switchboard import (
    AUTH_TOKEN,
    STREAM_TOKEN,
    FakeCall,
    FakeSwitchboard,
    Received,
    Upgrade,
)
from tests.simulator.sounds import is_silence_frame, silence_mulaw, tone_mulaw

EPS = 1e-6
FRAME_S = 0.02
ACCOUNT_SID = "AC" + "0" * 32


def listening_script(**overrides: object) -> CallScript:
    """A caller with nothing to say: listens, then hangs up (or not) as told."""
    settings: dict[str, object] = {"pause_before_first_s": 0.0, "wait_for_greeting": False}
    settings.update(overrides)
    return CallScript(utterances=[], **settings)  # type: ignore[arg-type]


def payload_of(received: Received) -> bytes:
    return base64.b64decode(received.message["media"]["payload"])


def assert_one_sequence(messages: list[Received]) -> None:
    numbered = [m for m in messages if m.event != "connected"]
    assert [m.message["sequenceNumber"] for m in numbered] == [str(n) for n in range(1, len(numbered) + 1)]


class ServerVad:
    """What a server-side VAD sees: speech starts on a non-silent frame, ends after N silent ones."""

    def __init__(self, silence_frames: int) -> None:
        self.silence_frames = silence_frames
        self.in_speech = False
        self.silent_run = 0

    def feed(self, frame: bytes) -> str | None:
        if not is_silence_frame(frame):
            self.silent_run = 0
            if not self.in_speech:
                self.in_speech = True
                return "started"
            return None
        if self.in_speech:
            self.silent_run += 1
            if self.silent_run == self.silence_frames:
                self.in_speech = False
                return "ended"
        return None


@pytest.mark.asyncio
async def test_call_is_signed_and_streamed_exactly_like_twilio() -> None:
    async with FakeSwitchboard() as fake:
        # 0.3 s of listening, counted in 20 ms slots (a loaded loop sends late frames late, not fewer).
        result = await fake.place_call(
            listening_script(hangup_when_done=False, max_duration_s=0.3), from_="+15551230000", to="+15559870000"
        )

    [webhook] = fake.webhooks
    assert webhook.signature_valid
    assert webhook.url == fake.server_url + "/twilio/voice"
    assert webhook.params == {
        "CallSid": result.call_sid,
        "AccountSid": ACCOUNT_SID,
        "From": "+15551230000",
        "To": "+15559870000",
        "Direction": "inbound",
        "CallStatus": "ringing",
        "ApiVersion": "2010-04-01",
    }
    assert re.fullmatch(r"CA[0-9a-f]{32}", result.call_sid)
    assert fake.upgrades == [Upgrade(path="/twilio/media", signature_valid=True)]
    assert result.custom_parameters == {"token": STREAM_TOKEN, "direction": "inbound"}

    messages = fake.call.messages
    sid = result.stream_sid
    assert re.fullmatch(r"MZ[0-9a-f]{32}", sid)
    assert all(m.text_frame for m in messages)
    assert [m.event for m in messages[:2]] == ["connected", "start"]
    assert {m.event for m in messages[2:-1]} == {"media"}
    assert messages[0].message == {"event": "connected", "protocol": "Call", "version": "1.0.0"}
    assert messages[1].message == {
        "event": "start",
        "sequenceNumber": "1",
        "start": {
            "accountSid": ACCOUNT_SID,
            "streamSid": sid,
            "callSid": result.call_sid,
            "tracks": ["inbound"],
            "customParameters": {"token": STREAM_TOKEN, "direction": "inbound"},
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
        },
        "streamSid": sid,
    }
    media = fake.call.of("media")
    for k, frame in enumerate(media):
        assert frame.message == {
            "event": "media",
            "sequenceNumber": str(k + 2),
            "media": {
                "track": "inbound",
                "chunk": str(k + 1),
                "timestamp": str(k * 20),
                "payload": frame.message["media"]["payload"],
            },
            "streamSid": sid,
        }
        assert is_silence_frame(payload_of(frame))
        assert frame.at >= result.started_at + (k + 1) * FRAME_S - EPS
    assert messages[-1].message == {
        "event": "stop",
        "sequenceNumber": str(len(media) + 2),
        "streamSid": sid,
        "stop": {"accountSid": ACCOUNT_SID, "callSid": result.call_sid},
    }
    assert_one_sequence(messages)
    assert len(media) == 15
    assert result.frames_sent == result.frames_expected == len(media)
    assert result.hung_up_by == "caller"
    assert result.close_code == 1000
    assert result.protocol_errors == []


@pytest.mark.asyncio
async def test_frames_keep_an_absolute_clock_and_catch_up_after_a_stalled_loop() -> None:
    async def stalling_agent(call: FakeCall) -> None:
        for _ in range(5):
            await call.next("media")
        time.sleep(0.2)  # a slow iteration that blocks the whole loop, the caller's sender included

    async with FakeSwitchboard(stalling_agent) as fake:
        result = await fake.place_call(listening_script(hangup_when_done=False, max_duration_s=0.8))

    media = fake.call.of("media")
    assert len(media) == result.frames_sent == result.frames_expected == 40
    for k, frame in enumerate(media):
        assert frame.message["media"]["chunk"] == str(k + 1)
        assert frame.message["media"]["timestamp"] == str(k * 20)
        assert frame.at >= result.started_at + (k + 1) * FRAME_S - EPS  # never ahead of its slot
    # The frames that fell due during the stall leave back to back, then the 20 ms grid resumes:
    # a sender that slept 20 ms per frame would never burst, and would drift 200 ms late.
    gaps = [b.at - a.at for a, b in pairwise(media)]
    assert sum(gap < 0.005 for gap in gaps) >= 5
    assert result.max_send_lag_ms >= 150
    assert fake.call.of("stop")[0].at >= result.started_at + 0.8 - EPS


@pytest.mark.asyncio
async def test_marks_are_echoed_only_once_the_audio_before_them_has_played() -> None:
    audio_a, audio_b = tone_mulaw(200), tone_mulaw(100, freq=300)
    sent: dict[str, float] = {}
    echoes: list[Received] = []

    async def agent(call: FakeCall) -> None:
        await call.next("media")
        await call.send_mark("m0")  # nothing queued: played at once
        sent["a"] = await call.send_media(audio_a)
        await call.send_mark("m1")
        await call.send_media(audio_b)
        await call.send_mark("m2")
        for _ in range(3):
            echoes.append(await call.next("mark"))

    script = listening_script(wait_for_greeting=True, gap_after_reply_s=0.1)
    async with FakeSwitchboard(agent) as fake:
        result = await fake.place_call(script)

    assert [e.message["mark"]["name"] for e in echoes] == ["m0", "m1", "m2"]
    assert echoes[0].message == {
        "event": "mark",
        "streamSid": result.stream_sid,
        "sequenceNumber": echoes[0].message["sequenceNumber"],
        "mark": {"name": "m0"},
    }
    # m1 waits for 1600 bytes (200 ms), m2 for 2400 bytes (300 ms) from when playback started,
    # and playback cannot start before the audio was sent.
    assert echoes[1].at >= sent["a"] + len(audio_a) / 8000 - EPS
    assert echoes[2].at >= sent["a"] + (len(audio_a) + len(audio_b)) / 8000 - EPS
    assert echoes[0].at < echoes[1].at < echoes[2].at
    assert result.marks_acked == ["m0", "m1", "m2"]
    assert result.agent_audio == audio_a + audio_b
    assert result.agent_audio_played == audio_a + audio_b
    # The caller listened to the whole greeting before hanging up.
    assert fake.call.of("stop")[0].at >= echoes[2].at
    assert_one_sequence(fake.call.messages)


@pytest.mark.asyncio
async def test_clear_echoes_pending_marks_at_once_and_drops_unplayed_audio() -> None:
    long_audio, short_audio = tone_mulaw(5000), tone_mulaw(100, freq=300)
    sent: dict[str, float] = {}
    echoes: list[Received] = []

    async def agent(call: FakeCall) -> None:
        await call.next("media")
        sent["long"] = await call.send_media(long_audio)
        await call.send_mark("before-clear")
        await call.send_clear()
        echoes.append(await call.next("mark"))
        sent["short"] = await call.send_media(short_audio)
        await call.send_mark("after-clear")
        echoes.append(await call.next("mark"))
        await call.ws.close(1000, "done")

    # The caller stays on the line until the agent is done (not for a time after the clear, which a
    # loaded loop could take to deliver the next audio).
    script = listening_script(hangup_when_done=False, max_duration_s=30.0)
    async with FakeSwitchboard(agent) as fake:
        result = await fake.place_call(script)

    assert [e.message["mark"]["name"] for e in echoes] == ["before-clear", "after-clear"]
    long_would_end = sent["long"] + len(long_audio) / 8000
    assert echoes[0].at < long_would_end  # flushed by the clear, not played out
    assert echoes[1].at >= sent["short"] + len(short_audio) / 8000 - EPS
    assert echoes[1].at < long_would_end  # new audio did not queue behind the dropped audio
    assert result.clears == 1
    assert result.agent_audio == long_audio + short_audio
    played = result.agent_audio_played
    assert played.endswith(short_audio)
    heard_of_long = played[: len(played) - len(short_audio)]
    assert len(heard_of_long) < len(long_audio)
    assert long_audio.startswith(heard_of_long)


@pytest.mark.asyncio
async def test_turn_latency_runs_from_the_vad_completing_frame_to_the_first_reply_frame() -> None:
    utterance = tone_mulaw(200) + silence_mulaw(60)  # speech ends 3 frames before the clip does
    reply = tone_mulaw(200, freq=300)
    ends: list[Received] = []
    starts: list[Received] = []
    replies_sent: list[float] = []

    async def answering_agent(call: FakeCall) -> None:
        vad = ServerVad(silence_frames=5)  # 100 ms, as the caller is told
        while len(replies_sent) < 2:
            frame = await call.next("media")
            event = vad.feed(payload_of(frame))
            if event == "started":
                starts.append(frame)
            elif event == "ended":
                ends.append(frame)
                replies_sent.append(await call.send_media(reply))

    script = CallScript(
        utterances=[utterance, utterance],
        pause_before_first_s=0.1,
        wait_for_greeting=False,
        gap_after_reply_s=0.2,
        trailing_silence_s=0.2,
    )
    async with FakeSwitchboard(answering_agent) as fake:
        result = await fake.place_call(script, vad_silence_ms=100)

    assert [t.utterance_index for t in result.turns] == [0, 1]
    for turn, end_frame, reply_sent in zip(result.turns, ends, replies_sent, strict=True):
        slot_due = result.started_at + int(end_frame.message["media"]["chunk"]) * FRAME_S
        assert slot_due - EPS <= turn.speech_end_sent_at <= end_frame.at + EPS  # that very frame
        assert turn.first_agent_audio_at is not None
        assert turn.first_agent_audio_at >= reply_sent
        assert turn.latency_ms is not None
        assert turn.latency_ms == pytest.approx((turn.first_agent_audio_at - turn.speech_end_sent_at) * 1000)
        assert turn.latency_ms >= 0
    # The second utterance waited for the first reply to play out, plus the gap.
    assert starts[1].at >= replies_sent[0] + len(reply) / 8000 + script.gap_after_reply_s - EPS
    # The caller hung up after the last reply played out plus the trailing silence.
    stop = fake.call.of("stop")[0]
    assert stop.at >= replies_sent[1] + len(reply) / 8000 + script.trailing_silence_s - EPS
    assert result.hung_up_by == "caller"
    assert result.agent_audio_played == reply + reply


@pytest.mark.asyncio
async def test_a_turn_without_reply_times_out_with_no_latency() -> None:
    script = CallScript(
        utterances=[tone_mulaw(100)], pause_before_first_s=0.0, wait_for_greeting=False, reply_timeout_s=0.2
    )
    async with FakeSwitchboard() as fake:
        result = await fake.place_call(script, vad_silence_ms=100)

    [turn] = result.turns
    assert turn.first_agent_audio_at is None
    assert turn.latency_ms is None
    assert result.hung_up_by == "caller"
    assert fake.call.of("stop")[0].at >= turn.speech_end_sent_at + 0.2 - EPS


@pytest.mark.asyncio
async def test_barge_in_speaks_over_the_reply_and_a_clear_cuts_it() -> None:
    long_reply = tone_mulaw(3000, freq=300)
    sent: dict[str, float] = {}

    async def agent(call: FakeCall) -> None:
        vad = ServerVad(silence_frames=5)
        turns = 0
        while True:
            event = vad.feed(payload_of(await call.next("media")))
            if event == "ended" and turns == 0:
                turns += 1
                sent["reply"] = await call.send_media(long_reply)
            elif event == "started" and turns == 1:
                sent["barge_in_heard"] = call.loop.time()
                await call.send_clear()
                return

    script = CallScript(
        utterances=[tone_mulaw(100), tone_mulaw(100)],
        pause_before_first_s=0.0,
        wait_for_greeting=False,
        interrupt_after_s=0.1,
        trailing_silence_s=0.1,
        reply_timeout_s=0.5,
    )
    async with FakeSwitchboard(agent) as fake:
        result = await fake.place_call(script, vad_silence_ms=100)

    assert sent["barge_in_heard"] < sent["reply"] + len(long_reply) / 8000  # spoke over the reply
    assert result.clears == 1
    assert len(result.agent_audio_played) < len(long_reply)
    assert result.agent_audio == long_reply


@pytest.mark.asyncio
async def test_server_hanging_up_ends_the_call_without_a_stop() -> None:
    async def hanging_up_agent(call: FakeCall) -> None:
        for _ in range(3):
            await call.next("media")
        await call.ws.close(1000, "done")

    async with FakeSwitchboard(hanging_up_agent) as fake:
        result = await fake.place_call(listening_script(hangup_when_done=False, max_duration_s=30.0))

    assert result.hung_up_by == "server"
    assert (result.close_code, result.close_reason) == (1000, "done")
    assert fake.call.of("stop") == []
    assert result.frames_sent >= 3
    assert result.ended_at - result.started_at < 30.0


@pytest.mark.asyncio
async def test_server_refusing_the_stream_at_once_is_reported() -> None:
    async def refusing_agent(call: FakeCall) -> None:
        await call.ws.close(1008, "bad stream token")

    async with FakeSwitchboard(refusing_agent) as fake:
        result = await fake.place_call(listening_script(hangup_when_done=False))

    assert result.hung_up_by == "server"
    assert (result.close_code, result.close_reason) == (1008, "bad stream token")


@pytest.mark.asyncio
async def test_dtmf_goes_out_on_time_in_the_one_sequence() -> None:
    script = listening_script(hangup_when_done=False, max_duration_s=0.3, dtmf=[(0.2, "#"), (0.1, "5")])
    async with FakeSwitchboard() as fake:
        result = await fake.place_call(script)

    dtmf = fake.call.of("dtmf")
    assert [d.message for d in dtmf] == [
        {
            "event": "dtmf",
            "streamSid": result.stream_sid,
            "sequenceNumber": d.message["sequenceNumber"],
            "dtmf": {"track": "inbound_track", "digit": digit},
        }
        for d, digit in zip(dtmf, ["5", "#"], strict=True)
    ]
    assert dtmf[0].at >= result.started_at + 0.1 - EPS
    assert dtmf[1].at >= result.started_at + 0.2 - EPS
    assert result.dtmf_sent == ["5", "#"]
    assert_one_sequence(fake.call.messages)


@pytest.mark.asyncio
async def test_a_wrong_auth_token_is_refused_at_the_webhook() -> None:
    async with FakeSwitchboard() as fake:
        with pytest.raises(CallSetupError) as refused:
            await fake.place_call(listening_script(), auth_token=AUTH_TOKEN + "-wrong")

    assert refused.value.status_code == 403
    assert [w.signature_valid for w in fake.webhooks] == [False]
    assert fake.upgrades == []


@pytest.mark.asyncio
async def test_twiml_without_a_stream_is_a_setup_error() -> None:
    async with FakeSwitchboard(twiml="<Response><Reject/></Response>") as fake:
        with pytest.raises(CallSetupError, match="Connect"):
            await fake.place_call(listening_script())
    assert fake.upgrades == []


@pytest.mark.asyncio
async def test_caller_audio_goes_out_frame_by_frame() -> None:
    utterance = tone_mulaw(50)  # 2.5 frames: the last one is padded with silence
    script = CallScript(utterances=[utterance], pause_before_first_s=0.0, wait_for_greeting=False, reply_timeout_s=0)
    async with FakeSwitchboard() as fake:
        await fake.place_call(script, vad_silence_ms=20)

    payloads = [payload_of(m) for m in fake.call.of("media")]
    assert all(len(p) == FRAME_BYTES for p in payloads)
    first_speech = next(i for i, p in enumerate(payloads) if not is_silence_frame(p))
    sent = b"".join(payloads[first_speech : first_speech + 3])
    assert sent == utterance + silence_mulaw(10)
