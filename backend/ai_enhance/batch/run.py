"""A batch run: plan (what is done, what is to do), then process every file with the local engine
(this module) or on Ray (ray_engine.py); both share the per-file stages here:

    read_input -> decode  |  apply_recipe (the model)  |  encode -> write_atomic -> manifest

Local engine: ``jobs`` worker threads each take one file through every stage, so while the
backend runs the model on one image, other threads decode and encode (OpenCV, numpy and zlib
release the GIL).  Each thread has its own ZeroMQ client; BUSY answers are retried with back-off
(runners.ClientRunner).  Ctrl-C (or SIGTERM) cancels the jobs in flight; nothing partial is left.
"""
from __future__ import annotations

import threading
import time
import traceback
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ai_enhance_client.recipes import Recipe

from . import files as F
from .apply import RunStep, StepFailed, apply_recipe
from .inputs import Item
from .manifest import Entry, Manifest
from .progress import FileResult, Progress, Status
from .runners import Stopped


@dataclass
class Options:
    out_dir: Path
    fmt: str | None = None               # None: the input's own format
    quality: int = 95                    # JPEG / WebP (100 = lossless WebP)
    overwrite: bool = False
    max_pixels: int = 100_000_000
    jobs: int = 3


@dataclass(frozen=True)
class Task:
    item: Item
    out_path: Path
    fmt: str


def recipe_hash(recipe: Recipe, opts: Options) -> str:
    """What decides an output's bytes besides its input: the recipe and the output settings."""
    return recipe.digest({"format": opts.fmt or "same", "quality": opts.quality})


def plan(items: list[Item], opts: Options, manifest: Manifest) -> tuple[list[Task], list[FileResult]]:
    """Tasks to run, and the files refused before reading (an existing file this batch did not
    write, unless --overwrite)."""
    tasks, refused = [], []
    for it in items:
        fmt = opts.fmt or F.format_of(it.path) or "png"
        out = opts.out_dir / Path(it.out)
        if out.exists() and not opts.overwrite and not manifest.knows(it.out.as_posix()):
            refused.append(FileResult(str(it.path), str(out), Status.FAILED,
                                      "the output exists and was not written by a batch into this "
                                      "folder; use --overwrite to replace it"))
            continue
        tasks.append(Task(it, out, fmt))
    return tasks, refused


# --------------------------------------------------------------------------- per-file stages

def read_input(task: Task) -> tuple[bytes, str]:
    try:
        data = task.item.path.read_bytes()
    except OSError as e:
        raise F.FileError(f"cannot read: {e.strerror or e}") from None
    return data, F.sha256_bytes(data)


def skip_if_done(task: Task, sha: str, rhash: str, opts: Options, manifest: Manifest) -> bool:
    return not opts.overwrite and manifest.is_done(task.item.out.as_posix(), sha, rhash, opts.out_dir)


def save_output(pixels: np.ndarray, meta: F.Metadata, task: Task, quality: int) -> int:
    """Encode with the input's metadata (orientation applied, dimensions updated) and write
    atomically; returns the bytes written."""
    out_meta = F.output_metadata(meta, pixels.shape[1], pixels.shape[0])
    data = F.encode(pixels, out_meta, task.fmt, quality=quality)
    F.write_atomic(task.out_path, data)
    return len(data)


def failure_text(e: BaseException) -> str:
    if isinstance(e, (F.FileError, StepFailed)):
        return str(e)
    if isinstance(e, MemoryError):
        return "out of memory; use a smaller --jobs or --tile"
    return f"internal error ({type(e).__name__}: {' '.join(str(e).split())[:200]})"


def process_file(task: Task, recipe: Recipe, run_step: RunStep, opts: Options, rhash: str,
                 manifest: Manifest) -> FileResult:
    """One file through every stage; failures become a FAILED result (Stopped propagates)."""
    t0 = time.monotonic()
    res = FileResult(str(task.item.path), str(task.out_path), Status.FAILED)
    try:
        data, sha = read_input(task)
        if skip_if_done(task, sha, rhash, opts, manifest):
            res.status = Status.SKIPPED
            return res
        dec = F.decode(data, task.item.path.name, max_pixels=opts.max_pixels)
        del data
        res.megapixels = dec.pixels.shape[0] * dec.pixels.shape[1] / 1e6
        res.notes = list(dec.meta.notes)
        out = apply_recipe(recipe, dec.pixels, run_step)
        nbytes = save_output(out, dec.meta, task, opts.quality)
        manifest.record(Entry(task.item.out.as_posix(), str(task.item.path), sha, rhash, nbytes, time.time()))
        res.status = Status.DONE
    except Stopped:
        raise
    except Exception as e:  # noqa: BLE001 - one bad file must not stop the batch
        res.reason = failure_text(e)
        if not isinstance(e, (F.FileError, StepFailed, MemoryError)):
            res.notes.append(traceback.format_exc(limit=6))
    finally:
        res.seconds = round(time.monotonic() - t0, 3)
    return res


# --------------------------------------------------------------------------- the local engine

def run_local(tasks: list[Task], recipe: Recipe, run_step: RunStep, opts: Options, manifest: Manifest,
              progress: Progress, stop: threading.Event,
              on_result: Callable[[FileResult], None] | None = None) -> tuple[list[FileResult], bool]:
    """Every task through ``jobs`` threads.  Returns (results, interrupted).  KeyboardInterrupt in
    the calling thread sets ``stop``: jobs in flight are cancelled, queued ones never start."""
    rhash = recipe_hash(recipe, opts)
    manifest.record_intents([t.item.out.as_posix() for t in tasks])
    results: list[FileResult] = []
    interrupted = False
    pool = ThreadPoolExecutor(max_workers=max(1, opts.jobs), thread_name_prefix="batch")
    pending = set()
    try:
        it = iter(tasks)
        # a bounded window of submitted files keeps memory flat on huge folders
        window = max(2, opts.jobs * 2)

        def refill():
            while len(pending) < window and not stop.is_set():
                t = next(it, None)
                if t is None:
                    return
                pending.add(pool.submit(process_file, t, recipe, run_step, opts, rhash, manifest))

        refill()
        while pending:
            done, _ = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
            for f in done:
                pending.discard(f)
                try:
                    r = f.result()
                except Stopped:
                    continue
                results.append(r)
                progress.add(r)
                if on_result:
                    on_result(r)
            refill()
    except KeyboardInterrupt:
        interrupted = True
        stop.set()
        for f in pending:
            f.cancel()
        # let the threads see `stop` (their jobs get cancelled) and finish
        for f in list(pending):
            try:
                r = f.result()
                results.append(r)
            except BaseException:  # noqa: BLE001 - Stopped / cancelled
                pass
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return results, interrupted or stop.is_set()
