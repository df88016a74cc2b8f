"""Inpainting without a model, and the piecewise plan that any inpainter (this one or a network
such as LaMa) uses to fill big masks on big images.

- `validate_mask` turns whatever mask arrived (bool, uint8, uint16, float; HxW or HxWx1) into a
  uint8 HxW map and refuses, with a one-line reason and a hint, a mask of the wrong size or one
  that covers the whole image.  `mask_coverage` says whether there is anything to fill.
- `plan_components` groups the mask's connected components into crops: the mask's bounding box
  plus `context` pixels of surroundings, components closer than 2*context sharing one crop, and
  groups larger than `max_side` cut into tiles.  Regions are filled in order and a pixel filled by
  an earlier region counts as known for later ones, so a hole larger than a tile is filled from
  its border inwards.
- `inpaint_classical` fills each region with OpenCV's fast-marching inpainting (Telea) on float32
  single channels: no 8-bit round trip, so 16-bit and float images keep their precision, and
  only masked pixels are ever written: every pixel where the mask is 0 is returned bit-identical.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import cv2
import numpy as np

from ai_enhance.errors import EnhanceError
from ai_enhance_client.protocol import ErrorKind

EMPTY_MASK_NOTE = "the mask is empty: nothing to fill, the image is unchanged"
RADIUS = 5          # Telea's neighbourhood (px); thin marks need little, wider ones blur less with more
# OpenCV's float Telea is off by about one unit of the value scale (measured: at 0..1 a filled
# ramp is off by up to 1.4, at 0..255 by 0.01*255); at 0..65535 the error is that of the method.
VALUE_SCALE = 65535.0
MAX_SIDE = 1024     # crop side for the classical route; cost grows with the crop, not the image


class Coverage(str, Enum):
    EMPTY = "empty"        # nothing to fill
    PARTIAL = "partial"    # the normal case
    FULL = "full"          # nothing left to fill from


@dataclass(frozen=True)
class Box:
    """Rows y0:y1, columns x0:x1."""
    y0: int
    x0: int
    y1: int
    x1: int

    @property
    def h(self) -> int:
        return self.y1 - self.y0

    @property
    def w(self) -> int:
        return self.x1 - self.x0

    @property
    def slices(self) -> tuple[slice, slice]:
        return slice(self.y0, self.y1), slice(self.x0, self.x1)

    def grow(self, by: int, h: int, w: int) -> Box:
        return Box(max(self.y0 - by, 0), max(self.x0 - by, 0), min(self.y1 + by, h), min(self.x1 + by, w))

    def contains(self, other: Box) -> bool:
        return self.y0 <= other.y0 and self.x0 <= other.x0 and other.y1 <= self.y1 and other.x1 <= self.x1


@dataclass(frozen=True)
class Region:
    """Fill the (still unfilled) mask pixels inside `fill` from the image inside `crop`.  Regions
    of one `group` are tiles of one cluster of mask components, too big for one crop."""
    crop: Box
    fill: Box
    group: int = 0


def _as_u8(mask: np.ndarray) -> np.ndarray:
    m = np.asarray(mask)
    if m.dtype == bool:
        return m.astype(np.uint8) * 255
    top = float(np.nan_to_num(m.max(initial=0)))
    if np.issubdtype(m.dtype, np.integer):
        # 0/1 integer masks are binary, not "fill at 1/255 strength"
        if top <= 1:
            peak = 1.0
        elif m.dtype == np.uint8 or (m.dtype != np.uint16 and top <= 255):
            peak = 255.0
        else:
            peak = 65535.0
    else:
        m = np.nan_to_num(m.astype(np.float32))
        peak = 1.0 if top <= 1.0 else 255.0
    if m.dtype == np.uint8 and peak == 255.0:
        return m
    v = np.clip(np.rint(m.astype(np.float32) * (255.0 / peak)), 0, 255).astype(np.uint8)
    # a faint but non-zero mask value still means "fill" (at that weight)
    v[(v == 0) & (m > 0)] = 1
    return v


def validate_mask(mask: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """The mask as uint8 HxW (0 = keep, 255 = fill, between = fill and blend), for an image of
    `shape` (H, W[, C]).  Raises EnhanceError(BAD_REQUEST) for a mask that cannot be used."""
    m = np.asarray(mask)
    h, w = int(shape[0]), int(shape[1])
    if m.ndim == 3:
        if m.shape[2] in (2, 4):          # gray+alpha / RGBA file: the alpha is not the mask
            m = m[:, :, : m.shape[2] - 1]
        m = m.max(axis=2) if m.shape[2] > 1 else m[:, :, 0]
    if m.ndim != 2:
        raise EnhanceError(ErrorKind.BAD_REQUEST, f"the mask has shape {m.shape}; a mask is one channel, HxW",
                           "pass a gray image (white = fill) of the photo's size")
    if m.shape != (h, w):
        raise EnhanceError(ErrorKind.BAD_REQUEST,
                           f"the mask is {m.shape[1]}x{m.shape[0]} but the image is {w}x{h}",
                           "use a mask of the image's size (in GIMP: a selection of this image)")
    v = _as_u8(m)
    if mask_coverage(v) is Coverage.FULL:
        raise EnhanceError(ErrorKind.BAD_REQUEST, "the mask covers the whole image: there is nothing to fill from",
                           "mark only the damaged parts (Find Damage makes such a mask)")
    return v


def mask_coverage(mask: np.ndarray) -> Coverage:
    m = np.asarray(mask)
    if not m.any():
        return Coverage.EMPTY
    if m.all():
        return Coverage.FULL
    return Coverage.PARTIAL


def _tight(m: np.ndarray, box: Box) -> Box | None:
    """Bounding box of the set pixels of m inside box."""
    sub = m[box.slices]
    rows = np.flatnonzero(sub.any(axis=1))
    if len(rows) == 0:
        return None
    cols = np.flatnonzero(sub.any(axis=0))
    return Box(box.y0 + int(rows[0]), box.x0 + int(cols[0]), box.y0 + int(rows[-1]) + 1, box.x0 + int(cols[-1]) + 1)


def plan_components(mask: np.ndarray, *, context: int, max_side: int) -> list[Region]:
    """Crops that together fill every mask pixel: each Region's `fill` box holds mask pixels and
    its `crop` is that box plus `context` px on each side (clipped to the image), at most
    `max_side` px on either side.  Fill boxes are disjoint within a group and may overlap between
    groups; fill them in order, treating pixels already filled as known."""
    m = np.asarray(mask) > 0
    h, w = m.shape
    if context < 0 or max_side < 2 * context + 1:
        raise ValueError(f"max_side {max_side} leaves no room inside a context of {context} px")
    if not m.any():
        return []
    # components closer than 2*context px have overlapping crops: one group, one crop
    k = 2 * context + 1
    grouped = m.astype(np.uint8)
    if context:
        grouped = cv2.dilate(grouped, cv2.getStructuringElement(cv2.MORPH_RECT, (k, k)))
    n, labels, stats, _ = cv2.connectedComponentsWithStats(grouped, connectivity=8)
    cell = max_side - 2 * context
    regions: list[Region] = []
    for i in range(1, n):
        x, y, bw, bh = (int(v) for v in stats[i, :4])
        area = Box(y, x, y + bh, x + bw)
        own = m[area.slices] & (labels[area.slices] == i)
        tight = _tight(own, Box(0, 0, bh, bw))
        if tight is None:   # cannot happen: every group holds mask pixels
            continue
        fill = Box(tight.y0 + y, tight.x0 + x, tight.y1 + y, tight.x1 + x)
        crop = fill.grow(context, h, w)
        if crop.h <= max_side and crop.w <= max_side:
            regions.append(Region(crop, fill, i))
            continue
        for ty in range(fill.y0, fill.y1, cell):
            for tx in range(fill.x0, fill.x1, cell):
                c = Box(ty, tx, min(ty + cell, fill.y1), min(tx + cell, fill.x1))
                local = Box(c.y0 - y, c.x0 - x, c.y1 - y, c.x1 - x)
                t = _tight(own, local)
                if t is not None:
                    f = Box(t.y0 + y, t.x0 + x, t.y1 + y, t.x1 + x)
                    regions.append(Region(f.grow(context, h, w), f, i))
    return regions


def _outside_in(regions: list[Region], remaining: np.ndarray):
    """Regions in fill order: a group's tiles are taken best-known first (re-ranked after each
    fill, from the live `remaining` mask), so a big hole is filled from all its borders inwards
    instead of from one side."""
    groups: dict[int, list[Region]] = {}
    for r in regions:
        groups.setdefault(r.group, []).append(r)
    for tiles in groups.values():
        if len(tiles) == 1:
            yield tiles[0]
            continue
        # tiles that are mostly known (scattered marks) need no order; the few that are mostly
        # hole are re-ranked after each fill
        dense = []
        for r in tiles:
            if remaining[r.crop.slices].mean() < 0.5:
                yield r
            else:
                dense.append(r)
        while dense:
            known = [1.0 - remaining[r.crop.slices].mean() for r in dense]
            yield dense.pop(int(np.argmax(known)))


def _fill_region(work: np.ndarray, remaining: np.ndarray, r: Region) -> None:
    """Telea-fill the still-missing pixels of r.fill in `work` (HxWxC float32) from r.crop, and
    mark them done in `remaining`."""
    cy, cx = r.crop.slices
    fy = slice(r.fill.y0 - r.crop.y0, r.fill.y1 - r.crop.y0)
    fx = slice(r.fill.x0 - r.crop.x0, r.fill.x1 - r.crop.x0)
    todo = np.zeros((r.crop.h, r.crop.w), bool)
    todo[fy, fx] = remaining[r.fill.slices]
    if not todo.any():
        return
    holes = remaining[cy, cx].astype(np.uint8)
    crop = work[cy, cx]
    for c in range(crop.shape[2]):
        ch = np.ascontiguousarray(crop[:, :, c])
        known = ch[holes == 0]
        filled = cv2.inpaint(ch * VALUE_SCALE, holes, RADIUS, cv2.INPAINT_TELEA) * (1.0 / VALUE_SCALE)
        # Telea extrapolates gradients: keep fills inside the range of the known pixels
        if known.size:
            np.clip(filled, known.min(), known.max(), out=filled)
        crop[:, :, c][todo] = filled[todo]
    remaining[r.fill.slices] &= ~todo[fy, fx]


def inpaint_classical(img: np.ndarray, mask: np.ndarray, *, context: int | None = None) -> np.ndarray:
    """Fill the masked pixels of a float32 HxW[xC] image from their surroundings (OpenCV Telea,
    float32, per channel).  mask > 0 = fill; a value below 255 blends the fill with the original
    (soft edges).  Pixels where the mask is 0 come back bit-identical."""
    src = np.asarray(img)
    if src.dtype != np.float32:
        raise EnhanceError(ErrorKind.BAD_REQUEST, f"inpaint works on float32 pixels, got {src.dtype}",
                           "convert the image to float32 in 0..1 first")
    m = validate_mask(mask, src.shape)
    out = src.copy()
    if mask_coverage(m) is Coverage.EMPTY:
        return out
    squeeze = src.ndim == 2
    work = (src[:, :, None] if squeeze else src).copy()
    ctx = max(2 * RADIUS + 2, 16) if context is None else int(context)
    remaining = m > 0
    for r in _outside_in(plan_components(m, context=ctx, max_side=max(MAX_SIDE, 2 * ctx + 64)), remaining):
        _fill_region(work, remaining, r)
    filled = work[:, :, 0] if squeeze else work
    sel = m > 0
    a = m[sel].astype(np.float32) / 255.0
    if not squeeze:
        a = a[:, None]
    # only masked pixels are written; a full-strength pixel takes the fill exactly
    out[sel] = np.where(a >= 1.0, filled[sel], src[sel] + (filled[sel] - src[sel]) * a)
    return out
