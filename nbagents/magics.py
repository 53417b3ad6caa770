"""``%%agent`` and ``%agent``: launch, list, stop, wait for and read the logs of jobs from notebook cells,
and serve the notebook as an agent worker (``%agent serve``).

Registered by ``%load_ext nbagents``. The runtime is imported on first use, so loading the extension
costs nothing.

Waiting in a notebook: ipykernel runs every cell inside its asyncio loop, so a magic must not block that
loop (the loop delivers job events to widgets and drives simulated participants). The extension therefore
rewrites a ``%agent wait`` / ``%agent stop`` that stands on its own top-level line (optionally assigned,
``result = %agent wait``) into an awaited call: the cell then waits in the foreground while the loop keeps
running, and the :class:`JobResult` becomes the cell's output. Where no loop is running (a plain Python
shell) the magic simply blocks. ``result = await job`` works everywhere a top-level ``await`` does.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import re
import shlex
import time
from collections.abc import Generator
from typing import TYPE_CHECKING, Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class

if TYPE_CHECKING:
    from nbagents.runtime.job import Job, JobResult

LINE_COMMANDS = ("list", "stop", "wait", "logs", "serve")

_USAGE = """\
%%agent [--room ROOM] [--entrypoint NAME] [--timeout SECONDS] [--prewarm NAME] [--agent-name N] [--metadata TEXT]
    run the cell in the notebook's namespace, then launch the entrypoint it defines (or the function it
    registers with @server.rtc_session() on an AgentServer) as a job
%agent list                     every job of this kernel with its state
%agent stop [ID] [--reason R]   shut a job down (default: the latest) and wait for its result
%agent wait [ID]                wait for a job (default: the latest) to end; shows its result
%agent logs [ID] [--tail N] [--level LEVEL]
                                the job's log records (default: the latest job)
%agent serve [--agent-name N] [--entrypoint NAME] [--timeout SECONDS] [--prewarm NAME]
                                register the notebook with the server as an agent worker: every job
                                dispatched to it runs the entrypoint in its own process, like %%agent
