#!/usr/bin/env python3
"""Find Damage + classical inpainting benchmark (not a test): prints markdown tables and writes
JSON to bench/out/.

Two detectors behind find_damage are compared: "learned" (the network of
imaging/damage_net.py) and "classical" (the hand-built one of imaging/damage_classical.py).
Photo sets:
- eval: ../shared/images/*, the issue's evaluation photos.  Neither detector was trained or
  tuned on them.
- holdout: skimage's astronaut and rocket, held out of the network's training (the classical
  detector was tuned on astronaut).
- train (`--train`): the skimage photos the network was trained on (in-sample, for reference).
For each photo and each seed, synthetic damage from tests/damagekit.py (scratches 1-3 px wide,
specks of radius 1-3 px, its defaults) is drawn on the clean photo, then:

- recall: the fraction of *visibly* damaged pixels that lie within 2 px of a flagged pixel.
  "Visibly damaged" = the damage changed the pixel's luma by at least --visible levels of 255
  (default 4).  Why 4: the just-noticeable luma step for a large uniform patch is about 1 level
  of 255 at mid-grey, but a 1-3 px line or dot needs several times the contrast of a large patch
  to be seen (the eye's contrast sensitivity falls steeply at high spatial frequency), and the
  faint anti-aliased fringe of a mark (1-3 levels) is not a mark one would retouch.  Recall at 2
  and 8 levels is printed too, so the choice can be judged.
- false positives: the fraction of the image flagged more than 2 px from every pixel the damage
  touched; also the fraction flagged on the CLEAN photo (pure false alarms on real texture).
- time per megapixel of find_damage.
  "Masked" recall also drops pixels whose change is below the fine-detail contrast of the clean
  photo around them (RMS of luma minus its Gaussian blur, sigma 1.5, 15 px window): contrast
  masking, a mark fainter than the texture it lies on is not seen.
- repair: PSNR (all channels, 0..1 scale) of the damaged photo vs the clean one, of
  find_damage -> inpaint_classical vs the clean one, the gain in dB, and the PSNR that the same
  inpainting reaches with the true mask (the ceiling for this inpainter).

    python bench/bench_damage.py                     # eval + holdout, 3 seeds, sensitivity 0.3/0.5/0.7
    python bench/bench_damage.py --train             # plus the network's training photos
    python bench/bench_damage.py --big               # plus time and memory on a 12 MP scan (4000x3000)
    python bench/bench_damage.py --detectors learned --sens 0.5    # one detector, one setting
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
for p in (REPO / "backend", REPO / "plugin" / "ai-enhance", REPO / "tests"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

import damagekit  # noqa: E402
from ai_enhance.imaging.damage import find_damage  # noqa: E402
from ai_enhance.imaging.inpaint import inpaint_classical  # noqa: E402

SHARED = REPO.parent / "shared" / "images"
DETECTORS = ("learned", "classical")


def load_images(train: bool) -> list[tuple[str, str, np.ndarray]]:
    """(set, name, float32 RGB 0..1) for the eval photos, the holdout photos and, with `train`, the
    network's training photos."""
    import skimage.data
    from train_damage_net import HOLDOUT, load_pool
    out = []
    for p in sorted(SHARED.glob("*")):
        if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".tif", ".tiff"):
            im = cv2.imread(str(p), cv2.IMREAD_COLOR)
            out.append(("eval", p.name, im[:, :, ::-1]))
    for n in HOLDOUT:
        out.append(("holdout", n, getattr(skimage.data, n)()))
    res = []
    for group, name, im in out:
        im = np.asarray(im)
        if im.ndim == 2:
            im = im[:, :, None]
        res.append((group, name, (im[:, :, :3].astype(np.float32) / 255.0)))
    if train:
        res += [("train", name, im) for name, im, _ in load_pool()]
    return res


def use_weights(path: Path) -> None:
    """Evaluate a training run's weights: trust this file's sha256 for this process."""
    import hashlib

    from ai_enhance.imaging import damage_net
    damage_net.read_weights.__defaults__ = (path, hashlib.sha256(path.read_bytes()).hexdigest())
    damage_net._network.cache_clear()


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(1.0 / mse)


