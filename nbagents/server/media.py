"""WebRTC media and data for one participant: aiortc PeerConnections and undecoded Opus relay.

A LiveKit client uses two PeerConnections: it offers on its *publisher* connection (its tracks and its
data channels towards the server), and the server offers on the *subscriber* connection (other
participants' tracks and the server's ``_reliable``/``_lossy`` data channels towards the client).

Audio is relayed like livekit-server does it: the Opus payload of every RTP packet a publisher sends is
handed unchanged to each subscriber's sender, which only rewrites SSRC, sequence number and timestamp
offset. No decoding or encoding happens, which costs about a tenth of transcoding and adds no latency.
"""

from __future__ import annotations

import asyncio
import fractions
import json
import logging
from collections.abc import Callable

import av
from aiortc import (
    RTCBundlePolicy,
    MediaStreamTrack,
    RTCConfiguration,
    RTCDataChannel,
    RTCIceCandidate,
    RTCPeerConnection,
    RTCRtpReceiver,
    RTCRtpTransceiver,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError
from aiortc.rtp import RtpPacket
from aiortc.sdp import candidate_from_sdp

from nbagents.server import _aiortc
from nbagents.server.sdp import MediaSection, media_sections

log = logging.getLogger(__name__)

OPUS_TIME_BASE = fractions.Fraction(1, 48000)
#: packets a slow subscriber may lag before the oldest are dropped (20 ms each): bounded latency, not memory
FORWARD_QUEUE_PACKETS = 10
DATA_CHANNEL_LABELS = ("_reliable", "_lossy")
#: messages kept for a subscriber data channel that is not open yet (delivered once it opens)
DATA_BACKLOG = 256


class AudioFanout:
    """Taps one published audio track's receiver and hands each Opus payload to every subscriber, undecoded."""

    def __init__(self, receiver: RTCRtpReceiver, opus_payload_type: int) -> None:
        self._receiver = receiver
        self._payload_type = opus_payload_type
        self._subscribers: set[ForwardedAudioTrack] = set()
        self._last_timestamp: int | None = None
        self._extended_timestamp = 0
        self._decoder_stopped = False
        _aiortc.tap_rtp(receiver, self._on_rtp)

    def subscribe(self, track_sid: str) -> ForwardedAudioTrack:
        track = ForwardedAudioTrack(self, track_sid)
        self._subscribers.add(track)
        return track

    def discard(self, track: ForwardedAudioTrack) -> None:
        self._subscribers.discard(track)

    def close(self) -> None:
        for track in list(self._subscribers):
            track.stop()

    def _on_rtp(self, packet: RtpPacket) -> bool:
        if not self._decoder_stopped:
            log.debug("first RTP packet of a published track (ssrc %s, %d subscribers)", packet.ssrc,
                      len(self._subscribers))
            self._decoder_stopped = True
            _aiortc.stop_decoding(self._receiver)
        if packet.payload and packet.payload_type == self._payload_type:
            # Unwrap the 32-bit RTP timestamp so gaps (DTX, loss) survive into the relayed stream.
            if self._last_timestamp is not None:
                delta = (packet.timestamp - self._last_timestamp) & 0xFFFFFFFF
                self._extended_timestamp += delta - (1 << 32) if delta >= 1 << 31 else delta
            self._last_timestamp = packet.timestamp
            for track in tuple(self._subscribers):
                track.push(packet.payload, self._extended_timestamp)
        return True


def discard_media(receiver: RTCRtpReceiver) -> None:
    """Drop every packet ``receiver`` gets before aiortc buffers or decodes it (media that is not relayed)."""
    _aiortc.tap_rtp(receiver, lambda packet: False)


class ForwardedAudioTrack(MediaStreamTrack):
    """Yields already-encoded Opus packets (``av.Packet``); aiortc's sender packs them without re-encoding."""

    kind = "audio"

    def __init__(self, fanout: AudioFanout, track_sid: str) -> None:
        super().__init__()
        self.track_sid = track_sid
        self._fanout = fanout
        self._queue: asyncio.Queue[tuple[bytes, int]] = asyncio.Queue(FORWARD_QUEUE_PACKETS)
        self._sending = False

    def push(self, payload: bytes, timestamp: int) -> None:
        if not self._sending:  # the sender has not started (DTLS, renegotiation): don't build a stale burst
            return
        if self._queue.full():
            self._queue.get_nowait()
        self._queue.put_nowait((payload, timestamp))

    async def recv(self) -> av.Packet:
        if self.readyState != "live":
            raise MediaStreamError
        if not self._sending:
            log.debug("relaying %s to a subscriber: its sender started", self.track_sid)
        self._sending = True
        payload, timestamp = await self._queue.get()
        packet = av.Packet(payload)
        packet.pts = timestamp
        packet.time_base = OPUS_TIME_BASE
        return packet

    def stop(self) -> None:
        self._fanout.discard(self)
        super().stop()


def _configuration() -> RTCConfiguration:
    """No STUN/TURN (local only), and max-bundle: every section on one transport from the start.

    With aiortc's default (balanced) policy, a second audio section added in a renegotiation is bound to the
    first one's provisional transport, which the BUNDLE answer then discards: that track stays silent.
    """
    return RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)


