"""Suite-wide fixtures and CI guards.

Real services come from ``scripts/test``, which starts a throwaway Redis and
PostgreSQL and exports their URLs. Without them a test that needs one skips
locally, but under ``CI=true`` it fails: a test that needs Redis or PostgreSQL
never skips under CI. As a second guard, any skipped test fails a CI session.

Keep this file free of ``app`` imports; app fixtures belong in conftest files
of subfolders.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest

REDIS_URL_ENV = "SWITCHBOARD_TEST_REDIS_URL"
POSTGRES_URL_ENV = "SWITCHBOARD_TEST_POSTGRES_URL"
REDIS_SERVER_ENV = "SWITCHBOARD_TEST_REDIS_SERVER"
CHROMIUM_ENV = "SWITCHBOARD_TEST_CHROMIUM"


def _under_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"true", "1"}


def _require_env(name: str, service: str) -> str:
    value = os.environ.get(name, "").strip()
    if value:
        return value
    if _under_ci():
        pytest.fail(
            f"{name} is not set: {service} required under CI (run the suite through scripts/test)",
            pytrace=False,
        )
    pytest.skip(f"no {service}: run scripts/test (it sets {name})")


@pytest.fixture(scope="session")
def redis_url() -> str:
    """URL of a real, throwaway Redis server (``redis://127.0.0.1:PORT/0``)."""
    return _require_env(REDIS_URL_ENV, "Redis")


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """SQLAlchemy URL of a real, throwaway PostgreSQL database (asyncpg driver)."""
    return _require_env(POSTGRES_URL_ENV, "PostgreSQL")


@pytest.fixture(scope="session")
def redis_server_bin() -> str:
    """Path of the redis-server binary, for tests that start their own server."""
    return _require_env(REDIS_SERVER_ENV, "redis-server binary")


@pytest.fixture(scope="session")
def chromium_path() -> str:
    """Path of Debian's chromium, which playwright drives in the browser tests (it downloads no browser)."""
    return _require_env(CHROMIUM_ENV, "Chromium (Debian package chromium)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "redis: needs a real Redis server (redis_url fixture)")
    config.addinivalue_line("markers", "postgres: needs a real PostgreSQL server (postgres_url fixture)")
    config.addinivalue_line("markers", "e2e: end-to-end test across several components")
    config.addinivalue_line("markers", "browser: drives headless Chromium (chromium_path fixture)")
    if _under_ci() and not config.pluginmanager.has_plugin(_CISkipGuard.name):
        config.pluginmanager.register(_CISkipGuard(), _CISkipGuard.name)


class _CISkipGuard:
    """Under CI=true, any skipped test (or skipped module) fails the session."""

    name = "switchboard-ci-skip-guard"

    def __init__(self) -> None:
        self.skipped: list[str] = []

    def _record(self, report: pytest.TestReport | pytest.CollectReport) -> None:
        if not report.skipped or hasattr(report, "wasxfail"):
            return  # xfail is reported as "skipped" but is not a skip
        reason = ""
        longrepr = report.longrepr
        if isinstance(longrepr, tuple) and len(longrepr) == 3:
            reason = str(longrepr[2])
        where = report.nodeid or "<collection>"
        self.skipped.append(f"{where}: {reason}" if reason else where)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self._record(report)

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        self._record(report)

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if self.skipped and session.exitstatus in (
            pytest.ExitCode.OK,
            pytest.ExitCode.NO_TESTS_COLLECTED,
        ):
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if not self.skipped:
            return
        tr = terminalreporter
        tr.section("skipped under CI", sep="=", red=True, bold=True)
        tr.line(
            "CI=true: a test that needs Redis or PostgreSQL never skips under CI; "
            f"{len(self.skipped)} skipped, so this session FAILS:",
            red=True,
        )
        for entry in self.skipped:
            tr.line(f"  {entry}")


@pytest.fixture(scope="session")
def s3_url() -> Iterator[str]:
    """An S3-compatible server for the whole session: moto's server mode (a real HTTP S3 API), on a free
    loopback port, started from the test environment's Python; its readiness is its own "Running on" line."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"}
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, text=True,
    )  # fmt: skip
    try:
        assert server.stderr is not None
        for line in server.stderr:
            if f"Running on http://127.0.0.1:{port}" in line:
                break
        else:
            pytest.fail(f"moto's S3 server did not start (exit {server.wait()})")
        # It logs a line per request: read them away, or a full pipe would stall the server.
        threading.Thread(target=lambda: [None for _ in server.stderr or ()], daemon=True).start()
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=10)