%agent serve stop [--wait]      stop taking jobs; stop running ones with their hooks (--wait: let them end)
%agent serve status             the worker and the jobs dispatched to it"""


class _Parser(argparse.ArgumentParser):
    """argparse that reports bad magic arguments as a UsageError instead of exiting the kernel."""

    def error(self, message: str) -> Any:
        raise UsageError(f"{self.prog}: {message}\n\n{_USAGE}")

    def exit(self, status: int = 0, message: str | None = None) -> Any:
        raise UsageError(message or _USAGE)


def _cell_parser() -> _Parser:
    p = _Parser(prog="%%agent", add_help=False)
    p.add_argument("--room", help="room to run the job in (default: demo)")
    p.add_argument("--entrypoint", default=None, help="name of the entrypoint function the cell defines "
                   "(default: the function registered with @server.rtc_session(), else `entrypoint`)")
    p.add_argument("--timeout", type=float, help="shutdown_process_timeout in seconds")
    p.add_argument("--prewarm", help="name of a prewarm function (runs in the job process before the entrypoint)")
    p.add_argument("--agent-name", default=None, help="the job's agent_name (ctx.job.agent_name, the agent's lk.agent.name "
                   "attribute) and the worker's in an exported script; a launched job runs in --room directly")
    p.add_argument("--metadata", default="", help="the job's metadata (ctx.job.metadata), as a dispatch would give it")
    return p


def _line_parser(command: str) -> _Parser:
    p = _Parser(prog=f"%agent {command}", add_help=False)
    if command in ("stop", "wait", "logs"):
        p.add_argument("id", nargs="?", help="job id or a unique prefix of it (default: the latest job)")
    if command == "stop":
        p.add_argument("--reason", default="stopped with %agent stop")
    if command == "serve":
        p.add_argument("action", nargs="?", choices=("start", "stop", "status"), default="start")
        p.add_argument("--agent-name", default="", help="only explicit dispatches for this name reach the notebook")
        p.add_argument("--entrypoint", default="entrypoint", help="name of the entrypoint function to run")
        p.add_argument("--timeout", type=float, help="shutdown_process_timeout in seconds")
        p.add_argument("--prewarm", help="name of a prewarm function")
        p.add_argument("--wait", action="store_true", help="(stop) let running jobs end on their own")
    if command == "logs":
        p.add_argument("--tail", type=int, default=None, help="only the last N records")
        p.add_argument("--level", default=None, help="only records at this level or above (DEBUG, INFO, ...)")
    return p


@magics_class
class AgentMagics(Magics):
    """The ``agent`` line and cell magic."""

    @line_cell_magic
    def agent(self, line: str, cell: str | None = None) -> Any:
        """Launch a job from a cell (``%%agent``) or manage jobs (``%agent list|stop|wait|logs``)."""
        __tracebackhide__ = True  # the user's error is in their cell, not here
        if cell is not None:
            return self._launch_cell(line, cell)
        words = shlex.split(line)
        if not words or words[0] in ("help", "-h", "--help"):
            print(_USAGE)
            return None
        command, rest = words[0], words[1:]
        if command not in LINE_COMMANDS:
            raise UsageError(f"unknown %agent command {command!r}; choose one of {', '.join(LINE_COMMANDS)}\n\n{_USAGE}")
        args = _line_parser(command).parse_args(rest)
        return getattr(self, f"_{command}")(args)

    # -- %%agent -----------------------------------------------------------------------------------------

    def _launch_cell(self, line: str, cell: str) -> Job:
        __tracebackhide__ = True
        args = _cell_parser().parse_args(shlex.split(line))
        if args.timeout is not None and args.timeout <= 0:
            raise UsageError(f"%%agent: --timeout must be a positive number of seconds (got {args.timeout:g})")
        shell = self.shell
        assert shell is not None
        namespace = shell.user_ns
        name = args.entrypoint or "entrypoint"
        before = namespace.get(name, _MISSING)
        servers_before = _registrations(namespace)
        from nbagents import _cli_guard

        with _cli_guard.capturing() as run_app_calls:
            self._run_cell_source(cell)  # a syntax error or an exception raised here launches nothing
        defined = namespace.get(name, _MISSING)
        if defined is before:
            defined = _MISSING
        registration = _chosen_registration(args, defined, run_app_calls, servers_before, namespace)
        if registration is not None and args.entrypoint is None:
            entrypoint = registration["entrypoint"]
            name = getattr(entrypoint, "__name__", name)
        elif defined is _MISSING:
            raise UsageError(
                f"%%agent: the cell does not define {name!r}, so nothing was launched. Define "
                f"`async def {name}(ctx: JobContext): ...` in this cell, register one with `@server.rtc_session()` "
                "on an AgentServer, or name the function the cell defines with --entrypoint NAME."
            )
        else:
            entrypoint = defined
        if not inspect.iscoroutinefunction(entrypoint):
            raise UsageError(
                f"%%agent: {name!r} must be an async function (`async def {name}(ctx): ...`); "
                f"it is {'a plain function (def, not async def)' if inspect.isfunction(entrypoint) else 'a ' + type(entrypoint).__name__}. "
                "Nothing was launched."
            )
        registration = registration or {}
        prewarm = registration.get("prewarm")
        if args.prewarm is not None:
            prewarm = namespace.get(args.prewarm)
            if not callable(prewarm):
                raise UsageError(f"%%agent: --prewarm {args.prewarm!r} names no function in the notebook; nothing was launched")

        from nbagents import launch

        options: dict[str, Any] = {"prewarm": prewarm, "metadata": args.metadata,
                                   "on_session_end": registration.get("on_session_end")}
        agent_name = args.agent_name if args.agent_name is not None else registration.get("agent_name")
        if agent_name:
            options["agent_name"] = agent_name
        if args.room is not None:
            options["room"] = args.room
        timeout = args.timeout if args.timeout is not None else registration.get("shutdown_process_timeout")
        if timeout is not None:
            options["shutdown_process_timeout"] = timeout
        from nbagents.runtime.shipping import ShippingError

        try:
            job = launch(entrypoint, **options)
        except ShippingError as exc:  # the message names the culprit and what to do; the traceback is nbagents'
            raise UsageError(f"%%agent: {exc} Nothing was launched.") from None
        _note_other_jobs_in_the_room(job)
        return job

    def _run_cell_source(self, cell: str) -> None:
        """Run the cell's code in the notebook's namespace, with IPython's syntax (magics, ``!``) and tracebacks."""
        __tracebackhide__ = True
        shell = self.shell
        assert shell is not None
        # one empty line stands for the %%agent line, so line numbers are those the notebook shows
        code = "\n" + shell.transform_cell(cell)
        # register the source with linecache so tracebacks and inspect.getsource can show the cell's lines
        # the number of the running cell (In[N]), as the Out[N] prompt counts it on every IPython version
        number = getattr(shell.displayhook, "prompt_count", shell.execution_count)
        filename = shell.compile.cache(code, number, raw_code=cell)
        try:
            compiled = compile(code, filename, "exec", dont_inherit=True)
        except SyntaxError as exc:
            shell.showsyntaxerror(filename)  # shown like any cell's syntax error, without nbagents' frames
            raise UsageError(f"%%agent: syntax error on line {exc.lineno} of the cell; nothing was run or launched") from None
        try:
            exec(compiled, shell.user_ns)
        except Exception as exc:
            _add_note(exc, "nbagents: the %%agent cell raised before launching, so nothing was launched")
            raise

    # -- %agent list / stop / wait / logs ---------------------------------------------------------------------

    def _list(self, args: argparse.Namespace) -> JobTable:
        return JobTable(_all_jobs())

    def _stop(self, args: argparse.Namespace) -> JobResult | _Waiting:
        job = _find_job(args.id)
        job.request_stop(args.reason)
        return _wait_for(job, "stop")

    def _wait(self, args: argparse.Namespace) -> JobResult | _Waiting:
        return _wait_for(_find_job(args.id), "wait")

    def _serve(self, args: argparse.Namespace) -> Any:
        from nbagents.runtime import serve as serving

        if args.action == "status":
            server = serving.current_server()
            return server if server is not None else "not serving: start with %agent serve"
        if args.action == "stop":
            server = serving.current_server()
            if server is None:
                raise UsageError("%agent serve stop: this notebook is not serving as an agent worker")
            return _Pending(server.drain(wait=args.wait), "serve stop")
        shell = self.shell
        assert shell is not None
        entrypoint = shell.user_ns.get(args.entrypoint)
        if entrypoint is None or not inspect.iscoroutinefunction(entrypoint):
            raise UsageError(
                f"%agent serve: no async function {args.entrypoint!r} in the notebook; define "
                f"`async def {args.entrypoint}(ctx: JobContext): ...` first, or name yours with --entrypoint NAME"
            )
        prewarm = shell.user_ns.get(args.prewarm) if args.prewarm else None
        if args.prewarm and not callable(prewarm):
            raise UsageError(f"%agent serve: --prewarm {args.prewarm!r} names no function in the notebook")
        if args.timeout is not None and args.timeout <= 0:
            raise UsageError(f"%agent serve: --timeout must be a positive number of seconds (got {args.timeout:g})")
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            raise UsageError("%agent serve needs the running event loop of a Jupyter kernel (the worker lives on "
                             "it between cells); from plain Python use `await nbagents.runtime.serve.serve(...)`") from None
        options: dict[str, Any] = {"agent_name": args.agent_name, "prewarm": prewarm}
        if args.timeout is not None:
            options["shutdown_process_timeout"] = args.timeout
        return _Pending(serving.serve(entrypoint, **options), "serve")

    def _logs(self, args: argparse.Namespace) -> None:
        threshold = _level_number(args.level) if args.level else None
        job = _find_job(args.id)
        records = sorted([*job.logs, *_errors_not_logged(job)], key=lambda record: record.time)
        if threshold is not None:
            records = [r for r in records if r.severity >= threshold]  # printed lines count as INFO, stderr as WARNING
        if args.tail is not None:
            records = records[-args.tail :] if args.tail > 0 else []
        if not records:
            when = "" if job.done else " yet"
            print(f"job {job.id}: no log records{when} (state {job.state}; files in {job.log_dir})")
            return
        for record in records:
            print(format_log_record(record))


