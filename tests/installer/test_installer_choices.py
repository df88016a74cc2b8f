"""Pure decisions of the installer: GIMP profile discovery (fake homes), GIMP and its Python,
torch build table, pyzmq wheel tags, catalogue selection, manifest bookkeeping."""
from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pytest
from inst_helpers import REPO

from ai_enhance import doctor as D
from aie_install import catalog as cat
from aie_install import main as M
from aie_install import torchsel as T
from aie_install import wheels as W
from aie_install.manifest import Manifest, uninstall


# --------------------------------------------------------------------------- profiles

def mk(*dirs: Path) -> None:
    for d in dirs:
        d.mkdir(parents=True, exist_ok=True)


def test_linux_profiles_native_flatpak_snap(tmp_path):
    home = tmp_path / "home"
    mk(home / ".config/GIMP/3.0", home / ".config/GIMP/3.2", home / ".config/GIMP/2.10",
       home / ".config/GIMP/3.10", home / ".var/app/org.gimp.GIMP/config/GIMP/3.0",
       home / "snap/gimp/current/.config/GIMP/3.2")
    (home / ".config/GIMP/3.4").write_text("a file, not a profile")
    found = D.find_gimp_profiles(home, "Linux", {})
    assert [(p.kind, p.series, p.path) for p in found] == [
        ("native", "3.0", home / ".config/GIMP/3.0"),
        ("native", "3.2", home / ".config/GIMP/3.2"),
        ("native", "3.10", home / ".config/GIMP/3.10"),          # numeric order, not text order
        ("flatpak", "3.0", home / ".var/app/org.gimp.GIMP/config/GIMP/3.0"),
        ("snap", "3.2", home / "snap/gimp/current/.config/GIMP/3.2"),
    ]
    assert found[0].plugin_file == home / ".config/GIMP/3.0/plug-ins/ai-enhance/ai-enhance.py"


def test_linux_profiles_follow_xdg_config_home(tmp_path):
    home, xdg = tmp_path / "home", tmp_path / "xdg"
    mk(home / ".config/GIMP/3.0", xdg / "GIMP/3.2")
    found = D.find_gimp_profiles(home, "Linux", {"XDG_CONFIG_HOME": str(xdg)})
    assert [p.path for p in found] == [xdg / "GIMP/3.2"]


def test_windows_and_macos_profiles(tmp_path):
    home = tmp_path / "home"
    appdata = tmp_path / "Roaming"
    mk(appdata / "GIMP/3.0", home / "Library/Application Support/GIMP/3.2", home / ".config/GIMP/3.0")
    win = D.find_gimp_profiles(home, "Windows", {"APPDATA": str(appdata)})
    assert [(p.kind, p.path) for p in win] == [("windows", appdata / "GIMP/3.0")]
    mac = D.find_gimp_profiles(home, "Darwin", {})
    assert [(p.kind, p.path) for p in mac] == [("macos", home / "Library/Application Support/GIMP/3.2")]
    # without APPDATA, Windows falls back to the usual place under the home folder
    mk(home / "AppData/Roaming/GIMP/3.2")
    assert [p.path for p in D.find_gimp_profiles(home, "Windows", {})] == [home / "AppData/Roaming/GIMP/3.2"]


def test_no_profile_and_default_profile(tmp_path):
    home = tmp_path / "empty"
    home.mkdir()
    assert D.find_gimp_profiles(home, "Linux", {}) == []
    assert D.default_profile(home, "Linux", {}, "3.2").path == home / ".config/GIMP/3.2"
    assert D.default_profile(home, "Linux", {}, "3.0", "flatpak").path == \
        home / ".var/app/org.gimp.GIMP/config/GIMP/3.0"
    assert D.custom_profile(str(tmp_path / "x" / "3.2")).series == "3.2"
    assert D.custom_profile(str(tmp_path / "myprofile")).series == ""


# --------------------------------------------------------------------------- GIMP and its Python

PYGIMP_INTERP = """python=/usr/bin/python3
python3=/usr/bin/python3.13
/usr/bin/python=/usr/bin/python3
/usr/bin/python3=/usr/bin/python3
:Python:E::py::python3:
"""


