"""A small stand-in for the Switchboard server, playing the server side of the wire contract.

The voice webhook runs on an httpx.MockTransport, the media stream on a real websockets server
on 127.0.0.1. Both check Twilio signatures with twilio's RequestValidator, like the real
server must. A test supplies an `agent` coroutine that drives the server side of the stream.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl

import httpx
from twilio.request_validator import RequestValidator
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from app.simulator import CallResult, CallScript, simulate_call

AUTH_TOKEN = "test-auth-token"
PUBLIC_BASE_URL = "https://sb.example.com"
STREAM_URL = "wss://sb.example.com/twilio/media"
STREAM_TOKEN = "tok-123"
TWIML = (
    '<?xml version="1.0" encoding="UTF-8"?>'
    f'<Response><Connect><Stream url="{STREAM_URL}">'
    f'<Parameter name="token" value="{STREAM_TOKEN}"/><Parameter name="direction" value="inbound"/>'
    "</Stream></Connect>"
    '<Redirect method="POST">https://sb.example.com/twilio/resume</Redirect></Response>'
)


@dataclass(frozen=True)
class Received:
    message: dict[str, Any]
    at: float  # loop time the server read it
    text_frame: bool

    @property
    def event(self) -> str:
        return str(self.message.get("event"))


class StreamClosed(AssertionError):
    """The caller closed the stream while the agent was still waiting for a message."""


class FakeCall:
    """The server's end of one media stream."""

    def __init__(self, ws: ServerConnection) -> None:
        self.ws = ws
        self.loop = asyncio.get_running_loop()
        self.messages: list[Received] = []
        self.stream_sid = ""
        self._inbox: asyncio.Queue[Received | None] = asyncio.Queue()

    async def read_until_closed(self) -> None:
        try:
            async for raw in self.ws:
                received = Received(json.loads(raw), self.loop.time(), isinstance(raw, str))
                if received.event == "start":
                    self.stream_sid = received.message["streamSid"]
                self.messages.append(received)
                self._inbox.put_nowait(received)
        except ConnectionClosed:
            pass  # closed with an error code: what was read is all there is
        finally:
            self._inbox.put_nowait(None)

    async def next(self, event: str | None = None) -> Received:
        """The next message (of that event type) the caller sent, in arrival order."""
        while True:
            received = await self._inbox.get()
            if received is None:
                self._inbox.put_nowait(None)
                raise StreamClosed(f"stream closed while waiting for {event!r}")
            if event is None or received.event == event:
                return received

    def of(self, event: str) -> list[Received]:
        return [r for r in self.messages if r.event == event]

    async def send_media(self, audio: bytes) -> float:
        """Send agent audio; return the loop time just before it went out."""
        sent_at = self.loop.time()
        payload = base64.b64encode(audio).decode()
        await self.ws.send(json.dumps({"event": "media", "streamSid": self.stream_sid, "media": {"payload": payload}}))
        return sent_at

    async def send_mark(self, name: str) -> float:
        sent_at = self.loop.time()
        await self.ws.send(json.dumps({"event": "mark", "streamSid": self.stream_sid, "mark": {"name": name}}))
        return sent_at

    async def send_clear(self) -> float:
        sent_at = self.loop.time()
        await self.ws.send(json.dumps({"event": "clear", "streamSid": self.stream_sid}))
        return sent_at


Agent = Callable[[FakeCall], Awaitable[None]]


@dataclass
class WebhookRequest:
    url: str
    params: dict[str, str]
    signature_valid: bool


@dataclass
class Upgrade:
    path: str
    signature_valid: bool


@dataclass
class FakeSwitchboard:
    """Async context manager: `async with FakeSwitchboard(agent) as fake: await fake.place_call(script)`."""

    agent: Agent | None = None
    twiml: str = TWIML
    webhooks: list[WebhookRequest] = field(default_factory=list)
    upgrades: list[Upgrade] = field(default_factory=list)
    calls: list[FakeCall] = field(default_factory=list)
    agent_errors: list[BaseException] = field(default_factory=list)
    server_url: str = ""
    _server: Server | None = None
    _call_done: asyncio.Event = field(default_factory=asyncio.Event)

    async def __aenter__(self) -> FakeSwitchboard:
        self._server = await serve(self._handle_stream, "127.0.0.1", 0, process_request=self._check_upgrade)
        port = next(iter(self._server.sockets)).getsockname()[1]
        self.server_url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def place_call(self, script: CallScript, *, auth_token: str = AUTH_TOKEN, **kwargs: Any) -> CallResult:
        """Run one simulated call and wait until the server side has seen all of it."""
        async with httpx.AsyncClient(transport=httpx.MockTransport(self._webhook)) as http, asyncio.timeout(15):
            result = await simulate_call(
                server_url=self.server_url,
                public_base_url=PUBLIC_BASE_URL,
                auth_token=auth_token,
                script=script,
                http=http,
                **kwargs,
            )
            await self._call_done.wait()
        if self.agent_errors:
            raise self.agent_errors[0]
        return result

    @property
    def call(self) -> FakeCall:
        assert len(self.calls) == 1, self.calls
        return self.calls[0]

    def _webhook(self, request: httpx.Request) -> httpx.Response:
        params = dict(parse_qsl(request.content.decode()))
        valid = RequestValidator(AUTH_TOKEN).validate(
            PUBLIC_BASE_URL + "/twilio/voice", params, request.headers.get("X-Twilio-Signature", "")
        )
        self.webhooks.append(WebhookRequest(str(request.url), params, valid))
        if request.url.path != "/twilio/voice" or request.method != "POST":
            return httpx.Response(404)
        if not valid:
            return httpx.Response(403, text="bad signature")
        return httpx.Response(200, text=self.twiml, headers={"Content-Type": "text/xml"})

    def _check_upgrade(self, connection: ServerConnection, request: Request) -> Response | None:
        valid = RequestValidator(AUTH_TOKEN).validate(STREAM_URL, {}, request.headers.get("X-Twilio-Signature", ""))
        self.upgrades.append(Upgrade(request.path, valid))
        if request.path != "/twilio/media":
            return connection.respond(HTTPStatus.NOT_FOUND, "no such stream\n")
        if not valid:
            return connection.respond(HTTPStatus.FORBIDDEN, "bad signature\n")
        return None

    async def _handle_stream(self, ws: ServerConnection) -> None:
        call = FakeCall(ws)
        self.calls.append(call)
        reader = asyncio.create_task(call.read_until_closed())
        try:
            if self.agent is not None:
                await self.agent(call)
        except Exception as exc:  # surfaced by place_call; close so the caller stops too
            self.agent_errors.append(exc)
            await ws.close(1011, "fake agent failed")
        finally:
            try:
                await reader
            finally:
                self._call_done.set()
