"""RTP and RTCP at the byte level: what a selective forwarding unit reads, rewrites and writes.

The relay never decodes media. Per packet it needs the fixed header (RFC 3550 §5.1), sometimes the ``mid``
and ``rid`` header extensions (RFC 8285 one- and two-byte forms, to bind a new SSRC to its track and
simulcast layer), and whether the packet starts a keyframe (from the codec's RTP payload descriptor).
Towards the publisher it writes receiver reports, NACK (RFC 4585), PLI and REMB; towards subscribers
sender reports. Everything here is a pure function on ``bytes``: cheap, and testable without a network.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

HEADER = struct.Struct("!BBHII")  # V/P/X/CC, M/PT, sequence number, timestamp, SSRC
_SEQ_TS_SSRC = struct.Struct("!HII")
_EXT_HEADER = struct.Struct("!HH")
_RTCP_HEADER = struct.Struct("!BBH")
_U32 = struct.Struct("!I")
_SR = struct.Struct("!BBHIIIIII")
_REPORT_BLOCK = struct.Struct("!IIIIII")

RTCP_SR, RTCP_RR, RTCP_SDES, RTCP_BYE, RTCP_RTPFB, RTCP_PSFB = 200, 201, 202, 203, 205, 206
RTPFB_NACK = 1
PSFB_PLI, PSFB_FIR, PSFB_APP = 1, 4, 15

MID_URI = "urn:ietf:params:rtp-hdrext:sdes:mid"
RID_URI = "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id"
REPAIRED_RID_URI = "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id"


def is_rtcp(data: bytes) -> bool:
    """RTCP and RTP share one port (rtcp-mux): RTCP packet types 192–223 sit where RTP's M bit + PT are."""
    return len(data) > 1 and 192 <= data[1] <= 223


#: the shortest SRTCP packet that can hold, after a receiver report without report blocks (8 bytes), any RTCP
#: the relay reads (a PLI: 12 bytes; a NACK 16, a FIR 20, a sender report 28) and the shortest SRTCP trailer
#: (4 bytes of E flag and index, and a 10-byte authentication tag: AES_CM_128_HMAC_SHA1_80, RFC 3711 §3.4)
_SHORTEST_READ_SRTCP = 8 + 12 + 4 + 10


def srtcp_is_empty_report(data: bytes) -> bool:
    """Whether an SRTCP packet is a lone receiver report without report blocks, read without decrypting it.

    SRTCP leaves the first 8 bytes of a compound packet (its first RTCP header and the sender's SSRC) in the
    clear (RFC 3711 §3.4). A packet whose first part is a receiver report with no report blocks and that is
    too short to hold anything more the relay reads says only "this SSRC exists": libwebrtc sends one about
    every second for each of its media sections, also unused ones (with ``rtcp-rsize``, nothing else comes
    with it). The relay has no use for it, so it is dropped before the (comparatively costly) decryption.
    """
    return len(data) < _SHORTEST_READ_SRTCP and data[1] == RTCP_RR and not data[0] & 0x1F


def payload_offset(data: bytes) -> int:
    """Where the payload starts: after the fixed header, the CSRC list and the header extension."""
    offset = 12 + 4 * (data[0] & 0x0F)
    if data[0] & 0x10:
        _, words = _EXT_HEADER.unpack_from(data, offset)
        offset += 4 + 4 * words
    return offset


def payload_end(data: bytes) -> int:
    """Where the payload ends: before the padding the P bit announces (its count is the last byte)."""
    return len(data) - data[-1] if data[0] & 0x20 else len(data)


def header_extensions(data: bytes) -> dict[int, bytes]:
    """The packet's header extension elements by id (RFC 8285 one-byte ``0xBEDE`` or two-byte ``0x100x`` form)."""
    if not data[0] & 0x10:
        return {}
    offset = 12 + 4 * (data[0] & 0x0F)
    profile, words = _EXT_HEADER.unpack_from(data, offset)
    position, end = offset + 4, min(offset + 4 + 4 * words, len(data))
    elements: dict[int, bytes] = {}
    if profile == 0xBEDE:
        while position < end:
            byte = data[position]
            if byte == 0:  # padding between elements
                position += 1
                continue
            ext_id, length = byte >> 4, (byte & 0x0F) + 1
            if ext_id == 15:  # reserved: stop parsing
                break
            elements[ext_id] = data[position + 1:position + 1 + length]
            position += 1 + length
    elif profile & 0xFFF0 == 0x1000:
        while position + 1 < end:
            ext_id = data[position]
            if ext_id == 0:
                position += 1
                continue
            length = data[position + 1]
            elements[ext_id] = data[position + 2:position + 2 + length]
            position += 2 + length
    return elements


