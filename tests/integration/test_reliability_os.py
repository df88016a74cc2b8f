"""Reliability suite (issue 14), part 2: what needs the operating system's help (root here; each
test skips with the reason where it cannot run).

- a memory-capped backend: in a memory cgroup (v1 or v2) it sizes tiles from the cgroup's limit
  and finishes, and when a job is made to exceed the limit anyway the OOM killer's kill is
  reported to the client as a crash with the reason, in the log too; under RLIMIT_AS the
  allocator's / oneDNN's failure triggers the smaller-tile fallback and the job finishes;
- a second OS user can neither use this user's backend nor read its keys, and a port it squats
  is named as "held by another user";
- a remote backend across two network namespaces (a veth pair made by the test): the laptop's
  key is refused until `ai-enhance keys allow`, then the job completes, compressed on the link;
- hostile model files: a pickle that would run code, a link to a system file, a truncated file,
  a broken link: refused with their reasons, nothing executed, the backend serves on.
"""
from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from ai_enhance_client import keys as K
from ai_enhance_client import protocol as P
from ai_enhance_client.client import Client, ClientError
from test_reliability import enhance, figure, nearest
from testkit import REPO, free_port, make_rrdb, serve_env, start_serve

CLI = [sys.executable, "-m", "ai_enhance"]
ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
PYPATH = os.pathsep.join([str(REPO / "backend"), str(REPO / "plugin" / "ai-enhance")] +
                         [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])


@pytest.fixture(scope="module")
def heavy_models(tmp_path_factory) -> Path:
    """A models folder with `heavy-x4`: an RRDBNet with 64 filters (the activations of the real
    x4plus, ~14 KB per input pixel) but one block (fast)."""
    d = tmp_path_factory.mktemp("heavy-models")
    make_rrdb(d / "heavy-x4.pth", scale=4, num_filters=64, num_blocks=1, seed=9)
    return d


def _start(models: Path, tmp: Path, *args, prefix: list[str] | None = None, env: dict | None = None,
           endpoint: str | None = None, wait: float = 120.0):
    """`ai-enhance serve` behind a wrapper command (cgroup, ulimit, netns); waits for a pong."""
    endpoint = endpoint or f"tcp://127.0.0.1:{free_port()}"
    log = tmp / f"serve-{uuid.uuid4().hex[:6]}.log"
    cmd = [*(prefix or []), *CLI, "serve", "--endpoint", endpoint, "--models-dir", str(models),
           "--log-file", str(log), *args]
    e = serve_env(models, PYTHONPATH=PYPATH)
    e.update(env or {})
    err = open(tmp / "serve-stderr.log", "ab")
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, env=e,
                            start_new_session=True)
    deadline = time.monotonic() + wait
    with Client(endpoint) as c:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"serve exited {proc.returncode}: {(tmp / 'serve-stderr.log').read_text()[-1500:]}"
                                   f"{log.read_text()[-1500:] if log.exists() else ''}")
            caps = c.ping(timeout=0.5)
            if caps is not None:
                return proc, endpoint, log, caps
    proc.kill()
    raise RuntimeError("serve did not answer")


def _stop(proc) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


# --------------------------------------------------------------------------- memory caps

def _memory_cgroup(limit: int) -> tuple[Path, str] | None:
    """A fresh memory cgroup with ``limit`` bytes (v1 memory controller or v2), or None."""
    if not ROOT:
        return None
    name = f"aie-test-{uuid.uuid4().hex[:8]}"
    v1 = Path("/sys/fs/cgroup/memory")
    if (v1 / "memory.limit_in_bytes").is_file():
        d = v1 / name
        try:
            d.mkdir()
            (d / "memory.limit_in_bytes").write_text(str(limit))
            if (d / "memory.memsw.limit_in_bytes").exists():
                (d / "memory.memsw.limit_in_bytes").write_text(str(limit))
            return d, "v1"
        except OSError:
            shutil.rmtree(d, ignore_errors=True)
    for base in (Path("/sys/fs/cgroup"), Path("/sys/fs/cgroup/unified")):
        ctl = base / "cgroup.subtree_control"
        if ctl.is_file() and "memory" in (base / "cgroup.controllers").read_text():
            d = base / name
            try:
                if "memory" not in ctl.read_text():
                    ctl.write_text("+memory")
                d.mkdir()
                (d / "memory.max").write_text(str(limit))
                if (d / "memory.swap.max").exists():
                    (d / "memory.swap.max").write_text("0")
                return d, "v2"
            except OSError:
                try:
                    d.rmdir()
                except OSError:
                    pass
    return None


