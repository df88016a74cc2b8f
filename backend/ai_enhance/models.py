"""The models folder: catalogue entries, custom files, verification and SAFE loading.

- ``catalog.json`` (beside this file) is the one catalogue: official file names, pinned URLs and
  sha256, family, ops, native scale.  The stdlib-only installer reads the same file.
- Any other ``.pth`` / ``.safetensors`` / ``.ckpt`` in the folder that spandrel recognises is a
  custom model (id = file stem, status ``custom``).
- Status of a catalogue file: ``verified`` (sha256 equals the official file's), ``unverified``
  (present but different or unpinned: e.g. re-converted weights; they still load), ``missing``.
  Hashes are computed lazily and cached by (path, size, mtime).
- Loading never runs pickled code: .safetensors via safetensors, .pth/.ckpt via
  ``torch.load(weights_only=True)``; TorchScript archives and pickles that need arbitrary classes
  are refused.  The architecture and every model fact (scale, channels, size requirements,
  tiling, fp16 support, purpose) come from spandrel's descriptor.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ai_enhance_client.protocol import ErrorKind

from . import paths
from .errors import EnhanceError
from .tiling import SizeReq

log = logging.getLogger("ai_enhance.models")

CATALOG_PATH = Path(__file__).with_name("catalog.json")
MODEL_SUFFIXES = (".pth", ".safetensors", ".ckpt")
#: How the messages tell a user to fetch a catalogue model (the installer's command line).
INSTALL_COMMAND = "python3 installer/install.py --models {id}"

_ID_SAFE = re.compile(r"[^A-Za-z0-9_.+-]")


# --------------------------------------------------------------------------- catalogue

def load_catalog(path: Path | None = None) -> list[dict]:
    """The catalogue entries (list of dicts, file order)."""
    with open(path or CATALOG_PATH, encoding="utf-8") as f:
        data = json.load(f)
    entries = data["models"] if isinstance(data, dict) else data
    return [dict(e) for e in entries]


_catalog_cache: list[dict] | None = None


def catalog() -> list[dict]:
    global _catalog_cache
    if _catalog_cache is None:
        _catalog_cache = load_catalog()
    return _catalog_cache


# --------------------------------------------------------------------------- hashing

_hash_lock = threading.Lock()
_hash_cache: dict[tuple[str, int, int], str] = {}


def file_sha256(path: Path) -> str:
    """sha256 of a file, cached by (path, size, mtime_ns): a second call costs one stat()."""
    st = os.stat(path)
    key = (str(Path(path).resolve()), st.st_size, st.st_mtime_ns)
    with _hash_lock:
        got = _hash_cache.get(key)
    if got:
        return got
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    digest = h.hexdigest()
    with _hash_lock:
        _hash_cache[key] = digest
    return digest


def hash_cache_size() -> int:
    with _hash_lock:
        return len(_hash_cache)


# --------------------------------------------------------------------------- ModelInfo

@dataclass
class ModelInfo:
    id: str
    name: str
    file: str                          # official (or, for custom models, actual) file name
    path: Path | None                  # where it is (or would be) in the models folder
    installed: bool
    size: int | None                   # official size in bytes (custom: actual)
    url: str | None
    sha256: str | None                 # official sha256 (None: not pinned / custom)
    family: str
    ops: list[str]
    scale: int | None
    role: str | None = None            # None: user-selectable; "face_detector", "companion", ...
    arch: str | None = None
    adapter: str | None = None
    companions: list[str] = field(default_factory=list)
    dni: dict | None = None
    options: dict = field(default_factory=dict)
    description: str = ""
    license: str | None = None
    custom: bool = False
    purpose: str | None = None         # custom models: spandrel's purpose

    @property
    def status(self) -> str:
        """verified | unverified | custom | missing (hashes the file once, then cached)."""
        if not self.installed or self.path is None:
            return "missing"
        if self.custom:
            return "custom"
        if not self.sha256:
            return "unverified"
        try:
            return "verified" if file_sha256(self.path) == self.sha256.lower() else "unverified"
        except OSError:
            return "missing"

    @property
    def file_size(self) -> int | None:
        try:
            return self.path.stat().st_size if self.path is not None and self.installed else None
        except OSError:
            return None

    @property
    def selectable(self) -> bool:
        return self.role is None

    def to_json(self) -> dict:
        return {
            "id": self.id, "name": self.name, "file": self.file,
            "path": str(self.path) if self.path else None,
            "installed": self.installed, "status": self.status,
            "size": self.size, "file_size": self.file_size,
            "url": self.url, "sha256": self.sha256, "family": self.family,
            "ops": list(self.ops), "scale": self.scale, "role": self.role, "arch": self.arch,
            "companions": list(self.companions), "options": self.options,
            "description": self.description, "license": self.license, "custom": self.custom,
        }


def _info_from_entry(e: dict, folder: Path) -> ModelInfo:
    path = _find_file(folder, e["file"])
    return ModelInfo(
        id=e["id"], name=e.get("name") or e["id"], file=e["file"],
        path=path or folder / e["file"], installed=path is not None,
        size=e.get("size"), url=e.get("url"), sha256=(e.get("sha256") or None),
        family=e.get("family") or "", ops=list(e.get("ops") or []), scale=e.get("scale"),
        role=e.get("role"), arch=e.get("arch"), adapter=e.get("adapter"),
        companions=list(e.get("companions") or []), dni=e.get("dni"),
        options=dict(e.get("options") or {}), description=e.get("description") or "",
        license=e.get("license"),
    )


def _find_file(folder: Path, name: str) -> Path | None:
    """``folder/name`` if it is a file; else a case-insensitive match (downloads renamed by a
    browser or a case-insensitive file system)."""
    p = folder / name
    if p.is_file():
        return p
    try:
        low = name.casefold()
        for q in folder.iterdir():
            if q.name.casefold() == low and q.is_file():
                return q
    except OSError:
        pass
    return None


def ops_for_purpose(purpose: str | None, scale: int | None) -> list[str]:
    """Which ops a custom model can serve, from spandrel's purpose."""
    return {"SR": ["upscale"], "Restoration": ["upscale", "denoise", "restore"],
            "FaceSR": ["faces"]}.get(purpose or "", [])


