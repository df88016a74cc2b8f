"""Colour: sRGB <-> CIELAB, CIEDE2000, and the colour lock.

CIELAB here is computed exactly (D65 white, sRGB transfer curve, float32), not with OpenCV's
fast path, which is off by up to 0.4 units in a*/b* (too much for a metric whose target is 0.8).
Gray images (C = 1) have L* only: a* = b* = 0.

Colour lock: the result keeps the input's colour.  Chroma (a*, b*) at the input's resolution comes
from the input, everything finer from the model, and lightness (L*) is left to `fidelity`.  For
upscales this is back-projection in a*b*: the a*b* residual between the input and the downscaled
result, smoothed a little (`LOCK_SIGMA`) so as not to copy the input's chroma noise, is spread
back with the smooth right inverse of the area downscale (`resample.lift`) and measured again
(two rounds, as CIELAB is not linear in the pixels that are averaged).  The model's own sharp
chroma edges stay where they are; only their local means move.  For same-size operations the
residual is low-passed (Gaussian, `SAME_SIZE_SIGMA` px, wider when the model removed chroma
noise: `same_size_sigma`) instead, so a denoiser's removal of chroma noise survives while colour
drift does not.
"""
from __future__ import annotations

import numpy as np

from . import _checks, bands, blur, resample

# sRGB primaries, linear RGB -> XYZ, and the D65 white.
_M = np.array([[0.4124564, 0.3575761, 0.1804375],
               [0.2126729, 0.7151522, 0.0721750],
               [0.0193339, 0.1191920, 0.9503041]])
_MINV = np.linalg.inv(_M)
_WHITE = np.array([0.95047, 1.0, 1.08883])
_TO_XYZN = (_M / _WHITE[:, None]).T.astype(np.float32)
_EPS = (6.0 / 29.0) ** 3
_KAPPA = 1.0 / (3.0 * (6.0 / 29.0) ** 2)

#: Rec.601 luma weights on gamma-encoded RGB: the brightness that grain and change maps key on.
LUMA = np.array([0.299, 0.587, 0.114], np.float32)

#: Same-size colour lock: Gaussian sigma (px) below which chroma comes from the model ...
SAME_SIZE_SIGMA = 2.0
#: ... widened (up to this) when the model removed chroma noise: see `same_size_sigma`.
SAME_SIZE_SIGMA_MAX = 16.0
#: Rows of the strips `same_size_sigma` measures a large image on (about 1 MP of them).
_PROBE_ROWS, _PROBE_PIXELS = 64, 1 << 20
#: Upscale colour lock: rounds of chroma back-projection.
LOCK_ROUNDS = 2


def luma(x: np.ndarray) -> np.ndarray:
    """HxW brightness (gamma-encoded) of an HxWx1 or HxWx3 image."""
    if x.shape[2] == 1:
        return np.array(x[..., 0], np.float32, copy=True)
    return (x[..., 0] * LUMA[0] + x[..., 1] * LUMA[1] + x[..., 2] * LUMA[2]).astype(np.float32)


def _to_linear(c: np.ndarray) -> np.ndarray:
    c = np.clip(c, 0.0, 1.0).astype(np.float32)
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4).astype(np.float32)


def _to_gamma(c: np.ndarray) -> np.ndarray:
    c = np.clip(c, 0.0, 1.0)
    return np.where(c <= 0.0031308, 12.92 * c, 1.055 * c ** (1 / 2.4) - 0.055).astype(np.float32)


def _f(t: np.ndarray) -> np.ndarray:
    return np.where(t > _EPS, np.cbrt(np.maximum(t, _EPS)), t * _KAPPA + 4.0 / 29.0).astype(np.float32)


def _finv(f: np.ndarray) -> np.ndarray:
    return np.where(f > 6.0 / 29.0, f ** 3, (f - 4.0 / 29.0) / _KAPPA).astype(np.float32)


