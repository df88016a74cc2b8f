"""The operations: one module per row of the operation table (``ai_enhance_client.ops``).

``REGISTRY`` maps each operation name to its ``run(ctx: OpContext) -> JobOutput``; a test checks
that it equals the table.  Importing this package is cheap: modules import torch and OpenCV only
inside their functions.
"""
from __future__ import annotations

from typing import Callable

from ..jobs import JobOutput
from . import colorize, denoise, faces, find_damage, inpaint, jpeg, noop, restore_old_photo, sharpen, upscale
from .context import OpContext

Run = Callable[[OpContext], JobOutput]

REGISTRY: dict[str, Run] = {
    "upscale": upscale.run,
    "faces": faces.run,
    "denoise": denoise.run,
    "sharpen": sharpen.run,
    "jpeg": jpeg.run,
    "find-damage": find_damage.run,
    "inpaint": inpaint.run,
    "colorize": colorize.run,
    "restore-old-photo": restore_old_photo.run,
    "noop": noop.run,
}

__all__ = ["REGISTRY", "OpContext", "Run"]
