"""`ai-enhance batch --engine ray` on a local Ray instance (2 CPUs) with tiny models: outputs (pixels
and metadata) equal the local engine's, resume works, and a worker killed mid-run neither loses nor
duplicates an output.  Skipped when Ray Data is not installed (pip install 'gimp-ai-enhance[cluster]')."""
from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageCms

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")

from ai_enhance.batch import files as F  # noqa: E402
from ai_enhance.batch.inputs import gather  # noqa: E402
from ai_enhance.batch.manifest import Manifest  # noqa: E402
from ai_enhance.batch.progress import Progress, Status  # noqa: E402
from ai_enhance.batch.ray_engine import run_ray  # noqa: E402
from ai_enhance.batch.run import Options, plan, run_local  # noqa: E402
from ai_enhance.batch.runners import ClientRunner  # noqa: E402
from ai_enhance_client import recipes  # noqa: E402

pytestmark = pytest.mark.slow
ICC = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()

#: the exact nearest-neighbour net (same result whatever the thread count), then a real random
#: network at half strength over it
RECIPE = recipes.parse({"format": recipes.FORMAT, "version": 1, "steps": [
    {"op": "upscale", "model": "nearest-x4", "scale": 4, "strength": 1.0, "mask": "full", "source": "image"},
    {"op": "upscale", "model": "realesr-animevideov3", "scale": 1, "strength": 0.5, "mask": "full",
     "source": "composite"}]})
EXACT = recipes.single("upscale", model="nearest-x4", scale=4, strength=1.0, mask="full")


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    from skimage import data

    root = tmp_path_factory.mktemp("photos")
    img = data.astronaut()
    for i in range(6):
        Image.fromarray(np.ascontiguousarray(img[i * 60:i * 60 + 40, 100:148])).save(root / f"p{i}.png")
    ex = Image.Exif()
    ex[0x010F], ex[0x0112] = "Canon", 6
    ex[0x8769] = {0x9003: "2024:01:02 03:04:05"}
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(img[200:232, 200:256])).save(buf, "JPEG", quality=92,
                                                                     exif=ex.tobytes(), icc_profile=ICC)
    (root / "sub").mkdir()
    (root / "sub" / "cam.jpg").write_bytes(buf.getvalue())
    c16 = img[:30, :40].astype(np.uint16) * 257 + 3
    (root / "sub" / "scan16.tif").write_bytes(F.encode(c16, F.Metadata(icc=ICC), "tif"))
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)
    return root


def _tasks(photos, out, opts):
    items, _ = gather([str(photos)], out)
    manifest = Manifest(out)
    tasks, refused = plan(items, opts, manifest)
    assert not refused
    return tasks, manifest


def _ray_run(photos, out, recipe, models_dir, on_result=None, workers=2):
    opts = Options(out_dir=out)
    tasks, manifest = _tasks(photos, out, opts)
    results, interrupted = run_ray(tasks, recipe, opts, manifest, Progress(len(tasks), quiet=True),
                                   workers=workers, cpus_per_worker=0.5, models_dir=str(models_dir),
                                   device="cpu", on_result=on_result)
    assert not interrupted
    return results, manifest


def _outputs(out: Path) -> dict:
    return {p.relative_to(out).as_posix(): p for p in out.rglob("*")
            if p.is_file() and not p.name.startswith(".")}


