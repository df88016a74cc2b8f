"""Find Damage: scratches, cracks, dust specks and small spots on old photos, by image analysis
(numpy + OpenCV, no model).  `find_damage` returns a uint8 mask, 255 = damaged.

How it works, on the luma, at full resolution (and also at half resolution on large scans, where
marks are wider in pixels):

Lines (scratches, cracks, hairs on the scan)
  1. Residual: the luma minus its morphological opening (bright marks), and its closing minus the
     luma (dark marks), with a small disc.  Both are zero on smooth shading and on step edges and
     keep everything thinner than the disc: marks, but also hair, fur, foliage, text and fabric.
  2. Oriented evidence, 12 directions: the residual averaged along a 15 px segment, minus the
     same along the perpendicular segment (a blob or a crossing texture scores in both), minus
     half the step edge running along the segment beyond what a smooth ramp explains (thin
     shadows and highlights at object borders are scene), minus half the evidence of a parallel
     line of the other polarity within 4 px (relief: a groove beside its highlight).
  3. Texture normalisation: the evidence is divided by the local mean (41 px window) of its own
     absolute value (x0.7), plus a floor for flat areas, taken beside the line: the window is
     centred 18 px to either side and the busier side counts.  Texture of lines and gaps and
     the flicker of grain give evidence of both signs there, a lone line only on itself.  (The
     mean of the residual, centred on the line, counted the line itself and a grainy scan's
     one-signed residual as texture: a clear 2 px scratch on a grainy or small photo was mostly
     missed.)  An isolated line
     stands out above its surroundings; a hair among hairs, a blade of grass among grass, a
     stroke of text among text does not.  Lines with more than ~2.5 parallel lines across a
     121 px window are a pattern of the scene (brick mortar, fences, blinds, ruled paper) and
     are dropped.
  4. Decision by length: thin components (little survives an erosion wider than a scratch) are
     accepted at several evidence levels, the weaker the evidence the longer they must be (12 px
     at the strongest level, 120 px at the weakest), so a long faint scratch is found while short
     faint scene lines are not; found lines are then followed through weaker evidence of their
     own direction (where the scratch crosses texture), so a found scratch comes out whole.
     Components along the image's edge (a scanned print's border) are dropped.
Specks (dust, small spots)
  5. A speck is a pixel brighter (darker) than every pixel on a ring of radius 4.5-6.5 px around
     it: a line crosses the ring and a larger blob reaches it, so neither counts.  A speck a few
     px from something brighter (a highlight, a lit edge) is outshone on that ring, so it may
     instead outshine a closer ring (3.5-4.5 px, in the gap between the two) by 1.25x the
     contrast; lines and larger blobs cross that ring as well.  The contrast
     over the ring is weighed lightly against the local texture level (the ring test already
     rejects most texture); a speck among more than 6 others within 121 px is one of a crowd of
     alike dots (stars, gravel, halftone) and is dropped; the speck's extent is taken from the
     residual around its core.
Finally each mark gets its fringe (neighbours with >= 20 % of its contrast: the anti-aliased or
blurred edge) rather than a blind dilation, the `kinds` filter keeps scratches, dust or both,
and a selection (`region`) limits the search and multiplies the mask.  The sensitivity scales
every evidence threshold (x2 at 0, x0.5 at 1), not what counts as a pattern.

Not covered (on purpose): wide stains, water marks, foxing, silvering and faded areas.  They are
tonal defects spanning tens to hundreds of pixels, which local analysis cannot tell from shadows
and real objects, and inpainting them from their surroundings would invent content; they want a
different tool (local tone/colour correction, or a learned detector behind the same operation).
Marks up to ~4 px wide (lines) and ~9 px across (specks) are found per level; the half-resolution
level doubles that on scans over ~2600 px.

Known limits: real thin lines of the scene in smooth surroundings (wires, whiskers, a thin
highlight on a glossy rim, door mouldings) look like scratches, and small isolated dots (catch
lights, buttons) look like dust; inpainting those costs more than missing faint damage does.
Faint scratches in strong texture are missed.  The sensitivity moves the line between the two.

Memory: everything is computed in horizontal bands of 512 rows with a margin; what stays is ten
full-size uint8 score maps (scores on a log scale) and a few boolean masks: a 12 MP scan needs
~0.5 GB beyond the image (measured in bench/bench_damage.py --big)."""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import cv2
import numpy as np

