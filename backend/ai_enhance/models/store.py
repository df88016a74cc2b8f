"""The models of one folder (catalogue entries plus custom files) and loading them to run.

- Any ``.pth`` / ``.safetensors`` / ``.ckpt`` in the folder that is not a catalogue file and that
  spandrel recognises is a custom model (id = file stem, status ``custom``); the operations it
  serves follow from what spandrel says of it (``ai_enhance_client.ops.ops_for_model``).
- ``ModelStore.load`` builds a ``LoadedModel``: the descriptor, the adapter's forward, and the facts
  the runtime needs, on a device and in a precision.
- Nothing is read through a symlink that leads OUT of the models folder (a link to a system file
  is refused, not "installed"); ``problems()`` names every refused or unusable file with the reason.
"""
from __future__ import annotations

import logging
import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ai_enhance_client import ops as optable
from ai_enhance_client.ops import ops_for_model
from ai_enhance_client.protocol import ErrorKind

from .. import paths
from ..errors import EnhanceError
from ..runtime import devices
from ..runtime.tiling import SizeReq
from .adapters import CONVERTIBLE, adapter_for
from .catalog import INSTALL_COMMAND, INSTALL_HINT, ModelInfo, catalog, info_from_entry
from .loading import (MODEL_SUFFIXES, build_descriptor, corrupt, detect_arch, interpolate_state_dicts,
                      read_state_dict)

log = logging.getLogger("ai_enhance.models")

_ID_SAFE = re.compile(r"[^A-Za-z0-9_.+-]")


@dataclass
class LoadedModel:
    """A model ready to run: ``forward(x, options)`` maps a (1, C, H, W) float tensor in [0, 1]
    on ``device`` (dtype ``dtype``) to (1, C', H*scale, W*scale); facts come from spandrel."""

    info: ModelInfo
    descriptor: Any
    device: str
    dtype: str                       # "float32" | "float16"
    scale: int
    input_channels: int
    output_channels: int
    size_req: SizeReq
    tiling: str                      # "supported" | "discouraged" | "internal"
    purpose: str
    supports_half: bool
    forward: Callable[..., Any]
    variant: tuple = ()
    max_activation: float | None = None    # elements per input pixel (see runtime.devices)
    cache_key: tuple | None = None         # the key of the network cache
    runtime: str = "torch"                 # what runs forward: "torch" | "openvino"
    runtime_info: dict = field(default_factory=dict)   # e.g. OpenVINO's precision, cache hit
    convertible: bool = False              # forward is the plain module call (a runtime may take it over)
    pending_runtime: Any = None            # a converted model waiting to take over between jobs

    @property
    def module(self):
        return self.descriptor.model

    @property
    def label(self) -> str:
        return self.info.id

    @property
    def arch(self) -> str:
        return str(self.descriptor.architecture.id)

    def to_json(self) -> dict:
        return {"id": self.info.id, "arch": self.arch, "scale": self.scale, "purpose": self.purpose,
                "device": self.device, "dtype": self.dtype, "input_channels": self.input_channels,
                "size_requirements": {"minimum": self.size_req.minimum,
                                      "multiple_of": self.size_req.multiple_of,
                                      "square": self.size_req.square},
                "tiling": self.tiling, "runtime": self.runtime, "runtime_info": self.runtime_info}


def dni_strength(info: ModelInfo, options: dict) -> float:
    """The blend weight of a DNI model (its own weights vs its companion's) from the job's options;
    1 = this model alone.  The option is declared in the operation table, whose default applies
    when the job does not say."""
    name = info.dni["option"]
    declared = next((p for o in optable.OPS if o.name in info.ops for p in o.params if p.name == name), None)
    v = options.get(name, declared.default if declared is not None else 1.0)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= float(v) <= 1.0:
        raise EnhanceError(ErrorKind.BAD_REQUEST,
                           f"option {info.dni['option']} must be a number from 0 to 1, got {v!r}",
                           f"1 uses {info.id} alone; lower values blend in {info.dni['companion']}")
    return float(v)