class _PeerSide:
    """What both PeerConnections share.

    Trickled remote candidates are held until the remote description is set: clients send candidates as
    soon as they gather them, which can be before the offer or answer they belong to is applied here, and
    aiortc would drop them. Once connected, transceivers added meanwhile are started (see _aiortc).
    """

    pc: RTCPeerConnection

    def __init__(self) -> None:
        self._early_candidates: list[RTCIceCandidate] = []

    def _watch_connection(self) -> None:
        self.pc.on("connectionstatechange", self._on_state)

    def _on_state(self) -> None:
        if self.pc.connectionState == "connected":
            _aiortc.start_pending_transceivers(self.pc)

    async def add_candidate(self, candidate_init: str) -> None:
        """Apply a trickled candidate (``TrickleRequest.candidateInit`` is the browser's JSON RTCIceCandidateInit)."""
        init = json.loads(candidate_init)
        text = init.get("candidate") or ""
        if not text:  # end-of-candidates
            return
        candidate = candidate_from_sdp(text.split(":", 1)[1] if text.startswith("candidate:") else text)
        candidate.sdpMid = init.get("sdpMid")
        candidate.sdpMLineIndex = init.get("sdpMLineIndex")
        if self.pc.remoteDescription is None:
            self._early_candidates.append(candidate)
        else:
            await self.pc.addIceCandidate(candidate)

    async def _apply_early_candidates(self) -> None:
        early, self._early_candidates = self._early_candidates, []
        for candidate in early:
            await self.pc.addIceCandidate(candidate)


class PublisherPeer(_PeerSide):
    """The client's publisher PeerConnection, seen from the server: the client offers, the server answers."""

    def __init__(
        self,
        on_track: Callable[[MediaSection, RTCRtpTransceiver], None],
        on_track_stopped: Callable[[MediaSection], None],
        on_data: Callable[[str, bytes], None],
    ) -> None:
        super().__init__()
        self.pc = RTCPeerConnection(_configuration())
        self._on_track = on_track
        self._on_track_stopped = on_track_stopped
        self._on_data = on_data
        self._announced: dict[str, MediaSection] = {}  # mid -> the section whose track was reported
        self._lock = asyncio.Lock()
        self.pc.on("datachannel", self._attach_channel)
        self._watch_connection()

    async def answer(self, offer_sdp: str) -> str:
        """Apply an offer and return the answer SDP; reports newly sent and stopped tracks."""
        sections = {s.mid: s for s in media_sections(offer_sdp)}
        async with self._lock:
            await self.pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
            await self._apply_early_candidates()
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
            return self.pc.localDescription.sdp

    def _attach_channel(self, channel: RTCDataChannel) -> None:
        label = channel.label

        @channel.on("message")
        def on_message(message: bytes | str) -> None:
            if isinstance(message, bytes):
                self._on_data(label, message)

    async def close(self) -> None:
        await self.pc.close()


