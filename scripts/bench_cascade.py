#!/usr/bin/env python
"""The cascaded engine's latency budget (issue 14, acceptance 2), against the emulator's three stages.

    .venv/bin/python scripts/bench_cascade.py                  # 20 turns, 300/350/200 ms, 50 tokens/s
    .venv/bin/python scripts/bench_cascade.py --turns 20 --json var/bench_cascade.json

Each turn: the caller speaks 0.8 s, then is silent; the emulator's transcription session detects the end
of speech (server VAD, 500 ms of silence), gives the final transcript ``--transcript-ms`` later, the chat
stage its first token ``--chat-ms`` after the request and a word per token at ``--tokens-per-s``, the
speech stage its first bytes ``--speech-ms`` after each request. For every turn it reports, from the end of
the caller's speech: final transcript, first chat token, first speech bytes, first agent audio handed to
the transport; the budget (the three delays + the first clause's generation time + 40 ms); and the
longest gap in the answer's audio if it were played in real time from its first byte.

The engine runs without a transport here (the transport adds its resampling, ~12 us per frame): this
measures the sequencing, the adapters and the sockets.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import sys
from pathlib import Path
from typing import Any

import numpy as np
import uvicorn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.adapters.openai_cascade import ChatStage, SpeechStage, TranscriptionConnector
from app.calls.cascaded import CascadedEngine
from app.core import cascade as seq
from app.core.realtime_events import TranscriptionSettings
from app.emulator.audio import SpeechSynth
from app.emulator.cascade import CascadeStages
from app.emulator.config import EmulatorConfig
from app.emulator.server import RealtimeEmulator

ANSWER = "Our office opens at nine in the morning. We close at six on weekdays. On Saturdays we close at noon."
RATE = 24_000


def voiced(ms: int) -> bytes:
    t = np.arange(RATE * ms // 1000) / RATE
    wave = sum(np.sin(2 * np.pi * 150 * k * t) / k for k in range(1, 6))
    return np.asarray(wave * 8000, dtype=np.int16).tobytes()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    config = EmulatorConfig(
        tts="synthetic", transcripts=[f"Question number {i}?" for i in range(args.turns)],
        reply_text=lambda heard: ANSWER, chat_first_token_delay_s=args.chat_ms / 1000,
        chat_tokens_per_s=args.tokens_per_s, speech_first_bytes_delay_s=args.speech_ms / 1000,
    )  # fmt: skip
    config.faults.late_transcript_s = args.transcript_ms / 1000
    stages = CascadeStages(config, SpeechSynth(mode="synthetic"))
    loop = asyncio.get_running_loop()
    arrivals: dict[int, list[tuple[int, int]]] = {}  # turn -> (ms, bytes) of each audio hand-over
    events: list[seq.Command] = []
    said = asyncio.Event()

    def play(turn: int, pcm: bytes) -> None:
        arrivals.setdefault(turn, []).append((int(loop.time() * 1000), len(pcm)))

    def on_command(command: seq.Command) -> None:
        events.append(command)
        if isinstance(command, seq.AgentSaid):
            said.set()

    # The emulated HTTP stages on a loopback socket bound here: requests queue in the kernel until it serves.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    base = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    server = uvicorn.Server(uvicorn.Config(stages.app, log_level="warning"))
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    async with RealtimeEmulator(config) as emulator:
        stt = TranscriptionConnector(api_key="k", websocket_base_url=emulator.url)
        chat = ChatStage(api_key="k", base_url=base, model="gpt-4.1-mini")
        speech = SpeechStage(api_key="k", base_url=base, model="gpt-4o-mini-tts", voice="alloy")
        engine = CascadedEngine(
            sequencer=seq.CascadeSequencer("Answer briefly.", greeting="Hello."), transcription=stt,
            transcription_settings=TranscriptionSettings(), chat=chat, speech=speech, tools=[], play=play,
            clear=lambda turn: None, heard_ms=lambda: None, on_command=on_command,
            now_ms=lambda: int(loop.time() * 1000),
        )  # fmt: skip
        runner = asyncio.create_task(engine.run())
        await asyncio.wait_for(said.wait(), 15)  # the greeting
        for _ in range(args.turns):
            said.clear()
            audio = voiced(800) + bytes(RATE * 2 * 900 // 1000)
            for start in range(0, len(audio), 960):
                await engine.caller_audio(audio[start : start + 960])
                await asyncio.sleep(0.02)  # the caller's clock
            await asyncio.wait_for(said.wait(), 30)
        await engine.close()
        runner.cancel()
        for client in (stt, chat, speech):
            await client.aclose()
    server.should_exit = True
    await serving

    first_clause_words = len(ANSWER.split(".")[0].split())
    generation_ms = (first_clause_words - 1) * 1000 / args.tokens_per_s  # the first word comes with the delay
    budget = args.transcript_ms + args.chat_ms + args.speech_ms + generation_ms + 40
    turns = []
    for turn in range(2, args.turns + 2):
        stages_ms = {c.stage: c.ms for c in events if isinstance(c, seq.StageReached) and c.turn == turn}
        chunks = arrivals.get(turn, [])
        start, gap, played = chunks[0][0], 0.0, 0
        for at, size in chunks:
            gap = max(gap, (at - start) - played / 48)  # how long playback would have waited for this chunk
            played += size
        turns.append({"turn": turn, **stages_ms, "gap_ms": round(max(0.0, gap), 1)})
    first = [t["first_audio"] for t in turns]
    return {
        "turns": len(turns), "budget_ms": round(budget, 1),
        "first_audio_p50_ms": statistics.median(first), "first_audio_max_ms": max(first),
        "transcript_p50_ms": statistics.median(t["transcript"] for t in turns),
        "chat_first_token_p50_ms": statistics.median(t["chat_first_token"] for t in turns),
        "speech_first_bytes_p50_ms": statistics.median(t["speech_first_bytes"] for t in turns),
        "max_gap_ms": max(t["gap_ms"] for t in turns), "per_turn": turns,
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--turns", type=int, default=20)
    parser.add_argument("--transcript-ms", type=float, default=300)
    parser.add_argument("--chat-ms", type=float, default=350)
    parser.add_argument("--speech-ms", type=float, default=200)
    parser.add_argument("--tokens-per-s", type=float, default=50)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    result = asyncio.run(run(args))
    summary = {k: v for k, v in result.items() if k != "per_turn"}
    print(json.dumps(summary))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
