"""Shared pieces for tests that run the real server: uvicorn on a loopback socket, signing, a raw
Twilio-side media client. Everything speaks the real protocols over real sockets."""

from __future__ import annotations

import asyncio
import audioop
import base64
import itertools
import os
import re
import socket
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import respx
import uvicorn
import websockets
from redis.asyncio import Redis
from twilio.request_validator import RequestValidator
from websockets.asyncio.client import ClientConnection

from app.auth.keys import Role, create_api_key, utcnow
from app.calls.media_socket import MediaStreamRouter
from app.calls.tools import ToolRegistry
from app.db import make_engine, make_sessionmaker
from app.main import create_app
from app.migrate import upgrade
from app.settings import Settings

AUTH_TOKEN = "test-auth-token-0123456789abcdef"
ACCOUNT_SID = "AC" + "1" * 32
PUBLIC_BASE = "https://sb.example.test"
TWILIO_API = "https://twilio.test"


def make_settings(tmp_path: Path, *, realtime_url: str, database_url: str | None = None, **overrides: Any) -> Settings:
    db = database_url or f"sqlite+aiosqlite:///{tmp_path / 'test.db'}"
    values: dict[str, Any] = {
        "public_base_url": PUBLIC_BASE,
        "twilio_account_sid": ACCOUNT_SID,
        "twilio_auth_token": AUTH_TOKEN,
        "twilio_api_base_url": TWILIO_API,
        "openai_api_key": "test-key",
        "openai_realtime_url": realtime_url,
        "database_url": db,
        "business_name": "Acme Dental",
        "data_dir": tmp_path,
        "log_json": False,
        "post_call_results": False,  # a test that wants results says so (and where the chat model is)
    }
    values.update(overrides)
    settings = Settings(**values)
    migrate(settings.effective_database_url)
    return settings


def migrate(database_url: str) -> None:
    """Alembic's env runs its own event loop, so migrate from a worker thread."""
    with ThreadPoolExecutor(1) as pool:
        pool.submit(upgrade, database_url).result()


@asynccontextmanager
async def serve(settings: Settings, *, tools: ToolRegistry | None = None) -> AsyncIterator[str]:
    """Run the app under uvicorn on a pre-bound loopback socket; yield its http base URL.

    The socket is listening before uvicorn starts, so clients may connect at once: the kernel
    queues them until uvicorn accepts (no readiness polling)."""
    async with serve_asgi(create_app(settings, tools=tools)) as base:
        yield base


@asynccontextmanager
async def serve_asgi(app: Any) -> AsyncIterator[str]:
    """Any ASGI app under uvicorn on a pre-bound loopback socket; yields its http base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(256)
    port = sock.getsockname()[1]
    # As `switchboard serve` runs it: media streams on picows (unless MEDIA_SOCKET=asgi), the rest through ASGI
    config = uvicorn.Config(app, log_level="warning", lifespan="on", ws=MediaStreamRouter, ws_max_size=4 * 1024 * 1024)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
        sock.close()


@contextmanager
def server_process(
    settings: Settings, extra_env: dict[str, str] | None = None
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """``switchboard serve`` in its own process on a socket this test already listens on, so
    requests queue in the kernel until the server accepts them (no readiness polling)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    env = {
        **os.environ,
        "PUBLIC_BASE_URL": PUBLIC_BASE,
        "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
        "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
        "OPENAI_API_KEY": "test-key",
        "OPENAI_REALTIME_URL": settings.openai_realtime_url,
        "REDIS_URL": settings.redis_url or "",
        "DATABASE_URL": settings.effective_database_url,
        "BUSINESS_NAME": settings.business_name,
        "LOG_LEVEL": "WARNING",
        "POST_CALL_RESULTS": "false",
        **(extra_env or {}),
    }
    proc = subprocess.Popen(
        [sys.executable, "-c", "from app.cli import main; main()", "serve", "--fd", str(sock.fileno())],
        env=env,
        pass_fds=(sock.fileno(),),
    )
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    sock.close()  # the server holds it now; once that process is gone, connecting is refused at once
    try:
        yield base, proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=30)


def sign(url: str, params: dict[str, str] | None = None, token: str = AUTH_TOKEN) -> str:
    return str(RequestValidator(token).compute_signature(url, params or {}))


def call_sid(n: int) -> str:
    return "CA" + f"{n:032x}"


async def post_webhook(base: str, path: str, params: dict[str, str], *, signature: str | None = None) -> httpx.Response:
    sig = signature if signature is not None else sign(PUBLIC_BASE + path, params)
    # A server process just started may take seconds to import and accept on a loaded machine.
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        return await client.post(path, data=params, headers={"X-Twilio-Signature": sig})


