"""pyzmq for a GIMP that bundles its own Python (Windows, macOS, Flatpak, Snap).

Such a Python has no pip we may use, so the installer picks the pyzmq wheel matching that Python
(version, ABI, platform), downloads it from PyPI with its published sha256 and unpacks it into
the plug-in's `vendor/` folder, which the plug-in puts on sys.path.  The tag selection is a pure
function of the wheel file names and of what GIMP's Python reported about itself."""
from __future__ import annotations

import json
import re
import shutil
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

PYPI_JSON = "https://pypi.org/pypi/{name}/json"

_WHEEL_RE = re.compile(r"^(?P<name>[^-]+)-(?P<ver>[^-]+)(?:-(?P<build>\d[^-]*))?-(?P<py>[^-]+)-(?P<abi>[^-]+)"
                       r"-(?P<plat>[^-]+)\.whl$")
_MANYLINUX_LEGACY = {"manylinux1": (2, 5), "manylinux2010": (2, 12), "manylinux2014": (2, 17)}


@dataclass(frozen=True)
class Target:
    """What a Python interpreter accepts."""
    version: tuple[int, int]             # (3, 12)
    os: str                              # windows | macos | linux
    arch: str                            # x86_64 | arm64 | aarch64 | x86 | ...
    impl: str = "cp"
    free_threaded: bool = False
    mac_version: tuple[int, int] = (11, 0)
    glibc: tuple[int, int] | None = None  # linux: glibc version; None with musl
    musl: tuple[int, int] | None = None
    msys2: bool = False                  # MSYS2/MinGW build (GIMP's Windows Python)


def target_from_probe(probe: dict) -> Target:
    """A Target from doctor.probe_python()'s report of GIMP's Python."""
    ver = tuple(probe.get("version") or (3, 12))[:2]
    plat = str(probe.get("platform") or "").lower()
    impl = "cp" if probe.get("impl", "cpython") == "cpython" else "pp"
    ft = bool(probe.get("free_threaded"))
    if plat.startswith("win") or plat.startswith("mingw"):
        if "arm64" in plat or "aarch64" in plat:
            arch = "arm64"
        elif "amd64" in plat or "x86_64" in plat:
            arch = "x86_64"
        else:
            arch = "x86"
        return Target(ver, "windows", arch, impl, ft, msys2=plat.startswith("mingw"))
    if plat.startswith("macosx"):
        parts = plat.split("-")   # macosx-11.0-arm64
        mv = tuple(int(x) for x in (parts[1].split(".") + ["0"])[:2]) if len(parts) > 2 else (11, 0)
        live = str(probe.get("mac_ver") or "")
        if live:
            lv = tuple(int(x) for x in (live.split(".") + ["0"])[:2])
            mv = max(mv, lv)
        arch = parts[-1] if len(parts) > 2 else "arm64"
        return Target(ver, "macos", arch, impl, ft, mac_version=mv)
    arch = plat.split("-")[-1] if "-" in plat else "x86_64"
    libc = probe.get("libc") or ["", ""]
    glibc = musl = None
    if libc and libc[0] == "glibc" and libc[1]:
        glibc = tuple(int(x) for x in (libc[1].split(".") + ["0"])[:2])
    else:
        musl = (1, 2)
    return Target(ver, "linux", arch, impl, ft, glibc=glibc, musl=musl)


