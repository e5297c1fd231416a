"""Post-call results through the real server: a call is archived, its job asks the chat model (the emulator's
chat stage, structured outputs) for a summary and an extraction, stores them, meters them, and a signed webhook
carries them to a receiver that fails twice before it accepts."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import create_async_engine
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from app.auth.keys import Role
from app.emulator.audio import SpeechSynth
from app.emulator.cascade import CascadeStages
from app.emulator.config import EmulatorConfig
from app.emulator.server import RealtimeEmulator
from app.results.extraction import DEFAULT_SCHEMA
from app.results.models import PostCallJob
from app.results.signing import HEADER, verify
from tests.support import key_for, make_settings, one_turn_call, serve, serve_asgi

pytestmark = [pytest.mark.asyncio, pytest.mark.e2e]

SECRET = "whsec-test-0123456789abcdef"


@dataclass
class Receiver:
    """A CRM's webhook endpoint: answers ``failures`` 500s first, then 200; keeps every request."""

    failures: int = 0
    requests: list[tuple[dict[str, str], bytes, int]] = field(default_factory=list)
    accepted: asyncio.Event = field(default_factory=asyncio.Event)
    count: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def hook(self, request: Request) -> Response:
        body = await request.body()
        status = 500 if self.failures > 0 else 200
        self.failures -= 1
        async with self.count:
            self.requests.append((dict(request.headers), body, status))
            self.count.notify_all()
        if status == 200:
            self.accepted.set()
            return JSONResponse({"ok": True})
        return JSONResponse({"error": "CRM is down"}, status_code=500)

    async def wait_for(self, n: int) -> None:
        async with asyncio.timeout(20):
            async with self.count:
                await self.count.wait_for(lambda: len(self.requests) >= n)


def app_of(path: str, receiver: Receiver) -> Starlette:
    return Starlette(routes=[Route(path, receiver.hook, methods=["POST"])])


@asynccontextmanager
async def rig(
    tmp_path: Path, config: EmulatorConfig, crm: str, **overrides: Any
) -> AsyncIterator[tuple[str, Any, RealtimeEmulator, CascadeStages]]:
    """The server, the Realtime emulator, its chat stage as the post-call model, and ``crm`` as the webhook."""
    stages = CascadeStages(config, SpeechSynth(mode="synthetic"))
    async with RealtimeEmulator(config) as emulator, serve_asgi(stages.app) as stages_base:
        values: dict[str, Any] = {
            "chat_base_url": f"{stages_base}/v1", "post_call_results": True, "post_call_webhook_url": f"{crm}/hook",
            "post_call_webhook_secret": SECRET, "webhook_retry_base_s": 0.05, "post_call_poll_s": 0.05,
            "post_call_retry_base_s": 0.05,
        }  # fmt: skip
        settings = make_settings(tmp_path, realtime_url=emulator.url, **(values | overrides))
        async with serve(settings) as base:
            yield base, settings, emulator, stages


async def test_results_are_stored_filterable_metered_and_a_receiver_failing_twice_gets_one_accepted_signed_delivery(
    tmp_path: Path,
) -> None:
    config = EmulatorConfig(tts="synthetic", transcripts=["Can you call back tomorrow about my cleaning"],
                            reply_text=lambda heard: "Sure, we will call you back tomorrow.")  # fmt: skip
    receiver = Receiver(failures=2)
    async with (
        serve_asgi(app_of("/hook", receiver)) as crm,
        rig(tmp_path, config, crm) as (base, settings, emulator, stages),
    ):
        sid = await one_turn_call(base, emulator, 1)
        await receiver.wait_for(3)
        supervisor = await key_for(settings.effective_database_url, Role.supervisor)
        ops = await key_for(settings.effective_database_url, Role.ops)
        async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {supervisor}"}) as api:
            call = (await api.get(f"/api/v1/calls/{sid}")).json()
            wanted = (await api.get("/api/v1/calls", params={"extraction": "callback_requested=true"})).json()
            unwanted = (await api.get("/api/v1/calls", params={"extraction": ["callback_requested=false"]})).json()
            by_both = (await api.get("/api/v1/calls", params={"extraction": ["callback_requested=true",
                                                                             "sentiment=neutral"]})).json()  # fmt: skip
            bad = await api.get("/api/v1/calls", params={"extraction": "no equals sign"})
            deliveries = (await api.get(f"/api/v1/calls/{sid}/deliveries")).json()
            not_ops = await api.get("/api/v1/calls", params={"extraction": "callback_requested=true"},
                                    headers={"Authorization": f"Bearer {ops}"})  # fmt: skip
            listed_to_ops = (await api.get("/api/v1/calls", headers={"Authorization": f"Bearer {ops}"})).json()
            again = await api.post(f"/api/v1/calls/{sid}/deliveries/{deliveries[0]['id']}/redeliver")
            await receiver.wait_for(4)
    # the model was asked once, with the transcript, for a strict schema
    (asked,) = [c.body for c in stages.chats if "response_format" in c.body]
    assert asked["response_format"]["json_schema"]["strict"] is True
    assert asked["response_format"]["json_schema"]["schema"]["properties"]["extraction"] == DEFAULT_SCHEMA
    assert "caller: Can you call back tomorrow" in asked["messages"][-1]["content"]
    # stored with the call, validated, and filterable
    assert call["results_status"] == "done"
    assert call["summary"].startswith("The caller said: Can you call back tomorrow")
    assert call["extraction"] == {"reason": "Can you call back tomorrow about my cleaning", "resolved": False,
                                  "callback_requested": True, "sentiment": "neutral"}  # fmt: skip
    assert [c["call_sid"] for c in wanted["items"]] == [sid] and unwanted["items"] == []
    assert [c["call_sid"] for c in by_both["items"]] == [sid]
    assert bad.status_code == 400 and "field=value" in bad.json()["detail"]
    assert not_ops.status_code == 403  # what the extraction says is transcript content
    assert [(c["summary"], c["extraction"]) for c in listed_to_ops["items"]] == [(None, None)]
    # metered as the call's cost
    (post_call,) = [c for c in call["costs"] if c["kind"] == "post_call"]
    assert post_call["micros"] > 0 and call["cost_micros"] >= post_call["micros"]
    # three attempts of one delivery, the third accepted; each signed afresh and verifiable; then a redelivery
    assert [status for _, _, status in receiver.requests] == [500, 500, 200, 200]
    now = int(time.time())
    for headers, body, _ in receiver.requests:
        assert verify(SECRET, headers[HEADER.lower()], body, now=now)
        assert not verify("another secret, not ours", headers[HEADER.lower()], body, now=now)
        assert not verify(SECRET, headers[HEADER.lower()], body, now=now + 3600)  # a replay an hour later
    first_three = {headers["switchboard-delivery"] for headers, _, _ in receiver.requests[:3]}
    assert first_three == {str(deliveries[0]["id"])}
    payload = orjson.loads(receiver.requests[2][1])
    assert payload["event"] == "call.results" and payload["call"]["call_sid"] == sid
    assert payload["results"]["extraction"]["callback_requested"] is True
    assert [line["speaker"] for line in payload["transcript"]] == ["agent", "caller", "agent"]
    ((delivery,)) = deliveries
    assert delivery["status"] == "delivered" and delivery["attempts"] == 3
    assert [a["status_code"] for a in delivery["log"]] == [500, 500, 200]
    assert delivery["log"][0]["response"] == '{"error":"CRM is down"}'
    assert again.status_code == 202 and again.json()["redelivery_of"] == delivery["id"]
    assert receiver.requests[3][1] == receiver.requests[2][1]  # the same results again


