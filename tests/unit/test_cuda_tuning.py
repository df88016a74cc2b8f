"""The CUDA tile runner's pieces, on the CPU: batching tiles (numerics equal to one at a time),
the overlap pipeline (sequential on the CPU; and its buffer discipline under a stand-in that runs
every asynchronous copy as late as possible), whole images through the engine's tiling, the
compute-floor arithmetic.  The CUDA-only paths have their own tests at the end (skipped here)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ai_enhance.runtime import tiling
from ai_enhance.runtime import cuda_tuning as ct
from testkit import make_compact, make_rrdb

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def load(path):
    from spandrel import ModelLoader
    d = ModelLoader().load_from_file(str(path))
    d.model.eval()
    return d


@pytest.fixture(scope="module")
def nets(tmp_path_factory):
    d = tmp_path_factory.mktemp("cuda-nets")
    return {"compact": load(make_compact(d / "compact.pth", seed=21)),
            "rrdb": load(make_rrdb(d / "rrdb.pth", seed=22))}


def tiles_of(shapes, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.random(s, dtype=np.float32) for s in shapes]


# --------------------------------------------------------------------------- choices

@pytest.mark.parametrize("req, kind, half, bf16, capable, want", [
    ("auto", "cuda", True, True, True, "float16"),
    ("auto", "cuda", False, True, True, "bfloat16"),
    ("auto", "cuda", False, True, False, "float32"),        # pre-Ampere GPU: no bf16
    ("auto", "cuda", False, False, True, "float32"),
    ("auto", "cpu", True, True, False, "float32"),
    ("float32", "cuda", True, True, True, "float32"),
    ("float16", "cuda", False, True, True, "float32"),      # model does not support fp16
    ("bfloat16", "cuda", True, True, True, "bfloat16"),
    ("bfloat16", "cuda", True, False, True, "float32"),
])
def test_choose_dtype(req, kind, half, bf16, capable, want):
    assert ct.choose_dtype(req, kind, half, bf16, capable) == want


def test_choose_dtype_rejects_unknown():
    with pytest.raises(ValueError):
        ct.choose_dtype("int8", "cuda", True, True, True)


# --------------------------------------------------------------------------- batching

@pytest.mark.parametrize("shapes, mb, windows, want", [
    ([(3, 8, 8)] * 5, 2, None, [[0, 1], [2, 3], [4]]),
    ([(3, 8, 6), (3, 8, 8), (3, 8, 8), (3, 8, 6)], 4, None, [[0, 3], [1, 2]]),
    # a row of tiles: first and last are narrower (no context outside the image)
    ([(3, 8, 6), (3, 8, 8), (3, 8, 8), (3, 8, 6), (3, 6, 6), (3, 6, 8), (3, 6, 6)], 4,
     [0, 0, 0, 0, 1, 1, 1], [[0, 3], [1, 2], [4, 6], [5]]),
    ([(3, 8, 8)] * 3, 1, None, [[0], [1], [2]]),
    ([], 4, None, []),
])
def test_batch_groups(shapes, mb, windows, want):
    assert ct.batch_groups(shapes, mb, windows) == want


def test_batch_groups_properties():
    rng = np.random.default_rng(3)
    for _ in range(50):
        n = int(rng.integers(1, 30))
        shapes = [(3, int(rng.choice([4, 6])), int(rng.choice([4, 6, 8]))) for _ in range(n)]
        windows = np.sort(rng.integers(0, 4, n)).tolist()
        mb = int(rng.integers(1, 5))
        groups = ct.batch_groups(shapes, mb, windows)
        assert sorted(i for g in groups for i in g) == list(range(n))
        for g in groups:
            assert 1 <= len(g) <= mb
            assert len({shapes[i] for i in g}) == 1 and len({windows[i] for i in g}) == 1
        firsts = [g[0] for g in groups]
        assert firsts == sorted(firsts)
        # windows come out in order: the blender finishes one row before the next starts
        seen = [windows[g[0]] for g in groups]
        assert seen == sorted(seen)


def test_stack_unstack_roundtrip():
    ts = tiles_of([(3, 5, 7)] * 3)
    b = ct.stack_tiles(ts)
    assert b.shape == (3, 3, 5, 7)
    assert all(np.array_equal(a, c) for a, c in zip(ts, ct.unstack(b)))
    with pytest.raises(ValueError):
        ct.stack_tiles(tiles_of([(3, 5, 7), (3, 5, 8)]))


# --------------------------------------------------------------------------- the pipeline

class LazyStreams:
    """Asynchronous stand-in: ``stage`` (a host copy into the slot's reused buffer) runs now;
    uploads, computes and downloads are queued and run only when a ``wait`` needs them, reading
    the slot buffers as they are THEN.  A pipeline that rewrites a buffer before its queued copy
    ran, or reads an output before its copy ran, gets wrong data."""

    def __init__(self, fn):
        self.fn = fn
        self.queue: list = []
        self.ran = 0
        self.pin_in: dict = {}
        self.dev_in: dict = {}
        self.dev_out: dict = {}
        self.pin_out: dict = {}

    def _later(self, op):
        self.queue.append(op)
        return len(self.queue)

    def stage(self, slot, host):
        buf = self.pin_in.get(slot)
        if buf is None or buf.shape != host.shape:
            buf = self.pin_in[slot] = np.empty_like(host)
        buf[...] = host

    def upload(self, slot):
        return self._later(lambda: self.dev_in.__setitem__(slot, self.pin_in[slot].copy()))

    def compute(self, slot):
        return self._later(lambda: self.dev_out.__setitem__(slot, self.fn(self.dev_in[slot])))

    def download(self, slot):
        def op():
            buf = self.pin_out.get(slot)
            y = self.dev_out[slot]
            if buf is None or buf.shape != y.shape:
                buf = self.pin_out[slot] = np.empty_like(y)
            buf[...] = y
        return self._later(op)

    def wait(self, event):
        while event is not None and self.ran < event:
            self.queue[self.ran]()
            self.ran += 1

    def read(self, slot, on_host):
        return (self.pin_out if on_host else self.dev_out)[slot].copy()


def _fn(x):
    return np.tanh(x * 3.0) + x.sum()      # depends on the whole batch: any mix-up shows


def test_lazy_stand_in_catches_buffer_reuse():
    """The stand-in is strict: a loop that reuses one slot without waiting gets wrong data."""
    s = LazyStreams(_fn)
    batches = tiles_of([(2, 3, 4, 4)] * 3)
    events = []
    for b in batches:
        s.stage(0, b)
        s.upload(0)
        s.compute(0)
        events.append(s.download(0))
    s.wait(events[0])
    assert not np.allclose(s.read(0, True), _fn(batches[0]))


@pytest.mark.parametrize("depth", [1, 2, 3])
@pytest.mark.parametrize("on_host", [True, False])
@pytest.mark.parametrize("kind", ["sync", "lazy"])
def test_pipeline_equals_sequential(depth, on_host, kind):
    shapes = [(2, 3, 4, 4), (2, 3, 4, 4), (1, 3, 4, 6), (2, 3, 4, 4), (1, 3, 6, 6), (3, 3, 4, 4),
              (2, 3, 4, 4)]
    batches = tiles_of(shapes, seed=depth)
    want = [_fn(b) for b in batches]
    streams = ct.SyncStreams(_fn) if kind == "sync" else LazyStreams(_fn)
    got = list(ct.pipelined(streams, iter(batches), depth=depth, on_host=on_host))
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert np.array_equal(g, w)
    assert list(ct.pipelined(ct.SyncStreams(_fn), [], depth=depth)) == []


def test_pipeline_is_lazy_and_bounded():
    """At most ``depth`` batches are in flight: the consumer gets batch i before batch
    i + depth is staged (bounded memory, and the host blends while the device computes)."""
    staged = []

    class Spy(ct.SyncStreams):
        def stage(self, slot, host):
            staged.append(int(host.flat[0]))
            super().stage(slot, host)

    batches = [np.full((1, 1, 2, 2), i, np.float32) for i in range(6)]
    it = ct.pipelined(Spy(lambda x: x), iter(batches), depth=2)
    first = next(it)
    assert first.flat[0] == 0 and staged == [0, 1]
    next(it)
    assert staged == [0, 1, 2]


# --------------------------------------------------------------------------- the runner (CPU)

def one_at_a_time(module, tiles):
    with torch.inference_mode():
        return [module(torch.from_numpy(t)[None])[0].clamp(0, 1).numpy() for t in tiles]


@pytest.mark.parametrize("name", ["compact", "rrdb"])
@pytest.mark.parametrize("channels_last", [False, True])
def test_run_tiles_batched_equals_one_at_a_time(nets, name, channels_last):
    d = nets[name]
    shapes = [(3, 12, 16), (3, 12, 16), (3, 12, 16), (3, 12, 10), (3, 12, 16), (3, 9, 16)]
    tiles = tiles_of(shapes, seed=5)
    runner = ct.TileRunner(d.model, device="cpu",
                           tuning=ct.CudaTuning(max_batch=4, channels_last=channels_last))
    assert runner.dtype_name == "float32" and not runner.overlap
    got = runner.run_tiles(tiles)
    want = one_at_a_time(d.model, tiles)
    for g, w in zip(got, want):
        assert g.shape == w.shape and g.dtype == np.float32
        np.testing.assert_allclose(g, w, atol=2e-5, rtol=0)


def engine_like(module, image, tile, scale=4):
    """The engine's tile loop (tiling.plan + RowBlender.add, one tile at a time)."""
    h, w, c = image.shape
    ctx, ov = tiling.margins_for(tile, 32, 16)
    plan = tiling.plan(h, w, tile, context=ctx, overlap=ov)
    out = np.empty(plan.output_shape(scale) + (c,), np.float32)
    b = tiling.RowBlender(plan, scale, out, lambda a: np.clip(a, 0, 1), channels=c)
    with torch.inference_mode():
        for t in plan.tiles():
            y0, y1, x0, x1 = t.extent
            x = torch.from_numpy(np.ascontiguousarray(image[y0:y1, x0:x1].transpose(2, 0, 1)))[None]
            b.add(t, module(x)[0].clamp(0, 1).numpy().transpose(1, 2, 0))
    assert b.complete
    return out, plan


@pytest.mark.parametrize("name", ["compact", "rrdb"])
def test_run_image_equals_the_engine_loop(nets, name):
    d = nets[name]
    img = np.random.default_rng(9).random((70, 90, 3), dtype=np.float32)
    want, plan = engine_like(d.model, img, tile=40)
    assert plan.count > 4                       # several rows and columns, edge tiles narrower
    for mb in (1, 4):
        runner = ct.TileRunner(d.model, device="cpu", tuning=ct.CudaTuning(max_batch=mb))
        got = runner.run_image(img, 40)
        assert got.shape == want.shape == (280, 360, 3) and got.dtype == np.float32
        np.testing.assert_allclose(got, want, atol=2e-5, rtol=0)


def test_run_image_u8_matches_the_engine(nets, tmp_path):
    """u8 in, u8 out: the same pixels as the backend's own Engine (same plan and cross-fade)."""
    from ai_enhance.engine import Engine, JobRequest
    from ai_enhance.models import ModelStore

    make_compact(tmp_path / "realesr-animevideov3.pth", seed=21)
    eng = Engine(ModelStore(tmp_path), device="cpu")
    img = np.random.default_rng(4).integers(0, 256, (64, 80, 3), dtype=np.uint8)
    raw = {"color-lock": False, "fidelity": 0.0}          # the model's output, no post-processing
    want = eng.run(JobRequest("upscale", "realesr-animevideov3", 4, 40, post=raw), img,
                   lambda *_: None, lambda: False).image
    runner = ct.TileRunner(load(tmp_path / "realesr-animevideov3.pth").model, device="cpu",
                           tuning=ct.CudaTuning(max_batch=3))
    got = runner.run_image(img, 40)
    assert got.dtype == np.uint8 and got.shape == want.shape
    diff = np.abs(got.astype(int) - want.astype(int))
    assert diff.max() <= 1 and (diff == 0).mean() > 0.999


# --------------------------------------------------------------------------- compute floor

def test_flops_per_pixel_counts_convolutions(nets):
    conv = torch.nn.Conv2d(3, 8, 3, padding=1)
    assert ct.flops_per_pixel(conv, 3) == pytest.approx(2 * 8 * 3 * 9)
    dw = torch.nn.Conv2d(8, 8, 3, padding=1, groups=8)
    assert ct.flops_per_pixel(dw, 8) == pytest.approx(2 * 8 * 1 * 9)
    # tiny Compact (num_feat 8, 2 body convs, x4): 3->8, 8->8, 8->8, 8->48, all 3x3 at input size
    assert ct.flops_per_pixel(nets["compact"].model, 3) == pytest.approx(2 * 9 * (24 + 64 + 64 + 384))


def test_peak_table_and_floor():
    assert ct.table_peak("NVIDIA H200") == 989e12
    assert ct.table_peak("NVIDIA H100 PCIe") == 756e12
    assert ct.table_peak("NVIDIA GeForce RTX 4090") == 165e12
    assert ct.table_peak("Some Future GPU") is None
    # x4plus: ~36 MFLOP per input pixel -> 0.036 s per input megapixel at 989 TFLOP/s
    assert ct.floor_seconds_per_mp(36e6, 989e12) == pytest.approx(0.0364, rel=1e-2)


# --------------------------------------------------------------------------- CUDA only

@cuda
def test_cuda_streams_pipeline_equals_sync(nets):
    d = nets["compact"]
    tiles = tiles_of([(3, 32, 32)] * 5 + [(3, 32, 20)] * 3, seed=1)
    fast = ct.TileRunner(d.model, device="cuda", tuning=ct.CudaTuning(dtype="float32", max_batch=2))
    slow = ct.TileRunner(d.model, device="cuda",
                         tuning=ct.CudaTuning(dtype="float32", max_batch=1, overlap=False))
    for a, b in zip(fast.run_tiles(tiles), slow.run_tiles(tiles)):
        np.testing.assert_allclose(a, b, atol=1e-4)


@cuda
def test_cuda_graphs_equal_eager(nets):
    d = nets["compact"]
    tiles = tiles_of([(3, 32, 32)] * 4, seed=2)
    g = ct.TileRunner(d.model, device="cuda", tuning=ct.CudaTuning(dtype="float32", graphs=True))
    e = ct.TileRunner(d.model, device="cuda", tuning=ct.CudaTuning(dtype="float32"))
    for a, b in zip(g.run_tiles(tiles), e.run_tiles(tiles)):
        np.testing.assert_allclose(a, b, atol=1e-4)
