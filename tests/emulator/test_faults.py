"""Fault switches: dropped connections, server closes, session expiry, injected errors, latency."""

from __future__ import annotations

import asyncio

import pytest
from websockets.exceptions import ConnectionClosed, ConnectionClosedError, ConnectionClosedOK

from app.emulator.config import Faults
from app.emulator.server import RealtimeEmulator
from tests.emulator.helpers import RealtimeTestClient, connect, fast_config


async def _until_closed(client: RealtimeTestClient, timeout: float = 5.0) -> ConnectionClosed:
    with pytest.raises(ConnectionClosed) as caught:
        while True:
            await client.recv(timeout)
    return caught.value


@pytest.mark.asyncio
async def test_close_code_1006_drops_tcp_without_a_close_frame() -> None:
    config = fast_config(faults=Faults(close_code_after_s=(1006, 0.2)))
    async with RealtimeEmulator(config) as emu, connect(emu) as client:
        closed = await _until_closed(client)
        assert isinstance(closed, ConnectionClosedError)
        assert closed.rcvd is None and closed.sent is None  # no close handshake at all
        with pytest.warns(DeprecationWarning):
            assert closed.code == 1006
        session = emu.sessions[0]
        await asyncio.wait_for(session.closed.wait(), 5)
        assert session.server_close_code == 1006


@pytest.mark.asyncio
async def test_close_code_1011_sends_a_close_frame_with_that_code() -> None:
    config = fast_config(faults=Faults(close_code_after_s=(1011, 0.1)))
    async with RealtimeEmulator(config) as emu, connect(emu) as client:
        closed = await _until_closed(client)
        assert isinstance(closed, ConnectionClosedError)
        assert closed.rcvd is not None and closed.rcvd.code == 1011


@pytest.mark.asyncio
async def test_session_expiry_sends_session_expired_then_closes_1001() -> None:
    config = fast_config(faults=Faults(session_expired_after_s=0.1))
    async with RealtimeEmulator(config) as emu, connect(emu) as client:
        closed = await _until_closed(client)
        errors = [e["error"] for e in client.events if e["type"] == "error"]
        assert [(e["type"], e["code"]) for e in errors] == [("invalid_request_error", "session_expired")]
        assert "60 minutes" in errors[0]["message"]
        assert isinstance(closed, ConnectionClosedOK)
        assert closed.rcvd is not None and closed.rcvd.code == 1001


@pytest.mark.asyncio
async def test_setting_a_fault_on_a_live_session_applies_at_once() -> None:
    async with RealtimeEmulator(fast_config()) as emu, connect(emu) as client:
        updated = await client.session_update({"instructions": "hi"})
        assert updated["type"] == "session.updated"
        emu.config.faults.close_code_after_s = (1011, 0.0)
        closed = await _until_closed(client)
        assert closed.rcvd is not None and closed.rcvd.code == 1011


@pytest.mark.asyncio
async def test_a_closed_session_is_replaced_by_a_fresh_one_on_reconnect() -> None:
    config = fast_config(faults=Faults(close_code_after_s=(1006, 0.0)))
    async with RealtimeEmulator(config) as emu:
        async with connect(emu) as client:
            await _until_closed(client)
        emu.config.faults.close_code_after_s = None
        async with connect(emu) as client:
            assert (await client.session_update({"instructions": "again"}))["type"] == "session.updated"
        second = await emu.wait_for_session(1)
        assert second.session_config["instructions"] == "again"
        assert second.id != emu.sessions[0].id


@pytest.mark.asyncio
async def test_error_events_are_sent_right_after_session_created() -> None:
    faults = Faults(
        error_events=[
            {"type": "server_error", "code": None, "message": "The server had an error."},
            {"type": "error", "error": {"type": "invalid_request_error", "code": "x", "message": "m"}},
        ]
    )
    async with RealtimeEmulator(fast_config(faults=faults)) as emu, connect(emu) as client:
        first, second = await client.recv(), await client.recv()
        assert (first["type"], first["error"]["type"]) == ("error", "server_error")
        assert (second["type"], second["error"]["code"]) == ("error", "x")
        assert client.events[0]["type"] == "session.created"
        assert (await client.session_update({"instructions": "ok"}))["type"] == "session.updated"


@pytest.mark.asyncio
async def test_response_delay_holds_back_the_first_output_event() -> None:
    config = fast_config(faults=Faults(response_delay_s=0.3))
    async with RealtimeEmulator(config) as emu, connect(emu) as client:
        loop = asyncio.get_running_loop()
        asked_at = loop.time()  # before the request: the delay starts later, so the bound is causal
        await client.send({"type": "response.create"})
        await client.recv_until("response.created")
        await client.recv_until("response.output_item.added")
        assert loop.time() - asked_at >= 0.3
        assert (await client.recv_until("response.done"))[-1]["response"]["status"] == "completed"
