"""Untrusted input is refused before it costs anything, through a real server process: oversized and
unauthenticated bodies are answered from their headers, the server's memory does not grow with them,
and a client that keeps guessing keys is slowed down."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from app.auth.keys import Role
from tests.support import key_for, make_settings, server_process

pytestmark = pytest.mark.asyncio

MB = 1024 * 1024
CHUNK = b"[" + b'"+12125550123",' * (MB // 16 - 1) + b'"+1"]'  # about 1 MB of a JSON list


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


async def send_big(base: str, method: str, path: str, headers: dict[str, str], *, megabytes: int,
                   chunked: bool) -> tuple[int, bytes]:  # fmt: skip
    """Send a ``megabytes`` body (with Content-Length, or chunked) while reading the response; stop
    sending once the server has answered or hung up. Returns the status and the response body."""
    url = urlsplit(base)
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    head = [f"{method} {path} HTTP/1.1", f"Host: {url.netloc}", "Content-Type: application/json"]
    head += [f"{k}: {v}" for k, v in headers.items()]
    head.append("Transfer-Encoding: chunked" if chunked else f"Content-Length: {megabytes * len(CHUNK)}")
    writer.write(("\r\n".join(head) + "\r\n\r\n").encode())

    async def body() -> None:
        with contextlib.suppress(ConnectionError):
            for _ in range(megabytes):
                writer.write(b"%x\r\n%s\r\n" % (len(CHUNK), CHUNK) if chunked else CHUNK)
                await writer.drain()
            if chunked:
                writer.write(b"0\r\n\r\n")
                await writer.drain()

    sender = asyncio.create_task(body())
    try:
        async with asyncio.timeout(60):
            head_lines = (await reader.readuntil(b"\r\n\r\n")).split(b"\r\n")
            length = next(int(h.split(b":")[1]) for h in head_lines if h.lower().startswith(b"content-length:"))
            answer = await reader.readexactly(length)
    finally:
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
        writer.close()
    return int(head_lines[0].split()[1]), answer


@contextlib.asynccontextmanager
async def node(tmp_path: Path) -> AsyncIterator[tuple[str, int]]:
    settings = make_settings(tmp_path, realtime_url="ws://127.0.0.1:9/v1")
    with server_process(settings) as (base, proc):
        async with httpx.AsyncClient(base_url=base, timeout=30) as client:
            assert (await client.get("/healthz")).status_code == 200  # started and serving
        yield base, proc.pid


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_a_hundred_megabytes_unauthenticated_is_refused_without_growing_the_server(
    tmp_path: Path, chunked: bool
) -> None:
    async with node(tmp_path) as (base, pid):
        before = rss_kb(pid)
        answers = [
            await send_big(base, method, path, {}, megabytes=100, chunked=chunked)
            for method, path in [
                ("POST", "/api/v1/dnc/import"),
                ("POST", "/api/v1/national-dnc"),
                ("PUT", "/api/v1/budget/caps"),
                ("POST", "/api/v1/campaigns"),
            ]
        ]
        grown_mb = (rss_kb(pid) - before) / 1024
    assert {status for status, _ in answers} == ({413} if not chunked else {401})
    assert all(b'"status":' in body for _, body in answers)  # a problem document, not a bare close
    assert grown_mb < 40, grown_mb


async def test_an_authenticated_body_past_its_limit_is_cut_off_with_413(tmp_path: Path) -> None:
    async with node(tmp_path) as (base, pid):
        key = await key_for(make_settings(tmp_path, realtime_url="x").effective_database_url, Role.admin)
        before = rss_kb(pid)
        small_route = await send_big(base, "PUT", "/api/v1/budget/caps", {"Authorization": f"Bearer {key}"},
                                     megabytes=100, chunked=True)  # fmt: skip
        bulk_route = await send_big(base, "POST", "/api/v1/dnc/import", {"Authorization": f"Bearer {key}"},
                                    megabytes=100, chunked=True)  # fmt: skip
        grown_mb = (rss_kb(pid) - before) / 1024
        async with httpx.AsyncClient(base_url=base) as client:  # the node is unharmed
            caps = await client.get("/api/v1/budget/caps", headers={"Authorization": f"Bearer {key}"})
    assert small_route[0] == 413 and bulk_route[0] == 413
    assert caps.status_code == 200
    assert grown_mb < 40 + 32 * 3, grown_mb  # at most the bulk limit was read, and parsed no further


async def test_a_signed_webhook_route_also_has_a_body_limit(tmp_path: Path) -> None:
    async with node(tmp_path) as (base, _):
        status, body = await send_big(base, "POST", "/twilio/voice", {}, megabytes=5, chunked=False)
    assert status == 413 and b"Payload too large" in body


async def test_a_client_guessing_keys_is_slowed_down_and_others_are_not(tmp_path: Path) -> None:
    async with node(tmp_path) as (base, _):
        key = await key_for(make_settings(tmp_path, realtime_url="x").effective_database_url, Role.ops)
        async with httpx.AsyncClient(base_url=base) as client:
            guesses = [
                (
                    await client.get("/api/v1/campaigns", headers={"Authorization": f"Bearer sb_guess{i}_nope"})
                ).status_code
                for i in range(25)
            ]
            refused = await client.get("/api/v1/campaigns", headers={"Authorization": f"Bearer {key}"})
    assert guesses[:20] == [401] * 20 and set(guesses[20:]) == {429}
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) > 0
