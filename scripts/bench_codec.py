#!/usr/bin/env python
"""Per-frame cost of the media hot path, one piece at a time.

    .venv/bin/python scripts/bench_codec.py                 # 50k frames x 5 repeats
    .venv/bin/python scripts/bench_codec.py --frames 20000 --repeats 3 --json var/bench_codec.json

Every case is timed twice: the whole loop (``mean``: total / frames, median over repeats) and
each call on its own with ``time.perf_counter_ns`` (``p50``/``p99`` over all calls of all repeats,
minus the measured cost of an empty timed call). Figures are microseconds per 20 ms of audio:
agent-side cases process 100 ms deltas and are divided by 5.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import gc
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import soxr

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_common import format_table, machine_info, percentile

from app.core import realtime_events as rt
from app.core.audio import AgentAudioPath, CallerAudioPath, mulaw_to_pcm16
from app.core.bridge import BridgeConfig, CallBridge, UpstreamReady
from app.core.resample import KERNEL, KERNELS, upsample_once
from app.core.tools import BUILTIN_TOOLS, greeting_instructions
from app.core.twilio_media import MediaReceived, StreamStarted, parse_twilio_message
from app.simulator.audio import synth_speech_mulaw

FRAME_BYTES = 160  # 20 ms of mu-law 8 kHz
DELTA_MS = 100  # the Realtime service (and the emulator) send ~100 ms audio deltas


def make_bridge(audio_format: str) -> CallBridge:
    """A bridge in steady state, built as tests/core/test_bridge.py builds one."""
    config = BridgeConfig(
        session=rt.SessionSettings(
            model="gpt-realtime",
            instructions="Be brief.",
            voice="marin",
            audio_format=audio_format,  # type: ignore[arg-type]
            tools=BUILTIN_TOOLS,
        ),
        greeting_instructions=greeting_instructions("Acme Dental"),
    )
    bridge = CallBridge(config, started_at_ms=0)
    bridge.handle(StreamStarted("MZ" + "1" * 32, "CA" + "1" * 32, "AC1", {"direction": "inbound"}), 0)
    bridge.handle(UpstreamReady(), 0)
    bridge.handle(rt.ResponseCreated("resp_greet"), 1)
    return bridge


def twilio_media_json(payload: bytes, seq: int) -> str:
    """A media message exactly as Twilio (and app/simulator) sends it."""
    b64 = base64.b64encode(payload).decode()
    return (
        f'{{"event":"media","sequenceNumber":"{seq}","media":{{"track":"inbound","chunk":"{seq}",'
        f'"timestamp":"{seq * 20}","payload":"{b64}"}},"streamSid":"MZ{"1" * 32}"}}'
    )


def realtime_delta_json(audio: bytes) -> bytes:
    return orjson.dumps(
        {
            "type": "response.output_audio.delta",
            "event_id": "event_abc123",
            "response_id": "resp_1",
            "item_id": "item_1",
            "output_index": 0,
            "content_index": 0,
            "delta": base64.b64encode(audio).decode(),
        }
    )


def stdlib_parse_twilio(raw: str) -> tuple[bytes, int]:
    """parse_twilio_message's media branch with json instead of orjson (for comparison)."""
    msg = json.loads(raw)
    media = msg["media"]
    return binascii.a2b_base64(media["payload"], strict_mode=True), int(media["timestamp"])


class Case:
    def __init__(self, name: str, per_call_frames: float, make: Callable[[], Callable[[int], Any]], note: str = ""):
        self.name = name
        self.per_call_frames = per_call_frames  # 20 ms frames of audio handled by one call
        self.make = make  # fresh state per repeat -> fn(i)
        self.note = note


