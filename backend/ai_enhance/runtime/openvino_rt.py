"""OpenVINO as a runtime for spandrel's torch modules on the CPU (and Intel GPUs).

Why: on the CPU, OpenVINO runs the same networks 2-5x faster than torch eager (its convolutions
fuse activations and use bf16 where the CPU has it).  A model is converted once, from its torch
module, with dynamic height and width; the converted model (IR) and the decision which precision
to run it in are cached on disk, and OpenVINO's own CACHE_DIR keeps the compiled blobs, so a
restart loads a model in about a second instead of converting it again (8-40 s for RRDBNet).

Cache layout, in the cache folder::

    <entry>.xml / <entry>.bin    the converted model (f32 weights)
    <entry>.json                 the record: hashes of the IR files, the f32-vs-torch check, the
                                 low-precision candidate and its PSNR against f32 on the probe
    compiled/                    OpenVINO's CACHE_DIR (compiled blobs; OpenVINO validates them)

``<entry>`` is keyed by the caller's ``cache_key`` (the weights' sha256 plus the variant), the
REQUESTED precision, the device and the OpenVINO version.  A record whose files do not match
its hashes (truncated, damaged, half-written) is deleted and rebuilt; an unwritable cache folder
(or a full disk) means running without a cache, with one log line.  A model that does not
convert (an op without an OpenVINO rule, or output that differs from torch's) gets a negative
record too, so the next start falls back to torch at once instead of converting again.

Precision: "auto" runs the device's fast low precision (bf16, else f16) when the model's output
on a fixed probe image stays >= ``min_psnr`` (40 dB) against OpenVINO f32, else f32; the check
runs once, at the first compile, and is recorded.  "f32" forces f32 (the setting that turns the
gate off); "bf16"/"f16" force that precision where the device has it.

Settings (environment):

- ``AI_ENHANCE_RUNTIME`` = auto | torch | openvino: which runtime runs image models.  auto:
  OpenVINO when the models run on the CPU (or an Intel GPU) and openvino is installed, torch
  otherwise (CUDA, MPS, or no openvino).
- ``AI_ENHANCE_OV_PRECISION`` = auto | f32 | bf16 | f16 (default auto, see above).
- ``AI_ENHANCE_OV_CACHE`` = the cache folder (default: ``ov-cache`` in the backend's data
  folder, ``ai_enhance.paths.data_dir()``).
- ``AI_ENHANCE_OV_DEVICE`` = auto | CPU | GPU | GPU.1 ... (default auto: an Intel GPU when
  OpenVINO sees one, else the CPU).

openvino is imported lazily (inside functions): importing this module is cheap.
"""
from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import os
import re
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

log = logging.getLogger("ai_enhance.openvino")

ENV_RUNTIME = "AI_ENHANCE_RUNTIME"
ENV_PRECISION = "AI_ENHANCE_OV_PRECISION"
ENV_CACHE = "AI_ENHANCE_OV_CACHE"
ENV_DEVICE = "AI_ENHANCE_OV_DEVICE"

RUNTIMES = ("auto", "torch", "openvino")
PRECISIONS = ("auto", "f32", "bf16", "f16")
#: OpenVINO's names of our precisions (INFERENCE_PRECISION_HINT values).
_OV_TYPE = {"f32": "f32", "bf16": "bf16", "f16": "f16"}
#: OPTIMIZATION_CAPABILITIES entries that mean a precision runs natively.
_CAPABILITY = {"bf16": "BF16", "f16": "FP16", "f32": "FP32"}
#: Largest |OpenVINO f32 - torch| on the probe accepted as "the same network" (outputs in
#: [0, 1]).  Measured: 2e-6 on RealESRGAN_x4plus; a mis-converted model is off by > 0.01.
F32_TOLERANCE = 2e-3
#: Bumped when the record's meaning changes: older records are rebuilt.
RECORD_FORMAT = 1


class OVRuntimeUnavailable(Exception):
    """OpenVINO cannot run this model here; ``str()`` is a one-line reason (not installed, no
    conversion rule for aten::xyz, output differs from torch's ...).  ``cached`` is True when the
    reason comes from a record of an earlier attempt (no conversion was tried this time)."""

    def __init__(self, reason: str, *, cached: bool = False):
        super().__init__(reason)
        self.reason = reason
        self.cached = cached


# --------------------------------------------------------------------------- settings


def _openvino():
    """``import openvino``, with its model converter's usage telemetry switched off: without a
    consent file OpenVINO's converter counts the user as opted in, writes ~/intel/ and sends usage
    data over the network. Everything here runs locally, so the converter gets its own no-op stub
    (it falls back to it when the telemetry package cannot be imported)."""
    if "openvino_telemetry" not in sys.modules:
        sys.modules["openvino_telemetry"] = None      # makes `import openvino_telemetry` fail
    import openvino
    return openvino


