"""The change map: where, and how much, the result departs from what the input supports.

- Upscales: the CIEDE2000 difference between the input and the result downscaled to the input's
  size (`resample.down`): detail the model added *inside* an input pixel is supported (it
  averages back to the input), whereas a changed shape, tone or colour is not.
- Same size: the CIEDE2000 difference between input and result, both blurred by `SIGMA` px
  first, so that removed noise (which averages out) reads as low and a changed feature as high.

The difference is smoothed (Gaussian, `SIGMA` input px), brought to the output's size (bilinear)
and mapped to 0..255 on a FIXED perceptual scale, never per-image min/max, so two runs, two
models or two settings compare directly:

    value = 255 * (1 - exp(-dE / REF))       REF = 6

    dE 1 (just noticeable) -> 39,  dE 2 -> 72,  dE 3 -> 100,  dE 5 -> 144,  dE 10 -> 207,
    dE 20 -> 246.
"""
from __future__ import annotations

import cv2
import numpy as np

from . import _checks, bands, blur, color, resample

#: Smoothing of the map (Gaussian sigma, input px).
SIGMA = 1.0
#: dE2000 that maps to 255 * (1 - 1/e) = 161.
REF = 6.0


def to_u8(de: np.ndarray) -> np.ndarray:
    """The fixed mapping from dE2000 to 0..255 (see module doc)."""
    return np.round(255.0 * (1.0 - np.exp(-np.maximum(de, 0.0) / REF))).astype(np.uint8)


def change_map(src: np.ndarray, out: np.ndarray, scale: int, *,
               rows: int | None = None) -> np.ndarray:
    """uint8 HxW at the output's size, 255 = most changed (see module doc for the scale)."""
    _checks.pair(src, out, scale)
    reach = 2 * blur.radius(SIGMA) + 2

    def band(b: bands.Band) -> np.ndarray:
        s_ = b.src(src)
        o = b.out(out)
        if scale > 1:
            de = color.delta_e2000(color.srgb_to_lab(s_), color.srgb_to_lab(resample.down(o, scale)))
        else:
            de = color.delta_e2000(color.srgb_to_lab(blur.gaussian(s_, SIGMA)),
                                   color.srgb_to_lab(blur.gaussian(o, SIGMA)))
        de = blur.gaussian(de.astype(np.float32), SIGMA)
        m = to_u8(de)[..., None]
        if scale > 1:
            # bilinear on u8 needs no float copy of the output-sized band
            m = np.ascontiguousarray(m)
            m = cv2.resize(m, (m.shape[1] * scale, m.shape[0] * scale), interpolation=cv2.INTER_LINEAR)
        return m.reshape(o.shape[0], o.shape[1])

    return bands.run(band, src.shape[0], scale, reach, out.shape[:2], dtype=np.uint8, rows=rows)
