"""Helpers of the face pipeline tests (fixtures in conftest.py).

* the real RetinaFace MobileNet-0.25 detector (``detection_mobilenet0.25_Final.pth``) from
  AI_ENHANCE_MODELS_DIR or ../shared/weights; tests that need it skip with the reason when absent;
* face restorers of the real architectures, random-initialised and saved at test time under their
  file names (GFPGAN/CodeFormer weights cannot be had here): the full-size GFPGANv1Clean as
  ``GFPGANv1.4.pth`` (heavy: used by one test) and a tiny RestoreFormer (spandrel reads its size
  from the state dict) as the custom model ``tiny-restoreformer`` for everything else;
* ``nearest-x2.pth``: an SRVGGNetCompact x2 whose last conv is zero, i.e. exactly a
  nearest-neighbour x2 upscale, as a background model with a known output.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from testkit import link  # noqa: F401  (a model file into a test folder)

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared"
DETECTOR_FILE = "detection_mobilenet0.25_Final.pth"


def find_detector() -> Path | None:
    for d in (os.environ.get("AI_ENHANCE_MODELS_DIR"), SHARED / "weights"):
        if d and (Path(d) / DETECTOR_FILE).is_file():
            return Path(d) / DETECTOR_FILE
    return None


def find_image(name: str) -> Path:
    p = SHARED / "images" / name
    if not p.is_file():
        pytest.skip(f"test photo {p} not available (../shared/images beside the clone)")
    return p


def read_rgb(name: str, max_side: int | None = None) -> np.ndarray:
    import cv2

    img = cv2.imread(str(find_image(name)), cv2.IMREAD_COLOR)[:, :, ::-1]
    if max_side and max(img.shape[:2]) > max_side:
        f = max_side / max(img.shape[:2])
        img = cv2.resize(img, (round(img.shape[1] * f), round(img.shape[0] * f)), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(img)


def astronaut() -> np.ndarray:
    skimage_data = pytest.importorskip("skimage.data")
    return skimage_data.astronaut()


def make_tiny_restoreformer(path: Path, seed: int = 0) -> Path:
    """A RestoreFormer (spandrel's architecture, the GFPGAN-release RestoreFormer) with 32 channels
    at every level instead of 64..512: ~0.5 M parameters, recognised by spandrel as a FaceSR model
    taking 512x512 faces, ~1 s per face on a CPU."""
    import torch
    from spandrel.architectures.RestoreFormer import RestoreFormer

    torch.manual_seed(seed)
    net = RestoreFormer(n_embed=64, embed_dim=32, ch=32, out_ch=3, ch_mult=(1, 1, 1, 1, 1, 1),
                        num_res_blocks=1, attn_resolutions=(16,), dropout=0.0, in_channels=3,
                        resolution=512, z_channels=32, double_z=False, enable_mid=True, head_size=1)
    torch.save({"params_ema": net.state_dict()}, path)
    return path


def make_gfpgan(path: Path, seed: int = 0) -> Path:
    """The real GFPGANv1Clean architecture at full size (the GFPGANv1.3/1.4 layout: 512 px,
    channel multiplier 2, SFT half), random-initialised, in upstream's {"params_ema": ...}."""
    import torch
    from spandrel.architectures.GFPGAN import GFPGAN

    torch.manual_seed(seed)
    net = GFPGAN(out_size=512, num_style_feat=512, channel_multiplier=2, decoder_load_path=None,
                 fix_decoder=False, num_mlp=8, input_is_latent=True, different_w=True, narrow=1,
                 sft_half=True)
    torch.save({"params_ema": net.state_dict()}, path)
    return path


def make_nearest_compact(path: Path, scale: int) -> Path:
    """SRVGGNetCompact with its last conv zeroed: output == nearest-neighbour upscale of the input."""
    from testkit import make_compact

    return make_compact(path, scale=scale, zero_last=True, seed=1)


class Recorder:
    """progress/is_cancelled pair recording what the op reported."""

    def __init__(self, cancel_when=None):
        self.events: list[tuple[float, str]] = []
        self.cancel_when = cancel_when

    def progress(self, fraction: float, text: str) -> None:
        assert 0.0 <= fraction <= 1.0, fraction
        self.events.append((fraction, text))

    def is_cancelled(self) -> bool:
        return bool(self.cancel_when and self.cancel_when(self.events))


def run(engine, image, model="tiny-restoreformer", scale=1, roi=None, options=None, rec=None, post=None):
    """One "faces" job through Engine.run (its dispatch and request checks included); the
    post-processing dials off unless ``post`` is given (these tests are about the pipeline)."""
    from ai_enhance.jobs import JobRequest
    from ai_enhance_client import ops as optable

    rec = rec or Recorder()
    post = optable.BY_NAME["faces"].post_off() if post is None else post
    req = JobRequest(op="faces", model=model, scale=scale, roi=roi, options=dict(options or {}), post=post)
    return engine.run(req, image, rec.progress, rec.is_cancelled)


def make_engine(models_dir: Path):
    from ai_enhance.engine import Engine
    from ai_enhance.models import ModelStore

    return Engine(ModelStore(models_dir), device="cpu")
