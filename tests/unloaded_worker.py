"""Run a livekit-agents worker script unchanged, except for the load it reports: ``python unloaded_worker.py
SCRIPT ARGS...`` (``ARGS`` as for the script: ``start``, ``dev``, ...).

This suite keeps the test machine's CPU busy on purpose (run 1 goes in two parts side by side). livekit-agents
reports the machine's CPU use as a worker's load, and two rules then turn jobs away: in production mode
(``start``) a worker at a load of 0.7 or more marks itself unavailable (``load_threshold``), and
livekit-server offers a job only to a worker whose load is below 1 ("no workers with sufficient capacity";
docs/engine-differences.md). So every ``AgentServer`` the script creates gets livekit-agents' development-mode
threshold (none) and reports no load (``load_fnc``), unless the script sets them itself; the script, its
agent and the worker are otherwise as in production. The runtime conformance worker
(``runtime_conformance/lk_worker.py``) sets the same two options itself.
"""

import math
import runpy
import sys

from livekit.agents import AgentServer
from livekit.agents.worker import ServerEnvOption


def _no_load() -> float:
    return 0.0


_init = AgentServer.__init__


def _init_unloaded(self: AgentServer, *args: object, **kwargs: object) -> None:
    if isinstance(kwargs.get("load_threshold", ServerEnvOption(0, 0)), ServerEnvOption):
        kwargs["load_threshold"] = math.inf
    kwargs.setdefault("load_fnc", _no_load)
    _init(self, *args, **kwargs)


AgentServer.__init__ = _init_unloaded  # type: ignore[method-assign]

if __name__ == "__main__":
    script = sys.argv[1]
    sys.argv = sys.argv[1:]
    runpy.run_path(script, run_name="__main__")
