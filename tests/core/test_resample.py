"""The default 8 kHz <-> 24 kHz resampler (app/core/resample.py): steady, short, flat, clean, continuous."""

from __future__ import annotations

import numpy as np
import pytest

from app.core.resample import GROUP_DELAY, Downsampler, Upsampler, downsample_once, upsample_once


def tone(freq_hz: float, seconds: float, rate: int, amplitude: float = 10_000.0) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (amplitude * np.sin(2 * np.pi * freq_hz * t)).astype(np.int16)


def level_db(signal: np.ndarray, reference_amplitude: float) -> float:
    rms = float(np.sqrt(np.mean(signal.astype(np.float64) ** 2)))
    return 20 * np.log10(max(rms, 1e-9) / (reference_amplitude / np.sqrt(2)))


def up_frames(x: np.ndarray, frame: int = 160) -> list[np.ndarray]:
    up = Upsampler()
    return [up.process(x[i : i + frame]) for i in range(0, len(x), frame)]


def down_chunks(x: np.ndarray, sizes: tuple[int, ...] = (2400,)) -> np.ndarray:
    down, out, i, k = Downsampler(), [], 0, 0
    while i < len(x):
        n = sizes[k % len(sizes)]
        out.append(down.process(x[i : i + n]))
        i, k = i + n, k + 1
    out.append(down.flush())
    return np.concatenate(out)


def test_every_caller_frame_yields_its_480_samples_at_once_from_the_first() -> None:
    sizes = [len(chunk) for chunk in up_frames(tone(440, 1.0, 8000))]
    assert sizes == [480] * 50  # no empty append, no burst, from frame one


def test_the_hold_back_is_the_group_delay_of_46_samples_under_5_ms() -> None:
    impulse = np.zeros(160, dtype=np.int16)
    impulse[0] = 10_000
    out = np.concatenate(up_frames(np.concatenate([impulse, np.zeros(160, dtype=np.int16)])))
    assert int(np.argmax(np.abs(out))) == GROUP_DELAY
    assert GROUP_DELAY / 24 < 5.0  # ms
    # down: trimmed to time alignment, a 24 kHz impulse at sample 3k comes out at 8 kHz sample k
    spike = np.zeros(4800, dtype=np.int16)
    spike[3 * 500] = 30_000
    assert int(np.argmax(np.abs(down_chunks(spike)))) == 500


@pytest.mark.parametrize("freq", [300, 1000, 2000, 3000, 3400])
def test_the_telephone_band_is_flat_within_1_db_both_ways(freq: int) -> None:
    up = np.concatenate(up_frames(tone(freq, 1.0, 8000)))
    assert abs(level_db(up[2400:-2400], 10_000)) <= 1.0
    down = down_chunks(tone(freq, 1.0, 24000))
    assert abs(level_db(down[800:-800], 10_000)) <= 1.0


@pytest.mark.parametrize("freq", [4600, 5000, 6000, 7000, 7700, 8300, 9000, 10_000, 11_400, 11_900])
def test_what_would_alias_into_the_band_on_the_way_down_is_60_db_down(freq: int) -> None:
    down = down_chunks(tone(freq, 1.0, 24000, amplitude=30_000), sizes=(2400, 1201, 7, 4800))
    assert level_db(down[800:-800], 30_000) <= -60.0


@pytest.mark.parametrize("freq", [500, 1000, 3000, 3400])
def test_the_images_on_the_way_up_are_60_db_down(freq: int) -> None:
    up = np.concatenate(up_frames(tone(freq, 1.0, 8000, amplitude=30_000))).astype(np.float64)[2400:-2400]
    spectrum = np.abs(np.fft.rfft(up * np.hanning(len(up))))
    freqs = np.fft.rfftfreq(len(up), 1 / 24000)
    wanted = spectrum[np.abs(freqs - freq) < 20].max()
    images = spectrum[freqs >= 4600].max()
    assert 20 * np.log10(images / wanted) <= -60.0


def test_frame_by_frame_equals_one_pass_of_the_same_filter() -> None:
    x = tone(1000, 2.0, 8000)
    streamed = np.concatenate(up_frames(x)).astype(np.float64)
    one_pass = upsample_once(x.astype(np.float64))
    noise = streamed - one_pass
    assert 10 * np.log10(np.sum(one_pass**2) / np.sum(noise**2)) >= 60.0
    assert np.abs(noise).max() <= 1.0  # the int16 rounding, nothing else


def test_deltas_of_any_length_come_out_as_the_whole_signal_would() -> None:
    x = tone(700, 1.0, 24000)
    split = down_chunks(x, sizes=(2401, 1, 2, 3, 4799, 600))
    whole = down_chunks(x, sizes=(len(x),))
    reference = np.rint(downsample_once(np.concatenate([x, np.zeros(60)])))[Downsampler.delay :][: len(x) // 3]
    assert len(split) == len(whole) == len(x) // 3
    assert np.array_equal(split, whole)
    assert np.abs(split - reference).max() <= 1.0


def test_a_reset_forgets_the_previous_response() -> None:
    down = Downsampler()
    down.process(tone(1000, 0.1, 24000, amplitude=30_000))
    down.reset()
    assert not down.process(np.zeros(2400, dtype=np.int16)).any()
