"""The wire protocol: round trips and rejection of every malformed header field."""
import json

import pytest

from ai_enhance_client import protocol as P


def spec(w=4, h=3, c=3, dt=P.DType.U8):
    return P.ImageSpec(w, h, c, dt)


def enhance(**over):
    s = over.pop("spec", spec())
    pixels = over.pop("pixels", bytes(s.nbytes))
    frames = P.enhance_request("job1", op="upscale", model="realesrgan-x4plus", image=s, pixels=pixels,
                               scale=2, tile=64)
    header = json.loads(frames[0])
    header.update(over)
    return [json.dumps(header).encode(), *frames[1:]]


def test_enhance_round_trip():
    s = spec(5, 2, 4, P.DType.U16)
    frames = P.enhance_request("abc-1", op="upscale", model="m", image=s, pixels=b"\x01" * s.nbytes,
                               scale=3, tile=0, roi=P.Rect(1, 0, 3, 2), options={"denoise-strength": 0.5},
                               timeout=60)
    msg = P.decode(frames, expect=P.REQUEST_TYPES)
    assert msg.type is P.MsgType.ENHANCE and msg.job_id == "abc-1"
    h = msg.header
    assert h["v"] == P.VERSION and h["scale"] == 3 and h["roi"] == [1, 0, 3, 2]
    assert P.input_specs(h) == [("image", s)]
    assert h["options"] == {"denoise-strength": 0.5}
    assert bytes(msg.frames[0]) == b"\x01" * s.nbytes


def test_result_round_trip_with_masks():
    s = spec(2, 2, 3)
    m = P.ImageSpec(2, 2, 1, P.DType.U8)
    frames = P.result_reply("j", s, bytes(12), [("faces", m, b"\xff" * 4)], {"faces": []})
    msg = P.decode(frames, expect=P.REPLY_TYPES)
    assert msg.header["masks"][0]["name"] == "faces"
    assert bytes(msg.frames[1]) == b"\xff" * 4


def test_error_and_progress_round_trip():
    e = P.decode(P.error_reply("j", P.ErrorKind.MODEL_MISSING, "no\nfile", "put it there"))
    assert e.header["kind"] == "model_missing"
    assert e.header["message"] == "no file"      # always one line
    p = P.decode(P.progress_reply("j", 1.7, "tile 3/4"))
    assert p.header["fraction"] == 1.0


@pytest.mark.parametrize("frames, needle", [
    ([], "empty"),
    ([b"\xff\xfe"], "not UTF-8 JSON"),
    ([b"[1,2]"], "JSON object"),
    ([b'{"v":3,"type":"ping"}'], "job_id"),
    ([b'{"v":3,"type":"ping","job_id":"bad id!"}'], "job_id"),
    ([b'{"v":3,"type":"ping","job_id":"' + b"x" * 65 + b'"}'], "job_id"),
    ([b'{"v":4,"type":"ping","job_id":"a"}'], "protocol v4"),
    ([b'{"v":1,"type":"ping","job_id":"a"}'], "update the plug-in"),
    ([b'{"v":2,"type":"ping","job_id":"a"}'], "update the plug-in"),
    ([b'{"type":"ping","job_id":"a"}'], "version"),
    ([b'{"v":3,"type":"pickle","job_id":"a"}'], "unknown message type"),
    ([b'{"v":3,"type":"ping","job_id":"a"}', b"extra"], "no data frames"),
    ([b" " * (P.MAX_HEADER_BYTES + 1)], "header frame"),
])
def test_malformed_messages_rejected(frames, needle):
    with pytest.raises(P.ProtocolError, match=needle):
        P.decode(frames)


def _inputs(image):
    return {"inputs": [{"name": "image", "image": image}]}


