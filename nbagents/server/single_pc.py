"""One PeerConnection for publishing and subscribing: the media side of ``/rtc/v1``.

A client that joins at ``/rtc/v1`` (what the SDKs try first: `livekit` 1.1.21 and 1.2.1, livekit-client 2.23) has one
PeerConnection, and it always offers; the server only answers (livekit-server v1.13.5, pkg/rtc/transport.go,
``UseSinglePeerConnection``). Its offers carry

- a sending section per track it publishes, read exactly as on the publisher connection of ``/rtc``;
- receive-only sections (three audio and three video in its first offer) that the server fills in its answer
  with tracks the participant subscribes to: the answer makes such a section ``sendonly`` with the msid
  ``"<participant sid>|<track sid>"``, and its ``mid_to_track_id`` maps the section to the track;
- the client's data channels, which the server also sends on (there is no server-created channel).

When the server has more subscribed tracks than free receive-only sections, or must change what a section
carries, it cannot offer: it sends ``MediaSectionsRequirement`` (how many more audio and video sections it
needs, possibly none) and the client adds them and offers again. A section that stopped carrying a track is
answered ``inactive`` from then on and never reused, which keeps every sender's RTP stream its own.

``SinglePeer`` presents the calls ``Participant`` makes on its publisher and subscriber peers of ``/rtc``, so a
participant uses the same object for both. Its media goes through one ``RtpPort`` (forwarding.py), which routes
what the client sends to the relays of its tracks and sends the client the down tracks of its subscriptions.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from aiortc import (
    RTCBundlePolicy,
    RTCConfiguration,
    RTCDataChannel,
    RTCPeerConnection,
    RTCRtpTransceiver,
    RTCSessionDescription,
)

from nbagents.server import _aiortc
from nbagents.server.forwarding import Codec, DownTrack, RtpPort, TrackRelay
from nbagents.server.ice import TrickledCandidates
from nbagents.server.sdp import MediaSection, finish_answer, media_sections

log = logging.getLogger(__name__)

#: messages kept per data channel of the client's until it opens (delivered then)
DATA_BACKLOG = 256
DATA_PACKET_LABELS = ("_reliable", "_lossy")


@dataclass
class _Forwarded:
    """A subscribed track and, once an answer placed it, the section that carries it."""

    relay: TrackRelay
    participant_sid: str
    kind: str
    downtrack: DownTrack | None = None
    transceiver: RTCRtpTransceiver | None = None


class SinglePeer:
    """The one PeerConnection of a ``/rtc/v1`` participant, seen from the server: the client offers, it answers.

    ``on_track(section, transceiver)`` and ``on_track_stopped(section)`` report the client's own tracks as they
    start and stop being sent; ``on_data(label, payload)`` every data channel message; ``request_sections(audio,
    video)`` asks the client for that many more receive-only sections and a new offer.
    """

    def __init__(
        self,
        on_track: Callable[[MediaSection, RTCRtpTransceiver], None],
        on_track_stopped: Callable[[MediaSection], None],
        on_data: Callable[[str, bytes], None],
        request_sections: Callable[[int, int], None],
    ) -> None:
        # max-bundle, no STUN/TURN: as the /rtc peers (see media._configuration)
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE))
        self.port: RtpPort | None = None  # once the first offer created the transport
        self._on_track = on_track
        self._on_track_stopped = on_track_stopped
        self._on_data = on_data
        self._request_sections = request_sections
        self._announced: dict[str, MediaSection] = {}  # mid -> a client-sending section whose track was reported
        self._forwarded: dict[str, _Forwarded] = {}  # track sid -> subscription, placed or waiting for a section
        self._used_mids: set[str] = set()  # receive-only sections that carry, or once carried, a track
        self._receive_sections: dict[str, str] = {}  # mid -> kind, the client's receive-only sections
        self._outstanding = {"audio": 0, "video": 0}  # sections asked for that no offer has brought yet
        self._renegotiation_requested = False
        self._answered = False
        self._channels: dict[str, RTCDataChannel] = {}
        self._backlog: dict[str, list[bytes]] = {}
        self._candidates = TrickledCandidates(self.pc)
        self._tasks: set[asyncio.Future[None]] = set()
        self._lock = asyncio.Lock()
        self._closed = False
        self.pc.on("datachannel", self._attach_channel)
        self.pc.on("connectionstatechange", self._on_state)

    def _on_state(self) -> None:
        if self.pc.connectionState == "connected":
            _aiortc.start_pending_transceivers(self.pc)

    # --- negotiation: the client offers, the server answers

    async def answer(self, offer_sdp: str) -> str:
        """Apply the client's offer, place waiting subscriptions in free receive-only sections, and answer."""
        offered = media_sections(offer_sdp)
        sections = {s.mid: s for s in offered}
        async with self._lock:
            await self.pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
            if self.port is None:
                transport = _aiortc.dtls_transport(self.pc)
                if transport is not None:
                    self.port = RtpPort(transport)
            for transceiver in self.pc.getTransceivers():
                _aiortc.adopt_receiver(transceiver.receiver)
            await self._candidates.remote_described()
            self._note_receive_sections(sections)
            self._place_waiting_tracks()
            answer = await self.pc.createAnswer()
            await self.pc.setLocalDescription(answer)
            self._report_client_tracks(sections)
            self._answered = True
            self._renegotiation_requested = False
            sdp = finish_answer(self.pc.localDescription.sdp, offered)
        if self._waiting():  # after the caller has sent this answer: the client offers again once it has it
            task = asyncio.ensure_future(self.negotiate())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return sdp

    def _note_receive_sections(self, sections: dict[str, MediaSection]) -> None:
        for mid, section in sections.items():
            if section.port == 0 or section.direction != "recvonly" or mid in self._receive_sections:
                continue
            self._receive_sections[mid] = section.kind
            if section.kind in self._outstanding:
                self._outstanding[section.kind] = max(0, self._outstanding[section.kind] - 1)

    def _free_transceivers(self, kind: str) -> list[RTCRtpTransceiver]:
        return [t for t in self.pc.getTransceivers()
                if t.mid is not None and self._receive_sections.get(t.mid) == kind and t.mid not in self._used_mids]

    def _place_waiting_tracks(self) -> None:
        for track_sid, forwarded in self._forwarded.items():
            if forwarded.transceiver is not None:
                continue
            free = self._free_transceivers(forwarded.kind)
            if not free:
                continue
            transceiver = free[0]
            assert self.port is not None, "an offer was applied, so the transport exists"
            downtrack = DownTrack(forwarded.relay, self.port, ssrc=0)
            downtrack.ssrc = _aiortc.adopt_sender(transceiver.sender, downtrack.start, downtrack.stop)
            self.port.add_downtrack(downtrack)
            forwarded.relay.attach(downtrack)
            forwarded.downtrack = downtrack
            _aiortc.set_msid(transceiver.sender, f"{forwarded.participant_sid}|{track_sid}", track_sid)
            transceiver.direction = "sendonly"
            forwarded.transceiver = transceiver
            self._used_mids.add(transceiver.mid or "")

    def _report_client_tracks(self, sections: dict[str, MediaSection]) -> None:
        """What ``PublisherPeer.answer`` reports for /rtc: tracks the client started or stopped sending."""
        for transceiver in self.pc.getTransceivers():
            section = sections.get(transceiver.mid or "")
            if section is None:
                continue
            previous = self._announced.get(section.mid)
            if previous is not None and (not section.sending or previous.track_id != section.track_id):
                del self._announced[section.mid]
                self._on_track_stopped(previous)
            if section.sending and section.mid not in self._announced:
                self._announced[section.mid] = section
                self._on_track(section, transceiver)

    @property
    def mid_to_track_id(self) -> dict[str, str]:
        """Which track each section placed by the server carries (the answer's ``mid_to_track_id``)."""
        return {f.transceiver.mid: sid for sid, f in self._forwarded.items()
                if f.transceiver is not None and f.transceiver.mid is not None}

    def _waiting(self) -> bool:
        return any(f.transceiver is None for f in self._forwarded.values())

    async def negotiate(self) -> None:
        """Ask the client for a new offer, with as many more receive-only sections as waiting tracks need.

        Nothing is asked before the client's first offer has been answered: that offer brings sections of its own.
        """
        if self._closed or not self._answered:
            return
        needed = {}
        for kind in ("audio", "video"):
            waiting = sum(1 for f in self._forwarded.values() if f.transceiver is None and f.kind == kind)
            needed[kind] = max(0, waiting - len(self._free_transceivers(kind)) - self._outstanding[kind])
        if not any(needed.values()) and self._renegotiation_requested:
            return
        for kind, count in needed.items():
            self._outstanding[kind] += count
        self._renegotiation_requested = True
        self._request_sections(needed["audio"], needed["video"])

    async def apply_answer(self, sdp: str) -> None:
        log.warning("a /rtc/v1 client sent an answer, but on its one PeerConnection the server never offers; "
                    "ignoring it")

    # --- subscribing

    @property
    def forwarded_track_sids(self) -> set[str]:
        return set(self._forwarded)

    def forward(self, relay: TrackRelay, participant_sid: str, track_sid: str) -> None:
        """Relay a published track to this client; it is placed in a section by the next answer."""
        if track_sid in self._forwarded or self._closed:
            return
        self._forwarded[track_sid] = _Forwarded(relay, participant_sid, relay.kind)

    def relay(self, section: MediaSection, track_sid: str, codec: Codec,
              on_media: Callable[[], None] | None = None) -> TrackRelay:
        """Start relaying the track the client sends on ``section``; ``on_media()`` runs at its first packet."""
        assert self.port is not None, "a section was answered, so the transport exists"
        relay = TrackRelay(track_sid, codec, self.port, section.rids, on_media=on_media)
        self.port.receive(section, relay)
        return relay

    def stop_forwarding(self, track_sid: str) -> bool:
        """Stop relaying a track. Always False: no new offer is needed at once (the client learns of the end of
        the track from signaling); the section is answered ``inactive`` whenever the client next offers."""
        forwarded = self._forwarded.pop(track_sid, None)
        if forwarded is None or forwarded.transceiver is None or self._closed:
            return False
        if forwarded.downtrack is not None:
            forwarded.downtrack.stop()
        transceiver = forwarded.transceiver
        transceiver.direction = "inactive"
        # the section is never reused; a later subscription to the same track gets another, with the same msid
        _aiortc.set_msid(transceiver.sender, f"{track_sid}-stopped", transceiver.mid or track_sid)
        return False

    # --- data: the client's own channels carry both directions

    def _attach_channel(self, channel: RTCDataChannel) -> None:
        label = channel.label
        self._channels[label] = channel
        channel.on("open", lambda: self._flush(label))

        @channel.on("message")
        def on_message(message: bytes | str) -> None:
            # only _reliable and _lossy carry DataPackets (newer SDKs also open _data_track, not relayed here)
            if isinstance(message, bytes) and label in DATA_PACKET_LABELS:
                self._on_data(label, message)

        if channel.readyState == "open":
            self._flush(label)

    def send_data(self, label: str, payload: bytes) -> None:
        if self._closed:
            return
        channel = self._channels.get(label)
        if channel is not None and channel.readyState == "open":
            channel.send(payload)
        elif channel is None or channel.readyState == "connecting":
            backlog = self._backlog.setdefault(label, [])
            if len(backlog) < DATA_BACKLOG:
                backlog.append(payload)

    def _flush(self, label: str) -> None:
        channel = self._channels.get(label)
        if channel is None or channel.readyState != "open":
            return
        for payload in self._backlog.pop(label, []):
            channel.send(payload)

    # --- ICE

    async def add_candidate(self, candidate_init: str) -> None:
        """Apply a trickled candidate (JSON RTCIceCandidateInit); held until the offer it belongs to is set."""
        await self._candidates.add(candidate_init)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.port is not None:
            self.port.close()
        self._forwarded.clear()
        await self.pc.close()
