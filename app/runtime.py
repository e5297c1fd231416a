"""Everything a running app holds: built once in the lifespan, put on app.state.runtime."""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog
from redis.asyncio import BlockingConnectionPool, Redis
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.adapters.call_store import CallStore
from app.adapters.openai_realtime import RealtimeConnector
from app.adapters.twilio_rest import TwilioRest
from app.adapters.twilio_signatures import WebhookSignatures
from app.budget.service import Budget
from app.calls.cascaded import CascadeStages
from app.calls.live import TakeoverListener
from app.calls.tools import ToolRegistry
from app.core.bridge import BridgeConfig
from app.core.cascade_call import CascadeConfig
from app.dialer.policy import Jurisdiction
from app.observability import Metrics
from app.recording.storage import RecordingStore
from app.settings import Settings

log = structlog.get_logger()


@dataclass
class Runtime:
    settings: Settings
    metrics: Metrics
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    redis: Redis
    call_store: CallStore
    realtime: RealtimeConnector
    twilio: TwilioRest
    tools: ToolRegistry
    bridge_config: BridgeConfig
    takeovers: TakeoverListener
    twilio_signatures: WebhookSignatures
    jurisdiction: Jurisdiction
    budget: Budget
    cascade: CascadeStages  # the cascaded engine's three stages (clients made once; they connect lazily)
    cascade_config: CascadeConfig
    chat_tools: list[dict[str, Any]]  # the tools as the chat model takes them
    recordings: RecordingStore
    redact: Callable[[str], str] | None = None  # transcript redaction, when configured
    # The dialer's clock: its decisions and the call outcomes it schedules retries from (a test moves it)
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    post_call: Any = None  # the node's post-call worker (app.results.worker.PostCallWorker), once started
    sessions: dict[str, Any] = field(default_factory=dict)  # call sid -> its CallSession on this node
    draining: bool = False  # SIGTERM received: not ready; active calls finish or are handed over
    sessions_changed: asyncio.Event = field(default_factory=asyncio.Event)  # set when a session ends
    node_id: str = field(default_factory=lambda: f"{socket.gethostname()}/{os.getpid()}/{secrets.token_hex(3)}")


def make_redis(settings: Settings) -> Redis:
    if settings.redis_url:
        # Bounded and blocking: under load a command waits for a free connection instead of failing, and a
        # node never opens more than REDIS_MAX_CONNECTIONS (a ?max_connections= in the URL wins).
        pool = BlockingConnectionPool.from_url(
            settings.redis_url, max_connections=settings.redis_max_connections, timeout=settings.redis_pool_timeout_s
        )
        return Redis.from_pool(pool)
    import fakeredis

    log.warning(
        "redis.in_process_stand_in", detail="REDIS_URL unset: using an in-process Redis stand-in (single node only)"
    )
    return fakeredis.FakeAsyncRedis()
