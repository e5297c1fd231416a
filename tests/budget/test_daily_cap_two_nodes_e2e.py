"""A daily cap shared by two real server processes through real Redis, with ten calls at once.

Both nodes are ``switchboard serve`` subprocesses; the Realtime emulator and a Twilio REST double (a
real HTTP server taking the same form-encoded requests Twilio does) run in this process. Only the
agent's audio costs money here (1,280 µ$ a second), each call holds a 10,240 µ$ closing reserve (160
tokens at 64 µ$), and the day may spend 180,000 µ$: enough for the ten greetings and a few turns, not
for all the turns the callers want.
"""

from __future__ import annotations

import asyncio
import json
import uuid
import xml.etree.ElementTree as ET
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from redis.asyncio import Redis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from app.budget.ledger import BudgetLedger
from app.emulator.config import EmulatorConfig
from app.emulator.server import RealtimeEmulator
from app.emulator.session import EmulatedSession
from tests.budget.test_enforcement_e2e import AUDIO_ONLY, enforcements
from tests.support import (
    ACCOUNT_SID,
    TwilioStream,
    agent_turn_played,
    call_sid,
    make_settings,
    open_call,
    post_webhook,
    say_turn,
    serve_asgi,
    server_process,
)

pytestmark = [pytest.mark.asyncio, pytest.mark.e2e, pytest.mark.redis, pytest.mark.postgres]

CAP = 180_000
CALLS = 10
WANTED_TURNS = 8  # more than the day can pay for
ZONE = "America/Chicago"
AUDIO_OUT_MICROS_PER_TOKEN = 64
CLOSING_RESERVE = 160 * AUDIO_OUT_MICROS_PER_TOKEN  # what each call holds for its closing line


class TwilioRestDouble:
    """Answers ``POST /2010-04-01/Accounts/{AccountSid}/Calls/{CallSid}.json`` like Twilio and records it.

    A hang-up is answered once ``may_answer`` is set: until then the call it ends cannot finish on our
    side, so its closing reserve stays held."""

    def __init__(self, may_answer: asyncio.Event) -> None:
        self.updates: dict[str, dict[str, str]] = {}
        self.hung_up: dict[str, asyncio.Event] = {}
        self.may_answer = may_answer
        self.app = Starlette(
            routes=[Route("/2010-04-01/Accounts/{account}/Calls/{sid}.json", self.update, methods=["POST"])]
        )

    def event(self, sid: str) -> asyncio.Event:
        return self.hung_up.setdefault(sid, asyncio.Event())

    async def update(self, request: Request) -> JSONResponse:
        sid = request.path_params["sid"]
        form = {k: str(v) for k, v in (await request.form()).items()}
        self.updates[sid] = form
        if request.path_params["account"] != ACCOUNT_SID:
            return JSONResponse({"code": 20404, "message": "not found", "status": 404}, status_code=404)
        if form.get("Status") == "completed":
            self.event(sid).set()
            await self.may_answer.wait()
        return JSONResponse({"sid": sid, "status": "completed" if form.get("Status") else "in-progress"})


def closing_requested(session: EmulatedSession) -> bool:
    return any(_is_closing(e) for e in session.received)


def response_costs(session: EmulatedSession) -> list[int]:
    """µ$ of each response the emulator billed (audio out only, at this test's prices)."""
    return [
        e["response"]["usage"]["output_token_details"]["audio_tokens"] * AUDIO_OUT_MICROS_PER_TOKEN
        for e in session.sent
        if e["type"] == "response.done" and e["response"].get("usage")
    ]


