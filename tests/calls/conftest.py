from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from app.emulator.config import EmulatorConfig
from app.emulator.server import RealtimeEmulator


@pytest.fixture
async def emulator() -> AsyncIterator[RealtimeEmulator]:
    """A Realtime emulator on a loopback port, with deterministic synthetic speech."""
    async with RealtimeEmulator(EmulatorConfig(tts="synthetic")) as emu:
        yield emu