def twiml_stream(body: str) -> tuple[str, dict[str, str]]:
    root = ET.fromstring(body)
    stream = root.find("./Connect/Stream")
    assert stream is not None, body
    params = {p.attrib["name"]: p.attrib["value"] for p in stream.findall("Parameter")}
    return stream.attrib["url"], params


def tone_frames(freq_hz: float, seconds: float, amplitude: float = 0.5) -> list[bytes]:
    t = np.arange(int(8000 * seconds)) / 8000
    pcm = (np.sin(2 * np.pi * freq_hz * t) * amplitude * 32767).astype(np.int16)
    mulaw = audioop.lin2ulaw(pcm.tobytes(), 2)
    return [mulaw[i : i + 160] for i in range(0, len(mulaw), 160)]


def speech_frames(seconds: float) -> list[bytes]:
    """Loud voiced audio the emulator's energy VAD hears as speech."""
    t = np.arange(int(8000 * seconds)) / 8000
    wave = sum(np.sin(2 * np.pi * 140 * k * t) / k for k in range(1, 8))
    pcm = (wave / np.abs(wave).max() * 0.6 * 32767).astype(np.int16)
    mulaw = audioop.lin2ulaw(pcm.tobytes(), 2)
    return [mulaw[i : i + 160] for i in range(0, len(mulaw), 160)]


SILENCE = b"\xff" * 160


_ARRIVALS = itertools.count()  # one order over every TwilioStream's messages in this process