async def converse(tw: TwilioStream, session: EmulatedSession, hung_up: asyncio.Event, may_leave: asyncio.Event) -> int:
    """The caller's side: hear the greeting, then take turns until the call is hung up on them, or
    they have said all they wanted (then they hang up once ``may_leave`` is set). Returns the turns taken."""
    await agent_turn_played(tw, session, 0)
    turns = 0
    while turns < WANTED_TURNS and not closing_requested(session) and not hung_up.is_set():
        await say_turn(tw)
        turns += 1
        reply = asyncio.ensure_future(agent_turn_played(tw, session, turns))
        hang = asyncio.ensure_future(hung_up.wait())
        done, _ = await asyncio.wait({reply, hang}, return_when=asyncio.FIRST_COMPLETED, timeout=30)
        for task in (reply, hang):
            task.cancel()
        await asyncio.gather(reply, hang, return_exceptions=True)
        assert done, f"turn {turns}: neither the agent's answer nor a hang-up within 30 s"
    if turns < WANTED_TURNS or closing_requested(session):
        await asyncio.wait_for(hung_up.wait(), 30)  # the closing line, then Twilio REST ends the call
    # A call that ends gives what is left of its closing reserve back to the day's pool, which may then
    # fit one more call: the caller stays on the line until the new calls have been tried.
    await may_leave.wait()
    await tw.stop()
    await tw.wait_closed()
    return turns


