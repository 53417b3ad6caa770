"""The voice-session view in a real browser: notebooks/voice_agent.ipynb in JupyterLab 4, driven by Chromium.

The order desk runs as a job; a simulated caller asks two questions by voice. While the conversation goes
on, the inspector must show the voice view (state badges, the conversation with the tool calls, the
latency table, the timeline image); after ``%agent wait`` the notebook keeps the transcript and latency
table as Markdown and the timeline as an image. Screenshots go to test-artifacts/ (ui-lab-voice*.png).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from .test_browser import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, WAIT_MS, _run_cell, _wait_for_idle_kernel, jupyter_server  # noqa: F401

pytestmark = [pytest.mark.browser, pytest.mark.timeout(900)]

VOICE_NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "voice_agent.ipynb"
CELL = {"load_ext": 1, "agent": 3, "launch": 5, "caller": 7, "wait": 9}  # positions among all cells


async def test_voice_view_live_in_jupyterlab(jupyter_server) -> None:  # noqa: F811
    from playwright.async_api import async_playwright, expect

    url, token, root = jupyter_server
    shutil.copy(VOICE_NOTEBOOK, root / VOICE_NOTEBOOK.name)
    expect.set_options(timeout=WAIT_MS)
    ARTIFACTS.mkdir(exist_ok=True)
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1400, "height": 1500})
            page.set_default_timeout(WAIT_MS)
            await page.goto(f"{url}/lab/tree/{VOICE_NOTEBOOK.name}?reset&token={token}")
            await page.locator(".jp-Notebook .jp-Cell").first.wait_for()
            await _wait_for_idle_kernel(page)
            for name in ("load_ext", "agent", "launch"):
                await _run_cell(page, CELL[name])
                await _wait_for_idle_kernel(page)
            inspector = page.locator(".nbagents-inspector")
            voice = inspector.locator(".nbagents-voice")
            await expect(voice).to_be_visible(timeout=3 * WAIT_MS)  # the session starts once the job has its models
            await expect(voice.locator(".nbagents-agent-state")).to_be_visible()
            # the greeting plays once someone subscribes to the agent's audio (livekit-agents' room output waits)
            await _run_cell(page, CELL["caller"])  # the caller asks two questions by voice (the cell runs on)
            conversation = voice.locator(".nbagents-voice-conversation")
            await expect(conversation).to_contain_text("Hello, this is the order desk.", timeout=3 * WAIT_MS)
            await expect(conversation).to_contain_text("what is the status of order four hundred twenty seven",
                                                       timeout=3 * WAIT_MS)
            await expect(conversation.locator(".nbagents-tool-call").first).to_contain_text("order_status")
            await expect(conversation).to_contain_text("Order 427 is shipped.")
            timeline = voice.locator("img.nbagents-voice-timeline")
            await expect(timeline).to_be_visible()
            first = await timeline.get_attribute("src")
            await page.wait_for_function(  # the timeline redraws while the session runs
                "(seen) => { const i = document.querySelector('img.nbagents-voice-timeline'); return i && i.src !== seen; }",
                arg=first,
            )
            await expect(voice.locator(".nbagents-latency-row").nth(1)).to_be_visible()  # the greeting's and this reply's
            await voice.screenshot(path=str(ARTIFACTS / "ui-lab-voice.png"))
            await page.screenshot(path=str(ARTIFACTS / "ui-lab-voice-live.png"), full_page=True)

            await expect(conversation).to_contain_text("Order 512 is being packed.", timeout=3 * WAIT_MS)
            await expect(voice.locator(".nbagents-latency-row")).to_have_count(3)
            await _wait_for_idle_kernel(page)  # the caller's cell is done: it left, the room closes

            await _run_cell(page, CELL["wait"])  # result = %agent wait: the final state, kept in the notebook
            wait_cell = page.locator(".jp-Notebook .jp-Cell").nth(CELL["wait"])
            final = wait_cell.locator(".jp-RenderedMarkdown").first
            await expect(final).to_contain_text("Conversation")
            await expect(final).to_contain_text("order_status")
            await expect(final).to_contain_text("Latency per reply")
            await expect(final).to_contain_text("TTS TTFB")
            await expect(wait_cell.locator(".jp-RenderedImage img").first).to_be_visible()  # timeline and audio plot
            await expect(voice.locator(".nbagents-agent-state").first).to_have_attribute("data-state", "closed")  # no stale live state
            await _wait_for_idle_kernel(page)
            await wait_cell.screenshot(path=str(ARTIFACTS / "ui-lab-voice-final.png"))
        except BaseException:
            for i, context_page in enumerate(p for c in browser.contexts for p in c.pages):
                await context_page.screenshot(path=str(ARTIFACTS / f"ui-voice-failure-{i}.png"), full_page=True)
            raise
        finally:
            await browser.close()
