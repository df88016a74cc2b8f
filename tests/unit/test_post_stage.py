"""The post-processing stage in the engine: every operation's output passes through it exactly once,
with the table's defaults, and each dial reaches its function (the functions themselves are
table-tested in test_post_*.py)."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from ai_enhance.engine import Engine
from ai_enhance.errors import EnhanceError
from ai_enhance.jobs import JobRequest
from ai_enhance.models import ModelStore
from ai_enhance.post import pipeline
from ai_enhance_client import ops as optable
from ai_enhance_client.protocol import ErrorKind
from testkit import make_compact, make_rrdb


@pytest.fixture(scope="module")
def mdir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("post-models")
    make_rrdb(d / "RealESRGAN_x4plus.pth", scale=4, seed=2)       # a random, inventive x4 model
    make_compact(d / "nearest-x1.pth", scale=1, zero_last=True, seed=8)
    return d


@pytest.fixture(scope="module")
def engine(mdir) -> Engine:
    return Engine(ModelStore(mdir), device="cpu")


def photo(h=40, w=48, c=3) -> np.ndarray:
    import skimage.data
    a = cv2.resize(skimage.data.astronaut(), (w, h), interpolation=cv2.INTER_AREA)
    return a if c == 3 else np.dstack([a, np.full((h, w), 200, np.uint8)])


def run(engine, img, op="upscale", model="realesrgan-x4plus", scale=2, post=None):
    return engine.run(JobRequest(op, model, scale, post=dict(post or {})), img, lambda f, t: None,
                      lambda: False)


def test_every_operation_output_passes_the_stage_exactly_once(engine, monkeypatch):
    calls = []
    real = pipeline.run

    def spy(inp, out, progress=None):
        calls.append(inp.params)
        return real(inp, out, progress)
    monkeypatch.setattr(pipeline, "run", spy)
    for op, model, scale in (("upscale", "realesrgan-x4plus", 2), ("denoise", "nearest-x1", 1),
                             ("sharpen", "nearest-x1", 1), ("noop", "", 1)):
        calls.clear()
        run(engine, photo(), op, model, scale)
        assert len(calls) == 1, op
        assert set(calls[0]) == {p.name for p in optable.BY_NAME[op].params_of(optable.Stage.POST)}


def test_defaults_come_from_the_table(engine):
    out = run(engine, photo())
    up = optable.BY_NAME["upscale"]
    assert up.param("fidelity").default == 0.5 and up.param("color-lock").default is True
    assert "post" in out.info and out.layers == []        # grain off by default for upscale
    raw = run(engine, photo(), post=up.post_off())
    assert "post" not in raw.info
    assert not np.array_equal(out.image, raw.image)       # colour lock + fidelity did something


def consistency_db(src: np.ndarray, out: np.ndarray, s: int) -> float:
    down = cv2.resize(out.astype(np.float32), (src.shape[1], src.shape[0]), interpolation=cv2.INTER_AREA)
    mse = np.mean((down - src.astype(np.float32)) ** 2)
    return 10 * np.log10(255.0 ** 2 / mse)


def test_fidelity_dial_pulls_the_result_to_the_photo(engine):
    src = photo()
    up = optable.BY_NAME["upscale"]
    dbs = [consistency_db(src, run(engine, src, post=dict(up.post_off(), fidelity=f)).image, 2)
           for f in (0.0, 0.5, 1.0)]
    assert dbs[0] < dbs[1] < dbs[2] and dbs[2] >= 40, dbs


def test_change_map_and_agreement_mask(engine):
    src = photo()
    out = run(engine, src, post={"change-map": True})
    masks = dict(out.masks)
    cm, agree = masks["change-map"], masks["changes"]
    assert cm.shape == agree.shape == out.image.shape[:2] and cm.dtype == np.uint8
    # the layer mask shows the AI where it agrees: high where the map is low
    assert np.corrcoef(cm.ravel().astype(float), agree.ravel().astype(float))[0, 1] < -0.5
    exact = run(engine, src, "denoise", "nearest-x1", 1, post={"change-map": True})
    assert dict(exact.masks)["change-map"].max() <= 2          # an identity model changed nothing


@pytest.mark.parametrize("channels", [3, 4])
def test_grain_is_a_layer_with_the_results_size_and_alpha(engine, channels):
    rng = np.random.default_rng(0)
    src = photo(96, 96, c=channels).astype(np.float32)
    src[..., :3] += rng.normal(0, 8, src[..., :3].shape)
    src = np.clip(src, 0, 255).astype(np.uint8)
    out = run(engine, src, post={"grain": 1.0})
    (name, layer), = out.layers
    assert name == "grain" and layer.shape == out.image.shape and layer.dtype == out.image.dtype
    if channels == 4:
        np.testing.assert_array_equal(layer[..., 3], out.image[..., 3])
    assert out.info["post"]["grain_level"] > 4                 # the source's grain was measured


def test_grain_tops_up_what_a_clean_result_lacks():
    """A result cleaner than its noisy source gets grain of the source's level back (the layer,
    composited at opacity 1 as GIMP's Grain merge does); one as noisy as its source gets none."""
    from ai_enhance.jobs import JobOutput
    from ai_enhance.pixels import grain_merge
    from ai_enhance.post.pipeline import PostInput, run as post_run

    clean = photo(96, 96)
    rng = np.random.default_rng(2)
    noisy = np.clip(clean + rng.normal(0, 8, clean.shape), 0, 255).astype(np.uint8)
    out = post_run(PostInput(noisy, (0, 0, 96, 96), 1, {"grain": 1.0}), JobOutput(clean.copy()))
    (_, layer), = out.layers
    g = layer.astype(np.float32) - 127.5
    assert abs(g.mean()) < 2 and 4 < g.std() < 14, g.std()     # about the source's sigma 8
    shown = grain_merge(out.image, layer, 1.0).astype(np.float32)
    hp = lambda a: a - cv2.GaussianBlur(a, (0, 0), 2)          # noqa: E731
    ratio = hp(shown).std() / hp(noisy.astype(np.float32)).std()
    assert 0.65 <= ratio <= 1.35, ratio
    already = post_run(PostInput(noisy, (0, 0, 96, 96), 1, {"grain": 1.0}), JobOutput(noisy.copy()))
    assert np.abs(already.layers[0][1].astype(np.float32) - 127.5).mean() < 1.5


