"""`ai-enhance doctor`: check every link from GIMP to the models, one line each, ok or a fix.

    GIMP 3 found -> plug-in in each profile, executable -> GIMP's Python imports gi and zmq ->
    plug-in registered (pluginrc) -> settings -> backend starts and answers -> each installed
    model loads and verifies -> device.

The module level uses the standard library only: `installer/install.py` (which runs before any
venv exists) loads this file by path for the same GIMP discovery functions, so the installer and
the doctor agree on where GIMP, its profiles and its Python are.  Everything heavier (torch, the
model store, pyzmq) is imported inside the check that needs it.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import re
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping

PLUGIN_NAME = "ai-enhance"
PLUGIN_FILE = PLUGIN_NAME + ".py"
PROC_PREFIX = "python-fu-ai-enhance"
VENDOR_DIR = "vendor"              # pyzmq for a GIMP that bundles its own Python lives here
FLATPAK_ID = "org.gimp.GIMP"
ENV_GIMP = "AI_ENHANCE_GIMP"                  # path of the GIMP binary to check ("none": no GIMP)
ENV_GIMP_PYTHON = "AI_ENHANCE_GIMP_PYTHON"    # command of GIMP's Python (path or JSON list)
_SERIES_RE = re.compile(r"^3\.(\d+)$")
_VERSION_RE = re.compile(r"\b(3\.\d+(?:\.\d+)?)\b")


# =========================================================================== discovery (stdlib)

def system_name(system: str | None = None) -> str:
    """'Linux', 'Darwin' or 'Windows' (platform.system() spelling)."""
    return system or platform.system()


@dataclass(frozen=True)
class Profile:
    path: Path          # the profile folder, e.g. ~/.config/GIMP/3.0
    kind: str           # native | flatpak | snap | windows | macos | custom
    series: str         # "3.0", "3.2", ... ("" when unknown, for --gimp-profile folders)

    @property
    def plugin_dir(self) -> Path:
        return self.path / "plug-ins" / PLUGIN_NAME

    @property
    def plugin_file(self) -> Path:
        return self.plugin_dir / PLUGIN_FILE


def profile_roots(home: Path, system: str, env: Mapping[str, str]) -> list[tuple[str, Path]]:
    """Folders that hold GIMP's per-version profile folders ('3.0', '3.2', ...), by install kind."""
    home = Path(home)
    if system == "Windows":
        appdata = env.get("APPDATA") or str(home / "AppData" / "Roaming")
        return [("windows", Path(appdata) / "GIMP")]
    if system == "Darwin":
        return [("macos", home / "Library" / "Application Support" / "GIMP")]
    xdg = env.get("XDG_CONFIG_HOME") or str(home / ".config")
    return [("native", Path(xdg) / "GIMP"),
            ("flatpak", home / ".var" / "app" / FLATPAK_ID / "config" / "GIMP"),
            ("snap", home / "snap" / "gimp" / "current" / ".config" / "GIMP")]


def find_gimp_profiles(home: Path, system: str, env: Mapping[str, str]) -> list[Profile]:
    """Every existing GIMP 3 profile folder of this user (3.0, 3.2, any later 3.x), in a stable
    order: by install kind, then version."""
    found: list[Profile] = []
    for kind, root in profile_roots(home, system, env):
        try:
            children = sorted(root.iterdir())
        except OSError:
            continue
        series = [(int(m.group(1)), c) for c in children if c.is_dir() and (m := _SERIES_RE.match(c.name))]
        for _, c in sorted(series):
            found.append(Profile(c, kind, c.name))
    return found


def default_profile(home: Path, system: str, env: Mapping[str, str], series: str = "3.0",
                    kind: str | None = None) -> Profile:
    """The profile folder GIMP `series` of install `kind` will use (for a GIMP never started yet)."""
    roots = dict(profile_roots(home, system, env))
    kind = kind if kind in roots else next(iter(roots))
    return Profile(roots[kind] / series, kind, series)


