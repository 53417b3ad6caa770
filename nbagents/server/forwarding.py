"""Selective forwarding: published RTP streams relayed to subscribers without decoding, as livekit-server does.

- ``RtpPort`` owns the RTP and RTCP of one PeerConnection's (bundled) transport. On a publisher's
  connection it binds each incoming SSRC to its track and simulcast layer (announced SSRCs, else the
  packet's ``mid``/``rid`` header extensions) and sends the publisher what a receiver owes it: receiver
  reports, NACKs for gaps, keyframe requests (PLI) and a bandwidth estimate (REMB). On a subscriber's
  connection it sends the rewritten packets and serves the subscriber's NACKs and PLIs.
- ``TrackRelay`` is one published track: its layers (one per simulcast encoding, or a single one), the
  layer being forwarded, and its subscribers.
- ``DownTrack`` is one subscription: it rewrites SSRC, payload type, sequence number and timestamp so the
  subscriber sees one continuous stream (across layer switches and late starts), starts video on a
  keyframe, and keeps the counters its sender reports need.

Simulcast: one layer is forwarded to every subscriber — the best one the publisher is sending (a layer
silent for ``STALE_LAYER`` seconds gives way to the next); switches happen on keyframes. livekit-server
instead picks a layer per subscriber from its bandwidth and the size it renders at.

Per packet the work is a header read, a dictionary lookup, and per subscriber one header rewrite, one
SRTP protect and one ``sendto``, all synchronous in the receive path: nothing waits in a queue.
"""

from __future__ import annotations

import asyncio
import logging
import random
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass

from nbagents.server import _aiortc, rtp
from nbagents.server.sdp import MediaSection

log = logging.getLogger(__name__)

_SEQ_TS = struct.Struct("!HI")
_U32 = struct.Struct("!I")

#: video packets kept per layer to answer subscribers' NACKs (at ~1 Mbit/s about a second of packets)
CACHE_PACKETS = 1024
_CACHE_MASK = CACHE_PACKETS - 1
#: a layer that sent nothing for this long is treated as paused (the publisher's encoder stopped it)
STALE_LAYER = 1.5
#: how long a new simulcast track waits for its best layer before it forwards a lower one
FIRST_LAYER_GRACE = 0.5
#: the shortest interval between two keyframe requests for one layer (livekit-server: 0.5 s for its low layer)
KEYFRAME_REQUEST_INTERVAL = 0.5
#: interval of the receiver reports (and REMB) sent to publishers, seconds
REPORT_INTERVAL = 1.0
#: the bandwidth the server announces to video publishers (REMB). The relay does not estimate bandwidth:
#: on one machine the path is not the limit, so it lets the publisher's encoders use their configured
#: maximum bitrates, which is what turns on every simulcast layer.
REMB_BITRATE = 30_000_000
#: how many times a missing video packet is NACKed, and how long apart
NACK_TRIES, NACK_INTERVAL = 3, 0.05
#: a gap larger than this is a restart or a jump, not loss: it is not NACKed
NACK_MAX_GAP = 200

#: share of RTP packets dropped on arrival and on sending (``nbagents server --simulate-loss``), to try how
#: clients and agents cope with a lossy network; 0 in normal operation
SIMULATED_LOSS = 0.0

#: LiveKit's simulcast layer names, lowest to highest; other names rank by the order the offer lists them
_LIVEKIT_RIDS = ("q", "h", "f")


def _ntp_now() -> int:
    now = time.time() + 2208988800  # seconds from 1900 (NTP epoch) to 1970
    return int(now * (1 << 32))


@dataclass(frozen=True)
class Codec:
    """A negotiated codec: what the relay needs to know to forward it."""

    mime_type: str  # as livekit-server names it in TrackInfo, e.g. "video/VP8", "audio/opus"
    clock_rate: int
    payload_type: int  # on the publisher's connection
    parameters: tuple[tuple[str, str], ...] = ()  # its fmtp parameters (the H.264 profile, ...)

    @property
    def kind(self) -> str:
        return self.mime_type.split("/")[0].lower()


