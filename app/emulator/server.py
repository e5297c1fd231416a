"""A local OpenAI Realtime API (GA) emulator over a real WebSocket.

Reached like the real service: ``AsyncOpenAI(websocket_base_url=emulator.url).realtime.connect(
model=...)`` opens ``/v1/realtime?model=...`` with ``Authorization: Bearer ...``; ``connect(extra_query=
{"intent": "transcription"})`` (no model) opens a transcription session, as the cascaded engine does. Spec:
/work/shared/PROTOCOLS.md, "OpenAI Realtime API, GA interface".
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from http import HTTPStatus
from types import TracebackType
from urllib.parse import parse_qs, urlsplit

import orjson
import structlog
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from app.emulator.audio import SpeechSynth
from app.emulator.config import EmulatorConfig, Faults
from app.emulator.session import EmulatedSession

__all__ = ["EmulatedSession", "EmulatorConfig", "Faults", "RealtimeEmulator", "serve_forever"]

log = structlog.get_logger(__name__)

REALTIME_PATH = "/v1/realtime"
SAID_PATH = "/v1/emulator/said"  # the control channel: a scripted caller's words (app.emulator.said)
DEFAULT_MODEL = "gpt-realtime"
MAX_MESSAGE_BYTES = 16 * 1024 * 1024


def _http_error(status: HTTPStatus, code: str, message: str) -> Response:
    body = orjson.dumps({"error": {"type": "invalid_request_error", "code": code, "message": message, "param": None}})
    headers = Headers([("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return Response(status.value, status.phrase, headers, body)


class RealtimeEmulator:
    """Serves emulated Realtime sessions; one ``EmulatedSession`` per connection, in ``sessions``."""

    def __init__(
        self,
        config: EmulatorConfig | None = None,
        *,
        record_audio: bool = True,
        max_retained_sessions: int | None = None,
    ) -> None:
        self.config = config if config is not None else EmulatorConfig()
        self.host = "127.0.0.1"
        self.port = 0
        self._record_audio = record_audio
        self._sessions: deque[EmulatedSession] = deque(maxlen=max_retained_sessions)
        self._session_count = 0
        self._new_session = asyncio.Condition()
        self._server: Server | None = None
        self._synth = SpeechSynth(mode=self.config.tts)

    @property
    def sessions(self) -> list[EmulatedSession]:
        """Sessions in connection order (the oldest may be dropped if retention is bounded)."""
        return list(self._sessions)

    @property
    def uses_espeak(self) -> bool:
        return self._synth.uses_espeak

    @property
    def url(self) -> str:
        """The openai SDK's ``websocket_base_url``."""
        return f"ws://{self.host}:{self.port}/v1"

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._server = await serve(
            self._handle,
            host,
            port,
            process_request=self._check_request,
            max_size=MAX_MESSAGE_BYTES,
            compression=None,
        )
        sockname = next(iter(self._server.sockets)).getsockname()
        self.host = host
        self.port = int(sockname[1])

    async def close(self) -> None:
        if self._server is None:
            return
        self._server.close()
        await self._server.wait_closed()
        self._server = None

    async def __aenter__(self) -> RealtimeEmulator:
        if self._server is None:
            await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def wait_for_session(self, index: int, timeout: float = 15.0) -> EmulatedSession:
        """The ``index``-th session ever opened (0-based), once it exists."""
        async with self._new_session:
            await asyncio.wait_for(self._new_session.wait_for(lambda: self._session_count > index), timeout)
        offset = index - (self._session_count - len(self._sessions))
        if offset < 0:
            raise LookupError(f"session {index} is no longer retained")
        return self._sessions[offset]

    def _check_request(self, connection: ServerConnection, request: Request) -> Response | None:
        path = urlsplit(request.path).path.rstrip("/")
        if path == SAID_PATH:
            return None  # local tooling only: no key
        if path != REALTIME_PATH:
            return _http_error(HTTPStatus.NOT_FOUND, "not_found", f"Invalid URL (GET {path or '/'})")
        auth = request.headers.get("Authorization", "")
        scheme, _, key = auth.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            return _http_error(
                HTTPStatus.UNAUTHORIZED,
                "missing_api_key",
                "You didn't provide an API key. You need to provide your API key in an Authorization header "
                "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
            )
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        if ws.request is not None and urlsplit(ws.request.path).path.rstrip("/") == SAID_PATH:
            await self._hear_said(ws)
            return
        query = parse_qs(urlsplit(ws.request.path if ws.request else "").query)
        transcription = (query.get("intent") or [""])[0] == "transcription" and "model" not in query
        model = (query.get("model") or [DEFAULT_MODEL])[0]
        session = EmulatedSession(
            ws, self.config, model=model, synth=self._synth, record_audio=self._record_audio,
            transcription=transcription,
        )  # fmt: skip
        async with self._new_session:
            self._sessions.append(session)
            self._session_count += 1
            self._new_session.notify_all()
        log.info("emulator_session_opened", session_id=session.id, model=model)
        await session.run()
        log.info("emulator_session_closed", session_id=session.id, close_code=ws.close_code)

    async def _hear_said(self, ws: ServerConnection) -> None:
        """Each message: ``{"text": str, "seconds": number}``, the words a caller is about to say. A message
        that is not that closes the channel with 1007 and a reason."""
        async for raw in ws:
            try:
                told = orjson.loads(raw)
                text, seconds = told["text"], float(told["seconds"])
                if not isinstance(text, str) or not text.strip() or not 0 <= seconds < 3600:
                    raise ValueError
            except (ValueError, KeyError, TypeError):
                await ws.close(1007, 'expected {"text": "...", "seconds": N}')
                return
            self.config.said.tell(text, seconds, time.monotonic())


async def serve_forever(host: str, port: int, config: EmulatorConfig, stages_port: int | None = None) -> None:
    """Run the emulator until cancelled (the ``switchboard emulator`` command): Realtime and transcription
    sessions on ``port``, and with ``stages_port`` the cascaded engine's chat and speech stages over HTTP."""
    import uvicorn

    from app.emulator.cascade import CascadeStages

    emulator = RealtimeEmulator(config, record_audio=False, max_retained_sessions=16)
    await emulator.start(host, port)
    log.info("emulator_listening", url=emulator.url, tts="espeak-ng" if emulator.uses_espeak else "synthetic")
    stages: uvicorn.Server | None = None
    serving: asyncio.Task[None] | None = None
    if stages_port is not None:
        app = CascadeStages(config, SpeechSynth(mode=config.tts)).app
        stages = uvicorn.Server(uvicorn.Config(app, host=host, port=stages_port, log_level="warning", log_config=None))
        serving = asyncio.create_task(stages.serve())
        log.info("emulator_stages_listening", url=f"http://{host}:{stages_port}/v1")
    try:
        await asyncio.Event().wait()
    finally:
        if stages is not None and serving is not None:
            stages.should_exit = True
            await serving
        await emulator.close()