class JobTable(list):
    """What ``%agent list`` returns: the kernel's jobs, shown as a text table (views may add richer reprs)."""

    def __repr__(self) -> str:
        if not self:
            return "no jobs yet: launch one with a %%agent cell or nbagents.launch(entrypoint, room=...)"
        rows = [("ID", "ROOM", "STATE", "ELAPSED", "PID")]
        for job in self:
            state = f"{job.state} (unresponsive)" if job.unresponsive and not job.done else job.state
            rows.append((job.id, job.room, state, f"{job.elapsed:.1f} s", str(job.pid or "-")))
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self))


class _Waiting:
    """An unfinished wait for a job, returned where the magic could not wait itself (an event loop is running).

    ``await`` it for the :class:`JobResult`. A ``%agent wait`` on its own top-level cell line is awaited
    automatically.
    """

    def __init__(self, job: Job, command: str) -> None:
        self.job = job
        self.command = command

    def __await__(self) -> Generator[Any, None, JobResult]:
        return _wait_and_show(self.job).__await__()

    def __repr__(self) -> str:
        return (
            f"<%agent {self.command} for job {self.job.id} (state {self.job.state}) not awaited: put "
            f"`%agent {self.command}` on its own line in the cell, or write `result = await job`>"
        )

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self))


class _Pending:
    """A step that needs the event loop (registering, draining); a top-level ``%agent serve ...`` line awaits it."""

    def __init__(self, coro: Any, command: str) -> None:
        self._coro = coro
        self.command = command

    def __await__(self) -> Generator[Any, None, Any]:
        return self._coro.__await__()

    def __repr__(self) -> str:
        return f"<%agent {self.command} not awaited: put `%agent {self.command}` on its own line in the cell>"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self))