class Layer:
    """One RTP stream a publisher sends for a track (a simulcast encoding, or the track's only stream).

    Keeps the receive statistics of RFC 3550 appendix A (for receiver reports), the publisher's last
    sender report, the gaps still being NACKed, and for video the recent packets subscribers may NACK.
    """

    def __init__(self, relay: TrackRelay, rid: str, rank: int) -> None:
        self.relay = relay
        self.rid = rid
        self.rank = rank
        self.ssrc = 0
        self.received = 0
        self.bytes = 0
        self.base_seq = -1
        self.max_seq = -1
        self.cycles = 0
        self.jitter = 0.0
        self._transit: float | None = None
        self.last_arrival = 0.0
        self.last_sr: rtp.SenderReport | None = None
        self.last_sr_arrival = 0.0
        self._expected_prior = 0
        self._received_prior = 0
        self.last_keyframe_request = -1e9
        self.missing: dict[int, int] = {}  # sequence number -> NACKs sent
        self.cache: list[bytes | None] | None = [None] * CACHE_PACKETS if relay.codec.kind == "video" else None

    def receive(self, seq: int, timestamp: int, now: float, size: int) -> int:
        """Account for one packet; returns how many packets are missing just before it (0 if none)."""
        self.received += 1
        self.bytes += size
        self.last_arrival = now
        transit = now * self.relay.codec.clock_rate - timestamp
        if self._transit is not None:
            delta = abs(transit - self._transit)
            if delta < self.relay.codec.clock_rate:  # a timestamp jump (DTX, restart) is not jitter
                self.jitter += (delta - self.jitter) / 16
        self._transit = transit
        if self.max_seq < 0:
            self.base_seq = self.max_seq = seq
            return 0
        ahead = (seq - self.max_seq) & 0xFFFF
        if ahead == 0:
            return 0
        if ahead < 0x8000:  # in order (maybe after a gap)
            if seq < self.max_seq:
                self.cycles += 1 << 16
            self.max_seq = seq
            return ahead - 1
        self.missing.pop(seq, None)  # late: a retransmission or a reordered packet
        return 0

    def report_block(self, now: float) -> rtp.ReportBlock:
        extended_max = self.cycles + self.max_seq
        expected = extended_max - self.base_seq + 1
        expected_interval = expected - self._expected_prior
        received_interval = self.received - self._received_prior
        self._expected_prior, self._received_prior = expected, self.received
        lost_interval = expected_interval - received_interval
        fraction = (lost_interval << 8) // expected_interval if expected_interval > 0 and lost_interval > 0 else 0
        last_sr, delay = 0, 0
        if self.last_sr is not None:
            last_sr = (self.last_sr.ntp >> 16) & 0xFFFFFFFF
            delay = int((now - self.last_sr_arrival) * 65536)
        return rtp.ReportBlock(self.ssrc, min(fraction, 255), expected - self.received, extended_max,
                               int(self.jitter), last_sr, delay)


