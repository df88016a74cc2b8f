#!/usr/bin/env python3
"""RealESRGAN_x4plus on a CUDA GPU through the tuned tile runner (not a test): prints a markdown
table and writes JSON to bench/out/.

One run, one photo, the engine's tile plan and cross-fade throughout; each row adds one tuning
step to the previous one:

    fp32 baseline      fp32 (TF32 off), 1 tile per pass, no tuning: the reference output
    fp16               the model's half precision
    + channels_last    NHWC memory format (tensor-core convolutions without transposes)
    + cudnn.benchmark  cuDNN autotunes its algorithm per input shape
    + N tiles/pass     tiles of equal size in one forward pass
    + overlap          pinned host buffers, uploads on a side stream overlapping the compute
    + CUDA graphs      one graph per batch shape (launch overhead gone)
    bf16 (all)         the same with bf16 instead of fp16
    + torch.compile    only with --compile (compiling RRDBNet per shape takes minutes)

plus "network only" rows (device tensors in and out, no tiling) and the compute floor:
FLOPs per input pixel counted with hooks, divided by the GPU's fp16 tensor peak (from a table of
datasheet numbers, and measured with a large fp16 matmul).  Columns: seconds per input megapixel,
speed vs the fp32 baseline, multiple of the floor, PSNR of the 8-bit result vs fp32 (goal
>= 40 dB), peak GPU memory.  Goal (issue 11): the best row <= 3x the floor (<= 0.14 s/MP on an
H200).

    python bench/bench_cuda.py --quick      # < 3 min on an H200: 1024x1024, one timed run each
    python bench/bench_cuda.py              # 2048x2048, median of 3
    python bench/bench_cuda.py --weights /path/RealESRGAN_x4plus.pth --image photo.jpg

Weights: --weights (.pth or .safetensors), else RealESRGAN_x4plus.pth / .safetensors in
AI_ENHANCE_MODELS_DIR, ../shared/weights, shared/weights or models/.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
for p in (REPO / "backend", REPO / "plugin" / "ai-enhance"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

import numpy as np  # noqa: E402


def default_weights() -> Path:
    for d in (os.environ.get("AI_ENHANCE_MODELS_DIR"), REPO.parent / "shared" / "weights",
              REPO / "shared" / "weights", REPO / "models"):
        for f in ("RealESRGAN_x4plus.pth", "RealESRGAN_x4plus.safetensors"):
            if d and (Path(d) / f).is_file():
                return Path(d) / f
    return REPO.parent / "shared" / "weights" / "RealESRGAN_x4plus.pth"


def photo(path: Path | None, side: int) -> tuple[np.ndarray, str]:
    """side x side RGB u8: a centre crop of the photo (resized up if it is smaller)."""
    import cv2

    img, what = None, ""
    for cand in ([path] if path else []) + [REPO.parent / "shared" / "images" / "00.jpg",
                                            REPO / "shared" / "images" / "00.jpg"]:
        if cand and Path(cand).is_file():
            bgr = cv2.imread(str(cand), cv2.IMREAD_COLOR)
            if bgr is not None:
                img, what = bgr[:, :, ::-1], str(cand)
                break
    if img is None:
        try:
            import skimage.data
            img, what = skimage.data.astronaut(), "skimage astronaut"
        except ImportError:
            from ai_enhance.runtime.openvino_rt import probe_image
            img = (probe_image(side, side)[0].transpose(1, 2, 0) * 255).round().astype(np.uint8)
            what = "bundled sample (mirrored)"
    h, w = img.shape[:2]
    if min(h, w) < side:
        f = side / min(h, w)
        img = cv2.resize(np.ascontiguousarray(img), (int(np.ceil(w * f)), int(np.ceil(h * f))),
                         interpolation=cv2.INTER_CUBIC)
        h, w = img.shape[:2]
    y, x = (h - side) // 2, (w - side) // 2
    return np.ascontiguousarray(img[y: y + side, x: x + side]), what


def psnr8(a, b) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--weights", type=Path, default=default_weights())
    ap.add_argument("--image", type=Path, default=None)
    ap.add_argument("--quick", action="store_true", help="1024x1024, one timed run per row")
    ap.add_argument("--size", type=int, default=None, help="input side (default 2048; quick 1024)")
    ap.add_argument("--tile", type=int, default=512, help="tile extent side (input pixels)")
    ap.add_argument("--batch", type=int, default=4, help="tiles per forward pass")
    ap.add_argument("--reps", type=int, default=None, help="timed runs per row (default 3; quick 1)")
    ap.add_argument("--compile", action="store_true", help="also a torch.compile row (slow)")
    ap.add_argument("--out", type=Path, default=HERE / "out")
    ap.add_argument("--cpu-dry-run", action="store_true",
                    help="check this script on a machine without a GPU: tiny image, CPU, no floor")
    args = ap.parse_args(argv)

    import torch
    from spandrel import ModelLoader

    from ai_enhance.runtime import cuda_tuning as ct

    dry = args.cpu_dry_run
    if not dry and not torch.cuda.is_available():
        print("no CUDA GPU visible to torch: this benchmark needs one (--cpu-dry-run checks the "
              "script itself on the CPU)")
        return 2
    if not args.weights.is_file():
        print(f"weights not found: {args.weights} (pass --weights)")
        return 2
    size = args.size or (64 if dry else 1024 if args.quick else 2048)
    tile = 48 if dry and args.tile == 512 else args.tile
    reps = args.reps or (1 if args.quick or dry else 3)
    t_start = time.perf_counter()
    dev = torch.device("cpu" if dry else "cuda")
    name = "CPU (dry run)" if dry else torch.cuda.get_device_name(0)

    def sync():
        if not dry:
            torch.cuda.synchronize()

    def reset_peak():
        if not dry:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()

    def peak_gb():
        return float("nan") if dry else torch.cuda.max_memory_allocated() / 1e9
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False

    desc = ModelLoader().load_from_file(str(args.weights))
    module = desc.model.eval()
    half_ok, bf16_ok = bool(desc.supports_half), bool(getattr(desc, "supports_bfloat16", True))
    img, img_what = photo(args.image, size)
    mp = size * size / 1e6

    flops_px = ct.flops_per_pixel(module.to(dev), 3, side=16 if dry else 64)
    module = module.cpu()
    measured_peak = float("nan") if dry else ct.matmul_peak("cuda", n=8192,
                                                            reps=10 if args.quick else 30)
    table = ct.table_peak(name)
    floor_m = ct.floor_seconds_per_mp(flops_px, measured_peak)
    floor_t = ct.floor_seconds_per_mp(flops_px, table) if table else None
    print(f"{name}, torch {torch.__version__}, cuDNN {torch.backends.cudnn.version()}; image "
          f"{img_what} {size}x{size}; tile {tile}; {flops_px / 1e6:.1f} MFLOP per input pixel; "
          f"fp16 matmul {measured_peak / 1e12:.0f} TFLOP/s (table: "
          f"{'-' if table is None else f'{table / 1e12:.0f}'}) -> floor {floor_m:.4f} s/MP "
          f"(table {'-' if floor_t is None else f'{floor_t:.4f}'})")

    B = args.batch
    rows_spec = [
        ("fp32 baseline", dict(dtype="float32", channels_last=False, cudnn_benchmark=False,
                               max_batch=1, overlap=False)),
        ("fp16", dict(dtype="float16", channels_last=False, cudnn_benchmark=False, max_batch=1,
                      overlap=False)),
        ("+ channels_last", dict(dtype="float16", channels_last=True, cudnn_benchmark=False,
                                 max_batch=1, overlap=False)),
        ("+ cudnn.benchmark", dict(dtype="float16", channels_last=True, cudnn_benchmark=True,
                                   max_batch=1, overlap=False)),
        (f"+ {B} tiles/pass", dict(dtype="float16", channels_last=True, cudnn_benchmark=True,
                                   max_batch=B, overlap=False)),
        ("+ overlap (pinned, side streams)", dict(dtype="float16", channels_last=True,
                                                  cudnn_benchmark=True, max_batch=B, overlap=True)),
        ("+ CUDA graphs", dict(dtype="float16", channels_last=True, cudnn_benchmark=True,
                               max_batch=B, overlap=True, graphs=True)),
        ("bf16 (all of the above)", dict(dtype="bfloat16", channels_last=True, cudnn_benchmark=True,
                                         max_batch=B, overlap=True, graphs=True)),
    ]
    if args.compile:
        rows_spec.append(("fp16 + torch.compile (no graphs)",
                          dict(dtype="float16", channels_last=True, cudnn_benchmark=True,
                               max_batch=B, overlap=True, compile=True)))

    results, ref = [], None
    for label, kw in rows_spec:
        torch.backends.cudnn.benchmark = bool(kw.get("cudnn_benchmark"))
        reset_peak()
        try:
            runner = ct.TileRunner(module, device=dev.type, tuning=ct.CudaTuning(**kw),
                                   supports_half=half_ok, supports_bf16=bf16_ok)
            t0 = time.perf_counter()
            out = runner.run_image(img, tile)                 # warm-up: autotune, capture, compile
            sync()
            warm = time.perf_counter() - t0
            times = []
            for _ in range(reps):
                t0 = time.perf_counter()
                out = runner.run_image(img, tile)
                sync()
                times.append(time.perf_counter() - t0)
        except Exception as e:  # noqa: BLE001 - report the row, keep the run going
            results.append({"label": label, "error": f"{type(e).__name__}: {e}"[:300]})
            print(f"{label}: FAILED {type(e).__name__}: {e}")
            continue
        secs = statistics.median(times)
        if ref is None:
            ref = out
        r = {"label": label, "dtype": runner.dtype_name, "batch": kw["max_batch"],
             "seconds": secs, "s_per_mp": secs / mp, "warmup_s": warm,
             "psnr_vs_fp32": psnr8(out, ref), "peak_gpu_gb": peak_gb()}
        results.append(r)
        print(f"{label}: {r['s_per_mp']:.4f} s/MP (warm-up {warm:.1f} s), "
              f"PSNR vs fp32 {r['psnr_vs_fp32']:.1f} dB")
        del runner

    # network only: device tensors in and out, no tiling, no host work
    net_rows = []
    big, small = (32, 16) if dry else (1024, 512)
    for label, dtype, shape in ((f"network only, fp16, 1 x {big}^2", "float16", (1, 3, big, big)),
                                (f"network only, fp16, {B} x {small}^2", "float16", (B, 3, small, small)),
                                (f"network only, bf16, 1 x {big}^2", "bfloat16", (1, 3, big, big))):
        torch.backends.cudnn.benchmark = True
        try:
            runner = ct.TileRunner(module, device=dev.type, tuning=ct.CudaTuning(dtype=dtype),
                                   supports_half=half_ok, supports_bf16=bf16_ok)
            x = torch.rand(shape, device=dev)
            for _ in range(2):
                runner.forward_batch(x)
            sync()
            n = 1 if dry else max(3, reps * 3)
            t0 = time.perf_counter()
            for _ in range(n):
                runner.forward_batch(x)
            sync()
            secs = (time.perf_counter() - t0) / n
            px = shape[0] * shape[2] * shape[3] / 1e6
            net_rows.append({"label": label, "s_per_mp": secs / px})
            print(f"{label}: {secs / px:.4f} s/MP")
            del runner, x
        except Exception as e:  # noqa: BLE001
            net_rows.append({"label": label, "error": f"{type(e).__name__}: {e}"[:300]})

    base = next((r for r in results if "seconds" in r), None)
    print(f"\n### {args.weights.stem} on {name}, {size}x{size} input, tile {tile} "
          f"({'quick' if args.quick else f'median of {reps}'})\n")
    print("| configuration | dtype | tiles/pass | s per input MP | vs fp32 baseline | x floor "
          "(matmul) | x floor (datasheet) | PSNR vs fp32 | peak GPU GB |")
    print("|---|---|---|---|---|---|---|---|---|")
    def times_floor(v, floor):
        return "-" if floor is None else f"{v / floor:.1f}"

    def db(v):
        return "identical" if v == float("inf") else f"{v:.1f} dB"

    for r in results:
        if "error" in r:
            print(f"| {r['label']} | failed: {r['error'][:120]} | | | | | | | |")
            continue
        print(f"| {r['label']} | {r['dtype']} | {r['batch']} | {r['s_per_mp']:.4f} | "
              f"{base['s_per_mp'] / r['s_per_mp']:.2f}x | {times_floor(r['s_per_mp'], floor_m)} | "
              f"{times_floor(r['s_per_mp'], floor_t)} | {db(r['psnr_vs_fp32'])} | "
              f"{r['peak_gpu_gb']:.1f} |")
    for r in net_rows:
        if "error" in r:
            print(f"| {r['label']} | failed: {r['error'][:120]} | | | | | | | |")
        else:
            print(f"| {r['label']} | | | {r['s_per_mp']:.4f} | | {times_floor(r['s_per_mp'], floor_m)} | "
                  f"{times_floor(r['s_per_mp'], floor_t)} | | |")
    ok = [r for r in results if "s_per_mp" in r and r["psnr_vs_fp32"] >= 40 and r is not base]
    if ok:
        best = min(ok, key=lambda r: r["s_per_mp"])
        goal = 3 * floor_m
        print(f"\nbest tuned row: {best['label']} {best['s_per_mp']:.4f} s/MP = "
              f"{best['s_per_mp'] / floor_m:.1f}x the measured floor "
              f"({'meets' if best['s_per_mp'] <= goal else 'misses'} <= 3x = {goal:.4f} s/MP; "
              f"issue's H200 figure: 0.14 s/MP), PSNR vs fp32 {best['psnr_vs_fp32']:.1f} dB")
    print(f"total {time.perf_counter() - t_start:.0f} s")
    args.out.mkdir(parents=True, exist_ok=True)
    dst = args.out / f"cuda-{time.strftime('%Y%m%d-%H%M%S')}.json"
    dst.write_text(json.dumps({"gpu": name, "torch": torch.__version__, "size": size,
                               "tile": tile, "flops_per_px": flops_px,
                               "matmul_peak": measured_peak, "table_peak": table,
                               "floor_s_per_mp": floor_m, "rows": results, "network": net_rows},
                              indent=1, default=str))
    print(f"JSON: {dst}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
