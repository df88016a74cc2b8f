"""`ai-enhance doctor` on working and broken setups: each problem is named with its fix and the
exit status is non-zero.  Runs the real CLI in a subprocess with a fake home."""
from __future__ import annotations

import json
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from inst_helpers import REPO, SHARED_WEIGHTS, clean_env, make_fake_python

PLUGIN = REPO / "plugin" / "ai-enhance"


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def setup(tmp_path):
    """A fake home with one GIMP 3.0 profile holding the plug-in (executable), a settings file, an
    empty models folder, and a GIMP Python that has gi and zmq."""
    home = tmp_path / "home"
    profile = home / ".config" / "GIMP" / "3.0"
    dest = profile / "plug-ins" / "ai-enhance"
    shutil.copytree(PLUGIN, dest, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    main = dest / "ai-enhance.py"
    main.chmod(main.stat().st_mode | stat.S_IXUSR)
    models = tmp_path / "models"
    models.mkdir()
    settings = home / ".config" / "ai-enhance" / "settings.json"
    settings.parent.mkdir(parents=True)
    settings.write_text(json.dumps({"endpoint": f"tcp://127.0.0.1:{free_port()}",
                                    "serve_command": [sys.executable, "-m", "ai_enhance", "serve"]}))
    py = make_fake_python(tmp_path / "gimp-python")
    return {"home": home, "profile": profile, "plugin": main, "models": models, "settings": settings,
            "python": py, "tmp": tmp_path}


FAST = ("--skip", "models", "--skip", "device")    # no torch import: these tests look elsewhere


def doctor(s, *args: str, env: dict | None = None) -> tuple[int, str, dict]:
    e = clean_env(s["home"], AI_ENHANCE_MODELS_DIR=s["models"], AI_ENHANCE_GIMP="none",
                  AI_ENHANCE_GIMP_PYTHON=s["python"])
    e.update(env or {})
    p = subprocess.run([sys.executable, "-m", "ai_enhance", "doctor", "--json", *args], env=e,
                       capture_output=True, text=True, timeout=180)
    try:
        data = json.loads(p.stdout)
    except ValueError:
        raise AssertionError(f"doctor printed no JSON (rc {p.returncode}):\n{p.stdout}\n{p.stderr}")
    by = {}
    for c in data["checks"]:
        by.setdefault(c["name"], c)
    return p.returncode, p.stdout, by


def check(by: dict, prefix: str) -> dict:
    hits = [c for n, c in by.items() if n.startswith(prefix)]
    assert hits, f"no check named {prefix!r}: {list(by)}"
    return hits[0]


def test_text_output_is_one_line_per_check(setup):
    e = clean_env(setup["home"], AI_ENHANCE_MODELS_DIR=setup["models"], AI_ENHANCE_GIMP="none",
                  AI_ENHANCE_GIMP_PYTHON=setup["python"])
    p = subprocess.run([sys.executable, "-m", "ai_enhance", "doctor", "--no-backend"], env=e,
                       capture_output=True, text=True, timeout=180)
    lines = p.stdout.strip().splitlines()
    assert p.returncode == 1                      # GIMP itself is missing here (AI_ENHANCE_GIMP=none)
    assert lines[0].startswith("FAIL  GIMP: no GIMP 3 found") and "fix: install GIMP 3" in lines[0]
    assert any(ln.startswith("  ok  plug-in [") and "executable" in ln for ln in lines)
    assert any(ln.startswith("  ok  GIMP's Python [3.0") and "imports gi and zmq" in ln for ln in lines)
    assert any(ln.startswith("skip  registered [3.0") and "not run with this profile" in ln for ln in lines)
    assert any(ln.startswith("  ok  device: ") for ln in lines)
    assert lines[-1] == f"doctor: {sum(ln.startswith('FAIL') for ln in lines)} problem(s) found"


def test_plugin_not_executable(setup):
    setup["plugin"].chmod(0o644)
    rc, out, by = doctor(setup, "--no-backend", *FAST)
    c = check(by, "plug-in [")
    assert rc == 1 and c["status"] == "fail"
    assert "not executable" in c["detail"] and c["fix"] == f"chmod +x '{setup['plugin']}'"


def test_plugin_missing_from_a_profile(setup):
    other = setup["home"] / ".config" / "GIMP" / "3.2"
    other.mkdir()
    rc, out, by = doctor(setup, "--no-backend", *FAST)
    fails = [c for c in json.loads(out)["checks"] if c["name"] == f"plug-in [{other}]"]
    assert rc == 1 and fails and fails[0]["status"] == "fail"
    assert "is missing" in fails[0]["detail"] and "installer/install.py" in fails[0]["fix"]


def test_zmq_missing_for_gimps_python(setup):
    bad = make_fake_python(setup["tmp"] / "nozmq", zmq=False)
    rc, out, by = doctor(setup, "--no-backend", *FAST, "--gimp-python", str(bad))
    c = check(by, "GIMP's Python")
    assert rc == 1 and c["status"] == "fail"
    assert "imports gi but not zmq" in c["detail"] and "No module named 'zmq'" in c["detail"]
    assert c["fix"].startswith("sudo ") and "zmq" in c["fix"]     # the distribution's package


def test_gi_missing_for_gimps_python(setup):
    bad = make_fake_python(setup["tmp"] / "nogi", gi=False)
    rc, out, by = doctor(setup, "--no-backend", *FAST, "--gimp-python", str(bad))
    c = check(by, "GIMP's Python")
    assert rc == 1 and c["status"] == "fail" and "cannot import gi" in c["detail"]
    assert "python3-gi" in c["fix"]


def test_pluginrc_registered_or_not(setup):
    rc_file = setup["profile"] / "pluginrc"
    rc_file.write_text('(plug-in-def "/x/other.py" 0 (proc-def "python-fu-other" 1))\n')
    rc, out, by = doctor(setup, "--no-backend", *FAST)
    c = check(by, "registered")
    assert c["status"] == "fail" and "did not register" in c["detail"] and "terminal" in c["fix"]
    rc_file.write_text(f'(plug-in-def "{setup["plugin"]}" 0\n (proc-def "python-fu-ai-enhance-upscale" 1)\n'
                       ' (proc-def "python-fu-ai-enhance-faces" 1))\n')
    rc, out, by = doctor(setup, "--no-backend", *FAST)
    c = check(by, "registered")
    assert c["status"] == "ok" and "python-fu-ai-enhance-upscale" in c["detail"]


def test_backend_that_cannot_start_is_named_with_its_fix(setup):
    setup["settings"].write_text(json.dumps({
        "endpoint": f"tcp://127.0.0.1:{free_port()}",
        "serve_command": [sys.executable, "-c", "import sys; print('boom: broken backend'); sys.exit(3)"]}))
    rc, out, by = doctor(setup, *FAST, "--backend-wait", "20")
    c = by["backend"]
    assert rc == 1 and c["status"] == "fail"
    assert "exited at start" in c["detail"] and "in a terminal to see why" in c["detail"]


def test_backend_unreachable_without_a_serve_command(setup):
    missing = setup["tmp"] / "gone" / "ai-enhance"
    setup["settings"].write_text(json.dumps({"endpoint": f"tcp://127.0.0.1:{free_port()}",
                                             "serve_command": [str(missing), "serve"]}))
    rc, out, by = doctor(setup, *FAST, "--backend-wait", "5")
    assert rc == 1
    assert by["settings"]["status"] == "fail" and "does not exist" in by["settings"]["detail"]
    assert by["backend"]["status"] == "fail" and "cannot start the backend" in by["backend"]["detail"]


def test_no_models_installed(setup):
    pytest.importorskip("ai_enhance.models", reason="the model store (helper 'engine') is not written yet")
    rc, out, by = doctor(setup, "--no-backend", "--skip", "device")
    c = by["models"]
    assert rc == 1 and c["status"] == "fail" and "no model installed" in c["detail"]


def test_corrupt_model_file_is_named(setup):
    pytest.importorskip("ai_enhance.models", reason="the model store (helper 'engine') is not written yet")
    torch = pytest.importorskip("torch")
    from spandrel.architectures.Compact import Compact

    torch.manual_seed(0)
    net = Compact(num_in_ch=3, num_out_ch=3, num_feat=8, num_conv=2, upscale=4)
    torch.save({"params": net.state_dict()}, setup["models"] / "realesr-animevideov3.pth")
    (setup["models"] / "RealESRGAN_x4plus.pth").write_bytes(b"PK\x03\x04 this is not a model" * 50)
    det = SHARED_WEIGHTS / "detection_mobilenet0.25_Final.pth"
    if det.is_file():   # a support network: built the way the face pipeline builds it
        shutil.copy(det, setup["models"] / det.name)
    rc, out, by = doctor(setup, "--no-backend", "--skip", "device")
    bad = by["model realesrgan-x4plus"]
    good = by["model realesr-animevideov3"]
    assert rc == 1
    assert bad["status"] == "fail" and "does not load" in bad["detail"] and bad["fix"]
    assert good["status"] == "ok" and "loads" in good["detail"] and "differs" in good["detail"]
    assert "device" not in by      # skipped on request
    if det.is_file():
        assert by["model retinaface-mobile0.25"]["status"] == "ok"
