"""CIELAB, CIEDE2000 and the colour lock (pure numpy/OpenCV)."""
from __future__ import annotations

import numpy as np
import pytest

from ai_enhance.post import blur, color, metrics, resample

from _post_images import bicubic, photo

# Sharma, Wu & Dalal (2005), test data for CIEDE2000: (L1, a1, b1, L2, a2, b2, dE00)
SHARMA = [
    (50.0, 2.6772, -79.7751, 50.0, 0.0, -82.7485, 2.0425),
    (50.0, 0.0, 0.0, 50.0, -1.0, 2.0, 2.3669),
    (50.0, 2.5, 0.0, 73.0, 25.0, -18.0, 27.1492),
    (50.0, 2.5, 0.0, 56.0, -27.0, -3.0, 31.9030),
    (60.2574, -34.0099, 36.2677, 60.4626, -34.1751, 39.4387, 1.2644),
]


@pytest.mark.parametrize("row", SHARMA)
def test_delta_e2000_matches_published_pairs(row):
    got = color.delta_e2000(np.array(row[:3]), np.array(row[3:6]))
    assert float(got) == pytest.approx(row[6], abs=1e-4)
    # symmetric
    assert float(color.delta_e2000(np.array(row[3:6]), np.array(row[:3]))) == pytest.approx(row[6], abs=1e-4)


def test_lab_matches_skimage_and_round_trips():
    skc = pytest.importorskip("skimage.color")
    img = photo(64, 64)
    lab = color.srgb_to_lab(img)
    np.testing.assert_allclose(lab, skc.rgb2lab(img), atol=0.01)
    np.testing.assert_allclose(color.lab_to_srgb(lab), img, atol=1e-4)
    gray = photo(32, 32, c=1)
    lab1 = color.srgb_to_lab(gray)
    assert np.all(lab1[..., 1:] == 0)
    np.testing.assert_allclose(lab1[..., 0], skc.rgb2lab(np.repeat(gray, 3, 2))[..., 0], atol=0.01)
    np.testing.assert_allclose(color.lab_to_srgb(lab1, channels=1), gray, atol=1e-4)


def test_delta_e2000_matches_skimage_on_many_colours():
    skc = pytest.importorskip("skimage.color")
    rng = np.random.default_rng(3)
    a = skc.rgb2lab(rng.random((1, 500, 3)))
    b = skc.rgb2lab(rng.random((1, 500, 3)))
    np.testing.assert_allclose(color.delta_e2000(a, b), skc.deltaE_ciede2000(a, b), atol=1e-6)


def drifted(src: np.ndarray, scale: int, da: float = 6.0, db: float = -5.0) -> np.ndarray:
    """An upscale whose colour drifted (a*b* shifted) and that has chroma and lightness detail
    of its own finer than an input pixel."""
    out = bicubic(src, scale)
    lab = color.srgb_to_lab(out)
    H, W = out.shape[:2]
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    fine = np.sin(xx * 2.6) * np.sin(yy * 2.6)          # period ~2.4 output px
    lab[..., 0] += 3.0 * fine
    lab[..., 1] += da + 2.0 * fine
    lab[..., 2] += db
    return color.lab_to_srgb(lab)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_lock_pulls_downscaled_chroma_to_the_input(scale):
    src = photo(40, 40)
    out = drifted(src, scale)
    before = metrics.chroma_distance_mean(src, out, scale)
    res = color.lock(src, out, scale)
    after = metrics.chroma_distance_mean(src, res, scale)
    assert before > 4
    assert after <= 0.8
    assert after < before / 10


@pytest.mark.parametrize("scale", [1, 2, 4])
def test_lock_leaves_lightness_and_fine_detail_alone(scale):
    src = photo(40, 40)
    out = drifted(src, scale)
    res = color.lock(src, out, scale)
    lo, lr = color.srgb_to_lab(out), color.srgb_to_lab(res)
    inside = ((out > 0.02) & (out < 0.98)).all(2) & ((res > 0.02) & (res < 0.98)).all(2)
    assert np.abs(lr[..., 0] - lo[..., 0])[inside].max() < 0.05          # L* untouched (bar gamut)
    # the model's chroma detail (the ~2.4 px pattern `drifted` adds) is still there
    fine = lambda x: x - blur.gaussian(x, 1.0)                            # noqa: E731
    fr, fo = fine(lr[..., 1])[inside], fine(lo[..., 1])[inside]
    assert np.corrcoef(fr, fo)[0, 1] > 0.9
    assert 0.8 < np.std(fr) / np.std(fo) < 1.25


