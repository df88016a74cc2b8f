"""Running image-model tiles fast on CUDA: half precision, channels_last, cuDNN autotuning,
several tiles per forward pass, pinned host buffers with copies on side streams overlapping the
compute, and optionally CUDA graphs or torch.compile.

The pieces are pure or degrade to plain sequential code on the CPU, so the numerics are tested
without a GPU:

- ``batch_groups`` / ``stack_tiles`` / ``unstack``: tiles of equal size, consecutive within a
  window (a row of the tile plan, which the blender accepts in any order), go through the
  network as one batch; outputs are split back in input order.
- ``pipelined``: a fixed ring of ``depth`` slots; batch i uses slot i % depth.  Each slot holds a
  pinned input buffer, the device input, the device output and a pinned output buffer.  Before a
  slot is reused, its previous batch has been finished (output read) and its upload has
  completed, so no asynchronous copy ever reads a buffer the host is rewriting.  The stream
  primitives come from a ``Streams`` object: ``SyncStreams`` runs each step at once (CPU, or
  CUDA without overlap), ``CudaStreams`` uses an upload stream, the compute stream and a
  download stream, and the tests drive the same pipeline with a stand-in that runs every
  asynchronous step as late as the ordering rules allow.
- ``TileRunner``: a module prepared for a device (dtype by the model's support, channels_last,
  cudnn.benchmark, optional CUDA graphs per batch shape or torch.compile) that runs tile lists
  (``run_tiles``) or a whole image with the engine's tiling and blending (``run_image``).

torch is imported lazily (inside functions): importing this module is cheap.
"""
from __future__ import annotations

import copy
import logging
import math
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

log = logging.getLogger("ai_enhance.cuda_tuning")

#: Dense fp16 tensor-core peaks (FLOP/s, no sparsity) of common GPUs, by a substring of torch's
#: device name; the first match wins (more specific names first).
PEAK_FP16 = [
    ("H200", 989e12), ("H100 PCIe", 756e12), ("H100", 989e12), ("GH200", 989e12),
    ("B200", 2250e12), ("A100", 312e12), ("L40S", 362e12), ("L40", 181e12), ("L4", 121e12),
    ("A10G", 70e12), ("A10", 125e12), ("T4", 65e12), ("V100", 125e12),
    ("RTX 5090", 210e12), ("RTX 4090", 165e12), ("RTX 4080", 97e12), ("RTX 4070", 58e12),
    ("RTX 3090", 71e12), ("RTX 3080", 60e12), ("RTX 3070", 41e12), ("RTX 3060", 25e12),
    ("RTX A6000", 155e12), ("RTX 6000 Ada", 365e12),
]


# --------------------------------------------------------------------------- settings

@dataclass(frozen=True)
class CudaTuning:
    dtype: str = "auto"            # auto | float16 | bfloat16 | float32
    channels_last: bool = True
    cudnn_benchmark: bool = True
    max_batch: int = 4             # tiles per forward pass
    overlap: bool = True           # pinned buffers + side streams (CUDA only)
    depth: int = 2                 # batches in flight
    graphs: bool = False           # CUDA graphs, one per batch shape
    compile: bool = False          # torch.compile (inductor caches its kernels on disk)
    max_graphs: int = 8            # captured shapes kept (each holds its own memory pool)


def choose_dtype(requested: str, device_kind: str, supports_half: bool, supports_bf16: bool,
                 bf16_capable: bool) -> str:
    """The dtype to run in.  auto: on CUDA fp16 when the model supports it, else bf16 when the
    model and GPU support it (Ampere and newer), else fp32; fp32 off CUDA.  An explicit half
    dtype the model does not support falls back to fp32."""
    r = (requested or "auto").lower()
    if r not in ("auto", "float16", "bfloat16", "float32"):
        raise ValueError(f"bad dtype {requested!r}: use auto, float16, bfloat16 or float32")
    if r == "float32":
        return "float32"
    if r == "float16":
        return "float16" if supports_half else "float32"
    if r == "bfloat16":
        return "bfloat16" if supports_bf16 and (bf16_capable or device_kind != "cuda") else "float32"
    if device_kind != "cuda":
        return "float32"
    if supports_half:
        return "float16"
    if supports_bf16 and bf16_capable:
        return "bfloat16"
    return "float32"


# --------------------------------------------------------------------------- batching

