"""Calls from the console's "Talk to the agent" page, through the real server: the page's socket played by a
test client (the browser itself: tests/console/test_talk_browser.py), each engine against the emulator."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pytest
import websockets
from websockets.asyncio.client import ClientConnection

from app.archive import review
from app.auth.keys import Role
from app.db import make_engine, make_sessionmaker
from app.emulator.audio import SpeechSynth
from app.emulator.cascade import CascadeStages
from app.emulator.config import EmulatorConfig
from app.emulator.server import RealtimeEmulator
from app.recording.codec import decode
from app.settings import Settings
from tests.console.support import LOCAL_BASE, sign_in
from tests.emulator.helpers import silence, voiced
from tests.support import archived, key_for, make_settings, serve, serve_asgi

pytestmark = [pytest.mark.asyncio, pytest.mark.e2e]

DATA_CSRF = re.compile(r'data-csrf="([^"]+)"')


@dataclass
class Rig:
    settings: Settings
    base: str
    emulator: RealtimeEmulator
    stages: CascadeStages


@asynccontextmanager
async def web_rig(tmp_path: Path, config: EmulatorConfig, **overrides: Any) -> AsyncIterator[Rig]:
    async with (
        RealtimeEmulator(config) as emulator,
        serve_asgi((stages := CascadeStages(config, SpeechSynth(mode="synthetic"))).app) as stages_base,
    ):
        settings = make_settings(
            tmp_path, realtime_url=emulator.url, public_base_url=LOCAL_BASE, stt_url=emulator.url,
            chat_base_url=f"{stages_base}/v1", tts_base_url=f"{stages_base}/v1", **overrides,
        )  # fmt: skip
        async with serve(settings) as base:
            yield Rig(settings, base, emulator, stages)


async def signed_in(rig: Rig, role: Role = Role.supervisor, grants: tuple[str, ...] = ()) -> tuple[str, str]:
    """A console session through the real sign-in form: (its cookie header, the talk page's CSRF token)."""
    key = await key_for(rig.settings.effective_database_url, role, grants=grants)
    async with httpx.AsyncClient(base_url=rig.base) as client:
        await sign_in(client, key)
        page = await client.get("/console/talk")
        cookie = "; ".join(f"{c.name}={c.value}" for c in client.cookies.jar)
    match = DATA_CSRF.search(page.text)
    return cookie, match.group(1) if match else ""


@dataclass
class Page:
    """The page's side of the socket: agent audio collected, marks echoed as they come (instant playback)."""

    ws: ClientConnection
    audio: bytearray = field(default_factory=bytearray)
    messages: list[dict[str, Any]] = field(default_factory=list)
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    reader: asyncio.Task[None] | None = None

    async def read(self) -> None:
        try:
            async for raw in self.ws:
                async with self.changed:
                    if isinstance(raw, bytes):
                        self.audio += raw
                    else:
                        message = orjson.loads(raw)
                        self.messages.append(message)
                        if message["type"] == "mark":
                            await self.ws.send(orjson.dumps({"type": "mark", "name": message["name"]}).decode())
                    self.changed.notify_all()
        except websockets.ConnectionClosed:
            pass
        finally:
            async with self.changed:
                self.changed.notify_all()

    async def until(self, predicate: Any, timeout: float = 15.0) -> None:
        async with asyncio.timeout(timeout), self.changed:
            while not predicate():
                await self.changed.wait()

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m["type"] == kind]

    async def speak(self, ms: int) -> None:
        audio = voiced(ms).tobytes() + silence(900).tobytes()
        for start in range(0, len(audio), 960):  # 20 ms frames, as the page's worklet sends them
            await self.ws.send(audio[start : start + 960])


@asynccontextmanager
async def page(rig: Rig, cookie: str, *, origin: str | None = None) -> AsyncIterator[Page]:
    url = rig.base.replace("http://", "ws://") + "/console/talk/ws"
    headers = {"Cookie": cookie}
    async with websockets.connect(url, additional_headers=headers, origin=origin or rig.base, max_size=None) as ws:  # type: ignore[arg-type]
        p = Page(ws)
        p.reader = asyncio.create_task(p.read())
        try:
            yield p
        finally:
            p.reader.cancel()


