"""Issue 14, pure parts: endpoints, keys, settings, memory limits, OOM forms, output files, the
models folder's links."""
from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest

from ai_enhance_client import keys as K
from ai_enhance_client import settings as S
from ai_enhance_client.settings import EndpointError, parse_endpoint


# --------------------------------------------------------------------------- endpoints

@pytest.mark.parametrize("ep, loopback, ipv6", [
    ("tcp://127.0.0.1:5588", True, False), ("tcp://[::1]:5588", True, True),
    ("tcp://localhost:9", True, False), ("ipc:///run/user/1/x/sock", True, False),
    ("tcp://192.168.1.20:5588", False, False), ("tcp://gpu-box.lan:5588", False, False),
    ("tcp://0.0.0.0:5588", False, False), ("tcp://[::]:5588", False, True),
])
def test_good_endpoints(ep, loopback, ipv6):
    e = parse_endpoint(ep)
    assert e.loopback is loopback and e.ipv6 is ipv6


@pytest.mark.parametrize("ep, needle", [
    ("tcp://127.0.0.1:0", "1 to 65535"), ("tcp://127.0.0.1:*", "1 to 65535"),
    ("tcp://127.0.0.1:70000", "1 to 65535"), ("tcp://a@127.0.0.1:5588", "no user"),
    ("tcp://127.0.0.1:5588@evil", "no user"), ("ipc://@ai-enhance", "abstract"),
    ("ipc://relative/sock", "absolute"), ("tcp://::1:5588", "brackets"), ("tcp://[zz]:5", "IPv6"),
    ("tcp://127.0.0.1", "host and a port"), ("http://127.0.0.1:80", "unsupported"), ("", "bad endpoint"),
    ("tcp://127.0.0.1:5588 ", "bad endpoint"), ("127.0.0.1:5588", "no scheme"), ("tcp://ho st:1", "bad endpoint"),
])
def test_bad_endpoints_are_one_line_with_an_example(ep, needle):
    with pytest.raises(EndpointError, match=needle) as ei:
        parse_endpoint(ep)
    assert "\n" not in str(ei.value)


# --------------------------------------------------------------------------- keys

def test_keys_created_private_and_readable_by_pyzmq(tmp_path):
    import zmq.auth

    d = K.ensure(tmp_path / "k")
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    for name in ("client", "server"):
        assert stat.S_IMODE((d / f"{name}.key_secret").stat().st_mode) == 0o600
        pub, sec = zmq.auth.load_certificate(str(d / f"{name}.key_secret"))   # pyzmq's own reader
        pair = K.read_pair(d, name)
        assert (pub, sec) == (pair.public, pair.secret) and len(pub) == 40
    before = K.client_pair(d)
    K.ensure(d)                                   # never replaces existing keys
    assert K.client_pair(d) == before
    assert K.allowed_keys(d) == {before.public}


def test_keys_folder_permissions_repaired_and_foreign_secret_refused(tmp_path):
    d = K.ensure(tmp_path / "k")
    os.chmod(d, 0o755)
    os.chmod(d / "client.key_secret", 0o644)
    K.ensure(d)
    K.client_pair(d)
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    assert stat.S_IMODE((d / "client.key_secret").stat().st_mode) == 0o600
    if os.geteuid() == 0:
        os.chown(d / "client.key_secret", 12345, 12345)
        with pytest.raises(K.KeysError, match="another user"):
            K.client_pair(d)


def test_allow_and_parse(tmp_path):
    import zmq

    d = K.ensure(tmp_path / "k")
    pub, _ = zmq.curve_keypair()
    p = K.allow(d, "  " + pub.decode() + "\n", "laptop")
    assert p.parent.name == "allowed" and pub in K.allowed_keys(d)
    assert K.allow(d, pub.decode()) == p                  # idempotent
    for bad in ("", "x" * 39, "not a key at all, really not at all!!!!!", "a" * 40 + "b"):
        with pytest.raises(K.KeysError, match="CURVE public key"):
            K.parse_public(bad)


def test_server_key_from_env_settings_or_folder(tmp_path, monkeypatch):
    import zmq

    d = K.ensure(tmp_path / "k")
    own = K.server_pair(d).public
    other, _ = zmq.curve_keypair()
    monkeypatch.delenv(K.ENV_SERVER_KEY, raising=False)
    assert K.server_public(d) == own
    assert K.server_public(d, other.decode()) == other
    monkeypatch.setenv(K.ENV_SERVER_KEY, own.decode())
    assert K.server_public(d, other.decode()) == own


