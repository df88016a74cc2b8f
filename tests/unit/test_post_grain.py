"""Grain: measuring the source's noise and synthesising matching grain (pure numpy/OpenCV)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from ai_enhance.post import color, grain, resample

from _post_images import bicubic, photo


def ramp(h: int = 256, w: int = 256, c: int = 3, lo: float = 0.15, hi: float = 0.85) -> np.ndarray:
    """A smooth horizontal ramp: every brightness bin gets flat blocks."""
    return np.repeat(np.linspace(lo, hi, w, dtype=np.float32)[None, :, None], h, 0).repeat(c, 2)


def field(shape, size: float, seed: int, channels: int) -> np.ndarray:
    """Unit-variance Gaussian grain of a known size, made independently of `grain`."""
    import cv2
    z = np.random.default_rng(seed).standard_normal(shape + (channels,)).astype(np.float32)
    if size > 0:
        z = cv2.GaussianBlur(z, (0, 0), size, borderType=cv2.BORDER_REFLECT).reshape(z.shape)
        z /= z.std()
    return z


@pytest.mark.parametrize("sigma,size", [(4, 0.0), (8, 0.0), (8, 0.8), (8, 1.2), (12, 1.0), (6, 2.0)])
@pytest.mark.parametrize("n", [192, 512])
def test_measures_known_noise_level_and_size(sigma, size, n):
    z = field((n, n), size, seed=int(sigma * 10 + size * 100 + n), channels=1)
    x = np.clip(ramp(n, n) + sigma / 255 * z, 0, 1)               # same noise in all channels
    p = grain.measure(x)
    assert p.level * 255 == pytest.approx(sigma, rel=0.15)
    if size == 0:
        assert p.size < 0.3
    else:
        assert p.size == pytest.approx(size, rel=0.15)


def test_level_per_brightness():
    n = 512
    x0 = ramp(n, n, lo=0.05, hi=0.95)
    sig = (3.0 + 10.0 * x0[..., :1]) / 255                          # signal-dependent noise
    x = np.clip(x0 + sig * field((n, n), 0.0, 7, 1), 0, 1)
    p = grain.measure(x)
    for c, lv, k in zip(p.centers, p.levels, p.blocks):
        if k:
            assert lv * 255 == pytest.approx(3.0 + 10.0 * c, rel=0.2), (c, lv * 255)
    assert p.levels[-1] > 2 * p.levels[0]


def test_robust_to_image_texture():
    """On a real photo the estimate is the photo's own noise plus the added noise, not texture."""
    import skimage.data
    img = skimage.data.astronaut().astype(np.float32) / 255
    base = grain.measure(img).level
    for sigma in (6.0, 10.0):
        x = np.clip(img + sigma / 255 * field(img.shape[:2], 0.0, 3, 1), 0, 1)
        want = np.hypot(sigma / 255, base)
        assert grain.measure(x).level == pytest.approx(want, rel=0.15)