from ai_enhance.errors import EnhanceError
from ai_enhance_client.protocol import ErrorKind

LUMA = np.array([0.299, 0.587, 0.114], np.float32)
HALF_RES_FROM = 2600     # px, longer side: from here on the half-resolution level also runs


class Kinds(str, Enum):
    SCRATCHES = "scratches"
    DUST = "dust"
    BOTH = "both"


@dataclass(frozen=True)
class Tuning:
    """Detector constants (pixels of the level they run at)."""
    disc: int = 9               # top-hat disc for specks' extent: marks narrower than this
    line_disc: int = 5          # top-hat disc for lines (widths up to ~4 px)
    ring: tuple[float, float] = (4.5, 6.5)   # a speck must outshine this ring around it
    near_ring: tuple[float, float] | None = (3.5, 4.5)   # ... or this closer one by near_cost x the contrast
    near_cost: float = 1.25
    texture_win: int = 41       # window of the local texture level
    floor: float = 1.2 / 255    # texture level of a perfectly flat area (quantisation, grain)
    speck_level: float = 0.1    # weight of the texture level against specks
    seg_len: int = 15           # oriented averaging length for lines
    n_dirs: int = 12
    side: float = 4.0           # px from a line's centre to where its sides are compared
    step_weight: float = 0.5    # how much a step edge along a line counts against it
    pair_weight: float = 0.5    # how much a parallel line of the other polarity counts against
    pair_dist: int = 4          # px across the line where that partner is looked for
    pix_frac: float = 0.4       # a line pixel's own residual vs the line's mean along it
    # (line score, minimum length in px): weaker evidence must run longer to count
    line_levels: tuple[tuple[float, int], ...] = ((6.0, 12), (3.6, 30), (2.45, 60), (1.8, 120))
    max_thickness: float = 10.0  # px: area / length of a line component (two crossing: ~2x width)
    max_fat: float = 0.05       # share of a line component wider than 6 px
    follow: float = 0.42        # line score enough to continue a found line in its direction
    follow_reach: int = 96      # px beyond the found lines that a continuation may run
    repeat_win: int = 121       # px window for patterns of parallel lines and crowds of dots
    max_parallel: float = 2.5   # more parallel lines than this across the window: a pattern
    repeat_score: float = 1.2   # line score that counts as a line of a pattern (grain and texture reach ~1)
    max_crowd: int = 6          # more specks than this in the window: a pattern
    speck_hi: float = 10.0      # ring contrast of a speck core (normalised)
    speck_lo: float = 4.0       # residual of the rest of a speck (normalised)
    halo: float = 0.2           # fringe pixels with this share of the mark's contrast join it
    texture_shift: int = 18     # px from a line to the centres of the texture windows beside it
    texture_gain: float = 0.7   # weight of the evidence's own level as texture
    band: int = 512             # rows per band


# scores are stored as uint8 on a log scale, q = 32*log2(1 + score): steps of ~2 % over 0..250
SCALE_Q = 32.0
MAPS = ("speck_b", "speck_d", "extent_b", "extent_d", "line_b", "line_d", "on_line_b", "on_line_d",
        "dir_b", "dir_d")


def _luma(img: np.ndarray) -> np.ndarray:
    if img.ndim == 2:
        return img.astype(np.float32)
    if img.shape[2] < 3:
        return img[:, :, 0].astype(np.float32)
    return np.ascontiguousarray(img[:, :, :3], np.float32) @ LUMA