async def test_ten_calls_on_two_nodes_keep_the_day_within_its_cap(
    tmp_path: Path, redis_url: str, postgres_url: str
) -> None:
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps(AUDIO_ONLY))
    day = datetime.now(UTC).astimezone(ZoneInfo(ZONE)).date()
    redis = Redis.from_url(redis_url)
    await redis.delete(*[f"sb:spend:{k}" for k in (f"day:{day}", f"reserve:{day}", f"reserve:{day}:touched",
                                                    f"reserve:{day}:total")])  # fmt: skip
    ledger = BudgetLedger(redis)
    # Until the new calls have been tried, no call may end: not by its caller, nor by the server (which
    # ends a wrapped-up call once Twilio has taken its hang-up).
    may_leave = asyncio.Event()
    twilio = TwilioRestDouble(may_leave)
    config = EmulatorConfig(tts="synthetic", reply_text=lambda heard: "Noted. Anything else today?")
    n0 = uuid.uuid4().int % (1 << 96)
    sids = [call_sid(n0 + i) for i in range(CALLS)]
    async with RealtimeEmulator(config) as emulator, serve_asgi(twilio.app) as twilio_base, AsyncExitStack() as stack:
        settings = make_settings(tmp_path, realtime_url=emulator.url, redis_url=redis_url, database_url=postgres_url)
        env = {
            "PRICE_TABLE_FILE": str(prices), "BUDGET_PER_DAY_USD": str(CAP / 1_000_000), "BUDGET_TIMEZONE": ZONE,
            "TWILIO_API_BASE_URL": twilio_base,
        }  # fmt: skip
        nodes = [stack.enter_context(server_process(settings, env))[0] for _ in range(2)]
        streams: list[tuple[TwilioStream, EmulatedSession]] = []
        for i, sid in enumerate(sids):
            node = nodes[i % 2]
            opened_sid, token = await open_call(node, n0 + i)
            assert opened_sid == sid
            tw = await stack.enter_async_context(TwilioStream.open(node, call_sid=sid, token=token, auto_ack=True))
            streams.append((tw, await emulator.wait_for_session(i)))
        callers = [
            asyncio.ensure_future(converse(tw, session, twilio.event(sid), may_leave))
            for (tw, session), sid in zip(streams, sids, strict=True)
        ]
        # The first call is asked to close when its charge found the day's free pool empty. While no call
        # ends (none hands its reserve back), what is free cannot fit a new call's closing reserve: a new
        # call on either node is turned away politely, before any Realtime session opens for it.
        await asyncio.wait_for(
            asyncio.wait([asyncio.ensure_future(s.wait_for(_is_closing, 60)) for _, s in streams],
                         return_when=asyncio.FIRST_COMPLETED),
            60,
        )  # fmt: skip
        spent, held = await ledger.day_pool(day)
        assert CAP - spent - held < CLOSING_RESERVE, (spent, held)
        sessions_before = len(emulator.sessions)
        refused = [
            await post_webhook(node, "/twilio/voice", {"CallSid": call_sid(n0 + 100 + k), "From": "+12125550123",
                                                       "To": "+12125550100", "Direction": "inbound"})
            for k, node in enumerate(nodes)
        ]  # fmt: skip
        may_leave.set()
        turns = await asyncio.wait_for(asyncio.gather(*callers), 120)
        day_total = await ledger.day_total(day)
        call_totals = [await ledger.call_total(sid) for sid in sids]
        reserved = await ledger.day_reserved(day)
        sessions_after = len(emulator.sessions)
        # Every call has ended and handed back what it did not spend of its closing reserve: while that
        # leaves room for another closing line, a new call is let in again.
        assert CAP - day_total >= CLOSING_RESERVE, day_total
        readmitted = await post_webhook(nodes[1], "/twilio/voice", {"CallSid": call_sid(n0 + 200),
                                        "From": "+12125550123", "To": "+12125550100", "Direction": "inbound"})  # fmt: skip
    await redis.aclose()
    assert [c.tag for c in ET.fromstring(readmitted.text)] == ["Connect", "Redirect"], readmitted.text

    # Every node turned the new call away with a message and a hang-up, and opened no session for it.
    for response in refused:
        assert response.status_code == 200
        assert [c.tag for c in ET.fromstring(response.text)] == ["Say", "Hangup"], response.text
    assert sessions_after == sessions_before == CALLS
    # The day could not pay for every turn the callers wanted: calls were wrapped up.
    wrapped = [sid for sid, (_, session) in zip(sids, streams, strict=True) if closing_requested(session)]
    assert wrapped and sum(turns) < CALLS * WANTED_TURNS
    # A wrapped-up call ended with its closing line, then a REST hang-up through Twilio; unless its caller
    # had said all they wanted and hung up first (a call wrapped up late, as its last turn ended).
    taken = dict(zip(sids, turns, strict=True))
    assert [sid for sid in wrapped if taken[sid] < WANTED_TURNS]
    for sid in wrapped:
        if taken[sid] < WANTED_TURNS:
            assert twilio.updates[sid] == {"Status": "completed"}
        else:
            assert twilio.updates.get(sid, {"Status": "completed"}) == {"Status": "completed"}
    # All spend is accounted for, once: the day's counter is the sum of its calls.
    assert day_total == sum(call_totals) and reserved == 0
    # The promise: never past the cap by more than one call's single in-flight increment (a response's
    # cost bounds any one charge: an estimate covers part of a response, a correction the rest).
    largest_increment = max(cost for _, session in streams for cost in response_costs(session))
    assert day_total <= CAP + largest_increment, (day_total, largest_increment)
    records = await enforcements(postgres_url)
    ours = [r for r in records if r.call_sid in set(sids) | {call_sid(n0 + 100 + k) for k in range(2)}]
    wrap_ups = [r for r in ours if r.action == "wrap_up"]
    # Every call asked for its closing line has its wrap-up on record, once. A call may also be wrapped up
    # in the moment its caller, done with all they wanted to say, hangs up: the closing line waits for the
    # answer still streaming, and the call ends before the request reaches the Realtime session. Its
    # wrap-up is on record too: the day reached its cap while the call was live.
    recorded = {r.call_sid for r in wrap_ups}
    assert len(wrap_ups) == len(recorded) and set(wrapped) <= recorded
    assert all(taken[sid] == WANTED_TURNS for sid in recorded - set(wrapped)), (recorded - set(wrapped), taken)
    assert all(r.cap == "per_day" and r.limit_micros == CAP and "closing lines" in r.reason for r in wrap_ups)
    refusals = [r for r in ours if r.action == "refuse_call"]
    assert len(refusals) == 2 and all(r.cap == "per_day" for r in refusals)
    # Every closing line fitted within the reserve held for it: no call had to be cut short.
    assert [r for r in ours if r.action == "hard_stop"] == []


def _is_closing(event: dict[str, Any]) -> bool:
    return event["type"] == "response.create" and "must end now" in str(event.get("response"))
