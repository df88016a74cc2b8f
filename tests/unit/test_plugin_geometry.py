"""The plug-in's rectangle arithmetic (ai_enhance_client/geometry.py), no GIMP needed."""
import random

import pytest

from ai_enhance_client.geometry import (Box, GeometryError, check_result_size, context_crop,
                                        crop_box_to_image, plan_job, scaled_offsets)


@pytest.mark.parametrize("a, b, expected", [
    (Box(0, 0, 10, 10), Box(5, 5, 10, 10), Box(5, 5, 5, 5)),
    (Box(0, 0, 10, 10), Box(2, 3, 4, 5), Box(2, 3, 4, 5)),        # inside
    (Box(0, 0, 10, 10), Box(-5, -5, 8, 30), Box(0, 0, 3, 10)),     # sticks out
    (Box(0, 0, 10, 10), Box(10, 0, 5, 5), None),                   # touching edge only
    (Box(0, 0, 10, 10), Box(20, 20, 5, 5), None),                  # apart
])
def test_intersect(a, b, expected):
    got = a.intersect(b)
    if expected is None:
        assert got.empty
    else:
        assert got == expected
        assert b.intersect(a) == expected


def test_box_rejects_negative_size():
    with pytest.raises(ValueError):
        Box(0, 0, -1, 3)


@pytest.mark.parametrize("box, bounds, margin, expected", [
    (Box(40, 40, 10, 10), Box(0, 0, 100, 100), 32, Box(8, 8, 74, 74)),     # room on all sides
    (Box(5, 90, 10, 10), Box(0, 0, 100, 100), 32, Box(0, 58, 47, 42)),     # clamped left/bottom
    (Box(0, 0, 100, 100), Box(0, 0, 100, 100), 32, Box(0, 0, 100, 100)),   # whole layer
    (Box(40, 40, 10, 10), Box(0, 0, 100, 100), 0, Box(40, 40, 10, 10)),    # no margin
])
def test_context_crop(box, bounds, margin, expected):
    assert context_crop(box, bounds, margin) == expected


@pytest.mark.parametrize("box, bounds", [(Box(0, 0, 0, 5), Box(0, 0, 10, 10)),
                                         (Box(5, 5, 10, 10), Box(0, 0, 10, 10))])
def test_context_crop_refuses_boxes_outside_bounds(box, bounds):
    with pytest.raises(ValueError):
        context_crop(box, bounds, 8)


# layer (w, h), offsets, image (w, h), selection (layer coords) or None, scale, margin ->
#   crop, roi, out_size, out_offsets, image_size
PLANS = [
    # whole layer, no selection
    ((64, 48), (0, 0), (64, 48), None, 1, 32,
     Box(0, 0, 64, 48), Box(0, 0, 64, 48), (64, 48), (0, 0), (64, 48)),
    # whole layer with offsets inside a bigger canvas, scale 2
    ((30, 20), (17, 9), (64, 48), None, 2, 32,
     Box(0, 0, 30, 20), Box(0, 0, 30, 20), (60, 40), (34, 18), (128, 96)),
    # selection in the middle: full margin on every side
    ((200, 150), (0, 0), (200, 150), Box(80, 60, 20, 10), 1, 32,
     Box(48, 28, 84, 74), Box(32, 32, 20, 10), (20, 10), (80, 60), (200, 150)),
    # selection at the top-left corner: margin only right/below
    ((200, 150), (0, 0), (200, 150), Box(0, 0, 20, 10), 1, 16,
     Box(0, 0, 36, 26), Box(0, 0, 20, 10), (20, 10), (0, 0), (200, 150)),
    # selection at the bottom-right corner, offsets, scale 4
    ((100, 80), (10, 5), (120, 90), Box(90, 70, 10, 10), 4, 16,
     Box(74, 54, 26, 26), Box(16, 16, 10, 10), (40, 40), (400, 300), (480, 360)),
    # a layer partly off-canvas (negative offsets)
    ((50, 50), (-10, -20), (40, 40), Box(12, 25, 8, 5), 3, 4,
     Box(8, 21, 16, 13), Box(4, 4, 8, 5), (24, 15), (6, 15), (120, 120)),
    # a selection sticking out of the layer is cut to the layer
    ((40, 30), (0, 0), (40, 30), Box(30, 20, 50, 50), 1, 8,
     Box(22, 12, 18, 18), Box(8, 8, 10, 10), (10, 10), (30, 20), (40, 30)),
]


