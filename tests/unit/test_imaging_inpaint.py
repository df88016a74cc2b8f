"""Classical inpainting, the piecewise plan and mask validation (pure numpy/OpenCV)."""
from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data

from ai_enhance.errors import EnhanceError
from ai_enhance.imaging import inpaint as P
from ai_enhance.imaging.inpaint import (Box, Coverage, Region, inpaint_classical, mask_coverage,
                                        plan_components, validate_mask)
from ai_enhance_client.protocol import ErrorKind

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import damagekit  # noqa: E402


def photo(name: str = "astronaut") -> np.ndarray:
    img = getattr(skimage.data, name)()
    if img.ndim == 2:
        img = img[:, :, None]
    return img[:, :, :3].astype(np.float32) / 255.0


def random_mask(h: int, w: int, seed: int, n: int = 12, max_r: int = 6) -> np.ndarray:
    rng = np.random.default_rng(seed)
    m = np.zeros((h, w), np.uint8)
    for _ in range(n):
        if rng.random() < 0.5:
            cv2.circle(m, (int(rng.integers(w)), int(rng.integers(h))), int(rng.integers(1, max_r)), 255, -1)
        else:
            p = rng.integers(0, [w, h], (2, 2))
            cv2.line(m, tuple(map(int, p[0])), tuple(map(int, p[1])), 255, int(rng.integers(1, 4)))
    return m


def mse(a: np.ndarray, b: np.ndarray, where: np.ndarray) -> float:
    return float(np.mean((a[where].astype(np.float64) - b[where]) ** 2))


# --------------------------------------------------------------------------- inpainting

IMAGES = {
    "rgb": lambda: photo("astronaut"),
    "gray HxW": lambda: photo("camera")[:, :, 0],
    "gray HxWx1": lambda: photo("camera"),
    "rgba": lambda: np.dstack([photo("coffee"), np.linspace(0, 1, 400 * 600, dtype=np.float32).reshape(400, 600)]),
    "16-bit levels": lambda: (np.round(photo("chelsea") * 65535) / 65535).astype(np.float32),
}


@pytest.mark.parametrize("kind", list(IMAGES))
@pytest.mark.parametrize("seed", [0, 1])
def test_pixels_outside_the_mask_are_bit_identical(kind, seed):
    img = IMAGES[kind]()
    mask = random_mask(*img.shape[:2], seed=seed)
    out = inpaint_classical(img, mask)
    assert out.shape == img.shape and out.dtype == np.float32
    keep = mask == 0
    assert np.array_equal(out[keep], img[keep])
    assert not np.array_equal(out[~keep], img[~keep])
    assert np.isfinite(out).all()


@pytest.mark.parametrize("name", ["astronaut", "chelsea", "coffee", "rocket"])
def test_filling_true_damage_brings_the_photo_back(name):
    clean = photo(name)
    d = damagekit.damage(clean, seed=3)
    touched = (d.scratches > 0) | (d.specks > 0)
    out = inpaint_classical(d.image, touched.astype(np.uint8) * 255)
    # the error of the damaged pixels drops to a small fraction (measured 0.02-0.14) and the
    # photo's PSNR rises by >= 7 dB (measured 9-13)
    assert mse(out, clean, touched) < 0.2 * mse(d.image, clean, touched)
    everywhere = np.ones(touched.shape, bool)
    assert 10 * np.log10(mse(d.image, clean, everywhere) / mse(out, clean, everywhere)) >= 7


def test_fill_keeps_float_precision():
    # a 16-bit-fine ramp (0.002 over the whole width: half a level of 8-bit): an 8-bit round trip
    # would flatten it; OpenCV's float Telea at 0..1 would be off by ~1 (see VALUE_SCALE)
    h, w = 64, 256
    ramp = (0.5 + 0.002 * np.linspace(0, 1, w, dtype=np.float32))[None, :].repeat(h, 0)
    mask = np.zeros((h, w), np.uint8)
    mask[30:34, 20:236] = 255
    out = inpaint_classical(ramp, mask)
    assert np.abs(out - ramp).max() < 1e-4


