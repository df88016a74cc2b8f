"""The installer's steps.  Standard library only: it runs before any venv exists.

Every step first looks at what is already there and does nothing when it is right, so a second
run changes nothing; everything it creates is recorded in PREFIX/install-manifest.json, which
`--uninstall` works from."""
from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from . import catalog as cat
from . import torchsel, wheels
from .download import DownloadError, copy_verified, fetch, sha256_file
from .manifest import Manifest, uninstall
from .ui import Console, human

REPO = Path(__file__).resolve().parents[2]
BACKEND = REPO / "backend" / "ai_enhance"
PLUGIN_SRC = REPO / "plugin" / "ai-enhance"
MIN_PY = (3, 11)
#: Keys copied into the plug-in folder of a sandboxed GIMP (Flatpak, Snap), whose HOME/XDG
#: folders are not the user's: the profile is the one place both sides surely see.
PLUGIN_KEYS = "keys"
UPSCALE_PREFERENCE = ("realesrgan-x4plus", "realesr-general-x4v3", "realesr-animevideov3", "realesrgan-x2plus")


class InstallError(Exception):
    """A step failed: one line, with the fix."""


# =========================================================================== shared logic, by path

def _load(name: str, path: Path):
    """Import a standard-library-only module of the project by file path (one source of truth:
    the installer uses the backend's own folder rules and GIMP discovery)."""
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


paths = _load("_aie_paths", BACKEND / "paths.py")
doctor = _load("_aie_doctor", BACKEND / "doctor.py")
settings_mod = _load("_aie_settings", PLUGIN_SRC / "ai_enhance_client" / "settings.py")


# =========================================================================== helpers

def venv_bin(venv: Path, name: str) -> Path:
    if os.name == "nt":
        return venv / "Scripts" / (name + ".exe")
    return venv / "bin" / name


def run(cmd: list[str], console: Console, *, capture: bool = False, env: dict | None = None,
        check: bool = True, what: str = "") -> subprocess.CompletedProcess:
    """Run a command; its output streams to the terminal (or is captured and shown on failure)."""
    stream = not capture and console.tty
    p = subprocess.run([str(c) for c in cmd], stdin=subprocess.DEVNULL, env=env, text=True,
                       errors="replace", stdout=None if stream else subprocess.PIPE,
                       stderr=None if stream else subprocess.STDOUT)
    if check and p.returncode != 0:
        tail = "\n".join((p.stdout or "").strip().splitlines()[-25:])
        if tail:
            console.info("--- output (last lines) ---")
            for line in tail.splitlines():
                console.info(line)
        raise InstallError(f"{what or cmd[0]} failed (exit status {p.returncode})")
    return p


def py_json(py: Path | str, code: str) -> dict | None:
    try:
        p = subprocess.run([str(py), "-c", code], capture_output=True, text=True, timeout=120,
                           stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError):
        return None
    for line in reversed(p.stdout.splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                return None
    return None


def version_tuple(v: str) -> tuple[int, ...]:
    out = []
    for part in v.split("+")[0].split("."):
        digits = "".join(ch for ch in part if ch.isdigit())
        if not digits:
            break
        out.append(int(digits))
        if not part.isdigit():
            break
    return tuple(out)


def satisfies(version: str, spec: str) -> bool:
    """Tiny PEP 440 subset: comma-separated >=, <=, <, >, == clauses on release numbers."""
    v = version_tuple(version)
    for clause in spec.split(","):
        clause = clause.strip()
        for op in (">=", "<=", "==", "<", ">"):
            if clause.startswith(op):
                ref = version_tuple(clause[len(op):])
                n = max(len(v), len(ref))
                a, b = v + (0,) * (n - len(v)), ref + (0,) * (n - len(ref))
                if not {">=": a >= b, "<=": a <= b, "==": a == b, "<": a < b, ">": a > b}[op]:
                    return False
                break
    return True


def split_req(req: str) -> tuple[str, str]:
    for i, ch in enumerate(req):
        if ch in "<>=!~ ;[":
            return req[:i].strip(), req[i:].strip()
    return req.strip(), ""


def torch_requirements() -> tuple[str, ...]:
    """torch/torchvision requirements from pyproject.toml (one source of truth)."""
    try:
        import tomllib
        deps = tomllib.loads((REPO / "pyproject.toml").read_text("utf-8"))["project"]["dependencies"]
        reqs = tuple(d for d in deps if split_req(d)[0] in ("torch", "torchvision"))
        if len(reqs) == 2:
            return tuple(d.replace(" ", "") for d in reqs)
    except Exception:
        pass
    return torchsel.DEFAULT_TORCH_REQS


def reachable(url: str, timeout: float = 10.0) -> bool:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout):
            return True
    except urllib.error.HTTPError:
        return True     # it answered
    except (urllib.error.URLError, OSError):
        return False


def project_fingerprint() -> str:
    """Hash of everything `pip install REPO` puts into the venv: unchanged -> skip the reinstall."""
    h = hashlib.sha256()
    files = [REPO / "pyproject.toml"]
    for root in (BACKEND, PLUGIN_SRC / "ai_enhance_client"):
        files += [p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts
                  and p.suffix != ".pyc"]
    for p in sorted(files):
        h.update(str(p.relative_to(REPO)).encode() + b"\0")
        h.update(p.read_bytes())
        h.update(b"\0")
    return h.hexdigest()