def test_interp_file_names_gimps_python(tmp_path):
    prefix = tmp_path / "usr"
    exe = prefix / "bin" / "gimp-console-3.0"
    interp = prefix / "lib/x86_64-linux-gnu/gimp/3.0/interpreters/pygimp.interp"
    mk(exe.parent, interp.parent)
    exe.write_text("#!/bin/sh\n")
    interp.write_text(PYGIMP_INTERP)
    assert D.parse_interp(PYGIMP_INTERP)["python3"] == "/usr/bin/python3.13"
    assert D.interp_files_near(str(exe)) == [interp]
    assert D.python_from_interp([interp]) == ["/usr/bin/python3.13"]

    def which(name):
        return str(exe) if name == "gimp-console-3.0" else ("/usr/bin/python3" if name == "python3" else None)

    def runner(cmd, timeout=0):
        assert cmd == [str(exe), "--version"]
        return 0, "GNU Image Manipulation Program version 3.0.4\n"

    found = D.find_gimp("Linux", {}, which=which, runner=runner)
    assert len(found) == 1
    g = found[0]
    assert (g.kind, g.version, g.series, g.python) == ("native", "3.0.4", "3.0", ["/usr/bin/python3.13"])


def test_gimp_2_is_not_gimp_3_and_flatpak_is_found(tmp_path):
    def which(name):
        return {"gimp": "/usr/bin/gimp", "flatpak": "/usr/bin/flatpak"}.get(name)

    def runner(cmd, timeout=0):
        if cmd[0] == "/usr/bin/gimp":
            return 0, "GNU Image Manipulation Program version 2.10.34\n"
        if cmd[:2] == ["flatpak", "info"]:
            return 0, "GNU Image Manipulation Program\n\n          ID: org.gimp.GIMP\n     Version: 3.0.4\n"
        return 1, ""

    found = D.find_gimp("Linux", {}, which=which, runner=runner)
    assert [(g.kind, g.version) for g in found] == [("flatpak", "3.0.4")]
    assert found[0].python == ["flatpak", "run", "--command=python3", "org.gimp.GIMP"]
    flat = D.Profile(Path("/h/.var/app/org.gimp.GIMP/config/GIMP/3.0"), "flatpak", "3.0")
    assert D.python_for_profile(flat, found) == found[0].python


def test_env_overrides_gimp_and_its_python():
    env = {D.ENV_GIMP: "none"}
    assert D.find_gimp("Linux", env, which=lambda n: "/usr/bin/" + n) == []
    env = {D.ENV_GIMP: "/opt/gimp/bin/gimp-3.2", D.ENV_GIMP_PYTHON: '["chroot", "/r", "python3"]'}
    found = D.find_gimp("Linux", env, which=lambda n: None,
                        runner=lambda cmd, timeout=0: (0, "GIMP version 3.2.6"))
    assert found[0].python == ["chroot", "/r", "python3"] and found[0].series == "3.2"


def test_probe_of_a_python_reports_gi_and_zmq(tmp_path):
    from inst_helpers import make_fake_python
    ok = D.probe_python([str(make_fake_python(tmp_path / "a"))])
    assert ok["gi"] is True and ok["zmq"] is True and ok["version"][0] == 3
    no = D.probe_python([str(make_fake_python(tmp_path / "b", zmq=False))])
    assert no["gi"] is True and "No module named 'zmq'" in no["zmq"]
    # the plug-in's vendor folder is on sys.path first
    vendor = tmp_path / "vendor"
    (vendor / "zmq").mkdir(parents=True)
    (vendor / "zmq" / "__init__.py").write_text("__version__ = 'vendored'\n")
    assert D.probe_python([str(make_fake_python(tmp_path / "b", zmq=False))], vendor)["zmq_version"] == "vendored"
    assert "error" in D.probe_python([str(tmp_path / "no-such-python")])


def test_zmq_fix_per_distribution():
    assert D.zmq_fix("Linux", "debian") == "sudo apt install python3-zmq"
    assert D.zmq_fix("Linux", "ubuntu debian") == "sudo apt install python3-zmq"
    assert D.zmq_fix("Linux", "fedora") == "sudo dnf install python3-zmq"
    assert D.zmq_fix("Linux", "arch") == "sudo pacman -S python-pyzmq"
    assert "installer" in D.zmq_fix("Windows")


