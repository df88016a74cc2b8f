"""Inpaint: fill the masked pixels (input "mask": GIMP's selection, the CLI's --mask) from their
surroundings, piece by piece (``imaging.inpaint.plan_components``: each group of holes with its
context, big ones tiled), with a model (LaMa, MAT: adapters take ``forward(x, options, mask)``) or
the built-in classical method (OpenCV, ``imaging.inpaint``) when none is installed.  Every pixel
outside the mask comes back unchanged; a soft (feathered) mask is filled wherever it is above 0:
softness is the layer mask's business."""
from __future__ import annotations

import time

import numpy as np

from ai_enhance_client.protocol import ErrorKind

from ..errors import EnhanceError
from ..imaging.inpaint import Coverage, inpaint_classical, mask_coverage, plan_components, validate_mask
from ..jobs import JobOutput
from ..pixels import from_unit_float, to_unit_float
from .context import OpContext
from .image_model import load

#: Context around each hole the model sees, and the largest crop it gets (LaMa is trained at 512).
MODEL_CONTEXT = 64
MODEL_MAX_SIDE = 512


def run(ctx: OpContext) -> JobOutput:
    t0 = time.monotonic()
    holes = validate_mask(ctx.inputs["mask"], ctx.image.shape[:2]) > 0
    img = to_unit_float(ctx.image)
    coverage = mask_coverage(holes.astype(np.uint8) * 255)
    x, y, w, h = ctx.roi
    info = {"model": ctx.model.id, "model_name": ctx.model.name}
    if coverage is Coverage.EMPTY:
        info["message"] = "the selection is empty: nothing to fill"
        filled = img
    elif ctx.model.builtin:
        ctx.progress(0.0, "filling (classical)")
        filled = inpaint_classical(img, holes.astype(np.uint8) * 255)
        info["message"] = "filled with the built-in classical method (install big-lama for better fills)"
    else:
        filled = _with_model(ctx, img, holes)
        info["message"] = f"filled with {ctx.model.name}"
    ctx.progress(1.0, "done")
    out = from_unit_float(filled[y:y + h, x:x + w], ctx.image.dtype)
    keep = ~holes[y:y + h, x:x + w]
    out[keep] = ctx.crop()[keep]            # bit for bit outside the mask, whatever the route
    info["filled_pixels"] = int(holes[y:y + h, x:x + w].sum())
    info["seconds"] = round(time.monotonic() - t0, 3)
    return JobOutput(out, info=info)


def _with_model(ctx: OpContext, img: np.ndarray, holes: np.ndarray) -> np.ndarray:
    import torch

    lm = load(ctx, ctx.model)
    if not getattr(lm.forward, "takes_mask", False):
        raise EnhanceError(ErrorKind.UNSUPPORTED, f"{ctx.model.id} is not an inpainting model",
                           "choose big-lama, mat-places512 or classical")
    work = img.copy()
    remaining = holes.copy()
    regions = plan_components(remaining, context=MODEL_CONTEXT, max_side=MODEL_MAX_SIDE)
    dtype = torch.float16 if lm.dtype == "float16" else torch.float32
    with ctx.models.using(lm):
        for i, r in enumerate(regions):
            ctx.check_cancel()
            ctx.progress(i / max(1, len(regions)), f"filling part {i + 1} of {len(regions)}")
            cy, cx = r.crop.slices
            todo = np.zeros((r.crop.h, r.crop.w), bool)
            fy = slice(r.fill.y0 - r.crop.y0, r.fill.y1 - r.crop.y0)
            fx = slice(r.fill.x0 - r.crop.x0, r.fill.x1 - r.crop.x0)
            todo[fy, fx] = remaining[r.fill.slices]
            if not todo.any():
                continue
            crop = work[cy, cx]
            rgb = crop if crop.shape[2] == 3 else np.repeat(crop, 3, axis=2)
            xt = torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)))[None].to(lm.device, dtype)
            mt = torch.from_numpy(remaining[cy, cx].astype(np.float32))[None, None].to(lm.device, dtype)
            y_ = lm.forward(xt, ctx.options, mt)[0].float().clamp(0, 1).cpu().numpy().transpose(1, 2, 0)
            if crop.shape[2] == 1:
                y_ = (y_ @ np.array([0.2126, 0.7152, 0.0722], np.float32))[:, :, None]
            crop[todo] = y_[todo]
            remaining[cy, cx][todo] = False
    return work
