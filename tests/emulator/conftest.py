"""Emulator fixtures: a loopback emulator per test."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio

from app.emulator.server import RealtimeEmulator
from tests.emulator.helpers import fast_config


@pytest_asyncio.fixture
async def emulator() -> AsyncIterator[RealtimeEmulator]:
    emu = RealtimeEmulator(fast_config())
    await emu.start()
    try:
        yield emu
    finally:
        await emu.close()
