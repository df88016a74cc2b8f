"""Runs inside GIMP WITH its windows (gimp-3 on Xvfb): a photo, two filters run on it, then a
screenshot of the screen (GIMP's window with the Layers dock) for the docs."""
import os
import time

from drive_lib import *  # noqa: F403

import gi  # noqa: E402

gi.require_version("GimpUi", "3.0")
gi.require_version("Gtk", "3.0")
gi.require_version("Gdk", "3.0")
from gi.repository import Gdk, GimpUi, Gtk  # noqa: E402


def _pump(seconds):
    t0 = time.time()
    while time.time() - t0 < seconds:
        while Gtk.events_pending():
            Gtk.main_iteration_do(False)
        time.sleep(0.05)


@case
def layers_dock():
    w, h = PARAMS["photo"]
    img = new_image(w, h)
    layer = add_layer(img, "Background", w, h, fmt="R'G'B' u8",
                      data=open(os.path.join(PARAMS["workdir"], "photo.rgb"), "rb").read())
    Gimp.Display.new(img)
    runs = {}
    for proc, props in PARAMS["runs"]:
        r = run_proc(proc, img, [layer], **props)
        runs[proc] = r
    Gimp.displays_flush()
    GimpUi.init("ai-enhance-docs")
    _pump(PARAMS.get("settle", 4.0))
    root = Gdk.get_default_root_window()
    pb = Gdk.pixbuf_get_from_window(root, 0, 0, root.get_width(), root.get_height())
    pb.savev(os.path.join(PARAMS["workdir"], "tmp", "screen.png"), "png", [], [])
    return {"runs": runs, "layers": [l["name"] for l in describe(img)["layers"]]}


finish()
