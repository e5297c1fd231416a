"""The console in headless Chromium (Debian's, driven by playwright): sign in, search a phrase, open
the call, see the barge-in-cut line marked, export CSV; the live page follows Redis by polling.

Screenshots are kept as test artifacts in var/test-artifacts/console/."""

from __future__ import annotations

import csv
import io
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, async_playwright, expect
from redis.asyncio import Redis

from app.adapters.call_store import CallStore
from app.auth.keys import Role
from tests.console.support import BILLING_SID, BOOKING_SID, CUT_OFF_TEXT, console_settings, forget, seed_calls
from tests.support import key_for, serve

pytestmark = [pytest.mark.asyncio, pytest.mark.browser]

ARTIFACTS = Path(__file__).resolve().parents[2] / "var" / "test-artifacts" / "console"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WAIT_MS = 15_000  # generous for a loaded two-core CI machine; expect() returns as soon as the page is right

expect.set_options(timeout=WAIT_MS)


@pytest.fixture
async def browser(chromium_path: str) -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            await launched.close()


async def shoot(page: Page, name: str, capsys: pytest.CaptureFixture[str]) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    await page.screenshot(path=path, full_page=True)
    with capsys.disabled():
        print(f"\nscreenshot: {path}")
    return path


async def test_sign_in_search_open_the_call_see_the_cut_off_line_and_export_csv(
    tmp_path: Path, browser: Browser, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = console_settings(tmp_path)
    await seed_calls(settings)
    key = await key_for(settings.effective_database_url, Role.supervisor)
    async with serve(settings) as base:
        context = await browser.new_context(viewport={"width": 1366, "height": 768}, accept_downloads=True)
        page = await context.new_page()

        # Signed out, the console sends the browser to its sign-in form, and back after it.
        await page.goto(f"{base}/console")
        await expect(page).to_have_url(f"{base}/console/login?next=/console")
        await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
        await page.keyboard.press("Tab")
        await expect(page.get_by_role("link", name="Skip to main content")).to_be_focused()
        await page.get_by_label("API key").fill(key)
        await shoot(page, "01-login", capsys)
        await page.get_by_label("API key").press("Enter")
        await expect(page).to_have_url(f"{base}/console")
        await expect(page.get_by_role("heading", name="Calls", exact=True)).to_be_visible()
        await expect(page.get_by_role("link", name=BILLING_SID)).to_be_visible()

        # Search a phrase: one call, its matching lines under it with the words marked.
        await page.get_by_label("Phrase said in the call").fill('"a cleaning"')
        await page.get_by_role("button", name="Search").click()
        await expect(page.get_by_role("heading", name="1 call")).to_be_visible()
        await expect(page.get_by_role("link", name=BILLING_SID)).to_have_count(0)
        matches = page.locator("tr.matches")
        await expect(matches).to_have_count(1)
        # The phrase matches one line ("booked for your cleaning" lacks "a cleaning").
        await expect(matches.locator("li")).to_have_text(["00:04 Caller: I would like to book a cleaning next week."])
        await expect(matches.locator("mark")).to_have_text(["a", "cleaning"])
        await shoot(page, "02-search", capsys)

        # The search's CSV export holds that call only.
        async with page.expect_download() as search_download:
            await page.get_by_role("link", name="Export CSV", exact=True).click()
        search_csv = Path(await (await search_download.value).path()).read_text()
        assert [row["call_sid"] for row in csv.DictReader(io.StringIO(search_csv))] == [BOOKING_SID]

        # Open the call: the line the caller cut off is marked, visibly and for screen readers.
        await page.get_by_role("link", name=BOOKING_SID).click()
        await expect(page).to_have_url(f"{base}/console/calls/{BOOKING_SID}")
        await expect(page.get_by_role("heading", level=1)).to_have_text(f"Call {BOOKING_SID}")
        cut = page.locator("ol.timeline li.interrupted")
        await expect(cut).to_have_count(1)
        await expect(cut).to_contain_text(CUT_OFF_TEXT)
        await expect(cut.locator(".offset")).to_have_text("00:07")
        await expect(cut.locator(".badge")).to_have_text("cut off: barge-in")
        await expect(cut.locator(".badge")).to_be_visible()
        await expect(cut.locator(".visually-hidden")).to_contain_text("the caller spoke over this line")
        await expect(page.locator("ol.timeline li")).to_have_count(5)
        await expect(page.locator("ol.timeline li:not(.interrupted) .badge")).to_have_count(0)
        await expect(page.locator(".facts")).to_contain_text("$0.1234")
        await expect(page.locator(".facts")).to_contain_text("420 ms / 900 ms")
        await shoot(page, "03-call", capsys)

        # Export the call's transcript as CSV, from the button.
        async with page.expect_download() as call_download:
            await page.get_by_role("link", name="Export CSV").click()
        download = await call_download.value
        assert download.suggested_filename == f"{BOOKING_SID}.csv"
        rows = list(csv.DictReader(io.StringIO(Path(await download.path()).read_text())))
        assert [(r["seq"], r["speaker"], r["interrupted"]) for r in rows] == [
            ("1", "agent", "False"),
            ("2", "caller", "False"),
            ("3", "agent", "True"),
            ("4", "caller", "False"),
            ("5", "agent", "False"),
        ]
        assert rows[2]["text"] == CUT_OFF_TEXT and {r["call_sid"] for r in rows} == {BOOKING_SID}

        # Sign out is a form post; afterwards the console asks for a key again.
        await page.get_by_role("button", name="Sign out").click()
        await expect(page.get_by_text("You are signed out.")).to_be_visible()
        await page.goto(f"{base}/console/calls/{BOOKING_SID}")
        await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
        await context.close()


async def test_the_live_page_follows_a_call_in_redis_as_lines_arrive(
    tmp_path: Path, browser: Browser, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = console_settings(tmp_path, redis_url=redis_url)
    key = await key_for(settings.effective_database_url, Role.supervisor)
    sid = "CA" + secrets.token_hex(16)  # a fresh call: the Redis server outlives this test
    redis = Redis.from_url(redis_url)
    store = CallStore(redis)
    try:
        now_ms = int(time.time() * 1000)
        await store.put_meta(
            sid,
            {"call_sid": sid, "direction": "inbound", "from": "+15005550010", "to": "+15005550001",
             "started_at_ms": now_ms, "status": "in-progress"},
        )  # fmt: skip
        epoch, _ = await store.acquire_lease(sid, node="browser-test", ttl_ms=120_000, now_ms=now_ms, takeover=False)
        await store.put_line(
            sid,
            f"{epoch:06d}-000001",
            {"seq": 1, "speaker": "agent", "text": "Thank you for calling Acme Dental.", "offset_ms": 40},
        )
        async with serve(settings) as base:
            context = await browser.new_context(viewport={"width": 1366, "height": 768})
            page = await context.new_page()
            await page.goto(f"{base}/console/login?next=/console/live")
            await page.get_by_label("API key").fill(key)
            await page.get_by_role("button", name="Sign in").click()
            await expect(page.get_by_role("heading", name="Live calls")).to_be_visible()
            call = page.locator("article.live-call", has=page.get_by_role("heading", name=sid))
            await expect(call.locator("li")).to_have_text(["00:00 Agent Thank you for calling Acme Dental."])

            # Lines written to Redis after the page loaded appear without a reload (the page polls).
            await store.put_line(
                sid,
                f"{epoch:06d}-000002",
                {"seq": 2, "speaker": "caller", "text": "Do you open on <b>Saturdays</b>?", "offset_ms": 3_500},
            )
            await store.put_line(
                sid,
                f"{epoch:06d}-000003",
                {"seq": 3, "speaker": "agent", "text": "We are open on", "offset_ms": 6_000, "interrupted": True},
            )
            await expect(call.locator("li")).to_have_count(3)
            await expect(call.locator("li").nth(1)).to_have_text("00:03 Caller Do you open on <b>Saturdays</b>?")
            await expect(call.locator("li.interrupted .badge")).to_have_text("cut off: barge-in")
            await expect(page.locator("#live-calls b")).to_have_count(0)  # caller text stays text
            await shoot(page, "04-live", capsys)

            # The call ends: it leaves the live index and the page drops it.
            await store.finish(sid)
            await expect(page.get_by_role("heading", name=sid)).to_have_count(0)
            await context.close()
    finally:
        await forget(store, sid)
        await redis.aclose()
