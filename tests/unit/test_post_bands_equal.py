"""Every post-processing function: banded == whole image, any scale, gray or RGB, inputs untouched."""
from __future__ import annotations

import numpy as np
import pytest

from ai_enhance.post import changes, color, fidelity, grain, texture

from _post_images import hallucinating, photo

SHAPES = [(1, 1), (1, 3), (2, 3), (3, 1), (4, 3), (4, 1)]     # scale, channels


def run_all(src, out, scale, rows):
    H, W = out.shape[:2]
    mask = np.clip(np.linspace(-0.5, 1.5, W, dtype=np.float32)[None, :].repeat(H, 0), 0, 1)
    prof = grain.GrainProfile([0.02, 0.03, 0.04, 0.03, 0.02, 0.02, 0.02, 0.01],
                              [(i + 0.5) / 8 for i in range(8)], 1.2,
                              np.eye(src.shape[2]).tolist(), [5] * 8)
    lum = color.luma(out)
    return {
        "fidelity 1": fidelity.apply(src, out, scale, 1.0, rows=rows),
        "fidelity 0.3": fidelity.apply(src, out, scale, 0.3, rows=rows),
        "colour lock": color.lock(src, out, scale, rows=rows),
        "colour lock smoothed": color.lock(src, out, scale, sigma=1.0, rows=rows) if scale > 1 else None,
        "keep texture": texture.keep(src, out, scale, 0.7, mask, rows=rows),
        "change map": changes.change_map(src, out, scale, rows=rows),
        # output-pixel grain is banded in output rows, input-size grain in input rows
        "grain": grain.synthesize(prof, (H, W), scale, lum, 42, rows=rows and rows * scale),
        "grain input size": grain.synthesize(prof, (H, W), scale, lum, 42, match=grain.Match.INPUT_SIZE,
                                             rows=rows),
    }


@pytest.mark.parametrize("scale,c", SHAPES)
def test_banded_equals_whole_image(scale, c):
    src = photo(61, 37, c=c)                     # odd sizes: bands do not divide evenly
    out = hallucinating(src, scale)
    keep = src.copy(), out.copy()
    whole = run_all(src, out, scale, rows=10_000)
    banded = run_all(src, out, scale, rows=5)
    np.testing.assert_array_equal(src, keep[0])
    np.testing.assert_array_equal(out, keep[1])
    for name, w in whole.items():
        if w is None:
            continue
        b = banded[name]
        assert b.shape == w.shape, name
        if w.dtype == np.uint8:
            assert np.abs(b.astype(int) - w.astype(int)).max() <= 1, name
        else:
            np.testing.assert_allclose(b, w, atol=1e-5, err_msg=name)


@pytest.mark.parametrize("scale,c", SHAPES)
def test_shapes_types_and_ranges(scale, c):
    src = photo(24, 20, c=c)
    out = hallucinating(src, scale)
    res = run_all(src, out, scale, rows=None)
    H, W = out.shape[:2]
    for name, r in res.items():
        if r is None:
            continue
        if name == "change map":
            assert r.dtype == np.uint8 and r.shape == (H, W)
        elif name.startswith("grain"):
            assert r.dtype == np.float32 and r.shape == (H, W, c)
        else:
            assert r.dtype == np.float32 and r.shape == out.shape, name
            assert r.min() >= 0 and r.max() <= 1, name
