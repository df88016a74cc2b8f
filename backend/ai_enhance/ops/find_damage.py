"""Find Damage: scratches, cracks, dust specks and spots of a scanned photo, by image analysis (no
model to download: ``imaging.damage``).  The result is a mask only, "damage" (255 = damaged), over
the job's region; the detector sees the context around it.  In GIMP it becomes the channel "AI
damage" and the selection (within the selection the user made); the CLI writes it as the image."""
from __future__ import annotations

import time

from ..imaging.damage import find_damage
from ..jobs import JobOutput
from ..pixels import to_unit_float
from .context import OpContext


def run(ctx: OpContext) -> JobOutput:
    t0 = time.monotonic()
    ctx.progress(0.0, "looking for scratches and dust")
    mask = find_damage(to_unit_float(ctx.image), sensitivity=float(ctx.options["sensitivity"]),
                       kinds=str(ctx.options["kinds"]))
    x, y, w, h = ctx.roi
    mask = mask[y:y + h, x:x + w]
    if ctx.scale > 1:
        import cv2
        mask = cv2.resize(mask, (w * ctx.scale, h * ctx.scale), interpolation=cv2.INTER_NEAREST)
    ctx.progress(1.0, "done")
    share = float((mask > 127).mean())
    return JobOutput(None, masks=[("damage", mask)], info={
        "model": ctx.model.id if ctx.model else "damage-analysis", "damaged_fraction": round(share, 5),
        "message": f"{share * 100:.2f} % of the area looks damaged", "seconds": round(time.monotonic() - t0, 3)})
