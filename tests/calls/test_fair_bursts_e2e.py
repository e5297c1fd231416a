"""Fair scheduling between calls: a burst of agent audio on one call does not hold back another's.

The Realtime service sends a reply's audio faster than real time. A stand-in here speaks the GA protocol
just far enough (session.created, session.updated), writes call A a 150-delta burst in one go and, as soon
as A's first audio reaches its caller, call B a single delta. With a reader that drains its socket before
yielding, B's audio went out only after all of A's burst; with a round robin, a few rounds after it."""

from __future__ import annotations

import asyncio
import base64
import itertools
from pathlib import Path

import orjson
import pytest
from websockets.asyncio.server import ServerConnection
from websockets.asyncio.server import serve as ws_serve

from tests.support import TwilioStream, make_settings, open_call, serve

pytestmark = [pytest.mark.asyncio, pytest.mark.e2e]

BURST = 150
_ids = itertools.count()


def event(kind: str, **fields: object) -> str:
    return orjson.dumps({"type": kind, "event_id": f"event_{next(_ids)}", **fields}).decode()


def response_created(response_id: str) -> str:
    return event("response.created", response={"id": response_id, "object": "realtime.response",
                                                "status": "in_progress", "output": []})  # fmt: skip


def is_media(message: dict[str, object]) -> bool:
    return message["event"] == "media"


def delta(response_id: str, item_id: str) -> str:
    audio = base64.b64encode(b"\xff" * 160).decode()  # 20 ms of mu-law: the burst fits one socket read
    return event(
        "response.output_audio.delta", response_id=response_id, item_id=item_id, output_index=0, content_index=0,
        delta=audio,
    )  # fmt: skip


async def test_a_burst_on_one_call_does_not_hold_back_another_calls_first_audio(tmp_path: Path) -> None:
    configured: list[ServerConnection] = []
    both_configured = asyncio.Event()

    async def realtime(ws: ServerConnection) -> None:
        await ws.send(event("session.created", session={"type": "realtime", "id": f"sess_{id(ws)}"}))
        async for raw in ws:
            message = orjson.loads(raw)
            if message["type"] == "session.update" and ws not in configured:
                await ws.send(event("session.updated", session=message["session"]))
                configured.append(ws)
                if len(configured) == 2:
                    both_configured.set()

    async with ws_serve(realtime, "127.0.0.1", 0, max_size=None) as upstream:
        url = f"ws://127.0.0.1:{upstream.sockets[0].getsockname()[1]}/v1"
        settings = make_settings(tmp_path, realtime_url=url, audio_format="pcmu")
        async with serve(settings) as base:
            sid_a, token_a = await open_call(base, 71)
            sid_b, token_b = await open_call(base, 72)
            async with (
                TwilioStream.open(base, call_sid=sid_a, token=token_a) as tw_a,
                TwilioStream.open(base, call_sid=sid_b, token=token_b) as tw_b,
            ):
                await asyncio.wait_for(both_configured.wait(), 30)
                first, second = configured  # which call is which does not matter: "first" gets the burst
                await first.send(response_created("resp_burst"))
                for _ in range(BURST):
                    await first.send(delta("resp_burst", "item_burst"))
                # The burst is on its way; once its first audio has reached a caller, the other call's
                # single delta follows. A reader that drains its socket before yielding forwards the whole
                # burst before that delta is even read; a round robin interleaves them.
                seen = [asyncio.create_task(tw.wait_for(is_media, timeout=30)) for tw in (tw_a, tw_b)]
                _, waiting = await asyncio.wait(seen, return_when=asyncio.FIRST_COMPLETED)
                for task in waiting:
                    task.cancel()
                await second.send(response_created("resp_single"))
                await second.send(delta("resp_single", "item_single"))
                streams = (tw_a, tw_b)
                waits = {asyncio.create_task(tw.wait_nth(is_media, BURST, timeout=30)): tw for tw in streams}
                finished, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                for task in pending:
                    task.cancel()
                first_done = finished.pop()
                first_done.result()  # a stream that closed or timed out fails the test here, with its reason
                bursty = waits[first_done]
                quiet = tw_b if bursty is tw_a else tw_a
                await quiet.wait_for(is_media, timeout=30)
                media = {tw: [tw.arrived[i] for i, m in enumerate(tw.received) if is_media(m)] for tw in streams}
                await tw_a.stop()
                await tw_b.stop()
    single_first = media[quiet][0]
    ahead = sum(1 for at in media[bursty] if at < single_first)
    # The single delta goes out within the first few rounds, not after the burst (150 ahead of it).
    assert len(media[bursty]) == BURST
    assert ahead < 30, f"{ahead} of the burst's {BURST} media messages went out before the other call's first"