def rewrite(data: bytes, payload_type: int, sequence_number: int, timestamp: int, ssrc: int) -> bytes:
    """The packet as a subscriber gets it: new payload type, sequence number, timestamp and SSRC.

    Header extensions are dropped (they describe the publisher's connection: its transport-wide sequence
    numbers, send times, mid and rid); the marker bit, CSRCs, payload and padding are kept byte for byte.
    """
    first = data[0]
    offset = 12 + 4 * (first & 0x0F)
    csrcs = data[12:offset]
    if first & 0x10:
        _, words = _EXT_HEADER.unpack_from(data, offset)
        offset += 4 + 4 * words
    return HEADER.pack(first & 0xEF, (data[1] & 0x80) | payload_type, sequence_number, timestamp, ssrc) \
        + csrcs + data[offset:]


# --- keyframes: does this packet start one? (each codec's RTP payload format)


def vp8_keyframe(payload: bytes) -> bool:
    """RFC 7741: the first packet of a partition 0 (S=1, PID=0) whose VP8 header has P=0 (a key frame)."""
    if len(payload) < 2 or not payload[0] & 0x10 or payload[0] & 0x07:
        return False
    offset = 1
    if payload[0] & 0x80:  # X: extension byte follows
        extension = payload[1]
        offset = 2
        if extension & 0x80:  # I: picture id, 7 or 15 bits
            offset += 2 if len(payload) > offset and payload[offset] & 0x80 else 1
        if extension & 0x40:  # L: TL0PICIDX
            offset += 1
        if extension & 0x30:  # T or K: TID/Y/KEYIDX
            offset += 1
    return len(payload) > offset and not payload[offset] & 0x01


def h264_keyframe(payload: bytes) -> bool:
    """RFC 6184: an IDR slice (NAL type 5) or a sequence parameter set (7), alone, in a STAP-A or starting a FU-A."""
    if not payload:
        return False
    nal_type = payload[0] & 0x1F
    if nal_type in (5, 7):
        return True
    if nal_type == 24:  # STAP-A: 16-bit size, NAL unit, ...
        position = 1
        while position + 2 < len(payload):
            size = (payload[position] << 8) | payload[position + 1]
            if size == 0:
                break
            if payload[position + 2] & 0x1F in (5, 7):
                return True
            position += 2 + size
        return False
    if nal_type == 28 and len(payload) > 1:  # FU-A: start bit and original type in the FU header
        return bool(payload[1] & 0x80) and payload[1] & 0x1F in (5, 7)
    return False


def vp9_keyframe(payload: bytes) -> bool:
    """VP9 RTP payload format: the start of a frame (B=1) that is not inter-predicted (P=0), base spatial layer."""
    if not payload:
        return False
    descriptor = payload[0]
    if descriptor & 0x40 or not descriptor & 0x08:  # P set, or not the beginning of a frame
        return False
    if descriptor & 0x20:  # L: layer indices follow the picture id; the keyframe starts in spatial layer 0
        offset = 1
        if descriptor & 0x80:  # I: picture id
            offset += 2 if len(payload) > 1 and payload[1] & 0x80 else 1
        if len(payload) > offset and (payload[offset] >> 1) & 0x07:
            return False
    return True


def av1_keyframe(payload: bytes) -> bool:
    """AV1 RTP specification: the aggregation header's N bit marks the first packet of a coded video sequence."""
    return bool(payload) and bool(payload[0] & 0x08)


KEYFRAME_DETECTORS = {
    "video/vp8": vp8_keyframe,
    "video/h264": h264_keyframe,
    "video/vp9": vp9_keyframe,
    "video/av1": av1_keyframe,
}


# --- RTCP


@dataclass(frozen=True)
class SenderReport:
    ssrc: int
    ntp: int  # 64-bit NTP timestamp
    rtp_timestamp: int


@dataclass(frozen=True)
class Feedback:
    """A feedback message for one media SSRC: a keyframe request, or the sequence numbers to resend."""

    media_ssrc: int
    keyframe: bool = False
    lost: tuple[int, ...] = ()


