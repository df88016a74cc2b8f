#!/usr/bin/env python3
"""Service benchmarks (not a test): cold vs warm call, and transport overhead.

- cold call: `ai-enhance enhance` with no backend running (it starts `serve`, imports torch, loads
  the model, runs) vs warm call (same command, backend already up with the model loaded);
- transport: a 12 MP u8 and u16 RGB round trip through the backend with the `noop` op (no model
  work), against a plain in-process copy of the same bytes.

Usage: python bench/bench_service.py [--models-dir DIR] [--model realesr-animevideov3] [--reps 5]
Prints a table and writes bench/out/service.json.
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
import time
from pathlib import Path

import numpy as np

from ai_enhance_client import protocol as P
from ai_enhance_client.client import Client

OUT = Path(__file__).resolve().parent / "out"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop(endpoint: str) -> None:
    with Client(endpoint) as c:
        caps = c.ping(timeout=2)
    if caps:
        os.kill(caps["pid"], signal.SIGTERM)
        time.sleep(1.0)


def cold_warm(models_dir: Path, model: str, reps: int, tmp: Path) -> dict:
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    env = dict(os.environ, AI_ENHANCE_ENDPOINT=endpoint, AI_ENHANCE_MODELS_DIR=str(models_dir),
               AI_ENHANCE_CONFIG=str(tmp / "none.json"),
               AI_ENHANCE_SERVE_COMMAND=json.dumps([sys.executable, "-m", "ai_enhance", "serve",
                                                    "--log-file", str(tmp / "serve.log")]))
    cmd = [sys.executable, "-m", "ai_enhance", "enhance", "-o", str(tmp / "o.png"), "--model", model, "-q"]
    times = []
    try:
        for i in range(reps + 1):
            t0 = time.perf_counter()
            subprocess.run(cmd, env=env, check=True)
            times.append(time.perf_counter() - t0)
    finally:
        stop(endpoint)
    return {"model": model, "image": "built-in sample 160x160", "cold_s": times[0],
            "warm_s_median": statistics.median(times[1:]), "warm_runs": times[1:]}


def transport(models_dir: Path, reps: int, tmp: Path) -> dict:
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    env = dict(os.environ, AI_ENHANCE_MODELS_DIR=str(models_dir))
    proc = subprocess.Popen([sys.executable, "-m", "ai_enhance", "serve", "--endpoint", endpoint,
                             "--log-file", str(tmp / "t.log")], env=env, start_new_session=True)
    res = {}
    try:
        with Client(endpoint) as c:
            t0 = time.monotonic()
            while c.ping(timeout=1) is None:
                if time.monotonic() - t0 > 60:
                    raise SystemExit("backend did not start")
            h, w = 3000, 4000
            for dt, npdt in ((P.DType.U8, np.uint8), (P.DType.U16, np.uint16)):
                img = np.random.default_rng(0).integers(0, np.iinfo(npdt).max, (h, w, 3), dtype=npdt)
                spec = P.ImageSpec(w, h, 3, dt)
                t_copy = []
                for _ in range(reps):
                    t0 = time.perf_counter()
                    _ = bytearray(img.tobytes())
                    t_copy.append(time.perf_counter() - t0)
                t_rt = []
                for _ in range(reps):
                    t0 = time.perf_counter()
                    r = c.enhance(op="noop", model="noop", spec=spec, pixels=memoryview(img).cast("B"))
                    t_rt.append(time.perf_counter() - t0)
                    assert r.spec == spec and len(r.pixels) == spec.nbytes
                res[dt.value] = {"mp": w * h / 1e6, "mbytes": spec.nbytes / 1e6,
                                 "round_trip_s_median": statistics.median(t_rt),
                                 "copy_s_median": statistics.median(t_copy)}
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
    return res


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models-dir", type=Path, default=Path(os.environ.get("AI_ENHANCE_MODELS_DIR", "../shared/weights")))
    ap.add_argument("--model", default="realesr-animevideov3")
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    OUT.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        cw = cold_warm(args.models_dir, args.model, args.reps, tmp)
        tr = transport(args.models_dir, args.reps, tmp)
    print(f"cold call (starts backend, imports torch, loads {cw['model']}): {cw['cold_s']:.2f} s")
    print(f"warm call (backend up, model loaded):                      {cw['warm_s_median']:.2f} s (median of {len(cw['warm_runs'])})")
    for k, v in tr.items():
        print(f"transport {k:3} {v['mp']:.0f} MP ({v['mbytes']:.0f} MB) round trip: {v['round_trip_s_median'] * 1000:.0f} ms "
              f"(one in-process copy: {v['copy_s_median'] * 1000:.0f} ms)")
    (OUT / "service.json").write_text(json.dumps({"cold_warm": cw, "transport": tr}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