def _segment(length: int, theta: float, size: int) -> np.ndarray:
    """An anti-aliased line segment of `length` px through the centre in direction theta, in a
    size x size kernel (sum 1)."""
    c = size // 2
    k = np.zeros((size * 4, size * 4), np.float32)
    dx, dy = np.cos(theta) * (length - 1) / 2, np.sin(theta) * (length - 1) / 2
    p0 = (int(round((c - dx) * 4 + 1.5)), int(round((c - dy) * 4 + 1.5)))
    p1 = (int(round((c + dx) * 4 + 1.5)), int(round((c + dy) * 4 + 1.5)))
    cv2.line(k, p0, p1, 1.0, 4, cv2.LINE_8)
    k = cv2.resize(k, (size, size), interpolation=cv2.INTER_AREA)
    return k / k.sum()


def _line_kernels(length: int, n: int) -> list[np.ndarray]:
    """The segment through the centre for each of n directions over 180 deg."""
    return [_segment(length, np.pi * i / n, length | 1) for i in range(n)]


def _shifted(padded: np.ndarray, pad: int, dy: int, dx: int, shape: tuple[int, int]) -> np.ndarray:
    """View of the unpadded image moved so that out[p] = image[p + (dy, dx)]."""
    h, w = shape
    return padded[pad + dy: pad + dy + h, pad + dx: pad + dx + w]


def _step(gray_line: np.ndarray, theta: float, side: float) -> np.ndarray:
    """The step edge running along direction theta at each pixel: the difference of the line
    means `side` px away on either side beyond half that difference 2*side px away (the two agree
    on a smooth ramp and differ by half the step at a step edge).  Offsets are rounded to whole
    pixels, which is plenty for a comparison this coarse."""
    nx, ny = -np.sin(theta), np.cos(theta)
    pad = int(np.ceil(2 * side)) + 1
    padded = cv2.copyMakeBorder(gray_line, pad, pad, pad, pad, cv2.BORDER_REFLECT)
    shape = gray_line.shape

    def diff(d: float) -> np.ndarray:
        dy, dx = int(round(ny * d)), int(round(nx * d))
        return _shifted(padded, pad, dy, dx, shape) - _shifted(padded, pad, -dy, -dx, shape)

    return np.maximum(np.abs(diff(side)) - 0.5 * np.abs(diff(2 * side)), 0)


def _beside(level: np.ndarray, theta: float, shift: int) -> np.ndarray:
    """The texture level beside a line of direction theta: the larger of the levels `shift` px
    away on either side, so the line's own residual does not count as texture that hides it (a
    strong scratch would otherwise raise its own threshold), while a line with texture on either
    side is still judged against it.  A side beyond the image's edge does not count (a mirrored
    border would show the line as its own texture).  shift 0: the level centred on the pixel."""
    if shift <= 0:
        return level
    dy, dx = int(round(np.cos(theta) * shift)), int(round(-np.sin(theta) * shift))
    pad = shift + 1
    padded = cv2.copyMakeBorder(level, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=float("nan"))
    out = np.fmax(_shifted(padded, pad, dy, dx, level.shape), _shifted(padded, pad, -dy, -dx, level.shape))
    return np.where(np.isnan(out), level, out)


def _ring(inner: float, outer: float) -> np.ndarray:
    n = int(np.ceil(outer))
    y, x = np.mgrid[-n: n + 1, -n: n + 1]
    r = np.hypot(y, x)
    return ((r >= inner) & (r <= outer)).astype(np.uint8)


def _residuals(gray: np.ndarray, disc: int) -> tuple[np.ndarray, np.ndarray]:
    se = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (disc, disc))
    rb = gray - cv2.morphologyEx(gray, cv2.MORPH_OPEN, se, borderType=cv2.BORDER_REFLECT)
    rd = cv2.morphologyEx(gray, cv2.MORPH_CLOSE, se, borderType=cv2.BORDER_REFLECT) - gray
    return rb, rd


