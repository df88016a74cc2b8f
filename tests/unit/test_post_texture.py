"""Keep texture: the source's fine band back where the mask says (pure numpy/OpenCV)."""
from __future__ import annotations

import numpy as np
import pytest

from ai_enhance.post import blur, resample, texture

from _post_images import bicubic, photo


def plastic(src: np.ndarray, scale: int) -> np.ndarray:
    """A restorer's output: the form right, the fine band gone."""
    return blur.gaussian(bicubic(src, scale), 1.5 * scale)


def fine(x: np.ndarray) -> np.ndarray:
    return x - blur.gaussian(x, texture.SIGMA)


@pytest.mark.parametrize("scale,c", [(1, 3), (1, 1), (2, 3), (4, 3), (4, 1)])
def test_amount_one_brings_the_source_band_back(scale, c):
    src = photo(48, 48, c=c)
    out = plastic(src, scale)
    res = texture.keep(src, out, scale, 1.0, None)
    lowres = lambda x: resample.down(x, scale) if scale > 1 else x      # noqa: E731
    m = slice(6, -6)                                                    # clear of the border
    before = np.abs(fine(lowres(out)) - fine(src))[m, m].mean()
    after = np.abs(fine(lowres(res)) - fine(src))[m, m].mean()
    assert after < 0.25 * before            # (a Gaussian high-pass is not idempotent)
    # precisely: at the input's resolution, the change is the source's band minus the model's
    ok = ((res > 0) & (res < 1)).all(2)
    ok = ok.reshape(ok.shape[0] // scale, scale, -1, scale).all((1, 3)) if scale > 1 else ok
    want = fine(src) - fine(lowres(out))
    np.testing.assert_allclose((lowres(res) - lowres(out))[ok], want[ok], atol=2e-3)
    # the form (low band) stays the model's
    lo = lambda x: blur.gaussian(lowres(x), 3 * texture.SIGMA)          # noqa: E731
    assert np.abs(lo(res) - lo(out))[m, m].mean() < 0.25 * before


@pytest.mark.parametrize("scale", [1, 4])
def test_amount_scales_the_change_and_zero_is_identity(scale):
    src = photo()
    out = plastic(src, scale)
    np.testing.assert_array_equal(texture.keep(src, out, scale, 0.0, None), out)
    r1 = texture.keep(src, out, scale, 1.0, None)
    d1, d5 = r1 - out, texture.keep(src, out, scale, 0.5, None) - out
    ok = (r1 > 0) & (r1 < 1)             # where amount 1 was not clipped
    np.testing.assert_allclose(d5[ok], 0.5 * d1[ok], atol=1e-4)


@pytest.mark.parametrize("scale", [1, 2])
def test_only_where_the_mask_is(scale):
    src = photo(48, 48)
    out = plastic(src, scale)
    H, W = out.shape[:2]
    mask = np.zeros((H, W), np.float32)
    mask[:, : W // 2] = 1.0
    res = texture.keep(src, out, scale, 1.0, mask)
    np.testing.assert_array_equal(res[:, W // 2:], out[:, W // 2:])
    assert np.abs(res[:, : W // 2] - out[:, : W // 2]).mean() > 0.005
    half = texture.keep(src, out, scale, 1.0, mask * 0.5)
    ok = (res > 0) & (res < 1)
    np.testing.assert_allclose((half - out)[ok], 0.5 * (res - out)[ok], atol=1e-4)


def test_mask_of_wrong_size_is_refused():
    from ai_enhance.errors import EnhanceError
    src = photo()
    out = plastic(src, 2)
    with pytest.raises(EnhanceError):
        texture.keep(src, out, 2, 1.0, np.ones((3, 3), np.float32))