class TrackRelay:
    """One published track: its layers, the layer forwarded, and the subscribers' down tracks."""

    def __init__(self, track_sid: str, codec: Codec, port: RtpPort, rids: tuple[str, ...] = (), *,
                 on_media: Callable[[], None] | None = None) -> None:
        self.track_sid = track_sid
        self._on_media = on_media
        self.codec = codec
        self.kind = codec.kind
        self.port = port
        self.downtracks: list[DownTrack] = []
        self.layers: dict[str, Layer] = {}
        order = list(reversed(rids))  # the offer lists layers best first (f;h;q); rank lowest first
        for rid in rids:
            rank = _LIVEKIT_RIDS.index(rid) if all(r in _LIVEKIT_RIDS for r in rids) else order.index(rid)
            self.layers[rid] = Layer(self, rid, rank)
        if not rids:
            self.layers[""] = Layer(self, "", 0)
        self.current: Layer | None = None
        self._best_rank = max(layer.rank for layer in self.layers.values())
        self._first_arrival: float | None = None
        self._is_keyframe = rtp.KEYFRAME_DETECTORS.get(codec.mime_type.lower())
        self.closed = False

    def layer(self, rid: str) -> Layer | None:
        return self.layers.get(rid)

    # --- publisher side

    def receive(self, layer: Layer, data: bytes, now: float) -> None:
        """One RTP packet of ``layer`` from the publisher: account for it and forward it if it is the current layer."""
        if data[1] & 0x7F != self.codec.payload_type:
            return  # not the negotiated codec (e.g. comfort noise or a payload type not forwarded)
        seq, timestamp = _SEQ_TS.unpack_from(data, 2)
        gap = layer.receive(seq, timestamp, now, len(data))
        if self._on_media is not None:
            on_media, self._on_media = self._on_media, None
            on_media()
        keyframe = True
        cache = layer.cache
        if cache is not None:  # video
            cache[seq & _CACHE_MASK] = data
            if gap and gap <= NACK_MAX_GAP:
                self._nack(layer, [(seq - n) & 0xFFFF for n in range(gap, 0, -1)])
            detector = self._is_keyframe
            keyframe = detector is not None and detector(data[rtp.payload_offset(data):])
            current = self.current
            if layer is not current:
                if current is None:
                    if self._first_arrival is None:
                        self._first_arrival = now
                    if layer.rank < self._best_rank and now - self._first_arrival < FIRST_LAYER_GRACE:
                        self.request_keyframe(self._best_layer(now), now)
                        return  # a simulcast track starts on its best layer when that one comes soon
                if current is None or layer.rank > current.rank or now - current.last_arrival > STALE_LAYER:
                    if not keyframe:
                        self.request_keyframe(layer, now)
                        return
                    if current is not None:
                        log.debug("%s: forwarding layer %r instead of %r", self.track_sid, layer.rid, current.rid)
                    self.current = layer
                else:
                    return
        elif layer is not self.current:
            self.current = layer
        for downtrack in self.downtracks:
            downtrack.forward(data, seq, timestamp, keyframe, layer, now)

    def _best_layer(self, now: float) -> Layer | None:
        live = [layer for layer in self.layers.values() if layer.ssrc and now - layer.last_arrival < STALE_LAYER]
        return max(live, key=lambda layer: layer.rank) if live else None

    def sender_report(self, layer: Layer, report: rtp.SenderReport, now: float) -> None:
        """The publisher's sender report for ``layer``: kept for receiver reports, translated for subscribers."""
        layer.last_sr, layer.last_sr_arrival = report, now
        for downtrack in self.downtracks:
            if downtrack.layer is layer:
                downtrack.send_sender_report(report)

    def request_keyframe(self, layer: Layer | None = None, now: float | None = None) -> None:
        """Ask the publisher for a keyframe on ``layer`` (default: the one forwarded), at most every 0.5 s."""
        layer = layer or self.current
        if layer is None or not layer.ssrc or self.kind != "video":
            return
        now = time.monotonic() if now is None else now
        if now - layer.last_keyframe_request < KEYFRAME_REQUEST_INTERVAL:
            return
        layer.last_keyframe_request = now
        self.port.send_rtcp(rtp.pli(self.port.rtcp_ssrc, layer.ssrc))

    def _nack(self, layer: Layer, lost: list[int]) -> None:
        for seq in lost:
            layer.missing[seq] = 0
        self.port.schedule_nacks(layer)

    # --- subscriber side

    def attach(self, downtrack: DownTrack) -> None:
        self.downtracks.append(downtrack)

    def detach(self, downtrack: DownTrack) -> None:
        if downtrack in self.downtracks:
            self.downtracks.remove(downtrack)

    def close(self) -> None:
        self.closed = True
        for downtrack in list(self.downtracks):
            downtrack.stop()
        self.port.forget(self)


