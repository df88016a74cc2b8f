#!/usr/bin/env python3
"""Fidelity stage benchmark (not a test): prints markdown tables and writes JSON to bench/out/.

Real Real-ESRGAN x4plus (loaded with spandrel directly, CPU) on small crops of real photos: a
crop around a detected face and the most textured crop away from faces, from every photo in the
images folder plus skimage's astronaut; and two crops with synthetic grain added (monochrome
film-like grain and per-channel sensor-like noise, sigma 8/255).  For each crop, the model's
output goes through the post-processing functions at fidelity 0 / 0.5 / 1 with colour lock off,
on (default chroma resolution) and "auto" (`color.lock_sigma`, adapted to the source's chroma
noise); lock first, then fidelity.  Measured against the input:

- consistency: PSNR of the input vs the result downscaled by the area average (bicubic upscale
  as a reference);
- gradient energy of the result relative to the raw model output (how much detail survived);
- mean CIEDE2000 and mean a*b* distance between input and downscaled result;
- noise sigma (per channel, /255, `metrics.noise_sigma`) of the source crop, of the whole photo
  (the grain profile: measured on the whole photo, as the stage should measure the whole layer),
  of the raw output, of the raw output with grain 1, and of the default result (lock, fidelity
  0.5) without and with grain 1 (matched per output pixel, the default; topped up with
  `grain.top_up`, as fidelity brings part of the noise back by itself), also downscaled back to
  the input's size.

A memory check: the peak numpy allocations of each step beyond its result, 1000x750 -> 4000x3000.

Then the stage's time per output megapixel (colour lock + fidelity 0.5 + change map + grain
measure/synthesis, 256x256 -> 1024x1024, content does not matter) next to x4plus's time per
output megapixel measured on the crops in the same run.

    python bench/bench_fidelity.py                       # 3-10 minutes on 2 busy CPU cores
    python bench/bench_fidelity.py --crop 64 --threads 2
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
for p in (REPO / "backend", REPO / "plugin" / "ai-enhance"):   # run from a checkout, too
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from ai_enhance.post import changes, color, fidelity, grain, metrics, resample  # noqa: E402

SCALE = 4


def load_rgb(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB).astype(np.float32) / 255.0


def detect_faces(img: np.ndarray, weights: Path) -> list[tuple[int, int, int, int]]:
    """Face boxes (x0, y0, x1, y1) with facexlib's RetinaFace, largest first; [] without it."""
    det_file = weights / "detection_mobilenet0.25_Final.pth"
    if not det_file.exists():
        return []
    try:
        import torch
        from facexlib.detection import init_detection_model
    except ImportError:
        return []
    det = detect_faces.__dict__.get("det")
    if det is None:
        det = init_detection_model("retinaface_mobile0.25", model_rootpath=str(weights), device="cpu")
        detect_faces.det = det
    bgr = np.ascontiguousarray((img[..., ::-1] * 255).round().astype(np.uint8))
    with torch.no_grad():
        boxes = det.detect_faces(bgr, 0.9)
    boxes = [tuple(int(v) for v in b[:4]) for b in boxes]
    return sorted(boxes, key=lambda b: -(b[2] - b[0]) * (b[3] - b[1]))