def custom_profile(path: str | os.PathLike) -> Profile:
    p = Path(path).expanduser()
    m = _SERIES_RE.match(p.name)
    kind = "flatpak" if f"/{FLATPAK_ID}/" in p.as_posix() else "custom"
    return Profile(p, kind, p.name if m else "")


@dataclass
class GimpInstall:
    kind: str                    # native | flatpak | snap | windows | macos | env
    exe: str                     # binary (or "flatpak run org.gimp.GIMP")
    version: str                 # "3.0.4", or "3.x" when only the series is known
    python: list[str] = field(default_factory=list)   # command of the Python it runs plug-ins with

    @property
    def series(self) -> str:
        parts = self.version.split(".")
        return ".".join(parts[:2]) if len(parts) >= 2 and parts[1].isdigit() else ""


_LINUX_BINARIES = ("gimp-console-3.2", "gimp-3.2", "gimp-console-3.0", "gimp-3.0", "gimp-console-3",
                   "gimp-3", "gimp")


def _run(cmd: list[str], timeout: float = 20.0) -> tuple[int, str]:
    try:
        p = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                           timeout=timeout, errors="replace")
    except (OSError, subprocess.SubprocessError) as e:
        return 127, str(e)
    return p.returncode, (p.stdout or "") + (p.stderr or "")


def gimp_version(exe: str, runner: Callable = _run) -> str | None:
    """'3.0.4' from `exe --version`, None when it is not a GIMP 3."""
    rc, out = runner([exe, "--version"])
    m = _VERSION_RE.search(out) if rc == 0 else None
    return m.group(1) if m else None


def parse_interp(text: str) -> dict[str, str]:
    """`name=program` lines of a GIMP .interp file (the `:Python:E::py::python3:` lines skipped)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or line.startswith(":") or "=" not in line:
            continue
        k, _, v = line.partition("=")
        out[k.strip()] = v.strip()
    return out


def interp_files_near(exe: str) -> list[Path]:
    """GIMP's interpreter files (pygimp.interp) of the installation that owns binary `exe`."""
    try:
        prefix = Path(os.path.realpath(exe)).parent.parent
    except OSError:
        return []
    pats = ["lib/gimp/3.*/interpreters/*.interp", "lib/*/gimp/3.*/interpreters/*.interp",
            "lib64/gimp/3.*/interpreters/*.interp", "Resources/lib/gimp/3.*/interpreters/*.interp"]
    files: list[Path] = []
    for pat in pats:
        files += [Path(p) for p in sorted(glob.glob(str(prefix / pat)))]
    return files


def python_from_interp(files: Iterable[Path], exe_dir: Path | None = None) -> list[str] | None:
    """The Python GIMP runs `#!/usr/bin/env python3` plug-ins with, per its interpreter files."""
    for f in files:
        try:
            table = parse_interp(Path(f).read_text("utf-8", "replace"))
        except OSError:
            continue
        for key in ("python3", "/usr/bin/python3", "python"):
            prog = table.get(key)
            if prog:
                if exe_dir is not None and not os.path.isabs(prog):
                    cand = exe_dir / prog
                    if cand.exists():
                        prog = str(cand)
                return [prog]
    return None


def parse_python_command(value: str) -> list[str]:
    value = value.strip()
    if value.startswith("["):
        try:
            cmd = json.loads(value)
            if isinstance(cmd, list) and cmd and all(isinstance(c, str) for c in cmd):
                return cmd
        except ValueError:
            pass
    return [value]