def plugin_sources() -> list[Path]:
    out = []
    for p in sorted(PLUGIN_SRC.rglob("*")):
        rel = p.relative_to(PLUGIN_SRC)
        if p.is_file() and "__pycache__" not in rel.parts and p.suffix != ".pyc" \
                and rel.parts[0] not in (doctor.VENDOR_DIR, PLUGIN_KEYS) \
                and rel.name != settings_mod.PLUGIN_SETTINGS:
            out.append(rel)
    return out


def find_base_python(explicit: str | None) -> str:
    if explicit:
        return explicit
    if sys.version_info[:2] >= MIN_PY:
        return sys.executable
    for name in ("python3.13", "python3.12", "python3.11"):
        exe = shutil.which(name)
        if exe:
            return exe
    raise InstallError(f"the backend needs Python {MIN_PY[0]}.{MIN_PY[1]} or newer, this is "
                       f"{platform.python_version()}; install one (https://www.python.org/downloads/) "
                       "and pass --python /path/to/python3.x")


def yes_no(question: str, args, default: bool = True) -> bool:
    if args.yes:
        return True
    if not sys.stdin or not sys.stdin.isatty():
        return default
    ans = input(f"{question} [{'Y/n' if default else 'y/N'}] ").strip().lower()
    return default if not ans else ans.startswith("y")


# =========================================================================== the installer

