"""The inspector in a real browser: JupyterLab 4 and Notebook 7 on 127.0.0.1, driven by Chromium.

The notebook (tests/ui/notebooks/inspector.ipynb) launches a job, a simulated participant speaks a
tone and changes an attribute; the page must show the participant row, the attribute change, moving
audio levels and a changing plot, and, after the Shut down button, the job's final state.
Screenshots go to test-artifacts/.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.timeout(600)]

NOTEBOOK = Path(__file__).parent / "notebooks" / "inspector.ipynb"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-dev-shm-usage",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
WAIT_MS = 90_000  # generous: a loaded 2-core machine
LAB_OVERRIDES = {  # no news popup; start the notebook's kernel without asking
    "@jupyterlab/apputils-extension:notification": {"fetchNews": "false", "checkForUpdates": False},
    "@jupyterlab/notebook-extension:tracker": {"autoStartDefaultKernel": True},
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def jupyter_server(tmp_path_factory):
    """JupyterLab (with Notebook 7 beside it) in a fresh root dir, config and settings dirs, on 127.0.0.1."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)")
    base = tmp_path_factory.mktemp("jupyter")
    root, settings = base / "root", base / "app-settings"
    root.mkdir()
    settings.mkdir()
    shutil.copy(NOTEBOOK, root / NOTEBOOK.name)
    (settings / "overrides.json").write_text(json.dumps(LAB_OVERRIDES))
    port, token = _free_port(), "nbagents-ui-test"
    env = {k: v for k, v in os.environ.items() if k not in ("LIVEKIT_URL", "NBAGENTS_ENGINE")}
    env.update(
        NBAGENTS_ENGINE="embedded",
        JUPYTER_CONFIG_DIR=str(base / "config"),
        JUPYTER_RUNTIME_DIR=str(base / "runtime"),
        JUPYTERLAB_WORKSPACES_DIR=str(base / "workspaces"),
    )
    log = open(base / "jupyter.log", "wb")
    process = subprocess.Popen(
        [
            sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root", "--ip=127.0.0.1", f"--port={port}",
            f"--ServerApp.root_dir={root}", f"--IdentityProvider.token={token}",
            f"--LabApp.app_settings_dir={settings}", f"--LabApp.user_settings_dir={base / 'user-settings'}",
            f"--JupyterNotebookApp.app_settings_dir={settings}",
            f"--JupyterNotebookApp.user_settings_dir={base / 'user-settings'}",
        ],
        cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2).read()
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise AssertionError(f"JupyterLab did not start: {(base / 'jupyter.log').read_text()[-3000:]}")
            time.sleep(0.2)
    try:
        yield url, token, root
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


async def _wait_for_idle_kernel(page) -> None:
    await page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']").first.wait_for(timeout=WAIT_MS)


async def _run_cell(page, index: int) -> None:
    """Select code cell ``index`` (0-based over all cells) in command mode and run it with Shift+Enter."""
    from playwright.async_api import expect

    cell = page.locator(".jp-Notebook .jp-Cell").nth(index)
    prompt = cell.locator(".jp-InputPrompt").first
    for _ in range(3):  # a click that lands while the notebook is still settling selects nothing: retry
        await _accept_kernel_dialog(page)
        await prompt.click()
        await page.keyboard.press("Shift+Enter")
        try:
            await expect(prompt).not_to_have_text(re.compile(r"^\s*\[ \]"), timeout=5_000)
            break
        except AssertionError:
            continue
    await expect(prompt).to_have_text(re.compile(r"\[\d+\]"))  # executed (not queued, not running)


async def _accept_kernel_dialog(page) -> None:
    """Lab may still ask which kernel to start while it settles a fresh session: take the preferred one."""
    dialog = page.locator(".jp-Dialog")
    if await dialog.count() and await dialog.filter(has_text="Select Kernel").count():
        await dialog.locator(".jp-mod-accept").click()
        await dialog.wait_for(state="detached")


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
            inspector = page.locator(".nbagents-inspector")
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

            await _run_cell(page, 4)  # alice changes user.language to fr
            await expect(alice_row.locator(".nbagents-attr")).to_have_text("fr")
            await _wait_for_idle_kernel(page)
            await inspector.screenshot(path=str(ARTIFACTS / "ui-lab-inspector.png"))

            await inspector.locator(".nbagents-stop").click()  # Shut down, with the reason in the text box
            await expect(inspector.locator(".nbagents-state")).to_have_text("succeeded")
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
            for i, context_page in enumerate(p for c in browser.contexts for p in c.pages):
                await context_page.screenshot(path=str(ARTIFACTS / f"ui-failure-{i}.png"), full_page=True)
            raise
        finally:
            await browser.close()
