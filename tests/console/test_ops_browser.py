"""The ops person's main path in headless Chromium: make a campaign (a refused field said by the form), import
a spreadsheet's CSV (semicolons, Windows-1252) with a held and a rejected row and see why, start the campaign
and watch it dial through the local carrier without reloading (the attempt answered by a person, the
decision and its reason, the progress finished), then find the held contact and release it. Screenshots kept
as test artifacts."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.async_api import async_playwright, expect

from app.auth.keys import Role
from app.carrier.people import People
from app.carrier.server import Carrier, CarrierConfig
from app.emulator.config import EmulatorConfig
from app.emulator.server import RealtimeEmulator
from app.main import create_app
from tests.console.support import console_settings, sign_in_page
from tests.console.test_console_browser import ARTIFACTS, CHROMIUM_ARGS, WAIT_MS
from tests.support import ACCOUNT_SID, AUTH_TOKEN, DialerClock, key_for, lawful_instant, serve_asgi

pytestmark = [pytest.mark.asyncio, pytest.mark.browser]

expect.set_options(timeout=WAIT_MS)

SHEET = (
    "Phone;Name;State;Consent\r\n"
    "(212) 555-0123;José Núñez;NY;express\r\n"  # accepted
    "800-555-0123;Toll Free;;express\r\n"  # held: no callee-local time for a toll-free number
    "not a number;Nobody;;express\r\n"  # rejected
).encode("cp1252")


async def test_ops_make_a_campaign_import_contacts_start_it_and_watch_progress(
    tmp_path: Path, chromium_path: str
) -> None:
    people = People.from_json({"+12125550123": {"kind": "person", "ring_s": 0.3, "lines": ["Yes, this is José."]}})
    sheet = tmp_path / "contacts.csv"
    sheet.write_bytes(SHEET)
    async with (
        RealtimeEmulator(EmulatorConfig(tts="synthetic")) as emulator,
        serve_asgi((carrier := Carrier(CarrierConfig(ACCOUNT_SID, AUTH_TOKEN, people, emulator=emulator.url))).app)
        as carrier_base,
    ):  # fmt: skip
        settings = console_settings(tmp_path, realtime_url=emulator.url, twilio_api_base_url=carrier_base)
        ops = await key_for(settings.effective_database_url, Role.ops)
        async with serve_asgi(create_app(settings, clock=DialerClock(lawful_instant()))) as base:
            carrier.config.server = base
            await ops_path(base, ops, sheet, chromium_path)


async def ops_path(base: str, ops: str, sheet: Path, chromium_path: str) -> None:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 900})
            await sign_in_page(page, base, ops)
            await page.get_by_role("link", name="Campaigns").click()
            await page.get_by_label("Name", exact=True).fill("Spring recalls")
            await page.get_by_label("Subject").fill("dental recall")
            await page.get_by_label("Caller ID").fill("not a phone")
            await page.get_by_role("button", name="Make the campaign").click()
            await expect(page.get_by_role("alert")).to_contain_text("caller_id must be a phone number")
            await expect(page.get_by_label("Name", exact=True)).to_have_value("Spring recalls")  # kept
            await page.get_by_label("Caller ID").fill("+1 212 555 0100")
            await page.get_by_role("button", name="Make the campaign").click()
            await expect(page.get_by_role("heading", name="Spring recalls", level=1)).to_be_visible()
            await expect(page.locator("#status")).to_have_text("draft")

            await page.get_by_label("Contacts file").set_input_files(str(sheet))
            await page.get_by_role("button", name="Import").click()
            report = page.locator("#import-report")
            await expect(report).to_contain_text("3 rows: 2 created, 0 updated, 0 unchanged, 1 held, 1 rejected")
            await expect(report).to_contain_text("read as cp1252")
            await expect(report.locator(".rejected")).to_contain_text("Row 4, phone: not a phone number")
            await expect(report.locator(".held")).to_contain_text("Row 3, +18005550123: a toll-free")
            await expect(page.get_by_role("cell", name="José Núñez")).to_be_visible()
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            await page.screenshot(path=ARTIFACTS / "ops-01-imported.png", full_page=True)

            await page.get_by_role("button", name="Start").click()
            await expect(page.get_by_role("status")).to_contain_text("The campaign is running now.")
            await expect(page.locator("#status")).to_have_text("running")
            progress = page.locator("#progress")
            await expect(progress).to_contain_text("Contacts pending")
            await expect(progress).to_contain_text("Contacts held")
            await expect(progress).to_contain_text("no answered calls yet")
            await expect(page.get_by_role("button", name="Pause")).to_be_visible()
            await page.screenshot(path=ARTIFACTS / "ops-02-running.png", full_page=True)

            # The page follows the dialing by itself (no reload): the call placed, answered by a person, talked.
            attempts = page.locator("#attempts")
            await expect(attempts).to_contain_text("+12125550123", timeout=30_000)
            await expect(attempts).to_contain_text("a person", timeout=30_000)
            await expect(attempts).to_contain_text("answered", timeout=60_000)
            decisions = page.locator("#decisions")
            await expect(decisions).to_contain_text("allow")
            await expect(decisions).to_contain_text("inside the calling window in America/New_York")
            await expect(page.locator("#live-status")).to_contain_text("finished", timeout=30_000)
            await expect(page.locator("#abandonment")).to_contain_text("0.0% (0 of 1 answered)")
            await page.screenshot(path=ARTIFACTS / "ops-03-dialed.png", full_page=True)

            # The held contact, found by its status, released once the callee's state is given.
            await page.locator("#f-status").select_option("held")
            await page.get_by_role("button", name="Filter").click()
            contacts = page.locator("#contacts")
            await expect(contacts).to_contain_text("+18005550123")
            await expect(contacts).not_to_contain_text("+12125550123")
            await contacts.get_by_label("Reason").fill("the customer lives in Buffalo")
            await contacts.get_by_role("button", name="Release").click()
            await expect(page.locator("#contact-notice")).to_contain_text("give the callee's state")
            await page.locator("#contacts").get_by_label("Reason").fill("the customer lives in Buffalo")
            await page.locator("#contacts").get_by_label("Callee's state").fill("NY")
            await page.locator("#contacts").get_by_role("button", name="Release").click()
            await expect(page.locator("#contact-notice")).to_contain_text("+18005550123 is released into the queue")
            await page.screenshot(path=ARTIFACTS / "ops-04-released.png", full_page=True)
        finally:
            await browser.close()
