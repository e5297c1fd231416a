"""The ``switchboard`` command: serve, migrate, create-api-key, emulator, simulate-call."""

from __future__ import annotations

import asyncio
import gc
import socket
import threading
import time
from pathlib import Path
from typing import Annotated, Any

import structlog
import typer

from app.settings import Settings

cli = typer.Typer(help="Switchboard: Twilio calls bridged to the OpenAI Realtime API.", no_args_is_help=True)


@cli.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (default HOST or 127.0.0.1)")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default PORT or 8000)")] = None,
    workers: Annotated[int, typer.Option(help="uvicorn worker processes")] = 1,
    fd: Annotated[int | None, typer.Option(help="Serve on this already-listening socket (inherited)")] = None,
) -> None:
    """Run the HTTP and WebSocket server."""
    import uvicorn

    from app.main import create_app
    from app.observability import configure_logging

    settings = Settings()
    configure_logging(settings.log_level, settings.log_json)
    prepare_embedded_database(settings)
    if workers > 1:
        typer.echo("Use one process per node behind a load balancer; --workers > 1 is not supported.", err=True)
        raise typer.Exit(2)
    from app.calls.drain import DrainingServer
    from app.calls.media_socket import MediaStreamRouter

    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=host or settings.host,
        port=port or settings.port,
        ws=MediaStreamRouter,  # Twilio's media streams on picows; every other WebSocket as uvicorn does it
        ws_max_size=2 * 1024 * 1024,
        ws_per_message_deflate=False,
        log_level=settings.log_level.lower(),
        log_config=None,  # uvicorn's lines go through configure_logging's handler: the same format as ours
        access_log=False,
    )
    server = DrainingServer(config, app, settings.drain_deadline_s)
    quiet_garbage_collector()
    if fd is None:
        server.run()
    else:
        # socket(fileno=) reads the inherited socket's real family (TCP): uvicorn's own fd option takes
        # it for a Unix socket, leaves Nagle on, and every small keep-alive response waits ~40 ms.
        sock = socket.socket(fileno=fd)
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # inherited by accepted connections
        server.run(sockets=[sock])


def prepare_embedded_database(settings: Settings) -> None:
    """On the embedded SQLite database (this node's own file) ``serve`` brings the schema to head itself:
    a fresh DATA_DIR otherwise served calls whose archives all failed (no tables), and a dialer that
    failed every second. A shared database (PostgreSQL) is migrated by its operator: ``switchboard migrate``."""
    url = settings.effective_database_url
    if url.startswith("sqlite"):
        from app.migrate import upgrade

        settings.data_dir.mkdir(parents=True, exist_ok=True)
        upgrade(url)


# Young collections every 10,000 net container allocations, not 700. With a 5 ms probe timer at 100 calls the
# loop's p99 lag went from 29 ms to 5 ms; a young collection pauses 3-6 ms. Full collections then hardly ever
# start on their own (the start-up objects frozen away still count in the interpreter's "25% more
# long-lived objects" rule), and each ended call leaves ~21 KB of cyclic garbage: memory grew 7% per 10
# minutes in the 30-minute soak (docs/PERFORMANCE.md). So a full collection runs every FULL_COLLECTION_S.
GC_THRESHOLDS = (10_000, 10, 10)
FULL_COLLECTION_S = 60.0


