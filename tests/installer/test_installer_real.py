"""A real install into a temporary home: venv created, this project pip-installed into it, models
copied from ../shared/weights (labelled unverified), plug-in copied executable into the GIMP
profile, settings written, doctor run, the demo enhanced; a second run changes nothing;
--uninstall leaves the home exactly as it was.  With a GIMP 3 root, GIMP then registers the
installed plug-in and doctor's registration check passes.

Creating a venv with torch costs minutes and gigabytes, so the installer is pointed at this test
run's own environment with --share-packages-from (its packages become visible in the new venv
through a .pth file; pip then finds torch & co. installed and installs only this project)."""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
from inst_helpers import REPO, SHARED_WEIGHTS, clean_env

pytestmark = [pytest.mark.slow, pytest.mark.real_weights]


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def snapshot(root: Path, ignore: tuple[str, ...] = ()) -> dict:
    """relative path -> (size, mtime_ns, mode) of everything under root (folders too)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d != "__pycache__"]
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            if any(rel == i or rel.startswith(i + "/") for i in ignore):
                continue
            st = p.lstat()
            out[rel] = (st.st_size if p.is_file() else 0, st.st_mtime_ns if p.is_file() else 0,
                        st.st_mode)
    return out


def _ping(endpoint: str, home: Path) -> dict | None:
    """A ping with the installed user's CURVE keys (the backend admits no other); None when the
    keys are gone (uninstalled: nothing must be created in the home again)."""
    from ai_enhance_client.client import Client
    kd = home / ".config" / "ai-enhance" / "keys"
    if not (kd / "client.key_secret").is_file():
        return None
    with Client(endpoint, keys_dir=kd) as c:
        return c.ping(timeout=3.0)


def stop_backend(endpoint: str, home: Path) -> None:
    """Stop the backend that doctor / the demo started for this test (its pid from a ping)."""
    caps = _ping(endpoint, home)
    if caps and caps.get("pid"):
        pid = int(caps["pid"])
        os.kill(pid, signal.SIGTERM)
        for _ in range(100):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)
        os.kill(pid, signal.SIGKILL)


def backend_pid_of(endpoint: str, home: Path) -> int | None:
    caps = _ping(endpoint, home)
    return int(caps["pid"]) if caps and caps.get("pid") else None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:   # a zombie (exited, not yet reaped by its parent) counts as gone
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][:1] != "Z"
    except (OSError, IndexError):
        return True


def png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", head[16:24])


def load_e2e():
    """tests/e2e/conftest.py's GIMP harness, loaded under its own module name (importing it as
    `conftest` would clash with tests/conftest.py)."""
    path = REPO / "tests" / "e2e" / "conftest.py"
    if not path.is_file():
        return None
    spec = importlib.util.spec_from_file_location("_aie_e2e_harness", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def shared_weights() -> Path:
    if not (SHARED_WEIGHTS / "RealESRGAN_x4plus.pth").is_file():
        pytest.skip(f"shared weights not available ({SHARED_WEIGHTS}): the real install copies them")
    return SHARED_WEIGHTS


@pytest.fixture(scope="module")
def gimp_root():
    """A GIMP 3 root the test can chroot into, or None (the GIMP part then skips)."""
    e2e = load_e2e()
    if e2e is None:
        return None
    path = os.environ.get("AI_ENHANCE_GIMP_ROOT") or e2e.DEFAULT_ROOT
    if e2e.root_problem(Path(path), "AI_ENHANCE_GIMP_ROOT"):
        return None
    return e2e._gimp_for("gimp3.0", "AI_ENHANCE_GIMP_ROOT", e2e.DEFAULT_ROOT)


def test_install_twice_then_uninstall(tmp_path, shared_weights, gimp_root):
    if gimp_root is not None:
        # the GIMP profile must lie inside the root for the chrooted GIMP to see it
        base = Path(str(gimp_root.root)) / "tmp"
        base.mkdir(exist_ok=True)
        import tempfile
        work = Path(tempfile.mkdtemp(prefix="aie-install-", dir=base))
    else:
        work = tmp_path
    try:
        _install_twice_then_uninstall(work, shared_weights, gimp_root)
    finally:
        if work != tmp_path:
            shutil.rmtree(work, ignore_errors=True)


def _install_twice_then_uninstall(work: Path, weights: Path, gimp) -> None:
    # the installer runs from a copy of the checkout, as from a fresh clone (and so that edits in
    # the working tree while the test runs cannot make the second run "change" something)
    src = work / "src"
    skip = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for name in ("installer", "backend", "plugin"):
        shutil.copytree(REPO / name, src / name, ignore=skip)
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (REPO / name).is_file():
            shutil.copy2(REPO / name, src / name)
    install = src / "installer" / "install.py"
    home = work / "home"
    profile = home / ".config" / "GIMP" / "3.0"
    profile.mkdir(parents=True)
    (profile / "my-notes.txt").write_text("a file of the user\n")
    before = snapshot(home)
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    extra = {"RUSTUP_HOME": work / "rustup"}   # pip's user agent runs `rustc --version`: rustup writes there
    if gimp is not None:
        # doctor and the installer ask GIMP's real Python (inside the root) whether it has gi and zmq
        extra["AI_ENHANCE_GIMP_PYTHON"] = json.dumps(["chroot", str(gimp.root), "python3"])
    env = clean_env(home, **extra)
    cmd = [sys.executable, str(install), "--yes", "--models-from", str(weights),
           "--models", "realesrgan-x4plus,realesr-animevideov3,gfpgan-v1.4",
           "--share-packages-from", sys.executable, "--endpoint", endpoint]

    # ---------------------------------------------------------------- first run (+ demo)
    t0 = time.monotonic()
    p = subprocess.run(cmd + ["--demo", "--demo-model", "realesr-animevideov3"], env=env,
                       capture_output=True, text=True, timeout=900)
    first_s = time.monotonic() - t0
    out = p.stdout + p.stderr
    try:
        assert p.returncode == 0, out
        prefix = home / ".local" / "share" / "ai-enhance"
        venv = prefix / "venv"
        exe = venv / "bin" / "ai-enhance"
        assert (venv / "bin" / "python").exists() and exe.is_file()
        assert "PyTorch: CPU-only build" in out or "PyTorch: NVIDIA" in out     # it says which
        # this project is installed INTO the venv (not only visible through the shared packages)
        r = subprocess.run([str(venv / "bin" / "python"), "-c",
                            "import ai_enhance, ai_enhance_client, sys; print(ai_enhance.__file__)"],
                           capture_output=True, text=True, env=env)
        assert r.returncode == 0 and r.stdout.strip().startswith(str(venv)), r.stdout + r.stderr

        plugin = profile / "plug-ins" / "ai-enhance" / "ai-enhance.py"
        assert plugin.is_file() and os.access(plugin, os.X_OK)
        assert (plugin.parent / "ai_enhance_client" / "protocol.py").read_bytes() == \
            (src / "plugin/ai-enhance/ai_enhance_client/protocol.py").read_bytes()

        settings = json.loads((home / ".config" / "ai-enhance" / "settings.json").read_text())
        assert settings == {"endpoint": endpoint, "serve_command": [str(exe), "serve"],
                            "installation": os.path.realpath(venv)}     # the backend it expects
        keys = home / ".config" / "ai-enhance" / "keys"           # CURVE keys: private to the user
        assert (keys / "client.key_secret").stat().st_mode & 0o777 == 0o600
        assert keys.stat().st_mode & 0o777 == 0o700
        psettings = json.loads((plugin.parent / "ai-enhance-settings.json").read_text())
        assert psettings["keys_dir"] == str(keys) and psettings["endpoint"] == endpoint

        models = prefix / "models"
        assert (models / "RealESRGAN_x4plus.pth").read_bytes() == (weights / "RealESRGAN_x4plus.pth").read_bytes()
        assert (models / "realesr-animevideov3.pth").is_file()
        # the face detector the folder has replaces the one it lacks; GFPGAN itself is absent
        assert (models / "detection_mobilenet0.25_Final.pth").is_file()
        assert "GFPGANv1.4.pth is not in" in out
        assert "realesrgan-x4plus: copied RealESRGAN_x4plus.pth (67.0 MB), unverified" in out

        # doctor ran: every link it can check here is fine
        assert "ai-enhance doctor" in out
        for must in ("  ok  plug-in [", "  ok  settings:", "  ok  backend: answers at " + endpoint,
                     "  ok  model realesrgan-x4plus: RealESRGAN_x4plus.pth loads",
                     "  ok  model retinaface-mobile0.25", "  ok  device:"):
            assert must in out, f"{must!r} missing from:\n{out}"
        if gimp is not None:
            assert "  ok  GIMP's Python [3.0" in out and "imports gi and zmq" in out

        # the demo enhanced the built-in sample (160x160 -> x4)
        demo = prefix / "demo" / "sample-realesr-animevideov3.png"
        assert demo.is_file() and png_size(demo) == (640, 640), out
        stop_backend(endpoint, home)

        manifest = json.loads((prefix / "install-manifest.json").read_text())
        assert str(venv) in manifest["trees"] and str(plugin.parent) in manifest["trees"]

        # ---------------------------------------------------------------- second run: no change
        state_dir = ".local/state"          # the backend's log (written at run time) may grow
        snap1 = snapshot(home, ignore=(state_dir,))
        t0 = time.monotonic()
        p2 = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        second_s = time.monotonic() - t0
        out2 = p2.stdout + p2.stderr
        assert p2.returncode == 0, out2
        assert "nothing changed" in out2, out2
        for must in ("ok exists", "already installed", "up to date", "unchanged (unverified)"):
            assert must in out2, f"{must!r} missing from:\n{out2}"
        assert "copied" not in out2 and "written" not in out2
        snap2 = snapshot(home, ignore=(state_dir,))
        assert snap2 == snap1, {k: (snap1.get(k), snap2.get(k)) for k in set(snap1) | set(snap2)
                                if snap1.get(k) != snap2.get(k)}
        assert second_s < first_s, (first_s, second_s)
        backend_pid = backend_pid_of(endpoint, home)      # doctor started it; --uninstall must stop it
        assert backend_pid

        # ---------------------------------------------------------------- GIMP registers it
        if gimp is not None:
            run = gimp.run("noop.py", install=False, profile=profile)
            reg = run.case("registered")
            assert reg == {"upscale": True, "faces": True, "ok": True, "seconds": reg["seconds"]}
            d = subprocess.run([str(exe), "doctor", "--gimp-profile", str(profile), "--no-backend",
                                "--skip", "models", "--skip", "device"],
                               env=env, capture_output=True, text=True, timeout=300)
            assert "  ok  registered [3.0" in d.stdout and "python-fu-ai-enhance-upscale" in d.stdout, d.stdout
            # GIMP wrote its own files into the profile: the uninstall must keep those
            before.update({k: v for k, v in snapshot(home).items()
                           if k not in snap1 and k.startswith(".config/GIMP/3.0/")
                           and not k.startswith(".config/GIMP/3.0/plug-ins/ai-enhance")})

        # ---------------------------------------------------------------- uninstall
        p3 = subprocess.run([sys.executable, str(install), "--uninstall"], env=env, capture_output=True,
                            text=True, timeout=300)
        assert p3.returncode == 0, p3.stdout + p3.stderr
        assert f"stopped the running backend (pid {backend_pid})" in p3.stdout, p3.stdout
        for _ in range(100):
            if not pid_alive(backend_pid):
                break
            time.sleep(0.1)
        assert not pid_alive(backend_pid)
    finally:
        stop_backend(endpoint, home)
    after = snapshot(home)
    assert set(after) == set(before), (sorted(set(after) - set(before)), sorted(set(before) - set(after)))
    assert (profile / "my-notes.txt").read_text() == "a file of the user\n"
    # a second uninstall finds nothing to do
    p4 = subprocess.run([sys.executable, str(install), "--uninstall"], env=env, capture_output=True,
                        text=True, timeout=60)
    assert p4.returncode == 0 and "nothing to uninstall" in p4.stdout
