"""Filters > AI Enhance > Upscale... in a real GIMP 3, against a real backend: layers, stacking,
offsets, sizes, masks, opacity and pixels.  The backend serves `nearest-x4` (a Compact net whose
output is exactly the nearest-neighbour x4 upscale; scale 1 and 2 are exact area-downscales of
it), so the expected pixels are known exactly."""
import base64

import numpy as np
import pytest

pytestmark = pytest.mark.gimp

DTYPES = {"u8": np.uint8, "u16": np.dtype("<u2"), "float": np.dtype("<f4")}
CHANNELS = {"R'G'B'A": 4, "R'G'B'": 3, "Y'A": 2, "Y'": 1, "Y": 1, "RGBA": 4}


def arr(d: dict) -> np.ndarray:
    model, kind = d["fmt"].split()
    a = np.frombuffer(base64.b64decode(d["b64"]), DTYPES[kind])
    return a.reshape(d["h"], d["w"], CHANNELS[model])


def nearest(a: np.ndarray, s: int) -> np.ndarray:
    return a.repeat(s, 0).repeat(s, 1)


@pytest.fixture(scope="module")
def upscale_run(gimp, e2e_backend):
    return gimp.run("upscale.py", env={"AI_ENHANCE_ENDPOINT": e2e_backend.endpoint}, timeout=300)


def layer(desc: dict, *, id=None, name=None) -> dict:
    found = [l for l in desc["layers"] if (id is None or l["id"] == id) and (name is None or l["name"] == name)]
    assert len(found) == 1, (id, name, desc)
    return found[0]


def check_new_layer(r: dict, *, scale: int, model: str = "nearest-x4") -> tuple[dict, dict]:
    """What every successful run must satisfy; returns (new layer, source) descriptions."""
    assert r["run"]["success"], r["run"]
    new_id = r["run"]["layer_id"]
    assert new_id, "the procedure returns the new layer"
    before, after = r["before"], r["after"]
    assert len(after["layers"]) == len(before["layers"]) + 1
    new, src = layer(after, id=new_id), layer(after, id=r["src_id"])
    assert new["name"] == f"AI Upscale \u00d7{scale} \u00b7 {model}"
    # directly above the source, in the same group
    assert new["parent"] == src["parent"]
    assert new["position"] == src["position"] - 1
    assert new["has_mask"]
    src_before = layer(before, id=r["src_id"])
    assert after["size"] == [before["size"][0] * scale, before["size"][1] * scale]
    assert src["size"] == [src_before["size"][0] * scale, src_before["size"][1] * scale]
    assert src["offsets"] == [src_before["offsets"][0] * scale, src_before["offsets"][1] * scale]
    # every other layer keeps its place in the stack and stays aligned
    for old in before["layers"]:
        now = layer(after, id=old["id"])
        assert now["offsets"] == [old["offsets"][0] * scale, old["offsets"][1] * scale], now
        assert now["size"] == [old["size"][0] * scale, old["size"][1] * scale], now
        assert now["parent"] == old["parent"]
    if scale == 1:
        np.testing.assert_array_equal(arr(r["src_after"]), arr(r["src_before"]),
                                      err_msg="the source layer's pixels changed")
    return new, src


def test_whole_layer_scale1_strength(upscale_run):
    r = upscale_run.case("whole_s1")
    new, src = check_new_layer(r, scale=1)
    assert new["offsets"] == [0, 0] and new["size"] == [48, 40]
    assert new["opacity"] == pytest.approx(75.0)
    assert (arr(r["mask"]) == 255).all(), "no selection: white mask"
    out, inp = arr(r["pixels"]), arr(r["src_before"])
    np.testing.assert_array_equal(out[..., :3], inp[..., :3])
    assert (out[..., 3] == 255).all()
    assert layer(r["after"], name="below")["position"] == 2


def test_feathered_selection_scale1(upscale_run):
    r = upscale_run.case("feather_s1")
    new, src = check_new_layer(r, scale=1)
    x, y, w, h = r["selection_bounds"]["box"]
    assert r["selection_bounds"]["non_empty"]
    # the feathered selection reaches beyond the 16x12 rectangle; the layer covers its bounds
    assert w > 16 and h > 12
    assert new["offsets"] == [x, y] and new["size"] == [w, h]
    mask, sel = arr(r["mask"])[..., 0], arr(r["selection_under_layer"])[..., 0]
    np.testing.assert_array_equal(mask, sel, err_msg="the layer mask is the selection")
    soft = ((mask > 0) & (mask < 255)).sum()
    assert soft > 0.3 * mask.size, "feathering gives soft edge values"
    assert mask.max() > 200 and mask[0, 0] < 20
    out, inp = arr(r["pixels"]), arr(r["src_before"])
    np.testing.assert_array_equal(out[..., :3], inp[y:y + h, x:x + w, :3])
    assert new["opacity"] == pytest.approx(100.0)


