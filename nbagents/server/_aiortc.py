"""Every use of aiortc/aioice internals, in one place, each with the reason it is needed.

aiortc is a complete WebRTC endpoint: it decodes what it receives and encodes what it sends. A selective
forwarding unit needs its ICE, DTLS, SRTP and SDP, but must route encrypted RTP between connections
itself, untouched. aiortc has no public API for that, so this module reaches into it. The names used here
exist in aiortc 1.16 and aioice 0.13 (pyproject pins the range accordingly); ``check_internals()`` runs at
server start so an incompatible version fails loudly and at once instead of producing silent rooms.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

import aioice.ice
import pylibsrtp
from aiortc import (
    RTCDtlsTransport,
    RTCPeerConnection,
    RTCRtpCodecParameters,
    RTCRtpReceiver,
    RTCRtpSender,
    RTCRtpTransceiver,
)
from aiortc import codecs as aiortc_codecs
from aiortc import rtcrtpreceiver as aiortc_rtcrtpreceiver
from aiortc import rtp as aiortc_rtp
from aiortc.rtcdtlstransport import RTCCertificate
from aiortc.rtcdtlstransport import State as DtlsState
from aiortc.rtcrtpparameters import RTCRtcpFeedback

from nbagents.server import rtp

RtpHandler = Callable[[bytes], None]


def check_internals() -> None:
    """Raise RuntimeError naming the missing piece if this aiortc lacks an internal the server relies on."""
    needed = {
        "aioice.ice.get_host_addresses": hasattr(aioice.ice, "get_host_addresses"),
        "aioice.ice.Connection._nominated": "_nominated" in aioice.ice.Connection.__init__.__code__.co_names,
        "aioice.ice.Connection.data_received": hasattr(aioice.ice.Connection, "data_received"),
        "aioice.ice.StunProtocol.datagram_received": hasattr(aioice.ice.StunProtocol, "datagram_received"),
        "aioice.ice.StunProtocol.receiver": "receiver" in aioice.ice.StunProtocol.__init__.__code__.co_names,
        "aioice.ice.StunProtocol.local_candidate": "local_candidate" in aioice.ice.StunProtocol.__annotations__,
        "aiortc.codecs.CODECS": isinstance(getattr(aiortc_codecs, "CODECS", None), dict),
        "aiortc.rtp.DYNAMIC_PAYLOAD_TYPES": hasattr(aiortc_rtp, "DYNAMIC_PAYLOAD_TYPES"),
        "aiortc.rtcrtpreceiver.RemoteBitrateEstimator": hasattr(aiortc_rtcrtpreceiver, "RemoteBitrateEstimator"),
        "RTCDtlsTransport._handle_rtp_data": hasattr(RTCDtlsTransport, "_handle_rtp_data"),
        "RTCDtlsTransport._handle_rtcp_data": hasattr(RTCDtlsTransport, "_handle_rtcp_data"),
        "RTCDtlsTransport._tx_srtp": "_tx_srtp" in RTCDtlsTransport.__init__.__code__.co_names,
        "RTCDtlsTransport._rx_srtp": "_rx_srtp" in RTCDtlsTransport.__init__.__code__.co_names,
        "RTCDtlsTransport._state": "_state" in RTCDtlsTransport.__init__.__code__.co_names,
        "RTCPeerConnection.__connect": hasattr(RTCPeerConnection, "_RTCPeerConnection__connect"),
        "RTCCertificate.generateCertificate": hasattr(RTCCertificate, "generateCertificate"),
        "RTCRtpSender._ssrc": "_ssrc" in RTCRtpSender.__init__.__code__.co_names,
        "RTCRtpTransceiver._codecs": "_codecs" in RTCRtpTransceiver.__init__.__code__.co_names,
    }
    missing = [name for name, ok in needed.items() if not ok]
    if missing:
        raise RuntimeError(f"this aiortc version lacks {', '.join(missing)}; install the version pyproject.toml pins")


def restrict_host_addresses(addresses: Sequence[str]) -> None:
    """Offer ICE host candidates only on ``addresses``.

    aioice gathers candidates on every interface and has no option to choose them; the server must offer
    only the address it binds (127.0.0.1 by default) so media never touches another interface.
    """
    chosen = list(addresses)
    aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: list(chosen)


def demultiplex_by_first_byte() -> None:
    """Hand every datagram that is not STUN to its ICE connection without trying to parse it as STUN first.

    aioice parses each datagram an ICE socket receives as a STUN message and passes the ones that fail on as
    data (DTLS, RTP, RTCP), so every media packet pays for a parse attempt and an exception. Its parser does not
    check the two leading zero bits or the magic cookie either: an RTP packet with payload type 0–9 (PCMA,
    G.722, ...) whose sequence number equals its length minus 20 passes as STUN and is lost. RFC 7983 tells the
    protocols on one port apart by the first byte (0–3 STUN, 20–63 DTLS, 128–191 RTP and RTCP); this applies
    it before aioice's parser, which keeps handling everything that may be STUN. Process-wide, like the codec
    table: every ICE connection of the server is one of its PeerConnections'.
    """
    protocol = aioice.ice.StunProtocol
    if getattr(protocol.datagram_received, "_nbagents_demultiplexed", False):
        return
    parse_as_stun = protocol.datagram_received

    def datagram_received(self: Any, data: bytes, addr: tuple[Any, ...]) -> None:
        if data and data[0] > 3:  # not STUN (RFC 7983 §7)
            self.receiver.data_received(data, self.local_candidate.component)
        else:
            parse_as_stun(self, data, addr)

    datagram_received._nbagents_demultiplexed = True  # type: ignore[attr-defined]
    protocol.datagram_received = datagram_received  # type: ignore[method-assign]


# --- one DTLS certificate per server


def share_certificate() -> None:
    """Give every PeerConnection of this process the same DTLS certificate, generated once.

    aiortc generates an ECDSA key and a self-signed certificate for every ``RTCPeerConnection`` (a client
    has two) and hashes it three times for every SDP it writes: milliseconds on each join's critical path.
    The certificate only has to match the fingerprint in the SDP, which it does; one per server process is
    what a server keeps (livekit-server's DTLS does the same). aiortc has no option to pass one in.
    """
    if getattr(RTCCertificate, "_nbagents_shared", None) is not None:
        return
    certificate = RTCCertificate.generateCertificate()
    fingerprints = certificate.getFingerprints()
    certificate.getFingerprints = lambda: list(fingerprints)  # type: ignore[method-assign]
    RTCCertificate._nbagents_shared = certificate  # type: ignore[attr-defined]
    RTCCertificate.generateCertificate = classmethod(lambda cls: certificate)  # type: ignore[method-assign,assignment]


# --- codecs

_VIDEO_FEEDBACK = ("nack", None), ("nack", "pli"), ("goog-remb", None)


def configure_codecs() -> None:
    """Make aiortc negotiate the codecs livekit-server enables by default, as a relay (never a codec) would.

    aiortc negotiates only what it can encode and decode: VP8 and two H.264 profiles, each with RTX. The
    relay forwards payloads undecoded, so it accepts what livekit-server accepts and the SDKs publish:
    Opus (with in-band FEC, as livekit-server answers), VP8, H.264 (constrained baseline, baseline and
    main, packetization mode 1), VP9 (profile 0) and AV1. RTX is left out: retransmissions then come on
    the media SSRC with their original sequence number (RFC 4585 generic NACK), which keeps the relay's
    routing to one SSRC per stream. aiortc's codec table is a module-level list its offers and answers read.
    """
    def feedback() -> list[RTCRtcpFeedback]:
        return [RTCRtcpFeedback(type=kind, parameter=parameter) for kind, parameter in _VIDEO_FEEDBACK]

    audio = [
        RTCRtpCodecParameters(mimeType="audio/opus", clockRate=48000, channels=2, payloadType=111,
                              parameters={"minptime": 10, "useinbandfec": 1}),
        *(c for c in aiortc_codecs.CODECS["audio"] if c.mimeType.lower() != "audio/opus"),
    ]
    video: list[RTCRtpCodecParameters] = []
    payload_type = 96
    for mime, parameters in (
        ("video/VP8", {}),
        ("video/H264", {"level-asymmetry-allowed": 1, "packetization-mode": 1, "profile-level-id": "42e01f"}),
        ("video/H264", {"level-asymmetry-allowed": 1, "packetization-mode": 1, "profile-level-id": "42001f"}),
        ("video/H264", {"level-asymmetry-allowed": 1, "packetization-mode": 1, "profile-level-id": "4d001f"}),
        ("video/VP9", {"profile-id": 0}),
        ("video/AV1", {}),
    ):
        video.append(RTCRtpCodecParameters(mimeType=mime, clockRate=90000, payloadType=payload_type,
                                           rtcpFeedback=feedback(), parameters=parameters))
        payload_type += 1
    aiortc_codecs.CODECS["audio"][:] = audio
    aiortc_codecs.CODECS["video"][:] = video
    # An answer must use the offer's payload type for each codec. aiortc adopts it only within 96–127 and
    # otherwise keeps its own number, which can collide with another of the offer's codecs; libwebrtc also
    # numbers codecs from 35 to 63 (AV1 is often 45) and the SDK then refuses the answer.
    aiortc_rtp.DYNAMIC_PAYLOAD_TYPES = range(35, 128)


def skip_receive_estimators() -> None:
    """Stop aiortc from building a bandwidth estimator for every video section a client offers.

    ``RTCRtpReceiver.__init__`` creates a ``RemoteBitrateEstimator`` (with a 1000-slot rate counter) for each
    video section, including every receive-only one of a ``/rtc/v1`` offer: a millisecond or more per section on
    the join's critical path. The relay takes every receiver's RTP over (``take_over_rtp``, ``adopt_receiver``),
    so no estimator is ever fed; the receiver module's reference to the class is replaced by an empty one.
    """
    aiortc_rtcrtpreceiver.RemoteBitrateEstimator = _NoEstimator  # type: ignore[attr-defined,misc]


class _NoEstimator:
    """Stands in for aiortc's receive-side estimator, which the relay never feeds."""


def negotiated_codec(transceiver: RTCRtpTransceiver) -> RTCRtpCodecParameters | None:
    """The codec a transceiver's last negotiation put first: the one the publisher sends (aiortc keeps it private)."""
    codecs = getattr(transceiver, "_codecs", [])
    return codecs[0] if codecs else None


# --- taking RTP and RTCP over from aiortc


def take_over_rtp(transport: RTCDtlsTransport, on_rtp: RtpHandler, on_rtcp: RtpHandler) -> None:
    """Hand every decrypted RTP and RTCP packet of ``transport`` to the relay instead of aiortc's receivers.

    aiortc's path for a datagram is: the ICE connection queues it (``Connection.data_received``), the DTLS
    transport's task takes it from the queue, decrypts it, parses it into objects and awaits the matching
    ``RTCRtpReceiver``, which feeds a jitter buffer and a decoder. The relay needs only the decrypted bytes
    and routes them itself (by SSRC, mid and rid, which aiortc's router does not use). So:

    - once the transport is connected, SRTP/SRTCP datagrams are decrypted and handled as they come off the
      socket, in ``Connection.data_received`` (shadowed on the instance): no queue, no task switch, and no
      extra wait behind whatever else the event loop has to do; DTLS, and anything before the handshake
      completes, still takes aiortc's queue;
    - ``_handle_rtp_data`` and ``_handle_rtcp_data`` (shadowed on the instance) get what does go through the
      queue (packets that arrived while the handshake finished).

    Receiver reports without report blocks, which libwebrtc sends about every second for each media section,
    are dropped unread (``rtp.srtcp_is_empty_report``): they carry nothing the relay uses.
    """
    async def handle_rtp(data: bytes, arrival_time_ms: int) -> None:
        on_rtp(data)

    async def handle_rtcp(data: bytes) -> None:
        on_rtcp(data)

    transport._handle_rtp_data = handle_rtp  # type: ignore[method-assign]
    transport._handle_rtcp_data = handle_rtcp  # type: ignore[method-assign]

    connection: Any = transport.transport._connection
    queue_datagram = connection.data_received
    connected = DtlsState.CONNECTED
    empty_report = rtp.srtcp_is_empty_report

    def data_received(data: bytes, component: int) -> None:
        if len(data) > 1 and 127 < data[0] < 192 and transport._state is connected:
            session = transport._rx_srtp
            try:
                if 192 <= data[1] <= 223:
                    if not empty_report(data):
                        on_rtcp(session.unprotect_rtcp(data))
                else:
                    on_rtp(session.unprotect(data))
            except pylibsrtp.Error:
                pass  # not for this session (a stale or forged packet): aiortc drops those too
            return
        queue_datagram(data, component)

    connection.data_received = data_received


def drop_received_rtp(transport: RTCDtlsTransport, drop: Callable[[], bool]) -> None:
    """Discard received SRTP packets (not SRTCP) for which ``drop()`` is true, before they are decrypted.

    For ``--simulate-loss``: a packet lost on the network never reaches SRTP, so a retransmission of it is
    accepted; dropped after decryption, its retransmission would be refused as a replay. The ICE
    connection hands every datagram to ``Connection.data_received``, shadowed here on the instance.
    """
    connection: Any = transport.transport._connection
    original = connection.data_received

    def data_received(data: bytes, component: int) -> None:
        if len(data) > 1 and 127 < data[0] < 192 and not 192 <= data[1] <= 223 and drop():
            return
        original(data, component)

    connection.data_received = data_received


class SrtpWriter:
    """Encrypts and sends RTP and RTCP on a DTLS transport, synchronously.

    aiortc's own path (``RTCDtlsTransport._send_rtp``) is three coroutines deep; the relay sends from the
    receive path of another connection, once per subscriber, so it protects with the transport's SRTP
    session and writes to the nominated ICE pair's socket directly. Packets are dropped (not queued) while
    the transport is not connected, as a subscriber that is not connected yet cannot use them. The socket
    and address are looked up once connected and forgotten when the transport's state changes.
    """

    def __init__(self, transport: RTCDtlsTransport) -> None:
        self._transport = transport
        self._connection: Any = transport.transport._connection
        self._send: Callable[[bytes, tuple[str, int]], None] | None = None
        self._address: tuple[str, int] | None = None
        self._session: Any = None
        transport.on("statechange", self._forget)

    def _forget(self) -> None:
        self._send = None

    def _connect(self) -> bool:
        if self._transport._state is not DtlsState.CONNECTED:
            return False
        pair = self._connection._nominated.get(1)
        if pair is None or pair.protocol.transport is None:
            return False
        self._send, self._address = pair.protocol.transport.sendto, pair.remote_addr
        self._session = self._transport._tx_srtp
        return True

    def send_rtp(self, data: bytes) -> bool:
        if self._send is None and not self._connect():
            return False
        self._send(self._session.protect(data), self._address)  # type: ignore[misc]
        return True

    def send_rtcp(self, data: bytes) -> bool:
        if self._send is None and not self._connect():
            return False
        self._send(self._session.protect_rtcp(data), self._address)  # type: ignore[misc]
        return True

    @property
    def connected(self) -> bool:
        return self._transport._state is DtlsState.CONNECTED


def dtls_transport(pc: RTCPeerConnection) -> RTCDtlsTransport | None:
    """The PeerConnection's one DTLS transport (the server bundles everything on one), once it exists."""
    if pc.sctp is not None:
        return pc.sctp.transport
    transceivers = pc.getTransceivers()
    return transceivers[0].receiver.transport if transceivers else None


def adopt_receiver(receiver: RTCRtpReceiver) -> None:
    """Keep aiortc from starting a receiver the relay replaces.

    ``RTCRtpReceiver.receive`` starts a decoder thread and an RTCP task per published track; with the RTP
    taken over (``take_over_rtp``) both would idle for the track's life, and the relay sends the receiver
    reports itself. Starting it becomes a no-op, which also makes its ``stop`` one.
    """
    async def receive(parameters: Any) -> None:
        return None

    receiver.receive = receive  # type: ignore[method-assign]


def adopt_sender(sender: RTCRtpSender, on_start: Callable[[list[tuple[str, int, dict[str, Any]]]], None],
                 on_stop: Callable[[], None]) -> int:
    """Let the relay write a sender's RTP itself; returns the SSRC aiortc announces for it in the SDP.

    ``RTCRtpSender.send`` starts tasks that pull frames from a track and encode them, and an RTCP task. A
    relayed stream has no frames: its packets are rewritten from the publisher's. So ``send`` (called by
    aiortc once the negotiation and DTLS allow sending, and again after each renegotiation) reports the
    negotiated codecs (MIME type, payload type, parameters) to ``on_start`` and starts nothing, and ``stop``
    calls ``on_stop``.
    """
    async def send(parameters: Any) -> None:
        on_start([(c.mimeType, c.payloadType, dict(c.parameters)) for c in parameters.codecs])

    async def stop() -> None:
        on_stop()

    sender.send = send  # type: ignore[method-assign]
    sender.stop = stop  # type: ignore[method-assign]
    return sender._ssrc


def set_msid(sender: RTCRtpSender, stream_id: str, track_id: str) -> None:
    """Set the ``a=msid`` a sender announces.

    LiveKit clients map a subscribed track to its publication by the msid ``"<participant sid>|<track sid>"``;
    aiortc always uses random ids and has no setter.
    """
    sender._stream_id = stream_id  # type: ignore[attr-defined]
    sender._track_id = track_id  # type: ignore[attr-defined]


def start_pending_transceivers(pc: RTCPeerConnection) -> asyncio.Future[None]:
    """Start senders and receivers that a renegotiation added while the transport was still connecting.

    aiortc race: ``RTCPeerConnection.__connect`` starts a transceiver's sender and receiver only if the
    bundled DTLS transport is already connected when the renegotiation is applied; otherwise they are never
    started: a subscriber stays silent, or a publisher's second track is dropped unheard. Running it again
    once connected starts them (already started ones are no-ops).
    """
    return asyncio.ensure_future(pc._RTCPeerConnection__connect())  # type: ignore[attr-defined]
