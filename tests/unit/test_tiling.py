"""Tile planning, padding and blending (pure numpy, no torch)."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from ai_enhance.runtime import tiling
from ai_enhance.runtime.tiling import SizeReq, Span, plan, plan_axis


# --------------------------------------------------------------------------- 1-D plans

AXIS_CASES = [
    # length, start, stop, tile, context, overlap, align
    (100, 0, 100, 128, 16, 8, 1),       # fits in one tile
    (100, 0, 100, 40, 8, 6, 1),
    (100, 0, 100, 40, 8, 6, 4),         # extents aligned to 4 (pixel-unshuffle models)
    (1000, 0, 1000, 256, 16, 8, 1),
    (1000, 0, 1000, 256, 16, 8, 8),
    (257, 0, 257, 64, 8, 8, 1),
    (37, 0, 37, 16, 2, 2, 1),
    (500, 120, 260, 64, 10, 6, 1),      # roi inside
    (500, 0, 17, 64, 10, 6, 1),         # roi at the start
    (500, 480, 500, 64, 10, 6, 2),      # roi at the end
    (64, 5, 6, 16, 4, 2, 1),            # one-pixel roi
    (3000, 0, 3000, 512, 0, 0, 1),      # no context, no overlap: plain partition
]


@pytest.mark.parametrize("length,start,stop,tile,context,overlap,align", AXIS_CASES)
def test_axis_plan_geometry(length, start, stop, tile, context, overlap, align):
    spans = plan_axis(length, start, stop, tile, context, overlap, align)
    # supports cover exactly [start, stop), in order, each inside its extent
    assert spans[0].sup0 == start and spans[-1].sup1 == stop
    for s in spans:
        assert 0 <= s.ext0 <= s.sup0 < s.sup1 <= s.ext1 <= length
        assert s.ext_len <= tile or len(spans) == 1 and s.ext_len <= stop - start + 2 * context + align
        assert s.ext0 % align == 0
        # context on each side unless clipped by the image
        assert s.sup0 - s.ext0 >= min(context, s.sup0)
        assert s.ext1 - s.sup1 >= min(context, length - s.sup1)
        assert s.ramp0 + s.ramp1 <= s.sup_len
    for a, b in zip(spans, spans[1:]):
        # neighbours overlap by exactly the ramp width, and ramps match
        assert a.ramp1 == b.ramp0 == a.sup1 - b.sup0 >= 0
        assert a.ramp1 <= overlap
    assert spans[0].ramp0 == 0 and spans[-1].ramp1 == 0
    # no pixel belongs to more than two supports
    cover = np.zeros(length, int)
    for s in spans:
        cover[s.sup0: s.sup1] += 1
    assert cover[start:stop].min() == 1 and cover.max() <= 2
    assert cover[:start].sum() == 0 and cover[stop:].sum() == 0


@pytest.mark.parametrize("length,start,stop,tile,context,overlap,align", AXIS_CASES)
@pytest.mark.parametrize("scale", [1, 2, 3, 4])
def test_axis_weights_sum_to_one(length, start, stop, tile, context, overlap, align, scale):
    spans = plan_axis(length, start, stop, tile, context, overlap, align)
    total = np.zeros((stop - start) * scale, np.float64)
    for s in spans:
        w = tiling.axis_weights(s, scale)
        assert w.shape == (s.sup_len * scale,)
        assert w.min() > 0 and w.max() <= 1
        o = (s.sup0 - start) * scale
        total[o: o + len(w)] += w
    np.testing.assert_allclose(total, 1.0, atol=1e-6)


def test_ramp_is_smooth_and_symmetric():
    r = tiling.ramp(16)
    assert np.all(np.diff(r) > 0)                    # rising
    np.testing.assert_allclose(r + r[::-1], 1.0, atol=1e-7)
    assert r[0] < 0.02 and r[-1] > 0.98              # flat ends (smoothstep), no jump at the edge


def test_small_tile_for_context_is_rejected():
    with pytest.raises(ValueError):
        plan_axis(1000, 0, 1000, 20, 8, 8)
    with pytest.raises(ValueError):
        plan_axis(100, 50, 40, 64, 8, 8)


def test_tile_count_grows_as_expected():
    # interior core = tile - 2*context - overlap = 256 - 32 - 8 = 216
    assert len(plan_axis(1000, 0, 1000, 256, 16, 8)) == 5          # ceil(1000/216)
    assert len(plan_axis(216 * 3, 0, 216 * 3, 256, 16, 8)) == 3
    assert len(plan_axis(240, 0, 240, 256, 16, 8)) == 1            # 240 + context fits? 240+16 <= 256


# --------------------------------------------------------------------------- 2-D plans

@pytest.mark.parametrize("h,w,tile,roi,scale", [
    (100, 130, 48, None, 1),
    (100, 130, 48, None, 4),
    (100, 130, 48, (20, 30, 50, 40), 2),
    (64, 64, 0, None, 3),                  # tile 0: one tile
    (300, 17, 64, None, 4),                # very thin image
    (300, 200, 64, (299 - 299, 150, 1, 1), 4),
])
def test_plan_weights_sum_to_one_everywhere(h, w, tile, roi, scale):
    context, overlap = tiling.margins_for(tile or 1 << 20, 8, 6)
    p = plan(h, w, tile, context=context, overlap=overlap, roi=roi)
    total = tiling.weight_sum(p, scale)
    assert total.shape == p.output_shape(scale)
    np.testing.assert_allclose(total, 1.0, atol=1e-6)       # including the borders


def test_roi_computes_only_tiles_near_the_roi():
    full = plan(2000, 2000, 256, context=16, overlap=8)
    roi = plan(2000, 2000, 256, context=16, overlap=8, roi=(900, 900, 100, 80))
    assert full.count == 100
    assert roi.count == 1
    (t,) = list(roi.tiles())
    assert t.extent == (900 - 16, 980 + 16, 900 - 16, 1000 + 16)   # roi plus context
    assert roi.computed_pixels < 0.005 * full.computed_pixels


def test_roi_outside_image_rejected():
    with pytest.raises(ValueError):
        plan(100, 100, 64, roi=(90, 0, 20, 10))


# --------------------------------------------------------------------------- padding

@pytest.mark.parametrize("req,h,w,expect", [
    (SizeReq(), 7, 9, (0, 0)),
    (SizeReq(minimum=16), 7, 9, (9, 7)),
    (SizeReq(multiple_of=4), 7, 9, (1, 3)),
    (SizeReq(multiple_of=8), 16, 24, (0, 0)),
    (SizeReq(minimum=2, multiple_of=4), 1, 1, (3, 3)),
    (SizeReq(square=True), 10, 6, (0, 4)),
    (SizeReq(multiple_of=8, square=True), 10, 6, (6, 10)),
    (SizeReq(minimum=5, multiple_of=4), 3, 3, (5, 5)),        # minimum rounds up to 8
])
def test_size_requirements_padding(req, h, w, expect):
    assert req.padding(h, w) == expect
    ph, pw = expect
    img = np.arange(h * w * 3, dtype=np.float32).reshape(h, w, 3)
    out = tiling.pad_hwc(img, ph, pw)
    assert out.shape == (h + ph, w + pw, 3)
    np.testing.assert_array_equal(out[:h, :w], img)           # original untouched, top-left


def test_padding_matches_spandrel_rule():
    spandrel = pytest.importorskip("spandrel")
    for (mn, mul, sq), (h, w) in itertools.product(
            [(0, 1, False), (2, 4, False), (16, 8, False), (0, 8, True), (64, 16, True)],
            [(1, 1), (3, 17), (64, 63), (100, 7)]):
        ours = SizeReq(mn, mul, sq).padding(h, w)
        theirs = spandrel.SizeRequirements(minimum=mn, multiple_of=mul, square=sq).get_padding(w, h)
        assert ours == (theirs[1], theirs[0])


def test_pad_reflects_then_repeats():
    img = np.array([[1.0, 2.0, 3.0]], np.float32)[:, :, None]     # 1 x 3
    out = tiling.pad_hwc(img, 2, 4)
    # right: reflect (2, 1), then edge (1, 1); bottom: a single row can only repeat
    np.testing.assert_array_equal(out[0, :, 0], [1, 2, 3, 2, 1, 1, 1])
    np.testing.assert_array_equal(out[2, :, 0], out[0, :, 0])


# --------------------------------------------------------------------------- blending

def _run_blender(img: np.ndarray, p: tiling.Plan, scale: int, fn, dtype=np.float32):
    x, y, w, h = p.roi
    out = np.zeros((h * scale, w * scale, img.shape[2]), dtype)
    b = tiling.RowBlender(p, scale, out, convert=lambda a: a.astype(dtype))
    for t in p.tiles():
        y0, y1, x0, x1 = t.extent
        b.add(t, fn(img[y0:y1, x0:x1]))
    assert b.complete
    return out


@pytest.mark.parametrize("scale", [1, 2, 4])
@pytest.mark.parametrize("roi", [None, (13, 7, 61, 40)])
def test_blending_a_pointwise_model_reconstructs_exactly(scale, roi):
    """A tile 'model' that is a pure nearest upscale has no context dependence: blended tiles
    must give back exactly the untiled result (weights sum to 1, placement is right)."""
    rng = np.random.default_rng(1)
    img = rng.random((70, 90, 3)).astype(np.float32)
    p = plan(70, 90, 24, context=3, overlap=4, roi=roi)
    assert p.count > 4

    def nearest(a):
        return a.repeat(scale, 0).repeat(scale, 1)

    out = _run_blender(img, p, scale, nearest)
    x, y, w, h = p.roi
    np.testing.assert_allclose(out, nearest(img[y:y + h, x:x + w]), atol=2e-6)


def test_blender_converts_dtype_band_by_band():
    img = np.full((50, 50, 1), 0.5, np.float32)
    p = plan(50, 50, 20, context=2, overlap=4)
    out = _run_blender(img, p, 2, lambda a: a.repeat(2, 0).repeat(2, 1),
                       dtype=np.float64)
    assert out.dtype == np.float64
    np.testing.assert_allclose(out, 0.5, atol=1e-6)


def test_blender_rejects_out_of_order_or_wrong_size_tiles():
    p = plan(40, 40, 16, context=2, overlap=2)
    out = np.zeros((40, 40, 1), np.float32)
    b = tiling.RowBlender(p, 1, out)
    tiles = list(p.tiles())
    t = tiles[0]
    with pytest.raises(ValueError):
        b.add(t, np.zeros((3, 3, 1), np.float32))
    b2 = tiling.RowBlender(p, 1, out)
    b2.add(tiles[0], np.zeros((t.row.ext_len, t.col.ext_len, 1), np.float32))
    last = tiles[-1]
    with pytest.raises(ValueError):
        b2.add(last, np.zeros((last.row.ext_len, last.col.ext_len, 1), np.float32))


def test_blender_memory_is_one_band():
    """The float accumulator never holds more than one row of tiles."""
    p = plan(1000, 300, 64, context=8, overlap=8)
    out = np.zeros((1000, 300, 3), np.uint8)
    b = tiling.RowBlender(p, 1, out, convert=lambda a: a.astype(np.uint8))
    biggest = 0
    for t in p.tiles():
        y0, y1, x0, x1 = t.extent
        b.add(t, np.ones((y1 - y0, x1 - x0, 3), np.float32))
        if b._band is not None:
            biggest = max(biggest, b._band.shape[0])
    assert b.complete
    assert biggest <= 64
    assert (out == 1).all()


def test_span_lengths():
    s = Span(0, 10, 2, 8, 1, 2)
    assert s.ext_len == 10 and s.sup_len == 6
