"""Protocol v3: bounded JSON before parsing, row bands, deflated frames, received/shutdown."""
import json
import os
import zlib

import pytest

from ai_enhance_client import protocol as P


def test_deep_nesting_is_a_clean_protocol_error_before_parsing():
    # the probe: a 2 KB header nested 1,000 levels raised RecursionError out of decode
    raw = b'{"v":3,"type":"ping","job_id":"deep","x":' + b"[" * 1000 + b"]" * 1000 + b"}"
    assert len(raw) < 2100
    with pytest.raises(P.ProtocolError, match="deeper than") as ei:
        P.decode([raw])
    assert "\n" not in str(ei.value)
    # deeper than the recursion limit, objects too, and unterminated
    for raw in (b"[" * 100_000, b'{"a":' * 20_000, b"[" * 5000 + b"1"):
        with pytest.raises(P.ProtocolError):
            P.decode([raw])


@pytest.mark.parametrize("raw, depth", [
    (b'{"a":[1,{"b":[]}]}', 4),
    (b'{"a":"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["}', 1),   # brackets in a string do not count
    (b'{"a":"\\"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["}', 1),  # nor after an escaped quote
    (b"[" * 40 + b"]" * 40, P.MAX_JSON_DEPTH + 1),
])
def test_json_depth(raw, depth):
    assert P.json_depth(raw) == depth


def test_depth_limit_lets_real_headers_through():
    caps = {"models": [{"id": "m", "ops": ["upscale"], "x": {"y": [1, 2]}}], "faces": [[[1, 2]]]}
    msg = P.decode(P.encode(P.new_header(P.MsgType.PONG, "p", **caps)))
    assert msg.header["models"][0]["x"]["y"] == [1, 2]


def test_huge_integer_and_weird_type_are_protocol_errors():
    for raw in (b'{"v":3,"type":"ping","job_id":"a","n":' + b"9" * 10000 + b"}",
                b'{"v":3,"type":["ping"],"job_id":"a"}',
                b'{"v":3,"type":{"a":1},"job_id":"a"}'):
        with pytest.raises(P.ProtocolError):
            P.decode([raw])


def test_result_larger_than_a_frame_travels_in_row_bands():
    s = P.ImageSpec(50, 37, 3, P.DType.U16)
    px = os.urandom(s.nbytes)
    frames = P.result_reply("j", s, px, [("m", P.ImageSpec(50, 37, 1, P.DType.U8), b"\x07" * 1850)],
                            max_frame_bytes=2000)
    h = json.loads(frames[0])
    assert sum(h["image_rows"]) == 37 and len(h["image_rows"]) == len(frames) - 2
    assert all(len(f) <= 2000 for f in frames[1:-1])
    msg = P.decode(frames)
    assert bytes(msg.frames[0]) == px and len(msg.frames) == 2 and "image_rows" not in msg.header
    # one frame when it fits
    assert "image_rows" not in json.loads(P.result_reply("j", s, px)[0])


@pytest.mark.parametrize("rows", [[10, 10], [37, 0], [-1, 38], "37", [True] * 37])
def test_bad_bands_refused(rows):
    s = P.ImageSpec(4, 37, 1, P.DType.U8)
    h = P.new_header(P.MsgType.RESULT, "j", masks=[], info={}, image=s.to_json(), image_rows=rows)
    with pytest.raises(P.ProtocolError, match="image_rows|frames"):
        P.decode(P.encode(h, [bytes(4 * r) for r in (rows if isinstance(rows, list) else [37])
                             if isinstance(r, int) and r > 0]))


def test_band_bytes_must_match_rows():
    s = P.ImageSpec(4, 4, 1, P.DType.U8)
    h = P.new_header(P.MsgType.RESULT, "j", masks=[], info={}, image=s.to_json(), image_rows=[2, 2])
    with pytest.raises(P.ProtocolError, match="band of 2 rows"):
        P.decode(P.encode(h, [bytes(8), bytes(7)]))


@pytest.mark.parametrize("dtype", list(P.DType))
def test_compressed_request_and_result_round_trip(dtype):
    s = P.ImageSpec(1000, 400, 3, dtype)
    px = (bytes(range(256)) * (s.nbytes // 256 + 1))[:s.nbytes]
    req = P.enhance_request("j", op="upscale", image=s, pixels=px, compress=True)
    h = json.loads(req[0])
    assert h["accept"] == ["zlib"] and h["codecs"][0][:2] == ["zlib", s.nbytes]
    assert len(req[1]) < s.nbytes / 10
    msg = P.decode(req, expect=P.REQUEST_TYPES)
    assert bytes(msg.frames[0]) == px and "codecs" not in msg.header
    res = P.result_reply("j", s, px, compress=True, max_frame_bytes=s.nbytes // 3)
    back = P.decode(res)
    assert bytes(back.frames[0]) == px


def test_incompressible_frames_go_as_they_are():
    s = P.ImageSpec(1024, 512, 3, P.DType.U8)
    req = P.enhance_request("j", op="upscale", image=s, pixels=os.urandom(s.nbytes), compress=True)
    assert "codecs" not in json.loads(req[0]) and len(req[1]) == s.nbytes


def test_zip_bomb_and_lying_sizes_refused():
    s = P.ImageSpec(100, 100, 1, P.DType.U8)
    bomb = zlib.compress(bytes(200 << 20), 9)           # 200 MB of zeros in ~200 KB
    h = json.loads(P.enhance_request("j", op="upscale", image=s, pixels=bytes(s.nbytes))[0])
    h["codecs"] = [["zlib", s.nbytes, 1]]
    with pytest.raises(P.ProtocolError, match="announced"):
        P.decode([json.dumps(h).encode(), bomb])
    h["codecs"] = [["zlib", s.nbytes, 1]]
    with pytest.raises(P.ProtocolError, match="deflate"):
        P.decode([json.dumps(h).encode(), b"not deflate at all"])
    for bad in ([["gzip", 1, 1]], [["zlib", -1, 1]], [["zlib", 10, 3]], "zlib", [None, None]):
        h["codecs"] = bad
        with pytest.raises(P.ProtocolError, match="codecs"):
            P.decode([json.dumps(h).encode(), bytes(s.nbytes)])


def test_shuffle_round_trip():
    data = os.urandom(4 * 1001)
    for k in (1, 2, 4):
        assert P.unshuffle(P.shuffle(data, k), k) == data
    assert P.shuffle(b"\x01\x02\x03\x04", 2) == b"\x01\x03\x02\x04"


def test_received_and_shutdown_are_requests():
    for frames, t in ((P.received_request("j"), P.MsgType.RECEIVED), (P.shutdown_request(), P.MsgType.SHUTDOWN)):
        assert P.decode(frames, expect=P.REQUEST_TYPES).type is t
    e = P.decode(P.error_reply("j", P.ErrorKind.SHUTTING_DOWN, "backend shutting down", "start it again"))
    assert e.header["kind"] == "shutting_down"
