"""Grain: measure the source's noise/grain and synthesise matching grain at the output's size.

Measuring (`measure`)
---------------------
The grain is what a high-pass (``x - gaussian(x, HP_SIGMA)``) leaves in *flat* parts of the image.
The image is cut into blocks; each block gets its brightness (the low-passed luma) and the
variance of its high-passed luma.  Blocks that show structure are dropped: clipped pixels (noise
cannot show there), an oriented pattern (structure-tensor coherence), heavy tails (kurtosis), or
as much energy in the next band down as in the high-pass (texture has a 1/f spectrum, grain does
not).  Texture and edges only ever *add* variance, so within each brightness bin a low percentile
of what is left (`QUANTILE`) estimates the grain's variance.  The percentile of pure grain is not
its variance, the high-pass eats part of a coarse grain and the rejection trims the tail; all of
that is removed by *calibration*: the same statistics computed on synthetic grain of known level
and size, made exactly as `synthesize` makes it (`calibrate`, stored in `_STORED`).  The level
curve is then made plausible (`_smooth_levels`: a bin far above the brightness trend is texture)
and capped at `MAX_LEVEL`.

Grain size is the Gaussian sigma (px) that, applied to white noise, gives the grain's spatial
correlation: measured from the lag-1 and lag-2 autocorrelation of the high-passed luma in the
flattest blocks and inverted through the same calibration.  Channels: the covariance of the
high-passed channels in the flat blocks, normalised to unit luma variance, tells monochrome film
grain (channels move together) from sensor chroma noise (they do not).

Synthesising (`synthesize`)
---------------------------
White noise from a counter-based stream (per 16-row block of the target, seeded from the image's
content: `seed_for`), so it is deterministic and independent of how the work is cut into bands;
Gaussian-filtered to the grain size and renormalised to unit variance; mixed across channels to
the measured covariance; scaled per pixel by the level the profile gives for that pixel's
brightness.  `top_up` gives the profile of the grain still missing from a result that already
has some (fidelity brings part of the source's noise back).

Which scale is matched (`Match`)
--------------------------------
`Match.OUTPUT_PIXEL` (default): the result's noise per *output* pixel equals the source's per
*input* pixel, and the grain is as many output pixels wide as it was input pixels.  Viewed at
100 % the upscaled photo has the same grain the original had at 100 %: the look of a photo taken
at the higher resolution rather than of an enlarged noisy one.  Downscaled back to the input's
size this grain averages away (roughly by the scale factor for fine grain).
`Match.INPUT_SIZE`: the grain is made at the input's size and lifted to the output
(`resample.lift`), so the result downscaled back to the input's size has exactly the source's
grain; at 100 % it shows as soft blobs ``scale`` pixels wide, i.e. an enlargement of the noise.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from enum import Enum
from functools import lru_cache

import numpy as np

from . import _checks, bands, blur, resample
from .color import LUMA, luma

#: High-pass that isolates grain from image structure (Gaussian sigma, px).
HP_SIGMA = 2.5
#: The next band down (between HP_SIGMA and this): natural texture has about as much energy
#: there as in the high-pass (a 1/f spectrum); grain, much less.
MID_SIGMA = 5.0
#: Percentile of the block variances that estimates the grain's (robust to texture).
QUANTILE = 10.0
#: Brightness bins of the profile.
BINS = 8
#: Fewest blocks for a bin to have its own level (others are interpolated).
MIN_BLOCKS = 8
#: Grain sizes the calibration covers (Gaussian sigma, px); measured sizes are clamped to them.
SIZES = (0.0, 0.45, 0.6, 0.8, 1.0, 1.25, 1.5, 1.8, 2.2, 2.6, 3.0)
#: Target rows per independent noise stream: the unit that makes grain independent of banding.
NOISE_ROWS = 16
#: No bin's level goes above this (sigma 20/255: beyond the heaviest film grain).  A crop that is
#: texture from edge to edge has no flat block at all and reads its texture as "noise"; measure
#: on the whole layer, not on a small selection, to avoid it.
MAX_LEVEL = 20.0 / 255.0
#: A pixel this close to 0 or 1 counts as clipped.
CLIP_EPS = 0.5 / 255


class Match(str, Enum):
    OUTPUT_PIXEL = "output_pixel"
    INPUT_SIZE = "input_size"


@dataclass
class GrainProfile:
    """The source's grain: ``levels[i]`` is the luma noise sigma (0..1 units, per source pixel)
    at brightness ``centers[i]``; ``size`` the grain's Gaussian sigma in source pixels; ``mix``
    the CxC matrix that turns unit-luma independent noise into correlated channels; ``blocks``
    how many flat blocks back each level (0 = interpolated from neighbours)."""

    levels: list[float]
    centers: list[float]
    size: float
    mix: list[list[float]]
    blocks: list[int] = field(default_factory=list)

    @property
    def channels(self) -> int:
        return len(self.mix)

    @property
    def level(self) -> float:
        """One number: the sigma averaged over the measured bins, weighted by their blocks."""
        w = np.asarray(self.blocks, float) if self.blocks and sum(self.blocks) else np.ones(len(self.levels))
        return float(np.sum(np.asarray(self.levels) * w) / np.sum(w))

    @property
    def channel_level(self) -> float:
        """`level` as the RMS sigma of the channels (what "noise sigma" of an RGB image means)."""
        m = np.asarray(self.mix, float)
        return self.level * float(np.sqrt(np.trace(m @ m.T) / len(m)))

    def level_at(self, brightness: np.ndarray) -> np.ndarray:
        return np.interp(brightness, self.centers, self.levels).astype(np.float32)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "GrainProfile":
        d = json.loads(text)
        return cls(levels=[float(v) for v in d["levels"]], centers=[float(v) for v in d["centers"]],
                   size=float(d["size"]), mix=[[float(v) for v in r] for r in d["mix"]],
                   blocks=[int(v) for v in d.get("blocks", [])])


# --------------------------------------------------------------------------- noise fields

def _white(seed: int, y0: int, y1: int, width: int, channels: int) -> np.ndarray:
    """Rows ``[y0, y1)`` of an endless white-noise field: one independent stream per
    `NOISE_ROWS` rows, so any row range comes out the same however the work is cut."""
    b0, b1 = y0 // NOISE_ROWS, -(-y1 // NOISE_ROWS)
    parts = []
    for blk in range(b0, b1):
        key = np.random.SeedSequence([seed & (2**63 - 1), blk, width, channels])
        rng = np.random.Generator(np.random.PCG64(key))
        parts.append(rng.standard_normal((NOISE_ROWS, width, channels), dtype=np.float32))
    z = np.concatenate(parts, 0)
    return z[y0 - b0 * NOISE_ROWS: y1 - b0 * NOISE_ROWS]


def _shape(z: np.ndarray, size: float) -> np.ndarray:
    """Gaussian-filter white noise to grain ``size`` and keep unit variance."""
    if size <= 0:
        return z
    k = blur.kernel(float(size)).astype(np.float64)
    return blur.gaussian(z, size) * np.float32(1.0 / np.sum(k * k))


# --------------------------------------------------------------------------- block statistics

def _block(h: int, w: int) -> int:
    return 16 if min(h, w) >= 384 else 8


def _margin() -> int:
    """Blocks start this far inside: the widest blur's reach, plus one row for the gradient."""
    return blur.radius(max(HP_SIGMA, MID_SIGMA)) + 1