#: Rows converted at a time: the conversions are per pixel, and their float temporaries (a dozen
#: per pixel) should not scale with a band.
CHUNK_ROWS = 128


def _chunked(fn, x: np.ndarray, channels: int) -> np.ndarray:
    out = np.empty(x.shape[:2] + (channels,), np.float32)
    for y in range(0, x.shape[0], CHUNK_ROWS):
        out[y: y + CHUNK_ROWS] = fn(x[y: y + CHUNK_ROWS])
    return out


def _srgb_to_lab(x: np.ndarray) -> np.ndarray:
    lin = _to_linear(x)
    if x.shape[2] == 1:
        lab = np.zeros(x.shape[:2] + (3,), np.float32)
        lab[..., 0] = 116.0 * _f(lin[..., 0]) - 16.0
        return lab
    xyz = lin @ _TO_XYZN                       # X/Xn, Y/Yn, Z/Zn
    fx, fy, fz = (_f(xyz[..., i]) for i in range(3))
    return np.stack([116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)], -1).astype(np.float32)


def _lab_to_srgb(lab: np.ndarray, channels: int) -> np.ndarray:
    fy = (lab[..., 0] + 16.0) / 116.0
    if channels == 1:
        return _to_gamma(_finv(fy))[..., None]
    fx = fy + lab[..., 1] / 500.0
    fz = fy - lab[..., 2] / 200.0
    xyz = np.stack([_finv(fx), _finv(fy), _finv(fz)], -1) * _WHITE.astype(np.float32)
    return _to_gamma(xyz @ _MINV.T.astype(np.float32))


def srgb_to_lab(x: np.ndarray) -> np.ndarray:
    """HxWx1 or HxWx3 sRGB in 0..1 -> HxWx3 CIELAB (L* 0..100)."""
    return _chunked(_srgb_to_lab, x, 3)


def lab_to_srgb(lab: np.ndarray, channels: int = 3) -> np.ndarray:
    """HxWx3 CIELAB -> sRGB in 0..1 (clipped; out-of-gamut colours are clipped per channel).
    ``channels=1`` returns the gray image with the same L*."""
    return _chunked(lambda c: _lab_to_srgb(c, channels), lab, channels)


def delta_e2000(lab1: np.ndarray, lab2: np.ndarray) -> np.ndarray:
    """Per-pixel CIEDE2000 (Sharma, Wu & Dalal 2005) between two ...x3 CIELAB arrays (float64)."""
    L1, a1, b1 = (np.asarray(lab1[..., i], np.float64) for i in range(3))
    L2, a2, b2 = (np.asarray(lab2[..., i], np.float64) for i in range(3))
    c1 = np.hypot(a1, b1)
    c2 = np.hypot(a2, b2)
    cm7 = ((c1 + c2) / 2.0) ** 7
    g = 0.5 * (1.0 - np.sqrt(cm7 / (cm7 + 25.0 ** 7)))
    a1p, a2p = a1 * (1.0 + g), a2 * (1.0 + g)
    c1p, c2p = np.hypot(a1p, b1), np.hypot(a2p, b2)
    h1p = np.degrees(np.arctan2(b1, a1p)) % 360.0
    h2p = np.degrees(np.arctan2(b2, a2p)) % 360.0
    dL = L2 - L1
    dC = c2p - c1p
    prod = c1p * c2p
    dh = h2p - h1p
    dh = np.where(dh > 180.0, dh - 360.0, np.where(dh < -180.0, dh + 360.0, dh))
    dh = np.where(prod == 0, 0.0, dh)
    dH = 2.0 * np.sqrt(prod) * np.sin(np.radians(dh / 2.0))
    Lm = (L1 + L2) / 2.0
    Cm = (c1p + c2p) / 2.0
    hs = h1p + h2p
    hm = np.where(np.abs(h1p - h2p) <= 180.0, hs / 2.0,
                  np.where(hs < 360.0, (hs + 360.0) / 2.0, (hs - 360.0) / 2.0))
    hm = np.where(prod == 0, hs, hm)
    t = (1.0 - 0.17 * np.cos(np.radians(hm - 30.0)) + 0.24 * np.cos(np.radians(2.0 * hm))
         + 0.32 * np.cos(np.radians(3.0 * hm + 6.0)) - 0.20 * np.cos(np.radians(4.0 * hm - 63.0)))
    d_theta = 30.0 * np.exp(-(((hm - 275.0) / 25.0) ** 2))
    cm7p = Cm ** 7
    rc = 2.0 * np.sqrt(cm7p / (cm7p + 25.0 ** 7))
    sl = 1.0 + 0.015 * (Lm - 50.0) ** 2 / np.sqrt(20.0 + (Lm - 50.0) ** 2)
    sc = 1.0 + 0.045 * Cm
    sh = 1.0 + 0.015 * Cm * t
    rt = -np.sin(np.radians(2.0 * d_theta)) * rc
    return np.sqrt((dL / sl) ** 2 + (dC / sc) ** 2 + (dH / sh) ** 2 + rt * (dC / sc) * (dH / sh))