def find_gimp(system: str | None = None, env: Mapping[str, str] | None = None,
              which: Callable[[str], str | None] = shutil.which, runner: Callable = _run,
              home: Path | None = None) -> list[GimpInstall]:
    """Every GIMP 3 installation found: PATH binaries, Flatpak, Snap, the usual Windows and macOS
    folders.  `AI_ENHANCE_GIMP` names one binary instead ('none': pretend there is none)."""
    system = system_name(system)
    env = os.environ if env is None else env
    home = Path(home) if home else Path.home()
    found: list[GimpInstall] = []
    gp = env.get(ENV_GIMP_PYTHON)
    override_py = parse_python_command(gp) if gp else None

    forced = env.get(ENV_GIMP)
    if forced:
        if forced.lower() == "none":
            return []
        v = gimp_version(forced, runner)
        if v:
            py = override_py or python_from_interp(interp_files_near(forced), Path(forced).parent) \
                or ([which("python3")] if which("python3") else [])
            found.append(GimpInstall("env", forced, v, py))
        return found

    if system == "Linux":
        seen: set[str] = set()
        for name in _LINUX_BINARIES:
            exe = which(name)
            if not exe:
                continue
            real = os.path.realpath(exe)
            if real in seen:
                continue
            seen.add(real)
            v = gimp_version(exe, runner)
            if not v:
                continue
            kind = "snap" if exe.startswith("/snap/") else "native"
            py = override_py or python_from_interp(interp_files_near(exe)) \
                or ([which("python3")] if which("python3") else [])
            found.append(GimpInstall(kind, exe, v, py))
            break   # one native GIMP is enough: the first name is the newest series
        if which("flatpak"):
            rc, out = runner(["flatpak", "info", FLATPAK_ID])
            if rc == 0:
                m = re.search(r"Version:\s*(\S+)", out)
                found.append(GimpInstall("flatpak", f"flatpak run {FLATPAK_ID}", m.group(1) if m else "3.x",
                                         override_py or ["flatpak", "run", f"--command=python3", FLATPAK_ID]))
    elif system == "Windows":
        bases = [env.get("ProgramFiles"), env.get("ProgramW6432"), env.get("LOCALAPPDATA") and
                 str(Path(env["LOCALAPPDATA"]) / "Programs")]
        for base in filter(None, bases):
            for d in sorted(glob.glob(str(Path(base) / "GIMP 3*")), reverse=True):
                exes = sorted(glob.glob(str(Path(d) / "bin" / "gimp-console-3*.exe"))) \
                    or sorted(glob.glob(str(Path(d) / "bin" / "gimp-3*.exe")))
                if not exes:
                    continue
                exe = exes[-1]
                v = gimp_version(exe, runner) or _series_from_name(exe) or "3.x"
                bin_dir = Path(exe).parent
                py = override_py or python_from_interp(interp_files_near(exe), bin_dir) \
                    or [str(p) for p in (bin_dir / "python.exe", bin_dir / "python3.exe") if p.exists()][:1]
                found.append(GimpInstall("windows", exe, v, py))
                break
    elif system == "Darwin":
        for app in ("/Applications/GIMP.app", str(home / "Applications" / "GIMP.app")):
            if not os.path.isdir(app):
                continue
            v = _plist_version(Path(app) / "Contents" / "Info.plist")
            if not v or not v.startswith("3."):
                continue
            exe = str(Path(app) / "Contents" / "MacOS" / "gimp")
            pys = sorted(glob.glob(str(Path(app) / "Contents" / "MacOS" / "python3*"))) \
                or sorted(glob.glob(str(Path(app) / "Contents" / "Resources" / "bin" / "python3*")))
            found.append(GimpInstall("macos", exe, v, override_py or pys[:1]))
            break
    return found


def _series_from_name(exe: str) -> str | None:
    m = re.search(r"-(3\.\d+)\.exe$", exe)
    return m.group(1) if m else None


def _plist_version(path: Path) -> str | None:
    try:
        import plistlib
        with open(path, "rb") as f:
            return str(plistlib.load(f).get("CFBundleShortVersionString") or "") or None
    except (OSError, ValueError, Exception):
        return None


def python_for_profile(profile: Profile, installs: list[GimpInstall]) -> list[str] | None:
    """The Python that runs plug-ins of `profile`: the Flatpak's for a Flatpak profile, else the
    native GIMP's (of the same series when several)."""
    if not installs:
        return None
    same_kind = [g for g in installs if (g.kind == "flatpak") == (profile.kind == "flatpak")]
    pool = same_kind or installs
    for g in pool:
        if profile.series and g.series == profile.series and g.python:
            return g.python
    return next((g.python for g in pool if g.python), None)


