"""Synthetic old-photo damage for tests and benchmarks: scratches (long, slightly curved lines
1-3 px wide whose strength fades along their length, bright as on a print whose emulsion is
scraped off or dark as on a scratched negative) and dust specks (small irregular blobs of radius
1-3 px), drawn anti-aliased onto a clean photo, deterministically from a seed.

The truth is kept as per-kind blend strengths so a test can tell "visibly damaged" pixels (those
whose value really changed) from pixels a scratch passed over without changing (a bright scratch
over white)."""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

SUPER = 4   # supersampling factor for anti-aliased drawing
LUMA = np.array([0.299, 0.587, 0.114], np.float32)


@dataclass
class Damaged:
    image: np.ndarray       # float32 HxWxC in [0,1]: the damaged photo
    scratches: np.ndarray   # float32 HxW: blend strength of the scratches (0 = untouched)
    specks: np.ndarray      # float32 HxW: blend strength of the specks
    n_scratches: int
    n_specks: int

    def visible(self, clean: np.ndarray, min_change: float = 4 / 255,
                which: str = "both", masking: bool = False) -> np.ndarray:
        """Pixels whose luma changed by at least `min_change` (0..1) and that belong to the given
        kind ("scratches", "specks", "both").  With masking=True the change must also reach the
        fine-detail contrast of the clean photo around the pixel (contrast masking: a mark
        fainter than the texture it lies on is not seen)."""
        change = np.abs(luma(self.image) - luma(clean))
        touched = {"scratches": self.scratches > 0, "specks": self.specks > 0,
                   "both": (self.scratches > 0) | (self.specks > 0)}[which]
        need = min_change
        if masking:
            need = np.maximum(min_change, detail_contrast(clean))
        return touched & (change >= need)


def detail_contrast(img: np.ndarray, sigma: float = 1.5, win: int = 15) -> np.ndarray:
    """RMS of the fine detail (luma minus its Gaussian blur) in a win x win window."""
    g = luma(img)
    hp = g - cv2.GaussianBlur(g, (0, 0), sigma)
    return np.sqrt(np.maximum(cv2.blur(hp * hp, (win, win)), 0))


def luma(img: np.ndarray) -> np.ndarray:
    if img.ndim == 2:
        return img.astype(np.float32)
    if img.shape[2] < 3:
        return img[:, :, 0].astype(np.float32)
    return img[:, :, :3].astype(np.float32) @ LUMA


def _curve(rng: np.random.Generator, h: int, w: int, length: float,
           wobble: tuple[float, float] = (2, 12)) -> np.ndarray:
    """Points (x, y) one pixel apart along a long, gently curving path (`wobble`: the range of the
    sine wobble's amplitude in degrees; a curly hair on the scanner's glass wobbles more)."""
    n = max(int(length), 8)
    x, y = rng.uniform(0, w), rng.uniform(0, h)
    heading = rng.uniform(0, 2 * np.pi)
    # curvature: a slow sine wobble plus a small constant bend (a few degrees per 100 px)
    amp = np.deg2rad(rng.uniform(*wobble))
    freq = rng.uniform(0.5, 2.0) * 2 * np.pi / n
    phase = rng.uniform(0, 2 * np.pi)
    bend = np.deg2rad(rng.uniform(-6, 6)) / 100.0
    t = np.arange(n)
    ang = heading + amp * np.sin(freq * t + phase) + bend * t
    xs = x + np.concatenate([[0.0], np.cumsum(np.cos(ang[:-1]))])
    ys = y + np.concatenate([[0.0], np.cumsum(np.sin(ang[:-1]))])
    return np.stack([xs, ys], 1)


