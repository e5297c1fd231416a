"""'Talk to the agent' in headless Chromium with a fake microphone (a WAV file): sign in, open the page, call
the agent with each engine, hear it (the page plays its audio and echoes its marks), see the transcript,
hang up; the call is archived with both speakers' lines, as a web call.

Screenshots are kept as test artifacts in var/test-artifacts/console/."""

from __future__ import annotations

import wave
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
from playwright.async_api import Browser, async_playwright, expect

from app.auth.keys import Role
from app.emulator.config import EmulatorConfig
from tests.calls.test_web_call_e2e import web_rig
from tests.console.support import sign_in_page
from tests.console.test_console_browser import CHROMIUM_ARGS, shoot
from tests.emulator.helpers import silence, voiced
from tests.support import archived, key_for

pytestmark = [pytest.mark.asyncio, pytest.mark.browser]

WAIT_MS = 20_000


def microphone_wav(path: Path) -> Path:
    """What the fake microphone says, looped by Chromium: 1.5 s of quiet, then 1 s of voice, then quiet."""
    rate = 24_000
    samples = np.concatenate([silence(1500, rate=rate), voiced(1000, rate=rate), silence(6000, rate=rate)])
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(samples.astype("<i2").tobytes())
    return path


@pytest.fixture
async def talking_browser(chromium_path: str, tmp_path: Path) -> AsyncIterator[Browser]:
    args = [
        *CHROMIUM_ARGS,
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={microphone_wav(tmp_path / 'mic.wav')}",
        "--autoplay-policy=no-user-gesture-required",
    ]
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=chromium_path, args=args)
        try:
            yield launched
        finally:
            await launched.close()


@pytest.mark.parametrize("engine", ["realtime", "cascaded"])
async def test_talk_to_the_agent_from_the_page_with_a_fake_microphone(
    tmp_path: Path, talking_browser: Browser, engine: str, capsys: pytest.CaptureFixture[str]
) -> None:
    config = EmulatorConfig(tts="synthetic", transcripts=["What are your hours?"] * 5,
                            reply_text=lambda heard: "We open at nine.")  # fmt: skip
    async with web_rig(tmp_path, config) as rig:
        key = await key_for(rig.settings.effective_database_url, Role.supervisor)
        context = await talking_browser.new_context(viewport={"width": 1280, "height": 800})
        page = await context.new_page()
        await sign_in_page(page, rig.base, key)
        await page.get_by_role("link", name="Talk to the agent").click()
        await expect(page.get_by_role("heading", name="Talk to the agent")).to_be_visible()
        await page.get_by_label(engine.capitalize(), exact=False).check()
        await page.get_by_role("button", name="Start the call").click()
        status = page.locator("#talk-status")
        await expect(status).to_contain_text(f"In a call with the agent ({engine})", timeout=WAIT_MS)
        lines = page.locator("#talk-transcript li")
        # The greeting is played (the page echoes its marks), then the caller's words and the answer show.
        await expect(page.locator("#talk-transcript li.caller")).to_have_count(1, timeout=WAIT_MS)
        await expect(page.locator("#talk-transcript li.agent").nth(1)).to_contain_text(
            "We open at nine.", timeout=WAIT_MS
        )
        played = await page.evaluate("window.talkState")
        assert played["received"] > 0 and played["played"] > 0 and played["marks"] > 0
        await shoot(page, f"05-talk-{engine}", capsys)
        call_sid = await status.get_attribute("data-call-sid")
        await page.get_by_role("button", name="Hang up").click()
        await expect(status).to_contain_text("Call ended", timeout=WAIT_MS)
        await expect(lines.first).to_be_visible()
        await context.close()
        assert call_sid is not None
        record = await archived(rig.base, rig.settings, call_sid)
    speakers = {s["speaker"] for s in record["transcript"]}
    assert speakers == {"agent", "caller"}
    assert ("caller", "What are your hours?") in [(s["speaker"], s["text"]) for s in record["transcript"]]
    assert record["direction"] == "web"
