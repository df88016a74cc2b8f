"""What a job is, for every layer of the backend: the request, the output, the callbacks.

A leaf module (no imports from the rest of the backend).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

Progress = Callable[[float, str], None]
IsCancelled = Callable[[], bool]


@dataclass
class JobRequest:
    op: str
    model: str = ""                          # "" = the operation's best installed model
    scale: int = 1
    tile: int = 0
    roi: tuple[int, int, int, int] | None = None   # (x, y, w, h) in input pixels
    options: dict = field(default_factory=dict)    # the operation's parameters
    post: dict = field(default_factory=dict)       # the post-processing stage's parameters
    reuse: str = ""                                # re-tune: the raw output to start from (info["raw_key"])


@dataclass
class JobOutput:
    image: np.ndarray | None                 # None: the operation returns masks only
    masks: list[tuple[str, np.ndarray]] = field(default_factory=list)   # (name, uint8 HxW)
    info: dict = field(default_factory=dict)
    #: further images the client stacks as layers (name, HxWxC in the image's dtype), e.g. "grain"
    layers: list[tuple[str, np.ndarray]] = field(default_factory=list)

    def mask(self, name: str) -> np.ndarray | None:
        return next((m for n, m in self.masks if n == name), None)
