"""Talking to an agent through the join widget, in JupyterLab in Chromium with a fake microphone, on each engine.

The notebook (tests/ui/notebooks/join.ipynb) launches an agent that speaks a 330 Hz tone and shows
``nbagents.ui.join(job)``. The browser must join with its microphone on, the agent must hear it (the
inspector counts frames of the browser's track) and the browser must hear the agent (the page's level
for the agent's track). The saved notebook must hold no token and only a few hundred bytes for the
widget. Screenshots and the measured sizes go to test-artifacts/.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from ui._lab import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, MEDIA_ARGS, WAIT_MS, jupyter_lab, run_cell, screenshot_all
from ui._lab import wait_for_idle_kernel

pytestmark = [pytest.mark.browser, pytest.mark.timeout(600)]

NOTEBOOK = Path(__file__).parent / "notebooks" / "join.ipynb"
JOIN_CELL = 3
STOP_CELL = 4
BROWSER_TRACK_HAS_FRAMES = """() => {
  const track = [...document.querySelectorAll('.nbagents-track')].find((e) => e.innerText.includes('notebook-user'));
  return track !== undefined && parseInt(track.querySelector('.nbagents-frames').innerText) > 0;
}"""


@pytest.fixture(scope="module")
def lab_on_engine(lk_server, tmp_path_factory):
    """JupyterLab whose kernels use the session's server (either engine) through LIVEKIT_URL."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)")
    env = {
        "NBAGENTS_ENGINE": "remote",
        "LIVEKIT_URL": lk_server.url,
        "LIVEKIT_API_KEY": lk_server.api_key,
        "LIVEKIT_API_SECRET": lk_server.api_secret,
    }
    with jupyter_lab(tmp_path_factory.mktemp("jupyter-join"), [NOTEBOOK], env) as server:
        yield server


def join_cell_outputs(notebook_path: Path) -> list[dict]:
    return json.loads(notebook_path.read_text())["cells"][JOIN_CELL]["outputs"]


async def test_browser_talks_with_the_agent_through_the_join_widget(lk_server, lab_on_engine) -> None:
    from playwright.async_api import async_playwright, expect

    url, token, root = lab_on_engine
    engine = lk_server.engine
    expect.set_options(timeout=WAIT_MS)
    ARTIFACTS.mkdir(exist_ok=True)
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS + MEDIA_ARGS)
        try:
            context = await browser.new_context(viewport={"width": 1400, "height": 1300}, permissions=["microphone"])
            page = await context.new_page()
            page.set_default_timeout(WAIT_MS)
            await page.goto(f"{url}/lab/tree/{NOTEBOOK.name}?reset&token={token}")
            await page.locator(".jp-Notebook .jp-Cell").first.wait_for()
            await wait_for_idle_kernel(page)
            await run_cell(page, 1)  # %load_ext nbagents
            await wait_for_idle_kernel(page)
            await run_cell(page, 2)  # %%agent: an agent that speaks a tone
            inspector = page.locator(".nbagents-inspector")
            await expect(inspector.locator(".nbagents-state")).to_have_text("running")
            await wait_for_idle_kernel(page)

            await run_cell(page, JOIN_CELL)  # nbagents.ui.join(job)
            frame_element = page.locator("iframe.nbagents-join-frame")
            await expect(frame_element).to_be_visible()
            frame = page.frame_locator("iframe.nbagents-join-frame")
            await expect(frame.locator("#nbj-state")).to_have_attribute("data-state", "connected")
            await expect(frame.locator("#nbj-mute")).to_have_text("Mute")  # joined with the microphone on
            join_page = await (await frame_element.element_handle()).content_frame()
            assert join_page is not None

            # the browser hears the agent: its page measures the level of the agent's track
            await join_page.wait_for_function("() => window.nbagentsJoin.agentTracks > 0 && window.nbagentsJoin.agent > 0.05")
            # the agent hears the browser: the inspector counts frames of the browser's microphone track
            await page.wait_for_function(BROWSER_TRACK_HAS_FRAMES)
            levels = await join_page.evaluate("() => ({...window.nbagentsJoin})")
            assert levels["micEnabled"] and levels["connection"] == "connected", levels
            await wait_for_idle_kernel(page)
            await page.screenshot(path=str(ARTIFACTS / f"join-{engine}-lab.png"), full_page=True)
            await page.locator(".nbagents-join").screenshot(path=str(ARTIFACTS / f"join-{engine}-widget.png"))
            page_token = json.loads(await join_page.evaluate("() => document.getElementById('nbj-config').textContent"))["token"]

            await frame.locator("#nbj-mute").click()  # mute: the microphone level stops
            await expect(frame.locator("#nbj-mute")).to_have_text("Unmute")
            await join_page.wait_for_function("() => window.nbagentsJoin.mic === 0 && !window.nbagentsJoin.micEnabled")
            await frame.locator("#nbj-leave").click()
            await expect(frame.locator("#nbj-state")).to_have_attribute("data-state", "disconnected")
            await expect(frame.locator("#nbj-message")).to_contain_text("You left the room")
            await expect(frame.locator("#nbj-join")).to_be_visible()

            await run_cell(page, STOP_CELL)
            stop_cell = page.locator(".jp-Notebook .jp-Cell").nth(STOP_CELL)
            await expect(stop_cell.locator(".jp-RenderedMarkdown").first).to_contain_text("succeeded")
            await wait_for_idle_kernel(page)
            saved = root / NOTEBOOK.name
            before = saved.stat().st_mtime_ns
            await page.keyboard.press("Control+s")
            await page.wait_for_function("() => !document.querySelector('.jp-mod-dirty')")
            for _ in range(100):
                if saved.stat().st_mtime_ns != before:
                    break
                await page.wait_for_timeout(100)
            await page.screenshot(path=str(ARTIFACTS / f"join-{engine}-final.png"), full_page=True)
        except BaseException:
            await screenshot_all(browser, f"join-{engine}-failure")
            raise
        finally:
            await browser.close()

    text = saved.read_text()
    assert page_token not in text, "the saved notebook holds the join token"
    outputs = join_cell_outputs(saved)
    widget_bytes = len(json.dumps(outputs, indent=1))
    assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in outputs), outputs
    assert widget_bytes < 2000, f"the join cell's outputs take {widget_bytes} bytes in the saved notebook"
    (ARTIFACTS / f"join-{engine}-saved-bytes.json").write_text(
        json.dumps({"engine": engine, "join_cell_output_bytes": widget_bytes, "notebook_bytes": len(text.encode())})
    )