async def test_a_job_whose_model_is_away_is_retried_and_survives_a_restart(tmp_path: Path) -> None:
    config = EmulatorConfig(tts="synthetic", transcripts=["I am upset about my bill"])
    receiver, model_away = Receiver(), Receiver(failures=10**9)  # the chat model answers 500 for now
    async with (
        serve_asgi(app_of("/hook", receiver)) as crm,
        serve_asgi(app_of("/v1/chat/completions", model_away)) as away,
    ):
        async with rig(tmp_path, config, crm, chat_base_url=f"{away}/v1") as (base, settings, emulator, _):
            sid = await one_turn_call(base, emulator, 2)
            await model_away.wait_for(2)  # tried, and tried again after its backoff
            supervisor = await key_for(settings.effective_database_url, Role.supervisor)
            async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {supervisor}"}) as api:
                pending = (await api.get(f"/api/v1/calls/{sid}")).json()
        assert pending["results_status"] == "pending" and receiver.requests == []
        # The model is back; a new server (the same database) finishes the job left pending.
        stages = CascadeStages(config, SpeechSynth(mode="synthetic"))
        async with serve_asgi(stages.app) as stages_base:
            restarted = settings.model_copy(update={"chat_base_url": f"{stages_base}/v1"})
            async with serve(restarted) as base:
                await asyncio.wait_for(receiver.accepted.wait(), 20)
                async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {supervisor}"}) as api:
                    done = (await api.get(f"/api/v1/calls/{sid}")).json()
    assert done["results_status"] == "done" and done["extraction"]["sentiment"] == "upset"
    assert len(stages.chats) == 1  # asked once on the new server
    assert len(receiver.requests) == 1


async def test_a_node_stopped_mid_job_hands_the_job_back_at_once(tmp_path: Path) -> None:
    # The chat model holds the job's request until the node has stopped: the node was in the middle of it.
    config = EmulatorConfig(tts="synthetic", transcripts=["I am upset about my bill"])
    arrived, release = asyncio.Event(), asyncio.Event()

    async def held(request: Request) -> Response:
        arrived.set()
        await release.wait()
        return JSONResponse({"error": {"message": "too late"}}, status_code=500)

    async with serve_asgi(Starlette(routes=[Route("/v1/chat/completions", held, methods=["POST"])])) as model:
        try:
            async with (
                serve_asgi(app_of("/hook", Receiver())) as crm,
                rig(tmp_path, config, crm, chat_base_url=f"{model}/v1") as (base, settings, emulator, _),
            ):
                await one_turn_call(base, emulator, 2)
                await asyncio.wait_for(arrived.wait(), 20)
        finally:
            release.set()
    engine = create_async_engine(settings.effective_database_url)
    async with engine.connect() as conn:
        jobs = (await conn.execute(select(PostCallJob.status, PostCallJob.lease_until, PostCallJob.attempts))).all()
    await engine.dispose()
    # Due again for any node, not leased for minutes to the one that stopped.
    assert [tuple(job) for job in jobs] == [("pending", None, 1)]
