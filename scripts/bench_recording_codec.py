#!/usr/bin/env python
"""Bytes per minute of a two-channel speech recording, Opus in Ogg against FLAC (issue 15's budget: 250 KB).

    .venv/bin/python scripts/bench_recording_codec.py

The speech is espeak-ng's (a minute of a receptionist's sentences on one channel, the same two seconds later
and quieter on the other), resampled to each rate; Opus at the level the recorder uses, and at its neighbours.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.recording.codec import OPUS_LEVEL

TEXT = " ".join(["Thank you for calling Acme Dental. Our office opens at nine in the morning and we close at six."] * 9)


def main() -> None:
    with tempfile.NamedTemporaryFile(suffix=".wav") as wav:
        subprocess.run(["espeak-ng", "-w", wav.name, TEXT], check=True)
        speech, source_rate = sf.read(wav.name)
    rows = []
    for rate in (8000, 16000, 24000):
        x = np.interp(np.arange(0, len(speech) / source_rate, 1 / rate), np.arange(len(speech)) / source_rate, speech)
        both = (np.stack([x, np.roll(x, 2 * rate) * 0.5], axis=1) * 32000).astype(np.int16)
        minutes = len(x) / rate / 60
        for name, kwargs in [("flac", {"format": "FLAC", "subtype": "PCM_16", "compression_level": 1.0})] + [
            (f"opus {level}", {"format": "OGG", "subtype": "OPUS", "compression_level": level})
            for level in (OPUS_LEVEL - 0.02, OPUS_LEVEL, OPUS_LEVEL + 0.01)
        ]:
            out = io.BytesIO()
            sf.write(out, both, rate, **kwargs)
            rows.append({"rate": rate, "codec": name, "kb_per_min": round(len(out.getvalue()) / 1024 / minutes)})
    for row in rows:
        print(json.dumps(row))


if __name__ == "__main__":
    main()