def test_registered_procedures_from_pluginrc(tmp_path):
    rc = tmp_path / "pluginrc"
    assert D.registered_procedures(rc) is None
    rc.write_text('(plug-in-def "/p/plug-ins/ai-enhance/ai-enhance.py" 0\n'
                  '    (proc-def "python-fu-ai-enhance-upscale" 1\n'
                  '    (proc-def "python-fu-ai-enhance-faces" 1\n'
                  '(plug-in-def "/x/other.py" 0 (proc-def "python-fu-other" 1\n')
    assert D.registered_procedures(rc) == ["python-fu-ai-enhance-faces", "python-fu-ai-enhance-upscale"]


# --------------------------------------------------------------------------- torch build

NVSMI = """+-----------------------------------------------------------------------------------------+
| NVIDIA-SMI 550.54.14              Driver Version: 550.54.14      CUDA Version: 12.4     |
|-----------------------------------------+------------------------+----------------------+
| GPU  Name                 Persistence-M | Bus-Id          Disp.A | Volatile Uncorr. ECC |
|=========================================+========================+======================|
|   0  NVIDIA GeForce RTX 3060        Off |   00000000:01:00.0  On |                  N/A |
"""

ROCMINFO = """*******
Agent 1
*******
  Name:                    AMD Ryzen 9 7950X 16-Core Processor
  Device Type:             CPU
*******
Agent 2
*******
  Name:                    gfx1100
  Marketing Name:          Radeon RX 7900 XTX
  Device Type:             GPU
"""


# as printed on an H200 machine (driver 580), where the installer's probe chose cu130
NVSMI_H200 = """+-----------------------------------------------------------------------------------------+
| NVIDIA-SMI 580.159.04             Driver Version: 580.159.04     CUDA Version: 13.0     |
+-----------------------------------------+------------------------+----------------------+
| GPU  Name                 Persistence-M | Bus-Id          Disp.A | Volatile Uncorr. ECC |
| Fan  Temp   Perf          Pwr:Usage/Cap |           Memory-Usage | GPU-Util  Compute M. |
|                                         |                        |               MIG M. |
|=========================================+========================+======================|
|   0  NVIDIA H200                    On  |   00000000:00:06.0 Off |                    0 |
| N/A   36C    P0            124W /  700W |       0MiB / 143771MiB |      0%      Default |
"""


def test_parse_gpu_tools():
    assert T.parse_nvidia_smi(NVSMI) == ("NVIDIA GeForce RTX 3060", (12, 4))
    assert T.parse_nvidia_smi(NVSMI_H200) == ("NVIDIA H200", (13, 0))
    assert T.choose_torch(T.Facts("Linux", "x86_64", *T.parse_nvidia_smi(NVSMI_H200))).index_url == \
        T.TORCH_INDEX + "cu130"
    assert T.parse_rocminfo(ROCMINFO) == "gfx1100"
    assert T.parse_rocminfo("Agent 1\n  Name:   Intel CPU\n") is None


IDX = T.TORCH_INDEX


