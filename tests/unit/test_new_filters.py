"""Denoise, Sharpen / Deblur and JPEG Cleanup through the engine, with random-initialised networks
of every architecture they support, saved in their real key layout under the catalogue's official
file names (tests/randnets.py; spandrel must detect each): same size out, the dtype and channels
of the input, the operation's parameters reaching the model, and the catalogue's default choice."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ai_enhance.engine import Engine
from ai_enhance.errors import EnhanceError
from ai_enhance.jobs import JobRequest
from ai_enhance.models import ModelStore
from ai_enhance_client.protocol import ErrorKind
from randnets import path_of
from testkit import link, make_compact


def img(h=36, w=44, c=3, seed=0, dtype=np.uint8):
    a = np.random.default_rng(seed).integers(0, 256, (h, w, c), dtype=np.uint8)
    return a if dtype == np.uint8 else (a.astype(np.uint16) * 257)


def run(engine, op, image, model="", **kw):
    return engine.run(JobRequest(op, model, **kw), image, lambda f, t: None, lambda: False)


#: catalogue id -> randnets key (file names match the catalogue's)
DENOISERS = {"scunet-color-real-psnr": "scunet", "drunet-color": "drunet", "ffdnet-color": "ffdnet"}
DEBLURRERS = {"nafnet-gopro": "nafnet", "fftformer-gopro": "fftformer", "restormer-deblur": "restormer",
              "mprnet-deblur": "mprnet"}


@pytest.fixture(scope="module")
def mdir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("filter-models")
    for key in set(DENOISERS.values()) | set(DEBLURRERS.values()):
        p = path_of(key)
        link(p, d / p.name)
    return d


@pytest.fixture(scope="module")
def engine(mdir) -> Engine:
    return Engine(ModelStore(mdir), device="cpu")


@pytest.mark.parametrize("model", sorted(DENOISERS))
@pytest.mark.parametrize("dtype,channels", [(np.uint8, 3), (np.uint16, 1)])
def test_every_denoiser_keeps_size_type_and_channels(engine, model, dtype, channels):
    x = img(c=channels, dtype=dtype)
    out = run(engine, "denoise", x, model, options={"noise-level": 20})
    assert out.image.shape == x.shape and out.image.dtype == x.dtype
    assert out.info["model"] == model and out.info["noise_level"] == 20


def test_noise_level_reaches_the_model_and_zero_measures_it(engine):
    x = img(seed=3)
    a = run(engine, "denoise", x, "drunet-color", options={"noise-level": 5}).image
    b = run(engine, "denoise", x, "drunet-color", options={"noise-level": 60}).image
    assert not np.array_equal(a, b)
    auto = run(engine, "denoise", x, "drunet-color")
    assert auto.info["noise_level_estimated"] is True and auto.info["noise_level"] > 0


def test_denoise_default_is_the_first_installed_of_the_table(engine):
    assert run(engine, "denoise", img()).info["model"] == "ffdnet-color"


@pytest.mark.parametrize("model", sorted(DEBLURRERS))
def test_every_deblurring_architecture_runs_at_the_same_size(engine, model):
    x = img(40, 52)
    out = run(engine, "sharpen", x, model)
    assert out.image.shape == x.shape and out.info["model"] == model
    tiled = run(engine, "sharpen", x, model, tile=32)
    assert tiled.image.shape == x.shape


def test_sharpen_default_prefers_a_deblurring_model(engine):
    assert run(engine, "sharpen", img()).info["model"] == "nafnet-gopro"


def test_sharpen_refuses_a_denoiser_and_scale(engine):
    with pytest.raises(EnhanceError) as e:
        run(engine, "sharpen", img(), "drunet-color")
    assert e.value.kind == ErrorKind.UNSUPPORTED and "sharpen" in str(e.value)
    with pytest.raises(EnhanceError) as e:
        run(engine, "sharpen", img(), "nafnet-gopro", scale=2)
    assert e.value.kind == ErrorKind.BAD_REQUEST


def test_sharpen_with_an_sr_model_at_the_same_size(tmp_path):
    make_compact(tmp_path / "RealESRGAN_x4plus.pth", seed=2)     # stands in for x4plus (same op list)
    out = run(Engine(ModelStore(tmp_path), device="cpu"), "sharpen", img())
    assert out.info["model"] == "realesrgan-x4plus" and out.image.shape == img().shape


@pytest.mark.slow
def test_jpeg_cleanup_with_fbcnn_estimates_once_and_uses_the_quality(tmp_path):
    p = path_of("fbcnn")
    link(p, tmp_path / p.name)
    engine = Engine(ModelStore(tmp_path), device="cpu")
    x = img(48, 40)
    auto = run(engine, "jpeg", x, tile=32)          # several tiles, one estimate
    assert auto.info["model"] == "fbcnn-color" and auto.info["quality_estimated"] is True
    q = auto.info["quality"]
    assert 1 <= q <= 100 and auto.info["tiles"] > 1
    same = run(engine, "jpeg", x, tile=32, options={"quality": q})
    np.testing.assert_array_equal(auto.image, same.image)      # the estimate went to every tile
    other = run(engine, "jpeg", x, tile=32, options={"quality": 100 if q < 50 else 5})
    assert not np.array_equal(other.image, same.image)
    assert other.info["quality_estimated"] is False
    with pytest.raises(EnhanceError) as e:
        run(engine, "jpeg", x, options={"quality": 101})
    assert e.value.kind == ErrorKind.BAD_REQUEST


def test_jpeg_cleanup_without_fbcnn_says_how_to_install_it(engine):
    with pytest.raises(EnhanceError) as e:
        run(engine, "jpeg", img())
    assert e.value.kind == ErrorKind.MODEL_MISSING
    assert "fbcnn_color.pth" in e.value.message and "ai-enhance models install fbcnn-color" in e.value.hint
    assert "python3 installer/install.py --models fbcnn-color" in e.value.hint