def test_scale2_scales_image_and_keeps_layers_aligned(upscale_run):
    r = upscale_run.case("scale2_all_layers_follow")
    new, src = check_new_layer(r, scale=2)
    assert new["offsets"] == src["offsets"] == [0, 0]
    assert new["size"] == src["size"] == [60, 40]
    sticker = layer(r["after"], name="sticker")
    assert sticker["offsets"] == [10, 6] and sticker["size"] == [20, 16]
    assert sticker["position"] == 0 and new["position"] == 1 and src["position"] == 2
    out = arr(r["pixels"])
    np.testing.assert_array_equal(out[..., :3], nearest(arr(r["src_before"])[..., :3], 2),
                                  err_msg="AI pixels come from the pixels read BEFORE scaling")
    assert (arr(r["mask"]) == 255).all()
    # GIMP resampled the source itself (it is not the AI result)
    assert arr(r["src_after"]).shape == (40, 60, 4)


def test_layer_with_offsets_inside_a_group_scale4(upscale_run):
    r = upscale_run.case("group_offsets_s4")
    new, src = check_new_layer(r, scale=4)
    assert new["parent"] == "group" and src["parent"] == "group"
    assert layer(r["after"], name="g-top")["position"] == 0 and new["position"] == 1
    assert new["offsets"] == src["offsets"] == [68, 36]
    assert new["size"] == src["size"] == [120, 80]
    assert new["opacity"] == pytest.approx(50.0)
    np.testing.assert_array_equal(arr(r["pixels"]), nearest(arr(r["src_before"]), 4))
    assert (arr(r["mask"]) == 255).all()


def test_selection_on_offset_layer_scale4(upscale_run):
    r = upscale_run.case("selection_offsets_s4")
    new, src = check_new_layer(r, scale=4)
    # selection (16,10,12x8) in image coords = (10,6,12x8) on the layer at (6,4)
    assert src["offsets"] == [24, 16]
    assert new["offsets"] == [(6 + 10) * 4, (4 + 6) * 4] and new["size"] == [48, 32]
    inp = arr(r["src_before"])[6:14, 10:22, :3]
    np.testing.assert_array_equal(arr(r["pixels"])[..., :3], nearest(inp, 4),
                                  err_msg="only the selection box, context margin cropped away")
    mask, sel = arr(r["mask"])[..., 0], arr(r["selection_under_layer"])[..., 0]
    np.testing.assert_array_equal(mask, sel)
    assert (mask[2:-2, 2:-2] == 255).all()


def test_alpha_transparent_stays_transparent(upscale_run):
    r = upscale_run.case("alpha_s1")
    new, src = check_new_layer(r, scale=1)
    out, inp = arr(r["pixels"]), arr(r["src_before"])
    assert new["has_alpha"]
    assert (inp[:, :16, 3] == 0).all()
    assert (out[:, :14, 3] == 0).all(), "transparent source pixels stay transparent"
    assert (out[:22, 18:, 3] == 255).all()
    assert np.abs(out[26:, 18:, 3].astype(int) - 128).max() <= 2
    np.testing.assert_array_equal(out[:22, 18:, :3], inp[:22, 18:, :3])


def test_gray_image_scale4(upscale_run):
    r = upscale_run.case("gray_s4")
    new, src = check_new_layer(r, scale=4)
    assert new["gray"] and new["size"] == [80, 64]
    out, inp = arr(r["pixels"]), arr(r["src_before"])
    np.testing.assert_array_equal(out[..., 0], nearest(inp[..., 0], 4))
    assert (out[..., 1] == 255).all()


def test_16bit_travels_without_8bit_round_trip(upscale_run):
    r = upscale_run.case("u16_s1")
    assert "U16" in r["after"]["precision"]
    check_new_layer(r, scale=1)
    out, inp = arr(r["pixels"]), arr(r["src_before"])
    assert (inp[..., :3] % 257 != 0).mean() > 0.9, "the source holds true 16-bit values"
    np.testing.assert_array_equal(out[..., :3], inp[..., :3])
    assert (out[..., 3] == 65535).all()


def test_float_image_scale2(upscale_run):
    r = upscale_run.case("f32_s2")
    assert "FLOAT" in r["after"]["precision"]
    check_new_layer(r, scale=2)
    out, inp = arr(r["pixels"]), arr(r["src_before"])
    q = np.round(inp[..., :3] * 255) / 255
    assert np.abs(inp[..., :3] - q).max() > 1e-3, "the source holds values between 8-bit steps"
    np.testing.assert_allclose(out[..., :3], nearest(inp[..., :3], 2), atol=1e-5)