def _stats(x: np.ndarray, block: int):
    """Per usable block (no clipped pixel, not flat to float precision; blocks start `_margin`
    px inside the image, so nothing they use reads past the border): brightness,
    variance of the high-passed luma, its lag-1 and lag-2 autocovariance, the channel covariance
    of the high-passed channels, and three signs of structure (coherence, kurtosis, mid-band
    energy relative to the high-pass).  None: no block fits."""
    y = luma(x)
    hp_y = y - blur.gaussian(y, HP_SIGMA)
    low = y - hp_y
    m = _margin()
    h, w = y.shape
    nby, nbx = (h - 2 * m) // block, (w - 2 * m) // block
    if nby < 1 or nbx < 1:
        return None
    sl = (slice(m, m + nby * block), slice(m, m + nbx * block))

    def blocks(a):      # (nby, nbx, block, block)
        return a[sl].reshape(nby, block, nbx, block).swapaxes(1, 2)

    bright = blocks(low).mean((2, 3))
    hp = blocks(hp_y)
    var = (hp ** 2).mean((2, 3))
    lag = {}
    for d in (1, 2):
        cx = (hp[..., :, d:] * hp[..., :, :-d]).mean((2, 3))
        cy = (hp[..., d:, :] * hp[..., :-d, :]).mean((2, 3))
        lag[d] = 0.5 * (cx + cy)
    # Grain is isotropic and Gaussian; edges and line texture are neither: the coherence of the
    # block's structure tensor and the kurtosis of its values flag them.
    gy, gx = np.gradient(hp_y)
    jxx, jyy, jxy = (blocks(a).mean((2, 3)) for a in (gx * gx, gy * gy, gx * gy))
    coh = np.sqrt((jxx - jyy) ** 2 + 4 * jxy ** 2) / np.maximum(jxx + jyy, 1e-12)
    kurt = (hp ** 4).mean((2, 3)) / np.maximum(var, 1e-12) ** 2
    # ... and texture has a 1/f spectrum, so the next band down holds as much energy again
    mid = (blocks(low - blur.gaussian(y, MID_SIGMA)) ** 2).mean((2, 3)) / np.maximum(var, 1e-12)
    clipped = blocks(((x <= CLIP_EPS) | (x >= 1 - CLIP_EPS)).any(2)).any((2, 3))
    c = x.shape[2]
    if c > 1:
        hpc = x - blur.gaussian(x, HP_SIGMA)
        hb = hpc[sl].reshape(nby, block, nbx, block, c).swapaxes(1, 2)
        hb = hb.reshape(nby, nbx, block * block, c)
        cov = np.einsum("abki,abkj->abij", hb, hb) / (block * block)
    else:
        cov = var[..., None, None]
    ok = ~clipped & (var > 1e-10)        # float dust on a flat block is not grain
    return bright[ok], var[ok], lag[1][ok], lag[2][ok], cov[ok], np.stack([coh, kurt, mid], -1)[ok]