@pytest.mark.parametrize("facts, kind, index", [
    (T.Facts("Linux", "x86_64"), "cpu", IDX + "cpu"),
    (T.Facts("Linux", "aarch64"), "cpu", IDX + "cpu"),
    (T.Facts("Linux", "x86_64", "RTX 3060", (12, 4)), "cuda", IDX + "cu124"),
    (T.Facts("Linux", "x86_64", "RTX 5090", (13, 1)), "cuda", IDX + "cu130"),
    (T.Facts("Linux", "x86_64", "RTX 4090", (12, 9)), "cuda", IDX + "cu128"),
    (T.Facts("Linux", "x86_64", "", None), "cuda", IDX + "cu128"),          # nvidia-smi, no version
    (T.Facts("Linux", "x86_64", "GTX 680", (10, 2)), "cpu", IDX + "cpu"),   # driver too old
    (T.Facts("Linux", "x86_64", None, None, "gfx1100"), "rocm", IDX + T.ROCM_INDEX),
    (T.Facts("Linux", "x86_64", "RTX 3060", (12, 6), "gfx1100"), "cuda", IDX + "cu126"),  # NVIDIA wins
    (T.Facts("Linux", "aarch64", None, None, "gfx90a"), "cpu", IDX + "cpu"),
    (T.Facts("Windows", "AMD64"), "cpu", None),
    (T.Facts("Windows", "AMD64", "RTX 4070", (12, 8)), "cuda", IDX + "cu128"),
    (T.Facts("Windows", "AMD64", None, None, "gfx1100"), "cpu", None),
    (T.Facts("Darwin", "arm64"), "mps", None),
    (T.Facts("Darwin", "x86_64"), "cpu", None),
])
def test_torch_build_table(facts, kind, index):
    c = T.choose_torch(facts)
    assert (c.kind, c.index_url) == (kind, index)
    assert c.reason and c.describe()
    if facts.system == "Darwin" and facts.machine == "x86_64":
        assert c.requirements == ("torch>=2.1,<2.3", "torchvision>=0.16,<0.18", "numpy<2")  # last Intel-Mac build
    else:
        assert c.requirements == T.DEFAULT_TORCH_REQS


def test_torch_requirements_come_from_pyproject_and_admit_the_local_pair():
    reqs = M.torch_requirements()
    specs = dict(M.split_req(r) for r in reqs)
    assert set(specs) == {"torch", "torchvision"}
    # this machine's wheels: torch 2.14.1 / torchvision 0.29.1 must be allowed
    assert M.satisfies("2.14.1", specs["torch"]) and M.satisfies("2.14.1+cu130", specs["torch"])
    assert M.satisfies("0.29.1", specs["torchvision"])
    assert not M.satisfies("2.0.1", specs["torch"]) and not M.satisfies("2.15.0", specs["torch"])


def test_probe_facts_uses_the_tools():
    outs = {("/bin/nvidia-smi",): NVSMI,
            ("/bin/nvidia-smi", "--query-gpu=name", "--format=csv,noheader"): "NVIDIA GeForce RTX 3060\n"}
    f = T.probe_facts("Linux", "x86_64", which=lambda n: "/bin/" + n if n == "nvidia-smi" else None,
                      out=lambda cmd: outs.get(tuple(cmd)))
    assert f == T.Facts("Linux", "x86_64", "NVIDIA GeForce RTX 3060", (12, 4), None)
    f = T.probe_facts("Linux", "x86_64", which=lambda n: None, out=lambda cmd: None)
    assert T.choose_torch(f).kind == "cpu"


# --------------------------------------------------------------------------- pyzmq wheel tags

PYZMQ = [f"pyzmq-27.3.0-{t}.whl" for t in (
    "cp310-cp310-macosx_10_15_universal2", "cp310-cp310-manylinux_2_26_x86_64.manylinux_2_28_x86_64",
    "cp310-cp310-win_amd64", "cp311-cp311-macosx_10_15_universal2",
    "cp311-cp311-manylinux_2_26_x86_64.manylinux_2_28_x86_64", "cp311-cp311-musllinux_1_2_x86_64",
    "cp311-cp311-win32", "cp311-cp311-win_amd64", "cp311-cp311-win_arm64",
    "cp312-abi3-macosx_10_15_universal2", "cp312-abi3-manylinux_2_26_aarch64.manylinux_2_28_aarch64",
    "cp312-abi3-manylinux_2_26_x86_64.manylinux_2_28_x86_64", "cp312-abi3-musllinux_1_2_x86_64",
    "cp312-abi3-win32", "cp312-abi3-win_amd64", "cp312-abi3-win_arm64",
    "cp314-cp314t-macosx_10_15_universal2", "cp314-cp314t-manylinux_2_26_x86_64.manylinux_2_28_x86_64",
    "cp314-cp314t-win_amd64", "cp39-cp39-manylinux2014_x86_64.manylinux_2_17_x86_64",
    "pp310-pypy310_pp73-manylinux_2_26_x86_64.manylinux_2_28_x86_64", "pp310-pypy310_pp73-win_amd64",
)] + ["pyzmq-27.3.0.tar.gz"]


