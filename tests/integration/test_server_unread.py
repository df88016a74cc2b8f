"""Unread results are bounded per client and in total (issue 14): a client that never reads
pins nothing beyond the bounds; past the total the OLDEST waiting result is dropped with an error;
a `received` hands over the next one.  In-process server with a fake engine (no torch)."""
from __future__ import annotations

import json
import threading
import time

import numpy as np
import zmq

from ai_enhance.jobs import JobOutput
from ai_enhance.server import ServeConfig, Server
from ai_enhance_client import protocol as P
from testkit import curve_dealer, free_port

MB = 1 << 20


class EchoEngine:
    """Returns the input image as the result (1 MB each here)."""

    def capabilities(self):
        return {"models": [], "device": {"kind": "cpu"}, "ops": ["noop"]}

    def loaded_models(self):
        return []

    def unload_idle(self):
        return []

    def run(self, req, inputs, progress, is_cancelled):
        return JobOutput(np.array(inputs["image"]))


def _job(sock, jid):
    spec = P.ImageSpec(512, 512, 4, P.DType.U8)           # 1 MiB
    sock.send_multipart(P.enhance_request(jid, op="noop", image=spec, pixels=bytes(spec.nbytes)))


def _drain(sock, seconds):
    got = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if sock.poll(100):
            frames = sock.recv_multipart()
            got.append((json.loads(frames[0]), len(frames)))
    return got


def test_unread_results_bounded_and_oldest_dropped(tmp_path):
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    cfg = ServeConfig(endpoint=endpoint, log_file=tmp_path / "log", queue_size=16,
                      max_unread_client_bytes=2 * MB, max_unread_total_bytes=3 * MB, unread_expiry=60)
    server = Server(cfg, engine=EchoEngine())
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    a = curve_dealer(endpoint)
    b = curve_dealer(endpoint)
    try:
        deadline = time.monotonic() + 20
        a.send_multipart(P.encode(P.new_header(P.MsgType.PING, "p")))
        while not a.poll(200):
            assert time.monotonic() < deadline
        a.recv_multipart()
        # client A: 3 jobs of 1 MB, confirms nothing: 2 MB per client are handed over, the third
        # waits in the backend (ZeroMQ holds nothing more for A)
        for i in range(3):
            _job(a, f"a{i}")
        got = _drain(a, 2.5)
        assert [h["job_id"] for h, _ in got if h["type"] == "result"] == ["a0", "a1"]
        assert server.unread["a2"].frames is not None            # waiting
        # A confirms one: the waiting one is handed over at once
        a.send_multipart(P.received_request("a0"))
        got = _drain(a, 1.5)
        assert [h["job_id"] for h, _ in got if h["type"] == "result"] == ["a2"]
        # client B: the total (3 MB: a1, a2 unconfirmed + b0) is reached; b1 would pass it: the
        # OLDEST waiting result is dropped with an error (here b1 itself, the only one waiting)
        _job(b, "b0")
        got = _drain(b, 1.5)
        assert [h["job_id"] for h, _ in got if h["type"] == "result"] == ["b0"]
        _job(b, "b1")
        got = _drain(b, 1.5)
        errs = [h for h, _ in got if h["type"] == "error"]
        assert [h["job_id"] for h in errs] == ["b1"] and errs[0]["kind"] == "busy"
        assert "result dropped" in errs[0]["message"] and errs[0].get("hint")
        assert sum(u.nbytes for u in server.unread.values()) <= cfg.max_unread_total_bytes
        # confirmed results free the bound: a job after that is delivered
        for jid in ("a1", "a2"):
            a.send_multipart(P.received_request(jid))
        time.sleep(0.3)
        _job(b, "b2")
        assert [h["job_id"] for h, _ in _drain(b, 1.5) if h["type"] == "result"] == ["b2"]
    finally:
        a.close()
        b.close()
        server.stop()
        t.join(15)