def _remove_cgroup(d: Path) -> None:
    for _ in range(50):
        try:
            d.rmdir()
            return
        except OSError:
            time.sleep(0.2)


def test_cgroup_capped_backend_sizes_tiles_from_the_limit_and_reports_an_oom_kill(heavy_models, tmp_path):
    limit = 1800 << 20
    cg = _memory_cgroup(limit)
    if cg is None:
        pytest.skip("cannot create a memory cgroup here (needs root and a cgroup v1 memory controller "
                    "or a cgroup v2 with the memory controller)")
    d, kind = cg
    wrap = ["sh", "-c", f'echo $$ > "{d}/cgroup.procs" && exec "$@"', "_"]
    proc, endpoint, log, caps = _start(heavy_models, tmp_path, prefix=wrap)
    try:
        mem = caps["memory"]
        assert mem["source"] == f"cgroup {kind}" and mem["limit_mb"] == limit >> 20, mem
        img = np.random.default_rng(2).integers(0, 256, (256, 256, 3), dtype=np.uint8)
        t0 = time.monotonic()
        out, res = enhance(endpoint, img, model="heavy-x4", scale=4, tile=0,
                           client=Client(endpoint, idle_timeout=120))
        took = time.monotonic() - t0
        assert out.shape == (1024, 1024, 3)
        tile = res.info.get("tile")
        # the automatic tile fits the cgroup's headroom, not the host's free memory
        assert tile and tile * tile * 14_000 < mem["available_mb"] << 20, (tile, mem)
        assert proc.poll() is None
        figure(f"memory cgroup {kind} ({limit >> 20} MB)", f"auto tile {tile}px from the cgroup's "
               f"{mem['available_mb']} MB headroom (the host has {mem.get('host_mb') or 'GBs'} free); "
               f"256x256 x4 finished in {took:.0f} s, no OOM kill")
        # made to exceed the limit anyway (one 512 px piece: ~4 GB of activations): the kernel kills
        # it; the client says crash + why, and the log says so
        big = np.random.default_rng(3).integers(0, 256, (512, 512, 3), dtype=np.uint8)
        t0 = time.monotonic()
        with pytest.raises(ClientError) as ei:
            enhance(endpoint, big, model="heavy-x4", scale=4, tile=2048, client=Client(endpoint, idle_timeout=60))
        took = time.monotonic() - t0
        assert ei.value.kind == "crashed", str(ei.value)
        assert "out-of-memory killer of its memory cgroup" in str(ei.value), str(ei.value)
        assert "died without a goodbye" in log.read_text() and "out-of-memory" in log.read_text()
        figure("backend OOM-killed by its cgroup", f"client: 'crashed ... killed by the out-of-memory "
               f"killer of its memory cgroup (limit {limit >> 20} MB)' {took:.1f} s after the request; log says so")
    finally:
        _stop(proc)
        _remove_cgroup(d)


def test_rlimit_as_backend_falls_back_to_smaller_tiles_and_finishes(heavy_models, tmp_path):
    if not shutil.which("sh"):
        pytest.skip("needs sh for ulimit")
    limit_kb = 5 * 1024 * 1024       # torch's address space after start is ~3.9 GB here
    wrap = ["sh", "-c", f'ulimit -v {limit_kb} && exec "$@"', "_"]
    proc, endpoint, log, caps = _start(heavy_models, tmp_path, prefix=wrap)
    try:
        assert caps["memory"]["source"] == "RLIMIT_AS", caps["memory"]
        img = np.random.default_rng(4).integers(0, 256, (320, 320, 3), dtype=np.uint8)
        t0 = time.monotonic()
        out, res = enhance(endpoint, img, model="heavy-x4", scale=4, tile=1024,
                           client=Client(endpoint, idle_timeout=120))
        took = time.monotonic() - t0
        assert out.shape == (1280, 1280, 3) and proc.poll() is None
        text = log.read_text()
        assert "out of memory with" in text and "retrying with" in text, text[-2000:]
        figure("RLIMIT_AS 5 GB", f"explicit 1024 px tile failed to allocate; fell back to {res.info.get('tile')} px "
               f"and finished 320x320 x4 in {took:.0f} s")
    finally:
        _stop(proc)