def quiet_garbage_collector() -> None:
    """Move everything the server has built by now (modules, the app, its settings) out of the cyclic
    garbage collector's reach. A full collection otherwise walks those ~210,000 objects: 30-160 ms with
    the event loop stopped, every call's audio with it (docs/PERFORMANCE.md), several times while calls
    ramp up. What calls allocate later is collected, less often (GC_THRESHOLDS)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    threading.Thread(target=collect_every, args=(FULL_COLLECTION_S,), name="full-gc", daemon=True).start()


def collect_every(interval_s: float, rounds: int | None = None) -> None:
    """A full collection every ``interval_s`` (a thread of its own: no timer of the loop's to be late)."""
    done = 0
    while rounds is None or done < rounds:
        time.sleep(interval_s)
        gc.collect()
        done += 1


@cli.command()
def migrate(revision: Annotated[str, typer.Argument()] = "head") -> None:
    """Apply database migrations (Alembic) up to REVISION."""
    from app.migrate import upgrade

    settings = Settings()
    upgrade(settings.effective_database_url, revision)
    typer.echo(f"database at {revision}: {settings.effective_database_url}")


@cli.command("create-api-key")
def create_api_key_cmd(
    role: Annotated[str, typer.Option(help="admin | ops | supervisor")],
    name: Annotated[str, typer.Option(help="Who or what holds the key")] = "cli",
    grant: Annotated[
        list[str] | None, typer.Option(help="Extra permission, repeatable: transcripts (ops reading transcripts)")
    ] = None,
) -> None:
    """Create an API key and print it once."""
    from app.auth.keys import Role, create_api_key, utcnow
    from app.db import make_engine, make_sessionmaker
    from app.models import import_all_models

    try:
        role_value = Role(role)
    except ValueError:
        typer.echo(f"unknown role {role!r}: choose admin, ops or supervisor", err=True)
        raise typer.Exit(2) from None
    from app.auth.keys import GRANTS

    if set(grant or ()) - set(GRANTS):
        typer.echo(f"unknown grant in {grant}: known grants are {', '.join(GRANTS)}", err=True)
        raise typer.Exit(2)
    import_all_models()
    settings = Settings()

    async def run() -> str:
        from app.archive import review

        engine = make_engine(settings.effective_database_url)
        try:
            async with make_sessionmaker(engine)() as session:
                key = await create_api_key(session, role=role_value, name=name, now=utcnow(), grants=tuple(grant or ()))
                await review.audit(session, None, "create_key", target=key.split("_")[1],
                                   detail={"role": role_value.value, "name": name, "grants": grant or []}, via="cli")  # fmt: skip
                return key
        finally:
            await engine.dispose()

    key = asyncio.run(run())
    grants = f", grants {', '.join(grant)}" if grant else ""
    typer.echo(f"API key for {name!r}: role {role_value.value}{grants}, id {key.split('_')[1]}")
    typer.echo(key)
    typer.echo("Store it now: it is shown this once (only its hash is kept). Sign in to the console with it, or send")
    typer.echo("it as 'Authorization: Bearer <key>'. Revoke it with: switchboard keys revoke " + key.split("_")[1])


keys_cli = typer.Typer(help="List and revoke API keys.", no_args_is_help=True)
cli.add_typer(keys_cli, name="keys")


def _keys_session() -> Any:
    from app.db import make_engine, make_sessionmaker
    from app.models import import_all_models

    import_all_models()
    engine = make_engine(Settings().effective_database_url)
    return engine, make_sessionmaker(engine)


@keys_cli.command("list")
def keys_list() -> None:
    """Every key: id, role, grants, name, created, revoked (never a secret)."""
    from app.auth.keys import list_keys

    async def run() -> list[Any]:
        engine, sessionmaker = _keys_session()
        try:
            async with sessionmaker() as session:
                return await list_keys(session)
        finally:
            await engine.dispose()

    rows = asyncio.run(run())
    typer.echo(f"{'id':<14}{'role':<12}{'grants':<26}{'created (UTC)':<18}{'revoked (UTC)':<18}name")
    for row in rows:
        revoked = row.revoked_at.strftime("%Y-%m-%d %H:%M") if row.revoked_at else "-"
        typer.echo(f"{row.key_id:<14}{row.role:<12}{','.join(row.grants or []) or '-':<26}"
                   f"{row.created_at.strftime('%Y-%m-%d %H:%M'):<18}{revoked:<18}{row.name}")  # fmt: skip


@keys_cli.command("revoke")
def keys_revoke(key_id: Annotated[str, typer.Argument(help="the key's id (the part after sb_)")]) -> None:
    """Revoke a key at once: its requests get 401 and a console session it opened is signed out."""
    from app.archive import review
    from app.auth.keys import revoke_key, utcnow

    async def run() -> Any:
        engine, sessionmaker = _keys_session()
        try:
            async with sessionmaker() as session:
                row = await revoke_key(session, key_id, now=utcnow())
                if row is not None:
                    await review.audit(session, None, "revoke_key", target=key_id,
                                       detail={"role": row.role, "name": row.name}, via="cli")  # fmt: skip
                return row
        finally:
            await engine.dispose()

    row = asyncio.run(run())
    if row is None:
        typer.echo(f"no API key {key_id!r} (switchboard keys list shows them)", err=True)
        raise typer.Exit(1)
    typer.echo(f"revoked {key_id} ({row.role}, {row.name!r}) at {row.revoked_at:%Y-%m-%d %H:%M:%S} UTC")


@cli.command()
def dialer() -> None:
    """Run a dialer worker (several may run against PostgreSQL; one against SQLite)."""
    from app.dialer.worker import Dialer
    from app.main import build_runtime
    from app.models import import_all_models
    from app.observability import configure_logging

    settings = Settings()
    configure_logging(settings.log_level, settings.log_json)
    import_all_models()

    async def run() -> None:
        runtime = build_runtime(settings)
        try:
            await Dialer(runtime).run_forever()
        finally:
            await runtime.twilio.aclose()
            await runtime.redis.aclose()
            await runtime.engine.dispose()

    asyncio.run(run())


@cli.command()
def emulator(
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    port: Annotated[int, typer.Option()] = 8765,
    stages_port: Annotated[
        int | None, typer.Option(help="Also serve the cascaded engine's chat and speech stages here (HTTP)")
    ] = None,
) -> None:
    """Run the local OpenAI Realtime (GA) emulator (and transcription sessions; with --stages-port, the
    cascaded engine's chat completions and speech too)."""
    from app.emulator.config import local_config
    from app.emulator.server import serve_forever
    from app.observability import configure_logging

    settings = Settings()
    configure_logging(settings.log_level, settings.log_json)  # its log lines as the server's: JSON by default
    asyncio.run(serve_forever(host, port, local_config(), stages_port))


@cli.command()
def carrier(
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    port: Annotated[int, typer.Option()] = 8777,
    people: Annotated[
        Path, typer.Option(help="Who answers each number (JSON; see examples/carrier/people.json)")
    ] = Path("examples/carrier/people.json"),
    server: Annotated[
        str | None,
        typer.Option(help="Where the server listens, when PUBLIC_BASE_URL names another address (a tunnel, a proxy)"),
    ] = None,
    emulator: Annotated[
        str | None, typer.Option(help="The Realtime emulator to tell people's words to, so transcripts hold them")
    ] = "ws://127.0.0.1:8765/v1",
) -> None:
    """Run the local carrier: Twilio's Calls API and the people it rings, for campaigns run locally. Point the
    server at it with TWILIO_API_BASE_URL=http://HOST:PORT (scripts/dev does)."""
    import json

    import uvicorn

    from app.carrier.people import People, PeopleError
    from app.carrier.server import Carrier, CarrierConfig
    from app.observability import configure_logging

    settings = Settings()
    configure_logging(settings.log_level, settings.log_json)
    try:
        table = People.from_json(json.loads(people.read_text(encoding="utf-8")))
    except (OSError, ValueError, PeopleError) as exc:
        raise typer.BadParameter(str(exc), param_hint="--people") from None
    config = CarrierConfig(
        account_sid=settings.twilio_account_sid, auth_token=settings.twilio_auth_token.get_secret_value(),
        people=table, server=server, emulator=emulator or None,
    )  # fmt: skip
    structlog.get_logger().info("carrier.starting", url=f"http://{host}:{port}", calls=f"http://{host}:{port}/carrier/calls",
                                people=str(people))  # fmt: skip
    uvicorn.run(Carrier(config).app, host=host, port=port, log_config=None, access_log=False)


@cli.command("simulate-call")
def simulate_call_cmd(
    wav: Annotated[Path | None, typer.Option(help="Caller audio (any WAV)")] = None,
    say: Annotated[list[str] | None, typer.Option(help="Caller words, one turn per --say")] = None,
    server: Annotated[str, typer.Option(help="Where the server listens")] = "http://127.0.0.1:8000",
    out: Annotated[Path, typer.Option(help="Where to save the agent's audio")] = Path("var/agent.wav"),
    max_duration: Annotated[
        float, typer.Option(help="Seconds before the caller hangs up whatever happens (the summary says so)")
    ] = 120.0,
    engine: Annotated[
        str | None,
        typer.Option(help="realtime or cascaded: run a whole Switchboard here on the emulator (no server, no key)"),
    ] = None,
    dtmf: Annotated[
        list[str] | None, typer.Option(help="Press a key: DIGIT@SECONDS from the stream's start, repeatable (9@4.5)")
    ] = None,
    emulator: Annotated[
        str, typer.Option(help="The emulator to tell the caller's words to, so its transcript holds them")
    ] = "ws://127.0.0.1:8765/v1",
) -> None:
    """Play Twilio against a running server (or, with --engine, one started here on the emulator): signed
    webhook, media stream, marks, keys pressed; print the transcript."""
    from app.simulator.cli import run_simulated_call

    if engine is not None and engine not in ("realtime", "cascaded"):
        raise typer.BadParameter("realtime or cascaded", param_hint="--engine")
    presses: list[tuple[float, str]] = []
    for item in dtmf or []:
        digit, _, at = item.partition("@")
        try:
            seconds = float(at)
        except ValueError:
            raise typer.BadParameter(f"{item!r}: DIGIT@SECONDS, e.g. 9@4.5", param_hint="--dtmf") from None
        if len(digit) != 1 or digit not in "0123456789*#" or not 0 <= seconds <= max_duration:
            raise typer.BadParameter(f"{item!r}: one of 0-9 * #, at a time within the call", param_hint="--dtmf")
        presses.append((seconds, digit))
    run = run_simulated_call(
        Settings(), wav=wav, say=say or [], server=server, out=out, max_duration_s=max_duration, engine=engine,
        dtmf=presses, emulator=emulator,
    )  # fmt: skip
    raise typer.Exit(asyncio.run(run))


def main() -> None:
    cli()
