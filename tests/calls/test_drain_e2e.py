"""Graceful drain: two real server processes behind a readiness-checking proxy; SIGTERM one of them
during 20 active calls. No call is dropped: each either finishes on the draining node or is handed over
and resumes on the other one with its transcript."""

from __future__ import annotations

import asyncio
import signal
import uuid
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.emulator.config import EmulatorConfig
from app.emulator.server import RealtimeEmulator
from app.emulator.session import EmulatedSession
from app.simulator.lbproxy import ReadyProxy
from tests.calls.test_node_loss_e2e import lines_stored
from tests.support import (
    TwilioStream,
    agent_turn_played,
    archived,
    make_settings,
    open_call,
    post_webhook,
    say_turn,
    server_process,
    twiml_stream,
)

pytestmark = [pytest.mark.asyncio, pytest.mark.e2e, pytest.mark.redis, pytest.mark.postgres]

CALLS = 20
DRAIN_DEADLINE_S = 5


async def resume_elsewhere(stack: AsyncExitStack, proxy: str, sid: str) -> TwilioStream:
    """What Twilio does when our side closes the stream: the <Redirect> to /twilio/resume (through the
    load balancer), then a new stream with the token it returns."""
    resume = await post_webhook(proxy, "/twilio/resume", {"CallSid": sid})
    assert resume.status_code == 200, resume.text
    _, params = twiml_stream(resume.text)
    return await stack.enter_async_context(TwilioStream.open(proxy, call_sid=sid, token=params["token"], auto_ack=True))


async def test_sigterm_during_twenty_calls_drops_none(tmp_path: Path, redis_url: str, postgres_url: str) -> None:
    config = EmulatorConfig(tts="synthetic", reply_text=lambda heard: "Noted.")
    async with RealtimeEmulator(config) as emulator, AsyncExitStack() as stack:
        settings = make_settings(tmp_path, realtime_url=emulator.url, redis_url=redis_url, database_url=postgres_url)
        env = {"DRAIN_DEADLINE_S": str(DRAIN_DEADLINE_S)}
        (base_a, node_a) = stack.enter_context(server_process(settings, env))
        (base_b, _node_b) = stack.enter_context(server_process(settings, env))
        proxy = ReadyProxy([base_a, base_b])
        lb = await stack.enter_async_context(proxy.serve())

        n0 = uuid.uuid4().int % (1 << 90)
        calls: list[tuple[str, TwilioStream, EmulatedSession]] = []
        for i in range(CALLS):
            sid, token = await open_call(lb, n0 + i)
            tw = await stack.enter_async_context(TwilioStream.open(lb, call_sid=sid, token=token, auto_ack=True))
            calls.append((sid, tw, await emulator.wait_for_session(i)))

        async def first_turn(tw: TwilioStream, session: EmulatedSession) -> None:
            await agent_turn_played(tw, session, 0)
            await say_turn(tw)
            await agent_turn_played(tw, session, 1)

        await asyncio.gather(*(first_turn(tw, s) for _, tw, s in calls))
        on_a = [(sid, tw) for sid, tw, _ in calls if proxy.routes[tw.ws.local_address[:2]] == base_a]
        on_b = [(sid, tw) for sid, tw, _ in calls if proxy.routes[tw.ws.local_address[:2]] == base_b]
        assert len(on_a) + len(on_b) == CALLS and len(on_a) >= 4 and len(on_b) >= 4  # both nodes carry calls

        finishing, staying = on_a[: len(on_a) // 2], on_a[len(on_a) // 2 :]
        node_a.send_signal(signal.SIGTERM)
        # Not ready at once, while it still serves: the load balancer stops sending it anything new.
        async with httpx.AsyncClient(base_url=base_a, timeout=10) as direct, asyncio.timeout(30):
            ready = await direct.get("/readyz")
            while ready.status_code == 200:  # the signal lands on the node's loop in a moment
                ready = await direct.get("/readyz")
        assert ready.status_code == 503 and ready.json()["title"] == "Draining"
        # Half of A's callers hang up as soon as the drain has begun, before anything else happens here, so
        # their ends are under way long before the deadline: those calls end (and are archived) on A.
        for _, tw in finishing:
            await tw.stop()
        for _, tw in finishing:
            await tw.wait_closed()
        # A new call now goes to B.
        new_sid, new_token = await open_call(lb, n0 + 100)
        new_tw = await stack.enter_async_context(TwilioStream.open(lb, call_sid=new_sid, token=new_token,
                                                                   auto_ack=True))  # fmt: skip
        assert proxy.routes[new_tw.ws.local_address[:2]] == base_b

        # The rest are still talking at the deadline: A hands them over (1012) and Twilio resumes them on B.
        resumed: list[tuple[str, TwilioStream]] = []
        for sid, tw in staying:
            await tw.wait_closed(timeout=DRAIN_DEADLINE_S + 20)
            assert (tw.close_code, tw.close_reason) == (1012, "node draining: the call resumes on another node")
            resumed.append((sid, await resume_elsewhere(stack, lb, sid)))
        for _, tw in resumed:
            assert proxy.routes[tw.ws.local_address[:2]] == base_b
            await say_turn(tw)
        for sid, _ in resumed:
            await lines_stored(redis_url, sid, 5)  # the caller's new turn and the agent's answer, on B
        exit_code = await asyncio.to_thread(node_a.wait, 60)
        # Everyone hangs up.
        for _, tw in [*resumed, *on_b, (new_sid, new_tw)]:
            await tw.stop()
            await tw.wait_closed()
        records: dict[str, dict[str, Any]] = {}
        for sid, _, _ in calls:
            records[sid] = await archived(base_b, settings, sid)

    assert exit_code in (0, -signal.SIGTERM)  # a clean exit after the drain (uvicorn re-raises SIGTERM)
    for sid, _, _ in calls:
        record = records[sid]
        kinds = [e["kind"] for e in record["events"]]
        lines = [(s["speaker"], s["text"]) for s in record["transcript"]]
        assert record["status"] == "completed", (sid, record["end_reason"])
        assert sum("Acme Dental" in text for _, text in lines) == 1  # one greeting, never a second
        if sid in dict(staying):
            assert "handed_over" in kinds and "stream_resumed" in kinds
            # the transcript from before the handover, then the turn taken on B
            assert len(lines) == 5 and lines[1][0] == "caller" and lines[3][0] == "caller", lines
        else:
            assert "handed_over" not in kinds and len(lines) == 3, lines
