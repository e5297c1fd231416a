"""Caller and agent audio paths: G.711 mu-law with audioop, a stateful resampler per direction per call.

The resampler keeps its filter history across 20 ms frames; resampling each frame on its own would click
at every frame boundary. Two are offered (``RESAMPLER``): ``fir``, the default, a linear-phase polyphase FIR
(app/core/resample.py) that holds back only its 1.92 ms group delay and turns every caller frame into its
480 samples at once; ``soxr``, soxr's stream at ``RESAMPLE_QUALITY``, which holds back 20-73 ms and emits in
blocks (docs/PERFORMANCE.md says why the default is what it is).
"""

from __future__ import annotations

import audioop
from typing import Literal

import numpy as np
import soxr

from app.core.resample import KERNEL, Downsampler, Kernel, Upsampler

AudioFormat = Literal["pcm24k", "pcmu"]
Resampler = Literal["fir", "soxr"]
ResampleQuality = Literal["LQ", "MQ", "HQ", "VHQ"]
DEFAULT_RESAMPLER: Resampler = "fir"
# For RESAMPLER=soxr. Measured on 20 ms frames (docs/PERFORMANCE.md): HQ delays the caller's end of turn
# by 20-60 ms (mean 42 ms), MQ by 20-80 ms (mean 55 ms), LQ by 20-40 ms but rolls off 8 dB at 3.4 kHz.
DEFAULT_RESAMPLE_QUALITY: ResampleQuality = "HQ"

TWILIO_RATE = 8000
REALTIME_PCM_RATE = 24000
MULAW_BYTES_PER_MS = 8  # 8 kHz, one byte per sample
PCM24K_BYTES_PER_MS = 48  # 24 kHz, two bytes per sample


def mulaw_to_pcm16(mulaw: bytes) -> bytes:
    return audioop.ulaw2lin(mulaw, 2)


def pcm16_to_mulaw(pcm: bytes) -> bytes:
    return audioop.lin2ulaw(pcm, 2)


def _soxr_stream(
    audio_format: AudioFormat, resampler: Resampler, quality: ResampleQuality, rate_in: int, rate_out: int
) -> soxr.ResampleStream | None:
    """soxr's stream for one direction, when pcm24k is resampled with RESAMPLER=soxr."""
    if audio_format != "pcm24k" or resampler != "soxr":
        return None
    return soxr.ResampleStream(rate_in, rate_out, 1, dtype="int16", quality=quality)


class CallerAudioPath:
    """Twilio mu-law 8 kHz -> the Realtime input format, continuous across frames."""

    __slots__ = ("_fir", "_stream", "samples_in", "samples_out")

    def __init__(
        self,
        audio_format: AudioFormat,
        quality: ResampleQuality = DEFAULT_RESAMPLE_QUALITY,
        resampler: Resampler = DEFAULT_RESAMPLER,
        kernel: Kernel = KERNEL,
    ) -> None:
        self._fir = Upsampler(kernel=kernel) if audio_format == "pcm24k" and resampler == "fir" else None
        self._stream = _soxr_stream(audio_format, resampler, quality, TWILIO_RATE, REALTIME_PCM_RATE)
        self.samples_in = 0
        self.samples_out = 0

    @property
    def delay_samples(self) -> int:
        """Fixed delay of the resampler, in output samples."""
        if self._fir is not None:
            return self._fir.delay
        return int(self._stream.delay()) if self._stream is not None else 0

    @property
    def withheld_samples(self) -> int:
        """Output samples a stream fed N input samples owes but has not emitted: soxr trims its fixed delay
        off the start, the FIR emits it (as its first 1.92 ms) and owes nothing."""
        return int(self._stream.delay()) if self._stream is not None else 0

    def convert(self, mulaw: bytes) -> bytes:
        self.samples_in += len(mulaw)
        fir = self._fir
        if fir is not None:
            data = fir.pcm(audioop.ulaw2lin(mulaw, 2))
            self.samples_out += len(data) >> 1
            return data
        if self._stream is None:
            self.samples_out += len(mulaw)
            return mulaw
        pcm8 = np.frombuffer(audioop.ulaw2lin(mulaw, 2), dtype=np.int16)
        out = self._stream.resample_chunk(pcm8)
        self.samples_out += len(out)
        resampled: bytes = out.tobytes()
        return resampled


class AgentAudioPath:
    """The Realtime output format -> Twilio mu-law 8 kHz, continuous across deltas."""

    __slots__ = ("_fir", "_odd", "_samples_in", "_samples_out", "_stream")

    def __init__(
        self,
        audio_format: AudioFormat,
        quality: ResampleQuality = DEFAULT_RESAMPLE_QUALITY,
        resampler: Resampler = DEFAULT_RESAMPLER,
        kernel: Kernel = KERNEL,
    ) -> None:
        self._fir = Downsampler(kernel=kernel) if audio_format == "pcm24k" and resampler == "fir" else None
        self._stream = _soxr_stream(audio_format, resampler, quality, REALTIME_PCM_RATE, TWILIO_RATE)
        self._samples_in = 0
        self._samples_out = 0
        self._odd = b""

    def convert(self, audio: bytes) -> bytes:
        fir = self._fir
        if fir is None and self._stream is None:
            return audio
        if self._odd:
            audio = self._odd + audio
            self._odd = b""
        if len(audio) & 1:
            # Keep the stray byte for the next delta; dropping it would misalign every sample after it.
            audio, self._odd = audio[:-1], audio[-1:]
        self._samples_in += len(audio) // 2
        if fir is not None:
            pcm8 = fir.pcm(audio)
            self._samples_out += len(pcm8) >> 1
            return audioop.lin2ulaw(pcm8, 2)
        out = self._stream.resample_chunk(np.frombuffer(audio, dtype=np.int16))  # type: ignore[union-attr]
        self._samples_out += len(out)
        return audioop.lin2ulaw(out.tobytes(), 2)

    def drain(self) -> bytes:
        """The tail the filter still holds (the end of a response), pushed out with silence.

        soxr emits output in blocks, so silence is fed until everything owed has come out; the
        extra silence is trimmed. The FIR pushes out its group delay (1.92 ms) and starts clean."""
        fir = self._fir
        if fir is not None:
            self._odd = b""
            self._samples_in = self._samples_out = 0
            return audioop.lin2ulaw(fir.flush().tobytes(), 2)
        if self._stream is None:
            return b""
        owed = self._samples_in // 3 - self._samples_out
        chunks: list[np.ndarray] = []
        got = 0
        for _ in range(16):
            if got >= owed:
                break
            out = self._stream.resample_chunk(np.zeros(720, dtype=np.int16))
            chunks.append(out)
            got += len(out)
        if not chunks or owed <= 0:
            return b""
        tail = np.concatenate(chunks)[:owed]
        self._samples_out += len(tail)
        self._samples_in = self._samples_out * 3  # the silence fed is not owed to anyone
        return audioop.lin2ulaw(tail.tobytes(), 2)

    def discard(self) -> None:
        """Forget held audio (after a barge-in it must not leak into the next response)."""
        if self._fir is not None:
            self._fir.reset()
            self._samples_in = self._samples_out = 0
            self._odd = b""
        if self._stream is not None:
            self._stream.clear()
            self._samples_in = self._samples_out = 0
            self._odd = b""


def upstream_ms(audio_format: AudioFormat, n_bytes: int) -> float:
    """Duration of ``n_bytes`` of audio in the Realtime format."""
    per_ms = PCM24K_BYTES_PER_MS if audio_format == "pcm24k" else MULAW_BYTES_PER_MS
    return n_bytes / per_ms
