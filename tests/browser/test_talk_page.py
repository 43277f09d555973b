"""The talk page in a real browser: Debian's chromium (Playwright) with a fake microphone playing espeak-ng speech
and a fake screen, against the token service, livekit-server and a real agent worker (offline providers, real task
store), all local processes (tests/e2e/test_browser.py: the same against the fleet's pods).

UPDATE_SCREENSHOT=1 copies the test's screenshot to docs/talk-page.png (the README shows it).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser

from voiceroom import TokenService, VoiceStack
from voiceroom.talkpage import chromium, visit

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def browser(tmp_path: Path) -> AsyncIterator[Browser]:
    async with chromium(tmp_path) as launched:
        yield launched


def test_the_talk_page_and_its_bundle_are_served(talk_service: TokenService) -> None:
    page = talk_service.request("GET", "/")
    assert page.status == 200 and b'<script type="module" src="talk.js">' in page.raw
    assert b'id="screen"' in page.raw
    bundle = talk_service.request("GET", "/talk.js")
    assert bundle.status == 200, "talk.js missing: run `make page`"
    assert bundle.headers["Content-Type"].startswith("text/javascript")
    assert b"lk.transcription" in bundle.raw and len(bundle.raw) > 100_000  # livekit-client is bundled in


async def test_page_connects_hears_the_greeting_a_spoken_request_adds_a_task_and_the_agent_receives_the_screen(
    browser: Browser, talk_service: TokenService, voice_stack: VoiceStack
) -> None:
    shot = voice_stack.logs_dir / "talk-page.png"
    seen = await visit(browser, talk_service.url, screenshot=shot)

    # Whisper tiny.en hears the request through chromium's audio processing as "and my milk to my tasks" or,
    # now and then, "and by me to my tasks": the task is whatever it heard, in the store and on the page
    stored = [t.title for t in voice_stack.tasks_of(seen.identity).list_tasks()]
    assert len(stored) == 1, f"task store of {seen.identity}: {stored}"
    assert seen.tasks == [stored[0]]
    assert len(seen.heard) == 1 and "tasks" in seen.heard[0].lower() and stored[0].lower() in seen.heard[0].lower()
    # the worker decoded frames of the caller's screen-share track (chromium's fake screen, captured at 1280x720)
    assert seen.screen["frames"] > 1 and seen.screen["width"] > 0 and seen.screen["height"] > 0, seen.screen
    log = voice_stack.worker_log.read_text(errors="replace")
    assert f"screen share: first video frame from {seen.identity} (" in log
    if os.environ.get("UPDATE_SCREENSHOT"):
        shutil.copyfile(shot, ROOT / "docs" / "talk-page.png")
    print(f"heard {seen.heard[0]!r}, task {stored[0]!r}; screen {seen.screen}")
    print(seen.summary())
