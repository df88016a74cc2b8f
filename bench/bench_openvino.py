#!/usr/bin/env python3
"""OpenVINO vs torch vs upstream on the CPU (not a test): prints markdown tables and writes JSON
to bench/out/.

In ONE process, on the same crops of a real photo, with the real weights:

1. Speed and agreement.  realesrgan-x4plus on 128x128 and 96x96 crops, realesr-animevideov3 on a
   256x256 crop, through
   - upstream Real-ESRGAN's ``RealESRGANer`` (realesrgan 0.3.0, tile off, fp32): the reference,
   - torch eager (the same spandrel module our backend loads),
   - OpenVINO f32 and OpenVINO bf16 (or f16) through ``ai_enhance.runtime.openvino_rt``.
   Every runner is warmed up on a 16x16 input first; OpenVINO's first call at a new input size
   (it re-plans memory per shape) is reported separately from a second call at that size.
   Columns: seconds, speed vs upstream, PSNR of the 8-bit result vs upstream's, peak extra RSS
   sampled during the call (approximate: allocators keep freed memory).
2. Start-up.  First compile (convert the torch module, check it against torch, gate the low
   precision, compile, write the cache) vs loading the cached entry in a FRESH process (fresh
   openvino.Core; the time of ``compile_model`` alone, and of import + load + first inference).

    python bench/bench_openvino.py                 # weights: AI_ENHANCE_MODELS_DIR or ../shared/weights
    python bench/bench_openvino.py --quick         # only the 96x96 x4plus crop and animevideov3

Machine load matters (the build machine shares its 2 cores): compare the ratios within one run.
"""
from __future__ import annotations

