"""Models installed and removed THROUGH the backend (what GIMP's Download button, the Models...
manager and `ai-enhance models install|remove` do): a real `ai-enhance serve` downloads from a
local HTTP server on 127.0.0.1 (catalogue entries added with AI_ENHANCE_EXTRA_CATALOG), resumes a
partial file, refuses a wrong sha256, reports progress in order up to 1.0, and can be cancelled."""
from __future__ import annotations

import hashlib
import http.server
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from ai_enhance_client import protocol as P
from ai_enhance_client.client import Client, ClientError
from testkit import make_compact, serve_env, start_serve

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "installer"))
from inst_helpers import FileServer, Served, _handler  # noqa: E402



def _serve(state: FileServer, rate: int | None = None):
    base = _handler(state)

    class H(base):
        def _serve(self, body):
            if rate is None or not body:
                return super()._serve(body)
            f = state.files.get(self.path.lstrip("/"))
            rng = self.headers.get("Range")
            state.requests.append((self.path.lstrip("/"), rng))
            start = int(rng.split("=")[1].split("-")[0]) if rng else 0
            chunk = f.data[start:]
            self.send_response(206 if start else 200)
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(f.data) - 1}/{len(f.data)}")
            self.send_header("Content-Length", str(len(chunk)))
            self.end_headers()
            step = max(1, rate // 20)
            try:
                for i in range(0, len(chunk), step):
                    self.wfile.write(chunk[i:i + step])
                    self.wfile.flush()
                    time.sleep(0.05)
            except OSError:
                pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    srv.daemon_threads = True
    state.base = f"http://127.0.0.1:{srv.server_address[1]}"
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return srv


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Two local servers (fast and a 200 KB/s trickle), an extra catalogue pointing at them, and a
    backend with an empty models folder of its own."""
    tmp = tmp_path_factory.mktemp("dl")
    files = {}
    files["tiny-x4.pth"] = make_compact(tmp / "tiny-x4.pth", zero_last=True, seed=11).read_bytes()
    files["tiny-x1.pth"] = make_compact(tmp / "tiny-x1.pth", scale=1, zero_last=True, seed=12).read_bytes()
    files["tiny-helper.pth"] = make_compact(tmp / "tiny-helper.pth", seed=13).read_bytes()
    files["big.pth"] = np.random.default_rng(0).bytes(3_000_000)
    fast, slow = FileServer(""), FileServer("")
    s1, s2 = _serve(fast), _serve(slow, rate=200_000)
    for name, data in files.items():
        fast.files[name] = Served(data)
        slow.files[name] = Served(data)

    def entry(mid, file, *, url=None, sha256=None, companions=(), role=None, ops=("upscale",), scale=4):
        data = files[file]
        return {"id": mid, "name": f"Tiny {mid}", "short": "Tiny", "kind": "photo", "file": file,
                "url": url or fast.url(file), "sha256": sha256 or sha(data), "size": len(data),
                "family": "test", "arch": "Compact", "ops": list(ops), "scale": scale, "role": role,
                "companions": list(companions)}

    cat = [entry("tiny-x4", "tiny-x4.pth", companions=["tiny-helper"]),
           entry("tiny-helper", "tiny-helper.pth", role="companion"),
           entry("tiny-x1", "tiny-x1.pth", scale=1),
           entry("tiny-bad", "big.pth", sha256="0" * 64),
           entry("tiny-slow", "big.pth", url=slow.url("big.pth"))]
    (tmp / "extra.json").write_text(json.dumps({"models": cat}))
    models = tmp / "models"
    models.mkdir()
    env = serve_env(models, AI_ENHANCE_EXTRA_CATALOG=str(tmp / "extra.json"))
    b = start_serve(models, tmp, env=env)
    yield {"backend": b, "fast": fast, "slow": slow, "files": files, "models": models, "env": env,
           "catalog": tmp / "extra.json"}
    b.stop()
    s1.shutdown()
    s2.shutdown()


def _caps(b) -> dict:
    with Client(b.endpoint) as c:
        return {m["id"]: m for m in c.ping()["models"]}


def test_install_downloads_with_companion_progress_in_order_to_one(world):
    b, models = world["backend"], world["models"]
    assert not _caps(b)["tiny-x4"]["installed"]
    seen = []
    with Client(b.endpoint) as c:
        info = c.install_models(["tiny-x4"], on_progress=lambda f, t: seen.append((f, t)))
    assert info["installed"] == ["tiny-x4", "tiny-helper"], "the companion comes with it"
    assert info["bytes"] == len(world["files"]["tiny-x4.pth"]) + len(world["files"]["tiny-helper.pth"])
    assert (models / "tiny-x4.pth").read_bytes() == world["files"]["tiny-x4.pth"]
    assert not list(models.glob("*.part"))
    fr = [f for f, _ in seen]
    assert fr == sorted(fr), "progress never goes back"
    assert fr[-1] == 1.0 and seen[-1][1].startswith("installed")
    assert any(t.startswith("downloading Tiny tiny-x4 (file 1 of 2)") for _, t in seen)
    assert any("(file 2 of 2)" in t for _, t in seen)
    caps = _caps(b)
    assert caps["tiny-x4"]["installed"] and caps["tiny-x4"]["status"] == "verified", \
        "the very next ping lists it, verified"
    # and the filter runs with it at once
    img = np.random.default_rng(1).integers(0, 256, (9, 7, 3), dtype=np.uint8)
    with Client(b.endpoint) as c:
        res = c.enhance(op="upscale", model="tiny-x4", spec=P.ImageSpec(7, 9, 3, P.DType.U8),
                        pixels=img.tobytes(), scale=4)
    out = np.frombuffer(res.pixels, np.uint8).reshape(36, 28, 3)
    np.testing.assert_array_equal(out, img.repeat(4, 0).repeat(4, 1))
    # a second install downloads nothing
    with Client(b.endpoint) as c:
        again = c.install_models(["tiny-x4"])
    assert again["installed"] == [] and again["present"] == ["tiny-x4"]


def test_install_resumes_a_partial_file_with_range(world):
    b, models, fast = world["backend"], world["models"], world["fast"]
    data = world["files"]["tiny-x1.pth"]
    (models / "tiny-x1.pth.part").write_bytes(data[: len(data) // 2])
    fast.requests.clear()
    with Client(b.endpoint) as c:
        info = c.install_models(["tiny-x1"])
    assert info["installed"] == ["tiny-x1"]
    assert fast.requests == [("tiny-x1.pth", f"bytes={len(data) // 2}-")], "only the rest was asked for"
    assert (models / "tiny-x1.pth").read_bytes() == data


def test_dropped_connection_is_resumed_within_one_request(world):
    b, models, fast = world["backend"], world["models"], world["fast"]
    data = world["files"]["tiny-x1.pth"]
    (models / "tiny-x1.pth").unlink(missing_ok=True)
    fast.files["tiny-x1.pth"] = Served(data, drop_after=len(data) // 3, drops_left=1)
    fast.requests.clear()
    try:
        with Client(b.endpoint) as c:
            info = c.install_models(["tiny-x1"])
    finally:
        fast.files["tiny-x1.pth"] = Served(data)
    assert info["installed"] == ["tiny-x1"] and (models / "tiny-x1.pth").read_bytes() == data
    assert [r for _, r in fast.requests][0] is None and fast.requests[1][1].startswith("bytes=")


def test_wrong_sha256_is_refused_and_leaves_nothing(world):
    b, models = world["backend"], world["models"]
    with Client(b.endpoint) as c, pytest.raises(ClientError) as ei:
        c.install_models(["tiny-bad"])
    assert ei.value.kind == P.ErrorKind.DOWNLOAD.value
    msg = str(ei.value)
    assert "could not be downloaded" in msg and "sha256 mismatch" in msg and "\n" not in msg
    assert not (models / "big.pth").exists() and not (models / "big.pth.part").exists()
    assert not _caps(b)["tiny-bad"]["installed"]


def test_unknown_and_unpinned_ids_are_refused_in_one_line(world):
    with Client(world["backend"].endpoint) as c, pytest.raises(ClientError) as ei:
        c.install_models(["no-such-model"])
    assert ei.value.kind == P.ErrorKind.UNKNOWN_MODEL.value and "no-such-model" in str(ei.value)


def test_cancel_mid_download_is_confirmed_fast_and_keeps_the_part(world):
    b, models = world["backend"], world["models"]
    started = threading.Event()
    stop = threading.Event()

    def on_progress(f, t):
        if f > 0.05:
            started.set()

    def cancel_soon():
        started.wait(30)
        stop.set()

    threading.Thread(target=cancel_soon, daemon=True).start()
    t0 = time.monotonic()
    with Client(b.endpoint) as c, pytest.raises(ClientError) as ei:
        c.install_models(["tiny-slow"], on_progress=on_progress, should_cancel=stop.is_set)
    assert ei.value.kind == P.ErrorKind.CANCELLED.value
    assert ei.value.confirmed and ei.value.seconds < 2.0, ei.value.seconds
    assert time.monotonic() - t0 < 30
    part = models / "big.pth.part"
    assert part.is_file() and 0 < part.stat().st_size < len(world["files"]["big.pth"]), \
        "the partial file stays for a resume"
    assert not (models / "big.pth").exists()
    part.unlink()


def test_remove_deletes_the_model_and_its_orphaned_support_file(world):
    b, models = world["backend"], world["models"]
    with Client(b.endpoint) as c:
        c.install_models(["tiny-x4"])
        info = c.remove_models(["tiny-x4"])
    assert info["removed"] == ["tiny-x4", "tiny-helper"]
    assert not (models / "tiny-x4.pth").exists() and not (models / "tiny-helper.pth").exists()
    caps = _caps(b)
    assert not caps["tiny-x4"]["installed"] and not caps["tiny-helper"]["installed"]


def test_cli_models_install_and_remove(world):
    b = world["backend"]
    env = dict(world["env"], AI_ENHANCE_ENDPOINT=b.endpoint)
    r = subprocess.run([sys.executable, "-m", "ai_enhance", "models", "install", "tiny-x1", "--no-autostart"],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "tiny-x1" in r.stdout and (world["models"] / "tiny-x1.pth").is_file()
    r = subprocess.run([sys.executable, "-m", "ai_enhance", "models", "remove", "tiny-x1", "--no-autostart"],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "removed tiny-x1" in r.stdout and not (world["models"] / "tiny-x1.pth").exists()
    r = subprocess.run([sys.executable, "-m", "ai_enhance", "models", "install", "tiny-bad", "--no-autostart"],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 1 and "sha256 mismatch" in r.stderr and "Traceback" not in r.stderr
