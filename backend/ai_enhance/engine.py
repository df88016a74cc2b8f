"""The engine: runs one job.

``Engine.run(req, inputs, progress, is_cancelled)`` validates the request once against the
operation table (operation, scale, options, post parameters, named inputs, region), resolves the
model, splits alpha off, runs the operation module (``ops.REGISTRY``), passes its output through
the post-processing stage exactly once, and merges alpha back.

Pixels arrive as HWC numpy, 1..4 channels (gray, gray+alpha, RGB, RGBA), uint8 / uint16 / float32;
the result has the same dtype and channel count (RGB for operations that need colour).  Alpha never
goes through a model: it is resized separately (linear).

torch is imported lazily, inside functions: importing this module is cheap.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Mapping

import numpy as np

from ai_enhance_client import ops as optable
from ai_enhance_client.params import ParamError, Stage, validate
from ai_enhance_client.protocol import ErrorKind

from . import ops, pixels
from .errors import EnhanceError
from .jobs import IsCancelled, JobOutput, JobRequest, Progress
from .models import ModelInfo, ModelService, ModelStore
from .ops.image_model import check_serves
from .post import pipeline as post
from .rawcache import RawCache, content_key
from .runtime import devices
from .runtime.tiled import DEFAULT_CONTEXT, DEFAULT_OVERLAP

log = logging.getLogger("ai_enhance.engine")

#: Memory for recent raw outputs (re-tuning the post-processing without the model).
DEFAULT_RAW_CACHE = 1 << 30


class Engine:
    def __init__(self, store: ModelStore, device: str = "auto", idle_unload_s: float = 600.0,
                 max_models: int = 3, context: int = DEFAULT_CONTEXT, overlap: int = DEFAULT_OVERLAP,
                 band_on_device: bool | None = None, raw_cache_bytes: int = DEFAULT_RAW_CACHE):
        self.store = store
        self.raw = RawCache(raw_cache_bytes)
        self.models = ModelService(store, device, idle_unload_s, max_models, context, overlap,
                                   band_on_device)
        self.ops = dict(ops.REGISTRY)

    # ----------------------------------------------------------------- the models service

    @property
    def device_info(self) -> devices.DeviceInfo:
        return self.models.device_info

    @property
    def loads(self) -> int:
        return self.models.loads

    def get_model(self, info, options: dict | None = None):
        return self.models.get_model(info, options)

    def using(self, lm):
        return self.models.using(lm)

    def auto_tile(self, lm) -> int:
        return self.models.auto_tile(lm)

    def loaded_models(self) -> list[dict]:
        return self.models.loaded_models()

    def unload_idle(self, now: float | None = None) -> list[str]:
        return self.models.unload_idle(now)

    def unload_all(self) -> None:
        self.models.unload_all()

    # ----------------------------------------------------------------- running a job

    def run(self, req: JobRequest, inputs: Mapping[str, np.ndarray] | np.ndarray, progress: Progress,
            is_cancelled: IsCancelled) -> JobOutput:
        if isinstance(inputs, np.ndarray):
            inputs = {"image": inputs}
        spec = self._spec(req.op)
        entry = self.raw.get(req.reuse) if req.reuse else None
        if entry is not None:                 # re-tune: the cached job, with this request's post
            req = dataclasses.replace(entry.request, post=req.post)
            inputs = entry.inputs
        image = pixels.check_image(inputs.get("image"))
        extra = self._extra_inputs(spec, inputs, image)
        try:
            req.scale = spec.check_scale(req.scale)
            req.options = validate(spec.params_of(Stage.OPTION), req.options, what=spec.name)
            req.post = validate(spec.params_of(Stage.POST), req.post, what=f"{spec.name} post-processing")
        except ParamError as e:
            raise EnhanceError(ErrorKind.BAD_REQUEST, str(e),
                               f"see `ai-enhance enhance --op {spec.name} --help`") from None
        roi = pixels.check_roi(req.roi, image.shape[0], image.shape[1])
        model = self._model(spec, req)

        color, alpha = pixels.split_alpha(image)
        if spec.needs_rgb and color.shape[2] == 1:
            color = np.repeat(color, 3, axis=2)
        key = content_key(req, {"image": image, **extra})
        if entry is not None:
            out = entry.output
            out.info["reused"] = True
        else:
            ctx = ops.OpContext(spec=spec, req=req, image=color, roi=roi, models=self.models,
                                progress=progress, is_cancelled=is_cancelled, model=model, inputs=extra,
                                ops=self.ops)
            ctx.check_cancel()                  # cancelled while it waited in the queue
            out = self.ops[spec.name](ctx)
            if spec.models or spec.purposes or spec.archs:   # worth keeping: a model ran
                self.raw.put(key, req, {"image": image, **extra}, out)
            out.info["reused"] = False
            if req.reuse:
                out.info["recomputed"] = True   # asked to re-tune, but the raw output was gone
        out.info["raw_key"] = key
        out = post.run(post.PostInput(color, roi, req.scale, req.post), out, progress)
        if out.image is not None and out.image.ndim == 2:
            out.image = out.image[:, :, None]
        if alpha is not None:
            a = pixels.resize_alpha(alpha, roi, req.scale)
            if out.image is not None:
                out.image = pixels.merge_alpha(out.image, a)
            out.layers = [(name, pixels.merge_alpha(layer, a)) for name, layer in out.layers]
        out.info.setdefault("op", spec.name)
        return out

    def _spec(self, name: str) -> optable.OpSpec:
        spec = optable.BY_NAME.get(name)
        if spec is None or name not in self.ops:
            raise EnhanceError(ErrorKind.UNSUPPORTED, f"operation '{name}' is not available in this backend",
                               f"available: {', '.join(sorted(self.ops))}")
        return spec

    @staticmethod
    def _extra_inputs(spec: optable.OpSpec, inputs: Mapping[str, np.ndarray],
                      image: np.ndarray) -> dict[str, np.ndarray]:
        """The named inputs beyond "image": each declared by the operation; a mask must be one
        8-bit channel of the image's size."""
        out = {}
        for name, arr in inputs.items():
            if name == "image":
                continue
            if name not in spec.inputs:
                raise EnhanceError(ErrorKind.BAD_REQUEST, f"{spec.name} takes no '{name}' input",
                                   f"it takes: {', '.join(spec.inputs)}")
            arr = pixels.check_image(arr, name)
            if name == "mask" and (arr.shape[:2] != image.shape[:2] or arr.shape[2] != 1
                                   or arr.dtype != np.uint8):
                raise EnhanceError(ErrorKind.BAD_REQUEST,
                                   f"the mask is {arr.shape[1]}x{arr.shape[0]}x{arr.shape[2]} {arr.dtype}, "
                                   f"the image {image.shape[1]}x{image.shape[0]}",
                                   "give an 8-bit gray mask of the image's size")
            out[name] = arr[:, :, 0] if name == "mask" else arr
        missing = [n for n in spec.inputs if n != "image" and n not in out]
        if missing:
            raise EnhanceError(ErrorKind.BAD_REQUEST, f"{spec.name} needs the input(s) {', '.join(missing)}",
                               "in GIMP: make a selection; CLI: --mask FILE")
        return out

    def _model(self, spec: optable.OpSpec, req: JobRequest) -> ModelInfo | None:
        """The model the job runs (the request's, or the operation's best installed one); None for
        operations without models."""
        if not (spec.models or spec.purposes or spec.archs):
            return None
        info = self.store.resolve(req.model) if req.model else self.store.best_for(spec)
        if not info.builtin:
            self.store.resolve(info.id)      # raises MODEL_MISSING with how to install it
        check_serves(info, spec.name, self.store)
        req.model = info.id
        return info

    # ----------------------------------------------------------------- what the backend offers

    def capabilities(self) -> dict:
        dev = self.device_info
        devices.refresh(dev)
        try:
            all_devices = [d.to_json() for d in devices.list_devices()]
        except Exception:  # noqa: BLE001 - never fail a ping over a probe
            all_devices = [dev.to_json()]
        return {"models": [m.to_json() for m in self.store.list()],
                "device": dev.to_json(), "devices": all_devices,
                "ops": sorted(self.ops), "loaded": self.loaded_models()}

