"""The OpenVINO runtime inside a real backend: a model starts on torch while it is converted in
the background (once), then runs on OpenVINO with the same output; `ai-enhance status` says which
runtime each loaded model uses; a restart loads the converted model from the disk cache at once."""
from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest

from ai_enhance_client import protocol as P
from ai_enhance_client.client import Client
from testkit import make_compact, serve_env, start_serve

pytest.importorskip("openvino")


def enhance(endpoint, img):
    spec = P.ImageSpec(img.shape[1], img.shape[0], 3, P.DType.U8)
    with Client(endpoint) as c:
        r = c.enhance(op="upscale", model="tiny-x4", spec=spec, pixels=img.tobytes(), scale=4,
                      post={"color-lock": False, "fidelity": 0.0})
    return np.frombuffer(r.pixels, np.uint8).reshape(r.spec.height, r.spec.width, 3)


def loaded(endpoint):
    with Client(endpoint) as c:
        return {m["id"]: m for m in c.ping()["loaded"]}


def test_conversion_in_the_background_then_openvino_and_cached_across_restarts(tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    make_compact(models / "tiny-x4.pth", seed=3)
    env = serve_env(models, AI_ENHANCE_RUNTIME="openvino", AI_ENHANCE_OV_PRECISION="f32",
                    AI_ENHANCE_OV_CACHE=str(tmp_path / "ov"))
    img = np.random.default_rng(0).integers(0, 256, (24, 28, 3), dtype=np.uint8)
    b = start_serve(models, tmp_path, env=env)
    try:
        first = enhance(b.endpoint, img)                      # torch while converting
        deadline = time.monotonic() + 240
        while True:
            enhance(b.endpoint, img)                          # the swap happens between jobs
            m = loaded(b.endpoint)["tiny-x4"]
            if m["runtime"] == "openvino" or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert m["runtime"] == "openvino", m
        assert m["runtime_info"]["precision"] == "f32" and m["runtime_info"]["cache_hit"] is False
        again = enhance(b.endpoint, img)
        assert np.abs(again.astype(int) - first.astype(int)).max() <= 1   # same output as torch
        status = subprocess.run([sys.executable, "-m", "ai_enhance", "status", "--endpoint", b.endpoint],
                                capture_output=True, text=True, timeout=60, env=env)
        assert "loaded tiny-x4: openvino CPU f32" in status.stdout, status.stdout
    finally:
        b.stop()
    b = start_serve(models, tmp_path, env=env)                # a restart: the disk cache
    try:
        enhance(b.endpoint, img)
        m = loaded(b.endpoint)["tiny-x4"]
        assert m["runtime"] == "openvino" and m["runtime_info"]["cache_hit"] is True, m
    finally:
        b.stop()


def test_stopping_during_a_conversion_exits_cleanly(tmp_path):
    """SIGTERM while a model is being converted in the background: exit status 0 (the native
    conversion is not torn down under the interpreter: that would abort), the log says why."""
    from testkit import make_rrdb

    models = tmp_path / "models"
    models.mkdir()
    make_rrdb(models / "tiny-x4.pth", scale=4, num_filters=32, num_blocks=2, seed=2)
    env = serve_env(models, AI_ENHANCE_RUNTIME="openvino", AI_ENHANCE_OV_PRECISION="f32",
                    AI_ENHANCE_OV_CACHE=str(tmp_path / "ov"))
    b = start_serve(models, tmp_path, env=env)
    try:
        enhance(b.endpoint, np.zeros((16, 16, 3), np.uint8))       # starts the conversion
        converting = loaded(b.endpoint)["tiny-x4"]["runtime"] == "torch"
    finally:
        b.proc.terminate()
        rc = b.proc.wait(30)
    assert rc == 0
    if converting:
        assert "converted again next time" in b.log() or "runs on OpenVINO" in b.log()
