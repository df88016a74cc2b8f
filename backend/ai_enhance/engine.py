"""The inference engine: runs one job on one image.

``Engine.run(req, image, progress, is_cancelled)`` dispatches ``req.op`` through ``OP_HANDLERS``
(a dict: "upscale", "denoise", "restore" run any spandrel image model tiled; "noop" returns the
input; "faces" is ``ai_enhance.faces.run_faces``, imported on first use).  Model facts come from
spandrel's descriptor, never from model names.

Pixels: the image arrives as HWC numpy, 1..4 channels (gray, gray+alpha, RGB, RGBA), uint8 /
uint16 / float32, and the result has the same dtype and channel count.  All math is float32 in
[0, 1] (no 8-bit round trip; float input outside 0..1 is clipped for the model).  Gray is run as
RGB and returned gray; alpha is resized separately (linear) and never goes through the model.

torch is imported lazily, inside functions: importing this module is cheap.
"""
from __future__ import annotations

import gc
import logging
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from ai_enhance_client.protocol import MAX_SCALE, ErrorKind

from . import devices, tiling
from .errors import Cancelled, EnhanceError

log = logging.getLogger("ai_enhance.engine")

Progress = Callable[[float, str], None]
IsCancelled = Callable[[], bool]

#: Rec. 709 luma, used to turn a model's RGB output back into a gray layer.
LUMA = np.array([0.2126, 0.7152, 0.0722], np.float32)
#: Default seam handling (input pixels): context thrown away around each tile, cross-fade width.
#: Measured on RealESRGAN_x4plus (the widest effective receptive field of the catalogue): a block
#: computed with 16 px of context differs from the untiled result by 34 dB, 24 px: 38 dB,
#: 32 px: 46 dB, 40 px: 52 dB (worst case, context on all four sides).  Tiles are clamped to
#: 1/8 of the tile side, so small explicit tiles trade seams for speed.
DEFAULT_CONTEXT = 32
DEFAULT_OVERLAP = 16


@dataclass
class JobRequest:
    op: str
    model: str
    scale: int = 1
    tile: int = 0
    roi: tuple[int, int, int, int] | None = None   # (x, y, w, h) in input pixels
    options: dict = field(default_factory=dict)


@dataclass
class JobOutput:
    image: np.ndarray
    masks: list[tuple[str, np.ndarray]] = field(default_factory=list)
    info: dict = field(default_factory=dict)


# --------------------------------------------------------------------------- pixel helpers

#: Full-scale value of each pixel type (float: 1.0).
PEAK = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0, np.dtype(np.float32): 1.0}


def to_unit_float(a: np.ndarray) -> np.ndarray:
    """uint8 / uint16 / float32 -> float32 in [0, 1] (float: NaN -> 0, clipped)."""
    peak = PEAK.get(a.dtype)
    if peak is None:
        raise EnhanceError(ErrorKind.BAD_REQUEST, f"pixel type {a.dtype} is not supported",
                           "send u8, u16 or f32 pixels")
    if peak == 1.0:
        return np.clip(np.nan_to_num(a.astype(np.float32, copy=False), nan=0.0), 0.0, 1.0)
    return a.astype(np.float32) * np.float32(1.0 / peak)


def from_unit_float(a: np.ndarray, dtype) -> np.ndarray:
    """float in [0, 1] -> ``dtype`` (rounded for integers)."""
    dtype = np.dtype(dtype)
    peak = PEAK[dtype]
    if peak == 1.0:
        return np.clip(a, 0.0, 1.0).astype(np.float32, copy=False)
    return np.clip(np.rint(a * np.float32(peak)), 0, peak).astype(dtype)