def chroma_noise(src: np.ndarray) -> float:
    """Robust estimate of the a*b* noise sigma of an RGB image (CIELAB units, per pixel).

    The median absolute value of the a*b* high-pass (``x - gaussian(x, 1)``) over the whole
    image, scaled to white noise's sigma: chroma edges are sparse, so the median sees noise."""
    return _noise_sigma(srgb_to_lab(src)[..., 1:])


def _noise_sigma(ab: np.ndarray) -> float:
    hp = ab - blur.gaussian(ab, 1.0)
    k = blur.kernel(1.0).astype(np.float64)
    k2 = np.outer(k, k)
    r = len(k) // 2
    gain = 1.0 - 2.0 * k2[r, r] + float(np.sum(k2 * k2))      # var(hp) / var(white noise)
    return float(1.4826 * np.median(np.abs(hp)) / np.sqrt(gain))


#: Default chroma resolution of the upscale lock (Gaussian sigma, input px; 2 output px at x4):
#: close enough to the input's pixels to meet the colour target (mean a*b* distance <= 0.8 on
#: real photos), soft enough not to copy the input's pixel-level chroma noise exactly.
LOCK_SIGMA = 0.5
#: `lock_sigma`, for noisy sources: at least this, ...
LOCK_SIGMA_MIN = LOCK_SIGMA
#: ... at most this, ...
LOCK_SIGMA_MAX = 2.0
#: ... and wide enough that the source's chroma noise, averaged over the Gaussian, stays below
#: this many a*b* units (about one just-noticeable difference).
LOCK_NOISE_TARGET = 1.0


def lock_sigma(src: np.ndarray) -> float:
    """A chroma resolution (input px) for `lock` that adapts to the source's chroma noise.

    Following the input pixel for pixel brings its chroma noise (and JPEG's blocky chroma) back
    as coloured blotches; averaging the residual over a Gaussian of sigma ``s`` divides white
    noise by ``2 s sqrt(pi)``, so ``s`` grows with the measured noise.  Not the default: colourful
    fine texture reads as noise too, and then colour drift in it is corrected only coarsely
    (bench/bench_fidelity.py measures both)."""
    if src.shape[2] == 1:
        return LOCK_SIGMA_MIN
    s = chroma_noise(src) / (2.0 * np.sqrt(np.pi) * LOCK_NOISE_TARGET)
    return float(np.clip(s, LOCK_SIGMA_MIN, LOCK_SIGMA_MAX))