def _setting(name: str, allowed: tuple[str, ...], default: str = "auto") -> str:
    raw = (os.environ.get(name) or "").strip().lower()
    if not raw:
        return default
    if raw not in allowed:
        log.warning("%s=%r is not one of %s: using %s", name, raw, "|".join(allowed), default)
        return default
    return raw


def runtime_setting() -> str:
    """AI_ENHANCE_RUNTIME: auto | torch | openvino."""
    return _setting(ENV_RUNTIME, RUNTIMES)


def precision_setting() -> str:
    """AI_ENHANCE_OV_PRECISION: auto | f32 | bf16 | f16."""
    return _setting(ENV_PRECISION, PRECISIONS)


def device_setting() -> str:
    """AI_ENHANCE_OV_DEVICE: "auto" or an OpenVINO device name as given (CPU, GPU, GPU.1)."""
    raw = (os.environ.get(ENV_DEVICE) or "").strip()
    return "auto" if not raw or raw.lower() == "auto" else raw.upper()


def default_cache_dir() -> Path:
    """AI_ENHANCE_OV_CACHE, else ``ov-cache`` in the backend's data folder."""
    env = os.environ.get(ENV_CACHE)
    if env:
        return Path(env).expanduser()
    from .. import paths
    return paths.data_dir() / "ov-cache"


def choose_runtime(setting: str, torch_device_kind: str, ov_available: bool) -> str:
    """"openvino" or "torch" for a runtime setting and the torch device the models would use.

    auto: OpenVINO only where torch would run on the CPU (CUDA and MPS stay with torch) and
    openvino is installed.  "openvino" asked for but not installed raises OVRuntimeUnavailable."""
    s = (setting or "auto").lower()
    if s == "torch":
        return "torch"
    if s == "openvino":
        if not ov_available:
            raise OVRuntimeUnavailable("AI_ENHANCE_RUNTIME=openvino but openvino is not installed "
                                       "(pip install openvino)")
        return "openvino"
    if s != "auto":
        raise ValueError(f"bad runtime {setting!r}: use auto, torch or openvino")
    return "openvino" if ov_available and torch_device_kind == "cpu" else "torch"


def pick_device(available: Iterable[tuple[str, str]], preferred: str = "auto") -> str:
    """The OpenVINO device to run on, from ``(name, type)`` pairs as OpenVINO lists them
    (type "discrete" | "integrated").  auto: a discrete Intel GPU, else an integrated one, else
    the CPU.  An explicit preference that is absent raises OVRuntimeUnavailable."""
    devs = [(str(n), str(t).lower()) for n, t in available]
    names = [n for n, _ in devs]
    if preferred and preferred.lower() != "auto":
        want = preferred.upper()
        if want in names or (want == "GPU" and any(n.startswith("GPU") for n in names)):
            return want if want in names else next(n for n in names if n.startswith("GPU"))
        raise OVRuntimeUnavailable(f"OpenVINO device {preferred!r} is not present here "
                                   f"(OpenVINO sees: {', '.join(names) or 'nothing'})")
    gpus = [(n, t) for n, t in devs if n.startswith("GPU")]
    for n, t in gpus:
        if "discrete" in t:
            return n
    if gpus:
        return gpus[0][0]
    return "CPU"


# --------------------------------------------------------------------------- openvino probing

_core_lock = threading.Lock()
_core = None


def available() -> bool:
    """openvino is importable (the import happens once; later calls are cheap)."""
    try:
        _openvino()
    except Exception:  # noqa: BLE001 - a broken install is "not available", not a crash
        return False
    return True


def ov_version() -> str:
    ov = _openvino()
    return str(ov.get_version())


def core():
    """The process's one openvino.Core (created on first use)."""
    global _core
    with _core_lock:
        if _core is None:
            ov = _openvino()
            _core = ov.Core()
        return _core


def list_devices() -> list[tuple[str, str]]:
    """(name, type) of every OpenVINO device, e.g. [("CPU", "integrated"), ("GPU.0", ...)]."""
    c = core()
    out = []
    for name in c.available_devices:
        try:
            kind = str(c.get_property(name, "DEVICE_TYPE")).rsplit(".", 1)[-1].lower()
        except Exception:  # noqa: BLE001 - older plug-ins lack the property
            kind = ""
        out.append((name, kind))
    return out


def device_capabilities(device: str = "CPU") -> set[str]:
    try:
        return {str(c).upper() for c in core().get_property(device, "OPTIMIZATION_CAPABILITIES")}
    except Exception:  # noqa: BLE001
        return set()


def device_supports(precision: str, device: str = "CPU") -> bool:
    """The device runs ``precision`` ("f32" | "bf16" | "f16") natively (OpenVINO's
    OPTIMIZATION_CAPABILITIES).  f32 is always supported."""
    if precision == "f32":
        return True
    cap = _CAPABILITY.get(precision)
    return bool(cap) and available() and cap in device_capabilities(device)


