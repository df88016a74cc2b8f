"""The engine end to end on tiny random-initialised networks of the real architectures.

Exact oracle: a Compact (SRVGGNetCompact) net whose last conv is zeroed outputs exactly the
nearest-neighbour upscale of its input (the net adds the nearest-upsampled input), so any
mistake in tiling, blending, scaling, channel or dtype handling shows as a pixel difference."""
from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from ai_enhance.runtime import devices, tiling
from ai_enhance.engine import Engine
from ai_enhance.jobs import JobOutput, JobRequest
from ai_enhance.runtime.devices import is_oom
from ai_enhance.errors import Cancelled, EnhanceError
from ai_enhance.models import ModelStore
from ai_enhance.runtime.tiling import SizeReq
from ai_enhance_client import ops as optable
from ai_enhance_client.protocol import ErrorKind
from testkit import make_compact, make_rrdb


@pytest.fixture(scope="module")
def mdir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("engine-models")
    make_compact(d / "nearest-x4.pth", zero_last=True, seed=6)
    make_compact(d / "nearest-x2.pth", scale=2, zero_last=True, seed=7)
    make_compact(d / "nearest-x1.pth", scale=1, zero_last=True, seed=8)
    make_compact(d / "realesr-animevideov3.pth", seed=1)            # random Compact, radius 4
    make_rrdb(d / "RealESRGAN_x4plus.pth", scale=4, seed=2)
    make_rrdb(d / "RealESRGAN_x2plus.pth", scale=2, seed=3)
    return d


@pytest.fixture(scope="module")
def engine(mdir) -> Engine:
    return Engine(ModelStore(mdir), device="cpu")


def img_u8(h=40, w=52, c=3, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, c), dtype=np.uint8)


def nearest(a, s):
    return a.repeat(s, 0).repeat(s, 1)


def psnr(a, b, peak=255.0):
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(peak ** 2 / mse)


class Recorder:
    def __init__(self):
        self.calls = []

    def __call__(self, fraction, text):
        self.calls.append((fraction, text))


def run(engine, image, model="nearest-x4", scale=4, tile=0, roi=None, op="upscale", options=None,
        progress=None, cancel=lambda: False, post=None) -> JobOutput:
    """One job; the post-processing dials off unless ``post`` is given (these tests are about the
    operation itself: tiling, scale, pixel types)."""
    spec = optable.BY_NAME.get(op)
    post = post if post is not None else (spec.post_off() if spec else {})
    return engine.run(JobRequest(op, model, scale, tile, roi, options or {}, post), image,
                      progress or (lambda f, t: None), cancel)


# --------------------------------------------------------------------------- exact oracle

@pytest.mark.parametrize("model,scale", [("nearest-x4", 4), ("nearest-x4", 2), ("nearest-x4", 1),
                                         ("nearest-x2", 2), ("nearest-x2", 1), ("nearest-x1", 1)])
@pytest.mark.parametrize("tile", [0, 24])
def test_any_scale_up_to_the_model_scale_exact(engine, model, scale, tile):
    """scale == model scale: the model output; smaller scales: its output area-downscaled (for
    the nearest oracle that is again exactly the nearest upscale at the requested scale)."""
    img = img_u8()
    out = run(engine, img, model, scale, tile)
    assert out.image.dtype == np.uint8 and out.image.shape == (40 * scale, 52 * scale, 3)
    np.testing.assert_array_equal(out.image, nearest(img, scale))
    if tile:
        assert out.info["tiles"] > 1


def test_scale_one_is_model_then_area_downscale(engine):
    """Same-size enhancement with a x4 model = run it, then INTER_AREA down to the input size."""
    img = img_u8(32, 36)
    x4 = run(engine, img, "realesrgan-x4plus", 4).image
    x1 = run(engine, img, "realesrgan-x4plus", 1).image
    ref = cv2.resize(x4.astype(np.float32), (36, 32), interpolation=cv2.INTER_AREA)
    assert x1.shape == img.shape
    assert np.abs(x1.astype(np.float32) - ref).max() <= 1.0      # u8 rounding of x4 only


def test_scale_above_model_scale_is_unsupported(engine):
    with pytest.raises(EnhanceError) as e:
        run(engine, img_u8(), "nearest-x2", 4)
    assert e.value.kind == ErrorKind.UNSUPPORTED
    assert "2x" in e.value.message and e.value.hint


