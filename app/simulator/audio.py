"""Caller-side audio for the call simulator: WAV and speech in, G.711 mu-law 8 kHz out.

Twilio Media Streams carry mono mu-law at 8 kHz in 20 ms frames of 160 bytes
(https://www.twilio.com/docs/voice/media-streams/websocket-messages); everything here
produces or consumes that.
"""

from __future__ import annotations

import base64
import os
import shutil
import struct
import subprocess
import warnings
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import soxr

with warnings.catch_warnings():
    # Deprecated in 3.11-3.12, removed in 3.13 where the audioop-lts backport provides it.
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

SAMPLE_RATE = 8000
FRAME_MS = 20
FRAME_S = FRAME_MS / 1000
FRAME_BYTES = SAMPLE_RATE * FRAME_MS // 1000  # 160: one byte per mu-law sample
MULAW_SILENCE = 0xFF  # mu-law code for linear 0
SILENCE_FRAME = bytes([MULAW_SILENCE]) * FRAME_BYTES
SILENCE_FRAME_B64 = base64.b64encode(SILENCE_FRAME)

# A frame counts as speech when its RMS (16-bit linear) exceeds this: about -36 dBFS, above
# line noise and comfortably below any spoken syllable.
SPEECH_RMS_THRESHOLD = 500

_SYNTH_SECONDS_PER_CHAR = 0.060
_SYNTH_F0_HZ = 140.0
_SYNTH_SYLLABLES_PER_S = 4.0

_WAVE_FORMAT_PCM = 0x0001
_WAVE_FORMAT_IEEE_FLOAT = 0x0003
_WAVE_FORMAT_ALAW = 0x0006
_WAVE_FORMAT_MULAW = 0x0007
_WAVE_FORMAT_EXTENSIBLE = 0xFFFE

FloatArray = npt.NDArray[np.float32]


class UnsupportedAudio(ValueError):
    """The WAV data uses an encoding the simulator cannot read."""


@dataclass(frozen=True, slots=True)
class PreparedUtterance:
    """An utterance cut into 20 ms frames with base64 payloads ready to splice into JSON."""

    frames_b64: tuple[bytes, ...]
    last_speech_frame: int  # index of the last frame above SPEECH_RMS_THRESHOLD; -1 if none


def prepare_utterance(mulaw: bytes) -> PreparedUtterance:
    """Split mu-law audio into padded 160-byte frames, base64 them once, find where speech ends."""
    frames_b64: list[bytes] = []
    last_speech = -1
    for index, start in enumerate(range(0, len(mulaw), FRAME_BYTES)):
        frame = mulaw[start : start + FRAME_BYTES]
        if len(frame) < FRAME_BYTES:
            frame = frame + bytes([MULAW_SILENCE]) * (FRAME_BYTES - len(frame))
        if is_speech_frame(frame):
            last_speech = index
        frames_b64.append(base64.b64encode(frame))
    return PreparedUtterance(frames_b64=tuple(frames_b64), last_speech_frame=last_speech)


def is_speech_frame(mulaw_frame: bytes) -> bool:
    """Energy gate used to locate the end of the caller's speech."""
    return audioop.rms(audioop.ulaw2lin(mulaw_frame, 2), 2) > SPEECH_RMS_THRESHOLD


def mulaw_to_pcm16(mulaw: bytes) -> bytes:
    return audioop.ulaw2lin(mulaw, 2)


def pcm16_to_mulaw(pcm16: bytes) -> bytes:
    return audioop.lin2ulaw(pcm16, 2)


def load_wav_as_mulaw(path: str | os.PathLike[str]) -> bytes:
    """Read a WAV file at any rate, width and channel count; return mono mu-law 8 kHz.

    Handles PCM 8/16/24/32-bit, IEEE float 32/64-bit, A-law, mu-law and WAVE_FORMAT_EXTENSIBLE.
    """
    with open(path, "rb") as wav_file:
        data = wav_file.read()
    samples, rate = _decode_wav(data)
    return _float_to_mulaw_8k(samples, rate)


def write_mulaw_wav(path: str | os.PathLike[str], mulaw: bytes) -> None:
    """Write mu-law audio as a standard 8 kHz mono 16-bit PCM WAV that any player opens."""
    pcm = mulaw_to_pcm16(mulaw)
    header = struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        b"RIFF",
        36 + len(pcm),
        b"WAVE",
        b"fmt ",
        16,
        _WAVE_FORMAT_PCM,
        1,
        SAMPLE_RATE,
        SAMPLE_RATE * 2,
        2,
        16,
        b"data",
        len(pcm),
    )
    with open(path, "wb") as wav_file:
        wav_file.write(header)
        wav_file.write(pcm)


def synth_speech_mulaw(text: str, *, use_espeak: bool = True) -> bytes:
    """Speak `text` as mu-law 8 kHz: espeak-ng when installed, else a synthetic voiced signal.

    The synthetic voice (harmonics of ~140 Hz, 4 Hz syllable envelope, ~60 ms per character)
    is not intelligible, but energy- and pitch-based VADs take it for speech.
    """
    if use_espeak:
        spoken = _espeak_mulaw(text)
        if spoken is not None:
            return spoken
    return _synthetic_voice_mulaw(text)


