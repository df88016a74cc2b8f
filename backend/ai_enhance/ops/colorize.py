"""Colorize: a colourising model (DDColor) guesses the colours; the result keeps the photo's
luminance exactly (only a*b* come from the model: ``imaging.colorize.combine_color``, at full
resolution from the model's prediction at its own size), with ``saturation`` (0 = gray, 1 = as
predicted, 2 = twice).  In GIMP the layer is in LCh colour mode over the untouched tones."""
from __future__ import annotations

import time

import numpy as np

from ..imaging.colorize import combine_color
from ..jobs import JobOutput
from ..pixels import from_unit_float, resize, to_unit_float
from .context import OpContext
from .image_model import load

#: Longest side the model's input is prepared at (the adapter then works at its own size).
MODEL_SIDE = 1024


def run(ctx: OpContext) -> JobOutput:
    import torch

    t0 = time.monotonic()
    lm = load(ctx, ctx.model)
    crop = to_unit_float(ctx.image)                     # the whole frame: colours need context
    h, w = crop.shape[:2]
    k = min(1.0, MODEL_SIDE / max(h, w))
    small = crop if k == 1.0 else resize(crop, max(1, round(w * k)), max(1, round(h * k)), _area())
    rgb = small if small.shape[2] == 3 else np.repeat(small, 3, axis=2)
    ctx.progress(0.1, "guessing the colours")
    ctx.check_cancel()
    x = torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)))[None].to(lm.device)
    with ctx.models.using(lm), torch.inference_mode():
        pred = lm.forward(x.to(torch.float16 if lm.dtype == "float16" else torch.float32), ctx.options)
    pred = pred[0].float().clamp(0, 1).cpu().numpy().transpose(1, 2, 0)
    rx, ry, rw, rh = ctx.roi
    out = combine_color(crop[ry:ry + rh, rx:rx + rw],
                        _crop_pred(pred, ctx.roi, (h, w)), saturation=float(ctx.options["saturation"]))
    if ctx.scale > 1:
        out = resize(out, rw * ctx.scale, rh * ctx.scale)
    ctx.progress(1.0, "done")
    return JobOutput(from_unit_float(out, ctx.image.dtype), info={
        "model": ctx.model.id, "model_name": ctx.model.name, "seconds": round(time.monotonic() - t0, 3)})


def _area() -> int:
    import cv2
    return cv2.INTER_AREA


def _crop_pred(pred: np.ndarray, roi, hw) -> np.ndarray:
    """The roi's part of a prediction made for the whole frame at a smaller size."""
    ph, pw = pred.shape[:2]
    h, w = hw
    x, y, rw, rh = roi
    x0, y0 = int(np.floor(x * pw / w)), int(np.floor(y * ph / h))
    x1, y1 = max(x0 + 1, int(np.ceil((x + rw) * pw / w))), max(y0 + 1, int(np.ceil((y + rh) * ph / h)))
    return pred[y0:y1, x0:x1]
