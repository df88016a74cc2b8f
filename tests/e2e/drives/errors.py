"""Runs inside GIMP: registration and every error path (no backend answers at the endpoint)."""
from drive_lib import *  # noqa: F403

UP = "python-fu-ai-enhance-upscale"
FACES = "python-fu-ai-enhance-faces"


@case
def registered():
    return {"upscale": proc_info(UP), "faces": proc_info(FACES)}


def _rgb(w=40, h=30):
    img = new_image(w, h)
    layer = add_layer(img, "src", w, h, fmt="R'G'B' u8", data=pattern(w * h * 3, 1))
    return img, layer


@case
def dead_backend():
    img, layer = _rgb()
    before = describe(img)
    src_before = dump_pixels(layer, "R'G'B'A u8")
    r = run_proc(UP, img, [layer], model="nearest-x4", scale=2, strength=1.0)
    return {"run": r, "before": before, "after": describe(img),
            "src_before": src_before, "src_after": dump_pixels(layer, "R'G'B'A u8")}


@case
def dead_backend_faces():
    img, layer = _rgb()
    before = describe(img)
    r = run_proc(FACES, img, [layer], model="gfpgan-v1.4", mask="faces")
    return {"run": r, "before": before, "after": describe(img)}


@case
def selection_outside_layer():
    img = new_image(60, 40)
    layer = add_layer(img, "small", 20, 20, offsets=(0, 0), fmt="R'G'B' u8", data=pattern(1200, 2))
    select_rect(img, 30, 5, 20, 20)
    r = run_proc(UP, img, [layer], model="nearest-x4", scale=1)
    return {"run": r, "after": describe(img)}


@case
def indexed_image():
    img, layer = _rgb()
    img.convert_indexed(Gimp.ConvertDitherType.NONE, Gimp.ConvertPaletteType.GENERATE, 16,
                        False, False, "")
    r = run_proc(UP, img, [layer], model="nearest-x4", scale=1)
    return {"run": r, "after": describe(img)}


@case
def group_as_target():
    img = new_image(30, 30)
    g = add_group(img, "group")
    add_layer(img, "inner", 30, 30, parent=g, fmt="R'G'B' u8", data=pattern(2700, 3))
    r = run_proc(UP, img, [g], model="nearest-x4", scale=1)
    return {"run": r, "after": describe(img)}


@case
def two_layers():
    img, layer = _rgb()
    other = add_layer(img, "other", 40, 30, fmt="R'G'B' u8", data=pattern(3600, 4))
    r = run_proc(UP, img, [layer, other], model="nearest-x4", scale=1)
    return {"run": r, "after": describe(img)}


finish()
