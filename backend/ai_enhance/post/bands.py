"""Horizontal bands with a halo, so that local image maths runs on huge results in bounded memory.

A post-processing result can be far larger than its input (a 12 MP photo at x4 is 192 MP, 2.3 GB
as float32 RGB).  Every function here whose maths is local (blurs, resampling, a few rounds of
back-projection) is written for one *band* of input rows plus ``halo`` rows of context on each
side, and `run` stitches the kept rows together.  As long as ``halo`` covers the reach of the
maths, each kept row sees exactly the neighbourhood it would see in the whole image, so the banded
result equals the whole-image result (tests check this); the image's own top and bottom edges are
the same in both, which is why the border handling of the filters does not matter.

Rows are counted at INPUT resolution; a band of input rows ``[y0, y1)`` covers output rows
``[y0*scale, y1*scale)``, so integer-scale operators (block means, their adjoints) never straddle
a band edge.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np

#: Output pixels per band when the caller does not say: a few float32 temporaries of this size
#: (about 48 MB each for RGB) are what the stage adds on top of its result.
DEFAULT_BAND_PIXELS = 4_000_000


@dataclass(frozen=True)
class Band:
    """Input rows ``[y0, y1)`` are kept; ``[e0, e1)`` (the kept rows plus the halo, clipped to the
    image) are what the band function may read."""

    y0: int
    y1: int
    e0: int
    e1: int
    scale: int

    def src(self, a: np.ndarray) -> np.ndarray:
        """The rows of an input-resolution array this band may read."""
        return a[self.e0: self.e1]

    def out(self, a: np.ndarray) -> np.ndarray:
        """The rows of an output-resolution array this band may read."""
        return a[self.e0 * self.scale: self.e1 * self.scale]

    def keep_src(self, r: np.ndarray) -> np.ndarray:
        """From an input-resolution band result, the rows that belong to this band."""
        return r[self.y0 - self.e0: self.y1 - self.e0]

    def keep_out(self, r: np.ndarray) -> np.ndarray:
        """From an output-resolution band result, the rows that belong to this band."""
        s = self.scale
        return r[(self.y0 - self.e0) * s: (self.y1 - self.e0) * s]

    @property
    def rows(self) -> int:
        return self.e1 - self.e0


def band_rows(width_out: int, scale: int, halo: int, pixels: int = DEFAULT_BAND_PIXELS) -> int:
    """Kept input rows per band: about ``pixels`` output pixels, but at least ``2 * halo`` rows so
    that the halo (computed twice, once per neighbour) stays a minority of the work."""
    per_row = max(1, width_out * scale)
    return max(1, 2 * halo, pixels // per_row)


def iter_bands(height: int, scale: int, halo: int, rows: int) -> Iterator[Band]:
    """Bands of ``rows`` kept input rows (the last may be shorter) covering ``[0, height)``."""
    if rows < 1:
        raise ValueError("a band needs at least one row")
    for y0 in range(0, height, rows):
        y1 = min(height, y0 + rows)
        yield Band(y0, y1, max(0, y0 - halo), min(height, y1 + halo), scale)


def run(fn: Callable[[Band], np.ndarray], height: int, scale: int, halo: int,
        out_shape: tuple[int, ...], *, dtype=np.float32, rows: int | None = None,
        at_output: bool = True) -> np.ndarray:
    """Call ``fn(band)`` for each band and assemble the kept rows into a new array.

    ``fn`` returns its result for all rows it was given (``band.rows`` input rows, or
    ``band.rows * scale`` output rows when ``at_output``); ``run`` cuts off the halo.
    ``rows=None`` sizes bands by `band_rows`; ``rows >= height`` is the whole image in one call.
    """
    result = np.empty(out_shape, dtype)
    if rows is None:
        rows = band_rows(out_shape[1] if at_output else out_shape[1] * scale, scale, halo)
    k = scale if at_output else 1
    for b in iter_bands(height, scale, halo, rows):
        r = fn(b)
        result[b.y0 * k: b.y1 * k] = b.keep_out(r) if at_output else b.keep_src(r)
    return result
