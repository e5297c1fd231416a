"""Who may hear a recording, what is audited, and how a recording is deleted (retention, an admin): through the
real server, on a call it recorded."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select, update

from app.archive.models import AuditEntry, Call
from app.archive.retention import purge_recordings
from app.auth.keys import Role
from app.db import make_engine, make_sessionmaker
from app.emulator.config import EmulatorConfig
from app.emulator.server import RealtimeEmulator
from app.recording.codec import decode
from app.recording.storage import DirectoryStore
from tests.support import TwilioStream, agent_turn_played, archived, key_for, make_settings, open_call, serve

pytestmark = [pytest.mark.asyncio, pytest.mark.e2e]

NEW_YORK = "+12125550123"


async def recorded_call(base: str, emulator: RealtimeEmulator, n: int) -> str:
    sid, token = await open_call(base, n, direction_params={"From": NEW_YORK})
    async with TwilioStream.open(base, call_sid=sid, token=token, auto_ack=True) as tw:
        session = await emulator.wait_for_session(len(emulator.sessions) - 1 if emulator.sessions else 0)
        await agent_turn_played(tw, session, 0)  # the greeting
        await tw.stop()
        await tw.wait_closed()
    return sid


async def unjoin(database_url: str, sid: str) -> None:
    engine = make_engine(database_url)
    try:
        async with make_sessionmaker(engine)() as session, session.begin():
            await session.execute(update(Call).where(Call.call_sid == sid).values(recording_key=f"{sid}/parts/"))
    finally:
        await engine.dispose()


async def audits(database_url: str, action: str) -> list[AuditEntry]:
    engine = make_engine(database_url)
    try:
        async with make_sessionmaker(engine)() as session:
            return list(await session.scalars(select(AuditEntry).where(AuditEntry.action == action)))
    finally:
        await engine.dispose()


async def test_supervisors_and_granted_ops_hear_a_recording_others_get_403_and_every_download_is_audited(
    tmp_path: Path,
) -> None:
    async with RealtimeEmulator(EmulatorConfig(tts="synthetic")) as emulator:
        settings = make_settings(tmp_path, realtime_url=emulator.url, recording="on")
        db = settings.effective_database_url
        async with serve(settings) as base:
            sid = await recorded_call(base, emulator, 1)
            record = await archived(base, settings, sid)
            supervisor = await key_for(db, Role.supervisor)
            ops = await key_for(db, Role.ops, grants=("transcripts",))
            granted = await key_for(db, Role.ops, grants=("recordings",))
            async with httpx.AsyncClient(base_url=base) as api:

                def get(key: str, **kw: object) -> object:
                    return api.get(f"/api/v1/calls/{sid}/recording", headers={"Authorization": f"Bearer {key}",
                                   **kw.pop("headers", {})}, **kw)  # type: ignore[arg-type]  # fmt: skip

                refused = await get(ops)  # type: ignore[misc]
                whole = await get(supervisor)  # type: ignore[misc]
                part = await get(granted, headers={"Range": "bytes=100-199"})  # type: ignore[misc]
                past = await get(granted, headers={"Range": "bytes=99999999-"})  # type: ignore[misc]
                download = await get(supervisor, params={"download": "true"})  # type: ignore[misc]
                again = await get(supervisor, params={"download": "true"})  # type: ignore[misc]
                unsigned = await api.get(f"/api/v1/calls/{sid}/recording")
                await unjoin(db, sid)  # as the archive keys a call whose parts the store failed to join
                incomplete = await get(supervisor)  # type: ignore[misc]
    assert record["recording_ms"] > 0 and record["recording_deleted_at"] is None
    assert refused.status_code == 403 and "recordings" in refused.json()["detail"]
    assert unsigned.status_code == 401
    assert incomplete.status_code == 404 and incomplete.json()["title"] == "Recording incomplete"
    assert whole.status_code == 200 and whole.headers["content-type"].startswith("audio/ogg")
    assert whole.headers["accept-ranges"] == "bytes"
    samples, rate = decode(whole.content)
    assert rate == 8000 and samples.shape[1] == 2 and abs(len(samples) / 8 - record["recording_ms"]) < 40
    assert part.status_code == 206 and part.content == whole.content[100:200]
    assert part.headers["content-range"] == f"bytes 100-199/{len(whole.content)}"
    assert past.status_code == 416 and past.headers["content-range"] == f"bytes */{len(whole.content)}"
    assert download.headers["content-disposition"] == f'attachment; filename="{sid}.ogg"'
    assert again.content == download.content == whole.content
    # every download audited; playback once a minute per key and call (a player asks for many ranges)
    assert [(a.target, a.via) for a in await audits(db, "download_recording")] == [(sid, "api")] * 2
    plays = await audits(db, "play_recording")
    assert sorted(a.key_id or "" for a in plays) == sorted(k.split("_")[1] for k in (supervisor, granted))


async def test_retention_and_an_admin_delete_recordings_from_the_store_and_audit_it(tmp_path: Path) -> None:
    async with RealtimeEmulator(EmulatorConfig(tts="synthetic")) as emulator:
        settings = make_settings(tmp_path, realtime_url=emulator.url, recording="on")
        db = settings.effective_database_url
        store = DirectoryStore(tmp_path / "recordings")
        async with serve(settings) as base:
            old, erased, kept = [await recorded_call(base, emulator, n) for n in (2, 3, 4)]
            for sid in (old, erased, kept):
                assert await store.keys(f"{sid}/") == [f"{sid}/recording.ogg"]
            admin, supervisor = await key_for(db, Role.admin), await key_for(db, Role.supervisor)
            async with httpx.AsyncClient(base_url=base) as api:
                not_admin = await api.delete(f"/api/v1/calls/{erased}/recording",
                                             headers={"Authorization": f"Bearer {supervisor}"})  # fmt: skip
                deleted = await api.delete(f"/api/v1/calls/{erased}/recording",
                                           headers={"Authorization": f"Bearer {admin}"})  # fmt: skip
                gone = await api.get(f"/api/v1/calls/{erased}/recording",
                                     headers={"Authorization": f"Bearer {admin}"})  # fmt: skip
            assert (not_admin.status_code, deleted.status_code, gone.status_code) == (403, 204, 410)
            assert await store.keys(f"{erased}/") == []
            # A retention pass a day later, recordings kept for a day: only the calls started before the cutoff
            engine = make_engine(db)
            try:
                sessionmaker = make_sessionmaker(engine)
                # the cutoff falls at `kept`'s start: `old` (and `erased`) started before it
                now = datetime.fromisoformat((await archived(base, settings, kept))["started_at"]) + timedelta(days=1)
                n = await purge_recordings(sessionmaker, store, now=now, days=1)
                again = await purge_recordings(sessionmaker, store, now=now, days=1)
            finally:
                await engine.dispose()
            after = await archived(base, settings, old)
    assert n == 1 and again == 0  # the erased one was already gone; `kept` started exactly at the cutoff
    assert await store.keys(f"{old}/") == [] and await store.keys(f"{kept}/") == [f"{kept}/recording.ogg"]
    assert after["recording_deleted_at"] is not None and after["recording_ms"] > 0  # the row says what was there
    (by_admin,) = await audits(db, "delete_recording")
    assert by_admin.target == erased and by_admin.role == "admin" and by_admin.detail["objects"] == 1
    (by_retention,) = await audits(db, "recording_retention")
    assert by_retention.via == "job" and by_retention.detail["call_sids"] == [old]
