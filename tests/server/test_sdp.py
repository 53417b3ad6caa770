"""Reading published tracks out of a client's offer: which section carries which track, and whether it sends."""

from nbagents.server.sdp import finish_answer, media_sections

OFFER = """v=0
o=- 1 2 IN IP4 127.0.0.1
s=-
t=0 0
a=group:BUNDLE 0 1 2
a=msid-semantic: WMS
m=audio 9 UDP/TLS/RTP/SAVPF 111
a=mid:0
a=sendonly
a=msid:- TR_cid_one
m=application 9 UDP/DTLS/SCTP webrtc-datachannel
a=mid:1
m=audio 0 UDP/TLS/RTP/SAVPF 111
a=mid:2
a=inactive
"""


def test_sections_name_their_track_and_direction_and_skip_data():
    first, stopped = media_sections(OFFER)
    assert (first.mid, first.kind, first.track_id, first.sending) == ("0", "audio", "TR_cid_one", True)
    assert (stopped.mid, stopped.track_id, stopped.sending) == ("2", None, False)


def test_a_rejected_section_does_not_send_whatever_its_direction():
    (section,) = media_sections("m=audio 0 RTP/SAVPF 111\r\na=mid:a\r\na=sendrecv\r\na=msid:s t\r\n")
    assert not section.sending


SIMULCAST_OFFER = """v=0
o=- 1 2 IN IP4 127.0.0.1
s=-
t=0 0
a=group:BUNDLE 0 1
m=video 9 UDP/TLS/RTP/SAVPF 96 97
a=mid:0
a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid
a=extmap:10 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id
a=sendonly
a=msid:- TR_cid_cam
a=rtpmap:96 VP8/90000
a=rtpmap:97 rtx/90000
a=fmtp:97 apt=96
a=rid:f send
a=rid:h send
a=rid:q send
a=simulcast:send f;h;~q
m=audio 9 UDP/TLS/RTP/SAVPF 111
a=mid:1
a=sendonly
a=msid:- TR_cid_mic
a=ssrc-group:FID 11 22
a=ssrc:11 cname:x
a=ssrc:22 cname:x
"""

ANSWER = """v=0\r
o=- 3 4 IN IP4 0.0.0.0\r
s=-\r
t=0 0\r
m=video 5000 UDP/TLS/RTP/SAVPF 96 97\r
c=IN IP4 127.0.0.1\r
a=recvonly\r
a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid\r
a=mid:0\r
a=ssrc-group:FID 1 2\r
a=ssrc:1 cname:y\r
a=ssrc:2 cname:y\r
a=rtpmap:96 VP8/90000\r
a=rtcp-fb:96 nack\r
a=rtpmap:97 rtx/90000\r
a=fmtp:97 apt=96\r
m=audio 5000 UDP/TLS/RTP/SAVPF 111\r
a=recvonly\r
a=mid:1\r
"""


def test_sections_name_their_ssrcs_layers_and_header_extension_ids():
    video, audio = media_sections(SIMULCAST_OFFER)
    assert video.rids == ("f", "h", "q") and video.ssrcs == ()
    assert video.extensions == {"urn:ietf:params:rtp-hdrext:sdes:mid": 4,
                                "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id": 10}
    assert audio.ssrcs == (11,) and audio.rids == ()  # 22 repairs 11 (RTX), it is not a stream of its own


def test_the_answer_declines_rtx_and_accepts_each_simulcast_layer():
    answer = finish_answer(ANSWER, media_sections(SIMULCAST_OFFER))
    video = answer.split("m=audio")[0]
    assert "m=video 5000 UDP/TLS/RTP/SAVPF 96\r\n" in video
    assert "rtx" not in answer and "apt=" not in answer and "FID" not in answer and "a=ssrc:2 " not in answer
    assert "a=ssrc:1 cname:y" in video
    for line in ("a=extmap:10 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id", "a=rid:f recv", "a=rid:h recv",
                 "a=rid:q recv", "a=simulcast:recv f;h;q"):
        assert line + "\r\n" in video
    assert video.count("sdes:mid") == 1  # already answered: not repeated
    audio = answer.split("m=audio")[1]
    assert "simulcast" not in audio and "a=rid" not in audio
