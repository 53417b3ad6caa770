"""Every livekit-agents internal nbagents relies on, in one place, each with the reason.

nbagents runs a notebook job under livekit-agents' own ``JobContext`` and ``JobProcess`` (so
``AgentSession``, ``get_job_context()`` and everything built on them behave as under a livekit-agents
worker), while keeping its own process model, events and shutdown. livekit-agents 1.8 has no public
way to do that: its job process main (``ipc/job_proc_lazy_main.py``) builds the context with a private
constructor and drives the shutdown with private members. This module does the same, and is the only
one that touches those names; ``pyproject.toml`` pins ``livekit-agents>=1.8,<1.9`` and
``tests/runtime/test_agents_internals.py`` checks every name used here against the installed version,
so a release that moves one fails that test rather than a user's job.

What breaks if livekit-agents changes them is said at each function.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable

__all__ = [
    "activate",
    "preload",
    "preload_warm_up",
    "deactivate",
    "follow_sessions",
    "framework_callback",
    "new_job_context",
    "new_job_process",
    "primary_session",
    "registered_shutdown_callbacks",
]


def preload() -> None:
    """What the job processes' zygote must import before its first fork: livekit-agents itself."""
    import livekit.agents  # noqa: F401


def preload_warm_up() -> None:
    """livekit-agents' own warm-up (``livekit.agents.ipc._preload``: PyAV, the livekit native library, the
    openai SDK's resources, an httpx client), which its forkserver imports before forking jobs.

    The zygote runs it once it is idle or before forking an idle process, not before forking a job that is
    already waiting (a fresh kernel's first): that job starts ~0.1 s sooner (with livekit-agents 1.8.9 the
    step left is the first httpx client) and does what it uses of this itself. The
    local inference models load only when ``LIVEKIT_AGENTS_PRELOAD_LOCAL_INFERENCE`` asks for them (the
    zygote sets it to 0 unless the kernel's environment has it).

    Internal: the private module ``livekit.agents.ipc._preload``. If it moves, the zygote goes on without
    the warm-up (it catches the error) and jobs do those steps themselves on first use.
    """
    from livekit.agents.ipc import _preload  # noqa: F401


def new_job_process(*, http_proxy: str | None = None) -> Any:
    """livekit-agents' ``JobProcess`` for this process (``proc.userdata`` for prewarm and the jobs).

    Public class, public constructor arguments; ``executor_type`` PROCESS, as in a livekit-agents job process.
    """
    from livekit.agents import JobExecutorType, JobProcess

    return JobProcess(executor_type=JobExecutorType.PROCESS, user_arguments=None, http_proxy=http_proxy)


def new_job_context(
    *,
    proc: Any,
    job: Any,
    url: str,
    token: str | Callable[[], str],
    identity: str,
    worker_id: str,
    room: Any,
    on_connect: Callable[[], None],
    on_shutdown: Callable[[str], None],
) -> Any:
    """livekit-agents' own ``JobContext`` for a job, built as its job process builds it.

    Internal: ``JobContext.__init__`` is private ("# private ctor") and takes ``RunningJobInfo`` and
    ``JobAcceptArguments`` (dataclasses of ``livekit.agents.job``). ``room._info.name`` is set before the
    entrypoint runs, as livekit-agents does, so ``ctx.room.name`` is known at once (``rtc.Room`` has no
    public setter). If a release renames these, building the context raises and no job starts (the
    internals test says which name moved).

    ``token``: the agent's token, or a function that signs it, called the first time anything reads
    ``RunningJobInfo.token`` (``ctx.connect()``, ``ctx.token_claims()``): signing is then off the path from
    launch to the entrypoint's first line.
    """
    from livekit.agents.job import JobAcceptArguments, JobContext, RunningJobInfo

    fields = dict(
        accept_arguments=JobAcceptArguments(name="", identity=identity, metadata=""),
        job=job,
        url=url,
        worker_id=worker_id,
        fake_job=False,
    )
    info = _job_info_signing_on_read()(sign=token, **fields) if callable(token) else RunningJobInfo(token=token, **fields)
    room._info.name = job.room.name
    return JobContext(
        proc=proc,
        info=info,
        room=room,
        on_connect=on_connect,
        on_shutdown=on_shutdown,
        inference_executor=_NoInferenceExecutor(),
    )


@functools.cache
def _job_info_signing_on_read() -> type:
    """A ``RunningJobInfo`` whose ``token`` is signed the first time it is read (made once per process).

    Internal: ``RunningJobInfo`` is a plain dataclass whose ``__init__`` assigns ``self.token``; the subclass
    turns that field into a property. If it becomes frozen or slotted, building a context raises (the
    internals test says so) and nbagents must sign before building it again.
    """
    from livekit.agents.job import RunningJobInfo

    class RunningJobInfoSigningOnRead(RunningJobInfo):
        def __init__(self, *, sign: Callable[[], str], **fields: Any) -> None:
            self._sign = sign
            self._token: str | None = None
            super().__init__(token=None, **fields)  # type: ignore[arg-type]

        @property  # type: ignore[override]
        def token(self) -> str:
            if self._token is None:
                self._token = self._sign()
            return self._token

        @token.setter
        def token(self, value: str | None) -> None:
            self._token = value

    return RunningJobInfoSigningOnRead


