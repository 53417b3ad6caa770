"""The inspector in a real browser: JupyterLab 4 and Notebook 7 on 127.0.0.1, driven by Chromium.

The notebook (tests/ui/notebooks/inspector.ipynb) launches a job, a simulated participant speaks a
tone and changes an attribute; the page must show the participant row, the attribute change, moving
audio levels and a changing plot, and, after the Shut down button, the job's final state.
Screenshots go to test-artifacts/.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ui._lab import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, WAIT_MS, jupyter_lab, run_cell, screenshot_all
from ui._lab import wait_for_idle_kernel as _wait_for_idle_kernel

pytestmark = [pytest.mark.browser, pytest.mark.timeout(600)]

NOTEBOOK = Path(__file__).parent / "notebooks" / "inspector.ipynb"


@pytest.fixture(scope="module")
def jupyter_server(tmp_path_factory):
    """JupyterLab (with Notebook 7 beside it) on 127.0.0.1, its kernels on the embedded engine."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)")
    with jupyter_lab(tmp_path_factory.mktemp("jupyter"), [NOTEBOOK], {"NBAGENTS_ENGINE": "embedded"}) as server:
        yield server


_run_cell = run_cell


async def test_inspector_live_in_jupyterlab_then_notebook7(jupyter_server) -> None:
    from playwright.async_api import async_playwright, expect

    url, token, root = jupyter_server
    expect.set_options(timeout=WAIT_MS)
    ARTIFACTS.mkdir(exist_ok=True)
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1400, "height": 1300})
            page.set_default_timeout(WAIT_MS)
            await page.goto(f"{url}/lab/tree/{NOTEBOOK.name}?reset&token={token}")
            await page.locator(".jp-Notebook .jp-Cell").first.wait_for()
            await _wait_for_idle_kernel(page)

            await _run_cell(page, 1)  # %load_ext nbagents
            await _wait_for_idle_kernel(page)
            await _run_cell(page, 2)  # %%agent: the job and its inspector
            inspector = page.locator(".jp-Notebook .nbagents-inspector")
            await expect(inspector).to_be_visible()
            await expect(inspector.locator(".nbagents-state")).to_have_text("running")
            await _wait_for_idle_kernel(page)

            await _run_cell(page, 3)  # alice joins with user.language=en and speaks a tone
            alice_row = inspector.locator(".nbagents-participant-alice")
            await expect(alice_row).to_contain_text("alice")
            await expect(alice_row.locator(".nbagents-attr")).to_have_text("en")
            level = inspector.locator(".nbagents-level").first
            await expect(level).to_contain_text("rms 0.")
            await page.wait_for_function(
                "() => { const e = document.querySelector('.nbagents-level'); const m = e && e.innerText.match(/rms (\\d+\\.\\d+)/); return m && parseFloat(m[1]) > 0.05; }"
            )
            frames = inspector.locator(".nbagents-frames").first
            first_frames = int(await frames.inner_text())
            await page.wait_for_function(
                f"() => parseInt(document.querySelector('.nbagents-frames').innerText) > {first_frames}"
            )  # the statistics update live
            plot = inspector.locator("img.nbagents-plot").first
            await expect(plot).to_be_visible()
            sources = {await plot.get_attribute("src")}
            for _ in range(3):  # the plot image changes over time
                await page.wait_for_function(
                    "(seen) => { const i = document.querySelector('img.nbagents-plot'); return i && !seen.includes(i.src); }",
                    arg=list(sources),
                )
                sources.add(await plot.get_attribute("src"))
            await _wait_for_idle_kernel(page)
            await page.screenshot(path=str(ARTIFACTS / "ui-lab-live.png"), full_page=True)

            # keep the inspector in view: JupyterLab's "Create New View for Cell Output" opens it in a panel of its own
            await inspector.click(button="right", position={"x": 5, "y": 5})
            await page.get_by_text("Create New View for Cell Output", exact=True).click()
            side = page.locator(".jp-LinkedOutputView .nbagents-inspector")
            await expect(side.locator(".nbagents-state")).to_have_text("running")
            await expect(side.locator(".nbagents-participant-alice")).to_contain_text("alice")

            # or in the window's corner: "Keep in view" pins a compact copy that stays put while the notebook scrolls
            await inspector.locator(".nbagents-pin-toggle").click()
            pinned = page.locator(".nbagents-pinned")
            await expect(pinned).to_have_count(1)  # one box, though the job has two inspector views now
            await expect(pinned.locator(".nbagents-pinned-state")).to_have_text("running")
            await expect(pinned).to_contain_text("alice")

            await _run_cell(page, 4)  # alice changes user.language to fr
            await expect(alice_row.locator(".nbagents-attr")).to_have_text("fr")
            await expect(side.locator(".nbagents-participant-alice .nbagents-attr")).to_have_text("fr")  # the panel is live
            await page.locator(".jp-Notebook .jp-Cell").last.scroll_into_view_if_needed()
            box = await pinned.bounding_box()
            viewport = page.viewport_size
            assert box is not None and 0 <= box["y"] and box["y"] + box["height"] <= viewport["height"], box
            shown = int(await pinned.locator(".nbagents-pinned-frames").first.inner_text())
            await page.wait_for_function(
                "(n) => parseInt(document.querySelector('.nbagents-pinned-frames').innerText) > n", arg=shown
            )  # live while the notebook is scrolled elsewhere
            await page.screenshot(path=str(ARTIFACTS / "ui-lab-side-panel-and-pinned.png"), full_page=True)
            await _wait_for_idle_kernel(page)
            await inspector.screenshot(path=str(ARTIFACTS / "ui-lab-inspector.png"))

            await inspector.locator(".nbagents-stop").click()  # Shut down, with the reason in the text box
            await expect(inspector.locator(".nbagents-state")).to_have_text("succeeded")
            await expect(side.locator(".nbagents-state")).to_have_text("succeeded")
            await expect(pinned.locator(".nbagents-pinned-state")).to_have_text("succeeded")
            agent_cell = page.locator(".jp-Notebook .jp-Cell").nth(2)
            final_state = agent_cell.locator(".jp-RenderedMarkdown")  # the placeholder, updated in place
            await expect(final_state).to_contain_text("succeeded")
            await expect(final_state).to_contain_text("stopped from the inspector")
            await expect(final_state).to_contain_text('"user.language": "fr"')
            await expect(agent_cell.locator(".jp-RenderedImage img").first).to_be_visible()  # the last plot, static

            await _run_cell(page, 5)  # result = %agent wait: the final state again, in the foreground
            wait_cell = page.locator(".jp-Notebook .jp-Cell").nth(5)
            await expect(wait_cell.locator(".jp-RenderedMarkdown")).to_contain_text("save_state")
            await _wait_for_idle_kernel(page)
            await _run_cell(page, 6)
            await expect(page.locator(".jp-Notebook .jp-Cell").nth(6).locator(".jp-OutputArea-output")).to_contain_text("'fr'")
            await _wait_for_idle_kernel(page)
            await page.screenshot(path=str(ARTIFACTS / "ui-lab-final.png"), full_page=True)
            await page.keyboard.press("Control+s")
            await page.close()

            # the same notebook in Notebook 7, on the same server: open it and run the overview cell
            page = await browser.new_page(viewport={"width": 1300, "height": 1100})
            page.set_default_timeout(WAIT_MS)
            await page.goto(f"{url}/notebooks/{NOTEBOOK.name}?token={token}")
            await page.locator(".jp-Notebook .jp-Cell").nth(7).wait_for()
            await _wait_for_idle_kernel(page)
            await _run_cell(page, 7)
            overview = page.locator(".nbagents-overview")
            await expect(overview).to_contain_text("succeeded")
            await expect(overview).to_contain_text("ui-browser")
            await page.screenshot(path=str(ARTIFACTS / "ui-notebook7.png"), full_page=True)
        except BaseException:
            await screenshot_all(browser, "ui-failure")
            raise
        finally:
            await browser.close()