def _scores(gray: np.ndarray, t: Tuning, kernels) -> dict[str, np.ndarray]:
    """The score maps of one band (see MAPS), float32 except on_line (bool) and dir (uint8)."""
    win = (t.texture_win, t.texture_win)
    out: dict[str, np.ndarray] = {}
    ring = _ring(*t.ring)
    rb, rd = _residuals(gray, t.disc)
    level = t.speck_level * cv2.blur(rb + rd, win) + t.floor
    out["speck_b"] = (gray - cv2.dilate(gray, ring, borderType=cv2.BORDER_REFLECT)) / level
    out["speck_d"] = (cv2.erode(gray, ring, borderType=cv2.BORDER_REFLECT) - gray) / level
    if t.near_ring:
        # a speck a few px from something brighter (a highlight, a lit edge) is outshone on the
        # ring; it still stands out of a closer ring, in the gap that parts it from that
        # neighbour (a line crosses this ring too, and a larger blob reaches it)
        near = _ring(*t.near_ring)
        nb = (gray - cv2.dilate(gray, near, borderType=cv2.BORDER_REFLECT)) / (level * t.near_cost)
        nd = (cv2.erode(gray, near, borderType=cv2.BORDER_REFLECT) - gray) / (level * t.near_cost)
        np.maximum(out["speck_b"], nb, out=out["speck_b"])
        np.maximum(out["speck_d"], nd, out=out["speck_d"])
    out["extent_b"] = rb / level
    out["extent_d"] = rd / level
    del rb, rd, level

    res = _residuals(gray, t.line_disc)
    n = len(kernels)
    half = n // 2
    best = [np.zeros_like(gray) for _ in res]
    along = [np.zeros_like(gray) for _ in res]
    dirs = [np.zeros(gray.shape, np.uint8) for _ in res]

    pairs = [(_segment(2 * t.pair_dist + 1, np.pi * k / n + np.pi / 2, 2 * t.pair_dist + 1) > 0).astype(np.uint8)
             for k in range(n)]

    def along_dir(a: np.ndarray, k: int) -> np.ndarray:
        # horizontal and vertical segments are boxes: O(1) per pixel instead of O(length^2)
        if 4 * k == n or k == 0:
            size = (t.seg_len, 1) if k == 0 else (1, t.seg_len)
            return cv2.blur(a, size, borderType=cv2.BORDER_REFLECT)
        return cv2.filter2D(a, -1, kernels[k], borderType=cv2.BORDER_REFLECT)

    for i in range(half):
        steps = tuple(_step(along_dir(gray, j), np.pi * j / n, t.side) for j in (i, i + half))
        resp = [(along_dir(r, i), along_dir(r, i + half)) for r in res]
        for (k, st) in ((i, steps[0]), (i + half, steps[1])):
            slot = 0 if k == i else 1
            ev = [rr[slot] - rr[1 - slot] - t.step_weight * st for rr in resp]
            # relief (a groove beside its highlight, a rim beside its shadow) is a bright and a
            # dark line side by side; a scratch has no partner of the other polarity
            if t.pair_weight:
                perp = pairs[k]
                partner = [cv2.dilate(np.maximum(e, 0), perp) for e in ev[::-1]]
                ev = [e - t.pair_weight * p_ for e, p_ in zip(ev, partner)]
            for e, rr, bst, alg, drn in zip(ev, resp, best, along, dirs):
                a = rr[slot]
                # the level of this direction's evidence itself (texture: many lines and gaps;
                # grain: a flicker around zero), beside the line
                tex = t.texture_gain * cv2.blur(np.abs(e), win)
                z = e / (_beside(tex, np.pi * k / n, t.texture_shift) + t.floor)
                better = z > bst
                np.copyto(bst, z, where=better)
                np.copyto(alg, a, where=better)
                np.copyto(drn, np.uint8(k), where=better)
    for sfx, r, bst, alg, drn in zip("bd", res, best, along, dirs):
        out["line_" + sfx] = bst
        out["on_line_" + sfx] = r >= t.pix_frac * alg
        out["dir_" + sfx] = drn
    return out


