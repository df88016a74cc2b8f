"""Argument checks shared by the post-processing functions (a caller's bug, never the user's)."""
from __future__ import annotations

import numpy as np

from ai_enhance.errors import EnhanceError
from ai_enhance_client.protocol import ErrorKind


def image(name: str, a: np.ndarray) -> None:
    if not isinstance(a, np.ndarray) or a.ndim != 3 or a.shape[2] not in (1, 3):
        shape = getattr(a, "shape", type(a).__name__)
        raise EnhanceError(ErrorKind.INTERNAL, f"post-processing got {name} of shape {shape}",
                           "pass float32 HxWx1 or HxWx3 arrays in 0..1")


def pair(src: np.ndarray, out: np.ndarray, scale: int) -> None:
    """``out`` must be exactly ``scale`` times ``src`` with the same channels."""
    image("src", src)
    image("out", out)
    if int(scale) != scale or scale < 1:
        raise EnhanceError(ErrorKind.INTERNAL, f"post-processing got scale {scale}",
                           "the scale must be an integer >= 1")
    h, w, c = src.shape
    if out.shape != (h * scale, w * scale, c):
        raise EnhanceError(ErrorKind.INTERNAL,
                           f"post-processing got src {src.shape} and out {out.shape} at scale {scale}",
                           "out must be src's size times the scale, with the same channels")


def mask(m: np.ndarray | None, out: np.ndarray) -> None:
    if m is not None and (m.ndim != 2 or m.shape != out.shape[:2]):
        raise EnhanceError(ErrorKind.INTERNAL, f"post-processing got a mask of shape {m.shape}",
                           f"the mask must be HxW at the output's size {out.shape[:2]}")
