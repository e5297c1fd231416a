"""8 kHz <-> 24 kHz streaming resamplers: one linear-phase FIR, designed once, run polyphase with numpy.

Why not soxr's stream (still selectable, ``RESAMPLER=soxr``): it emits in blocks, so a 20 ms caller frame
often yields nothing and the next one two frames' worth; it holds back 43 ms on average (73 ms at worst)
per direction, which every turn waits for (docs/PERFORMANCE.md). This filter holds back nothing beyond
its group delay (46 samples at 24 kHz, 1.92 ms): every 160-sample caller frame yields its 480 samples at
once, every agent delta its third, from the first one on.

The filter (a Kaiser-windowed sinc, 93 taps at 24 kHz, cutoff 4 kHz, beta 7) is flat within 0.01 dB over
the telephone band (300-3,400 Hz) and rejects everything from 4.6 kHz to 12 kHz, all that would alias into
that band on the way down (and the images on the way up), by at least 71 dB. tests/core/test_resample.py
measures both.

Two kernels run it, with the same taps and the same results (to the int16 rounding of a sum taken in a
different order): ``c``, app/core/_fir.c, one C call per frame each way (about 2 us for a caller frame),
built at install where a C compiler is found; and ``numpy``, a small matrix product each way (about 7 us,
some ten numpy calls), used where the C kernel was not built. ``KERNEL`` names the one in use.
"""

from __future__ import annotations

import struct
from typing import Literal

import numpy as np

Kernel = Literal["c", "numpy"]

RATIO = 3
TAPS = 93  # odd: a whole-sample group delay
CUTOFF_HZ = 4000.0
KAISER_BETA = 7.0
HIGH_RATE = 24000
GROUP_DELAY = (TAPS - 1) // 2  # in 24 kHz samples


def design_lowpass(taps: int = TAPS, cutoff_hz: float = CUTOFF_HZ, beta: float = KAISER_BETA) -> np.ndarray:
    """The low-pass at 24 kHz both directions share, unity gain at DC (float64)."""
    n = np.arange(taps) - (taps - 1) / 2
    h: np.ndarray = np.sinc(2 * cutoff_hz / HIGH_RATE * n) * np.kaiser(taps, beta)
    return np.asarray(h / h.sum(), dtype=np.float64)


LOWPASS = design_lowpass()
_PHASE_TAPS = TAPS // RATIO  # 31 taps per polyphase branch

# Up: y[3n + p] = 3 * sum_k h[3k + p] x[n - k]. A window of the last 31 input samples, oldest first,
# times this (31 x 3) matrix gives the three outputs of one input sample.
_UP = np.ascontiguousarray((RATIO * LOWPASS).reshape(_PHASE_TAPS, RATIO)[::-1], dtype=np.float32)
# Down: y[n] = sum_j h[j] x[3n - j]: a window of the last 93 input samples, oldest first, times h reversed.
_DOWN = np.ascontiguousarray(LOWPASS[::-1], dtype=np.float32)


_HIST_UP = _PHASE_TAPS - 1


def _windows(buf: np.ndarray, count: int, width: int, step: int) -> np.ndarray:
    """``count`` overlapping windows of ``width`` samples of a float32 buffer, ``step`` apart: a view, no
    copy (the ndarray constructor: a tenth of as_strided's cost, which matters per frame)."""
    return np.ndarray((count, width), dtype=np.float32, buffer=buf, strides=(4 * step, 4))


def _to_int16(y: np.ndarray) -> np.ndarray:
    # np.minimum/np.maximum rather than np.clip: a third of the cost on 480 samples
    np.minimum(y, 32767.0, out=y)
    np.maximum(y, -32768.0, out=y)
    np.rint(y, out=y)
    return y.astype(np.int16)


try:
    from app.core import _fir as _C  # built from _fir.c at install, where a C compiler was found
except ImportError:  # pragma: no cover - an install without a C compiler
    _C = None  # type: ignore[assignment]
else:
    _C.set_taps(np.ascontiguousarray(LOWPASS, dtype=np.float64).tobytes())

KERNELS: tuple[Kernel, ...] = ("c", "numpy") if _C is not None else ("numpy",)
KERNEL: Kernel = KERNELS[0]


