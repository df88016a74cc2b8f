"""Measures of fidelity (for tests and benchmarks; whole-image, not banded).

All compare the input ``src`` with the result ``out`` downscaled by `resample.down`, the same
operator the engine and the fidelity stage use, so "consistency" means one thing everywhere."""
from __future__ import annotations

import numpy as np

from . import color, grain, resample


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB for images in 0..1 (inf when equal)."""
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(1.0 / mse)


def consistency_db(src: np.ndarray, out: np.ndarray, scale: int) -> float:
    """PSNR between the input and the result downscaled to the input's size."""
    return psnr(src, resample.down(out, scale))


def gradient_energy(x: np.ndarray) -> float:
    """Mean squared forward difference (x and y, all channels): how much detail there is."""
    x = np.asarray(x, np.float64)
    dx = np.diff(x, axis=1)
    dy = np.diff(x, axis=0)
    return float((np.sum(dx * dx) + np.sum(dy * dy)) / x.size)


def _labs(src, out, scale):
    return color.srgb_to_lab(src), color.srgb_to_lab(resample.down(out, scale))


def delta_e2000_mean(src: np.ndarray, out: np.ndarray, scale: int) -> float:
    """Mean CIEDE2000 between the input and the downscaled result."""
    a, b = _labs(src, out, scale)
    return float(np.mean(color.delta_e2000(a, b)))


def chroma_distance_mean(src: np.ndarray, out: np.ndarray, scale: int) -> float:
    """Mean a*b* distance (CIELAB) between the input and the downscaled result."""
    a, b = _labs(src, out, scale)
    return float(np.mean(np.hypot(a[..., 1] - b[..., 1], a[..., 2] - b[..., 2])))


def noise_sigma(x: np.ndarray) -> float:
    """The image's noise sigma (0..1 units, RMS over channels) as `grain.measure` sees it."""
    return grain.measure(x).channel_level
