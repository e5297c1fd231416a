"""An opt-out pressed while the database is failing is retried until it is recorded, not lost."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.exc import OperationalError

import app.calls.media as media
from app.auth.keys import Role
from app.emulator.config import EmulatorConfig
from app.emulator.server import RealtimeEmulator
from tests.support import TwilioStream, archived, key_for, make_settings, open_call, serve

pytestmark = pytest.mark.asyncio
CALLER = "+12125550123"


async def test_an_opt_out_survives_two_failed_database_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_revoke = media.revoke
    attempts: list[str] = []

    async def flaky_revoke(*args: Any, **kwargs: Any) -> Any:
        attempts.append(kwargs["phone"])
        if len(attempts) <= 2:
            raise OperationalError("INSERT INTO consent_revocations", {}, ConnectionRefusedError("database away"))
        return await real_revoke(*args, **kwargs)

    monkeypatch.setattr(media, "revoke", flaky_revoke)
    monkeypatch.setattr(media, "OPT_OUT_RETRY_S", (0.0, 0.0, 0.0, 0.0))
    async with RealtimeEmulator(EmulatorConfig(tts="synthetic")) as emulator:
        settings = make_settings(tmp_path, realtime_url=emulator.url)
        key = await key_for(settings.effective_database_url, Role.ops)
        async with serve(settings) as base:
            sid, token = await open_call(base, uuid.uuid4().int % (1 << 90), direction_params={"From": CALLER})
            async with TwilioStream.open(base, call_sid=sid, token=token, auto_ack=True) as tw:
                await emulator.wait_for_session(0)
                await tw.dtmf("9")
                await tw.stop()
                await tw.wait_closed()
            record = await archived(base, settings, sid)
            async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {key}"}) as api:
                dnc = (await api.get(f"/api/v1/dnc/{CALLER}")).json()
    assert attempts == [CALLER] * 3
    assert dnc["internal"] is True
    kinds = [e["kind"] for e in record["events"]]
    assert "opted_out" in kinds and "opt_out_failed" not in kinds
    assert record["opted_out"] is True and record["disposition"] == "opted_out"


async def test_the_realtime_session_closes_when_the_call_ends_though_its_opt_out_is_still_being_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A call's end waits for its opt-out to be recorded (a slow database), but not with a Realtime
    session open: nothing listens to the model any more, so it is closed first."""
    writing, may_finish = asyncio.Event(), asyncio.Event()
    real_revoke = media.revoke

    async def slow_revoke(*args: Any, **kwargs: Any) -> Any:
        writing.set()
        await may_finish.wait()
        return await real_revoke(*args, **kwargs)

    monkeypatch.setattr(media, "revoke", slow_revoke)
    async with RealtimeEmulator(EmulatorConfig(tts="synthetic")) as emulator:
        settings = make_settings(tmp_path, realtime_url=emulator.url)
        async with serve(settings) as base:
            sid, token = await open_call(base, uuid.uuid4().int % (1 << 90), direction_params={"From": CALLER})
            async with TwilioStream.open(base, call_sid=sid, token=token, auto_ack=True) as tw:
                session = await emulator.wait_for_session(0)
                await tw.dtmf("9")
                await asyncio.wait_for(writing.wait(), 15)
                await tw.stop()
                try:
                    await asyncio.wait_for(session.closed.wait(), 10)  # while the opt-out is still being written
                    closed_first = True
                except TimeoutError:
                    closed_first = False
                may_finish.set()
                await tw.wait_closed()
            record = await archived(base, settings, sid)
    assert closed_first, "the Realtime session stayed open while the call's end waited on the database"
    assert record["opted_out"] is True