class _NoInferenceExecutor:
    """nbagents runs no inference process: local models (the turn detector's) run in the job itself.

    livekit-agents' job context only hands this to code that asks for ``ctx.inference_executor``.
    """

    async def do_inference(self, method: str, data: bytes) -> bytes | None:
        raise RuntimeError(
            f"nbagents runs no livekit-agents inference process, so {method!r} cannot run there; "
            "use a model that runs in the job process (or a remote one)"
        )


def activate(ctx: Any) -> Callable[[], Any]:
    """Make ``ctx`` the current job (``get_job_context()``), as livekit-agents' job task does.

    Internal: ``_JobContextVar`` (the context variable behind ``get_job_context``),
    ``http_context._new_session_ctx`` and ``_ContextVar`` (the job's shared aiohttp session for ``ctx.api``
    and plugins, created on first use; nbagents notes whether it was, to close it only then),
    ``JobContext._on_setup`` (log fields), ``_start_log_buffering`` and ``_prepare_telemetry`` (both
    no-ops unless the server is LiveKit Cloud with recording on). Call it in the task that then
    creates the entrypoint's task, so every task of the job inherits the context. If these move,
    ``get_job_context()`` fails in jobs again. Returns the function that resets the context variable.
    """
    from livekit.agents.job import _JobContextVar
    from livekit.agents.utils import http_context

    ctx._on_setup()
    ctx._start_log_buffering()
    ctx._prepare_telemetry()
    token = _JobContextVar.set(ctx)
    session = http_context._new_session_ctx()

    def shared_session() -> Any:  # as livekit-agents' factory, remembering that the job used it
        ctx._nbagents_http_session_used = True
        return session()

    http_context._ContextVar.set(shared_session)
    return functools.partial(_JobContextVar.reset, token)


async def deactivate(ctx: Any) -> None:
    """The end of livekit-agents' job task: pending tasks, cleanup, the HTTP session. (Then call the
    function :func:`activate` returned, in the task that activated the context, to reset the variable.)

    Internal: ``JobContext._pending_tasks`` (tasks ``delete_room`` and SIP calls started),
    ``_on_cleanup`` (temp dir, telemetry, log filters; it runs its blocking part in a thread, which costs a
    loaded machine a few hundred milliseconds, so a job without LiveKit Cloud telemetry only removes its
    temporary directory: ``_tempdir``, ``_telemetry_state``, ``job._observability_url``),
    ``http_context._close_http_ctx`` (only if the job used the session). If they move, a job's temporary
    directory may be left behind.
    """
    import asyncio

    from livekit.agents.utils import http_context

    from livekit.agents.job import _observability_url

    tasks = [task for task in ctx._pending_tasks if not task.done()]
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.gather(*tasks, return_exceptions=True)
    if ctx._telemetry_state is not None or _observability_url(ctx._info.url):
        await ctx._on_cleanup()  # LiveKit Cloud: flush the job's telemetry as livekit-agents does
    else:
        # all _on_cleanup does for a job without cloud telemetry, minus a thread hop (the process exits next)
        ctx._tempdir.cleanup()
    if getattr(ctx, "_nbagents_http_session_used", False):
        await http_context._close_http_ctx()
    else:  # closing would first create the session (and an SSL context: tens of milliseconds) to close it
        http_context._ContextVar.set(None)


async def end_primary_session(ctx: Any, timeout: float) -> None:
    """livekit-agents' first shutdown steps after the entrypoint: close the primary ``AgentSession``,
    then its session report (``_on_session_end``; uploads only to LiveKit Cloud with recording on).

    Internal: ``JobContext._primary_agent_session`` and ``_on_session_end``. If they move, the primary
    session is still closed by its shutdown callback, only later (after the room disconnects).
    """
    import asyncio

    session = ctx._primary_agent_session
    if session is not None:
        await asyncio.wait_for(session.aclose(), timeout)
    await ctx._on_session_end()


def primary_session(ctx: Any) -> Any:
    """The job's primary ``AgentSession`` (``JobContext._primary_agent_session``), or None."""
    return ctx._primary_agent_session


def registered_shutdown_callbacks(ctx: Any) -> list[Callable[[str], Any]]:
    """The callables livekit-agents will call with the shutdown reason, in registration order.

    Internal: ``JobContext._shutdown_callbacks``. A callback registered without a parameter is kept
    there wrapped (``wrapper(reason)``, which drops its return value); :func:`record_shutdown_callbacks`
    keeps the user's own callable beside each entry so nbagents can persist what it returns.
    """
    return list(ctx._shutdown_callbacks)


