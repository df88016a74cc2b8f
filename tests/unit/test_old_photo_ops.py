"""Find Damage, Inpaint, Colorize and Restore Old Photo through the engine (the image-analysis
functions are tested on their own in test_imaging_*.py): what each returns, what stays untouched,
and the clear answers to bad masks."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from ai_enhance.engine import Engine
from ai_enhance.errors import EnhanceError
from ai_enhance.jobs import JobRequest
from ai_enhance.models import ModelStore
from ai_enhance_client.protocol import ErrorKind
from damagekit import damage
from randnets import path_of
from testkit import link, make_compact


def photo(h=96, w=128) -> np.ndarray:
    import skimage.data
    return cv2.resize(skimage.data.astronaut(), (w, h), interpolation=cv2.INTER_AREA)


def damaged(seed=0):
    clean = photo(192, 256).astype(np.float32) / 255
    d = damage(clean, seed)                 # a few scratches and a score of specks
    return (clean * 255).round().astype(np.uint8), (d.image * 255).round().astype(np.uint8), d


def run(engine, op, inputs, model="", **kw):
    return engine.run(JobRequest(op, model, **kw), inputs, lambda f, t: None, lambda: False)


def psnr(a, b) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10 * np.log10(255.0 ** 2 / mse)


@pytest.fixture(scope="module")
def bare(tmp_path_factory) -> Engine:
    """No model file at all: the built-in methods only."""
    return Engine(ModelStore(tmp_path_factory.mktemp("no-models")), device="cpu")


def _found_share(bare) -> float:
    clean, bad, truth = damaged()
    mask = run(bare, "find-damage", bad).mask("damage")
    seen = truth.visible(clean.astype(np.float32) / 255)
    near = cv2.dilate((mask > 127).astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    return (near & seen).sum() / seen.sum()


@pytest.mark.xfail(strict=True, reason="issue 9's recall target is not met yet: the classical detector "
                   "finds 0.52 of this photo's damage (a faint scratch over the mottled sky, a dark one "
                   "along the suit's edge); strict, so it fails once a detector reaches 0.6")
def test_find_damage_finds_most_of_the_damage(bare):
    assert _found_share(bare) >= 0.6                 # most of the damage found


def test_find_damage_returns_a_mask_only_and_finds_the_scratches(bare):
    clean, bad, truth = damaged()
    out = run(bare, "find-damage", bad)
    assert out.image is None and [n for n, _ in out.masks] == ["damage"]
    mask = out.mask("damage")
    assert mask.shape == bad.shape[:2] and mask.dtype == np.uint8
    # no regression below what the classical detector reaches today (0.52; it was 0.11)
    assert _found_share(bare) >= 0.5
    assert out.info["model"] == "damage-analysis"
    # a region of interest: only that part comes back
    roi = run(bare, "find-damage", bad, roi=(16, 8, 64, 40)).mask("damage")
    assert roi.shape == (40, 64)
    dust = run(bare, "find-damage", bad, options={"kinds": "dust"}).mask("damage")
    assert (dust > 0).sum() < (mask > 0).sum()


def test_inpaint_classical_fills_only_the_mask(bare):
    clean, bad, truth = damaged(1)
    holes = (((truth.scratches > 0) | (truth.specks > 0)) * 255).astype(np.uint8)
    holes = cv2.dilate(holes, np.ones((3, 3), np.uint8))
    out = run(bare, "inpaint", {"image": bad, "mask": holes})
    assert out.info["model"] == "classical" and "classical" in out.info["message"]
    keep = holes == 0
    np.testing.assert_array_equal(out.image[keep], bad[keep])      # bit for bit outside the mask
    assert psnr(out.image, clean) > psnr(bad, clean) + 3


@pytest.mark.parametrize("dtype,channels", [(np.uint16, 3), (np.uint8, 1), (np.uint8, 4)])
def test_inpaint_keeps_depth_channels_and_alpha(bare, dtype, channels):
    img = photo(48, 64)
    if channels == 1:
        img = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)[:, :, None]
    if channels == 4:
        img = np.dstack([img, np.full(img.shape[:2], 99, np.uint8)])
    img = img.astype(dtype) * (257 if dtype == np.uint16 else 1)
    holes = np.zeros(img.shape[:2], np.uint8)
    holes[20:24, 10:50] = 255
    out = run(bare, "inpaint", {"image": img, "mask": holes})
    assert out.image.shape == img.shape and out.image.dtype == img.dtype
    np.testing.assert_array_equal(out.image[holes == 0], img[holes == 0])
    if channels == 4:
        assert (out.image[..., 3] == 99).all()


def test_inpaint_bad_masks_are_clear_errors_or_no_ops(bare):
    img = photo(32, 40)
    with pytest.raises(EnhanceError) as e:
        run(bare, "inpaint", {"image": img, "mask": np.zeros((10, 10), np.uint8)})
    assert e.value.kind == ErrorKind.BAD_REQUEST and "\n" not in str(e.value)
    with pytest.raises(EnhanceError) as e:
        run(bare, "inpaint", {"image": img})                      # no mask at all
    assert e.value.kind == ErrorKind.BAD_REQUEST and "mask" in str(e.value)
    with pytest.raises(EnhanceError) as e:
        run(bare, "inpaint", {"image": img, "mask": np.full((32, 40), 255, np.uint8)})
    assert e.value.kind == ErrorKind.BAD_REQUEST and e.value.hint
    empty = run(bare, "inpaint", {"image": img, "mask": np.zeros((32, 40), np.uint8)})
    np.testing.assert_array_equal(empty.image, img)
    assert "nothing to fill" in empty.info["message"]


@pytest.mark.slow
def test_inpaint_with_lama_keeps_unmasked_pixels(tmp_path):
    p = path_of("lama")
    link(p, tmp_path / p.name)
    engine = Engine(ModelStore(tmp_path), device="cpu")
    clean, bad, truth = damaged(2)
    holes = (((truth.scratches > 0) | (truth.specks > 0)) * 255).astype(np.uint8)
    out = run(engine, "inpaint", {"image": bad, "mask": holes})
    assert out.info["model"] == "big-lama"
    np.testing.assert_array_equal(out.image[holes == 0], bad[holes == 0])


@pytest.mark.slow
@pytest.mark.parametrize("channels", [3, 1])
def test_colorize_keeps_the_luminance_and_returns_rgb(tmp_path, channels):
    from ai_enhance.imaging.colorize import srgb_to_lab

    p = path_of("ddcolor")
    link(p, tmp_path / "ddcolor_modelscope.pth")                  # the default's file name
    engine = Engine(ModelStore(tmp_path), device="cpu")
    src = photo(48, 64)
    if channels == 1:
        src = cv2.cvtColor(src, cv2.COLOR_RGB2GRAY)[:, :, None]
    out = run(engine, "colorize", src, options={"input-size": 256})
    assert out.image.shape == (48, 64, 3) and out.image.dtype == np.uint8
    l_src = srgb_to_lab(np.repeat(src, 3 // src.shape[2], axis=2).astype(np.float32) / 255)[..., 0]
    l_out = srgb_to_lab(out.image.astype(np.float32) / 255)[..., 0]
    assert np.abs(l_src - l_out).max() < 1.0                      # 8-bit rounding only
    gray = run(engine, "colorize", src, options={"input-size": 256, "saturation": 0.0}).image
    assert np.abs(gray.astype(int) - gray[..., :1].astype(int)).max() <= 2


def test_restore_old_photo_runs_the_steps_it_can_and_names_the_others(tmp_path):
    make_compact(tmp_path / "nearest-x1.pth", scale=1, zero_last=True, seed=8)   # serves denoise
    engine = Engine(ModelStore(tmp_path), device="cpu")
    clean, bad, _ = damaged(3)
    out = run(engine, "restore-old-photo", bad)
    steps = [s["step"] for s in out.info["steps"]]
    assert steps == ["inpaint", "denoise"]
    assert any(s.startswith("faces") for s in out.info["skipped"])   # no face model here
    assert [n for n, _ in out.layers] == ["inpaint", "denoise"]
    assert out.mask("damage") is not None and out.image.shape == bad.shape
    assert psnr(out.image, clean) > psnr(bad, clean)
    assert "skipped" in out.info["message"]
    only = run(engine, "restore-old-photo", bad, options={"denoise": False})
    assert [s["step"] for s in only.info["steps"]] == ["inpaint"]
