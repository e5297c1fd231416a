#!/usr/bin/env python
"""The cascaded engine's latency budget (issue 14, acceptance 2): a whole call through the real server.

    .venv/bin/python scripts/bench_cascade.py                  # 20 turns, 300/350/200 ms, 50 tokens/s
    .venv/bin/python scripts/bench_cascade.py --turns 20 --json var/bench_cascade.json

One process: the server (``create_app`` under uvicorn, ENGINE=cascaded, SQLite, the in-process Redis), the
emulator's transcription sessions and its chat and speech stages, and the Twilio simulator as the caller,
speaking ``--turns`` utterances in real time and playing the agent's audio as Twilio would (marks echoed as
the audio before them plays). The emulator gives the final transcript ``--transcript-ms`` after the end of
speech, the first chat token ``--chat-ms`` after the request then a word per token at ``--tokens-per-s``,
and each clause's first speech bytes ``--speech-ms`` after its request.

Per turn it reports, from the end of the caller's speech: the server's stages (final transcript, first chat
token, first speech bytes, first audio sent to Twilio: the call's ``turn_stage`` events) and the phone's
(first agent audio received by the simulator); the budget (the three delays + the first clause's generation
time + 40 ms); and any gap in the answer's playback at the phone (the audio queue running dry mid-answer).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import statistics
import sys
from pathlib import Path
from typing import Any

from sqlalchemy import select

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.archive.models import CallEvent
from app.db import make_engine, make_sessionmaker
from app.emulator.config import EmulatorConfig
from app.simulator.audio import synth_speech_mulaw
from app.simulator.conversation import CallScript
from app.simulator.local import local_switchboard
from app.simulator.twilio_caller import simulate_call

ANSWER = "Our office opens at nine in the morning. We close at six on weekdays. On Saturdays we close at noon."


async def run(args: argparse.Namespace) -> dict[str, Any]:
    config = EmulatorConfig(
        tts="synthetic", transcripts=[f"Question number {i}?" for i in range(args.turns)],
        reply_text=lambda heard: ANSWER, chat_first_token_delay_s=args.chat_ms / 1000,
        chat_tokens_per_s=args.tokens_per_s, speech_first_bytes_delay_s=args.speech_ms / 1000, speech_speed=2.0,
    )  # fmt: skip
    config.faults.late_transcript_s = args.transcript_ms / 1000
    utterances = [synth_speech_mulaw(f"Question number {i}?", use_espeak=False) for i in range(args.turns)]
    script = CallScript(utterances=utterances, max_duration_s=args.turns * 12.0, gap_after_reply_s=0.5)
    async with local_switchboard(config, engine="cascaded") as local:
        result = await simulate_call(
            server_url=local.server_url, public_base_url=local.settings.public_base_url,
            auth_token=local.settings.twilio_auth_token.get_secret_value(),
            account_sid=local.settings.twilio_account_sid, script=script,
        )  # fmt: skip
    # Shut down: the server waited for the call's end, archive included.
    engine = make_engine(local.settings.effective_database_url)
    async with make_sessionmaker(engine)() as session:
        rows = list(await session.scalars(select(CallEvent).where(CallEvent.call_sid == result.call_sid)))
    await engine.dispose()

    first_clause_words = len(ANSWER.split(".")[0].split())
    generation_ms = (first_clause_words - 1) * 1000 / args.tokens_per_s  # the first word comes with the delay
    budget = args.transcript_ms + args.chat_ms + args.speech_ms + generation_ms + 40
    stages_by_turn: dict[int, dict[str, int]] = {}
    for row in rows:
        if row.kind == "turn_stage":
            stages_by_turn.setdefault(row.detail["turn"], {})[row.detail["stage"]] = row.detail["ms"]
    stretches = result.playback_stretches
    turns = []
    for n, timing in enumerate(result.turns):
        server = stages_by_turn.get(n + 2, {})  # turn 1 is the greeting
        phone = timing.latency_ms
        # Gaps at the phone during this answer: playback stretches between its first audio and the next turn.
        until = result.turns[n + 1].speech_end_sent_at if n + 1 < len(result.turns) else result.ended_at
        mine = [s for s in stretches if timing.first_agent_audio_at is not None
                and timing.first_agent_audio_at - 0.001 <= s[0] < until]  # fmt: skip
        gap = max((b[0] - a[1] for a, b in itertools.pairwise(mine)), default=0.0)
        turns.append({"turn": n + 2, **server, "phone_first_audio": phone, "gap_ms": round(gap * 1000, 1)})
    answered = [t for t in turns if t["phone_first_audio"] is not None and "first_audio" in t]
    return {
        "turns": len(answered), "budget_ms": round(budget, 1),
        "phone_first_audio_p50_ms": round(statistics.median(t["phone_first_audio"] for t in answered), 1),
        "phone_first_audio_max_ms": round(max(t["phone_first_audio"] for t in answered), 1),
        "server_first_audio_p50_ms": statistics.median(t["first_audio"] for t in answered),
        "transcript_p50_ms": statistics.median(t["transcript"] for t in answered),
        "chat_first_token_p50_ms": statistics.median(t["chat_first_token"] for t in answered),
        "speech_first_bytes_p50_ms": statistics.median(t["speech_first_bytes"] for t in answered),
        "max_gap_ms": max(t["gap_ms"] for t in answered), "per_turn": turns,
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