def test_clipped_areas_do_not_count():
    n = 256
    x = ramp(n, n, lo=0.3, hi=0.7)
    x[:, : n // 2] = 0.0                                            # half the image crushed to black
    x = np.clip(x + 8 / 255 * field((n, n), 0.0, 5, 1), 0, 1)
    assert grain.measure(x).level * 255 == pytest.approx(8, rel=0.15)


def test_monochrome_grain_and_chroma_noise_are_told_apart():
    n = 256
    mono = np.clip(ramp(n, n) + 8 / 255 * field((n, n), 0.7, 1, 1), 0, 1)
    rgb = np.clip(ramp(n, n) + 8 / 255 * field((n, n), 0.7, 1, 3), 0, 1)
    for x, corr in ((mono, True), (rgb, False)):
        m = np.asarray(grain.measure(x).mix)
        cov = m @ m.T
        r = cov[0, 1] / np.sqrt(cov[0, 0] * cov[1, 1])
        assert (r > 0.9) if corr else (abs(r) < 0.2)
        # per-channel sigma: 8 in both cases
        assert grain.measure(x).channel_level * 255 == pytest.approx(8, rel=0.15)


def test_gray_and_tiny_images():
    x = np.clip(ramp(128, 128, c=1) + 8 / 255 * field((128, 128), 0.0, 2, 1), 0, 1)
    p = grain.measure(x)
    assert p.channels == 1 and p.level * 255 == pytest.approx(8, rel=0.2)
    tiny = grain.measure(np.full((6, 5, 3), 0.5, np.float32))         # too small for any block
    assert tiny.level == 0.0
    flat = grain.measure(np.full((64, 64, 3), 0.5, np.float32))       # no noise at all
    assert flat.level < 1e-5


def test_profile_json_round_trip():
    x = np.clip(ramp(128, 128) + 6 / 255 * field((128, 128), 1.0, 2, 3), 0, 1)
    p = grain.measure(x)
    q = grain.GrainProfile.from_json(p.to_json())
    assert q == p
    assert json.loads(p.to_json())["size"] == p.size


# --------------------------------------------------------------------------- synthesis

@pytest.mark.parametrize("scale", [1, 2, 4])
@pytest.mark.parametrize("c", [1, 3])
@pytest.mark.parametrize("size", [0.0, 1.0])
def test_grain_at_one_matches_the_source_per_output_pixel(scale, c, size):
    n = 96
    clean = ramp(n, n, c=c)
    src = np.clip(clean + 8 / 255 * field((n, n), size, 11, 1 if c == 1 else 3), 0, 1)
    p = grain.measure(src)
    out = bicubic(clean, scale)                                    # a model that removed all grain
    g = grain.synthesize(p, out.shape[:2], scale, color.luma(out), grain.seed_for(src))
    assert g.shape == out.shape and g.dtype == np.float32
    assert abs(float(g.mean())) < 0.1 * float(g.std())
    res = np.clip(out + g, 0, 1)
    q = grain.measure(res)
    assert q.level == pytest.approx(p.level, rel=0.35)
    assert q.size == pytest.approx(p.size, abs=0.35)              # same look at 100 %


@pytest.mark.parametrize("scale", [2, 4])
def test_grain_input_size_matches_the_source_once_downscaled(scale):
    n = 96
    clean = ramp(n, n)
    src = np.clip(clean + 8 / 255 * field((n, n), 0.0, 12, 3), 0, 1)
    p = grain.measure(src)
    out = bicubic(clean, scale)
    g = grain.synthesize(p, out.shape[:2], scale, color.luma(out), 5, match=grain.Match.INPUT_SIZE)
    down = resample.down(np.clip(out + g, 0, 1), scale)
    assert grain.measure(down).level == pytest.approx(p.level, rel=0.35)
    # whereas per-output-pixel grain mostly averages away at the input's size
    g2 = grain.synthesize(p, out.shape[:2], scale, color.luma(out), 5)
    assert grain.measure(resample.down(np.clip(out + g2, 0, 1), scale)).level < 0.7 * p.level


def test_grain_follows_brightness():
    p = grain.GrainProfile(levels=[0.01] * 4 + [0.04] * 4, centers=[(i + 0.5) / 8 for i in range(8)],
                           size=0.0, mix=[[1.0]], blocks=[10] * 8)
    lum = np.zeros((64, 64), np.float32)
    lum[:, 32:] = 0.9
    g = grain.synthesize(p, (64, 64), 1, lum, 1)
    assert g[:, :32].std() == pytest.approx(0.01, rel=0.15)
    assert g[:, 32:].std() == pytest.approx(0.04, rel=0.15)


def test_deterministic_and_seeded_from_content():
    src = photo(64, 64)
    assert grain.seed_for(src) == grain.seed_for(src.copy())
    other = src.copy()
    other[0, 0, 0] = 1 - other[0, 0, 0]
    assert grain.seed_for(other) != grain.seed_for(src)
    p = grain.GrainProfile([0.03] * 8, [(i + 0.5) / 8 for i in range(8)], 0.8,
                           np.eye(3).tolist(), [1] * 8)
    lum = np.full((128, 96), 0.5, np.float32)
    a = grain.synthesize(p, (128, 96), 2, lum, grain.seed_for(src))
    b = grain.synthesize(p, (128, 96), 2, lum, grain.seed_for(src))
    c = grain.synthesize(p, (128, 96), 2, lum, grain.seed_for(other))
    np.testing.assert_array_equal(a, b)
    assert np.corrcoef(a.ravel(), c.ravel())[0, 1] < 0.1


def test_grain_merge_layer_adds_the_grain():
    rng = np.random.default_rng(0)
    g = (0.03 * rng.standard_normal((16, 16, 3))).astype(np.float32)
    base = np.full((16, 16, 3), 0.5, np.float32)
    layer = grain.as_grain_merge_layer(g)
    assert layer.min() >= 0 and layer.max() <= 1
    np.testing.assert_allclose(base + layer - 0.5, base + g, atol=1e-6)       # GIMP's Grain merge
    # opacity a: base + a * (layer - 0.5)  ==  grain amount a
    np.testing.assert_allclose(base + 0.5 * (layer - 0.5), base + 0.5 * g, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("block", [8, 16])
def test_stored_calibration_is_what_calibrate_gives(block):
    """The stored tables are a cache of `calibrate`; if a setting changes, regenerate them."""
    assert grain._fingerprint() == grain._STORED_FOR
    fresh = grain.calibrate(block)
    for got, want in zip(grain._STORED[block], (fresh.rho, fresh.limits.T, fresh.ratio)):
        np.testing.assert_allclose(got, want, atol=2e-5)


def test_measuring_in_bands_sees_the_same_blocks():
    n = 8 * grain.BAND_BLOCKS + 40                     # more than one band
    x = np.clip(ramp(n, 96) + 6 / 255 * field((n, 96), 0.8, 4, 3), 0, 1)
    whole = grain._stats(x, 8)
    banded = grain._banded_stats(x, 8)
    for a, b in zip(whole, banded):
        np.testing.assert_array_equal(a, b)


def test_chroma_noise_estimate():
    n = 128
    rng = np.random.default_rng(9)
    base = ramp(n, n) * np.array([1.0, 0.8, 0.6], np.float32)
    clean = color.chroma_noise(base)
    noisy = np.clip(base + 6 / 255 * rng.standard_normal(base.shape).astype(np.float32), 0, 1)
    lab_noise = (color.srgb_to_lab(noisy) - color.srgb_to_lab(base))[..., 1:].std()
    assert clean < 0.2
    assert color.chroma_noise(noisy) == pytest.approx(lab_noise, rel=0.2)
    assert color.lock_sigma(noisy) > color.lock_sigma(base) == color.LOCK_SIGMA_MIN


def test_big_images_are_sampled_and_agree():
    n = 8 * grain.BAND_BLOCKS * 4 + 40                 # four bands of blocks
    x = np.clip(ramp(n, 128) + 6 / 255 * field((n, 128), 0.8, 8, 1), 0, 1)
    full = grain.measure(x, max_pixels=None)
    part = grain.measure(x, max_pixels=8 * grain.BAND_BLOCKS * 128)      # one band's worth
    assert sum(part.blocks) < 0.5 * sum(full.blocks)
    assert part.level == pytest.approx(full.level, rel=0.1)


def test_top_up_adds_only_what_is_missing():
    n = 128
    src = np.clip(ramp(n, n) + 8 / 255 * field((n, n), 0.0, 21, 1), 0, 1)
    half = np.clip(ramp(n, n) + 5 / 255 * field((n, n), 0.0, 22, 1), 0, 1)   # result with some noise
    p, present = grain.measure(src), grain.measure(half)
    need = grain.top_up(p, present)
    assert need.level == pytest.approx(np.sqrt(p.level ** 2 - present.level ** 2), rel=0.05)
    g = grain.synthesize(need, (n, n), 1, color.luma(half), 3)
    assert grain.measure(np.clip(half + g, 0, 1)).level == pytest.approx(p.level, rel=0.15)
    # a result noisier than the source gets nothing
    assert grain.top_up(present, p).level == 0.0