PROBE_CODE = r"""
import json, sys, sysconfig, platform
vendor = sys.argv[1] if len(sys.argv) > 1 else ""
if vendor:
    sys.path.insert(0, vendor)
r = {"version": list(sys.version_info[:2]), "platform": sysconfig.get_platform(),
     "impl": sys.implementation.name, "executable": sys.executable,
     "free_threaded": bool(sysconfig.get_config_var("Py_GIL_DISABLED")),
     "libc": list(platform.libc_ver()), "mac_ver": platform.mac_ver()[0]}
for m in ("gi", "zmq"):
    try:
        mod = __import__(m)
        r[m] = True
        if m == "zmq":
            r["zmq_version"] = getattr(mod, "__version__", "?")
    except Exception as e:
        r[m] = "%s: %s" % (type(e).__name__, e)
print("AIE-PROBE " + json.dumps(r))
"""


def probe_python(cmd: list[str], vendor: Path | None = None, runner: Callable = _run) -> dict:
    """Run GIMP's Python: its version, platform tag and whether `gi` and `zmq` import (with the
    plug-in's vendor folder on sys.path, as the plug-in has).  {'error': ...} if it cannot run."""
    args = list(cmd) + ["-c", PROBE_CODE] + ([str(vendor)] if vendor else [])
    rc, out = runner(args, timeout=60.0)
    for line in out.splitlines():
        if line.startswith("AIE-PROBE "):
            try:
                return json.loads(line[len("AIE-PROBE "):])
            except ValueError:
                break
    return {"error": (out.strip().splitlines() or [f"exit status {rc}"])[-1][:300]}


def zmq_fix(system: str, os_release: str = "") -> str:
    """The exact command that gives GIMP's system Python pyzmq."""
    if system == "Linux":
        ids = os_release.lower()
        if "fedora" in ids or "rhel" in ids or "centos" in ids:
            return "sudo dnf install python3-zmq"
        if "arch" in ids or "manjaro" in ids:
            return "sudo pacman -S python-pyzmq"
        if "suse" in ids:
            return "sudo zypper install python3-pyzmq"
        return "sudo apt install python3-zmq"
    return "re-run `python3 installer/install.py` (it puts pyzmq into the plug-in's folder)"


def read_os_release() -> str:
    for p in ("/etc/os-release", "/usr/lib/os-release"):
        try:
            text = Path(p).read_text("utf-8", "replace")
        except OSError:
            continue
        vals = parse_interp(text)
        return " ".join(vals.get(k, "").strip('"') for k in ("ID", "ID_LIKE"))
    return ""


def registered_procedures(pluginrc: Path) -> list[str] | None:
    """Names of this plug-in's procedures in GIMP's pluginrc, None when the file is absent."""
    try:
        text = pluginrc.read_text("utf-8", "replace")
    except OSError:
        return None
    return sorted(set(re.findall(r'"(' + re.escape(PROC_PREFIX) + r'[A-Za-z0-9_-]*)"', text)))


def protocol_version_of(path: Path) -> int | None:
    try:
        m = re.search(r"^VERSION\s*=\s*(\d+)", path.read_text("utf-8", "replace"), re.M)
    except OSError:
        return None
    return int(m.group(1)) if m else None


# =========================================================================== checks

@dataclass
class Check:
    name: str
    status: str            # ok | fail | warn | skip
    detail: str
    fix: str = ""

    def line(self) -> str:
        tag = {"ok": "  ok ", "fail": "FAIL ", "warn": "warn ", "skip": "skip "}[self.status]
        text = f"{tag} {self.name}: {self.detail}"
        if self.fix and self.status != "ok":
            text += f" -> fix: {self.fix}"
        return text


