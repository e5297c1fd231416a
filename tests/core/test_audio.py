"""Caller/agent audio paths: continuity of the stream resamplers and exact sample accounting."""

from __future__ import annotations

import audioop

import numpy as np
import pytest
import soxr

from app.core.audio import DEFAULT_RESAMPLE_QUALITY, AgentAudioPath, CallerAudioPath, Resampler
from app.core.resample import upsample_once


def tone_mulaw(freq_hz: float, seconds: float, rate: int = 8000, amplitude: float = 0.5) -> bytes:
    t = np.arange(int(rate * seconds)) / rate
    pcm = (np.sin(2 * np.pi * freq_hz * t) * amplitude * 32767).astype(np.int16)
    return audioop.lin2ulaw(pcm.tobytes(), 2)


def snr_db(reference: np.ndarray, test: np.ndarray) -> float:
    noise = reference - test
    return float(10 * np.log10(np.sum(reference**2) / max(np.sum(noise**2), 1e-12)))


def stream_frames(path: CallerAudioPath, mulaw: bytes, frame: int = 160) -> np.ndarray:
    out = b"".join(path.convert(mulaw[i : i + frame]) for i in range(0, len(mulaw), frame))
    return np.frombuffer(out, dtype=np.int16).astype(np.float64)


def test_caller_path_emits_three_samples_per_mulaw_sample_less_what_soxr_withholds() -> None:
    path = CallerAudioPath("pcm24k", resampler="soxr")
    mulaw = tone_mulaw(1000, 2.0)
    out = stream_frames(path, mulaw)
    assert path.delay_samples > 0 and path.withheld_samples == path.delay_samples
    assert len(out) == 3 * len(mulaw) - path.delay_samples


def test_the_default_caller_path_emits_every_frame_whole_and_matches_one_pass_of_its_filter() -> None:
    path = CallerAudioPath("pcm24k")
    mulaw = tone_mulaw(1000, 2.0)
    sizes = [len(path.convert(mulaw[i : i + 160])) for i in range(0, len(mulaw), 160)]
    assert sizes == [960] * 100 and path.withheld_samples == 0 and path.delay_samples == 46
    streamed = stream_frames(CallerAudioPath("pcm24k"), mulaw)
    reference = upsample_once(np.frombuffer(audioop.ulaw2lin(mulaw, 2), dtype=np.int16).astype(np.float64))
    assert snr_db(reference, streamed) >= 60.0


def test_frame_by_frame_tone_matches_one_shot_resample_at_60_db() -> None:
    path = CallerAudioPath("pcm24k", resampler="soxr")
    mulaw = tone_mulaw(1000, 2.0)
    streamed = stream_frames(path, mulaw)
    pcm8 = np.frombuffer(audioop.ulaw2lin(mulaw, 2), dtype=np.int16)
    one_shot = soxr.resample(pcm8.astype(np.float64), 8000, 24000, quality=DEFAULT_RESAMPLE_QUALITY)
    # The stream is delayed by its fixed filter delay; the one-shot result is delay-compensated.
    delay = path.delay_samples
    aligned_stream = streamed[: len(one_shot) - delay]
    reference = one_shot[: len(aligned_stream)]
    # Skip the filter's start-up transient (first 10 ms) and compare the rest.
    skip = 240
    assert snr_db(reference[skip:], aligned_stream[skip:]) >= 60.0


def test_per_frame_stateless_resampling_would_fail_the_same_check() -> None:
    """Guards the test above: resampling each frame on its own clicks and loses the SNR."""
    mulaw = tone_mulaw(1000, 1.0)
    pcm8 = np.frombuffer(audioop.ulaw2lin(mulaw, 2), dtype=np.int16).astype(np.float64)
    chunks = [
        soxr.resample(pcm8[i : i + 160], 8000, 24000, quality=DEFAULT_RESAMPLE_QUALITY)
        for i in range(0, len(pcm8), 160)
    ]
    stateless = np.concatenate(chunks)
    one_shot = soxr.resample(pcm8, 8000, 24000, quality=DEFAULT_RESAMPLE_QUALITY)
    n = min(len(stateless), len(one_shot))
    assert snr_db(one_shot[240:n], stateless[240:n]) < 60.0


def test_pcmu_format_passes_mulaw_through_untouched_both_ways() -> None:
    mulaw = tone_mulaw(440, 0.1)
    assert CallerAudioPath("pcmu").convert(mulaw) == mulaw
    assert AgentAudioPath("pcmu").convert(mulaw) == mulaw


@pytest.mark.parametrize("resampler", ["fir", "soxr"])
def test_agent_path_turns_24k_pcm_into_a_third_as_many_mulaw_bytes(resampler: Resampler) -> None:
    path = AgentAudioPath("pcm24k", resampler=resampler)
    t = np.arange(24000) / 24000
    pcm = (np.sin(2 * np.pi * 300 * t) * 8000).astype(np.int16).tobytes()
    out = b"".join(path.convert(pcm[i : i + 4800]) for i in range(0, len(pcm), 4800))
    # 1 s at 24 kHz -> 8000 mu-law bytes, less the resampler's fixed delay (a few ms)
    assert 7800 <= len(out) <= 8000
    decoded = np.frombuffer(audioop.ulaw2lin(out, 2), dtype=np.int16)
    assert np.abs(decoded[400:]).max() > 4000


@pytest.mark.parametrize("resampler", ["fir", "soxr"])
def test_agent_path_drain_releases_the_whole_response_without_waiting_for_the_next(resampler: Resampler) -> None:
    path = AgentAudioPath("pcm24k", resampler=resampler)
    pcm = (np.sin(2 * np.pi * 300 * np.arange(2400) / 24000) * 8000).astype(np.int16).tobytes()
    first = sum(len(path.convert(pcm)) for _ in range(10)) + len(path.drain())
    assert first == 8000  # exactly 1 s of mu-law for 1 s of 24 kHz audio
    second = sum(len(path.convert(pcm)) for _ in range(10)) + len(path.drain())
    assert second == 8000


@pytest.mark.parametrize("resampler", ["fir", "soxr"])
def test_an_odd_length_delta_keeps_the_stray_byte_for_the_next_one(resampler: Resampler) -> None:
    t = np.arange(4800) / 24000
    pcm = (np.sin(2 * np.pi * 300 * t) * 8000).astype(np.int16).tobytes()
    whole, split = AgentAudioPath("pcm24k", resampler=resampler), AgentAudioPath("pcm24k", resampler=resampler)
    expected = whole.convert(pcm) + whole.drain()
    got = split.convert(pcm[:4801]) + split.convert(pcm[4801:]) + split.drain()
    assert len(got) == len(expected)
    reference = np.frombuffer(audioop.ulaw2lin(expected, 2), dtype=np.int16).astype(np.float64)
    decoded = np.frombuffer(audioop.ulaw2lin(got, 2), dtype=np.int16).astype(np.float64)
    assert snr_db(reference, decoded) > 40.0  # a dropped byte would turn the rest into noise