async def idle_agent(ctx) -> None:
    import asyncio

    await ctx.connect()
    await asyncio.sleep(120)


async def test_join_page_says_why_it_cannot_join(server, tmp_path) -> None:
    """A server the browser cannot reach, and a page served from another host over http: the page says why."""
    import asyncio
    import functools
    import http.server
    import threading

    from playwright.async_api import async_playwright, expect

    from nbagents import launch
    from nbagents.ui import join_page
    from ui._lab import free_port
    from waiting import wait_until

    job = launch(idle_agent, room="ui-join-unreachable", shutdown_process_timeout=10, jobs_dir=tmp_path / "jobs")
    await wait_until(lambda: job.connected is not None, what="the agent to connect")
    page_html = join_page(job)
    await job.stop()
    closed = f"ws://127.0.0.1:{free_port()}"  # nothing listens there
    (tmp_path / "unreachable.html").write_text(page_html.replace(json.dumps(server.url)[1:-1], closed))
    (tmp_path / "remote.html").write_text(page_html)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    httpd = http.server.ThreadingHTTPServer(("10.200.0.2", 0), handler)  # the namespace's veth address: not loopback
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS + MEDIA_ARGS)
            try:
                context = await browser.new_context(permissions=["microphone"])
                page = await context.new_page()
                await page.goto((tmp_path / "unreachable.html").as_uri())
                await expect(page.locator("#nbj-state")).to_have_attribute("data-state", "failed", timeout=WAIT_MS)
                message = page.locator("#nbj-message")
                await expect(message).to_contain_text(f"Could not connect to the LiveKit server at {closed}")
                await expect(message).to_contain_text("machine that runs the kernel")
                await page.screenshot(path=str(ARTIFACTS / "join-unreachable.png"))

                await page.goto(f"http://10.200.0.2:{httpd.server_address[1]}/remote.html")
                await expect(page.locator("#nbj-state")).to_have_attribute("data-state", "failed", timeout=WAIT_MS)
                await expect(message).to_contain_text("not a secure context")
                await page.screenshot(path=str(ARTIFACTS / "join-insecure-remote.png"))
            finally:
                await browser.close()
    finally:
        httpd.shutdown()
        await asyncio.sleep(0)
