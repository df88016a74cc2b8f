"""Runs inside GIMP: the fidelity dials on a real photo (skimage's astronaut, noisy, 96x96): the
'changes' mask, the grain layer, the hidden change map; then AI Re-tune on the result (no model
run), and Save Recipe keeps the dials."""
from drive_lib import *  # noqa: F403

UP = "python-fu-ai-enhance-upscale"
RETUNE = "python-fu-ai-enhance-retune"
MODEL = PARAMS["model"]
W, H = PARAMS["w"], PARAMS["h"]
with open(PARAMS["workdir"] + "/photo.rgb", "rb") as _f:
    PHOTO = _f.read()


def _photo():
    img = new_image(W, H)
    layer = add_layer(img, "photo", W, H, fmt="R'G'B' u8", data=PHOTO)
    return img, layer


def _layers(img):
    return describe(img)["layers"]


def _parasite(layer):
    p = layer.get_parasite("ai-enhance")
    return json.loads(bytes(p.get_data()).decode()) if p is not None else None


@case
def dials_and_retune():
    import json as _json
    globals()["json"] = _json
    img, layer = _photo()
    r = run_proc(UP, img, [layer], model=MODEL, scale=2, strength=0.8, mask="changes", grain=0.7,
                 fidelity=0.5, **{"change-map": True})
    out = {"run": r, "after": _layers(img)}
    if not r.get("layer_id"):
        return out
    new = Gimp.Layer.get_by_id(r["layer_id"])
    out["mask"] = dump_pixels(new.get_mask(), "Y u8")
    out["parasite"] = _parasite(new)
    out["pixels"] = dump_pixels(new, "R'G'B'A u8")
    # re-tune: fidelity 1, no grain, mask full; the engine still holds the raw output
    t = run_proc(RETUNE, img, [new], strength=0.5, mask="full", grain=0.0, fidelity=1.0,
                 **{"change-map": False, "color-lock": True})
    out["retune"] = t
    out["after_retune"] = _layers(img)
    if t.get("layer_id"):
        tuned = Gimp.Layer.get_by_id(t["layer_id"])
        out["tuned_parasite"] = _parasite(tuned)
        out["tuned_pixels"] = dump_pixels(tuned, "R'G'B'A u8")
        out["tuned_mask"] = dump_pixels(tuned.get_mask(), "Y u8")
    # re-tune on the photo itself: refused in one line
    out["retune_photo"] = run_proc(RETUNE, img, [layer], strength=0.5, mask="full")
    return out


finish()
