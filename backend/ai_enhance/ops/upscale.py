"""Upscale: a super-resolution model (or a same-size restoration model at x1) over the region."""
from __future__ import annotations

from ..jobs import JobOutput
from .context import OpContext
from .image_model import run_model


def run(ctx: OpContext) -> JobOutput:
    return run_model(ctx)
