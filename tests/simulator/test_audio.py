"""Caller audio: WAV in at any format, mu-law 8 kHz out, WAV back out for listening."""

from __future__ import annotations

import struct
import wave
from pathlib import Path

import numpy as np

from app.simulator import load_wav_as_mulaw, parse_connect_stream, synth_speech_mulaw, write_mulaw_wav
from app.simulator.audio import FRAME_BYTES, is_speech_frame, mulaw_to_pcm16, prepare_utterance
from tests.simulator.sounds import silence_mulaw, tone_mulaw


def _sine(rate: int, seconds: float, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return np.sin(2 * np.pi * freq * t) * 0.5


def _dominant_hz(mulaw: bytes) -> float:
    pcm = np.frombuffer(mulaw_to_pcm16(mulaw), dtype="<i2").astype(np.float64)
    spectrum = np.abs(np.fft.rfft(pcm))
    return float(np.argmax(spectrum) * 8000 / len(pcm))


def test_a_16khz_stereo_wav_becomes_mono_8khz_mulaw(tmp_path: Path) -> None:
    path = tmp_path / "caller.wav"
    left = _sine(16000, 0.5)
    stereo = np.stack([left, left], axis=1)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(2)
        out.setsampwidth(2)
        out.setframerate(16000)
        out.writeframes((stereo * 32767).astype("<i2").tobytes())
    mulaw = load_wav_as_mulaw(path)
    assert abs(len(mulaw) - 4000) <= 2
    assert abs(_dominant_hz(mulaw) - 440) < 5


def test_8bit_and_float_wavs_are_read(tmp_path: Path) -> None:
    eight_bit = tmp_path / "u8.wav"
    with wave.open(str(eight_bit), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(1)
        out.setframerate(11025)
        out.writeframes(((_sine(11025, 0.25) + 1) * 127.5).astype(np.uint8).tobytes())
    assert abs(_dominant_hz(load_wav_as_mulaw(eight_bit)) - 440) < 10

    floats = (_sine(44100, 0.25)).astype("<f4").tobytes()
    float_wav = tmp_path / "f32.wav"
    header = struct.pack(
        "<4sI4s4sIHHIIHH4sI", b"RIFF", 36 + len(floats), b"WAVE", b"fmt ", 16, 3, 1, 44100, 44100 * 4, 4, 32,
        b"data", len(floats),
    )  # fmt: skip
    float_wav.write_bytes(header + floats)
    mulaw = load_wav_as_mulaw(float_wav)
    assert abs(len(mulaw) - 2000) <= 2
    assert abs(_dominant_hz(mulaw) - 440) < 10


def test_agent_audio_is_saved_as_a_standard_pcm_wav(tmp_path: Path) -> None:
    mulaw = tone_mulaw(300)
    path = tmp_path / "agent.wav"
    write_mulaw_wav(path, mulaw)
    with wave.open(str(path), "rb") as saved:
        assert (saved.getnchannels(), saved.getsampwidth(), saved.getframerate()) == (1, 2, 8000)
        assert saved.readframes(saved.getnframes()) == mulaw_to_pcm16(mulaw)
    assert load_wav_as_mulaw(path) == mulaw


def test_synthetic_speech_is_voiced_and_about_60ms_per_character() -> None:
    mulaw = synth_speech_mulaw("hello there", use_espeak=False)
    assert len(mulaw) == round(11 * 0.060 * 8000)
    frames = [mulaw[i : i + FRAME_BYTES] for i in range(0, len(mulaw) - FRAME_BYTES + 1, FRAME_BYTES)]
    assert sum(is_speech_frame(f) for f in frames) >= len(frames) * 0.8
    assert synth_speech_mulaw("hello there", use_espeak=False) == mulaw  # deterministic


def test_speech_synthesis_yields_speech_whichever_engine_is_installed() -> None:
    prepared = prepare_utterance(synth_speech_mulaw("Hello, I would like to book a table."))
    assert prepared.last_speech_frame >= 10


def test_utterances_are_cut_into_padded_frames_and_the_end_of_speech_located() -> None:
    prepared = prepare_utterance(tone_mulaw(110) + silence_mulaw(50))  # 8 frames, speech in 0..5
    assert len(prepared.frames_b64) == 8
    assert prepared.last_speech_frame == 5
    assert prepare_utterance(silence_mulaw(100)).last_speech_frame == -1


def test_the_stream_url_and_parameters_are_read_from_twiml() -> None:
    stream = parse_connect_stream(
        '<?xml version="1.0" encoding="UTF-8"?><Response><Connect><Stream url="wss://sb.example.com/twilio/media">'
        '<Parameter name="token" value="abc"/><Parameter name="direction" value="inbound"/></Stream></Connect>'
        '<Redirect method="POST">https://sb.example.com/twilio/resume</Redirect></Response>'
    )
    assert stream.url == "wss://sb.example.com/twilio/media"
    assert stream.parameters == {"token": "abc", "direction": "inbound"}
