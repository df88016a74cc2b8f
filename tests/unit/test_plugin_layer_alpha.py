"""What the plug-in writes into a new result layer (always with alpha) for every transport: which
results get their opaque alpha in Python (ai_enhance_client.alpha.for_layer) and which are left to
babl, and that the bytes written are the result's pixels plus a fully opaque alpha.  Also the
AI_ENHANCE_PROFILE file format as bench/bench_gimp.py reads it."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest

PLUGIN = Path(__file__).resolve().parents[2] / "plugin" / "ai-enhance"
sys.path.insert(0, str(PLUGIN))

from ai_enhance_client import alpha as A  # noqa: E402
from ai_enhance_client import filters as F  # noqa: E402
from ai_enhance_client import ops as optable  # noqa: E402
from ai_enhance_client import phases  # noqa: E402

#: the numpy type of one component of a babl format's component type
NP = {"u8": np.dtype(np.uint8), "u16": np.dtype(np.uint16), "float": np.dtype(np.float32)}

#: (GIMP precision component, gray, alpha) -> the format written, or None: left to babl as sent
CASES = {
    ("U8", False, False): "R'G'B'A u8",
    ("U8", True, False): "Y'A u8",
    ("U16", True, False): "Y'A u16",
    ("U16", False, False): None,     # babl finds R'G'B' u16 -> R'G'B'A u16 fast
    **{(c, g, False): None for c in ("U32", "HALF", "FLOAT", "DOUBLE") for g in (False, True)},
    **{(c, g, True): None for c in ("U8", "U16", "U32", "HALF", "FLOAT", "DOUBLE") for g in (False, True)},
}


def _pixels(tr, h, w, seed):
    ctype = tr.babl_format.rpartition(" ")[2]
    dt = NP[ctype]
    rng = np.random.default_rng(seed)
    if dt.kind == "f":
        a = rng.uniform(-0.25, 1.25, (h, w, tr.channels)).astype(dt)    # float results may leave 0..1
    else:
        a = rng.integers(0, np.iinfo(dt).max, (h, w, tr.channels), endpoint=True).astype(dt)
    return a, dt


@pytest.mark.parametrize("component, gray, has_alpha", sorted(CASES))
@pytest.mark.parametrize("h, w", [(1, 1), (5, 3), (37, 64)])
def test_for_layer_per_transport(component, gray, has_alpha, h, w):
    tr = F.transport(component, gray=gray, alpha=has_alpha)
    src, dt = _pixels(tr, h, w, seed=h * 31 + w)
    data = src.tobytes()
    out, fmt = A.for_layer(data, tr.babl_format, layer_gray=gray)
    want = CASES[(component, gray, has_alpha)]
    if want is None:
        assert fmt == tr.babl_format and out is data      # untouched: babl converts
        return
    assert fmt == want
    assert isinstance(out, bytes), "bytes: PyGObject walks a bytearray element by element"
    got = np.frombuffer(out, dt).reshape(h, w, tr.channels + 1)
    np.testing.assert_array_equal(got[..., :tr.channels], src)
    assert (got[..., -1] == np.iinfo(dt).max).all()       # opaque: 255 / 65535


@pytest.mark.parametrize("component", ["U8", "U16", "FLOAT"])
def test_for_layer_leaves_another_colour_model_to_babl(component):
    """A gray transport into an RGB layer (the change map on an RGB image) and an RGB one into a
    gray layer are converted by babl, never padded here."""
    for tr_gray, layer_gray in ((True, False), (False, True)):
        tr = F.transport(component, gray=tr_gray, alpha=False)
        data = bytes(tr.channels * NP[tr.babl_format.rpartition(' ')[2]].itemsize * 6)
        out, fmt = A.for_layer(data, tr.babl_format, layer_gray=layer_gray)
        assert (out, fmt) == (data, tr.babl_format)


def test_the_change_map_on_a_gray_image_gets_its_alpha_here():
    ctr = F.transport("U8", gray=True, alpha=False)       # the plug-in's change-map transport
    out, fmt = A.for_layer(b"\x00\x80\xff", ctr.babl_format, layer_gray=True)
    assert (out, fmt) == (b"\x00\xff\x80\xff\xff\xff", "Y'A u8")


def test_colorize_on_a_gray_image_writes_rgb_with_alpha():
    """Colorize needs RGB: the plug-in converts the image first, its result travels as RGB."""
    op = next(o for o in optable.OPS if o.needs_rgb)
    rtr = F.result_transport(op, "U8", gray=True, alpha=False)
    out, fmt = A.for_layer(b"\x01\x02\x03", rtr.babl_format, layer_gray=False)
    assert (out, fmt) == (b"\x01\x02\x03\xff", "R'G'B'A u8")


def test_for_layer_refuses_bytes_of_a_partial_pixel():
    with pytest.raises(ValueError, match="whole number"):
        A.for_layer(b"\x00" * 5, "R'G'B' u8", layer_gray=False)
    with pytest.raises(ValueError, match="whole number"):
        A.for_layer(b"\x00" * 3, "Y' u16", layer_gray=True)


def test_for_layer_takes_the_memoryview_a_client_result_may_hold():
    out, fmt = A.for_layer(memoryview(b"\x10\x20"), "Y' u8", layer_gray=True)
    assert (out, fmt) == (b"\x10\xff\x20\xff", "Y'A u8")


def test_for_layer_counts_bytes_of_a_buffer_with_wider_items():
    """A u16 result held as a memoryview of "H" items: its length in items is not its size."""
    src = np.array([[1, 2], [65535, 0]], np.uint16)          # two Y' u16 pixels... as 2x2 items
    out, fmt = A.for_layer(memoryview(src.tobytes()).cast("H"), "Y' u16", layer_gray=True)
    assert fmt == "Y'A u16"
    assert np.frombuffer(out, np.uint16).tolist() == [1, 65535, 2, 65535, 65535, 65535, 0, 65535]


def test_profile_file_holds_one_json_object_per_call_in_mark_order(tmp_path):
    """The AI_ENHANCE_PROFILE format bench/bench_gimp.py reads: one line per call; wall0 <=
    wall_end (wall clock, comparable with the caller's); phases in the order first marked,
    non-negative seconds; a call's extra facts at the top level."""
    path = tmp_path / "profile.jsonl"
    for call in range(3):
        c = phases.PhaseClock(str(path))
        c.extra["call"] = call
        for name in ("import stdlib", "read pixels", "write pixels", "read pixels"):
            c.mark(name)
        c.write()
    lines = path.read_text().splitlines()
    assert len(lines) == 3
    for call, line in enumerate(lines):
        rec = json.loads(line)
        assert set(rec) == {"wall0", "wall_end", "phases", "call"} and rec["call"] == call
        assert isinstance(rec["wall0"], float) and rec["wall0"] <= rec["wall_end"]
        assert list(rec["phases"]) == ["import stdlib", "read pixels", "write pixels"]
        assert all(isinstance(v, float) and v >= 0 for v in rec["phases"].values())
    assert list(phases.summarize([json.loads(x) for x in lines])) == \
        ["import stdlib", "read pixels", "write pixels"]
