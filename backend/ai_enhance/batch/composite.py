"""Layer compositing as GIMP 3 does it, so that a recipe applied outside GIMP gives the picture the
GIMP layers show (checked against GIMP's own flattening: tests/e2e/test_gimp_recipe.py).

GIMP 3 composites every layer mode in float, straight (not premultiplied) alpha, and each mode has
a default blend space, composite space and composite mode (app/operations/layer-modes in GIMP's
source, and measured in GIMP 3.0 and 3.2):

=============  ===============  ===============  =====================
mode           blend space      composite space  composite mode
=============  ===============  ===============  =====================
Normal         (none)           linear RGB       union (source-over)
LCh Color      CIE LAB (D50)    linear RGB       clip to backdrop
Grain merge    perceptual RGB   linear RGB       clip to backdrop
=============  ===============  ===============  =====================

The layer's effective alpha is its own alpha x opacity x mask (the mask is linear, 0..1).  Images
are gamma-encoded sRGB ("perceptual", like GIMP's 8- and 16-bit non-linear precisions); "linear"
means decoded with the sRGB curve.  Gray pixels are composited as RGB (like GIMP's projection)
and turned back into gray with the sRGB luminance weights.

Pure numpy (OpenCV for resampling only).
"""
from __future__ import annotations

import numpy as np

from ai_enhance_client.ops import LayerMode

from ..pixels import PEAK

#: sRGB (D65) -> XYZ adapted to D50 with Bradford, as babl (GIMP's pixel conversion library) uses.
_RGB_TO_XYZ_D50 = np.array([[0.436074716, 0.385064901, 0.143080383],
                            [0.222504478, 0.716878622, 0.060616900],
                            [0.013932173, 0.097104550, 0.714173277]], np.float64)
_XYZ_D50_TO_RGB = np.linalg.inv(_RGB_TO_XYZ_D50)
_D50 = np.array([0.96420288, 1.0, 0.82490540], np.float64)
#: Luminance of linear sRGB (the D50 matrix's Y row): RGB -> gray.
LUMINANCE = _RGB_TO_XYZ_D50[1]

_EPS = 216.0 / 24389.0
_KAPPA = 24389.0 / 27.0


class CompositeError(ValueError):
    """A layer mode that cannot be reproduced (one line with the fix)."""


# --------------------------------------------------------------------------- colour spaces

def srgb_to_linear(v: np.ndarray) -> np.ndarray:
    """The sRGB curve, extended linearly below 0 (as babl does for out-of-range values)."""
    v = np.asarray(v, np.float32)
    return np.where(v > 0.04045, np.power(np.maximum((v + 0.055) / 1.055, 0.0), 2.4), v / 12.92).astype(np.float32)


def linear_to_srgb(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, np.float32)
    return np.where(v > 0.0031308, 1.055 * np.power(np.maximum(v, 0.0), 1.0 / 2.4) - 0.055,
                    v * 12.92).astype(np.float32)


def _lab_f(t):
    return np.where(t > _EPS, np.cbrt(t), (_KAPPA * t + 16.0) / 116.0)


def _lab_finv(f):
    f3 = f ** 3
    return np.where(f3 > _EPS, f3, (116.0 * f - 16.0) / _KAPPA)


def linear_rgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    xyz = (rgb.astype(np.float64) @ _RGB_TO_XYZ_D50.T) / _D50
    f = _lab_f(xyz)
    L = 116.0 * f[..., 1] - 16.0
    a = 500.0 * (f[..., 0] - f[..., 1])
    b = 200.0 * (f[..., 1] - f[..., 2])
    return np.stack([L, a, b], axis=-1)


def lab_to_linear_rgb(lab: np.ndarray) -> np.ndarray:
    fy = (lab[..., 0] + 16.0) / 116.0
    fx = fy + lab[..., 1] / 500.0
    fz = fy - lab[..., 2] / 200.0
    xyz = np.stack([_lab_finv(fx), _lab_finv(fy), _lab_finv(fz)], axis=-1) * _D50
    return (xyz @ _XYZ_D50_TO_RGB.T).astype(np.float32)


# --------------------------------------------------------------------------- pixels <-> linear RGBA

def to_linear_rgba(pixels: np.ndarray) -> np.ndarray:
    """HWC u8/u16/f32 gamma-encoded gray / gray+alpha / RGB / RGBA -> float32 linear RGBA."""
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    peak = PEAK[np.dtype(pixels.dtype)]
    f = pixels.astype(np.float32) * np.float32(1.0 / peak)
    if peak == 1.0:
        f = np.nan_to_num(f, nan=0.0)
    c = f.shape[2]
    color = f[:, :, :1].repeat(3, axis=2) if c in (1, 2) else f[:, :, :3]
    alpha = f[:, :, c - 1:] if c in (2, 4) else np.ones(f.shape[:2] + (1,), np.float32)
    return np.concatenate([srgb_to_linear(color), np.clip(alpha, 0.0, 1.0)], axis=2)