def build_cases(frames_mulaw: list[bytes], deltas_pcm24: list[bytes], deltas_mulaw: list[bytes]) -> list[Case]:
    nf = len(frames_mulaw)
    nd = len(deltas_pcm24)
    media_json = [twilio_media_json(f, i) for i, f in enumerate(frames_mulaw)]
    media_json_b = [m.encode() for m in media_json]
    pcm24_frames = [CallerAudioPath("pcm24k").convert(f) for f in frames_mulaw[:64]]
    pcm8_frames = [np.frombuffer(mulaw_to_pcm16(f), dtype=np.int16) for f in frames_mulaw]
    delta_json_pcm = [realtime_delta_json(d) for d in deltas_pcm24]
    delta_json_mulaw = [realtime_delta_json(d) for d in deltas_mulaw]
    media_events = [MediaReceived(f) for f in frames_mulaw]
    per_delta = DELTA_MS / 20

    def caller(fmt: str, resampler: str = "fir", kernel: str = KERNEL) -> Callable[[], Callable[[int], Any]]:
        def make() -> Callable[[int], Any]:
            convert = CallerAudioPath(fmt, resampler=resampler, kernel=kernel).convert  # type: ignore[arg-type]
            return lambda i: convert(frames_mulaw[i % nf])

        return make

    def stateless() -> Callable[[int], Any]:
        return lambda i: soxr.resample(pcm8_frames[i % nf], 8000, 24000, quality="MQ").tobytes()

    def stateless_full() -> Callable[[int], Any]:
        import audioop

        def fn(i: int) -> Any:
            pcm8 = np.frombuffer(audioop.ulaw2lin(frames_mulaw[i % nf], 2), dtype=np.int16)
            return soxr.resample(pcm8, 8000, 24000, quality="MQ").tobytes()

        return fn

    def agent(fmt: str, resampler: str = "fir", kernel: str = KERNEL) -> Callable[[], Callable[[int], Any]]:
        def make() -> Callable[[int], Any]:
            convert = AgentAudioPath(fmt, resampler=resampler, kernel=kernel).convert  # type: ignore[arg-type]
            src = deltas_pcm24 if fmt == "pcm24k" else deltas_mulaw
            return lambda i: convert(src[i % nd])

        return make

    def bridge_media(fmt: str) -> Callable[[], Callable[[int], Any]]:
        def make() -> Callable[[int], Any]:
            handle = make_bridge(fmt).handle
            return lambda i: handle(media_events[i % nf], i * 20)

        return make

    def bridge_parse_media(fmt: str) -> Callable[[], Callable[[int], Any]]:
        def make() -> Callable[[int], Any]:
            handle = make_bridge(fmt).handle
            return lambda i: handle(parse_twilio_message(media_json[i % nf]), i * 20)

        return make

    def bridge_delta(fmt: str) -> Callable[[], Callable[[int], Any]]:
        def make() -> Callable[[int], Any]:
            bridge = make_bridge(fmt)
            handle = bridge.handle
            src = delta_json_pcm if fmt == "pcm24k" else delta_json_mulaw
            parse = rt.parse_server_event

            def fn(i: int) -> Any:
                # a new item every 50 deltas (5 s) so per-item dicts stay realistic
                ev = parse(src[i % nd])
                ev.item_id = f"item_{i // 50}"
                return handle(ev, i * DELTA_MS)

            return fn

        return make

    return [
        Case(
            "twilio parse: parse_twilio_message (orjson, str)",
            1,
            lambda: lambda i: parse_twilio_message(media_json[i % nf]),
        ),
        Case(
            "twilio parse: parse_twilio_message (orjson, bytes)",
            1,
            lambda: lambda i: parse_twilio_message(media_json_b[i % nf]),
        ),
        Case(
            "twilio parse: stdlib json.loads + a2b_base64", 1, lambda: lambda i: stdlib_parse_twilio(media_json[i % nf])
        ),
        Case("  json: orjson.loads (media msg)", 1, lambda: lambda i: orjson.loads(media_json[i % nf])),
        Case("  json: json.loads (media msg)", 1, lambda: lambda i: json.loads(media_json[i % nf])),
        *(Case(f"caller: CallerAudioPath(pcm24k).convert (fir, {k})", 1, caller("pcm24k", "fir", k)) for k in KERNELS),
        Case("caller: CallerAudioPath(pcm24k).convert (soxr HQ)", 1, caller("pcm24k", "soxr")),
        Case("caller: CallerAudioPath(pcmu).convert", 1, caller("pcmu")),
        Case("caller: stateless soxr.resample 8k->24k (no ulaw)", 1, stateless),
        Case("caller: ulaw2lin + stateless soxr.resample", 1, stateless_full),
        Case("append: audio_append(960 B pcm24k)", 1, lambda: lambda i: rt.audio_append(pcm24_frames[i % 64])),
        Case("append: audio_append(160 B pcmu)", 1, lambda: lambda i: rt.audio_append(frames_mulaw[i % nf])),
        *(
            Case(f"agent: AgentAudioPath(pcm24k).convert 100ms (fir, {k})", per_delta, agent("pcm24k", "fir", k))
            for k in KERNELS
        ),
        Case("agent: AgentAudioPath(pcm24k).convert 100ms (soxr HQ)", per_delta, agent("pcm24k", "soxr")),
        Case("agent: AgentAudioPath(pcmu).convert 100ms", per_delta, agent("pcmu")),
        Case(
            "agent: parse_server_event(delta 100ms pcm24k)",
            per_delta,
            lambda: lambda i: rt.parse_server_event(delta_json_pcm[i % nd]),
        ),
        Case("agent: json.loads(delta 100ms pcm24k)", per_delta, lambda: lambda i: json.loads(delta_json_pcm[i % nd])),
        Case("bridge: handle(MediaReceived) pcm24k", 1, bridge_media("pcm24k")),
        Case("bridge: handle(MediaReceived) pcmu", 1, bridge_media("pcmu")),
        Case("bridge: parse + handle(MediaReceived) pcm24k", 1, bridge_parse_media("pcm24k")),
        Case("bridge: parse + handle(MediaReceived) pcmu", 1, bridge_parse_media("pcmu")),
        Case("bridge: parse + handle(AudioDelta 100ms) pcm24k", per_delta, bridge_delta("pcm24k")),
        Case("bridge: parse + handle(AudioDelta 100ms) pcmu", per_delta, bridge_delta("pcmu")),
    ]


