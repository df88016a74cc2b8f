"""Support networks that are not spandrel models: the face detector (facexlib's RetinaFace) and the
face parser (facexlib's ParseNet).  Catalogue entries name them in their ``helper`` field
("retinaface:mobile0.25", "parsenet"); they are loaded with the same safe reader as every model
and never download anything.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Callable

from ai_enhance_client.protocol import ErrorKind

from ..errors import EnhanceError
from .catalog import INSTALL_COMMAND, ModelInfo
from .loading import read_state_dict


def _load_into(net, path: Path, model_id: str, what: str):
    """Weights of ``path`` into a facexlib network: the safe reader (weights_only, no
    TorchScript, truncation detected), then a strict load."""
    sd = read_state_dict(path, model_id)
    try:
        net.load_state_dict(sd, strict=True)
    except RuntimeError:
        raise EnhanceError(ErrorKind.MODEL_CORRUPT, f"{path.name} is not a {what} in facexlib's layout",
                           f"delete {path} and install it again: {INSTALL_COMMAND.format(id=model_id)}") from None
    return net


def build_retinaface(path: Path, variant: str, device, model_id: str):
    """facexlib's RetinaFace ("resnet50" | "mobile0.25") with the weights of ``path``."""
    with warnings.catch_warnings():   # torchvision's "pretrained is deprecated" for resnet50
        warnings.simplefilter("ignore")
        from facexlib.detection.retinaface import RetinaFace
        net = RetinaFace(network_name=variant, half=False, device=device)
    return _load_into(net, path, model_id, f"RetinaFace {variant} face detector").eval().to(device)


def build_parsenet(path: Path, variant: str, device, model_id: str):
    """facexlib's ParseNet (512 px, 19 CelebAMask-HQ classes) with the weights of ``path``."""
    from facexlib.parsing.parsenet import ParseNet

    net = ParseNet(in_size=512, out_size=512, parsing_ch=19)
    return _load_into(net, path, model_id, "ParseNet face-parsing model").eval().to(device)


#: helper kind -> builder(path, variant, torch device, model id)
BUILDERS: dict[str, Callable] = {"retinaface": build_retinaface, "parsenet": build_parsenet}


def build(info: ModelInfo, device):
    """The support network of catalogue entry ``info`` on ``device`` (a torch device or string)."""
    kind, _, variant = (info.helper or "").partition(":")
    builder = BUILDERS.get(kind)
    if builder is None:
        raise EnhanceError(ErrorKind.INTERNAL, f"catalogue: {info.id} names no known helper ({info.helper!r})")
    if not info.installed or info.path is None:
        raise EnhanceError(ErrorKind.MODEL_MISSING, f"{info.file} is not installed",
                           f"install it with `{INSTALL_COMMAND.format(id=info.id)}`")
    return builder(Path(info.path), variant, device, info.id)
