"""What an operation module receives: one ``OpContext`` per job.

The engine builds it after validating the request once: the table row, the request with its
options checked and completed with defaults, the colour plane of the image (alpha is split off and
merged back by the engine), other named inputs (a mask), the region to return, the resolved model
and the model service.  An operation returns a ``JobOutput`` whose image is the roi at the
requested scale, with the colour plane's channels and dtype.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ai_enhance_client.ops import OpSpec

from ..errors import Cancelled
from ..jobs import IsCancelled, JobRequest, Progress
from ..models import ModelInfo, ModelService


@dataclass
class OpContext:
    spec: OpSpec
    req: JobRequest
    image: np.ndarray                        # colour plane: HxWx1 or HxWx3, u8 / u16 / f32
    roi: tuple[int, int, int, int]           # (x, y, w, h) of the part to return
    models: ModelService
    progress: Progress
    is_cancelled: IsCancelled
    model: ModelInfo | None = None           # resolved by the engine (None: the op needs none)
    inputs: dict[str, np.ndarray] = field(default_factory=dict)   # further named inputs
    ops: dict = field(default_factory=dict)  # the registry: a chain of operations calls its steps

    @property
    def options(self) -> dict:
        return self.req.options

    @property
    def scale(self) -> int:
        return int(self.req.scale)

    def check_cancel(self) -> None:
        if self.is_cancelled():
            raise Cancelled()

    def crop(self) -> np.ndarray:
        """The roi of the colour plane (a view)."""
        x, y, w, h = self.roi
        return self.image[y:y + h, x:x + w]
