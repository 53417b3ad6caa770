"""A real livekit-agents 1.8 worker serving the conformance scenarios (``python lk_worker.py start``).

Registered with agent_name ``nbagents-conformance``: it gets only the jobs the tests dispatch to it. Its
options are livekit-agents' own, except ``shutdown_process_timeout`` (60 s, as nbagents' default) and its
load: a loaded test machine must not make the worker refuse jobs (``load_threshold``) nor make livekit-server
pass it over ("no workers with sufficient capacity" once a worker reports a load of 1), so it reports none;
and its health server takes any free port.
"""

import math

from livekit.agents import AgentServer, cli

from runtime_conformance.scenarios import entrypoint

AGENT_NAME = "nbagents-conformance"

server = AgentServer(shutdown_process_timeout=60.0, load_threshold=math.inf, load_fnc=lambda: 0.0, num_idle_processes=1,
                     port=0)  # its HTTP health server: one worker per engine runs at once
server.rtc_session(entrypoint, agent_name=AGENT_NAME)

if __name__ == "__main__":
    cli.run_app(server)