import argparse
import ctypes
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
for p in (REPO / "backend", REPO / "plugin" / "ai-enhance"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

import numpy as np  # noqa: E402

FILES = {"realesrgan-x4plus": "RealESRGAN_x4plus.pth",
         "realesr-animevideov3": "realesr-animevideov3.pth"}


def default_models_dir() -> Path:
    env = os.environ.get("AI_ENHANCE_MODELS_DIR")
    if env:
        return Path(env)
    shared = REPO.parent / "shared" / "weights"
    return shared if shared.is_dir() else REPO / "models"


def default_image() -> Path | None:
    p = REPO.parent / "shared" / "images" / "00.jpg"
    return p if p.is_file() else None


def load_photo(path: Path | None) -> np.ndarray:
    """RGB u8: the given photo, else skimage's astronaut."""
    if path is not None:
        import cv2
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise SystemExit(f"cannot read {path}")
        return np.ascontiguousarray(bgr[:, :, ::-1])
    import skimage.data
    return skimage.data.astronaut()


def crop(img: np.ndarray, side: int) -> np.ndarray:
    """A side x side crop around the photo's centre (faces, hair, fabric in a group photo)."""
    h, w = img.shape[:2]
    y, x = max(0, h // 2 - side // 2), max(0, w // 2 - side // 2)
    return np.ascontiguousarray(img[y: y + side, x: x + side])


def psnr8(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def to_u8(y_nchw: np.ndarray) -> np.ndarray:
    """Model output (1, 3, H, W) float -> HWC RGB u8, rounded like RealESRGANer."""
    return np.round(np.clip(y_nchw[0].transpose(1, 2, 0), 0, 1) * 255.0).astype(np.uint8)


def to_input(img_u8: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray((img_u8.astype(np.float32) / 255.0).transpose(2, 0, 1)[None])


# --------------------------------------------------------------------------- RSS sampling

def _rss() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return 0


def _trim() -> None:
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass


def timed(fn, *args):
    """(result, seconds, peak extra RSS in bytes sampled every 5 ms)."""
    import gc
    gc.collect()
    _trim()
    base = _rss()
    peak = [base]
    stop = threading.Event()

    def sample():
        while not stop.wait(0.005):
            peak[0] = max(peak[0], _rss())

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    t0 = time.perf_counter()
    try:
        out = fn(*args)
    finally:
        secs = time.perf_counter() - t0
        stop.set()
        th.join()
    peak[0] = max(peak[0], _rss())
    return out, secs, peak[0] - base


# --------------------------------------------------------------------------- runners

def upstream(model: str, path: Path):
    """RealESRGANer (tile off, fp32) as f(img_rgb_u8) -> rgb_u8, or the reason it is missing."""
    try:
        import torch
        import torchvision.transforms.functional as tvf
        sys.modules.setdefault("torchvision.transforms.functional_tensor", tvf)
        from basicsr.archs.rrdbnet_arch import RRDBNet
        from realesrgan import RealESRGANer
        from realesrgan.archs.srvgg_arch import SRVGGNetCompact
    except ImportError as e:
        return f"upstream realesrgan not importable ({e})"
    net = (RRDBNet(num_in_ch=3, num_out_ch=3, num_feat=64, num_block=23, num_grow_ch=32, scale=4)
           if model == "realesrgan-x4plus" else
           SRVGGNetCompact(num_in_ch=3, num_out_ch=3, num_feat=64, num_conv=16, upscale=4,
                           act_type="prelu"))
    up = RealESRGANer(scale=4, model_path=str(path), model=net, tile=0, tile_pad=10, pre_pad=0,
                      half=False, device=torch.device("cpu"))

    def run(img):
        out, _ = up.enhance(np.ascontiguousarray(img[:, :, ::-1]), outscale=4)
        return np.ascontiguousarray(out[:, :, ::-1])
    return run


def torch_eager(module):
    import torch

    def run(img):
        with torch.inference_mode():
            return to_u8(module(torch.from_numpy(to_input(img))).numpy())
    return run


def ov_runner(ovm):
    return lambda img: to_u8(ovm(to_input(img)))


# --------------------------------------------------------------------------- fresh-process load

CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
sys.path[:0] = {paths!r}
from pathlib import Path
import numpy as np
from spandrel import ModelLoader
from ai_enhance.runtime import openvino_rt as rt
d = ModelLoader().load_from_file({weights!r})
t1 = time.perf_counter()
m = rt.compile_model(d.model, in_channels=3, cache_key={key!r}, cache_dir=Path({cache!r}),
                     precision={precision!r})
t2 = time.perf_counter()
m(np.zeros((1, 3, 16, 16), np.float32))
t3 = time.perf_counter()
print(json.dumps(dict(m.to_json(), import_and_read_s=t1 - t0, compile_model_s=t2 - t1,
                      first_infer_16px_s=t3 - t2, total_s=t3 - t0)))
"""


def fresh_load(weights: Path, key: str, cache: Path, precision: str) -> dict:
    code = CHILD.format(paths=[str(REPO / "backend"), str(REPO / "plugin" / "ai-enhance")],
                        weights=str(weights), key=key, cache=str(cache), precision=precision)
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    if p.returncode or not lines:
        return {"error": (p.stderr or p.stdout)[-600:]}
    return json.loads(lines[-1])


# --------------------------------------------------------------------------- main

def fmt_s(v):
    return "-" if v is None else (f"{v:.3f}" if v < 10 else f"{v:.1f}")


def fmt_db(v):
    return "-" if v is None else ("identical" if v == float("inf") else f"{v:.1f} dB")


def fmt_mb(v):
    return "-" if v is None else f"{v / 2**20:.0f}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models-dir", type=Path, default=default_models_dir())
    ap.add_argument("--image", type=Path, default=default_image(),
                    help="a real photo (default ../shared/images/00.jpg, else skimage's astronaut)")
    ap.add_argument("--quick", action="store_true", help="x4plus on 96x96 only, plus animevideov3")
    ap.add_argument("--cache", type=Path, default=None, help="OpenVINO cache folder (default: a new "
                    "temporary one, so the first compile is really first)")
    ap.add_argument("--out", type=Path, default=HERE / "out")
    args = ap.parse_args(argv)

    import torch
    from spandrel import ModelLoader

    from ai_enhance.runtime import openvino_rt as rt

    if not rt.available():
        print("openvino is not installed: pip install openvino")
        return 2
    photo = load_photo(args.image)
    low = rt.fast_precision("CPU")
    cache = args.cache or Path(tempfile.mkdtemp(prefix="ov-bench-"))
    facts = {"cpu": platform.processor() or platform.machine(), "physical_cores": rt.physical_cores(),
             "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
             "openvino": rt.ov_version(), "low_precision": low,
             "image": str(args.image or "skimage astronaut"), "cache": str(cache),
             "load_before": os.getloadavg()}
    try:
        with open("/proc/cpuinfo") as f:
            facts["cpu"] = next(ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    print(f"CPU {facts['cpu']}, {facts['physical_cores']} physical cores, torch {facts['torch']} "
          f"({facts['torch_threads']} threads), OpenVINO {facts['openvino']}, low precision: {low}, "
          f"load average {facts['load_before'][0]:.1f}")

    cases = [("realesrgan-x4plus", 128), ("realesrgan-x4plus", 96), ("realesr-animevideov3", 256)]
    if args.quick:
        cases = [("realesrgan-x4plus", 96), ("realesr-animevideov3", 256)]
    rows, compiles = [], []
    for model in dict.fromkeys(m for m, _ in cases):
        path = args.models_dir / FILES[model]
        if not path.is_file():
            print(f"skipping {model}: {path} is missing")
            continue
        from ai_enhance.models import file_sha256
        key = f"{file_sha256(path)}|bench"
        desc = ModelLoader().load_from_file(str(path))
        module = desc.model.eval().float()
        runners = {}
        up = upstream(model, path)
        if isinstance(up, str):
            print(up)
        else:
            runners["upstream RealESRGANer"] = up
        runners["torch eager"] = torch_eager(module)
        # the default a user gets (auto): timed in a fresh process, cold then cached
        for phase in ("cold", "cached"):
            r = fresh_load(path, key, cache, "auto")
            r.update(model=model, phase=phase)
            compiles.append(r)
            if "error" in r:
                print(f"fresh process ({phase}) failed: {r['error']}")
            else:
                print(f"{model}: fresh process, auto, {phase}: compile_model {r['compile_model_s']:.2f} s "
                      f"({r['precision']}, cache hit {r['cache_hit']})")
        # f32 forced: a conversion of its own (first compile, in-process); the low precision is
        # the auto entry just cached (no second conversion) unless its gate chose f32
        for prec in ["f32"] + ([low] if low else []):
            ovm, secs, _ = timed(lambda p=prec: rt.compile_model(
                module, in_channels=3, cache_key=key, cache_dir=cache,
                precision="f32" if p == "f32" else "auto"))
            if ovm.precision != prec:
                ovm, secs, _ = timed(lambda p=prec: rt.compile_model(
                    module, in_channels=3, cache_key=key, cache_dir=cache, precision=p))
            compiles.append({"model": model, "precision": prec, "compile_s": secs,
                             "cache_hit": ovm.cache_hit, "psnr_vs_f32": ovm.psnr_vs_f32,
                             "info": ovm.to_json()})
            print(f"{model}: OpenVINO {prec} compile {secs:.1f} s (cache hit {ovm.cache_hit})")
            runners[f"OpenVINO {prec}"] = ov_runner(ovm)
        for name, run in runners.items():          # warm-up (lazy init, thread pools)
            run(crop(photo, 16))
        for m, side in cases:
            if m != model:
                continue
            img = crop(photo, side)
            ref = None
            for name, run in runners.items():
                first = None
                if name.startswith("OpenVINO"):
                    # first call at this size: OpenVINO allocates its buffers for the shape
                    # here and keeps them, so this call's RSS is the one to compare
                    _, first, mem_first = timed(run, img)
                out, secs, mem = timed(run, img)
                if first is not None:
                    mem = mem_first
                if ref is None:
                    ref = out
                rows.append({"model": model, "size": side, "runner": name, "seconds": secs,
                             "first_call_s": first, "psnr_vs_ref": psnr8(out, ref),
                             "peak_extra_rss": mem, "ref": next(iter(runners))})
                print(f"  {model} {side}x{side} {name}: {secs:.3f} s")
        del runners, module, desc
    facts["load_after"] = os.getloadavg()

    print("\n### Speed and agreement (one process, same crops; reference = first row of each block)\n")
    print("| model | crop | runtime | seconds | first call at this size | speed vs reference | "
          "PSNR vs reference (8-bit) | peak extra RSS MiB (OpenVINO: first call) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        base = next(x for x in rows if x["model"] == r["model"] and x["size"] == r["size"])
        print(f"| {r['model']} | {r['size']}x{r['size']} | {r['runner']} | {fmt_s(r['seconds'])} | "
              f"{fmt_s(r['first_call_s'])} | {base['seconds'] / r['seconds']:.2f}x | "
              f"{'(reference)' if r is base else fmt_db(r['psnr_vs_ref'])} | {fmt_mb(r['peak_extra_rss'])} |")
    print("\n### Start-up\n")
    print("| model | what | precision | seconds | notes |")
    print("|---|---|---|---|---|")
    for c in compiles:
        if "compile_s" in c:
            what = ("in-process, cached entry (auto)" if c["cache_hit"] else
                    "first compile, in-process (convert + torch check + gate + compile + write cache)")
            print(f"| {c['model']} | {what} | {c['precision']} | {c['compile_s']:.1f} | "
                  f"PSNR vs f32 on the probe: {fmt_db(c['psnr_vs_f32'])} |")
        elif "error" not in c:
            print(f"| {c['model']} | fresh process, {c['phase']}: compile_model | auto -> "
                  f"{c['precision']} | {c['compile_model_s']:.2f} | cache hit {c['cache_hit']}; "
                  f"import+read weights {c['import_and_read_s']:.1f} s, first 16px infer "
                  f"{c['first_infer_16px_s']:.2f} s, gate {fmt_db(c['psnr_vs_f32'] if c['psnr_vs_f32'] != 'inf' else float('inf'))} |")
    print(f"\nload average before/after: {facts['load_before'][0]:.1f} / {facts['load_after'][0]:.1f}")
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / f"openvino-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps({"facts": facts, "rows": rows, "compiles": compiles}, indent=1, default=str))
    print(f"JSON: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
