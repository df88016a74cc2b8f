"""Fidelity: how much the result must agree with the input it was made from.

``strength`` 0..1 blends linearly between the model's output as is (0) and the *consistent*
result (1):

- Upscales (scale > 1): the consistent result is the model's output corrected by iterative
  back-projection until its area downscale (`resample.down`) equals the input: each round
  measures the residual ``src - down(x)`` at input size, spreads it back with the smooth right
  inverse of the downscale (`resample.lift`: bilinear, prefiltered so that one round fixes
  nearly all of it) and clips to 0..1.  Clipping is why there are several rounds (alternating
  projections onto "consistent" and "in range"); the image border is the other reason (the
  prefilter is exact only away from it).  What the model invented *inside* each input pixel's
  footprint (texture finer than the input could show) stays; whatever changes the input's own
  pixels (a drifted tone, an "8" drawn as a "B" at the input's scale) is pulled back.
- Same-size operations (scale 1): the consistent result keeps the input's low-frequency band
  (Gaussian, `SAME_SIZE_SIGMA` px) and the model's detail above it; in between, that band is
  kept in proportion.

Because the blend is linear, the remaining residual is ``(1 - strength)`` times the model's, so
consistency in dB rises monotonically with the dial (+6 dB at 0.5).
"""
from __future__ import annotations

import numpy as np

from . import _checks, bands, blur, resample

#: Back-projection rounds.  One removes all but ~1e-4 of the residual away from borders and
#: clipped pixels; the others settle those.
ROUNDS = 3
#: Same-size operations: Gaussian sigma (px) of the band that is the input's.
SAME_SIZE_SIGMA = 2.0


def _project(s_: np.ndarray, o: np.ndarray, scale: int, rounds: int) -> np.ndarray:
    """Back-projection of one band: ``o`` corrected until ``down(x) == s_`` (and 0 <= x <= 1)."""
    x = np.clip(o, 0.0, 1.0).astype(np.float32)
    for _ in range(rounds):
        x += resample.lift(s_ - resample.down(x, scale), scale)
        np.clip(x, 0.0, 1.0, out=x)
    return x


def consistent(src: np.ndarray, out: np.ndarray, scale: int, *, rounds: int = ROUNDS,
               rows: int | None = None) -> np.ndarray:
    """``out`` corrected until ``down(result) == src`` (upscales): fidelity 1."""
    return apply(src, out, scale, 1.0, rounds=rounds, rows=rows)


def apply(src: np.ndarray, out: np.ndarray, scale: int, strength: float, *,
          rounds: int = ROUNDS, rows: int | None = None) -> np.ndarray:
    """The result at fidelity ``strength`` (0 = ``out`` as is, 1 = consistent with ``src``)."""
    _checks.pair(src, out, scale)
    t = float(np.clip(strength, 0.0, 1.0))
    if t == 0.0:
        return np.clip(out, 0.0, 1.0).astype(np.float32)
    if scale == 1:
        reach = blur.radius(SAME_SIZE_SIGMA)

        def same(b: bands.Band) -> np.ndarray:
            o = b.out(out)
            r = blur.gaussian(b.src(src) - o, SAME_SIZE_SIGMA)
            return np.clip(o + np.float32(t) * r, 0.0, 1.0)

        return bands.run(same, src.shape[0], 1, reach, out.shape, rows=rows)

    # each round reads LIFT_REACH input rows beyond the rows it fixes
    reach = rounds * resample.LIFT_REACH + 1

    def band(b: bands.Band) -> np.ndarray:
        o = b.out(out)
        x = _project(b.src(src), o, scale, rounds)
        if t < 1.0:
            o = np.clip(o, 0.0, 1.0)
            x -= o
            x *= np.float32(t)
            x += o
        return x

    return bands.run(band, src.shape[0], scale, reach, out.shape, rows=rows)
