#!/usr/bin/env python3
"""What a retoucher waits for (not a test): the dialog's preview, and how fast a cancel stops the
backend, through a real `ai-enhance serve` on the real weights.

1. Preview: the request the GIMP dialog sends for a 256x256 preview (a region of the layer plus
   32 px of context, `roi` = the region), warm (model loaded), median of --reps.
2. Cancel inside a tile: a 4x upscale whose first tile takes long on a CPU; the plug-in's Cancel
   (a `cancel` message) at --cancel-after s into the tile; time until the backend confirms.
3. Killed client (GIMP's status-bar Cancel kills the plug-in): a client asking for a 1.2 s
   heartbeat limit is SIGKILLed inside a tile; time until the backend's worker runs the next job.

Usage: python bench/bench_retoucher.py [--models-dir DIR] [--reps 3] [--cancel-after 3]
Prints markdown tables and writes bench/out/retoucher.json.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import numpy as np

from ai_enhance_client import protocol as P
from ai_enhance_client.client import Client, ClientError

OUT = Path(__file__).resolve().parent / "out"
REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def photo(side: int) -> np.ndarray:
    from skimage import data, transform
    img = transform.resize(data.astronaut(), (side, side), anti_aliasing=True)
    return (img * 255).round().astype(np.uint8)


def start(models: Path, log: Path) -> tuple[subprocess.Popen, str]:
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    proc = subprocess.Popen([sys.executable, "-m", "ai_enhance", "serve", "--endpoint", endpoint,
                             "--models-dir", str(models), "--log-file", str(log)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    with Client(endpoint) as c:
        for _ in range(240):
            if c.ping(timeout=0.5) is not None:
                return proc, endpoint
    proc.kill()
    raise SystemExit("the backend did not start")


def forward_time(models: Path, model: str, shape) -> float:
    """The network alone on the same input, in this process (what the preview cannot beat)."""
    import torch

    from ai_enhance.engine import Engine
    from ai_enhance.models import ModelStore

    eng = Engine(ModelStore(models), device="cpu")
    lm = eng.get_model(model)
    x = torch.rand(1, 3, shape[0], shape[1])
    with torch.inference_mode():
        lm.forward(x, {})
        t0 = time.perf_counter()
        lm.forward(x, {})
    return time.perf_counter() - t0


def preview_request(c: Client, img: np.ndarray, model: str, scale: int, out_side: int = 256):
    """The dialog's request: an out_side/scale square region, 32 px of context around it."""
    side = -(-out_side // scale)
    margin = 32
    h, w = img.shape[:2]
    x0, y0 = (w - side) // 2, (h - side) // 2
    cx0, cy0 = max(0, x0 - margin), max(0, y0 - margin)
    cx1, cy1 = min(w, x0 + side + margin), min(h, y0 + side + margin)
    crop = np.ascontiguousarray(img[cy0:cy1, cx0:cx1])
    spec = P.ImageSpec(crop.shape[1], crop.shape[0], 3, P.DType.U8)
    t0 = time.perf_counter()
    c.enhance(op="upscale", model=model, spec=spec, pixels=crop.tobytes(), scale=scale,
              roi=P.Rect(x0 - cx0, y0 - cy0, side, side))
    return time.perf_counter() - t0, crop.shape[:2]


KILLED_CLIENT = textwrap.dedent("""
    import sys, numpy as np
    from ai_enhance_client import protocol as P
    from ai_enhance_client.client import Client
    img = np.zeros((int(sys.argv[2]), int(sys.argv[2]), 3), np.uint8)
    c = Client(sys.argv[1], heartbeat=1.2)
    def on_progress(f, t):
        if t.startswith("tile 1"):
            print("RUNNING", flush=True)
    c.enhance(op="upscale", model=sys.argv[3], spec=P.ImageSpec(img.shape[1], img.shape[0], 3, P.DType.U8),
              pixels=img.tobytes(), scale=4, on_progress=on_progress)
""")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models-dir", type=Path,
                    default=Path(os.environ.get("AI_ENHANCE_MODELS_DIR") or REPO.parent / "shared" / "weights"))
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--cancel-after", type=float, default=3.0)
    ap.add_argument("--slow-model", default="realesrgan-x4plus")
    ap.add_argument("--only-preview", action="store_true", help="skip the cancel measurements")
    ap.add_argument("--slow-preview", action="store_true",
                    help="also time a preview of the slow model (about 100 s on a 2-core CPU)")
    args = ap.parse_args()
    OUT.mkdir(exist_ok=True)
    tmp = Path(tempfile.mkdtemp())
    proc, endpoint = start(args.models_dir, tmp / "serve.log")
    results: dict = {"preview": [], "cancel": [], "kill": []}
    try:
        img = photo(512)
        with Client(endpoint) as c:
            models = {m["id"] for m in c.ping()["models"] if m.get("installed")}
            runs = [("realesr-animevideov3", 4), ("realesr-animevideov3", 1), ("realesr-general-x4v3", 4)]
            if args.slow_preview:
                runs.append((args.slow_model, 4))
            for model, scale in runs:
                if model not in models:
                    continue
                preview_request(c, img, model, scale)            # warm-up: load the model
                times = []
                for _ in range(args.reps if model != args.slow_model else 1):
                    t, shape = preview_request(c, img, model, scale)
                    times.append(t)
                results["preview"].append({"model": model, "scale": scale, "input": list(shape),
                                           "seconds": statistics.median(times),
                                           "forward_s": forward_time(args.models_dir, model, shape)})

            # 2. the plug-in's Cancel inside a tile
            if args.slow_model in models and not args.only_preview:
                big = photo(384)
                stop = threading.Event()
                state = {}

                def on_progress(f, text):
                    if text.startswith("tile 1") and "t" not in state:
                        state["t"] = time.monotonic()
                        threading.Timer(args.cancel_after, stop.set).start()

                spec = P.ImageSpec(384, 384, 3, P.DType.U8)
                try:
                    c.enhance(op="upscale", model=args.slow_model, spec=spec, pixels=big.tobytes(), scale=4,
                              on_progress=on_progress, should_cancel=stop.is_set)
                except ClientError as e:
                    results["cancel"].append({"model": args.slow_model, "confirmed": e.confirmed,
                                              "latency_s": round(e.seconds, 3),
                                              "into_tile_s": args.cancel_after})

        # 3. a killed client
        if args.slow_model in models and not args.only_preview:
            env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
            child = subprocess.Popen([sys.executable, "-c", KILLED_CLIENT, endpoint, "384", args.slow_model],
                                     stdout=subprocess.PIPE, text=True, env=env)
            child.stdout.readline()                      # RUNNING: inside the first tile
            time.sleep(args.cancel_after)
            t_kill = time.monotonic()
            child.send_signal(signal.SIGKILL)
            child.wait()
            tiny = np.zeros((4, 4, 3), np.uint8)
            with Client(endpoint) as c2:
                c2.enhance(op="noop", spec=P.ImageSpec(4, 4, 3, P.DType.U8), pixels=tiny.tobytes())
            results["kill"].append({"model": args.slow_model, "heartbeat_limit_s": 1.2,
                                    "worker_free_after_s": round(time.monotonic() - t_kill, 3)})
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)

    print("| preview (256x256 out) | scale | input sent | preview s (warm, median) | the network alone s |\n"
          "|---|---|---|---|---|")
    for r in results["preview"]:
        print(f"| {r['model']} | {r['scale']} | {r['input'][1]}x{r['input'][0]} | {r['seconds']:.2f} | "
              f"{r['forward_s']:.2f} |")
    print("\n| cancel | model | into the tile (s) | confirmed | latency (s) |\n|---|---|---|---|---|")
    for r in results["cancel"]:
        print(f"| Cancel button | {r['model']} | {r['into_tile_s']} | {r['confirmed']} | {r['latency_s']:.2f} |")
    for r in results["kill"]:
        print(f"| client killed (heartbeat {r['heartbeat_limit_s']} s) | {r['model']} | {args.cancel_after} | "
              f"(log) | {r['worker_free_after_s']:.2f} |")
    (OUT / "retoucher.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
