"""Run a loaded image network over an image, tile by tile, seamlessly, with the out-of-memory
fallback (halve the tile and go again).

The network is anything with the attributes of ``models.store.LoadedModel`` (``forward(x, options)``
mapping a (1, C, H, W) float tensor in [0, 1] to (1, C', H*s, W*s), ``scale``, ``input_channels``,
``output_channels``, ``size_req``, ``tiling``, ``dtype``, ``device``, ``max_activation``, ``module``,
``label``); this module does not know where it came from.

Pixels: the colour plane arrives in its native dtype (u8/u16/f32, 1 or 3 channels) and the result
has the same dtype and channels; each tile is converted to float32 on its own, so the float copy of
the whole image never exists.  Finished rows are blended and converted on the model's device
(GPU: no per-tile sync) or in numpy (CPU).
"""
from __future__ import annotations

import gc
import logging
import time
from dataclasses import dataclass

import numpy as np

from ai_enhance_client.protocol import ErrorKind

from ..errors import Cancelled, EnhanceError
from ..jobs import IsCancelled, Progress
from ..pixels import LUMA, PEAK, convert_channels, from_unit_float, to_unit_float
from . import devices, interrupt, pace, tiling

log = logging.getLogger("ai_enhance.tiled")

#: Default seam handling (input pixels): context thrown away around each tile, cross-fade width.
#: Measured on RealESRGAN_x4plus (the widest effective receptive field of the catalogue): a block
#: computed with 16 px of context differs from the untiled result by 34 dB, 24 px: 38 dB,
#: 32 px: 46 dB, 40 px: 52 dB (worst case, context on all four sides).  Tiles are clamped to
#: 1/8 of the tile side, so small explicit tiles trade seams for speed.
DEFAULT_CONTEXT = 32
DEFAULT_OVERLAP = 16


@dataclass
class TiledResult:
    image: np.ndarray
    tile: int            # tile side used (0: one piece)
    tiles: int
    seconds: float


