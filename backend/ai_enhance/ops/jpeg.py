"""JPEG Cleanup: FBCNN (or another restoration model).  ``quality`` 0 = automatic: a model that can
estimate the compression (FBCNN: its quality head, ``forward.estimate_quality``) is asked ONCE on
the region (a centre crop of at most ``ESTIMATE_SIDE`` px: JPEG damage is uniform over a picture)
and that quality is given to every tile, so all tiles are cleaned alike; the estimate is reported
in the result info and the layer name."""
from __future__ import annotations

import numpy as np

from ..jobs import JobOutput
from ..pixels import convert_channels, to_unit_float
from .context import OpContext
from .image_model import load, run_model

ESTIMATE_SIDE = 1024


def _centre(a: np.ndarray, side: int) -> np.ndarray:
    h, w = a.shape[:2]
    y, x = max(0, (h - side) // 2), max(0, (w - side) // 2)
    return a[y:y + side, x:x + side]


def run(ctx: OpContext) -> JobOutput:
    import torch

    options = dict(ctx.options)
    estimated = False
    if not options.get("quality"):
        lm = load(ctx, ctx.model, options)
        estimate = getattr(lm.forward, "estimate_quality", None)
        if estimate is not None:
            ctx.progress(0.0, "measuring the JPEG damage")
            crop = convert_channels(to_unit_float(_centre(ctx.crop(), ESTIMATE_SIDE)), lm.input_channels)
            x = torch.from_numpy(np.ascontiguousarray(crop.transpose(2, 0, 1)))[None]
            dtype = torch.float16 if lm.dtype == "float16" else torch.float32
            options["quality"] = int(estimate(x.to(device=lm.device, dtype=dtype)))
            estimated = True
    out = run_model(ctx, scale=1, options=options)
    if options.get("quality"):
        out.info["quality"] = int(options["quality"])
        out.info["quality_estimated"] = estimated
    return out