# --------------------------------------------------------------------------- safe loading

def _corrupt(path: Path, what: str, model_id: str | None = None) -> EnhanceError:
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
        raise _corrupt(path, "the file is empty (an interrupted download?)", model_id)
    if suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
            sd = load_file(str(path), device="cpu")
        except Exception as e:  # noqa: BLE001 - safetensors raises several types
            raise _corrupt(path, f"not a readable .safetensors file ({_short(e)})", model_id) from None
    else:
        with open(path, "rb") as f:
            head = f.read(4)
        is_zip = zipfile.is_zipfile(path)
        if head.startswith(b"PK\x03\x04") and not is_zip:
            raise _corrupt(path, "is truncated or corrupt (an interrupted download?)", model_id)
        if not is_zip and not head.startswith(b"\x80"):
            raise _corrupt(path, "is not a PyTorch weights file", model_id)
        if is_zip and _is_torchscript(path):
            raise _corrupt(path, "is a TorchScript archive, which can run code when loaded: refused "
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
        return _corrupt(path, f"needs full pickle to load (it references {m.group(1)}), which could "
                              "run arbitrary code: refused", model_id)
    if "TorchScript" in msg:
        return _corrupt(path, "is a TorchScript archive, which can run code when loaded: refused",
                        model_id)
    if isinstance(e, (EOFError, zipfile.BadZipFile, OSError)) or any(
            s in msg for s in ("central directory", "failed reading", "unexpected EOF", "Ran out of input",
                               "invalid load key", "Unsupported operand", "truncated", "file_size")):
        return _corrupt(path, "is truncated or corrupt (an interrupted download?)", model_id)
    return _corrupt(path, f"cannot be read as model weights ({type(e).__name__}: {_short(e)})", model_id)


def unwrap_state_dict(obj: Any, path: Path, model_id: str | None = None) -> dict:
    import torch
    from spandrel import canonicalize_state_dict

    if not isinstance(obj, dict):
        raise _corrupt(path, f"holds a {type(obj).__name__}, not a dictionary of weights", model_id)
    for key in ("params_ema", "params", "state_dict"):
        inner = obj.get(key)
        if isinstance(inner, dict) and inner:
            obj = inner
            break
    obj = canonicalize_state_dict(obj)
    sd = {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    if not sd:
        raise _corrupt(path, "contains no weight tensors", model_id)
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
        raise _corrupt(path, f"looks like a model but its weights do not fit the architecture "
                             f"({_short(e)})", model_id) from None


# --------------------------------------------------------------------------- loaded models

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
    forward: Callable[[Any, dict], Any]
    variant: tuple = ()
    last_used: float = field(default_factory=time.monotonic)
    max_activation: float | None = None    # elements per input pixel (see devices)
    cache_key: tuple | None = None         # the engine's cache key

    @property
    def module(self):
        return self.descriptor.model

    def to_json(self) -> dict:
        return {"id": self.info.id, "arch": str(self.descriptor.architecture.id),
                "scale": self.scale, "purpose": self.purpose, "device": self.device,
                "dtype": self.dtype, "input_channels": self.input_channels,
                "size_requirements": {"minimum": self.size_req.minimum,
                                      "multiple_of": self.size_req.multiple_of,
                                      "square": self.size_req.square},
                "tiling": self.tiling}


def _descriptor_call(descriptor):
    def forward(x, _options):
        return descriptor(x)
    return forward


def _facts(descriptor) -> dict:
    tiling = getattr(getattr(descriptor, "tiling", None), "name", "SUPPORTED").lower()
    return dict(scale=int(descriptor.scale), input_channels=int(descriptor.input_channels),
                output_channels=int(descriptor.output_channels),
                size_req=SizeReq.of(descriptor.size_requirements), tiling=tiling,
                purpose=str(descriptor.purpose), supports_half=bool(descriptor.supports_half))


# Adapters: catalogue entries whose file spandrel loads but cannot run as-is name one of these
# (field "adapter"); each turns the descriptor into (facts, forward).

def _ffdnet_adapter(descriptor, info: ModelInfo, path: Path):
    """KAIR FFDNet: spandrel detects the body as an FDnCNN (13 -> 12 channels).  Around it:
    pixel-unshuffle by 2, append a constant noise-level map, run, pixel-shuffle back."""
    import torch
    import torch.nn.functional as F

    body = descriptor.model
    net = getattr(body, "model", body)          # the plain conv stack (FDnCNN mode)
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    c_in = convs[0].in_channels if convs else 0
    if not convs or (c_in - 1) % 4 or convs[-1].out_channels != c_in - 1:
        raise _corrupt(path, f"is not an FFDNet model (its first layer takes {c_in} channels)", info.id)
    colors = (c_in - 1) // 4
    default = float(info.options.get("noise_level", {}).get("default", 25.0))

    @torch.inference_mode()
    def forward(x, options):
        sigma = float(options.get("noise_level", default)) / 255.0
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


ADAPTERS: dict[str, Callable] = {"ffdnet": _ffdnet_adapter}


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


# --------------------------------------------------------------------------- the store

@dataclass
class _Probe:
    arch: str | None
    scale: int | None
    purpose: str | None
    error: str | None


class ModelStore:
    """Catalogue entries plus custom files of one models folder."""

    def __init__(self, models_dir: Path | None = None, catalog_entries: list[dict] | None = None):
        self.dir = Path(models_dir) if models_dir is not None else paths.models_dir()
        self._entries = catalog_entries if catalog_entries is not None else catalog()
        self._by_id = {e["id"]: e for e in self._entries}
        self._catalog_files = {e["file"].casefold() for e in self._entries}
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
        out = [_info_from_entry(e, self.dir) for e in self._entries]
        out.extend(self.custom_models())
        return out

    def _custom_files(self) -> list[Path]:
        try:
            files = sorted(p for p in self.dir.iterdir()
                           if p.suffix.lower() in MODEL_SUFFIXES and not p.name.startswith(".")
                           and p.name.casefold() not in self._catalog_files and p.is_file())
        except OSError:
            return []
        return files

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
            st = p.stat()
            out.append(ModelInfo(
                id=self._custom_id(p), name=f"{p.stem} (custom{', ' + pr.arch if pr.arch else ''})",
                file=p.name, path=p, installed=True, size=st.st_size, url=None, sha256=None,
                family="custom", ops=ops_for_purpose(pr.purpose, pr.scale), scale=pr.scale,
                arch=pr.arch, custom=True, purpose=pr.purpose,
                description=pr.error or ""))
        return out

    def _probe(self, path: Path) -> _Probe:
        """Architecture, scale and purpose of a custom file, cached by (path, size, mtime)."""
        st = path.stat()
        key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
        with self._lock:
            hit = self._probe_cache.get(key)
        if hit is not None:
            return hit
        try:
            sd = read_state_dict(path)
            arch = detect_arch(sd)
            if arch is None:
                pr = _Probe(None, None, None, "spandrel does not recognise its architecture")
            else:
                d = build_descriptor(sd, path)
                pr = _Probe(arch, int(d.scale), str(d.purpose), None)
                del d
        except EnhanceError as e:
            pr = _Probe(None, None, None, e.message)
        with self._lock:
            self._probe_cache[key] = pr
        return pr

    # ----------------------------------------------------------------- lookup

    def get(self, model_id: str) -> ModelInfo | None:
        """Like resolve() but returns None for unknown ids and never raises for missing files."""
        e = self._by_id.get(model_id)
        if e is not None:
            return _info_from_entry(e, self.dir)
        for p in self._custom_files():
            if self._custom_id(p) == model_id:
                pr = self._probe(p)
                return ModelInfo(
                    id=model_id, name=f"{p.stem} (custom)", file=p.name, path=p, installed=True,
                    size=p.stat().st_size, url=None, sha256=None, family="custom",
                    ops=ops_for_purpose(pr.purpose, pr.scale) if pr.arch else ["upscale"],
                    scale=pr.scale, arch=pr.arch, custom=True, purpose=pr.purpose)
        return None

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
            raise self.missing_error(info)
        return info

    def missing_error(self, info: ModelInfo) -> EnhanceError:
        how = f"install it with `{INSTALL_COMMAND.format(id=info.id)}`"
        if info.url:
            how += f", or download {info.url} into that folder"
        return EnhanceError(ErrorKind.MODEL_MISSING,
                            f"model '{info.id}' is not installed: {info.file} is not in {self.dir}",
                            how)

    # ----------------------------------------------------------------- loading

    def load(self, info: ModelInfo, device: Any = "cpu", *, options: dict | None = None,
             half: bool | None = None) -> LoadedModel:
        """Load ``info`` onto ``device`` ("cpu", "cuda:0", "mps" or a devices.DeviceInfo).
        ``options`` select a variant (e.g. ``denoise_strength`` for DNI); ``half`` None = fp16
        exactly when the device is CUDA and the model supports it."""
        from . import devices

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
                    raise _corrupt(comp.path, f"cannot be blended with {info.file}: {e}", comp.id) from None
            variant = (("dni", round(strength, 4)),)

        descriptor = build_descriptor(sd, info.path, None if info.custom else info.id)
        del sd
        if info.adapter:
            adapter = ADAPTERS.get(info.adapter)
            if adapter is None:
                raise EnhanceError(ErrorKind.INTERNAL, f"catalogue: unknown adapter {info.adapter!r}")
            facts, forward = adapter(descriptor, info, info.path)
        else:
            if type(descriptor).__name__ != "ImageModelDescriptor":
                raise EnhanceError(ErrorKind.UNSUPPORTED,
                                   f"{info.file} is a {descriptor.purpose} model (needs a mask); "
                                   "this backend runs image-to-image models only",
                                   "choose an upscaling, restoration or face model")
            facts, forward = _facts(descriptor), _descriptor_call(descriptor)

        use_fp16 = devices.use_half(kind, facts["supports_half"], os.environ.get(devices.ENV_HALF)) \
            if half is None else bool(half and facts["supports_half"])
        import torch
        descriptor.model.eval()
        try:
            descriptor.model.to(device=torch.device(dev), dtype=torch.float16 if use_fp16 else torch.float32)
        except Exception as e:  # noqa: BLE001 - e.g. CUDA OOM while moving weights
            from .engine import is_oom
            if is_oom(e):
                raise EnhanceError(ErrorKind.OUT_OF_MEMORY, f"not enough memory on {dev} to load {info.id}",
                                   "close other programs using the GPU, or choose a smaller model") from None
            raise
        for p in descriptor.model.parameters():
            p.requires_grad_(False)
        return LoadedModel(info=info, descriptor=descriptor, device=dev,
                           dtype="float16" if use_fp16 else "float32", forward=forward,
                           variant=variant, **facts)


def dni_strength(info: ModelInfo, options: dict) -> float:
    """The denoise strength of a DNI model from the job options (catalogue default otherwise)."""
    opt = info.dni["option"]
    spec = info.options.get(opt, {})
    v = options.get(opt, spec.get("default", 1.0))
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= float(v) <= 1.0:
        raise EnhanceError(ErrorKind.BAD_REQUEST, f"option {opt} must be a number from 0 to 1, got {v!r}",
                           f"{opt}=1 uses {info.id} alone; lower values blend in "
                           f"{info.dni['companion']}")
    return float(v)