@pytest.mark.parametrize("over, needle", [
    ({"op": "Explode!"}, "enhance.op"),
    ({"op": 3}, "enhance.op"),
    ({"model": ""}, "enhance.model"),
    ({"model": "../../etc/passwd"}, "enhance.model"),
    ({"scale": 0}, "scale"),
    ({"scale": 9}, "scale"),
    ({"scale": True}, "scale"),
    ({"scale": 2.0}, "scale"),
    ({"tile": -1}, "tile"),
    (_inputs({"width": 4, "height": 3, "channels": 5, "dtype": "u8"}), "channels"),
    (_inputs({"width": 4, "height": 3, "channels": 3, "dtype": "f64"}), "dtype"),
    (_inputs({"width": 0, "height": 3, "channels": 3, "dtype": "u8"}), "width"),
    (_inputs({"width": 65536, "height": 65536, "channels": 3, "dtype": "u8"}), "pixels"),
    (_inputs("4x3"), "image"),
    ({"roi": [0, 0, 5, 3]}, "outside"),
    ({"roi": [0, 0, 0, 3]}, "roi"),
    ({"roi": [0, 0, 2]}, "roi"),
    ({"options": {"a b": 1}}, "options"),
    ({"options": {"k": [1, 2]}}, "options"),
    ({"post": {"k": {"deep": 1}}}, "post"),
    ({"inputs": []}, "inputs"),
    ({"inputs": "image"}, "inputs"),
    ({"inputs": [{"name": "mask", "image": {"width": 4, "height": 3, "channels": 1, "dtype": "u8"}}]},
     "first input must be named 'image'"),
    ({"inputs": [{"name": "image", "image": {"width": 4, "height": 3, "channels": 3, "dtype": "u8"}},
                 {"name": "image", "image": {"width": 4, "height": 3, "channels": 1, "dtype": "u8"}}]},
     "twice"),
    ({"timeout": 0}, "timeout"),
])
def test_bad_enhance_fields(over, needle):
    with pytest.raises(P.ProtocolError, match=needle) as ei:
        P.decode(enhance(**over), expect=P.REQUEST_TYPES)
    assert ei.value.job_id == "job1"     # the reply can name the job


def test_frame_size_must_match_header():
    frames = enhance()
    with pytest.raises(P.ProtocolError, match="needs 36"):
        P.decode([frames[0], b"\0" * 35])
    with pytest.raises(P.ProtocolError, match="announces 1 input frame"):
        P.decode([frames[0]])
    with pytest.raises(P.ProtocolError, match="more than 10"):
        P.decode(frames, max_frame_bytes=10)


def test_expect_filters_direction():
    with pytest.raises(P.ProtocolError, match="unexpected"):
        P.decode(P.progress_reply("j", 0.5), expect=P.REQUEST_TYPES)


def test_result_frame_count_checked():
    frames = P.result_reply("j", spec(2, 2, 3), bytes(12), [("m", P.ImageSpec(2, 2, 1, P.DType.U8), b"1234")])
    with pytest.raises(P.ProtocolError, match="frames"):
        P.decode(frames[:2])


def test_no_pickle_anywhere():
    src = open(P.__file__, encoding="utf-8").read()
    assert "pickle" not in src.replace("No pickle", "").replace("no pickle", "")


def test_named_mask_input_round_trip():
    s, m = spec(4, 3, 3), P.ImageSpec(4, 3, 1, P.DType.U8)
    frames = P.enhance_request("j", op="inpaint", image=s, pixels=bytes(36),
                               extra_inputs=[("mask", m, b"\xff" * 12)], post={"fidelity": 0.5})
    msg = P.decode(frames, expect=P.REQUEST_TYPES)
    assert P.input_specs(msg.header) == [("image", s), ("mask", m)]
    assert "model" not in msg.header                      # absent: the operation's best model
    assert msg.header["post"] == {"fidelity": 0.5}
    assert bytes(msg.frames[1]) == b"\xff" * 12
    with pytest.raises(P.ProtocolError, match="mask frame has 11 bytes"):
        P.decode([frames[0], frames[1], b"\xff" * 11])


def test_result_may_carry_masks_only():
    m = P.ImageSpec(2, 2, 1, P.DType.U8)
    msg = P.decode(P.result_reply("j", None, None, [("damage", m, b"\x00\xff\x00\xff")]))
    assert msg.header["image"] is None and bytes(msg.frames[0]) == b"\x00\xff\x00\xff"
    with pytest.raises(P.ProtocolError, match="image, masks, or both"):
        P.decode(P.result_reply("j", None, None, []))


def test_an_older_client_is_answered_in_its_own_version():
    """A v1 plug-in talking to this backend must read the error and be told to update."""
    with pytest.raises(P.ProtocolError) as ei:
        P.decode([b'{"v":1,"type":"ping","job_id":"old"}'], expect=P.REQUEST_TYPES)
    assert ei.value.peer_version == 1 and ei.value.job_id == "old"
    reply = P.error_reply("old", P.ErrorKind.VERSION, str(ei.value), version=ei.value.peer_version)
    header = json.loads(reply[0])
    assert header["v"] == 1 and header["kind"] == "version"       # what a v1 client validates
    assert "update the plug-in" in header["message"] and "\n" not in header["message"]
