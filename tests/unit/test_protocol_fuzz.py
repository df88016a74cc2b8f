"""Property-based fuzzing of the decoder (hypothesis, bounded time): whatever the bytes, decode
raises ProtocolError (one line) or returns a valid message, never anything else; valid messages
survive a round trip."""
import json

import pytest

hypothesis = pytest.importorskip("hypothesis", reason="hypothesis is in tests/requirements-test.txt")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from ai_enhance_client import protocol as P  # noqa: E402

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=30)

TYPES = [t.value for t in P.MsgType] + ["pickle", "", None, 3]


def _check(frames, expect=None):
    try:
        msg = P.decode(frames, expect=expect)
    except P.ProtocolError as e:
        assert "\n" not in str(e)
        return None
    assert isinstance(msg.header, dict) and isinstance(msg.type, P.MsgType)
    return msg


@FUZZ
@given(st.lists(st.binary(max_size=300), min_size=0, max_size=4))
def test_random_bytes(frames):
    _check(frames)
    _check(frames, expect=P.REQUEST_TYPES)


@FUZZ
@given(st.dictionaries(st.sampled_from(["v", "type", "job_id", "op", "model", "scale", "tile", "inputs",
                                         "roi", "options", "post", "timeout", "image", "masks",
                                         "image_rows", "codecs", "accept", "kind", "message",
                                         "fraction", "info"]),
                       json_values, max_size=10),
       st.sampled_from(TYPES), st.integers(0, 3), st.lists(st.binary(max_size=64), max_size=3))
def test_headers_of_the_right_shape_with_wrong_values(fields, mtype, v, frames):
    h = dict(fields, v=v, type=mtype, job_id="fz")
    try:
        raw = json.dumps(h).encode()
    except (ValueError, TypeError):
        return
    _check([raw, *frames])
    _check([raw, *frames], expect=P.REQUEST_TYPES)


@FUZZ
@given(st.integers(1, 3000), st.sampled_from([b"[", b"{\"a\":", b"[{\"b\":"]))
def test_any_nesting_depth(n, opener):
    _check([b'{"v":3,"type":"ping","job_id":"n","x":' + opener * n])
    _check([opener * n + b"1" + b"]" * n])


@FUZZ
@given(st.integers(1, 40), st.integers(1, 40), st.sampled_from([1, 2, 3, 4]), st.sampled_from(list(P.DType)),
       st.integers(1, 8), st.data())
def test_valid_results_round_trip_through_bands(w, h, c, dtype, bands, data):
    s = P.ImageSpec(w, h, c, dtype)
    px = data.draw(st.binary(min_size=s.nbytes, max_size=s.nbytes))
    row = s.nbytes // h
    frames = P.result_reply("r", s, px, max_frame_bytes=max(row, row * (h // bands)))
    msg = _check(frames)
    assert msg is not None and bytes(msg.frames[0]) == px


@FUZZ
@given(st.integers(1, 30), st.integers(1, 30), st.sampled_from([1, 3, 4]), st.integers(1, 4), st.data())
def test_valid_requests_round_trip_and_flipped_bytes_never_crash(w, h, c, scale, data):
    s = P.ImageSpec(w, h, c, P.DType.U8)
    px = data.draw(st.binary(min_size=s.nbytes, max_size=s.nbytes))
    frames = P.enhance_request("q", op="upscale", image=s, pixels=px, scale=scale)
    msg = _check(frames, expect=P.REQUEST_TYPES)
    assert msg is not None and msg.header["scale"] == scale and bytes(msg.frames[0]) == px
    head = bytearray(frames[0])
    for _ in range(data.draw(st.integers(1, 5))):
        i = data.draw(st.integers(0, len(head) - 1))
        head[i] = data.draw(st.integers(0, 255))
    _check([bytes(head), *frames[1:]], expect=P.REQUEST_TYPES)
