"""HTTP surface through the real server: health, metrics, webhooks, API keys and roles."""

from __future__ import annotations

import asyncio
import socket
import xml.etree.ElementTree as ET
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from app.archive.models import CallEvent
from app.auth.keys import Role
from app.cli import cli
from app.db import make_engine, make_sessionmaker
from tests.support import ACCOUNT_SID, PUBLIC_BASE, call_sid, key_for, make_settings, post_webhook, serve

pytestmark = pytest.mark.asyncio

UNUSED_REALTIME = "ws://127.0.0.1:9/v1"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_health_readiness_and_metrics(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, realtime_url=UNUSED_REALTIME)
    async with serve(settings) as base, httpx.AsyncClient(base_url=base) as client:
        assert (await client.get("/healthz")).json() == {"status": "ok"}
        ready = await client.get("/readyz")
        assert ready.status_code == 200
        assert ready.json() == {"status": "ready", "checks": {"redis": "ok", "database": "ok"}, "active_calls": 0}
        metrics = await client.get("/metrics")
        assert metrics.status_code == 200
        assert "switchboard_calls_active" in metrics.text and "switchboard_streams_rejected" in metrics.text
        assert "process_resident_memory_bytes" in metrics.text  # for memory alerts and the soak


async def test_with_redis_down_the_node_stays_ready_but_says_degraded(tmp_path: Path) -> None:
    # Calls are taken and survive with Redis away (tests/calls/test_redis_restart_e2e.py): taking every
    # node out of the load balancer for it would refuse them all instead.
    settings = make_settings(tmp_path, realtime_url=UNUSED_REALTIME, redis_url=f"redis://127.0.0.1:{closed_port()}/0")
    async with serve(settings) as base, httpx.AsyncClient(base_url=base) as client:
        ready = await client.get("/readyz")
    assert ready.status_code == 200
    body = ready.json()
    assert body["status"] == "degraded"
    assert body["checks"]["database"] == "ok" and body["checks"]["redis"].startswith("error")


async def test_readiness_checks_a_real_redis(tmp_path: Path, redis_url: str) -> None:
    settings = make_settings(tmp_path, realtime_url=UNUSED_REALTIME, redis_url=redis_url)
    async with serve(settings) as base, httpx.AsyncClient(base_url=base) as client:
        assert (await client.get("/readyz")).json()["checks"]["redis"] == "ok"


async def test_voice_webhook_answers_with_a_stream_to_the_public_wss_url(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, realtime_url=UNUSED_REALTIME)
    async with serve(settings) as base:
        params = {"CallSid": call_sid(5), "AccountSid": ACCOUNT_SID, "From": "+15005550006", "To": "+15005550001"}
        response = await post_webhook(base, "/twilio/voice", params)
    assert response.status_code == 200 and response.headers["content-type"].startswith("application/xml")
    root = ET.fromstring(response.text)
    stream = root.find("./Connect/Stream")
    assert stream is not None and stream.attrib["url"] == "wss://sb.example.test/twilio/media"
    params_out = {p.attrib["name"]: p.attrib["value"] for p in stream.findall("Parameter")}
    assert set(params_out) == {"token", "direction"} and params_out["direction"] == "inbound"
    redirect = root.find("./Redirect")
    assert redirect is not None and redirect.text == f"{PUBLIC_BASE}/twilio/resume"
    assert [child.tag for child in root] == ["Connect", "Redirect"]


async def test_resume_apologises_and_hangs_up(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, realtime_url=UNUSED_REALTIME)
    async with serve(settings) as base:
        response = await post_webhook(base, "/twilio/resume", {"CallSid": call_sid(6)})
    root = ET.fromstring(response.text)
    assert [child.tag for child in root] == ["Say", "Hangup"]


async def test_status_callbacks_are_recorded_as_call_events(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, realtime_url=UNUSED_REALTIME)
    sid = call_sid(7)
    async with serve(settings) as base:
        ok = await post_webhook(
            base, "/twilio/status", {"CallSid": sid, "CallStatus": "completed", "CallDuration": "42"}
        )
        forged = await post_webhook(base, "/twilio/status", {"CallSid": sid, "CallStatus": "failed"}, signature="eA==")
    assert ok.status_code == 204
    assert forged.status_code == 403
    engine = make_engine(settings.effective_database_url)
    async with make_sessionmaker(engine)() as session:
        events = list(await session.scalars(select(CallEvent).where(CallEvent.call_sid == sid)))
    await engine.dispose()
    assert [(e.kind, e.detail) for e in events] == [
        ("status_callback", {"CallStatus": "completed", "CallDuration": "42"})
    ]


@pytest.mark.parametrize(
    ("role", "status"),
    # ops may list calls (not read transcripts: tests/archive/test_review_api.py)
    [(None, 401), ("garbage", 401), (Role.ops, 200), (Role.supervisor, 200), (Role.admin, 200)],
)
async def test_api_routes_need_a_key_with_an_allowed_role(tmp_path: Path, role: Role | str | None, status: int) -> None:
    settings = make_settings(tmp_path, realtime_url=UNUSED_REALTIME)
    headers = {}
    if role == "garbage":
        headers["Authorization"] = "Bearer sb_nope_nope"
    elif isinstance(role, Role):
        headers["Authorization"] = f"Bearer {await key_for(settings.effective_database_url, role)}"
    async with serve(settings) as base, httpx.AsyncClient(base_url=base, headers=headers) as client:
        response = await client.get("/api/v1/calls")
    assert response.status_code == status
    if status != 200:
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["status"] == status
    else:
        assert response.json()["items"] == []


async def test_create_api_key_command_prints_a_working_key(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, realtime_url=UNUSED_REALTIME)
    env = {"DATABASE_URL": settings.effective_database_url}
    # The command runs its own event loop, as it does from a shell: give it a thread.
    result = await asyncio.to_thread(
        CliRunner().invoke, cli, ["create-api-key", "--role", "supervisor", "--name", "ci"], env=env
    )
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    (key,) = [line for line in lines if line.startswith("sb_")]
    assert lines[0] == f"API key for 'ci': role supervisor, id {key.split('_')[1]}"
    assert "Store it now" in result.output
    async with serve(settings) as base, httpx.AsyncClient(base_url=base) as client:
        ok = await client.get("/api/v1/calls", headers={"Authorization": f"Bearer {key}"})
        tampered = await client.get("/api/v1/calls", headers={"Authorization": f"Bearer {key[:-2]}xx"})
    assert ok.status_code == 200 and tampered.status_code == 401
    bad = await asyncio.to_thread(CliRunner().invoke, cli, ["create-api-key", "--role", "root"], env=env)
    assert bad.exit_code == 2
