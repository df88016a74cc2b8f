#!/usr/bin/env python3
"""GIMP round trip (not a test): what a filter call costs through a real GIMP 3 beyond the same
request made by a Python client, and where the plug-in process spends it.

One GIMP start per GIMP version (headless, the Debian roots of tests/e2e, the e2e harness), one
real backend (`ai-enhance serve`, real weights) for all of them.  Inside GIMP
(bench/gimp_drive.py), warm (one warm-up call each), median of the reps, the calls taking turns:

  (a) an empty Python procedure (bench/gimp_plugin/aie-bench): GIMP's floor for any plug-in call;
  (b) python-fu-ai-enhance-upscale on a 256x256 RGB u8 layer, realesr-animevideov3, scale 1, and
      the same request (same arguments, defaults for the rest) from a direct Client in the same
      Python: the difference is the GIMP overhead;
  (c) python-fu-ai-enhance-noop (the no-op row: a PDB procedure without a menu entry) on a
      4000x3000 RGB u8 layer end to end, the direct client's noop on the same bytes, and GIMP's
      own pixel cost: an empty procedure that only reads the layer, and one that reads it and
      adds a masked layer with those pixels in one undo step.

The plug-in writes its per-phase times (AI_ENHANCE_PROFILE) for every call; the table shows
their medians, plus the process's own start (GIMP's fork + exec + Python start-up) and the time
from the plug-in's last line to GIMP's return.

Usage (as root: the roots are chrooted into; from the checkout whose plug-in and backend to measure):
  PYTHONPATH=$PWD/backend:$PWD/plugin/ai-enhance python bench/bench_gimp.py [--reps 5] [--big-reps 3]
      [--gimp 3.0,3.2] [--models-dir /work/shared/weights] [--tag after]
  python bench/bench_gimp.py --combine run1,run2,run3     # medians over runs already made
Roots: AI_ENHANCE_GIMP_ROOT (default /var/cache/gimp-ai-enhance/gimp-root-trixie), AI_ENHANCE_GIMP32_ROOT
(default /var/cache/gimp-ai-enhance/gimp-root-sid).  Writes bench/out/gimp[-TAG].json.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
OUT = HERE / "out"
ROOTS = {"3.0": ("AI_ENHANCE_GIMP_ROOT", "/var/cache/gimp-ai-enhance/gimp-root-trixie"),
         "3.2": ("AI_ENHANCE_GIMP32_ROOT", "/var/cache/gimp-ai-enhance/gimp-root-sid")}
# every backend and client of the run authenticates with keys of its own, never the user's
os.environ.setdefault("AI_ENHANCE_KEYS", tempfile.mkdtemp(prefix="aie-bench-keys-"))
# as in the tests: models run on torch (an OpenVINO conversion would take minutes at first use)
os.environ.setdefault("AI_ENHANCE_RUNTIME", "torch")


def harness():
    """tests/e2e/conftest.py, the e2e harness (GIMP roots, profiles, drives, a real backend)."""
    spec = importlib.util.spec_from_file_location("e2e_harness", REPO / "tests" / "e2e" / "conftest.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod            # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


def med(runs: list[dict]) -> float:
    return statistics.median(r["seconds"] for r in runs)


def outside(runs: list[dict], phase: str = "enhance: send, backend, receive") -> float:
    """Median of (call seconds - the plug-in's own request phase): what GIMP and the plug-in add
    around the request, without the backend's noise on a loaded machine."""
    return statistics.median(r["seconds"] - r["profile"]["phases"].get(phase, 0.0)
                             for r in runs if r.get("profile"))


def phase_table(runs: list[dict]) -> dict[str, float]:
    """Median seconds per phase of the plug-in calls in ``runs``, framed by the process's start
    (from the PDB call) and the return (from the plug-in's last line)."""
    from ai_enhance_client.phases import summarize
    recs = []
    for r in runs:
        p = r.get("profile")
        if not p:
            continue
        ph = {"GIMP starts the process, Python starts": p["wall0"] - p["call_wall"]}
        ph.update(p["phases"])
        ph["plug-in exit, GIMP returns"] = p["return_wall"] - p["wall_end"]
        recs.append({"phases": ph})
    return summarize(recs)


def run_gimp(h, version: str, backend, args) -> dict:
    env_var, default = ROOTS[version]
    root = Path(os.environ.get(env_var) or default)
    why = h.root_problem(root, env_var)
    if why:
        return {"skipped": why}
    gimp_version = ""
    for line in (root / h.MARKER).read_text().splitlines():
        if line.startswith("gimp="):
            gimp_version = line.split("=", 1)[1]
    gimp = h.Gimp(f"gimp{version}", root, gimp_version)
    template = gimp.template_profile()      # AI Enhance installed and queried, as in the e2e tests
    (root / "tmp").mkdir(exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="aie-bench-", dir=root / "tmp"))
    try:
        profile = work / "profile"
        shutil.copytree(template, profile, symlinks=True)
        gimp.install_plugin(profile, HERE / "gimp_plugin" / "aie-bench")
        run = gimp.run(HERE / "gimp_drive.py", install=False, profile=profile, timeout=args.timeout,
                       env={"AI_ENHANCE_ENDPOINT": backend.endpoint,
                            "AI_ENHANCE_PROFILE": "{work}/profile.jsonl",
                            # as a user's profile: the plug-in's modules are compiled once, at the
                            # first call (the e2e harness turns that off, "1")
                            "PYTHONDONTWRITEBYTECODE": "1" if args.no_bytecode_cache else ""},
                       params={"reps": args.reps, "big_reps": args.big_reps, "model": args.model,
                               "small": args.small, "big": list(args.big)})
        out = {"gimp": run.results["_meta"]["gimp_version"], "python": run.results["_meta"]["python"]}
        for name in ("floor", "upscale_small", "noop_big"):
            out[name] = run.case(name)
        return out
    finally:
        shutil.rmtree(work, ignore_errors=True)


