"""The post-processing stage on real Real-ESRGAN x4plus output (skips without real weights)."""
from __future__ import annotations

import numpy as np
import pytest

from ai_enhance.post import color, fidelity, grain, metrics

pytestmark = [pytest.mark.real_weights, pytest.mark.slow]


@pytest.fixture(scope="module")
def x4plus_face(real_models_dir):
    spandrel = pytest.importorskip("spandrel")
    torch = pytest.importorskip("torch")
    import skimage.data
    path = real_models_dir / "RealESRGAN_x4plus.pth"
    if not path.exists():
        pytest.skip(f"{path} not found")
    model = spandrel.ModelLoader().load_from_file(str(path)).eval()
    src = np.ascontiguousarray(skimage.data.astronaut()[80:128, 190:238].astype(np.float32) / 255)
    with torch.inference_mode():
        y = model(torch.from_numpy(src.transpose(2, 0, 1).copy())[None])
    raw = np.ascontiguousarray(y[0].clamp(0, 1).permute(1, 2, 0).numpy().astype(np.float32))
    return src, raw


def test_targets_on_a_real_upscale(x4plus_face):
    src, raw = x4plus_face
    assert metrics.consistency_db(src, raw, 4) < 38                  # the model does invent
    full = fidelity.apply(src, raw, 4, 1.0)
    assert metrics.consistency_db(src, full, 4) >= 40
    assert metrics.gradient_energy(full) >= 0.8 * metrics.gradient_energy(raw)
    locked = color.lock(src, raw, 4)
    assert metrics.chroma_distance_mean(src, raw, 4) > 1.0
    assert metrics.chroma_distance_mean(src, locked, 4) <= 0.8
    # grain 1 brings the source's level back (per output pixel) where the model lost it
    z = np.random.default_rng(0).standard_normal(src.shape[:2] + (1,)).astype(np.float32)
    noisy = np.clip(src + 8 / 255 * z, 0, 1)
    p = grain.measure(noisy)
    g = grain.synthesize(p, raw.shape[:2], 4, color.luma(raw), grain.seed_for(noisy))
    res = np.clip(raw + g, 0, 1)
    assert grain.measure(res).level == pytest.approx(p.level, rel=0.35)
