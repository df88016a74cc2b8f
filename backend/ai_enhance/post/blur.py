"""Gaussian blur with a known reach, so that banded processing knows how much halo it needs."""
from __future__ import annotations

import math
from functools import lru_cache

import cv2
import numpy as np

#: Kernels are cut at this many sigmas (0.3 % of the weight lies beyond).
TRUNCATE = 3.0


def radius(sigma: float) -> int:
    """Pixels the blur reads on each side."""
    return 0 if sigma <= 0 else max(1, int(math.ceil(TRUNCATE * sigma)))


@lru_cache(maxsize=64)
def kernel(sigma: float) -> np.ndarray:
    r = radius(sigma)
    x = np.arange(-r, r + 1, dtype=np.float64)
    k = np.exp(-0.5 * (x / sigma) ** 2)
    k = (k / k.sum()).astype(np.float32)
    k.flags.writeable = False
    return k


def gaussian(x: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of an HxW or HxWxC float32 array (mirror edges); a new array."""
    if sigma <= 0:
        return np.array(x, np.float32, copy=True)
    k = kernel(float(sigma))
    y = cv2.sepFilter2D(np.ascontiguousarray(x, np.float32), cv2.CV_32F, k, k,
                        borderType=cv2.BORDER_REFLECT)
    return y.reshape(x.shape)
