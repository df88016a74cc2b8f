"""Where models run: device choice, precision, free memory and the automatic tile size.

The choices are pure functions of probed facts (``choose_device``, ``use_half``,
``memory_budget``, ``auto_tile``, ``estimate_px_bytes``) so they are unit-tested with fake numbers;
``probe()`` gathers the facts from torch (imported lazily: importing this module is cheap).
"""
from __future__ import annotations

import os
import sys
from dataclasses import asdict, dataclass

from .tiling import SizeReq

GiB = 1 << 30
MiB = 1 << 20

#: Smallest tile the out-of-memory fallback goes down to.
MIN_TILE = 32
#: Largest automatic tile per device kind (input pixels per side).  On CPU larger tiles gain
#: almost nothing in speed and only risk the OOM killer (which, unlike CUDA, raises nothing).
MAX_TILE = {"cuda": 2048, "mps": 1024, "cpu": 512}
#: Environment overrides: AI_ENHANCE_DEVICE=cpu|cuda|cuda:1|mps, AI_ENHANCE_HALF=0|1,
#: AI_ENHANCE_CPU_MEMORY_MB=budget for tiles on CPU.
ENV_DEVICE = "AI_ENHANCE_DEVICE"
ENV_HALF = "AI_ENHANCE_HALF"
ENV_CPU_BUDGET = "AI_ENHANCE_CPU_MEMORY_MB"


@dataclass
class DeviceInfo:
    kind: str                    # "cuda" | "mps" | "cpu"
    index: int | None            # CUDA ordinal
    name: str                    # e.g. "NVIDIA GeForce RTX 3060" or "CPU (8 threads)"
    total_bytes: int | None
    free_bytes: int | None
    half: bool                   # fp16 is used for models that support it

    @property
    def torch_device(self) -> str:
        return f"cuda:{self.index or 0}" if self.kind == "cuda" else self.kind

    def to_json(self) -> dict:
        d = asdict(self)
        d["device"] = self.torch_device
        d["free_mb"] = None if self.free_bytes is None else self.free_bytes // MiB
        d["total_mb"] = None if self.total_bytes is None else self.total_bytes // MiB
        return d

    def describe(self) -> str:
        mem = ""
        if self.free_bytes is not None:
            mem = f", {self.free_bytes / GiB:.1f} GiB free"
            if self.total_bytes:
                mem += f" of {self.total_bytes / GiB:.1f}"
        return f"{self.name} [{self.torch_device}{', fp16' if self.half else ', fp32'}{mem}]"


# --------------------------------------------------------------------------- pure choices

def choose_device(preferred: str, cuda_count: int, mps_available: bool) -> tuple[str, int | None]:
    """(kind, index) for a preference "auto" | "cpu" | "cuda" | "cuda:N" | "mps".

    An explicit preference that is not available raises ValueError with the reason."""
    p = (preferred or "auto").strip().lower()
    if p == "auto":
        if cuda_count > 0:
            return "cuda", 0
        if mps_available:
            return "mps", None
        return "cpu", None
    if p == "cpu":
        return "cpu", None
    if p == "mps":
        if not mps_available:
            raise ValueError("device 'mps' requested but Apple Metal (MPS) is not available")
        return "mps", None
    if p == "cuda" or p.startswith("cuda:"):
        idx = 0
        if ":" in p:
            try:
                idx = int(p.split(":", 1)[1])
            except ValueError:
                raise ValueError(f"bad device {preferred!r}: use cuda, cuda:N, mps, cpu or auto") from None
        if cuda_count <= idx:
            raise ValueError(f"device {preferred!r} requested but torch sees {cuda_count} CUDA GPU(s)"
                             " (is this the CUDA build of torch, and is the NVIDIA driver loaded?)")
        return "cuda", idx
    raise ValueError(f"bad device {preferred!r}: use auto, cpu, cuda, cuda:N or mps")