def record_shutdown_callbacks(ctx: Any, on_added: Callable[[Any, Callable[..., Any], bool], None]) -> None:
    """Learn of every ``ctx.add_shutdown_callback(callback)`` as it happens.

    livekit-agents' own method still registers the callback (with its checks and wrapping); then
    ``on_added(entry, callback, takes_reason)`` gets the entry it appended to ``_shutdown_callbacks``,
    the user's callable, and whether livekit-agents calls it with the reason (it appended the callable
    itself) or through its wrapper (no parameter). The method is replaced on this instance only, so
    ``type(ctx)`` stays ``livekit.agents.JobContext``.

    Internal: ``_shutdown_callbacks``. If it moves, the callbacks still run (nbagents runs whatever the
    list holds) but values returned by callbacks without a parameter are not persisted.
    """
    register = ctx.add_shutdown_callback

    def add_shutdown_callback(callback: Callable[..., Any]) -> None:
        register(callback)
        entry = ctx._shutdown_callbacks[-1]
        on_added(entry, callback, entry is callback)

    add_shutdown_callback.__doc__ = register.__doc__
    add_shutdown_callback.__signature__ = inspect.signature(register)  # type: ignore[attr-defined]
    ctx.add_shutdown_callback = add_shutdown_callback


def framework_callback(fnc: Any) -> bool:
    """A shutdown callback livekit-agents registered itself (an ``AgentSession`` closing), not the user.

    The same rule livekit-agents' job process uses (``_is_framework_callback``): defined in a
    ``livekit.agents`` module. Such callbacks run, but their outcome is not one of the job's hooks.
    """
    module = getattr(fnc, "__module__", None) or ""
    return module == "livekit.agents" or module.startswith("livekit.agents.")


def follow_sessions(on_start: Callable[[Any, Any, bool], None]) -> None:
    """Call ``on_start(session, agent, primary)`` whenever an ``AgentSession`` starts in this process.

    livekit-agents has no hook for "a session started"; ``AgentSession.start`` is wrapped (once per
    process, in the job process only) to call ``on_start`` first, so that the caller can register its
    event handlers before the session's first state change. ``primary`` follows livekit-agents' rule:
    the first session to start in a job is its primary one (``JobContext._primary_agent_session``).
    If the wrapping stops working, sessions still run; only their voice events are missing.
    """
    from livekit.agents import AgentSession, get_job_context

    original = AgentSession.start
    if getattr(original, "_nbagents_follows", False):
        return

    @functools.wraps(original)
    async def start(self: Any, *args: Any, **kwargs: Any) -> Any:
        agent = kwargs.get("agent", args[0] if args else None)
        ctx = get_job_context(required=False)
        current = getattr(ctx, "_primary_agent_session", None)
        primary = ctx is not None and (current is None or current is self)
        try:
            on_start(self, agent, primary)
        except Exception:  # following must never stop a session from starting
            pass
        return await original(self, *args, **kwargs)

    start._nbagents_follows = True  # type: ignore[attr-defined]
    AgentSession.start = start  # type: ignore[method-assign]


def registered_session(server: Any) -> dict[str, Any] | None:
    """What an ``AgentServer`` (or ``WorkerOptions``) would run: the function registered with
    ``@server.rtc_session(...)`` and its options, or None when nothing is registered.

    Returns ``{"entrypoint", "agent_name", "prewarm", "on_session_end", "shutdown_process_timeout"}``
    (``shutdown_process_timeout`` None when the server has livekit-agents' default, 10 s, which nbagents
    replaces with its own, 60 s).

    Internal: ``AgentServer`` keeps the registration in ``_entrypoint_fnc``, ``_agent_name``,
    ``_session_end_fnc`` and ``_shutdown_process_timeout`` (no public getters; ``setup_fnc`` is public).
    If they move, a pasted example's ``%%agent`` cell says it found nothing to launch (``--entrypoint``
    still works).
    """
    from livekit.agents import AgentServer, WorkerOptions

    if isinstance(server, AgentServer):
        entrypoint = server._entrypoint_fnc
        if entrypoint is None:
            return None
        timeout = server._shutdown_process_timeout
        return {
            "entrypoint": entrypoint,
            "agent_name": server._agent_name,
            "prewarm": server.setup_fnc,
            "on_session_end": server._session_end_fnc,
            "shutdown_process_timeout": None if timeout == LIVEKIT_AGENTS_SHUTDOWN_TIMEOUT else float(timeout),
        }
    if isinstance(server, WorkerOptions) or _is_nbagents_worker_options(server):
        timeout = server.shutdown_process_timeout
        prewarm = server.prewarm_fnc
        return {
            "entrypoint": server.entrypoint_fnc,
            "agent_name": server.agent_name,
            "prewarm": None if getattr(prewarm, "__module__", "").startswith(("livekit.agents", "nbagents")) else prewarm,
            "on_session_end": None,
            "shutdown_process_timeout": None if timeout == LIVEKIT_AGENTS_SHUTDOWN_TIMEOUT else float(timeout),
        }
    return None


LIVEKIT_AGENTS_SHUTDOWN_TIMEOUT = 10.0  # livekit-agents 1.8's default shutdown_process_timeout


def _is_nbagents_worker_options(value: Any) -> bool:
    from nbagents.runtime.context import WorkerOptions

    return isinstance(value, WorkerOptions)