def same_size_sigma(src: np.ndarray, out: np.ndarray) -> float:
    """The chroma resolution (px) of the same-size lock for this pair.

    A denoiser or JPEG repair removes chroma noise (or blocky chroma): the a*b* residual
    ``src - out`` then holds that noise, and putting it back low-passed at only 2 px brings the
    noise back as coloured mottling (measured with FFDNet on real photos at noise sigma 25-50:
    2-3.6 dB lost).  So the Gaussian widens until the residual's noise, averaged over it, is under
    `LOCK_NOISE_TARGET` (one just-noticeable a*b* difference); colour drift is a slow change, so
    it is still corrected.  A model that removed no chroma noise keeps `SAME_SIZE_SIGMA`."""
    h, w = src.shape[:2]
    step = max(1, (h * w) // _PROBE_PIXELS)        # strips every `step` of them: ~1 MP measured
    rows = [slice(y, min(y + _PROBE_ROWS, h)) for y in range(0, h, _PROBE_ROWS)][::step]
    ab = np.concatenate([srgb_to_lab(src[r])[..., 1:] - srgb_to_lab(out[r])[..., 1:] for r in rows])
    s = _noise_sigma(ab) / (2.0 * np.sqrt(np.pi) * LOCK_NOISE_TARGET)
    return float(np.clip(s, SAME_SIZE_SIGMA, SAME_SIZE_SIGMA_MAX))


def _apply_delta(o: np.ndarray, lab0: np.ndarray, lab1: np.ndarray) -> np.ndarray:
    """``o`` moved by the colour change from ``lab0`` (its own Lab) to ``lab1``, applied as an RGB
    difference: where nothing is corrected the pixels come back bit for bit, not through a
    Lab round trip (which would shift 16-bit values by its float error)."""
    return np.clip(o + (lab_to_srgb(lab1) - lab_to_srgb(lab0)), 0.0, 1.0).astype(np.float32)


def lock(src: np.ndarray, out: np.ndarray, scale: int, *, sigma: float = LOCK_SIGMA,
         rows: int | None = None) -> np.ndarray:
    """The result keeps the input's colour: ``out`` with its a*b* pulled to ``src``'s at about
    ``src``'s resolution; L* and chroma finer than that stay the model's.

    ``sigma`` (input px, upscales only): the chroma residual is smoothed by this Gaussian before
    it is put back, so that colour drift is corrected without copying the source's chroma noise
    pixel for pixel (0 = exactly; ``lock_sigma(src)`` adapts it to the measured noise).  Gray
    images come back unchanged."""
    _checks.pair(src, out, scale)
    if src.shape[2] == 1:
        return np.clip(out, 0.0, 1.0).astype(np.float32)
    h = src.shape[0]
    if scale == 1:
        s1 = same_size_sigma(src, out)
        reach = blur.radius(s1)

        def same(b: bands.Band) -> np.ndarray:
            # Low-passed in RGB, then compared in CIELAB: noise averages out in the pixels it was
            # added to, while CIELAB's curve would turn it into a colour bias (on a noisy photo,
            # ~1 a*b* unit, still there at 32 px; with FFDNet at noise 25 it cost 1.4 dB).
            o = b.out(out)
            lo = srgb_to_lab(o)
            fixed = lo.copy()
            fixed[..., 1:] += (srgb_to_lab(blur.gaussian(b.src(src), s1))[..., 1:]
                               - srgb_to_lab(blur.gaussian(o, s1))[..., 1:])
            return _apply_delta(o, lo, fixed)

        return bands.run(same, h, 1, reach, out.shape, rows=rows)

    reach = LOCK_ROUNDS * (resample.LIFT_REACH + blur.radius(sigma)) + 1

    def up_band(b: bands.Band) -> np.ndarray:
        s_ = b.src(src)
        o = b.out(out)
        lab0 = srgb_to_lab(o)
        lab = lab0.copy()
        target = srgb_to_lab(s_)[..., 1:]
        x = o
        for _ in range(LOCK_ROUNDS):
            r = target - srgb_to_lab(resample.down(x, scale))[..., 1:]
            if sigma > 0:
                r = blur.gaussian(r, sigma)
            lab[..., 1:] += resample.lift(r, scale)
            x = _apply_delta(o, lab0, lab)
        return x

    return bands.run(up_band, h, scale, reach, out.shape, rows=rows)