def cpu_supports(precision: str) -> bool:
    """The CPU runs ``precision`` natively (bf16: AVX512-BF16 / AMX; f16: AVX512-FP16 or ARM)."""
    return device_supports(precision, "CPU")


def fast_precision(device: str = "CPU") -> str | None:
    """The low precision "auto" tries on ``device``: bf16, else f16, else None."""
    for p in ("bf16", "f16"):
        if device_supports(p, device):
            return p
    return None


# --------------------------------------------------------------------------- physical cores

def count_cores(topology: Iterable[tuple[int, int]]) -> int:
    """Distinct (package, core) pairs: hyper-threads of one core count once."""
    return len(set(topology))


def parse_cpuinfo(text: str, allowed: set[int] | None = None) -> int | None:
    """Physical cores listed in /proc/cpuinfo (among the ``allowed`` logical CPUs), or None
    when it carries no core ids (some ARM and virtual machines)."""
    pairs, cpu, phys, core_id = [], None, 0, None
    for line in text.splitlines() + [""]:
        if not line.strip():
            if cpu is not None and core_id is not None and (allowed is None or cpu in allowed):
                pairs.append((phys, core_id))
            cpu, phys, core_id = None, 0, None
            continue
        key, _, val = line.partition(":")
        key, val = key.strip(), val.strip()
        try:
            if key == "processor":
                cpu = int(val)
            elif key == "physical id":
                phys = int(val)
            elif key == "core id":
                core_id = int(val)
        except ValueError:
            continue
    return count_cores(pairs) or None


def cgroup_cpu_limit(cpu_max: str) -> float | None:
    """CPUs allowed by a cgroup v2 ``cpu.max`` line ("max 100000" = no limit)."""
    parts = cpu_max.split()
    if len(parts) != 2 or parts[0] == "max":
        return None
    try:
        quota, period = int(parts[0]), int(parts[1])
    except ValueError:
        return None
    return quota / period if quota > 0 and period > 0 else None


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            return f.read()
    except OSError:
        return None


