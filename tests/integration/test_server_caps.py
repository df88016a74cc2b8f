"""Capabilities (model list, devices) come from a cache rebuilt on a thread of their own: a slow
rebuild (hashing a newly dropped 300 MB model, a slow device probe) never stalls pings and
heartbeats on the I/O thread."""
from __future__ import annotations

import threading
import time

from ai_enhance.server import ServeConfig, Server
from ai_enhance_client.client import Client
from testkit import free_port


class SlowCapsEngine:
    """An engine whose capabilities take 3 s after the first call; counts the calls."""

    def __init__(self):
        self.calls = 0

    def capabilities(self):
        self.calls += 1
        if self.calls > 1:
            time.sleep(3.0)
        return {"models": [{"id": f"m{self.calls}"}], "device": {"kind": "cpu"}, "ops": ["noop"]}

    def loaded_models(self):
        return []

    def unload_idle(self):
        return []


def test_ping_is_answered_while_capabilities_rebuild(tmp_path):
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    eng = SlowCapsEngine()
    server = Server(ServeConfig(endpoint=endpoint, log_file=tmp_path / "log"), engine=eng)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        with Client(endpoint) as c:
            deadline = time.monotonic() + 10
            while c.ping(timeout=0.5) is None:
                assert time.monotonic() < deadline
            server.refresh_capabilities()       # a rebuild is now running (3 s)
            time.sleep(0.3)
            times = []
            for _ in range(5):
                t0 = time.monotonic()
                caps = c.ping(timeout=2.0)
                times.append(time.monotonic() - t0)
                assert caps is not None and caps["models"][0]["id"] == "m1"   # the cached answer
            assert max(times) < 0.5, times
            deadline = time.monotonic() + 10
            while c.ping(timeout=1.0)["models"][0]["id"] == "m1":              # then the new one
                assert time.monotonic() < deadline
                time.sleep(0.2)
    finally:
        server.stop()
        t.join(10)