def batch_groups(shapes: Sequence[tuple], max_batch: int,
                 windows: Sequence[Any] | None = None) -> list[list[int]]:
    """Indices of ``shapes`` grouped into batches: equal shapes, within one window (consecutive
    items with the same window id), at most ``max_batch`` each.  Batches are ordered by their
    first index, so the windows come out in order."""
    if max_batch < 1:
        raise ValueError("max_batch must be >= 1")
    windows = list(windows) if windows is not None else [0] * len(shapes)
    if len(windows) != len(shapes):
        raise ValueError("one window id per shape")
    out: list[list[int]] = []
    i = 0
    while i < len(shapes):
        j = i
        while j < len(shapes) and windows[j] == windows[i]:
            j += 1
        open_: dict[tuple, list[int]] = {}
        for k in range(i, j):
            key = tuple(shapes[k])
            g = open_.get(key)
            if g is None or len(g) >= max_batch:
                g = []
                open_[key] = g
                out.append(g)
            g.append(k)
        i = j
    out.sort(key=lambda g: g[0])
    return out


def stack_tiles(tiles: Sequence[np.ndarray]) -> np.ndarray:
    """(C, H, W) tiles of one shape -> (N, C, H, W)."""
    shapes = {t.shape for t in tiles}
    if len(shapes) != 1:
        raise ValueError(f"tiles of one batch must share a shape, got {sorted(shapes)}")
    return np.ascontiguousarray(np.stack(tiles, 0))


def unstack(batch) -> list:
    """(N, C, H, W) -> N arrays/tensors (C, H, W)."""
    return [batch[i] for i in range(batch.shape[0])]


# --------------------------------------------------------------------------- streams

class SyncStreams:
    """Every step runs at once, in order: the CPU (and CUDA without overlap)."""

    def __init__(self, compute: Callable, to_host: Callable | None = None,
                 to_device: Callable | None = None):
        self._compute = compute
        self._to_host = to_host or (lambda y: y)
        self._to_device = to_device or (lambda x: x)
        self.dev_in: dict[int, Any] = {}
        self.dev_out: dict[int, Any] = {}
        self.host_out: dict[int, Any] = {}
        self.host_in: dict[int, np.ndarray] = {}

    def stage(self, slot: int, host: np.ndarray) -> None:
        self.host_in[slot] = np.array(host, copy=True)

    def upload(self, slot: int):
        self.dev_in[slot] = self._to_device(self.host_in[slot])
        return None

    def compute(self, slot: int):
        self.dev_out[slot] = self._compute(self.dev_in[slot])
        return None

    def download(self, slot: int):
        self.host_out[slot] = self._to_host(self.dev_out[slot])
        return None

    def wait(self, event) -> None:
        pass

    def read(self, slot: int, on_host: bool):
        return self.host_out[slot] if on_host else self.dev_out[slot]


class CudaStreams:
    """Uploads on one side stream, the network on the current stream, downloads on another side
    stream; host buffers are pinned and reused per slot and shape."""

    def __init__(self, compute: Callable, device, out_dtype):
        import torch

        self.torch = torch
        self.device = torch.device(device)
        self._compute = compute
        self.out_dtype = out_dtype
        self.up = torch.cuda.Stream(self.device)
        self.down = torch.cuda.Stream(self.device)
        self.main = torch.cuda.current_stream(self.device)
        self.pin_in: dict[int, Any] = {}
        self.pin_out: dict[int, Any] = {}
        self.dev_in: dict[int, Any] = {}
        self.dev_out: dict[int, Any] = {}
        self.shape_in: dict[int, tuple] = {}
        self.shape_out: dict[int, tuple] = {}

    def _pinned(self, store: dict, slot: int, shape, dtype):
        buf = store.get(slot)
        n = int(np.prod(shape))
        if buf is None or buf.dtype != dtype or buf.numel() < n:
            buf = self.torch.empty(n, dtype=dtype, pin_memory=True)
            store[slot] = buf
        return buf[:n].view(*shape)

    def stage(self, slot: int, host: np.ndarray) -> None:
        t = self.torch.from_numpy(np.ascontiguousarray(host))
        self._pinned(self.pin_in, slot, t.shape, t.dtype).copy_(t)
        self.shape_in[slot] = tuple(t.shape)

    def upload(self, slot: int):
        torch = self.torch
        src = self.pin_in[slot]
        shape = self.shape_in[slot]
        with torch.cuda.stream(self.up):
            dev = src[: int(np.prod(shape))].view(*shape).to(self.device, non_blocking=True)
            ev = torch.cuda.Event()
            ev.record(self.up)
        self.main.wait_event(ev)
        dev.record_stream(self.main)
        self.dev_in[slot] = dev
        return ev

    def compute(self, slot: int):
        # no event: a consumer of the device output runs on this same stream, after it
        self.dev_out[slot] = self._compute(self.dev_in[slot])
        return None

    def download(self, slot: int):
        torch = self.torch
        y = self.dev_out[slot]
        self.down.wait_stream(self.main)
        with torch.cuda.stream(self.down):
            y.record_stream(self.down)
            y = y.to(self.out_dtype)
            dst = self._pinned(self.pin_out, slot, y.shape, self.out_dtype)
            dst.copy_(y, non_blocking=True)
            ev = torch.cuda.Event()
            ev.record(self.down)
        self.shape_out[slot] = tuple(y.shape)
        return ev

    def wait(self, event) -> None:
        if event is not None:
            event.synchronize()

    def read(self, slot: int, on_host: bool):
        if not on_host:
            return self.dev_out[slot]
        shape = self.shape_out[slot]
        return self.pin_out[slot][: int(np.prod(shape))].view(*shape).numpy().astype(np.float32)


