"""Colourisation around a model: what the colouriser sees, and how its colour is put on the photo.

The colouriser (DDColor and the like) runs at its own small size on the photo's luminance and
predicts colour.  Only the colour is taken from it: the result keeps the source's CIELAB L*
exactly, at full resolution, and gets a*b* from the prediction, upsampled from the model's size
and scaled by `saturation`.  Where the source's lightness and the predicted hue together fall
outside sRGB, the chroma is reduced (never the lightness) until the colour fits, so L* survives
the conversion back to sRGB.

Colour science: sRGB (IEC 61966-2-1) transfer curve and primaries, D65 white, CIE 1976 L*a*b*.
All conversions are vectorised over (..., 3) arrays and run in float64 on bands of rows, so
memory stays bounded on large photos."""
from __future__ import annotations

import cv2
import numpy as np

from ai_enhance.errors import EnhanceError
from ai_enhance_client.protocol import ErrorKind

# linear sRGB -> CIE XYZ (D65)
RGB_TO_XYZ = np.array([[0.4124564, 0.3575761, 0.1804375],
                       [0.2126729, 0.7151522, 0.0721750],
                       [0.0193339, 0.1191920, 0.9503041]])
XYZ_TO_RGB = np.linalg.inv(RGB_TO_XYZ)
WHITE = RGB_TO_XYZ.sum(axis=1)          # XYZ of RGB (1, 1, 1): the D65 white of sRGB
EPS = (6 / 29) ** 3
BAND_ROWS = 256
GAMUT_STEPS = 16                        # bisection steps on the chroma factor: 2**-16 precision


