"""Runs inside GIMP: python-fu-ai-enhance-upscale on many kinds of layers, against a backend whose
models dir has `nearest-x4` (output = exact nearest-neighbour upscale).  Records layers, masks and
pixels; tests/e2e/test_gimp_upscale.py asserts on them."""
from drive_lib import *  # noqa: F403

UP = "python-fu-ai-enhance-upscale"
MODEL = PARAMS.get("model", "nearest-x4")


def _new_layer_record(img, r, fmt):
    """The layer the procedure returned, its pixels and its mask."""
    if not r.get("layer_id"):
        return {}
    layer = Gimp.Layer.get_by_id(r["layer_id"])
    mask = layer.get_mask()
    return {"pixels": dump_pixels(layer, fmt),
            "mask": dump_pixels(mask, "Y u8") if mask is not None else None}


def _run(img, layer, fmt, **props):
    before = describe(img)
    src_before = dump_pixels(layer, fmt)
    r = run_proc(UP, img, [layer], **props)
    out = {"run": r, "before": before, "after": describe(img), "src_before": src_before,
           "src_after": dump_pixels(layer, fmt), "src_id": layer.get_id()}
    out.update(_new_layer_record(img, r, fmt))
    return out


@case
def whole_s1():
    img = new_image(48, 40)
    add_layer(img, "below", 48, 40, fmt="R'G'B' u8", data=pattern(48 * 40 * 3, 10))
    layer = add_layer(img, "src", 48, 40, fmt="R'G'B' u8", data=pattern(48 * 40 * 3, 11))
    return _run(img, layer, "R'G'B'A u8", model=MODEL, scale=1, strength=0.75)


@case
def feather_s1():
    img = new_image(64, 48)
    layer = add_layer(img, "src", 64, 48, fmt="R'G'B' u8", data=pattern(64 * 48 * 3, 12))
    select_rect(img, 20, 14, 16, 12, feather=8.0)
    out = _run(img, layer, "R'G'B'A u8", model=MODEL, scale=1, strength=1.0)
    out["selection_bounds"] = selection_bounds(img)
    return with_selection_under_new_layer(img, out)


def with_selection_under_new_layer(img, out):
    """Add the selection's values under the new layer's rectangle (to compare with its mask)."""
    new = [l for l in out["after"]["layers"] if l["id"] == out["run"].get("layer_id")]
    if new:
        x, y = new[0]["offsets"]
        w, h = new[0]["size"]
        out["selection_under_layer"] = dump_selection(img, (x, y, w, h))
    return out


@case
def scale2_all_layers_follow():
    img = new_image(30, 20)
    layer = add_layer(img, "src", 30, 20, fmt="R'G'B' u8", data=pattern(30 * 20 * 3, 13))
    add_layer(img, "sticker", 10, 8, alpha=True, offsets=(5, 3), fmt="R'G'B'A u8",
              data=pattern(10 * 8 * 4, 14))
    # the sticker sits above; target the background below it
    return _run(img, layer, "R'G'B'A u8", model=MODEL, scale=2, strength=1.0)


@case
def group_offsets_s4():
    img = new_image(64, 48)
    add_layer(img, "background", 64, 48, fmt="R'G'B' u8", data=pattern(64 * 48 * 3, 15))
    g = add_group(img, "group")
    rgb = pattern(30 * 20 * 3, 16)
    opaque = b"".join(rgb[i:i + 3] + b"\xff" for i in range(0, len(rgb), 3))
    target = add_layer(img, "target", 30, 20, alpha=True, offsets=(17, 9), parent=g, position=0,
                       fmt="R'G'B'A u8", data=opaque)
    add_layer(img, "g-top", 8, 8, offsets=(1, 1), parent=g, position=0, fmt="R'G'B' u8",
              data=pattern(8 * 8 * 3, 17))
    return _run(img, target, "R'G'B'A u8", model=MODEL, scale=4, strength=0.5)


@case
def selection_offsets_s4():
    img = new_image(60, 50)
    layer = add_layer(img, "target", 40, 30, offsets=(6, 4), fmt="R'G'B' u8",
                      data=pattern(40 * 30 * 3, 18))
    select_rect(img, 16, 10, 12, 8)
    out = _run(img, layer, "R'G'B'A u8", model=MODEL, scale=4, strength=1.0)
    return with_selection_under_new_layer(img, out)


@case
def alpha_s1():
    img = new_image(32, 32)
    data = bytearray(pattern(32 * 32 * 4, 19))
    for y in range(32):
        for x in range(32):
            data[(y * 32 + x) * 4 + 3] = 0 if x < 16 else (255 if y < 24 else 128)
    layer = add_layer(img, "cutout", 32, 32, alpha=True, fmt="R'G'B'A u8", data=bytes(data))
    return _run(img, layer, "R'G'B'A u8", model=MODEL, scale=1, strength=1.0)


@case
def gray_s4():
    img = new_image(20, 16, base="GRAY")
    layer = add_layer(img, "gray", 20, 16, base="GRAY", fmt="Y' u8", data=pattern(20 * 16, 20))
    return _run(img, layer, "Y'A u8", model=MODEL, scale=4, strength=1.0)


@case
def u16_s1():
    img = new_image(24, 16, precision="u16")
    layer = add_layer(img, "deep", 24, 16, fmt="R'G'B' u16", data=pattern(24 * 16 * 3 * 2, 21))
    return _run(img, layer, "R'G'B'A u16", model=MODEL, scale=1, strength=1.0)


@case
def f32_s2():
    import struct
    import random
    rnd = random.Random(22)
    vals = [rnd.random() for _ in range(16 * 12 * 3)]
    img = new_image(16, 12, precision="f32")
    layer = add_layer(img, "float", 16, 12, fmt="R'G'B' float", data=struct.pack(f"<{len(vals)}f", *vals))
    return _run(img, layer, "R'G'B'A float", model=MODEL, scale=2, strength=1.0)


finish()