@dataclass
class TiledRunner:
    device: devices.DeviceInfo
    context: int = DEFAULT_CONTEXT
    overlap: int = DEFAULT_OVERLAP
    #: blend tiles on the model's device (GPU: no per-tile sync, finished rows come back in the
    #: output dtype); None = on GPUs only
    band_on_device: bool | None = None

    def auto_tile(self, net) -> int:
        """Tile side from free memory and the network's measured activation size."""
        budget = devices.budget_for(self.device)
        act = net.max_activation or float(devices.conv_width(net.module))
        px = devices.estimate_px_bytes(act, 2 if net.dtype == "float16" else 4)
        return devices.auto_tile(budget, px, net.size_req, self.device.kind)

    def run(self, net, color: np.ndarray, roi: tuple[int, int, int, int], scale: int, tile: int,
            options: dict, progress: Progress, is_cancelled: IsCancelled,
            on_info=None) -> TiledResult:
        """``color`` (HxWx1|3, native dtype) -> roi * scale at ``scale``; ``tile`` 0 = automatic.
        A network whose forward returns ``(tensor, info)`` (e.g. FBCNN's quality estimate) hands
        each tile's info to ``on_info``."""
        if scale > net.scale:
            raise EnhanceError(ErrorKind.UNSUPPORTED,
                               f"model '{net.label}' enlarges at most {net.scale}x, {scale}x was asked",
                               f"choose scale {net.scale} or less, or a model with a larger scale "
                               "(e.g. realesrgan-x4plus), or upscale twice")
        if net.input_channels not in (1, 3) or net.output_channels not in (1, 3):
            raise EnhanceError(ErrorKind.UNSUPPORTED,
                               f"model '{net.label}' works on {net.input_channels}-channel images",
                               "use a gray or RGB model")
        self._check_output_fits(net, color, roi, scale)
        floor = devices.oom_floor(net.size_req)
        if tile and tile > 0:
            tile = max(floor, int(tile))
        elif net.tiling == "internal":
            tile = 0
        else:
            tile = self.auto_tile(net)
            if net.tiling == "discouraged" and max(roi[2], roi[3]) <= 2 * tile:
                tile = 0
            if tile:        # by time too: on a CPU a tile takes seconds, not minutes
                tile = pace.paced_tile(net, self.device.kind, tile, (roi[2], roi[3]), self.context,
                                       net.size_req.multiple_of, max(floor, net.size_req.minimum))
        t0 = time.monotonic()
        while True:
            try:
                out, plan = self._tiled(net, color, roi, scale, tile, progress, is_cancelled, options,
                                         on_info)
                break
            except (Cancelled, EnhanceError):
                raise
            except Exception as e:  # noqa: BLE001 - only OOM is retried
                if not devices.is_oom(e):
                    raise
                devices.empty_cache(self.device)
                gc.collect()
                side = tile if tile > 0 else max(roi[2], roi[3]) + 2 * self.context
                nxt = side // 2
                if nxt < floor:
                    raise EnhanceError(
                        ErrorKind.OUT_OF_MEMORY,
                        f"out of memory on {self.device.torch_device} even with {side}px tiles "
                        f"({net.label})",
                        "close other programs using the GPU/RAM, process a smaller selection, or "
                        "choose a lighter model such as realesr-animevideov3") from None
                log.warning("out of memory with %spx tiles: retrying with %dpx", side, nxt)
                progress(0.0, f"out of memory: retrying with {nxt}px tiles")
                tile = nxt
        return TiledResult(out, plan.tile if tile else 0, plan.count, time.monotonic() - t0)

    def _check_output_fits(self, net, color: np.ndarray, roi, scale: int) -> None:
        """The result array is allocated whole whatever the tile size: when it cannot fit in the
        memory this process may use (cgroup, RLIMIT_AS, host), say so before any compute instead
        of halving tiles in vain (or being OOM-killed)."""
        need = roi[2] * scale * roi[3] * scale * color.shape[2] * color.dtype.itemsize
        try:
            lim = devices.memory_limits()
        except Exception:  # noqa: BLE001 - unknown limits: let the allocation decide
            return
        avail = lim.available
        if avail is not None and need > avail:
            fit = max(1, int((avail / (color.shape[2] * color.dtype.itemsize)) ** 0.5 / scale * 0.8))
            raise EnhanceError(ErrorKind.OUT_OF_MEMORY,
                               f"the {roi[2] * scale}x{roi[3] * scale} result needs {need >> 20} MB but this "
                               f"backend may use only {avail >> 20} MB more ({lim.source()})",
                               f"use a selection of about {fit}x{fit} px, a smaller scale, or raise the "
                               "memory limit of the backend's container/ulimit")

    def _tiled(self, net, color: np.ndarray, roi, scale: int, tile: int, progress: Progress,
               is_cancelled: IsCancelled, options: dict, on_info=None):
        import torch

        H, W, c = color.shape
        align = max(1, net.size_req.multiple_of)
        context, overlap = tiling.margins_for(tile if tile > 0 else 1 << 30, self.context,
                                              self.overlap, align)
        p = tiling.plan(H, W, tile, context=context, overlap=overlap, roi=roi, align=align)
        oh, ow = p.output_shape(scale)
        out = np.empty((oh, ow, c), color.dtype)
        mc_in, mc_out = net.input_channels, net.output_channels

        dev = torch.device(net.device)
        on_device = self.band_on_device if self.band_on_device is not None else dev.type != "cpu"

        def convert(band: np.ndarray) -> np.ndarray:
            return from_unit_float(convert_channels(band, c), color.dtype)

        if on_device:
            zeros = lambda shape: torch.zeros(shape, dtype=torch.float32, device=dev)  # noqa: E731
            convert_rows = lambda band: _rows_to_numpy(band, c, color.dtype)          # noqa: E731
        else:
            zeros, convert_rows = None, convert
        blender = tiling.RowBlender(p, scale, out, convert_rows, channels=mc_out, zeros=zeros)
        tdtype = torch.float16 if net.dtype == "float16" else torch.float32
        m = net.scale
        n = p.count
        weights: dict = {}

        def span_weights(span):      # weights at output scale, on the device (None: all ones)
            if span not in weights:
                weights[span] = (torch.from_numpy(tiling.axis_weights(span, scale)).to(dev)
                                 if span.ramp0 or span.ramp1 else None)
            return weights[span]

        clock = _TileClock(p, net, progress)
        # the forward itself is interruptible (a cancel lands within one layer, not one tile) and
        # followed (progress moves inside a tile)
        interrupt.prepare(net.module)
        with torch.inference_mode(), interrupt.watching(is_cancelled, clock.on_work):
            for t in p.tiles():
                if is_cancelled():
                    raise Cancelled()
                r, c_ = t.row, t.col
                y0, y1, x0, x1 = t.extent
                h, w = y1 - y0, x1 - x0
                ph, pw = net.size_req.padding(h, w)
                clock.begin(t, (h + ph) * (w + pw))
                x = convert_channels(to_unit_float(color[y0:y1, x0:x1]), mc_in)
                x = tiling.pad_hwc(x, ph, pw)
                xt = torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None]
                yt = net.forward(xt.to(device=dev, dtype=tdtype), options)
                if isinstance(yt, tuple):        # (tensor, info) from an adapter
                    yt, tile_info = yt
                    if on_info is not None:
                        on_info(tile_info)
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
                if wy is not None:
                    sup = sup * wy[None, :, None]
                if wx is not None:
                    sup = sup * wx[None, None, :]
                part = sup.permute(1, 2, 0)
                blender.add_support(t, part if on_device else part.cpu().numpy())
                del xt, yt, sup
                clock.done(t)
        progress(1.0, f"{n} tiles done" if n > 1 else "done")
        if not blender.complete:
            raise EnhanceError(ErrorKind.INTERNAL, "tiling did not cover the output")
        return out, p