def test_soft_mask_blends():
    img = np.zeros((40, 40, 3), np.float32)
    img[18:22, :] = 1.0                                      # a bright band to be removed
    full = np.zeros((40, 40), np.uint8)
    full[17:23, :] = 255
    soft = full.copy()
    soft[17:23, :20] = 128
    a = inpaint_classical(img, full)
    b = inpaint_classical(img, soft)
    assert np.array_equal(b[:, 20:], a[:, 20:])
    expect = img[17:23, :20] + (a[17:23, :20] - img[17:23, :20]) * (128 / 255)
    assert np.allclose(b[17:23, :20], expect, atol=1e-6)


def test_a_hole_bigger_than_a_crop_is_filled_piecewise(monkeypatch):
    y, x = np.mgrid[0:300, 0:300].astype(np.float32)
    img = np.dstack([x / 300, y / 300, (x + y) / 600]).astype(np.float32)
    mask = np.zeros((300, 300), np.uint8)
    mask[40:260, 40:260] = 255
    whole = inpaint_classical(img, mask)
    monkeypatch.setattr(P, "MAX_SIDE", 96)                   # forces ~25 tiles
    assert len(plan_components(mask, context=16, max_side=96)) > 9
    tiled = inpaint_classical(img, mask)
    inside = mask > 0
    assert np.isfinite(tiled).all()
    assert (tiled[inside] >= 0).all() and (tiled[inside] <= 1).all()
    # tiles filled from the hole's border inwards are nearly as good as one fill in the large
    # (measured: mean error vs the true ramp 0.078 tiled, 0.062 whole; raster order gave 0.16)
    err_tiled = np.abs(tiled - img)[inside].mean()
    err_whole = np.abs(whole - img)[inside].mean()
    assert err_tiled < 1.5 * err_whole
    assert np.array_equal(tiled[~inside], img[~inside])


def test_empty_mask_returns_the_image_unchanged():
    img = photo("coffee")
    out = inpaint_classical(img, np.zeros(img.shape[:2], np.uint8))
    assert np.array_equal(out, img) and out is not img
    assert mask_coverage(np.zeros((4, 4), np.uint8)) is Coverage.EMPTY
    assert P.EMPTY_MASK_NOTE


def test_non_float_image_is_refused():
    with pytest.raises(EnhanceError) as e:
        inpaint_classical(np.zeros((8, 8, 3), np.uint8), np.full((8, 8), 255, np.uint8))
    assert e.value.kind is ErrorKind.BAD_REQUEST


# --------------------------------------------------------------------------- validation

MASKS = [
    ("bool", lambda m: m > 0, 255),
    ("uint8 0/1", lambda m: (m > 0).astype(np.uint8), 255),
    ("int32 0/255", lambda m: m.astype(np.int32), 255),
    ("uint16", lambda m: (m > 0).astype(np.uint16) * 65535, 255),
    ("float 0..1", lambda m: (m > 0).astype(np.float32), 255),
    ("HxWx1", lambda m: m[:, :, None], 255),
    ("RGBA file", lambda m: np.dstack([m, m, m, np.full_like(m, 255)]), 255),
]


@pytest.mark.parametrize("case", MASKS, ids=[c[0] for c in MASKS])
def test_masks_in_any_common_form_become_uint8(case):
    _, make, value = case
    m = np.zeros((20, 30), np.uint8)
    m[5:10, 5:15] = 255
    v = validate_mask(make(m), (20, 30, 3))
    assert v.dtype == np.uint8 and v.shape == (20, 30)
    assert np.array_equal(v > 0, m > 0) and v.max() == value


