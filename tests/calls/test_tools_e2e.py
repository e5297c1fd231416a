"""Agent tools through the real server: Twilio REST calls asserted with respx."""

from __future__ import annotations

import asyncio
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
import respx
from sqlalchemy import text

from app.auth.keys import Role
from app.calls.tools import AgentTool, ToolContext, ToolRegistry
from app.db import make_engine
from app.emulator.config import EmulatorConfig
from app.emulator.server import RealtimeEmulator
from tests.support import (
    TwilioStream,
    archived,
    key_for,
    make_settings,
    open_call,
    post_webhook,
    say_turn,
    serve,
    twilio_call_route,
)

pytestmark = [pytest.mark.asyncio, pytest.mark.e2e]


async def test_end_call_hangs_up_through_twilio_rest_after_the_goodbye(tmp_path: Path) -> None:
    config = EmulatorConfig(
        tts="synthetic",
        transcripts=["ok, please hang up now"],
        function_calls={"hang up": ("end_call", {"reason": "caller is done"})},
    )
    async with RealtimeEmulator(config) as emulator, respx.mock(assert_all_called=False) as mock:
        mock.route(host="127.0.0.1").pass_through()
        settings = make_settings(tmp_path, realtime_url=emulator.url)
        async with serve(settings) as base:
            sid, token = await open_call(base, 30)
            route, called = twilio_call_route(mock, sid)
            async with TwilioStream.open(base, call_sid=sid, token=token, auto_ack=True) as tw:
                await tw.wait_for(lambda m: m["event"] == "media")
                await say_turn(tw)
                await asyncio.wait_for(called.wait(), 10)
                await tw.stop()
                await tw.wait_closed()
            # Should Twilio still follow the <Redirect>, an ended call just hangs up: no apology.
            resume = await post_webhook(base, "/twilio/resume", {"CallSid": sid})
            record = await archived(base, settings, sid)
    assert [child.tag for child in ET.fromstring(resume.text)] == ["Hangup"]
    assert [(t["name"], t["status"], t["output"], t["arguments"]) for t in record["tools"]] == [
        ("end_call", "done", "hung up", {"reason": "caller is done"})
    ]
    assert record["end_reason"] == "agent hung up: caller is done"
    form = parse_qs(route.calls.last.request.content.decode())
    assert form == {"Status": ["completed"]}
    assert route.calls.last.request.headers["authorization"].startswith("Basic ")


async def test_a_card_number_in_what_the_model_says_is_redacted_wherever_it_is_stored(
    tmp_path: Path, postgres_url: str
) -> None:
    card = "4111 1111 1111 1111"
    reason = f"caller read out their card {card} and asked to hang up"
    config = EmulatorConfig(
        tts="synthetic",
        transcripts=["ok, please hang up now"],
        function_calls={"hang up": ("end_call", {"reason": reason})},
    )
    async with RealtimeEmulator(config) as emulator, respx.mock(assert_all_called=False) as mock:
        mock.route(host="127.0.0.1").pass_through()
        settings = make_settings(tmp_path, realtime_url=emulator.url, database_url=postgres_url,
                                 redact_transcripts="card")  # fmt: skip
        ops = await key_for(settings.effective_database_url, Role.ops)  # no transcripts grant
        async with serve(settings) as base:
            sid, token = await open_call(base, uuid.uuid4().int % (1 << 90))
            _route, called = twilio_call_route(mock, sid)
            async with TwilioStream.open(base, call_sid=sid, token=token, auto_ack=True) as tw:
                await tw.wait_for(lambda m: m["event"] == "media")
                await say_turn(tw)
                await asyncio.wait_for(called.wait(), 10)
                await tw.wait_closed()  # the server ends the stream after the hang-up
            record = await archived(base, settings, sid)
            async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {ops}"}) as api:
                listed = (await api.get("/api/v1/calls", params={"direction": "inbound"})).json()["items"]
    engine = make_engine(postgres_url)
    try:
        async with engine.connect() as conn:
            queries = [
                "SELECT * FROM calls WHERE call_sid = :sid",
                "SELECT t.* FROM tool_invocations t JOIN calls c ON c.id = t.call_id WHERE c.call_sid = :sid",
                "SELECT * FROM call_events WHERE call_sid = :sid",
            ]
            stored = [str(row) for q in queries for row in (await conn.execute(text(q), {"sid": sid})).all()]
    finally:
        await engine.dispose()
    redacted = reason.replace(card, "[card]")
    assert record["end_reason"] == f"agent hung up: {redacted}"
    assert [t["arguments"] for t in record["tools"]] == [{"reason": redacted}]
    assert not [row for row in stored if card in row or card.replace(" ", "") in row]  # nowhere in the archive
    ours = next(c for c in listed if c["call_sid"] == sid)
    assert ours["end_reason"] == "agent hung up"  # ops without the grant: the kind of end, not the words


