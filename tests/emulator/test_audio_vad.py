"""The emulator's voice and energy VAD, without a network."""

from __future__ import annotations

import numpy as np
import pytest

from app.emulator.audio import AudioFormat, SpeechSynth, rms, synth_voice
from app.emulator.vad import EnergyVad, SpeechStarted, SpeechStopped
from tests.emulator.helpers import silence, voiced


def test_synthetic_voice_is_deterministic_loud_and_as_long_as_asked() -> None:
    a = synth_voice("Thanks for calling Acme Dental.", rate=24000, duration_ms=1860)
    b = synth_voice("Thanks for calling Acme Dental.", rate=24000, duration_ms=1860)
    assert a.size == 24000 * 1860 // 1000
    assert np.array_equal(a, b)
    assert rms(a) > 2000
    assert not np.array_equal(a, synth_voice("Something else entirely here.", rate=24000, duration_ms=1860))


def test_synthetic_voice_is_heard_as_one_turn_by_the_vad() -> None:
    vad = EnergyVad(threshold_rms=500)
    speech = synth_voice("Hello there, how can I help you today?", rate=24000, duration_ms=2000)
    events = vad.feed(np.concatenate([speech, silence(700)]), 24000, silence_ms=500, prefix_padding_ms=0, floor_ms=0)
    assert [type(e) for e in events] == [SpeechStarted, SpeechStopped]


def test_vad_reports_stream_positions_with_padding_and_silence() -> None:
    vad = EnergyVad(threshold_rms=500)
    events = []
    audio = np.concatenate([silence(400), voiced(600), silence(300), voiced(200), silence(800)])
    for start in range(0, audio.size, 480):  # 20 ms frames
        events += vad.feed(audio[start : start + 480], 24000, silence_ms=500, prefix_padding_ms=300, floor_ms=0)
    # the 300 ms gap is shorter than silence_duration_ms: one turn
    assert events == [SpeechStarted(audio_start_ms=100), SpeechStopped(audio_start_ms=100, audio_end_ms=2000)]
    assert vad.position_ms == 2300


def test_vad_ignores_a_click_shorter_than_min_speech() -> None:
    vad = EnergyVad(threshold_rms=500, min_speech_ms=20)
    events = vad.feed(
        np.concatenate([silence(100), voiced(10), silence(300)]), 24000, silence_ms=200, prefix_padding_ms=0, floor_ms=0
    )
    assert events == []


@pytest.mark.parametrize("kind", ["audio/pcm", "audio/pcmu", "audio/pcma"])
def test_formats_round_trip_speech_at_their_rate(kind: str) -> None:
    fmt = AudioFormat.from_session({"type": kind})
    pcm = voiced(200, rate=fmt.rate)
    wire = fmt.encode(pcm)
    assert fmt.duration_ms(len(wire)) == pytest.approx(200)
    decoded = fmt.decode(wire)
    assert decoded.size == pcm.size
    error = (decoded.astype(np.int32) - pcm.astype(np.int32)).astype(np.int16)
    assert rms(error) < 0.05 * rms(pcm)


@pytest.mark.asyncio
async def test_auto_tts_renders_audible_speech_with_whatever_engine_is_installed() -> None:
    synth = SpeechSynth(mode="auto")
    pcm = await synth.render("Hello from the emulator.", rate=8000, synthetic_ms=1500)
    assert pcm.size > 8000 // 2
    assert rms(pcm) > 200
