"""The default 8 kHz <-> 24 kHz resampler (app/core/resample.py): steady, short, flat, clean, continuous.

Every property holds on each kernel this install has (the C kernel and numpy's), and the two agree."""

from __future__ import annotations

import numpy as np
import pytest

from app.core import resample
from app.core.resample import GROUP_DELAY, KERNELS, Downsampler, Kernel, Upsampler, downsample_once, upsample_once


def tone(freq_hz: float, seconds: float, rate: int, amplitude: float = 10_000.0) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (amplitude * np.sin(2 * np.pi * freq_hz * t)).astype(np.int16)


def level_db(signal: np.ndarray, reference_amplitude: float) -> float:
    rms = float(np.sqrt(np.mean(signal.astype(np.float64) ** 2)))
    return 20 * np.log10(max(rms, 1e-9) / (reference_amplitude / np.sqrt(2)))


@pytest.fixture(params=KERNELS)
def kernel(request: pytest.FixtureRequest) -> Kernel:
    k: Kernel = request.param
    return k


def up_frames(x: np.ndarray, kernel: Kernel, frame: int = 160) -> list[np.ndarray]:
    up = Upsampler(kernel=kernel)
    return [up.process(x[i : i + frame]) for i in range(0, len(x), frame)]


def down_chunks(x: np.ndarray, kernel: Kernel, sizes: tuple[int, ...] = (2400,)) -> np.ndarray:
    down, out, i, k = Downsampler(kernel=kernel), [], 0, 0
    while i < len(x):
        n = sizes[k % len(sizes)]
        out.append(down.process(x[i : i + n]))
        i, k = i + n, k + 1
    out.append(down.flush())
    return np.concatenate(out)


def test_every_caller_frame_yields_its_480_samples_at_once_from_the_first(kernel: Kernel) -> None:
    sizes = [len(chunk) for chunk in up_frames(tone(440, 1.0, 8000), kernel)]
    assert sizes == [480] * 50  # no empty append, no burst, from frame one


def test_the_hold_back_is_the_group_delay_of_46_samples_under_5_ms(kernel: Kernel) -> None:
    impulse = np.zeros(160, dtype=np.int16)
    impulse[0] = 10_000
    out = np.concatenate(up_frames(np.concatenate([impulse, np.zeros(160, dtype=np.int16)]), kernel))
    assert int(np.argmax(np.abs(out))) == GROUP_DELAY
    assert GROUP_DELAY / 24 < 5.0  # ms
    # down: trimmed to time alignment, a 24 kHz impulse at sample 3k comes out at 8 kHz sample k
    spike = np.zeros(4800, dtype=np.int16)
    spike[3 * 500] = 30_000
    assert int(np.argmax(np.abs(down_chunks(spike, kernel)))) == 500


@pytest.mark.parametrize("freq", [300, 1000, 2000, 3000, 3400])
def test_the_telephone_band_is_flat_within_1_db_both_ways(freq: int, kernel: Kernel) -> None:
    up = np.concatenate(up_frames(tone(freq, 1.0, 8000), kernel))
    assert abs(level_db(up[2400:-2400], 10_000)) <= 1.0
    down = down_chunks(tone(freq, 1.0, 24000), kernel)
    assert abs(level_db(down[800:-800], 10_000)) <= 1.0


@pytest.mark.parametrize("freq", [4600, 5000, 6000, 7000, 7700, 8300, 9000, 10_000, 11_400, 11_900])
def test_what_would_alias_into_the_band_on_the_way_down_is_60_db_down(freq: int, kernel: Kernel) -> None:
    down = down_chunks(tone(freq, 1.0, 24000, amplitude=30_000), kernel, sizes=(2400, 1201, 7, 4800))
    assert level_db(down[800:-800], 30_000) <= -60.0


@pytest.mark.parametrize("freq", [500, 1000, 3000, 3400])
def test_the_images_on_the_way_up_are_60_db_down(freq: int, kernel: Kernel) -> None:
    up = np.concatenate(up_frames(tone(freq, 1.0, 8000, amplitude=30_000), kernel)).astype(np.float64)[2400:-2400]
    spectrum = np.abs(np.fft.rfft(up * np.hanning(len(up))))
    freqs = np.fft.rfftfreq(len(up), 1 / 24000)
    wanted = spectrum[np.abs(freqs - freq) < 20].max()
    images = spectrum[freqs >= 4600].max()
    assert 20 * np.log10(images / wanted) <= -60.0


def test_frame_by_frame_equals_one_pass_of_the_same_filter(kernel: Kernel) -> None:
    x = tone(1000, 2.0, 8000)
    streamed = np.concatenate(up_frames(x, kernel)).astype(np.float64)
    one_pass = upsample_once(x.astype(np.float64))
    noise = streamed - one_pass
    assert 10 * np.log10(np.sum(one_pass**2) / np.sum(noise**2)) >= 60.0
    assert np.abs(noise).max() <= 1.0  # the int16 rounding, nothing else


