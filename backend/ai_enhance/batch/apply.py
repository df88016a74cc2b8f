"""Applying a recipe to one image, as the GIMP layers would look.

GIMP's picture after the recipe's filters is a stack: the photo at the bottom, then one layer per
step, each at its strength (opacity), through its mask, in its layer mode.  ``apply_recipe`` builds
the same stack step by step and flattens it as GIMP does (``composite``):

- a step's input is its ``source``: the photo ("image"), the picture so far ("composite", what
  GIMP's Layer > New from Visible gives) or an earlier step's result layer (its raw pixels, as when
  the filter ran on that layer in GIMP);
- a step with scale > 1 enlarges everything below it first, like the plug-in enlarges the image;
- the layer mask is the backend mask the step names (faces, ...) or none (mask "full"/"selection":
  outside GIMP there is no selection).

The model runs through ``run_step(step, pixels) -> StepOutput``: the local backend (a Client) or an
in-process Engine (Ray actors); see runners.py.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ai_enhance_client.ops import LayerMode
from ai_enhance_client.recipes import SOURCE_COMPOSITE, SOURCE_IMAGE, Recipe, Step, step_sources

from ..pixels import PEAK
from . import composite as C


class StepFailed(Exception):
    """A step that failed for this image (the message names the step; shown in the summary)."""


@dataclass
class StepOutput:
    image: np.ndarray | None                      # HWC, the input's dtype
    masks: dict = field(default_factory=dict)     # name -> HxW uint8
    info: dict = field(default_factory=dict)
    layers: dict = field(default_factory=dict)    # name -> HWC: e.g. "grain", stacked as in GIMP


RunStep = Callable[[Step, np.ndarray], StepOutput]


def apply_recipe(recipe: Recipe, image: np.ndarray, run_step: RunStep,
                 on_step: Callable[[int, Step], None] | None = None) -> np.ndarray:
    """``image`` (HWC u8/u16/f32, 1..4 channels) after every step of ``recipe``: same dtype and
    channels, enlarged by the product of the steps' scales."""
    if image.ndim == 2:
        image = image[:, :, None]
    dtype, channels = image.dtype, image.shape[2]
    last_use = step_sources(recipe)
    image_needed = max((i for i, s in enumerate(recipe.steps) if s.source == SOURCE_IMAGE), default=-1)
    base = image                     # the bottom layer (resampled by scale steps while needed)
    # The picture so far: ``exact`` (native pixels) while one opaque layer alone makes it, else
    # ``comp`` (linear RGBA float).  A full-strength step over everything (the usual batch) never
    # builds the float planes: less memory, and no round trip that could move a 16-bit value.
    exact, comp = image, None
    kept: dict[int, np.ndarray] = {}               # step -> its raw result, while a later step needs it
    for i, step in enumerate(recipe.steps):
        if on_step:
            on_step(i, step)
        if step.source == SOURCE_IMAGE:
            src = base
        elif step.source == SOURCE_COMPOSITE:
            src = exact if exact is not None else C.from_linear_rgba(comp, dtype, channels)
        else:
            src = kept[step.source]
        try:
            out = run_step(step, src)
        except StepFailed as e:
            raise StepFailed(f"step {i} ({step.op}): {e}") from None
        if out.image is None:
            raise StepFailed(f"step {i} ({step.op}) returned no image")
        s = step.scale
        h, w = (exact if exact is not None else comp).shape[:2]
        h, w = h * s, w * s
        if out.image.shape[:2] != (h, w):
            raise StepFailed(f"step {i} ({step.op}) returned {out.image.shape[1]}x{out.image.shape[0]}, "
                             f"expected {w}x{h} (scale {s}); is its source enlarged by an earlier step?")
        mask = None
        name = step.backend_mask
        if name is not None and name in out.masks:
            mask = out.masks[name]
            if mask.shape[:2] != (h, w):
                raise StepFailed(f"step {i} ({step.op}): the backend's '{name}' mask is "
                                 f"{mask.shape[1]}x{mask.shape[0]}, expected {w}x{h}")
        if s > 1:
            if image_needed > i:
                base = C.resample_pixels(base, s)
            kept = {k: C.resample_pixels(v, s) for k, v in kept.items()}
        grain = float(step.post.get("grain") or 0.0)
        grain_layer = out.layers.get("grain") if grain > 0 else None
        if (_covers(step, out.image, mask) and grain_layer is None and out.image.dtype == dtype
                and out.image.shape[2] == channels):
            exact, comp = out.image, None
        elif step.strength > 0 or s > 1:
            if comp is None:
                comp = C.to_linear_rgba(exact)
            if s > 1:
                comp = C.resample(comp, s)
            if step.strength > 0:
                comp = C.composite(comp, C.to_linear_rgba(out.image), opacity=step.strength, mask=mask,
                                   mode=step.mode)
                if grain_layer is not None:     # the plug-in's "AI grain" layer: Grain merge, same mask
                    comp = C.composite(comp, C.to_linear_rgba(grain_layer), opacity=grain, mask=mask,
                                       mode=LayerMode.GRAIN_MERGE)
            exact = None
        if i in last_use:
            kept[i] = out.image
        kept = {k: v for k, v in kept.items() if last_use.get(k, -1) > i}
        if image_needed <= i:
            base = None
    if exact is not None:
        return np.array(exact, copy=True)
    return C.from_linear_rgba(comp, dtype, channels)


def _covers(step: Step, result: np.ndarray, mask) -> bool:
    """Whether the step's layer hides everything below it: full strength, no mask, Normal, opaque."""
    if step.strength < 1.0 or mask is not None or step.mode is not LayerMode.NORMAL:
        return False
    c = result.shape[2]
    if c not in (2, 4):
        return True
    peak = PEAK[np.dtype(result.dtype)]
    return bool((result[:, :, c - 1] >= peak).all())