def summary(r: dict, args) -> dict:
    up, big = r["upscale_small"], r["noop_big"]
    s = {"empty": med(r["floor"]["empty"]),
         "up_gimp": med(up["gimp"]), "up_direct": med(up["direct"]),
         "big_gimp": med(big["gimp"]), "big_direct": med(big["direct"]),
         "big_read": med(big["read"]), "big_copy": med(big["copy"])}
    s["up_overhead"] = s["up_gimp"] - s["up_direct"]
    s["up_outside"] = outside(up["gimp"])
    s["big_outside"] = outside(big["gimp"])
    s["big_overhead"] = s["big_gimp"] - s["big_direct"]
    s["phases_empty"] = phase_table(r["floor"]["empty"])
    s["phases_up"] = phase_table(up["gimp"])
    s["phases_big"] = phase_table(big["gimp"])
    s["phases_copy"] = phase_table(big["copy"])
    s["big_copy_flush"] = med(big["copy_flush"])
    s["phases_copy_flush"] = phase_table(big["copy_flush"])
    return s


def print_tables(results: dict, args) -> None:
    done = {v: summary(r, args) for v, r in results.items() if "skipped" not in r}
    for v, r in results.items():
        if "skipped" in r:
            print(f"GIMP {v}: skipped ({r['skipped']})\n")
    if not done:
        return
    cols = list(done)
    head = "| | " + " | ".join(f"GIMP {results[v]['gimp']} (s)" for v in cols) + " |"
    print(head)
    print("|---|" + "---|" * len(cols))
    n = f"{args.small}x{args.small}"
    bw, bh = args.big
    rows = [("empty Python procedure (GIMP's floor)", "empty"),
            (f"Upscale {n}, {args.model} x1, through GIMP", "up_gimp"),
            ("same request, direct client", "up_direct"),
            ("**GIMP overhead** (goal <= 0.15)", "up_overhead"),
            ("GIMP call outside its request (call - the plug-in's enhance phase)", "up_outside"),
            (f"No-op {bw}x{bh} u8 through GIMP (goal <= 0.5)", "big_gimp"),
            ("same request, direct client", "big_direct"),
            ("GIMP overhead", "big_overhead"),
            ("GIMP call outside its request", "big_outside"),
            (f"GIMP floor: procedure reading the {bw}x{bh} layer", "big_read"),
            ("GIMP floor: read + new masked layer, one undo step", "big_copy"),
            ("GIMP floor: the same + displays_flush (an interactive run)", "big_copy_flush")]
    for label, key in rows:
        print(f"| {label} | " + " | ".join(f"{done[v][key]:.3f}" for v in cols) + " |")
    for key, what in (("phases_empty", "empty procedure"), ("phases_up", f"Upscale {n}"),
                      ("phases_big", f"No-op {bw}x{bh}"), ("phases_copy", f"GIMP floor: copy {bw}x{bh}"),
                      ("phases_copy_flush", f"GIMP floor: copy {bw}x{bh} + displays_flush")):
        print(f"\nPlug-in process per call, {what} (median s):\n")
        print("| phase | " + " | ".join(f"GIMP {results[v]['gimp']}" for v in cols) + " |")
        print("|---|" + "---|" * len(cols))
        names = []
        for v in cols:
            names += [k for k in done[v][key] if k not in names]
        for k in names:
            print(f"| {k} | " + " | ".join(f"{done[v][key].get(k, 0.0):.3f}" for v in cols) + " |")
        print("| **sum** | " + " | ".join(f"{sum(done[v][key].values()):.3f}" for v in cols) + " |")
    print(f"\nreps: {args.reps} (256), {args.big_reps} (12 MP); load average {os.getloadavg()}")


