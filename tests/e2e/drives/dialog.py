"""Runs inside GIMP (with an X server): the INTERACTIVE path of Upscale...  The plug-in's test hook
answers the dialog (AI_ENHANCE_DIALOG_AUTORESPONSE) and reports what it showed."""
import json
import os

from drive_lib import *  # noqa: F403

UP = "python-fu-ai-enhance-upscale"
REPORT = os.environ["AI_ENHANCE_DIALOG_REPORT"]
ANSWER = os.environ["AI_ENHANCE_DIALOG_AUTORESPONSE"]   # a file: the answer for the next dialog


def _interactive(img, layer, answer="ok", proc_name=UP, **props):
    with open(ANSWER, "w") as f:
        f.write(answer)
    if os.path.exists(REPORT):
        os.remove(REPORT)
    proc, cfg = proc_config(proc_name, img, [layer], props, Gimp.RunMode.INTERACTIVE)
    before = describe(img)
    result = proc.run(cfg)
    status = result.index(0)
    out = {"status": getattr(status, "value_nick", None) or str(status),
           "success": status == Gimp.PDBStatusType.SUCCESS, "before": before, "after": describe(img)}
    if status == Gimp.PDBStatusType.SUCCESS and result.length() > 1 and result.index(1) is not None:
        out["layer_id"] = result.index(1).get_id()
    elif status != Gimp.PDBStatusType.SUCCESS:
        out["error"] = Gimp.get_pdb().get_last_error()
    out["dialog"] = json.load(open(REPORT)) if os.path.exists(REPORT) else None
    return out


def _img():
    img = new_image(24, 20)
    layer = add_layer(img, "src", 24, 20, fmt="R'G'B' u8", data=pattern(24 * 20 * 3, 30))
    return img, layer


@case
def ok_with_given_values():
    img, layer = _img()
    return _interactive(img, layer, model=PARAMS["model"], scale=1, strength=0.5)


@case
def ok_again_remembers_last_values():
    img, layer = _img()
    return _interactive(img, layer)     # a fresh config: GIMP fills in the last values


@case
def cancel():
    img, layer = _img()
    return _interactive(img, layer, answer="cancel", scale=2)


@case
def jpeg_dialog_starts_at_the_files_quality():
    """An image opened from a JPEG saved at quality 72: JPEG Cleanup's dialog starts there."""
    img, layer = _img()
    path = PARAMS["workdir"] + "/q72.jpg"
    proc = Gimp.get_pdb().lookup_procedure("file-jpeg-export")
    cfg = proc.create_config()
    cfg.set_property("run-mode", Gimp.RunMode.NONINTERACTIVE)
    cfg.set_property("image", img)
    cfg.set_property("file", Gio.File.new_for_path(path))
    cfg.set_property("quality", 0.72)
    proc.run(cfg)
    loaded = Gimp.file_load(Gimp.RunMode.NONINTERACTIVE, Gio.File.new_for_path(path))
    return _interactive(loaded, loaded.get_layers()[0], answer="cancel",
                        proc_name="python-fu-ai-enhance-jpeg")


finish()