def physical_cores() -> int:
    """Physical cores this process may use: Linux counts distinct (package, core) ids of the CPUs
    in its affinity mask (/sys, else /proc/cpuinfo), capped by a cgroup CPU quota; macOS asks
    sysctl; elsewhere psutil, else os.cpu_count().  Hyper-threads make conv inference slower
    (two threads fight over one core's vector units), hence physical, not logical."""
    try:
        allowed = set(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        allowed = None
    n = None
    if sys.platform.startswith("linux"):
        pairs = []
        for cpu in sorted(allowed or range(os.cpu_count() or 1)):
            base = f"/sys/devices/system/cpu/cpu{cpu}/topology/"
            core_id, pkg = _read(base + "core_id"), _read(base + "physical_package_id")
            if core_id is None:
                pairs = []
                break
            try:
                pairs.append((int(pkg or 0), int(core_id)))
            except ValueError:
                pairs = []
                break
        n = count_cores(pairs) or None
        if n is None:
            text = _read("/proc/cpuinfo")
            n = parse_cpuinfo(text, allowed) if text else None
        quota = cgroup_cpu_limit(_read("/sys/fs/cgroup/cpu.max") or "")
        if n is not None and quota is not None:
            n = min(n, max(1, math.ceil(quota)))
    elif sys.platform == "darwin":
        try:
            import subprocess
            n = int(subprocess.run(["sysctl", "-n", "hw.physicalcpu"], capture_output=True,
                                   text=True, timeout=5).stdout.strip())
        except (OSError, ValueError, subprocess.SubprocessError):
            n = None
    if n is None:
        try:
            import psutil  # type: ignore
            n = psutil.cpu_count(logical=False)
        except Exception:  # noqa: BLE001 - psutil is optional
            n = None
    if n is None:
        n = len(allowed) if allowed else (os.cpu_count() or 1)
    return max(1, int(n))


# --------------------------------------------------------------------------- probe image

def probe_image(height: int, width: int, channels: int = 3) -> np.ndarray:
    """A fixed (1, C, H, W) float32 image in [0, 1]: a crop of the backend's bundled sample
    photo (faces, edges, texture, smooth areas), mirrored to size if needed; a synthetic pattern
    with edges, gradients and noise texture if the asset is missing.  Gray: Rec.709 luma."""
    img = None
    try:
        import cv2
        path = Path(__file__).resolve().parents[1] / "assets" / "sample.png"
        raw = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if raw is not None:
            img = cv2.cvtColor(raw, cv2.COLOR_BGR2RGB).astype(np.float32) / 255.0
    except ImportError:
        pass
    if img is None:
        img = _synthetic(max(height, 64), max(width, 64))
    reps_y, reps_x = -(-height // img.shape[0]), -(-width // img.shape[1])
    if reps_y > 1 or reps_x > 1:   # mirror-tile: no new edges at the seams
        row = np.concatenate([img if i % 2 == 0 else img[:, ::-1] for i in range(reps_x)], 1)
        img = np.concatenate([row if i % 2 == 0 else row[::-1] for i in range(reps_y)], 0)
    y0 = (img.shape[0] - height) // 2
    x0 = (img.shape[1] - width) // 2
    crop = img[y0: y0 + height, x0: x0 + width]
    if channels == 1:
        crop = (crop @ np.array([0.2126, 0.7152, 0.0722], np.float32))[:, :, None]
    elif channels != 3:
        crop = np.concatenate([crop] * (-(-channels // 3)), 2)[:, :, :channels]
    return np.ascontiguousarray(crop.transpose(2, 0, 1)[None], dtype=np.float32)


def _synthetic(h: int, w: int) -> np.ndarray:
    rng = np.random.default_rng(12345)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack([xx / w, yy / h, 0.5 + 0.5 * np.sin((xx + yy) / 9.0)], 2)
    disc = ((xx - w * 0.6) ** 2 + (yy - h * 0.4) ** 2) < (min(h, w) * 0.25) ** 2
    base[disc] = [0.9, 0.3, 0.2]
    base[(xx.astype(int) // 7 + yy.astype(int) // 7) % 2 == 0, 2] *= 0.6   # checker edges
    noise = rng.random((h // 4 + 1, w // 4 + 1, 3), dtype=np.float32)
    texture = noise.repeat(4, 0).repeat(4, 1)[:h, :w]
    return np.clip(0.8 * base + 0.2 * texture, 0, 1).astype(np.float32)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of two float images in [0, 1] (clipped first); inf when equal."""
    a = np.clip(np.asarray(a, np.float64), 0, 1)
    b = np.clip(np.asarray(b, np.float64), 0, 1)
    mse = float(np.mean((a - b) ** 2))
    return float("inf") if mse == 0 else 10.0 * math.log10(1.0 / mse)


def _round_up(v: int, m: int) -> int:
    m = max(1, m)
    return -(-v // m) * m


# --------------------------------------------------------------------------- the model

@dataclass
class OVModel:
    """A compiled OpenVINO model: ``model(x)`` maps a float32 (1, C, H, W) array in [0, 1] (any H,
    W; padded to ``size_multiple`` inside) to float32 (1, C', H*scale, W*scale) clamped to [0, 1].
    Thread-safe: requests are serialised on one infer request (one stream runs on all cores)."""

    compiled: Any = field(repr=False)
    precision: str                    # "f32" | "bf16" | "f16": what runs
    device: str                       # "CPU" | "GPU" | "GPU.1" ...
    cache_hit: bool                   # converted model and decision came from the disk cache
    compile_seconds: float            # wall time of compile_model()
    psnr_vs_f32: float | None         # the candidate's PSNR on the probe (None: f32 only)
    scale: int = 1
    in_channels: int = 3
    out_channels: int = 3
    size_multiple: int = 1
    requested: str = "auto"
    threads: int = 0
    ov_version: str = ""
    max_abs_vs_torch: float | None = None
    cache_entry: str | None = None    # the IR's path (None: cache off)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _request: Any = field(default=None, repr=False)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 4 or x.shape[0] != 1 or x.shape[1] != self.in_channels:
            raise ValueError(f"input must be (1, {self.in_channels}, H, W), got {x.shape}")
        h, w = x.shape[2:]
        ph, pw = _round_up(h, self.size_multiple) - h, _round_up(w, self.size_multiple) - w
        if ph or pw:
            x = _pad_nchw(x, ph, pw)
        x = np.ascontiguousarray(x)
        with self._lock:
            if self._request is None:
                self._request = self.compiled.create_infer_request()
            self._request.infer({0: x})
            # the output tensor is reused by the next infer(): copy before releasing the lock
            y = np.array(self._request.get_output_tensor(0).data, dtype=np.float32, copy=True)
        if ph or pw:
            y = y[:, :, : h * self.scale, : w * self.scale]
        return np.clip(y, 0.0, 1.0, out=y)

    def forward(self, x, _options: dict | None = None):
        """``LoadedModel.forward`` form: a torch (1, C, H, W) tensor in, a torch tensor out."""
        import torch
        y = self(x.detach().to("cpu", torch.float32).numpy())
        return torch.from_numpy(y)

    def to_json(self) -> dict:
        return {"runtime": "openvino", "device": self.device, "precision": self.precision,
                "requested_precision": self.requested, "cache_hit": self.cache_hit,
                "compile_seconds": round(self.compile_seconds, 3),
                "psnr_vs_f32": None if self.psnr_vs_f32 is None else (
                    "inf" if math.isinf(self.psnr_vs_f32) else round(self.psnr_vs_f32, 2)),
                "max_abs_vs_torch": self.max_abs_vs_torch, "threads": self.threads,
                "scale": self.scale, "openvino": self.ov_version, "cache_entry": self.cache_entry}


def _pad_nchw(x: np.ndarray, ph: int, pw: int) -> np.ndarray:
    """Bottom/right padding: reflect as far as the image allows, then repeat the edge (the
    engine's and spandrel's rule)."""
    h, w = x.shape[2:]
    rb, rr = min(ph, h - 1), min(pw, w - 1)
    if rb or rr:
        x = np.pad(x, [(0, 0), (0, 0), (0, rb), (0, rr)], mode="reflect")
    if ph - rb or pw - rr:
        x = np.pad(x, [(0, 0), (0, 0), (0, ph - rb), (0, pw - rr)], mode="edge")
    return x


# --------------------------------------------------------------------------- the disk cache

_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")
_entry_locks: dict[str, threading.Lock] = {}
_entry_locks_guard = threading.Lock()


def cache_key_for(weights_sha256: str, variant: tuple | list = (), arch: str = "") -> str:
    """The ``cache_key`` of a model file: its sha256, plus the variant (e.g. (("dni", 0.5),)) and
    the architecture id when given, in a stable text form."""
    parts = [weights_sha256.lower()]
    if arch:
        parts.append(f"arch={arch}")
    parts.extend(f"{k}={v!r}" for k, v in variant)
    return "|".join(parts)


def entry_name(cache_key: str, precision: str, device: str, version: str) -> str:
    """File stem of a cache entry: readable head + a hash of the full key (file names stay short
    whatever the key and OpenVINO's version string hold)."""
    full = "\x1f".join((cache_key, precision, device, version))
    digest = hashlib.sha256(full.encode("utf-8")).hexdigest()[:16]
    head = _SAFE.sub("_", cache_key)[:24].strip("_") or "model"
    ver = _SAFE.sub("_", version.split("-", 1)[0])[:16]
    return f"{head}-{precision}-{_SAFE.sub('_', device)}-ov{ver}-{digest}"


def is_cached(cache_key: str, cache_dir: Path | None, device: str = "CPU",
              precision: str = "auto") -> bool:
    """A converted model (or a recorded failure) for these settings is on disk: compile_model
    will take about a second instead of converting (the caller may then wait for it)."""
    if cache_dir is None or not available():
        return False
    name = entry_name(cache_key, (precision or "auto").lower(), (device or "CPU").upper(), ov_version())
    return (Path(cache_dir) / f"{name}.json").is_file()


def _entry_lock(name: str) -> threading.Lock:
    with _entry_locks_guard:
        return _entry_locks.setdefault(name, threading.Lock())


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _writable_dir(d: Path) -> str | None:
    """None if ``d`` exists (created if needed) and accepts a file; else the reason."""
    try:
        d.mkdir(parents=True, exist_ok=True)
        probe = d / f".write-test-{os.getpid()}-{threading.get_ident()}"
        with open(probe, "wb") as f:
            f.write(b"ok")
        probe.unlink()
        return None
    except OSError as e:
        return f"{e.strerror or e} ({d})"


def _write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        try:
            tmp.unlink()
        except OSError:
            pass


def _remove(*paths: Path) -> None:
    for p in paths:
        try:
            p.unlink()
        except OSError:
            pass


@dataclass
class _Entry:
    dir: Path
    name: str

    @property
    def xml(self) -> Path:
        return self.dir / f"{self.name}.xml"

    @property
    def bin(self) -> Path:
        return self.dir / f"{self.name}.bin"

    @property
    def record(self) -> Path:
        return self.dir / f"{self.name}.json"

    @property
    def blobs(self) -> Path:
        return self.dir / "compiled"

    def remove(self) -> None:
        _remove(self.xml, self.bin, self.record)


def _load_record(entry: _Entry, version: str) -> tuple[dict | None, str | None]:
    """(record, None) for a sound record (and, if converted, IR files matching its hashes);
    (None, why) when something is wrong; (None, None) when there is nothing."""
    if not entry.record.exists():
        return None, ("IR without a record" if entry.xml.exists() else None)
    try:
        rec = json.loads(entry.record.read_text("utf-8"))
    except (OSError, ValueError, UnicodeDecodeError) as e:
        return None, f"unreadable record ({type(e).__name__})"
    if not isinstance(rec, dict) or rec.get("format") != RECORD_FORMAT or rec.get("openvino") != version:
        return None, "record of another format or OpenVINO version"
    if rec.get("status") == "unconvertible":
        return (rec, None) if isinstance(rec.get("reason"), str) else (None, "bad record")
    if rec.get("status") != "ok":
        return None, "bad record"
    try:
        if entry.bin.stat().st_size != rec["bin_size"]:
            return None, "IR weights file has the wrong size (truncated?)"
        if _sha256_file(entry.xml) != rec["xml_sha256"] or _sha256_file(entry.bin) != rec["bin_sha256"]:
            return None, "IR files do not match their recorded hashes"
    except (OSError, KeyError, TypeError) as e:
        return None, f"IR files missing or unreadable ({type(e).__name__})"
    return rec, None


# --------------------------------------------------------------------------- conversion

def _conversion_reason(e: BaseException) -> str:
    """One line saying why convert_model failed (which ops, when OpenVINO says)."""
    msg = str(e)
    m = re.search(r"No conversion rule found for operations:\s*([^\n]+)", msg)
    if m:
        return f"OpenVINO has no conversion rule for {m.group(1).strip()}"
    m = re.search(r"Conversion is failed for:\s*([^\n]+)", msg)
    if m:
        return f"OpenVINO failed to convert {m.group(1).strip()}"
    first = next((ln.strip() for ln in msg.splitlines() if ln.strip()), type(e).__name__)
    return f"conversion failed: {type(e).__name__}: {first[:200]}"


def _cpu_f32_module(module):
    """``module`` itself when it is an eval-mode float32 CPU module, else a CPU float32 copy
    (the caller's module keeps its device and dtype)."""
    import torch

    p = next(iter(module.parameters()), None)
    if p is not None and (p.device.type != "cpu" or p.dtype != torch.float32):
        module = copy.deepcopy(module).to("cpu", torch.float32)
    return module.eval()


def _convert(module, in_channels: int, example_hw: tuple[int, int]):
    ov = _openvino()
    import torch

    example = torch.from_numpy(probe_image(*example_hw, channels=in_channels))
    try:
        with torch.no_grad():
            return ov.convert_model(module, example_input=example,
                                    input=[(1, in_channels, -1, -1)])
    except MemoryError:
        raise
    except Exception as e:  # noqa: BLE001 - OpConversionFailure, tracer errors, ...
        raise OVRuntimeUnavailable(_conversion_reason(e)) from e


def _config(precision: str, threads: int, device: str, cache: Path | None) -> dict:
    cfg = {"INFERENCE_PRECISION_HINT": _OV_TYPE[precision], "PERFORMANCE_HINT": "LATENCY"}
    if device == "CPU":
        cfg["INFERENCE_NUM_THREADS"] = int(threads)
        cfg["NUM_STREAMS"] = 1
    if cache is not None:
        cfg["CACHE_DIR"] = str(cache)
    return cfg


def _compile(src, device: str, precision: str, threads: int, blobs: Path | None):
    """core().compile_model with our settings; a failing blob cache (disk full, ...) is retried
    without it."""
    c = core()
    try:
        return c.compile_model(src, device, _config(precision, threads, device, blobs))
    except MemoryError:
        raise
    except Exception as e:  # noqa: BLE001
        if blobs is None:
            raise
        log.warning("OpenVINO's compiled-model cache in %s failed (%s): compiling without it",
                    blobs, str(e).splitlines()[0][:160] if str(e) else type(e).__name__)
        return c.compile_model(src, device, _config(precision, threads, device, None))


def _run(compiled, x: np.ndarray) -> np.ndarray:
    req = compiled.create_infer_request()
    req.infer({0: np.ascontiguousarray(x)})
    return np.array(req.get_output_tensor(0).data, dtype=np.float32, copy=True)


def _decide(requested: str, candidate: str | None, candidate_psnr: float | None,
            min_psnr: float) -> str:
    """The precision to run: forced ones as asked (f32 when the device lacks them, i.e. no
    candidate), auto the candidate when its recorded PSNR passes the gate."""
    if requested == "f32" or candidate is None:
        return "f32"
    if requested in ("bf16", "f16"):
        return candidate
    return candidate if candidate_psnr is not None and candidate_psnr >= min_psnr else "f32"


def compile_model(module, *, in_channels: int, cache_key: str, cache_dir: Path | None,
                  device: str = "CPU", precision: str = "auto", probe: np.ndarray | None = None,
                  min_psnr: float = 40.0, size_multiple: int = 1, min_size: int = 0,
                  threads: int | None = None) -> OVModel:
    """Convert ``module`` (a torch image model: (1, C, H, W) in [0, 1] -> (1, C', sH, sW)) to
    OpenVINO with dynamic H/W, check it against torch, pick its precision, compile it.

    ``cache_key``: identifies the weights (their sha256 plus the variant, e.g. a DNI strength);
    ``cache_dir`` None disables the disk cache.  ``probe``: the (1, C, H, W) image of the checks
    (default: a crop of the bundled sample photo, sized to ``size_multiple`` and ``min_size``).
    Raises OVRuntimeUnavailable (openvino missing, conversion failure, wrong output); the caller
    then runs the model with torch."""
    t_start = time.monotonic()
    if not available():
        raise OVRuntimeUnavailable("openvino is not installed (pip install openvino)")
    precision = (precision or "auto").lower()
    if precision not in PRECISIONS:
        raise ValueError(f"bad precision {precision!r}: use one of {', '.join(PRECISIONS)}")
    device = (device or "CPU").upper()
    version = ov_version()
    threads = int(threads or physical_cores())
    m = max(1, int(size_multiple))
    lo = max(int(min_size), 1)
    # the probe and the tracing example differ in size (and aspect), so a conversion that froze
    # the example's shape into the graph fails the torch check below
    ex_h = _round_up(max(16, lo), m)
    ex_hw = (ex_h, _round_up(ex_h + 8, m))
    if probe is None:
        ph = _round_up(max(40, lo), m)
        pw = _round_up(ph + 16, m)
        if (ph, pw) == ex_hw:
            pw += m
        probe = probe_image(ph, pw, in_channels)
    probe = np.ascontiguousarray(probe, dtype=np.float32)

    candidate = None if precision == "f32" else (
        precision if device_supports(precision, device) and precision != "auto"
        else fast_precision(device) if precision == "auto" else None)
    if precision in ("bf16", "f16") and candidate is None:
        log.warning("OpenVINO %s has no native %s: running f32", device, precision)

    entry: _Entry | None = None
    if cache_dir is not None:
        cache_dir = Path(cache_dir)
        why = _writable_dir(cache_dir)
        if why is None:
            entry = _Entry(cache_dir, entry_name(cache_key, precision, device, version))
        else:
            log.warning("OpenVINO cache off: cannot write %s", why)

    lock = _entry_lock(entry.name if entry else f"nocache:{id(module)}")
    with lock:
        rec = None
        if entry is not None:
            rec, why = _load_record(entry, version)
            if why:
                log.warning("OpenVINO cache entry %s is damaged (%s): rebuilding it", entry.name, why)
                entry.remove()
            if rec is not None and rec.get("status") == "unconvertible":
                raise OVRuntimeUnavailable(rec["reason"], cached=True)
        blobs = entry.blobs if entry is not None else None

        if rec is not None and rec.get("status") == "ok":     # warm start: no conversion
            cand_psnr = rec.get("candidate_psnr")
            cand_psnr = float("inf") if cand_psnr == "inf" else cand_psnr
            known = rec.get("candidate") == candidate and (cand_psnr is not None or candidate is None)
            if known:
                chosen = _decide(precision, candidate, cand_psnr, min_psnr)
                try:
                    compiled = _compile(str(entry.xml), device, chosen, threads, blobs)
                    return OVModel(compiled, chosen, device, True, time.monotonic() - t_start,
                                   cand_psnr, scale=int(rec["scale"]), in_channels=in_channels,
                                   out_channels=int(rec["out_channels"]), size_multiple=m,
                                   requested=precision, threads=threads, ov_version=version,
                                   max_abs_vs_torch=rec.get("max_abs_vs_torch"),
                                   cache_entry=str(entry.xml))
                except MemoryError:
                    raise
                except Exception as e:  # noqa: BLE001 - an entry OpenVINO will not read
                    log.warning("OpenVINO cache entry %s does not load (%s): rebuilding it",
                                entry.name, _conversion_reason(e))
                    entry.remove()
                    rec = None
            # else the device's candidate changed (a cache folder shared with another
            # machine): the IR is reused, the gate is measured again
        ov_model, ref_f32, cached_ir = None, None, rec is not None

        try:
            if not cached_ir:
                import torch
                ref_module = _cpu_f32_module(module)
                t0 = time.monotonic()
                try:
                    ov_model = _convert(ref_module, in_channels, ex_hw)
                except OVRuntimeUnavailable as e:
                    _record_failure(entry, cache_key, device, precision, version, e.reason)
                    raise
                convert_s = time.monotonic() - t0
                with torch.inference_mode():
                    ref = ref_module(torch.from_numpy(probe)).float().clamp_(0, 1).numpy()
                src = ov_model
                if entry is not None:
                    src = _save_ir(ov_model, entry) or ov_model
                # OpenVINO's blob cache only for models read from our IR files: hashing an
                # in-memory model costs, and a disk that refused the IR refuses blobs too
                f32 = _compile(src, device, "f32", threads, blobs if isinstance(src, str) else None)
                ref_f32 = np.clip(_run(f32, probe), 0, 1)
                if ref_f32.shape != ref.shape:
                    reason = (f"OpenVINO output has shape {ref_f32.shape[1:]}, torch's "
                              f"{ref.shape[1:]}: the model does not convert with dynamic sizes")
                    _record_failure(entry, cache_key, device, precision, version, reason)
                    raise OVRuntimeUnavailable(reason)
                max_abs = float(np.max(np.abs(ref_f32 - ref)))
                if not max_abs <= F32_TOLERANCE:
                    reason = (f"OpenVINO f32 output differs from torch's by up to {max_abs:.3g} on "
                              "the probe image (the conversion changed the network)")
                    _record_failure(entry, cache_key, device, precision, version, reason)
                    raise OVRuntimeUnavailable(reason)
                scale = ref.shape[2] // probe.shape[2]
                out_channels = ref.shape[1]
                del ref_module
            else:
                convert_s = 0.0
                src = str(entry.xml)
                f32 = _compile(src, device, "f32", threads, blobs)
                ref_f32 = np.clip(_run(f32, probe), 0, 1)
                scale, out_channels, max_abs = int(rec["scale"]), int(rec["out_channels"]), \
                    rec.get("max_abs_vs_torch")

            cand_psnr, low = None, None
            if candidate is not None:
                low = _compile(src, device, candidate, threads,
                               blobs if isinstance(src, str) else None)
                cand_psnr = psnr(_run(low, probe), ref_f32)
            chosen = _decide(precision, candidate, cand_psnr, min_psnr)
            if candidate is not None and chosen == "f32":
                log.info("OpenVINO %s of this model is %.1f dB from f32 on the probe (< %.0f dB): "
                         "running f32", candidate, cand_psnr, min_psnr)
            compiled = low if chosen != "f32" else f32
        except OVRuntimeUnavailable:
            raise
        except MemoryError:
            raise
        except Exception as e:  # noqa: BLE001 - compile/infer errors of an odd model
            reason = f"OpenVINO cannot run this model: {_conversion_reason(e)}"
            raise OVRuntimeUnavailable(reason) from e

        cache_entry = None
        if entry is not None and entry.xml.exists():
            rec_out = {"format": RECORD_FORMAT, "status": "ok", "openvino": version,
                       "cache_key": cache_key, "device": device, "requested": precision,
                       "candidate": candidate,
                       "candidate_psnr": ("inf" if cand_psnr is not None and math.isinf(cand_psnr)
                                          else cand_psnr),
                       "min_psnr_at_check": min_psnr, "max_abs_vs_torch": max_abs,
                       "scale": int(scale), "in_channels": in_channels,
                       "out_channels": int(out_channels), "probe_shape": list(probe.shape),
                       "convert_seconds": round(convert_s, 3),
                       "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
            try:
                if not cached_ir:
                    rec_out.update(xml_sha256=_sha256_file(entry.xml),
                                   bin_sha256=_sha256_file(entry.bin),
                                   bin_size=entry.bin.stat().st_size)
                else:
                    rec_out.update({k: rec[k] for k in ("xml_sha256", "bin_sha256", "bin_size")})
                _write_json_atomic(entry.record, rec_out)
                cache_entry = str(entry.xml)
            except OSError as e:
                log.warning("OpenVINO cache record not written (%s): the next start converts again",
                            e.strerror or e)
                entry.remove()
        return OVModel(compiled, chosen, device, False, time.monotonic() - t_start, cand_psnr,
                       scale=int(scale), in_channels=in_channels, out_channels=int(out_channels),
                       size_multiple=m, requested=precision, threads=threads, ov_version=version,
                       max_abs_vs_torch=max_abs, cache_entry=cache_entry)


def _save_ir(ov_model, entry: _Entry) -> str | None:
    """Write the IR under temporary names, then move it into place; the path of the xml, or None
    (with one log line) when the disk refuses."""
    ov = _openvino()

    stem = f".{entry.name}.{os.getpid()}.{threading.get_ident()}.tmp"
    tmp_xml, tmp_bin = entry.dir / f"{stem}.xml", entry.dir / f"{stem}.bin"
    try:
        ov.save_model(ov_model, str(tmp_xml), compress_to_fp16=False)
        os.replace(tmp_bin, entry.bin)
        os.replace(tmp_xml, entry.xml)
        return str(entry.xml)
    except Exception as e:  # noqa: BLE001 - OSError, or OpenVINO's RuntimeError on a full disk
        log.warning("OpenVINO cache off for this model: cannot save the converted model in %s (%s)",
                    entry.dir, str(e).splitlines()[0][:160] if str(e) else type(e).__name__)
        _remove(tmp_xml, tmp_bin, entry.xml, entry.bin)
        return None


def _record_failure(entry: _Entry | None, cache_key: str, device: str, precision: str,
                    version: str, reason: str) -> None:
    """Remember that this model does not convert, so the next start skips the attempt."""
    if entry is None:
        return
    try:
        _write_json_atomic(entry.record, {
            "format": RECORD_FORMAT, "status": "unconvertible", "openvino": version,
            "cache_key": cache_key, "device": device, "requested": precision, "reason": reason,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
        _remove(entry.xml, entry.bin)
    except OSError:
        pass


__all__ = ["ENV_RUNTIME", "ENV_PRECISION", "ENV_CACHE", "ENV_DEVICE", "OVRuntimeUnavailable",
           "OVModel", "available", "ov_version", "cpu_supports", "device_supports",
           "fast_precision", "physical_cores", "compile_model", "probe_image", "psnr",
           "choose_runtime", "runtime_setting", "precision_setting",
           "device_setting", "default_cache_dir", "entry_name", "cache_key_for", "list_devices",
           "pick_device"]