def srgb_to_linear(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, np.float64)
    return np.where(v <= 0.04045, v / 12.92, ((np.maximum(v, 0.04045) + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(c: np.ndarray) -> np.ndarray:
    c = np.asarray(c, np.float64)
    return np.where(c <= 0.0031308, c * 12.92, 1.055 * np.maximum(c, 0.0031308) ** (1 / 2.4) - 0.055)


def _f(t: np.ndarray) -> np.ndarray:
    return np.where(t > EPS, np.cbrt(np.maximum(t, EPS)), t / (3 * (6 / 29) ** 2) + 4 / 29)


def _finv(f: np.ndarray) -> np.ndarray:
    lin = 3 * (6 / 29) ** 2 * (f - 4 / 29)
    return np.where(f > 6 / 29, f * f * f, lin)


def y_to_lstar(y: np.ndarray) -> np.ndarray:
    return 116.0 * _f(np.asarray(y, np.float64)) - 16.0


def srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """sRGB (..., 3) in 0..1 -> CIELAB (..., 3) (L* 0..100)."""
    xyz = srgb_to_linear(rgb) @ RGB_TO_XYZ.T / WHITE
    fx, fy, fz = _f(xyz[..., 0]), _f(xyz[..., 1]), _f(xyz[..., 2])
    return np.stack([116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)], axis=-1)


def _lab_to_linear(lab: np.ndarray) -> np.ndarray:
    fy = (lab[..., 0] + 16.0) / 116.0
    f = np.stack([fy + lab[..., 1] / 500.0, fy, fy - lab[..., 2] / 200.0], axis=-1)
    return (_finv(f) * WHITE) @ XYZ_TO_RGB.T


def lab_to_srgb(lab: np.ndarray) -> np.ndarray:
    """CIELAB (..., 3) -> sRGB (..., 3), clipped to 0..1 (use fit_chroma first to keep L*)."""
    return np.clip(linear_to_srgb(_lab_to_linear(lab)), 0.0, 1.0)


def fit_chroma(lab: np.ndarray) -> np.ndarray:
    """The same L* and hue with a*b* scaled down, per pixel, just enough for the colour to fit in
    sRGB (a gray of any L* in 0..100 always fits)."""
    lin = _lab_to_linear(lab)
    tol = 1e-9
    out = ((lin < -tol) | (lin > 1 + tol)).any(axis=-1)
    if not out.any():
        return lab
    sub = lab[out]
    # with L* fixed, linear RGB = cx*X(k) + const + cz*Z(k): only X and Z move with the factor k
    fy = (sub[:, 0] + 16.0) / 116.0
    da, db = sub[:, 1] / 500.0, sub[:, 2] / 200.0
    const = (_finv(fy) * WHITE[1])[:, None] * XYZ_TO_RGB[:, 1]
    cx, cz = XYZ_TO_RGB[:, 0] * WHITE[0], XYZ_TO_RGB[:, 2] * WHITE[2]
    lo = np.zeros(len(sub))
    step = 0.5
    for _ in range(GAMUT_STEPS):
        k = lo + step
        x = _finv(fy + k * da)[:, None]
        z = _finv(fy - k * db)[:, None]
        l2 = x * cx + z * cz + const
        ok = ((l2 >= -tol) & (l2 <= 1 + tol)).all(axis=-1)
        lo = np.where(ok, k, lo)
        step /= 2
    res = lab.copy()
    res[out, 1:] = sub[:, 1:] * lo[:, None]
    return res


def _rgb_or_gray(src: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray | None]:
    """(colour channels HxWx1|3, alpha HxW or None) of a float photo."""
    a = np.asarray(src)
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3 or a.shape[2] not in (1, 2, 3, 4) or min(a.shape[:2]) < 1:
        raise EnhanceError(ErrorKind.BAD_REQUEST, f"{what} has shape {a.shape}; expected HxW or HxWxC with C 1..4",
                           "pass a gray or RGB(A) image")
    if not np.issubdtype(a.dtype, np.floating):
        raise EnhanceError(ErrorKind.BAD_REQUEST, f"{what} has {a.dtype} samples; expected float 0..1",
                           "convert the image to float32 in 0..1 first")
    c = a.shape[2]
    colour = a[:, :, : (1 if c <= 2 else 3)]
    alpha = a[:, :, -1] if c in (2, 4) else None
    return colour, alpha


def _luminance_y(colour: np.ndarray) -> np.ndarray:
    """Relative luminance Y (linear) of HxWx1|3 sRGB values, float64."""
    lin = srgb_to_linear(np.clip(colour, 0.0, 1.0))
    if lin.shape[2] == 1:
        return lin[:, :, 0]
    return lin @ RGB_TO_XYZ[1]


def luminance_input(src: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """The gray image (float32 HxWx3 RGB, 0..1) a colouriser should see: the source's luminance
    (as the achromatic sRGB colour of the same L*) at the model's size: `size` px square, or
    (height, width).  Resampled in linear light with area averaging."""
    colour, _ = _rgb_or_gray(src, "the photo")
    h, w = (size, size) if isinstance(size, (int, np.integer)) else (int(size[0]), int(size[1]))
    if h < 1 or w < 1:
        raise EnhanceError(ErrorKind.BAD_REQUEST, f"colouriser input size {h}x{w} is empty", "pass a positive size")
    y = np.empty(colour.shape[:2], np.float32)
    for r0 in range(0, y.shape[0], BAND_ROWS):
        y[r0: r0 + BAND_ROWS] = _luminance_y(colour[r0: r0 + BAND_ROWS])
    interp = cv2.INTER_AREA if h * w <= y.size else cv2.INTER_CUBIC
    small = np.clip(cv2.resize(y, (w, h), interpolation=interp), 0.0, 1.0)
    gray = linear_to_srgb(small).astype(np.float32)
    return np.repeat(gray[:, :, None], 3, axis=2)


def combine_color(src: np.ndarray, pred_rgb: np.ndarray, *, saturation: float = 1.0) -> np.ndarray:
    """Full-resolution colour photo: the source's L* exactly, a*b* from the colouriser's output
    (`pred_rgb`, RGB 0..1 at the model's size, any HxW) upsampled to the source's size and scaled
    by `saturation` (0 = gray, 1 = as predicted, up to 2).  src: float HxWxC, C = 1 (gray) or 3
    (RGB), or 2/4 with an alpha channel that is passed through.  Returns float32 HxWx3 (x4 with
    alpha)."""
    colour, alpha = _rgb_or_gray(src, "the photo")
    pred, _ = _rgb_or_gray(pred_rgb, "the colouriser's output")
    if pred.shape[2] != 3:
        raise EnhanceError(ErrorKind.BAD_REQUEST, f"the colouriser's output has {pred.shape[2]} channel(s)",
                           "the colouriser must return RGB")
    if not np.isfinite(saturation) or not 0.0 <= float(saturation) <= 2.0:
        raise EnhanceError(ErrorKind.BAD_REQUEST, f"saturation {saturation} is outside 0..2",
                           "use 0 (gray) to 2 (twice the predicted colour); 1 is as predicted")
    h, w = colour.shape[:2]
    ab = srgb_to_lab(np.clip(np.nan_to_num(pred), 0.0, 1.0))[:, :, 1:].astype(np.float32)
    ph, pw = ab.shape[:2]
    interp = cv2.INTER_AREA if ph * pw > h * w else cv2.INTER_LINEAR
    ab = cv2.resize(ab, (w, h), interpolation=interp) if (ph, pw) != (h, w) else ab
    if ab.ndim == 2:   # cv2 drops a trailing axis of 1; never for 2 channels, but be safe
        ab = ab[:, :, None]
    out = np.empty((h, w, 3 if alpha is None else 4), np.float32)
    for r0 in range(0, h, BAND_ROWS):
        r1 = min(r0 + BAND_ROWS, h)
        lstar = y_to_lstar(_luminance_y(colour[r0:r1]))
        lab = np.concatenate([lstar[:, :, None], ab[r0:r1].astype(np.float64) * float(saturation)], axis=2)
        rgb = linear_to_srgb(np.clip(_lab_to_linear(fit_chroma(lab)), 0.0, 1.0))
        out[r0:r1, :, :3] = rgb
    if alpha is not None:
        out[:, :, 3] = alpha
    return out
