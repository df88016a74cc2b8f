#!/usr/bin/env python3
"""Engine benchmark (not a test): prints a table and writes JSON to bench/out/.

1. Speed: seconds per input megapixel, OUR engine vs upstream Real-ESRGAN's RealESRGANer, same
   weights, same image, same tile size, one timed run each after a warm-up (model loading is not
   timed).  Tile sizes: upstream's ``tile`` is the core and ``tile_pad`` is added on each side, so
   the network sees (tile + 2*tile_pad) px extents; our ``tile`` is that extent.
2. Memory: peak RSS (ru_maxrss) of a 4x upscale of a 2000x1500 image with realesr-animevideov3, in a
   fresh subprocess, against the bound "output buffer + one band of tiles + one tile's
   activations" (and, on CUDA, torch's peak GPU allocation).

    python bench/bench_engine.py                      # CPU, weights from AI_ENHANCE_MODELS_DIR
    python bench/bench_engine.py --device cuda        # on a GPU machine (fp16 on both sides)

The upstream side needs `pip install realesrgan==0.3.0` (imported through the
torchvision.transforms.functional_tensor alias); it is skipped, with a note, when missing.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
for p in (REPO / "backend", REPO / "plugin" / "ai-enhance"):   # run from a checkout, too
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

import numpy as np  # noqa: E402

MODELS = {  # id -> (file, upstream network factory name)
    "realesrgan-x4plus": "RealESRGAN_x4plus.pth",
    "realesr-animevideov3": "realesr-animevideov3.pth",
}

#: the model's own output (no post-processing): what upstream computes too
RAW = {"color-lock": False, "fidelity": 0.0}


def default_models_dir() -> Path:
    env = os.environ.get("AI_ENHANCE_MODELS_DIR")
    if env:
        return Path(env)
    shared = REPO.parent / "shared" / "weights"
    return shared if shared.is_dir() else REPO / "models"


def photo(h: int, w: int) -> np.ndarray:
    """A real photo (skimage's astronaut) resized to h x w; u8 RGB."""
    import cv2
    import skimage.data
    img = skimage.data.astronaut()
    interp = cv2.INTER_AREA if h * w < img.shape[0] * img.shape[1] else cv2.INTER_CUBIC
    return np.ascontiguousarray(cv2.resize(img, (w, h), interpolation=interp))


def psnr(a, b) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0 ** 2 / mse))


def sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch
        torch.cuda.synchronize()


# --------------------------------------------------------------------------- ours / upstream

def make_engine(models_dir: Path, device: str):
    from ai_enhance.engine import Engine
    from ai_enhance.models import ModelStore
    return Engine(ModelStore(models_dir), device=device)


def run_ours(engine, model: str, img: np.ndarray, tile: int) -> tuple[np.ndarray, float, dict]:
    from ai_enhance.jobs import JobRequest
    engine.get_model(model)                                      # load outside the timing
    engine.run(JobRequest("upscale", model, 4, 0, post=RAW), img[:16, :16], lambda f, t: None, lambda: False)
    dev = engine.device_info.torch_device
    sync(dev)
    t0 = time.perf_counter()
    out = engine.run(JobRequest("upscale", model, 4, tile, post=RAW), img, lambda f, t: None, lambda: False)
    sync(dev)
    return out.image, time.perf_counter() - t0, out.info


def upstream_classes():
    try:
        import torchvision.transforms.functional as tvf
        sys.modules.setdefault("torchvision.transforms.functional_tensor", tvf)
        from basicsr.archs.rrdbnet_arch import RRDBNet
        from realesrgan import RealESRGANer
        from realesrgan.archs.srvgg_arch import SRVGGNetCompact
        return RealESRGANer, RRDBNet, SRVGGNetCompact
    except ImportError as e:
        return str(e)


def upstream_net(model: str, RRDBNet, SRVGGNetCompact):
    if model == "realesrgan-x4plus":
        return RRDBNet(num_in_ch=3, num_out_ch=3, num_feat=64, num_block=23, num_grow_ch=32, scale=4)
    return SRVGGNetCompact(num_in_ch=3, num_out_ch=3, num_feat=64, num_conv=16, upscale=4, act_type="prelu")


def run_upstream(classes, model: str, path: Path, img: np.ndarray, tile: int, tile_pad: int,
                 device: str) -> tuple[np.ndarray, float]:
    import torch
    RealESRGANer, RRDBNet, SRVGGNetCompact = classes
    half = device.startswith("cuda")
    up = RealESRGANer(scale=4, model_path=str(path), model=upstream_net(model, RRDBNet, SRVGGNetCompact),
                      tile=tile, tile_pad=tile_pad, pre_pad=0, half=half, device=torch.device(device))
    bgr = np.ascontiguousarray(img[:, :, ::-1])
    up.enhance(bgr[:16, :16], outscale=4)                        # warm-up
    sync(device)
    t0 = time.perf_counter()
    out, _ = up.enhance(bgr, outscale=4)
    sync(device)
    return np.ascontiguousarray(out[:, :, ::-1]), time.perf_counter() - t0


