"""Small real and synthetic images for the post-processing tests (no files, no network)."""
from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np


@lru_cache(maxsize=None)
def _astronaut() -> np.ndarray:
    import skimage.data
    return skimage.data.astronaut().astype(np.float32) / 255.0


def photo(h: int = 48, w: int = 40, c: int = 3, y: int = 40, x: int = 170) -> np.ndarray:
    """A crop of skimage's astronaut around her face (``c=1``: its luma)."""
    img = _astronaut()[y: y + h, x: x + w].copy()
    if c == 1:
        img = (img @ np.array([0.299, 0.587, 0.114], np.float32))[..., None]
    return np.ascontiguousarray(img, np.float32)


def bicubic(src: np.ndarray, scale: int) -> np.ndarray:
    h, w, c = src.shape
    if scale == 1:
        return src.copy()
    up = cv2.resize(src, (w * scale, h * scale), interpolation=cv2.INTER_CUBIC)
    return np.clip(up.reshape(h * scale, w * scale, c), 0, 1).astype(np.float32)


def hallucinating(src: np.ndarray, scale: int, seed: int = 0) -> np.ndarray:
    """What a generative upscaler does wrong, on purpose: a bicubic upscale plus invented
    texture at and above the input's pixel scale, a tone/colour drift, and one patch of the
    input redrawn as something else."""
    h, w, c = src.shape
    out = bicubic(src, scale)
    H, W = out.shape[:2]
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    texture = 0.04 * np.sin(xx * 1.3 / scale + yy * 0.7 / scale) + 0.02 * rng.standard_normal((H, W)).astype(np.float32)
    out = out + texture[..., None]
    drift = np.array([0.03, -0.02, 0.015], np.float32)[:c] if c == 3 else np.float32(0.03)
    out = out + drift
    ph, pw = max(1, H // 4), max(1, W // 4)
    out[ph: 2 * ph, pw: 2 * pw] = 1.0 - out[ph: 2 * ph, pw: 2 * pw]      # "8" drawn as "B"
    return np.clip(out, 0, 1).astype(np.float32)
