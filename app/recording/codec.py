"""A recording's audio as a file: two channels of PCM16, Opus in Ogg (libsndfile, through soundfile).

Measured on speech (scripts/bench_recording_codec.py, docs/RECORDINGS.md): FLAC, lossless, takes 1,124 KB a
minute at 8 kHz (four times the 250 KB budget) and more at higher rates; Opus at libsndfile's compression level
0.96 takes 230-246 KB a minute at 8, 16 and 24 kHz, within it, and browsers play it natively. So: Opus in Ogg.
Not 0.97 (195-209 KB): at that rate Opus codes the two channels as intensity stereo, and one side's voice
leaks into the other's channel at -32 dB; at 0.96 they stay apart (below -45 dB).
"""

from __future__ import annotations

import io

import numpy as np
import soundfile as sf

OPUS_LEVEL = 0.96  # libsndfile's 0..1 compression level for Opus: ~30 kb/s for two channels of speech
OPUS_RATES = (8000, 12000, 16000, 24000, 48000)  # what Opus takes as its input rate
MEDIA_TYPE = "audio/ogg; codecs=opus"
PART_MEDIA_TYPE = "audio/flac"


def encode(samples: np.ndarray, rate: int) -> bytes:
    """``samples``: int16, shape (n, 2). A complete Ogg Opus file."""
    if rate not in OPUS_RATES:
        raise ValueError(f"Opus takes {OPUS_RATES} Hz, not {rate}")
    if samples.ndim != 2 or samples.shape[1] != 2 or samples.dtype != np.int16:
        raise ValueError("two channels of int16 samples")
    out = io.BytesIO()
    sf.write(out, samples, rate, format="OGG", subtype="OPUS", compression_level=OPUS_LEVEL)
    return out.getvalue()


def encode_part(samples: np.ndarray, rate: int) -> bytes:
    """A part written during the call: lossless (FLAC), so the recording is compressed once, when the parts
    are joined. Parts are short-lived and small (about 20 KB a second of two channels at 8 kHz)."""
    if samples.ndim != 2 or samples.shape[1] != 2 or samples.dtype != np.int16:
        raise ValueError("two channels of int16 samples")
    out = io.BytesIO()
    sf.write(out, samples, rate, format="FLAC", subtype="PCM_16")
    return out.getvalue()


def decode(data: bytes) -> tuple[np.ndarray, int]:
    """The file's samples (int16, shape (n, 2)) and rate."""
    samples, rate = sf.read(io.BytesIO(data), dtype="int16", always_2d=True)
    return samples, int(rate)