def from_linear_rgba(rgba: np.ndarray, dtype, channels: int) -> np.ndarray:
    """float32 linear RGBA -> HWC ``dtype`` with ``channels`` (1..4), gamma-encoded, rounded."""
    dtype = np.dtype(dtype)
    lin = rgba[:, :, :3]
    if channels in (1, 2):
        lin = (lin @ LUMINANCE.astype(np.float32))[:, :, None]
    color = linear_to_srgb(lin)
    parts = [color] + ([rgba[:, :, 3:4]] if channels in (2, 4) else [])
    out = np.concatenate(parts, axis=2) if len(parts) > 1 else color
    peak = PEAK[dtype]
    if peak == 1.0:
        return np.clip(out, 0.0, 1.0).astype(np.float32)
    return np.clip(np.floor(out * np.float32(peak) + np.float32(0.5)), 0, peak).astype(dtype)


# --------------------------------------------------------------------------- one layer over a backdrop

def composite(backdrop: np.ndarray, layer: np.ndarray, *, opacity: float = 1.0,
              mask: np.ndarray | None = None, mode: LayerMode | str = LayerMode.NORMAL) -> np.ndarray:
    """``layer`` (linear RGBA float32) over ``backdrop`` (same size) at ``opacity`` (0..1) through
    ``mask`` (HxW, u8 or float 0..1; None = all shown) in ``mode``: the new backdrop."""
    mode = LayerMode(mode)
    if layer.shape != backdrop.shape:
        raise CompositeError(f"layer {layer.shape[1]}x{layer.shape[0]} does not cover the image "
                             f"{backdrop.shape[1]}x{backdrop.shape[0]}")
    la = layer[:, :, 3] * np.float32(opacity)
    if mask is not None:
        m = mask.astype(np.float32) / (255.0 if mask.dtype == np.uint8 else 1.0)
        la = la * (m[:, :, 0] if m.ndim == 3 else m)
    ia = backdrop[:, :, 3]
    if mode is LayerMode.NORMAL:
        return _union(backdrop, layer[:, :, :3], la, ia)
    if mode is LayerMode.GRAIN_MERGE:
        comp = srgb_to_linear(linear_to_srgb(backdrop[:, :, :3]) + linear_to_srgb(layer[:, :, :3]) - 0.5)
    elif mode is LayerMode.LCH_COLOR:
        lab_in = linear_rgb_to_lab(backdrop[:, :, :3])
        lab_layer = linear_rgb_to_lab(layer[:, :, :3])
        comp = lab_to_linear_rgb(np.stack([lab_in[..., 0], lab_layer[..., 1], lab_layer[..., 2]], axis=-1))
    else:  # pragma: no cover - every LayerMode member is handled above
        raise CompositeError(f"layer mode {mode.value} cannot be reproduced outside GIMP")
    return _clip_to_backdrop(backdrop, comp, la, ia)


def _union(backdrop, color, la, ia):
    """Source-over with straight alpha (GIMP's Normal)."""
    na = la + (1.0 - la) * ia
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(na > 0, la / np.where(na > 0, na, 1.0), 0.0).astype(np.float32)
    ratio = np.where(ia == 0, np.where(la > 0, 1.0, 0.0), ratio).astype(np.float32)
    out = np.empty_like(backdrop)
    out[:, :, :3] = backdrop[:, :, :3] + ratio[:, :, None] * (color - backdrop[:, :, :3])
    out[:, :, 3] = na
    return out


def _clip_to_backdrop(backdrop, comp, la, ia):
    """The blend result mixed in at the layer's alpha where the backdrop has any; alpha stays."""
    la = np.where(ia > 0, la, 0.0).astype(np.float32)[:, :, None]
    out = np.empty_like(backdrop)
    out[:, :, :3] = comp * la + backdrop[:, :, :3] * (1.0 - la)
    out[:, :, 3] = ia
    return out


# --------------------------------------------------------------------------- resampling

def resample(rgba: np.ndarray, scale: int) -> np.ndarray:
    """A linear RGBA plane ``scale`` times larger (premultiplied, so no dark fringes at alpha
    edges).  GIMP uses NoHalo when a filter enlarges the image; this cubic filter differs from it
    by a few levels along sharp edges only (under a step shown at full strength, not at all)."""
    import cv2

    if scale == 1:
        return rgba
    h, w = rgba.shape[:2]
    pre = rgba.copy()
    pre[:, :, :3] *= pre[:, :, 3:4]
    big = cv2.resize(pre, (w * scale, h * scale), interpolation=cv2.INTER_CUBIC)
    a = big[:, :, 3:4]      # divided before clipping: the filter's overshoot cancels out
    with np.errstate(divide="ignore", invalid="ignore"):
        big[:, :, :3] = np.where(a > 1e-6, big[:, :, :3] / np.where(a > 1e-6, a, 1.0), 0.0)
    big[:, :, 3:4] = np.clip(a, 0.0, 1.0)
    return big


def resample_pixels(pixels: np.ndarray, scale: int) -> np.ndarray:
    """Native pixels (any dtype) ``scale`` times larger, through linear light."""
    if scale == 1:
        return pixels
    c = pixels.shape[2] if pixels.ndim == 3 else 1
    return from_linear_rgba(resample(to_linear_rgba(pixels), scale), pixels.dtype, c)