class Doctor:
    def __init__(self, args, env: Mapping[str, str] | None = None, home: Path | None = None):
        self.args = args
        self.env = os.environ if env is None else env
        self.home = home or Path.home()
        self.system = system_name()
        self.checks: list[Check] = []
        self.emit: Callable[[Check], None] = lambda c: None

    def add(self, name: str, status: str, detail: str, fix: str = "") -> Check:
        c = Check(name, status, " ".join(str(detail).split()), " ".join(str(fix).split()))
        self.checks.append(c)
        self.emit(c)
        return c

    # ------------------------------------------------------------------ GIMP side
    def profiles(self) -> list[Profile]:
        if self.args.gimp_profile:
            return [custom_profile(p) for p in self.args.gimp_profile]
        return find_gimp_profiles(self.home, self.system, self.env)

    def check_gimp(self) -> list[GimpInstall]:
        installs = find_gimp(self.system, self.env, home=self.home)
        if installs:
            for g in installs:
                self.add("GIMP", "ok", f"GIMP {g.version} ({g.kind}: {g.exe})")
        else:
            self.add("GIMP", "fail", "no GIMP 3 found (looked for gimp-console-3.x / gimp-3.x on PATH, "
                     "Flatpak org.gimp.GIMP, the usual install folders)",
                     "install GIMP 3 from https://www.gimp.org/downloads/ (Debian 13 / Ubuntu 25.04: "
                     "`sudo apt install gimp`; any Linux: `flatpak install flathub org.gimp.GIMP`), or set "
                     f"{ENV_GIMP}=/path/to/gimp-3.x")
        return installs

    def check_profiles(self, installs: list[GimpInstall]) -> None:
        profiles = self.profiles()
        if not profiles:
            self.add("plug-in", "fail", "no GIMP 3 profile folder found",
                     "start GIMP 3 once, then run `python3 installer/install.py` (or pass --gimp-profile DIR)")
            return
        backend_proto = None
        try:
            from ai_enhance_client import protocol as _P
            backend_proto = _P.VERSION
        except Exception:
            pass
        gp = self.args.gimp_python or self.env.get(ENV_GIMP_PYTHON)
        for prof in profiles:
            label = f"plug-in [{prof.path}]"
            f = prof.plugin_file
            if not f.is_file():
                self.add(label, "fail", f"{f} is missing",
                         "run `python3 installer/install.py` (or `--gimp-profile "
                         f"{prof.path}`) to copy the plug-in there")
                continue
            if os.name != "nt" and not os.access(f, os.X_OK):
                self.add(label, "fail", f"{f} is not executable: GIMP skips it silently",
                         f"chmod +x '{f}'")
                continue
            pv = protocol_version_of(prof.plugin_dir / "ai_enhance_client" / "protocol.py")
            if backend_proto is not None and pv is not None and pv != backend_proto:
                self.add(label, "fail", f"plug-in speaks protocol v{pv}, this backend v{backend_proto}",
                         "re-run `python3 installer/install.py` so both come from the same release")
                continue
            self.add(label, "ok", f"{f} (executable" + (f", protocol v{pv})" if pv else ")"))
            self.check_gimp_python(prof, installs, gp)
            self.check_registered(prof)

    def check_gimp_python(self, prof: Profile, installs: list[GimpInstall], override: str | None) -> None:
        label = f"GIMP's Python [{prof.path.name} {prof.kind}]"
        cmd = parse_python_command(override) if override else python_for_profile(prof, installs)
        if not cmd:
            self.add(label, "skip", "no GIMP installation to ask for its Python",
                     f"set {ENV_GIMP_PYTHON} to GIMP's python to check it")
            return
        vendor = prof.plugin_dir / VENDOR_DIR
        r = probe_python(cmd, vendor if vendor.is_dir() else None)
        if "error" in r:
            self.add(label, "fail", f"cannot run {' '.join(cmd)} ({r['error']})",
                     "reinstall GIMP 3 with its Python support (Debian: `sudo apt install gimp python3-gi`)")
            return
        where = f"Python {'.'.join(map(str, r.get('version', [])))} ({r.get('executable', cmd[0])})"
        if r.get("gi") is not True:
            self.add(label, "fail", f"{where} cannot import gi ({r.get('gi')})",
                     "install PyGObject for it (Debian/Ubuntu: `sudo apt install python3-gi gir1.2-gimp-3.0`)")
            return
        if r.get("zmq") is not True:
            fix = zmq_fix(self.system, read_os_release()) if prof.kind in ("native", "custom", "snap") \
                and self.system == "Linux" else zmq_fix("other")
            self.add(label, "fail", f"{where} imports gi but not zmq ({r.get('zmq')})", fix)
            return
        self.add(label, "ok", f"{where} imports gi and zmq {r.get('zmq_version', '')}".rstrip())

    def check_registered(self, prof: Profile) -> None:
        label = f"registered [{prof.path.name} {prof.kind}]"
        procs = registered_procedures(prof.path / "pluginrc")
        if procs is None:
            self.add(label, "skip", "GIMP has not run with this profile yet (no pluginrc)",
                     "start GIMP once; the plug-in registers at its first start")
        elif procs:
            self.add(label, "ok", f"{len(procs)} procedures in pluginrc: {', '.join(procs)}")
        else:
            self.add(label, "fail", "GIMP's pluginrc lists no python-fu-ai-enhance-* procedure: GIMP "
                     "ran but did not register the plug-in",
                     "start GIMP from a terminal and read the ai-enhance error it prints (often: its "
                     "Python lacks zmq); also check the file is executable")

    # ------------------------------------------------------------------ backend side
    def check_settings(self):
        try:
            from ai_enhance_client.settings import Settings, settings_path
        except Exception as e:  # pragma: no cover - the package ships with the backend
            self.add("settings", "fail", f"cannot import ai_enhance_client ({e})", "re-run the installer")
            return None
        s = Settings.load()
        p = settings_path()
        cmd = s.serve_command
        if not p.is_file():
            self.add("settings", "warn", f"no settings file at {p}: defaults in use (endpoint {s.endpoint})",
                     "run `python3 installer/install.py` to write it")
        elif not cmd:
            self.add("settings", "fail", f"{p}: no serve command, GIMP cannot start the backend",
                     "re-run `python3 installer/install.py`")
        elif not (shutil.which(cmd[0]) or Path(cmd[0]).is_file()):
            self.add("settings", "fail", f"{p}: the serve command {cmd[0]} does not exist",
                     "re-run `python3 installer/install.py`")
        else:
            self.add("settings", "ok", f"{p}: endpoint {s.endpoint} ({s.source}), serve command "
                     f"`{' '.join(cmd)}`")
        return s

    def check_backend(self, settings) -> None:
        if self.args.no_backend:
            self.add("backend", "skip", "not checked (--no-backend)")
            return
        try:
            from ai_enhance_client.client import Client, ClientError
        except Exception as e:
            self.add("backend", "fail", f"cannot import the client ({type(e).__name__}: {e})",
                     "re-run `python3 installer/install.py`")
            return
        try:
            with Client(settings=settings) as c:
                caps = c.ensure_backend(wait=self.args.backend_wait)
        except ClientError as e:
            self.add("backend", "fail", str(e))
            return
        dev = caps.get("device")
        dev = dev.get("name", dev) if isinstance(dev, dict) else dev
        self.add("backend", "ok", f"answers at {c.endpoint}: version {caps.get('version')}, pid "
                 f"{caps.get('pid')}, protocol v{caps.get('protocol')}, device {dev}, "
                 f"{len(caps.get('models') or [])} models known")

    def check_models(self) -> None:
        try:
            from .models import ModelStore
        except Exception as e:
            self.add("models", "warn", f"model store not available ({type(e).__name__}: {e})",
                     "re-run `python3 installer/install.py`")
            return
        try:
            store = ModelStore(self.args.models_dir) if self.args.models_dir else ModelStore()
            infos = store.list()
        except Exception as e:
            self.add("models", "fail", f"cannot list models ({e})", "check the models folder")
            return
        mdir = getattr(store, "dir", None) or getattr(store, "models_dir", None) or self.args.models_dir
        installed = [i for i in infos if getattr(i, "installed", False) and not getattr(i, "builtin", False)]
        if not installed:
            self.add("models", "fail", f"no model installed in {mdir}",
                     "run `python3 installer/install.py` (downloads the default models) or copy .pth "
                     f"files into {mdir}")
            return
        self.add("models", "ok", f"{len(installed)} installed in {mdir}")
        for info in installed:
            self.check_model(store, info)

    def check_model(self, store, info) -> None:
        label = f"model {info.id}"
        status = getattr(info, "status", "")
        path = Path(str(getattr(info, "path", None) or info.file))
        try:
            store.load_any(info, "cpu")    # a spandrel model or support network, as the backend loads it
        except Exception as e:
            fix = getattr(e, "hint", "") or "delete the file and re-run `python3 installer/install.py`"
            self.add(label, "fail", f"{path} does not load ({getattr(e, 'message', None) or e})", fix)
            return
        note = {"verified": "sha256 matches the official file",
                "unverified": "its sha256 differs from the official file (a converted or re-saved copy)",
                "custom": "custom file (not in the catalogue)"}.get(status, status)
        self.add(label, "ok", f"{path.name} loads; {note}")

    def check_device(self) -> None:
        try:
            import torch
            from .runtime import devices
        except Exception as e:
            self.add("device", "fail", f"torch does not import ({type(e).__name__}: {e})",
                     "re-run `python3 installer/install.py` (it installs the torch build for this machine)")
            return
        try:   # the same probe the backend uses to pick its device
            gpus = [d for d in devices.list_devices() if d.kind != "cpu"]
        except Exception as e:
            self.add("device", "warn", f"GPU probe failed ({type(e).__name__}: {e}); the CPU will be used")
            return
        for d in gpus:
            kind = "ROCm" if d.kind == "cuda" and getattr(torch.version, "hip", None) else d.kind.upper()
            self.add("device", "ok", f"{kind} GPU: {d.describe()} (torch {torch.__version__})")
        if gpus:
            return
        build = "CUDA build" if torch.version.cuda else ("ROCm build" if getattr(torch.version, "hip", None)
                                                         else "CPU build")
        self.add("device", "ok", f"CPU ({os.cpu_count()} cores; no usable GPU; torch {torch.__version__} "
                 f"{build}): works, large upscales take minutes")

    # ------------------------------------------------------------------ run
    def run(self) -> int:
        skip = set(getattr(self.args, "skip", None) or [])
        installs = self.check_gimp() if "gimp" not in skip else find_gimp(self.system, self.env, home=self.home)
        if "plugin" not in skip:
            self.check_profiles(installs)
        settings = self.check_settings()
        if settings is not None and "backend" not in skip:
            self.check_backend(settings)
        if "models" not in skip:
            self.check_models()
        if "device" not in skip:
            self.check_device()
        return 1 if any(c.status == "fail" for c in self.checks) else 0


