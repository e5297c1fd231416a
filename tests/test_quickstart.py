"""The README's quickstart, run as a new user would: a fresh clone, its own fresh .venv made by `scripts/dev`,
the server and the emulator it starts, then the simulated call the README shows, whose output must have the
shape the README promises, caller lines included (the words said).

The README's commands are run as written, with the ports moved (PORT, EMULATOR_PORT, CARRIER_PORT, which
scripts/dev documents, and the matching --server and --emulator) so that the test does not depend on 8000 and 8765 being
free; `scripts/test`, the README's second command, is what runs this very suite."""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import signal
import socket
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SETUP_TIMEOUT_S = 600  # a fresh .venv: every dependency installed
pytestmark = [pytest.mark.asyncio, pytest.mark.e2e, pytest.mark.timeout(SETUP_TIMEOUT_S + 300)]


def quickstart() -> tuple[str, list[str], list[str]]:
    """The README's quickstart: the dev command, the simulate-call command, and the sample output's lines."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```(\w+)\n(.*?)```", section, re.DOTALL)
    bash = next(body for lang, body in blocks if lang == "bash")
    dev = next(line.split("#", 1)[0].strip() for line in bash.splitlines() if line.startswith("scripts/dev"))
    console = next(body for lang, body in blocks if lang == "console").splitlines()
    command = next(line.removeprefix("$ ") for line in console if line.startswith("$ "))
    return dev, shlex.split(command), [line for line in console if not line.startswith("$ ")]


def shape(line: str) -> str:
    """A printed line without what changes from run to run: times, counts, ids; a transcript line's words."""
    line = re.sub(r"(agent|caller): .*", r"\1:", line)
    return re.sub(r"CA[0-9a-f]{32}|MZ[0-9a-f]{32}|\d+(\.\d+)?", "#", line).strip()


def started_at(printed: list[str]) -> int:
    """The index of the server's app.started line, or past the end while it has not come."""
    return next((i for i, line in enumerate(printed) if "app.started" in line), len(printed))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_the_readme_quickstart_runs_on_a_fresh_clone_and_prints_what_it_promises(tmp_path: Path) -> None:
    dev, simulate, sample = quickstart()
    assert dev == "scripts/dev" and simulate[:2] == [".venv/bin/switchboard", "simulate-call"]
    clone = tmp_path / "switchboard"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    port, emulator_port, carrier_port = free_port(), free_port(), free_port()
    while emulator_port + 1 in (port, carrier_port):  # the emulator's stages listen on the next port
        emulator_port = free_port()
    unset = ("OPENAI_", "REDIS_", "DATABASE_", "VIRTUAL_ENV", "TWILIO_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(unset)}
    env |= {"PORT": str(port), "EMULATOR_PORT": str(emulator_port), "CARRIER_PORT": str(carrier_port),
            "DATA_DIR": str(tmp_path / "data")}  # fmt: skip
    server = await asyncio.create_subprocess_exec(
        *shlex.split(dev), cwd=clone, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    printed: list[str] = []
    try:
        assert server.stdout is not None
        async with asyncio.timeout(SETUP_TIMEOUT_S):  # until the server says it listens
            # The carrier (started first) runs uvicorn too: the server's start is the one after its app.started
            while not any("Application startup complete" in line for line in printed[started_at(printed) :]):
                line = (await server.stdout.readline()).decode()
                assert line, "scripts/dev ended:\n" + "".join(printed[-40:])
                printed.append(line)
        drain = asyncio.create_task(server.stdout.read())  # keep its pipe flowing
        said = [simulate[i + 1] for i, arg in enumerate(simulate) if arg == "--say"]
        call = await asyncio.create_subprocess_exec(
            *simulate, "--server", f"http://127.0.0.1:{port}", "--emulator", f"ws://127.0.0.1:{emulator_port}/v1",
            cwd=clone, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(call.communicate(), 180)
    finally:
        os.killpg(server.pid, signal.SIGINT)  # Ctrl-C, as the README's user stops it
        await asyncio.wait_for(server.wait(), 60)
    started = "".join(printed)
    assert f"console:  http://127.0.0.1:{port}/console" in started and "create-api-key --role admin" in started
    # scripts/dev started the local carrier, and the server says it talks to it (not to Twilio)
    assert f"local carrier (Twilio's Calls API and scripted people) on 127.0.0.1:{carrier_port}" in started
    assert f"127.0.0.1:{carrier_port}" in printed[started_at(printed)], printed[started_at(printed)]
    text = out.decode()
    assert call.returncode == 0, (text, err.decode()[-3000:])
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith("{")]  # (JSON logs aside)
    # Line for line, the README sample's shape: the words before the first number (or id) of each line
    assert [shape(line) for line in lines] == [shape(line) for line in sample if line.strip()], text
    transcript = text.split("transcript (", 1)[1]
    assert [
        re.sub(r"^\s*[\d.]+s\s+caller: ", "", line) for line in transcript.splitlines() if "caller: " in line
    ] == said
    assert "hung up by the caller (its script done)" in text and (clone / "var" / "agent.wav").stat().st_size > 1000
    assert server.returncode is not None
    drain.cancel()
