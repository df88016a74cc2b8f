"""Runs INSIDE GIMP (python-fu-eval, started by bench/bench_gimp.py through the e2e harness): times
AI Enhance's PDB procedures against the same requests made by a direct client in this same Python,
interleaved rep by rep, and GIMP's floor (bench/gimp_plugin/aie-bench).  Writes raw seconds and the
plug-in's phase lines (AI_ENHANCE_PROFILE) to the harness's results file."""
import json
import os
import sys
import time

from drive_lib import *  # noqa: F403

# the direct client is the plug-in's own package, as installed in this profile
sys.path.insert(0, os.path.join(os.environ["GIMP3_DIRECTORY"], "plug-ins", "ai-enhance"))
from ai_enhance_client import filters, ops  # noqa: E402
from ai_enhance_client import protocol as P  # noqa: E402
from ai_enhance_client.client import Client  # noqa: E402

PROFILE = os.environ.get("AI_ENHANCE_PROFILE")
REPS = int(PARAMS.get("reps", 5))
BIG_REPS = int(PARAMS.get("big_reps", 3))
SMALL = int(PARAMS.get("small", 256))
BIG = tuple(PARAMS.get("big", (4000, 3000)))
MODEL = PARAMS.get("model", "realesr-animevideov3")


def _profile_lines() -> int:
    if not PROFILE or not os.path.exists(PROFILE):
        return 0
    with open(PROFILE) as f:
        return sum(1 for _ in f)


def _last_profile(before: int):
    """The phase line the plug-in wrote for the call just made (None when it wrote none)."""
    if not PROFILE or not os.path.exists(PROFILE):
        return None
    with open(PROFILE) as f:
        lines = f.read().splitlines()
    return json.loads(lines[-1]) if len(lines) > before else None


def gimp_call(name, img, layer, **props):
    """One PDB call: seconds, wall-clock call/return times, the plug-in's phase line; the layer it
    added is removed again so that every rep sees the same image."""
    proc, cfg = proc_config(name, img, [layer], props)
    n = _profile_lines()
    w0 = time.time()
    t0 = time.perf_counter()
    result = proc.run(cfg)
    sec = time.perf_counter() - t0
    w1 = time.time()
    if result.index(0) != Gimp.PDBStatusType.SUCCESS:
        raise RuntimeError(f"{name} failed: {Gimp.get_pdb().get_last_error()}")
    new = result.index(1) if result.length() > 1 else None
    if new is not None:
        img.remove_layer(new)
    prof = _last_profile(n)
    if prof is not None:
        prof["call_wall"], prof["return_wall"] = w0, w1
    return {"seconds": sec, "profile": prof}


def job_settings(op_name, **values):
    """What the procedure sends for these arguments (defaults for the rest): the same request."""
    op = ops.BY_NAME[op_name]
    given = {p.name: p.default for p in op.all_params}
    given.update(values)
    return filters.read_settings(op, given.__getitem__)


def direct_call(op_name, spec, pixels, st):
    """The same request from a Python client: a new Client (settings, keys, CURVE handshake), one
    enhance, close; the process and its imports are already warm."""
    t0 = time.perf_counter()
    with Client(heartbeat=1.2) as c:
        r = c.enhance(op=op_name, model=st.model or None, spec=spec, pixels=pixels, scale=st.scale,
                      tile=st.tile, options=st.options, post=st.post)
    sec = time.perf_counter() - t0
    if r.spec is None or (r.spec.width, r.spec.height) != (spec.width, spec.height):
        raise RuntimeError(f"direct {op_name}: unexpected result {r.spec}")
    return {"seconds": sec}


def rgb_layer(w, h, seed):
    img = new_image(w, h)
    layer = add_layer(img, "src", w, h, fmt="R'G'B' u8", data=pattern(w * h * 3, seed))
    return img, layer


def series(reps, *calls):
    """One warm-up of every call, then ``reps`` rounds in which the calls take turns."""
    for _name, fn in calls:
        fn()
    out = {name: [] for name, _ in calls}
    for _ in range(reps):
        for name, fn in calls:
            out[name].append(fn())
    return out


@case
def floor():
    img, layer = rgb_layer(SMALL, SMALL, 1)
    return series(REPS, ("empty", lambda: gimp_call("python-fu-aie-bench-empty", img, layer)))


@case
def upscale_small():
    img, layer = rgb_layer(SMALL, SMALL, 2)
    pixels = get_pixels(layer, "R'G'B' u8")
    st = job_settings("upscale", model=MODEL, scale=1)
    spec = P.ImageSpec(SMALL, SMALL, 3, P.DType.U8)
    return series(REPS,
                  ("gimp", lambda: gimp_call("python-fu-ai-enhance-upscale", img, layer, model=MODEL, scale=1)),
                  ("direct", lambda: direct_call("upscale", spec, pixels, st)))


@case
def noop_big():
    w, h = BIG
    img, layer = rgb_layer(w, h, 3)
    pixels = get_pixels(layer, "R'G'B' u8")
    st = job_settings("noop")
    spec = P.ImageSpec(w, h, 3, P.DType.U8)
    return series(BIG_REPS,
                  ("gimp", lambda: gimp_call("python-fu-ai-enhance-noop", img, layer)),
                  ("direct", lambda: direct_call("noop", spec, pixels, st)),
                  ("read", lambda: gimp_call("python-fu-aie-bench-read", img, layer)),
                  ("copy", lambda: gimp_call("python-fu-aie-bench-copy", img, layer)),
                  ("copy_flush", lambda: gimp_call("python-fu-aie-bench-copy-flush", img, layer)))


finish()
