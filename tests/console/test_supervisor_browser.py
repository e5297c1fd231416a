"""The supervisor's main path on a phone (390 px) in Chromium, in their own time zone: find a call by the
caller's words, open it; times in Los Angeles time with UTC on hover, the choice of zone remembered; nothing
wider than the screen. Screenshots kept as test artifacts."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.async_api import async_playwright, expect

from app.auth.keys import Role
from tests.console.support import BOOKING_SID, console_settings, seed_calls
from tests.console.test_console_browser import ARTIFACTS, CHROMIUM_ARGS, WAIT_MS
from tests.support import key_for, serve

pytestmark = [pytest.mark.asyncio, pytest.mark.browser]

expect.set_options(timeout=WAIT_MS)


async def test_a_supervisor_on_a_phone_finds_a_call_by_its_words_in_their_own_time_zone(
    tmp_path: Path, chromium_path: str
) -> None:
    settings = console_settings(tmp_path)
    await seed_calls(settings)  # the booking call started 2026-03-02 15:04:05 UTC
    key = await key_for(settings.effective_database_url, Role.supervisor)
    async with serve(settings) as base, async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
        try:
            context = await browser.new_context(viewport={"width": 390, "height": 844}, timezone_id="America/Los_Angeles",
                                                is_mobile=True, has_touch=True)  # fmt: skip
            page = await context.new_page()
            await page.goto(f"{base}/console/login")
            await page.get_by_label("API key").fill(key)
            await page.get_by_label("API key").press("Enter")
            await page.get_by_label("Phrase said in the call").fill("book a cleaning")
            await page.get_by_role("button", name="Search").click()
            link = page.get_by_role("link", name=BOOKING_SID)
            await expect(link).to_be_visible()
            await expect(link).to_have_text(
                f"{BOOKING_SID[:6]}…{BOOKING_SID[-4:]}{BOOKING_SID}"
            )  # short, and whole for readers
            started = page.locator("td.when time")
            await expect(started).to_have_text("2026-03-02 07:04:05 PST")  # the viewer's zone
            await expect(started).to_have_attribute("title", "2026-03-02 15:04:05 UTC")  # UTC on hover
            assert await page.evaluate("document.documentElement.scrollWidth") <= 390
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            await page.screenshot(path=ARTIFACTS / "supervisor-01-search-phone.png", full_page=True)

            await link.click()
            await expect(page.get_by_role("heading", level=1)).to_contain_text(BOOKING_SID)
            await expect(page.locator(".facts time").first).to_have_text("2026-03-02 07:04:05 PST")
            assert await page.evaluate("document.documentElement.scrollWidth") <= 390
            await page.screenshot(path=ARTIFACTS / "supervisor-02-call-phone.png", full_page=True)

            # another zone, chosen once, is remembered on the next page
            await page.get_by_label("Times in").select_option("America/New_York")
            await expect(page.locator(".facts time").first).to_have_text("2026-03-02 10:04:05 EST")
            await page.reload()
            await expect(page.locator(".facts time").first).to_have_text("2026-03-02 10:04:05 EST")
            await context.close()
        finally:
            await browser.close()