@pytest.mark.parametrize("tile", [0, 20])
def test_u16_has_no_8bit_round_trip(engine, tile):
    img = np.random.default_rng(2).integers(0, 65536, (30, 34, 3), dtype=np.uint16)
    assert np.any(img % 257)                                     # not representable in 8 bits
    out = run(engine, img, tile=tile).image
    assert out.dtype == np.uint16
    np.testing.assert_array_equal(out, nearest(img, 4))


def test_f32_in_f32_out_clipped(engine):
    rng = np.random.default_rng(3)
    img = rng.random((20, 22, 3), dtype=np.float32)
    img[0, 0] = [-0.5, 1.7, np.nan]
    out = run(engine, img, scale=2, model="nearest-x2", tile=12).image
    assert out.dtype == np.float32
    ref = nearest(np.clip(np.nan_to_num(img, nan=0.0), 0, 1), 2)
    np.testing.assert_allclose(out, ref, atol=1e-6)
    assert out.min() >= 0 and out.max() <= 1


@pytest.mark.parametrize("channels", [1, 2])
def test_gray_runs_as_rgb_and_comes_back_gray(engine, channels):
    img = img_u8(24, 30, channels, seed=4)
    out = run(engine, img, tile=16).image
    assert out.shape == (96, 120, channels) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[:, :, 0], nearest(img[:, :, 0], 4))


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_alpha_is_resized_separately_and_kept(engine, dtype):
    rng = np.random.default_rng(5)
    if dtype == np.float32:
        img = rng.random((26, 30, 4), dtype=np.float32)
    else:
        img = rng.integers(0, np.iinfo(dtype).max + 1, (26, 30, 4)).astype(dtype)
    out = run(engine, img, tile=16).image
    assert out.shape == (104, 120, 4) and out.dtype == dtype
    np.testing.assert_array_equal(out[:, :, :3], nearest(img[:, :, :3], 4))
    # alpha did not go through the model (which would give nearest): smooth linear resize
    ref = cv2.resize(np.ascontiguousarray(img[:, :, 3]), (120, 104), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_allclose(out[:, :, 3].astype(np.float64), ref.astype(np.float64), atol=1e-6)
    assert not np.array_equal(out[:, :, 3], nearest(img[:, :, 3], 4))


# --------------------------------------------------------------------------- roi

@pytest.mark.parametrize("roi", [(5, 7, 20, 13), (0, 0, 52, 40), (51, 39, 1, 1), (30, 0, 22, 40)])
def test_roi_output_covers_roi_times_scale(engine, roi):
    img = img_u8()
    x, y, w, h = roi
    out = run(engine, img, roi=roi, tile=16).image
    assert out.shape == (h * 4, w * 4, 3)
    np.testing.assert_array_equal(out, nearest(img[y:y + h, x:x + w], 4))


def test_roi_uses_context_and_matches_the_full_result(engine):
    """With a model that looks at neighbours, the roi result equals the crop of the full
    result (the roi is computed with the pixels around it, not as an isolated image)."""
    img = cv2.resize(_photo(), (64, 48), interpolation=cv2.INTER_AREA)
    full = run(engine, img, "realesrgan-x4plus", 4).image
    x, y, w, h = 20, 12, 24, 20
    part = run(engine, img, "realesrgan-x4plus", 4, roi=(x, y, w, h)).image
    assert psnr(part, full[y * 4:(y + h) * 4, x * 4:(x + w) * 4]) >= 45
    # and it is NOT what an isolated crop gives (the context mattered)
    alone = run(engine, np.ascontiguousarray(img[y:y + h, x:x + w]), "realesrgan-x4plus", 4).image
    assert psnr(alone, full[y * 4:(y + h) * 4, x * 4:(x + w) * 4]) < psnr(part, full[y * 4:(y + h) * 4, x * 4:(x + w) * 4])


def test_roi_outside_image_is_a_bad_request(engine):
    with pytest.raises(EnhanceError) as e:
        run(engine, img_u8(), roi=(40, 30, 20, 20))
    assert e.value.kind == ErrorKind.BAD_REQUEST


# --------------------------------------------------------------------------- seams

def _photo():
    import skimage.data
    return skimage.data.astronaut()


@pytest.mark.parametrize("model,scale", [("realesrgan-x4plus", 4), ("realesrgan-x2plus", 2),
                                         ("realesrgan-x4plus", 3), ("realesr-animevideov3", 4)])
def test_tiled_equals_untiled(engine, model, scale):
    img = cv2.resize(_photo(), (64, 48), interpolation=cv2.INTER_AREA)
    whole = run(engine, img, model, scale, tile=0)
    assert whole.info["tiles"] == 1
    assert whole.image.std() > 20                                # a live, non-trivial output
    for tile in (32, 48):
        tiled = run(engine, img, model, scale, tile=tile)
        assert tiled.info["tiles"] > 1
        assert psnr(tiled.image, whole.image) >= 45, (model, scale, tile)


def test_unaligned_tiles_would_seam_for_pixel_unshuffle_models(engine):
    """Real-ESRGAN x2plus pixel-unshuffles its input: tiles must start at multiples of 4
    (size_requirements.multiple_of).  Check the plan honours it."""
    lm = engine.get_model("realesrgan-x2plus")
    assert lm.size_req.multiple_of > 1
    p = tiling.plan(60, 72, 32, context=4, overlap=4, align=lm.size_req.multiple_of)
    assert all(t.extent[0] % lm.size_req.multiple_of == 0 and t.extent[2] % lm.size_req.multiple_of == 0
               for t in p.tiles())


# --------------------------------------------------------------------------- progress, cancel

def test_progress_per_tile(engine):
    rec = Recorder()
    out = run(engine, img_u8(60, 60), tile=24, progress=rec)
    n = out.info["tiles"]
    tiles = [c for c in rec.calls if c[1].startswith("tile ")]
    heads = [t.split(" \u00b7 ")[0] for _, t in tiles]
    # each tile is announced as it starts, in order, at the share of the work already done
    assert list(dict.fromkeys(heads)) == [f"tile {i} of {n}" for i in range(1, n + 1)]
    starts = {t.split(" \u00b7 ")[0]: f for f, t in reversed(tiles)}
    assert [starts[f"tile {i} of {n}"] for i in range(1, n + 1)] == pytest.approx([(i - 1) / n for i in range(1, n + 1)])
    # from the second tile on, the time left
    assert all(" left" in t for _, t in tiles if not t.startswith("tile 1 of"))
    fr = [f for f, _ in rec.calls]
    assert fr == sorted(fr) and fr[-1] == 1.0 and all(0 <= f <= 1 for f in fr)


def test_cancel_between_tiles(engine):
    rec = Recorder()
    checks = []

    def cancelled():
        checks.append(1)
        return len(checks) > 3

    with pytest.raises(Cancelled):
        run(engine, img_u8(60, 60), tile=24, progress=rec, cancel=cancelled)
    done = [c for c in rec.calls if c[1].startswith("tile ")]
    assert 1 <= len(done) <= 3                  # stopped early, not after all tiles


# --------------------------------------------------------------------------- out of memory

def _oom_above(lm, max_pixels, exc_factory, seen):
    real = lm.forward

    def forward(x, options):
        seen.append(x.shape[-1] * x.shape[-2])
        if x.shape[-1] * x.shape[-2] > max_pixels:
            raise exc_factory()
        return real(x, options)
    return forward


@pytest.mark.parametrize("exc", [
    lambda: torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
    lambda: RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory"),
    lambda: MemoryError(),
])
def test_oom_halves_the_tile_and_succeeds(mdir, exc):
    eng = Engine(ModelStore(mdir), device="cpu")
    lm = eng.get_model("nearest-x4")
    seen = []
    lm.forward = _oom_above(lm, 40 * 40, exc, seen)
    img = img_u8(100, 90)
    rec = Recorder()
    out = run(eng, img, tile=160, progress=rec)                  # first try: one 100x90 tile
    np.testing.assert_array_equal(out.image, nearest(img, 4))   # and still exact
    assert out.info["tile"] <= 40 and out.info["tiles"] > 1
    assert seen[0] == 100 * 90                                   # first try: the whole image
    assert all(s <= 40 * 40 for s in seen[-out.info["tiles"]:])  # the run that worked
    assert any("out of memory" in t for _, t in rec.calls)
    assert eng.loads == 1                                        # the model was not reloaded


def test_oom_below_the_floor_is_a_clear_error(mdir):
    eng = Engine(ModelStore(mdir), device="cpu")
    lm = eng.get_model("nearest-x4")
    lm.forward = _oom_above(lm, 0, lambda: torch.OutOfMemoryError("CUDA out of memory"), [])
    with pytest.raises(EnhanceError) as e:
        run(eng, img_u8(100, 90), tile=128)
    assert e.value.kind == ErrorKind.OUT_OF_MEMORY
    assert e.value.hint and "\n" not in str(e.value)


def test_other_errors_are_not_retried(mdir):
    eng = Engine(ModelStore(mdir), device="cpu")
    lm = eng.get_model("nearest-x4")
    calls = []

    def boom(x, options):
        calls.append(1)
        raise RuntimeError("some other failure")
    lm.forward = boom
    with pytest.raises(RuntimeError):
        run(eng, img_u8(), tile=0)
    assert len(calls) == 1


def test_is_oom():
    assert is_oom(torch.OutOfMemoryError("x"))
    assert is_oom(MemoryError())
    assert is_oom(RuntimeError("CUDA error: out of memory"))
    assert is_oom(RuntimeError("MPS backend out of memory (MPS allocated: 1 GB)"))
    assert not is_oom(RuntimeError("shape mismatch"))
    assert not is_oom(ValueError("out of memory"))


# --------------------------------------------------------------------------- cache

def test_model_cache_and_idle_unload(mdir):
    eng = Engine(ModelStore(mdir), device="cpu", idle_unload_s=60)
    img = img_u8()
    run(eng, img)
    run(eng, img, scale=2)
    assert eng.loads == 1                                        # kept between jobs
    assert eng.unload_idle() == []                               # used just now
    import time
    assert eng.unload_idle(now=time.monotonic() + 61) == ["nearest-x4"]
    assert eng.loaded_models() == []
    run(eng, img)
    assert eng.loads == 2                                        # loaded again on demand


def test_idle_unload_also_drops_helper_networks(mdir):
    """Support networks (face detector, parser) live in the same cache and follow the same clock,
    but are not listed as loaded models."""
    import time

    from ai_enhance.runtime.cache import EntryKind

    eng = Engine(ModelStore(mdir), device="cpu", idle_unload_s=60)
    cache = eng.models.cache
    net = cache.get(("helper", "detector"), lambda: object(), kind=EntryKind.HELPER, label="detector")
    assert cache.get(("helper", "detector"), lambda: 1 / 0) is net    # built once
    assert eng.unload_idle() == [] and eng.loaded_models() == []
    assert cache.peek(("helper", "detector")) is net                  # used just now: kept
    assert eng.unload_idle(now=time.monotonic() + 61) == []           # not a model: not reported
    assert cache.peek(("helper", "detector")) is None                 # but dropped


def test_models_in_use_are_not_unloaded(mdir):
    import time

    eng = Engine(ModelStore(mdir), device="cpu", idle_unload_s=0)
    lm = eng.get_model("nearest-x4")
    with eng.using(lm):
        assert eng.unload_idle(now=time.monotonic() + 10) == []
    assert eng.unload_idle(now=time.monotonic() + 10) == ["nearest-x4"]


def test_cache_is_bounded(mdir):
    eng = Engine(ModelStore(mdir), device="cpu", max_models=2)
    for m in ("nearest-x4", "nearest-x2", "nearest-x1"):
        eng.get_model(m)
    assert len(eng.loaded_models()) == 2


def test_concurrent_get_model_loads_once(mdir):
    eng = Engine(ModelStore(mdir), device="cpu")
    got = []
    threads = [threading.Thread(target=lambda: got.append(eng.get_model("nearest-x2"))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert eng.loads == 1 and len({id(g) for g in got}) == 1


def test_changed_file_is_reloaded(tmp_path):
    make_compact(tmp_path / "m.pth", zero_last=True, seed=1)
    eng = Engine(ModelStore(tmp_path), device="cpu")
    img = img_u8(16, 16)
    np.testing.assert_array_equal(run(eng, img, "m").image, nearest(img, 4))
    import os
    make_compact(tmp_path / "m.pth", seed=2)                     # replaced by a different model
    st = (tmp_path / "m.pth").stat()
    os.utime(tmp_path / "m.pth", ns=(st.st_atime_ns, st.st_mtime_ns + 10_000_000_000))
    assert not np.array_equal(run(eng, img, "m").image, nearest(img, 4))
    assert eng.loads == 2


# --------------------------------------------------------------------------- ops, requests

def test_noop_returns_roi_unchanged(engine):
    img = img_u8(c=4)
    out = run(engine, img, model="anything", op="noop", scale=1, roi=(3, 4, 10, 6))
    np.testing.assert_array_equal(out.image, img[4:10, 3:13])
    assert out.image.flags.c_contiguous


def test_unknown_op_and_wrong_op_for_model(engine):
    with pytest.raises(EnhanceError) as e:
        run(engine, img_u8(), op="levitate")                      # no such operation
    assert e.value.kind == ErrorKind.UNSUPPORTED and "upscale" in e.value.hint
    with pytest.raises(EnhanceError) as e:
        run(engine, img_u8(), "realesrgan-x4plus", op="denoise", scale=1)
    assert e.value.kind == ErrorKind.UNSUPPORTED and "denoise" in e.value.message


def test_bad_images_are_bad_requests(engine):
    for img in (np.zeros((4, 4, 3), np.int32), np.zeros((4, 4, 5), np.uint8), np.zeros((0, 4, 3), np.uint8)):
        with pytest.raises(EnhanceError) as e:
            run(engine, img)
        assert e.value.kind == ErrorKind.BAD_REQUEST
    with pytest.raises(EnhanceError) as e:
        run(engine, img_u8(), scale=9)
    assert e.value.kind == ErrorKind.BAD_REQUEST


def test_missing_and_unknown_models(engine):
    with pytest.raises(EnhanceError) as e:
        run(engine, img_u8(), "realesrgan-x4plus-anime")
    assert e.value.kind == ErrorKind.MODEL_MISSING
    with pytest.raises(EnhanceError) as e:
        run(engine, img_u8(), "nope")
    assert e.value.kind == ErrorKind.UNKNOWN_MODEL


def test_option_ranges_are_checked(tmp_path):
    make_compact(tmp_path / "realesr-general-x4v3.pth", seed=4)
    make_compact(tmp_path / "realesr-general-wdn-x4v3.pth", seed=5)
    eng = Engine(ModelStore(tmp_path), device="cpu")
    with pytest.raises(EnhanceError) as e:
        run(eng, img_u8(16, 16), "realesr-general-x4v3", options={"denoise-strength": 2})
    assert e.value.kind == ErrorKind.BAD_REQUEST
    a = run(eng, img_u8(16, 16), "realesr-general-x4v3", options={"denoise-strength": 1.0}).image
    b = run(eng, img_u8(16, 16), "realesr-general-x4v3", options={"denoise-strength": 0.0}).image
    assert not np.array_equal(a, b) and eng.loads == 2           # two variants, both cached


def test_registry_equals_the_operation_table(engine):
    from ai_enhance import ops
    from ai_enhance_client import ops as optable

    assert set(ops.REGISTRY) == {o.name for o in optable.OPS}
    assert set(engine.ops) == set(ops.REGISTRY)


def test_capabilities(engine):
    caps = engine.capabilities()
    ids = {m["id"] for m in caps["models"]}
    assert {"realesrgan-x4plus", "gfpgan-v1.4", "nearest-x4"} <= ids
    assert caps["device"]["kind"] == "cpu" and caps["device"]["name"]
    assert {"upscale", "noop", "faces"} <= set(caps["ops"])
    import json
    json.dumps(caps)


def test_importing_the_engine_does_not_import_torch():
    code = ("import sys; import ai_enhance.engine, ai_enhance.models, ai_enhance.runtime.tiling, "
            "ai_enhance.runtime.devices, ai_enhance.ops, ai_enhance.server, ai_enhance_client.client; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


# --------------------------------------------------------------------------- devices (pure)

@pytest.mark.parametrize("pref,cuda,mps,expect", [
    ("auto", 0, False, ("cpu", None)),
    ("auto", 2, False, ("cuda", 0)),
    ("auto", 0, True, ("mps", None)),
    ("auto", 1, True, ("cuda", 0)),
    ("cpu", 1, True, ("cpu", None)),
    ("cuda:1", 2, False, ("cuda", 1)),
    ("CUDA", 1, False, ("cuda", 0)),
])
def test_choose_device(pref, cuda, mps, expect):
    assert devices.choose_device(pref, cuda, mps) == expect


@pytest.mark.parametrize("pref,cuda,mps", [("cuda", 0, False), ("cuda:2", 2, False),
                                           ("mps", 1, False), ("tpu", 0, False), ("cuda:x", 1, False)])
def test_choose_device_errors(pref, cuda, mps):
    with pytest.raises(ValueError):
        devices.choose_device(pref, cuda, mps)


def test_half_precision_choice():
    assert devices.use_half("cuda", True) is True
    assert devices.use_half("cuda", False) is False                 # descriptor says no
    assert devices.use_half("cpu", True) is False
    assert devices.use_half("mps", True) is False
    assert devices.use_half("cuda", True, "0") is False
    assert devices.use_half("mps", True, "1") is True
    assert devices.use_half("cpu", True, "1") is False


def test_memory_budget_and_auto_tile_with_fake_numbers():
    GiB = devices.GiB
    rrdb = devices.estimate_px_bytes(1024, 4)            # RealESRGAN x4plus: 1024 el/px measured
    compact = devices.estimate_px_bytes(64, 4)
    assert rrdb > 10 * compact
    # a 24 GB GPU with 20 GB free, fp16: large tiles; fp32 on 2 GB free: smaller
    big = devices.auto_tile(devices.memory_budget("cuda", 20 * GiB), devices.estimate_px_bytes(1024, 2), kind="cuda")
    small = devices.auto_tile(devices.memory_budget("cuda", 2 * GiB), rrdb, kind="cuda")
    assert big > small >= devices.MIN_TILE
    assert big <= devices.MAX_TILE["cuda"]
    # CPU: a quarter of available RAM, at most 3 GiB, tiles capped at 512
    assert devices.memory_budget("cpu", 64 * GiB) == 3 * GiB
    assert devices.memory_budget("cpu", 2 * GiB) == GiB // 2
    assert devices.memory_budget("cpu", 100, cpu_override_mb=512) == 512 * devices.MiB
    assert devices.auto_tile(3 * GiB, compact, kind="cpu") == 512
    t = devices.auto_tile(devices.memory_budget("cpu", 2 * GiB), rrdb, kind="cpu")
    assert 64 <= t < 512 and t * t * rrdb <= GiB // 2
    # tiny budget: the floor; alignment to the model's multiple_of
    assert devices.auto_tile(1, rrdb) == devices.MIN_TILE
    assert devices.auto_tile(GiB, rrdb, SizeReq(multiple_of=16)) % 16 == 0
    assert devices.auto_tile(1, rrdb, SizeReq(minimum=64)) == 64
    assert devices.oom_floor(SizeReq(multiple_of=12)) % 12 == 0


def test_activation_measured_on_the_meta_device(engine):
    lm = engine.get_model("realesrgan-x4plus")
    # 1 block RRDB with 16 features: largest tensor = 16 channels at 4x4 the pixels
    assert lm.max_activation == pytest.approx(16 * 16)
    lm2 = engine.get_model("realesr-animevideov3")                # Compact: 8 feats; 48 at the end
    assert lm2.max_activation == pytest.approx(48)


def test_auto_tile_used_when_tile_is_zero(mdir, monkeypatch):
    eng = Engine(ModelStore(mdir), device="cpu")
    act = eng.get_model("nearest-x4").max_activation
    monkeypatch.setattr(devices, "budget_for", lambda info: 40 * 40 * devices.estimate_px_bytes(act, 4))
    img = img_u8(100, 90)
    out = run(eng, img, "nearest-x4", 4, tile=0)
    assert out.info["tile"] == 40 and out.info["tiles"] > 1
    np.testing.assert_array_equal(out.image, nearest(img, 4))


@pytest.mark.parametrize("dtype,channels", [(np.uint8, 3), (np.uint16, 4), (np.float32, 1), (np.uint8, 2)])
def test_blending_on_the_device_equals_blending_in_numpy(mdir, dtype, channels):
    """GPUs blend tiles into a torch band on the device (no per-tile sync); the same path,
    forced on the CPU here, must give exactly what the numpy band gives."""
    rng = np.random.default_rng(9)
    if dtype == np.float32:
        img = rng.random((40, 46, channels), dtype=np.float32)
    else:
        img = rng.integers(0, np.iinfo(dtype).max + 1, (40, 46, channels)).astype(dtype)
    store = ModelStore(mdir)
    a = Engine(store, device="cpu", band_on_device=False)
    b = Engine(store, device="cpu", band_on_device=True)
    for model, scale in (("realesrgan-x4plus", 4), ("realesrgan-x4plus", 2), ("nearest-x4", 3)):
        ra = run(a, img, model, scale, tile=24).image
        rb = run(b, img, model, scale, tile=24).image
        assert ra.dtype == rb.dtype == dtype
        if dtype == np.float32:
            np.testing.assert_allclose(ra, rb, atol=1e-6)
        else:
            assert np.abs(ra.astype(np.int64) - rb.astype(np.int64)).max() <= 1   # float sum order
