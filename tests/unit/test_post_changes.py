"""The change map: where the result departs from what the input supports."""
from __future__ import annotations

import numpy as np
import pytest

from ai_enhance.post import changes, color, fidelity

from _post_images import bicubic, photo


def consistent(src, scale):
    return fidelity.consistent(src, bicubic(src, scale), scale) if scale > 1 else src.copy()


def altered(src, scale, box):
    """A faithful result with one patch redrawn (inverted: a different shape and colour)."""
    out = consistent(src, scale)
    y0, y1, x0, x1 = (v * scale for v in box)
    out[y0:y1, x0:x1] = 1.0 - out[y0:y1, x0:x1]
    return out


@pytest.mark.parametrize("scale,c", [(4, 3), (2, 3), (1, 3), (4, 1), (1, 1)])
def test_high_where_a_patch_was_altered_low_elsewhere(scale, c):
    src = photo(48, 48, c=c)
    box = (16, 32, 16, 32)
    out = altered(src, scale, box)
    m = changes.change_map(src, out, scale)
    assert m.dtype == np.uint8 and m.shape == out.shape[:2]
    y0, y1, x0, x1 = (v * scale for v in box)
    inside = m[y0 + 2 * scale: y1 - 2 * scale, x0 + 2 * scale: x1 - 2 * scale]
    far = np.ones(m.shape, bool)
    far[y0 - 4 * scale: y1 + 4 * scale, x0 - 4 * scale: x1 + 4 * scale] = False
    assert inside.mean() > 150
    assert m[far].mean() < 15
    assert np.percentile(m[far], 99) < 60


def test_model_detail_inside_input_pixels_is_not_a_change():
    src = photo(48, 48)
    out = consistent(src, 4)
    # invented detail that averages to nothing over each 4x4 block
    checker = (np.indices(out.shape[:2]).sum(0) % 2 * 2 - 1).astype(np.float32)[..., None] * 0.05
    m = changes.change_map(src, np.clip(out + checker, 0, 1), 4)
    assert m.mean() < 10


def test_scale_is_fixed_not_per_image():
    assert changes.to_u8(np.array([0.0]))[0] == 0
    assert changes.to_u8(np.array([1.0]))[0] == 39
    assert changes.to_u8(np.array([changes.REF]))[0] == 161
    assert changes.to_u8(np.array([1e6]))[0] == 255
    # a small change everywhere stays small (no stretching to 255)
    src = photo(32, 32)
    lab = color.srgb_to_lab(src)
    lab[..., 1] += 1.0
    m = changes.change_map(src, color.lab_to_srgb(lab), 1)
    assert 15 < np.median(m) < 60


def test_denoising_reads_as_low_same_size():
    src = photo(64, 64)
    rng = np.random.default_rng(1)
    noisy = np.clip(src + 8 / 255 * rng.standard_normal(src.shape).astype(np.float32), 0, 1)
    m = changes.change_map(noisy, src, 1)              # the "model" removed the noise
    assert np.median(m) < 60