#: the rows of the runs table (``--combine``): summary key -> label
COMBINED = (("empty", "empty Python procedure (GIMP's floor)"),
            ("up_overhead", "256x256 Upscale: GIMP - direct client"),
            ("up_outside", "256x256 Upscale: GIMP call outside its request"),
            ("big_gimp", "12 MP no-op through GIMP"),
            ("big_direct", "12 MP no-op, direct client"),
            ("big_outside", "12 MP no-op: GIMP call outside its request"),
            ("big_copy", "12 MP GIMP floor: read + new masked layer"))


def combine(tags: list[str]) -> None:
    """One table over several runs (bench/out/gimp-TAG.json): each run's medians, and their median
    (on a shared machine one run's medians still move with the other work)."""
    runs = []
    for t in tags:
        d = json.loads((OUT / f"gimp-{t}.json").read_text())
        a = argparse.Namespace(**d["args"])
        runs.append({v: summary(r, a) for v, r in d["results"].items() if "skipped" not in r})
    versions = [v for v in runs[0] if all(v in r for r in runs)]
    for v in versions:
        print(f"\nGIMP {v}, {len(runs)} runs (s):\n")
        print("| | " + " | ".join(tags) + " | **median** |")
        print("|---|" + "---|" * (len(tags) + 1))
        for key, label in COMBINED:
            vals = [r[v][key] for r in runs]
            print(f"| {label} | " + " | ".join(f"{x:.3f}" for x in vals)
                  + f" | **{statistics.median(vals):.3f}** |")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--big-reps", type=int, default=3)
    ap.add_argument("--small", type=int, default=256)
    ap.add_argument("--big", type=lambda s: tuple(int(x) for x in s.split("x")), default=(4000, 3000))
    ap.add_argument("--model", default="realesr-animevideov3")
    ap.add_argument("--gimp", default="3.0,3.2", help="GIMP versions, comma separated (3.0, 3.2)")
    ap.add_argument("--models-dir", default=os.environ.get("AI_ENHANCE_MODELS_DIR")
                    or str(REPO.parent / "shared" / "weights"))
    ap.add_argument("--timeout", type=float, default=600.0)
    ap.add_argument("--tag", default="")
    ap.add_argument("--no-bytecode-cache", action="store_true",
                    help="PYTHONDONTWRITEBYTECODE=1 in GIMP, as the e2e tests run")
    ap.add_argument("--combine", default="",
                    help="TAG1,TAG2,...: no run; one table over those runs' bench/out files")
    args = ap.parse_args(argv)
    if args.combine:
        combine([t for t in args.combine.split(",") if t])
        return 0
    h = harness()
    tmp = Path(tempfile.mkdtemp(prefix="aie-bench-gimp-"))
    backend = h.start_serve(Path(args.models_dir), tmp)
    results = {}
    try:
        for v in args.gimp.split(","):
            results[v.strip()] = run_gimp(h, v.strip(), backend, args)
    finally:
        backend.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    OUT.mkdir(exist_ok=True)
    path = OUT / f"gimp{'-' + args.tag if args.tag else ''}.json"
    path.write_text(json.dumps({"args": {k: v for k, v in vars(args).items()}, "load": os.getloadavg(),
                                "results": results}, indent=1))
    print_tables(results, args)
    print(f"\nraw: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
