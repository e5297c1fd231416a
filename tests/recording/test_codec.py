"""The recording's file format: Opus in Ogg, two channels, within 250 KB a minute of speech, decodable."""

from __future__ import annotations

import numpy as np
import pytest

from app.recording.codec import decode, encode


def speech_like(seconds: float, rate: int) -> np.ndarray:
    """Voiced bursts (harmonics of 150 Hz, on and off like syllables) on one channel, the other answering."""
    t = np.arange(int(seconds * rate)) / rate
    voice = sum(np.sin(2 * np.pi * 150 * k * t) / k for k in range(1, 8)) * (np.sin(2 * np.pi * 3 * t) > 0)
    on = np.sin(2 * np.pi * 0.25 * t) > 0
    caller = np.where(on, voice, 0) * 6000
    agent = np.where(~on, voice, 0) * 6000
    return np.stack([caller, agent], axis=1).astype(np.int16)


@pytest.mark.parametrize("rate", [8000, 24000])
def test_a_minute_of_two_channel_speech_fits_the_budget_and_decodes_to_its_length(rate: int) -> None:
    samples = speech_like(60, rate)
    data = encode(samples, rate)
    assert data[:4] == b"OggS" and b"OpusHead" in data[:200]
    assert len(data) <= 250 * 1024
    decoded, decoded_rate = decode(data)
    assert decoded_rate == rate and decoded.shape[1] == 2
    assert abs(len(decoded) - len(samples)) <= rate // 50  # within a 20 ms Opus frame
    # The channels stay apart: where only the caller spoke, the agent's channel is near silent.
    quiet = np.sin(2 * np.pi * 0.25 * np.arange(len(decoded)) / rate) > 0.5
    assert np.sqrt(np.mean(decoded[quiet, 1].astype(float) ** 2)) < 0.05 * np.sqrt(
        np.mean(decoded[quiet, 0].astype(float) ** 2)
    )


def test_what_opus_cannot_take_is_refused() -> None:
    with pytest.raises(ValueError):
        encode(speech_like(1, 22050), 22050)
    with pytest.raises(ValueError):
        encode(np.zeros((10, 1), dtype=np.int16), 8000)


@pytest.mark.parametrize("rate", [8000, 24000])
def test_the_channels_stay_apart_one_speaking_leaves_the_other_silent(rate: int) -> None:
    """Below ~30 kb/s Opus codes stereo as intensity (one channel's sound leaks into the other, -32 dB at the
    next level down); the level used keeps the channels apart."""
    t = np.arange(3 * rate) / rate
    voice = sum(np.sin(2 * np.pi * 140 * k * t) / k for k in range(1, 8))
    caller = (voice / np.abs(voice).max() * 0.6 * 32767).astype(np.int16)
    decoded, _ = decode(encode(np.stack([caller, np.zeros_like(caller)], axis=1), rate))
    loud = np.sqrt(np.mean(decoded[:, 0].astype(float) ** 2))
    leak = np.sqrt(np.mean(decoded[:, 1].astype(float) ** 2))
    assert leak <= loud * 10 ** (-45 / 20)