def test_settings_merge_plugin_file_user_file_env(tmp_path, monkeypatch):
    plugin = tmp_path / "plug"
    plugin.mkdir()
    (plugin / S.PLUGIN_SETTINGS).write_text(json.dumps({"endpoint": "tcp://127.0.0.1:7000",
                                                        "keys_dir": "keys", "installation": "/opt/a"}))
    user = tmp_path / "user.json"
    user.write_text(json.dumps({"endpoint": "tcp://127.0.0.1:7001", "serve_command": ["x", "serve"]}))
    monkeypatch.setattr(S, "plugin_settings_path", lambda: plugin / S.PLUGIN_SETTINGS)
    monkeypatch.setenv(S.ENV_CONFIG, str(user))
    for v in (S.ENV_ENDPOINT, S.ENV_KEYS, S.ENV_SERVER_KEY, S.ENV_SERVE_COMMAND):
        monkeypatch.delenv(v, raising=False)
    s = S.Settings.load()
    assert s.endpoint == "tcp://127.0.0.1:7001" and s.serve_command == ["x", "serve"]
    assert s.keys_dir == str(plugin / "keys") and s.installation == "/opt/a"   # relative to its file
    monkeypatch.setenv(S.ENV_KEYS, str(tmp_path / "envkeys"))
    assert S.Settings.load().keys_path() == tmp_path / "envkeys"
    # save keeps fields it is not given, "" removes one
    S.save("tcp://127.0.0.1:7002", ["y"], user, server_key="k" * 40)
    S.save("tcp://127.0.0.1:7002", ["y"], user, installation="/opt/b")
    data = json.loads(user.read_text())
    assert data["server_key"] == "k" * 40 and data["installation"] == "/opt/b"
    S.save("tcp://127.0.0.1:7002", ["y"], user, server_key="")
    assert "server_key" not in json.loads(user.read_text())


# --------------------------------------------------------------------------- memory limits