def pipelined(streams, batches: Iterable[np.ndarray], *, depth: int = 2,
              on_host: bool = True) -> Iterator:
    """Run every batch through ``streams`` with up to ``depth`` batches in flight; yields the
    outputs in input order (numpy on the host, or device tensors when ``on_host`` is False).

    ``streams.upload`` / ``compute`` / ``download`` return an event the host waits for before
    reusing or reading that slot (None: nothing to wait for, stream order suffices).
    Ordering rules that make it safe with asynchronous copies: a slot's pinned input is
    rewritten only after its previous upload finished; its output is read only after its
    download finished; a slot is reused only after its previous batch was yielded."""
    if depth < 1:
        raise ValueError("depth must be >= 1")
    pending: deque = deque()           # (slot, upload event, final event)
    up_events: dict[int, Any] = {}

    def finish():
        slot, _, ev = pending.popleft()
        streams.wait(ev)
        return streams.read(slot, on_host)

    for i, host in enumerate(batches):
        if len(pending) >= depth:
            yield finish()
        slot = i % depth
        if slot in up_events:
            streams.wait(up_events.pop(slot))
        streams.stage(slot, host)
        up = streams.upload(slot)
        up_events[slot] = up
        done = streams.compute(slot)
        if on_host:
            done = streams.download(slot)
        pending.append((slot, up, done))
    while pending:
        yield finish()


# --------------------------------------------------------------------------- graphs

