"""The learned part of Find Damage: a small U-Net (~85 k weights, 170 KB as float16) that maps an
RGB photo to two per-pixel probabilities, "this pixel is a mark of damage" and "that mark is a
scratch rather than a speck".  Trained by bench/train_damage_net.py on synthetic damage
(tests/damagekit.py) drawn over scikit-image's sample photos, never on ../shared/images.

The weights ship in the package (assets/damage_net.safetensors) and are read with safetensors'
numpy reader (no pickle) only after their sha256 matches the one written here, so a damaged or
swapped file is refused instead of silently producing a different mask.  torch is imported when
the network first runs, not when this module is imported.

Memory: the photo is run in tiles of TILE px with a MARGIN of context on every side (the margin
is the network's reach, ~46 px, so tiles give the same probabilities as the whole photo at once);
what stays is two uint8 maps of the photo's size.  Tile origins are multiples of 8 so the
network's three halvings see the same pixel grid in every tile."""
from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ai_enhance.errors import EnhanceError
from ai_enhance_client.protocol import ErrorKind

WEIGHTS = Path(__file__).resolve().parent.parent / "assets" / "damage_net.safetensors"
WEIGHTS_SHA256 = "7896e0b22ef4967bb1e6aa80dc45a76af721af318cb57ae19825a66d6d25f88a"
CHANNELS = (8, 16, 32, 48)      # features at full, 1/2, 1/4 and 1/8 resolution
TILE = 512                      # px of output per tile side
MARGIN = 64                     # px of context around a tile: at least the network's reach


@dataclass
class Probabilities:
    """Per-pixel outputs, uint8 0..255 = probability 0..1."""
    damage: np.ndarray      # HxW: the pixel is part of a mark of damage
    scratch: np.ndarray     # HxW: if it is, the mark is a scratch (else a speck)


def build(channels: tuple[int, ...] = CHANNELS):
    """A fresh (untrained) network; the training script and the loader share this definition."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    def conv(i: int, o: int, dilation: int = 1) -> nn.Module:
        return nn.Sequential(nn.Conv2d(i, o, 3, padding=dilation, dilation=dilation), nn.ReLU(inplace=True))

    c0, c1, c2, c3 = channels

    class DamageNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.e0 = nn.Sequential(conv(3, c0), conv(c0, c0))
            self.e1 = nn.Sequential(conv(c0, c1), conv(c1, c1))
            self.e2 = nn.Sequential(conv(c1, c2), conv(c2, c2))
            # the coarsest level sees ~100 px: enough to tell a lone line from a texture of lines
            self.e3 = nn.Sequential(conv(c2, c3), conv(c3, c3, 2))
            self.d2 = conv(c3 + c2, c2)
            self.d1 = conv(c2 + c1, c1)
            self.d0 = nn.Sequential(conv(c1 + c0, c0), nn.Conv2d(c0, 2, 1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            """x: N x 3 x H x W RGB in 0..1, H and W multiples of 8 -> N x 2 x H x W logits."""
            a = self.e0(x - 0.5)
            b = self.e1(F.max_pool2d(a, 2))
            c = self.e2(F.max_pool2d(b, 2))
            d = self.e3(F.max_pool2d(c, 2))
            u = self.d2(torch.cat([F.interpolate(d, scale_factor=2.0), c], 1))
            u = self.d1(torch.cat([F.interpolate(u, scale_factor=2.0), b], 1))
            return self.d0(torch.cat([F.interpolate(u, scale_factor=2.0), a], 1))

    return DamageNet()


def _refuse(why: str) -> EnhanceError:
    return EnhanceError(ErrorKind.MODEL_CORRUPT, f"the damage detector's weights {why}",
                        f"reinstall ai-enhance: {WEIGHTS.name} ships with the package")


def read_weights(path: Path = WEIGHTS, sha256: str = WEIGHTS_SHA256) -> dict[str, np.ndarray]:
    """The weights as float32 numpy arrays, after checking the file's sha256 (no pickle anywhere)."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise _refuse(f"cannot be read ({e.strerror or e})") from None
    if hashlib.sha256(data).hexdigest() != sha256:
        raise _refuse(f"in {path} are not the released ones (sha256 mismatch)")
    from safetensors.numpy import load
    return {k: v.astype(np.float32) for k, v in load(data).items()}


@functools.lru_cache(maxsize=1)
def _network():
    import torch
    net = build()
    net.load_state_dict({k: torch.from_numpy(v) for k, v in read_weights().items()})
    return net.eval()


def probabilities(rgb: np.ndarray, tile: int = TILE, margin: int = MARGIN) -> Probabilities:
    """Run the network over an HxWx3 float32 0..1 photo, tile by tile.  At the photo's edges the network pads with zeros, as it did on
    its training crops (a reflected border would show it a line near the edge twice, as a pair);
    only the bottom/right are extended by < 8 px, by repetition, to a multiple of 8."""
    import torch
    net = _network()
    h, w = rgb.shape[:2]
    tile = max(8, tile // 8 * 8)
    margin = -(-margin // 8) * 8
    src = np.pad(np.ascontiguousarray(rgb, np.float32), ((0, -h % 8), (0, -w % 8), (0, 0)), mode="edge")
    hp, wp = src.shape[:2]
    dmg = np.zeros((h, w), np.uint8)
    kind = np.zeros((h, w), np.uint8)
    with torch.inference_mode():
        for y in range(0, h, tile):
            for x in range(0, w, tile):
                th, tw = min(tile, h - y), min(tile, w - x)
                # the input window: the tile plus the margin on every side, within the photo
                y0, x0 = max(y - margin, 0), max(x - margin, 0)
                y1, x1 = min(y + tile + margin, hp), min(x + tile + margin, wp)
                win = torch.from_numpy(np.ascontiguousarray(src[y0:y1, x0:x1].transpose(2, 0, 1)))[None]
                p = torch.sigmoid(net(win))[0, :, y - y0: y - y0 + th, x - x0: x - x0 + tw].numpy()
                dmg[y: y + th, x: x + tw] = np.rint(p[0] * 255)
                kind[y: y + th, x: x + tw] = np.rint(p[1] * 255)
    return Probabilities(dmg, kind)
