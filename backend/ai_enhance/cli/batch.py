"""`ai-enhance batch INPUT... -o OUT_DIR (--recipe FILE | --op OP ...)`: the command line of the
batch package (backend/ai_enhance/batch).  Flags of the operations come from the table (flags.py),
as for `enhance`; see docs/batch.md."""
from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from pathlib import Path

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
#: Output formats (batch.files.FORMATS, repeated so that building the parser imports no numpy;
#: a unit test keeps the two equal).
FORMATS = ("png", "jpg", "tif", "webp")


def add_parser(sub) -> None:
    from ai_enhance_client import ops as optable

    from .flags import add_param_flags

    names = [o.name for o in optable.menu_ops()]
    p = sub.add_parser(
        "batch", help="apply a recipe (saved in GIMP) or one operation to many files",
        description="Apply a recipe (Filters > AI Enhance > Save Recipe... in GIMP) or one operation to "
                    "files, folders (recursively) and glob patterns.  Outputs keep their relative paths, "
                    "bit depth, EXIF, ICC profile and XMP.  A rerun skips what is done (manifest in "
                    "OUT_DIR) and redoes what changed.  Exit status: 0 all done, 1 some files failed, "
                    "2 usage error, 130 interrupted.")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders or glob patterns")
    p.add_argument("-o", "--output", dest="out_dir", type=Path, required=True, metavar="OUT_DIR",
                   help="output folder (created if needed)")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--recipe", type=Path, metavar="FILE", help="a recipe saved by GIMP (docs/recipes.md)")
    what.add_argument("--op", choices=names, metavar="OP", help=f"one operation: {', '.join(names)}")
    g = p.add_argument_group("the operation (with --op; from the operation table)")
    g.add_argument("--model", default=None, help="model id (default: the operation's best installed model)")
    g.add_argument("--scale", type=int, default=None,
                   help="output scale (default: the model's own, within the operation's range)")
    g.add_argument("--strength", default=None, help="0..1 or a percentage: how much of the result shows "
                                                   "(default: the operation's)")
    g.add_argument("--mask", default=None, help="full, or a mask the backend computes (faces ...)")
    g.add_argument("--tile", "--tile-size", dest="tile", type=int, default=None,
                   help="tile size in pixels (0 = automatic)")
    add_param_flags(p)
    o = p.add_argument_group("output")
    o.add_argument("--format", choices=list(FORMATS), default=None,
                   help="output format (default: each input's own)")
    o.add_argument("--output-quality", dest="output_quality", type=int, default=95,
                   help="quality of JPEG/WebP outputs, 1..100 (WebP 100 = lossless; default 95)")
    o.add_argument("--overwrite", action="store_true",
                   help="redo every file and replace outputs this batch did not write")
    o.add_argument("--max-mp", type=float, default=100.0, help="skip inputs larger than this (megapixels)")
    r = p.add_argument_group("running")
    r.add_argument("--engine", choices=["local", "ray"], default="local",
                   help="local: the running backend (started if needed); ray: a Ray cluster")
    r.add_argument("--jobs", type=int, default=3,
                   help="local engine: files in flight (decoded/encoded while the model runs; default 3)")
    r.add_argument("--endpoint", help="local engine: backend endpoint")
    r.add_argument("--no-autostart", action="store_true", help="local engine: fail instead of starting a backend")
    r.add_argument("--ray-address", default=None, help="ray: cluster address (default: RAY_ADDRESS, "
                                                       "else a Ray instance on this machine)")
    r.add_argument("--workers", type=int, default=1, help="ray: model actors (each loads the models once)")
    r.add_argument("--gpus-per-worker", type=float, default=0.0, help="ray: GPUs per actor (0 = CPU)")
    r.add_argument("--cpus-per-worker", type=float, default=1.0, help="ray: CPUs per actor")
    r.add_argument("--models-dir", type=Path, default=None,
                   help="ray: models folder on every node (default: AI_ENHANCE_MODELS_DIR or the per-user folder)")
    r.add_argument("--device", default="auto", help="ray: auto, cpu, cuda, cuda:N, mps")
    r.add_argument("--ray-num-cpus", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress or summary (failures still listed)")
    p.add_argument("--json", action="store_true", help="print a machine-readable summary on stdout")


def _recipe(args, caps_models, default_scale):
    from ai_enhance_client import ops as optable
    from ai_enhance_client import recipes
    from ai_enhance_client.params import ParamError

    from .flags import collect

    if args.recipe is not None:
        given = [f"--{n}" for n in ("model", "scale", "strength", "mask", "tile")
                 if getattr(args, n) is not None]
        from .flags import table_params
        given += [p.flag for name, p in table_params().items()
                  if getattr(args, "param_" + name.replace("-", "_"), None) is not None]
        if given:
            raise ParamError(f"{', '.join(given)} cannot be combined with --recipe (the recipe has "
                             "its own settings); edit the recipe or use --op")
        return recipes.load(args.recipe)
    op = optable.get(args.op)
    options, post = collect(args, op)
    strength = None
    if args.strength is not None:
        p = op.param("strength")
        if p is None:
            raise ParamError(f"--strength does not apply to --op {op.name}")
        strength = p.parse(args.strength)
    mask = args.mask
    if mask is None and op.param("mask") is not None:
        mask = "full" if op.mask_default == "selection" else op.mask_default
    scale = args.scale
    if scale is None and op.param("scale") is not None:
        scale = default_scale(op, args.model or "", {"models": caps_models()})
    return recipes.single(op.name, model=args.model or "", scale=scale, strength=strength, mask=mask,
                          tile=args.tile or 0, options=options, post=post)


def cmd_batch(args, default_scale) -> int:
    """``default_scale(op, model, caps)``: the CLI's choice of scale when --scale is not given
    (passed in by cli/__init__, which this module must not import: no import circle)."""
    from ai_enhance_client.params import ParamError

    from ..batch import files as F
    from ..batch.inputs import gather
    from ..batch.manifest import Manifest, RunLock
    from ..batch.progress import Progress, print_summary, summary
    from ..batch.run import Options, plan, recipe_hash, run_local

    def say(msg: str) -> None:
        print(f"ai-enhance batch: {msg}", file=sys.stderr)

    if args.jobs < 1 or args.workers < 1 or not 1 <= args.output_quality <= 100 or args.max_mp <= 0:
        say("--jobs and --workers must be at least 1, --output-quality 1..100, --max-mp above 0")
        return EXIT_USAGE
    client_caps: dict = {}

    def caps_models() -> list:
        if args.engine == "ray":
            from ..models import ModelStore
            store = ModelStore(args.models_dir) if args.models_dir else ModelStore()
            return [m.to_json() for m in store.list()]
        return _ensure_backend(args, client_caps).get("models", [])

    try:
        recipe = _recipe(args, caps_models, default_scale)
    except ParamError as e:
        say(str(e))
        return EXIT_USAGE
    except Exception as e:  # noqa: BLE001 - the backend could not start: ClientError
        say(str(e))
        return EXIT_FAILED
    opts = Options(out_dir=args.out_dir, fmt=args.format, quality=args.output_quality, overwrite=args.overwrite,
                   max_pixels=int(args.max_mp * 1e6), jobs=args.jobs)
    items, problems = gather(args.inputs, args.out_dir, args.format)
    if not items:
        for p in problems:
            say(f"{p.input}: {p.reason}")
        say("nothing to do: no input images")
        return EXIT_USAGE
    try:
        args.out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        say(f"cannot create the output folder {args.out_dir}: {e.strerror}")
        return EXIT_USAGE
    lock = RunLock(args.out_dir)
    if not lock.acquire():
        say(f"another batch is writing into {args.out_dir}; wait for it or use another folder")
        return EXIT_USAGE
    stop = threading.Event()
    old_term = signal.getsignal(signal.SIGTERM)

    def on_term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    t0 = time.monotonic()
    refused: list = []
    try:
        F.remove_parts(args.out_dir)       # what a killed run left
        manifest = Manifest(args.out_dir)
        manifest.compact()
        tasks, refused = plan(items, opts, manifest)
        progress = Progress(len(tasks) + len(refused), quiet=args.quiet)
        for r in refused:
            progress.add(r)
        if args.engine == "ray":
            results, interrupted = _run_ray(args, tasks, recipe, opts, manifest, progress, stop)
        else:
            try:
                _ensure_backend(args, client_caps)
            except Exception as e:  # noqa: BLE001 - ClientError: one line with the fix
                say(str(e))
                return EXIT_FAILED
            from ..batch.runners import ClientRunner
            runner = ClientRunner(args.endpoint, stop=stop)
            try:
                results, interrupted = run_local(tasks, recipe, runner, opts, manifest, progress, stop)
            finally:
                runner.close()
        progress.close()
    except KeyboardInterrupt:
        results, interrupted = [], True
    except _Unavailable as e:
        say(str(e))
        return EXIT_USAGE
    finally:
        signal.signal(signal.SIGTERM, old_term)
        F.remove_parts(args.out_dir)
        lock.release()
    s = summary(refused + results, time.monotonic() - t0, engine=args.engine,
                recipe_hash=recipe_hash(recipe, opts), interrupted=interrupted, problems=problems)
    if args.json:
        print(json.dumps(s, indent=2))
    if not args.quiet:
        print_summary(s)
    elif s["failures"]:
        for f in s["failures"]:
            print(f"FAILED {f['input']}: {f['reason']}", file=sys.stderr)
    if interrupted:
        return EXIT_INTERRUPTED
    return EXIT_FAILED if s["failed"] else EXIT_OK


class _Unavailable(Exception):
    pass


def _ensure_backend(args, cache: dict) -> dict:
    if not cache:
        from ai_enhance_client.client import Client

        with Client(args.endpoint) as c:
            cache.update(c.ensure_backend(autostart=not args.no_autostart))
    return cache


def _run_ray(args, tasks, recipe, opts, manifest, progress, stop):
    from ..batch.ray_engine import RayUnavailable, run_ray

    try:
        return run_ray(tasks, recipe, opts, manifest, progress, address=args.ray_address,
                       workers=args.workers, gpus_per_worker=args.gpus_per_worker,
                       cpus_per_worker=args.cpus_per_worker,
                       models_dir=str(args.models_dir) if args.models_dir else None,
                       device=args.device, num_cpus=args.ray_num_cpus, stop=stop)
    except RayUnavailable as e:
        raise _Unavailable(str(e)) from None
