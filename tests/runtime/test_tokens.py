"""The launched job's token (nbagents/runtime/tokens.py): what it grants, and who signs it."""

from __future__ import annotations

import subprocess
import sys

import jwt

from nbagents.runtime.tokens import agent_identity, agent_token, token_at_launch

SECRET = "tokens-test-secret-tokens-test-secret"


def test_the_agent_token_is_a_dispatched_agents() -> None:
    claims = jwt.decode(agent_token("key", SECRET, "AJ_tok", "room-a", "named"), SECRET, algorithms=["HS256"])
    assert claims["iss"] == "key" and claims["sub"] == agent_identity("AJ_tok") == "agent-AJ_tok"
    assert claims["kind"] == "agent"
    assert claims["attributes"] == {"lk.agent.name": "named", "lk.agent_name": "named"}
    video = claims["video"]
    assert video["room"] == "room-a" and video["roomJoin"] and video["agent"] and video["canUpdateOwnMetadata"]


def test_the_kernel_signs_at_launch_only_when_livekit_api_is_already_loaded() -> None:
    import livekit.api  # noqa: F401  (as in a kernel that uses livekit-agents)

    token = token_at_launch("key", SECRET, "AJ_tok", "room-a", "")
    assert token is not None and jwt.decode(token, SECRET, algorithms=["HS256"])["sub"] == "agent-AJ_tok"
    fresh = subprocess.run(
        [sys.executable, "-c",
         "import sys; from nbagents.runtime.tokens import token_at_launch; "
         f"print(token_at_launch('key', {SECRET!r}, 'AJ_tok', 'room-a', ''), 'livekit.api' in sys.modules)"],
        capture_output=True, text=True, check=True,
    )
    assert fresh.stdout.split() == ["None", "False"]  # the job signs it instead; the kernel imported nothing
