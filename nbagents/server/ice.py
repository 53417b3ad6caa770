"""Trickled ICE candidates from a client, applied to the server's side of one PeerConnection.

Clients send candidates as soon as they gather them (``TrickleRequest.candidateInit``, the browser's JSON
``RTCIceCandidateInit``), which can be before the offer or answer they belong to is applied here; aiortc
would drop those, so they are held until the remote description is set, and later ones are applied at once.
"""

from __future__ import annotations

import json

from aiortc import RTCIceCandidate, RTCPeerConnection
from aiortc.sdp import candidate_from_sdp


class TrickledCandidates:
    """The remote candidates of ``pc``: held until :meth:`remote_described`, then applied as they come."""

    def __init__(self, pc: RTCPeerConnection) -> None:
        self._pc = pc
        self._held: list[RTCIceCandidate] = []
        # whether a remote description is set: aiortc's ``remoteDescription`` property writes the whole SDP
        # out on every read, milliseconds for each trickled candidate on the join's critical path
        self._described = False

    async def add(self, candidate_init: str) -> None:
        """Apply one trickled candidate, or hold it; an empty candidate (end-of-candidates) is ignored.

        Raises ValueError for text that is not JSON or not an ICE candidate."""
        init = json.loads(candidate_init)
        text = init.get("candidate") or ""
        if not text:
            return
        candidate = candidate_from_sdp(text.split(":", 1)[1] if text.startswith("candidate:") else text)
        candidate.sdpMid = init.get("sdpMid")
        candidate.sdpMLineIndex = init.get("sdpMLineIndex")
        if self._described:
            await self._pc.addIceCandidate(candidate)
        else:
            self._held.append(candidate)

    async def remote_described(self) -> None:
        """Call once a remote description is set: the held candidates are applied, later ones at once."""
        self._described = True
        held, self._held = self._held, []
        for candidate in held:
            await self._pc.addIceCandidate(candidate)
