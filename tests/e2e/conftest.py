"""End-to-end harness: a real GIMP 3 (console, headless) in a Debian root folder drives the real
plug-in, installed the way a user installs it, against a real backend on a loopback port.

The root comes from tests/e2e/ensure_gimp_root.sh (tests/run.sh builds it).  Every GIMP start runs
in a private mount namespace (`unshare --mount`) where /proc and /dev are bind-mounted into the
root: the mounts vanish with the namespace when GIMP exits or is killed, so nothing is left
mounted on the host and concurrent or nested runs cannot disturb each other.

Environment:
  AI_ENHANCE_GIMP_ROOT    the GIMP 3.0 root (default /var/cache/gimp-ai-enhance/gimp-root-trixie)
  AI_ENHANCE_GIMP32_ROOT  a GIMP 3.2 root (sid); its runs are skipped when unset
  AI_ENHANCE_E2E_KEEP=1   keep each run's folder (profile, drive script, logs) for debugging
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
PLUGIN_DIR = REPO / "plugin" / "ai-enhance"
DEFAULT_ROOT = "/var/cache/gimp-ai-enhance/gimp-root-trixie"
MARKER = ".ai-enhance-gimp-root"

#: (label, env var, default path)
GIMP_ROOTS = [("gimp3.0", "AI_ENHANCE_GIMP_ROOT", DEFAULT_ROOT),
              ("gimp3.2", "AI_ENHANCE_GIMP32_ROOT", None)]


class GimpRunError(AssertionError):
    pass


def root_problem(root: Path | None, env_var: str) -> str | None:
    """Why this root cannot run GIMP here (None when it can)."""
    if root is None:
        return f"no GIMP root: set {env_var} (build one with tests/e2e/ensure_gimp_root.sh)"
    if os.geteuid() != 0:
        return "the GIMP end-to-end tests chroot into a Debian root folder and need root"
    if not (root / MARKER).is_file():
        return (f"{root} is not a finished GIMP root (no {MARKER}); build it with "
                f"`bash tests/e2e/ensure_gimp_root.sh {root}`")
    if not any((root / "usr/bin").glob("gimp-console-3*")):
        return f"{root} has no gimp-console-3"
    if not shutil.which("unshare") or not shutil.which("chroot"):
        return "`unshare` and `chroot` (util-linux, coreutils) are needed"
    probe = subprocess.run(["unshare", "--mount", "--propagation", "private", "true"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        return f"cannot create a mount namespace here ({probe.stderr.strip()[:200]})"
    return None


def mounts_under(root: Path) -> list[str]:
    prefix = str(root.resolve()).rstrip("/") + "/"
    with open("/proc/self/mounts") as f:
        return [ln.split()[1] for ln in f if (ln.split()[1] + "/").startswith(prefix)]


@dataclass
class GimpRun:
    rc: int
    seconds: float
    results: dict
    stdout: str
    stderr: str
    workdir: Path
    timed_out: bool = False

    def case(self, name: str) -> dict:
        r = self.results.get(name)
        if r is None:
            raise GimpRunError(f"drive case {name!r} did not run (rc={self.rc}, timed_out="
                               f"{self.timed_out}); GIMP stderr tail:\n{self.stderr[-3000:]}")
        if not r.get("ok"):
            raise GimpRunError(f"drive case {name!r} raised {r.get('error')}\n{r.get('traceback')}"
                               f"\nGIMP stderr tail:\n{self.stderr[-2000:]}")
        return r


@dataclass
class Gimp:
    """One GIMP root.  `run()` installs the plug-in into a fresh profile and runs a drive script."""

    label: str
    root: Path
    version: str = ""
    extra_env: dict = field(default_factory=dict)
    _template: Path | None = field(default=None, repr=False)

    def mounts(self) -> list[str]:
        """What is mounted inside the root as the host sees it (should always be nothing)."""
        return mounts_under(self.root)

    def _inside(self, p: Path) -> str:
        return "/" + str(p.resolve().relative_to(self.root.resolve()))

    def install_plugin(self, profile: Path, source: Path = PLUGIN_DIR) -> Path:
        """What a user does: copy the plug-in folder into the profile's plug-ins, chmod +x."""
        dest = profile / "plug-ins" / source.name
        shutil.copytree(source, dest, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        main = dest / f"{source.name}.py"
        main.chmod(main.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        return dest

    def template_profile(self) -> Path:
        """A GIMP profile with the plug-in installed the way a user does it and GIMP's plug-in
        registry already written, cached in the root (keyed on the plug-in's files and GIMP), so
        that each run starts in ~3 s instead of ~15 s (a fresh profile, or a changed locale,
        makes GIMP query every plug-in again)."""
        if self._template is not None:
            return self._template
        h = hashlib.sha256(self.version.encode())
        for f in sorted(PLUGIN_DIR.rglob("*")):
            if f.is_file() and "__pycache__" not in f.parts:
                h.update(str(f.relative_to(PLUGIN_DIR)).encode() + b"\0" + f.read_bytes())
        cache = self.root / "var/cache/ai-enhance-e2e"
        cache.mkdir(parents=True, exist_ok=True)
        final = cache / f"profile-{h.hexdigest()[:16]}"
        with open(cache / "lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not (final / "pluginrc").is_file():
                build = Path(tempfile.mkdtemp(prefix="building-", dir=cache))
                try:
                    self.install_plugin(build)
                    run = self.run("noop.py", install=False, profile=build)
                    reg = run.case("registered")
                    if not (reg.get("upscale") and reg.get("faces")):
                        raise GimpRunError(f"GIMP did not register the plug-in: {reg}\n"
                                           f"{run.stderr[-3000:]}")
                    shutil.rmtree(final, ignore_errors=True)
                    os.rename(build, final)
                    for old in cache.glob("profile-*"):   # older plug-in versions, unused for a
                        # while: another checkout's run may still be copying a recent one
                        if old != final and time.time() - old.stat().st_mtime > 6 * 3600:
                            shutil.rmtree(old, ignore_errors=True)
                finally:
                    shutil.rmtree(build, ignore_errors=True)
        self._template = final
        return final

    def run(self, drive: str | Path, *, env: dict | None = None, params: dict | None = None,
            timeout: float = 180.0, install: bool = True, profile: Path | None = None,
            display: bool = False, files: dict | None = None, gui: bool = False,
            profile_files: dict | None = None) -> GimpRun:
        drive = Path(drive)
        if not drive.is_absolute():
            drive = HERE / "drives" / drive
        tmp_root = self.root / "tmp"
        tmp_root.mkdir(exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix="aie-e2e-", dir=tmp_root))
        keep = os.environ.get("AI_ENHANCE_E2E_KEEP") == "1"
        try:
            given_profile = profile
            profile = work / "profile"
            home = work / "home"
            (home / ".config").mkdir(parents=True)
            (work / "tmp").mkdir()
            _copy_keys(work / "keys")       # the plug-in authenticates with the session's keys
            if install:
                # a copy of the session's profile (plug-in installed, plug-ins already queried);
                # copy2 keeps the mtimes, so GIMP sees nothing new and skips its ~12 s re-query
                shutil.copytree(self.template_profile(), profile, symlinks=True)
            elif given_profile is None:
                profile.mkdir()
            if given_profile is not None:
                profile = given_profile
            for name, data in (profile_files or {}).items():     # e.g. a sessionrc for gui=True
                (profile / name).write_bytes(data)
            shutil.copy(HERE / "drive_lib.py", work / "drive_lib.py")
            shutil.copy(drive, work / "drive.py")
            out = work / "out.json"
            (work / "params.json").write_text(json.dumps(dict(params or {}, workdir=self._inside(work))))
            for name, data in (files or {}).items():
                (work / name).write_bytes(data)
            inside = self._inside(work)
            code = (f"import sys, runpy; sys.path.insert(0, {inside!r}); "
                    f"runpy.run_path({inside + '/drive.py'!r}, run_name='__main__')")
            genv = {
                # no LANG/LC_*: GIMP re-queries every plug-in when the locale changes
                "HOME": f"{inside}/home", "XDG_CONFIG_HOME": f"{inside}/home/.config",
                "PATH": "/usr/local/bin:/usr/bin:/bin", "TMPDIR": f"{inside}/tmp",
                "GIMP3_DIRECTORY": self._inside(profile),
                "AI_ENHANCE_KEYS": f"{inside}/keys",
                "AI_ENHANCE_CONFIG": f"{inside}/home/no-settings.json",
                "AI_ENHANCE_E2E_OUT": f"{inside}/out.json",
                "AI_ENHANCE_E2E_PARAMS": f"{inside}/params.json",
                "PYTHONDONTWRITEBYTECODE": "1",
            }
            genv.update(self.extra_env)
            # "{work}" in a value: this run's own folder (as GIMP sees it), e.g. for report files
            genv.update({k: str(v).replace("{work}", inside) for k, v in (env or {}).items()})
            # display=True: an X server (Xvfb) for plug-ins that open dialogs; GIMP stays console.
            # gui=True: GIMP with its windows (screenshots of the Layers dock), on Xvfb
            xvfb = ["xvfb-run", "-a", "-s", "-screen 0 1280x1024x24 -nolisten tcp"] if display or gui else []
            exe = ["gimp-3", "-d", "-f"] if gui else ["gimp-console-3", "-i", "-d", "-f"]
            gimp_cmd = ["env", "-i", *[f"{k}={v}" for k, v in genv.items()], *xvfb,
                        *exe, "--batch-interpreter", "python-fu-eval", "-b", code, "--quit"]
            script = ('set -e; r="$1"; shift; mount --bind /proc "$r/proc"; '
                      'mount --bind /dev "$r/dev"; exec chroot "$r" "$@"')
            cmd = ["unshare", "--mount", "--propagation", "private", "--",
                   "sh", "-c", script, "_", str(self.root), *gimp_cmd]
            t0 = time.monotonic()
            with open(work / "stdout.log", "wb") as so, open(work / "stderr.log", "wb") as se:
                proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=so, stderr=se,
                                        start_new_session=True)
                timed_out = False
                try:
                    rc = proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    timed_out = True
                    os.killpg(proc.pid, signal.SIGKILL)
                    rc = proc.wait(30)
            seconds = time.monotonic() - t0
            results = json.loads(out.read_text()) if out.is_file() else {}
            run = GimpRun(rc, seconds, results, (work / "stdout.log").read_text("utf-8", "replace"),
                          (work / "stderr.log").read_text("utf-8", "replace"), work, timed_out)
            if not results:
                raise GimpRunError(f"GIMP wrote no results (rc={rc}, timed_out={timed_out}, "
                                   f"{seconds:.1f} s); stderr:\n{run.stderr[-4000:]}\n"
                                   f"stdout:\n{run.stdout[-2000:]}")
            return run
        finally:
            if not keep:
                shutil.rmtree(work, ignore_errors=True)


def _copy_keys(dest: Path) -> None:
    """This session's CURVE client pair and backend public key (AI_ENHANCE_KEYS, set by
    tests/conftest.py), copied where the chrooted GIMP can read them, 0700/0600 as the plug-in
    expects."""
    from ai_enhance_client import keys as K

    src = K.ensure(K.keys_dir())
    dest.mkdir(mode=0o700)
    for name, mode in (("client.key", 0o644), ("client.key_secret", 0o600), ("server.key", 0o644)):
        (dest / name).write_bytes((src / name).read_bytes())
        (dest / name).chmod(mode)


def _gimp_for(label: str, env_var: str, default: str | None) -> Gimp:
    path = os.environ.get(env_var) or default
    root = Path(path) if path else None
    why = root_problem(root, env_var)
    if why:
        pytest.skip(why)
    version = ""
    for line in (root / MARKER).read_text().splitlines():
        if line.startswith("gimp="):
            version = line.split("=", 1)[1]
    return Gimp(label, root, version)


@pytest.fixture(scope="session", params=[g[0] for g in GIMP_ROOTS])
def gimp(request) -> Gimp:
    """A usable GIMP 3 root (parametrised over 3.0 and, when AI_ENHANCE_GIMP32_ROOT is set, 3.2)."""
    label, env_var, default = next(g for g in GIMP_ROOTS if g[0] == request.param)
    return _gimp_for(label, env_var, default)


@pytest.fixture(scope="session")
def e2e_backend(tiny_models_dir, tmp_path_factory):
    """A real `ai-enhance serve` on a free loopback port serving tests/conftest.py's tiny models
    (`nearest-x4` among them): `.endpoint`, `.models_dir`.  Session-scoped, unlike the shared
    `backend` fixture, so that all GIMP modules and both GIMP versions share one backend start."""
    b = start_serve(tiny_models_dir, tmp_path_factory.mktemp("e2e-serve"))
    yield b
    b.stop()


# --------------------------------------------------------------------------- a faces backend

DETECTOR_FILE = "detection_mobilenet0.25_Final.pth"


def _find_detector() -> Path | None:
    for d in (os.environ.get("AI_ENHANCE_MODELS_DIR"), REPO.parent / "shared" / "weights"):
        if d and (Path(d) / DETECTOR_FILE).is_file():
            return Path(d) / DETECTOR_FILE
    return None


def _tiny_restoreformer(path: Path) -> None:
    """A RestoreFormer of the real architecture with 32 channels everywhere (~0.5 M parameters,
    random weights, ~1 s per face on a CPU): spandrel reads its size from the state dict."""
    import torch
    from spandrel.architectures.RestoreFormer import RestoreFormer

    torch.manual_seed(0)
    net = RestoreFormer(n_embed=64, embed_dim=32, ch=32, out_ch=3, ch_mult=(1, 1, 1, 1, 1, 1),
                        num_res_blocks=1, attn_resolutions=(16,), dropout=0.0, in_channels=3,
                        resolution=512, z_channels=32, double_z=False, enable_mid=True, head_size=1)
    torch.save({"params_ema": net.state_dict()}, path)


@pytest.fixture(scope="session")
def faces_backend(tmp_path_factory):
    """A real `ai-enhance serve` whose models folder holds the real face detector (from
    AI_ENHANCE_MODELS_DIR; skips without it) and `tiny-restoreformer`, a random face restorer."""
    det = _find_detector()
    if det is None:
        pytest.skip(f"real face detector {DETECTOR_FILE} not found: set AI_ENHANCE_MODELS_DIR to a "
                    "folder holding it (CI: ../shared/weights)")
    d = tmp_path_factory.mktemp("e2e-face-models")
    try:    # a hard link or a copy: a symlink out of the models folder is refused (issue 14)
        os.link(det, d / DETECTOR_FILE)
    except OSError:
        shutil.copyfile(det, d / DETECTOR_FILE)
    _tiny_restoreformer(d / "tiny-restoreformer.pth")
    b = start_serve(d, tmp_path_factory.mktemp("e2e-faces-serve"))
    yield b
    b.stop()


@dataclass
class Serve:
    endpoint: str
    models_dir: Path
    log_path: Path
    proc: subprocess.Popen

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def start_serve(models_dir: Path, tmp: Path, wait: float = 120.0) -> Serve:
    """`python -m ai_enhance serve` (this Python's) on a free loopback port; waits for a pong."""
    import socket
    import sys

    from ai_enhance_client.client import Client

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        endpoint = f"tcp://127.0.0.1:{s.getsockname()[1]}"
    log = tmp / "serve.log"
    env = dict(os.environ, AI_ENHANCE_MODELS_DIR=str(models_dir), PYTHONUNBUFFERED="1")
    with open(tmp / "stderr.log", "ab") as err:
        proc = subprocess.Popen([sys.executable, "-m", "ai_enhance", "serve", "--endpoint", endpoint,
                                 "--models-dir", str(models_dir), "--log-file", str(log)],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                                env=env, start_new_session=True)
    b = Serve(endpoint, models_dir, log, proc)
    deadline = time.monotonic() + wait
    from testkit import wait_serving
    wait_serving(log, proc, deadline)      # no pings into a backend still importing torch
    with Client(endpoint) as c:
        while c.ping(timeout=0.5) is None:
            if proc.poll() is not None or time.monotonic() > deadline:
                b.stop()
                raise RuntimeError(f"ai-enhance serve did not start: "
                                   f"{(tmp / 'stderr.log').read_text()[-2000:]}")
    return b
