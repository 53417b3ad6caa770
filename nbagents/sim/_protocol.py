"""The small IPC between the kernel and a simulated participant's process.

One JSON object per line. The kernel writes requests to the child's stdin; the child writes replies and
events on a private copy of its stdout (its own fd 1 is pointed at stderr so nothing else can corrupt the
stream). Binary payloads travel base64-encoded.

- kernel -> child: ``{"id": 1, "op": "play_tone", "args": {...}}``
- child -> kernel: ``{"id": 1, "ok": true, "result": ...}`` or ``{"id": 1, "ok": false, "error": "..."}``
- child -> kernel: ``{"event": "connected" | "connect_failed" | "data" | "speech" | "unrecognised" | "disconnected", ...}``
"""

from __future__ import annotations

import base64
import json
from typing import Any

#: Participant kinds a simulated participant may join as (the token's ``kind`` claim).
KINDS = ("standard", "agent", "sip", "ingress", "egress")

#: Requests the child understands.
OPERATIONS = ("play_tone", "play_wav", "say", "set_attributes", "send_data", "leave")

#: Longest line the kernel accepts (a data packet is at most ~15 KiB; leave room for base64 and JSON).
MAX_LINE_BYTES = 4 * 1024 * 1024


def encode(message: dict[str, Any]) -> bytes:
    """One message as one line."""
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


def decode(line: bytes) -> dict[str, Any]:
    return json.loads(line)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"))
