"""GIMP's layer compositing in numpy (checked against GIMP itself in tests/e2e/test_gimp_recipe.py)
and applying a recipe to one image with a stand-in model."""
import numpy as np
import pytest

from ai_enhance.batch import composite as C
from ai_enhance.batch.apply import StepFailed, StepOutput, apply_recipe
from ai_enhance_client import recipes as R
from ai_enhance_client.ops import LayerMode

rng = np.random.default_rng(7)


def rgba(h=6, w=5, alpha=None):
    a = rng.random((h, w, 4)).astype(np.float32)
    a[:, :, 3] = 1.0 if alpha is None else alpha
    return a


@pytest.mark.parametrize("dtype, peak", [(np.uint8, 255), (np.uint16, 65535)])
@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_native_linear_round_trip_is_exact(dtype, peak, channels):
    a = rng.integers(0, peak + 1, (9, 7, channels)).astype(dtype)
    back = C.from_linear_rgba(C.to_linear_rgba(a), dtype, channels)
    assert np.array_equal(back, a)


def test_srgb_curve_and_lab_round_trip():
    v = np.linspace(-0.2, 1.2, 301).astype(np.float32)
    assert np.allclose(C.linear_to_srgb(C.srgb_to_linear(v)), v, atol=2e-6)
    assert C.srgb_to_linear(np.float32(1.0)) == pytest.approx(1.0)
    assert C.srgb_to_linear(np.float32(0.5)) == pytest.approx(0.214041, abs=1e-5)
    rgb = rng.random((50, 3)).astype(np.float32)
    assert np.allclose(C.lab_to_linear_rgb(C.linear_rgb_to_lab(rgb)), rgb, atol=1e-5)
    # babl's D50 white (0.9642, 1, 0.8249) is not exactly its sRGB matrix's white: b is 0.025 there
    white = C.linear_rgb_to_lab(np.ones((1, 3), np.float32))[0]
    assert white == pytest.approx([100.0, 0.0, 0.0], abs=0.03)


def test_normal_opacity_and_mask():
    under, layer = rgba(), rgba()
    assert np.allclose(C.composite(under, layer, opacity=1.0), layer)
    assert np.allclose(C.composite(under, layer, opacity=0.0), under)
    half = C.composite(under, layer, opacity=0.5)
    assert np.allclose(half[:, :, :3], (under[:, :, :3] + layer[:, :, :3]) / 2)     # in linear light
    mask = np.zeros((6, 5), np.uint8)
    mask[:, 2:] = 255
    m = C.composite(under, layer, mask=mask)
    assert np.allclose(m[:, :2], under[:, :2]) and np.allclose(m[:, 2:], layer[:, 2:])


def test_normal_with_alpha_is_source_over():
    under = rgba(alpha=0.5)
    layer = rgba(alpha=0.25)
    out = C.composite(under, layer)
    a = 0.25 + 0.75 * 0.5
    assert np.allclose(out[:, :, 3], a)
    expect = under[:, :, :3] + (0.25 / a) * (layer[:, :, :3] - under[:, :, :3])
    assert np.allclose(out[:, :, :3], expect)
    clear = C.composite(rgba(alpha=0.0), layer)               # nothing under: the layer itself
    assert np.allclose(clear[:, :, :3], layer[:, :, :3]) and np.allclose(clear[:, :, 3], 0.25)


def test_grain_merge_with_mid_gray_changes_nothing():
    under = rgba()
    gray = np.full_like(under, 1.0)
    gray[:, :, :3] = C.srgb_to_linear(np.float32(0.5))
    assert np.allclose(C.composite(under, gray, mode=LayerMode.GRAIN_MERGE), under, atol=1e-5)
    # clip to backdrop: alpha stays the backdrop's, transparent backdrop untouched
    under2 = rgba(alpha=0.0)
    out = C.composite(under2, rgba(), mode=LayerMode.GRAIN_MERGE)
    assert np.allclose(out, under2)


def test_lch_color_keeps_lightness_takes_colour():
    under, layer = rgba(), rgba()
    out = C.composite(under, layer, mode=LayerMode.LCH_COLOR)
    lab_in, lab_layer, lab_out = (C.linear_rgb_to_lab(x[:, :, :3]) for x in (under, layer, out))
    inside = np.all((out[:, :, :3] > 0.001) & (out[:, :, :3] < 0.999), axis=2)   # in gamut
    assert inside.sum() > 5
    assert np.allclose(lab_out[..., 0][inside], lab_in[..., 0][inside], atol=0.05)
    assert np.allclose(lab_out[..., 1:][inside], lab_layer[..., 1:][inside], atol=0.05)


def test_layer_must_cover_the_image():
    with pytest.raises(C.CompositeError):
        C.composite(rgba(6, 5), rgba(5, 5))


def test_resample_keeps_flat_colour_and_alpha():
    a = np.zeros((4, 4, 4), np.float32)
    a[...] = [0.2, 0.4, 0.6, 1.0]
    a[:, :2, 3] = 0.0                 # transparent half: no dark fringe into the opaque half
    a[:, :2, :3] = 0.0
    big = C.resample(a, 2)
    assert big.shape == (8, 8, 4)
    assert np.allclose(big[:, 5:, :3], [0.2, 0.4, 0.6], atol=1e-5)
    assert np.allclose(big[:, :3, 3], 0.0, atol=1e-3)


