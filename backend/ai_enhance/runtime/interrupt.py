"""Cancel INSIDE a forward pass, and follow its work.

A tile of a large model takes seconds to minutes on a CPU; checking the cancel flag only between
tiles would leave a cancelled job computing that long.  Two things make a cancel land within a
fraction of a second:

- a global forward pre-hook of torch runs before every module call (every convolution, every
  block) and raises ``Cancelled`` when the job of the calling thread is cancelled;
- one convolution alone can take long on a CPU (RealESRGAN's last 3x3 convolutions at 4x the
  tile's size: 38 G multiply-adds for a 256 px tile, ~10 s on two cores), so ``prepare(module)``
  makes the plain ``nn.Conv2d`` layers of a network compute large outputs in bands of rows
  (exactly the same sums: each band reads its rows plus the kernel's halo, zero-padded only at the
  image border) with the cancel check between bands.

The hook is installed once per process and costs one thread-local lookup per module call; it acts
only in a thread inside ``watching(...)``, so other threads (a second worker, the capabilities
probe, tests) are never interrupted.  The same places report the multiply-adds done
(``on_work(macs)``): progress that moves within a tile.
"""
from __future__ import annotations

import threading
import types
from contextlib import contextmanager
from typing import Callable, Iterator

from ..errors import Cancelled

#: Multiply-adds per band of a large convolution on a CPU (~0.5 s on two cores, well under 0.1 s on
#: sixteen); only a convolution of more than two bands' work is banded.  Bands of fewer than
#: BAND_MIN_PX output pixels are slow (measured: 32-row bands of a 320 px wide 64-channel layer took
#: 2.5 times the unbanded time, 100-row bands the same time).
BAND_MACS = 2e9
BAND_MIN_PX = 32768

_local = threading.local()
_installed = False
_install_lock = threading.Lock()
_CONV = _TCONV = _LINEAR = None


def _types():
    global _CONV, _TCONV, _LINEAR
    if _CONV is None:
        import torch
        _CONV, _TCONV, _LINEAR = torch.nn.Conv2d, torch.nn.ConvTranspose2d, torch.nn.Linear
    return _CONV, _TCONV, _LINEAR


def work_of(module, x) -> float:
    """Multiply-adds of ``module`` on input ``x`` (convolutions and linear layers; 0 for others)."""
    conv, tconv, linear = _types()
    shape = getattr(x, "shape", None)
    if shape is None or len(shape) < 2:
        return 0.0
    if isinstance(module, linear):
        return float(x.numel() // shape[-1]) * module.in_features * module.out_features
    if isinstance(module, tconv):
        kh, kw = module.kernel_size
        return float(x.numel() // shape[-3]) * (module.in_channels // module.groups) * module.out_channels * kh * kw \
            if len(shape) >= 3 else 0.0
    if isinstance(module, conv) and len(shape) == 4:
        ho, wo = _out_size(module, shape[-2], shape[-1])
        kh, kw = module.kernel_size
        return float(shape[0]) * ho * wo * module.out_channels * (module.in_channels // module.groups) * kh * kw
    return 0.0


def _out_size(m, h: int, w: int) -> tuple[int, int]:
    if isinstance(m.padding, str):
        return (h, w) if m.padding == "same" else (h - m.dilation[0] * (m.kernel_size[0] - 1),
                                                    w - m.dilation[1] * (m.kernel_size[1] - 1))
    ho = (h + 2 * m.padding[0] - m.dilation[0] * (m.kernel_size[0] - 1) - 1) // m.stride[0] + 1
    wo = (w + 2 * m.padding[1] - m.dilation[1] * (m.kernel_size[1] - 1) - 1) // m.stride[1] + 1
    return ho, wo


def _banded(m, x) -> bool:
    """Will this convolution run in bands (so its work is reported band by band)?"""
    return (getattr(m, "_aie_banded", False) and x.dim() == 4 and x.device.type == "cpu"
            and getattr(_local, "is_cancelled", None) is not None and m.padding_mode == "zeros"
            and m.stride == (1, 1) and m.dilation == (1, 1) and not isinstance(m.padding, str)
            and work_of(m, x) > 2 * BAND_MACS)


def _hook(module, args):
    check = getattr(_local, "is_cancelled", None)
    if check is not None and check():
        raise Cancelled()
    follow = getattr(_local, "on_work", None)
    if follow is not None and args:
        conv, tconv, linear = _types()
        if isinstance(module, (conv, tconv, linear)) and not (isinstance(module, conv) and _banded(module, args[0])):
            follow(work_of(module, args[0]))


def _banded_forward(self, x):
    if not _banded(self, x):
        return self._aie_forward(x)
    import torch.nn.functional as F

    check = _local.is_cancelled
    follow = getattr(_local, "on_work", None)
    n, c, h, w = x.shape
    kh, kw = self.kernel_size
    ph, pw = self.padding
    ho, wo = _out_size(self, h, w)
    per_row = float(n) * wo * self.out_channels * (c // self.groups) * kh * kw
    rows = max(1, int(BAND_MACS // per_row), -(-BAND_MIN_PX // max(1, wo)))
    out = x.new_empty((n, self.out_channels, ho, wo))
    for r0 in range(0, ho, rows):
        if check():
            raise Cancelled()
        r1 = min(ho, r0 + rows)
        a, b = r0 - ph, r1 - ph + kh - 1             # input rows this band of outputs reads
        band = x[:, :, max(0, a):min(h, b)]
        top, bottom = max(0, -a), max(0, b - h)
        # zero padding done here on all sides: the convolution itself then pads nothing, which
        # keeps oneDNN on its fast path (an asymmetric padding argument measured slower)
        band = F.pad(band, (pw, pw, top, bottom))
        out[:, :, r0:r1] = F.conv2d(band, self.weight, self.bias, 1, 0, 1, self.groups)
        if follow is not None:
            follow(per_row * (r1 - r0))
    return out


def prepare(module) -> None:
    """Let the plain ``nn.Conv2d`` layers of ``module`` run large outputs in bands (see above).
    Idempotent; a layer whose class has its own forward is left alone."""
    if getattr(module, "_aie_prepared", False):
        return
    conv = _types()[0]
    for m in module.modules():
        if isinstance(m, conv) and type(m).forward is conv.forward and not getattr(m, "_aie_banded", False):
            m._aie_forward = m.forward
            m.forward = types.MethodType(_banded_forward, m)
            m._aie_banded = True
    try:
        module._aie_prepared = True
    except AttributeError:
        pass


def _install() -> None:
    global _installed
    with _install_lock:
        if not _installed:
            import torch

            torch.nn.modules.module.register_module_forward_pre_hook(_hook)
            _installed = True


@contextmanager
def watching(is_cancelled: Callable[[], bool] | None,
             on_work: Callable[[float], None] | None = None) -> Iterator[None]:
    """Within the block, any torch module called by this thread raises Cancelled once
    ``is_cancelled()`` is true, and ``on_work(macs)`` hears of the multiply-adds done.  Nested
    blocks: the inner one rules until it exits."""
    if is_cancelled is None and on_work is None:
        yield
        return
    _install()
    previous = getattr(_local, "is_cancelled", None), getattr(_local, "on_work", None)
    _local.is_cancelled, _local.on_work = is_cancelled, on_work
    try:
        yield
    finally:
        _local.is_cancelled, _local.on_work = previous
