"""Which PyTorch build to install: a pure function of probed facts (unit-tested as a table), plus
the probe itself.

Builds come from PyTorch's own package indexes (https://download.pytorch.org/whl/<build>), the
way pytorch.org's install selector does it: the CUDA index is chosen from the highest CUDA
version the NVIDIA driver supports (as `nvidia-smi` reports it), so the wheel's CUDA runtime
always works with the installed driver."""
from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass, field

TORCH_INDEX = "https://download.pytorch.org/whl/"
#: (lowest driver CUDA version, index name), newest first.
CUDA_INDEXES = (((13, 0), "cu130"), ((12, 8), "cu128"), ((12, 6), "cu126"), ((12, 4), "cu124"),
                ((12, 1), "cu121"), ((11, 8), "cu118"))
ROCM_INDEX = "rocm6.4"
DEFAULT_TORCH_REQS = ("torch>=2.1,<=2.14.1", "torchvision>=0.16,<=0.29.1")


@dataclass(frozen=True)
class Facts:
    system: str                       # Linux | Darwin | Windows
    machine: str                      # x86_64 | AMD64 | arm64 | aarch64
    nvidia_gpu: str | None = None     # name from nvidia-smi; None when there is no working nvidia-smi
    nvidia_cuda: tuple[int, int] | None = None   # highest CUDA version the driver supports
    amd_gpu: str | None = None        # gfx target from rocminfo; None without a ROCm GPU


@dataclass(frozen=True)
class TorchChoice:
    kind: str                         # cuda | rocm | mps | cpu
    index_url: str | None             # None: the pip's default index (PyPI)
    requirements: tuple[str, ...]
    reason: str                       # one sentence: why this build
    notes: tuple[str, ...] = field(default=())

    def describe(self) -> str:
        label = {"cuda": "NVIDIA CUDA", "rocm": "AMD ROCm", "mps": "Apple Metal (MPS)", "cpu": "CPU-only"}[self.kind]
        src = self.index_url or "the default package index (PyPI)"
        return f"{label} build of PyTorch from {src}: {self.reason}"


def _arch(machine: str) -> str:
    m = machine.lower()
    return {"amd64": "x86_64", "x64": "x86_64", "arm64": "arm64", "aarch64": "arm64"}.get(m, m)


def choose_torch(f: Facts, reqs: tuple[str, ...] = DEFAULT_TORCH_REQS) -> TorchChoice:
    """The PyTorch build for a machine with facts `f`."""
    arch = _arch(f.machine)
    if f.system == "Darwin":
        if arch == "arm64":
            return TorchChoice("mps", None, reqs, "Apple Silicon Mac: PyPI's macOS build includes Metal (MPS)")
        # torch 2.2 was built against NumPy 1.x: keep NumPy below 2 beside it
        return TorchChoice("cpu", None, ("torch>=2.1,<2.3", "torchvision>=0.16,<0.18", "numpy<2"),
                           "Intel Mac: no GPU build exists, and PyTorch 2.2 is the last release for it")
    if f.nvidia_gpu is not None:
        cuda = f.nvidia_cuda
        if cuda is None:
            idx = CUDA_INDEXES[1][1]   # driver version unknown: a widely supported build
            why = f"NVIDIA GPU found ({f.nvidia_gpu or 'nvidia-smi works'}); driver CUDA version unknown"
        else:
            idx = next((name for lo, name in CUDA_INDEXES if cuda >= lo), None)
            why = f"NVIDIA GPU found ({f.nvidia_gpu or 'nvidia-smi works'}), driver supports CUDA {cuda[0]}.{cuda[1]}"
        if idx is None:
            return TorchChoice("cpu", TORCH_INDEX + "cpu", reqs,
                               f"NVIDIA GPU found but its driver (CUDA {cuda[0]}.{cuda[1]}) is older than any "
                               "PyTorch build supports: using the CPU",
                               ("update the NVIDIA driver, then re-run the installer with --reinstall-torch",))
        if f.system in ("Linux", "Windows"):
            return TorchChoice("cuda", TORCH_INDEX + idx, reqs, why)
    if f.amd_gpu is not None:
        if f.system == "Linux" and arch == "x86_64":
            return TorchChoice("rocm", TORCH_INDEX + ROCM_INDEX, reqs,
                               f"AMD GPU found (rocminfo: {f.amd_gpu or 'ROCm present'})")
        return TorchChoice("cpu", TORCH_INDEX + "cpu" if f.system == "Linux" else None, reqs,
                           f"AMD GPU found, but PyTorch's ROCm builds exist only for Linux x86_64: using the CPU")
    if f.system == "Windows":
        return TorchChoice("cpu", None, reqs, "no NVIDIA GPU found; PyPI's Windows build is the CPU build")
    return TorchChoice("cpu", TORCH_INDEX + "cpu", reqs,
                       "no NVIDIA or AMD GPU found; the CPU build is ~200 MB instead of several GB")


# --------------------------------------------------------------------------- probing

def _out(cmd: list[str], timeout: float = 20.0) -> str | None:
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, errors="replace",
                           stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError):
        return None
    return p.stdout if p.returncode == 0 else None


def parse_nvidia_smi(text: str) -> tuple[str, tuple[int, int] | None]:
    """GPU name and driver CUDA version from plain `nvidia-smi` output."""
    m = re.search(r"CUDA Version:\s*(\d+)\.(\d+)", text)
    cuda = (int(m.group(1)), int(m.group(2))) if m else None
    name = ""
    for line in text.splitlines():
        g = re.match(r"\|\s+\d+\s+(.+?)\s{2,}(On|Off)\s+\|", line)
        if g:
            name = g.group(1).strip()
            break
    return name, cuda


def parse_rocminfo(text: str) -> str | None:
    """The first GPU agent's gfx target in `rocminfo` output, None when it lists no GPU."""
    m = re.search(r"^\s*Name:\s*(gfx\d+\w*)\s*$", text, re.M)
    return m.group(1) if m else None


def probe_facts(system: str, machine: str, which=shutil.which, out=_out) -> Facts:
    nvidia_gpu = nvidia_cuda = amd = None
    smi = which("nvidia-smi")
    if smi:
        text = out([smi])
        if text is not None:
            nvidia_gpu, nvidia_cuda = parse_nvidia_smi(text)
            q = out([smi, "--query-gpu=name", "--format=csv,noheader"])
            if q and q.strip():
                nvidia_gpu = q.strip().splitlines()[0].strip()
    if system == "Linux":
        ri = which("rocminfo")
        if ri:
            text = out([ri])
            if text:
                amd = parse_rocminfo(text)
    return Facts(system, machine, nvidia_gpu, nvidia_cuda, amd)
