"""Pure geometry and mask functions of the face pipeline (no models)."""
from __future__ import annotations

import numpy as np
import pytest

from ai_enhance.ops.faces import masks as fm


def _similarity(angle_deg: float, scale: float, tx: float, ty: float) -> np.ndarray:
    a = np.deg2rad(angle_deg)
    return np.array([[scale * np.cos(a), -scale * np.sin(a), tx], [scale * np.sin(a), scale * np.cos(a), ty]])


@pytest.mark.parametrize("angle,scale,tx,ty", [(0, 1, 0, 0), (17, 0.31, 40.5, -12.25), (-75, 2.7, -300, 95)])
def test_similarity_recovers_a_known_transform(angle, scale, tx, ty):
    # landmarks = the template moved by a known similarity; the fit must undo exactly that
    to_image = _similarity(angle, scale, tx, ty)
    t = fm.template(512)
    lm = t @ to_image[:, :2].T + to_image[:, 2]
    m = fm.similarity_to_template(lm, 512)
    back = lm @ m[:, :2].T + m[:, 2]
    assert np.abs(back - t).max() < 1e-6
    assert np.allclose(fm.compose(m, to_image), [[1, 0, 0], [0, 1, 0]], atol=1e-9)


def test_similarity_is_a_least_squares_fit_with_noise():
    rng = np.random.default_rng(0)
    to_image = _similarity(8, 0.5, 100, 50)
    t = fm.template(512)
    lm = t @ to_image[:, :2].T + to_image[:, 2] + rng.normal(0, 0.5, (5, 2))
    m = fm.similarity_to_template(lm, 512)
    # no reflection, uniform scale close to 1/0.5
    assert np.isclose(m[0, 0], m[1, 1]) and np.isclose(m[0, 1], -m[1, 0])
    assert abs(np.hypot(m[0, 0], m[1, 0]) - 2.0) < 0.05


def test_degenerate_landmarks_raise():
    with pytest.raises(ValueError):
        fm.similarity_to_template(np.full((5, 2), 3.0))


@pytest.mark.parametrize("scale,roi", [(1, (0, 0)), (2, (10, 20)), (4, (3, 0))])
def test_output_frame_maps_pixel_centres(scale, roi):
    # identity template->input; input pixel centre x maps to output centre s*(x+0.5-rx)-0.5
    q = fm.to_output_frame(np.array([[1.0, 0, 0], [0, 1.0, 0]]), scale, roi)
    for x, y in [(roi[0], roi[1]), (roi[0] + 5, roi[1] + 7)]:
        u, v = q @ [x, y, 1]
        assert np.isclose(u, scale * (x + 0.5 - roi[0]) - 0.5)
        assert np.isclose(v, scale * (y + 0.5 - roi[1]) - 0.5)
    # the input pixel's area [x, x+1) covers output pixels s*(x-rx) .. s*(x-rx)+s-1
    u0 = (q @ [roi[0] - 0.5, roi[1] - 0.5, 1])[0]
    assert np.isclose(u0, -0.5)


def test_ellipse_mask_is_full_on_the_face_soft_around_and_zero_at_the_border():
    m = fm.ellipse_mask(512)
    assert m.shape == (512, 512) and m.dtype == np.float32
    for x, y in fm.template(512):                      # eyes, nose, mouth corners: full weight
        assert m[int(round(y)), int(round(x))] == 1.0
    assert m[290, 256] == 1.0
    border = np.concatenate([m[0], m[-1], m[:, 0], m[:, -1]])
    assert border.max() == 0.0                           # no hard edge of the square can show
    soft = (m > 0) & (m < 1)
    assert soft.sum() > 5000                             # a real feather, not a thin line
    # monotone fall-off from the centre outwards, along a row and a column
    cx, cy = (int(v) for v in fm.ELLIPSE_CENTRE)
    rx, ry = fm.ELLIPSE_RADII
    row, col = m[cy, cx:], m[cy:, cx]
    assert np.all(np.diff(row) <= 1e-6) and np.all(np.diff(col) <= 1e-6)
    assert m[cy, cx + int(rx)] == pytest.approx(1.0, abs=1e-3)          # the full-weight radius
    assert m[cy, cx + int(rx * fm.FEATHER) + 1] == 0.0                   # the end of the ramp
    assert m[cy - int(ry * fm.FEATHER) - 1, cx] == 0.0
    assert m[-30:].max() < 0.5                      # the ramp ends (nearly) inside the square


def test_ellipse_mask_scales_with_the_face_size():
    big, small = fm.ellipse_mask(1024), fm.ellipse_mask(512)
    assert np.abs(big[::2, ::2] - small).max() < 0.03


def test_parsing_mask_from_labels():
    labels = np.zeros((512, 512), np.int64)
    yy, xx = np.mgrid[0:512, 0:512]
    labels[(xx - 256) ** 2 + (yy - 280) ** 2 < 150 ** 2] = 1      # skin
    labels[(xx - 256) ** 2 + (yy - 80) ** 2 < 60 ** 2] = 17        # hair: not face
    labels[300:310, 250:260] = 12                                  # lip inside the skin
    m = fm.parsing_mask(labels)
    assert m[280, 256] == 1.0 and m[305, 255] == 1.0
    assert m[40, 256] == 0.0 and m[500, 20] == 0.0
    assert np.concatenate([m[0], m[-1], m[:, 0], m[:, -1]]).max() == 0.0
    ring = m[280, 256 + 140:256 + 175]
    assert ((ring > 0) & (ring < 1)).sum() >= 10                   # soft edge across the outline


def test_quantize_mask():
    q = fm.quantize_mask(np.array([0.0, 0.001, 0.002, 0.5, 0.999, 1.0, 1.5, -1]))
    assert q.dtype == np.uint8
    assert q.tolist() == [0, 0, 1, 128, 255, 255, 255, 0]


def test_group_rects():
    rects = [(0, 0, 10, 10), (5, 5, 20, 20), (30, 30, 40, 40), (19, 19, 31, 31), (100, 0, 110, 5)]
    groups = fm.group_rects(rects)
    members = sorted(g[0] for g in groups)
    assert members == [[0, 1, 2, 3], [4]]                  # chained overlaps merge
    union = dict((tuple(g[0]), g[1]) for g in groups)
    assert union[(0, 1, 2, 3)] == (0, 0, 40, 40)
    assert fm.group_rects([(0, 0, 5, 5), (5, 0, 10, 5)]) == [([0], (0, 0, 5, 5)), ([1], (5, 0, 10, 5))]  # touching != overlapping
    assert fm.group_rects([]) == []


def test_transformed_bounds():
    m = _similarity(90, 2.0, 10, 0)
    x0, y0, x1, y1 = fm.transformed_bounds(m, 4, 3)
    assert np.allclose([x0, y0, x1, y1], [4, 0, 10, 8])