def parse_rtcp(data: bytes) -> Iterator[SenderReport | Feedback]:
    """The sender reports, NACKs, PLIs and FIRs of a compound RTCP packet (other types are skipped)."""
    position = 0
    while position + 4 <= len(data):
        first, packet_type, words = _RTCP_HEADER.unpack_from(data, position)
        end = position + 4 + 4 * words
        if end > len(data):
            return
        count = first & 0x1F
        if packet_type == RTCP_SR and end - position >= 20:
            ssrc, ntp_high, ntp_low, rtp_timestamp = struct.unpack_from("!IIII", data, position + 4)
            yield SenderReport(ssrc, (ntp_high << 32) | ntp_low, rtp_timestamp)
        elif packet_type == RTCP_RTPFB and count == RTPFB_NACK and end - position >= 12:
            media_ssrc = _U32.unpack_from(data, position + 8)[0]
            lost: list[int] = []
            for fci in range(position + 12, end - 3, 4):
                pid, blp = struct.unpack_from("!HH", data, fci)
                lost.append(pid)
                lost.extend((pid + bit + 1) & 0xFFFF for bit in range(16) if blp >> bit & 1)
            yield Feedback(media_ssrc, lost=tuple(lost))
        elif packet_type == RTCP_PSFB and count == PSFB_PLI and end - position >= 12:
            yield Feedback(_U32.unpack_from(data, position + 8)[0], keyframe=True)
        elif packet_type == RTCP_PSFB and count == PSFB_FIR:
            for fci in range(position + 12, end - 7, 8):  # FIR names its target in each FCI entry
                yield Feedback(_U32.unpack_from(data, fci)[0], keyframe=True)
        position = end


def pli(sender_ssrc: int, media_ssrc: int) -> bytes:
    """Picture Loss Indication: asks the publisher of ``media_ssrc`` for a keyframe."""
    return struct.pack("!BBHII", 0x80 | PSFB_PLI, RTCP_PSFB, 2, sender_ssrc, media_ssrc)


def nack(sender_ssrc: int, media_ssrc: int, lost: Iterable[int]) -> bytes:
    """Generic NACK for the given sequence numbers, packed as (PID, bitmask of the 16 following) pairs."""
    entries: list[bytes] = []
    lost = list(lost)
    pending: list[int] = []
    if lost:  # in sequence order across the 16-bit wrap: start from the one furthest behind the first
        oldest = min(lost, key=lambda s: ((s - lost[0] + 0x8000) & 0xFFFF) - 0x8000)
        pending = sorted(set(lost), key=lambda s: (s - oldest) & 0xFFFF)
    while pending:
        pid = pending.pop(0)
        mask = 0
        while pending and 0 < (pending[0] - pid) & 0xFFFF <= 16:
            mask |= 1 << (((pending.pop(0) - pid) & 0xFFFF) - 1)
        entries.append(struct.pack("!HH", pid, mask))
    return struct.pack("!BBHII", 0x80 | RTPFB_NACK, RTCP_RTPFB, 2 + len(entries), sender_ssrc, media_ssrc) \
        + b"".join(entries)


def remb(sender_ssrc: int, bitrate: int, ssrcs: list[int]) -> bytes:
    """Receiver Estimated Maximum Bitrate (draft-alvestrand-rmcat-remb) for ``ssrcs``, in bits per second."""
    exponent, mantissa = 0, bitrate
    while mantissa > 0x3FFFF:
        mantissa >>= 1
        exponent += 1
    fci = b"REMB" + struct.pack("!BBH", len(ssrcs), (exponent << 2) | (mantissa >> 16), mantissa & 0xFFFF) \
        + b"".join(_U32.pack(s) for s in ssrcs)
    return struct.pack("!BBHII", 0x80 | PSFB_APP, RTCP_PSFB, 2 + len(fci) // 4, sender_ssrc, 0) + fci


@dataclass
class ReportBlock:
    ssrc: int
    fraction_lost: int  # of 256, since the previous report
    cumulative_lost: int
    highest_sequence: int  # extended (cycles << 16 | seq)
    jitter: int  # in RTP timestamp units
    last_sr: int  # middle 32 bits of the last sender report's NTP time
    delay_since_last_sr: int  # in 1/65536 s


def receiver_report(sender_ssrc: int, blocks: list[ReportBlock]) -> bytes:
    """A receiver report carrying up to 31 report blocks."""
    blocks = blocks[:31]
    body = b"".join(
        _REPORT_BLOCK.pack(b.ssrc, (b.fraction_lost & 0xFF) << 24 | (max(-(1 << 23), min(b.cumulative_lost, (1 << 23) - 1))
                                                                   & 0xFFFFFF),
                           b.highest_sequence & 0xFFFFFFFF, b.jitter & 0xFFFFFFFF, b.last_sr & 0xFFFFFFFF,
                           b.delay_since_last_sr & 0xFFFFFFFF)
        for b in blocks)
    return struct.pack("!BBHI", 0x80 | len(blocks), RTCP_RR, 1 + 6 * len(blocks), sender_ssrc) + body


def sender_report(ssrc: int, ntp: int, rtp_timestamp: int, packets: int, octets: int) -> bytes:
    """A sender report with no report blocks."""
    return _SR.pack(0x80, RTCP_SR, 6, ssrc, (ntp >> 32) & 0xFFFFFFFF, ntp & 0xFFFFFFFF, rtp_timestamp & 0xFFFFFFFF,
                    packets & 0xFFFFFFFF, octets & 0xFFFFFFFF)