def test_lock_same_size_removes_drift_but_keeps_fine_chroma():
    src = photo(64, 64)
    out = drifted(src, 1)
    res = color.lock(src, out, 1)
    ab = lambda x: color.srgb_to_lab(blur.gaussian(x, 4))[..., 1:]       # noqa: E731
    assert np.abs(ab(res) - ab(src)).mean() < 0.2 * np.abs(ab(out) - ab(src)).mean()
    fine = lambda x: (lambda l: l - blur.gaussian(l, 1.0))(color.srgb_to_lab(x)[..., 1])  # noqa: E731
    assert np.corrcoef(fine(res).ravel(), fine(out).ravel())[0, 1] > 0.9


@pytest.mark.parametrize("scale", [1, 4])
def test_lock_on_gray_changes_nothing(scale):
    src = photo(c=1)
    out = bicubic(src, scale) * 0.9
    res = color.lock(src, out, scale)
    assert res is not out
    np.testing.assert_array_equal(res, out)


def test_lock_does_not_modify_its_inputs_and_stays_in_range():
    src = photo()
    out = drifted(src, 4, da=40, db=40)                  # pushes colours out of gamut
    keep = src.copy(), out.copy()
    res = color.lock(src, out, 4)
    np.testing.assert_array_equal(src, keep[0])
    np.testing.assert_array_equal(out, keep[1])
    assert res.dtype == np.float32 and res.min() >= 0 and res.max() <= 1


def test_luma_weights():
    x = np.ones((2, 2, 3), np.float32) * np.array([1, 0, 0], np.float32)
    assert color.luma(x)[0, 0] == pytest.approx(0.299)
    g = np.full((2, 2, 1), 0.3, np.float32)
    np.testing.assert_array_equal(color.luma(g), np.full((2, 2), 0.3, np.float32))
    assert resample.down(x, 2).shape == (1, 1, 3)


def test_lock_same_size_after_a_denoiser_brings_back_neither_noise_nor_bias():
    """A denoiser's output (here: the clean photo, its colour drifted) locked to the noisy photo
    it came from: the drift goes, the removed chroma noise does not come back as mottling, and
    the noise does not turn into a colour bias (CIELAB is not linear in the pixels)."""
    clean = photo(128, 128)
    rng = np.random.default_rng(7)
    noisy = np.clip(clean + rng.normal(0, 25 / 255, clean.shape), 0, 1).astype(np.float32)
    lab = color.srgb_to_lab(clean)
    lab[..., 1] += 4.0
    out = color.lab_to_srgb(lab)
    assert color.same_size_sigma(noisy, out) > 2 * color.SAME_SIZE_SIGMA       # it saw the noise
    res = color.lock(noisy, out, 1)
    ab = lambda x: color.srgb_to_lab(blur.gaussian(x, 8))[..., 1:]             # noqa: E731
    inner = (slice(16, -16), slice(16, -16))
    drift_before = np.abs(ab(out) - ab(clean))[inner].mean(axis=(0, 1))
    drift_after = np.abs(ab(res) - ab(clean))[inner].mean(axis=(0, 1))
    assert drift_before[0] > 3.9
    # what is left is the noise the lock averages (about one just-noticeable difference) and
    # the bias of clipping the noisy pixels at 0 and 1, not the drift
    assert drift_after.max() < 0.75 and drift_after[0] < drift_before[0] / 5
    fine = lambda x: (lambda l: l - blur.gaussian(l, 2.0))(color.srgb_to_lab(x)[..., 1:])  # noqa: E731
    assert np.std(fine(res)[inner]) < np.std(fine(out)[inner]) + 0.5          # no mottling back
    assert np.std(fine(res)[inner]) < 0.2 * np.std(fine(noisy)[inner])
    assert metrics.psnr(res, clean) > metrics.psnr(out, clean) + 3