SKIPPABLE = ("gimp", "plugin", "backend", "models", "device")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="ai-enhance doctor",
                                 description="Check every link from GIMP to the models; print a fix for "
                                             "each broken one.  Exit status 1 when something is broken.")
    ap.add_argument("--gimp-profile", action="append", default=[], metavar="DIR",
                    help="check this GIMP profile folder (repeatable; default: every GIMP 3 profile found)")
    ap.add_argument("--gimp-python", metavar="CMD",
                    help=f"the Python GIMP runs plug-ins with (path or JSON list; default: found from "
                         f"GIMP's interpreter files, or ${ENV_GIMP_PYTHON})")
    ap.add_argument("--models-dir", type=Path, help="default: AI_ENHANCE_MODELS_DIR or the per-user data folder")
    ap.add_argument("--no-backend", action="store_true", help="do not start or ping the backend")
    ap.add_argument("--skip", action="append", choices=SKIPPABLE, default=[],
                    help="leave out a group of checks (repeatable)")
    ap.add_argument("--backend-wait", type=float, default=90.0, help="seconds to wait for the backend to start")
    ap.add_argument("--json", action="store_true", help="print the checks as JSON")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    doc = Doctor(args)
    if not args.json:
        doc.emit = lambda c: print(c.line(), flush=True)
    rc = doc.run()
    fails = [c for c in doc.checks if c.status == "fail"]
    if args.json:
        print(json.dumps({"ok": rc == 0, "checks": [asdict(c) for c in doc.checks]}, indent=2))
    else:
        print(f"doctor: {len(fails)} problem(s) found" if fails else "doctor: everything works")
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
