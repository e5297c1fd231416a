"""A stop stops the spending, whatever the carrier does: a per-call cap on a call whose agent keeps
talking and whose carrier never ends the media stream (nor acts on the REST hang-up)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

import httpx
import pytest
import respx
from redis.asyncio import Redis

from app.budget.ledger import BudgetLedger
from app.emulator.config import EmulatorConfig
from app.emulator.server import RealtimeEmulator
from tests.budget.test_enforcement_e2e import LONG_REPLY, enforcements
from tests.support import (
    ACCOUNT_SID,
    SILENCE,
    TWILIO_API,
    TwilioStream,
    archived,
    make_settings,
    open_call,
    post_webhook,
    serve,
    speech_frames,
    upstream_closed,
)

pytestmark = pytest.mark.asyncio

CAP_USD = 0.01


async def keep_talking(tw: TwilioStream, *, once: bool = False, silent: bool = False) -> int:
    """A carrier that never ends the stream: the caller's audio on its 20 ms clock, speech then
    silence (again and again, or ``once`` and then silence, or ``silent`` throughout), until the server
    closes the socket. Returns the frames sent."""
    loop = asyncio.get_running_loop()
    frames = [SILENCE] if silent else speech_frames(1.0) + [SILENCE] * 40
    sent = 0
    start = loop.time()
    with contextlib.suppress(Exception):
        while not tw._reader.done():
            await tw.media(SILENCE if once and sent >= len(frames) else frames[sent % len(frames)])
            sent += 1
            await asyncio.sleep(max(0.0, start + sent * 0.02 - loop.time()))
    return sent


async def test_a_hard_stop_closes_the_realtime_session_and_the_stream_though_the_carrier_never_hangs_up(
    tmp_path: Path, redis_url: str
) -> None:
    # The agent opens with a long greeting (about 4.9 s of streaming) to a caller who never speaks: the
    # first meter tick (its telephony minute) starts the wrap-up, whose closing line waits behind the
    # greeting, and the next tick's estimate of the greeting's audio passes the 10% runaway margin.
    # Nothing the caller does can cut the agent short (a caller speaking over the closing line once let the
    # wrap-up's own hang-up come first: CI, 2026-12-07), so it is the hard stop that ends the call.
    config = EmulatorConfig(tts="synthetic", greeting_text=LONG_REPLY, reply_text=lambda _: LONG_REPLY)
    async with RealtimeEmulator(config) as emulator, respx.mock(assert_all_called=False) as mock:
        mock.route(host="127.0.0.1").pass_through()
        hang_ups = mock.post(url__regex=rf"{TWILIO_API}/2010-04-01/Accounts/{ACCOUNT_SID}/Calls/CA\w+\.json").mock(
            side_effect=lambda request: httpx.Response(
                200, json={"sid": request.url.path.rsplit("/", 1)[-1][:-5], "status": "in-progress"}
            )  # accepted, then nothing happens
        )
        settings = make_settings(tmp_path, realtime_url=emulator.url, redis_url=redis_url, budget_per_call_usd=CAP_USD)
        async with serve(settings) as base:
            sid, token = await open_call(base, uuid.uuid4().int % (1 << 90))
            async with TwilioStream.open(base, call_sid=sid, token=token, auto_ack=True) as tw:
                session = await emulator.wait_for_session(0)
                frames_sent = await asyncio.wait_for(keep_talking(tw, silent=True), 120)  # until closed
                await upstream_closed(session)
            record = await archived(base, settings, sid)
            resume = await post_webhook(base, "/twilio/resume", {"CallSid": sid})
        ledger = BudgetLedger(Redis.from_url(redis_url))
        spent = await ledger.call_total(sid)
        await ledger.redis.aclose()

    assert frames_sent > 0 and (tw.close_code, tw.close_reason) == (1000, "call ended")
    events = {e["kind"]: e for e in record["events"]}
    assert "budget_hard_stop" in events, sorted(events)
    stopped_at = events["budget_hard_stop"]["offset_ms"]
    # The server closed the Realtime session within a second of the hard stop, by itself.
    assert events["upstream_closed"]["offset_ms"] - stopped_at < 1000
    assert hang_ups.called
    # The spend stays within the cap and the closing line's reserve.
    assert spent < 15_000, spent
    records = await enforcements(settings.effective_database_url)
    assert [r.action for r in records if r.call_sid == sid].count("hard_stop") == 1
    # Twilio follows the <Redirect> once the stream is closed: an ended call is hung up, not resumed.
    assert [c.tag for c in ET.fromstring(resume.text)] == ["Hangup"]


@pytest.mark.parametrize(
    ("tool", "arguments", "resumed_as"),
    [
        ("end_call", {"reason": "caller is done"}, "Hangup"),
        ("transfer_to_human", {"reason": "asked for a person"}, "Dial"),
    ],
)
async def test_a_call_the_agent_ends_stops_at_once_though_the_carrier_never_acts_on_it(
    tmp_path: Path, redis_url: str, tool: str, arguments: dict[str, str], resumed_as: str
) -> None:
    """The agent hangs up (or transfers); Twilio accepts the REST request and then does nothing, and the
    caller's stream goes on. The server stops the caller's audio, closes the Realtime session within a
    second of deciding the call is over, opens no other, and closes the stream itself."""
    config = EmulatorConfig(tts="synthetic", transcripts=["that is all, goodbye"],
                            function_calls={"goodbye": (tool, arguments)})  # fmt: skip
    async with RealtimeEmulator(config) as emulator, respx.mock(assert_all_called=False) as mock:
        mock.route(host="127.0.0.1").pass_through()
        updates = mock.post(url__regex=rf"{TWILIO_API}/2010-04-01/Accounts/{ACCOUNT_SID}/Calls/CA\w+\.json").mock(
            side_effect=lambda request: httpx.Response(
                200, json={"sid": request.url.path.rsplit("/", 1)[-1][:-5], "status": "in-progress"}
            )  # accepted, then nothing happens
        )
        settings = make_settings(tmp_path, realtime_url=emulator.url, redis_url=redis_url,
                                 transfer_number="+15550001111")  # fmt: skip
        async with serve(settings) as base:
            sid, token = await open_call(base, uuid.uuid4().int % (1 << 90))
            async with TwilioStream.open(base, call_sid=sid, token=token, auto_ack=True) as tw:
                session = await emulator.wait_for_session(0)
                frames_sent = await asyncio.wait_for(keep_talking(tw, once=True), 60)  # until the server closes it
                await upstream_closed(session)
            record = await archived(base, settings, sid)
            resume = await post_webhook(base, "/twilio/resume", {"CallSid": sid})
        sessions = len(emulator.sessions)

    assert (tw.close_code, tw.close_reason) == (1000, "call ended"), frames_sent
    assert updates.called
    events = {e["kind"]: e for e in record["events"]}
    decided_at = events["call_ending"]["offset_ms"]
    # Within a second of deciding the call was over, the server closed the Realtime session by itself,
    # and no new one was opened for the caller's audio that kept coming.
    assert events["upstream_closed"]["offset_ms"] - decided_at < 1000
    assert sessions == 1
    # Twilio follows the <Redirect> once the stream is closed: the call is hung up or dialled through,
    # never resumed with the agent.
    assert [c.tag for c in ET.fromstring(resume.text)] == [resumed_as]