@pytest.mark.parametrize("probe, expected", [
    # GIMP 3.0 for Windows bundles Python 3.12 (MSVC-style platform)
    ({"version": [3, 12], "platform": "win-amd64"}, "cp312-abi3-win_amd64"),
    ({"version": [3, 11], "platform": "win-amd64"}, "cp311-cp311-win_amd64"),
    ({"version": [3, 11], "platform": "win32"}, "cp311-cp311-win32"),
    ({"version": [3, 13], "platform": "win-arm64"}, "cp312-abi3-win_arm64"),
    # an MSYS2 Python only loads plain '.pyd' names: the abi3 wheel
    ({"version": [3, 12], "platform": "mingw_x86_64_ucrt"}, "cp312-abi3-win_amd64"),
    ({"version": [3, 11], "platform": "mingw_x86_64_ucrt"}, None),
    ({"version": [3, 12], "platform": "macosx-11.0-arm64"}, "cp312-abi3-macosx_10_15_universal2"),
    ({"version": [3, 11], "platform": "macosx-10.13-x86_64"}, None),          # wheel needs 10.15
    ({"version": [3, 11], "platform": "macosx-10.13-x86_64", "mac_ver": "14.2"},
     "cp311-cp311-macosx_10_15_universal2"),                                    # the running macOS counts
    ({"version": [3, 13], "platform": "linux-x86_64", "libc": ["glibc", "2.36"]},
     "cp312-abi3-manylinux_2_26_x86_64.manylinux_2_28_x86_64"),
    ({"version": [3, 13], "platform": "linux-x86_64", "libc": ["glibc", "2.17"]}, None),
    ({"version": [3, 9], "platform": "linux-x86_64", "libc": ["glibc", "2.17"]},
     "cp39-cp39-manylinux2014_x86_64.manylinux_2_17_x86_64"),
    ({"version": [3, 12], "platform": "linux-aarch64", "libc": ["glibc", "2.39"]},
     "cp312-abi3-manylinux_2_26_aarch64.manylinux_2_28_aarch64"),
    ({"version": [3, 12], "platform": "linux-x86_64", "libc": ["", ""]}, "cp312-abi3-musllinux_1_2_x86_64"),
    ({"version": [3, 14], "platform": "linux-x86_64", "libc": ["glibc", "2.41"], "free_threaded": True},
     "cp314-cp314t-manylinux_2_26_x86_64.manylinux_2_28_x86_64"),
    ({"version": [3, 10], "platform": "win-amd64", "impl": "pypy"}, "pp310-pypy310_pp73-win_amd64"),
])
def test_pyzmq_wheel_for_gimps_python(probe, expected):
    t = W.target_from_probe(probe)
    got = W.choose_wheel(PYZMQ, t)
    assert got == (f"pyzmq-27.3.0-{expected}.whl" if expected else None)


def test_unpack_wheel_and_refuse_unsafe_paths(tmp_path):
    good = tmp_path / "good-1.0-py3-none-any.whl"
    with zipfile.ZipFile(good, "w") as z:
        z.writestr("zmq/__init__.py", "x = 1\n")
        z.writestr("pyzmq-1.0.dist-info/METADATA", "Name: pyzmq\n")
    assert W.unpack_wheel(good, tmp_path / "v") == ["pyzmq-1.0.dist-info", "zmq"]
    assert (tmp_path / "v" / "zmq" / "__init__.py").read_text() == "x = 1\n"
    bad = tmp_path / "bad-1.0-py3-none-any.whl"
    with zipfile.ZipFile(bad, "w") as z:
        z.writestr("../evil.py", "boom")
    with pytest.raises(ValueError, match="unsafe path"):
        W.unpack_wheel(bad, tmp_path / "w")
    assert not (tmp_path / "evil.py").exists()


# --------------------------------------------------------------------------- catalogue

