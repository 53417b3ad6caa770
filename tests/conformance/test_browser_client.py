"""livekit-client in Chromium: it joins at /rtc/v1 (no fall back to /rtc), hears and is heard, sends and receives data.

The page loads livekit-client's UMD bundle (``scripts/install-livekit-client`` fetches the pinned version from
npm once per machine) and joins with Chromium's fake microphone; a Python participant in the same room
publishes a tone and sends data.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from aiohttp import web

from .helpers import TIMEOUT, make_token, unique_room, wait_until

pytestmark = pytest.mark.browser
async_playwright = pytest.importorskip("playwright.async_api").async_playwright

REPO = Path(__file__).resolve().parents[2]
PAGE = """<!doctype html><html><head><link rel="icon" href="data:,"></head><body>
<script src="/livekit-client.umd.js"></script><script>
window.seen = {events: [], data: [], error: null};
LivekitClient.setLogLevel('debug');
async function join(url, token) {
  const room = new LivekitClient.Room();
  room.on(LivekitClient.RoomEvent.TrackSubscribed,
          (track, pub, participant) => window.seen.events.push(`subscribed ${participant.identity} ${track.kind}`));
  room.on(LivekitClient.RoomEvent.DataReceived,
          (payload, participant) => window.seen.data.push(new TextDecoder().decode(payload)));
  try {
    await room.connect(url, token);
    window.seen.events.push('connected');
    await room.localParticipant.setMicrophoneEnabled(true);
    window.seen.events.push('microphone');
  } catch (e) { window.seen.error = String(e); }
  window.room = room;
}
async function sendData(text) {
  await window.room.localParticipant.publishData(new TextEncoder().encode(text), {reliable: true});
}
</script></body></html>"""


@pytest.fixture(scope="module")
def livekit_client_bundle() -> Path:
    install = REPO / "scripts" / "install-livekit-client"
    cached = Path(subprocess.run([install, "--path"], capture_output=True, text=True, check=True).stdout.strip())
    if not cached.is_file() and shutil.which("npm") is None:
        pytest.skip("livekit-client is not cached and npm, which fetches it, is missing (scripts/install-livekit-client)")
    done = subprocess.run([install], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"scripts/install-livekit-client failed: {done.stderr}"
    return Path(done.stdout.strip())


@pytest.fixture
async def page_server(livekit_client_bundle):
    app = web.Application()
    app.router.add_get("/", lambda request: web.Response(text=PAGE, content_type="text/html"))
    app.router.add_get("/livekit-client.umd.js", lambda request: web.FileResponse(livekit_client_bundle))
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/"
    finally:
        await runner.cleanup()


async def test_browser_joins_at_rtc_v1_hears_is_heard_and_exchanges_data(lk_server, participants, page_server):
    room = unique_room("browser")
    python = await participants(room, "python")
    await python.publish_tone(440)
    sockets: list[str] = []
    console: list[str] = []
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path="/usr/bin/chromium", args=[
            "--no-sandbox", "--disable-dev-shm-usage", "--use-fake-device-for-media-stream",
            "--use-fake-ui-for-media-stream"])
        try:
            page = await browser.new_page()
            page.on("websocket", lambda ws: sockets.append(ws.url))
            page.on("console", lambda message: console.append(f"{message.type}: {message.text}"))
            await page.goto(page_server)
            await page.evaluate(f"join({json.dumps(lk_server.url)}, "
                                f"{json.dumps(make_token(lk_server, 'browser', room))})")
            seen = await page.evaluate("window.seen")
            assert seen["error"] is None, f"the browser could not join: {seen['error']}"
            assert "connected" in seen["events"] and "microphone" in seen["events"]

            async def browser_hears_python() -> bool:
                return "subscribed python audio" in (await page.evaluate("window.seen"))["events"]

            await wait_until(browser_hears_python, "the browser subscribes to the Python participant's tone")
            await python.wait_for_track("browser")
            # Sent only once the Python participant knows the browser: a packet from a participant it has not
            # been told of yet has no sender (livekit-server sends the two on different paths).
            await page.evaluate("sendData('from the browser')")
            (packet,) = await python.events.wait("data_received", lambda p: p.data == b"from the browser")
            assert packet.participant.identity == "browser"
            await python.send_data(b"to the browser")

            async def browser_got_data() -> bool:
                return "to the browser" in (await page.evaluate("window.seen"))["data"]

            await wait_until(browser_got_data, "the browser receives the Python participant's data")
        finally:
            await asyncio.wait_for(browser.close(), TIMEOUT)
    signal_sockets = [url for url in sockets if "/rtc" in url]
    assert signal_sockets and all("/rtc/v1?" in url for url in signal_sockets), signal_sockets
    fallbacks = [line for line in console if "Retrying" in line or "falling back" in line.lower()]
    assert not fallbacks, fallbacks
