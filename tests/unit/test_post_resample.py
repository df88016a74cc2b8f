"""The resampling operators of the post-processing stage (pure numpy/OpenCV)."""
from __future__ import annotations

import numpy as np
import pytest

from ai_enhance.post import bands, blur, resample

RNG = np.random.default_rng(0)


def rand(h, w, c):
    return RNG.random((h, w, c), dtype=np.float32)


@pytest.mark.parametrize("scale", [1, 2, 3, 4, 8])
@pytest.mark.parametrize("c", [1, 2, 3])
def test_down_is_the_block_mean(scale, c):
    x = rand(6 * scale, 5 * scale, c)
    want = x.astype(np.float64).reshape(6, scale, 5, scale, c).mean(axis=(1, 3))
    got = resample.down(x, scale)
    assert got.shape == (6, 5, c) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=2e-6)


def test_down_rejects_sizes_that_are_not_multiples():
    with pytest.raises(ValueError):
        resample.down(rand(9, 8, 3), 4)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_down_adjoint_is_the_transpose(scale):
    x = rand(5 * scale, 7 * scale, 3)
    r = rand(5, 7, 3)
    lhs = float(np.sum(resample.down(x, scale).astype(np.float64) * r))
    rhs = float(np.sum(x.astype(np.float64) * resample.down_adjoint(r, scale)))
    assert lhs == pytest.approx(rhs, rel=1e-5)


@pytest.mark.parametrize("scale", [2, 3, 4, 8])
def test_blur_taps_describe_down_of_up(scale):
    x = rand(1, 40, 1).repeat(20, 0)            # varies along x only
    k = resample.blur_taps(scale)
    got = resample.down(resample.up(x, scale), scale)[5, 1:-1, 0]
    want = k[0] * x[5, :-2, 0] + k[1] * x[5, 1:-1, 0] + k[2] * x[5, 2:, 0]
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert k.sum() == pytest.approx(1.0)


@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("c", [1, 3])
def test_lift_is_a_right_inverse_of_down(scale, c):
    r = rand(30, 23, c) - 0.5
    err = np.abs(resample.down(resample.lift(r, scale), scale) - r)
    assert err.max() < 1e-3                      # everywhere, borders included
    assert err[8:-8, 8:-8].max() < 2e-4          # away from the border: the prefilter's accuracy
    # and it is smooth: on a smooth residual it steps less than nearest-neighbour blocks, which
    # would also invert `down` exactly
    sm = blur.gaussian(r, 1.5) * 10
    u = resample.lift(sm, scale)
    blocks = resample.down_adjoint(sm, scale) * scale * scale
    assert np.abs(np.diff(u, axis=1)).max() < 0.6 * np.abs(np.diff(blocks, axis=1)).max()


def test_prefilter_taps_have_unit_gain_and_decay():
    for s in (2, 3, 4):
        t = resample.prefilter_taps(s)
        assert t.sum() == pytest.approx(1.0)
        assert len(t) == 2 * resample.PREFILTER_RADIUS + 1
        assert abs(t[0]) < 1e-3 * abs(t[resample.PREFILTER_RADIUS])


def test_scale_one_is_identity_and_copies():
    x = rand(8, 9, 3)
    for f in (resample.down, resample.up, resample.lift, resample.down_adjoint):
        y = f(x, 1)
        assert y is not x
        np.testing.assert_array_equal(y, x)


def test_gaussian_reach_is_what_radius_says():
    x = np.zeros((41, 41, 1), np.float32)
    x[20, 20] = 1
    for s in (0.5, 1.0, 2.0):
        y = blur.gaussian(x, s)[..., 0]
        r = blur.radius(s)
        assert y[20, 20 + r] > 0 and y[20, 20 + r + 1] == 0
        assert y.sum() == pytest.approx(1.0, abs=1e-5)


# --------------------------------------------------------------------------- bands

@pytest.mark.parametrize("height,halo,rows", [(10, 2, 3), (10, 0, 10), (7, 5, 1), (100, 4, 33), (5, 3, 100)])
def test_bands_cover_each_row_once(height, halo, rows):
    seen = np.zeros(height, int)
    for b in bands.iter_bands(height, 2, halo, rows):
        seen[b.y0: b.y1] += 1
        assert b.e0 == max(0, b.y0 - halo) and b.e1 == min(height, b.y1 + halo)
        assert b.y1 - b.y0 <= rows
    assert (seen == 1).all()


def test_run_reads_only_a_band_plus_halo_and_assembles_in_order():
    h, scale, halo, rows = 23, 3, 2, 4
    src = np.arange(h, dtype=np.float32)[:, None, None].repeat(5, 1)
    heights = []

    def fn(b):
        part = b.src(src)
        heights.append(part.shape[0])
        return resample.up(part, scale)         # nearest rows come back at output size

    got = bands.run(fn, h, scale, halo, (h * scale, 5 * scale, 1), rows=rows)
    assert max(heights) <= rows + 2 * halo
    np.testing.assert_array_equal(got, resample.up(src, scale))


def test_band_rows_respects_budget_and_halo():
    assert bands.band_rows(16000, 4, 20, pixels=4_000_000) == max(40, 4_000_000 // 64000)
    assert bands.band_rows(100, 1, 50) >= 100