@pytest.mark.parametrize("engine", ["realtime", "cascaded"])
async def test_a_call_from_the_page_greets_answers_and_is_archived_as_a_web_call_under_its_key(
    tmp_path: Path, engine: str
) -> None:
    config = EmulatorConfig(tts="synthetic", transcripts=["What are your hours?"],
                            reply_text=lambda heard: "We open at nine.")  # fmt: skip
    async with web_rig(tmp_path, config) as rig:
        cookie, csrf = await signed_in(rig)
        async with page(rig, cookie) as p:
            await p.ws.send(orjson.dumps({"type": "start", "csrf": csrf, "engine": engine}).decode())
            await p.until(lambda: bool(p.of("started")))
            (started,) = p.of("started")
            assert started["engine"] == engine and started["call_sid"].startswith("WB")
            await p.until(lambda: any(m["speaker"] == "agent" for m in p.of("transcript")))  # the greeting, heard
            greeting_audio = len(p.audio)
            assert greeting_audio > 0 and greeting_audio % 2 == 0  # PCM16 as it is: nothing resampled
            await p.speak(800)
            await p.until(lambda: len(p.of("transcript")) >= 3)
            await p.ws.send(orjson.dumps({"type": "hangup"}).decode())
            await p.until(lambda: p.ws.close_code is not None)
        record = await archived(rig.base, rig.settings, started["call_sid"])
    lines = [(s["speaker"], s["text"]) for s in record["transcript"]]
    assert lines[1:] == [("caller", "What are your hours?"), ("agent", "We open at nine.")]
    assert lines[0][0] == "agent"
    assert [(t["speaker"], t["text"]) for t in p.of("transcript")] == lines  # the page showed what was archived
    assert record["direction"] == "web" and record["end_reason"] == "caller hung up"
    (web,) = [e["detail"] for e in record["events"] if e["kind"] == "web_call"]
    assert web["engine"] == engine and web["key_id"]
    assert {"engine": engine} == {
        "engine": next(e["detail"]["engine"] for e in record["events"] if e["kind"] == "engine")
    }


async def test_the_socket_is_refused_before_it_is_read_without_a_session_from_another_origin_or_without_the_grant(
    tmp_path: Path,
) -> None:
    async with web_rig(tmp_path, EmulatorConfig(tts="synthetic")) as rig:
        url = rig.base.replace("http://", "ws://") + "/console/talk/ws"
        with pytest.raises(websockets.InvalidStatus) as no_session:
            async with websockets.connect(url, origin=rig.base):  # type: ignore[arg-type]
                pass
        cookie, csrf = await signed_in(rig)
        with pytest.raises(websockets.InvalidStatus) as elsewhere:
            async with websockets.connect(url, additional_headers={"Cookie": cookie},
                                          origin="https://evil.example"):  # type: ignore[arg-type]  # fmt: skip
                pass
        ops_cookie, _ = await signed_in(rig, Role.ops)
        with pytest.raises(websockets.InvalidStatus) as no_grant:
            async with websockets.connect(url, additional_headers={"Cookie": ops_cookie}, origin=rig.base):  # type: ignore[arg-type]
                pass
        granted, granted_csrf = await signed_in(rig, Role.ops, grants=("talk",))
        async with page(rig, granted) as p:
            await p.ws.send(orjson.dumps({"type": "start", "csrf": granted_csrf}).decode())
            await p.until(lambda: bool(p.of("started")))
            await p.ws.send(orjson.dumps({"type": "hangup"}).decode())
            await p.until(lambda: p.ws.close_code is not None)
        # A session's cookie with another session's CSRF token (or none): closed with a reason, no call made.
        async with page(rig, cookie) as p:
            await p.ws.send(orjson.dumps({"type": "start", "csrf": granted_csrf}).decode())
            await p.until(lambda: p.ws.close_code is not None)
        assert p.ws.close_code == 1008 and "CSRF" in (p.ws.close_reason or "") and not p.of("started")
        assert csrf != granted_csrf
    for refused in (no_session, elsewhere, no_grant):
        assert refused.value.response.status_code == 403


async def archived_after_shutdown(settings: Settings, sid: str) -> dict[str, Any]:
    """The archived call read from the database once the server has shut down, which waits for every call
    to end, archive included (a call closed for bad input is archived after its socket closed)."""
    engine = make_engine(settings.effective_database_url)
    try:
        async with make_sessionmaker(engine)() as session:
            view = await review.load_call(session, sid)
    finally:
        await engine.dispose()
    assert view is not None, f"{sid} not archived"
    return view.as_dict()


async def test_bad_frames_from_the_page_are_counted_and_the_call_goes_on_until_too_many(tmp_path: Path) -> None:
    config = EmulatorConfig(tts="synthetic", transcripts=["Hello there"], reply_text=lambda heard: "Hi!")
    async with web_rig(tmp_path, config, max_bad_frames=3) as rig:
        cookie, csrf = await signed_in(rig)
        async with page(rig, cookie) as p:
            await p.ws.send(orjson.dumps({"type": "start", "csrf": csrf, "engine": "realtime"}).decode())
            await p.until(lambda: bool(p.of("started")))
            await p.ws.send(b"\x01\x02\x03")  # half a sample
            await p.ws.send("not json")
            await p.ws.send(orjson.dumps({"type": "start", "csrf": csrf}).decode())  # a second start
            await p.speak(800)  # the call is unharmed: the caller is heard and answered
            await p.until(lambda: any(t["speaker"] == "caller" for t in p.of("transcript")))
            await p.ws.send(b"\x00" * 70_000)  # past the socket's message limit: the call ends with a reason
            await p.until(lambda: p.ws.close_code is not None)
        sid = p.of("started")[0]["call_sid"]
        settings = rig.settings
    record = await archived_after_shutdown(settings, sid)
    assert p.ws.close_code == 1009
    reasons = [e["detail"]["reason"] for e in record["events"] if e["kind"] == "bad_frame"]
    assert len(reasons) == 4 and "odd number of bytes" in reasons[0] and "already started" in reasons[2]
    assert reasons[3] == "frame too large" and record["end_reason"] == "oversized frame from the page"
    assert ("caller", "Hello there") in [(s["speaker"], s["text"]) for s in record["transcript"]]


