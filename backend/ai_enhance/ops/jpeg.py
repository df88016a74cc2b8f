"""JPEG Cleanup: FBCNN (or another restoration model).  ``quality`` 0 lets FBCNN estimate the
compression per tile; the estimate (mean over tiles, weighted by area) is reported in the result
info and the layer name."""
from __future__ import annotations

from ..jobs import JobOutput
from .context import OpContext
from .image_model import run_model


def run(ctx: OpContext) -> JobOutput:
    seen: list[float] = []

    def on_info(info: dict) -> None:
        q = info.get("quality")
        if isinstance(q, (int, float)):
            seen.append(float(q))

    out = run_model(ctx, scale=1, on_info=on_info)
    q = int(ctx.options.get("quality") or 0)
    if q:
        out.info["quality"] = q
    elif seen:
        out.info["quality"] = int(round(sum(seen) / len(seen)))
        out.info["quality_estimated"] = True
    return out
