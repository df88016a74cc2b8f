"""`ai-enhance batch` throughput: the local engine (the running backend) vs Ray with N workers.

    python bench/bench_batch.py                       # 50 photos 512x512, realesr-animevideov3 x4
    python bench/bench_batch.py --images 20 --workers 2 --skip-ray

Inputs are 50 different 512x512 crops of real photos (../shared/images and scikit-image's), saved
as JPEG (quality 95); outputs are JPEG too.  Each engine processes all of them once, from a cold
start (the backend process, or the Ray instance and its actors, start inside the timed run, and
load the model once).  Weights: AI_ENHANCE_MODELS_DIR or ../shared/weights.  Prints a markdown
table and writes JSON to bench/out/.  One run each: on a shared machine, compare within one run.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:0] = [str(REPO / "backend"), str(REPO / "plugin" / "ai-enhance")]

from ai_enhance.batch.inputs import gather  # noqa: E402
from ai_enhance.batch.manifest import Manifest  # noqa: E402
from ai_enhance.batch.progress import Progress, Status  # noqa: E402
from ai_enhance.batch.run import Options, plan, run_local  # noqa: E402
from ai_enhance.batch.runners import ClientRunner  # noqa: E402
from ai_enhance_client import recipes  # noqa: E402

MODEL = "realesr-animevideov3"


def weights_dir() -> Path:
    for d in (os.environ.get("AI_ENHANCE_MODELS_DIR"), REPO.parent / "shared" / "weights"):
        if d and (Path(d) / "realesr-animevideov3.pth").is_file():
            return Path(d)
    sys.exit("realesr-animevideov3.pth not found: set AI_ENHANCE_MODELS_DIR")


def make_photos(folder: Path, n: int, size: int = 512) -> None:
    """n different size x size crops of real photos (deterministic)."""
    import cv2
    from skimage import data

    folder.mkdir(parents=True, exist_ok=True)
    sources = []
    shared = REPO.parent / "shared" / "images"
    for name in ("00.jpg", "10045.png", "Blake_Lively.jpg"):
        img = cv2.imread(str(shared / name), cv2.IMREAD_COLOR)
        if img is not None:
            sources.append(img[:, :, ::-1])
    for fn in (data.astronaut, data.coffee, data.chelsea, data.rocket):
        sources.append(fn())
    rng = np.random.default_rng(0)
    for i in range(n):
        src = sources[i % len(sources)]
        h, w = src.shape[:2]
        side = int(min(h, w) * rng.uniform(0.45, 1.0))
        y, x = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
        crop = cv2.resize(np.ascontiguousarray(src[y:y + side, x:x + side]), (size, size),
                          interpolation=cv2.INTER_AREA)
        cv2.imwrite(str(folder / f"photo{i:03d}.jpg"), crop[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def timed(results_times: list):
    def on_result(r):
        results_times.append((time.monotonic(), r.status))
    return on_result


def row(name: str, n: int, t0: float, times: list, mp: float) -> dict:
    done = [t for t, s in times if s is Status.DONE]
    total = (max(done) if done else time.monotonic()) - t0
    steady = (len(done) - 1) / (done[-1] - done[0]) if len(done) > 1 and done[-1] > done[0] else 0.0
    return {"engine": name, "images": len(done), "failed": n - len(done), "seconds": round(total, 1),
            "images_per_s": round(len(done) / total, 3), "steady_images_per_s": round(steady, 3),
            "input_mp_per_s": round(len(done) * mp / total, 3), "first_result_s": round(done[0] - t0, 1)}


def run_local_engine(inputs: Path, out: Path, recipe, models: Path, jobs: int) -> tuple[float, list]:
    from ai_enhance_client.client import Client

    endpoint = f"tcp://127.0.0.1:{free_port()}"
    log = out.parent / "bench-serve.log"
    env = dict(os.environ, AI_ENHANCE_MODELS_DIR=str(models),
               PYTHONPATH=os.pathsep.join([str(REPO / "backend"), str(REPO / "plugin" / "ai-enhance")]))
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "ai_enhance", "serve", "--endpoint", endpoint,
                             "--models-dir", str(models), "--log-file", str(log)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=env, start_new_session=True)
    try:
        with Client(endpoint) as c:
            while c.ping(timeout=0.5) is None:
                if proc.poll() is not None:
                    sys.exit(f"the backend did not start; see {log}")
        opts = Options(out_dir=out, jobs=jobs)
        items, _ = gather([str(inputs)], out)
        manifest = Manifest(out)
        tasks, _ = plan(items, opts, manifest)
        times: list = []
        runner = ClientRunner(endpoint)
        try:
            run_local(tasks, recipe, runner, opts, manifest, Progress(len(tasks), quiet=True),
                      threading.Event(), on_result=timed(times))
        finally:
            runner.close()
        return t0, times
    finally:
        proc.terminate()
        proc.wait(20)


def run_ray_engine(inputs: Path, out: Path, recipe, models: Path, workers: int) -> tuple[float, list]:
    import ray

    from ai_enhance.batch.ray_engine import run_ray

    t0 = time.monotonic()
    opts = Options(out_dir=out)
    items, _ = gather([str(inputs)], out)
    manifest = Manifest(out)
    tasks, _ = plan(items, opts, manifest)
    times: list = []
    try:
        run_ray(tasks, recipe, opts, manifest, Progress(len(tasks), quiet=True), workers=workers,
                cpus_per_worker=1.0, models_dir=str(models), device="cpu", on_result=timed(times))
    finally:
        ray.shutdown()
    return t0, times


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=50)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--workers", type=int, default=2, help="Ray actors")
    ap.add_argument("--jobs", type=int, default=3, help="local engine: files in flight")
    ap.add_argument("--skip-ray", action="store_true")
    ap.add_argument("--skip-local", action="store_true")
    args = ap.parse_args()

    models = weights_dir()
    work = HERE / "out" / "batch"
    inputs = work / f"in-{args.images}x{args.size}"
    if not inputs.is_dir() or len(list(inputs.glob("*.jpg"))) != args.images:
        make_photos(inputs, args.images, args.size)
    recipe = recipes.single("upscale", model=MODEL, scale=4, strength=1.0, mask="full")
    mp = args.size * args.size / 1e6
    rows = []
    import shutil
    if not args.skip_local:
        out = work / "out-local"
        shutil.rmtree(out, ignore_errors=True)
        t0, times = run_local_engine(inputs, out, recipe, models, args.jobs)
        rows.append(row(f"local (backend, --jobs {args.jobs})", args.images, t0, times, mp))
        shutil.rmtree(out, ignore_errors=True)
    if not args.skip_ray:
        out = work / "out-ray"
        shutil.rmtree(out, ignore_errors=True)
        t0, times = run_ray_engine(inputs, out, recipe, models, args.workers)
        rows.append(row(f"ray ({args.workers} workers)", args.images, t0, times, mp))
        shutil.rmtree(out, ignore_errors=True)

    import platform

    import torch
    print(f"\n{args.images} photos {args.size}x{args.size} JPEG -> x4 {MODEL} JPEG; "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"threads {torch.get_num_threads()}\n")
    print("| engine | images | failed | total s | images/s | steady images/s | input MP/s | first output s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['engine']} | {r['images']} | {r['failed']} | {r['seconds']} | {r['images_per_s']} | "
              f"{r['steady_images_per_s']} | {r['input_mp_per_s']} | {r['first_result_s']} |")
    (HERE / "out").mkdir(exist_ok=True)
    (HERE / "out" / "bench_batch.json").write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