FIXTURE_CATALOG = {"format": 1, "models": [
    {"id": "realesrgan-x4plus", "file": "RealESRGAN_x4plus.pth", "url": "http://x/a", "sha256": "AB" * 32,
     "family": "realesrgan", "role": None},
    {"id": "realesr-general-x4v3", "file": "g.pth", "url": "http://x/g", "sha256": None, "family": "realesrgan",
     "companions": ["realesr-general-wdn-x4v3"]},
    {"id": "realesr-general-wdn-x4v3", "file": "wdn.pth", "url": "http://x/w", "sha256": "cd" * 32,
     "family": "realesrgan", "role": "companion"},
    {"id": "gfpgan-v1.4", "file": "GFPGANv1.4.pth", "url": "http://x/f", "sha256": "ef" * 32, "family": "gfpgan",
     "ops": ["faces"]},
    {"id": "retinaface-resnet50", "file": "det.pth", "url": "http://x/d", "sha256": "01" * 32,
     "family": "facexlib", "role": "face_detector"},
    {"id": "broken", "url": "http://x/nofile"},
    {"id": "evil", "file": "../escape.pth"},
]}


def test_catalog_defaults_pull_companions_and_the_detector(tmp_path):
    p = tmp_path / "catalog.json"
    p.write_text(json.dumps(FIXTURE_CATALOG))
    entries = cat.load_catalog(p)
    assert [e.id for e in entries] == ["realesrgan-x4plus", "realesr-general-x4v3", "realesr-general-wdn-x4v3",
                                       "gfpgan-v1.4", "retinaface-resnet50"]     # no file / unsafe file dropped
    assert entries[0].sha256 == "ab" * 32 and entries[1].sha256 is None
    chosen, unknown = cat.select(entries, None)
    assert [e.id for e in chosen] == ["realesrgan-x4plus", "realesr-general-x4v3", "realesr-general-wdn-x4v3",
                                      "gfpgan-v1.4", "retinaface-resnet50"]
    assert unknown == []
    chosen, unknown = cat.select(entries, ["gfpgan-v1.4", "nope"])
    assert [e.id for e in chosen] == ["gfpgan-v1.4", "retinaface-resnet50"] and unknown == ["nope"]
    # a bare list is accepted too
    p.write_text(json.dumps(FIXTURE_CATALOG["models"][:1]))
    assert [e.id for e in cat.load_catalog(p)] == ["realesrgan-x4plus"]
    p.write_text("{not json")
    with pytest.raises(cat.CatalogError, match="not valid JSON"):
        cat.load_catalog(p)


def test_the_real_catalog_has_every_default_model_pinned():
    entries = cat.load_catalog(REPO / "backend" / "ai_enhance" / "models" / "catalog.json")
    chosen, unknown = cat.select(entries, None)
    assert unknown == []
    ids = [e.id for e in chosen]
    assert ids[:3] == ["realesrgan-x4plus", "realesr-general-x4v3", "realesr-general-wdn-x4v3"]
    assert "gfpgan-v1.4" in ids and any(e.is_face_detector for e in chosen)
    for e in chosen:   # the default install downloads these: each must be pinned to an official URL
        assert e.url and e.url.startswith("https://github.com/"), e.id
        assert e.sha256 and len(e.sha256) == 64, e.id


# --------------------------------------------------------------------------- manifest

def test_manifest_uninstall_removes_exactly_what_was_added(tmp_path):
    home = tmp_path / "home"
    (home / ".config").mkdir(parents=True)
    (home / ".config" / "mine.txt").write_text("user file")
    settings = home / ".config" / "ai-enhance" / "settings.json"
    m = Manifest(home / ".local/share/ai-enhance")
    m.mkdirs(m.prefix)
    m.mkdirs(settings.parent)
    settings.write_text("{}")
    m.add_file(settings)
    venv = m.prefix / "venv"
    (venv / "bin").mkdir(parents=True)
    m.add_tree(venv)
    pre = home / "pre.json"
    pre.write_text("original")
    m.backup(pre)
    pre.write_text("replaced")
    m.add_runtime(home / ".local/state/ai-enhance")
    m.save()
    # the backend writes its log later; a user drops a file into a folder we created
    (home / ".local/state/ai-enhance").mkdir(parents=True)
    (home / ".local/state/ai-enhance/backend.log").write_text("log")
    (m.prefix / "user-note.txt").write_text("keep me")

    m2 = Manifest.load(m.prefix)
    assert m2.existed and m2.owns(venv / "bin" / "python") and not m2.owns(home / ".config")
    log = []
    kept = uninstall(m2, log=log.append)
    assert pre.read_text() == "original"
    assert not settings.exists() and not settings.parent.exists() and not venv.exists()
    assert not (home / ".local/state").exists()
    assert (m.prefix / "user-note.txt").read_text() == "keep me"
    assert str(m.prefix) in kept and any("kept" in line for line in log)
    assert (home / ".config" / "mine.txt").read_text() == "user file"


