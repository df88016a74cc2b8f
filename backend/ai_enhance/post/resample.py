"""The linear operators between input and output resolution (integer scale ``s``).

- `down`: the area average over ``s x s`` blocks.  This is *the* downscale of this project: the
  engine uses it when a model's native scale exceeds the asked one, and consistency ("does the
  result, downscaled, agree with the input?") is measured with it (`metrics.consistency_db`).
- `down_adjoint`: its transpose (each input pixel spread evenly over its block, divided by s^2).
- `up`: bilinear upsampling with pixel centres aligned (OpenCV's INTER_LINEAR convention).
- `lift`: the smooth right inverse of `down`: ``down(lift(r)) == r`` up to float rounding, away
  from the image border.  It is `up` after a small prefilter that undoes the blur ``down(up(.))``
  introduces; back-projection uses it to put a residual measured at input size back into the
  output without blocks (``down_adjoint`` would give the minimum-norm correction, but as visible
  ``s x s`` tiles) and without leaving most of the residual behind (plain ``up`` would, since
  ``down(up(.))`` halves the finest detail).

All take and return float32 HxWxC arrays (C >= 1) and never modify their argument.
"""
from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np

#: Taps on each side of the inverse prefilter.  Its coefficients fall by a factor ~0.17 per tap,
#: so five taps leave ~1e-4 of the residual, which one more back-projection round removes.
PREFILTER_RADIUS = 5


def _hwc(a: np.ndarray, channels: int) -> np.ndarray:
    """OpenCV drops a trailing channel axis of 1; put it back."""
    return a.reshape(a.shape[0], a.shape[1], channels)


def down(x: np.ndarray, scale: int) -> np.ndarray:
    """Area average over ``scale x scale`` blocks; H and W must be multiples of ``scale``."""
    h, w, c = x.shape
    if scale == 1:
        return x.astype(np.float32, copy=True)
    if h % scale or w % scale:
        raise ValueError(f"{w}x{h} is not a multiple of the scale {scale}")
    # INTER_AREA is the exact block mean for integer ratios (checked in tests) and ~10x faster
    # than a numpy reshape-mean.
    r = cv2.resize(np.ascontiguousarray(x, np.float32), (w // scale, h // scale),
                   interpolation=cv2.INTER_AREA)
    return _hwc(r, c)


def down_adjoint(r: np.ndarray, scale: int) -> np.ndarray:
    """Transpose of `down`: ``<down(x), r> == <x, down_adjoint(r)>``."""
    if scale == 1:
        return r.astype(np.float32, copy=True)
    h, w, c = r.shape
    u = cv2.resize(np.ascontiguousarray(r, np.float32), (w * scale, h * scale),
                   interpolation=cv2.INTER_NEAREST)
    return _hwc(u, c) * np.float32(1.0 / (scale * scale))


def up(x: np.ndarray, scale: int) -> np.ndarray:
    """Bilinear upsampling (edges replicated), centres aligned: output pixel ``Y`` samples input
    position ``(Y + 0.5) / scale - 0.5``."""
    if scale == 1:
        return x.astype(np.float32, copy=True)
    h, w, c = x.shape
    u = cv2.resize(np.ascontiguousarray(x, np.float32), (w * scale, h * scale),
                   interpolation=cv2.INTER_LINEAR)
    return _hwc(u, c)


def blur_taps(scale: int) -> np.ndarray:
    """The 3-tap kernel ``k`` with ``down(up(x)) == k * x`` (per axis, away from borders).

    Output sub-pixel ``j`` of a block sits at ``t_j = (j + 0.5)/s - 0.5`` input pixels from the
    block centre; bilinear gives the neighbour on that side weight ``|t_j|``; the block mean
    averages these over ``j``."""
    t = (np.arange(scale) + 0.5) / scale - 0.5
    side = float(np.abs(t[t < 0]).sum() / scale)
    return np.array([side, 1.0 - 2.0 * side, side])


@lru_cache(maxsize=16)
def prefilter_taps(scale: int, radius: int = PREFILTER_RADIUS) -> np.ndarray:
    """FIR inverse of `blur_taps` (length ``2*radius+1``), normalised to unit DC gain.

    ``k = [a, 1-2a, a]`` with ``a <= 1/8`` is strictly positive in frequency (>= 0.5), so its
    inverse is well conditioned and decays geometrically: sampling ``1/K(w)`` finely and
    truncating is accurate to ~0.17^radius."""
    k = blur_taps(scale)
    n = 256
    w = 2 * np.pi * np.arange(n) / n
    resp = k[1] + 2 * k[0] * np.cos(w)
    inv = np.real(np.fft.ifft(1.0 / resp))
    taps = np.concatenate([inv[-radius:], inv[: radius + 1]])
    taps /= taps.sum()
    taps.flags.writeable = False
    return taps


def prefilter(r: np.ndarray, scale: int) -> np.ndarray:
    """Apply the separable inverse prefilter at input resolution."""
    if scale == 1:
        return r.astype(np.float32, copy=True)
    taps = prefilter_taps(scale).astype(np.float32)
    c = r.shape[2]
    f = cv2.sepFilter2D(np.ascontiguousarray(r, np.float32), cv2.CV_32F, taps, taps,
                        borderType=cv2.BORDER_REFLECT)
    return _hwc(f, c)


def lift(r: np.ndarray, scale: int) -> np.ndarray:
    """Smooth right inverse of `down`: bilinear upsampling of the prefiltered residual."""
    return up(prefilter(r, scale), scale)


#: How many input rows one `lift` reads beyond the rows it writes (prefilter + bilinear).
LIFT_REACH = PREFILTER_RADIUS + 1
