#!/usr/bin/env python3
"""Service benchmarks (not a test): cold vs warm call, and transport overhead.

- cold call: `ai-enhance enhance` with no backend running (it starts `serve`, imports torch, loads
  the model, runs) vs warm call (same command, backend already up with the model loaded);
- transport: a 12 MP u8 and u16 RGB round trip through the backend with the `noop` op (no model
  work, CURVE-encrypted like every connection), against a plain in-process copy of the same bytes;
- CURVE's cost: the same 12 MP round trip over bare ZeroMQ sockets, with and without CURVE;
- compression (issue 14): ratio and speed of the protocol's lossless codec (zlib level 1 over
  byte planes) on real photos, u8 and u16, and the link speed below which it pays.

Usage: python bench/bench_service.py [--models-dir DIR] [--model realesr-animevideov3] [--reps 5]
       python bench/bench_service.py --only curve,compression     # the transport figures alone
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
    with Client(endpoint) as c:       # CURVE: this user's keys (AI_ENHANCE_KEYS or the config folder)
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
    cmd = [sys.executable, "-m", "ai_enhance", "enhance", "-o", str(tmp / "o.png"), "--model", model, "-q", "--overwrite"]
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


def curve_cost(reps: int) -> dict:
    """12 MP round trip (request + reply of the same size) over bare ROUTER/DEALER sockets on
    loopback, plain vs CURVE: what authentication and encryption cost, nothing else."""
    import zmq

    ctx = zmq.Context()
    spub, ssec = zmq.curve_keypair()
    cpub, csec = zmq.curve_keypair()
    out = {}
    for dt, npdt in ((P.DType.U8, np.uint8), (P.DType.U16, np.uint16)):
        data = np.random.default_rng(0).integers(0, 255, (3000, 4000, 3), dtype=np.uint8).astype(npdt).tobytes()
        row = {}
        for curve in (False, True):
            r, d = ctx.socket(zmq.ROUTER), ctx.socket(zmq.DEALER)
            if curve:
                r.curve_server, r.curve_secretkey, r.curve_publickey = True, ssec, spub
                d.curve_serverkey, d.curve_publickey, d.curve_secretkey = spub, cpub, csec
            port = r.bind_to_random_port("tcp://127.0.0.1")
            d.connect(f"tcp://127.0.0.1:{port}")
            times = []
            for i in range(reps + 1):
                t0 = time.perf_counter()
                d.send_multipart([b"h", data], copy=False)
                m = r.recv_multipart(copy=False)
                r.send_multipart([m[0], b"h", data], copy=False)
                d.recv_multipart(copy=False)
                if i:
                    times.append(time.perf_counter() - t0)
            r.close(0)
            d.close(0)
            row["curve" if curve else "plain"] = statistics.median(times)
        row["mbytes"] = len(data) / 1e6
        out[dt.value] = row
    ctx.term()
    return out


def _photos() -> list[tuple[str, np.ndarray]]:
    import cv2

    out = []
    shared = Path(__file__).resolve().parents[2] / "shared" / "images"
    for name in ("00.jpg", "10045.png", "Blake_Lively.jpg"):
        img = cv2.imread(str(shared / name), cv2.IMREAD_COLOR)
        if img is not None:
            out.append((name, img[:, :, ::-1].copy()))
    if not out:
        from skimage import data
        out = [("astronaut", data.astronaut()), ("coffee", data.coffee())]
    big = cv2.resize(out[0][1], (4000, 3000), interpolation=cv2.INTER_CUBIC)
    out.append((f"{out[0][0]} resized to 12 MP", big))
    return out


def compression(reps: int) -> list[dict]:
    rows = []
    for name, img in _photos():
        for dt in (P.DType.U8, P.DType.U16):
            a = img if dt is P.DType.U8 else img.astype(np.uint16) * 257
            raw = memoryview(np.ascontiguousarray(a)).cast("B")
            tz, tu = [], []
            for _ in range(reps):
                t0 = time.perf_counter()
                z = P.deflate(raw, dt.itemsize)
                tz.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                P.unshuffle(__import__("zlib").decompress(z), dt.itemsize)
                tu.append(time.perf_counter() - t0)
            n, nz = raw.nbytes, len(z)
            cz, cu = statistics.median(tz), statistics.median(tu)
            # sending raw takes n/bw; compressed (nz/bw + cz + cu): it pays while bw < (n-nz)/(cz+cu)
            rows.append({"image": f"{name} {a.shape[1]}x{a.shape[0]}", "dtype": dt.value, "mbytes": n / 1e6,
                         "ratio": n / nz, "deflate_mb_s": n / cz / 1e6, "inflate_mb_s": n / cu / 1e6,
                         "pays_below_mb_s": (n - nz) / (cz + cu) / 1e6})
    return rows


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models-dir", type=Path, default=Path(os.environ.get("AI_ENHANCE_MODELS_DIR", "../shared/weights")))
    ap.add_argument("--model", default="realesr-animevideov3")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--only", default="", help="comma list of: service, curve, compression (default all)")
    args = ap.parse_args()
    only = set(filter(None, args.only.split(","))) or {"service", "curve", "compression"}
    OUT.mkdir(exist_ok=True)
    result = {}
    if "curve" in only:
        cc = result["curve"] = curve_cost(args.reps)
        print("| 12 MP RGB round trip, bare ZeroMQ on loopback | MB each way | plain | CURVE | CURVE cost |")
        print("|---|---|---|---|---|")
        for k, v in cc.items():
            print(f"| {k} | {v['mbytes']:.0f} | {v['plain'] * 1000:.0f} ms | {v['curve'] * 1000:.0f} ms | "
                  f"x{v['curve'] / v['plain']:.1f} ({2 * v['mbytes'] / v['curve']:.0f} MB/s) |")
    if "compression" in only:
        rows = result["compression"] = compression(args.reps)
        print("| image | dtype | MB | ratio | deflate MB/s | inflate MB/s | pays on links slower than |")
        print("|---|---|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['image']} | {r['dtype']} | {r['mbytes']:.1f} | {r['ratio']:.2f} | {r['deflate_mb_s']:.0f} | "
                  f"{r['inflate_mb_s']:.0f} | {r['pays_below_mb_s']:.0f} MB/s |")
    if "service" not in only:
        (OUT / "service.json").write_text(json.dumps(result, indent=2))
        return 0
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        cw = cold_warm(args.models_dir, args.model, args.reps, tmp)
        tr = transport(args.models_dir, args.reps, tmp)
    print(f"cold call (starts backend, imports torch, loads {cw['model']}): {cw['cold_s']:.2f} s")
    print(f"warm call (backend up, model loaded):                      {cw['warm_s_median']:.2f} s (median of {len(cw['warm_runs'])})")
    for k, v in tr.items():
        print(f"transport {k:3} {v['mp']:.0f} MP ({v['mbytes']:.0f} MB) round trip: {v['round_trip_s_median'] * 1000:.0f} ms "
              f"(one in-process copy: {v['copy_s_median'] * 1000:.0f} ms)")
    result.update({"cold_warm": cw, "transport": tr})
    (OUT / "service.json").write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
