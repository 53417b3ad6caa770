"""Reading published tracks out of a client's offer: which section carries which track, and whether it sends."""

from nbagents.server.sdp import media_sections

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
