"""Layer-mask decisions and 8-bit mask arithmetic of the GIMP plug-in.  Pure Python; numpy is used
when it happens to be importable (GIMP's Python on Windows has none), with identical results."""
from __future__ import annotations

from enum import Enum


class MaskSource(str, Enum):
    WHITE = "white"                      # the whole new layer shows
    SELECTION = "selection"              # GIMP's selection, feathering included
    RESULT = "result"                    # a mask the backend returned (e.g. "faces")
    RESULT_X_SELECTION = "result*selection"  # backend mask limited to the selection


def choose_mask(mode: str, *, has_selection: bool, result_masks: tuple[str, ...] | list[str] = (),
                modes: tuple[str, ...] = ("faces", "selection", "full")) -> MaskSource:
    """Which layer mask the new layer gets for the `mask` argument ``mode`` (one of ``modes``, the
    operation's mask choices; ``result_masks`` are the masks the backend returned).

    "selection": the selection (a white mask when nothing is selected: an empty selection would
                 make an all-black mask and hide the layer);
    "full":      always white;
    a name of a backend mask (e.g. "faces"): that mask, multiplied by the selection when there is
                 one; when the backend returned no such mask, like "selection".
    """
    if mode not in modes:
        raise ValueError(f"unknown mask mode {mode!r}; use one of {', '.join(modes)}")
    if mode == "full":
        return MaskSource.WHITE
    if mode in result_masks:
        return MaskSource.RESULT_X_SELECTION if has_selection else MaskSource.RESULT
    return MaskSource.SELECTION if has_selection else MaskSource.WHITE


def multiply(a: bytes, b: bytes) -> bytes:
    """Per-pixel product of two 8-bit masks, rounded: round(a * b / 255)."""
    if len(a) != len(b):
        raise ValueError(f"masks differ in size: {len(a)} vs {len(b)} bytes")
    try:
        import numpy as np
    except ImportError:
        return multiply_pure(a, b)
    x = np.frombuffer(a, np.uint8).astype(np.uint32)
    y = np.frombuffer(b, np.uint8).astype(np.uint32)
    return ((x * y + 127) // 255).astype(np.uint8).tobytes()


def multiply_pure(a: bytes, b: bytes) -> bytes:
    if len(a) != len(b):
        raise ValueError(f"masks differ in size: {len(a)} vs {len(b)} bytes")
    if a.count(255) == len(a):   # fast paths: a full mask leaves the other unchanged
        return bytes(b)
    if b.count(255) == len(b):
        return bytes(a)
    return bytes([(x * y + 127) // 255 for x, y in zip(a, b)])


def coverage(mask: bytes) -> float:
    """Fraction of the area a mask shows (0 = hides everything, 1 = shows everything)."""
    if not mask:
        return 0.0
    try:
        import numpy as np
        return float(np.frombuffer(mask, np.uint8).mean()) / 255.0
    except ImportError:
        return sum(mask) / (255.0 * len(mask))


def opacity_percent(strength: float) -> float:
    """Layer opacity (GIMP's 0..100) for a strength in 0..1 (clamped)."""
    return max(0.0, min(1.0, float(strength))) * 100.0
