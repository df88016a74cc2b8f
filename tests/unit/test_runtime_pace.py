"""Honest progress and a fast cancel inside a tile (runtime/interrupt.py, runtime/pace.py and the
tile clock of runtime/tiled.py), on a real RRDBNet large enough that one tile takes seconds."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from ai_enhance.engine import Engine
from ai_enhance.errors import Cancelled
from ai_enhance.jobs import JobRequest
from ai_enhance.models import ModelStore
from ai_enhance.runtime import interrupt, pace
from testkit import make_compact, make_rrdb


@pytest.fixture(scope="module")
def slow_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("slow")
    make_rrdb(d / "slow-x4.pth", scale=4, num_filters=64, num_blocks=4, seed=5)
    make_compact(d / "fast-x4.pth", seed=6)
    return d


@pytest.fixture(scope="module")
def engine(slow_dir) -> Engine:
    return Engine(ModelStore(slow_dir), device="cpu")


def _img(side, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)


def test_cancel_inside_one_tile_lands_within_a_fraction_of_a_second(engine):
    lm = engine.get_model("slow-x4")
    spp = pace.pace_of(lm).estimate(lm)
    # one tile of about 4 s at the pace measured now (the machine may speed up before the run:
    # the cancel comes 1 s in); the tile size is forced so that it is one tile whatever the memory
    side = min(512, max(64, int(np.ceil(np.sqrt(4.0 / spp)))))
    assert side * side * spp > 2.0, "the tile must take seconds for the test to mean anything"
    flag = threading.Event()
    calls = []
    state = {}

    def progress(f, text):
        calls.append((time.monotonic(), f, text))
        if text.startswith("tile 1 of 1") and "armed" not in state:
            state["armed"] = True
            threading.Timer(1.0, lambda: (state.setdefault("t_cancel", time.monotonic()), flag.set())).start()

    t0 = time.monotonic()
    with pytest.raises(Cancelled):
        engine.run(JobRequest("upscale", "slow-x4", 4, side), _img(side), progress, flag.is_set)
    assert state.get("armed"), [t for _, _, t in calls]
    latency = time.monotonic() - state["t_cancel"]
    assert 0.9 < state["t_cancel"] - t0, "cancelled in the middle of the one tile"
    assert latency < 1.0, f"cancel took {latency:.2f} s inside the tile"
    # the hook is gone with the job: the same thread runs the next model undisturbed
    out = engine.run(JobRequest("upscale", "fast-x4", 4, 0), _img(16), lambda f, t: None, lambda: False)
    assert out.image.shape == (64, 64, 3)


def test_progress_moves_inside_a_tile_and_ends_at_one(engine):
    calls = []
    lm = engine.get_model("slow-x4")
    spp = pace.pace_of(lm).estimate(lm)
    side = min(512, max(48, int(np.ceil(np.sqrt(3.0 / spp)))))     # one tile of a few seconds
    engine.run(JobRequest("upscale", "slow-x4", 4, 0), _img(side, 1),
               lambda f, t: calls.append((time.monotonic(), f, t)), lambda: False)
    fr = [f for _, f, _ in calls]
    assert fr == sorted(fr) and fr[-1] == 1.0
    texts = [t for _, _, t in calls]
    assert texts[0].startswith("loading"), "the model is loaded first, and said so"
    inside = [f for _, f, t in calls if t.startswith("tile 1 of 1") and 0 < f < 1]
    assert len(inside) >= 2, f"the bar moves within the tile: {calls}"
    assert any(" left" in t for t in texts), "time left is shown once some work is done"
    times = [t for t, _, text in calls if text.startswith("tile ") or text == "done"]
    assert (np.diff(times) < 2.0).all(), "no stretch of two seconds without news"


def test_hook_only_acts_in_the_watching_thread():
    conv = torch.nn.Conv2d(3, 3, 3)
    x = torch.rand(1, 3, 8, 8)
    seen = []
    with interrupt.watching(lambda: True):
        with pytest.raises(Cancelled):
            conv(x)
        t = threading.Thread(target=lambda: seen.append(conv(x).shape))
        t.start()
        t.join()
    assert seen == [torch.Size([1, 3, 6, 6])], "another thread is never interrupted"
    conv(x)                      # and after the block, nothing is left behind


def test_macs_counted_on_meta_match_the_architecture(engine):
    lm = engine.get_model("fast-x4")
    # Compact, 8 features, 2 body convs, x4: 3->8, 8->8 (x2), 8->48, all 3x3, at input resolution
    expected = 9 * (3 * 8 + 8 * 8 * 2 + 8 * 48)
    assert pace.macs_per_px(lm.module, 3) == pytest.approx(expected)


def test_paced_tile_on_cpu_only_and_never_below_the_floor(engine, monkeypatch):
    lm = engine.get_model("slow-x4")
    p = pace.Pace()
    p.seconds_per_px = 1e-3          # 1 ms per pixel: a 512 px tile would take 262 s
    monkeypatch.setattr(lm, "pace", p, raising=False)
    monkeypatch.setenv(pace.ENV_TILE_SECONDS, "200")
    assert pace.paced_tile(lm, "cuda", 512, (4000, 3000), 32) == 512
    side = pace.paced_tile(lm, "cpu", 512, (4000, 3000), 32, align=4)
    assert side == 444 and side % 4 == 0          # sqrt(200 s / 1 ms) = 447, aligned to 4
    monkeypatch.setenv(pace.ENV_TILE_SECONDS, "1")
    assert pace.paced_tile(lm, "cpu", 512, (4000, 3000), 32) == pace.MIN_SIDE
    # a small job stays in one piece: splitting it would only add context work (a preview's 256 px
    # region with its context, however slow the model)
    monkeypatch.setenv(pace.ENV_TILE_SECONDS, "15")
    assert pace.paced_tile(lm, "cpu", 512, (60, 60), 32) == 512
    assert pace.paced_tile(lm, "cpu", 512, (256, 256), 32) == 512


def test_pace_learns_from_measured_tiles():
    p = pace.Pace()
    p.seconds_per_px = 1.0
    p.observe(1000, 2.0)
    assert p.seconds_per_px == pytest.approx(2e-3) and p.measured
    p.observe(1000, 4.0)
    assert p.seconds_per_px == pytest.approx(0.7 * 2e-3 + 0.3 * 4e-3)


@pytest.mark.parametrize("k, pad, groups, cin, cout", [(3, 1, 1, 8, 16), (5, 2, 1, 4, 4), (3, 0, 1, 6, 2),
                                                     (1, 0, 1, 8, 8), (3, 1, 4, 8, 8), (3, 2, 1, 3, 5)])
def test_banded_convolution_gives_the_same_result(monkeypatch, k, pad, groups, cin, cout):
    torch.manual_seed(k * 10 + pad)
    conv = torch.nn.Conv2d(cin, cout, k, padding=pad, groups=groups).eval()
    x = torch.rand(1, cin, 37, 29)
    with torch.inference_mode():
        ref = conv(x)
    work = []
    monkeypatch.setattr(interrupt, "BAND_MACS", 2000.0)         # force many bands of a few rows
    monkeypatch.setattr(interrupt, "BAND_MIN_PX", 1)
    interrupt.prepare(conv)
    with torch.inference_mode(), interrupt.watching(lambda: False, work.append):
        got = conv(x)
    assert got.shape == ref.shape
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    assert len(work) > 3 and sum(work) == pytest.approx(interrupt.work_of(conv, x)), \
        "the work is reported band by band, adding up to the whole"
    with torch.inference_mode():                                 # outside a job: the plain path
        torch.testing.assert_close(conv(x), ref)


def test_banded_convolution_stops_between_bands(monkeypatch):
    conv = torch.nn.Conv2d(4, 4, 3, padding=1)
    monkeypatch.setattr(interrupt, "BAND_MACS", 5000.0)
    monkeypatch.setattr(interrupt, "BAND_MIN_PX", 1)
    interrupt.prepare(conv)
    calls = []

    def cancelled():
        calls.append(1)
        return len(calls) > 3          # the pre-hook, then two bands, then stop

    with torch.inference_mode(), interrupt.watching(cancelled):
        with pytest.raises(Cancelled):
            conv(torch.rand(1, 4, 64, 64))
    assert len(calls) == 4
