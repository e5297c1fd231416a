"""`switchboard simulate-call`: one simulated Twilio call against a running server."""

from __future__ import annotations

import asyncio
from pathlib import Path

import typer

from app.settings import Settings
from app.simulator.audio import SAMPLE_RATE, load_wav_as_mulaw, synth_speech_mulaw, write_mulaw_wav
from app.simulator.conversation import CallScript
from app.simulator.said import DEFAULT_EMULATOR, SaidTeller
from app.simulator.twilio_caller import CallResult, CallSetupError, simulate_call


async def run_simulated_call(
    settings: Settings,
    *,
    wav: Path | None,
    say: list[str],
    server: str,
    out: Path,
    max_duration_s: float,
    engine: str | None = None,
    dtmf: list[tuple[float, str]] | None = None,
    emulator: str = DEFAULT_EMULATOR,
) -> int:
    """Place the call, save what the caller heard to `out`, print a summary; return the exit code.

    With ``engine``, no server is needed: a whole Switchboard runs in this process on the emulator (no key,
    no network) with that engine, and the call is placed against it. Against a running server, the caller's
    words are told to the emulator at ``emulator`` as it says them (if one listens there), so that the
    transcript holds them."""
    utterances: list[bytes] = []
    words: list[str] = []
    if wav is not None:
        utterances.append(await asyncio.to_thread(load_wav_as_mulaw, wav))
        words.append("")  # a recording's words are not known
    for said in say:
        utterances.append(await asyncio.to_thread(synth_speech_mulaw, said))
        words.append(said)
    teller = SaidTeller(emulator if engine is None else "")
    script = CallScript(
        utterances=utterances, max_duration_s=max_duration_s, dtmf=sorted(dtmf or []),
        on_speak=lambda index, seconds: teller.tell(words[index], seconds),
    )  # fmt: skip
    if engine is not None:
        from app.emulator.config import EmulatorConfig
        from app.simulator.local import local_switchboard

        # The emulator hears what the caller was scripted to say (its words stand for the transcription)
        async with local_switchboard(EmulatorConfig(transcripts=[w for w in words if w]), engine=engine) as local:
            code, call_sid = await _place(local.settings, script, local.server_url, out)
        settings = local.settings  # shut down: the call is archived
    else:
        if any(words) and not await teller.open():
            typer.echo(f"(no emulator at {teller.url}: the caller's words are not told; a real model hears them)")
        try:
            code, call_sid = await _place(settings, script, server, out)
        finally:
            await teller.close()
    if call_sid is not None:
        typer.echo(await archived_transcript(settings, call_sid))
    return code


async def _place(settings: Settings, script: CallScript, server: str, out: Path) -> tuple[int, str | None]:
    """Place the call and print its summary: (the exit code, the call's sid once placed)."""
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
        return 1, None
    await asyncio.to_thread(_save_audio, out, result.agent_audio_played)
    typer.echo(summarize(result, saved_to=out))
    return (1 if result.protocol_errors else 0), result.call_sid


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
        f"  duration {result.ended_at - result.started_at:.2f}s, {ended(result)}, "
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


def ended(result: CallResult) -> str:
    if result.hung_up_by == "server":
        return "hung up by the server"
    if result.cut_at_max_duration:
        # The cap as given, not the measured length (on the line above): a caller running late hangs up a
        # little after its cap, and 4.6 s is not "--max-duration 5".
        cap = result.max_duration_s if result.max_duration_s is not None else result.ended_at - result.started_at
        return f"cut at --max-duration ({cap:g} s) before the caller's script was done"
    return "hung up by the caller (its script done)"


def _save_audio(path: Path, mulaw: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_mulaw_wav(path, mulaw)
