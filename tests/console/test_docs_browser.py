"""The developer's first look at the API: /docs in headless Chromium with no way out to the internet (every
request that leaves the server is refused), authorised with a key, a request tried from the page."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.async_api import Browser, Route, async_playwright, expect

from app.auth.keys import Role
from tests.console.support import console_settings, seed_calls
from tests.console.test_console_browser import ARTIFACTS, CHROMIUM_ARGS, WAIT_MS
from tests.support import key_for, serve

pytestmark = [pytest.mark.asyncio, pytest.mark.browser]

expect.set_options(timeout=WAIT_MS)


async def test_the_api_docs_work_offline_and_try_a_request_with_a_key(tmp_path: Path, chromium_path: str) -> None:
    settings = console_settings(tmp_path)
    await seed_calls(settings)
    key = await key_for(settings.effective_database_url, Role.supervisor)
    async with serve(settings) as base, async_playwright() as playwright:
        browser: Browser = await playwright.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 900})
            left: list[str] = []

            async def offline(route: Route) -> None:  # the internet is not there: a CDN would fail here
                if route.request.url.startswith(base):
                    await route.continue_()
                else:
                    left.append(route.request.url)
                    await route.abort()

            await page.route("**/*", offline)
            await page.goto(f"{base}/docs")
            await expect(page.get_by_role("heading", name="Switchboard 0.1.0")).to_be_visible()
            await page.get_by_role("button", name="Authorize").first.click()
            dialog = page.locator(".modal-ux")
            await dialog.locator(".auth-container").filter(has_text="bearer (http, Bearer)").locator("input").fill(key)
            bearer = dialog.locator(".auth-container").filter(has_text="bearer (http, Bearer)")
            await bearer.locator("button.authorize").click()  # "Apply credentials"
            await expect(bearer.get_by_role("heading", name="Authorized")).to_be_visible()
            await bearer.locator("button.btn-done").click()

            operation = page.locator("#operations-calls-list_calls_api_v1_calls_get")
            await operation.locator(".opblock-summary").click()
            await operation.get_by_role("button", name="Execute").click()
            status = operation.locator(".live-responses-table tbody .response-col_status").first
            await expect(status).to_have_text("200")
            await expect(operation.locator(".live-responses-table")).to_contain_text('"items"')
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            await page.screenshot(path=ARTIFACTS / "docs-try-it.png", full_page=True)
            assert left == []  # nothing was fetched from anywhere but the server
        finally:
            await browser.close()
