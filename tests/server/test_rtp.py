"""The relay's byte-level RTP/RTCP reading and writing, on packets built as the RFCs lay them out."""

from __future__ import annotations

import os
import struct

import pylibsrtp

from nbagents.server import rtp


def packet(payload: bytes, *, seq: int = 1000, ts: int = 90000, ssrc: int = 0x11223344, pt: int = 96,
           marker: bool = False, extensions: bytes = b"", padding: int = 0, csrcs: tuple[int, ...] = ()) -> bytes:
    first = 0x80 | (0x20 if padding else 0) | (0x10 if extensions else 0) | len(csrcs)
    data = struct.pack("!BBHII", first, (0x80 if marker else 0) | pt, seq, ts, ssrc)
    data += b"".join(struct.pack("!I", c) for c in csrcs)
    if extensions:
        data += extensions
    data += payload
    if padding:
        data += bytes(padding - 1) + bytes([padding])
    return data


def one_byte_extensions(elements: dict[int, bytes]) -> bytes:
    body = b"".join(bytes([(ext_id << 4) | (len(value) - 1)]) + value for ext_id, value in elements.items())
    body += bytes(-len(body) % 4)
    return struct.pack("!HH", 0xBEDE, len(body) // 4) + body


def test_rewrite_changes_the_stream_fields_and_keeps_marker_csrcs_payload_and_padding():
    original = packet(b"payload", marker=True, csrcs=(7,), padding=3,
                      extensions=one_byte_extensions({1: b"0", 3: b"\x01\x02\x03"}))
    out = rtp.rewrite(original, payload_type=100, sequence_number=5, timestamp=1234, ssrc=0xAABBCCDD)
    first, second, seq, ts, ssrc = struct.unpack_from("!BBHII", out)
    assert (first & 0x10, first & 0x20, first & 0x0F) == (0, 0x20, 1)  # extensions gone, padding and CSRC kept
    assert (second & 0x80, second & 0x7F, seq, ts, ssrc) == (0x80, 100, 5, 1234, 0xAABBCCDD)
    assert out[12:16] == struct.pack("!I", 7)
    assert out[16:rtp.payload_end(out)] == b"payload"


def test_header_extensions_in_both_forms():
    one = packet(b"x", extensions=one_byte_extensions({4: b"13", 10: b"h"}))
    assert rtp.header_extensions(one) == {4: b"13", 10: b"h"}
    body = bytes([4, 2]) + b"13" + bytes([10, 1]) + b"q" + bytes(1)
    two = packet(b"x", extensions=struct.pack("!HH", 0x1000, len(body) // 4) + body)
    assert rtp.header_extensions(two) == {4: b"13", 10: b"q"}
    assert rtp.payload_offset(two) == 12 + 4 + len(body)


def test_vp8_keyframes_are_told_from_delta_frames():
    # descriptor: X=1 S=1 PID=0; I=1 with a 15-bit picture id; then the VP8 payload header (P bit = 0: key)
    assert rtp.vp8_keyframe(bytes([0x90, 0x80, 0x81, 0x23, 0x10, 0x02, 0x00, 0x9D, 0x01, 0x2A]))
    assert not rtp.vp8_keyframe(bytes([0x90, 0x80, 0x81, 0x23, 0x11]))  # P = 1: inter frame
    assert not rtp.vp8_keyframe(bytes([0x80, 0x80, 0x81, 0x23, 0x10]))  # S = 0: not the start of a partition
    assert rtp.vp8_keyframe(bytes([0x10, 0x10]))  # no extension byte


def test_h264_keyframes_alone_aggregated_and_fragmented():
    assert rtp.h264_keyframe(bytes([0x65, 0x88]))  # IDR slice
    assert not rtp.h264_keyframe(bytes([0x41, 0x9A]))  # non-IDR slice
    sps, pps = bytes([0x67, 0x42, 0xC0, 0x1F]), bytes([0x68, 0xCE])
    stap_a = bytes([0x78]) + struct.pack("!H", len(sps)) + sps + struct.pack("!H", len(pps)) + pps
    assert rtp.h264_keyframe(stap_a)
    assert rtp.h264_keyframe(bytes([0x7C, 0x85, 0x88]))  # FU-A start of an IDR
    assert not rtp.h264_keyframe(bytes([0x7C, 0x05, 0x88]))  # FU-A continuation
    assert not rtp.h264_keyframe(bytes([0x7C, 0x81, 0x9A]))  # FU-A start of a non-IDR slice


def test_vp9_and_av1_keyframes():
    assert rtp.vp9_keyframe(bytes([0x8C, 0x81, 0x23]))  # I, B, E; P = 0
    assert not rtp.vp9_keyframe(bytes([0xCC, 0x81, 0x23]))  # P = 1
    assert not rtp.vp9_keyframe(bytes([0xA8, 0x81, 0x23, 0x02]))  # L: spatial layer 1 is not where a key starts
    assert rtp.av1_keyframe(bytes([0x18, 0x0A]))  # N = 1: a new coded video sequence
    assert not rtp.av1_keyframe(bytes([0x10, 0x0A]))


def test_nack_packs_runs_into_bitmasks_across_the_wrap_and_parses_back():
    lost = [65534, 65535, 0, 3, 40]
    packed = rtp.nack(1, 2, lost)
    assert len(packed) == 12 + 4 * 2  # 65534..3 in one entry (offsets 1, 2, 5), 40 in another
    (feedback,) = rtp.parse_rtcp(packed)
    assert feedback.media_ssrc == 2 and sorted(feedback.lost) == sorted(lost)


def test_keyframe_requests_and_sender_reports_parse_from_a_compound_packet():
    compound = rtp.receiver_report(1, [rtp.ReportBlock(9, 0, 0, 100, 3, 0, 0)]) \
        + rtp.sender_report(0xABC, ntp=(5 << 32) | 7, rtp_timestamp=123, packets=10, octets=1000) \
        + rtp.pli(1, 0xDEF) \
        + struct.pack("!BBHII", 0x84, rtp.RTCP_PSFB, 4, 1, 0) + struct.pack("!IB3x", 0x123, 1)  # FIR
    messages = list(rtp.parse_rtcp(compound))
    assert messages == [rtp.SenderReport(0xABC, (5 << 32) | 7, 123), rtp.Feedback(0xDEF, keyframe=True),
                        rtp.Feedback(0x123, keyframe=True)]


def test_remb_encodes_the_bitrate_as_exponent_and_mantissa():
    data = rtp.remb(1, 30_000_000, [5, 6])
    assert data[12:16] == b"REMB" and data[16] == 2
    exponent, mantissa = data[17] >> 2, ((data[17] & 3) << 16) | struct.unpack_from("!H", data, 18)[0]
    assert mantissa << exponent <= 30_000_000 < (mantissa + 1) << exponent
    assert struct.unpack_from("!II", data, 20) == (5, 6)
    assert struct.unpack_from("!H", data, 2)[0] == len(data) // 4 - 1


def test_rtcp_is_told_from_rtp_on_a_multiplexed_port():
    assert rtp.is_rtcp(rtp.pli(1, 2)) and not rtp.is_rtcp(packet(b"x", pt=111, marker=True))


def srtcp_sessions() -> list[tuple[pylibsrtp.Session, str]]:
    """Sending SRTCP sessions of the profiles a WebRTC peer negotiates, with random keys."""
    profiles = ((pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80, 30, "AES_CM_128_HMAC_SHA1_80"),
                (pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_128_GCM, 28, "AEAD_AES_128_GCM"),
                (pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_256_GCM, 44, "AEAD_AES_256_GCM"))
    return [(pylibsrtp.Session(pylibsrtp.Policy(key=os.urandom(length), ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND,
                                                srtp_profile=profile)), name)
            for profile, length, name in profiles]


def test_an_srtcp_receiver_report_without_blocks_is_told_apart_from_everything_the_relay_reads():
    empty_rr = struct.pack("!BBHI", 0x80, rtp.RTCP_RR, 1, 0x5EED)
    block = rtp.ReportBlock(0x11223344, 0, 0, 1000, 0, 0, 0)
    sender_report = rtp.sender_report(0x5EED, 1 << 40, 4800, 10, 1000)
    for session, name in srtcp_sessions():
        assert rtp.srtcp_is_empty_report(session.protect_rtcp(empty_rr)), name
        for kept in (empty_rr + rtp.pli(0x5EED, 7),  # a keyframe request after it (reduced-size or not)
                     empty_rr + rtp.nack(0x5EED, 7, [3]),
                     rtp.receiver_report(0x5EED, [block]),  # a report about a stream
                     sender_report,
                     rtp.pli(0x5EED, 7)):
            assert not rtp.srtcp_is_empty_report(session.protect_rtcp(kept)), (name, kept)