def test_fingerprint_changes_with_the_backend_sources():
    a = M.project_fingerprint()
    assert a == M.project_fingerprint() and len(a) == 64
    srcs = M.plugin_sources()
    assert Path("ai-enhance.py") in srcs and Path("ai_enhance_client/protocol.py") in srcs
    assert not any("__pycache__" in p.parts or p.parts[0] == "vendor" for p in srcs)


def test_console_bar_is_line_based_off_a_terminal():
    from aie_install.ui import Console
    c = Console(stream=io.StringIO())
    b = c.bar("file.pth", 1000)
    for n in range(0, 1001, 50):
        b.update(n)
    lines = c.stream.getvalue().splitlines()
    assert len(lines) == 11 and lines[-1].endswith("100% of 1.0 KB")


# --------------------------------------------------------------------------- torch step

def _installer(tmp_path, *argv):
    args = M.build_parser().parse_args(["--prefix", str(tmp_path / "prefix"), *argv])
    return M.Installer(args, M.Console(stream=io.StringIO()))


@pytest.mark.parametrize("argv, reachable, expect_index, warned", [
    ((), True, T.TORCH_INDEX + "cpu", False),
    ((), False, None, True),                                   # offline index: pip's default, said so
    (("--torch-index", "default"), True, None, False),
    (("--torch-index", "https://mirror.example/whl"), False, "https://mirror.example/whl", False),
])
def test_torch_step_index_and_fallback(tmp_path, monkeypatch, argv, reachable, expect_index, warned):
    inst = _installer(tmp_path, *argv)
    calls = []
    answers = iter([None, {"torch": "2.14.1+cpu", "tv": "0.29.1", "cuda": None, "hip": None}])
    monkeypatch.setattr(M, "py_json", lambda py, code: next(answers))
    monkeypatch.setattr(M, "reachable", lambda url, timeout=10.0: reachable)
    monkeypatch.setattr(inst, "pip", lambda *a, index=None, what="": calls.append((a, index)))
    choice = T.choose_torch(T.Facts("Linux", "x86_64"), M.torch_requirements())
    inst.step_torch(choice)
    assert calls == [(choice.requirements, expect_index)]
    text = inst.c.stream.getvalue()
    assert ("unreachable" in text) == warned
    assert "torch 2.14.1+cpu (CPU build), torchvision 0.29.1" in text


def test_torch_step_keeps_a_fitting_torch_and_flags_a_cpu_build_on_a_gpu_machine(tmp_path, monkeypatch):
    inst = _installer(tmp_path)
    monkeypatch.setattr(M, "py_json", lambda py, code: {"torch": "2.14.1", "tv": "0.29.1", "cuda": None, "hip": None})
    monkeypatch.setattr(inst, "pip", lambda *a, **k: pytest.fail("must not reinstall"))
    inst.step_torch(T.choose_torch(T.Facts("Linux", "x86_64", "RTX 3060", (12, 4)), M.torch_requirements()))
    text = inst.c.stream.getvalue()
    assert "already installed" in text and "--reinstall-torch" in text
    # an out-of-range torch is replaced
    inst2 = _installer(tmp_path)
    answers = iter([{"torch": "2.0.1", "tv": "0.15.2", "cuda": None, "hip": None},
                    {"torch": "2.14.1", "tv": "0.29.1", "cuda": None, "hip": None}])
    monkeypatch.setattr(M, "py_json", lambda py, code: next(answers))
    monkeypatch.setattr(M, "reachable", lambda url, timeout=10.0: True)
    calls = []
    monkeypatch.setattr(inst2, "pip", lambda *a, index=None, what="": calls.append(a))
    inst2.step_torch(T.choose_torch(T.Facts("Linux", "x86_64"), M.torch_requirements()))
    assert len(calls) == 1
