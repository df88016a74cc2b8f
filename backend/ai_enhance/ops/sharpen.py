"""Sharpen / Deblur: a deblurring model, or a super-resolution model run at the same size (the
model enlarges, its output is area-averaged back: sharper and cleaner than the input)."""
from __future__ import annotations

from ..jobs import JobOutput
from .context import OpContext
from .image_model import run_model


def run(ctx: OpContext) -> JobOutput:
    return run_model(ctx, scale=1)