# --------------------------------------------------------------------------- RSS child

def rss_child(args) -> None:
    """Runs in a fresh process: one 4x upscale, then prints a JSON line with ru_maxrss."""
    import torch
    img = photo(args.rss_h, args.rss_w)
    if args.rss_side == "ours":
        engine = make_engine(args.models_dir, args.device)
        lm = engine.get_model("realesr-animevideov3")
        tile = args.rss_tile or engine.auto_tile(lm)
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        from ai_enhance.jobs import JobRequest
        t0 = time.perf_counter()
        out = engine.run(JobRequest("upscale", "realesr-animevideov3", 4, tile, post=RAW), img, lambda f, t: None,
                         lambda: False)
        sync(engine.device_info.torch_device)
        secs = time.perf_counter() - t0
        shape, info = out.image.shape, out.info
        px_bytes = None
        from ai_enhance.runtime import devices
        px_bytes = devices.estimate_px_bytes(lm.max_activation or 64, 2 if lm.dtype == "float16" else 4)
    else:
        classes = upstream_classes()
        if isinstance(classes, str):
            print(json.dumps({"error": classes}))
            return
        RealESRGANer, RRDBNet, SRVGGNetCompact = classes
        tile = args.rss_tile or 512
        up = RealESRGANer(scale=4, model_path=str(args.models_dir / MODELS["realesr-animevideov3"]),
                          model=upstream_net("realesr-animevideov3", RRDBNet, SRVGGNetCompact),
                          tile=max(0, tile - 20), tile_pad=10, pre_pad=0,
                          half=args.device.startswith("cuda"), device=torch.device(args.device))
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        t0 = time.perf_counter()
        o, _ = up.enhance(np.ascontiguousarray(img[:, :, ::-1]), outscale=4)
        sync(args.device)
        secs = time.perf_counter() - t0
        shape, info, px_bytes = o.shape, {"tile": tile}, None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    gpu_peak = torch.cuda.max_memory_allocated() if args.device.startswith("cuda") else None
    print(json.dumps({"side": args.rss_side, "baseline_rss": base, "peak_rss": peak, "seconds": secs,
                      "output_shape": list(shape), "info": info, "gpu_peak": gpu_peak,
                      "px_bytes": px_bytes}))


def run_rss(args, side: str) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--rss-child", side, "--device", args.device,
           "--models-dir", str(args.models_dir), "--rss", f"{args.rss_w}x{args.rss_h}"]
    if args.rss_tile:
        cmd += ["--rss-tile", str(args.rss_tile)]
    p = subprocess.run(cmd, capture_output=True, text=True)
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    if p.returncode or not lines:
        return {"side": side, "error": (p.stderr or p.stdout)[-800:]}
    return json.loads(lines[-1])