def timer_overhead_ns(n: int = 200_000) -> float:
    pc = time.perf_counter_ns
    noop = lambda i: None  # noqa: E731
    samples = []
    for i in range(n):
        t0 = pc()
        noop(i)
        samples.append(pc() - t0)
    return statistics.median(samples)


def run_case(case: Case, n: int, repeats: int, overhead_ns: float) -> dict[str, Any]:
    pc = time.perf_counter_ns
    means: list[float] = []
    per_call: list[int] = []
    calls = max(1, int(n / case.per_call_frames))
    for _ in range(repeats):
        fn = case.make()
        for i in range(min(1000, calls)):  # warm up (soxr filter priming, caches)
            fn(i)
        gc.collect()
        gc.disable()
        try:
            t0 = pc()
            for i in range(calls):
                fn(i)
            means.append((pc() - t0) / calls)
            fn = case.make()
            for i in range(min(1000, calls)):
                fn(i)
            samples = [0] * calls
            for i in range(calls):
                t = pc()
                fn(i)
                samples[i] = pc() - t
        finally:
            gc.enable()
        per_call.extend(samples)
    scale = 1 / 1000 / case.per_call_frames  # ns per call -> us per 20 ms frame
    p50 = (percentile(per_call, 50) - overhead_ns) * scale
    p99 = (percentile(per_call, 99) - overhead_ns) * scale
    return {
        "case": case.name,
        "calls": calls * repeats,
        "frames_per_call": case.per_call_frames,
        "mean_us_per_frame": statistics.median(means) * scale,
        "mean_us_per_frame_repeats": [m * scale for m in means],
        "p50_us_per_frame": max(0.0, p50),
        "p99_us_per_frame": max(0.0, p99),
        "max_us_per_frame": (max(per_call) - overhead_ns) * scale,
    }