def test_keep_texture_works_inside_the_faces_mask_only():
    """keep-texture reads the operation's "faces" mask (restored skin); without it nothing moves."""
    from ai_enhance.jobs import JobOutput
    from ai_enhance.post.pipeline import PostInput, run as post_run

    rng = np.random.default_rng(1)
    src = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    smooth = cv2.GaussianBlur(src, (0, 0), 3)
    mask = np.zeros((32, 32), np.uint8)
    mask[:, :16] = 255
    out = post_run(PostInput(src, (0, 0, 32, 32), 1, {"keep-texture": 1.0}),
                   JobOutput(smooth.copy(), masks=[("faces", mask)]))
    diff = np.abs(out.image.astype(int) - smooth.astype(int)).mean(axis=2)
    assert diff[:, :14].mean() > 10 and diff[:, 18:].max() == 0
    none = post_run(PostInput(src, (0, 0, 32, 32), 1, {"keep-texture": 1.0}), JobOutput(smooth.copy()))
    np.testing.assert_array_equal(none.image, smooth)


def test_unknown_or_out_of_range_post_parameters_are_refused(engine):
    for post in ({"sharpness": 1}, {"fidelity": 2.0}, {"keep-texture": 0.5}):   # keep-texture: faces only
        with pytest.raises(EnhanceError) as e:
            run(engine, photo(), post=post)
        assert e.value.kind == ErrorKind.BAD_REQUEST and "\n" not in str(e.value)


def test_gray_and_16_bit_pass_the_stage(engine):
    g = cv2.cvtColor(photo(), cv2.COLOR_RGB2GRAY)[:, :, None].astype(np.uint16) * 257
    out = run(engine, g, post={"change-map": True, "grain": 0.5})
    assert out.image.shape == (80, 96, 1) and out.image.dtype == np.uint16
    assert dict(out.layers)["grain"].shape == (80, 96, 1)