@pytest.mark.parametrize("layer, offsets, image, sel, scale, margin, crop, roi, out_size, out_offsets, image_size",
                         PLANS)
def test_plan_job(layer, offsets, image, sel, scale, margin, crop, roi, out_size, out_offsets, image_size):
    p = plan_job(layer_size=layer, layer_offsets=offsets, image_size=image, selection=sel,
                 scale=scale, margin=margin)
    assert p.crop == crop
    assert p.roi == roi
    assert p.out_size == out_size
    assert p.out_offsets == out_offsets
    assert p.image_size == image_size
    assert p.whole_layer == (sel is None or roi == Box(0, 0, *layer) and crop == Box(0, 0, *layer))


def test_plan_invariants_on_many_random_cases():
    rnd = random.Random(7)
    for _ in range(2000):
        lw, lh = rnd.randint(1, 300), rnd.randint(1, 300)
        ox, oy = rnd.randint(-100, 100), rnd.randint(-100, 100)
        sel = None
        if rnd.random() < 0.8:
            x, y = rnd.randint(0, lw - 1), rnd.randint(0, lh - 1)
            sel = Box(x, y, rnd.randint(1, lw - x), rnd.randint(1, lh - y))
        scale, margin = rnd.randint(1, 8), rnd.randint(0, 48)
        p = plan_job(layer_size=(lw, lh), layer_offsets=(ox, oy), image_size=(lw, lh),
                     selection=sel, scale=scale, margin=margin)
        layer = Box(0, 0, lw, lh)
        box = sel or layer
        assert layer.contains(p.crop)
        assert Box(0, 0, p.crop.width, p.crop.height).contains(p.roi)
        assert p.roi.translate(p.crop.x, p.crop.y) == box        # roi is exactly the box
        # the margin is the requested one wherever the layer allows it
        assert p.roi.x == min(margin, box.x)
        assert p.roi.y == min(margin, box.y)
        assert p.crop.x2 - box.x2 == min(margin, lw - box.x2)
        assert p.crop.y2 - box.y2 == min(margin, lh - box.y2)
        assert p.out_size == (box.width * scale, box.height * scale)
        # the new layer lies exactly over the scaled source
        sx, sy = scaled_offsets((ox, oy), scale)
        assert p.out_offsets == (sx + box.x * scale, sy + box.y * scale)


def test_selection_missing_the_layer_is_a_user_error():
    with pytest.raises(GeometryError, match="does not touch"):
        plan_job(layer_size=(20, 20), layer_offsets=(0, 0), image_size=(60, 40),
                 selection=Box(0, 0, 0, 0), scale=1)
    with pytest.raises(GeometryError, match="does not touch"):
        plan_job(layer_size=(20, 20), layer_offsets=(0, 0), image_size=(60, 40),
                 selection=Box(30, 5, 10, 10), scale=1)


@pytest.mark.parametrize("bad_scale", [0, -1, 1.5])
def test_plan_rejects_bad_scale(bad_scale):
    with pytest.raises(ValueError):
        plan_job(layer_size=(20, 20), layer_offsets=(0, 0), image_size=(20, 20),
                 selection=None, scale=bad_scale)


def test_crop_box_to_image():
    p = plan_job(layer_size=(100, 80), layer_offsets=(10, 5), image_size=(120, 90),
                 selection=Box(50, 40, 10, 10), scale=2, margin=16)
    assert p.crop == Box(34, 24, 42, 42)
    # a face box in the sent frame -> canvas coordinates after the x2 scale
    assert crop_box_to_image([1, 2, 11, 12], p, (10, 5)) == [90.0, 62.0, 110.0, 82.0]


def test_check_result_size():
    p = plan_job(layer_size=(30, 20), layer_offsets=(0, 0), image_size=(30, 20), selection=None, scale=4)
    check_result_size(p, 120, 80)
    with pytest.raises(GeometryError, match="120x80 were expected"):
        check_result_size(p, 30, 20)