#: Block rows per band when measuring (bounds the temporaries on big sources).
BAND_BLOCKS = 32


def _banded_stats(x: np.ndarray, block: int, max_pixels: int | None = None):
    """`_stats` of the whole image, computed in bands of `BAND_BLOCKS` block rows (each with the
    high-pass's reach above and below), so the blocks and their values are the same as in one
    piece while the temporaries stay a band's worth.  With ``max_pixels``, only evenly spread
    bands covering about that many pixels are read (grain statistics are global)."""
    m = _margin()
    h, w = x.shape[:2]
    nby = (h - 2 * m) // block
    if nby < 1:
        return _stats(x, block)
    starts = list(range(0, nby, BAND_BLOCKS))
    if max_pixels is not None:
        keep = max(1, int(max_pixels // (BAND_BLOCKS * block * w)))
        if keep < len(starts):
            starts = [starts[i] for i in np.linspace(0, len(starts) - 1, keep).round().astype(int)]
    parts = []
    for b0 in starts:
        b1 = min(nby, b0 + BAND_BLOCKS)
        st = _stats(x[b0 * block: b1 * block + 2 * m], block)
        if st is not None:
            parts.append(st)
    if not parts:
        return None
    return tuple(np.concatenate([p[i] for p in parts]) for i in range(len(parts[0])))


def _flat(bright: np.ndarray, var: np.ndarray) -> np.ndarray:
    """The flatter half of the blocks of each brightness bin (where grain dominates texture)."""
    sel = np.zeros(var.shape, bool)
    idx = np.minimum((bright * BINS).astype(int), BINS - 1)
    for i in range(BINS):
        m = idx == i
        if m.sum():
            sel |= m & (var <= np.percentile(var[m], 50))
    return sel


def _corr(var, lag1, lag2, sel) -> float:
    v = var[sel].sum()
    if v <= 0:
        return 0.0
    return float((lag1[sel].sum() + lag2[sel].sum()) / v)


#: Percentile of pure grain's coherence, kurtosis and mid-band ratio above which a block counts
#: as structure.
REJECT_PERCENTILE = 90.0


@dataclass(frozen=True)
class _Calibration:
    rho: np.ndarray        # correlation statistic per size
    limits: np.ndarray     # (sizes, 3): coherence, kurtosis and mid-band thresholds per size
    ratio: np.ndarray      # QUANTILE-th percentile of accepted block variances / true variance

    def limits_at(self, size: float) -> np.ndarray:
        return np.array([np.interp(size, SIZES, self.limits[:, i]) for i in range(self.limits.shape[1])])

    def ratio_at(self, size: float) -> float:
        return float(np.interp(size, SIZES, self.ratio))


def calibrate(block: int) -> _Calibration:
    """Pure synthetic grain of each of `SIZES` (made as `synthesize` makes it) through the same
    measurement: what the statistics look like when nothing but grain is there.  Deterministic;
    a few seconds, so the results for the block sizes in use are stored below (`_STORED`)."""
    rho, limits, ratio = [], [], []
    n = 640
    for i, s in enumerate(SIZES):
        rng = np.random.Generator(np.random.PCG64(1234 + i))
        z = _shape(rng.standard_normal((n, n, 1), dtype=np.float32), s)
        bright, var, l1, l2, _, signs = _stats(np.clip(0.5 + 0.02 * z, 0, 1), block)
        rho.append(_corr(var, l1, l2, _flat(bright, var)))
        limits.append(np.percentile(signs, REJECT_PERCENTILE, axis=0))
        ok = (signs <= limits[-1]).all(1)
        ratio.append(np.percentile(var[ok], QUANTILE) / 0.02 ** 2)
    return _Calibration(*(np.round(np.array(a, np.float64), 5) for a in (rho, limits, ratio)))


def _fingerprint() -> tuple:
    """The settings a stored calibration was made with."""
    return (HP_SIGMA, MID_SIGMA, QUANTILE, REJECT_PERCENTILE, SIZES, blur.TRUNCATE)


_STORED_FOR: tuple = (2.5, 5.0, 10.0, 90.0, (0.0, 0.45, 0.6, 0.8, 1.0, 1.25, 1.5, 1.8, 2.2, 2.6, 3.0), 3.0)
_STORED: dict[int, tuple] = {      # block -> (rho, limits (coherence, kurtosis, mid-band), ratio)
    8: (
        (-0.05851, 0.05569, 0.28000, 0.55489, 0.77253, 0.98749, 1.14156, 1.28926, 1.41223, 1.50158, 1.56045),
        (
            (0.28884, 0.29683, 0.33872, 0.39567, 0.44177, 0.50409, 0.54838, 0.59722, 0.66039, 0.71243, 0.75158),
            (3.56729, 3.58906, 3.57404, 3.46592, 3.40787, 3.32906, 3.26373, 3.23554, 3.19262, 3.09154, 2.98560),
            (0.01140, 0.02069, 0.04808, 0.10230, 0.16959, 0.29425, 0.43878, 0.69906, 1.11213, 1.59753, 2.11028),
        ),
        (0.75570, 0.72399, 0.63205, 0.50418, 0.40446, 0.29680, 0.22418, 0.15656, 0.09524, 0.05966, 0.03717),
    ),
    16: (
        (-0.06339, 0.06223, 0.30209, 0.59623, 0.82427, 1.04587, 1.20675, 1.35522, 1.49135, 1.58122, 1.64532),
        (
            (0.14676, 0.16224, 0.17920, 0.21053, 0.24120, 0.28956, 0.32456, 0.35795, 0.41228, 0.46053, 0.49703),
            (3.33727, 3.34867, 3.33626, 3.35718, 3.37611, 3.35896, 3.38426, 3.39387, 3.41919, 3.37589, 3.28716),
            (0.00905, 0.01664, 0.03810, 0.07854, 0.13295, 0.22662, 0.33943, 0.53436, 0.85539, 1.26347, 1.69976),
        ),
        (0.85927, 0.82363, 0.73803, 0.61669, 0.51105, 0.38649, 0.29587, 0.21838, 0.13998, 0.08695, 0.05711),
    ),
}


@lru_cache(maxsize=4)
def _calibration(block: int) -> _Calibration:
    if block in _STORED and _fingerprint() == _STORED_FOR:
        rho, limits, ratio = _STORED[block]
        return _Calibration(np.array(rho), np.array(limits).T, np.array(ratio))
    return calibrate(block)


def _size_from_corr(r: float, block: int) -> float:
    rho = _calibration(block).rho
    order = np.argsort(rho)            # monotonic over SIZES; argsort guards float jitter
    return float(np.interp(r, rho[order], np.asarray(SIZES)[order]))


# --------------------------------------------------------------------------- public API

#: `measure` reads at most about this many pixels (evenly spread bands) of a bigger image.
MEASURE_PIXELS = 8_000_000


def measure(src: np.ndarray, *, max_pixels: int | None = MEASURE_PIXELS) -> GrainProfile:
    """The grain profile of ``src`` (HxWx1 or HxWx3 float32, 0..1).  Measure the whole layer
    rather than a small selection (a selection may have no flat area); big images are sampled
    (``max_pixels``; None = every pixel)."""
    _checks.image("src", src)
    x = np.asarray(src, np.float32)
    h, w, c = x.shape
    block = _block(h, w)
    centers = [(i + 0.5) / BINS for i in range(BINS)]
    st = _banded_stats(x, block, max_pixels)
    if st is None or len(st[1]) == 0:
        return GrainProfile([0.0] * BINS, centers, 0.0, np.eye(c).tolist(), [0] * BINS)
    bright, var, l1, l2, cov, signs = st
    cal = _calibration(block)
    # size from the flattest blocks, then drop blocks that do not look like grain of that size,
    # and measure the size again on what is left
    size = _size_from_corr(_corr(var, l1, l2, _flat(bright, var)), block)
    ok = (signs <= cal.limits_at(size)).all(1)
    if ok.sum() >= MIN_BLOCKS:
        bright, var, l1, l2, cov = bright[ok], var[ok], l1[ok], l2[ok], cov[ok]
    sel = _flat(bright, var)
    size = _size_from_corr(_corr(var, l1, l2, sel), block)
    corr_ratio = cal.ratio_at(size)

    idx = np.minimum((bright * BINS).astype(int), BINS - 1)
    est = np.full(BINS, np.nan)
    counts = np.zeros(BINS, int)
    for i in range(BINS):
        v = var[idx == i]
        if len(v) >= MIN_BLOCKS:
            est[i] = np.sqrt(np.percentile(v, QUANTILE) / corr_ratio)
            counts[i] = len(v)
    if not counts.any():    # too few blocks per bin: one level for all brightnesses
        est[:] = np.sqrt(np.percentile(var, QUANTILE) / corr_ratio)
        counts[min(BINS - 1, int(np.median(bright) * BINS))] = len(var)
    levels = np.minimum(_smooth_levels(np.asarray(centers), est, counts), MAX_LEVEL)
    return GrainProfile([float(v) for v in levels], centers, round(size, 3), _mix(cov[sel], c),
                        [int(v) for v in counts])


#: A bin may exceed the brightness trend by this factor before it counts as texture.
TREND_SLACK = 1.3
#: Steepest brightness trend of the fit (log of the level ratio from black to white): in
#: gamma-encoded RGB, shot noise is nearly flat in brightness and read noise raises the shadows.
MAX_TREND = float(np.log(2.5))


def _smooth_levels(centers: np.ndarray, est: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Per-bin levels made plausible.  A noise curve is smooth in brightness; texture only ever
    raises a bin (a tone that is all hair or foliage has no flat blocks).  So: fit log(level)
    linear in brightness, weighted by blocks, downweighting bins far *above* the fit (a few
    reweighting rounds); then cap each bin at `TREND_SLACK` times the fit, and fill bins without
    data from their neighbours (nearest level beyond the ends: no extrapolation)."""
    have = counts > 0
    x, y, n = centers[have], np.log(np.maximum(est[have], 1e-6)), counts[have].astype(float)
    w = n.copy()
    a, b = float(np.average(y, weights=w)), 0.0
    for _ in range(4):
        if have.sum() >= 2 and np.ptp(x) > 0:
            xm = np.average(x, weights=w)
            b = float(np.sum(w * (x - xm) * (y - np.average(y, weights=w))) / np.sum(w * (x - xm) ** 2))
            b = float(np.clip(b, -MAX_TREND, MAX_TREND))
            a = float(np.average(y - b * x, weights=w))
        r = y - (a + b * x)
        lim = np.log(TREND_SLACK)
        w = n * np.where(r > lim, (lim / np.maximum(r, 1e-9)) ** 2, 1.0)
    capped = np.minimum(est[have], TREND_SLACK * np.exp(a + b * x))
    return np.interp(centers, x, capped)        # bins without data: from their neighbours


def _mix(cov: np.ndarray, c: int) -> list[list[float]]:
    """CxC matrix M with M M^T = channel covariance / luma variance."""
    if c == 1 or len(cov) == 0:
        return np.eye(c).tolist()
    s = cov.sum(0)
    lv = float(LUMA @ s @ LUMA)
    if lv <= 0:
        return (np.eye(c) / np.sqrt(float(LUMA @ LUMA))).tolist()
    s = s / lv
    vals, vecs = np.linalg.eigh(s)
    m = vecs * np.sqrt(np.maximum(vals, 0.0))[None, :]
    return m.tolist()


def top_up(profile: GrainProfile, present: GrainProfile) -> GrainProfile:
    """The grain still missing from a result that already has ``present`` (its own measured
    profile): per brightness, ``sqrt(level^2 - present^2)``, never negative.  Fidelity brings part
    of the source's noise back by itself, and a gentle model leaves some; synthesising the full
    level on top would overshoot."""
    have = np.interp(profile.centers, present.centers, present.levels)
    lv = np.sqrt(np.maximum(np.square(profile.levels) - np.square(have), 0.0))
    return GrainProfile([float(v) for v in lv], list(profile.centers), profile.size,
                        [list(r) for r in profile.mix], list(profile.blocks))


def seed_for(src: np.ndarray) -> int:
    """A seed from the image's content (its 16-bit quantisation): same image, same grain."""
    q = np.round(np.clip(np.asarray(src, np.float32), 0, 1) * 65535).astype("<u2")
    hsh = hashlib.blake2b(digest_size=8)
    hsh.update(str(q.shape).encode())
    hsh.update(np.ascontiguousarray(q).data)
    return int.from_bytes(hsh.digest(), "little") & (2**63 - 1)


def synthesize(profile: GrainProfile, out_shape_hw: tuple[int, int], scale: int,
               luminance: np.ndarray, seed: int, *, match: Match = Match.OUTPUT_PIXEL,
               rows: int | None = None) -> np.ndarray:
    """Signed grain (float32 HxWxC, mean ~0) for a result of ``out_shape_hw`` made at ``scale``
    from the profiled source.  ``luminance`` (HxW, 0..1, e.g. ``color.luma(result)``) sets the
    level per pixel.  Add it to the result (then clip), or hand it to GIMP through
    `as_grain_merge_layer`.  See the module doc for `Match`."""
    H, W = (int(v) for v in out_shape_hw)
    c = profile.channels
    if luminance.shape != (H, W):
        raise ValueError(f"luminance {luminance.shape} does not match the output {(H, W)}")
    mix = np.asarray(profile.mix, np.float32)
    if match is Match.INPUT_SIZE and scale > 1:
        if H % scale or W % scale:
            raise ValueError(f"{W}x{H} is not a multiple of the scale {scale}")
        h, w = H // scale, W // scale
        reach = blur.radius(profile.size) + resample.LIFT_REACH

        def band_in(b: bands.Band) -> np.ndarray:
            z = _shape(_white(seed, b.e0, b.e1, w, c), profile.size) @ mix.T
            g = resample.lift(z, scale)
            return g * profile.level_at(b.out(luminance))[..., None]

        return bands.run(band_in, h, scale, reach, (H, W, c), rows=rows)

    reach = blur.radius(profile.size)

    def band_out(b: bands.Band) -> np.ndarray:
        z = _shape(_white(seed, b.e0, b.e1, W, c), profile.size) @ mix.T
        return z * profile.level_at(b.src(luminance))[..., None]

    return bands.run(band_out, H, 1, reach, (H, W, c), rows=rows)


def as_grain_merge_layer(grain: np.ndarray) -> np.ndarray:
    """The grain as a layer for GIMP's *Grain merge* mode: ``grain + 0.5``, clipped to 0..1.

    Grain merge computes ``base + layer - 0.5`` in perceptual (gamma-encoded) RGB, the space this
    grain is measured and made in; the layer's opacity ``a`` then mixes base and that blend (GIMP
    composites in linear light, which for a perturbation this small is the same to first order),
    so the result is ``base + a * grain``: opacity 100 % is grain 1, 50 % is grain 0.5.  GIMP's
    default blend space for Grain merge is perceptual; if a layer is set to linear blending the
    grain's strength would change with brightness, so the plug-in should leave it at default."""
    return np.clip(np.asarray(grain, np.float32) + np.float32(0.5), 0.0, 1.0)
