"""structlog JSON logging and the Prometheus metrics the service exports."""

from __future__ import annotations

import asyncio
import logging
import sys

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector


def configure_logging(level: str = "INFO", json: bool = True) -> None:
    """One format for every line: structlog's own, and the standard library's loggers (uvicorn's, alembic's,
    websockets') rendered by the same renderer, JSON (or all plain text with ``LOG_JSON=false``)."""
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    timestamper = structlog.processors.TimeStamper(fmt="iso", utc=True)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            timestamper,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_log_level, structlog.stdlib.add_logger_name, timestamper],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # No handlers or level of their own (a uvicorn or alembic logging config may have set both): the root's
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "alembic"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.setLevel(logging.NOTSET)
        logger.propagate, logger.disabled = True, False
    logging.getLogger("alembic.runtime.plugins").setLevel(max(logging.WARNING, root.level))  # its setup chatter


class Metrics:
    """One registry per app instance (tests build several apps in one process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        ProcessCollector(registry=r)  # process_resident_memory_bytes, process_cpu_seconds_total, ...
        self.calls_started = Counter("switchboard_calls_started", "Media streams admitted", ["direction"], registry=r)
        self.calls_active = Gauge("switchboard_calls_active", "Media streams in progress", registry=r)
        self.calls_ended = Counter("switchboard_calls_ended", "Media streams ended", ["status"], registry=r)
        self.streams_rejected = Counter(
            "switchboard_streams_rejected", "Media streams refused before bridging", ["reason"], registry=r
        )
        self.webhooks_rejected = Counter(
            "switchboard_webhooks_rejected", "Twilio webhooks refused", ["path"], registry=r
        )
        self.bad_frames = Counter(
            "switchboard_bad_frames", "Unusable frames from Twilio, skipped", ["reason"], registry=r
        )
        self.frames_in = Counter(
            "switchboard_caller_frames", "Caller audio frames received (counted at call end)", registry=r
        )
        self.tool_calls = Counter("switchboard_tool_calls", "Tool invocations", ["name", "outcome"], registry=r)
        self.barge_ins = Counter("switchboard_barge_ins", "Caller interruptions of agent audio", registry=r)
        self.event_loop_lag_seconds = Histogram(
            "switchboard_event_loop_lag_seconds",
            "How late the event loop woke a 250 ms timer: every call's audio waits this long too",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=r,
        )
        self.turn_stage_seconds = Histogram(
            "switchboard_turn_stage_seconds",
            "Per caller turn, from the end of the caller's speech to each stage: transcript, chat_first_token, "
            "speech_first_bytes (cascaded engine), first_audio (both engines)",
            ["engine", "stage"],
            buckets=(0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10),
            registry=r,
        )
        self.upstream_connect_seconds = Histogram(
            "switchboard_upstream_connect_seconds", "Time to open a Realtime session", registry=r
        )
        self.live_write_retries = Counter(
            "switchboard_live_state_write_retries", "Redis writes of live call state retried", registry=r
        )
        self.upstream_reconnects = Counter(
            "switchboard_upstream_reconnects", "Realtime sessions replaced mid-call", ["reason"], registry=r
        )
        self.upstream_recovery_seconds = Histogram(
            "switchboard_upstream_recovery_seconds",
            "From losing a Realtime session to the next one being ready",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
            registry=r,
        )
        self.upstream_failures = Counter(
            "switchboard_upstream_failures", "Calls given up after the reconnect deadline", registry=r
        )
        self.calls_resumed = Counter("switchboard_calls_resumed", "Streams that resumed a live call", registry=r)
        self.calls_handed_over = Counter(
            "switchboard_calls_handed_over", "Calls a draining node handed over to another node", registry=r
        )
        self.draining = Gauge("switchboard_draining", "1 while this node drains (not ready for new calls)", registry=r)
        self.streams_taken_over = Counter(
            "switchboard_streams_taken_over", "Streams closed because another stream took their call", registry=r
        )
        self.caller_frames_held = Counter(
            "switchboard_caller_frames_held", "Caller frames buffered while no Realtime session was ready", registry=r
        )
        self.caller_frames_replayed = Counter(
            "switchboard_caller_frames_replayed", "Held caller frames sent to a new Realtime session", registry=r
        )
        self.caller_frames_dropped = Counter(
            "switchboard_caller_frames_dropped",
            "Caller frames lost: held past the bound while no Realtime session was ready",
            registry=r,
        )
        self.orphan_archive_failures = Counter(
            "switchboard_orphan_archive_failures",
            "Orphaned calls the sweeper could not archive (passed over, tried again next pass)",
            registry=r,
        )
        self.orphans_archived = Counter(
            "switchboard_orphans_archived", "Calls archived by the sweeper after their lease expired", registry=r
        )
        self.twilio_rest_errors = Counter(
            "switchboard_twilio_rest_errors", "Twilio REST calls that failed", ["operation"], registry=r
        )


async def watch_event_loop_lag(hist: Histogram, interval_s: float = 0.25) -> None:
    """Observe how late a timer fires, four times a second: the node's saturation as calls feel it."""
    loop = asyncio.get_running_loop()
    while True:
        due = loop.time() + interval_s
        await asyncio.sleep(interval_s)
        hist.observe(max(0.0, loop.time() - due))