async def test_transfer_speaks_a_handoff_line_then_dials_the_human(tmp_path: Path) -> None:
    config = EmulatorConfig(
        tts="synthetic",
        transcripts=["can I talk to a person"],
        function_calls={"person": ("transfer_to_human", {"reason": "asked for a person"})},
    )
    async with RealtimeEmulator(config) as emulator, respx.mock(assert_all_called=False) as mock:
        mock.route(host="127.0.0.1").pass_through()
        settings = make_settings(tmp_path, realtime_url=emulator.url, transfer_number="+15550001111")
        async with serve(settings) as base:
            sid, token = await open_call(base, 31)
            route, called = twilio_call_route(mock, sid)
            async with TwilioStream.open(base, call_sid=sid, token=token, auto_ack=True) as tw:
                await tw.wait_for(lambda m: m["event"] == "media")
                await say_turn(tw)
                await asyncio.wait_for(called.wait(), 10)
                session = await emulator.wait_for_session(0)
                await tw.stop()
                await tw.wait_closed()
            resume = await post_webhook(base, "/twilio/resume", {"CallSid": sid})
    assert ET.fromstring(resume.text).find("./Dial/Number").text == "+15550001111"  # type: ignore[union-attr]
    twiml = parse_qs(route.calls.last.request.content.decode())["Twiml"][0]
    assert "<Dial><Number>+15550001111</Number></Dial>" in twiml
    handoff = [e for e in session.received if e["type"] == "response.create" and "transfer" in str(e)]
    assert handoff, "the agent was asked to say a handoff line before the transfer"
    outputs = [
        e
        for e in session.received
        if e["type"] == "conversation.item.create" and e["item"]["type"] == "function_call_output"
    ]
    assert outputs and "transferring" in outputs[0]["item"]["output"]


async def _failing(arguments: dict[str, Any], context: ToolContext) -> Any:
    raise RuntimeError("ledger is down")


async def _hanging(arguments: dict[str, Any], context: ToolContext) -> Any:
    await asyncio.Event().wait()


@pytest.mark.parametrize(
    ("tool", "expected"),
    [
        (
            AgentTool("check_balance", "Look up the balance", {"type": "object", "properties": {}}, _failing),
            "ledger is down",
        ),
        (
            AgentTool(
                "check_balance", "Look up the balance", {"type": "object", "properties": {}}, _hanging, timeout_s=0.3
            ),
            "timed out",
        ),
    ],
    ids=["raises", "times-out"],
)
async def test_a_failing_custom_tool_returns_an_error_to_the_model_and_the_call_goes_on(
    tmp_path: Path, tool: AgentTool, expected: str
) -> None:
    tools = ToolRegistry()
    tools.add(tool)
    config = EmulatorConfig(
        tts="synthetic", transcripts=["what is my balance"], function_calls={"balance": ("check_balance", {})}
    )
    async with RealtimeEmulator(config) as emulator:
        settings = make_settings(tmp_path, realtime_url=emulator.url)
        async with serve(settings, tools=tools) as base:
            sid, token = await open_call(base, 32)
            async with TwilioStream.open(base, call_sid=sid, token=token, auto_ack=True) as tw:
                session = await emulator.wait_for_session(0)
                update = await session.wait_for(lambda e: e["type"] == "session.update")
                assert "check_balance" in [t["name"] for t in update["session"]["tools"]]
                await tw.wait_for(lambda m: m["event"] == "media")
                await say_turn(tw)
                output = await session.wait_for(
                    lambda e: e["type"] == "conversation.item.create" and e["item"]["type"] == "function_call_output"
                )
                assert expected in output["item"]["output"] and "error" in output["item"]["output"]
                follow_up = await session.wait_for(
                    lambda e: e["type"] == "response.create", start=session.received.index(output)
                )
                assert follow_up
                # The call goes on: the agent speaks again after the failure.
                reply = await session.wait_sent(lambda e: e["type"] == "response.done", start=len(session.sent))
                assert reply["response"]["status"] == "completed"
                await tw.stop()
                await tw.wait_closed()
            record = await archived(base, settings, sid)
    assert tw.close_code == 1000
    (invocation,) = record["tools"]
    assert invocation["name"] == "check_balance" and invocation["status"] == "error"
    assert expected in invocation["output"]


async def test_dtmf_digits_reach_the_model(tmp_path: Path) -> None:
    async with RealtimeEmulator(EmulatorConfig(tts="synthetic")) as emulator:
        settings = make_settings(tmp_path, realtime_url=emulator.url)
        async with serve(settings) as base:
            sid, token = await open_call(base, 33)
            async with TwilioStream.open(base, call_sid=sid, token=token, auto_ack=True) as tw:
                session = await emulator.wait_for_session(0)
                await tw.dtmf("7")
                item = await session.wait_for(lambda e: e["type"] == "conversation.item.create")
                await tw.stop()
                await tw.wait_closed()
    assert item["item"]["role"] == "user" and "7" in item["item"]["content"][0]["text"]
