#!/usr/bin/env python3
"""Re-tune benchmark (not a test): the time of Re-tune (new post dials on a result, from the raw
output the backend holds) against the original run, through a real backend over real ZeroMQ.

For each photo crop: one `enhance` with the model, then Re-tune requests with other dials
(fidelity, colour lock, grain, change map) sent with `reuse` = the first result's raw key, as the
plug-in's Re-tune does. Printed: model run seconds, each re-tune's seconds, whether the backend
reused its raw output (`info.reused`), and the ratio. A last row evicts the cache first (a
backend with a 0 MB raw cache), so Re-tune has to run the model again and says so.

    AI_ENHANCE_MODELS_DIR=../shared/weights python bench/bench_retune.py
    AI_ENHANCE_MODELS_DIR=../shared/weights python bench/bench_retune.py --model ffdnet-color --op denoise --crop 512
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
for p in (REPO / "backend", REPO / "plugin" / "ai-enhance", REPO / "tests"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

os.environ.setdefault("AI_ENHANCE_KEYS", tempfile.mkdtemp(prefix="aie-bench-keys-"))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from ai_enhance_client import protocol as P  # noqa: E402
from ai_enhance_client.client import Client  # noqa: E402
from testkit import start_serve  # noqa: E402

TUNES = [
    {"fidelity": 1.0, "color-lock": True, "grain": 0.0},
    {"fidelity": 0.0, "color-lock": False, "grain": 0.5},
    {"fidelity": 0.5, "color-lock": True, "grain": 1.0, "change-map": True},
]


def crops(size: int) -> list[tuple[str, np.ndarray]]:
    out = []
    images = REPO.parent / "shared" / "images"
    for path in sorted(images.glob("*")) if images.is_dir() else []:
        img = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if img is None:
            continue
        h, w = img.shape[:2]
        y, x = max(0, h // 3 - size // 2), max(0, w // 2 - size // 2)
        c = cv2.cvtColor(img[y:y + size, x:x + size], cv2.COLOR_BGR2RGB)
        out.append((path.name, np.ascontiguousarray(c)))
    return out


def run(c: Client, op: str, model: str, img: np.ndarray, scale: int, post: dict, reuse=None):
    spec = P.ImageSpec(img.shape[1], img.shape[0], 3, P.DType.U8)
    t = time.perf_counter()
    res = c.enhance(op=op, model=model, spec=spec, pixels=img.tobytes(), scale=scale, post=post,
                    reuse=reuse)
    return time.perf_counter() - t, res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="realesrgan-x4plus")
    ap.add_argument("--op", default="upscale")
    ap.add_argument("--scale", type=int, default=None, help="default: 4 for upscale, else 1")
    ap.add_argument("--crop", type=int, default=96)
    args = ap.parse_args()
    models = Path(os.environ.get("AI_ENHANCE_MODELS_DIR", REPO.parent / "shared" / "weights"))
    scale = args.scale or (4 if args.op == "upscale" else 1)
    tmp = Path(tempfile.mkdtemp(prefix="aie-bench-retune-"))
    rows = []
    # the normal backend (1 GiB raw cache), then one that keeps no raw output: Re-tune must run
    # the model again and say so (info.reused false)
    for label, extra in (("", ()), (" (cache evicted)", ("--raw-cache-mb", "0"))):
        b = start_serve(models, Path(tempfile.mkdtemp(dir=tmp)), *extra, wait=180)
        try:
            with Client(b.endpoint, idle_timeout=600) as c:
                for name, img in crops(args.crop)[: None if not extra else 1]:
                    first_s, res = run(c, args.op, args.model, img, scale, {"fidelity": 0.5})
                    key = res.info.get("raw_key")
                    tunes = []
                    for post in TUNES[: None if not extra else 1]:
                        s, r = run(c, args.op, args.model, img, scale, post, reuse=key)
                        tunes.append((s, bool(r.info.get("reused"))))
                    rows.append((name + label, first_s, tunes))
        finally:
            b.stop()
    print(f"\n{args.op} with {args.model}, {args.crop}² crops, x{scale}; real backend over ZeroMQ\n")
    print("| crop | model run s | re-tune s (3 dial sets) | reused | re-tune / run |")
    print("|---|---:|---:|---|---:|")
    for name, first_s, tunes in rows:
        med = statistics.median(s for s, _ in tunes)
        print(f"| {name} | {first_s:.2f} | {' / '.join(f'{s:.2f}' for s, _ in tunes)} | "
              f"{'yes' if all(r for _, r in tunes) else 'no (ran the model)'} | {med / first_s:.1%} |")


if __name__ == "__main__":
    main()
