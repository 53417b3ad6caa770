"""The facts the server reads from a client's SDP itself, and the simulcast lines it adds to its answers.

libwebrtc's ``a=msid-semantic`` line carries no stream ids, so aiortc cannot tell which media section
carries which published track; the ``a=msid:<stream> <track id>`` line of each section does, and the
track id is the ``cid`` the client used in its AddTrackRequest. The section's direction tells whether
the client still sends on it (an unpublish is a renegotiation that stops sending).

The relay routes RTP itself (see forwarding.py), so it also reads what binds a packet to its section:
the SSRCs a section announces (``a=ssrc``, ``a=ssrc-group:FID``), its simulcast layers (``a=rid`` and
``a=simulcast``, RFC 8853: such layers are announced by rid, not SSRC) and the header extension ids
(``a=extmap``) that carry ``mid`` and ``rid`` in each packet. aiortc does not know simulcast, so
``accept_simulcast`` adds to the server's answer what makes the publisher send all of its layers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from nbagents.server.rtp import MID_URI, REPAIRED_RID_URI, RID_URI

_DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")


@dataclass(frozen=True)
class MediaSection:
    mid: str
    kind: str
    track_id: str | None
    direction: str
    port: int
    ssrcs: tuple[int, ...] = ()  # media SSRCs announced for this section (retransmission SSRCs excluded)
    rids: tuple[str, ...] = ()  # simulcast layers the offerer sends, in its a=simulcast order
    extensions: dict[str, int] = field(default_factory=dict, compare=False)  # header extension URI -> id

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
            repair = current.pop("repair")
            current["ssrcs"] = tuple(s for s in dict.fromkeys(current["ssrcs"]) if s not in repair)
            simulcast = current.pop("simulcast")
            declared = current.pop("declared_rids")
            current["rids"] = tuple(r for r in simulcast if r in declared) if simulcast else ()
            sections.append(MediaSection(**current))

    for raw in sdp.splitlines():
        line = raw.strip()
        if line.startswith("m="):
            flush()
            parts = line[2:].split()
            port = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
            current = {"mid": None, "kind": parts[0] if parts else "", "track_id": None,
                       "direction": "sendrecv", "port": port, "ssrcs": [], "repair": set(), "simulcast": [],
                       "declared_rids": set(), "extensions": {}}
            continue
        if current is None or not line.startswith("a="):
            continue
        name, _, value = line[2:].partition(":")
        if name == "rtpmap" or name == "fmtp" or name == "rtcp-fb" or name == "candidate":
            continue  # most lines of an offer: nothing the relay reads
        if name == "mid":
            current["mid"] = value.strip()
        elif name == "msid":
            ids = value.split()
            if len(ids) >= 2:
                current["track_id"] = ids[1]
        elif name == "ssrc":
            ssrc = value.split(None, 1)[0] if value else ""
            if ssrc.isdigit():
                current["ssrcs"].append(int(ssrc))
        elif name == "ssrc-group" and value.startswith("FID "):
            current["repair"].update(int(s) for s in value.split()[2:] if s.isdigit())  # primary, then its RTX
        elif name == "rid":
            parts = value.split()
            if len(parts) >= 2 and parts[1] == "send":
                current["declared_rids"].add(parts[0])
        elif name == "simulcast":
            parts = value.split()
            if len(parts) >= 2 and parts[0] == "send":
                # "h;q", alternatives "h,x;q", paused "~q": the first choice of each layer, unpaused
                current["simulcast"] = [alt.split(",")[0].lstrip("~") for alt in parts[1].split(";")]
        elif name == "extmap":
            parts = value.split()
            if len(parts) >= 2:
                ext_id = parts[0].split("/")[0]
                if ext_id.isdigit():
                    current["extensions"][parts[1]] = int(ext_id)
        elif name in _DIRECTIONS:
            current["direction"] = name
    flush()
    return sections


def finish_answer(answer: str, offer_sections: list[MediaSection]) -> str:
    """The server's answer as sent: without RTX, with the stream-id header extensions, accepting simulcast.

    RTX: aiortc accepts every retransmission codec whose base codec it accepts. The relay asks for
    retransmissions on the media stream itself (RFC 4585 generic NACK), so it declines RTX.

    Header extensions: aiortc answers only those it implements. As livekit-server does, the answer also
    accepts the offer's ``mid``, ``rtp-stream-id`` and (video) ``repaired-rtp-stream-id`` extensions, which
    carry a packet's section and simulcast layer. libwebrtc offers simulcast in a later section only if an
    earlier answer accepted ``rtp-stream-id`` (one PeerConnection for everything, as on ``/rtc/v1``).

    Simulcast (RFC 8853, answerer side): for a section the offer sends with ``a=simulcast:send h;q``, the
    answer gets ``a=rid:<id> recv`` for each layer and ``a=simulcast:recv h;q``. Without them the publisher
    sends only one layer.
    """
    offered = {s.mid: s for s in offer_sections}
    newline = "\r\n" if "\r\n" in answer else "\n"
    lines = answer.split(newline)
    out: list[str] = []
    section_lines: list[str] = []

    def flush_section() -> None:
        mid = next((line[6:].strip() for line in section_lines if line.startswith("a=mid:")), None)
        offer = offered.get(mid or "")
        rejected = bool(section_lines) and section_lines[0].startswith("m=") and \
            section_lines[0].split()[1:2] == ["0"]
        _decline_rtx(section_lines)
        if offer is not None and not rejected:
            present = {line.split()[1] for line in section_lines if line.startswith("a=extmap:") and " " in line}
            wanted = (MID_URI, RID_URI, REPAIRED_RID_URI) if offer.kind == "video" else (MID_URI, RID_URI)
            extra = [f"a=extmap:{offer.extensions[uri]} {uri}" for uri in wanted
                     if uri in offer.extensions and uri not in present]
            if offer.rids:
                extra += [f"a=rid:{rid} recv" for rid in offer.rids]
                extra.append(f"a=simulcast:recv {';'.join(offer.rids)}")
            position = next(i for i, line in enumerate(section_lines) if line.startswith("a=mid:")) + 1
            section_lines[position:position] = extra
        out.extend(section_lines)
        section_lines.clear()

    for line in lines:
        if line.startswith("m="):
            flush_section()
        (section_lines if line.startswith("m=") or section_lines else out).append(line)
    flush_section()
    return newline.join(out)


def _decline_rtx(section: list[str]) -> None:
    """Remove the RTX payload types of one media section (``m=`` line first) and its RTX SSRCs, in place."""
    rtx = {line[9:].split()[0] for line in section
           if line.startswith("a=rtpmap:") and line.split()[1:2] and line.split()[1].lower().startswith("rtx/")}
    repair = {member for line in section if line.startswith("a=ssrc-group:FID ")
              for member in line.split()[2:]}
    if not rtx and not repair:
        return
    kept: list[str] = []
    for line in section:
        if line.startswith("m="):
            parts = line.split(" ")
            line = " ".join(parts[:3] + [pt for pt in parts[3:] if pt not in rtx])
        elif line.startswith(("a=rtpmap:", "a=fmtp:", "a=rtcp-fb:")) and line.split(":", 1)[1].split()[0] in rtx:
            continue
        elif line.startswith("a=ssrc-group:FID ") or \
                (line.startswith("a=ssrc:") and line[7:].split()[0] in repair):
            continue
        kept.append(line)
    section[:] = kept
