"""A busy notebook kernel never stalls a job: the job's event loop runs on while the kernel reads nothing.

A cell that holds the GIL in native code stops every thread of the kernel, the readers of the jobs' channels
too. A job that sends events meanwhile (a chatty one fills its socket's buffer within milliseconds) used to
wait in that send, its event loop with it: its audio, its timers and, after a stop request, the watchdog that
kills a job whose loop stays blocked (seen under load: jobs ending with their rooms were killed). Its messages
now wait in the job's outbox and reach the kernel afterwards, all of them and in order.
"""

from __future__ import annotations

import asyncio
import ctypes
import re
import time

from nbagents import JobContext, launch
from nbagents.runtime import events as ev

from waiting import WAIT, wait_until

from .conftest import wait_connected

KERNEL_BUSY_SECONDS = 3


async def chatter(ctx: JobContext) -> None:
    """Logs a 2 KB line every 2 ms (about 1 MB/s) and notes when its event loop runs (every 10 ms)."""
    import logging

    log = logging.getLogger("chatter")
    loop_ran_at: list[float] = []

    async def note_the_loop() -> None:
        while True:
            loop_ran_at.append(time.time())
            await asyncio.sleep(0.01)

    async def talk() -> None:
        number = 0
        while True:
            log.warning("line %d %s", number, "x" * 2000)
            number += 1
            await asyncio.sleep(0.002)

    def when_the_loop_ran() -> list[float]:
        return loop_ran_at

    background = [asyncio.ensure_future(note_the_loop()), asyncio.ensure_future(talk())]
    ctx.add_shutdown_callback(when_the_loop_ran)
    await ctx.connect()
    await asyncio.gather(*background)


async def test_a_kernel_holding_the_gil_does_not_stall_the_job_or_lose_its_events(server, room_name) -> None:
    job = launch(chatter, room=room_name)
    received: list[int] = []

    def on_event(_job, event) -> None:
        if isinstance(event, ev.LogRecord) and event.logger == "chatter":
            received.append(int(re.match(r"line (\d+)", event.message).group(1)))

    job.subscribe(on_event)
    await wait_connected(job)
    await wait_until(lambda: len(received) > 50, what="the job's first lines")
    busy_from = time.time()
    ctypes.PyDLL(None).sleep(KERNEL_BUSY_SECONDS)  # libc's sleep() through PyDLL keeps this process's GIL held
    busy_to = time.time()
    lines_before_the_end = max(received)
    await wait_until(lambda: max(received) > lines_before_the_end + 100, what="the job's lines after the busy time")
    result = await asyncio.wait_for(job.stop(reason="test over"), WAIT)

    assert result.state == "succeeded", result
    loop_ran_at = result.persisted["when_the_loop_ran"]
    # the job's loop ran all through the middle of the kernel's busy time (it would wait in a full socket)
    middle = [t for t in loop_ran_at if busy_from + 1 <= t <= busy_to - 1]
    assert len(middle) >= 10, (busy_from, busy_to, [t for t in loop_ran_at if busy_from - 1 <= t <= busy_to + 1])
    # every line the job logged reached the kernel, in order: none lost while the kernel read nothing
    assert received == list(range(received[0], received[0] + len(received)))
    assert received[0] == 0


def test_an_outbox_past_its_limit_drops_whole_messages_keeps_the_kept_ones_and_says_how_many() -> None:
    import socket
    import threading

    from nbagents.runtime import ipc

    job_end, kernel_end = socket.socketpair()
    dropped: list[int] = []  # the counts the outbox reported
    said = threading.Event()
    outbox = ipc.Outbox(ipc.Channel(job_end), limit=64 * 1024, on_dropped=lambda n: (dropped.append(n), said.set()))
    payload = "y" * 1000
    for number in range(2000):  # about 2 MB, while the kernel end reads nothing (a send that waited would hang here)
        assert outbox.send(ev.LogRecord(level="INFO", logger="t", message=f"{number} {payload}"))
    assert outbox.send(ipc.JobFinished(state="succeeded", shutdown_reason="", error=None, persisted={}), keep=True)
    reader = ipc.Channel(kernel_end)
    numbers = []
    while True:
        message = reader.recv()
        if isinstance(message, ipc.JobFinished):
            break
        numbers.append(int(message.message.split()[0]))
    assert outbox.flush(WAIT)
    assert said.wait(WAIT)
    # what arrived is whole and in order, from the first message on; the rest was dropped and counted
    assert numbers[0] == 0 and numbers == sorted(set(numbers)), numbers
    assert 0 < len(numbers) < 2000
    assert sum(dropped) == 2000 - len(numbers)
