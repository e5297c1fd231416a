"""Every log line is one format: the standard library's loggers (uvicorn's, alembic's, websockets') are
rendered as structlog's own lines are, JSON by default, or all plain text with LOG_JSON=false."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest
import structlog

from app.observability import configure_logging


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    root, uvicorn = logging.getLogger(), logging.getLogger("uvicorn.error")
    saved = [(lg, lg.handlers[:], lg.level, lg.propagate) for lg in (root, uvicorn)]
    config = structlog.get_config()
    yield
    for logger, handlers, level, propagate in saved:
        logger.handlers[:] = handlers
        logger.setLevel(level)
        logger.propagate = propagate
    structlog.configure(**config)


def test_uvicorn_alembic_and_our_own_lines_are_all_json(capsys: pytest.CaptureFixture[str]) -> None:
    # As uvicorn's default logging config leaves them (another server in this process may have applied it)
    logging.getLogger("uvicorn.error").setLevel(logging.WARNING)
    logging.getLogger("uvicorn.error").addHandler(logging.StreamHandler())
    logging.getLogger("uvicorn.error").propagate = False
    configure_logging("INFO", json=True)
    logging.getLogger("uvicorn.error").info("Application startup complete.")
    logging.getLogger("alembic.runtime.migration").info("Running upgrade  -> 0001, first")
    logging.getLogger("websockets.server").warning("connection rejected (%d %s)", 403, "Forbidden")
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("uvicorn.error").exception("Exception in ASGI application")
    structlog.get_logger().info("app.started", carrier="http://127.0.0.1:8777")
    captured = capsys.readouterr()
    lines = [json.loads(line) for line in (captured.err + captured.out).splitlines() if line.strip()]
    by_event = {line["event"]: line for line in lines}
    assert by_event["Application startup complete."]["logger"] == "uvicorn.error"
    assert by_event["Application startup complete."]["level"] == "info" and "timestamp" in by_event["app.started"]
    assert by_event["Running upgrade  -> 0001, first"]["logger"] == "alembic.runtime.migration"
    assert by_event["connection rejected (403 Forbidden)"]["level"] == "warning"
    assert "ValueError: boom" in by_event["Exception in ASGI application"]["exception"]
    assert by_event["app.started"]["carrier"] == "http://127.0.0.1:8777"


def test_with_log_json_false_every_line_is_plain_text(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", json=False)
    logging.getLogger("uvicorn.error").info("Application startup complete.")
    structlog.get_logger().info("app.started")
    captured = capsys.readouterr()
    lines = [line for line in (captured.err + captured.out).splitlines() if line.strip()]
    assert len(lines) == 2 and not any(line.lstrip().startswith("{") for line in lines)
    assert any("Application startup complete." in line for line in lines)


def test_the_level_filters_standard_library_lines_too(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("WARNING", json=True)
    logging.getLogger("uvicorn.error").info("Application startup complete.")
    logging.getLogger("uvicorn.error").warning("shutting down")
    captured = capsys.readouterr()
    assert [json.loads(line)["event"] for line in captured.err.splitlines() if line.strip()] == ["shutting down"]