class GraphCache:
    """One CUDA graph per input shape: ``__call__(x)`` copies x into the captured input, replays,
    and returns a clone of the captured output (the next replay overwrites it).  Shapes beyond
    ``max_graphs`` run eagerly."""

    def __init__(self, fn: Callable, max_graphs: int = 8, warmup: int = 2):
        self.fn = fn
        self.max_graphs = max_graphs
        self.warmup = warmup
        self.graphs: dict[tuple, tuple] = {}

    def __call__(self, x):
        import torch

        key = (tuple(x.shape), x.dtype, x.is_contiguous(memory_format=torch.channels_last))
        g = self.graphs.get(key)
        if g is None:
            if len(self.graphs) >= self.max_graphs:
                return self.fn(x)
            static_in = x.clone()
            side = torch.cuda.Stream(x.device)
            side.wait_stream(torch.cuda.current_stream(x.device))
            with torch.cuda.stream(side):
                for _ in range(self.warmup):
                    self.fn(static_in)
            torch.cuda.current_stream(x.device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                static_out = self.fn(static_in)
            g = self.graphs[key] = (graph, static_in, static_out)
        graph, static_in, static_out = g
        static_in.copy_(x)
        graph.replay()
        return static_out.clone()


# --------------------------------------------------------------------------- the runner

class TileRunner:
    """``module`` prepared for ``device`` with ``tuning``; runs tiles in batches.

    Tiles are (C, H, W) numpy arrays, uint8 (divided by 255 on the device: a quarter of the
    upload) or float32 in [0, 1]; outputs are float32 (C', H*s, W*s) clamped to [0, 1]."""

    def __init__(self, module, *, device: str = "cuda", tuning: CudaTuning | None = None,
                 supports_half: bool = True, supports_bf16: bool = True):
        import torch

        self.tuning = tuning or CudaTuning()
        self.device = torch.device(device)
        kind = self.device.type
        bf16_ok = kind == "cuda" and torch.cuda.is_bf16_supported()
        self.dtype_name = choose_dtype(self.tuning.dtype, kind, supports_half, supports_bf16, bf16_ok)
        self.dtype = getattr(torch, self.dtype_name)
        self.channels_last = bool(self.tuning.channels_last)
        if kind == "cuda" and self.tuning.cudnn_benchmark:
            torch.backends.cudnn.benchmark = True     # process-wide: autotune per new shape
        # a copy: the caller's module keeps its device, dtype and memory format (the engine's
        # torch path may still use it)
        module = copy.deepcopy(module).eval().to(self.device, self.dtype)
        if self.channels_last:
            module = module.to(memory_format=torch.channels_last)
        for p in module.parameters():
            p.requires_grad_(False)
        self.module = module
        fn: Callable = module
        if self.tuning.compile:
            fn = torch.compile(module, dynamic=False)
        if self.tuning.graphs and kind == "cuda":
            fn = GraphCache(fn, self.tuning.max_graphs)
        self._fn = fn
        self.overlap = bool(self.tuning.overlap and kind == "cuda")

    # ----------------------------------------------------------------- one batch

    def prepare(self, x):
        """A host-layout batch (uint8 or float32 NCHW tensor on the device) -> the model's input."""
        import torch

        if x.dtype == torch.uint8:      # scaled in fp32: u8 / 255 rounds once, like the engine
            x = x.float().mul_(1.0 / 255.0).to(self.dtype)
        else:
            x = x.to(self.dtype)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def forward_batch(self, x):
        """(N, C, H, W) device tensor (uint8 or float) -> (N, C', sH, sW) float, clamped."""
        import torch

        with torch.inference_mode():
            y = self._fn(self.prepare(x))
            return y.clamp(0, 1).contiguous()

    # ----------------------------------------------------------------- many tiles

    def _streams(self, on_host: bool):
        import torch

        if self.overlap:
            out_dtype = torch.float16 if self.dtype == torch.float16 else torch.float32
            return CudaStreams(self.forward_batch, self.device, out_dtype)

        def to_device(a):
            return torch.from_numpy(np.ascontiguousarray(a)).to(self.device)

        def to_host(y):
            return y.float().cpu().numpy()
        return SyncStreams(self.forward_batch, to_host if on_host else None, to_device)

    def iter_batches(self, tiles: Sequence[np.ndarray], windows: Sequence[Any] | None = None,
                     on_host: bool = True) -> Iterator[tuple[list[int], Any]]:
        """Yields (indices, outputs): each batch's tile indices and its (N, C', sH, sW) output
        (numpy float32, or a device tensor when ``on_host`` is False), in batch order."""
        groups = batch_groups([t.shape for t in tiles], self.tuning.max_batch, windows)
        batches = (stack_tiles([tiles[i] for i in g]) for g in groups)
        outs = pipelined(self._streams(on_host), batches, depth=max(1, self.tuning.depth),
                         on_host=on_host)
        yield from zip(groups, outs)

    def run_tiles(self, tiles: Sequence[np.ndarray], windows: Sequence[Any] | None = None
                  ) -> list[np.ndarray]:
        """Outputs of every tile, in input order (float32 numpy)."""
        out: list = [None] * len(tiles)
        for idx, y in self.iter_batches(tiles, windows):
            for i, yi in zip(idx, unstack(y)):
                out[i] = np.asarray(yi, dtype=np.float32)
        return out

    def run_image(self, image: np.ndarray, tile: int, *, context: int = 32, overlap: int = 16,
                  scale: int | None = None) -> np.ndarray:
        """A whole HWC image (uint8 or float32 in [0, 1], the model's channel count) through the
        engine's tile plan and cross-fade; returns HWC at ``scale`` (default: the model's) in
        the input's dtype.  On CUDA the blend happens on the device (tiles never come back),
        finished rows come back once, already in the output dtype."""
        import torch

        from . import tiling

        h, w, c = image.shape
        ctx, ov = tiling.margins_for(tile if tile > 0 else 1 << 30, context, overlap)
        plan = tiling.plan(h, w, tile, context=ctx, overlap=ov)
        tiles = list(plan.tiles())
        inputs = [np.ascontiguousarray(image[t.extent[0]:t.extent[1], t.extent[2]:t.extent[3]]
                                       .transpose(2, 0, 1)) for t in tiles]
        on_device = self.device.type != "cpu"
        peak = 255.0 if image.dtype == np.uint8 else 1.0

        s = scale
        weights: dict = {}
        out = np.empty(plan.output_shape(1) + (c,), image.dtype)     # resized once s is known
        blender = None

        def convert_rows(band):
            if on_device:
                band = band.clamp(0, 1)
                if peak != 1.0:
                    return torch.round(band * peak).to(torch.uint8).cpu().numpy()
                return band.float().cpu().numpy()
            if peak != 1.0:
                return np.clip(np.rint(band * peak), 0, peak).astype(np.uint8)
            return np.clip(band, 0, 1).astype(np.float32)

        def span_w(span):
            if span not in weights:
                wgt = tiling.axis_weights(span, s)
                weights[span] = torch.from_numpy(wgt).to(self.device) if on_device else wgt
            return weights[span]

        for idx, ys in self.iter_batches(inputs, [t.row for t in tiles], on_host=not on_device):
            for i, y in zip(idx, unstack(ys)):
                t = tiles[i]
                if blender is None:
                    s = s or y.shape[-1] // inputs[i].shape[-1]
                    out = np.empty(plan.output_shape(s) + (c,), image.dtype)
                    zeros = ((lambda shape: torch.zeros(shape, dtype=torch.float32, device=self.device))
                             if on_device else None)
                    blender = tiling.RowBlender(plan, s, out, convert_rows, channels=y.shape[0],
                                                zeros=zeros)
                m = y.shape[-1] // inputs[i].shape[-1]
                if s != m:
                    raise ValueError(f"this runner does not resize (model x{m}, asked x{s})")
                r, cc = t.row, t.col
                ys0, xs0 = (r.sup0 - r.ext0) * s, (cc.sup0 - cc.ext0) * s
                sup = y[:, ys0: ys0 + r.sup_len * s, xs0: xs0 + cc.sup_len * s]
                wy, wx = span_w(r), span_w(cc)
                sup = sup * wy[None, :, None] * wx[None, None, :]
                part = sup.permute(1, 2, 0) if on_device else sup.transpose(1, 2, 0)
                blender.add_support(t, part)
        if blender is None or not blender.complete:
            raise RuntimeError("tiling did not cover the output")
        return out


# --------------------------------------------------------------------------- compute floor

def flops_per_pixel(module, in_channels: int, side: int = 32) -> float:
    """Multiply-add FLOPs (2 per MAC) of convolutions and linear layers per INPUT pixel, counted
    with forward hooks on one ``side`` x ``side`` float32 pass on the module's device."""
    import torch

    total = 0.0

    def conv_hook(m, _inp, out):
        nonlocal total
        kh, kw = m.kernel_size if isinstance(m.kernel_size, tuple) else (m.kernel_size,) * 2
        total += 2.0 * out.numel() * (m.in_channels // m.groups) * kh * kw

    def lin_hook(m, _inp, out):
        nonlocal total
        total += 2.0 * out.numel() * m.in_features

    handles = []
    for m in module.modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, torch.nn.Linear):
            handles.append(m.register_forward_hook(lin_hook))
    p = next(iter(module.parameters()), None)
    dev = p.device if p is not None else "cpu"
    dtype = p.dtype if p is not None else torch.float32
    try:
        with torch.inference_mode():
            module(torch.zeros(1, in_channels, side, side, device=dev, dtype=dtype))
    finally:
        for h in handles:
            h.remove()
    return total / float(side * side)


def table_peak(device_name: str) -> float | None:
    """Dense fp16 tensor peak of a GPU by name, from PEAK_FP16 (None: unknown)."""
    for key, peak in PEAK_FP16:
        if key.lower() in device_name.lower():
            return peak
    return None


def matmul_peak(device: str = "cuda", n: int = 8192, reps: int = 20, dtype: str = "float16") -> float:
    """Achieved FLOP/s of a large half-precision matmul: what the tensor cores deliver here."""
    import time

    import torch

    dt = getattr(torch, dtype)
    a = torch.randn(n, n, device=device, dtype=dt)
    b = torch.randn(n, n, device=device, dtype=dt)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    torch.cuda.synchronize(device)
    return 2.0 * n ** 3 * reps / (time.perf_counter() - t0)


def floor_seconds_per_mp(flops_px: float, peak: float) -> float:
    """Seconds per input megapixel at ``peak`` FLOP/s: the compute floor."""
    return flops_px * 1e6 / peak if peak and not math.isnan(peak) else float("nan")


__all__ = ["CudaTuning", "choose_dtype", "batch_groups", "stack_tiles", "unstack", "SyncStreams",
           "CudaStreams", "pipelined", "GraphCache", "TileRunner", "flops_per_pixel",
           "table_peak", "matmul_peak", "floor_seconds_per_mp", "PEAK_FP16"]