def _quant(a: np.ndarray) -> np.ndarray:
    return np.clip(np.log2(1.0 + np.maximum(a, 0)) * SCALE_Q + 0.5, 0, 255).astype(np.uint8)


def _unquant(q: np.ndarray) -> np.ndarray:
    return np.exp2(q.astype(np.float32) / SCALE_Q) - 1.0


def _q(v: float, gain: float) -> int:
    """The uint8 code of threshold v (scaled by the sensitivity gain)."""
    return max(1, int(np.ceil(np.log2(1.0 + v * gain) * SCALE_Q - 0.5)))


def _score_maps(gray: np.ndarray, t: Tuning) -> dict[str, np.ndarray]:
    """Full-size uint8 score maps (see MAPS), computed band by band."""
    h, w = gray.shape
    maps = {k: np.zeros((h, w), np.uint8) for k in MAPS}
    kernels = _line_kernels(t.seg_len, t.n_dirs)
    # the longest chain of neighbourhoods: a texture window over a segment mean over a top-hat or
    # a ring, or over a step/partner look-aside
    margin = (t.texture_win // 2 + t.texture_shift + t.seg_len // 2 + max(t.disc // 2 + 1, int(np.ceil(t.ring[1])),
                                                         int(np.ceil(2 * t.side)) + t.pair_dist) + 2)
    for y0 in range(0, h, t.band):
        y1 = min(y0 + t.band, h)
        a0, a1 = max(0, y0 - margin), min(h, y1 + margin)
        res = _scores(np.ascontiguousarray(gray[a0:a1]), t, kernels)
        for k, r in res.items():
            r = r[y0 - a0: y1 - a0]
            maps[k][y0:y1] = _quant(r) if r.dtype == np.float32 else r
    return maps


_FAT = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (7, 7))