def use_half(kind: str, supports_half: bool, override: str | None = None) -> bool:
    """fp16 on CUDA for models whose descriptor supports it; fp32 elsewhere (CPU has no fast
    fp16, MPS fp16 differs per op).  ``override`` "1"/"0" (AI_ENHANCE_HALF) forces it."""
    if not supports_half:
        return False
    if override in ("0", "1"):
        return override == "1" and kind != "cpu"
    return kind == "cuda"


def memory_budget(kind: str, free_bytes: int | None, total_bytes: int | None = None,
                  cpu_override_mb: int | None = None) -> int:
    """Bytes one tile's activations may use.  CUDA/MPS: 70%/50% of what is free now.  CPU: the
    override, else a quarter of the available RAM capped at 3 GiB (at least 256 MiB, unless less
    than 512 MiB is available at all: then half of it; "available" already respects cgroup and
    RLIMIT_AS limits, see ``memory_limits``)."""
    if kind == "cuda":
        return int(0.7 * (free_bytes if free_bytes is not None else 2 * GiB))
    if kind == "mps":
        return int(0.5 * (free_bytes if free_bytes is not None else 4 * GiB))
    if cpu_override_mb:
        return int(cpu_override_mb) * MiB
    avail = free_bytes if free_bytes is not None else 4 * GiB
    return max(min(256 * MiB, avail // 2), min(3 * GiB, avail // 4))


def estimate_px_bytes(max_activation: float, dtype_bytes: int, live_factor: float = 5.0,
                      floor_channels: int = 64) -> int:
    """Peak bytes per INPUT pixel of a forward pass: the largest single activation per input
    pixel (in elements, already including the scale^2 of layers after upsampling) times the
    number of such tensors alive at once (measured ~3.5x for RRDBNet, ~5x for Compact on CPU)."""
    return int(max(max_activation, floor_channels) * dtype_bytes * live_factor)


def auto_tile(budget_bytes: int, px_bytes: int, req: SizeReq | None = None, kind: str = "cpu") -> int:
    """Largest square tile side whose activations fit ``budget_bytes``, clamped to
    [MIN_TILE, MAX_TILE[kind]] and aligned to the model's multiple_of.  (An image smaller than
    the tile is run as one tile by the planner anyway.)"""
    req = req or SizeReq()
    side = int((max(budget_bytes, 1) / max(px_bytes, 1)) ** 0.5)
    side = max(MIN_TILE, min(MAX_TILE.get(kind, 512), side))
    return req.align_tile(max(side, req.minimum))


def oom_floor(req: SizeReq | None = None) -> int:
    """Smallest tile the out-of-memory fallback tries: MIN_TILE (or the model's minimum)
    rounded up to its multiple_of."""
    req = req or SizeReq()
    m = max(1, req.multiple_of)
    lo = max(MIN_TILE, req.minimum)
    return -(-lo // m) * m


# --------------------------------------------------------------------------- memory limits

#: A cgroup "limit" at least this large means none (v1 writes 2^63 rounded down to a page).
_NO_LIMIT = 1 << 60


@dataclass
class MemoryLimits:
    """What this process may really allocate: the host's free memory, its memory cgroup (v1 or
    v2, the tightest along the path to the root) and RLIMIT_AS.  Containers and `ulimit -v`
    make the host's MemAvailable a lie; tiles are sized from ``available``."""

    host_available: int | None = None
    cgroup_limit: int | None = None
    cgroup_usage: int | None = None
    cgroup_kind: str | None = None          # "v1" | "v2"
    rlimit_as: int | None = None            # address-space limit of this process
    address_space: int | None = None        # its current address space (VmSize)

    @property
    def available(self) -> int | None:
        """Bytes that can still be allocated: the smallest headroom of all limits."""
        cands = [self.host_available]
        if self.cgroup_limit is not None:
            cands.append(max(0, self.cgroup_limit - (self.cgroup_usage or 0)))
        if self.rlimit_as is not None:
            cands.append(max(0, self.rlimit_as - (self.address_space or 0)))
        known = [c for c in cands if c is not None]
        return min(known) if known else None

    @property
    def limit(self) -> int | None:
        known = [x for x in (self.cgroup_limit, self.rlimit_as) if x is not None]
        return min(known) if known else None

    def source(self) -> str:
        a = self.available
        if a is None:
            return "unknown"
        if self.rlimit_as is not None and a == max(0, self.rlimit_as - (self.address_space or 0)):
            return "RLIMIT_AS"
        if self.cgroup_limit is not None and a == max(0, self.cgroup_limit - (self.cgroup_usage or 0)):
            return f"cgroup {self.cgroup_kind}"
        return "host"

    def describe(self) -> str:
        def mb(x):
            return "none" if x is None else f"{x >> 20} MB"
        return (f"{mb(self.available)} available ({self.source()}); host {mb(self.host_available)}, "
                f"cgroup {self.cgroup_kind or '-'} limit {mb(self.cgroup_limit)} used {mb(self.cgroup_usage)}, "
                f"RLIMIT_AS {mb(self.rlimit_as)} (address space {mb(self.address_space)})")

    def to_json(self) -> dict:
        mb = (lambda x: None if x is None else x >> 20)  # noqa: E731
        return {"available_mb": mb(self.available), "limit_mb": mb(self.limit), "source": self.source(),
                "host_mb": mb(self.host_available),
                "cgroup": self.cgroup_kind, "cgroup_limit_mb": mb(self.cgroup_limit),
                "rlimit_as_mb": mb(self.rlimit_as)}


def _read_int(path: str) -> int | None:
    try:
        with open(path, encoding="ascii") as f:
            v = f.read().strip()
    except OSError:
        return None
    if v in ("max", ""):
        return None
    try:
        return int(v)
    except ValueError:
        return None


def _cgroup_mounts(mountinfo: str) -> dict:
    """{"v2": (mount point, root), "v1": (mount point, root)} of the memory hierarchies."""
    out = {}
    for line in mountinfo.splitlines():
        left, _, right = line.partition(" - ")
        f, r = left.split(), right.split()
        if len(f) < 5 or len(r) < 3:
            continue
        root, point, fstype, opts = f[3], f[4], r[0], r[2].split(",")
        if fstype == "cgroup2":
            out.setdefault("v2", (point, root))
        elif fstype == "cgroup" and "memory" in opts:
            out.setdefault("v1", (point, root))
    return out


def cgroup_memory(proc_cgroup: str, mountinfo: str, read=_read_int) -> tuple[int | None, int | None, str | None]:
    """(limit, usage, "v1"|"v2") of the tightest memory cgroup limit on this process's path,
    from the texts of /proc/self/cgroup and /proc/self/mountinfo (``read(path)`` reads a number:
    table-tested with fakes).  A v1 memory controller wins over v2 when both name one."""
    mounts = _cgroup_mounts(mountinfo)
    paths = {}
    for line in proc_cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        if parts[1] == "" and parts[0] == "0":
            paths["v2"] = parts[2]
        elif "memory" in parts[1].split(","):
            paths["v1"] = parts[2]
    for kind, files in (("v1", ("memory.limit_in_bytes", "memory.usage_in_bytes")),
                        ("v2", ("memory.max", "memory.current"))):
        if kind not in mounts or kind not in paths:
            continue
        point, root = mounts[kind]
        rel = paths[kind]
        if root != "/" and rel.startswith(root):      # a namespaced view: strip its root
            rel = rel[len(root):]
        rel = rel.strip("/")
        parts = rel.split("/") if rel else []
        best, usage = None, None
        found = False
        # the process's own cgroup and every parent up to the mount point: the tightest wins
        for i in range(len(parts), -1, -1):
            d = "/".join([point.rstrip("/")] + parts[:i])
            lim = read(f"{d}/{files[0]}")
            if lim is None and read(f"{d}/{files[1]}") is None:
                continue
            found = True
            if i == len(parts) or usage is None:
                usage = read(f"{d}/{files[1]}") if usage is None else usage
            if lim is not None and lim < _NO_LIMIT and (best is None or lim < best):
                best = lim
                usage = read(f"{d}/{files[1]}")
        if found and best is not None:
            return best, usage, kind
    return None, None, None


def _vm_size() -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return None


def memory_limits() -> MemoryLimits:
    """The memory this process may use now (host, cgroup v1/v2, RLIMIT_AS)."""
    m = MemoryLimits(host_available=_host_available_bytes())
    try:
        with open("/proc/self/cgroup", encoding="ascii", errors="replace") as f:
            cg = f.read()
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
            mi = f.read()
        m.cgroup_limit, m.cgroup_usage, m.cgroup_kind = cgroup_memory(cg, mi)
    except OSError:
        pass
    try:
        import resource
        soft = resource.getrlimit(resource.RLIMIT_AS)[0]
        if soft not in (resource.RLIM_INFINITY, -1) and soft > 0:
            m.rlimit_as = int(soft)
            m.address_space = _vm_size()
    except (ImportError, ValueError, OSError):
        pass
    return m


# --------------------------------------------------------------------------- probing (torch)

def cpu_available_bytes() -> int | None:
    """Memory this process can still allocate: the host's, bounded by cgroup and RLIMIT_AS."""
    return memory_limits().available


def _host_available_bytes() -> int | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        import psutil  # type: ignore
        return int(psutil.virtual_memory().available)
    except Exception:  # noqa: BLE001 - psutil is optional
        pass
    if hasattr(os, "sysconf"):
        try:
            return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError):
            return None
    return None


def cpu_total_bytes() -> int | None:
    try:
        total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        total = None
    lim = memory_limits().limit
    if lim is not None and (total is None or lim < total):
        return lim
    return total


def _cpu_name() -> str:
    name = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    if not name:
        import platform
        name = platform.processor() or platform.machine() or "CPU"
    try:
        import torch
        threads = torch.get_num_threads()
    except Exception:  # noqa: BLE001
        threads = os.cpu_count() or 1
    return f"{name} ({threads} threads)"


def _mps_available(torch) -> bool:
    try:
        return bool(sys.platform == "darwin" and torch.backends.mps.is_available())
    except Exception:  # noqa: BLE001
        return False


def probe(preferred: str | None = None) -> DeviceInfo:
    """The device to run on, with its name and memory now.  ``preferred`` defaults to
    AI_ENHANCE_DEVICE or "auto"."""
    import torch

    preferred = preferred or os.environ.get(ENV_DEVICE) or "auto"
    cuda_count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    kind, index = choose_device(preferred, cuda_count, _mps_available(torch))
    info = DeviceInfo(kind, index, "", None, None, use_half(kind, True, os.environ.get(ENV_HALF)))
    refresh(info)
    return info


def refresh(info: DeviceInfo) -> DeviceInfo:
    """Update name and free/total memory of ``info`` in place."""
    import torch

    if info.kind == "cuda":
        idx = info.index or 0
        info.name = torch.cuda.get_device_name(idx)
        try:
            free, total = torch.cuda.mem_get_info(idx)
            info.free_bytes, info.total_bytes = int(free), int(total)
        except Exception:  # noqa: BLE001
            info.total_bytes = int(torch.cuda.get_device_properties(idx).total_memory)
    elif info.kind == "mps":
        info.name = "Apple Metal (MPS)"
        try:
            info.total_bytes = int(torch.mps.recommended_max_memory())
            info.free_bytes = max(0, info.total_bytes - int(torch.mps.driver_allocated_memory()))
        except Exception:  # noqa: BLE001
            info.free_bytes = cpu_available_bytes()
    else:
        info.name = _cpu_name()
        info.free_bytes, info.total_bytes = cpu_available_bytes(), cpu_total_bytes()
    return info


def list_devices() -> list[DeviceInfo]:
    """Every device torch can use here (CPU always)."""
    import torch

    out = []
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            out.append(refresh(DeviceInfo("cuda", i, "", None, None, True)))
    if _mps_available(torch):
        out.append(refresh(DeviceInfo("mps", None, "", None, None, False)))
    out.append(refresh(DeviceInfo("cpu", None, "", None, None, False)))
    return out


def budget_for(info: DeviceInfo) -> int:
    refresh(info)
    override = os.environ.get(ENV_CPU_BUDGET)
    return memory_budget(info.kind, info.free_bytes, info.total_bytes,
                         int(override) if override and override.isdigit() else None)


def empty_cache(info: DeviceInfo | None) -> None:
    try:
        import torch
        if info is not None and info.kind == "cuda":
            torch.cuda.empty_cache()
        elif info is not None and info.kind == "mps":
            torch.mps.empty_cache()
    except Exception:  # noqa: BLE001
        pass


def probe_on_meta(module, in_channels: int, probe_side: int, hook, kinds: tuple = ()) -> bool:
    """Run a shape-only copy of ``module`` on torch's "meta" device (no memory, no compute) on a
    ``probe_side`` square, with ``hook(m, inp, out)`` on every submodule (of ``kinds`` when
    given).  spandrel's architectures record their constructor arguments in
    ``module.hyperparameters``; False when the copy cannot be built or run that way."""
    import torch

    hp = getattr(module, "hyperparameters", None)
    if not isinstance(hp, dict):
        return False
    try:
        with torch.device("meta"):
            clone = type(module)(**hp)
        clone.eval()
        handles = [m.register_forward_hook(hook) for m in clone.modules()
                   if not kinds or isinstance(m, kinds)]
        try:
            with torch.inference_mode():
                clone(torch.empty(1, in_channels, probe_side, probe_side, device="meta"))
        finally:
            for h in handles:
                h.remove()
        return True
    except Exception:  # noqa: BLE001 - an architecture that will not run on meta: no estimate
        return False


def max_activation_per_px(module, in_channels: int, probe_side: int = 64) -> float | None:
    """Largest activation (elements per input pixel) of one forward pass, measured on a meta copy
    of ``module`` (``probe_on_meta``); None when there is none (the caller then falls back to
    conv widths)."""
    import torch

    biggest = 0

    def hook(_m, _inp, out):
        nonlocal biggest
        if isinstance(out, torch.Tensor):
            biggest = max(biggest, out.numel())

    if not probe_on_meta(module, in_channels, probe_side, hook):
        return None
    return biggest / float(probe_side * probe_side) if biggest else None


def conv_width(module) -> int:
    """Widest convolution (in + out channels) of a module: the fallback activation estimate."""
    import torch

    widest = 0
    for m in module.modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
            widest = max(widest, m.in_channels + m.out_channels)
        elif isinstance(m, torch.nn.Linear):
            widest = max(widest, m.in_features + m.out_features)
    return widest or 64


#: Lower-case message parts of out-of-memory failures that arrive as plain RuntimeErrors: the
#: CPU allocator ("DefaultCPUAllocator: can't allocate memory"), CUDA/MPS/HIP, and oneDNN, which
#: under RLIMIT_AS cannot even create its primitive ("could not create a primitive").
OOM_MESSAGES = ("out of memory", "can't allocate memory", "cannot allocate memory", "not enough memory",
                "failed to allocate", "could not create a primitive", "std::bad_alloc", "bad_alloc",
                "mkldnn_malloc", "allocation failed")


def is_oom(e: BaseException) -> bool:
    """An out-of-memory failure of torch (CUDA, MPS, CPU allocator, oneDNN) or Python."""
    if isinstance(e, MemoryError):
        return True
    torch = sys.modules.get("torch")
    if torch is not None:
        kinds = tuple(k for k in (getattr(torch, "OutOfMemoryError", None),
                                  getattr(getattr(torch, "cuda", None), "OutOfMemoryError", None))
                      if isinstance(k, type))
        if kinds and isinstance(e, kinds):
            return True
    msg = str(e).lower()
    return isinstance(e, (RuntimeError, OSError)) and any(s in msg for s in OOM_MESSAGES)
