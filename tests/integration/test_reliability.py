"""Reliability suite (issue 14), part 1: a real backend under hostile and heavy use.

- 10,000 raw hostile messages from an authenticated peer: the backend answers, stays up and
  computes correctly afterwards;
- an unauthenticated client gets nothing; a squatting fake server (plain or CURVE with its own
  key) gets no pixels and the client accepts nothing from it;
- 20 clients x 3 jobs at once: none lost, none mixed up;
- a result larger than one frame arrives in row bands; one wider than 65,536 px is refused
  before any compute, with the scale that would work;
- SIGTERM or `ai-enhance stop` mid-job: every client is told "shutting down" within 5 s;
- a backend killed mid-job: the client reports a crash at once and the log says so;
- IPv6 loopback works; port 0, `@` and abstract sockets are refused with a message.
Measured figures are printed (pytest -s) and collected in docs/security.md.
"""
from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import zmq

from ai_enhance_client import keys as K
from ai_enhance_client import protocol as P
from ai_enhance_client.client import Client, ClientError
from testkit import curve_dealer, free_port, start_serve

DT = {np.dtype(np.uint8): P.DType.U8, np.dtype(np.uint16): P.DType.U16, np.dtype(np.float32): P.DType.F32}
CLI = [sys.executable, "-m", "ai_enhance"]


def enhance(endpoint, img, model="nearest-x4", scale=4, client=None, **kw):
    img = np.ascontiguousarray(img)
    spec = P.ImageSpec(img.shape[1], img.shape[0], img.shape[2], DT[img.dtype])
    c = client or Client(endpoint)
    try:
        res = c.enhance(op="upscale", model=model, spec=spec, pixels=img.tobytes(), scale=scale, **kw)
    finally:
        if client is None:
            c.close()
    return np.frombuffer(res.pixels, res.spec.dtype.numpy_name).reshape(
        res.spec.height, res.spec.width, res.spec.channels), res


def nearest(img, s):
    return img.repeat(s, 0).repeat(s, 1)


def figure(name: str, value) -> None:
    """A measured figure of the suite (docs/security.md): printed, and appended to the file
    AI_ENHANCE_FIGURES names when set."""
    line = f"FIGURE {name}: {value}"
    print(line)
    path = os.environ.get("AI_ENHANCE_FIGURES")
    if path:
        with open(path, "a") as f:
            f.write(line + "\n")


# --------------------------------------------------------------------------- hostile messages

def _hostile(rng: random.Random, i: int) -> list[bytes]:
    """One hostile message: random bytes, deep JSON, wrong fields, lying sizes, zip bombs ..."""
    kind = i % 10
    jid = f"fz{i}"
    if kind == 0:
        return [rng.randbytes(rng.randint(0, 300))]
    if kind == 1:
        n = rng.randint(33, 3000)
        return [b'{"v":3,"type":"ping","job_id":"' + jid.encode() + b'","x":' + b"[" * n + b"]" * n + b"}"]
    if kind == 2:
        return [json.dumps({"v": 3, "type": rng.choice(["enhance", "ping", "cancel", "result", "x", 7]),
                            "job_id": jid, "op": rng.choice(["upscale", "Explode!", None]),
                            "scale": rng.choice([0, 1, 99, -1, 2.5, "4"]),
                            "inputs": rng.choice([[], "img", [{"name": "image", "image": {"width": -1}}]])}).encode()]
    if kind == 3:     # announces a big image, carries a few bytes
        h = {"v": 3, "type": "enhance", "job_id": jid, "op": "upscale",
             "inputs": [{"name": "image", "image": {"width": 65536, "height": 4096, "channels": 4, "dtype": "f32"}}]}
        return [json.dumps(h).encode(), rng.randbytes(64)]
    if kind == 4:     # a zip bomb / lying codec
        h = {"v": 3, "type": "enhance", "job_id": jid, "op": "upscale", "model": "nearest-x4",
             "inputs": [{"name": "image", "image": {"width": 64, "height": 64, "channels": 3, "dtype": "u8"}}],
             "codecs": [["zlib", 64 * 64 * 3, 1]]}
        import zlib
        return [json.dumps(h).encode(), zlib.compress(bytes(rng.randint(0, 1 << 20)), 9)]
    if kind == 5:     # flipped bytes of a valid request
        frames = P.enhance_request(jid, op="upscale", model="nearest-x4", image=P.ImageSpec(4, 4, 3, P.DType.U8),
                                   pixels=bytes(48))
        head = bytearray(frames[0])
        for _ in range(rng.randint(1, 6)):
            head[rng.randrange(len(head))] = rng.randrange(256)
        return [bytes(head), frames[1]]
    if kind == 6:
        return [b'{"v":3,"type":"ping","job_id":"' + jid.encode() + b'","n":' + b"9" * 20000 + b"}"]
    if kind == 7:
        return [b"\xff" * 70000]                                   # over the header limit
    if kind == 8:
        return [json.dumps({"v": rng.choice([0, 1, 2, 4, "3", None]), "type": "ping", "job_id": jid}).encode()]
    return [b'{"v":3,"type":"shutdown","job_id":"' + jid.encode() + b'"}', b"x"]   # a shutdown with junk


