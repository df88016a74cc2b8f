"""How each architecture is called: the one table of per-architecture differences.

spandrel's descriptor maps a (1, C, H, W) tensor in [0, 1] to its output for most architectures.
The ones that need something else around the network (another value range, an extra input such as
a noise-level map, a file spandrel mis-detects) have an entry in ``ADAPTERS``, keyed by spandrel's
architecture id, or by the catalogue's ``adapter`` field for files spandrel detects as something
else.  An adapter turns a descriptor into ``(facts, forward)``:

* ``facts``: scale, input/output channels, size requirements, tiling, purpose, fp16 support
  (from the descriptor unless the adapter knows better);
* ``forward(x, options)``: x is (1, C, H, W) float in [0, 1] on the model's device and dtype;
  returns (1, C', H*s, W*s) in [0, 1], or ``(tensor, info)`` when the model reports something per
  call (FBCNN's quality estimate).  ``options`` are the operation's parameters by their table
  names (``noise-level``, ``quality``, ``codeformer-weight``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from ai_enhance_client.protocol import ErrorKind

from ..errors import EnhanceError
from ..runtime.tiling import SizeReq
from .catalog import ModelInfo
from .loading import corrupt

Forward = Callable
Adapter = Callable[[object, ModelInfo, Path], tuple[dict, Forward]]


def facts_of(descriptor) -> dict:
    """The facts of a model straight from spandrel's descriptor."""
    tiling = getattr(getattr(descriptor, "tiling", None), "name", "SUPPORTED").lower()
    return dict(scale=int(descriptor.scale), input_channels=int(descriptor.input_channels),
                output_channels=int(descriptor.output_channels),
                size_req=SizeReq.of(descriptor.size_requirements), tiling=tiling,
                purpose=str(descriptor.purpose), supports_half=bool(descriptor.supports_half))


def _plain(descriptor, info: ModelInfo, path: Path):
    def forward(x, _options):
        return descriptor(x)
    return facts_of(descriptor), forward


def _ffdnet(descriptor, info: ModelInfo, path: Path):
    """KAIR FFDNet: spandrel detects the body as an FDnCNN (13 -> 12 channels).  Around it:
    pixel-unshuffle by 2, append a constant noise-level map, run, pixel-shuffle back."""
    import torch
    import torch.nn.functional as F

    body = descriptor.model
    net = getattr(body, "model", body)          # the plain conv stack (FDnCNN mode)
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    c_in = convs[0].in_channels if convs else 0
    if not convs or (c_in - 1) % 4 or convs[-1].out_channels != c_in - 1:
        raise corrupt(path, f"is not an FFDNet model (its first layer takes {c_in} channels)", info.id)
    colors = (c_in - 1) // 4

    def forward(x, options):
        sigma = float(options.get("noise-level") or 25.0) / 255.0
        h, w = x.shape[-2:]
        ph, pw = h % 2, w % 2
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="replicate")
        y = F.pixel_unshuffle(x, 2)
        m = torch.full((1, 1, y.shape[-2], y.shape[-1]), sigma, dtype=y.dtype, device=y.device)
        out = F.pixel_shuffle(net(torch.cat([y, m], 1)), 2)
        return out[..., :h, :w].clamp_(0, 1)

    facts = dict(scale=1, input_channels=colors, output_channels=colors,
                 size_req=SizeReq(minimum=2, multiple_of=2), tiling="supported",
                 purpose="Restoration", supports_half=False)
    return facts, forward


def _face(call: Callable) -> Adapter:
    """Face restorers are trained on -1..1 and spandrel's call does not convert: wrap ``call``
    (net, x in -1..1, options) -> y in -1..1."""
    def adapter(descriptor, info: ModelInfo, path: Path):
        net = descriptor.model

        def forward(x, options):
            y = call(net, x * 2.0 - 1.0, options)
            return ((y + 1.0) * 0.5).clamp_(0, 1)
        return facts_of(descriptor), forward
    return adapter


def _gfpgan(net, x, options):
    # fixed (stored) StyleGAN noise: the same photo gives the same face every time
    return net(x, return_rgb=False, randomize_noise=False)[0]


def _codeformer(net, x, options):
    return net(x, weight=float(options.get("codeformer-weight", 0.5)))[0]


def _restoreformer(net, x, options):
    return net(x)[0]


ADAPTERS: dict[str, Adapter] = {
    "ffdnet": _ffdnet,
    "GFPGAN": _face(_gfpgan),
    "CodeFormer": _face(_codeformer),
    "RestoreFormer": _face(_restoreformer),
}


def adapter_for(descriptor, info: ModelInfo) -> Adapter:
    """The catalogue's named adapter, else the architecture's, else spandrel's own call."""
    if info.adapter:
        if info.adapter not in ADAPTERS:
            raise EnhanceError(ErrorKind.INTERNAL, f"catalogue: unknown adapter {info.adapter!r}")
        return ADAPTERS[info.adapter]
    return ADAPTERS.get(str(descriptor.architecture.id), _plain)