# --------------------------------------------------------------------------- a second OS user

OTHER = "aie-other"


@pytest.fixture(scope="module")
def other_user():
    if not ROOT or not shutil.which("useradd") or not shutil.which("setpriv"):
        pytest.skip("needs root, useradd and setpriv to act as a second OS user")
    created = False
    try:
        pw = pwd.getpwnam(OTHER)
    except KeyError:
        r = subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", OTHER],
                           capture_output=True, text=True)
        if r.returncode != 0:
            pytest.skip(f"cannot create a second user ({r.stderr.strip()})")
        pw = pwd.getpwnam(OTHER)
        created = True
    yield pw
    if created:
        subprocess.run(["userdel", OTHER], capture_output=True)


def _as_other(pw, code: str, home: Path | None = None, env: dict | None = None, timeout=120, wait=True):
    import tempfile
    home = Path(tempfile.mkdtemp(prefix="aie-other-home-"))    # in /tmp: the other user can reach it
    os.chown(home, pw.pw_uid, pw.pw_gid)
    e = {"HOME": str(home), "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": PYPATH,
         "XDG_CONFIG_HOME": str(home / ".config")}
    e.update(env or {})
    cmd = ["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--clear-groups",
           sys.executable, "-c", code]
    if not wait:
        return subprocess.Popen(cmd, env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(cmd, env=e, capture_output=True, text=True, timeout=timeout)


def test_a_second_user_cannot_use_the_backend_nor_read_its_keys(backend, other_user, tmp_path):
    home = tmp_path / "other-home"
    my_keys = K.keys_dir()
    code = textwrap.dedent(f"""
        import json, zmq
        from ai_enhance_client.client import Client, ClientError
        from ai_enhance_client import keys as K
        out = {{}}
        try:
            open({str(my_keys / 'client.key_secret')!r}).read(); out["read_secret"] = True
        except OSError as e:
            out["read_secret"] = e.__class__.__name__
        # its own keys, its own idea of the backend key: not trusted either way
        for label, server_key in (("own keys", None), ("knows our public key", {K.server_public(my_keys).decode()!r})):
            try:
                with Client({backend.endpoint!r}, server_key=server_key) as c:
                    out[label] = c.ping(timeout=3)
            except ClientError as e:
                out[label] = [e.kind, str(e)]
        print(json.dumps(out))
    """)
    r = _as_other(other_user, code, home)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["read_secret"] == "PermissionError"
    assert out["own keys"][0] == "untrusted" and "not a backend this client trusts" in out["own keys"][1]
    assert out["knows our public key"][0] == "untrusted" and "refused this client's key" in out["knows our public key"][1]
    with Client(backend.endpoint) as c:
        assert c.ping() is not None
    figure("second OS user", "cannot read the keys (PermissionError); with its own keys: handshake refused; "
           "knowing the backend's public key: its client key refused; no message reached the backend")


def test_a_port_squatted_by_another_user_is_named(other_user, tmp_path):
    port = free_port()
    code = textwrap.dedent(f"""
        import zmq, time, sys
        s = zmq.Context().socket(zmq.ROUTER); s.bind("tcp://127.0.0.1:{port}")
        print("ready", flush=True); time.sleep(30)
    """)
    p = _as_other(other_user, code, tmp_path / "h2", wait=False)
    try:
        assert p.stdout.readline().strip() == "ready"
        with Client(f"tcp://127.0.0.1:{port}") as c:
            with pytest.raises(ClientError) as ei:
                c.ensure_backend(wait=5)
        assert f"held by another user: {OTHER}" in str(ei.value) and ei.value.kind == "untrusted"
    finally:
        p.kill()
        p.wait()


# --------------------------------------------------------------------------- remote, two network namespaces

def _sh(*cmd):
    return subprocess.run(list(cmd), capture_output=True, text=True)


@pytest.fixture
def two_namespaces():
    if not ROOT or not shutil.which("ip"):
        pytest.skip("needs root and iproute2 to create network namespaces")
    tag = uuid.uuid4().hex[:6]
    a, b = f"aie-gpu-{tag}", f"aie-lap-{tag}"
    va, vb = f"va{tag}", f"vb{tag}"
    subnet = 100 + int(tag[:2], 16) % 100
    ips = (f"10.231.{subnet}.1", f"10.231.{subnet}.2")
    steps = [("ip", "netns", "add", a), ("ip", "netns", "add", b),
             ("ip", "link", "add", va, "type", "veth", "peer", "name", vb),
             ("ip", "link", "set", va, "netns", a), ("ip", "link", "set", vb, "netns", b),
             ("ip", "-n", a, "addr", "add", f"{ips[0]}/24", "dev", va),
             ("ip", "-n", b, "addr", "add", f"{ips[1]}/24", "dev", vb),
             ("ip", "-n", a, "link", "set", va, "up"), ("ip", "-n", b, "link", "set", vb, "up"),
             ("ip", "-n", a, "link", "set", "lo", "up"), ("ip", "-n", b, "link", "set", "lo", "up")]
    try:
        for st in steps:
            r = _sh(*st)
            if r.returncode != 0:
                pytest.skip(f"cannot build two network namespaces here: `{' '.join(st)}`: {r.stderr.strip()}")
        yield a, b, ips
    finally:
        _sh("ip", "netns", "del", a)
        _sh("ip", "netns", "del", b)


def test_remote_backend_across_two_network_namespaces(two_namespaces, tiny_models_dir, tmp_path):
    ns_gpu, ns_laptop, (ip_gpu, _) = two_namespaces
    port = free_port()
    listen = f"tcp://{ip_gpu}:{port}"
    server_keys = K.keys_dir()                   # the GPU box's user
    laptop_keys = tmp_path / "laptop-keys"
    K.ensure(laptop_keys)
    log = tmp_path / "gpu.log"
    env = serve_env(tiny_models_dir, PYTHONPATH=PYPATH)
    gpu = subprocess.Popen(["ip", "netns", "exec", ns_gpu, *CLI, "serve", "--endpoint", f"tcp://127.0.0.1:{port}",
                            "--listen", listen, "--models-dir", str(tiny_models_dir), "--log-file", str(log)],
                           env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=open(tmp_path / "gpu.err", "wb"), start_new_session=True)
    flag = tmp_path / "allowed.flag"
    code = textwrap.dedent(f"""
        import json, os, time, numpy as np
        from pathlib import Path
        from ai_enhance_client import protocol as P
        from ai_enhance_client.client import Client, ClientError
        ep = {listen!r}
        # 1. before `keys allow`: refused (wait for the backend to come up first)
        t0 = time.monotonic(); refused = None
        while time.monotonic() - t0 < 120 and refused is None:
            try:
                with Client(ep) as c:
                    c.ping(timeout=1)
            except ClientError as e:
                refused = [e.kind, str(e)]
        print(json.dumps({{"refused": refused}}), flush=True)
        while not Path({str(flag)!r}).exists():
            time.sleep(0.1)
        # 2. allowed: a job, compressed on the link
        y, x = np.mgrid[0:600, 0:640]
        img = np.dstack([(x * 0.4) % 256, (y * 0.3) % 256, (x + y) % 256]).astype(np.uint8)
        spec = P.ImageSpec(640, 600, 3, P.DType.U8)
        t0 = time.monotonic()
        with Client(ep) as c:
            assert c.compress()
            caps = c.ensure_backend(wait=30)
            res = c.enhance(op="upscale", model="nearest-x4", spec=spec, pixels=img.tobytes(), scale=2)
        out = np.frombuffer(res.pixels, np.uint8).reshape(1200, 1280, 3)
        ok = bool((out == img.repeat(2, 0).repeat(2, 1)).all())
        print(json.dumps({{"ok": ok, "seconds": time.monotonic() - t0, "pid": caps["pid"]}}), flush=True)
    """)
    lap_env = dict(os.environ, PYTHONPATH=PYPATH, AI_ENHANCE_KEYS=str(laptop_keys),
                   AI_ENHANCE_SERVER_KEY=K.server_public(server_keys).decode(), AI_ENHANCE_CONFIG=str(tmp_path / "none"),
                   AI_ENHANCE_COMPRESS="1")     # a slow link: deflate large frames
    lap = subprocess.Popen(["ip", "netns", "exec", ns_laptop, sys.executable, "-c", code], env=lap_env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = json.loads(lap.stdout.readline())
        assert first["refused"] and first["refused"][0] == "untrusted", (first, lap.stderr.read() if lap.poll() else "")
        assert "refused this client's key" in first["refused"][1]
        # no route from the laptop namespace to the GPU box's loopback: only --listen is reachable
        r = subprocess.run([*CLI, "keys", "allow", K.client_pair(laptop_keys).public.decode(), "--name", "laptop"],
                           env=dict(os.environ, AI_ENHANCE_KEYS=str(server_keys)), capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        t_allow = time.monotonic()
        flag.write_text("go")
        second = json.loads(lap.stdout.readline() or "{}")
        assert second.get("ok") is True, (second, lap.stderr.read())
        assert "deflated" in log.read_text()            # the result was compressed on the link
        figure("remote across two network namespaces", f"refused before `keys allow`; allowed at once after it; "
               f"640x600 x2 job bit-identical in {second['seconds']:.1f} s over the veth link, deflated "
               f"({time.monotonic() - t_allow:.1f} s from allow to result)")
    finally:
        lap.kill()
        gpu.terminate()
        try:
            gpu.wait(15)
        except subprocess.TimeoutExpired:
            gpu.kill()
        for p in (server_keys / "allowed").glob("laptop*.key"):
            p.unlink()


# --------------------------------------------------------------------------- hostile model files

def test_hostile_model_files_are_refused_with_reasons(tiny_models_dir, tmp_path):
    import torch

    d = tmp_path / "models"
    d.mkdir()
    shutil.copy(tiny_models_dir / "nearest-x4.pth", d / "nearest-x4.pth")
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"params": Evil()}, d / "RealESRGAN_x4plus.pth")          # code in a pickle, official name
    torch.save({"params": Evil()}, d / "evil-custom.pth")
    (d / "realesr-animevideov3.pth").symlink_to("/etc/shadow")            # a system file
    (d / "truncated.pth").write_bytes((tiny_models_dir / "nearest-x4.pth").read_bytes()[:3000])
    (d / "dangling.safetensors").symlink_to(tmp_path / "nowhere.safetensors")
    b = start_serve(d, tmp_path)
    try:
        for model, kind in (("realesrgan-x4plus", "model_corrupt"), ("evil-custom", "model_corrupt"),
                            ("realesr-animevideov3", "model_corrupt"), ("truncated", "model_corrupt")):
            with pytest.raises(ClientError) as ei:
                enhance(b.endpoint, np.zeros((8, 8, 3), np.uint8), model=model)
            assert ei.value.kind in (kind, "unknown_model"), (model, str(ei.value))
        img = np.random.default_rng(8).integers(0, 256, (6, 6, 3), dtype=np.uint8)
        np.testing.assert_array_equal(enhance(b.endpoint, img)[0], nearest(img, 4))     # serves on
        r = subprocess.run([*CLI, "models", "list", "--models-dir", str(d)], capture_output=True, text=True,
                           timeout=120)
        assert r.returncode == 0, r.stderr
        text = r.stdout
        assert "outside the models folder" in text and "realesr-animevideov3.pth" in text
        assert "broken link" in text and "truncated.pth" in text and "evil-custom.pth" in text
        row = next(line for line in text.splitlines() if line.startswith("realesr-animevideov3 "))
        assert "missing" in row                       # never "installed, unverified"
        assert not marker.exists(), "a pickled command ran"
        figure("hostile model files", "pickle with code (official and custom name), link to /etc/shadow, truncated, "
               "dangling link: all refused with a reason in `models list`, nothing executed, backend serves on")
    finally:
        b.stop()