class Upsampler:
    """8 kHz -> 24 kHz, stateful across calls: exactly three output samples per input sample."""

    __slots__ = ("_buf", "_state", "_windows")

    delay = GROUP_DELAY  # output samples

    def __init__(self, frame: int = 160, kernel: Kernel = KERNEL) -> None:
        if kernel == "c" and _C is None:
            raise ValueError("the C kernel was not built in this install")
        self._state = bytearray(_C.UP_STATE) if kernel == "c" and _C is not None else None
        self._buf = np.zeros(_HIST_UP + frame, dtype=np.float32)
        self._windows = _windows(self._buf, frame, _PHASE_TAPS, 1)

    def pcm(self, data: bytes) -> bytes:
        """Native int16 samples at 8 kHz in, three times as many at 24 kHz out: the per-frame path."""
        if self._state is not None:
            return _C.up(self._state, data)
        return self._numpy(np.frombuffer(data, dtype=np.int16)).tobytes()

    def process(self, x: np.ndarray) -> np.ndarray:
        """``x``: int16 samples at 8 kHz; returns int16 at 24 kHz, ``3 * len(x)`` of them."""
        if self._state is not None:
            return np.frombuffer(self.pcm(np.ascontiguousarray(x, dtype=np.int16).tobytes()), dtype=np.int16)
        return self._numpy(x)

    def _numpy(self, x: np.ndarray) -> np.ndarray:
        n = len(x)
        buf = self._buf
        if len(buf) != _HIST_UP + n:  # not the frame size of the last call: a buffer (and view) to fit
            buf = np.empty(_HIST_UP + n, dtype=np.float32)
            buf[:_HIST_UP] = self._buf[:_HIST_UP]  # the history, as the last call left it
            self._buf, self._windows = buf, _windows(buf, n, _PHASE_TAPS, 1)
        buf[_HIST_UP:] = x
        y = np.dot(self._windows, _UP).reshape(-1)  # the view sees what was just written
        buf[:_HIST_UP] = buf[n:]  # the last 30 inputs are the next call's history
        return _to_int16(y)

    def reset(self) -> None:
        self._buf[:] = 0
        if self._state is not None:
            self._state[:] = bytes(len(self._state))


class Downsampler:
    """24 kHz -> 8 kHz, stateful across calls: any number of input samples; a third as many out, the
    remainder (0-2 samples) kept for the next call. The filter's lead-in (its group delay) is trimmed off
    the start and :meth:`flush` gives the tail, so N input samples come out as N // 3, aligned in time."""

    __slots__ = ("_buf", "_skip", "_state")

    delay = GROUP_DELAY // RATIO  # output samples trimmed off the start (15 at 8 kHz)

    def __init__(self, kernel: Kernel = KERNEL) -> None:
        if kernel == "c" and _C is None:
            raise ValueError("the C kernel was not built in this install")
        self._state = bytearray(_C.DOWN_STATE) if kernel == "c" and _C is not None else None
        self._buf = np.zeros(TAPS - 1, dtype=np.float32)
        self._skip: int = self.delay
        if self._state is not None:
            self.reset()  # the C state's header: its history and its lead-in

    def pcm(self, data: bytes) -> bytes:
        """Native int16 samples at 24 kHz in, a third as many at 8 kHz out: the per-delta path."""
        if self._state is not None:
            return _C.down(self._state, data)
        return self._numpy(np.frombuffer(data, dtype=np.int16)).tobytes()

    def process(self, x: np.ndarray) -> np.ndarray:
        """``x``: int16 samples at 24 kHz; returns int16 at 8 kHz."""
        if self._state is not None:
            return np.frombuffer(self.pcm(np.ascontiguousarray(x, dtype=np.int16).tobytes()), dtype=np.int16)
        return self._numpy(x)

    def _numpy(self, x: np.ndarray) -> np.ndarray:
        buf = np.concatenate((self._buf, x.astype(np.float32, copy=False)))
        n_out = (len(buf) - (TAPS - 1)) // RATIO
        if n_out <= 0:
            self._buf = buf
            return np.zeros(0, dtype=np.int16)
        y = np.dot(_windows(buf, n_out, TAPS, RATIO), _DOWN)
        self._buf = buf[RATIO * n_out :].copy()
        if self._skip:
            skip = min(self._skip, n_out)
            self._skip -= skip
            y = y[skip:]
        return _to_int16(y)

    def _pending(self) -> int:
        """Input samples held that are not yet a whole output (0-2)."""
        if self._state is not None:
            count: int = struct.unpack_from("i", self._state, len(self._state) - 8)[0]
            return count - (TAPS - 1)
        return len(self._buf) - (TAPS - 1)

    def flush(self) -> np.ndarray:
        """What the filter still holds (its group delay), pushed out with silence; the state is then clean.
        Input that was fed in total ``3k + r`` samples (r < 3, kept) comes out as ``k`` in all."""
        tail = self.process(np.zeros(RATIO * self.delay - self._pending(), dtype=np.int16))
        self.reset()
        return tail[: self.delay]

    def reset(self) -> None:
        state = self._state
        if state is not None:
            # struct down_state: 94 float32 (the last inputs), then int32 count (92: the history, all
            # zero) and int32 skip (the lead-in still to trim)
            state[:] = bytes(len(state))
            struct.pack_into("ii", state, len(state) - 8, TAPS - 1, self.delay)
            return
        self._buf = np.zeros(TAPS - 1, dtype=np.float32)
        self._skip = self.delay


def upsample_once(x: np.ndarray) -> np.ndarray:
    """The same filter over a whole signal in one pass, by direct convolution (a reference for tests and
    benchmarks; not for the per-frame path)."""
    stuffed = np.zeros(RATIO * len(x))
    stuffed[::RATIO] = x
    return np.convolve(stuffed, RATIO * LOWPASS)[: len(stuffed)]


def downsample_once(x: np.ndarray) -> np.ndarray:
    """The same filter over a whole signal, then every third sample (reference, as above)."""
    return np.convolve(np.asarray(x, dtype=np.float64), LOWPASS)[: len(x)][::RATIO]