def _platform_score(tag: str, t: Target) -> int | None:
    """None: the platform tag does not fit; else higher is a better (more specific) fit."""
    if tag == "any":
        return 0
    if t.os == "windows":
        want = {"x86_64": "win_amd64", "arm64": "win_arm64", "x86": "win32"}[t.arch]
        return 10 if tag == want else None
    if t.os == "macos":
        m = re.match(r"macosx_(\d+)_(\d+)_(\w+)$", tag)
        if not m:
            return None
        need = (int(m.group(1)), int(m.group(2)))
        arch = m.group(3)
        ok_arch = {"arm64": ("arm64", "universal2"),
                   "x86_64": ("x86_64", "universal2", "intel", "universal")}.get(t.arch, (t.arch,))
        if arch not in ok_arch or need > t.mac_version:
            return None
        return 10 + (5 if arch == t.arch else 0) + need[0]
    # linux
    arch = t.arch
    if t.glibc:
        for legacy, ver in _MANYLINUX_LEGACY.items():
            if tag == f"{legacy}_{arch}":
                return 10 + ver[1] if ver <= t.glibc else None
        m = re.match(r"manylinux_(\d+)_(\d+)_(\w+)$", tag)
        if m and m.group(3) == arch:
            ver = (int(m.group(1)), int(m.group(2)))
            return 10 + ver[1] if ver <= t.glibc else None
        return None
    if t.musl:
        m = re.match(r"musllinux_(\d+)_(\d+)_(\w+)$", tag)
        if m and m.group(3) == arch and (int(m.group(1)), int(m.group(2))) <= t.musl:
            return 10
    return None


def _python_score(py: str, abi: str, t: Target) -> int | None:
    major, minor = t.version
    exact = f"{t.impl}{major}{minor}"
    for p in py.split("."):
        if t.impl == "cp":
            if p == exact and abi == exact + ("t" if t.free_threaded else ""):
                return 30
            if abi == "abi3" and not t.free_threaded and re.fullmatch(r"cp3(\d+)", p) \
                    and int(p[3:]) <= minor:
                return 10 + int(p[3:])   # < 30; a newer abi3 baseline is better
        elif t.impl == "pp" and p.startswith("pp3") and abi.startswith(f"pypy{major}{minor}"):
            return 30
        if abi == "none" and p in ("py3", f"py{major}{minor}"):
            return 0
    return None


def choose_wheel(filenames: list[str], t: Target) -> str | None:
    """The best wheel for Target `t` among `filenames`, None when none fits."""
    best: tuple[int, int, str] | None = None
    for fn in filenames:
        m = _WHEEL_RE.match(fn)
        if not m:
            continue
        ps = _python_score(m["py"], m["abi"], t)
        if ps is None:
            continue
        if t.msys2 and m["abi"] != "abi3" and m["plat"] != "any":
            # MSYS2's Python loads '.pyd' but not MSVC's '.cpXY-win_amd64.pyd' names: abi3 only.
            continue
        plat_scores = [s for s in (_platform_score(p, t) for p in m["plat"].split(".")) if s is not None]
        if not plat_scores:
            continue
        key = (ps, max(plat_scores), fn)
        if best is None or key[:2] > best[:2]:
            best = key
    return best[2] if best else None


def pypi_files(name: str, version: str | None = None, timeout: float = 30.0) -> list[dict]:
    """[{filename, url, sha256}] of a release on PyPI (the latest when version is None)."""
    url = PYPI_JSON.format(name=name) if version is None else f"https://pypi.org/pypi/{name}/{version}/json"
    with urllib.request.urlopen(urllib.request.Request(url, headers={"Accept": "application/json"}),
                                timeout=timeout) as r:
        data = json.load(r)
    return [{"filename": u["filename"], "url": u["url"], "sha256": u.get("digests", {}).get("sha256")}
            for u in data.get("urls", []) if u.get("packagetype") == "bdist_wheel"]


def unpack_wheel(wheel: Path, dest: Path) -> list[str]:
    """Unzip a wheel into `dest` (what `pip install --target` does for a binary wheel without
    scripts); refuses entries that would land outside `dest`.  Returns the top-level names."""
    dest.mkdir(parents=True, exist_ok=True)
    tops: set[str] = set()
    with zipfile.ZipFile(wheel) as z:
        for info in z.infolist():
            p = PurePosixPath(info.filename)
            if p.is_absolute() or ".." in p.parts or ":" in info.filename or "\\" in info.filename:
                raise ValueError(f"unsafe path {info.filename!r} in {wheel.name}")
        for info in z.infolist():
            target = dest / info.filename
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with z.open(info) as src, open(target, "wb") as out:
                shutil.copyfileobj(src, out)
            mode = (info.external_attr >> 16) & 0o777
            if mode:
                target.chmod(mode | 0o600)
            tops.add(PurePosixPath(info.filename).parts[0])
    return sorted(tops)