BAD_MASKS = [
    ("other size", np.zeros((10, 10), np.uint8), "is 10x10 but the image is 30x20"),
    ("transposed", np.ones((30, 20), np.uint8), "is 20x30 but the image is 30x20"),
    ("covers everything", np.full((20, 30), 255, np.uint8), "whole image"),
    ("4-d", np.zeros((20, 30, 1, 1), np.uint8), "one channel"),
]


@pytest.mark.parametrize("case", BAD_MASKS, ids=[c[0] for c in BAD_MASKS])
def test_unusable_masks_are_one_line_bad_requests_with_a_hint(case):
    _, mask, text = case
    with pytest.raises(EnhanceError) as e:
        validate_mask(mask, (20, 30, 3))
    assert e.value.kind is ErrorKind.BAD_REQUEST
    assert text in e.value.message and e.value.hint and "\n" not in str(e.value)


def test_full_mask_is_refused_by_inpaint_too():
    with pytest.raises(EnhanceError, match="nothing to fill from"):
        inpaint_classical(np.zeros((8, 8, 3), np.float32), np.ones((8, 8), bool))


# --------------------------------------------------------------------------- the plan

PLANS = [
    # h, w, seed, n marks, max radius, context, max_side
    (200, 300, 0, 12, 6, 16, 128),
    (200, 300, 1, 40, 3, 8, 64),
    (500, 400, 2, 6, 40, 32, 512),
    (500, 400, 3, 6, 40, 32, 80),        # marks bigger than a crop: tiled
    (64, 64, 4, 3, 5, 0, 16),            # no context
    (1000, 1500, 5, 80, 8, 24, 256),
]


@pytest.mark.parametrize("h,w,seed,n,max_r,context,max_side", PLANS)
def test_plan_covers_every_mask_pixel_with_context_within_max_side(h, w, seed, n, max_r, context, max_side):
    mask = random_mask(h, w, seed, n, max_r)
    regions = plan_components(mask, context=context, max_side=max_side)
    covered = np.zeros((h, w), bool)
    for r in regions:
        assert isinstance(r, Region)
        assert r.crop.h <= max_side and r.crop.w <= max_side
        assert r.crop.contains(r.fill)
        assert r.crop == r.fill.grow(context, h, w)           # full context unless clipped
        fill = np.zeros((h, w), bool)
        fill[r.fill.slices] = True
        assert (mask[r.fill.slices] > 0).any()                # no empty regions
        covered |= fill
    assert covered[mask > 0].all()


def test_plan_groups_near_components_and_separates_far_ones():
    m = np.zeros((400, 400), np.uint8)
    m[100, 100] = m[100, 120] = 255                          # 20 px apart: one crop at context 16
    m[300, 300] = 255                                         # far away: its own crop
    regions = plan_components(m, context=16, max_side=256)
    fills = sorted((r.fill.y0, r.fill.x0, r.fill.y1, r.fill.x1) for r in regions)
    assert fills == [(100, 100, 101, 121), (300, 300, 301, 301)]
    assert plan_components(np.zeros((10, 10), np.uint8), context=4, max_side=32) == []


def test_plan_tiles_a_long_scratch_into_crops_along_it():
    m = np.zeros((2000, 3000), np.uint8)
    cv2.line(m, (10, 20), (2990, 1980), 255, 3)
    regions = plan_components(m, context=32, max_side=512)
    # the diagonal's bounding box is 6 MP, but only cells the scratch crosses become crops
    area = sum(r.crop.h * r.crop.w for r in regions)
    assert area < 0.5 * m.size
    assert len(regions) >= 2


def test_plan_refuses_a_crop_too_small_for_its_context():
    with pytest.raises(ValueError):
        plan_components(np.ones((10, 10), np.uint8), context=16, max_side=32)


def test_box_geometry():
    b = Box(5, 6, 15, 26)
    assert (b.h, b.w) == (10, 20)
    assert b.grow(10, 20, 30) == Box(0, 0, 20, 30)
    assert b.contains(Box(5, 6, 15, 26)) and not b.contains(Box(4, 6, 15, 26))
