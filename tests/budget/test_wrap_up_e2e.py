"""The close a cap asks for, with a caller who keeps talking over it (Realtime engine, the emulator's
server VAD): the caller is never hung up on mid-sentence, the server's own answers to them are cancelled
unheard (every answer after the wrap-up is held to the closing line's token limit), the closing line is
asked for at most twice, and the call ends by the wrap-up, not by a hard stop."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import httpx
import pytest
import respx

from app.budget.pricing import CLOSING_MAX_OUTPUT_TOKENS
from app.emulator.config import EmulatorConfig
from app.emulator.server import RealtimeEmulator
from tests.budget.test_enforcement_e2e import LONG_REPLY
from tests.budget.test_stop_stops_spending_e2e import keep_talking
from tests.support import (
    ACCOUNT_SID,
    TWILIO_API,
    TwilioStream,
    archived,
    make_settings,
    open_call,
    serve,
    upstream_closed,
)

pytestmark = pytest.mark.asyncio


async def test_a_caller_who_talks_over_the_closing_line_is_not_cut_off_and_hears_only_closing_lines(
    tmp_path: Path, redis_url: str
) -> None:
    config = EmulatorConfig(tts="synthetic", transcripts=["Tell me everything."], reply_text=lambda _: LONG_REPLY)
    hung_up_at: list[float] = []

    def hang_up(request: httpx.Request) -> httpx.Response:
        hung_up_at.append(time.monotonic())
        return httpx.Response(200, json={"sid": request.url.path.rsplit("/", 1)[-1][:-5], "status": "completed"})

    async with RealtimeEmulator(config) as emulator, respx.mock(assert_all_called=False) as mock:
        mock.route(host="127.0.0.1").pass_through()
        mock.post(url__regex=rf"{TWILIO_API}/2010-04-01/Accounts/{ACCOUNT_SID}/Calls/CA\w+\.json").mock(
            side_effect=hang_up
        )
        # The first meter tick (the telephony minute) passes 90% of this cap: the wrap-up starts at once.
        # A wide runaway margin and the default 8 s grace leave the ending to the wrap-up.
        settings = make_settings(tmp_path, realtime_url=emulator.url, redis_url=redis_url, budget_per_call_usd=0.01,
                                 budget_runaway_margin=5.0)  # fmt: skip
        async with serve(settings) as base:
            sid, token = await open_call(base, uuid.uuid4().int % (1 << 90))
            async with TwilioStream.open(base, call_sid=sid, token=token, auto_ack=True) as tw:
                session = await emulator.wait_for_session(0)
                await asyncio.wait_for(keep_talking(tw), 60)  # speech and pauses, until the server closes it
                await upstream_closed(session)
            record = await archived(base, settings, sid)

    events = {e["kind"]: e for e in record["events"]}
    assert "budget_wrap_up" in events and "budget_hard_stop" not in events, sorted(events)
    assert events["call_ending"]["detail"]["reason"].startswith("wrap up")
    assert len(hung_up_at) == 1
    # Not mid-sentence: when the server hung up, every speech the emulator heard start had ended.
    sent = list(zip(session.sent_times, session.sent, strict=True))
    before = [e["type"] for t, e in sent if t <= hung_up_at[0]]
    assert before.count("input_audio_buffer.speech_started") == before.count("input_audio_buffer.speech_stopped")
    # After the wrap-up, only closing lines: every response we asked for carries the closing limit (at most
    # two), and every response the server made by itself (the session's own limit) was cancelled by us.
    received = session.received
    wrap_at = next(i for i, e in enumerate(received) if "must end now" in str(e.get("response", {})))
    creates = [e for e in received[wrap_at:] if e["type"] == "response.create"]
    assert 1 <= len(creates) <= 2
    assert all(e["response"]["max_output_tokens"] == CLOSING_MAX_OUTPUT_TOKENS for e in creates)
    created = [e["response"] for e in session.sent if e["type"] == "response.created"]
    first_closing = next(i for i, r in enumerate(created) if r["max_output_tokens"] == CLOSING_MAX_OUTPUT_TOKENS)
    servers_own = [r["id"] for r in created[first_closing:] if r["max_output_tokens"] == "inf"]
    cancelled = {e["response_id"] for e in received if e["type"] == "response.cancel"}
    assert set(servers_own) <= cancelled, (servers_own, cancelled)
    done = {e["response"]["id"]: e["response"]["status"] for e in session.sent if e["type"] == "response.done"}
    assert all(done[r] == "cancelled" for r in servers_own)
