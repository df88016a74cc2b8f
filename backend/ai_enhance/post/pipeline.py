"""The post-processing stage: every operation's output passes through ``run`` exactly once, after
the operation and before alpha is merged back (docs/fidelity.md).

The dials (declared in the operation table as ``Stage.POST`` parameters, validated by the engine):
``color-lock`` (the photo's colours), ``fidelity`` (agreement with the photo), ``keep-texture``
(the photo's fine band back where the operation's "faces" mask is), ``change-map`` (where the
result departs from what the photo supports: the mask "change-map", 255 = most changed, and the
layer mask "changes": its inverse, feathered, for showing the AI only where it agrees), ``grain``
(grain matching the photo's own, returned as the layer "grain" for GIMP's Grain merge mode at
opacity = the dial; never baked into the image, so the amount stays editable).

Order (see post/ modules): colour lock, fidelity, keep texture, change map (on the result without
grain), grain (measured on the whole source sent, then topped up to what the result lacks).
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from ..jobs import JobOutput, Progress
from ..pixels import from_unit_float, to_unit_float
from . import blur, changes, color, fidelity, grain, texture

#: Feathering of the "changes" layer mask (Gaussian sigma, in input pixels).
CHANGES_FEATHER = 1.5


@dataclass
class PostInput:
    source: np.ndarray                  # the colour plane the operation saw (native dtype)
    roi: tuple[int, int, int, int]      # the part of ``source`` the output covers
    scale: int
    params: dict                        # validated `post` parameters


def is_identity(params: dict) -> bool:
    return not (params.get("color-lock") or params.get("fidelity") or params.get("keep-texture")
                or params.get("change-map") or params.get("grain"))


def run(inp: PostInput, out: JobOutput, progress: Progress | None = None) -> JobOutput:
    """The output after the stage (the same object, changed in place)."""
    p = inp.params
    if out.image is None or is_identity(p):
        return out
    t0 = time.monotonic()
    if progress:
        progress(1.0, "fidelity and colour")
    x, y, w, h = inp.roi
    src = to_unit_float(inp.source[y:y + h, x:x + w])
    res = to_unit_float(out.image)
    s = inp.scale
    # pixels a same-size operation left alone (Restore Faces outside the faces, Inpaint outside
    # the hole) stay exactly the photo's: the lock's and fidelity's corrections are smooth fields
    # that would otherwise seep a little way into them
    kept = None
    if s == 1 and out.image.shape == inp.source[y:y + h, x:x + w].shape:
        kept = (out.image == inp.source[y:y + h, x:x + w]).all(axis=2)
        if not kept.any():
            kept = None
    if p.get("color-lock") and res.shape[2] == 3:
        res = color.lock(src, res, s)
    if p.get("fidelity"):
        res = fidelity.apply(src, res, s, float(p["fidelity"]))
    faces = out.mask("faces")
    if p.get("keep-texture") and faces is not None:
        res = texture.keep(src, res, s, float(p["keep-texture"]), faces.astype(np.float32) / 255.0)
    if kept is not None:
        res[kept] = src[kept]
    if p.get("change-map"):
        cm = changes.change_map(src, res, s)
        agree = 1.0 - blur.gaussian(cm.astype(np.float32) / 255.0, CHANGES_FEATHER * s)
        out.masks += [("change-map", cm), ("changes", np.round(np.clip(agree, 0, 1) * 255).astype(np.uint8))]
    info = {}
    if p.get("grain"):
        whole = to_unit_float(inp.source)
        profile = grain.measure(whole)
        present = grain.measure(res)
        lum = color.luma(res)
        g = grain.synthesize(grain.top_up(profile, present), res.shape[:2], s, lum, grain.seed_for(whole))
        out.layers.append(("grain", from_unit_float(grain.as_grain_merge_layer(g), out.image.dtype)))
        info["grain_level"] = round(float(profile.level) * 255.0, 2)
        info["grain_size"] = round(float(profile.size), 2)
    out.image = from_unit_float(res, out.image.dtype)
    info["seconds"] = round(time.monotonic() - t0, 3)
    out.info["post"] = info
    return out
