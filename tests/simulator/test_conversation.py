"""The caller's turn-taking, slot by slot, on a hand-driven clock."""

from __future__ import annotations

import base64

from app.simulator.audio import SILENCE_FRAME_B64
from app.simulator.conversation import CallerConversation, CallScript
from app.simulator.playback import TwilioPlayback
from tests.simulator.sounds import silence_mulaw, tone_mulaw

T0 = 100.0
FRAME_S = 0.02


class Phone:
    """Drives a CallerConversation the way the media-stream session does."""

    def __init__(self, script: CallScript, vad_silence_ms: int = 100) -> None:
        self.playback = TwilioPlayback()
        self.conversation = CallerConversation(
            script=script, playback=self.playback, started_at=T0, vad_silence_ms=vad_silence_ms
        )
        self.slot = 0
        self.sent: list[bytes] = []
        self.hung_up_at: float | None = None

    def now(self) -> float:
        return T0 + (self.slot + 1) * FRAME_S

    def run_until(self, t: float) -> None:
        while self.hung_up_at is None and self.now() <= t + 1e-9:
            now = self.now()
            payload = self.conversation.payload_for_slot(self.slot, now)
            if payload is None:
                self.hung_up_at = now
                return
            self.sent.append(base64.b64decode(payload))
            self.conversation.slot_sent(self.slot, now)
            self.slot += 1

    def agent_says(self, audio: bytes) -> None:
        now = self.now()
        self.playback.audio_received(audio, now)
        self.conversation.agent_audio_arrived(now)

    def first_speech_slot(self, after: int = 0) -> int:
        silence = base64.b64decode(SILENCE_FRAME_B64)
        return next(i for i in range(after, len(self.sent)) if self.sent[i] != silence)


def test_the_caller_waits_for_the_greeting_to_play_out_before_speaking() -> None:
    phone = Phone(CallScript(utterances=[tone_mulaw(100)], pause_before_first_s=0.2, gap_after_reply_s=0.5))
    phone.run_until(T0 + 0.3)
    phone.agent_says(tone_mulaw(1000))  # greeting arrives at 0.32 s, plays until 1.32 s
    phone.run_until(T0 + 3.0)
    start = phone.first_speech_slot()
    assert T0 + (start + 1) * FRAME_S >= T0 + 0.32 + 1.0 + 0.5 - 1e-9


def test_without_a_greeting_the_caller_speaks_at_the_greeting_timeout() -> None:
    script = CallScript(utterances=[tone_mulaw(100)], pause_before_first_s=0.2, greeting_timeout_s=1.0)
    phone = Phone(script)
    phone.run_until(T0 + 2.0)
    assert phone.first_speech_slot() == 49  # the slot due at 1.0 s


def test_speech_end_is_the_frame_completing_vad_silence_after_the_last_speech_frame() -> None:
    utterance = tone_mulaw(100) + silence_mulaw(40)  # speech in frames 0-4, clip ends at frame 6
    script = CallScript(utterances=[utterance], pause_before_first_s=0.0, wait_for_greeting=False)
    phone = Phone(script, vad_silence_ms=100)
    phone.run_until(T0 + 0.5)
    [turn] = phone.conversation.turn_timings()
    assert turn.speech_end_sent_at == T0 + (4 + 5 + 1) * FRAME_S  # slot 9 goes out at 0.2 s
    assert turn.first_agent_audio_at is None


def test_latency_counts_from_speech_end_to_the_first_agent_audio_after_it() -> None:
    script = CallScript(utterances=[tone_mulaw(100)], pause_before_first_s=0.0, wait_for_greeting=False)
    phone = Phone(script, vad_silence_ms=100)
    phone.run_until(T0 + 0.1)
    phone.agent_says(tone_mulaw(20))  # before the turn could end: not a reply
    phone.run_until(T0 + 0.5)
    phone.agent_says(tone_mulaw(200))
    [turn] = phone.conversation.turn_timings()
    assert turn.first_agent_audio_at == phone.now()
    assert turn.latency_ms is not None
    assert abs(turn.latency_ms - (phone.now() - turn.speech_end_sent_at) * 1000) < 1e-6


def test_the_caller_hangs_up_after_the_last_reply_plus_trailing_silence() -> None:
    script = CallScript(
        utterances=[tone_mulaw(100)], pause_before_first_s=0.0, wait_for_greeting=False, trailing_silence_s=1.0
    )
    phone = Phone(script, vad_silence_ms=100)
    phone.run_until(T0 + 0.5)
    reply_at = phone.now()
    phone.agent_says(tone_mulaw(300))
    phone.run_until(T0 + 5.0)
    assert phone.hung_up_at is not None
    assert phone.hung_up_at >= reply_at + 0.3 + 1.0 - 1e-9
    assert phone.hung_up_at < reply_at + 0.3 + 1.0 + FRAME_S + 1e-9


def test_without_hangup_the_caller_keeps_sending_silence() -> None:
    script = CallScript(utterances=[], pause_before_first_s=0.0, wait_for_greeting=False, hangup_when_done=False)
    phone = Phone(script)
    phone.run_until(T0 + 1.0)
    assert phone.hung_up_at is None
    assert len(phone.sent) == 50


def test_a_script_prepares_its_frames_once_for_many_calls() -> None:
    script = CallScript(utterances=[tone_mulaw(100)])
    first = script.prepared_utterances()
    assert script.prepared_utterances() is first
    script.utterances.append(tone_mulaw(40))
    assert len(script.prepared_utterances()) == 2
