"""Denoise quality with the real FFDNet colour weights: photos from ../shared/images with Gaussian
noise of sigma 15, 25 and 50 (8-bit levels), PSNR of the noisy input and of the result with the
true level and with the automatic level (noise-level 0), and the automatic estimate itself.

    AI_ENHANCE_MODELS_DIR=../shared/weights python bench/bench_denoise.py [--size 512]
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import cv2
import numpy as np

from ai_enhance.engine import Engine
from ai_enhance.jobs import JobRequest
from ai_enhance.models import ModelStore

REPO = Path(__file__).resolve().parents[1]
IMAGES = REPO.parent / "shared" / "images"


def psnr(a, b) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def centre(img: np.ndarray, size: int) -> np.ndarray:
    h, w = img.shape[:2]
    s = min(size, h, w)
    y, x = (h - s) // 2, (w - s) // 2
    return np.ascontiguousarray(img[y:y + s, x:x + s])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=512, help="centre crop side")
    args = ap.parse_args()
    models = Path(os.environ.get("AI_ENHANCE_MODELS_DIR", REPO.parent / "shared" / "weights"))
    engine = Engine(ModelStore(models), device="cpu")
    photos = sorted(p for p in IMAGES.iterdir() if p.suffix.lower() in (".jpg", ".png"))
    rows = []
    for p in photos:
        clean = centre(cv2.imread(str(p))[:, :, ::-1], args.size)
        for sigma in (15, 25, 50):
            rng = np.random.default_rng(sigma)
            noisy = np.clip(clean + rng.normal(0, sigma, clean.shape), 0, 255).astype(np.uint8)
            t0 = time.monotonic()
            given = engine.run(JobRequest("denoise", "ffdnet-color", options={"noise-level": float(sigma)}),
                               noisy, lambda f, t: None, lambda: False)
            t1 = time.monotonic()
            auto = engine.run(JobRequest("denoise", "ffdnet-color"), noisy, lambda f, t: None, lambda: False)
            est = auto.info["noise_level"]
            rows.append((p.name, sigma, psnr(noisy, clean), psnr(given.image, clean), psnr(auto.image, clean),
                         est, (est - sigma) / sigma * 100, (t1 - t0) / (clean.shape[0] * clean.shape[1] / 1e6)))
    print(f"FFDNet colour (real weights), {args.size}x{args.size} centre crops, CPU\n")
    print("| photo | σ | noisy dB | result (true σ) dB | result (auto) dB | gain (auto) dB | auto σ | σ error | s/MP |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, s, pn, pg, pa, est, err, spm in rows:
        print(f"| {name} | {s} | {pn:.2f} | {pg:.2f} | {pa:.2f} | {pa - pn:+.2f} | {est:.1f} | {err:+.0f} % | {spm:.2f} |")


if __name__ == "__main__":
    main()
