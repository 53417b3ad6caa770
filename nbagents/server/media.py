"""WebRTC media and data for one participant: its two aiortc PeerConnections, relaying media undecoded.

A LiveKit client uses two PeerConnections: it offers on its *publisher* connection (its tracks and its
data channels towards the server), and the server offers on the *subscriber* connection (other
participants' tracks and the server's ``_reliable``/``_lossy`` data channels towards the client).

aiortc provides ICE, DTLS, SRTP, SCTP and the SDP; the RTP itself is taken over by the relay
(forwarding.py): each published track's packets go, rewritten but never decoded, to every subscriber,
as livekit-server forwards them.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable

from aiortc import (
    RTCBundlePolicy,
    RTCConfiguration,
    RTCDataChannel,
    RTCPeerConnection,
    RTCRtpCodecCapability,
    RTCRtpSender,
    RTCRtpTransceiver,
    RTCSessionDescription,
)

from nbagents.server import _aiortc
from nbagents.server.forwarding import Codec, DownTrack, RtpPort, TrackRelay
from nbagents.server.ice import TrickledCandidates
from nbagents.server.sdp import MediaSection, finish_answer, media_sections

log = logging.getLogger(__name__)

_aiortc.configure_codecs()  # every PeerConnection of the server negotiates the relay's codecs
_aiortc.share_certificate()  # and uses the same DTLS certificate
_aiortc.skip_receive_estimators()  # and relays what it receives: aiortc's receivers are never fed
_aiortc.demultiplex_by_first_byte()  # and tells media from STUN by the first byte, as RFC 7983 does

DATA_CHANNEL_LABELS = ("_reliable", "_lossy")
#: messages kept for a subscriber data channel that is not open yet (delivered once it opens)
DATA_BACKLOG = 256


def negotiated_codec(transceiver: RTCRtpTransceiver) -> Codec | None:
    """The codec the client sends on a publisher transceiver, as the last answer negotiated it."""
    codec = _aiortc.negotiated_codec(transceiver)
    if codec is None:
        return None
    return Codec(codec.mimeType, codec.clockRate, codec.payloadType, _parameters(codec.parameters))


def _parameters(parameters: dict[str, object]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((str(k), str(v)) for k, v in parameters.items()))


def _configuration() -> RTCConfiguration:
    """No STUN/TURN (local only), and max-bundle: every section on one transport from the start.

    With aiortc's default (balanced) policy, a second audio section added in a renegotiation is bound to the
    first one's provisional transport, which the BUNDLE answer then discards: that track stays silent.
    """
    return RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)


class _PeerSide:
    """What both PeerConnections share: trickled remote candidates (held until the remote description is
    set, see ``ice``), and transceivers added while connecting started once connected (see _aiortc)."""

    pc: RTCPeerConnection
    candidates: TrickledCandidates

    def _watch_connection(self) -> None:
        self.candidates = TrickledCandidates(self.pc)
        self.pc.on("connectionstatechange", self._on_state)

    def _on_state(self) -> None:
        if self.pc.connectionState == "connected":
            _aiortc.start_pending_transceivers(self.pc)

    async def add_candidate(self, candidate_init: str) -> None:
        """Apply a trickled candidate (JSON RTCIceCandidateInit), or hold it until the remote description."""
        await self.candidates.add(candidate_init)


class PublisherPeer(_PeerSide):
    """The client's publisher PeerConnection, seen from the server: the client offers, the server answers.

    Its RTP goes to the relay (``port``); ``on_track(section, transceiver)`` reports each newly sent track
    and ``on_track_stopped(section)`` each track the client stopped sending.
    """

    def __init__(
        self,
        on_track: Callable[[MediaSection, RTCRtpTransceiver], None],
        on_track_stopped: Callable[[MediaSection], None],
        on_data: Callable[[str, bytes], None],
    ) -> None:
        self.pc = RTCPeerConnection(_configuration())
        self.port: RtpPort | None = None  # once the first offer created the transport
        self._on_track = on_track
        self._on_track_stopped = on_track_stopped
        self._on_data = on_data
        self._announced: dict[str, MediaSection] = {}  # mid -> the section whose track was reported
        self._lock = asyncio.Lock()
        self.pc.on("datachannel", self._attach_channel)
        self._watch_connection()

    async def answer(self, offer_sdp: str) -> str:
        """Apply an offer and return the answer SDP; reports newly sent and stopped tracks."""
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
            await self.candidates.remote_described()
            answer = await self.pc.createAnswer()
            await self.pc.setLocalDescription(answer)
            for transceiver in self.pc.getTransceivers():
                section = sections.get(transceiver.mid or "")
                if section is None:
                    continue
                previous = self._announced.get(section.mid)
                if previous is not None and (not section.sending or previous.track_id != section.track_id):
                    del self._announced[section.mid]  # stopped, or the client reused the section for a new track
                    self._on_track_stopped(previous)
                if section.sending and section.mid not in self._announced:
                    self._announced[section.mid] = section
                    self._on_track(section, transceiver)
            return finish_answer(self.pc.localDescription.sdp, offered)

    def relay(self, section: MediaSection, track_sid: str, codec: Codec,
              on_media: Callable[[], None] | None = None) -> TrackRelay:
        """Start relaying the track the client sends on ``section``; ``on_media()`` runs at its first packet."""
        assert self.port is not None, "a section was answered, so the transport exists"
        relay = TrackRelay(track_sid, codec, self.port, section.rids, on_media=on_media)
        self.port.receive(section, relay)
        return relay

    def _attach_channel(self, channel: RTCDataChannel) -> None:
        label = channel.label

        @channel.on("message")
        def on_message(message: bytes | str) -> None:
            if isinstance(message, bytes):
                self._on_data(label, message)

    async def close(self) -> None:
        if self.port is not None:
            self.port.close()
        await self.pc.close()


class SubscriberPeer(_PeerSide):
    """The client's subscriber PeerConnection: the server offers other participants' tracks and its data channels.

    Offers are serialized: while one waits for its answer, further changes are folded into one more offer.
    """

    def __init__(self, send_offer: Callable[[str], None]) -> None:
        self.pc = RTCPeerConnection(_configuration())
        self._send_offer = send_offer
        self._channels = {
            label: self.pc.createDataChannel(label, ordered=(label == "_reliable"),
                                             maxRetransmits=None if label == "_reliable" else 0)
            for label in DATA_CHANNEL_LABELS
        }
        transport = _aiortc.dtls_transport(self.pc)
        assert transport is not None, "creating the data channels created the transport"
        self.port = RtpPort(transport)
        self._backlog: dict[str, list[bytes]] = {label: [] for label in DATA_CHANNEL_LABELS}
        for label, channel in self._channels.items():
            channel.on("open", lambda label=label: self._flush(label))
        self._senders: dict[str, tuple[RTCRtpTransceiver, DownTrack]] = {}
        self._deferred: dict[str, tuple[TrackRelay, str]] = {}  # track sid -> relay, until the first offer
        self._offered = False
        self._awaiting_answer = False
        self._renegotiate = False
        self._closed = False
        self._watch_connection()

    @property
    def forwarded_track_sids(self) -> set[str]:
        return set(self._senders) | set(self._deferred)

    def forward(self, relay: TrackRelay, participant_sid: str, track_sid: str) -> None:
        """Start relaying a published track to this client (takes effect with the next offer).

        Tracks are only added once the first offer (data channels only) is made: aiortc puts media sections
        before the data section in a first offer, and with BUNDLE it then stops the shared transport as if it
        were a redundant one, so the connection never starts.
        """
        if track_sid in self.forwarded_track_sids or self._closed:
            return
        if not self._offered:
            self._deferred[track_sid] = (relay, participant_sid)
            return
        self._add_sender(relay, participant_sid, track_sid)

    def _add_sender(self, relay: TrackRelay, participant_sid: str, track_sid: str) -> None:
        transceiver = self.pc.addTransceiver(relay.kind, direction="sendonly")
        transceiver.setCodecPreferences([_capability(relay.codec, transceiver.kind)])
        _aiortc.set_msid(transceiver.sender, f"{participant_sid}|{track_sid}", track_sid)
        downtrack = DownTrack(relay, self.port, ssrc=0)
        downtrack.ssrc = _aiortc.adopt_sender(transceiver.sender, downtrack.start, downtrack.stop)
        self.port.add_downtrack(downtrack)
        relay.attach(downtrack)
        self._senders[track_sid] = (transceiver, downtrack)

    def stop_forwarding(self, track_sid: str) -> bool:
        """Stop relaying a track; aiortc has no removeTrack, so its section becomes inactive."""
        if self._deferred.pop(track_sid, None) is not None:
            return False
        entry = self._senders.pop(track_sid, None)
        if entry is None or self._closed:
            return False
        transceiver, downtrack = entry
        downtrack.stop()
        transceiver.direction = "inactive"
        # The section stays in the SDP; a later subscription to the same track gets a new section, and two
        # sections may not announce the same msid.
        _aiortc.set_msid(transceiver.sender, f"{track_sid}-stopped", str(uuid.uuid4()))
        return True

    def send_data(self, label: str, payload: bytes) -> None:
        channel = self._channels.get(label)
        if channel is None or self._closed:
            return
        if channel.readyState == "open":
            channel.send(payload)
        elif channel.readyState == "connecting" and len(self._backlog[label]) < DATA_BACKLOG:
            self._backlog[label].append(payload)

    def _flush(self, label: str) -> None:
        backlog, self._backlog[label] = self._backlog[label], []
        for payload in backlog:
            self._channels[label].send(payload)

    async def negotiate(self) -> None:
        """Send a new offer now, or right after the answer to the one in flight."""
        if self._closed:
            return
        if self._awaiting_answer:
            self._renegotiate = True
            return
        self._awaiting_answer = True
        offer = await self.pc.createOffer()
        await self.pc.setLocalDescription(offer)  # aiortc gathers all candidates here and puts them in the SDP
        self._send_offer(self.pc.localDescription.sdp)
        if not self._offered:
            self._offered = True
            deferred, self._deferred = self._deferred, {}
            for track_sid, (relay, participant_sid) in deferred.items():
                if not relay.closed:
                    self._add_sender(relay, participant_sid, track_sid)
            self._renegotiate = self._renegotiate or bool(deferred)

    async def apply_answer(self, sdp: str) -> None:
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))
        await self.candidates.remote_described()
        self._awaiting_answer = False
        if self._renegotiate:
            self._renegotiate = False
            await self.negotiate()

    async def close(self) -> None:
        self._closed = True
        self.port.close()
        self._senders.clear()
        await self.pc.close()


def _capability(codec: Codec, kind: str) -> RTCRtpCodecCapability:
    """The server's own codec entry (as aiortc lists it) matching a publisher's negotiated codec."""
    for capability in RTCRtpSender.getCapabilities(kind).codecs:
        if capability.mimeType.lower() == codec.mime_type.lower() and capability.clockRate == codec.clock_rate \
                and _parameters(capability.parameters) == codec.parameters:
            return capability
    raise ValueError(f"no codec {codec.mime_type} to offer")
