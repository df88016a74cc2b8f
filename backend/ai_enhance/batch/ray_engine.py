"""`ai-enhance batch --engine ray`: the same recipe on a Ray cluster, with Ray Data.

    from_items(tasks) -> map(read: bytes, sha256, decode)                     CPU tasks
                      -> map_batches(RecipeActor, ActorPoolStrategy(workers)) the model
                      -> map(write: encode, atomic rename)                    CPU tasks
                      -> the driver records each output in the manifest

Each actor builds one ``Engine`` in its process (models load once per actor and stay loaded; with
``--gpus-per-worker`` each actor gets its GPU).  Files never pass through the driver: workers
read inputs and write outputs by path, so on a multi-node cluster the input and output folders must
be on storage every node mounts at the same path (docs/batch.md).  Outputs are written to a
temporary name and renamed by the worker; only then does the driver append the manifest line, so a
worker killed mid-run (Ray retries its task or restarts the actor) can leave neither a partial file
nor a duplicate line.

Ray is optional (``pip install gimp-ai-enhance[cluster]``): imported only here, only when used.
"""
from __future__ import annotations

import base64
import json
import logging
import math
import os
import threading
import time
from pathlib import Path
from typing import Callable

import numpy as np

from ai_enhance_client.recipes import Recipe, parse

from . import files as F
from .apply import apply_recipe
from .manifest import Entry, Manifest
from .progress import FileResult, Progress, Status
from .run import Options, Task, failure_text, recipe_hash, save_output


class RayUnavailable(Exception):
    pass


def _code_path() -> str:
    import ai_enhance
    import ai_enhance_client

    dirs = [str(Path(m.__file__).resolve().parents[1]) for m in (ai_enhance, ai_enhance_client)]
    old = [d for d in os.environ.get("PYTHONPATH", "").split(os.pathsep) if d]
    return os.pathsep.join(dict.fromkeys(dirs + old))


def _ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise RayUnavailable("--engine ray needs Ray Data: pip install 'gimp-ai-enhance[cluster]' "
                             "(or pip install 'ray[data]>=2.9') on this machine and every node") from None
    return ray


# --------------------------------------------------------------------------- rows between stages

def _meta_to_text(meta: F.Metadata) -> str:
    enc = lambda b: base64.b64encode(b).decode("ascii") if b else None  # noqa: E731
    return json.dumps({"exif": enc(meta.exif), "icc": enc(meta.icc), "xmp": enc(meta.xmp),
                       "orientation": meta.orientation, "format": meta.format, "notes": meta.notes})


def _meta_from_text(text: str) -> F.Metadata:
    d = json.loads(text)
    dec = lambda s: base64.b64decode(s) if s else None  # noqa: E731
    return F.Metadata(exif=dec(d["exif"]), icc=dec(d["icc"]), xmp=dec(d["xmp"]),
                      orientation=d["orientation"], format=d["format"], notes=list(d["notes"]))


def _pack(a: np.ndarray) -> dict:
    a = np.ascontiguousarray(a)
    return {"pixels": a.tobytes(), "shape": json.dumps(list(a.shape)), "dtype": a.dtype.str}


def _unpack(row) -> np.ndarray:
    return np.frombuffer(row["pixels"], dtype=np.dtype(row["dtype"])).reshape(json.loads(row["shape"]))


def _empty() -> dict:
    return {"pixels": b"", "shape": "[]", "dtype": "|u1"}


#: Row status: the actor wrote a result too large for a row itself (write_row reports it done).
WRITTEN = "written"


def read_row(row: dict, *, max_pixels: int) -> dict:
    """Stage 1 (CPU task): read, hash, skip when done, decode."""
    out = dict(row, status="", reason="", sha256="", meta="", megapixels=0.0, t0=time.time())
    try:
        data = Path(row["path"]).read_bytes()
        out["sha256"] = F.sha256_bytes(data)
        if row["done_sha"] and row["done_sha"] == out["sha256"]:
            out.update(_empty(), status=Status.SKIPPED.value)
            return out
        dec = F.decode(data, Path(row["path"]).name, max_pixels=max_pixels)
        out.update(_pack(dec.pixels), meta=_meta_to_text(dec.meta),
                   megapixels=dec.pixels.shape[0] * dec.pixels.shape[1] / 1e6)
    except Exception as e:  # noqa: BLE001 - reported in the summary; the run goes on
        out.update(_empty(), status=Status.FAILED.value, reason=failure_text(e))
    return out


