"""The admin's main path in headless Chromium: make a key (shown once), revoke it, and find both in the audit
log; the key that was made signs in until it is revoked. Screenshots kept as test artifacts."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.async_api import async_playwright, expect

from app.auth.keys import Role
from tests.console.support import console_settings, sign_in_page
from tests.console.test_console_browser import ARTIFACTS, CHROMIUM_ARGS, WAIT_MS
from tests.support import key_for, serve

pytestmark = [pytest.mark.asyncio, pytest.mark.browser]

expect.set_options(timeout=WAIT_MS)


async def test_an_admin_makes_a_key_revokes_it_and_sees_both_in_the_audit_log(
    tmp_path: Path, chromium_path: str
) -> None:
    settings = console_settings(tmp_path)
    admin = await key_for(settings.effective_database_url, Role.admin)
    async with serve(settings) as base, async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 900})
            await sign_in_page(page, base, admin)
            await page.get_by_role("link", name="API keys").click()
            await expect(page.get_by_role("heading", name="API keys", level=1)).to_be_visible()
            await page.get_by_label("Who holds it").fill("Olga from ops")
            await page.get_by_label("Role").select_option("ops")
            await page.get_by_label("transcripts: read calls").check()
            await page.get_by_role("button", name="Make the key").click()
            await expect(page.get_by_role("heading", name="Key made for Olga from ops (ops)")).to_be_visible()
            made = (await page.locator("#new-key").text_content() or "").strip()
            assert made.startswith("sb_")
            key_id = made.split("_")[1]
            row = page.locator("tr").filter(has_text=key_id)
            await expect(row).to_contain_text("transcripts")
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            await page.screenshot(path=ARTIFACTS / "admin-01-key-made.png", full_page=True)

            # the key works (an ops page through the API) until it is revoked
            works = await page.request.get(f"{base}/api/v1/calls", headers={"Authorization": f"Bearer {made}"})
            await row.get_by_role("button", name=f"Revoke Olga from ops ({key_id})").click()
            await expect(page.get_by_role("status")).to_contain_text(f"Revoked Olga from ops ({key_id})")
            refused = await page.request.get(f"{base}/api/v1/calls", headers={"Authorization": f"Bearer {made}"})
            assert (works.status, refused.status) == (200, 401)
            await expect(page.locator("tr").filter(has_text=key_id).get_by_role("button")).to_have_count(0)

            await page.get_by_role("link", name="Audit log").click()
            await page.get_by_label("Action").select_option("create_key")
            await page.get_by_role("button", name="Filter").click()
            await expect(page.locator("tbody tr").filter(has_text=key_id)).to_contain_text("create_key")
            await page.get_by_label("Action").select_option("revoke_key")
            await page.get_by_role("button", name="Filter").click()
            await expect(page.locator("tbody tr").filter(has_text=key_id)).to_contain_text("revoke_key")
            await page.set_viewport_size({"width": 390, "height": 844})  # a phone: the table stacks
            await page.screenshot(path=ARTIFACTS / "admin-02-audit-phone.png", full_page=True)
            width = await page.evaluate("document.documentElement.scrollWidth")
            assert width <= 390, width  # nothing wider than the screen
        finally:
            await browser.close()
