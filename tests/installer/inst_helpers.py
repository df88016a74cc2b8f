"""Helpers of the installer tests (not a conftest.py: a second `conftest` module would shadow
tests/conftest.py for `from conftest import ...` elsewhere): the installer's modules on sys.path,
a local HTTP server with Range support (and misbehaviours on demand), fake GIMP Pythons."""
from __future__ import annotations

import http.server
import os
import socket
import stat
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SHARED_WEIGHTS = REPO.parent / "shared" / "weights"
sys.path.insert(0, str(REPO / "installer"))


@dataclass
class Served:
    data: bytes
    status: int = 200
    drop_after: int | None = None     # close the connection after this many body bytes...
    drops_left: int = 0               # ...this many times
    ranges: bool = True               # honour Range requests


@dataclass
class FileServer:
    base: str
    files: dict = field(default_factory=dict)
    requests: list = field(default_factory=list)   # (path, Range header or None)

    def url(self, name: str) -> str:
        return f"{self.base}/{name}"


def _handler(state: FileServer):
    class H(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):  # quiet
            pass

        def _serve(self, body: bool) -> None:
            name = self.path.lstrip("/")
            rng = self.headers.get("Range")
            state.requests.append((name, rng))
            f = state.files.get(name)
            if f is None or f.status != 200:
                code = 404 if f is None else f.status
                msg = b"nope"
                self.send_response(code)
                self.send_header("Content-Length", str(len(msg)))
                self.end_headers()
                if body:
                    self.wfile.write(msg)
                return
            data, start = f.data, 0
            if rng and f.ranges:
                start = int(rng.split("=")[1].split("-")[0])
                if start >= len(data):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            else:
                self.send_response(200)
                self.send_header("Accept-Ranges", "bytes" if f.ranges else "none")
            chunk = data[start:]
            self.send_header("Content-Length", str(len(chunk)))
            self.end_headers()
            if not body:
                return
            if f.drop_after is not None and f.drops_left > 0:
                f.drops_left -= 1
                self.wfile.write(chunk[: f.drop_after])
                self.wfile.flush()
                self.close_connection = True
                try:
                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                return
            self.wfile.write(chunk)

        def do_GET(self):
            self._serve(True)

        def do_HEAD(self):
            self._serve(False)

    return H


@pytest.fixture
def file_server():
    state = FileServer("")
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    srv.daemon_threads = True
    state.base = f"http://127.0.0.1:{srv.server_address[1]}"
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    yield state
    srv.shutdown()
    srv.server_close()


def make_fake_python(dirpath: Path, *, gi: bool = True, zmq: bool = True) -> Path:
    """A 'GIMP Python': this Python with a stub `gi` and, when zmq=False, a `zmq` that fails to
    import (shadowing the real one)."""
    stubs = dirpath / "stubs"
    stubs.mkdir(parents=True, exist_ok=True)
    if gi:
        (stubs / "gi").mkdir(exist_ok=True)
        (stubs / "gi" / "__init__.py").write_text("# stub PyGObject for tests\n")
    else:
        (stubs / "gi").mkdir(exist_ok=True)
        (stubs / "gi" / "__init__.py").write_text("raise ImportError(\"No module named 'gi'\")\n")
    if not zmq:
        (stubs / "zmq").mkdir(exist_ok=True)
        (stubs / "zmq" / "__init__.py").write_text("raise ImportError(\"No module named 'zmq'\")\n")
    exe = dirpath / "gimp-python"
    exe.write_text(f"#!/bin/sh\nPYTHONPATH='{stubs}' exec '{sys.executable}' \"$@\"\n")
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return exe


def clean_env(home: Path, **extra) -> dict:
    """An environment whose per-user folders all lie in `home` (no XDG or ai-enhance overrides)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("XDG_", "AI_ENHANCE_")) and k not in ("HOME", "APPDATA", "LOCALAPPDATA")}
    env["HOME"] = str(home)
    env["PYTHONUNBUFFERED"] = "1"
    env.update({k: str(v) for k, v in extra.items()})
    return env