def test_ray_equals_local_engine_and_resumes(local_ray, backend, tiny_models_dir, photos, tmp_path):
    local_out, ray_out = tmp_path / "local", tmp_path / "ray"
    opts = Options(out_dir=local_out, jobs=2)
    tasks, manifest = _tasks(photos, local_out, opts)
    runner = ClientRunner(backend.endpoint)
    try:
        local, _ = run_local(tasks, RECIPE, runner, opts, manifest, Progress(len(tasks), quiet=True),
                             threading.Event())
    finally:
        runner.close()
    results, ray_manifest = _ray_run(photos, ray_out, RECIPE, tiny_models_dir)
    status = {Path(r.input).name: r.status for r in results}
    assert status == {Path(r.input).name: r.status for r in local}
    assert status["broken.png"] is Status.FAILED and sum(s is Status.DONE for s in status.values()) == 8
    reason = next(r.reason for r in results if r.status is Status.FAILED)
    assert "PNG" in reason
    lo, ro = _outputs(local_out), _outputs(ray_out)
    assert sorted(lo) == sorted(ro) and len(lo) == 8
    for rel in lo:
        a, b = F.decode(lo[rel].read_bytes(), rel), F.decode(ro[rel].read_bytes(), rel)
        assert a.pixels.dtype == b.pixels.dtype and a.pixels.shape == b.pixels.shape, rel
        # two processes with different thread counts may round a float differently once in a while
        diff = np.abs(a.pixels.astype(np.int64) - b.pixels.astype(np.int64))
        assert diff.max() <= (257 if a.pixels.dtype == np.uint16 else 1), rel
        assert (diff == 0).mean() > 0.99, rel
        assert (a.meta.icc, a.meta.xmp) == (b.meta.icc, b.meta.xmp), rel
        assert F.exif_from(a.meta.exif) == F.exif_from(b.meta.exif) if a.meta.exif else not b.meta.exif
    cam = F.decode(ro["sub/cam.jpg"].read_bytes(), "cam.jpg")
    assert cam.pixels.shape == (224, 128, 3) and F.exif_from(cam.meta.exif)[0x0112] == 1
    assert F.decode(ro["sub/scan16.tif"].read_bytes(), "x.tif").pixels.dtype == np.uint16
    assert sorted(x["output"] for x in ray_manifest.lines()) == sorted(ro)
    # resume: a second Ray run skips everything it did
    again, _ = _ray_run(photos, ray_out, RECIPE, tiny_models_dir)
    assert sorted(r.status.value for r in again) == ["failed"] + ["skipped"] * 8


def _our_actor_pids() -> list[int]:
    """Actor processes of THIS test's Ray instance: children of the raylet this process started."""
    def children(pid):
        try:
            with open(f"/proc/{pid}/task/{pid}/children") as f:
                return [int(x) for x in f.read().split()]
        except OSError:
            return []

    def cmdline(pid):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                return f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            return ""

    raylets = [c for c in children(os.getpid()) if "raylet" in cmdline(c)]
    return [w for r in raylets for w in children(r) if "MapBatches(RecipeActor)" in cmdline(w)]


def test_killed_worker_loses_and_duplicates_nothing(local_ray, tiny_models_dir, photos, tmp_path):
    out = tmp_path / "out"
    killed, after = [], []

    def kill_one(result):
        if killed:
            after.append(result)
        else:
            pids = _our_actor_pids()
            assert pids, "no actor process found"
            os.kill(pids[0], signal.SIGKILL)
            killed.append(pids[0])

    results, manifest = _ray_run(photos, out, EXACT, tiny_models_dir, on_result=kill_one)
    assert killed and len(after) == 8            # killed at the first result: 8 files still to come
    assert sorted(r.status.value for r in results) == ["done"] * 8 + ["failed"]
    names = [x["output"] for x in manifest.lines()]
    assert len(names) == len(set(names)) == 8                       # each output recorded once
    assert not list(out.rglob(f"*{F.PART_SUFFIX}"))
    for rel, p in _outputs(out).items():
        got = F.decode(p.read_bytes(), rel).pixels                 # whole files only
        src = F.decode((photos / rel).read_bytes(), rel).pixels
        if rel.endswith(".png") or rel.endswith(".tif"):
            assert np.array_equal(got, np.repeat(np.repeat(src, 4, 0), 4, 1)), rel


def test_cli_on_a_running_cluster(local_ray, tiny_models_dir, photos, tmp_path):
    address = local_ray.get_runtime_context().gcs_address
    cmd = [sys.executable, "-m", "ai_enhance", "batch", str(photos / "sub"), "-o", str(tmp_path / "o"),
           "--op", "upscale", "--model", "nearest-x4", "--scale", "4", "--strength", "1", "--mask", "full",
           "--engine", "ray", "--ray-address", address, "--workers", "1", "--cpus-per-worker", "0.5",
           "--models-dir", str(tiny_models_dir), "--device", "cpu", "--json", "-q"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert p.returncode == 0, p.stderr[-3000:]
    import json
    s = json.loads(p.stdout)
    assert (s["engine"], s["done"], s["failed"]) == ("ray", 2, 0)
    # a cluster too small for the workers asked for is refused with the fix, not left hanging
    p = subprocess.run(cmd[:-2] + ["--workers", "4", "--json"], capture_output=True, text=True, timeout=180)
    assert p.returncode == 2 and "cpus-per-worker" in p.stderr