# --------------------------------------------------------------------------- apply_recipe

def recipe(*steps):
    return R.parse({"format": R.FORMAT, "version": 1, "steps": list(steps)})


class Fake:
    """A stand-in model: scale by repetition, invert colour, optional mask; records its inputs."""

    def __init__(self, mask=None, fail_on=None):
        self.inputs = []
        self.mask = mask
        self.fail_on = fail_on

    def __call__(self, step, pixels):
        self.inputs.append(pixels.copy())
        if self.fail_on == step.op:
            raise StepFailed("the model broke")
        out = np.repeat(np.repeat(pixels, step.scale, 0), step.scale, 1)
        peak = np.iinfo(out.dtype).max
        out = out.copy()
        c = out.shape[2]
        color = slice(0, c - 1) if c in (2, 4) else slice(0, c)
        out[:, :, color] = peak - out[:, :, color]
        masks = {"faces": self.mask(out.shape[:2])} if self.mask else {}
        return StepOutput(out, masks, {})


def test_full_strength_step_is_its_result_exactly():
    img = rng.integers(0, 65536, (5, 4, 3)).astype(np.uint16)
    out = apply_recipe(recipe({"op": "upscale", "scale": 2, "strength": 1.0, "mask": "full"}), img, Fake())
    assert out.dtype == np.uint16 and out.shape == (10, 8, 3)
    assert np.array_equal(out, 65535 - np.repeat(np.repeat(img, 2, 0), 2, 1))


def test_strength_blends_in_linear_light():
    img = rng.integers(0, 256, (5, 4, 3)).astype(np.uint8)
    out = apply_recipe(recipe({"op": "denoise", "strength": 0.5}), img, Fake())
    lin = (C.to_linear_rgba(img) + C.to_linear_rgba(255 - img)) / 2
    assert np.array_equal(out, C.from_linear_rgba(lin, np.uint8, 3))


def test_sources_image_composite_and_step():
    img = rng.integers(0, 256, (4, 4, 3)).astype(np.uint8)
    fake = Fake()
    apply_recipe(recipe({"op": "denoise", "strength": 1.0},
                        {"op": "denoise", "strength": 0.5, "source": "image"},
                        {"op": "denoise", "strength": 0.3, "source": 0},
                        {"op": "denoise", "strength": 0.3, "source": "composite"}), img, fake)
    a, b, c, d = fake.inputs
    assert np.array_equal(a, img) and np.array_equal(b, img)
    assert np.array_equal(c, 255 - img)                       # step 0's own result
    assert not np.array_equal(d, img) and not np.array_equal(d, 255 - img)   # the blend so far


def test_backend_mask_masks_the_layer():
    img = np.full((4, 6, 3), 40, np.uint8)

    def half(shape):
        m = np.zeros(shape, np.uint8)
        m[:, shape[1] // 2:] = 255
        return m

    out = apply_recipe(recipe({"op": "faces", "mask": "faces", "strength": 1.0}), img, Fake(mask=half))
    assert (out[:, :3] == 40).all() and (out[:, 3:] == 215).all()
    # mask "full": the whole result
    out = apply_recipe(recipe({"op": "faces", "mask": "full", "strength": 1.0}), img, Fake(mask=half))
    assert (out == 215).all()


def test_scale_step_enlarges_what_lies_below():
    img = rng.integers(0, 256, (3, 3, 4)).astype(np.uint8)
    img[..., 3] = 255
    out = apply_recipe(recipe({"op": "denoise", "strength": 0.5},
                              {"op": "upscale", "scale": 2, "strength": 0.5, "mask": "full", "source": "image"}),
                       img, Fake())
    assert out.shape == (6, 6, 4) and out.dtype == np.uint8


def test_gray_alpha_keeps_channels():
    img = rng.integers(0, 256, (4, 5, 2)).astype(np.uint8)
    out = apply_recipe(recipe({"op": "denoise", "strength": 0.4}), img, Fake())
    assert out.shape == (4, 5, 2)
    # the result layer carries the source's alpha: source-over adds up the two
    ia = img[:, :, 1] / 255.0
    assert np.abs(out[:, :, 1] - np.rint((0.4 * ia + (1 - 0.4 * ia) * ia) * 255)).max() <= 1


def test_failure_names_the_step():
    img = np.zeros((4, 4, 3), np.uint8)
    with pytest.raises(StepFailed, match=r"step 1 \(jpeg\): the model broke"):
        apply_recipe(recipe({"op": "denoise"}, {"op": "jpeg"}), img, Fake(fail_on="jpeg"))


def test_wrong_result_size_is_reported():
    img = np.zeros((4, 4, 3), np.uint8)

    def bad(step, pixels):
        return StepOutput(np.zeros((3, 3, 3), np.uint8))

    with pytest.raises(StepFailed, match=r"step 0 \(denoise\) returned 3x3, expected 4x4"):
        apply_recipe(recipe({"op": "denoise"}), img, bad)
