"""Shared fixtures (helpers live in testkit.py)."""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
# Models run on torch in the tests (and in the backends they start): converting a model for
# OpenVINO, the default on CPUs, takes seconds to minutes; tests of that path ask for it.
os.environ.setdefault("AI_ENHANCE_RUNTIME", "torch")
# Every backend and client of the suite authenticates with CURVE keys from one private folder of
# the session (created at first use), never the keys of the user running the tests.
os.environ.setdefault("AI_ENHANCE_KEYS", tempfile.mkdtemp(prefix="aie-test-keys-"))


def _raise_open_files_limit(want: int = 65536) -> None:
    """The suite runs ~100 real backends, GIMPs and a Ray cluster from one pytest process whose
    ZeroMQ contexts and sockets each hold event fds; a default soft limit of 1024 ran out in CI
    ("Too many open files") late in a full run. Raise the soft limit (and, as root, the hard one)."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= want:
        return
    if hard != resource.RLIM_INFINITY and hard < want:
        try:                                   # root may raise the hard limit too
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
            return
        except (ValueError, OSError):
            pass
    top = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if top > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (top, hard))


_raise_open_files_limit()


def _raise_zmq_socket_limit(want: int = 16384) -> None:
    """libzmq refuses a context's 1024th live socket with EMFILE ("Too many open files") whatever
    the fd limit. Over a full run the test process's shared context came to ~1000 sockets that
    libzmq still held (their eventfds visible in /proc; Python had closed them): not reproduced
    in isolation nor in the client's own loops (jobs, cancels, errors, dead ports), so the cause is
    still open; until it is found the suite must not die of it. Set before the first socket."""
    import zmq
    ctx = zmq.Context.instance()
    if ctx.get(zmq.MAX_SOCKETS) < want:
        ctx.set(zmq.MAX_SOCKETS, want)


_raise_zmq_socket_limit()
_OLD_CONTEXTS: list = []      # kept alive: a context whose threads are stuck must never be term()ed


@pytest.fixture(autouse=True, scope="module")
def _fresh_zmq_context_per_module():
    """Each test module gets a fresh shared ZeroMQ context. In full runs the test process's one
    context ended up holding sockets libzmq never released, and then no longer connected to new
    backends at all (pings unanswered by a backend that logged "serving on"); the CLI in a
    subprocess worked meanwhile. Cause not found; this keeps one module's damage from the next."""
    yield
    import zmq
    old = zmq.Context._instance
    if old is not None:
        _OLD_CONTEXTS.append(old)
        zmq.Context._instance = None
        _raise_zmq_socket_limit()


from testkit import (Backend, free_port, link, make_compact, make_rrdb, serve_env,  # noqa: E402,F401
                     start_serve)


@pytest.fixture(scope="session")
def tiny_models_dir(tmp_path_factory) -> Path:
    """A models folder with tiny random networks under the catalogue's official file names, plus
    custom files: `nearest-x4.pth` (exact nearest-neighbour x4) and `nearest-x1.pth` (identity)."""
    d = tmp_path_factory.mktemp("models")
    make_compact(d / "realesr-animevideov3.pth", seed=1)
    make_rrdb(d / "RealESRGAN_x4plus.pth", scale=4, seed=2)
    make_rrdb(d / "RealESRGAN_x2plus.pth", scale=2, seed=3)
    make_compact(d / "realesr-general-x4v3.pth", seed=4)
    make_compact(d / "realesr-general-wdn-x4v3.pth", seed=5)
    make_compact(d / "nearest-x4.pth", zero_last=True, seed=6)
    make_compact(d / "nearest-x1.pth", scale=1, zero_last=True, seed=7)
    # a random DDColor (the tiny ConvNeXt encoder, cached by tests/randnets.py): Colorize has a model
    from randnets import path_of
    link(path_of("ddcolor"), d / "ddcolor_paper_tiny.pth")
    return d


@pytest.fixture(scope="session")
def real_models_dir() -> Path:
    """The folder with real weights (AI_ENHANCE_MODELS_DIR, set by CI to ../shared/weights)."""
    env = os.environ.get("AI_ENHANCE_MODELS_DIR")
    if not env or not Path(env).is_dir():
        pytest.skip("real weights not available: set AI_ENHANCE_MODELS_DIR to a folder with "
                    "RealESRGAN_x4plus.pth etc. (CI uses ../shared/weights)")
    return Path(env)


@pytest.fixture(scope="module")
def backend(tiny_models_dir, tmp_path_factory):
    """A real backend over real ZeroMQ on a free loopback port, serving the tiny models."""
    b = start_serve(tiny_models_dir, tmp_path_factory.mktemp("serve"))
    yield b
    b.stop()


@pytest.fixture
def fresh_backend(tiny_models_dir, tmp_path):
    """A backend of this test's own (for tests that kill or overload it)."""
    b = start_serve(tiny_models_dir, tmp_path)
    yield b
    b.stop()




def _open_fds() -> dict[str, int]:
    kinds: dict[str, int] = {}
    for fd in os.listdir("/proc/self/fd") if os.path.isdir("/proc/self/fd") else ():
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        kind = target.split(":[")[0] if target.startswith(("anon_inode", "socket", "pipe")) else "file"
        kinds[kind] = kinds.get(kind, 0) + 1
    return kinds


_FDS_AT_START = _open_fds()


_FD_GROWTH: list[tuple[int, str]] = []       # (event fds added, test id), for the summary


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    before = _open_fds().get("anon_inode", 0)
    yield
    grew = _open_fds().get("anon_inode", 0) - before
    if grew > 2:
        _FD_GROWTH.append((grew, item.nodeid))


def pytest_terminal_summary(terminalreporter):
    """Open fds of the test process at the start and the end, and the tests after which most
    event fds (ZeroMQ sockets libzmq still holds) stayed open: a leak shows here long before it
    runs into a limit."""
    end = _open_fds()
    terminalreporter.write_line(f"open fds of the test process: start {sum(_FDS_AT_START.values())}, "
                                f"end {sum(end.values())} {dict(sorted(end.items()))}")
    for grew, nodeid in sorted(_FD_GROWTH, reverse=True)[:8]:
        terminalreporter.write_line(f"  +{grew} event fds left open after {nodeid}")
