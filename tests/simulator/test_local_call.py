"""`switchboard simulate-call --engine ...`: a whole Switchboard in the command's own process, on the
emulator, with no server, no key and no network; the call's summary and archived transcript printed."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.asyncio, pytest.mark.e2e]


@pytest.mark.parametrize("engine", ["realtime", "cascaded"])
async def test_simulate_call_with_an_engine_needs_no_server_and_no_key(tmp_path: Path, engine: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "REDIS_", "DATABASE_"))}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "from app.cli import main; main()", "simulate-call", "--engine", engine,
        "--say", "What time do you open tomorrow?", "--max-duration", "12", "--out", str(tmp_path / "agent.wav"),
        cwd=tmp_path, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 120)
    text = out.decode()
    assert process.returncode == 0, (text, err.decode()[-3000:])
    assert "turn 1: agent answered after" in text
    assert "caller: What time do you open tomorrow?" in text
    assert "agent: " in text and (tmp_path / "agent.wav").stat().st_size > 1000