def _espeak_mulaw(text: str) -> bytes | None:
    exe = shutil.which("espeak-ng")
    if exe is None:
        return None
    try:
        proc = subprocess.run(
            [exe, "--stdout", "--stdin"],
            input=text.encode("utf-8"),
            capture_output=True,
            check=True,
            timeout=60,
        )
        samples, rate = _decode_wav(proc.stdout)
    except (OSError, subprocess.SubprocessError, UnsupportedAudio):
        return None
    if samples.size == 0:
        return None
    return _float_to_mulaw_8k(samples, rate)


def _synthetic_voice_mulaw(text: str) -> bytes:
    n = max(1, round(max(1, len(text)) * _SYNTH_SECONDS_PER_CHAR * SAMPLE_RATE))
    t = np.arange(n, dtype=np.float64) / SAMPLE_RATE
    f0 = _SYNTH_F0_HZ * (1.0 + 0.06 * np.sin(2 * np.pi * 1.3 * t))  # slow intonation
    phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
    voice = np.zeros(n, dtype=np.float64)
    harmonic = 1
    while harmonic * _SYNTH_F0_HZ * 1.1 < SAMPLE_RATE / 2 - 200:
        voice += np.sin(harmonic * phase) / harmonic
        harmonic += 1
    envelope = 0.55 - 0.45 * np.cos(2 * np.pi * _SYNTH_SYLLABLES_PER_S * t)
    fade = min(n // 2, SAMPLE_RATE // 100)  # 10 ms fade in and out, no clicks
    if fade > 0:
        ramp = np.linspace(0.0, 1.0, fade)
        envelope[:fade] *= ramp
        envelope[n - fade :] *= ramp[::-1]
    signal = voice * envelope
    peak = float(np.max(np.abs(signal))) or 1.0
    pcm = (signal / peak * 0.5 * 32767).astype("<i2")
    return pcm16_to_mulaw(pcm.tobytes())


def _float_to_mulaw_8k(samples: FloatArray, rate: int) -> bytes:
    if rate != SAMPLE_RATE and samples.size:
        samples = np.asarray(soxr.resample(samples, rate, SAMPLE_RATE), dtype=np.float32)
    pcm = np.clip(np.rint(samples * 32768.0), -32768, 32767).astype("<i2")
    return pcm16_to_mulaw(pcm.tobytes())


def _decode_wav(data: bytes) -> tuple[FloatArray, int]:
    """Parse a RIFF/WAVE byte string into mono float32 in [-1, 1] and its sample rate.

    Tolerates streamed WAVs whose data size field is a placeholder (espeak-ng --stdout).
    """
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise UnsupportedAudio("not a RIFF/WAVE file")
    fmt: tuple[int, int, int, int] | None = None  # (format, channels, rate, bits)
    payload: bytes | None = None
    pos = 12
    while pos + 8 <= len(data):
        chunk_id = data[pos : pos + 4]
        (size,) = struct.unpack_from("<I", data, pos + 4)
        body = data[pos + 8 : pos + 8 + size]
        if chunk_id == b"fmt ":
            if len(body) < 16:
                raise UnsupportedAudio("short fmt chunk")
            tag, channels, rate, _, _, bits = struct.unpack_from("<HHIIHH", body)
            if tag == _WAVE_FORMAT_EXTENSIBLE and len(body) >= 26:
                (tag,) = struct.unpack_from("<H", body, 24)  # first two bytes of SubFormat GUID
            fmt = (tag, channels, rate, bits)
        elif chunk_id == b"data":
            payload = body
            break
        pos += 8 + size + (size & 1)
    if fmt is None or payload is None:
        raise UnsupportedAudio("missing fmt or data chunk")
    tag, channels, rate, bits = fmt
    if channels < 1 or rate < 1:
        raise UnsupportedAudio(f"bad channel count {channels} or rate {rate}")
    samples = _decode_samples(payload, tag, bits)
    usable = samples.size - samples.size % channels
    mono = samples[:usable].reshape(-1, channels).mean(axis=1, dtype=np.float32)
    return np.ascontiguousarray(mono, dtype=np.float32), rate


def _decode_samples(payload: bytes, tag: int, bits: int) -> FloatArray:
    if tag == _WAVE_FORMAT_PCM:
        width = bits // 8
        if width not in (1, 2, 3, 4):
            raise UnsupportedAudio(f"unsupported PCM width {bits} bits")
        payload = payload[: len(payload) - len(payload) % width]
        if width == 1:  # 8-bit WAV is unsigned
            payload = audioop.bias(payload, 1, -128)
        pcm16 = payload if width == 2 else audioop.lin2lin(payload, width, 2)
        return np.frombuffer(pcm16, dtype="<i2").astype(np.float32) / 32768.0
    if tag == _WAVE_FORMAT_IEEE_FLOAT:
        if bits not in (32, 64):
            raise UnsupportedAudio(f"unsupported float width {bits} bits")
        dtype = "<f4" if bits == 32 else "<f8"
        width = bits // 8
        payload = payload[: len(payload) - len(payload) % width]
        return np.frombuffer(payload, dtype=dtype).astype(np.float32)
    if tag in (_WAVE_FORMAT_MULAW, _WAVE_FORMAT_ALAW):
        pcm16 = audioop.ulaw2lin(payload, 2) if tag == _WAVE_FORMAT_MULAW else audioop.alaw2lin(payload, 2)
        return np.frombuffer(pcm16, dtype="<i2").astype(np.float32) / 32768.0
    raise UnsupportedAudio(f"unsupported WAV format tag {tag:#06x}")
