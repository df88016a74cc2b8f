"""A real `ai-enhance serve` process over real ZeroMQ, with tiny random-initialised networks of the
real architectures (and `nearest-x4`, whose output is exactly the nearest-neighbour upscale)."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import zmq

from ai_enhance_client import protocol as P
from ai_enhance_client.client import Client, ClientError
from testkit import curve_dealer, free_port, start_serve

DT = {np.dtype(np.uint8): P.DType.U8, np.dtype(np.uint16): P.DType.U16, np.dtype(np.float32): P.DType.F32}


def run(endpoint, img: np.ndarray, model="nearest-x4", scale=4, tile=0, roi=None, op="upscale",
        options=None, on_progress=None, client=None, **kw):
    img = np.ascontiguousarray(img if img.ndim == 3 else img[:, :, None])
    spec = P.ImageSpec(img.shape[1], img.shape[0], img.shape[2], DT[img.dtype])
    c = client or Client(endpoint)
    try:
        res = c.enhance(op=op, model=model, spec=spec, pixels=img.tobytes(), scale=scale, tile=tile,
                        roi=P.Rect(*roi) if roi else None, options=options, on_progress=on_progress, **kw)
    finally:
        if client is None:
            c.close()
    out = np.frombuffer(res.pixels, dtype=res.spec.dtype.numpy_name).reshape(
        res.spec.height, res.spec.width, res.spec.channels)
    return out, res


def nearest(img, s):
    return img.repeat(s, 0).repeat(s, 1)


@pytest.fixture(scope="module")
def rng():
    return np.random.default_rng(0)


# --------------------------------------------------------------------------- capabilities

def test_ping_lists_models_and_device(backend):
    with Client(backend.endpoint) as c:
        caps = c.ping()
    assert caps["protocol"] == P.VERSION and caps["pid"] > 0
    models = {m["id"]: m for m in caps["models"]}
    assert models["nearest-x4"]["status"] == "custom" and models["nearest-x4"]["installed"]
    assert models["realesr-animevideov3"]["installed"]
    # random nets under official names: present but not the official bytes
    assert models["realesr-animevideov3"]["status"] == "unverified"
    assert models["realesrgan-x4plus-anime"]["status"] == "missing"
    assert caps["device"]


# --------------------------------------------------------------------------- pixels

@pytest.mark.parametrize("tile", [0, 16])
def test_nearest_x4_exact_u8_tiled_and_untiled(backend, rng, tile):
    img = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    seen = []
    out, res = run(backend.endpoint, img, tile=tile, on_progress=lambda f, t: seen.append(f))
    assert out.shape == (148, 212, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, nearest(img, 4))
    if tile:
        assert len(seen) >= 4 and seen == sorted(seen)    # progress per tile, monotonic


@pytest.mark.parametrize("scale", [1, 2, 3])
def test_output_scale_below_model_scale(backend, rng, scale):
    img = rng.integers(0, 256, (24, 30, 3), dtype=np.uint8)
    out, _ = run(backend.endpoint, img, scale=scale)
    assert out.shape == (24 * scale, 30 * scale, 3)
    if scale in (1, 2):   # area-downscaling a nearest x4 by an integer factor is exact
        np.testing.assert_array_equal(out, nearest(img, scale))
    else:
        assert np.abs(out.astype(int) - nearest(img, 3).astype(int)).mean() < 40


def test_scale_above_model_scale_is_refused(backend, rng):
    img = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    with pytest.raises(ClientError, match="(?i)scale") as ei:
        run(backend.endpoint, img, model="nearest-x1", scale=2)
    assert ei.value.kind == "unsupported"


def test_u16_kept_without_8bit_round_trip(backend, rng):
    img = rng.integers(0, 65536, (20, 17, 3), dtype=np.uint16)
    out, res = run(backend.endpoint, img, tile=8)
    assert res.spec.dtype is P.DType.U16
    np.testing.assert_array_equal(out, nearest(img, 4))


def test_f32_kept(backend, rng):
    img = rng.random((9, 11, 3), dtype=np.float32)
    out, res = run(backend.endpoint, img, scale=2)
    assert res.spec.dtype is P.DType.F32
    np.testing.assert_allclose(out, nearest(img, 2), atol=1e-5)


def test_alpha_upscaled_separately_transparent_stays_transparent(backend, rng):
    img = rng.integers(0, 256, (32, 32, 4), dtype=np.uint8)
    img[:, :16, 3] = 0
    img[:, 16:, 3] = 255
    out, _ = run(backend.endpoint, img, scale=2)
    assert out.shape == (64, 64, 4)
    assert (out[:, :28, 3] == 0).all() and (out[:, 36:, 3] == 255).all()
    np.testing.assert_array_equal(out[:, :, :3], nearest(img[:, :, :3], 2))


@pytest.mark.parametrize("channels", [1, 2])
def test_gray_and_gray_alpha(backend, rng, channels):
    img = rng.integers(0, 256, (10, 12, channels), dtype=np.uint8)
    out, res = run(backend.endpoint, img, scale=4)
    assert out.shape == (40, 48, channels)
    np.testing.assert_array_equal(out[:, :, 0], nearest(img[:, :, 0], 4))


def test_roi_returns_only_the_box(backend, rng):
    img = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    out, _ = run(backend.endpoint, img, scale=4, roi=(7, 5, 20, 11), tile=16)
    assert out.shape == (44, 80, 3)
    np.testing.assert_array_equal(out, nearest(img[5:16, 7:27], 4))


def test_random_rrdb_x2_and_x4_run(backend, rng):
    img = rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)
    for model, s in (("realesrgan-x2plus", 2), ("realesrgan-x4plus", 4), ("realesr-animevideov3", 4)):
        out, _ = run(backend.endpoint, img, model=model, scale=s)
        assert out.shape == (24 * s, 24 * s, 3)


# --------------------------------------------------------------------------- concurrency, cancel, clients gone

def test_two_clients_at_once(backend, rng):
    imgs = [rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(2)]
    results, errors = [None, None], []

    def go(i):
        try:
            results[i] = run(backend.endpoint, imgs[i], tile=16)[0]
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=go, args=(i,)) for i in range(2)]
    [t.start() for t in threads]
    [t.join(120) for t in threads]
    assert not errors
    for i in range(2):
        np.testing.assert_array_equal(results[i], nearest(imgs[i], 4))


SLOW = dict(model="realesrgan-x4plus", scale=4, tile=32)


def slow_image():
    return np.random.default_rng(1).integers(0, 256, (768, 768, 3), dtype=np.uint8)


def wait_idle(endpoint, timeout=15.0):
    t0 = time.monotonic()
    with Client(endpoint) as c:
        while time.monotonic() - t0 < timeout:
            q = c.ping()["queue"]
            if q["running"] == 0 and q["queued"] == 0:
                return time.monotonic() - t0
            time.sleep(0.2)
    raise AssertionError("backend still busy")


def test_cancel_stops_a_running_job_and_backend_keeps_serving(fresh_backend, rng):
    progress = []
    t0 = time.monotonic()

    def cancel_after_first_tile():
        return len(progress) >= 1

    with pytest.raises(ClientError) as ei:
        run(fresh_backend.endpoint, slow_image(), **SLOW, on_progress=lambda f, t: progress.append(f),
            should_cancel=cancel_after_first_tile)
    assert ei.value.kind == "cancelled"
    assert wait_idle(fresh_backend.endpoint) < 10
    assert "cancelled" in fresh_backend.log()
    img = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    np.testing.assert_array_equal(run(fresh_backend.endpoint, img)[0], nearest(img, 4))
    assert time.monotonic() - t0 < 60


def test_client_killed_mid_job_is_dropped(fresh_backend, tmp_path):
    """GIMP's Cancel kills the plug-in process: no goodbye. The backend must notice by itself."""
    script = tmp_path / "client.py"
    script.write_text(textwrap.dedent(f"""
        import sys, numpy as np
        sys.path.insert(0, {str(Path(__file__).parent)!r}); sys.path.insert(0, {str(Path(__file__).parents[1])!r})
        from test_backend import run, slow_image, SLOW
        run({fresh_backend.endpoint!r}, slow_image(), **SLOW, on_progress=lambda f, t: print("P", flush=True))
    """))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "P"          # the job is running
    proc.kill()
    proc.wait()
    took = wait_idle(fresh_backend.endpoint, timeout=20)
    assert took < 12, f"job of a dead client ran on for {took:.1f} s"
    assert "client silent" in fresh_backend.log()