def continuity_check(frames_mulaw: list[bytes]) -> dict[str, float]:
    """What stateless per-frame resampling costs in quality: error vs one-shot resampling."""
    pcm8 = np.frombuffer(mulaw_to_pcm16(b"".join(frames_mulaw[:500])), dtype=np.int16)
    reference = soxr.resample(pcm8, 8000, 24000, quality="MQ").astype(np.float64)
    path = CallerAudioPath("pcm24k", resampler="soxr")
    stream = np.frombuffer(b"".join(path.convert(f) for f in frames_mulaw[:500]), dtype=np.int16)
    fir = np.frombuffer(b"".join(CallerAudioPath("pcm24k").convert(f) for f in frames_mulaw[:500]), dtype=np.int16)
    fir_reference = upsample_once(pcm8.astype(np.float64))
    stateless = np.concatenate(
        [soxr.resample(pcm8[i : i + 160], 8000, 24000, quality="MQ") for i in range(0, len(pcm8), 160)]
    ).astype(np.float64)

    def snr(x: np.ndarray) -> float:
        n = min(len(x), len(reference)) - 2000
        ref = reference[1000 : 1000 + n]
        err = x[1000 : 1000 + n] - ref
        return float(10 * np.log10(np.sum(ref**2) / max(1e-9, np.sum(err**2))))

    # soxr's stream output is already aligned with the one-shot output (it withholds, not shifts)
    stream_aligned = stream.astype(np.float64)
    stream_aligned = np.concatenate([stream_aligned, np.zeros(max(0, len(reference) - len(stream_aligned)))])
    fir_err = fir.astype(np.float64) - fir_reference
    fir_snr = float(10 * np.log10(np.sum(fir_reference**2) / max(1e-9, np.sum(fir_err**2))))
    return {
        "snr_db_stream_vs_oneshot": snr(stream_aligned),
        "snr_db_stateless_vs_oneshot": snr(stateless),
        "snr_db_fir_frames_vs_one_pass": fir_snr,
    }


