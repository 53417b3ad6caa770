"""Every use of aiortc/aioice internals, in one place, each with the reason it is needed.

aiortc offers no public API for these four things an SFU needs, so this module reaches into it. The
names used here exist in aiortc 1.16 (pyproject pins the range accordingly); ``check_internals()`` runs
at server start so an incompatible aiortc fails loudly and at once instead of producing silent rooms.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

import aioice.ice
from aiortc import RTCPeerConnection, RTCRtpReceiver, RTCRtpSender, RTCRtpTransceiver
from aiortc.rtp import RtpPacket

RtpTap = Callable[[RtpPacket], bool]


def check_internals() -> None:
    """Raise RuntimeError naming the missing piece if this aiortc lacks an internal the server relies on."""
    needed = {
        "aioice.ice.get_host_addresses": hasattr(aioice.ice, "get_host_addresses"),
        "RTCRtpReceiver._handle_rtp_packet": hasattr(RTCRtpReceiver, "_handle_rtp_packet"),
        "RTCRtpReceiver.__stop_decoder": hasattr(RTCRtpReceiver, "_RTCRtpReceiver__stop_decoder"),
        "RTCPeerConnection.__connect": hasattr(RTCPeerConnection, "_RTCPeerConnection__connect"),
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


def tap_rtp(receiver: RTCRtpReceiver, tap: RtpTap) -> None:
    """Call ``tap(packet)`` for every decrypted RTP packet ``receiver`` gets, before aiortc sees it.

    The SRTP transport hands packets to ``receiver._handle_rtp_packet``; shadowing it on the instance is
    the only way to see encoded payloads. If ``tap`` returns True, aiortc's own handler still runs (it keeps
    the RTCP receiver-report statistics the publisher's congestion control uses); else the packet stops here.
    """
    original: Callable[[RtpPacket, int], Awaitable[None]] = receiver._handle_rtp_packet

    async def handle(packet: RtpPacket, arrival_time_ms: int) -> None:
        if tap(packet):
            await original(packet, arrival_time_ms)

    receiver._handle_rtp_packet = handle  # type: ignore[method-assign]


def stop_decoding(receiver: RTCRtpReceiver) -> None:
    """Stop the receiver's decoder thread: relayed payloads are never decoded, so its output would only pile up."""
    receiver._RTCRtpReceiver__stop_decoder()  # type: ignore[attr-defined]


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


def payload_type(transceiver: RTCRtpTransceiver, mime_type: str) -> int | None:
    """The negotiated RTP payload type for ``mime_type`` on ``transceiver`` (aiortc keeps it private)."""
    for codec in getattr(transceiver, "_codecs", []):
        if codec.mimeType.lower() == mime_type.lower():
            return codec.payloadType
    return None


def first_mime_type(transceiver: RTCRtpTransceiver) -> str:
    """The preferred negotiated codec's MIME type on ``transceiver`` ("" if none)."""
    codecs = getattr(transceiver, "_codecs", [])
    return codecs[0].mimeType if codecs else ""
