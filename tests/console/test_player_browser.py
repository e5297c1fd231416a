"""The call page's recording player in headless Chromium: a call recorded through the real server (the
Realtime emulator, a Twilio stream played by the test) plays in the page, a click on a transcript line seeks
the audio to it and highlights it, barge-ins and tools are marks; a key without the grant gets no player."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, async_playwright, expect
from sqlalchemy import select

from app.archive.models import AuditEntry
from app.auth.keys import Role
from app.db import make_engine, make_sessionmaker
from app.emulator.config import EmulatorConfig
from app.emulator.server import RealtimeEmulator
from tests.console.support import LOCAL_BASE
from tests.console.test_console_browser import CHROMIUM_ARGS, WAIT_MS
from tests.support import archived, key_for, make_settings, one_turn_call, serve

pytestmark = [pytest.mark.asyncio, pytest.mark.browser, pytest.mark.e2e]

expect.set_options(timeout=WAIT_MS)

LOADED = """a => a.readyState >= 1 || new Promise(resolve =>
    a.addEventListener("loadedmetadata", () => resolve(true), {once: true}))"""
PLAYED_PAST = """(a, t) => new Promise(resolve => {
    const check = () => { if (a.currentTime > t) { a.removeEventListener("timeupdate", check); resolve(true); } };
    a.addEventListener("timeupdate", check);
    check();
})"""


@pytest.fixture
async def browser(chromium_path: str) -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=chromium_path, args=[*CHROMIUM_ARGS, "--autoplay-policy=no-user-gesture-required"]
        )
        try:
            yield launched
        finally:
            await launched.close()


async def sign_in(page: Page, base: str, key: str, path: str) -> None:
    await page.goto(f"{base}/console/login?next={path}")
    await page.get_by_label("API key").fill(key)
    await page.get_by_label("API key").press("Enter")
    await expect(page).to_have_url(f"{base}{path}")


async def test_the_call_page_plays_the_recording_and_a_click_on_a_line_seeks_to_it(
    tmp_path: Path, browser: Browser
) -> None:
    config = EmulatorConfig(tts="synthetic", transcripts=["I would like to book a cleaning"],
                            reply_text=lambda heard: "Sure. We have Tuesday at nine or Thursday at two.")  # fmt: skip
    async with RealtimeEmulator(config) as emulator:
        settings = make_settings(tmp_path, realtime_url=emulator.url, recording="on")
        db = settings.effective_database_url
        async with serve(settings) as base:
            sid = await one_turn_call(base, emulator, 7, direction_params={"From": "+12125550123"})
            record = await archived(base, settings, sid)
        answer_ms = record["transcript"][2]["offset_ms"]
        supervisor = await key_for(db, Role.supervisor)
        ops = await key_for(db, Role.ops, grants=("transcripts",))
        # The console served over plain http (its cookies are not Secure there), on the same data
        async with serve(settings.model_copy(update={"public_base_url": LOCAL_BASE})) as base:
            context = await browser.new_context(viewport={"width": 1280, "height": 900})
            page = await context.new_page()
            await sign_in(page, base, supervisor, f"/console/calls/{sid}")
            player = page.locator("audio#player")
            await expect(player).to_have_count(1)
            # the browser loads the file (ranges) and knows its length: the call's, on one timeline
            async with asyncio.timeout(WAIT_MS / 1000):  # (the page's CSP forbids wait_for_function's eval)
                await player.evaluate(LOADED)
            duration = await player.evaluate("a => a.duration")
            assert abs(duration * 1000 - record["recording_ms"]) < 100

            # a click on the agent's answer (its text, not only its time) seeks there and plays from it
            answer = page.locator("ol.timeline li").nth(2)
            await answer.locator(".text").click()
            await expect(answer).to_have_class("line agent playing")
            await expect(answer).to_have_attribute("aria-current", "true")
            at = await player.evaluate("a => a.currentTime")
            assert answer_ms / 1000 - 0.05 <= at <= answer_ms / 1000 + 0.5
            async with asyncio.timeout(WAIT_MS / 1000):  # it plays: time moves on from there
                await player.evaluate(PLAYED_PAST, answer_ms / 1000 + 0.3)
            assert await player.evaluate("a => !a.paused && !a.error")
            await expect(page.locator("ol.timeline li.playing")).to_have_count(1)

            # a click on the first line goes back to it, and it is the one highlighted
            greeting = page.locator("ol.timeline li").nth(0)
            await greeting.locator(".text").click()
            await expect(greeting).to_have_class("line agent playing")
            await expect(answer).to_have_class("line agent")
            assert await player.evaluate("a => a.currentTime") < answer_ms / 1000

            # an ops key that may read transcripts but not hear recordings: no player, and the route says 403
            await context.clear_cookies()
            await sign_in(page, base, ops, f"/console/calls/{sid}")
            await expect(page.locator("audio#player")).to_have_count(0)
            await expect(page.locator("#recording")).to_contain_text("may not hear recordings")
            refused = await page.request.get(f"{base}/console/calls/{sid}/recording")
            assert refused.status == 403
            await context.close()
    engine = make_engine(db)
    try:
        async with make_sessionmaker(engine)() as db_session:
            plays = list(await db_session.scalars(select(AuditEntry).where(AuditEntry.action == "play_recording")))
    finally:
        await engine.dispose()
    assert [(p.target, p.via, p.role) for p in plays] == [(sid, "console", "supervisor")]
