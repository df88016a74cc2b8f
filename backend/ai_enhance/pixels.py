"""Pixel conversions shared by every operation: one path from the wire's u8 / u16 / f32 HWC arrays
to float32 in [0, 1] and back, alpha split and merge, gray <-> RGB.

A leaf module (numpy, and OpenCV lazily for resizing).  All maths is float32 in [0, 1]: no hidden
8-bit round trip; float input outside 0..1 is clipped for the models.
"""
from __future__ import annotations

import numpy as np

from ai_enhance_client.protocol import DType, ErrorKind

from .errors import EnhanceError

#: Rec. 709 luma, used to turn a model's RGB output back into a gray layer.
LUMA = np.array([0.2126, 0.7152, 0.0722], np.float32)

#: Full-scale value of each pixel type (float: 1.0).
PEAK = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0, np.dtype(np.float32): 1.0}

#: numpy dtype <-> wire dtype
NUMPY_OF = {DType.U8: np.dtype(np.uint8), DType.U16: np.dtype("<u2"), DType.F32: np.dtype("<f4")}
WIRE_OF = {v: k for k, v in NUMPY_OF.items()}


def check_image(image, what: str = "image") -> np.ndarray:
    """An HxWxC array with 1..4 channels of u8/u16/f32 (HxW becomes HxWx1); BAD_REQUEST otherwise."""
    if not isinstance(image, np.ndarray):
        raise EnhanceError(ErrorKind.BAD_REQUEST, f"{what} must be a numpy array")
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or not 1 <= image.shape[2] <= 4 or image.shape[0] < 1 or image.shape[1] < 1:
        raise EnhanceError(ErrorKind.BAD_REQUEST, f"{what} shape {image.shape} is not HxWxC with 1..4 channels")
    if image.dtype not in PEAK:
        raise EnhanceError(ErrorKind.BAD_REQUEST, f"pixel type {image.dtype} is not supported",
                           "send u8, u16 or f32 pixels")
    return image


def to_unit_float(a: np.ndarray) -> np.ndarray:
    """uint8 / uint16 / float32 -> float32 in [0, 1] (float: NaN -> 0, clipped)."""
    peak = PEAK.get(a.dtype)
    if peak is None:
        raise EnhanceError(ErrorKind.BAD_REQUEST, f"pixel type {a.dtype} is not supported",
                           "send u8, u16 or f32 pixels")
    if peak == 1.0:
        return np.clip(np.nan_to_num(a.astype(np.float32, copy=False), nan=0.0), 0.0, 1.0)
    return a.astype(np.float32) * np.float32(1.0 / peak)


def from_unit_float(a: np.ndarray, dtype) -> np.ndarray:
    """float in [0, 1] -> ``dtype`` (rounded for integers)."""
    dtype = np.dtype(dtype)
    peak = PEAK[dtype]
    if peak == 1.0:
        return np.clip(a, 0.0, 1.0).astype(np.float32, copy=False)
    return np.clip(np.rint(a * np.float32(peak)), 0, peak).astype(dtype)


def split_alpha(image: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """(colour HWC with 1 or 3 channels, alpha HW or None) -- views, no copies."""
    c = image.shape[2]
    if c in (2, 4):
        return image[:, :, : c - 1], image[:, :, c - 1]
    return image, None


def merge_alpha(color: np.ndarray, alpha: np.ndarray | None) -> np.ndarray:
    """Colour HWC plus alpha HW (same size and dtype) -> one HWC array; colour as is without alpha."""
    if alpha is None:
        return color
    full = np.empty((color.shape[0], color.shape[1], color.shape[2] + 1), color.dtype)
    full[:, :, :-1] = color
    full[:, :, -1] = alpha.astype(color.dtype, copy=False)
    return full


def convert_channels(a: np.ndarray, channels: int) -> np.ndarray:
    """HWC float between gray (1) and RGB (3): gray -> RGB repeats, RGB -> gray is Rec.709 luma."""
    c = a.shape[2]
    if c == channels:
        return a
    if c == 1 and channels == 3:
        return np.repeat(a, 3, axis=2)
    if c == 3 and channels == 1:
        return (a @ LUMA)[:, :, None]
    raise EnhanceError(ErrorKind.UNSUPPORTED, f"cannot convert {c}-channel pixels to {channels} channels",
                       "this model expects a different number of channels than gray or RGB")


def to_rgb01(region: np.ndarray) -> np.ndarray:
    """Native-dtype colour pixels (1 or 3 channels) -> float32 RGB in [0, 1]."""
    return convert_channels(to_unit_float(region), 3)


def resize_alpha(alpha: np.ndarray, roi: tuple[int, int, int, int], scale: int) -> np.ndarray:
    """The roi of an alpha plane at ``scale`` (bilinear, from 2 px of context so the roi's
    edge matches a full-image resize); native dtype, float clipped to 0..1."""
    import cv2

    x, y, w, h = roi
    if scale == 1:
        return alpha[y: y + h, x: x + w]
    H, W = alpha.shape
    c = 2
    x0, y0, x1, y1 = max(0, x - c), max(0, y - c), min(W, x + w + c), min(H, y + h + c)
    a = alpha[y0:y1, x0:x1]
    if a.dtype == np.float32:
        a = np.clip(np.nan_to_num(a, nan=0.0), 0.0, 1.0)
    r = cv2.resize(np.ascontiguousarray(a), ((x1 - x0) * scale, (y1 - y0) * scale),
                   interpolation=cv2.INTER_LINEAR)
    oy, ox = (y - y0) * scale, (x - x0) * scale
    r = r[oy: oy + h * scale, ox: ox + w * scale]
    return np.clip(r, 0.0, 1.0) if r.dtype == np.float32 else r


def resize(img: np.ndarray, w: int, h: int, interpolation: int | None = None) -> np.ndarray:
    """OpenCV resize that keeps HxWxC (OpenCV drops a single channel axis); Lanczos by default."""
    import cv2

    out = cv2.resize(np.ascontiguousarray(img), (w, h),
                     interpolation=cv2.INTER_LANCZOS4 if interpolation is None else interpolation)
    if out.ndim == 2:
        out = out[:, :, None]
    return out


def check_roi(roi, h: int, w: int) -> tuple[int, int, int, int]:
    """(x, y, w, h) of a request's roi inside an h x w image (the whole image for None)."""
    if roi is None:
        return 0, 0, w, h
    try:
        x, y, rw, rh = (int(v) for v in roi)
    except (TypeError, ValueError):
        raise EnhanceError(ErrorKind.BAD_REQUEST, f"roi {roi!r} must be [x, y, width, height]") from None
    if rw < 1 or rh < 1 or x < 0 or y < 0 or x + rw > w or y + rh > h:
        raise EnhanceError(ErrorKind.BAD_REQUEST,
                           f"roi {[x, y, rw, rh]} is not inside the {w}x{h} image",
                           "the selection must lie inside the layer")
    return x, y, rw, rh


def grain_merge(base: np.ndarray, layer: np.ndarray, opacity: float) -> np.ndarray:
    """``base`` with ``layer`` on top in GIMP's Grain merge mode at ``opacity`` (0..1), as GIMP
    shows it for a small perturbation: ``base + opacity * (layer - 0.5)`` on the gamma-encoded
    values the plug-in exchanges; same dtype and channels as ``base`` (alpha, if any, from base)."""
    b, a = split_alpha(base)
    layer_color, _ = split_alpha(layer)
    mixed = to_unit_float(b) + np.float32(opacity) * (to_unit_float(layer_color) - np.float32(0.5))
    return merge_alpha(from_unit_float(mixed, base.dtype), a)