def _silent(frames) -> bool:
    """A message the protocol answers with nothing: a valid cancel or received (of no job)."""
    try:
        return P.decode(frames, expect=P.REQUEST_TYPES).type in (P.MsgType.CANCEL, P.MsgType.RECEIVED)
    except P.ProtocolError:
        return False


def test_10000_hostile_messages_backend_alive_and_correct(backend):
    rng = random.Random(14)
    s = curve_dealer(backend.endpoint)
    s.setsockopt(zmq.SNDHWM, 0)
    sent = answered = expected = 0
    multi_line = 0
    kinds: dict = {}
    t0 = time.monotonic()
    try:
        window = 250
        for start in range(0, 10_000, window):
            for i in range(start, start + window):
                frames = _hostile(rng, i)
                expected += 0 if _silent(frames) else 1
                s.send_multipart(frames)
                sent += 1
            while answered < expected and s.poll(5000):
                reply = s.recv_multipart()
                answered += 1
                h = json.loads(reply[0])
                kinds[h.get("kind") or h.get("type")] = kinds.get(h.get("kind") or h.get("type"), 0) + 1
                if "\n" in h.get("message", ""):
                    multi_line += 1
    finally:
        s.close()
    took = time.monotonic() - t0
    figure("raw fuzz", f"{sent} hostile messages ({sent - expected} valid cancels needing no answer), "
                       f"{answered} answered ({kinds}), {took:.1f} s ({sent / took:.0f} msg/s), backend alive")
    assert answered >= expected, f"only {answered} of {expected} hostile messages answered"
    assert multi_line == 0
    assert backend.proc.poll() is None
    img = np.random.default_rng(3).integers(0, 256, (13, 17, 3), dtype=np.uint8)
    out, _ = enhance(backend.endpoint, img)
    np.testing.assert_array_equal(out, nearest(img, 4))
    assert "internal error" not in backend.log()


# --------------------------------------------------------------------------- no trust, no pixels

def test_unauthenticated_client_gets_nothing(backend):
    ctx = zmq.Context.instance()
    plain = ctx.socket(zmq.DEALER)           # no CURVE at all
    plain.setsockopt(zmq.LINGER, 0)
    plain.connect(backend.endpoint)
    wrong = ctx.socket(zmq.DEALER)           # CURVE, right server key, a key nobody allowed
    pub, sec = zmq.curve_keypair()
    wrong.setsockopt(zmq.LINGER, 0)
    wrong.curve_serverkey, wrong.curve_publickey, wrong.curve_secretkey = K.server_public(), pub, sec
    wrong.connect(backend.endpoint)
    try:
        for s in (plain, wrong):
            s.send_multipart(P.encode(P.new_header(P.MsgType.PING, "intruder")))
            s.send_multipart(P.enhance_request("intr", op="upscale", model="nearest-x4",
                                               image=P.ImageSpec(4, 4, 3, P.DType.U8), pixels=bytes(48)))
        assert not plain.poll(2000) and not wrong.poll(500)       # not even an error: nothing
    finally:
        plain.close()
        wrong.close()
    with Client(backend.endpoint) as c:
        caps = c.ping()
    assert caps["queue"]["done"] >= 0 and "refused a client with an unknown key" in backend.log()
    # the refused key is named with how to allow it
    assert K.fingerprint(pub) in backend.log()


