"""Real published weights (AI_ENHANCE_MODELS_DIR, CI: ../shared/weights) through OUR engine,
checked against the upstream Real-ESRGAN runtime (`realesrgan` 0.3.0's RealESRGANer) as oracle.

Skips with a reason when the weights or the oracle are not available."""
from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from ai_enhance.engine import Engine, JobRequest
from ai_enhance.errors import EnhanceError
from ai_enhance.models import ModelStore, read_state_dict
from ai_enhance_client import ops as optable
from ai_enhance_client.protocol import ErrorKind

pytestmark = pytest.mark.real_weights

RAW_UPSCALE = optable.BY_NAME["upscale"].post_off()

SHARED = {  # catalogue id -> file, as shipped in ../shared/weights
    "realesrgan-x4plus": "RealESRGAN_x4plus.pth",
    "realesr-animevideov3": "realesr-animevideov3.pth",
    "ffdnet-color": "ffdnet_color.pth",
    "retinaface-mobile0.25": "detection_mobilenet0.25_Final.pth",
}


def need(folder: Path, *files: str) -> None:
    missing = [f for f in files if not (folder / f).is_file()]
    if missing:
        pytest.skip(f"real weights not in {folder}: {', '.join(missing)}")


def upstream():
    """RealESRGANer and its networks, importable with current torchvision through the alias for
    the module torchvision removed in 0.17 (basicsr 1.4.2 still imports it)."""
    try:
        import torchvision.transforms.functional as tvf
        sys.modules.setdefault("torchvision.transforms.functional_tensor", tvf)
        from basicsr.archs.rrdbnet_arch import RRDBNet
        from realesrgan import RealESRGANer
        from realesrgan.archs.srvgg_arch import SRVGGNetCompact
    except ImportError as e:
        pytest.skip(f"upstream oracle not installed ({e}): pip install realesrgan==0.3.0")
    return RealESRGANer, RRDBNet, SRVGGNetCompact


def psnr(a, b) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def photo(size: int, y: int = 60, x: int = 170) -> np.ndarray:
    import skimage.data
    return np.ascontiguousarray(skimage.data.astronaut()[y: y + size, x: x + size])


def ours(engine: Engine, model: str, img: np.ndarray, tile: int, **kw) -> np.ndarray:
    """The raw model output through our engine (post-processing off: compared with upstream)."""
    kw.setdefault("post", RAW_UPSCALE)
    return engine.run(JobRequest("upscale", model, 4, tile, **kw), img, lambda f, t: None,
                      lambda: False).image


def theirs(RealESRGANer, net, path: Path, img: np.ndarray, tile: int, tile_pad: int = 10) -> np.ndarray:
    import torch
    up = RealESRGANer(scale=4, model_path=str(path), model=net, tile=tile, tile_pad=tile_pad,
                      pre_pad=0, half=False, device=torch.device("cpu"))
    out, _ = up.enhance(np.ascontiguousarray(img[:, :, ::-1]), outscale=4)    # it takes BGR
    return np.ascontiguousarray(out[:, :, ::-1])


@pytest.fixture(scope="module")
def engine(real_models_dir) -> Engine:
    return Engine(ModelStore(real_models_dir), device="cpu")


def test_shared_files_are_listed_unverified_and_load(real_models_dir, engine):
    """The shared files are fp16 re-conversions, not the official bytes: listed as installed,
    'unverified', and they still load (image models through spandrel, the detector safely)."""
    present = {mid: f for mid, f in SHARED.items() if (real_models_dir / f).is_file()}
    if not present:
        pytest.skip(f"none of {sorted(SHARED.values())} in {real_models_dir}")
    store = engine.store
    listed = {m.id: m for m in store.list()}
    for mid, f in present.items():
        info = listed[mid]
        assert info.installed and not info.custom and info.file == f
        assert info.status == "unverified", (mid, info.status)
        if info.role is None:
            lm = store.load(info, "cpu")
            assert lm.scale == info.scale
        else:
            sd = read_state_dict(info.path, mid)                  # safe load of the support file
            assert len(sd) > 50
            with pytest.raises(EnhanceError) as e:                 # not an image model
                store.load(info, "cpu")
            assert e.value.kind in (ErrorKind.UNSUPPORTED, ErrorKind.MODEL_CORRUPT)
    # nothing in the shared folder shows up as a stray custom model
    assert not [m.id for m in listed.values() if m.custom and m.file in SHARED.values()]


@pytest.mark.slow
def test_x4plus_matches_upstream_realesrganer(real_models_dir, engine):
    need(real_models_dir, "RealESRGAN_x4plus.pth")
    RealESRGANer, RRDBNet, _ = upstream()
    path = real_models_dir / "RealESRGAN_x4plus.pth"
    img = photo(64)                                  # the astronaut's face: real detail
    net = lambda: RRDBNet(num_in_ch=3, num_out_ch=3, num_feat=64, num_block=23,  # noqa: E731
                          num_grow_ch=32, scale=4)
    # whole image at once on both sides
    a, b = ours(engine, "realesrgan-x4plus", img, 0), theirs(RealESRGANer, net(), path, img, 0)
    assert a.shape == b.shape == (256, 256, 3)
    assert psnr(a, b) >= 40
    # same tiling: upstream tile=32 + tile_pad=10 feeds the model 52 px extents -> our tile=52
    at, bt = ours(engine, "realesrgan-x4plus", img, 52), theirs(RealESRGANer, net(), path, img, 32)
    assert psnr(at, bt) >= 40
    # at that tiny tile both sides have seams (10 px of context cannot hold RRDB's receptive
    # field); ours are no worse than upstream's
    assert psnr(at, a) >= psnr(bt, b) - 0.5
    # with the engine's default 32 px of context the tile edge is invisible: a region computed
    # from its surroundings only (roi + 32 px, not the whole image) equals the untiled result
    part = ours(engine, "realesrgan-x4plus", img, 0, roi=(0, 0, 24, 24))
    assert part.shape == (96, 96, 3)
    assert psnr(part, a[:96, :96]) >= 45