#: Results larger than this are written by the actor itself: a row of Ray Data's Arrow blocks
#: cannot carry 2 GiB or more (a 4x result of a 24 MP 16-bit photo is 2.3 GB).
MAX_ROW_BYTES = 1 << 30


class RecipeActor:
    """Stage 2 (actor pool): the recipe's steps with an Engine living in this actor."""

    def __init__(self, recipe_json: str, models_dir: str | None, device: str, threads: int | None,
                 quality: int = 95):
        from .runners import EngineRunner

        self.recipe: Recipe = parse(json.loads(recipe_json))
        self.runner = EngineRunner(models_dir, device=device, threads=threads)
        self.quality = quality
        self.pid = os.getpid()

    def __call__(self, batch: dict) -> dict:
        n = len(batch["path"])
        out = {k: list(v) for k, v in batch.items()}
        out["bytes"] = [0] * n
        for i in range(n):
            if out["status"][i]:
                continue
            try:
                img = _unpack({k: out[k][i] for k in ("pixels", "shape", "dtype")})
                res = apply_recipe(self.recipe, img, self.runner)
                if res.nbytes >= MAX_ROW_BYTES:
                    task = Task(item=None, out_path=Path(out["out"][i]), fmt=out["fmt"][i])  # type: ignore[arg-type]
                    out["bytes"][i] = save_output(res, _meta_from_text(out["meta"][i]), task, self.quality)
                    out["status"][i] = WRITTEN
                    packed = _empty()
                else:
                    packed = _pack(res)
            except Exception as e:  # noqa: BLE001
                packed = _empty()
                out["status"][i] = Status.FAILED.value
                out["reason"][i] = failure_text(e)
            for k, v in packed.items():
                out[k][i] = v
        out["worker_pid"] = [self.pid] * n
        return {k: (np.array(v, dtype=object) if k == "pixels" else np.array(v)) for k, v in out.items()}


def write_row(row: dict, *, quality: int) -> dict:
    """Stage 3 (CPU task): encode with the input's metadata and rename into place."""
    result = {k: row[k] for k in ("index", "path", "out", "status", "reason", "sha256", "megapixels",
                                  "t0")}
    result["bytes"] = int(row.get("bytes") or 0)
    result["worker_pid"] = int(row.get("worker_pid") or 0)
    if row["status"] == WRITTEN:
        result["status"] = Status.DONE.value
        return result
    if row["status"]:
        return result
    try:
        task = Task(item=None, out_path=Path(row["out"]), fmt=row["fmt"])  # type: ignore[arg-type]
        result["bytes"] = save_output(_unpack(row), _meta_from_text(row["meta"]), task, quality)
        result["status"] = Status.DONE.value
    except Exception as e:  # noqa: BLE001
        result["status"] = Status.FAILED.value
        result["reason"] = failure_text(e)
    return result


# --------------------------------------------------------------------------- the driver

