"""`ai-enhance` as a user runs it: a real client over ZeroMQ that starts the backend itself."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from ai_enhance_client.client import Client
from testkit import REPO, free_port, serve_env

CLI = [sys.executable, "-m", "ai_enhance"]


def cli(*args, env=None, timeout=180):
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout, env=env)


def test_help_is_fast_and_torch_free():
    code = ("import sys, time; t=time.perf_counter(); from ai_enhance import cli; "
            "p=cli.build_parser(); import ai_enhance_client.client; "
            "print(time.perf_counter()-t, 'torch' in sys.modules, 'cv2' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[1] == "False" and out[2] == "False"
    assert float(out[0]) < 0.5
    r = cli("--help")
    assert r.returncode == 0 and "serve" in r.stdout and "enhance" in r.stdout


def test_enhance_autostarts_backend_in_own_session(tiny_models_dir, tmp_path):
    import cv2

    endpoint = f"tcp://127.0.0.1:{free_port()}"
    env = serve_env(tiny_models_dir, AI_ENHANCE_ENDPOINT=endpoint, AI_ENHANCE_CONFIG=str(tmp_path / "none.json"),
                    AI_ENHANCE_SERVE_COMMAND=json.dumps([*CLI, "serve", "--log-file", str(tmp_path / "b.log")]))
    src = tmp_path / "in.png"
    img = np.random.default_rng(0).integers(0, 65536, (21, 33, 3), dtype=np.uint16)
    cv2.imwrite(str(src), img)
    r = cli("enhance", str(src), "-o", str(tmp_path / "out.png"), "--model", "nearest-x4", "--scale", "2",
            "--tile", "16", env=env)
    assert r.returncode == 0, r.stderr
    out = cv2.imread(str(tmp_path / "out.png"), cv2.IMREAD_UNCHANGED)
    assert out.dtype == np.uint16 and out.shape == (42, 66, 3)          # 16-bit kept
    np.testing.assert_array_equal(out, img.repeat(2, 0).repeat(2, 1))
    with Client(endpoint) as c:
        caps = c.ping()
    assert caps is not None, "the backend should keep running for the next call"
    pid = caps["pid"]
    try:
        assert os.getsid(pid) == pid and os.getsid(pid) != os.getsid(0)   # its own session
        # a second call reuses the warm backend (no new process)
        r = cli("enhance", str(src), "-o", str(tmp_path / "out2.png"), "--model", "nearest-x4", env=env)
        assert r.returncode == 0, r.stderr
        with Client(endpoint) as c:
            assert c.ping()["pid"] == pid
        assert cv2.imread(str(tmp_path / "out2.png"), cv2.IMREAD_UNCHANGED).shape == (84, 132, 3)
    finally:
        os.kill(pid, signal.SIGTERM)


def test_enhance_default_sample_and_jpeg(backend, tmp_path):
    env = serve_env(backend.models_dir, AI_ENHANCE_ENDPOINT=backend.endpoint)
    r = cli("enhance", "-o", str(tmp_path / "s.jpg"), "--model", "nearest-x4", "--no-autostart", env=env)
    assert r.returncode == 0, r.stderr
    import cv2
    assert cv2.imread(str(tmp_path / "s.jpg")).shape == (640, 640, 3)   # the built-in 160 px sample, x4


def test_dead_backend_without_autostart_is_one_clear_line(tmp_path):
    env = dict(os.environ, AI_ENHANCE_ENDPOINT=f"tcp://127.0.0.1:{free_port()}")
    t0 = time.monotonic()
    r = cli("enhance", "-o", str(tmp_path / "x.png"), "--no-autostart", env=env)
    assert r.returncode == 1 and time.monotonic() - t0 < 15
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "ai-enhance serve" in lines[0]
    assert not (tmp_path / "x.png").exists()


def test_autostart_failure_is_reported(tmp_path):
    env = dict(os.environ, AI_ENHANCE_ENDPOINT=f"tcp://127.0.0.1:{free_port()}",
               AI_ENHANCE_SERVE_COMMAND=json.dumps([sys.executable, "-c", "import sys; print('boom: no torch'); sys.exit(3)"]))
    r = cli("enhance", "-o", str(tmp_path / "x.png"), env=env, timeout=60)
    assert r.returncode == 1
    assert "exited at start" in r.stderr and "boom: no torch" in r.stderr


def test_unreadable_input_and_bad_output(tmp_path, backend):
    env = serve_env(backend.models_dir, AI_ENHANCE_ENDPOINT=backend.endpoint)
    (tmp_path / "bad.png").write_bytes(b"not an image")
    r = cli("enhance", str(tmp_path / "bad.png"), "-o", str(tmp_path / "o.png"), env=env)
    assert r.returncode == 2 and "cannot read" in r.stderr
    with Client(backend.endpoint) as c:
        done = c.ping()["queue"]["done"]
    r = cli("enhance", "-o", str(tmp_path / "o.gif"), "--model", "nearest-x4", env=env)
    # refused before the job runs (issue 14): a usage error, and the backend computed nothing
    assert r.returncode == 2 and ".png" in r.stderr
    with Client(backend.endpoint) as c:
        assert c.ping()["queue"]["done"] == done


def test_models_list(tiny_models_dir):
    r = cli("models", "list", "--models-dir", str(tiny_models_dir))
    assert r.returncode == 0, r.stderr
    rows = {line.split()[0]: line for line in r.stdout.splitlines()[2:]}
    assert "unverified" in rows["realesr-animevideov3"]
    assert "missing" in rows["realesrgan-x4plus-anime"] and "https://" in rows["realesrgan-x4plus-anime"]
    assert "custom" in rows["nearest-x4"]
    j = json.loads(cli("models", "list", "--json", "--models-dir", str(tiny_models_dir)).stdout)
    assert {m["id"] for m in j} >= {"realesrgan-x4plus", "realesrgan-x2plus", "realesr-general-x4v3",
                                      "realesr-animevideov3", "realesrgan-x4plus-anime", "nearest-x4"}
