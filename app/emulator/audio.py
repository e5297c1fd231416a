"""Audio for the emulated peer: G.711/PCM16 codecs and a speech-like voice.

The synthetic voice is a sum of harmonics of a 120-180 Hz fundamental, shaped by a syllable-rate
envelope with dips at word gaps: loud enough for an energy VAD, deterministic per text.
"""

from __future__ import annotations

import asyncio
import io
import shutil
import subprocess
import tempfile
import warnings
import wave
import zlib
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import soxr

from app.emulator.config import TtsMode

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop  # stdlib on 3.11; audioop-lts provides it from 3.13

FormatType = Literal["audio/pcm", "audio/pcmu", "audio/pcma"]
Pcm16 = npt.NDArray[np.int16]


@dataclass(frozen=True, slots=True)
class AudioFormat:
    """A session audio format: PCM16 LE at 24 kHz, or G.711 mu-law / A-law at 8 kHz."""

    type: FormatType

    @classmethod
    def from_session(cls, fmt: dict[str, Any] | None) -> AudioFormat:
        kind = (fmt or {}).get("type", "audio/pcm")
        if kind not in ("audio/pcm", "audio/pcmu", "audio/pcma"):
            raise ValueError(f"unsupported audio format {kind!r}")
        return cls(kind)

    @property
    def rate(self) -> int:
        return 24000 if self.type == "audio/pcm" else 8000

    @property
    def sample_bytes(self) -> int:
        return 2 if self.type == "audio/pcm" else 1

    @property
    def bytes_per_ms(self) -> float:
        return self.rate * self.sample_bytes / 1000

    def as_session(self) -> dict[str, Any]:
        """The format object as the session shows it."""
        return {"type": self.type, "rate": 24000} if self.type == "audio/pcm" else {"type": self.type}

    def duration_ms(self, n_bytes: int) -> float:
        return n_bytes / self.bytes_per_ms

    def decode(self, data: bytes) -> Pcm16:
        """Wire bytes -> PCM16 samples at ``self.rate`` (whole samples only)."""
        if self.type == "audio/pcm":
            usable = len(data) - len(data) % 2
            return np.frombuffer(data[:usable], dtype="<i2").astype(np.int16)
        linear = audioop.ulaw2lin(data, 2) if self.type == "audio/pcmu" else audioop.alaw2lin(data, 2)
        return np.frombuffer(linear, dtype=np.int16)

    def encode(self, pcm: Pcm16) -> bytes:
        """PCM16 samples at ``self.rate`` -> wire bytes."""
        raw = pcm.astype("<i2").tobytes()
        if self.type == "audio/pcm":
            return raw
        return audioop.lin2ulaw(raw, 2) if self.type == "audio/pcmu" else audioop.lin2alaw(raw, 2)


def rms(pcm: Pcm16) -> float:
    if pcm.size == 0:
        return 0.0
    as_float = pcm.astype(np.float64)
    return float(np.sqrt(np.mean(as_float * as_float)))


def synth_voice(text: str, *, rate: int, duration_ms: float) -> Pcm16:
    """Deterministic voiced signal of ``duration_ms``; word gaps follow the text's spaces."""
    n = max(0, round(rate * duration_ms / 1000))
    if n == 0:
        return np.zeros(0, dtype=np.int16)
    rng = np.random.default_rng(zlib.crc32(text.encode("utf-8")))
    t = np.arange(n, dtype=np.float64) / rate
    seconds = n / rate
    f0_base = 120.0 + 60.0 * rng.random()
    contour = 1.0 + 0.08 * np.sin(2 * np.pi * 0.7 * t + 2 * np.pi * rng.random())
    declination = 1.0 - 0.1 * t / max(seconds, 1e-3)
    phase = 2 * np.pi * np.cumsum(f0_base * contour * declination) / rate
    voiced = np.zeros(n, dtype=np.float64)
    nyquist = rate / 2
    for k in range(1, 16):
        if k * f0_base * 1.1 >= nyquist * 0.9:
            break
        formants = 1.0 + 2.0 * np.exp(-(((k * f0_base - 700.0) / 300.0) ** 2))
        formants += np.exp(-(((k * f0_base - 1200.0) / 400.0) ** 2))
        voiced += formants / k * np.sin(k * phase)
    syllable_hz = 4.0 + rng.random()
    envelope = 0.55 - 0.45 * np.cos(2 * np.pi * syllable_hz * t)
    if text:
        gains = np.array([0.15 if not c.isalnum() else 1.0 for c in text], dtype=np.float64)
        index = np.minimum((t / seconds * len(text)).astype(np.int64), len(text) - 1)
        gain = gains[index]
        width = max(1, int(rate * 0.02))
        gain = np.convolve(gain, np.ones(width) / width, mode="same")
        envelope *= gain
    fade = min(n // 2, int(rate * 0.01))
    if fade:
        ramp = np.linspace(0.0, 1.0, fade)
        envelope[:fade] *= ramp
        envelope[n - fade :] *= ramp[::-1]
    signal = voiced * envelope
    peak = float(np.max(np.abs(signal))) or 1.0
    return np.asarray(np.round(signal / peak * 0.35 * 32767), dtype=np.int16)


def _espeak_blocking(exe: str, text: str, rate: int) -> Pcm16:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "say.wav"
        subprocess.run([exe, "-w", str(path), "--", text], check=True, capture_output=True, timeout=30)
        with wave.open(io.BytesIO(path.read_bytes())) as wav:
            src_rate = wav.getframerate()
            channels = wav.getnchannels()
            frames = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
    if channels > 1:
        frames = frames.reshape(-1, channels)[:, 0]
    resampled = soxr.resample(frames.astype(np.int16), src_rate, rate)
    return np.asarray(resampled, dtype=np.int16)


class SpeechSynth:
    """Text -> PCM16 at a rate; espeak-ng renders are cached and run off the event loop."""

    def __init__(self, *, mode: TtsMode, cache_size: int = 64) -> None:
        exe = shutil.which("espeak-ng") if mode != "synthetic" else None
        if mode == "espeak" and exe is None:
            raise RuntimeError("tts='espeak' but espeak-ng is not on PATH")
        self._espeak = exe
        self._cache: OrderedDict[tuple[str, int], Pcm16] = OrderedDict()
        self._cache_size = cache_size

    @property
    def uses_espeak(self) -> bool:
        return self._espeak is not None

    async def render(self, text: str, *, rate: int, synthetic_ms: float) -> Pcm16:
        if self._espeak is None or not text.strip():
            return await asyncio.to_thread(synth_voice, text, rate=rate, duration_ms=synthetic_ms)
        key = (text, rate)
        cached = self._cache.get(key)
        if cached is not None:
            self._cache.move_to_end(key)
            return cached
        try:
            pcm = await asyncio.to_thread(_espeak_blocking, self._espeak, text, rate)
        except (OSError, subprocess.SubprocessError, wave.Error, ValueError):
            return await asyncio.to_thread(synth_voice, text, rate=rate, duration_ms=synthetic_ms)
        self._cache[key] = pcm
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return pcm
