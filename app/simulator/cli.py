"""`switchboard simulate-call`: one simulated Twilio call against a running server."""

from __future__ import annotations

import asyncio
from pathlib import Path

import typer

from app.settings import Settings
from app.simulator.audio import SAMPLE_RATE, load_wav_as_mulaw, synth_speech_mulaw, write_mulaw_wav
from app.simulator.conversation import CallScript
from app.simulator.twilio_caller import CallResult, CallSetupError, simulate_call


async def run_simulated_call(
    settings: Settings,
    *,
    wav: Path | None,
    say: list[str],
    server: str,
    out: Path,
    max_duration_s: float,
) -> int:
    """Place the call, save what the caller heard to `out`, print a summary; return the exit code."""
    utterances: list[bytes] = []
    if wav is not None:
        utterances.append(await asyncio.to_thread(load_wav_as_mulaw, wav))
    for words in say:
        utterances.append(await asyncio.to_thread(synth_speech_mulaw, words))
    script = CallScript(utterances=utterances, max_duration_s=max_duration_s)
    try:
        result = await simulate_call(
            server_url=server,
            public_base_url=settings.public_base_url,
            auth_token=settings.twilio_auth_token.get_secret_value(),
            account_sid=settings.twilio_account_sid,
            script=script,
        )
    except CallSetupError as exc:
        typer.echo(f"call refused: {exc}", err=True)
        if exc.body:
            typer.echo(exc.body, err=True)
        return 1
    await asyncio.to_thread(_save_audio, out, result.agent_audio_played)
    typer.echo(summarize(result, saved_to=out))
    typer.echo(await archived_transcript(settings, result.call_sid))
    return 1 if result.protocol_errors else 0


async def archived_transcript(settings: Settings, call_sid: str, *, wait_s: float = 10.0) -> str:
    """The server's archived transcript of the call, read from its database (same settings).

    The server archives when the stream ends, a moment after the simulator hangs up; a command-line
    tool may poll for that moment."""
    from app.archive.service import get_call
    from app.db import make_engine, make_sessionmaker
    from app.models import import_all_models

    import_all_models()
    engine = make_engine(settings.effective_database_url)
    try:
        deadline = asyncio.get_running_loop().time() + wait_s
        while True:
            async with make_sessionmaker(engine)() as session:
                call = await get_call(session, call_sid=call_sid)
                if call is not None:
                    lines = [f"transcript ({call.status}, {call.end_reason}):"]
                    for seg in call.segments:
                        cut = " [interrupted]" if seg.interrupted else ""
                        lines.append(f"  {seg.offset_ms / 1000:7.2f}s  {seg.speaker:>6}: {seg.text}{cut}")
                    return "\n".join(lines)
            if asyncio.get_running_loop().time() >= deadline:
                return f"transcript: call {call_sid} is not in the archive at {settings.effective_database_url}"
            await asyncio.sleep(0.2)
    finally:
        await engine.dispose()


def summarize(result: CallResult, *, saved_to: Path | None = None) -> str:
    """A short human-readable account of one simulated call."""
    lines = [
        f"call {result.call_sid} stream {result.stream_sid}",
        f"  duration {result.ended_at - result.started_at:.2f}s, hung up by {result.hung_up_by}, "
        f"close {result.close_code} {result.close_reason or ''}".rstrip(),
        f"  frames sent {result.frames_sent}/{result.frames_expected}, worst send lag {result.max_send_lag_ms:.1f} ms",
        f"  agent audio received {len(result.agent_audio) / SAMPLE_RATE:.2f}s, "
        f"played {len(result.agent_audio_played) / SAMPLE_RATE:.2f}s, "
        f"marks acked {len(result.marks_acked)}, clears {result.clears}",
    ]
    for turn in result.turns:
        latency = "no reply" if turn.latency_ms is None else f"{turn.latency_ms:.0f} ms"
        lines.append(f"  turn {turn.utterance_index + 1}: agent answered after {latency}")
    if result.dtmf_sent:
        lines.append(f"  dtmf sent: {''.join(result.dtmf_sent)}")
    for error in result.protocol_errors[:10]:
        lines.append(f"  protocol error: {error}")
    if saved_to is not None:
        lines.append(f"  agent audio as heard saved to {saved_to}")
    return "\n".join(lines)


def _save_audio(path: Path, mulaw: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_mulaw_wav(path, mulaw)
