"""Denoise: a denoising model over the region.  ``noise-level`` 0 means automatic: the noise is
measured on the image first (``estimate_sigma``) and that level is given to the model and reported
in the result info (the layer name shows it)."""
from __future__ import annotations

import numpy as np

from ..jobs import JobOutput
from ..pixels import to_unit_float
from .context import OpContext
from .image_model import run_model

#: Immerkaer's noise operator: the difference of two Laplacians; its response to a smooth image
#: is ~0, to white noise of sigma s it has mean absolute value s * 6 * sqrt(2/pi).
_KERNEL = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float32)
#: Pixels are measured where the image is flat: below this percentile of the gradient magnitude.
_FLAT_PERCENTILE = 50
_MAX_SIDE = 1024


def estimate_sigma(image: np.ndarray) -> float:
    """Standard deviation of additive noise, in 8-bit levels, of an HxWxC image (any dtype).

    Immerkaer's fast estimator (the mean absolute response of a noise operator that cancels
    smooth image content), restricted to the flatter half of the image so texture and edges do
    not read as noise, and, in a second pass, to levels far enough from black and white that
    clipping does not hide noise.  Channels are measured separately and their median taken.
    Large images are measured on a grid of tiles (noise is stationary; the cost stays fixed)."""
    a = to_unit_float(image) if image.dtype != np.float32 else np.clip(image, 0, 1)
    if a.ndim == 2:
        a = a[:, :, None]
    a = _sample(a)
    if min(a.shape[:2]) < 8:
        return 0.0
    sigma = 0.0
    for margin in (0.06, None):
        # second pass: away from black and white by twice the first estimate, where clipping
        # no longer eats into the noise
        lo = margin if margin is not None else min(0.3, max(0.06, 2.0 * sigma))
        sigma = float(np.median([_channel_sigma(np.ascontiguousarray(a[:, :, c]), lo)
                                 for c in range(a.shape[2])]))
    return sigma * 255.0


def _channel_sigma(ch: np.ndarray, margin: float) -> float:
    import cv2

    resp = np.abs(cv2.filter2D(ch, -1, _KERNEL, borderType=cv2.BORDER_REFLECT))[1:-1, 1:-1]
    # flatness from a smoothed copy: judged on the noisy pixels themselves, the selection would
    # favour places where the noise happens to be low and read too little
    smooth = cv2.GaussianBlur(ch, (0, 0), 2.0)
    gx = cv2.Sobel(smooth, cv2.CV_32F, 1, 0, ksize=3)[1:-1, 1:-1]
    gy = cv2.Sobel(smooth, cv2.CV_32F, 0, 1, ksize=3)[1:-1, 1:-1]
    grad = np.hypot(gx, gy)
    level = smooth[1:-1, 1:-1]
    usable = (level > margin) & (level < 1.0 - margin)
    if usable.sum() < 256:
        usable = np.ones_like(usable)
    flat = usable & (grad <= np.percentile(grad[usable], _FLAT_PERCENTILE))
    return float(resp[flat].mean()) * np.sqrt(np.pi / 2.0) / 6.0


def _sample(a: np.ndarray) -> np.ndarray:
    h, w = a.shape[:2]
    if max(h, w) <= _MAX_SIDE:
        return a
    # tiles of 128 px on a grid: a fixed amount of work for any image size
    t, n = 128, 8
    ys = np.linspace(0, h - t, n).astype(int) if h > t else [0]
    xs = np.linspace(0, w - t, n).astype(int) if w > t else [0]
    rows = [np.concatenate([a[y:y + t, x:x + t] for x in xs], axis=1) for y in ys]
    return np.concatenate(rows, axis=0)


def run(ctx: OpContext) -> JobOutput:
    options = dict(ctx.options)
    level = float(options.get("noise-level") or 0.0)
    measured = None
    if level <= 0:
        ctx.progress(0.0, "measuring the noise")
        measured = estimate_sigma(ctx.crop())
        level = float(min(75.0, max(1.0, measured)))
        options["noise-level"] = level
    out = run_model(ctx, scale=1, options=options)
    out.info["noise_level"] = round(level, 1)
    if measured is not None:
        out.info["noise_level_estimated"] = True
    return out
