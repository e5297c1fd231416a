"""Deterministic test audio in mu-law 8 kHz."""

from __future__ import annotations

import numpy as np

from app.simulator.audio import FRAME_BYTES, MULAW_SILENCE, pcm16_to_mulaw


def tone_mulaw(ms: int, *, freq: float = 440.0, amplitude: float = 0.5) -> bytes:
    n = 8 * ms
    t = np.arange(n) / 8000
    pcm = (np.sin(2 * np.pi * freq * t) * amplitude * 32767).astype("<i2")
    return pcm16_to_mulaw(pcm.tobytes())


def silence_mulaw(ms: int) -> bytes:
    return bytes([MULAW_SILENCE]) * (8 * ms)


def is_silence_frame(frame: bytes) -> bool:
    return len(frame) == FRAME_BYTES and frame == bytes([MULAW_SILENCE]) * FRAME_BYTES