class Squatter:
    """A fake server on the port: a plain ZeroMQ ROUTER, or a CURVE one with its own key, that
    would answer anything with a forged result.  Counts what reaches it."""

    def __init__(self, curve: bool):
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        if curve:
            from zmq.auth.thread import ThreadAuthenticator
            self.auth = ThreadAuthenticator(self.ctx)
            self.auth.start()
            self.auth.configure_curve(domain="*", location=zmq.auth.CURVE_ALLOW_ANY)
            pub, sec = zmq.curve_keypair()
            self.sock.curve_server, self.sock.curve_publickey, self.sock.curve_secretkey = True, pub, sec
        else:
            self.auth = None
        self.port = self.sock.bind_to_random_port("tcp://127.0.0.1")
        self.received = 0
        self.stop = threading.Event()
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self):
        while not self.stop.is_set():
            if self.sock.poll(100):
                ident, head, *rest = self.sock.recv_multipart()
                self.received += 1 + len(rest)
                h = json.loads(head)
                forged = P.result_reply(h["job_id"], P.ImageSpec(16, 16, 3, P.DType.U8), bytes(768))
                self.sock.send_multipart([ident, *forged])

    def close(self):
        self.stop.set()
        self.t.join(5)
        self.sock.close(0)
        if self.auth:
            self.auth.stop()
        self.ctx.term()


