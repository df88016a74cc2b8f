"""Restore Old Photo: Find Damage -> Inpaint -> Denoise -> Restore Faces -> (optional) Colorize in
one job, each step on the previous step's result, and each step's result returned as its own
layer (result ``layers``: "inpaint", "denoise", "faces", "colorize"; their masks "damage" and
"faces") so that GIMP stacks them in a group the retoucher can toggle, mask or fade step by step.
The image is the flattened result (what the CLI writes).  A step whose model is not installed is
skipped and named in the result's message; Find Damage and the classical inpainting need none.
"""
from __future__ import annotations

import dataclasses
import time

import numpy as np

from ai_enhance_client import ops as optable
from ai_enhance_client.params import Stage, validate

from ..errors import EnhanceError
from ..jobs import JobOutput, JobRequest
from .context import OpContext

#: (step, operation, the parameter that switches it on, layer mask, layer mode)
STEPS = (
    ("inpaint", "inpaint", "repair-damage", "damage", "normal"),
    ("denoise", "denoise", "denoise", "", "normal"),
    ("faces", "faces", "restore-faces", "faces", "normal"),
    ("colorize", "colorize", "colorize", "", "lch-color"),
)


def run(ctx: OpContext) -> JobOutput:
    t0 = time.monotonic()
    h, w = ctx.image.shape[:2]
    frame = (0, 0, w, h)
    current = ctx.image
    x, y, rw, rh = ctx.roi
    layers, masks, steps, skipped = [], [], [], []
    wanted = [s for s in STEPS if ctx.options.get(s[2])]
    share = 1.0 / (len(wanted) + 1)
    done = [0]

    def sub(op: str, model, options: dict, inputs: dict | None = None) -> OpContext:
        spec = optable.BY_NAME[op]
        opts = validate(spec.params_of(Stage.OPTION), options, what=op)
        base = done[0] * share

        def progress(f: float, text: str) -> None:
            ctx.progress(min(1.0, base + share * f), f"{op}: {text}")
        return dataclasses.replace(ctx, spec=spec, req=JobRequest(op, model.id if model else "", 1, ctx.req.tile,
                                                                   None, opts),
                                   image=current, roi=frame, model=model, inputs=inputs or {},
                                   progress=progress)

    # 1. find the damage (no model needed)
    found = ctx.ops["find-damage"](sub("find-damage", None, {"sensitivity": ctx.options["sensitivity"]}))
    damage = found.mask("damage")
    done[0] += 1
    masks.append(("damage", damage[y:y + rh, x:x + rw]))
    for name, op, switch, mask_name, mode in wanted:
        if name == "inpaint" and not damage.any():
            skipped.append("inpaint (no damage found)")
            done[0] += 1
            continue
        try:
            model = ctx.models.store.best_for(optable.BY_NAME[op])
            if not model.builtin:
                ctx.models.store.resolve(model.id)
        except EnhanceError as e:
            skipped.append(f"{name} ({e.message})")
            done[0] += 1
            continue
        inputs = {"mask": damage} if op == "inpaint" else None
        try:
            out = ctx.ops[op](sub(op, model, {}, inputs))
        except EnhanceError as e:
            if e.kind.value not in ("model_missing", "unknown_model"):
                raise
            skipped.append(f"{name} ({e.message})")       # e.g. no face detector installed
            done[0] += 1
            continue
        current = out.image
        layers.append((name, current[y:y + rh, x:x + rw]))
        m = out.mask(mask_name) if mask_name and mask_name != "damage" else None
        if m is not None:
            masks.append((mask_name, m[y:y + rh, x:x + rw]))
        steps.append({"step": name, "model": model.id, "model_name": model.name, "layer": name,
                      "mask": mask_name or "full", "mode": mode})
        done[0] += 1
    ctx.progress(1.0, "done")
    msg = ", ".join(s["step"] for s in steps) or "nothing"
    msg = f"restored: {msg}" + (f"; skipped: {'; '.join(skipped)}" if skipped else "")
    return JobOutput(np.ascontiguousarray(current[y:y + rh, x:x + rw]), masks=masks, layers=layers,
                     info={"steps": steps, "skipped": skipped, "message": msg,
                           "seconds": round(time.monotonic() - t0, 3)})