def run_ray(tasks: list[Task], recipe: Recipe, opts: Options, manifest: Manifest, progress: Progress,
            *, address: str | None = None, workers: int = 1, gpus_per_worker: float = 0.0,
            cpus_per_worker: float = 1.0, models_dir: str | None = None, device: str = "auto",
            num_cpus: int | None = None, stop: threading.Event | None = None,
            on_result: Callable[[FileResult], None] | None = None) -> tuple[list[FileResult], bool]:
    ray = _ray()
    rhash = recipe_hash(recipe, opts)
    results: list[FileResult] = []
    if not tasks:
        return results, False
    need = workers * cpus_per_worker
    if not ray.is_initialized():
        init = dict(address=address or None, include_dashboard=False, ignore_reinit_error=True,
                    log_to_driver=False, logging_level=logging.WARNING)
        if not address and not os.environ.get("RAY_ADDRESS"):
            # a Ray instance of our own on this machine: enough logical CPUs for the actors plus
            # the read and write tasks (the OS shares the real cores among them)
            init["num_cpus"] = num_cpus or max(os.cpu_count() or 1, math.ceil(need) + 1)
            # its workers import this very code (also when it runs from a source checkout)
            init["runtime_env"] = {"env_vars": {"PYTHONPATH": _code_path()}}
        ray.init(**init)
    import ray.data

    total = float(ray.cluster_resources().get("CPU", 0))
    if need > total - 0.5:
        raise RayUnavailable(f"the Ray cluster has {total:g} CPUs: {workers} workers x "
                             f"{cpus_per_worker:g} CPUs leave none to read and write files; use "
                             f"fewer --workers or a smaller --cpus-per-worker")
    if gpus_per_worker and float(ray.cluster_resources().get("GPU", 0)) < gpus_per_worker:
        raise RayUnavailable(f"the Ray cluster has no GPU for --gpus-per-worker {gpus_per_worker:g}; "
                             "start the workers with GPUs or use --gpus-per-worker 0")
    logging.getLogger("ray.data").setLevel(logging.ERROR)     # our summary reports what failed
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    if gpus_per_worker:
        device = "cuda" if device == "auto" else device
    manifest.record_intents([t.item.out.as_posix() for t in tasks])
    rows = []
    for i, t in enumerate(tasks):
        done = None if opts.overwrite else manifest.entries.get(t.item.out.as_posix())
        done_sha = (done.input_sha256 if done and done.recipe == rhash and t.out_path.is_file() else "")
        rows.append({"index": i, "path": str(t.item.path), "out": str(t.out_path), "fmt": t.fmt,
                     "done_sha": done_sha})
    try:
        ds = ray.data.from_items(rows, override_num_blocks=len(rows))
    except TypeError:          # Ray < 2.10
        ds = ray.data.from_items(rows, parallelism=len(rows))
    # the CPU stages ask for little, so that they run beside the actors on a small machine
    ds = ds.map(read_row, fn_kwargs={"max_pixels": opts.max_pixels}, num_cpus=0.25)
    ds = ds.map_batches(RecipeActor, batch_size=1, batch_format="numpy",
                        fn_constructor_kwargs={
                            "recipe_json": json.dumps(recipe.to_json()),
                            "models_dir": str(models_dir) if models_dir else None, "device": device,
                            "threads": max(1, int(cpus_per_worker)) if not gpus_per_worker else None,
                            "quality": opts.quality},
                        compute=ray.data.ActorPoolStrategy(size=max(1, workers)),
                        num_gpus=gpus_per_worker or None, num_cpus=cpus_per_worker)
    # (Ray Data restarts a dead actor and retries its batch by default: max_restarts=-1)
    ds = ds.map(write_row, fn_kwargs={"quality": opts.quality}, num_cpus=0.25)
    interrupted = False
    seen: set[int] = set()
    try:
        for row in ds.iter_rows():
            if stop is not None and stop.is_set():
                interrupted = True
                break
            i = int(row["index"])
            if i in seen:         # a retried block may hand a row back twice: count it once
                continue
            seen.add(i)
            t = tasks[i]
            status = Status(row["status"])
            r = FileResult(str(t.item.path), str(t.out_path), status, row["reason"] or "",
                           round(time.time() - float(row["t0"]), 3), float(row["megapixels"]))
            if status is Status.DONE:
                manifest.record(Entry(t.item.out.as_posix(), str(t.item.path), row["sha256"], rhash,
                                      int(row["bytes"]), time.time()))
            results.append(r)
            progress.add(r)
            if on_result:
                on_result(r)
    except KeyboardInterrupt:
        interrupted = True
    return results, interrupted