class _TileClock:
    """Honest progress of a tiled run: "tile k of n", moving WITHIN a tile too (the multiply-adds
    of the forward are followed through the cancel hook, see runtime/interrupt.py: a CPU tile of a
    minute moves the bar every half second), and the time left as soon as a little of the work is
    done.  Each tile's time also teaches the network's Pace how big later tiles may be.
    """

    REPORT_S = 0.5

    def __init__(self, plan, net, progress):
        self.n = plan.count
        self.progress = progress
        self.total_px = max(1, plan.computed_pixels)
        self.done_px = 0
        self.pace = pace.pace_of(net)
        self.macs_px = self.pace.macs(net)       # None: no count inside a tile (still per tile)
        self.t_first = None
        self._t0 = 0.0
        self._index = 0
        self._px = 0
        self._expect = 0.0
        self._macs = 0.0
        self._last = 0.0

    def begin(self, t, padded_px: int) -> None:
        now = time.monotonic()
        if self.t_first is None:
            self.t_first = now
        self._t0, self._index, self._px = now, t.index, padded_px
        self._expect = (self.macs_px or 0.0) * padded_px
        self._macs = 0.0
        self._last = now
        self.progress(t.index / self.n, self._text(0.0))

    def _within(self) -> float:
        return min(0.99, self._macs / self._expect) if self._expect > 0 else 0.0

    def _text(self, within: float) -> str:
        s = f"tile {self._index + 1} of {self.n}"
        done = self.done_px + within * self._px
        elapsed = time.monotonic() - (self.t_first or time.monotonic())
        frac = done / self.total_px
        if self.done_px or (frac > 0.02 and elapsed > 2.0):   # after the first tile, or a fair sample
            s += f" \u00b7 about {_duration(elapsed / max(frac, 1e-9) * (1 - frac))} left"
        return s

    def on_work(self, macs: float) -> None:
        if self._expect <= 0:
            return
        self._macs += macs
        now = time.monotonic()
        if now - self._last >= self.REPORT_S:
            self._last = now
            within = self._within()
            self.progress((self._index + within) / self.n, self._text(within))

    def done(self, t) -> None:
        dt = time.monotonic() - self._t0
        y0, y1, x0, x1 = t.extent
        self.done_px += (y1 - y0) * (x1 - x0)
        self.pace.observe(self._px, dt)


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{max(1, int(round(seconds)))} s"
    if seconds < 3600:
        return f"{int(round(seconds / 60))} min"
    return f"{seconds / 3600:.1f} h"


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
