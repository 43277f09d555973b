"""The talk page in a real browser: Debian's chromium, driven by Playwright (never `playwright install`), with a fake
microphone that plays espeak-ng's request after a silence long enough for the greeting, and chromium's fake screen
for screen sharing. Used by tests/browser (a local worker) and tests/e2e (the fleet's pods)."""

from __future__ import annotations

import time
import wave
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from playwright.async_api import Browser, Page, async_playwright

from voicefleet_agent.session import GREETING
from voicefleet_offline import espeak

CHROMIUM = Path("/usr/bin/chromium")
REQUEST = "Add buy milk to my tasks"
RATE = 48000
# the request starts after this much silence, once the greeting (about 4 s of speech) is over
LEAD_SILENCE_SECONDS = 7.0
# generous: a shared 2-core machine under load
GREETING_TIMEOUT_MS = 60_000
TASK_TIMEOUT_MS = 60_000
SCREEN_TIMEOUT_MS = 60_000


async def speech_wav(path: Path) -> Path:
    pcm = await espeak.synthesize(REQUEST, sample_rate=RATE)
    silence = b"\0\0" * int(RATE * LEAD_SILENCE_SECONDS)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(RATE)
        out.writeframes(silence + pcm + b"\0\0" * RATE)
    return path


@asynccontextmanager
async def chromium(root: Path, *, secure_origins: Sequence[str] = ()) -> AsyncIterator[Browser]:
    """Headless chromium with the fake microphone (the request) and fake screen. `secure_origins`: plain-http
    origins to treat as secure (microphones and screens are for secure pages only; a real deployment serves the
    page over HTTPS, the test ground has no certificate for a ClusterIP)."""
    if not CHROMIUM.is_file():
        raise AssertionError(f"{CHROMIUM} missing: run `make system-deps` (apt-get install chromium)")
    if not espeak.available():
        raise AssertionError("espeak-ng or sox not installed: run `make system-deps` (apt-get install espeak-ng sox)")
    wav = await speech_wav(root / "request.wav")
    args = [
        "--no-sandbox",  # root in a container: chromium's sandbox needs user namespaces we do not have
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        # the fake UI grants the microphone and picks the fake device's screen (1280x720) for getDisplayMedia
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={wav}%noloop",
        "--autoplay-policy=no-user-gesture-required",
    ]
    if secure_origins:
        args.append("--unsafely-treat-insecure-origin-as-secure=" + ",".join(secure_origins))
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=args)
        try:
            yield launched
        finally:
            await launched.close()


@dataclass(frozen=True)
class Visit:
    """What one visit of the talk page showed."""

    identity: str  # the page's LiveKit identity (the token service's browser-<random>)
    room: str
    heard: list[str]  # the caller's side of the transcript
    tasks: list[str]  # the task list on the page
    timings: dict[str, Any]  # window.voicefleetTimings: ms since page load (token, joined, agentText, agentAudio)
    screen: dict[str, Any]  # the agent's last screen-share report ({frames, width, height, ended})
    greeted_wall_s: float  # goto → the greeting's audio, measured here

    def summary(self) -> str:
        t = self.timings
        return (f"page load → greeting heard: {t['agentAudio']} ms (text {t.get('agentText')} ms, token "
                f"{t.get('token')} ms, joined {t.get('joined')} ms; wall {self.greeted_wall_s:.1f}s)")  # fmt: skip


async def texts(page: Page, selector: str) -> list[str]:
    return [t.strip() for t in await page.locator(selector).all_inner_texts()]


async def visit(browser: Browser, url: str, *, screenshot: Path) -> Visit:
    """Open the page (autostart), hear the greeting, let the fake microphone ask for a task and wait for it on the
    page, then share the screen until the agent reports frames of it. Screenshots the end (or the failure, next to
    `screenshot`, with the console's tail printed)."""
    page = await browser.new_page(viewport={"width": 1100, "height": 640})
    console: list[str] = []
    page.on("console", lambda message: console.append(f"{message.type}: {message.text}"))
    page.on("pageerror", lambda error: console.append(f"pageerror: {error}"))
    started = time.monotonic()
    await page.goto(url + "?autostart")
    try:
        # the greeting's audio decoded in the page, and its transcript shown word by word to its end
        await page.wait_for_function(
            "window.voicefleetTimings && window.voicefleetTimings.agentAudio", timeout=GREETING_TIMEOUT_MS
        )
        greeted = time.monotonic() - started
        last_words = GREETING.split()[-4:]
        await page.locator("#transcript li.agent", has_text=" ".join(last_words)).wait_for(timeout=GREETING_TIMEOUT_MS)
        assert (await page.locator("#transcript li.agent").first.inner_text()).strip() == GREETING

        await page.locator("#tasks li:not(.empty)").first.wait_for(timeout=TASK_TIMEOUT_MS)
        await page.wait_for_function(
            "[...document.querySelectorAll('#transcript li.agent')].some(li => /added/i.test(li.textContent))",
            timeout=TASK_TIMEOUT_MS,
        )
        # the reply spoken to its end, the agent listens again (lk.agent.state)
        await page.locator("#state", has_text="listening").wait_for(timeout=TASK_TIMEOUT_MS)

        # a user's click (screen capture needs one), then the agent's own report of the frames it decoded
        await page.click("#screen")
        await page.wait_for_function(
            "window.voicefleetScreen && window.voicefleetScreen.frames > 1 && !window.voicefleetScreen.ended",
            timeout=SCREEN_TIMEOUT_MS,
        )
        await page.locator("#screen-status", has_text="sees your screen").wait_for(timeout=SCREEN_TIMEOUT_MS)
        found = Visit(
            identity=await page.evaluate("window.voicefleet.room.localParticipant.identity"),
            room=await page.evaluate("window.voicefleet.room.name"),
            heard=await texts(page, "#transcript li.user"),
            tasks=await texts(page, "#tasks li"),
            timings=await page.evaluate("window.voicefleetTimings"),
            screen=await page.evaluate("window.voicefleetScreen"),
            greeted_wall_s=greeted,
        )
    except Exception:
        await page.screenshot(path=str(screenshot.with_name(screenshot.stem + "-failed.png")))
        print("\n".join(console[-40:]))
        raise
    await page.screenshot(path=str(screenshot))
    await page.close()
    return found
