"""Tiles sized by time as well as by memory: on a CPU, a tile that fits the RAM may take minutes
(RealESRGAN_x4plus: ~80 s for a 512 px tile on two cores), and the progress bar stands still for
that long.  Here the tile side is capped so that one tile takes about ``TARGET_S`` seconds: the
bar moves every few seconds, a cancel between tiles lands soon, and "time left" is known early.

How long a pixel takes comes from the network itself: the multiply-adds of its convolutions per
input pixel (counted on a shape-only copy on torch's "meta" device, no compute), divided by the
speed of this CPU (one small timed convolution, once per process).  After each tile the measured
time replaces the estimate (``Pace.observe``), so later jobs of the same model are sized by truth.
Measured on the 2-core test machine (3.9 GMAC/s): RealESRGAN_x4plus 17.9 M MAC per pixel, 5.9 ms
per pixel (estimate 4.6 ms); realesr-animevideov3 0.62 M MAC, 0.094 ms (estimate 0.16 ms).

GPUs and MPS keep the memory-sized tile: they are fast enough, and fewer tiles mean less overhead.
"""
from __future__ import annotations

import logging
import math
import os
import threading
import time

log = logging.getLogger("ai_enhance.pace")

ENV_TILE_SECONDS = "AI_ENHANCE_TILE_SECONDS"
#: Seconds one tile should take on a CPU.  Not less: every tile recomputes its context (32 px on
#: each side), so a 256 px tile does about twice the work of its core, a 384 px one 1.6 times, a
#: 512 px one 1.4 times; progress moves and a cancel lands within a tile anyway (tiled._TileClock,
#: interrupt.py), so the time cap only keeps "tile k of n" and the between-tile checks coming.
TARGET_S = 30.0
#: Never smaller than this (the context around each tile would dominate the work).
MIN_SIDE = 384
#: A job whose one-piece run is estimated under this many target-lengths stays in one piece.
ONE_PIECE_FACTOR = 1.5

_cpu_rate: float | None = None
_rate_lock = threading.Lock()


def target_seconds() -> float:
    try:
        return max(0.5, float(os.environ.get(ENV_TILE_SECONDS, TARGET_S)))
    except ValueError:
        return TARGET_S


def macs_per_px(module, in_channels: int, probe_side: int = 64) -> float | None:
    """Multiply-adds of one forward per input pixel, counted on a meta-device copy of ``module``
    (``devices.probe_on_meta``; convolutions and linear layers: they are nearly all of the work).
    None when the copy cannot be built or run that way."""
    import torch

    from .devices import probe_on_meta

    total = 0

    def hook(m, inp, out):
        nonlocal total
        if not isinstance(out, torch.Tensor):
            return
        if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
            k = m.kernel_size[0] * m.kernel_size[1] * (m.in_channels // m.groups)
            if isinstance(m, torch.nn.ConvTranspose2d):
                total += inp[0].numel() * m.out_channels // m.groups * m.kernel_size[0] * m.kernel_size[1]
            else:
                total += out.numel() * k
        elif isinstance(m, torch.nn.Linear):
            total += out.numel() * m.in_features

    kinds = (torch.nn.Conv2d, torch.nn.ConvTranspose2d, torch.nn.Linear)
    if not probe_on_meta(module, in_channels, probe_side, hook, kinds):
        return None
    return total / float(probe_side * probe_side) if total else None


def cpu_macs_per_second() -> float:
    """Multiply-adds per second of this CPU on a typical 3x3 convolution (timed once, ~20 ms)."""
    global _cpu_rate
    with _rate_lock:
        if _cpu_rate is None:
            import torch

            conv = torch.nn.Conv2d(48, 48, 3, padding=1).eval()
            x = torch.rand(1, 48, 96, 96)
            macs = 96 * 96 * 48 * 48 * 9
            best = math.inf
            with torch.inference_mode():
                conv(x)
                for _ in range(3):
                    t0 = time.perf_counter()
                    conv(x)
                    best = min(best, time.perf_counter() - t0)
            _cpu_rate = macs / max(best, 1e-6)
            log.info("CPU speed: %.1f GMAC/s", _cpu_rate / 1e9)
        return _cpu_rate


class Pace:
    """Seconds per input pixel of one loaded network: estimated, then measured."""

    def __init__(self) -> None:
        self.seconds_per_px: float | None = None
        self.measured = False
        self._macs: float | None = None
        self._counted = False

    def macs(self, net) -> float | None:
        """Multiply-adds per input pixel (counted once per loaded network)."""
        if not self._counted:
            self._counted = True
            self._macs = macs_per_px(net.module, net.input_channels)
        return self._macs

    def estimate(self, net) -> float | None:
        if self.seconds_per_px is None:
            macs = self.macs(net)
            if macs:
                self.seconds_per_px = macs / cpu_macs_per_second()
        return self.seconds_per_px

    def observe(self, pixels: int, seconds: float) -> None:
        """A tile of ``pixels`` input pixels (its extent) took ``seconds``."""
        if pixels <= 0 or seconds <= 0:
            return
        spp = seconds / pixels
        if not self.measured or self.seconds_per_px is None:
            self.seconds_per_px = spp
        else:   # smooth: one slow tile (another program busy) must not halve the next job's tiles
            self.seconds_per_px = 0.7 * self.seconds_per_px + 0.3 * spp
        self.measured = True


def pace_of(net) -> Pace:
    """The Pace kept on the loaded network object (made on first use)."""
    p = getattr(net, "pace", None)
    if not isinstance(p, Pace):
        p = Pace()
        try:
            net.pace = p
        except AttributeError:
            pass
    return p


def paced_tile(net, device_kind: str, memory_tile: int, region: tuple[int, int], context: int,
               align: int = 1, minimum: int = 0) -> int:
    """The tile side to use: ``memory_tile`` capped so that one tile takes about the target time
    on a CPU.  ``region``: (width, height) of what is computed (roi); 0 = one piece."""
    if device_kind != "cpu":
        return memory_tile
    spp = pace_of(net).estimate(net)
    if not spp:
        return memory_tile
    target = target_seconds()
    w, h = region
    one_piece = (w + 2 * context) * (h + 2 * context)
    if (one_piece * spp <= ONE_PIECE_FACTOR * target or max(w, h) + 2 * context <= MIN_SIDE) \
            and (memory_tile <= 0 or max(w, h) + 2 * context <= memory_tile):
        return memory_tile        # one piece: splitting would only add context work
    side = int(math.sqrt(target / spp))
    side = max(MIN_SIDE, minimum, side)
    if memory_tile > 0:
        side = min(side, memory_tile)
    m = max(1, align)
    side = max(m, side - side % m)
    if memory_tile > 0 and side < memory_tile and side < max(w, h) + 2 * context:
        log.info("tile %d px (not %d): about %.1f s per tile on this CPU", side, memory_tile, side * side * spp)
    return side
