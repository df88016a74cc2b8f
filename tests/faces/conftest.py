"""Fixtures of the face pipeline tests; see facekit.py for what the models are."""
from __future__ import annotations

from pathlib import Path

import pytest

from facekit import (DETECTOR_FILE, find_detector, link, make_engine, make_gfpgan, make_nearest_compact,
                     make_tiny_restoreformer)


@pytest.fixture(scope="session")
def detector_path() -> Path:
    p = find_detector()
    if p is None:
        pytest.skip(f"real face detector {DETECTOR_FILE} not found: set AI_ENHANCE_MODELS_DIR to a "
                    "folder holding it (CI: ../shared/weights)")
    return p


@pytest.fixture(scope="session")
def faces_models_dir(tmp_path_factory, detector_path) -> Path:
    """Models folder: the real detector, tiny-restoreformer.pth, nearest-x2.pth."""
    d = tmp_path_factory.mktemp("face-models")
    link(detector_path, d / DETECTOR_FILE)
    make_tiny_restoreformer(d / "tiny-restoreformer.pth")
    make_nearest_compact(d / "nearest-x2.pth", 2)
    return d


@pytest.fixture(scope="session")
def gfpgan_models_dir(tmp_path_factory, detector_path) -> Path:
    """Models folder: the real detector and a random full-size GFPGANv1.4.pth (349 MB)."""
    d = tmp_path_factory.mktemp("gfpgan-models")
    link(detector_path, d / DETECTOR_FILE)
    make_gfpgan(d / "GFPGANv1.4.pth")
    return d


@pytest.fixture(scope="session")
def engine(faces_models_dir):
    return make_engine(faces_models_dir)


@pytest.fixture(scope="session")
def detector(detector_path):
    """The real MobileNet-0.25 RetinaFace, loaded the way the pipeline loads it (no engine)."""
    import torch

    from ai_enhance.models.helpers import build_retinaface

    return build_retinaface(detector_path, "mobile0.25", torch.device("cpu"), "retinaface-mobile0.25")