@pytest.mark.slow
def test_animevideov3_matches_upstream_and_has_no_seams(real_models_dir, engine):
    need(real_models_dir, "realesr-animevideov3.pth")
    RealESRGANer, _, SRVGGNetCompact = upstream()
    path = real_models_dir / "realesr-animevideov3.pth"
    img = photo(96, 40, 150)
    net = lambda: SRVGGNetCompact(num_in_ch=3, num_out_ch=3, num_feat=64, num_conv=16,  # noqa: E731
                                  upscale=4, act_type="prelu")
    a = ours(engine, "realesr-animevideov3", img, 0)
    assert psnr(a, theirs(RealESRGANer, net(), path, img, 0)) >= 40
    at = ours(engine, "realesr-animevideov3", img, 48)
    assert psnr(at, a) >= 45
    # an roi equals the same region of the full result
    x, y, w, h = 20, 30, 40, 24
    roi = ours(engine, "realesr-animevideov3", img, 48, roi=(x, y, w, h))
    assert roi.shape == (h * 4, w * 4, 3)
    assert psnr(roi, a[y * 4:(y + h) * 4, x * 4:(x + w) * 4]) >= 45


def test_ffdnet_denoises_a_real_photo(real_models_dir, engine):
    need(real_models_dir, "ffdnet_color.pth")
    clean = photo(128, 100, 150)
    rng = np.random.default_rng(0)
    noisy = np.clip(clean + rng.normal(0, 25, clean.shape), 0, 255).astype(np.uint8)
    out = engine.run(JobRequest("denoise", "ffdnet-color", 1, 0, options={"noise-level": 25}), noisy,
                     lambda f, t: None, lambda: False).image
    before, after = psnr(noisy, clean), psnr(out, clean)
    assert after >= before + 8, (before, after)           # ~21 dB -> ~31 dB
    # tiled the same
    tiled = engine.run(JobRequest("denoise", "ffdnet-color", 1, 48, options={"noise-level": 25}), noisy,
                       lambda f, t: None, lambda: False).image
    assert psnr(tiled, out) >= 45


def test_x4plus_same_size_enhancement_on_a_real_photo(real_models_dir, engine):
    """scale 1 with a x4 model: run, then area-downscale: same size as the input, close to it
    (Real-ESRGAN keeps structure), not identical (it did something)."""
    need(real_models_dir, "RealESRGAN_x4plus.pth")
    img = cv2.resize(photo(128), (48, 48), interpolation=cv2.INTER_AREA)
    out = engine.run(JobRequest("upscale", "realesrgan-x4plus", 1, 0), img, lambda f, t: None,
                     lambda: False).image
    assert out.shape == img.shape and out.dtype == np.uint8
    assert 22 <= psnr(out, img) < 60


def gradient_energy(img: np.ndarray) -> float:
    g = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY).astype(np.float64)
    return float(np.mean(np.diff(g, axis=0) ** 2) + np.mean(np.diff(g, axis=1) ** 2))


@pytest.mark.parametrize("sigma", [15, 25, 50])
def test_denoise_automatic_level_on_a_real_photo(real_models_dir, engine, sigma):
    """noise-level 0: the backend measures the noise (within 20 % of the truth), tells it, and
    the result gains as much as with the true level."""
    need(real_models_dir, "ffdnet_color.pth")
    clean = photo(160, 80, 140)
    rng = np.random.default_rng(sigma)
    noisy = np.clip(clean + rng.normal(0, sigma, clean.shape), 0, 255).astype(np.uint8)
    out = engine.run(JobRequest("denoise", "ffdnet-color", 1, 0), noisy, lambda f, t: None, lambda: False)
    assert out.info["noise_level_estimated"] is True
    assert abs(out.info["noise_level"] - sigma) <= 0.2 * sigma, out.info
    gain = psnr(out.image, clean) - psnr(noisy, clean)
    assert gain >= {15: 5, 25: 8, 50: 8}[sigma], gain


def test_sharpen_with_x4plus_when_no_deblurring_model_is_installed(real_models_dir, engine):
    """Sharpen's default without deblurring models is the x4 super-resolution model at the same
    size: same size out, measurably sharper than the blurred input."""
    need(real_models_dir, "RealESRGAN_x4plus.pth")
    img = cv2.resize(photo(128), (64, 64), interpolation=cv2.INTER_AREA)
    blurred = cv2.GaussianBlur(img, (0, 0), 1.2)
    out = engine.run(JobRequest("sharpen"), blurred, lambda f, t: None, lambda: False)
    assert out.info["model"] == "realesrgan-x4plus"          # the best installed for sharpen
    assert out.image.shape == blurred.shape and out.image.dtype == np.uint8
    assert gradient_energy(out.image) > 1.3 * gradient_energy(blurred)
    assert psnr(out.image, blurred) > 20                     # the same picture
