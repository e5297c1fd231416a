"""The ASGI app: create_app(settings) wires adapters once in the lifespan."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import structlog
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse, RedirectResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import SecretStr
from sqlalchemy import text

from app.adapters.call_store import CallStore
from app.adapters.openai_cascade import ChatStage, SpeechStage, TranscriptionConnector
from app.adapters.openai_realtime import RealtimeConnector
from app.adapters.twilio_rest import TwilioRest
from app.adapters.twilio_signatures import WebhookSignatures
from app.archive.redaction import redactor
from app.archive.retention import run_retention
from app.archive.router import router as calls_router
from app.auth.keys import Principal, authenticate
from app.auth.router import router as admin_router
from app.budget.ledger import BudgetLedger
from app.budget.router import router as budget_router
from app.budget.service import Budget, load_prices
from app.calls.cascaded import CascadeStages
from app.calls.live import TakeoverListener, stop_task
from app.calls.media import router as media_router
from app.calls.sweeper import run_sweeper
from app.calls.tools import ToolRegistry, load_tool_modules
from app.calls.web import router as web_router
from app.calls.webhooks import router as webhooks_router
from app.console.router import router as console_router
from app.core import resample
from app.core.bridge import BridgeConfig
from app.core.cascade_call import CascadeConfig
from app.core.realtime_events import SessionSettings, TranscriptionSettings
from app.core.tools import chat_tools, greeting_instructions, greeting_text
from app.db import make_engine, make_sessionmaker
from app.dialer.policy import Jurisdiction
from app.dialer.router import router as dialer_router
from app.dialer.worker import Dialer
from app.http_guard import FailureBudget, RequestGuard
from app.observability import Metrics, watch_event_loop_lag
from app.openapi import install as install_openapi
from app.openapi import install_docs
from app.problems import install_problem_handlers, problem_response
from app.recording.storage import DirectoryStore, RecordingStore, S3Store
from app.results.router import router as results_router
from app.results.worker import PostCallWorker
from app.runtime import Runtime, make_redis
from app.settings import Settings

log = structlog.get_logger()


def build_runtime(settings: Settings, *, tools: ToolRegistry | None = None) -> Runtime:
    engine = make_engine(settings.effective_database_url)
    redis = make_redis(settings)
    if tools is None:
        tools = ToolRegistry(default_timeout_s=settings.tool_timeout_s)
        load_tool_modules(tools, settings.tool_modules)
    api_key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else "no-key"
    call_store = CallStore(redis)
    engine_sessions = make_sessionmaker(engine)
    budget = Budget(
        settings=settings, ledger=BudgetLedger(redis), sessionmaker=engine_sessions, prices=load_prices(settings)
    )
    return Runtime(
        settings=settings,
        metrics=Metrics(),
        engine=engine,
        sessionmaker=engine_sessions,
        redis=redis,
        call_store=call_store,
        takeovers=TakeoverListener(call_store),
        twilio_signatures=WebhookSignatures(
            settings.twilio_auth_token.get_secret_value(), settings.twilio_webhook_shared_key_secrets()
        ),
        budget=budget,
        redact=redactor(settings.redaction_patterns) if settings.redaction_patterns else None,
        jurisdiction=Jurisdiction(emergencies=frozenset(s.upper() for s in settings.declared_emergency_states)),
        realtime=RealtimeConnector(
            api_key=api_key,
            websocket_base_url=settings.openai_realtime_url,
            model=settings.openai_realtime_model,
            socket=settings.realtime_socket,
        ),
        twilio=TwilioRest(
            account_sid=settings.twilio_account_sid,
            auth_token=settings.twilio_auth_token.get_secret_value(),
            base_url=settings.twilio_api_base_url,
        ),
        tools=tools,
        bridge_config=make_bridge_config(settings, tools),
        cascade=make_cascade_stages(settings, api_key),
        cascade_config=make_cascade_config(settings, tools),
        chat_tools=chat_tools(tools.definitions()),
        recordings=make_recording_store(settings),
    )


def make_recording_store(settings: Settings) -> RecordingStore:
    if settings.recording_store == "s3":
        if not settings.recording_s3_bucket:
            raise ValueError("RECORDING_STORE=s3 needs RECORDING_S3_BUCKET")
        access, secret = settings.recording_s3_access_key, settings.recording_s3_secret_key
        return S3Store(
            bucket=settings.recording_s3_bucket,
            endpoint_url=settings.recording_s3_endpoint_url,
            region=settings.recording_s3_region,
            access_key=access.get_secret_value() if access else None,
            secret_key=secret.get_secret_value() if secret else None,
        )
    return DirectoryStore(settings.data_dir / "recordings")


def make_cascade_stages(settings: Settings, api_key: str) -> CascadeStages:
    def key(value: SecretStr | None) -> str:
        return value.get_secret_value() if value is not None else api_key

    return CascadeStages(
        transcription=TranscriptionConnector(
            api_key=key(settings.stt_api_key),
            websocket_base_url=settings.stt_url or settings.openai_realtime_url,
            socket=settings.realtime_socket,
        ),
        chat=ChatStage(api_key=key(settings.chat_api_key), base_url=settings.chat_base_url, model=settings.chat_model),
        speech=SpeechStage(
            api_key=key(settings.tts_api_key),
            base_url=settings.tts_base_url,
            model=settings.tts_model,
            voice=settings.tts_voice or settings.agent_voice,
        ),
    )


def agent_instructions(settings: Settings) -> str:
    return (
        f"You are the phone agent of {settings.business_name}. Your first words name the business. "
        + settings.agent_instructions
    )


def make_cascade_config(settings: Settings, tools: ToolRegistry) -> CascadeConfig:
    return CascadeConfig(
        instructions=agent_instructions(settings)
        + " Your words are spoken aloud by a speech engine: plain sentences, no lists, no markup.",
        greeting=greeting_text(settings.business_name),
        transcription=TranscriptionSettings(model=settings.stt_model, language=settings.stt_language),
        transfer_number=settings.transfer_number,
        custom_tools=tools.names,
        resampler=settings.resampler,
        resample_quality=settings.resample_quality,
    )


def make_bridge_config(settings: Settings, tools: ToolRegistry) -> BridgeConfig:
    instructions = agent_instructions(settings)
    return BridgeConfig(
        session=SessionSettings(
            model=settings.openai_realtime_model,
            instructions=instructions,
            voice=settings.agent_voice,
            audio_format=settings.audio_format,
            tools=tools.definitions(),
        ),
        greeting_instructions=greeting_instructions(settings.business_name),
        transfer_number=settings.transfer_number,
        custom_tools=tools.names,
        resampler=settings.resampler,
        resample_quality=settings.resample_quality,
    )


def create_app(
    settings: Settings, *, tools: ToolRegistry | None = None, clock: Callable[[], datetime] | None = None
) -> FastAPI:
    """The app; ``clock`` (a test's) replaces the wall clock of the dialer and of the call outcomes."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime = build_runtime(settings, tools=tools)
        if clock is not None:
            runtime.clock = clock
        app.state.runtime = runtime
        runtime.takeovers.start()
        background = [
            asyncio.create_task(run_sweeper(runtime), name="orphan-sweeper"),
            asyncio.create_task(watch_event_loop_lag(runtime.metrics.event_loop_lag_seconds), name="loop-lag"),
        ]
        in_process = settings.dialer_in_process
        if in_process is None:
            in_process = runtime.engine.dialect.name == "sqlite"  # one node: it may be the single claimant
        if in_process:
            background.append(asyncio.create_task(Dialer(runtime, clock=runtime.clock).run_forever(), name="dialer"))
        recording_days = settings.effective_recording_retention_days
        if settings.transcript_retention_days is not None or recording_days is not None:
            retention = run_retention(
                runtime.sessionmaker,
                days=settings.transcript_retention_days,
                interval_s=settings.retention_interval_s,
                clock=lambda: datetime.now(UTC),
                recordings=runtime.recordings,
                recording_days=recording_days,
            )
            background.append(asyncio.create_task(retention, name="retention"))
        # Post-call jobs and webhook deliveries: every node runs them (claims keep each to one node).
        runtime.post_call = PostCallWorker(settings=settings, sessionmaker=runtime.sessionmaker, budget=runtime.budget)
        background.append(asyncio.create_task(runtime.post_call.run_forever(), name="post-call"))
        if settings.openai_api_key is None and "api.openai.com" in settings.openai_realtime_url:
            log.warning(
                "openai.no_api_key", detail="OPENAI_API_KEY unset: calls will fail; run scripts/dev for the emulator"
            )
        log.info(
            "app.started",
            database=runtime.engine.url.render_as_string(hide_password=True),
            redis="external" if settings.redis_url else "in-process",
            realtime=settings.openai_realtime_url,
            carrier=settings.twilio_api_base_url,  # where call requests go: Twilio's REST API, or a stand-in
            audio_format=settings.audio_format,
            # pcm24k resampling: soxr, or the FIR on its C kernel (numpy where the install could not build it)
            resampler=settings.resampler if settings.resampler != "fir" else f"fir ({resample.KERNEL})",
        )
        try:
            yield
        finally:
            # Bounded: a loop whose cancellation a client library swallowed must not hold the shutdown.
            await asyncio.gather(*(stop_task(t, name=t.get_name()) for t in background))
            await runtime.takeovers.stop()
            await runtime.twilio.aclose()
            await runtime.realtime.aclose()
            await runtime.cascade.aclose()
            await runtime.recordings.aclose()
            if runtime.post_call is not None:
                await runtime.post_call.aclose()
            await runtime.redis.aclose()
            await runtime.engine.dispose()

    app = FastAPI(title="Switchboard", version="0.1.0", lifespan=lifespan, docs_url=None, redoc_url=None)
    install_problem_handlers(app)

    async def authenticate_key(token: str) -> Principal | None:
        async with app.state.runtime.sessionmaker() as session:
            return await authenticate(session, token)

    # API keys and console sign-ins, per client, shared
    app.state.auth_failures = FailureBudget(burst=settings.auth_failure_burst, window_s=settings.auth_failure_window_s)
    app.add_middleware(
        RequestGuard,
        authenticate=authenticate_key,
        failures=app.state.auth_failures,
        small_body_bytes=settings.max_body_bytes,
        bulk_body_bytes=settings.max_import_body_bytes,
    )
    app.include_router(webhooks_router)
    app.include_router(media_router)
    app.include_router(web_router)
    app.include_router(calls_router)
    app.include_router(results_router)
    app.include_router(dialer_router)
    app.include_router(budget_router)
    app.include_router(console_router)
    app.include_router(admin_router)
    install_openapi(app)
    install_docs(app)

    @app.get("/", include_in_schema=False)
    async def home() -> Response:
        """A person who opens the server's address lands on the console (which asks for a key)."""
        return RedirectResponse("/console", status_code=307)

    @app.get("/healthz", tags=["ops"])
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["ops"], responses={503: {"description": "Draining"}})
    async def readyz(request: Request) -> Response:
        runtime: Runtime = request.app.state.runtime
        if runtime.draining:
            return problem_response(
                503, "Draining", "This node is shutting down: new calls go to other nodes.", "/readyz",
                active_calls=len(runtime.sessions),
            )  # fmt: skip
        # Ready unless draining: calls are taken (and survive) with Redis or the database away, so a
        # dependency outage must not take every node out of the load balancer. It shows as degraded.
        checks: dict[str, str] = {}
        try:
            async with asyncio.timeout(2):
                await runtime.redis.ping()
            checks["redis"] = "ok"
        except Exception as exc:  # noqa: BLE001 - any failure is a degraded dependency
            checks["redis"] = f"error: {type(exc).__name__}"
        try:
            async with asyncio.timeout(2), runtime.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
            checks["database"] = "ok"
        except Exception as exc:  # noqa: BLE001
            checks["database"] = f"error: {type(exc).__name__}"
        status = "ready" if all(v == "ok" for v in checks.values()) else "degraded"
        return JSONResponse({"status": status, "checks": checks, "active_calls": len(runtime.sessions)})

    @app.get("/metrics", tags=["ops"], response_class=PlainTextResponse)
    async def metrics(request: Request) -> Response:
        runtime: Runtime = request.app.state.runtime
        return Response(generate_latest(runtime.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app
