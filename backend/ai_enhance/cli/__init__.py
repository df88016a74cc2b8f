"""`ai-enhance`: serve | enhance | batch | models | status | stop | keys | doctor.

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
    p.add_argument("--raw-cache-mb", type=float, default=1024.0,
                   help="memory for recent raw model outputs, so that Re-tune changes the fidelity, "
                        "colour, grain and mask dials without running the model again (default 1024)")
    p.add_argument("--listen", action="append", default=[], metavar="ENDPOINT",
                   help="also serve other machines here, e.g. tcp://0.0.0.0:5588 or tcp://192.168.1.20:5588 "
                        "(CURVE keys: only clients allowed with `ai-enhance keys allow` get in; docs/remote.md)")
    p.add_argument("--keys-dir", type=Path, help="keys folder (default: AI_ENHANCE_KEYS or the user's config folder)")
    p.add_argument("--stop-grace", type=float, default=5.0,
                   help="seconds a running job gets to stop at SIGTERM / `ai-enhance stop` (default 5)")
    p.add_argument("-v", "--verbose", action="store_true")


def _add_enhance(sub) -> None:
    from ai_enhance_client import ops as optable

    from .flags import add_param_flags

    names = [o.name for o in optable.OPS if o.menu]
    p = sub.add_parser("enhance", help="enhance an image file through the backend (starts it if needed)")
    p.add_argument("input", nargs="?", type=Path, help="PNG/JPEG/TIFF (default: a built-in sample photo)")
    p.add_argument("-o", "--output", type=Path, required=True, help="result file (.png, .jpg, .tif)")
    p.add_argument("--overwrite", action="store_true", help="replace the output file if it exists "
                                                             "(never the input file)")
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
    p.add_argument("--mask", type=Path, metavar="FILE",
                   help="the pixels to work on, for --op inpaint: an 8-bit gray image of the input's size, "
                        "white = fill (e.g. what --op find-damage wrote)")
    p.add_argument("--mask-output", type=Path, help="also write the backend's mask (e.g. faces) here")
    p.add_argument("--layers", type=Path, metavar="DIR",
                   help="also write every layer and mask of the result into DIR (e.g. each step of "
                        "--op restore-old-photo) as PNG files")
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
    mi = msub.add_parser("install", help="download catalogue models (verified, resumable) through the "
                                         "backend, with what they need (e.g. the face detector)")
    mi.add_argument("ids", nargs="+", metavar="ID", help="model ids (see `ai-enhance models list`)")
    mr = msub.add_parser("remove", help="delete models (and support files no other model needs)")
    mr.add_argument("ids", nargs="+", metavar="ID")
    for p in (mi, mr):
        p.add_argument("--endpoint", help="backend endpoint (default: AI_ENHANCE_ENDPOINT, settings)")
        p.add_argument("--no-autostart", action="store_true", help="fail instead of starting a backend")
        p.add_argument("-q", "--quiet", action="store_true")
    st = sub.add_parser("status", help="ask the running backend what it has loaded and queued")
    st.add_argument("--endpoint")
    sp = sub.add_parser("stop", help="stop the running backend gracefully (clients are told)")
    sp.add_argument("--endpoint")
    sp.add_argument("--wait", type=float, default=15.0, help="seconds to wait for it to exit (default 15)")
    k = sub.add_parser("keys", help="CURVE keys: who may use this backend, which backend to trust")
    ksub = k.add_subparsers(dest="keys_cmd")
    ksub.add_parser("init", help="create the keys folder and key pairs if missing (0700 / 0600)")
    ksub.add_parser("path", help="print the keys folder")
    ksub.add_parser("export", help="print this client's public key (give it to a backend's `keys allow`)")
    ka = ksub.add_parser("allow", help="let a client key use this user's backend (a running one sees it at once)")
    ka.add_argument("pubkey", help="the client's public key (its `ai-enhance keys export`)")
    ka.add_argument("--name", help="a name for the key file, e.g. the laptop's")
    ksub.add_parser("server-key", help="print this user's backend public key (for remote clients)")
    kt = ksub.add_parser("trust", help="use a remote backend: write its endpoint and public key to the settings")
    kt.add_argument("pubkey", help="the backend's public key (its `ai-enhance keys server-key`)")
    kt.add_argument("--endpoint", required=True, help="e.g. tcp://192.168.1.20:5588")
    ksub.add_parser("list", help="the keys folder, this user's keys and the allowed client keys")
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
    if args.cmd == "stop":
        return cmd_stop(args)
    if args.cmd == "keys":
        return cmd_keys(args, ap)
    ap.print_help()
    return 2


def cmd_serve(args) -> int:
    from ai_enhance_client.settings import Settings

    from ..server import ServeConfig, serve

    settings = Settings.load()
    cfg = ServeConfig(endpoint=args.endpoint or settings.endpoint, models_dir=args.models_dir,
                      log_file=args.log_file, device=args.device, queue_size=args.queue_size,
                      client_timeout=args.client_timeout, idle_unload=args.idle_unload,
                      max_input_pixels=int(args.max_input_mp * 1e6),
                      max_output_pixels=int(args.max_output_mp * 1e6),
                      max_frame_bytes=int(args.max_frame_mb * (1 << 20)),
                      raw_cache_bytes=int(args.raw_cache_mb * (1 << 20)),
                      keys_dir=args.keys_dir or settings.keys_path(), listen=list(args.listen),
                      stop_grace=args.stop_grace)
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

    from ..images import ImageFileError, check_output, frame_count, read_image, write_image
    from ..pixels import NUMPY_OF, WIRE_OF, grain_merge
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
        check_output(args.output, [src], args.overwrite)
        if args.mask_output:
            check_output(args.mask_output, [src, args.output], args.overwrite)
            if Path(args.mask_output).resolve() == Path(args.output).resolve():
                raise ImageFileError("--mask-output must differ from -o")
        cmap = getattr(args, "param_change_map", None)
        if cmap is not None:
            check_output(cmap, [src, args.output, args.mask or src], args.overwrite)
            if Path(cmap).resolve() == Path(args.output).resolve():
                raise ImageFileError("--change-map must differ from -o")
        img = read_image(src)
    except ImageFileError as e:
        print(f"ai-enhance: {e}", file=sys.stderr)
        return 2
    frames = frame_count(src)
    if frames > 1 and not args.quiet:
        print(f"ai-enhance: warning: {src} has {frames} frames (animation or pages); only the first is "
              f"enhanced, the other {frames - 1} are dropped (split it into single images to do them all)",
              file=sys.stderr)
    spec = P.ImageSpec(img.shape[1], img.shape[0], img.shape[2], WIRE_OF[img.dtype])
    mask = None
    if "mask" in op.inputs:
        if args.mask is None:
            print(f"ai-enhance: --op {op.name} needs --mask FILE (white = the pixels to fill)", file=sys.stderr)
            return 2
        try:
            mask = _mask_input(read_image(args.mask), img.shape[:2], args.mask)
        except ImageFileError as e:
            print(f"ai-enhance: {e}", file=sys.stderr)
            return 2
    elif args.mask is not None:
        print(f"ai-enhance: --op {op.name} takes no --mask", file=sys.stderr)
        return 2
    bar = _Bar(args.quiet)
    t0 = time.monotonic()
    try:
        with Client(args.endpoint) as client:
            caps = client.ensure_backend(autostart=not args.no_autostart,
                                         on_wait=lambda text: bar(0.0, text))
            scale = args.scale if args.scale is not None else default_scale(op, args.model, caps)
            res = client.enhance(op=op.name, model=args.model or None, spec=spec,
                                 pixels=memoryview(img).cast("B"), scale=scale, tile=args.tile,
                                 options=options, post=post, on_progress=bar, mask=mask)
    except ClientError as e:
        bar.done()
        print(f"ai-enhance: {e}", file=sys.stderr)
        return 1
    bar.done()
    try:
        if res.spec is not None:
            out = np.frombuffer(res.pixels, dtype=NUMPY_OF[res.spec.dtype]).reshape(
                res.spec.height, res.spec.width, res.spec.channels)
            if "grain" in res.layers:       # composited as GIMP shows the grain layer
                gspec, gbytes = res.layers["grain"]
                layer = np.frombuffer(gbytes, dtype=NUMPY_OF[gspec.dtype]).reshape(
                    gspec.height, gspec.width, gspec.channels)
                out = grain_merge(out, layer, float(post.get("grain", op.param("grain").default)))
            write_image(args.output, out)
            cmap = getattr(args, "param_change_map", None)
            if cmap is not None and "change-map" in res.masks:
                mspec, mbytes = res.masks["change-map"]
                write_image(cmap, np.frombuffer(mbytes, np.uint8).reshape(mspec.height, mspec.width, 1))
        else:     # a masks-only operation: its first mask is the output
            name, (mspec, mbytes) = next(iter(res.masks.items()))
            write_image(args.output, np.frombuffer(mbytes, np.uint8).reshape(mspec.height, mspec.width, 1))
        if args.layers is not None:
            _write_layers(args.layers, res, write_image)
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


def _mask_input(m, shape, path):
    """An image file as the "mask" input: one 8-bit channel of the image's size (gray, or the
    first channel of a colour file; 16-bit and float scaled to 8 bits)."""
    import numpy as np

    from ai_enhance_client import protocol as P

    from ..images import ImageFileError
    if m.shape[:2] != tuple(shape):
        raise ImageFileError(f"the mask {path} is {m.shape[1]}x{m.shape[0]}, the image {shape[1]}x{shape[0]}; "
                             "give a mask of the image's size")
    m = m[:, :, 0]
    if m.dtype == np.uint16:
        m = (m // 257).astype(np.uint8)
    elif m.dtype != np.uint8:
        m = np.clip(np.rint(m * 255), 0, 255).astype(np.uint8)
    m = np.ascontiguousarray(m)
    return P.ImageSpec(m.shape[1], m.shape[0], 1, P.DType.U8), m.tobytes()


def _write_layers(folder: Path, res, write_image) -> None:
    """Every result layer as ``<name>.png`` and every mask as ``<name>-mask.png`` in ``folder``."""
    import numpy as np

    from ..pixels import NUMPY_OF
    folder.mkdir(parents=True, exist_ok=True)
    for name, (spec, data) in res.layers.items():
        a = np.frombuffer(data, dtype=NUMPY_OF[spec.dtype]).reshape(spec.height, spec.width, spec.channels)
        write_image(folder / f"{name}.png", a)
    for name, (spec, data) in res.masks.items():
        write_image(folder / f"{name}-mask.png", np.frombuffer(data, np.uint8).reshape(spec.height, spec.width, 1))


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
    if getattr(args, "models_cmd", None) in ("install", "remove"):
        return cmd_models_change(args)
    from ..models import ModelStore

    store = ModelStore(args.models_dir) if getattr(args, "models_dir", None) else ModelStore()
    infos = store.list()
    problems = store.problems()
    if getattr(args, "json", False):
        print(json.dumps([i.to_json() for i in infos]
                         + [{"file": f, "status": "broken", "installed": False, "reason": why}
                            for f, why in problems], indent=2))
        return 0
    print(f"models folder: {store.dir}")
    print(f"{'id':28} {'status':11} {'size':>9}  source")
    for i in infos:
        nbytes = i.path.stat().st_size if i.installed and i.path else i.size   # on disk, else official
        size = f"{nbytes / 1e6:.1f} MB" if nbytes else "-"
        src = i.file if i.installed else (i.url or "-")
        print(f"{i.id:28} {i.status:11} {size:>9}  {src}")
    if problems:
        print(f"\nfiles in {store.dir} that are not used:")
        for f, why in problems:
            print(f"  {f}: {why}")
    return 0


def cmd_models_change(args) -> int:
    """`models install|remove ID...`: the backend does it (the same path as GIMP's Models... dialog),
    so the files land in the folder the backend serves from."""
    from ai_enhance_client.client import Client, ClientError
    from ai_enhance_client.model_plan import human_size

    bar = _Bar(args.quiet)
    try:
        with Client(args.endpoint) as client:
            client.ensure_backend(autostart=not args.no_autostart, on_wait=lambda text: bar(0.0, text))
            if args.models_cmd == "install":
                info = client.install_models(args.ids, on_progress=bar)
            else:
                info = client.remove_models(args.ids)
    except ClientError as e:
        bar.done()
        print(f"ai-enhance: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:      # the backend drops the job when the heartbeats stop; .part kept
        bar.done()
        print("ai-enhance: interrupted; run the same command again to resume the download", file=sys.stderr)
        return 130
    bar.done()
    if not args.quiet:
        where = info.get("models_dir", "the models folder")
        if args.models_cmd == "install":
            if info.get("installed"):
                print(f"installed {', '.join(info['installed'])} ({human_size(info.get('bytes'))}) into {where}")
            if info.get("present"):
                print(f"already installed: {', '.join(info['present'])}")
        else:
            print(f"removed {', '.join(info.get('removed') or []) or 'nothing'} from {where}")
    return 0


def cmd_status(args) -> int:
    from ai_enhance_client.client import Client, ClientError

    try:
        with Client(args.endpoint) as c:
            caps = c.ping(timeout=2.0)
    except ClientError as e:
        print(f"ai-enhance status: {e}", file=sys.stderr)
        return 1
    if caps is None:
        print(f"no backend answers at {c.endpoint}; start one with `ai-enhance serve`")
        return 1
    q = caps.get("queue", {})
    dev = caps.get("device", {})
    print(f"backend {caps.get('version')} pid {caps.get('pid')} at {c.endpoint}, up {caps.get('uptime')} s; "
          f"device {dev.get('name', dev) if isinstance(dev, dict) else dev}; "
          f"jobs running {q.get('running')}, queued {q.get('queued')}, done {q.get('done')}")
    for m in caps.get("loaded") or []:
        ri = m.get("runtime_info") or {}
        how = m.get("runtime", "torch")
        if how == "openvino":
            how += f" {ri.get('device', '')} {ri.get('precision', '')}".rstrip()
        elif ri.get("openvino"):
            how += f" (OpenVINO {ri['openvino']})"
        print(f"  loaded {m.get('id')}: {how}, idle {m.get('idle_s')} s")
    return 0


def cmd_stop(args) -> int:
    from ai_enhance_client.client import Client, ClientError, is_backend_process

    try:
        with Client(args.endpoint) as c:
            caps = c.ping(timeout=2.0)
            if caps is None:
                print(f"no backend answers at {c.endpoint}: nothing to stop")
                return 0
            pid = caps.get("pid")
            endpoint, local = c.endpoint, isinstance(pid, int) and c.parsed.local
            answer = c.shutdown()
    except ClientError as e:
        print(f"ai-enhance stop: {e}", file=sys.stderr)
        return 1
    if answer is None:
        print(f"ai-enhance stop: the backend (pid {pid}) did not answer the stop request; `kill {pid}` stops it",
              file=sys.stderr)
        return 1
    deadline = time.monotonic() + args.wait
    while time.monotonic() < deadline:
        # a fresh client each time: one that saw the backend alive would call its exit a crash, and
        # a listener closing mid-handshake is no reason to give up
        gone = local and not is_backend_process(pid)
        try:
            with Client(endpoint) as c:
                gone = gone or c.ping(timeout=0.5) is None
        except ClientError:
            pass
        if gone:
            print(f"stopped the backend (pid {pid}) at {endpoint}: {answer.get('message', '')}")
            return 0
        time.sleep(0.2)
    print(f"ai-enhance stop: the backend (pid {pid}) is still running after {args.wait:.0f} s; `kill {pid}`",
          file=sys.stderr)
    return 1


def cmd_keys(args, ap) -> int:
    from ai_enhance_client import keys as K
    from ai_enhance_client import settings as S

    settings = S.Settings.load()
    folder = settings.keys_path()
    try:
        if args.keys_cmd == "path":
            print(folder)
        elif args.keys_cmd == "init":
            existed = (folder / "client.key_secret").is_file() and (folder / "server.key_secret").is_file()
            K.ensure(folder)
            print(f"{'keys already there' if existed else 'created keys'} in {folder} (0700)")
            print(K.describe(folder))
        elif args.keys_cmd == "export":
            print(K.client_pair(folder).public.decode("ascii"))
        elif args.keys_cmd == "server-key":
            print(K.server_pair(folder).public.decode("ascii"))
        elif args.keys_cmd == "allow":
            path = K.allow(folder, args.pubkey, args.name)
            print(f"allowed client key {K.fingerprint(K.parse_public(args.pubkey))}… ({path}); a running "
                  "backend accepts it from its next connection")
        elif args.keys_cmd == "trust":
            key = K.parse_public(args.pubkey).decode("ascii")
            S.parse_endpoint(args.endpoint)
            path = S.settings_path()
            S.save(args.endpoint, settings.serve_command, path, server_key=key)
            print(f"{path}: endpoint {args.endpoint}, backend key {K.fingerprint(key)}…; on the backend "
                  f"machine run `ai-enhance keys allow {K.client_pair(folder).public.decode('ascii')}`")
        elif args.keys_cmd == "list":
            print(K.describe(folder))
            for p in sorted((folder / K.ALLOWED).glob("*.key")) if (folder / K.ALLOWED).is_dir() else []:
                try:
                    print(f"  allowed {p.stem}: {K.read_key_file(p).public.decode('ascii')}")
                except K.KeysError as e:
                    print(f"  unreadable {p.name}: {e}")
        else:
            ap.parse_args(["keys", "--help"])
            return 2
    except (K.KeysError, S.EndpointError, OSError) as e:
        print(f"ai-enhance keys: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