def test_busy_when_queue_full(tiny_models_dir, tmp_path, rng):
    b = start_serve(tiny_models_dir, tmp_path, "--queue-size", "1")
    try:
        c1 = Client(b.endpoint)
        img = slow_image()
        spec = P.ImageSpec(768, 768, 3, P.DType.U8)
        c1._socket().send_multipart(P.enhance_request("long", op="upscale", image=spec, pixels=img.tobytes(),
                                                      model="realesrgan-x4plus", scale=4, tile=32))
        assert c1._recv("long", 10).type is P.MsgType.ACCEPTED
        t0 = time.monotonic()
        with pytest.raises(ClientError, match="busy") as ei:
            run(b.endpoint, rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
        assert ei.value.kind == "busy" and time.monotonic() - t0 < 3
        c1.cancel("long")
        c1.close()
    finally:
        b.stop()


# --------------------------------------------------------------------------- bad input

def test_unknown_model(backend, rng):
    with pytest.raises(ClientError, match="no-such-model") as ei:
        run(backend.endpoint, rng.integers(0, 256, (8, 8, 3), dtype=np.uint8), model="no-such-model")
    assert ei.value.kind == "unknown_model"


def test_missing_model_names_file_and_folder(backend, rng):
    with pytest.raises(ClientError) as ei:
        run(backend.endpoint, rng.integers(0, 256, (8, 8, 3), dtype=np.uint8), model="realesrgan-x4plus-anime")
    assert ei.value.kind == "model_missing"
    assert "RealESRGAN_x4plus_anime_6B.pth" in str(ei.value) and str(backend.models_dir) in str(ei.value)


@pytest.mark.parametrize("content", [b"garbage, not a model" * 10, b"PK\x03\x04" + b"\0" * 100])
def test_corrupt_model_file(tiny_models_dir, tmp_path, rng, content):
    d = tmp_path / "models"
    d.mkdir()
    (d / "realesr-animevideov3.pth").write_bytes((tiny_models_dir / "realesr-animevideov3.pth").read_bytes()[:5000])
    (d / "broken.pth").write_bytes(content)
    b = start_serve(d, tmp_path)
    try:
        for model in ("realesr-animevideov3", "broken"):
            with pytest.raises(ClientError) as ei:
                run(b.endpoint, rng.integers(0, 256, (8, 8, 3), dtype=np.uint8), model=model)
            assert ei.value.kind == "model_corrupt", str(ei.value)
        assert Client(b.endpoint).ping() is not None
    finally:
        b.stop()


def test_oversize_image_refused_before_allocation(tiny_models_dir, tmp_path, rng):
    b = start_serve(tiny_models_dir, tmp_path, "--max-input-mp", "0.01", "--max-output-mp", "0.05")
    try:
        with pytest.raises(ClientError, match="input budget") as ei:
            run(b.endpoint, np.zeros((120, 120, 3), np.uint8))
        assert ei.value.kind == "too_large"
        with pytest.raises(ClientError, match="output budget"):
            run(b.endpoint, np.zeros((90, 90, 3), np.uint8), scale=4)
        run(b.endpoint, np.zeros((50, 50, 3), np.uint8), scale=4)   # within both budgets
    finally:
        b.stop()


def test_garbage_is_answered_and_backend_keeps_serving(backend):
    s = curve_dealer(backend.endpoint)    # an authenticated peer sending garbage
    try:
        cases = [
            [b"\x80\x81 not json"],
            [b'{"v":3,"type":"enhance","job_id":"g1","op":"upscale","model":"nearest-x4",'
             b'"inputs":[{"name":"image","image":{"width":4,"height":4,"channels":3,"dtype":"u8"}}]}', b"short"],
            [b'{"v":99,"type":"ping","job_id":"g2"}'],
            [b'{"v":3,"type":"result","job_id":"g3","image":{}}'],
            [b'{"v":1,"type":"enhance","job_id":"g4","op":"upscale","model":"nearest-x4",'
             b'"image":{"width":1,"height":1,"channels":3,"dtype":"u8"}}', b"abc"],   # a v1 plug-in
        ]
        replies = []
        for frames in cases:
            s.send_multipart(frames)
            assert s.poll(5000), "no answer to a malformed message"
            replies.append(json.loads(s.recv_multipart()[0]))
        assert [r["kind"] for r in replies] == ["bad_request", "bad_request", "version", "bad_request", "version"]
        # the old plug-in gets its answer in its own protocol version, telling it to update
        assert replies[4]["v"] == 1 and replies[4]["job_id"] == "g4"
        assert "update the plug-in" in replies[4]["message"]
    finally:
        s.close()
    # raw bytes on the TCP port (not even ZMTP)
    host, port = backend.endpoint[len("tcp://"):].rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as raw:
        raw.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + os.urandom(4096))
    with Client(backend.endpoint) as c:
        assert c.ping() is not None