def turn_detection_delay(speech: bytes) -> dict[str, dict[str, float]]:
    """Extra time before a server VAD can see the end of speech, caused by the caller-side resampler.

    Feeds speech + silence frame by frame through CallerAudioPath and the emulator's energy VAD (500 ms
    silence), and compares the frame at which speech_stopped fires with the same audio sent as pcmu
    (no resampling). soxr streams withhold output (filter delay + block processing), so the silence that
    completes the turn reaches the Realtime side later. Several phase offsets are tried.
    """
    from app.emulator.audio import AudioFormat
    from app.emulator.vad import EnergyVad, SpeechStopped

    def stop_frame(fmt: str, quality: str, lead_frames: int) -> int:
        resampler = "fir" if quality == "fir" else "soxr"
        path = CallerAudioPath(fmt, "HQ" if quality == "fir" else quality, resampler)  # type: ignore[arg-type]
        wire = AudioFormat("audio/pcm" if fmt == "pcm24k" else "audio/pcmu")  # type: ignore[arg-type]
        vad = EnergyVad(threshold_rms=500)
        audio = b"\xff" * 160 * lead_frames + speech + b"\xff" * 160 * 60
        for k in range(len(audio) // 160):
            out = path.convert(audio[k * 160 : (k + 1) * 160])
            if not out:
                continue
            events = vad.feed(wire.decode(out), wire.rate, silence_ms=500, prefix_padding_ms=300, floor_ms=0)
            if any(isinstance(e, SpeechStopped) for e in events):
                return k
        return -1

    out: dict[str, dict[str, float]] = {}
    leads = range(0, 8)
    base = [stop_frame("pcmu", "MQ", lead) for lead in leads]
    for quality in ("fir", "LQ", "MQ", "HQ", "VHQ"):
        extra = [(stop_frame("pcm24k", quality, lead) - b) * 20.0 for lead, b in zip(leads, base, strict=True)]
        out[f"pcm24k {quality if quality == 'fir' else 'soxr ' + quality}"] = {
            "min_ms": min(extra),
            "mean_ms": sum(extra) / len(extra),
            "max_ms": max(extra),
        }
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=50_000, help="20 ms frames per repeat (default 50000)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--only", default="", help="run only cases whose name contains this")
    ap.add_argument("--json", dest="json_path", default=None, help="write machine-readable results here")
    args = ap.parse_args()

    speech = synth_speech_mulaw(
        "Hello, I would like to move my appointment to Thursday afternoon if possible, thank you very much.",
        use_espeak=False,
    )
    speech += b"\xff" * (len(speech) // 2)
    frames = [speech[i : i + FRAME_BYTES] for i in range(0, len(speech) - FRAME_BYTES + 1, FRAME_BYTES)]
    # agent audio: the same signal at 24 kHz PCM16 and mu-law, cut into 100 ms deltas
    pcm8 = np.frombuffer(mulaw_to_pcm16(speech), dtype=np.int16)
    pcm24 = soxr.resample(pcm8, 8000, 24000).astype(np.int16).tobytes()
    d24 = 24 * 2 * DELTA_MS
    deltas_pcm24 = [pcm24[i : i + d24] for i in range(0, len(pcm24) - d24 + 1, d24)]
    d8 = 8 * DELTA_MS
    deltas_mulaw = [speech[i : i + d8] for i in range(0, len(speech) - d8 + 1, d8)]

    overhead = timer_overhead_ns()
    info = machine_info()
    print(f"# {info['cpu_model']}, {info['nproc']} CPUs, Python {info['python']}, soxr {soxr.__version__}")
    print(f"# {args.frames} frames x {args.repeats} repeats per case; timer overhead {overhead:.0f} ns subtracted")
    results = []
    for case in build_cases(frames, deltas_pcm24, deltas_mulaw):
        if args.only and args.only not in case.name:
            continue
        res = run_case(case, args.frames, args.repeats, overhead)
        results.append(res)
        print(
            f"  {res['case']:<52} mean {res['mean_us_per_frame']:7.2f}  p50 {res['p50_us_per_frame']:7.2f}"
            f"  p99 {res['p99_us_per_frame']:7.2f} us/frame",
            flush=True,
        )
    quality = continuity_check(frames)
    vad_delay = turn_detection_delay(speech[: len(speech) * 2 // 3])
    print()
    print(
        format_table(
            ["case (us per 20 ms frame)", "mean", "p50", "p99"],
            [[r["case"], r["mean_us_per_frame"], r["p50_us_per_frame"], r["p99_us_per_frame"]] for r in results],
        )
    )
    print()
    print(
        "resampling continuity (SNR vs one-shot resample of the whole signal): "
        f"stateful stream {quality['snr_db_stream_vs_oneshot']:.1f} dB, "
        f"stateless per-frame {quality['snr_db_stateless_vs_oneshot']:.1f} dB"
    )
    print("turn-end delay added by the caller resampler (vs pcmu, 20 ms frame granularity, 8 phases):")
    for name, d in vad_delay.items():
        print(f"  {name:<11} min {d['min_ms']:5.0f} ms  mean {d['mean_ms']:5.1f} ms  max {d['max_ms']:5.0f} ms")
    if args.json_path:
        Path(args.json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json_path).write_text(
            json.dumps(
                {
                    "machine": info,
                    "frames": args.frames,
                    "repeats": args.repeats,
                    "timer_overhead_ns": overhead,
                    "results": results,
                    "resample_continuity": quality,
                    "turn_end_delay_vs_pcmu": vad_delay,
                },
                indent=2,
            )
        )
        print(f"wrote {args.json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