# --------------------------------------------------------------------------- re-tune


class CountingForward:
    def __init__(self, lm):
        self.real, self.calls = lm.forward, 0

    def __call__(self, x, options):
        self.calls += 1
        return self.real(x, options)


def test_retune_runs_only_the_post_stage_and_says_so_when_the_raw_output_is_gone(mdir):
    engine = Engine(ModelStore(mdir), device="cpu")
    lm = engine.get_model("realesrgan-x4plus")
    lm.forward = counter = CountingForward(lm)
    src = photo()
    first = run(engine, src, post={"fidelity": 0.0, "color-lock": False})
    n = counter.calls
    assert n > 0 and first.info["reused"] is False and first.info["raw_key"]
    tuned = engine.run(JobRequest("upscale", post={"fidelity": 1.0, "change-map": True},
                                  reuse=first.info["raw_key"]),
                       np.zeros((2, 2, 3), np.uint8),        # what the client sends is not used
                       lambda f, t: None, lambda: False)
    assert counter.calls == n and tuned.info["reused"] is True      # no model call
    assert tuned.image.shape == first.image.shape
    assert consistency_db(src, tuned.image, 2) > consistency_db(src, first.image, 2) + 5
    assert "changes" in dict(tuned.masks)
    # the same raw output, the first post again: the first result, bit for bit
    back = engine.run(JobRequest("upscale", post={"fidelity": 0.0, "color-lock": False},
                                 reuse=first.info["raw_key"]), src, lambda f, t: None, lambda: False)
    np.testing.assert_array_equal(back.image, first.image)
    # evicted (or another backend): the model runs again on what was sent, and the info says so
    small = Engine(ModelStore(mdir), device="cpu", raw_cache_bytes=0)
    again = small.run(JobRequest("upscale", "realesrgan-x4plus", 2, post={"fidelity": 1.0},
                                 reuse=first.info["raw_key"]), src, lambda f, t: None, lambda: False)
    assert again.info["reused"] is False and again.info["recomputed"] is True


def test_raw_cache_is_bounded():
    from ai_enhance.jobs import JobOutput
    from ai_enhance.rawcache import RawCache

    c = RawCache(3 * 1000)
    for i in range(5):
        c.put(str(i), JobRequest("upscale"), {"image": np.zeros(500, np.uint8)}, JobOutput(np.zeros(500, np.uint8)))
    assert len(c) == 3 and c.nbytes <= 3000
    assert c.get("0") is None and c.get("4") is not None
    c.put("huge", JobRequest("upscale"), {"image": np.zeros(5000, np.uint8)}, JobOutput(None))
    assert c.get("huge") is None                               # larger than the whole budget


@pytest.mark.parametrize("post", [{"color-lock": True}, {"color-lock": True, "fidelity": 0.5},
                                  {"fidelity": 1.0, "keep-texture": 0.4}])
def test_pixels_a_same_size_operation_left_alone_stay_the_photos(post):
    """Restore Faces returns the photo itself outside the faces: the smooth corrections of the
    colour lock and fidelity must not seep into those pixels (they are bit for bit the photo's)."""
    from ai_enhance.jobs import JobOutput
    from ai_enhance.post.pipeline import PostInput, run as post_run

    src = photo(64, 64)
    res = src.copy()
    res[16:40, 16:40] = np.clip(res[16:40, 16:40].astype(int) + (40, -30, 25), 0, 255)   # a "face"
    mask = np.zeros((64, 64), np.uint8)
    mask[16:40, 16:40] = 255
    out = post_run(PostInput(src, (0, 0, 64, 64), 1, dict(post)), JobOutput(res.copy(), masks=[("faces", mask)]))
    outside = np.ones((64, 64), bool)
    outside[16:40, 16:40] = False
    np.testing.assert_array_equal(out.image[outside], src[outside])
    assert np.abs(out.image[20:36, 20:36].astype(int) - res[20:36, 20:36]).mean() > 1, "the face was corrected"