async def test_a_web_call_is_capped_like_a_phone_call_and_the_page_is_told_it_ended(tmp_path: Path) -> None:
    long_reply = ("Of course. Our hygienists have openings on Tuesday and Thursday mornings, and the whole visit "
                  "takes about forty minutes, with a short exam and time for questions.")  # fmt: skip
    prices = tmp_path / "prices.json"
    prices.write_text(orjson.dumps({  # only speech costs money: a dollar a minute
        "version": "test-speech-only",
        "models": {name: dict.fromkeys(("text_in", "text_cached_in", "text_out", "audio_in", "audio_cached_in",
                                         "audio_out"), 0) for name in ("gpt-realtime", "gpt-4.1-mini")},
        "telephony_per_minute": {"inbound": 0, "outbound": 0}, "transcription_per_minute": 0,
        "transcription_tokens": {"audio_in": 0, "text_in": 0, "text_out": 0},
        "speech": {"gpt-4o-mini-tts": {"per_minute": 1}},
    }).decode())  # fmt: skip
    config = EmulatorConfig(tts="synthetic", transcripts=["When can I come in?"],
                            reply_text=lambda heard: long_reply if heard else "I am sorry, I must go now. Goodbye.")  # fmt: skip
    async with web_rig(tmp_path, config, price_table_file=str(prices), budget_per_call_usd=0.2,
                       budget_runaway_margin=0.5) as rig:  # fmt: skip
        cookie, csrf = await signed_in(rig)
        async with page(rig, cookie) as p:
            await p.ws.send(orjson.dumps({"type": "start", "csrf": csrf, "engine": "cascaded"}).decode())
            await p.until(lambda: any(m["speaker"] == "agent" for m in p.of("transcript")))
            await p.speak(800)
            await p.until(lambda: p.ws.close_code is not None, timeout=30)
        sid = p.of("started")[0]["call_sid"]
        record = await archived(rig.base, rig.settings, sid)
    assert p.of("ended") == [{"type": "ended", "reason": "The agent ended the call."}]
    assert [e["kind"] for e in record["events"] if e["kind"].startswith("budget_")] == ["budget_wrap_up"]
    agent = [s["text"] for s in record["transcript"] if s["speaker"] == "agent"]
    assert agent[-1] == "I am sorry, I must go now. Goodbye." and record["direction"] == "web"


@pytest.mark.parametrize("engine", ["realtime", "cascaded"])
@pytest.mark.parametrize("mode", ["on", "announce"])
async def test_a_web_call_is_recorded_only_with_the_announcement_whichever_engine_answers(
    tmp_path: Path, engine: str, mode: str
) -> None:
    """A page's caller has no number to place: counted as all-party, so RECORDING=on does not record it and
    RECORDING=announce announces first, then records both sides at the page's rate."""
    config = EmulatorConfig(tts="synthetic", transcripts=["What are your hours?"],
                            reply_text=lambda heard: "We open at nine.")  # fmt: skip
    async with web_rig(tmp_path, config, recording=mode) as rig:
        cookie, csrf = await signed_in(rig)
        async with page(rig, cookie) as p:
            await p.ws.send(orjson.dumps({"type": "start", "csrf": csrf, "engine": engine}).decode())
            await p.until(lambda: any(m["speaker"] == "agent" for m in p.of("transcript")))
            await p.speak(800)
            await p.until(lambda: len(p.of("transcript")) >= 3)
            await p.ws.send(orjson.dumps({"type": "hangup"}).decode())
            await p.until(lambda: p.ws.close_code is not None)
        sid = p.of("started")[0]["call_sid"]
        record = await archived(rig.base, rig.settings, sid)
    (decision,) = [e["detail"] for e in record["events"] if e["kind"] == "recording_decision"]
    assert (decision["record"], decision["announce"]) == ((mode == "announce"),) * 2
    assert decision["all_party_states"] == ["unknown"]
    greeting = record["transcript"][0]["text"]  # heard in full: the page listened to it before speaking
    assert greeting.startswith("This call is recorded.") is (mode == "announce") and "Acme Dental" in greeting
    if engine == "realtime":
        create = next(e for e in rig.emulator.sessions[0].received if e["type"] == "response.create")
        assert ("This call is recorded." in create["response"]["instructions"]) is (mode == "announce")
    recordings = [e["detail"] for e in record["events"] if e["kind"] == "recording" and e["detail"].get("key")]
    if mode == "on":
        assert recordings == [] and record["recording_ms"] is None
        return
    (info,) = recordings
    samples, rate = decode((tmp_path / "recordings" / info["key"]).read_bytes())
    assert rate == 24_000 and record["recording_ms"] > 0
    assert np.abs(samples[:, 0]).max() > 2000 and np.abs(samples[:, 1]).max() > 2000  # the page, the agent
