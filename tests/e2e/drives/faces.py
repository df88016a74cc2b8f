"""Runs inside GIMP: python-fu-ai-enhance-faces on a real photo (skimage's astronaut, 256x256)
with a random-weight face restorer; records layers, masks and pixels."""
from drive_lib import *  # noqa: F403

FACES = "python-fu-ai-enhance-faces"
MODEL = PARAMS["model"]
W, H = PARAMS["w"], PARAMS["h"]
with open(PARAMS["workdir"] + "/photo.rgb", "rb") as _f:
    PHOTO = _f.read()


def _photo(offsets=(0, 0), canvas=None):
    cw, ch = canvas or (W, H)
    img = new_image(cw, ch)
    layer = add_layer(img, "photo", W, H, offsets=offsets, fmt="R'G'B' u8", data=PHOTO)
    return img, layer


def _run(img, layer, **props):
    before = describe(img)
    src_before = dump_pixels(layer, "R'G'B'A u8")
    r = run_proc(FACES, img, [layer], model=MODEL, **props)
    out = {"run": r, "before": before, "after": describe(img), "src_id": layer.get_id(),
           "src_before": src_before}
    if r.get("layer_id"):
        new = Gimp.Layer.get_by_id(r["layer_id"])
        out["pixels"] = dump_pixels(new, "R'G'B'A u8")
        out["mask"] = dump_pixels(new.get_mask(), "Y u8")
        x, y = offsets(new)
        out["selection_under_layer"] = dump_selection(img, (x, y, new.get_width(), new.get_height()))
    return out


@case
def faces_mask_faces():
    img, layer = _photo()
    return _run(img, layer, mask="faces", strength=0.8, scale=1)


@case
def faces_times_selection():
    img, layer = _photo(offsets=(10, 6), canvas=(W + 20, H + 12))
    # the left half of the face area (image coordinates), sharp edges
    select_rect(img, 10 + PARAMS["sel"][0], 6 + PARAMS["sel"][1], PARAMS["sel"][2], PARAMS["sel"][3])
    return _run(img, layer, mask="faces", strength=1.0, scale=1)


@case
def faces_mask_full_scale2():
    img, layer = _photo()
    return _run(img, layer, mask="full", strength=1.0, scale=2)


@case
def no_face():
    img = new_image(96, 80)
    layer = add_layer(img, "noise", 96, 80, fmt="R'G'B' u8", data=pattern(96 * 80 * 3, 40))
    return _run(img, layer, mask="faces", strength=1.0, scale=1)


finish()
