"""Resumable, verified model downloads against a local HTTP server (no internet)."""
from __future__ import annotations

import hashlib
import io
import os

import pytest
from inst_helpers import SHARED_WEIGHTS, Served, file_server  # noqa: F401 (fixture)

from aie_install.download import DownloadError, copy_verified, fetch, sha256_file
from aie_install.ui import Console


def payload(n: int, seed: int = 1) -> bytes:
    out = bytearray()
    block = hashlib.sha256(str(seed).encode()).digest()
    while len(out) < n:
        block = hashlib.sha256(block).digest()
        out += block
    return bytes(out[:n])


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def quiet() -> Console:
    return Console(stream=io.StringIO())


def test_plain_download_verifies_and_renames(file_server, tmp_path):
    data = payload(3_000_000)
    file_server.files["m.pth"] = Served(data)
    dest = tmp_path / "models" / "m.pth"
    c = quiet()
    assert fetch(file_server.url("m.pth"), dest, sha(data), console=c, retry_delay=0) == "downloaded"
    assert dest.read_bytes() == data
    assert not dest.with_name("m.pth.part").exists()
    assert file_server.requests == [("m.pth", None)]
    # progress was reported (not a tty: a line per 10 %)
    assert "100% of 3.0 MB" in c.stream.getvalue()
    # a second call finds it verified and does not touch the network
    assert fetch(file_server.url("m.pth"), dest, sha(data), retry_delay=0) == "present"
    assert len(file_server.requests) == 1


def test_interrupted_transfer_keeps_part_and_next_run_resumes_with_range(file_server, tmp_path):
    data = payload(2_500_000, seed=2)
    file_server.files["big.pth"] = Served(data, drop_after=1_000_000, drops_left=1)
    dest = tmp_path / "big.pth"
    part = tmp_path / "big.pth.part"
    with pytest.raises(DownloadError) as ei:
        fetch(file_server.url("big.pth"), dest, sha(data), retries=0, retry_delay=0)
    msg = str(ei.value)
    assert "\n" not in msg and "interrupted" in msg and "run the installer again to resume" in msg
    assert not dest.exists()
    assert part.is_file() and 0 < part.stat().st_size <= 1_000_000
    kept = part.stat().st_size
    assert part.read_bytes() == data[:kept]

    # "next run": asks for the rest only, and the result verifies
    assert fetch(file_server.url("big.pth"), dest, sha(data), retries=0, retry_delay=0) == "resumed"
    assert file_server.requests[-1] == ("big.pth", f"bytes={kept}-")
    assert dest.read_bytes() == data and not part.exists()


def test_drop_is_retried_within_one_run(file_server, tmp_path):
    data = payload(1_500_000, seed=3)
    file_server.files["r.pth"] = Served(data, drop_after=500_000, drops_left=2)
    dest = tmp_path / "r.pth"
    c = quiet()
    assert fetch(file_server.url("r.pth"), dest, sha(data), retries=3, retry_delay=0, console=c) == "resumed"
    assert dest.read_bytes() == data
    ranges = [r for _, r in file_server.requests]
    assert ranges[0] is None and all(r and r.startswith("bytes=") for r in ranges[1:])
    assert len(ranges) == 3
    assert "resuming" in c.stream.getvalue()


def test_wrong_sha256_deletes_the_file_and_says_so(file_server, tmp_path):
    data = payload(400_000, seed=4)
    file_server.files["bad.pth"] = Served(data)
    dest = tmp_path / "bad.pth"
    with pytest.raises(DownloadError) as ei:
        fetch(file_server.url("bad.pth"), dest, "0" * 64, retry_delay=0)
    msg = str(ei.value)
    assert "sha256 mismatch" in msg and "deleted" in msg and "\n" not in msg
    assert not dest.exists() and not (tmp_path / "bad.pth.part").exists()