# --------------------------------------------------------------------------- main

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N | mps | auto")
    ap.add_argument("--models-dir", type=Path, default=default_models_dir())
    ap.add_argument("--x4plus-size", type=int, default=None, help="side of the x4plus speed image")
    ap.add_argument("--anime-size", type=int, default=None, help="side of the animevideov3 speed image")
    ap.add_argument("--tile", type=int, default=None, help="upstream tile (core); ours = tile + 2*pad")
    ap.add_argument("--tile-pad", type=int, default=10)
    ap.add_argument("--rss", default="2000x1500", help="WxH of the memory run")
    ap.add_argument("--rss-tile", type=int, default=0, help="tile for the memory run (0: automatic)")
    ap.add_argument("--no-upstream", action="store_true")
    ap.add_argument("--no-speed", action="store_true")
    ap.add_argument("--no-rss", action="store_true")
    ap.add_argument("--upstream-rss", action="store_true", help="also measure upstream's peak RSS")
    ap.add_argument("--out", type=Path, default=HERE / "out")
    ap.add_argument("--rss-child", choices=["ours", "upstream"], help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.rss_w, args.rss_h = (int(v) for v in args.rss.lower().split("x"))
    if args.rss_child:
        args.rss_side = args.rss_child
        rss_child(args)
        return 0

    import torch
    gpu = args.device != "cpu"
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
        gpu = args.device != "cpu"
    sizes = {"realesrgan-x4plus": args.x4plus_size or (1024 if gpu else 96),
             "realesr-animevideov3": args.anime_size or (2048 if gpu else 256)}
    tile = args.tile if args.tile is not None else (400 if gpu else 64)
    result = {"device": args.device, "host": platform.node(), "torch": torch.__version__,
              "threads": torch.get_num_threads(), "models_dir": str(args.models_dir),
              "tile": tile, "tile_pad": args.tile_pad, "speed": [], "rss": []}
    if gpu and torch.cuda.is_available():
        result["gpu"] = torch.cuda.get_device_name(0)
    classes = None if args.no_upstream else upstream_classes()
    if isinstance(classes, str):
        print(f"upstream oracle not available ({classes}); pip install realesrgan==0.3.0")
        result["upstream_error"] = classes
        classes = None

    if not args.no_speed:
        engine = make_engine(args.models_dir, args.device)
        for model, fname in MODELS.items():
            path = args.models_dir / fname
            if not path.is_file():
                print(f"skip {model}: {path} missing")
                continue
            n = sizes[model]
            img = photo(n, n)
            mp = n * n / 1e6
            ours_img, ours_s, info = run_ours(engine, model, img, tile + 2 * args.tile_pad)
            row = {"model": model, "size": n, "ours_s": ours_s, "ours_s_per_mp": ours_s / mp,
                   "ours_tiles": info["tiles"], "ours_dtype": info["dtype"]}
            _, auto_s, auto_info = run_ours(engine, model, img, 0)
            row.update(ours_auto_s=auto_s, ours_auto_s_per_mp=auto_s / mp, ours_auto_tile=auto_info["tile"],
                       ours_auto_tiles=auto_info["tiles"])
            if classes:
                up_img, up_s = run_upstream(classes, model, path, img, tile, args.tile_pad, args.device)
                row.update(upstream_s=up_s, upstream_s_per_mp=up_s / mp, psnr_vs_upstream=psnr(ours_img, up_img),
                           speedup=up_s / ours_s)
            result["speed"].append(row)
            print(json.dumps(row))
            engine.unload_all()

    if not args.no_rss:
        if not (args.models_dir / MODELS["realesr-animevideov3"]).is_file():
            print("skip memory run: realesr-animevideov3.pth missing")
        else:
            for side in (["ours", "upstream"] if args.upstream_rss and classes else ["ours"]):
                r = run_rss(args, side)
                if "peak_rss" in r and side == "ours":
                    H, W = args.rss_h, args.rss_w
                    t = r["info"].get("tile") or max(H, W)
                    out_bytes = H * 4 * W * 4 * 3
                    band = min(t, H) * 4 * W * 4 * 3 * 4                   # float32 band of one tile row
                    act = t * t * (r.get("px_bytes") or 0) if not gpu else 0
                    r["bound_bytes"] = out_bytes + band + act + H * W * 3
                    r["increase"] = r["peak_rss"] - r["baseline_rss"]
                result["rss"].append(r)
                print(json.dumps(r)[:600])

    # table
    print()
    print(f"device {result['device']} {result.get('gpu', '')}  torch {result['torch']}  "
          f"threads {result['threads']}  tile {tile}+2x{args.tile_pad}")
    print(f"{'model':24} {'px':>6} {'ours s/MP':>10} {'upstream s/MP':>14} {'speedup':>8} {'PSNR dB':>8}"
          f" {'ours auto-tile s/MP':>20}")
    for r in result["speed"]:
        print(f"{r['model']:24} {r['size']:>6} {r['ours_s_per_mp']:>10.2f} "
              f"{r.get('upstream_s_per_mp', float('nan')):>14.2f} {r.get('speedup', float('nan')):>8.2f} "
              f"{r.get('psnr_vs_upstream', float('nan')):>8.1f} "
              f"{r['ours_auto_s_per_mp']:>10.2f} (tile {r['ours_auto_tile']}, {r['ours_auto_tiles']} tiles)")
    for r in result["rss"]:
        if "peak_rss" in r:
            extra = ""
            if "bound_bytes" in r:
                extra = (f"  increase {r['increase'] / 2**20:.0f} MiB  bound {r['bound_bytes'] / 2**20:.0f} MiB "
                         f"(output + band + tile)")
            gp = f"  gpu peak {r['gpu_peak'] / 2**20:.0f} MiB" if r.get("gpu_peak") else ""
            print(f"peak RSS {r['side']:8} {args.rss} x4 animevideov3: {r['peak_rss'] / 2**20:.0f} MiB "
                  f"(baseline {r['baseline_rss'] / 2**20:.0f} MiB, {r['seconds']:.1f} s){extra}{gp}")
        else:
            print(f"memory run {r['side']} failed: {r.get('error', '')[:300]}")
    args.out.mkdir(parents=True, exist_ok=True)
    dest = args.out / f"bench_engine-{args.device.replace(':', '')}.json"
    dest.write_text(json.dumps(result, indent=2))
    print(f"wrote {dest}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