MOUNTINFO = """31 23 0:28 / /sys/fs/cgroup rw - tmpfs tmpfs rw
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""
MOUNTINFO_V2 = "30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw\n"


def fake_reader(files):
    return lambda path: files.get(path)


def test_cgroup_v1_limit_tightest_on_the_path():
    from ai_enhance.runtime.devices import cgroup_memory

    files = {"/sys/fs/cgroup/memory/a/b/memory.limit_in_bytes": 9 << 30,
             "/sys/fs/cgroup/memory/a/b/memory.usage_in_bytes": 1 << 30,
             "/sys/fs/cgroup/memory/a/memory.limit_in_bytes": 2 << 30,
             "/sys/fs/cgroup/memory/a/memory.usage_in_bytes": 1 << 29,
             "/sys/fs/cgroup/memory/memory.limit_in_bytes": 9223372036854771712}
    lim, used, kind = cgroup_memory("4:memory:/a/b\n0::/", MOUNTINFO, fake_reader(files))
    assert (lim, used, kind) == (2 << 30, 1 << 29, "v1")


def test_cgroup_v2_and_unlimited():
    from ai_enhance.runtime.devices import cgroup_memory

    files = {"/sys/fs/cgroup/user.slice/app/memory.max": 512 << 20,
             "/sys/fs/cgroup/user.slice/app/memory.current": 100 << 20}
    assert cgroup_memory("0::/user.slice/app\n", MOUNTINFO_V2, fake_reader(files)) == (512 << 20, 100 << 20, "v2")
    none = {"/sys/fs/cgroup/x/memory.max": None, "/sys/fs/cgroup/x/memory.current": 5}
    assert cgroup_memory("0::/x\n", MOUNTINFO_V2, fake_reader(none)) == (None, None, None)


def test_available_is_the_smallest_headroom_and_budget_follows():
    from ai_enhance.runtime import devices as D

    m = D.MemoryLimits(host_available=20 << 30, cgroup_limit=2 << 30, cgroup_usage=1 << 30, cgroup_kind="v1")
    assert m.available == 1 << 30 and m.source() == "cgroup v1"
    m.rlimit_as, m.address_space = 6 << 30, int(5.75 * (1 << 30))
    assert m.available == 1 << 28 and m.source() == "RLIMIT_AS"
    assert json.dumps(m.to_json())
    # a quarter of what is really there; under 512 MB available, half of it, not a fixed 256 MB
    assert D.memory_budget("cpu", 1 << 30) == 256 << 20
    assert D.memory_budget("cpu", 200 << 20) == 100 << 20


def test_rlimit_as_is_seen_by_a_child(tmp_path):
    import subprocess
    import sys

    code = ("import resource; resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30)); "
            "from ai_enhance.runtime import devices as D; m = D.memory_limits(); "
            "print(m.rlimit_as, m.available <= 3 << 30, m.source())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))).stdout.split()
    assert out == [str(3 << 30), "True", "RLIMIT_AS"]


@pytest.mark.parametrize("err, oom", [
    (RuntimeError("could not create a primitive"), True),              # oneDNN under RLIMIT_AS
    (RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: "
                  "you tried to allocate 123 bytes"), True),
    (RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"), True),
    (RuntimeError("HIP out of memory"), True),
    (RuntimeError("std::bad_alloc"), True),
    (OSError(12, "Cannot allocate memory"), True),
    (MemoryError(), True),
    (RuntimeError("could not create a descriptor for a dilated convolution"), False),
    (RuntimeError("size mismatch"), False),
])
def test_every_oom_form_is_seen(err, oom):
    from ai_enhance.runtime.devices import is_oom
    assert is_oom(err) is oom


# --------------------------------------------------------------------------- output files

def test_check_output(tmp_path):
    from ai_enhance.images import ImageFileError, check_output

    src = tmp_path / "in.png"
    src.write_bytes(b"x")
    with pytest.raises(ImageFileError, match="input file itself"):
        check_output(src, [src], overwrite=True)
    link = tmp_path / "link.png"
    link.symlink_to(src)
    with pytest.raises(ImageFileError, match="input file itself"):
        check_output(link, [src], overwrite=True)
    with pytest.raises(ImageFileError, match="--overwrite"):
        check_output(tmp_path / "in.png", [tmp_path / "other.png"])
    with pytest.raises(ImageFileError, match=".png, .jpg or .tif"):
        check_output(tmp_path / "out.gif", [src])
    (tmp_path / "dir.png").mkdir()
    with pytest.raises(ImageFileError, match="is a folder"):
        check_output(tmp_path / "dir.png", [src], overwrite=True)
    assert check_output(tmp_path / "new" / "out.PNG", [src]).name == "out.PNG"


def test_disk_full_is_reported_as_disk_full(tmp_path, monkeypatch):
    import builtins
    import errno

    from ai_enhance import images

    real_open = builtins.open

    def full(path, mode="r", *a, **k):
        if "w" in mode and str(path).endswith(".part.png"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_open(path, mode, *a, **k)

    monkeypatch.setattr(builtins, "open", full)
    with pytest.raises(images.ImageFileError, match="disk full"):
        images.write_image(tmp_path / "o.png", np.zeros((4, 4, 3), np.uint8))
    assert list(tmp_path.iterdir()) == []


def test_gif_frames_counted(tmp_path):
    import cv2

    from ai_enhance.images import frame_count
    frames = [np.full((8, 8, 3), i * 50, np.uint8) for i in range(3)]
    assert cv2.imwritemulti(str(tmp_path / "a.gif"), frames)
    assert frame_count(tmp_path / "a.gif") == 3
    cv2.imwrite(str(tmp_path / "b.png"), frames[0])
    assert frame_count(tmp_path / "b.png") == 1


# --------------------------------------------------------------------------- models folder links

def test_links_out_of_the_models_folder_are_refused(tmp_path):
    import torch

    from ai_enhance.errors import EnhanceError
    from ai_enhance.models import ModelStore

    d = tmp_path / "models"
    d.mkdir()
    outside = tmp_path / "secret.pth"
    torch.save({"params": {"w": torch.zeros(1)}}, outside)
    (d / "RealESRGAN_x4plus.pth").symlink_to("/etc/passwd")         # a catalogue name
    (d / "custom-link.pth").symlink_to(outside)                       # a custom name
    (d / "dangling.pth").symlink_to(tmp_path / "gone.pth")
    (d / "hostile.pth").write_bytes(b"\x80\x04cos\nsystem\n(S'echo pwned'\ntR.")   # a pickle that runs code
    inside = d / "sub"
    inside.mkdir()
    store = ModelStore(d)
    by_id = {i.id: i for i in store.list()}
    assert not by_id["realesrgan-x4plus"].installed and "outside" in by_id["realesrgan-x4plus"].description
    assert "custom-link" not in by_id
    problems = dict(store.problems())
    assert "outside the models folder" in problems["RealESRGAN_x4plus.pth"]
    assert "outside the models folder" in problems["custom-link.pth"]
    assert "broken link" in problems["dangling.pth"]
    assert "hostile.pth" in problems and "pwned" not in problems["hostile.pth"]
    with pytest.raises(EnhanceError) as ei:
        store.resolve("realesrgan-x4plus")
    assert ei.value.kind.value == "model_corrupt" and "outside" in ei.value.message


def test_compression_only_on_network_links_when_asked(monkeypatch):
    from ai_enhance_client.client import Client

    monkeypatch.delenv(S.ENV_COMPRESS, raising=False)
    on = S.Settings(compress=True)
    assert not Client("tcp://127.0.0.1:5588", settings=on).compress()          # loopback: never
    assert not Client("ipc:///tmp/x/s", settings=on).compress()
    assert Client("tcp://192.168.1.20:5588", settings=on).compress()
    assert not Client("tcp://192.168.1.20:5588", settings=S.Settings()).compress()   # default: off
    monkeypatch.setenv(S.ENV_COMPRESS, "1")
    assert S.Settings.load().compress is True


def test_concurrent_first_use_ends_with_one_key_pair(tmp_path):
    """GIMP and the CLI creating the keys at the same moment must agree on one pair."""
    import threading

    d = tmp_path / "k"
    seen, errors = [], []

    def first_use():
        try:
            seen.append((K.client_pair(d), K.server_public(d)))
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=first_use) for _ in range(8)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert not errors, errors
    assert len({s for s in seen}) == 1
    assert seen[0][0] == K.read_pair(d, "client") and seen[0][1] == K.read_key_file(d / "server.key").public
    assert not list(d.glob(".*tmp"))