class Installer:
    def __init__(self, args, console: Console):
        self.a = args
        self.c = console
        self.system = platform.system()
        self.prefix = Path(args.prefix).expanduser().resolve() if args.prefix else paths.data_dir()
        self.venv = self.prefix / "venv"
        self.vpy = venv_bin(self.venv, "python")
        self.exe = venv_bin(self.venv, "ai-enhance")
        self.models_dir_explicit = bool(args.models_dir or os.environ.get(paths.ENV_MODELS_DIR))
        self.models_dir = Path(args.models_dir).expanduser().resolve() if args.models_dir else paths.models_dir()
        self.m = Manifest.load(self.prefix)
        self.pip_extra = list(args.pip_arg or []) + shlex.split(os.environ.get("AI_ENHANCE_PIP_ARGS", ""))
        self.installed_profiles: list = []
        self.gimps: list = []
        self.changed = 0

    # ------------------------------------------------------------------ plan
    def plan(self) -> torchsel.TorchChoice:
        self.c.step("Looking at this machine")
        facts = torchsel.probe_facts(self.system, platform.machine())
        if self.a.torch_build != "auto":
            facts = torchsel.Facts(self.system, platform.machine(),
                                   nvidia_gpu="(forced)" if self.a.torch_build == "cuda" else None,
                                   nvidia_cuda=(12, 8) if self.a.torch_build == "cuda" else None,
                                   amd_gpu="(forced)" if self.a.torch_build == "rocm" else None)
            if self.a.torch_build == "cpu":
                facts = torchsel.Facts(self.system, platform.machine())
        choice = torchsel.choose_torch(facts, torch_requirements())
        if self.a.torch_build == "mps" and choice.kind != "mps":
            raise InstallError("--torch-build mps needs an Apple Silicon Mac")
        self.c.info(f"system: {platform.system()} {platform.release()} {platform.machine()}, "
                    f"installer Python {platform.python_version()}")
        self.c.info(f"PyTorch: {choice.describe()}")
        for n in choice.notes:
            self.c.warn(n)
        self.gimps = doctor.find_gimp(self.system)
        for g in self.gimps:
            self.c.info(f"GIMP {g.version} ({g.kind}: {g.exe})")
        if not self.gimps:
            self.c.info("GIMP 3: not found (the plug-in still goes into any GIMP 3 profile folder)")
        self.c.info(f"install folder: {self.prefix}")
        self.c.info(f"models folder: {self.models_dir}")
        return choice

    # ------------------------------------------------------------------ venv
    def step_venv(self) -> None:
        self.c.step(f"Python environment for the backend ({self.venv})")
        if self.venv.exists() and not self.m.owns(self.venv):
            raise InstallError(f"{self.venv} exists and was not made by this installer; remove it or "
                               "choose another --prefix")
        if not self.vpy.exists():
            base = find_base_python(self.a.python)
            info = py_json(base, "import sys, json; print(json.dumps({'v': list(sys.version_info[:2])}))")
            if not info:
                raise InstallError(f"cannot run {base}; pass --python /path/to/python3.11+")
            if tuple(info["v"]) < MIN_PY:
                raise InstallError(f"{base} is Python {info['v'][0]}.{info['v'][1]}; the backend needs "
                                   f"{MIN_PY[0]}.{MIN_PY[1]}+ (pass --python)")
            self.m.mkdirs(self.prefix)
            self.m.add_tree(self.venv)
            self.m.save()
            run([base, "-m", "venv", self.venv], self.c, capture=True, what="creating the venv")
            self.c.ok(f"created with Python {info['v'][0]}.{info['v'][1]} ({base})")
            self.changed += 1
        else:
            self.c.ok("exists")
        if self.a.share_packages_from:
            self.share_packages(self.a.share_packages_from)

    def share_packages(self, other: str) -> None:
        """Make an existing environment's packages visible in the venv through a .pth file, so
        torch & co. are not downloaded a second time (tests, developers).  pip then finds them
        installed and only installs this project into the venv."""
        code = ("import sys, sysconfig, json; p = sysconfig.get_paths(); "
                "print(json.dumps({'v': list(sys.version_info[:2]), 'dirs': [p['purelib'], p['platlib']]}))")
        mine, theirs = py_json(self.vpy, code), py_json(other, code)
        if not theirs:
            raise InstallError(f"--share-packages-from: cannot run {other}")
        if mine["v"] != theirs["v"]:
            raise InstallError(f"--share-packages-from: {other} is Python {theirs['v']}, the venv "
                               f"{mine['v']}; pass the same --python")
        pth = Path(mine["dirs"][0]) / "_ai_enhance_shared.pth"
        text = "\n".join(dict.fromkeys(theirs["dirs"])) + "\n"
        if not pth.is_file() or pth.read_text("utf-8") != text:
            pth.write_text(text, "utf-8")
            self.c.ok(f"sharing the packages of {other}")
            self.changed += 1
        else:
            self.c.ok(f"shares the packages of {other}")

    def pip(self, *args: str, index: str | None = None, what: str = "pip") -> None:
        cmd = [str(self.vpy), "-m", "pip", "install", "--no-cache-dir", "--disable-pip-version-check"]
        if not self.c.tty:
            cmd.append("--progress-bar=off")
        if index:
            cmd += ["--index-url", index]
        run(cmd + self.pip_extra + list(args), self.c, what=what)

    # ------------------------------------------------------------------ torch
    def step_torch(self, choice: torchsel.TorchChoice) -> None:
        self.c.step("PyTorch")
        code = ("import json, torch, torchvision; print(json.dumps({'torch': torch.__version__, "
                "'tv': torchvision.__version__, 'cuda': torch.version.cuda, "
                "'hip': getattr(torch.version, 'hip', None)}))")
        have = py_json(self.vpy, code)
        reqs = choice.requirements
        specs = dict(split_req(r) for r in reqs)
        if have and not self.a.reinstall_torch and satisfies(have["torch"], specs.get("torch", "")) \
                and satisfies(have["tv"], specs.get("torchvision", "")):
            self.c.ok(f"torch {have['torch']} ({self._build(have)}) already installed")
            if choice.kind in ("cuda", "rocm") and not have.get("cuda") and not have.get("hip"):
                self.c.warn(f"the installed torch is a CPU build but this machine suits the {choice.kind} "
                            "build: re-run with --reinstall-torch to use the GPU")
            return
        index = choice.index_url
        if self.a.torch_index:
            index = None if self.a.torch_index == "default" else self.a.torch_index
        elif index and not reachable(index):
            self.c.warn(f"{index} is unreachable: installing torch from pip's default index instead "
                        "(on Linux that build bundles CUDA: a larger download, and it runs on the CPU too)")
            index = None
        self.c.info(f"pip install {' '.join(reqs)}" + (f" from {index}" if index else ""))
        self.c.info("(a download of 0.2 GB for the CPU build to several GB with CUDA or ROCm: minutes)")
        self.pip(*reqs, index=index, what="installing PyTorch")
        have = py_json(self.vpy, code)
        if not have:
            raise InstallError("PyTorch installed but does not import; see the pip output above")
        self.c.ok(f"torch {have['torch']} ({self._build(have)}), torchvision {have['tv']}")
        self.changed += 1

    @staticmethod
    def _build(h: dict) -> str:
        if h.get("cuda"):
            return f"CUDA {h['cuda']} build"
        if h.get("hip"):
            return f"ROCm {h['hip']} build"
        return "CPU build"

    # ------------------------------------------------------------------ project
    def step_project(self) -> None:
        self.c.step("The ai-enhance backend (this project) into the venv")
        fp = project_fingerprint() + ("-e" if self.a.editable else "")
        if self.m.state.get("project") == fp and self.exe.exists() \
                and py_json(self.vpy, "import json, ai_enhance; print(json.dumps({}))") is not None:
            self.c.ok(f"up to date ({self.exe})")
            return
        args = ["-e", str(REPO)] if self.a.editable else [str(REPO)]
        self.pip(*args, what="installing the backend")
        if not self.exe.exists():
            raise InstallError(f"{self.exe} missing after pip install")
        self.m.state["project"] = fp
        self.m.save()
        self.c.ok(f"installed: {self.exe}")
        self.changed += 1

    # ------------------------------------------------------------------ models
    def step_models(self) -> None:
        self.c.step(f"Models ({self.models_dir})")
        if self.a.no_models:
            self.c.info("skipped (--no-models)")
            return
        try:
            entries = cat.load_catalog(BACKEND / "models" / "catalog.json")
        except cat.CatalogError as e:
            self.c.error(f"{e}; models not installed")
            return
        ids = [i.strip() for i in self.a.models.split(",") if i.strip()] if self.a.models else None
        chosen, unknown = cat.select(entries, ids)
        for u in unknown:
            self.c.warn(f"unknown model id {u!r} (known: {', '.join(e.id for e in entries)})")
        src_dir = Path(self.a.models_from).expanduser().resolve() if self.a.models_from else None
        if src_dir and not src_dir.is_dir():
            raise InstallError(f"--models-from {src_dir}: no such folder")
        if src_dir and src_dir == self.models_dir.resolve():
            self.c.ok(f"the models folder is {src_dir} itself: nothing to copy")
            return
        if src_dir is not None:
            chosen = self.substitute_local_detector(chosen, entries, src_dir)
        self.m.mkdirs(self.models_dir)
        states = self.m.state.setdefault("models", {})
        for e in chosen:
            dest = self.models_dir / e.file
            ours = self.m.owns(dest)
            if src_dir is not None:
                src = src_dir / e.file
                if not src.is_file():
                    self.c.warn(f"{e.id}: {e.file} is not in {src_dir}: skipped (run without "
                                "--models-from to download it)")
                    continue
                if dest.is_file():
                    if not ours:
                        self.c.info(f"{e.id}: {dest} was already there (not installed by this installer): kept")
                        continue
                    prev = states.get(e.id, {})
                    st = src.stat()
                    if prev.get("size") == st.st_size == dest.stat().st_size \
                            and prev.get("mtime") == int(st.st_mtime) and prev.get("sha256") == sha256_file(dest):
                        self.c.ok(f"{e.id}: {e.file} unchanged ({prev.get('label')})")
                        continue
                self.m.add_file(dest)
                self.m.save()
                label, digest = copy_verified(src, dest, e.sha256, console=self.c, name=e.file)
                st = src.stat()
                states[e.id] = {"file": e.file, "sha256": digest, "label": label, "size": st.st_size,
                                "mtime": int(st.st_mtime), "source": str(src)}
                why = "sha256 matches the official file" if label == "verified" else (
                    "sha256 differs from the official file (accepted from a local folder)" if e.sha256
                    else "the catalogue pins no sha256")
                self.c.ok(f"{e.id}: copied {e.file} ({human(st.st_size)}), {label}: {why}")
                self.changed += 1
                continue
            # download from the official URL
            if dest.is_file():
                digest = sha256_file(dest)
                if e.sha256 and digest == e.sha256:
                    self.c.ok(f"{e.id}: {e.file} present, verified")
                    continue
                if not ours:
                    self.c.warn(f"{e.id}: {dest} exists with another sha256 than the official file "
                                "(not installed by this installer): kept; delete it to download the official one")
                    continue
            if not e.url:
                self.c.error(f"{e.id}: the catalogue has no download URL; use --models-from DIR")
                continue
            self.m.add_file(dest)
            self.m.save()
            self.c.info(f"{e.id}: {e.url}")
            try:
                how = fetch(e.url, dest, e.sha256, name=e.file, size=e.size, console=self.c)
            except DownloadError as err:
                self.c.error(str(err))
                continue
            states[e.id] = {"file": e.file, "sha256": e.sha256, "label": "verified", "source": e.url}
            self.c.ok(f"{e.id}: {e.file} {how}, sha256 verified")
            self.changed += 1
        self.m.save()

    def substitute_local_detector(self, chosen: list, entries: list, src_dir: Path) -> list:
        """From a local folder, a face detector the folder lacks is replaced by another face
        detector of the catalogue that the folder has (the backend uses any installed one)."""
        out = list(chosen)
        for e in chosen:
            if e.role == "face_detector" and not (src_dir / e.file).is_file():
                alt = next((x for x in entries if x.role == "face_detector" and x not in out
                            and (src_dir / x.file).is_file()), None)
                if alt is not None:
                    self.c.info(f"{e.id}: {e.file} is not in {src_dir}; installing the face detector "
                                f"{alt.id} ({alt.file}) from there instead")
                    out[out.index(e)] = alt
        return out

    # ------------------------------------------------------------------ GIMP plug-in
    def profiles(self) -> list:
        if self.a.gimp_profile:
            return [doctor.custom_profile(p) for p in self.a.gimp_profile]
        found = doctor.find_gimp_profiles(Path.home(), self.system, os.environ)
        if found:
            return found
        if self.gimps:
            g = self.gimps[0]
            kind = {"native": "native", "flatpak": "flatpak", "snap": "snap"}.get(g.kind)
            prof = doctor.default_profile(Path.home(), self.system, os.environ, g.series or "3.0", kind)
            self.c.info(f"GIMP {g.version} has no profile yet (never started): using {prof.path}")
            return [prof]
        return []

    def step_plugin(self) -> None:
        self.c.step("GIMP plug-in")
        profs = self.profiles()
        if not profs:
            self.c.warn("no GIMP 3 found and no GIMP 3 profile folder: the plug-in was not installed; "
                        "install GIMP 3, start it once, then run the installer again (or pass --gimp-profile DIR)")
            return
        srcs = plugin_sources()
        for prof in profs:
            dest = prof.plugin_dir
            if dest.exists() and not self.m.owns(dest):
                self.m.backup_tree(dest)
                self.c.info(f"{dest} existed (an older copy?): saved to {self.prefix / 'backups'}, replacing it")
                shutil.rmtree(dest)
            self.m.mkdirs(dest.parent)
            if not dest.exists():
                self.m.add_tree(dest)
                self.m.save()
            self.m.mkdirs(dest)
            n = 0
            for rel in srcs:
                s, d = PLUGIN_SRC / rel, dest / rel
                d.parent.mkdir(parents=True, exist_ok=True)
                data = s.read_bytes()
                if not d.is_file() or d.read_bytes() != data:
                    tmp = d.with_name(d.name + ".tmp")
                    tmp.write_bytes(data)
                    os.replace(tmp, d)
                    n += 1
                mode = 0o755 if rel == Path(doctor.PLUGIN_FILE) else 0o644
                if os.name != "nt" and (d.stat().st_mode & 0o777) != mode:
                    d.chmod(mode)
                    n += 1
            old = set(self.m.state.get("plugin_files", {}).get(str(dest), []))
            for rel in sorted(old - {str(r) for r in srcs}):
                p = dest / rel
                if p.is_file():
                    p.unlink()
                    n += 1
            self.m.state.setdefault("plugin_files", {})[str(dest)] = [str(r) for r in srcs]
            self.installed_profiles.append(prof)
            if n:
                self.changed += 1
                self.c.ok(f"{dest}: {n} file(s) written, {doctor.PLUGIN_FILE} executable")
            else:
                self.c.ok(f"{dest}: up to date")
        self.m.save()

    # ------------------------------------------------------------------ GIMP's Python
    def gimp_python(self, prof) -> list[str] | None:
        gp = self.a.gimp_python or os.environ.get(doctor.ENV_GIMP_PYTHON)
        if gp:
            return doctor.parse_python_command(gp)
        return doctor.python_for_profile(prof, self.gimps)

    def step_gimp_python(self) -> None:
        self.c.step("pyzmq for GIMP's Python")
        if not self.installed_profiles:
            self.c.info("no profile: skipped")
            return
        for prof in self.installed_profiles:
            cmd = self.gimp_python(prof)
            if not cmd:
                self.c.info(f"{prof.path}: no GIMP installation found to ask for its Python: skipped "
                            "(`ai-enhance doctor` checks it once GIMP is installed)")
                continue
            vendor = prof.plugin_dir / doctor.VENDOR_DIR
            r = doctor.probe_python(cmd, vendor if vendor.is_dir() else None)
            where = " ".join(cmd)
            if "error" in r:
                self.c.warn(f"cannot run GIMP's Python {where} ({r['error']})")
                continue
            if r.get("zmq") is True:
                self.c.ok(f"{r.get('executable', where)} imports zmq {r.get('zmq_version', '')}")
                continue
            if r.get("gi") is not True:
                self.c.warn(f"{r.get('executable', where)} cannot import gi ({r.get('gi')}): GIMP's Python "
                            "support is incomplete (Debian/Ubuntu: `sudo apt install python3-gi gir1.2-gimp-3.0`)")
            bundled = prof.kind in ("flatpak", "snap", "windows", "macos") or self.system in ("Windows", "Darwin")
            if bundled or self.a.vendor_zmq:
                self.vendor_pyzmq(prof, cmd, r)
            else:
                self.system_pyzmq(cmd, r)

    def system_pyzmq(self, cmd: list[str], r: dict) -> None:
        exe = r.get("executable") or cmd[0]
        fix = doctor.zmq_fix(self.system, doctor.read_os_release())
        is_root = hasattr(os, "geteuid") and os.geteuid() == 0
        apt = shutil.which("apt-get")
        if fix.endswith("apt install python3-zmq") and apt and is_root and exe.startswith("/usr/bin/python3") \
                and yes_no("GIMP's Python lacks pyzmq: install the Debian package python3-zmq?", self.a,
                           default=False):
            run([apt, "install", "-y", "-q", "python3-zmq"], self.c, what="apt-get install python3-zmq",
                env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
            self.m.add_system("apt package python3-zmq", "sudo apt remove python3-zmq")
            self.m.save()
        elif self.a.yes and not self._externally_managed(exe):
            run([exe, "-m", "pip", "install", "--user", "pyzmq"], self.c, what="pip install --user pyzmq")
            self.m.add_system(f"pyzmq for {exe} (pip --user)", f"{exe} -m pip uninstall pyzmq")
            self.m.save()
        else:
            self.c.error(f"GIMP's Python ({exe}) cannot import zmq: run `{fix}`, or re-run the installer "
                         "with --vendor-zmq to put pyzmq into the plug-in's folder")
            return
        r2 = doctor.probe_python(cmd)
        if r2.get("zmq") is True:
            self.c.ok(f"{exe} imports zmq {r2.get('zmq_version', '')}")
            self.changed += 1
        else:
            self.c.error(f"{exe} still cannot import zmq ({r2.get('zmq', r2.get('error'))}); run `{fix}`")

    @staticmethod
    def _externally_managed(exe: str) -> bool:
        info = py_json(exe, "import json, sysconfig; print(json.dumps({'s': sysconfig.get_path('stdlib')}))")
        return bool(info) and Path(info["s"], "EXTERNALLY-MANAGED").exists()

    def vendor_pyzmq(self, prof, cmd: list[str], r: dict) -> None:
        target = wheels.target_from_probe(r)
        vendor = prof.plugin_dir / doctor.VENDOR_DIR
        index = wheels.pip_index_url(str(self.vpy) if self.vpy.exists() else None)
        try:
            files = wheels.pypi_files("pyzmq", index=index)
        except (urllib.error.URLError, OSError, ValueError) as e:
            self.c.error(f"cannot ask the package index {index} for pyzmq wheels ({e}); GIMP's Python needs "
                         f"pyzmq: {doctor.zmq_fix('other')}")
            return
        name = wheels.choose_wheel([f["filename"] for f in files], target)
        if not name:
            self.c.error(f"no pyzmq wheel on {index} fits GIMP's Python ({target}); install pyzmq for it by hand")
            return
        info = next(f for f in files if f["filename"] == name)
        cache = self.prefix / "cache"
        self.m.mkdirs(cache)
        self.m.add_tree(cache)
        whl = cache / name
        try:
            fetch(info["url"], whl, info["sha256"], name=name, console=self.c)
        except DownloadError as e:
            self.c.error(str(e))
            return
        if vendor.exists():
            shutil.rmtree(vendor)
        tops = wheels.unpack_wheel(whl, vendor)
        (vendor / ".wheel").write_text(name + "\n", "utf-8")
        r2 = doctor.probe_python(cmd, vendor)
        if r2.get("zmq") is True:
            self.c.ok(f"pyzmq {name} unpacked into {vendor} ({', '.join(tops)}); GIMP's Python imports it")
            self.changed += 1
        else:
            self.c.error(f"pyzmq {name} unpacked into {vendor}, but GIMP's Python still cannot import it "
                         f"({r2.get('zmq', r2.get('error'))}); install pyzmq for GIMP's Python by hand")

    # ------------------------------------------------------------------ settings
    def serve_command(self) -> list[str]:
        cmd = [str(self.exe), "serve"]
        if self.models_dir_explicit:
            cmd += ["--models-dir", str(self.models_dir)]
        return cmd

    def installation_id(self) -> str:
        """What the backend of this installation reports as its installation (its venv)."""
        return os.path.realpath(self.venv)

    def keys_dir(self) -> Path:
        env = os.environ.get(settings_mod.ENV_KEYS)
        return Path(env).expanduser() if env else settings_mod.config_dir() / "keys"

    def step_settings(self) -> None:
        self.c.step("Settings and keys the plug-in reads")
        path = settings_mod.settings_path()
        current = None
        try:
            current = json.loads(path.read_text("utf-8"))
        except (OSError, ValueError):
            pass
        endpoint = self.a.endpoint or (current.get("endpoint") if isinstance(current, dict)
                                       and isinstance(current.get("endpoint"), str) and current.get("endpoint")
                                       else settings_mod.DEFAULT_ENDPOINT)
        want = {"endpoint": endpoint, "serve_command": self.serve_command(),
                "installation": self.installation_id()}
        if isinstance(current, dict) and {k: current.get(k) for k in want} == want:
            self.c.ok(f"{path} up to date")
        else:
            if path.exists() and not self.m.owns(path):
                self.m.backup(path)
            else:
                self.m.add_file(path)
            self.m.mkdirs(path.parent)
            self.m.save()
            settings_mod.save(endpoint, want["serve_command"], path, installation=want["installation"])
            self.c.ok(f"{path}: endpoint {endpoint}, starts `{' '.join(want['serve_command'])}`")
            self.changed += 1
        # the backend's own log folder appears at its first start, its OpenVINO cache (compiled
        # models, derived data) at the first conversion: removed at uninstall too
        self.m.add_runtime(paths.state_dir())
        self.m.add_runtime(paths.data_dir() / "ov-cache")
        self.m.save()
        self.step_keys()
        for prof in self.installed_profiles:
            self.plugin_settings(prof, want)

    def step_keys(self) -> None:
        """The CURVE key pairs of this user (client and backend), created once, 0700/0600."""
        kd = self.keys_dir()
        if (kd / "client.key_secret").is_file() and (kd / "server.key_secret").is_file():
            self.c.ok(f"keys in {kd} (kept)")
            return
        if not kd.exists():
            self.m.mkdirs(kd.parent)
            self.m.add_tree(kd)
            self.m.save()
        run([self.exe, "keys", "init"], self.c, capture=True, what="creating the CURVE keys",
            env=dict(os.environ, **{settings_mod.ENV_KEYS: str(kd)}))
        self.c.ok(f"keys created in {kd} (folder 0700, secrets 0600): only this user's clients may use "
                  "the backend")
        self.changed += 1

    def plugin_settings(self, prof, want: dict) -> None:
        """The plug-in's own settings file in the GIMP profile: a sandboxed GIMP (Flatpak, Snap)
        reads neither ~/.config/ai-enhance nor the keys there, so it gets a copy of this user's
        client keys in its plug-in folder; a native GIMP is pointed at the user's keys folder."""
        dest = prof.plugin_dir / settings_mod.PLUGIN_SETTINGS
        data = dict(want)
        sandboxed = prof.kind in ("flatpak", "snap")
        kd = self.keys_dir()
        if sandboxed:
            kcopy = prof.plugin_dir / PLUGIN_KEYS
            kcopy.mkdir(mode=0o700, exist_ok=True)
            for name, mode in (("client.key", 0o644), ("client.key_secret", 0o600), ("server.key", 0o644)):
                src, dst = kd / name, kcopy / name
                if src.is_file() and (not dst.is_file() or dst.read_bytes() != src.read_bytes()):
                    dst.write_bytes(src.read_bytes())
                if dst.exists() and os.name != "nt":
                    dst.chmod(mode)
            data["keys_dir"] = PLUGIN_KEYS
        else:
            data["keys_dir"] = str(kd)
        text = json.dumps(data, indent=2)
        if dest.is_file() and dest.read_text("utf-8") == text:
            return
        dest.write_text(text, "utf-8")
        self.c.ok(f"{dest}: the plug-in's settings" + (" and a copy of the client keys (sandboxed GIMP)"
                                                        if sandboxed else ""))
        self.changed += 1

    # ------------------------------------------------------------------ doctor, demo
    def doctor_cmd(self) -> list[str]:
        cmd = [str(self.exe), "doctor"]
        for p in self.installed_profiles:
            cmd += ["--gimp-profile", str(p.path)]
        if self.models_dir_explicit:
            cmd += ["--models-dir", str(self.models_dir)]
        if self.a.gimp_python:
            cmd += ["--gimp-python", self.a.gimp_python]
        return cmd

    def step_doctor(self) -> int:
        self.c.step("Checking every link (ai-enhance doctor)")
        p = subprocess.run(self.doctor_cmd(), stdin=subprocess.DEVNULL, text=True, errors="replace",
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        for line in p.stdout.splitlines():
            self.c.info(line)
        return p.returncode

    def demo_model(self) -> str | None:
        if self.a.demo_model:
            return self.a.demo_model
        present = {e.id for e in self._installed_entries()}
        return next((m for m in UPSCALE_PREFERENCE if m in present), None)

    def _installed_entries(self) -> list:
        try:
            entries = cat.load_catalog(BACKEND / "models" / "catalog.json")
        except cat.CatalogError:
            return []
        return [e for e in entries if (self.models_dir / e.file).is_file()]

    def step_demo(self) -> None:
        self.c.step("Demo: enhancing the built-in sample photo")
        model = self.demo_model()
        if not model:
            self.c.error("no upscaling model is installed, so there is nothing to demonstrate; install one "
                         "(e.g. --models realesrgan-x4plus)")
            return
        out_dir = self.prefix / "demo"
        self.m.mkdirs(out_dir)
        self.m.add_tree(out_dir)
        self.m.save()
        out = out_dir / f"sample-{model}.png"
        t0 = time.monotonic()
        p = subprocess.run([str(self.exe), "enhance", "-o", str(out), "--model", model, "--overwrite"],
                           stdin=subprocess.DEVNULL, text=True, errors="replace",
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        for line in p.stdout.splitlines()[-5:]:
            if "\r" not in line:
                self.c.info(line)
        if p.returncode != 0 or not out.is_file():
            self.c.error(f"the demo failed (exit status {p.returncode}); see the lines above")
            return
        self.c.ok(f"{out} ({human(out.stat().st_size)}, {time.monotonic() - t0:.0f} s with {model})")

    # ------------------------------------------------------------------ all
    def install(self) -> int:
        t0 = time.monotonic()
        choice = self.plan()
        if not yes_no("Install?", self.a):
            self.c.info("nothing changed")
            return 1
        self.m.mkdirs(self.prefix)
        self.m.save()
        self.step_venv()
        self.step_torch(choice)
        self.step_project()
        self.step_models()
        self.step_plugin()
        self.step_gimp_python()
        self.step_settings()
        self.m.save()
        rc_doc = 0
        if not self.a.no_doctor:
            rc_doc = self.step_doctor()
        if self.a.demo:
            self.step_demo()
        self.m.save()
        self.c._w("")
        took = f"{time.monotonic() - t0:.0f} s"
        if self.c.errors:
            self.c._w(f"Installed with {len(self.c.errors)} error(s) ({took}):")
            for e in self.c.errors:
                self.c._w(f"  - {e}")
            return 1
        verdict = "nothing changed" if self.changed == 0 else "installed"
        self.c._w(f"ai-enhance {verdict} in {took}: backend {self.exe}, models {self.models_dir}"
                  + (", plug-in in " + ", ".join(str(p.path) for p in self.installed_profiles)
                     if self.installed_profiles else ""))
        if rc_doc:
            self.c._w("doctor found problems (lines marked FAIL above, each with its fix)")
            if self.a.strict:
                return 3
        self.c._w(f"In GIMP: Filters > AI Enhance.  Uninstall: python3 {REPO / 'installer' / 'install.py'} "
                  f"--uninstall" + (f" --prefix {self.prefix}" if self.a.prefix else ""))
        return 0

    def stop_backend(self) -> None:
        """Stop a backend still running from the venv about to be deleted (found by a ping to
        the endpoint of the settings; only one whose installation is this venv), gracefully with
        `ai-enhance stop`, then by signal; wait until it is gone."""
        if not self.vpy.exists():
            return
        code = ("import json\nfrom ai_enhance_client.client import Client\n"
                "try:\n    c = Client()\n    caps = c.ping(timeout=2.0) or {}\n    c.close()\n"
                "except Exception:\n    caps = {}\n"
                "print(json.dumps({'pid': caps.get('pid'), 'installation': caps.get('installation')}))")
        info = py_json(self.vpy, code) or {}
        pid = info.get("pid")
        if not pid:
            return
        mine = info.get("installation")
        if mine and os.path.realpath(mine) != self.installation_id():
            return      # another installation's backend: not ours to stop
        if not mine:
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
                if str(self.venv) not in cmdline:
                    return
            except OSError:
                pass
        subprocess.run([str(self.exe), "stop", "--wait", "15"], stdin=subprocess.DEVNULL,
                       capture_output=True, text=True, timeout=60)
        import signal
        for sig, wait in ((None, 0.0), (signal.SIGTERM, 10.0), (getattr(signal, "SIGKILL", signal.SIGTERM), 5.0)):
            if sig is not None:
                try:
                    os.kill(int(pid), sig)
                except OSError:
                    pass
            deadline = time.monotonic() + wait
            while True:
                if not _pid_alive(int(pid)):
                    self.c.info(f"stopped the running backend (pid {pid})")
                    return
                if time.monotonic() >= deadline:
                    break
                time.sleep(0.1)
        self.c.warn(f"the backend (pid {pid}) is still running; stop it with `kill {pid}`")

    def uninstall(self) -> int:
        self.c.step(f"Uninstalling (manifest {self.m.path})")
        if not self.m.existed:
            self.c.info(f"nothing to uninstall: no manifest at {self.m.path}")
            return 0
        self.stop_backend()
        keep = set()
        if self.a.keep_models:
            keep = {f for f in self.m.data["files"] if Path(f).parent == self.models_dir}
        kept = uninstall(self.m, log=self.c.info, keep=keep)
        for s in self.m.data["system"]:
            self.c.info(f"left in place: {s['what']} (undo with `{s['undo']}` if nothing else needs it)")
        self.c.ok("uninstalled" + (f"; kept {len(kept)} path(s)" if kept else ""))
        return 0


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    try:     # a zombie (our own child) counts as gone
        st = Path(f"/proc/{pid}/stat").read_text()
        return st[st.rindex(")") + 2:].split()[0] not in ("Z", "X")
    except (OSError, ValueError, IndexError):
        return True


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="install.py",
        description="Install gimp-ai-enhance: the backend (its own venv with the right PyTorch build), "
                    "the models (verified downloads), the GIMP 3 plug-in, and check it all.")
    ap.add_argument("-y", "--yes", action="store_true", help="answer yes to every question")
    ap.add_argument("--prefix", help="where the venv and the install manifest go (default: "
                                     f"{paths.data_dir()})")
    ap.add_argument("--gimp-profile", action="append", metavar="DIR",
                    help="install the plug-in into this GIMP profile folder (repeatable; default: every "
                         "GIMP 3 profile found)")
    ap.add_argument("--models", metavar="ID,ID", help="models to install (default: "
                    + ", ".join(cat.DEFAULT_MODELS) + " and the face detector)")
    ap.add_argument("--models-from", metavar="DIR", help="copy the model files from this folder instead of "
                    "downloading them (files whose sha256 differs from the catalogue are accepted, as unverified)")
    ap.add_argument("--models-dir", metavar="DIR", help="where models go (default: AI_ENHANCE_MODELS_DIR or "
                    f"{paths.data_dir() / 'models'}); the backend is told")
    ap.add_argument("--no-models", action="store_true", help="install no model")
    ap.add_argument("--demo", action="store_true", help="finally enhance the built-in sample photo")
    ap.add_argument("--demo-model", metavar="ID", help="model for --demo (default: the best installed upscaler)")
    ap.add_argument("--endpoint", help=f"backend endpoint written to the settings (default {settings_mod.DEFAULT_ENDPOINT})")
    ap.add_argument("--python", metavar="PY", help="Python 3.11+ for the backend's venv (default: this one)")
    ap.add_argument("--share-packages-from", metavar="PY",
                    help="reuse the installed packages (torch, ...) of the environment of Python PY "
                         "through a .pth file instead of downloading them again (tests, developers)")
    ap.add_argument("--torch-build", choices=("auto", "cpu", "cuda", "rocm", "mps"), default="auto",
                    help="override the PyTorch build chosen from the hardware")
    ap.add_argument("--torch-index", metavar="URL", help="package index for torch ('default': pip's own); "
                    "default: PyTorch's index for the chosen build")
    ap.add_argument("--reinstall-torch", action="store_true", help="install torch even if one is there")
    ap.add_argument("--pip-arg", action="append", metavar="ARG",
                    help="extra argument for every pip install (repeatable; also AI_ENHANCE_PIP_ARGS)")
    ap.add_argument("--editable", action="store_true", help="install the backend editable (developers)")
    ap.add_argument("--gimp-python", metavar="CMD", help="the Python GIMP runs plug-ins with (default: found)")
    ap.add_argument("--vendor-zmq", action="store_true",
                    help="Linux: put pyzmq into the plug-in's folder instead of asking for python3-zmq")
    ap.add_argument("--no-doctor", action="store_true", help="skip the final `ai-enhance doctor`")
    ap.add_argument("--strict", action="store_true", help="exit 3 when doctor finds a problem")
    ap.add_argument("--uninstall", action="store_true", help="remove everything the installer added")
    ap.add_argument("--keep-models", action="store_true", help="with --uninstall: keep the model files")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    console = Console(total_steps=0 if args.uninstall else (9 + (1 if args.demo else 0) - (1 if args.no_doctor else 0)))
    inst = Installer(args, console)
    try:
        return inst.uninstall() if args.uninstall else inst.install()
    except InstallError as e:
        console.error(str(e))
        return 1
    except KeyboardInterrupt:
        console.error("interrupted; run the installer again to continue (downloads resume)")
        return 130
