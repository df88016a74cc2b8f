"""`ai-enhance batch` against a real backend (tiny models) on real files: JPEG from a "camera"
(EXIF with orientation, ICC, XMP), 8- and 16-bit TIFF, 16-bit gray PNG, RGBA PNG, WebP, a corrupt
file; relative paths, metadata, exit status and summary, resume (skip / redo what changed),
interrupted runs (SIGINT, SIGKILL) and BUSY back-off."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageCms

from ai_enhance.batch import files as F
from ai_enhance.batch.inputs import gather
from ai_enhance.batch.manifest import Manifest
from ai_enhance.batch.progress import Progress, Status
from ai_enhance.batch.run import Options, plan, run_local
from ai_enhance.batch.runners import ClientRunner
from ai_enhance_client import recipes

ICC = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
XMP = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
       b'<rdf:Description xmlns:tiff="http://ns.adobe.com/tiff/1.0/" tiff:Orientation="6"/></rdf:RDF></x:xmpmeta>')

#: nearest-x4 is an exact nearest-neighbour x4 net: at full strength the output is known exactly
EXACT = ["--op", "upscale", "--model", "nearest-x4", "--scale", "4", "--strength", "1", "--mask", "full"]


def exif(orientation: int, w: int, h: int) -> bytes:
    ex = Image.Exif()
    ex[0x010F], ex[0x0110], ex[0x0112] = "Canon", "EOS R6", orientation
    ex[0x8769] = {0x9003: "2023:07:14 18:02:11", 0xA002: w, 0xA003: h}
    return ex.tobytes()


def ifd0_exif() -> bytes:
    """IFD0 tags only (Pillow's libtiff writer cannot write an EXIF sub-IFD into an LZW TIFF)."""
    ex = Image.Exif()
    ex[0x010F], ex[0x0110], ex[0x8298] = "Nikon", "Coolscan", "(c) family archive"
    return ex.tobytes()


def nn4(a: np.ndarray) -> np.ndarray:
    return np.repeat(np.repeat(a, 4, 0), 4, 1)


@pytest.fixture(scope="module")
def shoot(tmp_path_factory) -> Path:
    from skimage import data

    root = tmp_path_factory.mktemp("shoot")
    astro, coffee, chelsea = data.astronaut(), data.coffee(), data.chelsea()
    (root / "cam").mkdir()
    (root / "scans" / "1970").mkdir(parents=True)
    (root / "web").mkdir()
    a = np.ascontiguousarray(astro[100:148, 150:214])            # 64x48, stored as a camera would
    Image.fromarray(a).save(root / "cam" / "IMG_0001.JPG", "JPEG", quality=93, exif=exif(6, 64, 48),
                            icc_profile=ICC, xmp=XMP)
    Image.fromarray(np.ascontiguousarray(coffee[50:90, 100:160])).save(
        root / "cam" / "IMG_0002.jpg", "JPEG", quality=90, exif=exif(1, 60, 40), icc_profile=ICC)
    c16 = (np.ascontiguousarray(chelsea[60:100, 80:130]).astype(np.uint16) * 257
           + np.arange(50, dtype=np.uint16)[None, :, None])          # values that need 16 bits
    (root / "scans" / "1970" / "cat16.tif").write_bytes(
        F.encode(c16, F.Metadata(exif=exif(1, 50, 40)[6:], icc=ICC), "tif"))
    Image.fromarray(np.ascontiguousarray(astro[:40, :40])).save(
        root / "scans" / "1970" / "lzw8.tiff", "TIFF", compression="tiff_lzw", exif=ifd0_exif(),
        icc_profile=ICC)
    g16 = (np.linspace(0, 65535, 30 * 20).reshape(20, 30)).astype(np.uint16)
    (root / "scans" / "gray16.png").write_bytes(F.encode(g16[:, :, None], F.Metadata(), "png"))
    alpha = np.full((24, 32), 255, np.uint8)
    alpha[:, :8], alpha[:, 8:16] = 0, 128                   # transparent, half, opaque
    rgba = np.dstack([coffee[:24, :32], alpha])
    Image.fromarray(rgba, "RGBA").save(root / "web" / "logo.png")
    Image.fromarray(np.ascontiguousarray(chelsea[:32, :40])).save(root / "web" / "pic.webp", "WEBP",
                                                                  quality=95, exif=exif(1, 40, 32))
    (root / "web" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0" + os.urandom(300))
    return root


def batch(args, *, endpoint, check_rc=None, timeout=300):
    cmd = [sys.executable, "-m", "ai_enhance", "batch", *map(str, args), "--endpoint", endpoint,
           "--no-autostart", "--json"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if check_rc is not None:
        assert p.returncode == check_rc, (p.returncode, p.stderr[-3000:])
    return p, (json.loads(p.stdout) if p.stdout.strip().startswith("{") else None)


def by_input(summary: dict) -> dict:
    return {Path(r["input"]).name: r for r in summary["results"]}


def test_batch_on_real_files(backend, shoot, tmp_path):
    out = tmp_path / "out"
    p, s = batch([shoot, "-o", out, *EXACT], endpoint=backend.endpoint, check_rc=1)
    r = by_input(s)
    assert s["done"] == 7 and s["failed"] == 1, p.stderr
    assert r["corrupt.jpg"]["status"] == "failed" and "JPEG" in r["corrupt.jpg"]["reason"]
    assert "FAILED" in p.stderr and "corrupt.jpg" in p.stderr         # the human summary
    assert s["files_per_s"] > 0 and s["megapixels_per_s"] > 0
    # relative paths kept, formats kept
    made = sorted(x.relative_to(out).as_posix() for x in out.rglob("*") if x.is_file()
                  and not x.name.startswith("."))
    assert made == ["cam/IMG_0001.JPG", "cam/IMG_0002.jpg", "scans/1970/cat16.tif", "scans/1970/lzw8.tiff",
                    "scans/gray16.png", "web/logo.png", "web/pic.webp"]

    def load(rel):
        return F.decode((out / rel).read_bytes(), rel)

    def src(rel):
        return F.decode((shoot / rel).read_bytes(), rel)

    # lossless outputs: exactly the model's result; 16-bit stays 16-bit
    for rel in ["scans/1970/cat16.tif", "scans/1970/lzw8.tiff", "scans/gray16.png"]:
        o, i = load(rel), src(rel)
        assert o.pixels.dtype == i.pixels.dtype, rel
        assert np.array_equal(o.pixels, nn4(i.pixels)), rel
    # with alpha, the result layer lies over the (enlarged) photo as in GIMP: where both are opaque
    # it is the model's result exactly; elsewhere the alphas add up (source-over)
    # (the backend enlarges alpha smoothly, so only well inside each alpha band is exact)
    o, i = load("web/logo.png"), src("web/logo.png")
    expect = nn4(i.pixels)
    assert np.array_equal(o.pixels[:, 72:], expect[:, 72:])               # opaque band
    assert (o.pixels[:, :24, 3] == 0).all()                               # transparent band
    half = o.pixels[:, 40:56, 3].astype(int)                              # 128 over 128: 192
    assert (np.abs(half - 192) <= 1).all()
    assert load("scans/1970/cat16.tif").pixels.dtype == np.uint16
    # the camera JPEG stored sideways (orientation 6): the output is upright, says orientation 1,
    # and its EXIF/XMP dimensions are the output's
    o, i = load("cam/IMG_0001.JPG"), src("cam/IMG_0001.JPG")
    assert i.pixels.shape == (64, 48, 3) and o.pixels.shape == (256, 192, 3)
    assert np.abs(o.pixels.astype(int) - nn4(i.pixels)).mean() < 3
    ex = F.exif_from(o.meta.exif)
    assert ex[0x010F] == "Canon" and ex[0x0112] == 1
    assert ex.get_ifd(0x8769)[0x9003] == "2023:07:14 18:02:11"
    assert (ex.get_ifd(0x8769)[0xA002], ex.get_ifd(0x8769)[0xA003]) == (192, 256)
    assert o.meta.icc == ICC and b'tiff:Orientation="1"' in o.meta.xmp
    # TIFF keeps its EXIF and ICC too (read back by Pillow, another reader)
    with Image.open(out / "scans/1970/cat16.tif") as im:
        assert im.getexif().get_ifd(0x8769)[0x9003] == "2023:07:14 18:02:11"
        assert im.info["icc_profile"] == ICC
    assert F.exif_from(load("web/pic.webp").meta.exif)[0x0110] == "EOS R6"
    lzw = load("scans/1970/lzw8.tiff").meta
    assert F.exif_from(lzw.exif)[0x8298] == "(c) family archive" and lzw.icc == ICC
    # no temporary file left, the manifest names every output once
    assert not list(out.rglob(f"*{F.PART_SUFFIX}"))
    lines = Manifest(out).lines()
    assert sorted(x["output"] for x in lines) == made

    # rerun: everything done is skipped; the corrupt file still fails (exit 1)
    p, s = batch([shoot, "-o", out, *EXACT], endpoint=backend.endpoint, check_rc=1)
    assert (s["done"], s["skipped"], s["failed"]) == (0, 7, 1)
    # a changed input is redone, alone
    im = np.asarray(Image.open(shoot / "web" / "logo.png")).copy()
    im[0, 0] = [1, 2, 3, 4]
    Image.fromarray(im, "RGBA").save(shoot / "web" / "logo.png")
    p, s = batch([shoot, "-o", out, *EXACT], endpoint=backend.endpoint, check_rc=1)
    assert [Path(x["input"]).name for x in s["results"] if x["status"] == "done"] == ["logo.png"]
    assert (load("web/logo.png").pixels[1:3, 1:3, :3] == [1, 2, 3]).all()        # the new pixel
    # a changed recipe redoes everything
    p, s = batch([shoot, "-o", out, "--op", "upscale", "--model", "nearest-x4", "--scale", "4",
                  "--strength", "0.5", "--mask", "full"], endpoint=backend.endpoint, check_rc=1)
    assert (s["done"], s["skipped"]) == (7, 0)
    # an output folder of its own is another batch: files there it did not write are refused
    p, s = batch([shoot / "scans", "-o", out / "scans", *EXACT], endpoint=backend.endpoint, check_rc=1)
    assert s["failed"] == 3 and all("--overwrite" in f["reason"] for f in s["failures"])


def test_format_conversion_and_foreign_outputs(backend, shoot, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "IMG_0002.png").write_bytes(b"somebody else's file")
    p, s = batch([shoot / "cam", "-o", out, "--format", "png", *EXACT], endpoint=backend.endpoint, check_rc=1)
    r = by_input(s)
    assert r["IMG_0001.JPG"]["status"] == "done" and (out / "IMG_0001.png").is_file()
    assert r["IMG_0002.jpg"]["status"] == "failed" and "--overwrite" in r["IMG_0002.jpg"]["reason"]
    assert (out / "IMG_0002.png").read_bytes() == b"somebody else's file"
    o = F.decode((out / "IMG_0001.png").read_bytes(), "x.png")
    assert o.meta.icc == ICC and F.exif_from(o.meta.exif)[0x0112] == 1
    p, s = batch([shoot / "cam", "-o", out, "--format", "png", "--overwrite", *EXACT],
                 endpoint=backend.endpoint, check_rc=0)
    assert s["done"] == 2


def test_recipe_file_and_usage_errors(backend, shoot, tmp_path):
    rp = tmp_path / "r.json"
    rp.write_text(recipes.single("upscale", model="nearest-x4", scale=4, strength=1.0, mask="full").dumps())
    p, s = batch([shoot / "web" / "logo.png", "-o", tmp_path / "o", "--recipe", rp],
                 endpoint=backend.endpoint, check_rc=0)
    assert s["done"] == 1
    rp.write_text(json.dumps({"format": "ai-enhance-recipe", "version": 1,
                              "steps": [{"op": "denoise", "options": {"noise-level": 500}}]}))
    p, _ = batch([shoot, "-o", tmp_path / "o2", "--recipe", rp], endpoint=backend.endpoint, check_rc=2)
    assert "step 0 (denoise) options: noise-level" in p.stderr
    p, _ = batch([shoot, "-o", tmp_path / "o3", "--recipe", rp, "--strength", "0.5"],
                 endpoint=backend.endpoint, check_rc=2)
    assert "cannot be combined with --recipe" in p.stderr
    p, _ = batch([tmp_path / "nothing-here", "-o", tmp_path / "o4", *EXACT], endpoint=backend.endpoint,
                 check_rc=2)
    assert "no such file or folder" in p.stderr
    p, _ = batch([shoot, "-o", tmp_path / "o5", "--op", "denoise", "--denoise-strength", "0.3"],
                 endpoint=backend.endpoint, check_rc=2)
    assert "--denoise-strength" in p.stderr


# --------------------------------------------------------------------------- interrupted runs

@pytest.fixture(scope="module")
def many(tmp_path_factory) -> Path:
    from skimage import data

    root = tmp_path_factory.mktemp("many")
    img = data.astronaut()
    for i in range(12):
        y, x = divmod(i, 4)
        Image.fromarray(np.ascontiguousarray(img[y * 100:y * 100 + 96, x * 100:x * 100 + 96])).save(
            root / f"p{i:02d}.png")
    return root


SLOW = ["--op", "upscale", "--model", "realesrgan-x4plus", "--scale", "4", "--strength", "0.7",
        "--mask", "full", "--jobs", "2"]


@pytest.fixture(scope="module")
def reference(backend, many, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("ref")
    batch([many, "-o", out, *SLOW], endpoint=backend.endpoint, check_rc=0)
    return {p.name: F.decode(p.read_bytes(), p.name).pixels for p in out.glob("*.png")}


def _start(args, endpoint):
    cmd = [sys.executable, "-m", "ai_enhance", "batch", *map(str, args), "--endpoint", endpoint,
           "--no-autostart", "--json"]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_lines(manifest: Path, n: int, proc, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the batch ended before it could be interrupted: {proc.stderr.read()[-2000:]}")
        if manifest.is_file() and len(Manifest(manifest.parent).lines()) >= n:
            return
        time.sleep(0.05)
    raise AssertionError("no progress")


def _check_complete(out: Path, reference: dict) -> list[str]:
    """Every file under its final name is whole and right; returns their names."""
    names = []
    for p in sorted(out.glob("*.png")):
        px = F.decode(p.read_bytes(), p.name).pixels          # raises on a partial file
        assert np.array_equal(px, reference[p.name]), p.name
        names.append(p.name)
    return names


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
def test_interrupted_run_leaves_no_partial_file_and_resumes(backend, many, reference, tmp_path, sig):
    out = tmp_path / "out"
    proc = _start([many, "-o", out, *SLOW], backend.endpoint)
    _wait_for_lines(out / ".ai-enhance-manifest.jsonl", 3, proc)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=60)
    names = _check_complete(out, reference)
    lines = Manifest(out).lines()
    recorded = [x["output"] for x in lines]
    assert len(recorded) == len(set(recorded)) and set(recorded) <= set(names)
    if sig == signal.SIGINT:
        assert proc.returncode == 130, stderr[-2000:]
        s = json.loads(stdout)
        assert s["interrupted"] and s["done"] == len(recorded) and s["done"] < 12
        assert not list(out.rglob(f"*{F.PART_SUFFIX}"))       # cleaned on the way out
        assert "interrupted" in stderr
    else:
        assert proc.returncode == -signal.SIGKILL
    done_before = len(recorded)
    p, s = batch([many, "-o", out, *SLOW], endpoint=backend.endpoint, check_rc=0)
    assert s["skipped"] >= done_before and s["done"] + s["skipped"] == 12
    assert _check_complete(out, reference) == sorted(reference)
    assert not list(out.rglob(f"*{F.PART_SUFFIX}"))
    assert len({x["output"] for x in Manifest(out).lines()}) == 12


def test_busy_backend_is_retried_with_back_off(tiny_models_dir, many, tmp_path):
    from testkit import start_serve

    b = start_serve(tiny_models_dir, tmp_path, "--queue-size", "1")
    try:
        items, problems = gather([str(many)], tmp_path / "out")
        opts = Options(out_dir=tmp_path / "out", jobs=4)
        manifest = Manifest(opts.out_dir)
        tasks, refused = plan(items, opts, manifest)
        recipe = recipes.single("upscale", model="realesr-animevideov3", scale=2, strength=1.0, mask="full")
        runner = ClientRunner(b.endpoint)
        try:
            results, interrupted = run_local(tasks, recipe, runner, opts, manifest,
                                             Progress(len(tasks), quiet=True), threading.Event())
        finally:
            runner.close()
        assert not interrupted and [r.status for r in results] == [Status.DONE] * 12
        assert runner.busy_retries > 0              # the queue of one was full, and we waited
    finally:
        b.stop()


def test_ray_stages_without_ray(tiny_models_dir, shoot, tmp_path, monkeypatch):
    """The Ray engine's three stages (read_row -> RecipeActor -> write_row) in this process, on rows
    as Ray Data hands them over: a skipped row, a corrupt file, and a result too large for a row
    (written by the actor itself)."""
    from ai_enhance.batch import ray_engine as RE

    recipe = recipes.single("upscale", model="nearest-x4", scale=4, strength=1.0, mask="full")
    rows = [{"index": i, "path": str(shoot / rel), "out": str(tmp_path / Path(rel).name),
             "fmt": F.format_of(rel), "done_sha": ""}
            for i, rel in enumerate(["scans/gray16.png", "web/corrupt.jpg", "scans/1970/cat16.tif"])]
    rows[0]["done_sha"] = F.sha256_bytes((shoot / "scans/gray16.png").read_bytes())   # up to date
    read = [RE.read_row(r, max_pixels=10**8) for r in rows]
    assert [r["status"] for r in read] == ["skipped", "failed", ""]
    actor = RE.RecipeActor(json.dumps(recipe.to_json()), str(tiny_models_dir), "cpu", 1)
    monkeypatch.setattr(RE, "MAX_ROW_BYTES", 1000)          # the tif's result is "too large"
    batch = {k: np.array([r[k] for r in read], dtype=object) for k in read[0]}
    got = actor(batch)
    assert list(got["status"]) == ["skipped", "failed", RE.WRITTEN]
    written = [RE.write_row({k: got[k][i] for k in got}, quality=95) for i in range(3)]
    assert [w["status"] for w in written] == ["skipped", "failed", "done"]
    out = F.decode((tmp_path / "cat16.tif").read_bytes(), "cat16.tif")
    src = F.decode((shoot / "scans/1970/cat16.tif").read_bytes(), "cat16.tif")
    assert np.array_equal(out.pixels, nn4(src.pixels)) and out.meta.icc == ICC
    assert written[2]["bytes"] == (tmp_path / "cat16.tif").stat().st_size
    monkeypatch.setattr(RE, "MAX_ROW_BYTES", 1 << 30)        # normal rows: pixels go to write_row
    got = actor({k: np.array([read[2][k]], dtype=object) for k in read[2]})
    assert list(got["status"]) == [""] and len(got["pixels"][0]) == src.pixels.nbytes * 16