def split_alpha(image: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """(colour HWC with 1 or 3 channels, alpha HW or None) -- views, no copies."""
    c = image.shape[2]
    if c in (2, 4):
        return image[:, :, : c - 1], image[:, :, c - 1]
    return image, None


def convert_channels(a: np.ndarray, channels: int) -> np.ndarray:
    """HWC float between gray (1) and RGB (3): gray -> RGB repeats, RGB -> gray is Rec.709 luma."""
    c = a.shape[2]
    if c == channels:
        return a
    if c == 1 and channels == 3:
        return np.repeat(a, 3, axis=2)
    if c == 3 and channels == 1:
        return (a @ LUMA)[:, :, None]
    raise EnhanceError(ErrorKind.UNSUPPORTED, f"cannot convert {c}-channel pixels to {channels} channels",
                       "this model expects a different number of channels than gray or RGB")


def resize_alpha(alpha: np.ndarray, roi: tuple[int, int, int, int], scale: int) -> np.ndarray:
    """The roi of an alpha plane at ``scale`` (bilinear, from 2 px of context so the roi's
    edge matches a full-image resize); native dtype, float clipped to 0..1."""
    import cv2

    x, y, w, h = roi
    if scale == 1:
        return alpha[y: y + h, x: x + w]
    H, W = alpha.shape
    c = 2
    x0, y0, x1, y1 = max(0, x - c), max(0, y - c), min(W, x + w + c), min(H, y + h + c)
    a = alpha[y0:y1, x0:x1]
    if a.dtype == np.float32:
        a = np.clip(np.nan_to_num(a, nan=0.0), 0.0, 1.0)
    r = cv2.resize(np.ascontiguousarray(a), ((x1 - x0) * scale, (y1 - y0) * scale),
                   interpolation=cv2.INTER_LINEAR)
    oy, ox = (y - y0) * scale, (x - x0) * scale
    r = r[oy: oy + h * scale, ox: ox + w * scale]
    return np.clip(r, 0.0, 1.0) if r.dtype == np.float32 else r


def is_oom(e: BaseException) -> bool:
    """An out-of-memory failure of torch (CUDA, MPS, CPU allocator) or Python."""
    if isinstance(e, MemoryError):
        return True
    try:
        import torch
        kinds = tuple(k for k in (getattr(torch, "OutOfMemoryError", None),
                                  getattr(getattr(torch, "cuda", None), "OutOfMemoryError", None))
                      if isinstance(k, type))
        if kinds and isinstance(e, kinds):
            return True
    except ImportError:
        pass
    msg = str(e).lower()
    return isinstance(e, RuntimeError) and any(
        s in msg for s in ("out of memory", "can't allocate memory", "not enough memory",
                           "failed to allocate"))


def _roi_of(req: JobRequest, h: int, w: int) -> tuple[int, int, int, int]:
    if req.roi is None:
        return 0, 0, w, h
    try:
        x, y, rw, rh = (int(v) for v in req.roi)
    except (TypeError, ValueError):
        raise EnhanceError(ErrorKind.BAD_REQUEST, f"roi {req.roi!r} must be [x, y, width, height]") from None
    if rw < 1 or rh < 1 or x < 0 or y < 0 or x + rw > w or y + rh > h:
        raise EnhanceError(ErrorKind.BAD_REQUEST,
                           f"roi {[x, y, rw, rh]} is not inside the {w}x{h} image",
                           "the selection must lie inside the layer")
    return x, y, rw, rh


def _rows_to_numpy(band, channels: int, dtype) -> np.ndarray:
    """Finished rows of a torch float band (on any device) -> numpy rows of ``dtype`` with
    ``channels`` channels: the same rounding as ``from_unit_float``, done where the band is, so
    only the final pixels cross to the host."""
    import torch

    c = band.shape[2]
    if c != channels:
        if c == 3 and channels == 1:
            band = (band @ torch.from_numpy(LUMA).to(band.device))[:, :, None]
        elif c == 1 and channels == 3:
            band = band.expand(-1, -1, 3)
        else:
            raise EnhanceError(ErrorKind.UNSUPPORTED, f"cannot convert {c}-channel pixels to {channels} channels")
    dtype = np.dtype(dtype)
    peak = PEAK[dtype]
    if peak == 1.0:
        return band.clamp(0, 1).cpu().numpy().astype(np.float32, copy=False)
    q = torch.round(band * peak).clamp_(0, peak)
    q = q.to(torch.uint8) if dtype == np.uint8 else q.to(torch.int32)
    return q.cpu().numpy().astype(dtype, copy=False)


# --------------------------------------------------------------------------- op handlers

def run_noop(engine: "Engine", req: JobRequest, image: np.ndarray, progress: Progress,
             is_cancelled: IsCancelled) -> JobOutput:
    """The input, roi-cropped, unchanged (transport benchmarks and tests)."""
    x, y, w, h = _roi_of(req, image.shape[0], image.shape[1])
    progress(1.0, "done")
    return JobOutput(np.ascontiguousarray(image[y: y + h, x: x + w]), info={"op": "noop"})


def run_image_model(engine: "Engine", req: JobRequest, image: np.ndarray, progress: Progress,
                    is_cancelled: IsCancelled) -> JobOutput:
    """Any spandrel image model (super-resolution, same-size restoration, denoising), tiled."""
    info = engine.store.resolve(req.model)
    if req.op not in info.ops:
        users = [m.id for m in engine.store.list() if req.op in m.ops and m.selectable][:6]
        raise EnhanceError(ErrorKind.UNSUPPORTED,
                           f"model '{info.id}' does not do '{req.op}' (it does: {', '.join(info.ops) or 'nothing'})",
                           f"for '{req.op}' choose one of: {', '.join(users) or 'no installed model'}")
    options = engine.check_options(info, req.options or {})
    progress(0.0, f"loading {info.id}")
    if is_cancelled():
        raise Cancelled()
    lm = engine.get_model(info, options)
    with engine.using(lm):
        return engine.run_model(lm, req, image, progress, is_cancelled, options)


def run_faces_lazy(engine: "Engine", req: JobRequest, image: np.ndarray, progress: Progress,
                   is_cancelled: IsCancelled) -> JobOutput:
    try:
        from .faces import run_faces
    except ModuleNotFoundError as e:
        if e.name == f"{__package__}.faces":
            raise EnhanceError(ErrorKind.UNSUPPORTED, "face restoration is not part of this backend",
                               "update gimp-ai-enhance") from None
        raise
    return run_faces(engine, req, image, progress, is_cancelled)


OP_HANDLERS: dict[str, Callable[..., JobOutput]] = {
    "upscale": run_image_model,
    "denoise": run_image_model,
    "restore": run_image_model,
    "noop": run_noop,
    "faces": run_faces_lazy,
}


# --------------------------------------------------------------------------- the engine

class Engine:
    def __init__(self, store, device: str = "auto", idle_unload_s: float = 600.0,
                 max_models: int = 3, context: int = DEFAULT_CONTEXT, overlap: int = DEFAULT_OVERLAP,
                 band_on_device: bool | None = None):
        self.store = store
        self.preferred_device = device
        self.idle_unload_s = float(idle_unload_s)
        self.max_models = max(1, int(max_models))
        self.context = int(context)
        self.overlap = int(overlap)
        #: blend tiles on the model's device (GPU: no per-tile sync, finished rows come back in
        #: the output dtype); None = on GPUs only
        self.band_on_device = band_on_device
        self.ops: dict[str, Callable[..., JobOutput]] = dict(OP_HANDLERS)
        self._device: devices.DeviceInfo | None = None
        self._cache: dict[tuple, Any] = {}
        self._in_use: dict[tuple, int] = {}
        self._lock = threading.RLock()
        self._load_lock = threading.Lock()
        self.loads = 0                      # models loaded from disk (tests, stats)

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

    # ----------------------------------------------------------------- public API

    def run(self, req: JobRequest, image: np.ndarray, progress: Progress,
            is_cancelled: IsCancelled) -> JobOutput:
        handler = self.ops.get(req.op)
        if handler is None:
            raise EnhanceError(ErrorKind.UNSUPPORTED, f"operation '{req.op}' is not available in this backend",
                               f"available: {', '.join(sorted(self.ops))}")
        image = self._check_image(image)
        if not isinstance(req.scale, int) or isinstance(req.scale, bool) or not 1 <= req.scale <= MAX_SCALE:
            raise EnhanceError(ErrorKind.BAD_REQUEST, f"scale must be 1..{MAX_SCALE}, got {req.scale!r}")
        _roi_of(req, image.shape[0], image.shape[1])
        return handler(self, req, image, progress, is_cancelled)

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

    def unload_idle(self, now: float | None = None) -> list[str]:
        """Drop loaded models unused for ``idle_unload_s`` (not those running now)."""
        now = time.monotonic() if now is None else now
        dropped = []
        with self._lock:
            for key, lm in list(self._cache.items()):
                if self._in_use.get(key) or now - lm.last_used < self.idle_unload_s:
                    continue
                del self._cache[key]
                dropped.append(lm.info.id)
        faces = sys.modules.get(f"{__package__}.faces")   # its detector/parser caches, if ever loaded
        helpers = faces.unload_idle(self.idle_unload_s, now) if faces is not None else 0
        if dropped or helpers:
            log.info("unloaded idle models: %s", ", ".join(dropped + [f"{helpers} face helper(s)"] * bool(helpers)))
            gc.collect()
            devices.empty_cache(self._device)
        return dropped

    def unload_all(self) -> None:
        with self._lock:
            for key in [k for k in self._cache if not self._in_use.get(k)]:
                del self._cache[key]
        faces = sys.modules.get(f"{__package__}.faces")
        if faces is not None:
            faces.clear_cache()
        gc.collect()
        devices.empty_cache(self._device)

    def loaded_models(self) -> list[dict]:
        with self._lock:
            return [{"id": lm.info.id, "device": lm.device, "dtype": lm.dtype,
                     "idle_s": round(time.monotonic() - lm.last_used, 1)} for lm in self._cache.values()]

    # ----------------------------------------------------------------- models

    def check_options(self, info, options: dict) -> dict:
        """Validate the options the catalogue declares for this model (range, type); others are
        passed through untouched (they may belong to another stage, e.g. faces)."""
        out = dict(options)
        for name, spec in (info.options or {}).items():
            if name not in out or out[name] is None:
                out.pop(name, None)
                continue
            v = out[name]
            if spec.get("type") in ("float", "int"):
                if isinstance(v, bool) or not isinstance(v, (int, float)):
                    raise EnhanceError(ErrorKind.BAD_REQUEST, f"option {name} must be a number, got {v!r}")
                lo, hi = spec.get("min"), spec.get("max")
                if (lo is not None and v < lo) or (hi is not None and v > hi):
                    raise EnhanceError(ErrorKind.BAD_REQUEST, f"option {name}={v} is outside {lo}..{hi}",
                                       spec.get("help", ""))
        return out

    def get_model(self, info, options: dict | None = None):
        """The loaded model for ``info`` (a ModelInfo or an id), from the cache when possible."""
        from .models import dni_strength

        if isinstance(info, str):
            info = self.store.resolve(info)
        options = options or {}
        variant = (("dni", round(dni_strength(info, options), 4)),) if info.dni else ()
        try:
            st = info.path.stat()
            stamp = (st.st_size, st.st_mtime_ns)
        except OSError:
            raise self.store.missing_error(info) from None
        dev = self.device_info
        key = (info.id, str(info.path), stamp, variant, dev.torch_device)
        with self._lock:
            lm = self._cache.get(key)
            if lm is not None:
                lm.last_used = time.monotonic()
                return lm
        with self._load_lock:
            with self._lock:
                lm = self._cache.get(key)
                if lm is not None:
                    return lm
            t0 = time.monotonic()
            lm = self.store.load(info, dev, options=options)
            lm.max_activation = devices.max_activation_per_px(lm.module, lm.descriptor.input_channels)
            lm.cache_key = key
            self.loads += 1
            log.info("loaded %s (%s, x%d, %s) on %s in %.1f s", info.id,
                     lm.descriptor.architecture.id, lm.scale, lm.dtype, lm.device, time.monotonic() - t0)
            with self._lock:
                self._cache[key] = lm
                self._evict()
            return lm

    def _evict(self) -> None:
        while len(self._cache) > self.max_models:
            idle = [(lm.last_used, k) for k, lm in self._cache.items() if not self._in_use.get(k)]
            if not idle:
                return
            _, k = min(idle)
            del self._cache[k]

    @contextmanager
    def using(self, lm):
        key = getattr(lm, "cache_key", None)
        with self._lock:
            self._in_use[key] = self._in_use.get(key, 0) + 1
        try:
            yield lm
        finally:
            with self._lock:
                self._in_use[key] -= 1
                if not self._in_use[key]:
                    del self._in_use[key]
            lm.last_used = time.monotonic()

    # ----------------------------------------------------------------- running

    def auto_tile(self, lm) -> int:
        """Tile side from free memory and the model's measured activation size."""
        dev = self.device_info
        budget = devices.budget_for(dev)
        act = lm.max_activation or float(devices.conv_width(lm.module))
        px = devices.estimate_px_bytes(act, 2 if lm.dtype == "float16" else 4)
        return devices.auto_tile(budget, px, lm.size_req, dev.kind)

    def run_model(self, lm, req: JobRequest, image: np.ndarray, progress: Progress,
                  is_cancelled: IsCancelled, options: dict | None = None) -> JobOutput:
        """Run a loaded image model over ``image`` (roi, scale, tiling, OOM fallback)."""
        options = options or {}
        H, W = image.shape[:2]
        roi = _roi_of(req, H, W)
        scale = int(req.scale)
        if scale > lm.scale:
            raise EnhanceError(ErrorKind.UNSUPPORTED,
                               f"model '{lm.info.id}' enlarges at most {lm.scale}x, {scale}x was asked",
                               f"choose scale {lm.scale} or less, or a model with a larger scale "
                               "(e.g. realesrgan-x4plus), or upscale twice")
        color, alpha = split_alpha(image)
        if lm.input_channels not in (1, 3) or lm.output_channels not in (1, 3):
            raise EnhanceError(ErrorKind.UNSUPPORTED,
                               f"model '{lm.info.id}' works on {lm.input_channels}-channel images",
                               "use a gray or RGB model")

        if req.tile and req.tile > 0:
            tile = max(devices.oom_floor(lm.size_req), int(req.tile))
        elif lm.tiling == "internal":
            tile = 0
        else:
            tile = self.auto_tile(lm)
            if lm.tiling == "discouraged" and max(roi[2], roi[3]) <= 2 * tile:
                tile = 0
        floor = devices.oom_floor(lm.size_req)
        t0 = time.monotonic()
        while True:
            try:
                out, p = self._tiled(lm, color, roi, scale, tile, progress, is_cancelled, options)
                break
            except (Cancelled, EnhanceError):
                raise
            except Exception as e:  # noqa: BLE001 - only OOM is retried
                if not is_oom(e):
                    raise
                devices.empty_cache(self._device)
                gc.collect()
                side = tile if tile > 0 else max(roi[2], roi[3]) + 2 * self.context
                nxt = side // 2
                if nxt < floor:
                    raise EnhanceError(
                        ErrorKind.OUT_OF_MEMORY,
                        f"out of memory on {self.device_info.torch_device} even with {side}px tiles "
                        f"({lm.info.id})",
                        "close other programs using the GPU/RAM, process a smaller selection, or "
                        "choose a lighter model such as realesr-animevideov3") from None
                log.warning("out of memory with %spx tiles: retrying with %dpx", side, nxt)
                progress(0.0, f"out of memory: retrying with {nxt}px tiles")
                tile = nxt
        if alpha is not None:
            full = np.empty((out.shape[0], out.shape[1], image.shape[2]), image.dtype)
            full[:, :, : out.shape[2]] = out
            full[:, :, -1] = resize_alpha(alpha, roi, scale)
            out = full
        seconds = time.monotonic() - t0
        progress(1.0, "done")
        return JobOutput(out, info={
            "model": lm.info.id, "model_status": lm.info.status, "arch": str(lm.descriptor.architecture.id),
            "scale": scale, "model_scale": lm.scale, "tile": p.tile if tile else 0, "tiles": p.count,
            "device": lm.device, "dtype": lm.dtype, "seconds": round(seconds, 3),
            "roi": list(roi)})

    def _tiled(self, lm, color: np.ndarray, roi, scale: int, tile: int, progress: Progress,
               is_cancelled: IsCancelled, options: dict):
        import torch

        H, W, c = color.shape
        align = max(1, lm.size_req.multiple_of)
        context, overlap = tiling.margins_for(tile if tile > 0 else 1 << 30, self.context,
                                              self.overlap, align)
        p = tiling.plan(H, W, tile, context=context, overlap=overlap, roi=roi, align=align)
        oh, ow = p.output_shape(scale)
        out = np.empty((oh, ow, c), color.dtype)
        mc_in, mc_out = lm.input_channels, lm.output_channels

        dev = torch.device(lm.device)
        on_device = self.band_on_device if self.band_on_device is not None else dev.type != "cpu"

        def convert(band: np.ndarray) -> np.ndarray:
            return from_unit_float(convert_channels(band, c), color.dtype)

        if on_device:
            zeros = lambda shape: torch.zeros(shape, dtype=torch.float32, device=dev)  # noqa: E731
            convert_rows = lambda band: _rows_to_numpy(band, c, color.dtype)          # noqa: E731
        else:
            zeros, convert_rows = None, convert
        blender = tiling.RowBlender(p, scale, out, convert_rows, channels=mc_out, zeros=zeros)
        tdtype = torch.float16 if lm.dtype == "float16" else torch.float32
        m = lm.scale
        n = p.count
        weights: dict = {}

        def span_weights(span):      # weights at output scale, on the device (None: all ones)
            if span not in weights:
                weights[span] = (torch.from_numpy(tiling.axis_weights(span, scale)).to(dev)
                                 if span.ramp0 or span.ramp1 else None)
            return weights[span]

        with torch.inference_mode():
            for t in p.tiles():
                if is_cancelled():
                    raise Cancelled()
                r, c_ = t.row, t.col
                y0, y1, x0, x1 = t.extent
                h, w = y1 - y0, x1 - x0
                x = convert_channels(to_unit_float(color[y0:y1, x0:x1]), mc_in)
                ph, pw = lm.size_req.padding(h, w)
                x = tiling.pad_hwc(x, ph, pw)
                xt = torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None]
                yt = lm.forward(xt.to(device=dev, dtype=tdtype), options)
                yt = yt[0, :, : h * m, : w * m].float().clamp_(0, 1)          # C, H, W
                if scale != m:
                    if m % scale == 0:      # block mean == INTER_AREA for integer ratios
                        yt = torch.nn.functional.avg_pool2d(yt[None], m // scale)[0]
                    else:
                        import cv2
                        y = cv2.resize(yt.permute(1, 2, 0).cpu().numpy(), (w * scale, h * scale),
                                       interpolation=cv2.INTER_AREA)
                        yt = torch.from_numpy(y.reshape(h * scale, w * scale, -1)).permute(2, 0, 1).to(dev)
                ys, xs = (r.sup0 - r.ext0) * scale, (c_.sup0 - c_.ext0) * scale
                sup = yt[:, ys: ys + r.sup_len * scale, xs: xs + c_.sup_len * scale]
                wy, wx = span_weights(r), span_weights(c_)
                if wy is not None or wx is not None:
                    if wy is not None:
                        sup = sup * wy[None, :, None]
                    if wx is not None:
                        sup = sup * wx[None, None, :]
                part = sup.permute(1, 2, 0)
                blender.add_support(t, part if on_device else part.cpu().numpy())
                del xt, yt, sup
                progress((t.index + 1) / n, f"tile {t.index + 1}/{n}")
        if not blender.complete:
            raise EnhanceError(ErrorKind.INTERNAL, "tiling did not cover the output")
        lm.last_used = time.monotonic()
        return out, p

    # ----------------------------------------------------------------- checks

    @staticmethod
    def _check_image(image: np.ndarray) -> np.ndarray:
        if not isinstance(image, np.ndarray):
            raise EnhanceError(ErrorKind.BAD_REQUEST, "image must be a numpy array")
        if image.ndim == 2:
            image = image[:, :, None]
        if image.ndim != 3 or not 1 <= image.shape[2] <= 4 or image.shape[0] < 1 or image.shape[1] < 1:
            raise EnhanceError(ErrorKind.BAD_REQUEST, f"image shape {image.shape} is not HxWxC with 1..4 channels")
        if image.dtype not in PEAK:
            raise EnhanceError(ErrorKind.BAD_REQUEST, f"pixel type {image.dtype} is not supported",
                               "send u8, u16 or f32 pixels")
        return image
