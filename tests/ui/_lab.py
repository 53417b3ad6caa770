"""A real JupyterLab (with Notebook 7 beside it) on 127.0.0.1 and Chromium driving it, for the browser tests."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path

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
MEDIA_ARGS = ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]  # a fake microphone that beeps
WAIT_MS = 90_000  # generous: a loaded 2-core machine
LAB_OVERRIDES = {  # no news popup; start the notebook's kernel without asking
    "@jupyterlab/apputils-extension:notification": {"fetchNews": "false", "checkForUpdates": False},
    "@jupyterlab/notebook-extension:tracker": {"autoStartDefaultKernel": True},
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def jupyter_lab(base: Path, notebooks: list[Path], env_overrides: Mapping[str, str]) -> Iterator[tuple[str, str, Path]]:
    """JupyterLab in a fresh root dir (with copies of ``notebooks``), config and settings dirs; yields (url, token, root)."""
    root, settings = base / "root", base / "app-settings"
    root.mkdir()
    settings.mkdir()
    for notebook in notebooks:
        shutil.copy(notebook, root / notebook.name)
    (settings / "overrides.json").write_text(json.dumps(LAB_OVERRIDES))
    port, token = free_port(), "nbagents-ui-test"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIVEKIT_") and k != "NBAGENTS_ENGINE"}
    env.update(
        JUPYTER_CONFIG_DIR=str(base / "config"),
        JUPYTER_RUNTIME_DIR=str(base / "runtime"),
        JUPYTERLAB_WORKSPACES_DIR=str(base / "workspaces"),
    )
    env.update(env_overrides)
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


async def wait_for_idle_kernel(page) -> None:
    await page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']").first.wait_for(timeout=WAIT_MS)


async def run_cell(page, index: int) -> None:
    """Select code cell ``index`` (0-based over all cells) in command mode and run it with Shift+Enter."""
    from playwright.async_api import expect

    cell = page.locator(".jp-Notebook .jp-Cell").nth(index)
    prompt = cell.locator(".jp-InputPrompt").first
    for _ in range(3):  # a click that lands while the notebook is still settling selects nothing: retry
        await accept_kernel_dialog(page)
        await prompt.click()
        await page.keyboard.press("Shift+Enter")
        try:
            await expect(prompt).not_to_have_text(re.compile(r"^\s*\[ \]"), timeout=5_000)
            break
        except AssertionError:
            continue
    await expect(prompt).to_have_text(re.compile(r"\[\d+\]"))  # executed (not queued, not running)


async def accept_kernel_dialog(page) -> None:
    """Lab may still ask which kernel to start while it settles a fresh session: take the preferred one."""
    dialog = page.locator(".jp-Dialog")
    if await dialog.count() and await dialog.filter(has_text="Select Kernel").count():
        await dialog.locator(".jp-mod-accept").click()
        await dialog.wait_for(state="detached")


async def screenshot_all(browser, prefix: str) -> None:
    """Every open page, for a failing test's artifacts."""
    for i, context_page in enumerate(p for c in browser.contexts for p in c.pages):
        with contextlib.suppress(Exception):
            await context_page.screenshot(path=str(ARTIFACTS / f"{prefix}-{i}.png"), full_page=True)
