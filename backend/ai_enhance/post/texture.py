"""Keep texture: the source's fine detail back into restored skin (frequency separation).

Face restorers and denoisers leave skin smooth as plastic: they replace the fine band (pores,
fine lines, grain) with their own, usually nothing.  ``keep`` puts the *source's* fine band back
in place of the model's version of that band, where the mask says skin/face:

- the fine band is ``x - gaussian(x, sigma)`` at the input's resolution (`SIGMA` input px);
- same size (scale 1): ``out + amount * mask * (band(src) - band(out))``;
- upscales: the model's band is read from its output downscaled to the input's size
  (`resample.down`), and the difference is brought up with `resample.lift`; the output's detail
  finer than an input pixel (which the source cannot have) stays the model's.

At amount 1 the band, as the input's resolution sees it, is exactly the source's (noise and
compression artefacts included, which is why the face default is partial); at 0 nothing changes.
"""
from __future__ import annotations

import numpy as np

from . import _checks, bands, blur, resample

#: Gaussian sigma (input px) separating "fine detail" from "form".
SIGMA = 1.5


def _band(x: np.ndarray, sigma: float) -> np.ndarray:
    return x - blur.gaussian(x, sigma)


def keep(src: np.ndarray, out: np.ndarray, scale: int, amount: float,
         mask: np.ndarray | None, *, sigma: float = SIGMA, rows: int | None = None) -> np.ndarray:
    """``out`` with ``amount`` (0..1) of the source's fine band restored where ``mask`` (HxW at
    output size, 0..1; None = everywhere) is set."""
    _checks.pair(src, out, scale)
    _checks.mask(mask, out)
    a = float(np.clip(amount, 0.0, 1.0))
    if a == 0.0:
        return np.clip(out, 0.0, 1.0).astype(np.float32)
    reach = blur.radius(sigma) + (resample.LIFT_REACH if scale > 1 else 0) + 1

    def band(b: bands.Band) -> np.ndarray:
        s_ = b.src(src)
        o = b.out(out)
        lowres_o = resample.down(o, scale) if scale > 1 else o
        d = _band(s_, sigma) - _band(lowres_o, sigma)
        corr = resample.lift(d, scale) if scale > 1 else d
        w = np.float32(a) if mask is None else (np.float32(a) * b.out(mask))[..., None]
        return np.clip(o + w * corr, 0.0, 1.0)

    return bands.run(band, src.shape[0], scale, reach, out.shape, rows=rows)