def crop_at(img: np.ndarray, cy: int, cx: int, n: int) -> np.ndarray:
    h, w = img.shape[:2]
    y0 = int(np.clip(cy - n // 2, 0, h - n))
    x0 = int(np.clip(cx - n // 2, 0, w - n))
    return np.ascontiguousarray(img[y0: y0 + n, x0: x0 + n])


def textured_crop(img: np.ndarray, n: int, avoid: list) -> np.ndarray:
    """The n x n window (on a half-step grid) with the most high-frequency energy, not
    overlapping a face box."""
    y = color.luma(img)
    hp = (y - cv2.GaussianBlur(y, (0, 0), 2.0)) ** 2
    best, where = -1.0, (n // 2, n // 2)
    h, w = y.shape
    for y0 in range(0, h - n + 1, n // 2):
        for x0 in range(0, w - n + 1, n // 2):
            if any(x0 < b[2] and x0 + n > b[0] and y0 < b[3] and y0 + n > b[1] for b in avoid):
                continue
            e = float(hp[y0: y0 + n, x0: x0 + n].mean())
            if e > best:
                best, where = e, (y0 + n // 2, x0 + n // 2)
    return crop_at(img, where[0], where[1], n)


def crops(images: Path, weights: Path, n: int) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, crop, the whole photo it came from)."""
    import skimage.data
    sources = [(p.stem, load_rgb(p)) for p in sorted(images.iterdir())
               if p.suffix.lower() in (".jpg", ".jpeg", ".png")]
    sources.append(("astronaut", skimage.data.astronaut().astype(np.float32) / 255.0))
    out = []
    for name, img in sources:
        faces = detect_faces(img, weights)
        if faces:
            x0, y0, x1, y1 = faces[0]
            out.append((f"{name} face", crop_at(img, (y0 + y1) // 2, (x0 + x1) // 2, n), img))
        out.append((f"{name} texture", textured_crop(img, n, faces), img))
    return out


def with_grain(img: np.ndarray, sigma: float, size: float, mono: bool, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    z = rng.standard_normal(img.shape[:2] + ((1,) if mono else (3,))).astype(np.float32)
    if size > 0:
        z = cv2.GaussianBlur(z, (0, 0), size).reshape(z.shape)
        z /= z.std()
    return np.clip(img + sigma / 255.0 * z, 0, 1).astype(np.float32)


class X4Plus:
    def __init__(self, path: Path):
        import spandrel
        import torch
        self.torch = torch
        self.model = spandrel.ModelLoader().load_from_file(str(path)).eval()
        if self.model.scale != SCALE:
            raise SystemExit(f"{path} is a x{self.model.scale} model, not x{SCALE}")
        self.seconds = 0.0
        self.out_pixels = 0

    def __call__(self, img: np.ndarray) -> np.ndarray:
        torch = self.torch
        x = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))[None]
        t = time.perf_counter()
        with torch.inference_mode():
            y = self.model(x)
        self.seconds += time.perf_counter() - t
        y = y[0].clamp(0, 1).permute(1, 2, 0).numpy().astype(np.float32)
        self.out_pixels += y.shape[0] * y.shape[1]
        return np.ascontiguousarray(y)


LOCKS = ("off", "on", "auto")      # auto: color.lock_sigma(src), adapted to the chroma noise


def post(src: np.ndarray, raw: np.ndarray, fid: float, lock: str) -> np.ndarray:
    """The recommended order: colour lock, then fidelity (fidelity has the last word on
    consistency; the lock's chroma survives it, as both agree with the input)."""
    if lock == "on":
        raw = color.lock(src, raw, SCALE)
    elif lock == "auto":
        raw = color.lock(src, raw, SCALE, sigma=color.lock_sigma(src))
    return fidelity.apply(src, raw, SCALE, fid)


def measure_crop(name: str, src: np.ndarray, raw: np.ndarray, photo: np.ndarray) -> dict:
    """``photo``: what the grain profile is measured on (the whole photo, as the stage should:
    a small crop that is all texture has no flat area to see the grain in)."""
    bic = np.clip(cv2.resize(src, (src.shape[1] * SCALE, src.shape[0] * SCALE),
                             interpolation=cv2.INTER_CUBIC), 0, 1)
    ge_raw = metrics.gradient_energy(raw)
    rows = []
    for lock in LOCKS:
        for fid in (0.0, 0.5, 1.0):
            r = post(src, raw, fid, lock)
            rows.append({
                "fidelity": fid, "lock": lock,
                "consistency_db": metrics.consistency_db(src, r, SCALE),
                "grad_ratio": metrics.gradient_energy(r) / ge_raw,
                "de2000": metrics.delta_e2000_mean(src, r, SCALE),
                "ab": metrics.chroma_distance_mean(src, r, SCALE),
            })
    prof = grain.measure(photo)
    seed = grain.seed_for(src)
    raw_g = np.clip(raw + grain.synthesize(prof, raw.shape[:2], SCALE, color.luma(raw), seed), 0, 1)
    res = post(src, raw, 0.5, "on")
    need = grain.top_up(prof, grain.measure(res))       # fidelity brought some noise back already
    with_g = np.clip(res + grain.synthesize(need, res.shape[:2], SCALE, color.luma(res), seed), 0, 1)
    return {
        "crop": name, "bicubic_db": metrics.consistency_db(src, bic, SCALE), "rows": rows,
        "noise": {"source": metrics.noise_sigma(src) * 255, "photo": prof.channel_level * 255,
                  "raw": metrics.noise_sigma(raw) * 255, "raw_grain1": metrics.noise_sigma(raw_g) * 255,
                  "default": metrics.noise_sigma(res) * 255,
                  "grain1": metrics.noise_sigma(with_g) * 255,
                  "grain1_down": metrics.noise_sigma(resample.down(with_g, SCALE)) * 255,
                  "size_source": prof.size, "size_grain1": grain.measure(with_g).size},
    }


def time_stage(n: int = 256, reps: int = 3) -> dict:
    """Seconds per output MP of each step, best of ``reps``, on an n x n input at x4."""
    import skimage.data
    src = cv2.resize(skimage.data.astronaut(), (n, n), interpolation=cv2.INTER_AREA).astype(np.float32) / 255
    out = np.clip(cv2.resize(src, (n * SCALE, n * SCALE), interpolation=cv2.INTER_CUBIC), 0, 1)
    mp = (n * SCALE) ** 2 / 1e6
    steps = {}

    def best(fn):
        ts = []
        for _ in range(reps):
            t = time.perf_counter()
            r = fn()
            ts.append(time.perf_counter() - t)
        return r, min(ts) / mp

    locked, steps["colour lock"] = best(lambda: color.lock(src, out, SCALE))
    res, steps["fidelity 0.5"] = best(lambda: fidelity.apply(src, locked, SCALE, 0.5))
    _, steps["change map"] = best(lambda: changes.change_map(src, res, SCALE))
    prof, steps["grain measure (source)"] = best(lambda: grain.measure(src))
    present, steps["grain measure (result, for the top-up)"] = best(lambda: grain.measure(res))
    _, steps["grain synthesize"] = best(lambda: grain.synthesize(grain.top_up(prof, present), res.shape[:2],
                                                                 SCALE, color.luma(res), grain.seed_for(src)))
    from ai_enhance.post import texture
    _, t_tex = best(lambda: texture.keep(src, res, SCALE, 0.5, None))
    return {"steps": steps, "total": sum(steps.values()), "keep_texture": t_tex}


def memory_check(n_in: tuple[int, int] = (750, 1000)) -> list[dict]:
    """Peak memory (numpy allocations, tracemalloc) each step adds beyond its result, on a
    1000x750 -> 4000x3000 upscale, next to the size of one band's float32 RGB array."""
    import tracemalloc

    from ai_enhance.post import bands, texture
    h, w = n_in
    rng = np.random.default_rng(0)
    src = rng.random((h, w, 3), dtype=np.float32)
    out = np.clip(cv2.resize(src, (w * SCALE, h * SCALE), interpolation=cv2.INTER_LINEAR), 0, 1)
    prof = grain.GrainProfile([0.02] * 8, [(i + 0.5) / 8 for i in range(8)], 0.8, np.eye(3).tolist(), [1] * 8)
    lum = color.luma(out)
    rows = bands.band_rows(w * SCALE, SCALE, 20)
    band_mb = rows * SCALE * w * SCALE * 3 * 4 / 2**20
    steps = {
        "fidelity 1": lambda: fidelity.apply(src, out, SCALE, 1.0),
        "colour lock": lambda: color.lock(src, out, SCALE),
        "keep texture": lambda: texture.keep(src, out, SCALE, 0.5, None),
        "change map": lambda: changes.change_map(src, out, SCALE),
        "grain synthesize": lambda: grain.synthesize(prof, out.shape[:2], SCALE, lum, 1),
        "grain measure (result)": lambda: grain.measure(out),
    }
    rows_out = []
    for name, fn in steps.items():
        tracemalloc.start()
        r = fn()
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        size = r.nbytes if isinstance(r, np.ndarray) else 0
        rows_out.append({"step": name, "result_mb": size / 2**20, "peak_extra_mb": (peak - size) / 2**20,
                         "band_mb": band_mb})
        del r
    return rows_out


def fmt(v: float, nd: int = 2) -> str:
    return "inf" if v == float("inf") else f"{v:.{nd}f}"


def print_memory(mem: list[dict]) -> None:
    print(f"\n### Memory, 1000x750 -> 4000x3000 (x{SCALE}): peak numpy allocations beyond the result\n")
    print("| step | result (MiB) | peak extra (MiB) | one band, float32 RGB (MiB) |")
    print("|---|---|---|---|")
    for m in mem:
        print(f"| {m['step']} | {m['result_mb']:.0f} | {m['peak_extra_mb']:.0f} | {m['band_mb']:.0f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=Path, default=REPO.parent / "shared" / "images")
    ap.add_argument("--weights", type=Path, default=REPO.parent / "shared" / "weights")
    ap.add_argument("--crop", type=int, default=96)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    ap.add_argument("--json", type=Path, default=HERE / "out" / "fidelity.json")
    ap.add_argument("--memory-only", action="store_true", help="only the memory check (no model)")
    args = ap.parse_args()
    if args.memory_only:
        print_memory(memory_check())
        return

    import torch
    if args.threads:
        torch.set_num_threads(args.threads)
        cv2.setNumThreads(args.threads)
    model = X4Plus(args.weights / "RealESRGAN_x4plus.pth")
    model(np.zeros((16, 16, 3), np.float32))          # warm-up, not counted
    model.seconds, model.out_pixels = 0.0, 0

    cs = crops(args.images, args.weights, args.crop)
    base = cs[0][1]
    for name, g in (("grain8 mono", with_grain(base, 8.0, 0.7, True, 1)),
                    ("noise8 rgb", with_grain(base, 8.0, 0.0, False, 2))):
        cs.append((name, g, g))                # the grain is in the crop only: measure there

    results = []
    for name, src, photo in cs:
        t = time.perf_counter()
        raw = model(src)
        r = measure_crop(name, src, raw, photo)
        r["model_s"] = time.perf_counter() - t
        results.append(r)
        print(f"  {name}: done ({r['model_s']:.1f} s)", file=sys.stderr, flush=True)
    model_s_per_mp = model.seconds / (model.out_pixels / 1e6)
    stage = time_stage()

    print(f"\n### Consistency, detail and colour (x4plus, {args.crop}x{args.crop} crops, x{SCALE})\n")
    print("| crop | bicubic dB | fidelity | lock | consistency dB | grad energy vs raw | dE2000 | a*b* |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        for i, row in enumerate(r["rows"]):
            print(f"| {r['crop'] if i == 0 else ''} | {fmt(r['bicubic_db'], 1) if i == 0 else ''} | "
                  f"{row['fidelity']:.1f} | {row['lock']} | {fmt(row['consistency_db'], 1)} | "
                  f"{fmt(row['grad_ratio'])} | {fmt(row['de2000'])} | {fmt(row['ab'])} |")

    print("\n### The same, averaged over the real-photo crops (min-max)\n")
    print("| fidelity | lock | consistency dB | grad energy vs raw | dE2000 | a*b* |")
    print("|---|---|---|---|---|---|")
    real = [r for r in results if not r["crop"].startswith(("grain8", "noise8"))]
    for i in range(3 * len(LOCKS)):
        rows = [r["rows"][i] for r in real]
        cell = []
        for k, nd in (("consistency_db", 1), ("grad_ratio", 2), ("de2000", 2), ("ab", 2)):
            v = np.array([x[k] for x in rows])
            cell.append(f"{v.mean():.{nd}f} ({v.min():.{nd}f}-{v.max():.{nd}f})")
        print(f"| {rows[0]['fidelity']:.1f} | {rows[0]['lock']} | " + " | ".join(cell) + " |")
    bic = np.array([r["bicubic_db"] for r in real])
    print(f"\nBicubic consistency: {bic.mean():.1f} dB ({bic.min():.1f}-{bic.max():.1f}).")

    print("\n### Noise sigma (/255, RMS over channels), grain 1 per output pixel\n")
    print("Grain profile measured on the whole photo (the crop itself for the two synthetic-grain rows);")
    print("\"source\" is the same estimator on the crop alone; all other columns are on the crop.\n")
    print("| crop | source (crop) | profile (photo) | raw x4plus | raw + grain 1 | lock + fidelity 0.5 | "
          "same + grain 1 (topped up) | same, downscaled | grain size profile / result (px) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        n = r["noise"]
        print(f"| {r['crop']} | {n['source']:.2f} | {n['photo']:.2f} | {n['raw']:.2f} | {n['raw_grain1']:.2f} | "
              f"{n['default']:.2f} | {n['grain1']:.2f} | {n['grain1_down']:.2f} | "
              f"{n['size_source']:.2f} / {n['size_grain1']:.2f} |")

    print(f"\n### Time per output megapixel (x{SCALE}, CPU, {torch.get_num_threads()} torch threads)\n")
    print("| step | s per output MP | share of x4plus |")
    print("|---|---|---|")
    print(f"| x4plus (model only, on the crops above) | {model_s_per_mp:.2f} | 100 % |")
    for k, v in stage["steps"].items():
        print(f"| {k} | {v:.3f} | {100 * v / model_s_per_mp:.2f} % |")
    print(f"| **stage total** | **{stage['total']:.3f}** | **{100 * stage['total'] / model_s_per_mp:.2f} %** |")
    print(f"| keep texture (faces only, not in the total) | {stage['keep_texture']:.3f} | "
          f"{100 * stage['keep_texture'] / model_s_per_mp:.2f} % |")

    mem = memory_check()
    print_memory(mem)

    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"crop": args.crop, "results": results, "model_s_per_out_mp": model_s_per_mp,
                                     "stage": stage, "memory": mem}, indent=1))
    print(f"\n(JSON: {args.json})")


if __name__ == "__main__":
    main()
