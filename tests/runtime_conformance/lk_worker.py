"""A real livekit-agents 1.8 worker serving the conformance scenarios (``python lk_worker.py start``).

Registered with agent_name ``nbagents-conformance``: it gets only the jobs the tests dispatch to it. Its
options are livekit-agents' own, except ``shutdown_process_timeout`` (60 s, as nbagents' default) and a
load threshold it never reaches (a loaded test machine must not make the worker refuse jobs).
"""

import math

from livekit.agents import AgentServer, cli

from runtime_conformance.scenarios import entrypoint

AGENT_NAME = "nbagents-conformance"

server = AgentServer(shutdown_process_timeout=60.0, load_threshold=math.inf, num_idle_processes=1)
server.rtc_session(entrypoint, agent_name=AGENT_NAME)

if __name__ == "__main__":
    cli.run_app(server)