def test_caller_frames_of_any_size_come_out_as_one_pass_would(kernel: Kernel) -> None:
    # 20 ms is what Twilio sends, but nothing makes a frame that size: a short one keeps the history right
    x = tone(1000, 3.0, 8000)
    up, out, i = Upsampler(kernel=kernel), [], 0
    for n in [160, 7, 1, 29, 30, 31, 300, 0, 2] * 40:
        out.append(up.process(x[i : i + n]))
        i += n
    streamed = np.concatenate(out).astype(np.float64)
    assert len(streamed) == 3 * i
    assert np.abs(streamed - upsample_once(x[:i].astype(np.float64))).max() <= 1.0


def test_deltas_of_any_length_come_out_as_the_whole_signal_would(kernel: Kernel) -> None:
    x = tone(700, 1.0, 24000)
    split = down_chunks(x, kernel, sizes=(2401, 1, 2, 3, 4799, 600))
    whole = down_chunks(x, kernel, sizes=(len(x),))
    reference = np.rint(downsample_once(np.concatenate([x, np.zeros(60)])))[Downsampler.delay :][: len(x) // 3]
    assert len(split) == len(whole) == len(x) // 3
    assert np.array_equal(split, whole)
    assert np.abs(split - reference).max() <= 1.0


def test_a_reset_forgets_the_previous_response(kernel: Kernel) -> None:
    down = Downsampler(kernel=kernel)
    down.process(tone(1000, 0.1, 24000, amplitude=30_000))
    down.reset()
    assert not down.process(np.zeros(2400, dtype=np.int16)).any()


def test_this_install_runs_the_c_kernel() -> None:
    # The install builds app/core/_fir.c wherever a C compiler is found, as on every machine this suite
    # runs on: a silent fall back to numpy would cost the node some 40% more CPU at pcm24k (docs/PERFORMANCE.md).
    assert resample.KERNEL == "c" and KERNELS == ("c", "numpy")


def noise(seconds: float, rate: int, seed: int) -> np.ndarray:
    return (
        (np.random.default_rng(seed).standard_normal(int(rate * seconds)) * 8000).clip(-32768, 32767).astype(np.int16)
    )


def test_the_c_kernel_gives_what_numpy_gives_to_the_rounding() -> None:
    # Loud noise (it reaches the int16 limits), frames of 160 then of other sizes; deltas of any length.
    x8 = noise(2.0, 8000, 1)
    frames = [x8[i : i + n] for i, n in zip(range(0, 16000, 160), [160] * 90 + [7, 1, 300, 160, 2, 0, 170, 160, 160, 160], strict=False)]  # fmt: skip
    c_up, np_up = Upsampler(kernel="c"), Upsampler(kernel="numpy")
    for frame in frames:
        a, b = c_up.process(frame), np_up.process(frame)
        assert len(a) == len(b) == 3 * len(frame) and np.abs(a.astype(int) - b).max(initial=0) <= 1
    x24 = noise(2.0, 24000, 2)
    sizes = (1, 2, 479, 480, 4801, 0, 3, 960)
    assert np.abs(down_chunks(x24, "c", sizes).astype(int) - down_chunks(x24, "numpy", sizes)).max() <= 1
    # bytes in, bytes out: what the call's audio paths use
    c_down, np_down = Downsampler(kernel="c"), Downsampler(kernel="numpy")
    for i in range(0, 48000, 1000):
        a16 = np.frombuffer(c_down.pcm(x24[i : i + 1000].tobytes()), dtype=np.int16)
        b16 = np.frombuffer(np_down.pcm(x24[i : i + 1000].tobytes()), dtype=np.int16)
        assert len(a16) == len(b16) and np.abs(a16.astype(int) - b16).max(initial=0) <= 1


def test_the_c_kernel_refuses_a_state_that_is_not_its_own() -> None:
    from app.core import _fir

    with pytest.raises(ValueError, match="the state must be"):
        _fir.up(bytearray(8), b"\x00\x00")
    with pytest.raises(ValueError, match="the state must be"):
        _fir.down(bytearray(_fir.DOWN_STATE + 4), b"\x00\x00")
    with pytest.raises(ValueError, match="not a down state"):
        _fir.down(bytearray(_fir.DOWN_STATE), b"\x00\x00")  # count 0: never made by Downsampler
    with pytest.raises(TypeError, match=r"up\(state, pcm8\)"):
        _fir.up(bytearray(_fir.UP_STATE))  # type: ignore[call-arg]
    with pytest.raises(BufferError):
        _fir.up(bytes(_fir.UP_STATE), b"\x00\x00")  # read-only state
