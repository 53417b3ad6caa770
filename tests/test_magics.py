"""The ``agent`` magics driven through IPython's own shell, launching real jobs against a real server."""

from __future__ import annotations

import asyncio
import secrets
import sys
import time

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell

from nbagents.runtime.engine_session import shared_engine
from nbagents.runtime.job import Job, JobResult, jobs

WAIT = 60.0


@pytest.fixture
def shell(lk_server):
    """IPython's shell with ``%load_ext nbagents``; jobs it launches run against the session's server."""
    shared_engine().use((lk_server.url, lk_server.api_key, lk_server.api_secret))
    ipython = InteractiveShell.instance()
    ipython.colors = "nocolor"
    ok(ipython.run_cell("%load_ext nbagents"))
    yield ipython
    for job in jobs():
        if not job.done:
            job.request_stop("test over")
    ipython.run_cell("%unload_ext nbagents")


def ok(result):
    """The result of a cell that must have run without error."""
    assert result.error_before_exec is None and result.error_in_exec is None, (
        result.error_before_exec or result.error_in_exec
    )
    return result.result


def wait_until(predicate, what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def room_name() -> str:
    return "mg-" + secrets.token_hex(4)


AGENT_CELL = '''\
%%agent --room {room} --timeout 5 --agent-name greeter
import logging
import sys

async def entrypoint(ctx):
    print("a printed line")
    print("a line on stderr", file=sys.stderr)
    async def remember():
        return {{"greeting": GREETING}}

    ctx.add_shutdown_callback(remember)  # before the log line the test waits for: a stop may follow at once
    await ctx.connect()
    logging.getLogger("cell-agent").warning("greeting is %s", GREETING)
    await ctx.room.local_participant.publish_data(GREETING)
'''


def test_syntax_error_launches_nothing_and_says_so(shell, capsys):
    before = len(jobs())
    shell.user_ns.pop("entrypoint", None)
    result = shell.run_cell(f"%%agent --room {room_name()}\nasync def entrypoint(ctx):\n    await ctx.connect(\n")
    assert isinstance(result.error_in_exec, UsageError)
    assert "syntax error on line 3 of the cell; nothing was run or launched" in str(result.error_in_exec)
    assert "SyntaxError" in capsys.readouterr().out  # shown like any cell's syntax error
    assert len(jobs()) == before
    assert "entrypoint" not in shell.user_ns


def test_a_cell_that_raises_or_defines_no_entrypoint_launches_nothing(shell):
    before = len(jobs())
    raised = shell.run_cell(f"%%agent --room {room_name()}\nx = 1 / 0\nasync def entrypoint(ctx): pass\n")
    assert isinstance(raised.error_in_exec, ZeroDivisionError)
    if sys.version_info >= (3, 11):  # exception notes exist from 3.11 on
        assert "so nothing was launched" in "\n".join(raised.error_in_exec.__notes__)
    missing = shell.run_cell(f"%%agent --room {room_name()} --entrypoint my_agent\ny = 2\n")
    assert isinstance(missing.error_in_exec, UsageError)
    assert "does not define 'my_agent'" in str(missing.error_in_exec)
    not_async = shell.run_cell(f"%%agent --room {room_name()}\ndef entrypoint(ctx): pass\n")
    assert "must be an async function" in str(not_async.error_in_exec)
    bad_timeout = shell.run_cell(f"%%agent --room {room_name()} --timeout -1\nasync def entrypoint(ctx): pass\n")
    assert "--timeout must be a positive number" in str(bad_timeout.error_in_exec)
    assert len(jobs()) == before


def test_launch_list_logs_stop_and_wait(shell, capsys):
    room = room_name()
    ok(shell.run_cell('GREETING = "hello from the notebook"'))  # a global from another cell reaches the job
    started = time.perf_counter()
    job = ok(shell.run_cell(AGENT_CELL.format(room=room)))
    launch_returned = time.perf_counter() - started
    assert isinstance(job, Job)
    assert (job.room, job.shutdown_process_timeout) == (room, 5.0)
    assert jobs()[-1] is job
    print(f"%%agent cell returned after {launch_returned * 1000:.0f} ms with the job {job.state}")

    table = ok(shell.run_cell("%agent list"))
    assert job in table and job.id in repr(table) and room in repr(table)

    wait_until(lambda: any(r.logger == "cell-agent" for r in job.logs) or job.done, "the agent's log record")
    capsys.readouterr()
    ok(shell.run_cell(f"%agent logs {job.id[:8]} --level WARNING"))
    shown = capsys.readouterr().out
    assert "cell-agent: greeting is hello from the notebook" in shown
    assert "a line on stderr" in shown and "a printed line" not in shown  # stderr counts as WARNING, print as INFO
    ok(shell.run_cell(f"%agent logs {job.id[:8]} --level INFO"))
    assert "a printed line" in capsys.readouterr().out

    result = ok(shell.run_cell("result = %agent stop --reason 'enough for today'\nresult"))
    assert isinstance(result, JobResult)
    assert (result.state, result.shutdown_reason) == ("succeeded", "enough for today")
    assert result.persisted == {"remember": {"greeting": "hello from the notebook"}}
    assert job.done and job.state == "succeeded"

    again = ok(shell.run_cell(f"%agent wait {job.id}"))
    assert again is result


def test_running_a_cell_again_says_that_the_earlier_job_still_runs_in_the_room(shell, capsys):
    room = room_name()
    cell = f"%%agent --room {room} --timeout 5\nasync def entrypoint(ctx):\n    await ctx.connect()\n"
    first = ok(shell.run_cell(cell))
    assert "earlier job" not in capsys.readouterr().out
    second = ok(shell.run_cell(cell))
    out = capsys.readouterr().out
    assert first.id in out and f"%agent stop {first.id}" in out and repr(room) in out
    second.request_stop("test over")
    first.request_stop("test over")
    wait_until(lambda: first.done and second.done, "both jobs to end")
    ok(shell.run_cell(cell)).request_stop("test over")
    assert "earlier job" not in capsys.readouterr().out  # ended jobs are not mentioned


def test_an_unpicklable_global_is_named_in_one_line_and_nothing_is_launched(shell):
    before = len(jobs())
    ok(shell.run_cell("import threading\nlock = threading.Lock()"))
    result = shell.run_cell(f"%%agent --room {room_name()}\nasync def entrypoint(ctx):\n    with lock:\n        await ctx.connect()\n")
    assert isinstance(result.error_in_exec, UsageError)
    message = str(result.error_in_exec)
    assert "'lock'" in message and "Nothing was launched." in message
    assert len(jobs()) == before


def test_wait_blocks_where_no_event_loop_runs(shell):
    room = room_name()
    cell = f"%%agent --room {room}\nasync def entrypoint(ctx):\n    await ctx.connect()\n    ctx.shutdown(reason='all done')\n"
    job = ok(shell.run_cell(cell))
    result = shell.run_line_magic("agent", "wait")  # called directly: nothing rewrites it into an await
    assert isinstance(result, JobResult) and result is job.result(0)
    assert (result.state, result.shutdown_reason) == ("succeeded", "all done")


async def test_wait_inside_a_running_loop_returns_an_awaitable(shell):
    room = room_name()
    cell = f"%%agent --room {room}\nasync def entrypoint(ctx):\n    await ctx.connect()\n    ctx.shutdown(reason='bye')\n"
    job = ok(shell.run_cell(cell))
    waiting = shell.run_line_magic("agent", f"wait {job.id}")
    assert not isinstance(waiting, JobResult)
    assert "not awaited" in repr(waiting) and job.id in repr(waiting)
    result = await asyncio.wait_for(waiting, WAIT)
    assert (result.state, result.shutdown_reason) == ("succeeded", "bye")


def test_only_top_level_wait_and_stop_lines_are_awaited(shell):
    from nbagents.magics import await_agent_waits

    python = shell.transform_cell("%agent wait\nr = %agent stop AJ_x --reason 'a b'\n%agent list\nif True:\n    %agent wait\n")
    assert python.splitlines() == [
        "await get_ipython().run_line_magic('agent', 'wait')",
        "r = await get_ipython().run_line_magic('agent', \"stop AJ_x --reason 'a b'\")",
        "get_ipython().run_line_magic('agent', 'list')",
        "if True:",
        "    get_ipython().run_line_magic('agent', 'wait')",
    ]
    assert await_agent_waits in shell.input_transformers_post


def test_bad_line_commands_are_explained(shell):
    unknown = shell.run_cell("%agent frobnicate")
    assert "unknown %agent command 'frobnicate'; choose one of list, stop, wait, logs, serve" in str(unknown.error_in_exec)
    no_such = shell.run_cell("%agent stop AJ_does_not_exist")
    assert "no job with id 'AJ_does_not_exist'" in str(no_such.error_in_exec)
    bad_level = shell.run_cell("%agent logs --level LOUD")
    assert "unknown log level 'LOUD'" in str(bad_level.error_in_exec)


def test_unload_removes_magics_and_transformer(shell):
    from nbagents.magics import await_agent_waits

    ok(shell.run_cell("%unload_ext nbagents"))
    assert await_agent_waits not in shell.input_transformers_post
    assert "agent" not in shell.magics_manager.magics["line"]
    ok(shell.run_cell("%load_ext nbagents"))
    assert "agent" in shell.magics_manager.magics["cell"]


def test_a_line_from_the_engine_thread_between_cells_shows_in_the_next_cell(shell, capsys):
    """The engine line comes from a background thread when the engine is up; between cells a kernel would attach it
    to a finished cell, which headless runs never record, so it is held for the next cell."""
    import threading

    from nbagents.runtime import engine_session

    ok(shell.run_cell("x = 1"))  # that cell has finished: no cell runs now
    capsys.readouterr()
    thread = threading.Thread(target=engine_session.print_line, args=("nbagents engine: held line", sys.stdout))
    thread.start()
    thread.join()
    assert "held line" not in capsys.readouterr().out
    ok(shell.run_cell("print('the next cell')"))
    assert capsys.readouterr().out.splitlines() == ["nbagents engine: held line", "the next cell"]

    ok(shell.run_cell("%unload_ext nbagents"))  # without the extension, lines are printed at once again
    engine_session.print_line("nbagents engine: at once", sys.stdout)
    assert capsys.readouterr().out == "nbagents engine: at once\n"
    ok(shell.run_cell("%load_ext nbagents"))


def test_quickstart_notebook_runs_in_a_real_kernel(tmp_path):
    """The documentation's example with %%agent, a simulated participant and %agent wait, executed headless."""
    import ast
    import os
    from pathlib import Path

    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(Path(__file__).parent / "notebooks" / "quickstart.ipynb", as_version=4)
    client = NotebookClient(
        notebook, timeout=240, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    # the kernel starts its own default engine, as in a user's notebook
    env = {k: v for k, v in os.environ.items() if k not in ("LIVEKIT_URL", "NBAGENTS_ENGINE")}
    client.execute(env=env)

    def text(cell) -> str:  # stdout and values, without the engine line nbagents prints once
        parts = []
        for output in cell.outputs:
            if output.get("name") != "stderr" and not output.get("text", "").startswith("nbagents engine:"):
                parts.append(output.get("text", "") or output.get("data", {}).get("text/plain", ""))
        return "".join(parts)

    every_output = "".join(o.get("text", "") for cell in notebook.cells for o in cell.get("outputs", []))
    assert "nbagents engine: embedded at ws://127.0.0.1:" in every_output

    def result_text(cell) -> str:  # the cell's value only: %agent wait also displays the final state
        return "".join(o["data"]["text/plain"] for o in cell.outputs if o.output_type == "execute_result")

    launch, join, wait, persisted, listing = (notebook.cells[i] for i in (2, 3, 4, 5, 6))
    job_repr = text(launch)  # the inspector's text fallback: the final state once the job ended
    assert job_repr.startswith("nbagents job ") and "in room 'quickstart': succeeded" in job_repr
    job_id = job_repr.split()[2]
    assert "said 'hello world'" in text(join) and text(join).startswith("agent-")
    assert ast.literal_eval(result_text(wait)) == ("succeeded", "said hello")
    state = ast.literal_eval(text(persisted))["save_state"]
    assert state["language"] == "fr" and state["audio_frames"] > 0
    assert job_id in text(listing) and "succeeded" in text(listing)
    assert (tmp_path / ".nbagents" / "jobs" / job_id / "result.json").exists()


def test_an_unshippable_global_is_named_and_nothing_is_launched(shell):
    before = len(jobs())
    cell = (
        f"%%agent --room {room_name()}\nimport threading\nGUARD = threading.Lock()\n\n"
        "async def entrypoint(ctx):\n    with GUARD:\n        await ctx.connect()\n"
    )
    result = shell.run_cell(cell)
    assert result.error_in_exec is not None
    assert "GUARD" in str(result.error_in_exec)
    assert len(jobs()) == before


def test_a_job_traceback_names_the_notebook_cells_and_quotes_their_lines(shell, capsys):
    """As IPython shows a cell's error: ``Cell In[N], line L`` and the line, in the result, the errors and the logs."""
    helper_cell = ok_count(shell, "def check_language(language):\n    assert language == 'fr', f'unexpected language {language!r}'\n")
    agent_cell = ok_count(
        shell,
        f"%%agent --room {room_name()} --timeout 5\n"
        "async def entrypoint(ctx):\n"
        "    await ctx.connect()\n"
        "    check_language('en')\n",
    )
    job = jobs()[-1]
    result = job.result(WAIT)
    assert result.state == "failed"
    for text in (result.error, job.errors[0].traceback):
        assert f"Cell In[{agent_cell}], line 4, in entrypoint" in text, text
        assert "    check_language('en')" in text
        assert f"Cell In[{helper_cell}], line 2, in check_language" in text
        assert "assert language == 'fr', f'unexpected language {language!r}'" in text
        assert "AssertionError: unexpected language 'en'" in text
        assert "<dynamic-code>" not in text
    capsys.readouterr()
    ok(shell.run_cell(f"%agent logs {job.id}"))
    logs = capsys.readouterr().out
    assert f"Cell In[{agent_cell}], line 4, in entrypoint" in logs and "    check_language('en')" in logs


def ok_count(shell, source: str) -> int:
    """Run a plain cell that must succeed; its execution count (the N of ``In[N]``)."""
    count = shell.execution_count
    ok(shell.run_cell(source, store_history=True))  # as a kernel runs cells: In[N] counts up
    return count


PASTED_EXAMPLE = '''\
%%agent --room {room} --metadata '{{"customer": "ann"}}'
from livekit.agents import AgentServer, JobContext, JobProcess, cli

server = AgentServer(shutdown_process_timeout=12.0)


def prewarm(proc: JobProcess):
    proc.userdata["greeting"] = "hello"


server.setup_fnc = prewarm


@server.rtc_session(agent_name="paster")
async def my_agent(ctx: JobContext):
    async def seen():
        return {{"agent_name": ctx.job.agent_name, "metadata": ctx.job.metadata,
                "greeting": ctx.proc.userdata["greeting"], "room": ctx.room.name}}

    ctx.add_shutdown_callback(seen)
    await ctx.connect()
    ctx.shutdown(reason="pasted and run")


if __name__ == "__main__":
    cli.run_app(server)
'''


def test_a_pasted_livekit_agents_example_launches_its_registered_function(shell):
    """A whole example file: AgentServer, @server.rtc_session(...) and the `cli.run_app(server)` tail."""
    room = room_name()
    job = ok(shell.run_cell(PASTED_EXAMPLE.format(room=room)))
    assert isinstance(job, Job) and job.shutdown_process_timeout == 12.0  # the server's own option
    result = job.result(WAIT)
    assert (result.state, result.shutdown_reason) == ("succeeded", "pasted and run"), result.error
    assert result.persisted == {"seen": {"agent_name": "paster", "metadata": '{"customer": "ann"}',
                                         "greeting": "hello", "room": room}}
    assert shell.user_ns["my_agent"].__name__ == "my_agent"


def test_cli_run_app_in_a_plain_cell_says_what_to_do_instead(shell, capsys):
    before = len(jobs())
    ok(shell.run_cell("from livekit.agents import AgentServer, cli\nserver = AgentServer()\n"
                      "@server.rtc_session()\nasync def helper_agent(ctx): pass\n"))
    ok(shell.run_cell('if __name__ == "__main__":\n    cli.run_app(server)\n'))  # no SystemExit: 2
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and "run this cell with %%agent to launch `helper_agent`" in out[0]
    assert len(jobs()) == before


def test_entrypoint_option_still_picks_a_plain_function_beside_a_server(shell):
    room = room_name()
    cell = (
        f"%%agent --room {room} --entrypoint plain --agent-name named\n"
        "from livekit.agents import AgentServer\nserver = AgentServer()\n\n"
        "@server.rtc_session(agent_name='other')\nasync def registered(ctx):\n    ctx.shutdown(reason='wrong one')\n\n"
        "async def plain(ctx):\n    async def name():\n        return ctx.job.agent_name\n"
        "    ctx.add_shutdown_callback(name)\n    ctx.shutdown(reason='plain one')\n"
    )
    result = ok(shell.run_cell(cell)).result(WAIT)
    assert (result.shutdown_reason, result.persisted) == ("plain one", {"name": "named"})


def _readme_cells() -> list[str]:
    """The README's ``%%agent`` examples, in order."""
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    return [block for block in re.findall(r"```python\n(.*?)```", text, re.S) if block.startswith("%%agent")]


@pytest.mark.timeout(400)  # two AgentSession jobs, one after the other, on a loaded machine
def test_the_readme_agent_session_quickstart_and_pasted_example_run(shell, lk_server):
    from livekit import api, rtc

    cells = _readme_cells()
    quickstart = next(c for c in cells if "AgentSession()" in c and "def entrypoint" in c)
    pasted = next(c for c in cells if "cli.run_app(server)" in c)
    room = room_name()
    job = ok(shell.run_cell(quickstart.replace("--room quickstart", f"--room {room}", 1)))
    wait_until(lambda: job.transcript or job.done, "the agent's greeting")
    result = ok(shell.run_cell("result = %agent stop\nresult"))
    assert result.state == "succeeded", result.error
    assert [(t["role"], t["text"]) for t in result.transcript] == [("assistant", "Hello from a notebook job!")]
    assert job.sessions[1].primary and job.sessions[1].agent == "Agent"

    support = room_name()
    job = ok(shell.run_cell(pasted.replace("--room support", f"--room {support}", 1)))

    async def agent_attributes() -> dict:
        token = api.AccessToken(lk_server.api_key, lk_server.api_secret).with_identity("visitor").with_grants(
            api.VideoGrants(room_join=True, room=support)).to_jwt()
        visitor = rtc.Room()
        await visitor.connect(lk_server.url, token)
        try:
            for _ in range(3000):
                agent = visitor.remote_participants.get(f"agent-{job.id}")
                if agent is not None and "lk.agent.state" in agent.attributes:
                    return dict(agent.attributes)
                await asyncio.sleep(0.02)
            raise AssertionError("the pasted example's agent never joined")
        finally:
            await visitor.disconnect()

    attributes = asyncio.run(agent_attributes())
    assert attributes["lk.agent.name"] == "support" and attributes["lk.agent.state"] == "listening"
    assert ok(shell.run_cell("%agent stop")).state == "succeeded"
