"""A whole Switchboard in one process, for a simulated call without a server, a key or a network: the app
under uvicorn (SQLite in a temporary directory, the in-process Redis stand-in), the emulator's Realtime and
transcription sessions, and its chat and speech stages. ``switchboard simulate-call --engine ...`` and
``scripts/bench_cascade.py`` place their calls against it."""

from __future__ import annotations

import asyncio
import socket
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn

from app.calls.media_socket import MediaStreamRouter
from app.emulator.audio import SpeechSynth
from app.emulator.cascade import CascadeStages
from app.emulator.config import EmulatorConfig
from app.emulator.server import RealtimeEmulator
from app.main import create_app
from app.migrate import upgrade
from app.settings import Settings

PUBLIC = "https://simulated.example.test"
TOKEN = "simulated-twilio-auth-token"  # noqa: S105 - a local, throwaway Twilio token: nothing real signs with it


@dataclass(frozen=True, slots=True)
class LocalSwitchboard:
    settings: Settings
    server_url: str
    stages: CascadeStages
    emulator: RealtimeEmulator


def _listening() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(256)
    return sock


@asynccontextmanager
async def local_switchboard(
    config: EmulatorConfig, *, engine: str, data_dir: Path | None = None, **settings: Any
) -> AsyncIterator[LocalSwitchboard]:
    """Serve until the block ends; then shut down, which waits for calls to end and be archived."""
    data_dir = data_dir or Path(tempfile.mkdtemp(prefix="switchboard-local-"))
    stages = CascadeStages(config, SpeechSynth(mode=config.tts))
    stages_sock, app_sock = _listening(), _listening()
    stages_server = uvicorn.Server(uvicorn.Config(stages.app, log_level="warning"))
    stages_task = asyncio.create_task(stages_server.serve(sockets=[stages_sock]))
    try:
        async with RealtimeEmulator(config) as emulator:
            stages_base = f"http://127.0.0.1:{stages_sock.getsockname()[1]}/v1"
            values: dict[str, Any] = {
                "public_base_url": PUBLIC, "twilio_auth_token": TOKEN, "data_dir": data_dir, "log_level": "WARNING",
                "database_url": f"sqlite+aiosqlite:///{data_dir / 'switchboard.db'}", "openai_api_key": "emulator-key",
                "openai_realtime_url": emulator.url, "engine": engine, "stt_url": emulator.url,
                "chat_base_url": stages_base, "tts_base_url": stages_base, **settings,
            }  # fmt: skip
            app_settings = Settings(**values)
            await asyncio.to_thread(upgrade, app_settings.effective_database_url)
            app_server = uvicorn.Server(
                uvicorn.Config(create_app(app_settings), log_level="warning", ws=MediaStreamRouter)
            )
            # Listening already: the kernel queues the first webhook until the server has started.
            app_task = asyncio.create_task(app_server.serve(sockets=[app_sock]))
            try:
                yield LocalSwitchboard(app_settings, f"http://127.0.0.1:{app_sock.getsockname()[1]}", stages, emulator)
            finally:
                app_server.should_exit = True
                await app_task
    finally:
        stages_server.should_exit = True
        await stages_task
