"""Fidelity: back-projection towards the input, a linear dial (pure numpy/OpenCV)."""
from __future__ import annotations

import numpy as np
import pytest

from ai_enhance.errors import EnhanceError
from ai_enhance.post import blur, fidelity, metrics

from _post_images import bicubic, hallucinating, photo

CASES = [  # scale, channels
    (4, 3), (2, 3), (3, 3), (4, 1), (2, 1),
]


@pytest.mark.parametrize("scale,c", CASES)
def test_fidelity_one_is_consistent_and_keeps_detail(scale, c):
    src = photo(c=c)
    out = hallucinating(src, scale)
    before = metrics.consistency_db(src, out, scale)
    res = fidelity.apply(src, out, scale, 1.0)
    assert res.shape == out.shape and res.dtype == np.float32
    assert 0.0 <= res.min() and res.max() <= 1.0
    assert before < 30
    assert metrics.consistency_db(src, res, scale) >= 40
    # detail the model added inside each input pixel survives (target: >= 80 % gradient energy)
    assert metrics.gradient_energy(res) >= 0.8 * metrics.gradient_energy(out)


@pytest.mark.parametrize("scale,c", CASES + [(1, 3), (1, 1)])
def test_fidelity_zero_returns_the_output_unchanged(scale, c):
    src = photo(c=c)
    out = hallucinating(src, scale)
    keep = out.copy(), src.copy()
    res = fidelity.apply(src, out, scale, 0.0)
    assert res is not out
    np.testing.assert_array_equal(res, out)
    np.testing.assert_array_equal(out, keep[0])        # inputs untouched
    np.testing.assert_array_equal(src, keep[1])


@pytest.mark.parametrize("scale", [1, 2, 4])
def test_consistency_rises_monotonically_with_the_dial(scale):
    src = photo()
    out = hallucinating(src, scale)
    if scale == 1:      # same size: the input's low band is what is restored
        def score(r):
            return metrics.psnr(blur.gaussian(src, 3), blur.gaussian(r, 3))
    else:
        def score(r):
            return metrics.consistency_db(src, r, scale)
    scores = [score(fidelity.apply(src, out, scale, t)) for t in (0, 0.25, 0.5, 0.75, 1)]
    assert all(b > a + 0.5 for a, b in zip(scores, scores[1:])), scores


def test_blend_is_linear_between_the_ends():
    src = photo()
    out = hallucinating(src, 4)
    full = fidelity.apply(src, out, 4, 1.0)
    half = fidelity.apply(src, out, 4, 0.5)
    np.testing.assert_allclose(half, 0.5 * out + 0.5 * full, atol=1e-5)


def test_strength_outside_0_1_is_clamped():
    src = photo()
    out = hallucinating(src, 2)
    np.testing.assert_array_equal(fidelity.apply(src, out, 2, -3), out)
    np.testing.assert_array_equal(fidelity.apply(src, out, 2, 7), fidelity.apply(src, out, 2, 1))


def test_same_size_keeps_the_input_low_band_and_the_model_detail():
    src = photo(64, 64)
    out = hallucinating(src, 1)
    res = fidelity.apply(src, out, 1, 1.0)
    s = fidelity.SAME_SIZE_SIGMA
    # the correction is exactly the low-passed difference ...
    unclipped = (res > 0) & (res < 1)
    np.testing.assert_allclose((res - out)[unclipped], blur.gaussian(src - out, s)[unclipped], atol=1e-5)
    # ... so the low band moves to the input's and the fine band stays the model's
    lo = lambda x: blur.gaussian(x, 2 * s)           # noqa: E731
    assert metrics.psnr(lo(src), lo(res)) > metrics.psnr(lo(src), lo(out)) + 10
    hi = lambda x: x - blur.gaussian(x, 0.7)         # noqa: E731
    assert metrics.psnr(hi(out), hi(res)) > 40


def test_an_already_consistent_output_is_left_alone():
    src = photo()
    blocks = np.repeat(np.repeat(src, 4, 0), 4, 1)         # exactly consistent by construction
    np.testing.assert_allclose(fidelity.apply(src, blocks, 4, 1.0), blocks, atol=1e-6)
    smooth = fidelity.consistent(src, bicubic(src, 4), 4)
    again = fidelity.apply(src, smooth, 4, 1.0)
    assert float(np.abs(again - smooth).mean()) < 1e-4
    assert metrics.consistency_db(src, again, 4) >= metrics.consistency_db(src, smooth, 4) - 0.1


@pytest.mark.parametrize("bad", [
    lambda s, o: (s, o[:-1], 4),          # wrong size
    lambda s, o: (s[..., :1], o, 4),      # channels differ
    lambda s, o: (s, o, 0),               # bad scale
    lambda s, o: (s[..., 0], o, 4),       # no channel axis
])
def test_bad_arguments_are_a_clear_error(bad):
    src = photo()
    out = bicubic(src, 4)
    with pytest.raises(EnhanceError) as e:
        fidelity.apply(*bad(src, out), 1.0)
    assert e.value.hint
