"""The post-processing stage: every operation's output passes through ``run`` exactly once, after
the operation and before alpha is merged back.  The stage sees the operation's input (the roi and
its context), its output and masks, and the request's ``post`` parameters (declared in the
operation table, validated by the engine).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..jobs import JobOutput


@dataclass
class PostInput:
    source: np.ndarray                  # the colour plane the operation saw (native dtype)
    roi: tuple[int, int, int, int]      # the part of ``source`` the output covers
    scale: int
    params: dict                        # validated `post` parameters


def run(inp: PostInput, out: JobOutput) -> JobOutput:
    """The output after the stage (identity while no post parameter is declared)."""
    return out