def test_frame_over_maxmsgsize_does_not_kill_backend(tiny_models_dir, tmp_path):
    b = start_serve(tiny_models_dir, tmp_path, "--max-frame-mb", "1")
    try:
        s = curve_dealer(b.endpoint)
        # over the per-frame cap (ZMQ MAXMSGSIZE): the backend drops the connection, not the process
        s.send_multipart([b'{"v":1,"type":"ping","job_id":"x"}', b"\0" * (2 << 20)])
        time.sleep(1.0)
        s.close()
        with Client(b.endpoint) as c:
            assert c.ping(timeout=5) is not None
        # a whole job over the cap: the client hears within seconds that the job is gone
        t0 = time.monotonic()
        with pytest.raises(ClientError, match="dropped this job"):
            run(b.endpoint, np.zeros((1024, 1024, 3), np.uint8))
        assert time.monotonic() - t0 < 10
    finally:
        b.stop()


# --------------------------------------------------------------------------- process behaviour

def test_second_serve_on_same_endpoint_refuses(backend, tmp_path):
    r = subprocess.run([sys.executable, "-m", "ai_enhance", "serve", "--endpoint", backend.endpoint,
                        "--models-dir", str(backend.models_dir), "--log-file", str(tmp_path / "l.log")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert "already serves" in r.stdout
    with Client(backend.endpoint) as c:
        assert c.ping() is not None


@pytest.mark.parametrize("endpoint", ["tcp://0.0.0.0:5599", "tcp://192.168.1.1:5599", "tcp://localhost"])
def test_refuses_non_loopback(endpoint, tiny_models_dir, tmp_path):
    r = subprocess.run([sys.executable, "-m", "ai_enhance", "serve", "--endpoint", endpoint,
                        "--models-dir", str(tiny_models_dir), "--log-file", str(tmp_path / "l.log")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "loopback" in r.stdout


def test_idle_models_are_unloaded(tiny_models_dir, tmp_path):
    b = start_serve(tiny_models_dir, tmp_path, "--idle-unload", "1")
    try:
        run(b.endpoint, np.zeros((8, 8, 3), np.uint8))
        def loaded(c):
            return [m["id"] for m in c.ping()["loaded"]]

        with Client(b.endpoint) as c:
            assert "nearest-x4" in loaded(c)
            deadline = time.monotonic() + 10
            while "nearest-x4" in loaded(c):
                assert time.monotonic() < deadline, "model never unloaded"
                time.sleep(0.3)
    finally:
        b.stop()


def test_log_file_written(backend):
    assert "serving on" in backend.log() and "done in" in backend.log()