@pytest.mark.parametrize("code, words", [(404, "HTTP 404 not found"), (500, "HTTP 500"), (403, "HTTP 403")])
def test_http_errors_are_one_clear_line(file_server, tmp_path, code, words):
    file_server.files["x.pth"] = Served(b"", status=code)
    with pytest.raises(DownloadError) as ei:
        fetch(file_server.url("x.pth"), tmp_path / "x.pth", "a" * 64, retries=1, retry_delay=0)
    msg = str(ei.value)
    assert words in msg and file_server.url("x.pth") in msg and "\n" not in msg
    assert ("try again later" in msg) == (code >= 500)
    # 5xx is retried, 4xx is not
    assert len(file_server.requests) == (2 if code >= 500 else 1)
    assert not (tmp_path / "x.pth").exists()


def test_server_without_range_support_restarts_from_zero(file_server, tmp_path):
    data = payload(900_000, seed=5)
    file_server.files["nr.pth"] = Served(data, ranges=False)
    dest = tmp_path / "nr.pth"
    part = tmp_path / "nr.pth.part"
    part.write_bytes(b"garbage that must not survive" * 100)
    c = quiet()
    assert fetch(file_server.url("nr.pth"), dest, sha(data), console=c, retry_delay=0) == "downloaded"
    assert file_server.requests == [("nr.pth", f"bytes={len(b'garbage that must not survive') * 100}-")]
    assert dest.read_bytes() == data
    assert "does not support resuming; starting again from 0" in c.stream.getvalue()


def test_complete_part_file_is_finished_on_416(file_server, tmp_path):
    data = payload(100_000, seed=6)
    file_server.files["done.pth"] = Served(data)
    (tmp_path / "done.pth.part").write_bytes(data)
    assert fetch(file_server.url("done.pth"), tmp_path / "done.pth", sha(data), retry_delay=0) == "resumed"
    assert (tmp_path / "done.pth").read_bytes() == data


def test_unpinned_url_is_refused_without_any_request(file_server, tmp_path):
    file_server.files["u.pth"] = Served(b"x")
    with pytest.raises(DownloadError) as ei:
        fetch(file_server.url("u.pth"), tmp_path / "u.pth", None)
    msg = str(ei.value)
    assert "refusing to download u.pth" in msg and "no sha256" in msg and "--models-from" in msg
    assert file_server.requests == []


def test_unreachable_host_is_one_line(tmp_path):
    with pytest.raises(DownloadError) as ei:
        fetch("http://127.0.0.1:9/none.pth", tmp_path / "none.pth", "a" * 64, retries=0, retry_delay=0)
    assert "unreachable" in str(ei.value) and "--models-from" in str(ei.value)


def test_real_weights_resume_through_the_server(file_server, tmp_path):
    src = SHARED_WEIGHTS / "realesr-animevideov3.pth"
    if not src.is_file():
        pytest.skip(f"shared weights not available ({src})")
    data = src.read_bytes()
    expected = "92df4c59a5bc92174c89b2bd29734f47e5ed740974a7788fa8eab1b9478e3b6c"  # ../shared/weights/README.md
    file_server.files[src.name] = Served(data, drop_after=len(data) // 3, drops_left=1)
    dest = tmp_path / src.name
    with pytest.raises(DownloadError):
        fetch(file_server.url(src.name), dest, expected, retries=0, retry_delay=0)
    assert fetch(file_server.url(src.name), dest, expected, retries=0, retry_delay=0) == "resumed"
    assert sha256_file(dest) == expected


def test_copy_from_local_folder_labels_verified_or_unverified(tmp_path):
    src = tmp_path / "src.pth"
    src.write_bytes(payload(50_000, seed=7))
    good = sha(src.read_bytes())
    label, digest = copy_verified(src, tmp_path / "a" / "m.pth", good)
    assert (label, digest) == ("verified", good)
    label, digest = copy_verified(src, tmp_path / "b" / "m.pth", "f" * 64)
    assert (label, digest) == ("unverified", good)
    assert (tmp_path / "b" / "m.pth").read_bytes() == src.read_bytes()
    assert not any(p.name.endswith(".part") for p in tmp_path.rglob("*"))
    assert oct(os.stat(tmp_path / "b" / "m.pth").st_mode & 0o777) == oct(0o644)
