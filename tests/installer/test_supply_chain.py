"""Supply chain (issue 14): the repository names no package registry or mirror host of its own;
the Debian mirror comes from the machine's apt sources, pyzmq wheels from the index the user's
pip is configured with."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from inst_helpers import REPO

sys.path.insert(0, str(REPO / "installer"))
from aie_install import torchsel, wheels  # noqa: E402

SCRIPT = REPO / "tests" / "e2e" / "ensure_gimp_root.sh"

#: Hosts that may appear, and why (see docs/security.md, "Supply chain"):
ALLOWED_HOSTS = {
    # PyTorch's own wheel index: the only source of its CUDA/ROCm builds for a given driver; no
    # registry a user's pip already uses serves them (--torch-index overrides it)
    "download.pytorch.org",
    # model weights' release pages (pinned URL + sha256), not package registries
    "github.com",
    # documentation links
    "www.python.org", "www.gimp.org",
}
REGISTRY_WORDS = re.compile(r"pypi|pythonhosted|debian\.org|ubuntu\.com|npmjs|registry|mirror|conda|"
                            r"anaconda|download\.pytorch|packages\.", re.I)


def repo_files():
    out = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    for rel in out.split():
        p = REPO / rel
        if p.is_file() and p.suffix not in (".png", ".jpg", ".pth"):
            yield rel, p.read_text("utf-8", "replace")


def test_no_registry_or_mirror_host_is_named():
    found = {}
    for rel, text in repo_files():
        if rel == "tests/installer/test_supply_chain.py":
            continue
        for host in re.findall(r"https?://([A-Za-z0-9.-]+\.[A-Za-z]{2,})", text):
            if host in ALLOWED_HOSTS or host.endswith(".example") or host in ("127.0.0.1", "localhost"):
                continue
            if REGISTRY_WORDS.search(host):
                found.setdefault(host, []).append(rel)
    assert not found, f"package registry/mirror hosts named in the repository: {found}"


def _fake_apt(tmp_path, files):
    etc = tmp_path / "apt"
    (etc / "sources.list.d").mkdir(parents=True)
    for name, text in files.items():
        (etc / name).write_text(text)
    return etc


@pytest.mark.parametrize("files, expect", [
    ({"sources.list.d/debian.sources": "Types: deb\nURIs: http://m.example/debian\nSuites: bookworm bookworm-updates\n"
      "Components: main\n\nTypes: deb\nURIs: http://m.example/debian-security\nSuites: bookworm-security\n"
      "Components: main\n"}, "http://m.example/debian"),
    ({"sources.list": "# comment\ndeb http://sec.example/debian-security bookworm-security main\n"
      "deb [arch=amd64 signed-by=/k.gpg] http://m2.example/debian bookworm main contrib\n"}, "http://m2.example/debian"),
    ({"sources.list.d/x.sources": "Types: deb-src\nURIs: http://src.example/d\nSuites: b\nComponents: main\n",
      "sources.list.d/y.list": "deb http://m3.example/debian trixie main\n"}, "http://m3.example/debian"),
    ({"sources.list.d/off.sources": "Enabled: no\nTypes: deb\nURIs: http://off.example/d\nSuites: b\nComponents: main\n"}, ""),
])
def test_debian_mirror_comes_from_the_apt_sources(tmp_path, files, expect):
    env = dict(os.environ, AI_ENHANCE_APT_ETC=str(_fake_apt(tmp_path, files)), AI_ENHANCE_PRINT_MIRROR="1")
    env.pop("AI_ENHANCE_DEBIAN_MIRROR", None)
    r = subprocess.run(["bash", str(SCRIPT), str(tmp_path / "root")], env=env, capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == expect, r.stderr
    env["AI_ENHANCE_DEBIAN_MIRROR"] = "http://override.example/debian"
    r = subprocess.run(["bash", str(SCRIPT), str(tmp_path / "root")], env=env, capture_output=True, text=True)
    assert r.stdout.strip() == "http://override.example/debian"      # the override variable stays


def test_no_apt_source_is_a_clear_error(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("the script refuses to build without root before looking for a mirror")
    env = dict(os.environ, AI_ENHANCE_APT_ETC=str(_fake_apt(tmp_path, {})))
    env.pop("AI_ENHANCE_DEBIAN_MIRROR", None)
    r = subprocess.run(["bash", str(SCRIPT), str(tmp_path / "root")], env=env, capture_output=True, text=True)
    assert r.returncode == 2 and "AI_ENHANCE_DEBIAN_MIRROR" in r.stderr
    assert not (tmp_path / "root").exists()


class FakeRun:
    def __init__(self, config_out="", default="https://default.example/simple"):
        self.config_out, self.default, self.calls = config_out, default, []

    def __call__(self, cmd, **kw):
        self.calls.append(cmd)
        out = self.config_out if cmd[-2:] == ["config", "list"] else self.default + "\n"
        return subprocess.CompletedProcess(cmd, 0, out, "")


def test_pip_index_from_env_config_or_pips_default():
    assert wheels.pip_index_url("py", {"PIP_INDEX_URL": "https://a.example/simple https://b"}, FakeRun()) == \
        "https://a.example/simple"
    run = FakeRun("global.cert='/x'\nglobal.index-url='https://corp.example/simple'\n")
    assert wheels.pip_index_url("py", {}, run) == "https://corp.example/simple"
    run = FakeRun("global.find-links='/opt/wheels'\n")
    assert wheels.pip_index_url("py", {}, run) == "https://default.example/simple"   # pip's own default
    assert run.calls[-1][:2] == ["py", "-c"]


def test_simple_index_pages_json_and_html():
    js = json.dumps({"files": [
        {"filename": "pyzmq-27.0.0-cp312-cp312-win_amd64.whl", "url": "../../f/a.whl", "hashes": {"sha256": "aa"}},
        {"filename": "pyzmq-27.1.0-cp312-cp312-win_amd64.whl", "url": "https://f.example/b.whl", "hashes": {"sha256": "bb"}},
        {"filename": "pyzmq-28.0.0b1-cp312-cp312-win_amd64.whl", "url": "c.whl", "hashes": {"sha256": "cc"}},
        {"filename": "pyzmq-27.1.0.tar.gz", "url": "d.tgz", "hashes": {"sha256": "dd"}},
    ]}).encode()
    files = wheels.parse_simple_page(js, wheels.SIMPLE_JSON, "https://i.example/simple/pyzmq/")
    assert files[0]["url"] == "https://i.example/f/a.whl"
    newest = wheels.newest_release(files)
    assert [f["filename"] for f in newest] == ["pyzmq-27.1.0-cp312-cp312-win_amd64.whl"]   # no pre-release
    assert [f["sha256"] for f in wheels.newest_release(files, "27.0.0")] == ["aa"]
    html = (b'<html><body><a href="../../p/pyzmq-27.1.0-cp313-cp313-macosx_10_15_universal2.whl#sha256=ee">'
            b'pyzmq-27.1.0-cp313-cp313-macosx_10_15_universal2.whl</a><a href="x.whl">pyzmq-1.0-py3-none-any.whl</a>')
    files = wheels.parse_simple_page(html, "text/html", "https://i.example/simple/pyzmq/")
    assert files[0] == {"filename": "pyzmq-27.1.0-cp313-cp313-macosx_10_15_universal2.whl",
                        "url": "https://i.example/p/pyzmq-27.1.0-cp313-cp313-macosx_10_15_universal2.whl",
                        "sha256": "ee"}
    assert [f["filename"] for f in wheels.newest_release(files)] == [files[0]["filename"]]  # unhashed: never


def test_pypi_files_reads_a_local_index(tmp_path):
    """The real download path against a local index served over HTTP (no host of our own)."""
    import http.server
    import threading

    proj = tmp_path / "pyzmq"
    proj.mkdir()
    (proj / "index.html").write_bytes(b'<a href="pyzmq-9.9-cp311-cp311-manylinux_2_17_x86_64.whl#sha256=ab">'
                                      b'pyzmq-9.9-cp311-cp311-manylinux_2_17_x86_64.whl</a>')
    handler = lambda *a, **k: http.server.SimpleHTTPRequestHandler(*a, directory=str(tmp_path), **k)  # noqa: E731
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        files = wheels.pypi_files("PyZMQ", index=f"http://127.0.0.1:{srv.server_port}/")
    finally:
        srv.shutdown()
    assert files == [{"filename": "pyzmq-9.9-cp311-cp311-manylinux_2_17_x86_64.whl", "sha256": "ab",
                      "url": f"http://127.0.0.1:{srv.server_port}/pyzmq/pyzmq-9.9-cp311-cp311-manylinux_2_17_x86_64.whl"}]


def test_torch_index_is_the_only_vendor_index_and_overridable():
    assert torchsel.TORCH_INDEX.startswith("https://download.pytorch.org/")
