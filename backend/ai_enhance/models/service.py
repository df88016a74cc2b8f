"""What an operation may ask of the models layer, in one object: resolve an id, get a loaded model
or support network from the one network cache, keep it in use while running, and run a model over
an image tiled.  The engine owns one ``ModelService``; operations receive it in their context.
"""
from __future__ import annotations

import logging
import threading
import time
from contextlib import contextmanager
from typing import Iterator

import numpy as np

from ai_enhance_client.protocol import ErrorKind

from ..errors import EnhanceError
from ..jobs import IsCancelled, Progress
from ..runtime import devices
from ..runtime import openvino_rt as ov
from ..runtime.cache import EntryKind, NetworkCache
from ..runtime.tiled import DEFAULT_CONTEXT, DEFAULT_OVERLAP, TiledResult, TiledRunner
from . import helpers
from .catalog import ModelInfo, file_sha256
from .store import LoadedModel, ModelStore, dni_strength

log = logging.getLogger("ai_enhance.models")


class ModelService:
    def __init__(self, store: ModelStore, device: str = "auto", idle_unload_s: float = 600.0,
                 max_models: int = 3, context: int = DEFAULT_CONTEXT, overlap: int = DEFAULT_OVERLAP,
                 band_on_device: bool | None = None):
        self.store = store
        self.preferred_device = device
        self.cache = NetworkCache(max_models=max_models, idle_s=idle_unload_s,
                                  on_drop=lambda: devices.empty_cache(self._device))
        self.context, self.overlap, self.band_on_device = int(context), int(overlap), band_on_device
        self._device: devices.DeviceInfo | None = None
        self._runner: TiledRunner | None = None
        self._conversions: dict[str, threading.Thread] = {}

    # ----------------------------------------------------------------- device

    @property
    def device_info(self) -> devices.DeviceInfo:
        if self._device is None:
            try:
                self._device = devices.probe(None if self.preferred_device == "auto" else self.preferred_device)
            except ValueError as e:
                raise EnhanceError(ErrorKind.UNSUPPORTED, str(e),
                                   "start the backend with --device auto or cpu") from None
        return self._device

    @property
    def runner(self) -> TiledRunner:
        if self._runner is None:
            self._runner = TiledRunner(self.device_info, self.context, self.overlap, self.band_on_device)
        return self._runner

    # ----------------------------------------------------------------- models

    def resolve(self, model_id: str) -> ModelInfo:
        return self.store.resolve(model_id)

    def get_model(self, info: ModelInfo | str, options: dict | None = None) -> LoadedModel:
        """The loaded model for ``info`` (a ModelInfo or an id), from the cache when possible; a
        changed file (size, mtime) or another DNI weight is another cache entry."""
        if isinstance(info, str):
            info = self.store.resolve(info)
        options = options or {}
        variant = (("dni", round(dni_strength(info, options), 4)),) if info.dni else ()
        stamp = self._stamp(info)
        dev = self.device_info
        key = ("model", info.id, str(info.path), stamp, variant, dev.torch_device)

        def build() -> LoadedModel:
            t0 = time.monotonic()
            lm = self.store.load(info, dev, options=options)
            lm.max_activation = devices.max_activation_per_px(lm.module, lm.input_channels)
            lm.cache_key = key
            log.info("loaded %s (%s, x%d, %s) on %s in %.1f s", info.id, lm.arch, lm.scale, lm.dtype,
                     lm.device, time.monotonic() - t0)
            self._offer_openvino(lm, info)
            return lm
        lm = self.cache.get(key, build, kind=EntryKind.MODEL, label=info.id)
        self._install_openvino(lm)
        return lm

    # ----------------------------------------------------------------- OpenVINO

    def _offer_openvino(self, lm: LoadedModel, info: ModelInfo) -> None:
        """Run ``lm`` through OpenVINO where that is the runtime of this device (auto: the CPU):
        from the disk cache at once (about a second), else converted on a thread of its own
        (8-120 s for RRDBNet) while torch serves the jobs until it is ready."""
        if not lm.convertible:
            return
        try:
            if ov.choose_runtime(ov.runtime_setting(), self.device_info.kind, ov.available()) != "openvino":
                return
            device = ov.pick_device(ov.list_devices(), ov.device_setting())
        except (ov.OVRuntimeUnavailable, ValueError) as e:
            log.warning("%s runs on torch: %s", info.id, e)
            return
        key = ov.cache_key_for(file_sha256(info.path), lm.variant, lm.arch)
        cache_dir, precision = ov.default_cache_dir(), ov.precision_setting()

        def convert() -> None:
            try:
                lm.pending_runtime = ov.compile_model(
                    lm.module, in_channels=lm.input_channels, cache_key=key, cache_dir=cache_dir,
                    device=device, precision=precision, size_multiple=lm.size_req.multiple_of,
                    min_size=lm.size_req.minimum)
            except ov.OVRuntimeUnavailable as e:
                log.info("%s stays on torch: %s", info.id, e.reason)
                lm.runtime_info = {"openvino": f"not used: {e.reason}"}
            except Exception:  # noqa: BLE001 - a failed conversion must never fail the backend
                log.exception("OpenVINO conversion of %s failed; it stays on torch", info.id)
        if ov.is_cached(key, cache_dir, device, precision):
            convert()
            self._install_openvino(lm)
        else:
            log.info("converting %s for OpenVINO in the background (once)", info.id)
            lm.runtime_info = {"openvino": "converting (once); torch meanwhile"}
            t = threading.Thread(target=convert, name=f"openvino-{info.id}", daemon=True)
            self._conversions[info.id] = t
            t.start()

    def converting(self) -> list[str]:
        """Ids of the models being converted for OpenVINO right now."""
        return [mid for mid, t in list(self._conversions.items()) if t.is_alive()]

    def _install_openvino(self, lm: LoadedModel) -> None:
        """Between jobs: a finished conversion takes over the model's forward."""
        ovm = getattr(lm, "pending_runtime", None)
        if ovm is None:
            return
        lm.pending_runtime = None
        lm.forward = ovm.forward
        lm.runtime = "openvino"
        lm.runtime_info = ovm.to_json()
        log.info("%s runs on OpenVINO %s (%s)", lm.info.id, ovm.device, ovm.precision)

    def helper(self, info: ModelInfo):
        """A support network (face detector, parser) from the same cache."""
        import torch

        dev = torch.device(self.device_info.torch_device)
        key = ("helper", info.id, str(info.path), self._stamp(info), str(dev))
        return self.cache.get(key, lambda: helpers.build(info, dev), kind=EntryKind.HELPER, label=info.id)

    def _stamp(self, info: ModelInfo) -> tuple:
        try:
            st = info.path.stat()
        except (OSError, AttributeError):
            raise self.store.missing_error(info) from None
        return st.st_size, st.st_mtime_ns

    @contextmanager
    def using(self, lm: LoadedModel) -> Iterator[LoadedModel]:
        with self.cache.using(lm.cache_key):
            yield lm

    @property
    def loads(self) -> int:
        """Models loaded from disk so far (support networks not counted)."""
        return self.cache.builds[EntryKind.MODEL]

    def loaded_models(self) -> list[dict]:
        now = time.monotonic()
        return [{"id": e.obj.info.id, "device": e.obj.device, "dtype": e.obj.dtype,
                 "arch": e.obj.arch, "idle_s": round(now - e.last_used, 1), "runtime": e.obj.runtime,
                 "runtime_info": e.obj.runtime_info}
                for e in self.cache.entries(EntryKind.MODEL)]

    def unload_idle(self, now: float | None = None) -> list[str]:
        """Drop networks unused for the idle time; returns the ids of the models dropped."""
        return [e.obj.info.id for e in self.cache.unload_idle(now) if e.kind is EntryKind.MODEL]

    def unload_all(self) -> None:
        self.cache.clear()

    # ----------------------------------------------------------------- running

    def auto_tile(self, lm: LoadedModel) -> int:
        return self.runner.auto_tile(lm)

    def run_tiled(self, lm: LoadedModel, color: np.ndarray, roi: tuple[int, int, int, int], scale: int,
                  tile: int, options: dict, progress: Progress, is_cancelled: IsCancelled,
                  on_info=None) -> TiledResult:
        with self.using(lm):
            return self.runner.run(lm, color, roi, scale, tile, options, progress, is_cancelled, on_info)
