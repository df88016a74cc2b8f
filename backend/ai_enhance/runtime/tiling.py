"""Tiles for running an image model on pictures larger than memory allows (pure numpy).

Geometry, per axis (rows and columns are planned independently; a tile is one row span times
one column span):

- The region of interest ``[start, stop)`` (the whole axis when there is no roi) is cut into
  ``n`` nearly equal *cores*.  Neighbouring tiles share ``overlap`` pixels centred on each core
  boundary; there their weights cross-fade with a smoothstep ramp.  Everywhere else a tile's
  weight is exactly 1, and at the roi/image border there is no ramp at all.  The weights of all
  tiles sum to 1 at every pixel (at most two tiles overlap on an axis, and ``r(t) + r(1-t) = 1``
  for the ramp), so blending never darkens or brightens anything.
- Each tile's *support* (where its weight is non-zero) is extended by ``context`` pixels on each
  side, clipped to the image, to form its *extent*: the pixels the model actually sees.  The model
  output in the context margin is thrown away, so the zero padding a network applies at its input
  border never reaches the result: this is what makes tiled and untiled results agree.
- Only tiles whose support meets the roi exist, so a small roi in a big image computes only the
  roi plus its context.

Weights are computed at OUTPUT resolution (``scale`` output pixels per input pixel) so the ramps
are smooth at any scale.  ``RowBlender`` accumulates one row of tiles at a time into a float band
and writes finished rows straight into the caller's output array (any dtype): memory is bounded by
the output array plus one band of tiles, never a full-size float copy of the output.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np


# --------------------------------------------------------------------------- size requirements

@dataclass(frozen=True)
class SizeReq:
    """What input sizes a model accepts (mirrors spandrel's SizeRequirements, no torch needed)."""

    minimum: int = 0
    multiple_of: int = 1
    square: bool = False

    @classmethod
    def of(cls, obj) -> "SizeReq":
        """From a spandrel ``SizeRequirements`` (or anything with the same attributes) or None."""
        if obj is None:
            return cls()
        if isinstance(obj, SizeReq):
            return obj
        return cls(int(getattr(obj, "minimum", 0) or 0), int(getattr(obj, "multiple_of", 1) or 1),
                   bool(getattr(obj, "square", False)))

    def padding(self, height: int, width: int) -> tuple[int, int]:
        """(pad_bottom, pad_right) that make ``height x width`` acceptable."""
        m = max(1, self.multiple_of)
        lo = self.minimum
        if lo % m:
            lo += m - lo % m
        h = max(lo, height)
        w = max(lo, width)
        h = -(-h // m) * m
        w = -(-w // m) * m
        if self.square:
            h = w = max(h, w)
        return h - height, w - width

    def align_tile(self, tile: int) -> int:
        """Largest tile side <= ``tile`` that is a multiple of ``multiple_of`` (at least one step,
        and at least ``minimum``)."""
        m = max(1, self.multiple_of)
        return max(tile - tile % m, m, self.minimum)


def pad_hwc(img: np.ndarray, pad_bottom: int, pad_right: int) -> np.ndarray:
    """Pad an HWC (or HW) array at the bottom and right: reflect as far as the image allows
    (like spandrel and upstream Real-ESRGAN), then repeat the edge for the rest."""
    if pad_bottom <= 0 and pad_right <= 0:
        return img
    h, w = img.shape[:2]
    extra = [(0, 0)] * (img.ndim - 2)
    rb, rr = min(pad_bottom, h - 1), min(pad_right, w - 1)
    if rb or rr:
        img = np.pad(img, [(0, rb), (0, rr), *extra], mode="reflect")
    eb, er = pad_bottom - rb, pad_right - rr
    if eb or er:
        img = np.pad(img, [(0, eb), (0, er), *extra], mode="edge")
    return img


# --------------------------------------------------------------------------- 1-D planning

@dataclass(frozen=True)
class Span:
    """One tile along one axis, in input pixels.

    ext0..ext1  pixels fed to the model (support plus context, clipped to the image)
    sup0..sup1  pixels this tile contributes to (inside the roi)
    ramp0       width of the rising ramp at sup0 (0: hard edge at the roi border)
    ramp1       width of the falling ramp at sup1
    """

    ext0: int
    ext1: int
    sup0: int
    sup1: int
    ramp0: int = 0
    ramp1: int = 0

    @property
    def ext_len(self) -> int:
        return self.ext1 - self.ext0

    @property
    def sup_len(self) -> int:
        return self.sup1 - self.sup0


def plan_axis(length: int, start: int, stop: int, tile: int, context: int, overlap: int,
              align: int = 1) -> list[Span]:
    """Spans covering ``[start, stop)`` of an axis of ``length`` pixels with extents of at most
    ``tile`` pixels.  See the module docstring for the geometry.

    ``align``: every extent starts at a multiple of it (in image coordinates).  Models that
    pixel-unshuffle their input (Real-ESRGAN x2plus) or work in fixed windows (SwinIR, HAT) are
    only translation-equivariant by such multiples: an unaligned tile would see its pixels
    grouped differently from the whole image and leave seams."""
    if not (0 <= start < stop <= length):
        raise ValueError(f"bad interval [{start}, {stop}) on an axis of {length}")
    if tile < 1 or context < 0 or overlap < 0 or align < 1:
        raise ValueError("tile and align must be >= 1, context and overlap >= 0")

    def lo_edge(v: int) -> int:
        v = max(0, v)
        return v - v % align

    e0, e1 = lo_edge(start - context), min(length, stop + context)
    if e1 - e0 <= tile:
        return [Span(e0, e1, start, stop)]
    core_max = tile - 2 * context - overlap - (align - 1)
    if core_max < 1:
        raise ValueError(f"tile {tile} is too small for context {context} and overlap {overlap}")
    n_roi = stop - start
    n = -(-n_roi // core_max)
    bounds = [start + (i * n_roi) // n for i in range(n + 1)]
    min_core = min(b - a for a, b in zip(bounds, bounds[1:]))
    ov = min(overlap, min_core)          # so that no pixel is shared by more than two tiles
    lo, hi = ov // 2, ov - ov // 2
    spans = []
    for i in range(n):
        s0 = bounds[i] - (lo if i > 0 else 0)
        s1 = bounds[i + 1] + (hi if i < n - 1 else 0)
        spans.append(Span(lo_edge(s0 - context), min(length, s1 + context), s0, s1,
                          ov if i > 0 else 0, ov if i < n - 1 else 0))
    return spans


def ramp(n: int) -> np.ndarray:
    """Rising smoothstep over ``n`` samples, at sample centres: r[k] + r[n-1-k] == 1."""
    if n <= 0:
        return np.zeros(0, np.float32)
    t = (np.arange(n, dtype=np.float64) + 0.5) / n
    return (t * t * (3.0 - 2.0 * t)).astype(np.float32)


def axis_weights(span: Span, scale: int = 1) -> np.ndarray:
    """Weights of ``span`` over its support, at output resolution (``sup_len * scale`` values)."""
    n = span.sup_len * scale
    w = np.ones(n, np.float32)
    r0, r1 = span.ramp0 * scale, span.ramp1 * scale
    if r0:
        w[:r0] = ramp(r0)
    if r1:
        w[n - r1:] = (1.0 - ramp(r1).astype(np.float64)).astype(np.float32)
    return w


# --------------------------------------------------------------------------- 2-D planning

@dataclass(frozen=True)
class Tile:
    row: Span
    col: Span
    index: int     # 0-based, row-major
    count: int     # tiles in the plan

    @property
    def extent(self) -> tuple[int, int, int, int]:
        """(y0, y1, x0, x1) of the model input."""
        return self.row.ext0, self.row.ext1, self.col.ext0, self.col.ext1


@dataclass(frozen=True)
class Plan:
    height: int
    width: int
    roi: tuple[int, int, int, int]         # x, y, w, h (input pixels)
    rows: tuple[Span, ...]
    cols: tuple[Span, ...]
    tile: int
    context: int
    overlap: int

    @property
    def count(self) -> int:
        return len(self.rows) * len(self.cols)

    def tiles(self) -> Iterator[Tile]:
        n = self.count
        for i, r in enumerate(self.rows):
            for j, c in enumerate(self.cols):
                yield Tile(r, c, i * len(self.cols) + j, n)

    def output_shape(self, scale: int) -> tuple[int, int]:
        return self.roi[3] * scale, self.roi[2] * scale

    @property
    def computed_pixels(self) -> int:
        """Input pixels the model processes in total (incl. context and overlap)."""
        return sum(r.ext_len for r in self.rows) * sum(c.ext_len for c in self.cols)


def margins_for(tile: int, context: int = 32, overlap: int = 16, align: int = 1) -> tuple[int, int]:
    """Context and overlap for a tile side, shrunk for small tiles so the cores stay >= tile/2
    (minus the alignment slack)."""
    room = max(0, tile - (align - 1))
    c = max(0, min(context, room // 8))
    o = max(0, min(overlap, room // 8))
    return c, o


def plan(height: int, width: int, tile: int, *, context: int = 32, overlap: int = 16,
         roi: tuple[int, int, int, int] | None = None, align: int = 1) -> Plan:
    """A tile plan for an ``height x width`` image; ``tile`` is the largest extent side.
    ``tile <= 0`` means one tile for the whole roi (plus context)."""
    x, y, w, h = roi if roi is not None else (0, 0, width, height)
    if w < 1 or h < 1 or x < 0 or y < 0 or x + w > width or y + h > height:
        raise ValueError(f"roi {roi} is not inside the {width}x{height} image")
    if tile <= 0:
        tile = max(height, width) + 2 * context + align
    rows = plan_axis(height, y, y + h, tile, context, overlap, align)
    cols = plan_axis(width, x, x + w, tile, context, overlap, align)
    return Plan(height, width, (x, y, w, h), tuple(rows), tuple(cols), tile, context, overlap)


# --------------------------------------------------------------------------- accumulation

class RowBlender:
    """Blends tile outputs into ``out`` (shape ``(roi_h*scale, roi_w*scale, C)``, any dtype).

    Feed tiles in plan order with ``add(tile, data)`` where ``data`` is the model output for the
    tile's whole extent at output scale (float, ``ext_h*scale x ext_w*scale x C``).  When a row of
    tiles is complete the finished part of the float band is converted with ``convert`` and
    written into ``out``; rows shared with the next tile row are carried over."""

    def __init__(self, plan_: Plan, scale: int, out: np.ndarray,
                 convert: Callable[[np.ndarray], np.ndarray] | None = None,
                 channels: int | None = None, zeros: Callable | None = None):
        self.plan = plan_
        self.scale = scale
        self.out = out
        self.convert = convert or (lambda a: a)
        oh, ow = plan_.output_shape(scale)
        if out.shape[0] != oh or out.shape[1] != ow:
            raise ValueError(f"output is {out.shape[:2]}, plan needs {(oh, ow)}")
        # channels of the tile data (may differ from ``out``'s: ``convert`` maps between them)
        self.channels = channels or (out.shape[2] if out.ndim == 3 else 1)
        self._row: Span | None = None
        self._band: np.ndarray | None = None
        self._carry: np.ndarray | None = None
        self._row_tiles_left = 0
        self._wx = {c: axis_weights(c, scale) for c in plan_.cols}
        # the float band may live elsewhere (e.g. a torch tensor on a GPU): ``zeros(shape)`` makes
        # it, ``convert`` turns finished rows of it into numpy rows of ``out``'s dtype
        self._zeros = zeros or (lambda shape: np.zeros(shape, np.float32))
        self.rows_written = 0

    def _start_row(self, row: Span) -> None:
        s = self.scale
        self._row = row
        self._band = self._zeros((row.sup_len * s, self.out.shape[1], self.channels))
        if self._carry is not None:
            if row.ramp0 * s != self._carry.shape[0]:
                raise ValueError("tiles fed out of plan order")
            self._band[: self._carry.shape[0]] = self._carry
            self._carry = None
        self._wy = axis_weights(row, s)
        self._row_tiles_left = len(self.plan.cols)

    def _enter_row(self, r) -> None:
        if self._row is None or self._row_tiles_left == 0:
            self._start_row(r)
        elif r != self._row:
            raise ValueError("tiles fed out of plan order")

    def add(self, tile: Tile, data: np.ndarray) -> None:
        """Blend one tile's model output (its whole EXTENT, at output scale) into the result."""
        s = self.scale
        r, c = tile.row, tile.col
        if data.ndim == 2:
            data = data[:, :, None]
        if data.shape[0] != r.ext_len * s or data.shape[1] != c.ext_len * s:
            raise ValueError(f"tile data is {data.shape[:2]}, extent needs "
                             f"{(r.ext_len * s, c.ext_len * s)}")
        self._enter_row(r)   # sets the row weights used just below
        ys, xs = (r.sup0 - r.ext0) * s, (c.sup0 - c.ext0) * s
        part = data[ys: ys + r.sup_len * s, xs: xs + c.sup_len * s]
        self.add_support(tile, part * (self._wy[:, None, None] * self._wx[c][None, :, None]))

    def add_support(self, tile: Tile, part: np.ndarray) -> None:
        """Like ``add`` for data already cropped to the tile's SUPPORT and multiplied by its
        weights (``np.outer(axis_weights(row), axis_weights(col))``), e.g. on a GPU."""
        s = self.scale
        r, c = tile.row, tile.col
        self._enter_row(r)
        if part.ndim == 2:
            part = part[:, :, None]
        if part.shape[0] != r.sup_len * s or part.shape[1] != c.sup_len * s:
            raise ValueError(f"support data is {part.shape[:2]}, needs {(r.sup_len * s, c.sup_len * s)}")
        ox = (c.sup0 - self.plan.roi[0]) * s
        self._band[:, ox: ox + c.sup_len * s] += part
        self._row_tiles_left -= 1
        if self._row_tiles_left == 0:
            self._finish_row()

    def _finish_row(self) -> None:
        s = self.scale
        r, band = self._row, self._band
        keep = r.ramp1 * s
        done = band.shape[0] - keep
        oy = (r.sup0 - self.plan.roi[1]) * s
        self.out[oy: oy + done] = self.convert(band[:done]).reshape(
            (done, *self.out.shape[1:]))
        self.rows_written = oy + done
        tail = band[done:]
        self._carry = (tail.copy() if isinstance(tail, np.ndarray) else tail.clone()) if keep else None
        self._band = None

    @property
    def complete(self) -> bool:
        return self.rows_written == self.out.shape[0] and self._carry is None


def weight_sum(plan_: Plan, scale: int = 1) -> np.ndarray:
    """Sum of all tile weights over the output (for tests and diagnostics): all ones."""
    oh, ow = plan_.output_shape(scale)
    total = np.zeros((oh, ow), np.float64)
    x0, y0 = plan_.roi[0], plan_.roi[1]
    for t in plan_.tiles():
        wy, wx = axis_weights(t.row, scale), axis_weights(t.col, scale)
        oy, ox = (t.row.sup0 - y0) * scale, (t.col.sup0 - x0) * scale
        total[oy: oy + len(wy), ox: ox + len(wx)] += np.outer(wy, wx)
    return total


def default_tile_count(h: int, w: int, tile: int, context: int, overlap: int) -> int:
    """Number of tiles ``plan`` makes for a whole ``h x w`` image (cheap, for progress/estimates)."""
    return len(plan_axis(h, 0, h, tile, context, overlap)) * len(plan_axis(w, 0, w, tile, context, overlap))


__all__ = ["SizeReq", "pad_hwc", "Span", "plan_axis", "ramp", "axis_weights", "Tile", "Plan",
           "margins_for", "plan", "RowBlender", "weight_sum", "default_tile_count"]
