"""The operations: one module per row of the operation table (``ai_enhance_client.ops``).

``REGISTRY`` maps each operation name to its ``run(ctx: OpContext) -> JobOutput``; a test checks
that it equals the table.  Importing this package is cheap: modules import torch and OpenCV only
inside their functions.
"""
from __future__ import annotations

from typing import Callable

from ..jobs import JobOutput
from . import denoise, faces, jpeg, noop, sharpen, upscale
from .context import OpContext

Run = Callable[[OpContext], JobOutput]

REGISTRY: dict[str, Run] = {
    "upscale": upscale.run,
    "faces": faces.run,
    "denoise": denoise.run,
    "sharpen": sharpen.run,
    "jpeg": jpeg.run,
    "noop": noop.run,
}

__all__ = ["REGISTRY", "OpContext", "Run"]
