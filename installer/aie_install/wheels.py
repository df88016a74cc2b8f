"""pyzmq for a GIMP that bundles its own Python (Windows, macOS, Flatpak, Snap).

Such a Python has no pip we may use, so the installer picks the pyzmq wheel matching that Python
(version, ABI, platform), downloads it with its published sha256 from the package index the
user's pip is configured with (PIP_INDEX_URL, `pip config`, else pip's own default index: the
repository names no index host) and unpacks it into the plug-in's `vendor/` folder, which the
plug-in puts on sys.path.  The index is read through the standard "simple" API (PEP 691 JSON,
else PEP 503 HTML), which every index and mirror serves.  The tag selection is a pure function of
the wheel file names and of what GIMP's Python reported about itself."""
from __future__ import annotations

import html.parser
import json
import os
import re
import shutil
import subprocess
import sys
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

SIMPLE_JSON = "application/vnd.pypi.simple.v1+json"

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


def pip_index_url(python: str | None = None, env: dict | None = None, run=subprocess.run) -> str | None:
    """The package index the user's pip uses: PIP_INDEX_URL, else `pip config list`'s
    index-url (global/user/site files), else pip's own default; None when no pip is there."""
    env = os.environ if env is None else env
    if env.get("PIP_INDEX_URL"):
        return env["PIP_INDEX_URL"].split()[0]
    py = python or sys.executable
    try:
        p = run([py, "-m", "pip", "config", "list"], capture_output=True, text=True, timeout=60,
                stdin=subprocess.DEVNULL)
        for line in (p.stdout or "").splitlines():
            key, _, value = line.partition("=")
            if key.strip().endswith(".index-url") and value.strip():
                return value.strip().strip("'\"").split()[0]
        p = run([py, "-c", "from pip._internal.models.index import PyPI; print(PyPI.simple_url)"],
                capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        url = (p.stdout or "").strip()
        return url or None
    except (OSError, subprocess.SubprocessError):
        return None


class _Links(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.links: list[tuple[str, str]] = []
        self._href: str | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "a":
            self._href = dict(attrs).get("href")

    def handle_data(self, data):
        if self._href is not None and data.strip():
            self.links.append((data.strip(), self._href))
            self._href = None


def parse_simple_page(body: bytes, content_type: str, base: str) -> list[dict]:
    """[{filename, url, sha256}] of a project page of a simple index (JSON or HTML)."""
    out = []
    if "json" in content_type:
        data = json.loads(body)
        for f in data.get("files", []):
            out.append({"filename": f["filename"], "url": urllib.parse.urljoin(base, f["url"]),
                        "sha256": (f.get("hashes") or {}).get("sha256")})
        return out
    parser = _Links()
    parser.feed(body.decode("utf-8", "replace"))
    for name, href in parser.links:
        url, _, frag = href.partition("#")
        sha = frag.split("=", 1)[1] if frag.startswith("sha256=") else None
        out.append({"filename": name, "url": urllib.parse.urljoin(base, url), "sha256": sha})
    return out


def _version_key(v: str) -> tuple:
    parts = []
    for x in re.split(r"[.+-]", v):
        parts.append((0, int(x)) if x.isdigit() else (-1, x))
    return tuple(parts)


def newest_release(files: list[dict], version: str | None = None) -> list[dict]:
    """The wheels of ``version`` (the newest final release when None) among an index's files."""
    wheels = []
    for f in files:
        m = _WHEEL_RE.match(f["filename"])
        if m and f.get("sha256"):
            wheels.append((m["ver"], f))
    if version is None:
        finals = [v for v, _ in wheels if re.fullmatch(r"[0-9.]+", v)]
        if not finals:
            return []
        version = max(finals, key=_version_key)
    return [f for v, f in wheels if v == version]


def pypi_files(name: str, version: str | None = None, timeout: float = 30.0,
               index: str | None = None) -> list[dict]:
    """[{filename, url, sha256}] of the wheels of a release (the newest when version is None) on
    the user's package index (``index``, else ``pip_index_url()``)."""
    index = index or pip_index_url()
    if not index:
        raise ValueError("no package index known: set PIP_INDEX_URL or install pip")
    url = index.rstrip("/") + "/" + re.sub(r"[-_.]+", "-", name).lower() + "/"
    req = urllib.request.Request(url, headers={"Accept": f"{SIMPLE_JSON}, text/html;q=0.1"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        body, ctype, final = r.read(), r.headers.get("Content-Type", ""), r.geturl()
    return newest_release(parse_simple_page(body, ctype, final), version)


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
