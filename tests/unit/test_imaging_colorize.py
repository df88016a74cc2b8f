"""Colourisation plumbing (pure numpy/OpenCV): the result keeps the source's L* exactly and takes
only a*b* from the prediction."""
from __future__ import annotations

import numpy as np
import pytest
import skimage.color
import skimage.data

from ai_enhance.errors import EnhanceError
from ai_enhance.imaging.colorize import (combine_color, fit_chroma, lab_to_srgb, luminance_input,
                                         srgb_to_lab)
from ai_enhance_client.protocol import ErrorKind

RNG = np.random.default_rng(7)


def photo(name: str = "astronaut", gray: bool = False) -> np.ndarray:
    img = getattr(skimage.data, name)().astype(np.float32) / 255.0
    if gray:
        return img.mean(axis=2, keepdims=True) if img.ndim == 3 else img[:, :, None]
    return img


def lstar(img: np.ndarray) -> np.ndarray:
    if img.shape[2] == 1:
        img = np.repeat(img, 3, axis=2)
    return srgb_to_lab(img[:, :, :3])[:, :, 0]


PREDS = {
    "coffee (real colours)": lambda: photo("coffee"),
    "saturated noise": lambda: RNG.integers(0, 2, (40, 60, 3)).astype(np.float32),
    "pure blue": lambda: np.broadcast_to(np.array([0, 0, 1], np.float32), (8, 8, 3)).copy(),
    "bigger than the photo": lambda: photo("chelsea")[:, :, :3].repeat(3, 0).repeat(3, 1),
}


@pytest.mark.parametrize("pred", list(PREDS), ids=list(PREDS))
@pytest.mark.parametrize("gray", [False, True], ids=["rgb-src", "gray-src"])
@pytest.mark.parametrize("saturation", [0.0, 0.5, 1.0, 2.0])
def test_lightness_is_the_source_s_exactly(pred, gray, saturation):
    src = photo("astronaut", gray)
    out = combine_color(src, PREDS[pred](), saturation=saturation)
    assert out.shape == src.shape[:2] + (3,) and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert np.abs(lstar(out) - lstar(src)).max() < 2e-3


def test_saturation_zero_gives_gray_and_more_saturation_gives_more_chroma():
    src, pred = photo("astronaut"), photo("coffee")
    gray = combine_color(src, pred, saturation=0.0)
    assert np.abs(gray[:, :, 0] - gray[:, :, 1]).max() < 1e-5
    assert np.abs(gray[:, :, 1] - gray[:, :, 2]).max() < 1e-5
    chroma = [np.hypot(*srgb_to_lab(combine_color(src, pred, saturation=s))[:, :, 1:].transpose(2, 0, 1)).mean()
              for s in (0.5, 1.0, 2.0)]
    assert chroma[0] < chroma[1] < chroma[2]


def test_prediction_equal_to_the_photo_gives_the_photo_back():
    src = photo("coffee")
    out = combine_color(src, src, saturation=1.0)
    # same size, in gamut: only float rounding remains
    assert np.abs(out - src).max() < 1e-4


def test_colour_comes_from_the_prediction_upsampled():
    src = photo("camera", gray=True)                       # 512x512 gray
    pred = np.zeros((16, 16, 3), np.float32)
    pred[:, :8] = [0.8, 0.1, 0.1]                           # left half red, right half green
    pred[:, 8:] = [0.1, 0.7, 0.1]
    lab = srgb_to_lab(combine_color(src, pred))
    mid = lab[100:400]
    left, right = mid[:, 20:200], mid[:, 312:490]
    assert np.median(left[:, :, 1]) > 10                    # a* > 0: red
    assert np.median(right[:, :, 1]) < -10                  # a* < 0: green


def test_out_of_gamut_colour_is_desaturated_not_darkened():
    lab = np.array([[[90.0, 80.0, -90.0], [20.0, -100.0, 100.0], [50.0, 0.0, 0.0]]])
    fitted = fit_chroma(lab)
    assert np.array_equal(fitted[..., 0], lab[..., 0])
    assert np.allclose(fitted[0, 2], lab[0, 2])             # gray untouched
    for i in (0, 1):                                         # chroma shrank, hue kept
        k = fitted[0, i, 1:] / lab[0, i, 1:]
        assert 0 < k[0] < 1 and abs(k[0] - k[1]) < 1e-9
    back = srgb_to_lab(lab_to_srgb(fitted))
    assert np.abs(back - fitted).max() < 1e-6              # fits in sRGB: survives the round trip


@pytest.mark.parametrize("name", ["astronaut", "coffee", "rocket"])
def test_lab_conversion_matches_the_standard(name):
    img = photo(name)
    ours = srgb_to_lab(img)
    ref = skimage.color.rgb2lab(img)
    assert np.abs(ours - ref).max() < 0.02
    assert np.abs(lab_to_srgb(ours) - img).max() < 1e-9


@pytest.mark.parametrize("size,shape", [(256, (256, 256, 3)), ((120, 200), (120, 200, 3)), (1024, (1024, 1024, 3))])
def test_luminance_input_is_gray_at_the_model_size_with_the_source_lightness(size, shape):
    colour = np.array([0.2, 0.6, 0.9], np.float32)
    src = np.broadcast_to(colour, (300, 400, 3)).copy()
    src[:150] = [0.9, 0.3, 0.1]
    li = luminance_input(src, size)
    assert li.shape == shape and li.dtype == np.float32
    assert np.array_equal(li[:, :, 0], li[:, :, 1]) and np.array_equal(li[:, :, 1], li[:, :, 2])
    # uniform areas keep their L* (away from the boundary between the halves)
    assert abs(lstar(li[-3:])[0, 0] - lstar(src[-3:])[0, 0]) < 0.05
    assert abs(lstar(li[:3])[0, 0] - lstar(src[:3])[0, 0]) < 0.05


def test_alpha_is_passed_through():
    src = np.concatenate([photo("coffee"), np.linspace(0, 1, 400 * 600, dtype=np.float32).reshape(400, 600, 1)], 2)
    out = combine_color(src, photo("astronaut"))
    assert out.shape == (400, 600, 4)
    assert np.array_equal(out[:, :, 3], src[:, :, 3])


BAD = [
    ("saturation too high", lambda: combine_color(photo(), photo(), saturation=2.5), "saturation"),
    ("negative saturation", lambda: combine_color(photo(), photo(), saturation=-0.1), "saturation"),
    ("nan saturation", lambda: combine_color(photo(), photo(), saturation=float("nan")), "saturation"),
    ("gray prediction", lambda: combine_color(photo(), photo()[:, :, :1]), "channel"),
    ("8-bit photo", lambda: combine_color((photo() * 255).astype(np.uint8), photo()), "uint8"),
    ("empty size", lambda: luminance_input(photo(), (0, 10)), "empty"),
]


@pytest.mark.parametrize("case", BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_a_one_line_bad_request(case):
    _, call, word = case
    with pytest.raises(EnhanceError) as e:
        call()
    assert e.value.kind is ErrorKind.BAD_REQUEST
    assert word in e.value.message and "\n" not in str(e.value) and e.value.hint