@dataclass
class _Probe:
    arch: str | None
    scale: int | None
    purpose: str | None
    error: str | None
    failure: EnhanceError | None = None     # why a file is not a usable model


class ModelStore:
    """Catalogue entries plus custom files of one models folder."""

    def __init__(self, models_dir: Path | None = None, catalog_entries: list[dict] | None = None):
        self.dir = Path(models_dir) if models_dir is not None else paths.models_dir()
        self._entries = catalog_entries if catalog_entries is not None else catalog()
        self._by_id = {e["id"]: e for e in self._entries}
        self._catalog_files = {e["file"].casefold() for e in self._entries if e.get("file")}
        self._probe_cache: dict[tuple[str, int, int], _Probe] = {}
        self._lock = threading.Lock()

    # ----------------------------------------------------------------- listing

    def entries(self) -> list[dict]:
        return list(self._entries)

    def catalog_ids(self, selectable_only: bool = True) -> list[str]:
        return [e["id"] for e in self._entries if not (selectable_only and e.get("role"))]

    def list(self) -> list[ModelInfo]:
        """Every catalogue entry (installed or not; support files carry a ``role``) followed by
        the custom models found in the folder."""
        out = [self._entry_info(e) for e in self._entries]
        out.extend(self.custom_models())
        return out

    def _entry_info(self, e: dict) -> ModelInfo:
        """A catalogue entry's info; a file that is a link out of the folder counts as absent
        (``resolve`` and ``problems`` say why)."""
        info = info_from_entry(e, self.dir)
        if info.installed and info.path is not None and self.escapes(info.path) is not None:
            info.installed = False
            info.description = f"refused: {self._escape_text(info.path)}"
        return info

    def escapes(self, path: Path) -> Path | None:
        """Where ``path`` really leads when that is outside the models folder (a symlink to a
        system file, a link through a linked folder); None for a file inside it."""
        try:
            root = self.dir.resolve()
            target = Path(os.path.realpath(path))
        except (OSError, RuntimeError):       # a symlink loop
            return path
        if target == root or root in target.parents:
            return None
        return target

    def _escape_text(self, path: Path) -> str:
        return (f"{path.name} is a link to {self.escapes(path)}, outside the models folder {self.dir}; "
                "copy the file into the folder instead (or point --models-dir at its folder)")

    def _all_model_files(self) -> list[Path]:
        try:
            return sorted(p for p in self.dir.iterdir()
                          if p.suffix.lower() in MODEL_SUFFIXES and not p.name.startswith("."))
        except OSError:
            return []

    def _custom_files(self) -> list[Path]:
        return [p for p in self._all_model_files()
                if p.name.casefold() not in self._catalog_files and p.is_file() and self.escapes(p) is None]

    def problems(self, probe_unverified: bool = True) -> list[tuple[str, str]]:
        """(file name, reason) for every file of the folder that is not a usable model: links out
        of the folder, broken links, unreadable or unrecognised custom files, and (when
        ``probe_unverified``) catalogue files whose bytes are not the official ones and do not
        load safely (e.g. a pickle that would run code)."""
        out = []
        for p in self._all_model_files():
            if not p.exists():
                out.append((p.name, f"broken link to {os.readlink(p) if p.is_symlink() else '?'}; delete it"))
                continue
            if self.escapes(p) is not None:
                out.append((p.name, "refused: " + self._escape_text(p)))
                continue
            if not p.is_file():
                out.append((p.name, "not a regular file; delete it"))
                continue
            if p.name.casefold() in self._catalog_files:
                if not probe_unverified:
                    continue
                info = next((self._entry_info(e) for e in self._entries
                             if (e.get("file") or "").casefold() == p.name.casefold()), None)
                if info is None or info.status != "unverified":
                    continue
                pr = self._probe(p, info.id)
                if pr.failure is not None or pr.error:
                    out.append((p.name, f"{info.id}: {pr.error or pr.failure}"))
                continue
            pr = self._probe(p)
            if pr.arch is None:
                out.append((p.name, pr.error or "not a recognised model"))
        return out

    def _custom_id(self, path: Path) -> str:
        cid = _ID_SAFE.sub("_", path.stem)[:120] or "model"
        return cid + "-custom" if cid in self._by_id else cid

    def custom_models(self, include_unrecognised: bool = False) -> list[ModelInfo]:
        out = []
        for p in self._custom_files():
            pr = self._probe(p)
            if pr.arch is None and not include_unrecognised:
                log.info("ignoring %s: %s", p.name, pr.error or "not a recognised model")
                continue
            out.append(self._custom_info(p, pr))
        return out

    def _custom_info(self, p: Path, pr: "_Probe") -> ModelInfo:
        return ModelInfo(
            id=self._custom_id(p), name=f"{p.stem} (custom{', ' + pr.arch if pr.arch else ''})",
            file=p.name, path=p, installed=True, size=p.stat().st_size, url=None, sha256=None,
            family="custom", ops=ops_for_model(pr.purpose, pr.arch), scale=pr.scale,
            arch=pr.arch, custom=True, purpose=pr.purpose, description=pr.error or "",
            short=self._custom_id(p), kind="custom")

    def _probe(self, path: Path, model_id: str | None = None) -> _Probe:
        """Architecture, scale and purpose of a custom file, cached by (path, size, mtime)."""
        st = path.stat()
        key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
        with self._lock:
            hit = self._probe_cache.get(key)
        if hit is not None:
            return hit
        try:
            sd = read_state_dict(path, model_id)
            arch = detect_arch(sd)
            if arch is None:
                pr = _Probe(None, None, None, "spandrel does not recognise its architecture")
            else:
                d = build_descriptor(sd, path)
                pr = _Probe(arch, int(d.scale), str(d.purpose), None)
                del d
        except EnhanceError as e:
            pr = _Probe(None, None, None, e.message, e)
        except Exception as e:  # noqa: BLE001 - a hostile file must not break the listing
            pr = _Probe(None, None, None, f"cannot be read ({type(e).__name__}: {str(e)[:120]})")
        with self._lock:
            self._probe_cache[key] = pr
        return pr

    # ----------------------------------------------------------------- lookup

    def get(self, model_id: str) -> ModelInfo | None:
        """Like resolve() but returns None for unknown ids and never raises for missing files."""
        e = self._by_id.get(model_id)
        if e is not None:
            return self._entry_info(e)
        for p in self._custom_files():
            if self._custom_id(p) == model_id:
                return self._custom_info(p, self._probe(p))
        return None

    def best_for(self, op) -> ModelInfo:
        """The model an operation runs when the request names none: the first installed of the
        table's list (best first), else an installed custom model for it, else the first of the
        list (whose resolve() then says how to install it)."""
        for mid in op.models:
            info = self.get(mid)
            if info is not None and info.installed:
                return info
        custom = next((m for m in self.custom_models() if op.name in m.ops), None)
        if custom is not None:
            return custom
        if not op.models:
            raise EnhanceError(ErrorKind.UNSUPPORTED, f"operation '{op.name}' has no model",
                               "name a model with --model")
        return self.resolve(op.models[0])

    def resolve(self, model_id: str) -> ModelInfo:
        """The installed model ``model_id``, or EnhanceError UNKNOWN_MODEL / MODEL_MISSING."""
        info = self.get(model_id)
        if info is None:
            known = self.catalog_ids()
            custom = [m.id for m in self.custom_models()]
            listing = ", ".join((known + custom)[:8])
            raise EnhanceError(ErrorKind.UNKNOWN_MODEL, f"unknown model '{model_id}'",
                               f"known models include: {listing} (`ai-enhance models list` shows all)")
        if not info.installed:
            if info.path is not None and info.path.exists() and self.escapes(info.path) is not None:
                raise EnhanceError(ErrorKind.MODEL_CORRUPT, f"model '{info.id}': {self._escape_text(info.path)}",
                                   f"replace the link {info.path} by the file itself")
            raise self.missing_error(info)
        if info.custom and info.arch is None:       # a broken or foreign file: say what is wrong
            pr = self._probe(info.path)
            raise pr.failure or EnhanceError(ErrorKind.UNSUPPORTED, f"{info.file}: {pr.error}",
                                             f"delete or replace {info.path}")
        return info

    def missing_error(self, info: ModelInfo) -> EnhanceError:
        how = INSTALL_HINT.format(id=info.id)
        if info.url:
            how += f"; or download {info.url} into that folder"
        return EnhanceError(ErrorKind.MODEL_MISSING,
                            f"model '{info.id}' is not installed: {info.file} is not in {self.dir}",
                            how)

    # ----------------------------------------------------------------- loading

    def load_any(self, info: ModelInfo, device: Any = "cpu"):
        """Load whatever ``info`` is (a spandrel model or a support network) the way the backend
        does; ``doctor`` uses it to prove a file works."""
        if info.helper:
            from . import helpers
            return helpers.build(info, device.torch_device if isinstance(device, devices.DeviceInfo) else device)
        return self.load(info, device)

    def load(self, info: ModelInfo, device: Any = "cpu", *, options: dict | None = None,
             half: bool | None = None) -> LoadedModel:
        """Load ``info`` onto ``device`` ("cpu", "cuda:0", "mps" or a devices.DeviceInfo).
        ``options`` select a variant (e.g. ``denoise-strength`` for DNI); ``half`` None = fp16
        exactly when the device is CUDA and the model supports it."""
        options = options or {}
        if not info.installed or info.path is None:
            raise self.missing_error(info)
        dev = device.torch_device if isinstance(device, devices.DeviceInfo) else str(device or "cpu")
        kind = dev.split(":", 1)[0]

        sd = read_state_dict(info.path, None if info.custom else info.id)
        variant: tuple = ()
        if info.dni:
            strength = dni_strength(info, options)
            if strength < 1.0:
                comp = self.get(info.dni["companion"])
                if comp is None:
                    raise EnhanceError(ErrorKind.INTERNAL, f"catalogue: unknown companion "
                                       f"{info.dni['companion']!r} of {info.id}")
                if not comp.installed:
                    err = self.missing_error(comp)
                    err.message += f" (needed by {info.id} for {info.dni['option']} < 1)"
                    err.hint += f"; or set {info.dni['option']} to 1"
                    raise err
                sd2 = read_state_dict(comp.path, comp.id)
                try:
                    sd = interpolate_state_dicts(sd, sd2, strength)
                except ValueError as e:
                    raise corrupt(comp.path, f"cannot be blended with {info.file}: {e}", comp.id) from None
            variant = (("dni", round(strength, 4)),)

        descriptor = build_descriptor(sd, info.path, None if info.custom else info.id)
        del sd
        adapter = adapter_for(descriptor, info.adapter)
        facts, forward = adapter(descriptor, info, info.path)

        use_fp16 = devices.use_half(kind, facts["supports_half"], os.environ.get(devices.ENV_HALF)) \
            if half is None else bool(half and facts["supports_half"])
        import torch
        descriptor.model.eval()
        try:
            descriptor.model.to(device=torch.device(dev), dtype=torch.float16 if use_fp16 else torch.float32)
        except Exception as e:  # noqa: BLE001 - e.g. CUDA OOM while moving weights
            if devices.is_oom(e):
                raise EnhanceError(ErrorKind.OUT_OF_MEMORY, f"not enough memory on {dev} to load {info.id}",
                                   "close other programs using the GPU, or choose a smaller model") from None
            raise
        for p in descriptor.model.parameters():
            p.requires_grad_(False)
        if kind == "cuda" and adapter in CONVERTIBLE:
            # convolution nets run faster in NHWC with cuDNN's autotuned kernels (tiles repeat
            # the same few shapes, so the autotuning pays off after the first tile)
            descriptor.model.to(memory_format=torch.channels_last)
            torch.backends.cudnn.benchmark = True
        return LoadedModel(info=info, descriptor=descriptor, device=dev,
                           dtype="float16" if use_fp16 else "float32", forward=forward,
                           variant=variant, convertible=adapter in CONVERTIBLE, **facts)