class DownTrack:
    """One subscriber's copy of a relayed track, sent on the subscriber's ``RtpPort`` under its own SSRC."""

    def __init__(self, relay: TrackRelay, port: RtpPort, ssrc: int) -> None:
        self.relay = relay
        self.port = port
        self.ssrc = ssrc
        self.payload_type: int | None = None  # known once the subscriber's connection can send
        self.layer: Layer | None = None
        self.packets = 0
        self.octets = 0
        self._resync = True
        self._sent_any = False
        self._anchor_seq = 0
        self._seq_offset = 0
        self._ts_offset = 0
        self._last_seq = random.randint(0, 0x7FFF)  # a fresh stream starts in the lower half, as libwebrtc's do
        self._last_ts = random.getrandbits(32)
        self._last_time = 0.0
        self.stopped = False

    def start(self, codecs: list[tuple[str, int, dict[str, object]]]) -> None:
        """The subscriber's connection is ready to send, with these negotiated codecs (MIME type, payload type,
        parameters): forward from the next packet (video: from the next keyframe) under the payload type the
        subscriber gave the relayed codec."""
        if self.stopped:
            return
        payload_type = _payload_type_for(self.relay.codec, codecs)
        if payload_type is None:
            log.warning("a subscriber's connection negotiated no %s for %s: not relaying it", self.relay.codec.mime_type,
                        self.relay.track_sid)
            return
        first = self.payload_type is None
        self.payload_type = payload_type
        if first:
            log.debug("relaying %s to a subscriber: its sender started", self.relay.track_sid)
            self.relay.request_keyframe()

    def stop(self) -> None:
        self.stopped = True
        self.payload_type = None
        self.relay.detach(self)
        self.port.remove_downtrack(self)

    def forward(self, data: bytes, seq: int, timestamp: int, keyframe: bool, layer: Layer, now: float) -> None:
        payload_type = self.payload_type
        if payload_type is None:
            return
        if self._resync or layer is not self.layer:
            if not keyframe:  # video joins (or changes layer) on a keyframe, or its decoder has nothing to start from
                self.relay.request_keyframe(layer, now)
                return
            self._anchor(seq, timestamp, layer, now)
        elif (seq - self._anchor_seq) & 0xFFFF >= 0x8000:
            return  # older than where this stream was joined: its sequence numbers are taken
        out_seq = (seq + self._seq_offset) & 0xFFFF
        if self.port.send_rtp(rtp.rewrite(data, payload_type, out_seq, (timestamp + self._ts_offset) & 0xFFFFFFFF,
                                          self.ssrc)):
            self.packets += 1
            self.octets += len(data)
            if (out_seq - self._last_seq) & 0xFFFF < 0x8000:
                self._last_seq = out_seq
                self._last_ts = (timestamp + self._ts_offset) & 0xFFFFFFFF
                self._last_time = now
            self._sent_any = True

    def _anchor(self, seq: int, timestamp: int, layer: Layer, now: float) -> None:
        """Continue this stream's sequence numbers and timestamps from ``layer``'s packet ``seq``."""
        elapsed = int((now - self._last_time) * self.relay.codec.clock_rate) if self._sent_any else 0
        self._seq_offset = (self._last_seq + 1 - seq) & 0xFFFF
        self._ts_offset = (self._last_ts + max(1, elapsed) - timestamp) & 0xFFFFFFFF
        self._anchor_seq = seq
        self.layer = layer
        self._resync = False

    def resend(self, lost: tuple[int, ...]) -> None:
        """Retransmit packets the subscriber NACKed, from the layer's packet cache (video only)."""
        layer, payload_type = self.layer, self.payload_type
        if layer is None or layer.cache is None or payload_type is None:
            return
        for out_seq in lost:
            seq = (out_seq - self._seq_offset) & 0xFFFF
            if (seq - self._anchor_seq) & 0xFFFF >= 0x8000:
                continue
            data = layer.cache[seq & _CACHE_MASK]
            if data is None or _SEQ_TS.unpack_from(data, 2)[0] != seq:
                continue
            timestamp = _SEQ_TS.unpack_from(data, 2)[1]
            self.port.send_rtp(rtp.rewrite(data, payload_type, out_seq, (timestamp + self._ts_offset) & 0xFFFFFFFF,
                                           self.ssrc))

    def send_sender_report(self, report: rtp.SenderReport) -> None:
        if self._sent_any:
            self.port.send_rtcp(rtp.sender_report(self.ssrc, report.ntp, report.rtp_timestamp + self._ts_offset,
                                                  self.packets, self.octets))

    def feedback(self, feedback: rtp.Feedback) -> None:
        if feedback.keyframe:
            self.relay.request_keyframe(self.layer)
        if feedback.lost:
            self.resend(feedback.lost)


