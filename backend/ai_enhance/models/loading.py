"""Reading model files SAFELY and recognising their architecture with spandrel.

Loading never runs pickled code: .safetensors via safetensors, .pth/.ckpt via
``torch.load(weights_only=True)``; TorchScript archives and pickles that need arbitrary classes are
refused.  The architecture and every model fact (scale, channels, size requirements, tiling, fp16
support, purpose) come from spandrel's descriptor.
"""
from __future__ import annotations

import logging
import re
import threading
import zipfile
from pathlib import Path
from typing import Any

from ai_enhance_client.protocol import ErrorKind

from ..errors import EnhanceError
from .catalog import INSTALL_COMMAND

log = logging.getLogger("ai_enhance.models")

MODEL_SUFFIXES = (".pth", ".safetensors", ".ckpt")


def corrupt(path: Path, what: str, model_id: str | None = None) -> EnhanceError:
    fix = (f"delete {path} and install it again: {INSTALL_COMMAND.format(id=model_id)}"
           if model_id else f"delete or replace {path}")
    return EnhanceError(ErrorKind.MODEL_CORRUPT, f"{path.name}: {what}", fix)


def _is_torchscript(path: Path) -> bool:
    try:
        if not zipfile.is_zipfile(path):
            return False
        with zipfile.ZipFile(path) as z:
            for n in z.namelist():
                parts = n.split("/")
                if len(parts) >= 2 and (parts[1] == "code" or parts[-1] == "constants.pkl"):
                    return True
    except (OSError, zipfile.BadZipFile):
        return False
    return False


def read_state_dict(path: Path, model_id: str | None = None) -> dict:
    """The tensors of a model file, loaded without running any pickled code, unwrapped from
    ``params_ema`` / ``params`` / ``state_dict`` (and spandrel's other known wrappers).
    Raises EnhanceError(MODEL_CORRUPT) with a one-line reason and fix."""
    import torch

    path = Path(path)
    suffix = path.suffix.lower()
    try:
        size = path.stat().st_size
    except OSError as e:
        raise EnhanceError(ErrorKind.MODEL_MISSING, f"{path.name} cannot be read: {e.strerror}",
                           f"put the file in {path.parent}") from None
    if size == 0:
        raise corrupt(path, "the file is empty (an interrupted download?)", model_id)
    if suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
            sd = load_file(str(path), device="cpu")
        except Exception as e:  # noqa: BLE001 - safetensors raises several types
            raise corrupt(path, f"not a readable .safetensors file ({_short(e)})", model_id) from None
    else:
        with open(path, "rb") as f:
            head = f.read(4)
        is_zip = zipfile.is_zipfile(path)
        if head.startswith(b"PK\x03\x04") and not is_zip:
            raise corrupt(path, "is truncated or corrupt (an interrupted download?)", model_id)
        if not is_zip and not head.startswith(b"\x80"):
            raise corrupt(path, "is not a PyTorch weights file", model_id)
        if is_zip and _is_torchscript(path):
            raise corrupt(path, "is a TorchScript archive, which can run code when loaded: refused "
                                 "(only plain weights are accepted)", model_id)
        try:
            sd = torch.load(str(path), map_location="cpu", weights_only=True, mmap=is_zip)
        except Exception as e:  # noqa: BLE001
            raise _classify_load_error(path, e, model_id) from None
    return unwrap_state_dict(sd, path, model_id)


def _short(e: BaseException, limit: int = 160) -> str:
    s = " ".join(str(e).split())
    return s if len(s) <= limit else s[: limit - 1] + "…"


def _classify_load_error(path: Path, e: BaseException, model_id: str | None) -> EnhanceError:
    msg = str(e)
    m = re.search(r"GLOBAL ([\w.]+)", msg)
    if m:
        return corrupt(path, f"needs full pickle to load (it references {m.group(1)}), which could "
                              "run arbitrary code: refused", model_id)
    if "TorchScript" in msg:
        return corrupt(path, "is a TorchScript archive, which can run code when loaded: refused",
                        model_id)
    if isinstance(e, (EOFError, zipfile.BadZipFile, OSError)) or any(
            s in msg for s in ("central directory", "failed reading", "unexpected EOF", "Ran out of input",
                               "invalid load key", "Unsupported operand", "truncated", "file_size")):
        return corrupt(path, "is truncated or corrupt (an interrupted download?)", model_id)
    return corrupt(path, f"cannot be read as model weights ({type(e).__name__}: {_short(e)})", model_id)


def unwrap_state_dict(obj: Any, path: Path, model_id: str | None = None) -> dict:
    import torch
    from spandrel import canonicalize_state_dict

    if not isinstance(obj, dict):
        raise corrupt(path, f"holds a {type(obj).__name__}, not a dictionary of weights", model_id)
    for key in ("params_ema", "params", "state_dict"):
        inner = obj.get(key)
        if isinstance(inner, dict) and inner:
            obj = inner
            break
    obj = canonicalize_state_dict(obj)
    sd = {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    if not sd:
        raise corrupt(path, "contains no weight tensors", model_id)
    return sd


_extra_lock = threading.Lock()
_extra_installed = False


def registry():
    """spandrel's main registry with spandrel-extra-arches (CodeFormer, ...) installed once."""
    global _extra_installed
    from spandrel import MAIN_REGISTRY

    with _extra_lock:
        if not _extra_installed:
            try:
                import spandrel_extra_arches
                spandrel_extra_arches.install(ignore_duplicates=True)
            except ImportError:
                log.info("spandrel-extra-arches not installed: CodeFormer and friends unavailable")
            _extra_installed = True
    return MAIN_REGISTRY


def detect_arch(sd: dict) -> str | None:
    """The id of the spandrel architecture that claims this state dict, without building it."""
    for support in registry().architectures("detection"):
        try:
            if support.detect(sd):
                return str(support.architecture.id)
        except Exception:  # noqa: BLE001 - a detector choking on foreign keys
            continue
    return None


def build_descriptor(sd: dict, path: Path, model_id: str | None = None):
    """spandrel descriptor for a state dict, or EnhanceError UNSUPPORTED / MODEL_CORRUPT."""
    from spandrel import UnsupportedModelError

    try:
        return registry().load(sd)
    except UnsupportedModelError:
        raise EnhanceError(
            ErrorKind.UNSUPPORTED,
            f"{path.name} is not a model architecture this backend knows (spandrel could not "
            "recognise it)",
            "use a Real-ESRGAN/ESRGAN, SwinIR, HAT, DAT, SCUNet, GFPGAN, CodeFormer ... file in .pth "
            "or .safetensors form") from None
    except Exception as e:  # noqa: BLE001 - shape mismatch etc.: a damaged or foreign file
        raise corrupt(path, f"looks like a model but its weights do not fit the architecture "
                             f"({_short(e)})", model_id) from None


def interpolate_state_dicts(a: dict, b: dict, weight_a: float) -> dict:
    """``weight_a * a + (1 - weight_a) * b`` for every float tensor (upstream's DNI)."""
    if a.keys() != b.keys():
        raise ValueError("the two weight files have different layers")
    out = {}
    for k, va in a.items():
        vb = b[k]
        if va.shape != vb.shape:
            raise ValueError(f"layer {k} differs in shape")
        out[k] = (va.float() * weight_a + vb.float() * (1.0 - weight_a)).to(va.dtype) \
            if va.is_floating_point() else va
    return out