def _wait_for(job: Job, command: str) -> JobResult | _Waiting:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        result = job.result()  # no event loop runs in this thread: blocking starves nothing
        _show_final(job)
        return result
    return _Waiting(job, command)


async def _wait_and_show(job: Job) -> JobResult:
    result = await job.wait()
    _show_final(job)
    return result


def _show_final(job: Job) -> None:
    """Write the final state and plot into the running cell: headless runs keep only foreground output."""
    from nbagents.ui import show_final

    show_final(job)


# -- the input transformer that makes `%agent wait` wait in the foreground --------------------------------------

_AWAITABLE_LINE = re.compile(
    r"""^(?P<assign>[A-Za-z_]\w*\s*=\s*)?(?P<call>get_ipython\(\)\.run_line_magic\('agent',\s*(?P<q>['"])\s*(?:wait|stop|serve\b(?!\s+status))\b.*\))\s*$"""
)


def await_agent_waits(lines: list[str]) -> list[str]:
    """Turn top-level ``%agent wait|stop|serve`` lines (already turned into Python by IPython) into awaited calls."""
    out = []
    for line in lines:
        body = line.rstrip("\n")
        match = _AWAITABLE_LINE.match(body)
        if match:
            line = f"{match.group('assign') or ''}await {match.group('call')}" + line[len(body) :]
        out.append(line)
    return out


# -- helpers ----------------------------------------------------------------------------------------------------

_MISSING = object()


def _registrations(namespace: dict[str, Any]) -> dict[int, Any]:
    """id(server) -> registered entrypoint, for every AgentServer / WorkerOptions in the namespace."""
    import sys

    if "livekit.agents" not in sys.modules:  # nothing can be registered without it
        return {}
    from nbagents.runtime._agents import registered_session

    found = {}
    for value in list(namespace.values()):
        try:
            registration = registered_session(value)
        except Exception:
            continue
        if registration is not None:
            found[id(value)] = registration["entrypoint"]
    return found