class SubscriberPeer(_PeerSide):
    """The client's subscriber PeerConnection: the server offers other participants' tracks and its data channels.

    Offers are serialized: while one waits for its answer, further changes are folded into one more offer.
    """

    def __init__(self, send_offer: Callable[[str], None]) -> None:
        super().__init__()
        self.pc = RTCPeerConnection(_configuration())
        self._send_offer = send_offer
        self._channels = {
            label: self.pc.createDataChannel(label, ordered=(label == "_reliable"),
                                             maxRetransmits=None if label == "_reliable" else 0)
            for label in DATA_CHANNEL_LABELS
        }
        self._backlog: dict[str, list[bytes]] = {label: [] for label in DATA_CHANNEL_LABELS}
        for label, channel in self._channels.items():
            channel.on("open", lambda label=label: self._flush(label))
        self._senders: dict[str, RTCRtpTransceiver] = {}
        self._deferred: dict[str, tuple[AudioFanout, str]] = {}  # track sid -> relay, until the first offer
        self._offered = False
        self._stopping: set[asyncio.Future[None]] = set()
        self._awaiting_answer = False
        self._renegotiate = False
        self._closed = False
        self._watch_connection()

    @property
    def forwarded_track_sids(self) -> set[str]:
        return set(self._senders) | set(self._deferred)

    def forward(self, fanout: AudioFanout, participant_sid: str, track_sid: str) -> None:
        """Start relaying a published audio track to this client (takes effect with the next offer).

        Tracks are only added once the first offer (data channels only) is made: aiortc puts audio sections
        before the data section in a first offer, and with BUNDLE it then stops the shared transport as if it
        were a redundant one, so the connection never starts.
        """
        if track_sid in self.forwarded_track_sids or self._closed:
            return
        if not self._offered:
            self._deferred[track_sid] = (fanout, participant_sid)
            return
        self._add_sender(fanout, participant_sid, track_sid)

    def _add_sender(self, fanout: AudioFanout, participant_sid: str, track_sid: str) -> None:
        track = fanout.subscribe(track_sid)
        transceiver = self.pc.addTransceiver(track, direction="sendonly")
        _aiortc.set_msid(transceiver.sender, f"{participant_sid}|{track_sid}", track_sid)
        self._senders[track_sid] = transceiver

    def stop_forwarding(self, track_sid: str) -> bool:
        """Stop relaying a track; aiortc has no removeTrack, so detach it and make its section inactive."""
        if self._deferred.pop(track_sid, None) is not None:
            return False
        transceiver = self._senders.pop(track_sid, None)
        if transceiver is None or self._closed:
            return False
        track = transceiver.sender.track
        if track is not None:
            track.stop()
        transceiver.sender.replaceTrack(None)
        transceiver.direction = "inactive"
        # A detached sender would otherwise poll for a new track 50 times a second for the session's life.
        stopping = asyncio.ensure_future(transceiver.sender.stop())
        self._stopping.add(stopping)
        stopping.add_done_callback(self._stopping.discard)
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
            for track_sid, (fanout, participant_sid) in deferred.items():
                self._add_sender(fanout, participant_sid, track_sid)
            self._renegotiate = self._renegotiate or bool(deferred)

    async def apply_answer(self, sdp: str) -> None:
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))
        await self._apply_early_candidates()
        self._awaiting_answer = False
        if self._renegotiate:
            self._renegotiate = False
            await self.negotiate()


    async def close(self) -> None:
        self._closed = True
        for transceiver in self._senders.values():
            if transceiver.sender.track is not None:
                transceiver.sender.track.stop()
        self._senders.clear()
        await self.pc.close()