def _smooth_profile(rng: np.random.Generator, n: int, lo: float, hi: float) -> np.ndarray:
    """A slowly varying factor in [lo, hi] along n points (fading strength or width)."""
    k = max(2, n // 60)
    knots = rng.uniform(lo, hi, k + 1)
    return np.interp(np.linspace(0, k, n), np.arange(k + 1), knots).astype(np.float32)


def _composite(small: np.ndarray, box: tuple[int, int, int, int], *alphas: np.ndarray) -> None:
    y0, y1, x0, x1 = box
    for a in alphas:
        np.maximum(a[y0:y1, x0:x1], small, out=a[y0:y1, x0:x1])


def _draw_curve(shape: tuple[int, int], pts: np.ndarray, widths: np.ndarray, strength: np.ndarray):
    """An anti-aliased polyline with varying width/strength: (patch, box) or None."""
    h, w = shape
    pad = 4
    x0 = int(max(np.floor(pts[:, 0].min()) - pad, 0))
    y0 = int(max(np.floor(pts[:, 1].min()) - pad, 0))
    x1 = int(min(np.ceil(pts[:, 0].max()) + pad, w))
    y1 = int(min(np.ceil(pts[:, 1].max()) + pad, h))
    if x1 <= x0 or y1 <= y0:
        return None
    canvas = np.zeros(((y1 - y0) * SUPER, (x1 - x0) * SUPER), np.float32)
    step = 6   # draw in short pieces so width and strength can vary along the curve
    for i in range(0, len(pts) - 1, step):
        seg = pts[i: i + step + 1]
        p = np.rint((seg - [x0, y0]) * SUPER + (SUPER - 1) / 2).astype(np.int32)
        thick = max(1, int(round(widths[i] * SUPER)))
        piece = np.zeros_like(canvas)
        cv2.polylines(piece, [p.reshape(-1, 1, 2)], False, float(strength[i]), thick, cv2.LINE_8)
        np.maximum(canvas, piece, out=canvas)
    return cv2.resize(canvas, (x1 - x0, y1 - y0), interpolation=cv2.INTER_AREA), (y0, y1, x0, x1)


def _draw_speck(shape: tuple[int, int], rng: np.random.Generator, radius: float, strength: float):
    h, w = shape
    cx, cy = rng.uniform(0, w), rng.uniform(0, h)
    pad = int(np.ceil(radius)) + 2
    x0, y0 = int(max(cx - pad, 0)), int(max(cy - pad, 0))
    x1, y1 = int(min(cx + pad + 1, w)), int(min(cy + pad + 1, h))
    if x1 <= x0 or y1 <= y0:
        return None
    canvas = np.zeros(((y1 - y0) * SUPER, (x1 - x0) * SUPER), np.float32)
    # dust is irregular: an ellipse plus a second, offset lobe
    axes = (radius * SUPER, radius * SUPER * rng.uniform(0.55, 1.0))
    c = ((cx - x0) * SUPER, (cy - y0) * SUPER)
    ang = rng.uniform(0, 180)
    cv2.ellipse(canvas, (c, (2 * axes[0], 2 * axes[1]), ang), float(strength), -1, cv2.LINE_8)
    if radius >= 1.5 and rng.random() < 0.5:
        off = rng.normal(0, radius * 0.6, 2) * SUPER
        r2 = radius * SUPER * rng.uniform(0.4, 0.7)
        cv2.ellipse(canvas, ((c[0] + off[0], c[1] + off[1]), (2 * r2, 2 * r2), 0), float(strength),
                    -1, cv2.LINE_8)
    return cv2.resize(canvas, (x1 - x0, y1 - y0), interpolation=cv2.INTER_AREA), (y0, y1, x0, x1)


def damage(clean: np.ndarray, seed: int = 0, *, scratches_per_mp: float = 8,
           specks_per_mp: float = 80, min_scratches: int = 3, min_specks: int = 20,
           width: tuple[float, float] = (1.0, 3.0), radius: tuple[float, float] = (1.0, 3.0),
           strength: tuple[float, float] = (0.25, 0.9), scale: float = 1.0,
           length: tuple[float, float] = (0.12, 0.5), wobble: tuple[float, float] = (2, 12),
           bright_share: float = 0.6, soften: float = 0.0, tone: float = 0.0) -> Damaged:
    """Damage a clean float32 HxWxC [0,1] photo.  Strength is the blend towards white (bright
    damage) or black (dark damage) at the centre of a mark; each scratch gets a peak strength in
    `strength` and fades to 40-100 % of it along its length.  `scale` multiplies widths, radii and
    lengths (damage on a higher-resolution scan).

    Variations (for training a detector; the defaults draw exactly what they always drew):
    `length` is a scratch's length as a fraction of the image's diagonal, `wobble` its curl in
    degrees, `bright_share` the share of bright scratches; `soften` (px) blurs the marks by a
    Gaussian of up to that sigma (a mark seen through the print's surface, or a soft scan), and
    `tone` moves what a mark blends towards away from pure white/black by up to that much, with a
    random tint (yellowed paper base, a grey smear).  Both are drawn once per image from their
    own random stream, so they change nothing else that is drawn."""
    rng = np.random.default_rng(seed)
    img = clean.astype(np.float32)
    if img.ndim == 2:
        img = img[:, :, None]
    h, w = img.shape[:2]
    mp = h * w / 1e6
    n_scr = max(min_scratches, int(round(scratches_per_mp * mp)))
    n_spk = max(min_specks, int(round(specks_per_mp * mp)))
    diag = float(np.hypot(h, w))
    bright = np.zeros((h, w), np.float32)
    dark = np.zeros((h, w), np.float32)
    scr = np.zeros((h, w), np.float32)
    spk = np.zeros((h, w), np.float32)
    for _ in range(n_scr):
        length_px = rng.uniform(*length) * diag
        pts = _curve(rng, h, w, length_px, wobble)
        wid = _smooth_profile(rng, len(pts), *width) * scale
        peak = rng.uniform(*strength)
        st = _smooth_profile(rng, len(pts), 0.4, 1.0) * peak
        drawn = _draw_curve((h, w), pts, wid, st)
        target = bright if rng.random() < bright_share else dark
        if drawn is not None:
            _composite(*drawn, target, scr)
    for _ in range(n_spk):
        drawn = _draw_speck((h, w), rng, rng.uniform(*radius) * scale,
                            rng.uniform(max(strength[0], 0.4), 1.0))
        target = bright if rng.random() < 0.5 else dark
        if drawn is not None:
            _composite(*drawn, target, spk)
    white = np.ones(img.shape[2], np.float32)
    black = np.zeros(img.shape[2], np.float32)
    if soften > 0 or tone > 0:
        extra = np.random.default_rng([seed, 1])
        sigma = extra.uniform(0, soften)
        if sigma > 0.2:
            for a in (bright, dark, scr, spk):
                a[:] = cv2.GaussianBlur(a, (0, 0), sigma)
        tint = extra.uniform(-1, 1, img.shape[2]).astype(np.float32) * 0.3
        white = np.clip(1 - extra.uniform(0, tone) * (1 + tint), 0, 1).astype(np.float32)
        black = np.clip(extra.uniform(0, tone) * (1 + tint), 0, 1).astype(np.float32)
    out = img * (1 - dark[:, :, None]) + dark[:, :, None] * black
    out = out + bright[:, :, None] * (white - out)
    out = np.clip(out, 0, 1).astype(np.float32)
    if clean.ndim == 2:
        out = out[:, :, 0]
    return Damaged(out, scr, spk, n_scr, n_spk)