@pytest.mark.parametrize("curve", [False, True], ids=["plain-squatter", "curve-squatter"])
def test_squatting_server_gets_no_pixels_and_no_trust(curve, tmp_path):
    sq = Squatter(curve)
    endpoint = f"tcp://127.0.0.1:{sq.port}"
    try:
        t0 = time.monotonic()
        with Client(endpoint) as c:
            with pytest.raises(ClientError) as ei:
                c.ping(timeout=1.5)
        assert ei.value.kind == "untrusted" and "not a backend this client trusts" in str(ei.value)
        assert f"held by your process {os.getpid()}" in str(ei.value)      # which one answered
        secret = np.full((4, 4, 3), 77, np.uint8)
        with pytest.raises(ClientError) as ei:
            enhance(endpoint, secret, client=Client(endpoint, idle_timeout=8))
        assert ei.value.kind == "untrusted"
        # the CLI: no output file, a clear one-line error, never a forged image
        env = dict(os.environ, AI_ENHANCE_ENDPOINT=endpoint)
        r = subprocess.run([*CLI, "enhance", "-o", str(tmp_path / "o.png"), "--no-autostart"], env=env,
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 1 and not (tmp_path / "o.png").exists()
        assert "not a backend this client trusts" in r.stderr and len(r.stderr.strip().splitlines()) == 1
        took = time.monotonic() - t0
        assert sq.received == 0, "the squatter received a message"
        figure(f"squatter ({'CURVE, own key' if curve else 'plain'})",
               f"0 messages delivered to it, ping/enhance/CLI all refused in {took:.1f} s")
    finally:
        sq.close()


# --------------------------------------------------------------------------- load

def test_20_clients_x_3_jobs_none_lost_or_mixed(tiny_models_dir, tmp_path):
    b = start_serve(tiny_models_dir, tmp_path, "--queue-size", "64")
    results, errors = {}, []
    rng = np.random.default_rng(20)
    imgs = {(c, j): rng.integers(0, 256, (24 + c, 20 + j, 3), dtype=np.uint8) for c in range(20) for j in range(3)}

    def client(ci):
        try:
            with Client(b.endpoint) as c:
                for j in range(3):
                    results[(ci, j)] = enhance(b.endpoint, imgs[(ci, j)], scale=2, client=c)[0]
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append((ci, repr(e)))

    t0 = time.monotonic()
    try:
        threads = [threading.Thread(target=client, args=(i,)) for i in range(20)]
        [t.start() for t in threads]
        [t.join(300) for t in threads]
        took = time.monotonic() - t0
        assert not errors, errors
        assert len(results) == 60
        for key, out in results.items():
            np.testing.assert_array_equal(out, nearest(imgs[key], 2))
        with Client(b.endpoint) as c:
            q = c.ping()["queue"]
        assert q["unread"] == 0 and q["running"] == 0      # every result confirmed read
        figure("20 clients x 3 jobs", f"60/60 results bit-identical, 0 lost, 0 mixed, {took:.1f} s")
    finally:
        b.stop()


def test_result_larger_than_a_frame_arrives_in_bands_and_oversize_is_refused_first(tiny_models_dir, tmp_path):
    b = start_serve(tiny_models_dir, tmp_path, "--max-frame-mb", "1")
    try:
        img = np.random.default_rng(5).integers(0, 65536, (200, 180, 3), dtype=np.uint16)
        t0 = time.monotonic()
        out, res = enhance(b.endpoint, img, scale=4)        # 720x800x3 u16 = 3.5 MB > 1 MB frames
        np.testing.assert_array_equal(out, nearest(img, 4))
        figure("banded result", f"{out.nbytes / 1e6:.1f} MB result in 1 MB row bands, bit-identical, "
                                f"{time.monotonic() - t0:.1f} s")
        wide = np.zeros((2, 17000, 3), np.uint8)
        t0 = time.monotonic()
        with pytest.raises(ClientError) as ei:
            enhance(b.endpoint, wide, scale=4)
        assert ei.value.kind == "too_large" and "use scale 3 or less" in str(ei.value)
        assert time.monotonic() - t0 < 3
        assert "x4 17000x2" not in b.log()            # refused before it was queued
    finally:
        b.stop()


# --------------------------------------------------------------------------- stopping

SLOW = dict(model="realesrgan-x4plus", scale=4, tile=32)


def _slow_img():
    return np.random.default_rng(1).integers(0, 256, (512, 512, 3), dtype=np.uint8)


def _run_clients(endpoint, n):
    """n clients with slow jobs in threads; returns (errors dict, started events, done times)."""
    errors, done, started = {}, {}, [threading.Event() for _ in range(n)]

    def go(i):
        try:
            enhance(endpoint, _slow_img(), on_progress=lambda f, t: started[i].set(), **SLOW)
        except ClientError as e:
            errors[i] = e
        done[i] = time.monotonic()

    threads = [threading.Thread(target=go, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
        time.sleep(0.2)
    return errors, started, done, threads


@pytest.mark.parametrize("how", ["SIGTERM", "SIGINT", "ai-enhance stop"])
def test_stop_mid_job_tells_every_client_within_5s(how, tiny_models_dir, tmp_path):
    b = start_serve(tiny_models_dir, tmp_path, "--stop-grace", "3")
    try:
        errors, started, done, threads = _run_clients(b.endpoint, 3)
        assert started[0].wait(60), "the first job never started"
        t0 = time.monotonic()
        if how == "ai-enhance stop":
            r = subprocess.run([*CLI, "stop", "--endpoint", b.endpoint], capture_output=True, text=True,
                               timeout=60)
            assert r.returncode == 0 and "stopped the backend" in r.stdout, r.stdout + r.stderr
        else:
            b.proc.send_signal(getattr(signal, how))
        [t.join(30) for t in threads]
        told = max(done.values()) - t0
        assert set(errors) == {0, 1, 2}
        for e in errors.values():
            assert e.kind == "shutting_down" and "backend shutting down" in str(e), str(e)
        assert told <= 5.0, f"clients told after {told:.1f} s"
        assert b.proc.wait(15) == 0
        log = b.log()
        assert "shutting down" in log and "stopped (" in log
        figure(f"stop mid-job ({how})", f"3/3 clients told 'backend shutting down' in {told:.2f} s, "
                                        "exit status 0")
    finally:
        b.stop()


def test_stop_is_refused_to_another_key(backend):
    pub, sec = zmq.curve_keypair()
    K.allow(K.keys_dir(), pub.decode(), "not-the-owner")
    s = zmq.Context.instance().socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.curve_serverkey, s.curve_publickey, s.curve_secretkey = K.server_public(), pub, sec
    s.connect(backend.endpoint)
    try:
        s.send_multipart(P.shutdown_request("x"))
        assert s.poll(5000)
        h = json.loads(s.recv_multipart()[0])
        assert h["kind"] == "bad_request" and "owner" in h["message"]
    finally:
        s.close()
        for p in (K.keys_dir() / "allowed").glob("not-the-owner*.key"):
            p.unlink()
    with Client(backend.endpoint) as c:
        assert c.ping()["queue"]["stopping"] is False


def test_killed_backend_is_reported_as_a_crash(tiny_models_dir, tmp_path):
    b = start_serve(tiny_models_dir, tmp_path)
    try:
        errors, started, done, threads = _run_clients(b.endpoint, 1)
        assert started[0].wait(60)
        t0 = time.monotonic()
        b.proc.send_signal(signal.SIGKILL)
        threads[0].join(30)
        took = done[0] - t0
        e = errors[0]
        assert e.kind == "crashed" and "crashed" in str(e) and "stopped answering" not in str(e), str(e)
        assert took < 8, took
        assert f"backend pid {b.proc.pid} died without a goodbye" in b.log()
        figure("backend SIGKILLed mid-job", f"client reports a crash after {took:.1f} s (not a 30 s "
                                            "'stopped answering'); the log says so")
    finally:
        b.stop()


# --------------------------------------------------------------------------- endpoints

def test_ipv6_loopback_works(tiny_models_dir, tmp_path):
    with socket.socket(socket.AF_INET6) as s:
        try:
            s.bind(("::1", 0))
        except OSError as e:
            pytest.skip(f"no IPv6 loopback here ({e})")
        port = s.getsockname()[1]
    b = start_serve(tiny_models_dir, tmp_path, endpoint=f"tcp://[::1]:{port}")
    try:
        img = np.random.default_rng(6).integers(0, 256, (9, 7, 3), dtype=np.uint8)
        np.testing.assert_array_equal(enhance(b.endpoint, img)[0], nearest(img, 4))
    finally:
        b.stop()


@pytest.mark.parametrize("endpoint, needle", [
    ("tcp://127.0.0.1:0", "1 to 65535"), ("tcp://me@127.0.0.1:5599", "no user"),
    ("ipc://@ai-enhance", "abstract"), ("tcp://0.0.0.0:5599", "--listen"),
])
def test_bad_endpoints_refused_with_a_message(endpoint, needle, tiny_models_dir, tmp_path):
    r = subprocess.run([*CLI, "serve", "--endpoint", endpoint, "--models-dir", str(tiny_models_dir),
                        "--log-file", str(tmp_path / "l.log")], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and needle in r.stdout and "Traceback" not in r.stdout + r.stderr
    env = dict(os.environ, AI_ENHANCE_ENDPOINT=endpoint)
    r = subprocess.run([*CLI, "enhance", "-o", str(tmp_path / "o.png"), "--no-autostart"], env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_cli_refuses_to_overwrite_the_input_before_any_job(backend, tmp_path):
    import cv2

    src = tmp_path / "photo.png"
    img = np.random.default_rng(7).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    cv2.imwrite(str(src), img)
    before = src.read_bytes()
    env = dict(os.environ, AI_ENHANCE_ENDPOINT=backend.endpoint)
    for extra in ([], ["--overwrite"]):
        r = subprocess.run([*CLI, "enhance", str(src), "-o", str(src), "--model", "nearest-x4", *extra],
                           env=env, capture_output=True, text=True, timeout=60)
        assert r.returncode == 2 and "input file itself" in r.stderr
    assert src.read_bytes() == before
    other = tmp_path / "exists.png"
    other.write_bytes(b"keep me")
    r = subprocess.run([*CLI, "enhance", str(src), "-o", str(other), "--model", "nearest-x4"], env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "--overwrite" in r.stderr and other.read_bytes() == b"keep me"
    r = subprocess.run([*CLI, "enhance", str(src), "-o", str(other), "--model", "nearest-x4", "--overwrite"],
                       env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert cv2.imread(str(other)).shape == (32, 32, 3)


def test_a_paused_client_does_not_blame_the_backend(tiny_models_dir, tmp_path):
    """SIGSTOP the client mid-job past the backend's client timeout: on SIGCONT it says that IT
    was paused (the backend rightly gave the job up), not that the backend stopped answering."""
    b = start_serve(tiny_models_dir, tmp_path, "--client-timeout", "3")
    code = (
        "import sys, numpy as np\n"
        f"sys.path[:0] = [{str(tmp_path)!r}]\n"
        "from ai_enhance_client import protocol as P\n"
        "from ai_enhance_client.client import Client, ClientError\n"
        "img = np.random.default_rng(1).integers(0, 256, (512, 512, 3), dtype=np.uint8)\n"
        "started = []\n"
        "def prog(f, t):\n"
        "    if not started:\n"
        "        started.append(1); print('RUNNING', flush=True)\n"
        "try:\n"
        f"    with Client({b.endpoint!r}) as c:\n"
        "        c.enhance(op='upscale', model='realesrgan-x4plus', scale=4, tile=32, on_progress=prog,\n"
        "                  spec=P.ImageSpec(512, 512, 3, P.DType.U8), pixels=img.tobytes())\n"
        "    print('DONE')\n"
        "except ClientError as e:\n"
        "    print('ERROR', e.kind, e)\n")
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "RUNNING"
        p.send_signal(signal.SIGSTOP)
        time.sleep(8)
        p.send_signal(signal.SIGCONT)
        out = p.communicate(timeout=60)[0]
        assert out.startswith("ERROR client_gone") and "this program was paused" in out, out
        assert "stopped answering" not in out
        with Client(b.endpoint) as c:
            assert c.ping() is not None
    finally:
        p.kill()
        b.stop()


def test_a_backend_of_another_installation_is_refused_and_named(backend, tmp_path):
    """The settings say which installation's backend this client expects (the installer writes
    it); one of another installation answering on the port is refused with its pid and how to
    stop it, never used."""
    from ai_enhance_client.settings import Settings

    other = tmp_path / "other-install" / "venv"
    other.mkdir(parents=True)
    s = Settings(endpoint=backend.endpoint, serve_command=["x"], installation=str(other))
    with Client(backend.endpoint, settings=s) as c:
        with pytest.raises(ClientError) as ei:
            c.ensure_backend(wait=5)
    msg = str(ei.value)
    assert ei.value.kind == "identity" and f"pid {backend.proc.pid}" in msg and "another installation" in msg
    assert "ai-enhance stop --endpoint" in msg and str(other) in msg
    # the CLI says the same in one line and writes nothing
    cfg = tmp_path / "settings.json"
    cfg.write_text(json.dumps({"endpoint": backend.endpoint, "installation": str(other)}))
    env = dict(os.environ, AI_ENHANCE_CONFIG=str(cfg))
    env.pop("AI_ENHANCE_ENDPOINT", None)
    r = subprocess.run([*CLI, "enhance", "-o", str(tmp_path / "o.png"), "--model", "nearest-x4"], env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "another installation" in r.stderr and not (tmp_path / "o.png").exists()
    # the right installation is accepted
    s.installation = os.path.realpath(sys.prefix)
    with Client(backend.endpoint, settings=s) as c:
        assert c.ensure_backend(wait=5)["pid"] == backend.proc.pid