def near(mask: np.ndarray, r: int = 2) -> np.ndarray:
    """Pixels within r px (Euclidean) of a set pixel."""
    se = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    return cv2.dilate(mask.astype(np.uint8), se) > 0


def evaluate(clean: np.ndarray, seed: int, sens: float, visible: float, detector: str) -> dict:
    d = damagekit.damage(clean, seed=seed)
    t0 = time.perf_counter()
    mask = find_damage(d.image, sensitivity=sens, detector=detector)
    dt = time.perf_counter() - t0
    found = mask > 0
    touched = (d.scratches > 0) | (d.specks > 0)
    reach = near(found)
    row = {"seed": seed, "sens": sens, "s_per_mp": dt / (clean.shape[0] * clean.shape[1] / 1e6)}
    for lv in (2.0, visible, 8.0):
        vis = d.visible(clean, lv / 255)
        row[f"recall@{lv:g}"] = float((reach & vis).sum() / max(vis.sum(), 1))
    vis = d.visible(clean, visible / 255, masking=True)
    row["recall_masked"] = float((reach & vis).sum() / max(vis.sum(), 1))
    for kind in ("scratches", "specks"):
        vis = d.visible(clean, visible / 255, kind)
        row[f"recall_{kind}"] = float((reach & vis).sum() / max(vis.sum(), 1))
    row["fp"] = float((found & ~near(touched)).mean())
    row["flagged"] = float(found.mean())
    t0 = time.perf_counter()
    fixed = inpaint_classical(d.image, mask)
    row["inpaint_s"] = time.perf_counter() - t0
    row["psnr_damaged"] = psnr(d.image, clean)
    row["psnr_fixed"] = psnr(fixed, clean)
    row["gain"] = row["psnr_fixed"] - row["psnr_damaged"]
    # the same inpainting with the true mask: the ceiling for this inpainter
    row["psnr_truth_mask"] = psnr(inpaint_classical(d.image, near(touched, 1).astype(np.uint8) * 255), clean)
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--sens", type=float, nargs="+", default=[0.3, 0.5, 0.7])
    ap.add_argument("--detectors", nargs="+", default=list(DETECTORS), choices=DETECTORS)
    ap.add_argument("--visible", type=float, default=4.0, help="luma change (levels of 255) that counts as visible")
    ap.add_argument("--train", action="store_true", help="also the network's training photos")
    ap.add_argument("--big", action="store_true", help="also time and memory on a 12 MP scan")
    ap.add_argument("--only", nargs="*", help="image names to run")
    ap.add_argument("--weights", type=Path, help="the network's weights from this file (a training run's) "
                                                 "instead of the shipped ones")
    ap.add_argument("--measure", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.weights:
        use_weights(args.weights)
    if args.measure:
        measure(*args.measure)
        return 0

    images = load_images(args.train)
    if args.only:
        images = [(g, n, im) for g, n, im in images if any(o in n for o in args.only)]
    rows = []
    vis = args.visible
    print(f"| set | image | size | detector | sens | recall (vis>={vis:g}) | masked | scratches | specks | vis>=2 "
          f"| vis>=8 | FP % | FP % on clean | s/MP | PSNR damaged | PSNR repaired | gain dB | PSNR true mask |")
    print("|---" * 18 + "|")
    for group, name, clean in images:
        for det in args.detectors:
            for sens in args.sens:
                clean_fp = float((find_damage(clean, sensitivity=sens, detector=det) > 0).mean())
                rs = [evaluate(clean, s, sens, vis, det) for s in args.seeds]
                m = {k: float(np.mean([r[k] for r in rs])) for k in rs[0] if k not in ("seed", "sens")}
                m.update(set=group, image=name, size=f"{clean.shape[1]}x{clean.shape[0]}", detector=det, sens=sens,
                         clean_fp=clean_fp, runs=rs)
                rows.append(m)
                print(f"| {group} | {name} | {m['size']} | {det} | {sens:g} | {m[f'recall@{vis:g}']:.3f} "
                      f"| {m['recall_masked']:.3f} | {m['recall_scratches']:.3f} "
                      f"| {m['recall_specks']:.3f} | {m['recall@2']:.3f} | {m['recall@8']:.3f} | {100 * m['fp']:.2f} "
                      f"| {100 * clean_fp:.2f} | {m['s_per_mp']:.2f} | {m['psnr_damaged']:.2f} "
                      f"| {m['psnr_fixed']:.2f} | {m['gain']:+.2f} | {m['psnr_truth_mask']:.2f} |", flush=True)
    print()
    print("Averages per set, detector and sensitivity (photos weighted equally):")
    print()
    print(f"| set | detector | sens | recall (vis>={vis:g}) | recall masked | scratches | specks | FP % "
          f"| FP % on clean | gain dB | s/MP |")
    print("|---" * 11 + "|")
    for group in ("eval", "holdout", "train"):
        for det in args.detectors:
            for sens in args.sens:
                sel = [r for r in rows if r["sens"] == sens and r["set"] == group and r["detector"] == det]
                if not sel:
                    continue
                avg = lambda k: float(np.mean([r[k] for r in sel]))  # noqa: E731
                print(f"| {group} | {det} | {sens:g} | {avg(f'recall@{vis:g}'):.3f} | {avg('recall_masked'):.3f} "
                      f"| {avg('recall_scratches'):.3f} | {avg('recall_specks'):.3f} | {100 * avg('fp'):.2f} | "
                      f"{100 * avg('clean_fp'):.2f} | {avg('gain'):+.2f} | {avg('s_per_mp'):.2f} |")
    if args.big:
        print()
        big_timing(args.detectors, args.weights)
    out = HERE / "out"
    out.mkdir(exist_ok=True)
    (out / "bench_damage.json").write_text(json.dumps(rows, indent=1))
    return 0


def big_timing(detectors, weights: Path | None) -> None:
    """12 MP: a real photo upscaled to 4000x3000 with damage drawn at 2x size (a 600 dpi scan).
    find_damage runs in a fresh process so its peak memory can be measured."""
    import subprocess
    import tempfile

    import skimage.data
    clean = cv2.resize(skimage.data.astronaut(), (4000, 3000), interpolation=cv2.INTER_CUBIC)
    clean = clean.astype(np.float32) / 255.0
    d = damagekit.damage(clean, seed=7, scale=2.0)
    print("| 12 MP scan (astronaut upscaled, damage x2) | detector | find_damage wall s | CPU s "
          "| peak RSS growth MiB | RSS before MiB | recall | FP % | inpaint s | gain dB |")
    print("|---" * 10 + "|")
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "damaged.npy"
        np.save(src, d.image)
        for det in detectors:
            dst = Path(tmp) / f"mask-{det}.npy"
            extra = ["--weights", str(weights)] if weights else []
            res = subprocess.run([sys.executable, __file__, "--measure", str(src), str(dst), det, *extra],
                                 capture_output=True, text=True, check=True)
            wall, cpu, grown, base = (float(v) for v in res.stdout.split())
            mask = np.load(dst)
            t0 = time.perf_counter()
            fixed = inpaint_classical(d.image, mask)
            t_inp = time.perf_counter() - t0
            vis = d.visible(clean, 4 / 255)
            rec = float((near(mask > 0) & vis).sum() / vis.sum())
            fp = float(((mask > 0) & ~near((d.scratches > 0) | (d.specks > 0))).mean())
            print(f"| 4000x3000 | {det} | {wall:.1f} | {cpu:.1f} | {grown:.0f} | {base:.0f} | {rec:.3f} "
                  f"| {100 * fp:.2f} | {t_inp:.1f} | {psnr(fixed, clean) - psnr(d.image, clean):+.2f} |", flush=True)


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        import os
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def measure(src: str, dst: str, detector: str) -> None:
    """(child process) find_damage on a saved image: wall s, CPU s, peak RSS growth MiB (the
    resident size sampled every 20 ms against the size just before the call; the network is
    loaded before, on a small image, so its code and weights count in the size before) and
    that size."""
    import threading
    img = np.load(src)
    find_damage(img[:64, :64], detector=detector)
    base = _rss_mib()
    peak = [base]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _rss_mib())
            done.wait(0.02)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    w0, c0 = time.perf_counter(), time.process_time()
    mask = find_damage(img, detector=detector)
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    done.set()
    th.join()
    np.save(dst, mask)
    print(wall, cpu, max(peak[0], _rss_mib()) - base, base)


if __name__ == "__main__":
    sys.exit(main())
