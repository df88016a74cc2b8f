"""Runs inside GIMP (with an X server): the retoucher's side of every filter, driven through the
plug-in's test hooks.  PARAMS["cases"] lists what to do; each case writes the dialog's script
(AI_ENHANCE_DIALOG_SCRIPT), runs one procedure INTERACTIVELY and records what the dialog showed
(AI_ENHANCE_DIALOG_REPORT), what the image looks like before and after, and how long it took."""
import json
import os
import time

from drive_lib import *  # noqa: F403

SCRIPT = os.environ["AI_ENHANCE_DIALOG_SCRIPT"]
REPORT = os.environ["AI_ENHANCE_DIALOG_REPORT"]
CANCEL = os.environ["AI_ENHANCE_PROGRESS_CANCEL"]
PROGRESS = os.environ["AI_ENHANCE_PROGRESS_REPORT"]
HELP_LOG = os.environ.get("AI_ENHANCE_HELP_LOG")


def _photo(w, h, base="RGB"):
    """A picture with detail in one corner (a checkerboard) and smooth gradients elsewhere."""
    img = new_image(w, h, base=base)
    px = bytearray()
    for y in range(h):
        for x in range(w):
            if x > w * 0.6 and y > h * 0.55:
                v = 230 if ((x // 3) + (y // 3)) % 2 else 25
                px += bytes((v, v // 2 + 60, 255 - v))
            else:
                px += bytes(((x * 255) // w, (y * 255) // h, 128))
    layer = add_layer(img, "Background", w, h, fmt="R'G'B' u8", data=bytes(px))
    return img, layer


def _reset(path):
    if os.path.exists(path):
        os.remove(path)


def _one(c):
    with open(SCRIPT, "w") as f:
        json.dump({c.get("op", "models"): c.get("steps", [])}, f)
    with open(CANCEL, "w") as f:
        f.write(c.get("cancel", ""))
    for p in (REPORT, PROGRESS):
        _reset(p)
    if c.get("photo"):
        w, h = PARAMS["photo"]
        img = new_image(w, h)
        layer = add_layer(img, "Background", w, h, fmt="R'G'B' u8",
                          data=open(os.path.join(PARAMS["workdir"], "photo.rgb"), "rb").read())
    else:
        img, layer = _photo(*c.get("size", (160, 120)))
    if c.get("select"):
        select_rect(img, *c["select"])
    proc = Gimp.get_pdb().lookup_procedure(c["proc"])
    cfg = proc.create_config()
    cfg.set_property("run-mode", Gimp.RunMode.INTERACTIVE)
    if c["proc"].endswith("-models"):
        pass
    else:
        cfg.set_property("image", img)
        cfg.set_core_object_array("drawables", [layer])
    for k, v in c.get("props", {}).items():
        cfg.set_property(k, v)
    before = describe(img)
    t0 = time.time()
    result = proc.run(cfg)
    returned = time.time()
    status = result.index(0)
    out = {"status": getattr(status, "value_nick", None) or str(status),
           "success": status == Gimp.PDBStatusType.SUCCESS, "before": before, "after": describe(img),
           "returned_at": returned, "seconds": round(returned - t0, 3)}
    if status != Gimp.PDBStatusType.SUCCESS:
        out["error"] = Gimp.get_pdb().get_last_error()
    elif result.length() > 1 and not c["proc"].endswith("-models"):
        lay = result.index(1)
        out["layer_id"] = lay.get_id() if lay is not None else None
    out["dialog"] = json.load(open(REPORT)) if os.path.exists(REPORT) else None
    out["progress"] = json.load(open(PROGRESS)) if os.path.exists(PROGRESS) else None
    if HELP_LOG and os.path.exists(HELP_LOG):
        out["help"] = open(HELP_LOG).read().split()
        os.remove(HELP_LOG)
    return out


def _make(c):
    def fn():
        return _one(c)
    fn.__name__ = c["name"]
    return fn


@case
def models_noninteractive():
    """The manager as a script calls it: install, then remove, by id."""
    out = {}
    for action in PARAMS.get("models_actions", []):
        proc = Gimp.get_pdb().lookup_procedure("python-fu-ai-enhance-models")
        cfg = proc.create_config()
        cfg.set_property("run-mode", Gimp.RunMode.NONINTERACTIVE)
        cfg.set_property("action", action[0])
        cfg.set_property("ids", action[1])
        r = proc.run(cfg)
        st = r.index(0)
        out[f"{action[0]}:{action[1]}"] = {
            "success": st == Gimp.PDBStatusType.SUCCESS,
            "result": r.index(1) if st == Gimp.PDBStatusType.SUCCESS else Gimp.get_pdb().get_last_error()}
    return out


for _c in PARAMS["cases"]:
    case(_make(_c))

finish()