def _chosen_registration(args: argparse.Namespace, defined: Any, run_app_calls: list[Any], before: dict[int, Any],
                         namespace: dict[str, Any]) -> dict[str, Any] | None:
    """The AgentServer registration this %%agent cell launches, if any.

    In order: what the cell passed to ``cli.run_app(...)``; else a server whose registration this cell made.
    With ``--entrypoint NAME`` (or a cell defining ``entrypoint``), a registration is used only for its
    options, and only if it registered that very function.
    """
    import sys

    if "livekit.agents" not in sys.modules:
        return None
    from nbagents.runtime._agents import registered_session

    candidates = [registered_session(server) for server in reversed(run_app_calls)]
    for value in list(namespace.values()):
        try:
            registration = registered_session(value)
        except Exception:
            continue
        if registration is not None and before.get(id(value)) is not registration["entrypoint"]:
            candidates.append(registration)
    candidates = [c for c in candidates if c is not None]
    if args.entrypoint is not None:
        chosen = namespace.get(args.entrypoint, _MISSING)
        return next((c for c in candidates if c["entrypoint"] is chosen), None)
    if defined is not _MISSING and not any(c["entrypoint"] is defined for c in candidates) and not run_app_calls:
        return None  # the cell defines `entrypoint` and runs no server: the plain function
    return candidates[0] if candidates else None


def _all_jobs() -> list[Job]:
    from nbagents.runtime.job import jobs

    return jobs()


def _find_job(job_id: str | None) -> Job:
    jobs = _all_jobs()
    if not jobs:
        raise UsageError("no jobs yet: launch one with a %%agent cell or nbagents.launch(entrypoint, room=...)")
    if job_id is None:
        return jobs[-1]
    exact = [job for job in jobs if job.id == job_id]
    matches = exact or [job for job in jobs if job.id.startswith(job_id)]
    if len(matches) == 1:
        return matches[0]
    known = ", ".join(job.id for job in jobs)
    if not matches:
        raise UsageError(f"no job with id {job_id!r}; this kernel's jobs are: {known}")
    raise UsageError(f"job id {job_id!r} is ambiguous; it starts {len(matches)} ids: {known}")


def _level_number(level: str) -> int:
    import logging

    number = logging.getLevelName(level.upper())
    if not isinstance(number, int):
        raise UsageError(f"unknown log level {level!r}; use DEBUG, INFO, WARNING, ERROR or CRITICAL")
    return number


def format_log_record(record: Any) -> str:
    stamp = time.strftime("%H:%M:%S", time.localtime(record.time)) + f".{int(record.time % 1 * 1000):03d}"
    return f"{stamp} {record.level:<8} {record.logger}: {record.message}"


def _errors_not_logged(job: Job) -> list[Any]:
    """The job's errors (with their tracebacks) as ERROR records, unless a log record already holds them."""
    from nbagents.runtime.events import LogRecord

    logged = [record.message for record in job.logs]
    return [
        LogRecord(level="ERROR", logger=error.where, message=f"{error.message}\n{error.traceback}".rstrip(), time=error.time)
        for error in job.errors
        if not (error.traceback and any(error.traceback.strip() in message for message in logged))
    ]


def _add_note(exc: BaseException, note: str) -> None:
    if hasattr(exc, "add_note"):
        exc.add_note(note)


def load_ipython_extension(ipython: Any) -> None:
    """Same as ``%load_ext nbagents`` (kept here so ``%load_ext nbagents.magics`` works too)."""
    from nbagents._extension import load_ipython_extension as load

    load(ipython)


def unload_ipython_extension(ipython: Any) -> None:
    from nbagents._extension import unload_ipython_extension as unload

    unload(ipython)


def _note_other_jobs_in_the_room(job: Any) -> None:
    """A cell run again while its earlier job still runs puts a second agent in the room: say so, once."""
    from nbagents.runtime.job import jobs

    others = [other.id for other in jobs() if other is not job and other.room == job.room and not other.done]
    if others:
        how = f"`%agent stop {others[0]}`" if len(others) == 1 else "`%agent stop ID` for each"
        print(f"note: {len(others)} earlier job(s) still run in room {job.room!r} ({', '.join(others)}), so the room "
              f"now has {len(others) + 1} agents; stop the earlier ones with {how}")
