"""`ai-enhance`: serve | enhance | batch | models | status | doctor.

The client commands talk to the backend over ZeroMQ exactly like the GIMP plug-in does, and never
import torch (they start in a fraction of a second)."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

SAMPLE = Path(__file__).resolve().parents[1] / "assets" / "sample.png"


def _add_serve(sub) -> None:
    p = sub.add_parser("serve", help="run the backend (keeps models loaded, serves GIMP and the CLI)")
    p.add_argument("--endpoint", help="tcp://127.0.0.1:PORT or ipc:///private/dir/sock "
                                      "(default: AI_ENHANCE_ENDPOINT, the settings file, tcp://127.0.0.1:5588)")
    p.add_argument("--models-dir", type=Path, help="default: AI_ENHANCE_MODELS_DIR or the per-user data folder")
    p.add_argument("--log-file", type=Path, help="default: ~/.local/state/ai-enhance/backend.log")
    p.add_argument("--device", default="auto", help="auto (CUDA, then Apple MPS, then CPU), cuda, cuda:N, mps, cpu")
    p.add_argument("--queue-size", type=int, default=8, help="jobs queued or running before BUSY (default 8)")
    p.add_argument("--client-timeout", type=float, default=5.0,
                   help="drop a job whose client sent no heartbeat for this many seconds (default 5)")
    p.add_argument("--idle-unload", type=float, default=600.0, help="unload models unused this long (s)")
    p.add_argument("--max-input-mp", type=float, default=64.0, help="largest input image, megapixels")
    p.add_argument("--max-output-mp", type=float, default=256.0, help="largest result image, megapixels")
    p.add_argument("--max-frame-mb", type=float, default=1024.0,
                   help="largest single message frame; bigger ones drop the connection (default 1024)")
    p.add_argument("-v", "--verbose", action="store_true")


def _add_enhance(sub) -> None:
    from ai_enhance_client import ops as optable

    from .flags import add_param_flags

    names = [o.name for o in optable.OPS if o.menu]
    p = sub.add_parser("enhance", help="enhance an image file through the backend (starts it if needed)")
    p.add_argument("input", nargs="?", type=Path, help="PNG/JPEG/TIFF (default: a built-in sample photo)")
    p.add_argument("-o", "--output", type=Path, required=True, help="result file (.png, .jpg, .tif)")
    p.add_argument("--op", default="upscale", choices=names + ["noop"], metavar="OP",
                   help=f"the operation: {', '.join(names)} (default upscale)")
    p.add_argument("--model", default="", help="model id (see `ai-enhance models list`); default: the "
                                               "operation's best installed model")
    p.add_argument("--scale", type=int, default=None,
                   help="output scale (upscale 1..8, faces 1..4; default: the model's, at most the op's)")
    p.add_argument("--tile", "--tile-size", dest="tile", type=int, default=0,
                   help="tile size in pixels (0 = automatic)")
    add_param_flags(p)
    p.add_argument("--endpoint", help="backend endpoint (default: AI_ENHANCE_ENDPOINT, settings, default port)")
    p.add_argument("--no-autostart", action="store_true", help="fail instead of starting a backend")
    p.add_argument("--mask-output", type=Path, help="also write the backend's mask (e.g. faces) here")
    p.add_argument("-q", "--quiet", action="store_true")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="ai-enhance", description="Local AI photo enhancement for GIMP 3.")
    ap.add_argument("--version", action="store_true", help="print the version")
    sub = ap.add_subparsers(dest="cmd")
    _add_serve(sub)
    _add_enhance(sub)
    from .batch import add_parser as _add_batch
    _add_batch(sub)
    m = sub.add_parser("models", help="list the models and where they come from")
    msub = m.add_subparsers(dest="models_cmd")
    ml = msub.add_parser("list", help="every model id: installed or missing, size, source")
    ml.add_argument("--json", action="store_true")
    ml.add_argument("--models-dir", type=Path)
    st = sub.add_parser("status", help="ask the running backend what it has loaded and queued")
    st.add_argument("--endpoint")
    sub.add_parser("doctor", help="check every link from GIMP to the models; print fixes", add_help=False)
    return ap


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["doctor"]:
        from ..doctor import main as doctor_main
        return doctor_main(argv[1:])
    ap = build_parser()
    args = ap.parse_args(argv)
    if args.version:
        from .. import __version__
        print(f"ai-enhance {__version__}")
        return 0
    if args.cmd == "serve":
        return cmd_serve(args)
    if args.cmd == "enhance":
        return cmd_enhance(args)
    if args.cmd == "batch":
        from .batch import cmd_batch
        return cmd_batch(args, default_scale)
    if args.cmd == "models":
        return cmd_models(args)
    if args.cmd == "status":
        return cmd_status(args)
    ap.print_help()
    return 2


def cmd_serve(args) -> int:
    from ai_enhance_client.settings import Settings

    from ..server import ServeConfig, serve

    cfg = ServeConfig(endpoint=args.endpoint or Settings.load().endpoint, models_dir=args.models_dir,
                      log_file=args.log_file, device=args.device, queue_size=args.queue_size,
                      client_timeout=args.client_timeout, idle_unload=args.idle_unload,
                      max_input_pixels=int(args.max_input_mp * 1e6),
                      max_output_pixels=int(args.max_output_mp * 1e6),
                      max_frame_bytes=int(args.max_frame_mb * (1 << 20)))
    return serve(cfg, verbose=args.verbose)


class _Bar:
    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.tty = sys.stderr.isatty()
        self.last = -1

    def __call__(self, fraction: float, text: str = "") -> None:
        if self.quiet:
            return
        pct = int(fraction * 100)
        if self.tty:
            n = int(fraction * 30)
            sys.stderr.write(f"\r[{'#' * n}{'.' * (30 - n)}] {pct:3d}% {text[:40]:<40}")
            sys.stderr.flush()
        elif pct // 10 != self.last // 10:
            sys.stderr.write(f"{pct:3d}% {text}\n")
        self.last = pct

    def done(self) -> None:
        if not self.quiet and self.tty:
            sys.stderr.write("\n")


def cmd_enhance(args) -> int:
    import numpy as np

    from ai_enhance_client import ops as optable
    from ai_enhance_client import protocol as P
    from ai_enhance_client.client import Client, ClientError
    from ai_enhance_client.params import ParamError

    from ..images import ImageFileError, read_image, write_image
    from ..pixels import NUMPY_OF, WIRE_OF
    from .flags import collect

    op = optable.get(args.op)
    try:
        options, post = collect(args, op)
        if args.scale is not None:
            op.check_scale(args.scale)
    except ParamError as e:
        print(f"ai-enhance: {e}", file=sys.stderr)
        return 2
    src = args.input or SAMPLE
    try:
        img = read_image(src)
    except ImageFileError as e:
        print(f"ai-enhance: {e}", file=sys.stderr)
        return 2
    spec = P.ImageSpec(img.shape[1], img.shape[0], img.shape[2], WIRE_OF[img.dtype])
    bar = _Bar(args.quiet)
    t0 = time.monotonic()
    try:
        with Client(args.endpoint) as client:
            caps = client.ensure_backend(autostart=not args.no_autostart,
                                         on_wait=lambda text: bar(0.0, text))
            scale = args.scale if args.scale is not None else default_scale(op, args.model, caps)
            res = client.enhance(op=op.name, model=args.model or None, spec=spec,
                                 pixels=memoryview(img).cast("B"), scale=scale, tile=args.tile,
                                 options=options, post=post, on_progress=bar)
    except ClientError as e:
        bar.done()
        print(f"ai-enhance: {e}", file=sys.stderr)
        return 1
    bar.done()
    try:
        if res.spec is not None:
            out = np.frombuffer(res.pixels, dtype=NUMPY_OF[res.spec.dtype]).reshape(
                res.spec.height, res.spec.width, res.spec.channels)
            write_image(args.output, out)
        else:     # a masks-only operation: its first mask is the output
            name, (mspec, mbytes) = next(iter(res.masks.items()))
            write_image(args.output, np.frombuffer(mbytes, np.uint8).reshape(mspec.height, mspec.width, 1))
        if args.mask_output and res.masks:
            name, (mspec, mbytes) = next(iter(res.masks.items()))
            write_image(args.mask_output, np.frombuffer(mbytes, np.uint8).reshape(mspec.height, mspec.width, 1))
    except ImageFileError as e:
        print(f"ai-enhance: {e}", file=sys.stderr)
        return 1
    if not args.quiet:
        msg = res.info.get("message")
        size = f"{res.spec.width}x{res.spec.height}" if res.spec else "mask"
        print(f"{src} ({spec.width}x{spec.height}) -> {args.output} ({size}) "
              f"with {res.info.get('model') or args.model or op.name} in {time.monotonic() - t0:.1f} s"
              + (f"; {msg}" if msg else ""))
    return 0


def default_scale(op, model: str, caps: dict) -> int:
    """The model's native scale, within the operation's range (1 for same-size operations)."""
    lo, hi, default = op.scale
    if hi == 1:
        return 1
    mid = model or next((m for m in op.models
                         if any(x.get("id") == m and x.get("installed") for x in caps.get("models", []))),
                        op.default_model)
    native = next((m.get("scale") for m in caps.get("models", []) if m.get("id") == mid), None)
    return max(lo, min(hi, native or default))


def cmd_models(args) -> int:
    from ..models import ModelStore

    store = ModelStore(args.models_dir) if getattr(args, "models_dir", None) else ModelStore()
    infos = store.list()
    if getattr(args, "json", False):
        print(json.dumps([i.to_json() for i in infos], indent=2))
        return 0
    print(f"models folder: {store.dir}")
    print(f"{'id':28} {'status':11} {'size':>9}  source")
    for i in infos:
        nbytes = i.path.stat().st_size if i.installed and i.path else i.size   # on disk, else official
        size = f"{nbytes / 1e6:.1f} MB" if nbytes else "-"
        src = i.file if i.installed else (i.url or "-")
        print(f"{i.id:28} {i.status:11} {size:>9}  {src}")
    return 0


def cmd_status(args) -> int:
    from ai_enhance_client.client import Client

    with Client(args.endpoint) as c:
        caps = c.ping(timeout=2.0)
    if caps is None:
        print(f"no backend answers at {c.endpoint}; start one with `ai-enhance serve`")
        return 1
    q = caps.get("queue", {})
    dev = caps.get("device", {})
    print(f"backend {caps.get('version')} pid {caps.get('pid')} at {c.endpoint}, up {caps.get('uptime')} s; "
          f"device {dev.get('name', dev) if isinstance(dev, dict) else dev}; "
          f"jobs running {q.get('running')}, queued {q.get('queued')}, done {q.get('done')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