class TwilioStream:
    """A Twilio media stream client driven step by step by a test (frames sent as fast as asked)."""

    def __init__(self, ws: ClientConnection, call_sid: str, stream_sid: str, *, auto_ack: bool = False) -> None:
        self.ws = ws
        self.auto_ack = auto_ack
        self.acks_sent = 0
        self.call_sid = call_sid
        self.stream_sid = stream_sid
        self.seq = 0
        self.received: list[dict[str, Any]] = []
        self.arrived: list[int] = []  # for each received message, its place among every stream's messages
        self._new = asyncio.Condition()
        self.close_code: int | None = None
        self.close_reason: str | None = None
        self._reader = asyncio.create_task(self._read())

    @classmethod
    @asynccontextmanager
    async def open(
        cls,
        base: str,
        *,
        call_sid: str,
        token: str | None,
        signature: str | None = None,
        send_start: bool = True,
        custom: dict[str, str] | None = None,
        auto_ack: bool = False,
    ) -> AsyncIterator[TwilioStream]:
        url = base.replace("http://", "ws://") + "/twilio/media"
        sig = signature if signature is not None else sign(PUBLIC_BASE.replace("https://", "wss://") + "/twilio/media")
        async with websockets.connect(url, additional_headers={"X-Twilio-Signature": sig}, max_size=None) as ws:
            stream = cls(ws, call_sid, "MZ" + call_sid[2:], auto_ack=auto_ack)
            if send_start:
                await stream.start(token, custom)
            try:
                yield stream
            finally:
                stream._reader.cancel()

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                message = orjson.loads(raw)
                async with self._new:
                    self.received.append(message)
                    self.arrived.append(next(_ARRIVALS))
                    self._new.notify_all()
                if self.auto_ack and message.get("event") == "mark":
                    # Twilio with instant playback: echo each mark as it arrives.
                    await self.mark(message["mark"]["name"])
                    async with self._new:
                        self.acks_sent += 1
                        self._new.notify_all()
        except websockets.ConnectionClosed:
            pass
        finally:
            self.close_code = self.ws.close_code
            self.close_reason = self.ws.close_reason
            async with self._new:
                self._new.notify_all()

    async def send(self, message: dict[str, Any] | str | bytes) -> None:
        await self.ws.send(message if isinstance(message, (str, bytes)) else orjson.dumps(message).decode())

    async def start(self, token: str | None, custom: dict[str, str] | None = None) -> None:
        params = dict(custom or {"direction": "inbound"})
        if token is not None:
            params["token"] = token
        await self.send({"event": "connected", "protocol": "Call", "version": "1.0.0"})
        self.seq += 1
        await self.send(
            {
                "event": "start",
                "sequenceNumber": str(self.seq),
                "streamSid": self.stream_sid,
                "start": {
                    "accountSid": ACCOUNT_SID,
                    "streamSid": self.stream_sid,
                    "callSid": self.call_sid,
                    "tracks": ["inbound"],
                    "customParameters": params,
                    "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                },
            }
        )

    async def media(self, frame: bytes) -> None:
        self.seq += 1
        payload = base64.b64encode(frame).decode()
        await self.send(
            f'{{"event":"media","sequenceNumber":"{self.seq}","streamSid":"{self.stream_sid}","media":'
            f'{{"track":"inbound","chunk":"{self.seq}","timestamp":"{self.seq * 20}","payload":"{payload}"}}}}'
        )

    async def mark(self, name: str) -> None:
        self.seq += 1
        await self.send(
            {"event": "mark", "sequenceNumber": str(self.seq), "streamSid": self.stream_sid, "mark": {"name": name}}
        )

    async def dtmf(self, digit: str) -> None:
        self.seq += 1
        await self.send(
            {
                "event": "dtmf",
                "sequenceNumber": str(self.seq),
                "streamSid": self.stream_sid,
                "dtmf": {"track": "inbound_track", "digit": digit},
            }
        )

    async def stop(self) -> None:
        self.seq += 1
        await self.send(
            {
                "event": "stop",
                "sequenceNumber": str(self.seq),
                "streamSid": self.stream_sid,
                "stop": {"accountSid": ACCOUNT_SID, "callSid": self.call_sid},
            }
        )

    async def wait_for(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 10.0, start: int = 0) -> int:
        """Index of the first received message (from ``start``) matching ``predicate``."""
        async with asyncio.timeout(timeout), self._new:
            while True:
                for i in range(start, len(self.received)):
                    if predicate(self.received[i]):
                        return i
                if self._reader.done():
                    raise AssertionError(
                        f"stream closed ({self.close_code} {self.close_reason}) before the message came"
                    )
                await self._new.wait()

    async def wait_nth(
        self, predicate: Callable[[dict[str, Any]], bool], n: int, timeout: float = 10.0, start: int = 0
    ) -> int:
        """Index of the ``n``-th received message (from ``start``) matching ``predicate``."""
        seen = 0

        def nth(message: dict[str, Any]) -> bool:
            nonlocal seen
            if predicate(message):
                seen += 1
            return seen >= n

        async with asyncio.timeout(timeout), self._new:
            checked = start
            while True:
                for i in range(checked, len(self.received)):
                    checked = i + 1
                    if nth(self.received[i]):
                        return i
                if self._reader.done():
                    raise AssertionError(
                        f"stream closed ({self.close_code} {self.close_reason}) before the message came"
                    )
                await self._new.wait()

    async def wait_closed(self, timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            await asyncio.shield(self._reader)

    def marks(self, start: int = 0, end: int | None = None) -> list[str]:
        return [m["mark"]["name"] for m in self.received[start:end] if m.get("event") == "mark"]

    def media_bytes(self, start: int = 0, end: int | None = None) -> int:
        return sum(
            len(base64.b64decode(m["media"]["payload"])) for m in self.received[start:end] if m.get("event") == "media"
        )


async def open_call(base: str, n: int, *, direction_params: dict[str, str] | None = None) -> tuple[str, str]:
    """Run the voice webhook for call ``n``; return (call_sid, stream token)."""
    sid = call_sid(n)
    params = {
        "CallSid": sid,
        "AccountSid": ACCOUNT_SID,
        "From": "+15005550006",
        "To": "+15005550001",
        "Direction": "inbound",
    }
    params.update(direction_params or {})
    response = await post_webhook(base, "/twilio/voice", params)
    assert response.status_code == 200, response.text
    _, stream_params = twiml_stream(response.text)
    return sid, stream_params["token"]


async def agent_turn_played(tw: TwilioStream, session: Any, response_index: int = 0) -> None:
    """Wait until the caller side has received (and, with auto_ack, acknowledged) all the agent audio
    of the emulator's responses up to the ``response_index``-th completed one, so that speaking next
    is not a barge-in."""
    done = await session.wait_sent(lambda e: e["type"] == "response.done")
    for _ in range(response_index):
        done = await session.wait_sent(lambda e: e["type"] == "response.done", start=session.sent.index(done) + 1)
    upto = session.sent.index(done)
    pcm_bytes = sum(e.get("delta_bytes", 0) for e in session.sent[:upto] if e["type"] == "response.output_audio.delta")
    # 24 kHz PCM16 -> 8 kHz mu-law is 6:1 (pcmu: 1:1); the server drains the resampler after each response.
    pcmu = session.session_config["audio"]["output"]["format"]["type"] == "audio/pcmu"
    target = (pcm_bytes if pcmu else pcm_bytes // 6) - 8 * (response_index + 1)

    def heard() -> bool:
        last = tw.received[-1] if tw.received else {}
        marks = sum(1 for m in tw.received if m.get("event") == "mark")
        return tw.media_bytes() >= target and last.get("event") == "mark" and tw.acks_sent >= marks

    async with asyncio.timeout(10), tw._new:
        while not heard():
            await tw._new.wait()


async def close_runtime(*runtimes: Any) -> None:
    """What build_runtime opened (Redis, the database engine, the Twilio client), closed."""
    for rt in runtimes:
        await rt.redis.aclose()
        await rt.engine.dispose()
        await rt.twilio.aclose()


async def upstream_closed(*sessions: Any, timeout: float = 15.0) -> None:
    """Wait until each emulator session has seen its socket close, so all it received is counted."""
    async with asyncio.timeout(timeout):
        for session in sessions:
            await session.closed.wait()


async def say_turn(tw: TwilioStream) -> None:
    """One caller turn: speech, then enough silence for the server VAD to end it."""
    for frame in speech_frames(0.5):
        await tw.media(frame)
    for _ in range(40):
        await tw.media(SILENCE)


async def key_for(database_url: str, role: Role, *, grants: tuple[str, ...] = ()) -> str:
    engine = make_engine(database_url)
    try:
        async with make_sessionmaker(engine)() as session:
            return await create_api_key(session, role=role, name="test", now=utcnow(), grants=grants)
    finally:
        await engine.dispose()


async def archived(base: str, settings: Settings, sid: str) -> dict[str, Any]:
    """The archived call, read through the supervisor API."""
    key = await key_for(settings.effective_database_url, Role.supervisor)
    async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {key}"}) as api:
        response = await api.get(f"/api/v1/calls/{sid}")
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


async def metric(base: str, name: str) -> float:
    """The sum of a Prometheus metric's samples, from GET /metrics."""
    async with httpx.AsyncClient(base_url=base) as client:
        text = (await client.get("/metrics")).text
    total = 0.0
    for match in re.finditer(rf"^{re.escape(name)}(?:{{[^}}]*}})? ([0-9.e+-]+)$", text, re.MULTILINE):
        total += float(match.group(1))
    return total


async def lines_stored(redis_url: str, sid: str, n: int) -> None:
    """Wait, on Redis keyspace notifications, until the call has ``n`` transcript lines in Redis."""
    redis = Redis.from_url(redis_url)
    key = f"sb:call:{sid}:lines"
    try:
        await redis.config_set("notify-keyspace-events", "Kh")
        async with redis.pubsub() as pubsub:
            db = redis.connection_pool.connection_kwargs.get("db", 0)
            await pubsub.subscribe(f"__keyspace@{db}__:{key}")
            async with asyncio.timeout(10):
                while await redis.hlen(key) < n:
                    await pubsub.get_message(ignore_subscribe_messages=True, timeout=None)
    finally:
        await redis.aclose()


async def one_turn_call(base: str, emulator: Any, n: int, *, direction_params: dict[str, str] | None = None) -> str:
    """A whole call through the server: the greeting heard, one caller turn and its answer heard, a hang-up.
    ``emulator``: a fresh RealtimeEmulator (its first session serves the call)."""
    sid, token = await open_call(base, n, direction_params=direction_params)
    async with TwilioStream.open(base, call_sid=sid, token=token, auto_ack=True) as tw:
        session = await emulator.wait_for_session(0)
        await agent_turn_played(tw, session, 0)
        await say_turn(tw)
        await agent_turn_played(tw, session, 1)
        await tw.stop()
        await tw.wait_closed()
    return sid


def twilio_call_route(mock: respx.MockRouter, sid: str) -> tuple[respx.Route, asyncio.Event]:
    """Twilio's REST update of a call (a hang-up, a redirect), answered 200; the event is set when it came."""
    called = asyncio.Event()

    def reply(request: httpx.Request) -> httpx.Response:
        called.set()
        return httpx.Response(200, json={"sid": sid, "status": "completed"})

    route = mock.post(f"{TWILIO_API}/2010-04-01/Accounts/{ACCOUNT_SID}/Calls/{sid}.json").mock(side_effect=reply)
    return route, called


def lawful_instant() -> datetime:
    """The next weekday 16:00 UTC (11:00 or 12:00 in New York): inside the calling window, after the contacts'
    import (stamped with the wall clock), and within the progress report's 30 days."""
    now = datetime.now(UTC)
    day = now.replace(hour=16, minute=0, second=0, microsecond=0)
    while day <= now or day.weekday() >= 5:
        day += timedelta(days=1)
    return day


class DialerClock:
    """The server's dialer clock: runs from a lawful instant at the wall clock's pace; a test moves it on."""

    def __init__(self, start: datetime) -> None:
        self.start, self.t0, self.moved = start, time.monotonic(), timedelta()

    def __call__(self) -> datetime:
        return self.start + timedelta(seconds=time.monotonic() - self.t0) + self.moved


async def until(
    check: Callable[[], Awaitable[Any]], what: str, timeout: float = 60.0, context: Callable[[], Any] = lambda: None
) -> Any:
    """Poll an API until ``check`` returns something truthy (the dialer and carrier run on their own)."""
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}: {context()}"
        await asyncio.sleep(0.2)