def _payload_type_for(codec: Codec, negotiated: list[tuple[str, int, dict[str, object]]]) -> int | None:
    """The payload type a subscriber's negotiation gave ``codec`` (same MIME type, the same parameters if any has)."""
    same = [(pt, parameters) for mime, pt, parameters in negotiated if mime.lower() == codec.mime_type.lower()]
    wanted = dict(codec.parameters)
    for pt, parameters in same:
        if {str(k): str(v) for k, v in parameters.items()} == wanted:
            return pt
    return same[0][0] if same else None


class RtpPort:
    """The RTP and RTCP of one PeerConnection's transport, taken over from aiortc (see ``_aiortc.take_over_rtp``)."""

    def __init__(self, transport: object) -> None:
        self._writer = _aiortc.SrtpWriter(transport)  # type: ignore[arg-type]
        self._loss = SIMULATED_LOSS
        self.send_rtp = self._writer.send_rtp if not self._loss else self._send_rtp_lossy
        self.send_rtcp = self._writer.send_rtcp
        self.rtcp_ssrc = random.getrandbits(32) or 1
        self._by_ssrc: dict[int, Layer] = {}
        self._sections: dict[str, tuple[TrackRelay, int | None, int | None]] = {}  # mid -> relay, mid/rid ext ids
        self._relays: set[TrackRelay] = set()
        self._downtracks: dict[int, DownTrack] = {}
        self._unknown_logged: set[int] = set()
        self._reports: asyncio.Task[None] | None = None
        self._nack_timer: asyncio.TimerHandle | None = None
        self._nacking: set[Layer] = set()
        self.closed = False
        _aiortc.take_over_rtp(transport, self._on_rtp, self._on_rtcp)  # type: ignore[arg-type]
        if self._loss:
            _aiortc.drop_received_rtp(transport, lambda: random.random() < self._loss)  # type: ignore[arg-type]

    # --- receiving (a publisher's connection)

    def receive(self, section: MediaSection, relay: TrackRelay) -> None:
        """Route the section's packets to ``relay``: by its announced SSRCs, else by the packets' mid and rid."""
        self._relays.add(relay)
        if not section.rids:
            for ssrc in section.ssrcs:
                self._bind(ssrc, relay.layers[""])
        self._sections[section.mid] = (relay, section.extensions.get(rtp.MID_URI),
                                       section.extensions.get(rtp.RID_URI))
        if self._reports is None:
            self._reports = asyncio.ensure_future(self._report_loop())

    def forget(self, relay: TrackRelay) -> None:
        self._relays.discard(relay)
        for ssrc, layer in list(self._by_ssrc.items()):
            if layer.relay is relay:
                del self._by_ssrc[ssrc]
        for mid, (section_relay, _, _) in list(self._sections.items()):
            if section_relay is relay:
                del self._sections[mid]

    def _bind(self, ssrc: int, layer: Layer) -> None:
        self._by_ssrc[ssrc] = layer
        layer.ssrc = ssrc
        if layer.cache is not None:
            # At once, not with the next report: libwebrtc takes a REMB as its estimate only in its first
            # seconds; until then the encoders keep the start bitrate and drop their upper layers.
            self._send_remb()

    def _send_remb(self) -> None:
        video = [layer.ssrc for layer in self._by_ssrc.values() if layer.cache is not None]
        if video:
            self.send_rtcp(rtp.remb(self.rtcp_ssrc, REMB_BITRATE, video))

    def _resolve(self, data: bytes, ssrc: int) -> Layer | None:
        """Bind an SSRC seen for the first time to its layer, from its mid and rid header extensions."""
        elements = rtp.header_extensions(data)
        mid = None
        for section_mid, (relay, mid_id, rid_id) in self._sections.items():
            if mid_id is not None and elements.get(mid_id, b"").decode("ascii", "replace") == section_mid:
                mid = section_mid
                rid = elements.get(rid_id, b"").decode("ascii", "replace") if rid_id is not None else ""
                layer = relay.layer(rid) or (relay.layer("") if not rid else None)
                if layer is not None and not layer.ssrc:
                    self._bind(ssrc, layer)
                    log.debug("ssrc %d is layer %r of %s", ssrc, rid, relay.track_sid)
                    return layer
        if ssrc not in self._unknown_logged:
            self._unknown_logged.add(ssrc)
            log.debug("dropping RTP of unknown ssrc %d (mid %s)", ssrc, mid)
        return None

    def _send_rtp_lossy(self, data: bytes) -> bool:
        if random.random() < self._loss:
            return True  # as if sent, and lost on the way
        return self._writer.send_rtp(data)

    def _on_rtp(self, data: bytes) -> None:
        if len(data) < 12:
            return
        ssrc = _U32.unpack_from(data, 8)[0]
        layer = self._by_ssrc.get(ssrc)
        if layer is None:
            layer = self._resolve(data, ssrc)
            if layer is None:
                return
        layer.relay.receive(layer, data, time.monotonic())

    def _on_rtcp(self, data: bytes) -> None:
        now = time.monotonic()
        for message in rtp.parse_rtcp(data):
            if isinstance(message, rtp.SenderReport):
                layer = self._by_ssrc.get(message.ssrc)
                if layer is not None:
                    layer.relay.sender_report(layer, message, now)
            else:
                downtrack = self._downtracks.get(message.media_ssrc)
                if downtrack is not None:
                    downtrack.feedback(message)

    async def _report_loop(self) -> None:
        """Receiver reports (and REMB for video) to the publisher, about every second."""
        while not self.closed:
            await asyncio.sleep(REPORT_INTERVAL * (0.5 + random.random()))
            now = time.monotonic()
            layers = [layer for layer in self._by_ssrc.values() if layer.received]
            if not layers:
                continue
            self.send_rtcp(rtp.receiver_report(self.rtcp_ssrc, [layer.report_block(now) for layer in layers]))
            self._send_remb()

    def schedule_nacks(self, layer: Layer) -> None:
        """NACK the layer's missing packets now, and again every NACK_INTERVAL while they stay missing."""
        self._send_nacks(layer)
        self._nacking.add(layer)
        if self._nack_timer is None:
            self._nack_timer = asyncio.get_running_loop().call_later(NACK_INTERVAL, self._renack)

    def _send_nacks(self, layer: Layer) -> None:
        lost = [seq for seq, tries in layer.missing.items() if tries < NACK_TRIES]
        for seq in lost:
            layer.missing[seq] += 1
        for seq in [seq for seq, tries in layer.missing.items() if tries >= NACK_TRIES]:
            del layer.missing[seq]  # given up: the subscriber's own NACK or PLI takes it from here
        if lost:
            self.send_rtcp(rtp.nack(self.rtcp_ssrc, layer.ssrc, lost))

    def _renack(self) -> None:
        self._nack_timer = None
        for layer in list(self._nacking):
            if not layer.missing or layer.relay.closed:
                self._nacking.discard(layer)
                continue
            self._send_nacks(layer)
        if self._nacking and not self.closed:
            self._nack_timer = asyncio.get_running_loop().call_later(NACK_INTERVAL, self._renack)

    # --- sending (a subscriber's connection)

    def add_downtrack(self, downtrack: DownTrack) -> None:
        self._downtracks[downtrack.ssrc] = downtrack

    def remove_downtrack(self, downtrack: DownTrack) -> None:
        if self._downtracks.get(downtrack.ssrc) is downtrack:
            del self._downtracks[downtrack.ssrc]

    def close(self) -> None:
        self.closed = True
        if self._reports is not None:
            self._reports.cancel()
        if self._nack_timer is not None:
            self._nack_timer.cancel()
        for downtrack in list(self._downtracks.values()):
            downtrack.stop()
        for relay in list(self._relays):
            relay.close()
