"""The few facts the server reads from a client's SDP offer itself.

libwebrtc's ``a=msid-semantic`` line carries no stream ids, so aiortc cannot tell which media section
carries which published track; the ``a=msid:<stream> <track id>`` line of each section does, and the
track id is the ``cid`` the client used in its AddTrackRequest. The section's direction tells whether
the client still sends on it (an unpublish is a renegotiation that stops sending).
"""

from __future__ import annotations

from dataclasses import dataclass

_DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")


@dataclass(frozen=True)
class MediaSection:
    mid: str
    kind: str
    track_id: str | None
    direction: str
    port: int

    @property
    def sending(self) -> bool:
        """True if the offerer sends media on this section."""
        return self.port != 0 and self.direction in ("sendrecv", "sendonly")


def media_sections(sdp: str) -> list[MediaSection]:
    """The audio and video sections of ``sdp`` in order (data sections are skipped)."""
    sections: list[MediaSection] = []
    current: dict | None = None

    def flush() -> None:
        if current and current["kind"] in ("audio", "video") and current["mid"] is not None:
            sections.append(MediaSection(**current))

    for raw in sdp.splitlines():
        line = raw.strip()
        if line.startswith("m="):
            flush()
            parts = line[2:].split()
            port = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
            current = {"mid": None, "kind": parts[0] if parts else "", "track_id": None,
                       "direction": "sendrecv", "port": port}
        elif current is None:
            continue
        elif line.startswith("a=mid:"):
            current["mid"] = line[6:].strip()
        elif line.startswith("a=msid:"):
            ids = line[7:].split()
            if len(ids) >= 2:
                current["track_id"] = ids[1]
        elif line[2:] in _DIRECTIONS and line.startswith("a="):
            current["direction"] = line[2:]
    flush()
    return sections