def _repeated(z: np.ndarray, line_px: np.ndarray, drn: np.ndarray, t: Tuning, gain: float) -> np.ndarray:
    """Line pixels with several parallel lines around them: the mortar of a brick wall, the slats
    of a fence or blind, ruled paper, a comb of hair.  A scratch is a single line in its
    direction; more than `max_parallel` lines across the window is a pattern of the scene."""
    cand = ((z >= _q(t.repeat_score, gain)) & line_px).astype(np.uint8)
    # widened by a pixel, a 1 px line counts about as much as a 3 px one: ~4 px per line
    limit = (t.max_parallel + 0.5) * 4.0 / t.repeat_win
    out = np.zeros(z.shape, bool)
    h, w = z.shape
    f = 4       # the density is smooth at this window: measure it on a 4x smaller grid
    small = ((h + f - 1) // f, (w + f - 1) // f)
    sw = max(3, (t.repeat_win // f) | 1)
    n = t.n_dirs
    for k in range(n):
        own = (cand > 0) & (drn == k)
        if not own.any():
            continue
        near_k = ((drn == k) | (drn == (k + 1) % n) | (drn == (k - 1) % n)).astype(np.uint8) * cand
        wide = cv2.dilate(near_k, np.ones((3, 3), np.uint8)).astype(np.float32)
        dens = cv2.blur(cv2.resize(wide, small[::-1], interpolation=cv2.INTER_AREA), (sw, sw),
                        borderType=cv2.BORDER_REFLECT)
        ys, xs = np.nonzero(own)
        busy = dens[ys // f, xs // f] > limit
        out[ys[busy], xs[busy]] = True
    return out


def _lines(z: np.ndarray, on_line: np.ndarray, drn: np.ndarray, t: Tuning, gain: float) -> np.ndarray:
    """Line components: at each evidence level, thin components at least as long as the level
    asks, then followed through weaker evidence of their own direction."""
    found = np.zeros(z.shape, bool)
    line_px = on_line > 0
    if t.max_parallel > 0:
        # what is a pattern of the scene does not depend on how eagerly damage is sought
        line_px &= ~_repeated(z, line_px, drn, t, 1.0)
    for thr, min_len in t.line_levels:
        cand = ((z >= _q(thr, gain)) & line_px).astype(np.uint8)
        n, labels, stats, _ = cv2.connectedComponentsWithStats(cand, connectivity=8)
        length = np.maximum(stats[:, cv2.CC_STAT_WIDTH], stats[:, cv2.CC_STAT_HEIGHT])
        area = stats[:, cv2.CC_STAT_AREA]
        # thin: nothing much survives an erosion wider than a scratch (crossing scratches pass,
        # a patch of texture does not), and the area is not many times the length
        core = cv2.erode(cand, _FAT) > 0
        fat = np.bincount(labels[core], minlength=n)
        ok = ((length >= min_len) & (fat <= t.max_fat * area)
              & (area <= t.max_thickness * np.maximum(length, 1)))
        ok[0] = False
        found |= ok[labels]
    if t.follow > 0 and found.any():
        # texture that a scratch crosses lowers its score; texture of other directions must not
        # join, so the continuation is done per direction (with its two neighbours), within
        # reach of the lines found in that direction
        weak = (z >= _q(t.follow, gain)) & line_px
        n_dirs = t.n_dirs
        h, w = z.shape
        for k in range(n_dirs):
            seeds = found & (drn == k)
            rows = np.flatnonzero(seeds.any(axis=1))
            if len(rows) == 0:
                continue
            cols = np.flatnonzero(seeds.any(axis=0))
            m = t.follow_reach
            ys = slice(max(rows[0] - m, 0), min(rows[-1] + 1 + m, h))
            xs = slice(max(cols[0] - m, 0), min(cols[-1] + 1 + m, w))
            d = drn[ys, xs]
            band = (d == k) | (d == (k + 1) % n_dirs) | (d == (k - 1) % n_dirs)
            cand = ((weak[ys, xs] | found[ys, xs]) & band).astype(np.uint8)
            n, labels = cv2.connectedComponents(cand, connectivity=8)
            keep = np.zeros(n, bool)
            keep[np.unique(labels[seeds[ys, xs]])] = True
            keep[0] = False
            found[ys, xs] |= keep[labels]
    return found


def _specks(core: np.ndarray, extent: np.ndarray, t: Tuning, gain: float) -> np.ndarray:
    seeds = (core >= _q(t.speck_hi, gain)).astype(np.uint8)
    if t.max_crowd > 0 and seeds.any():
        # one of many alike dots (stars, gravel, a print's halftone, polka dots) is scene, not
        # dust: count the specks around each (by their centres, at the default threshold, so
        # the sensitivity does not change what a crowd is) and drop the crowded ones
        dots_at = (core >= _q(t.speck_hi, 1.0)).astype(np.uint8)
        n, labels, stats, cent = cv2.connectedComponentsWithStats(dots_at | seeds, connectivity=8)
        dots = np.zeros(seeds.shape, np.float32)
        cy = np.clip(np.rint(cent[1:, 1]).astype(int), 0, seeds.shape[0] - 1)
        cx = np.clip(np.rint(cent[1:, 0]).astype(int), 0, seeds.shape[1] - 1)
        counted = np.bincount(labels[dots_at > 0], minlength=n)[1:] > 0
        dots[cy[counted], cx[counted]] = 1.0
        r = t.repeat_win
        crowd = cv2.boxFilter(dots, -1, (r, r), normalize=False, borderType=cv2.BORDER_CONSTANT)
        busy = np.zeros(n, bool)
        busy[1:] = crowd[cy, cx] > t.max_crowd
        seeds[busy[labels]] = 0
    around = cv2.dilate(seeds, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))) > 0
    return (around & (extent >= _q(t.speck_lo, gain))) | (seeds > 0)


def _halo(found: np.ndarray, extent: np.ndarray, frac: float) -> np.ndarray:
    """Found pixels plus their neighbours that share at least `frac` of their contrast (the
    anti-aliased or blurred fringe of a mark), instead of a blind dilation into good pixels."""
    if not found.any():
        return found
    peak = cv2.dilate(np.where(found, extent, 0).astype(np.uint8), np.ones((3, 3), np.uint8))
    ring = (peak > 0) & ~found
    grown = found.copy()
    grown[ring] = _unquant(extent[ring]) >= frac * _unquant(peak[ring])
    return grown


def _decide(maps: dict[str, np.ndarray], t: Tuning, gain: float) -> tuple[np.ndarray, np.ndarray]:
    """(scratch mask, speck mask), both polarities, fringes included, from the score maps."""
    shape = maps["line_b"].shape
    scr = np.zeros(shape, bool)
    spk = np.zeros(shape, bool)
    for p in "bd":
        a = _lines(maps["line_" + p], maps["on_line_" + p], maps["dir_" + p], t, gain)
        b = _specks(maps["speck_" + p], maps["extent_" + p], t, gain) & ~a
        scr |= _halo(a, maps["extent_" + p], t.halo)
        spk |= _halo(b, maps["extent_" + p], t.halo)
    return scr, spk & ~scr


def _detect(gray: np.ndarray, t: Tuning, gain: float) -> tuple[np.ndarray, np.ndarray]:
    """(scratches, specks) at full resolution, plus the half-resolution level on large scans."""
    scr, spk = _decide(_score_maps(gray, t), t, gain)
    h, w = gray.shape
    if max(h, w) >= HALF_RES_FROM:
        small = cv2.resize(gray, ((w + 1) // 2, (h + 1) // 2), interpolation=cv2.INTER_AREA)
        s2, p2 = _decide(_score_maps(small, t), t, gain)
        for full, half in ((scr, s2), (spk, p2)):
            up = cv2.resize(half.astype(np.uint8) * 255, (w, h), interpolation=cv2.INTER_LINEAR)
            full |= up >= 128
        spk &= ~scr
    return scr, spk


def _drop_edge_lines(mask: np.ndarray, box: tuple[int, int, int, int], h: int, w: int, band: int = 4) -> None:
    """Remove components lying within `band` px of the image's edge: the border of a scanned print
    or the scanner's lid is a line along the edge, not damage (and no good pixels lie beyond it
    to fill it from)."""
    y0, y1, x0, x1 = box
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    top = stats[:, cv2.CC_STAT_TOP] + y0
    left = stats[:, cv2.CC_STAT_LEFT] + x0
    bottom = top + stats[:, cv2.CC_STAT_HEIGHT]
    right = left + stats[:, cv2.CC_STAT_WIDTH]
    edge = (bottom <= band) | (top >= h - band) | (right <= band) | (left >= w - band)
    edge[0] = False
    if edge.any():
        mask &= ~edge[labels]


def _check(img: np.ndarray, sensitivity: float, kinds: str, region: np.ndarray | None) -> Kinds:
    if img.ndim not in (2, 3) or img.ndim == 3 and img.shape[2] not in (1, 2, 3, 4):
        raise EnhanceError(ErrorKind.BAD_REQUEST, f"find-damage needs an HxW or HxWxC image, got shape {img.shape}",
                           "pass a gray or RGB(A) image")
    if not (np.issubdtype(img.dtype, np.floating) or img.dtype in (np.uint8, np.uint16)):
        raise EnhanceError(ErrorKind.BAD_REQUEST, f"find-damage got {img.dtype} samples",
                           "pass float 0..1, uint8 or uint16 pixels")
    if min(img.shape[:2]) < 1:
        raise EnhanceError(ErrorKind.BAD_REQUEST, f"the image is empty ({img.shape[1]}x{img.shape[0]})",
                           "pass an image with pixels")
    if not np.isfinite(sensitivity) or not 0.0 <= float(sensitivity) <= 1.0:
        raise EnhanceError(ErrorKind.BAD_REQUEST, f"sensitivity {sensitivity} is outside 0..1",
                           "use 0 (only obvious damage) to 1 (everything suspicious); 0.5 is the default")
    try:
        k = Kinds(kinds)
    except ValueError:
        raise EnhanceError(ErrorKind.BAD_REQUEST, f"unknown damage kind {kinds!r}",
                           "use scratches, dust or both") from None
    if region is not None and np.asarray(region).shape[:2] != img.shape[:2]:
        r = np.asarray(region)
        raise EnhanceError(ErrorKind.BAD_REQUEST,
                           f"the selection is {r.shape[1] if r.ndim > 1 else '?'}x{r.shape[0]} but the image is "
                           f"{img.shape[1]}x{img.shape[0]}", "pass a selection mask of the image's size")
    return k


def _selection(region: np.ndarray) -> np.ndarray:
    """The selection as float32 HxW in 0..1."""
    sel = np.asarray(region)
    if sel.ndim == 3:
        sel = sel[:, :, 0]
    if sel.dtype == bool:
        return sel.astype(np.float32)
    if sel.dtype == np.uint8:
        return sel.astype(np.float32) / 255.0
    if sel.dtype == np.uint16:
        return sel.astype(np.float32) / 65535.0
    return np.clip(np.nan_to_num(sel.astype(np.float32)), 0.0, 1.0)


def find_damage(img: np.ndarray, *, sensitivity: float = 0.5, kinds: str = "both",
                region: np.ndarray | None = None) -> np.ndarray:
    """Mask of damaged pixels (uint8 HxW, 255 = damaged) of a float32 HxWxC [0,1] photo (C = 1
    gray, 3 RGB, or 2/4 with alpha, which is ignored; uint8/uint16 samples are scaled to 0..1).  sensitivity 0..1 (0.5 default: thresholds
    x2 at 0, x0.5 at 1); kinds "scratches", "dust" or "both"; region: the selection (uint8, bool
    or float HxW), outside of which nothing is flagged (a feathered selection fades the mask)."""
    k = _check(img, sensitivity, kinds, region)
    if img.dtype == np.uint8 or img.dtype == np.uint16:     # a file's samples: scale to 0..1
        img = img.astype(np.float32) / (255.0 if img.dtype == np.uint8 else 65535.0)
    h, w = img.shape[:2]
    out = np.zeros((h, w), np.uint8)
    sel = None
    y0, y1, x0, x1 = 0, h, 0, w
    if region is not None:
        sel = _selection(region)
        rows = np.flatnonzero(sel.any(axis=1))
        if len(rows) == 0:
            return out
        cols = np.flatnonzero(sel.any(axis=0))
        pad = 64   # the detector's windows need context around the selection
        y0, y1 = max(int(rows[0]) - pad, 0), min(int(rows[-1]) + 1 + pad, h)
        x0, x1 = max(int(cols[0]) - pad, 0), min(int(cols[-1]) + 1 + pad, w)
    gray = _luma(img[y0:y1, x0:x1])
    gain = 2.0 ** ((0.5 - float(sensitivity)) * 2.0)
    scr, spk = _detect(gray, Tuning(), gain)
    _drop_edge_lines(scr, (y0, y1, x0, x1), h, w)
    keep = {Kinds.SCRATCHES: scr, Kinds.DUST: spk, Kinds.BOTH: scr | spk}[k]
    out[y0:y1, x0:x1] = keep.astype(np.uint8) * 255
    if sel is not None:
        out = np.rint(out * sel).astype(np.uint8)
    return out
