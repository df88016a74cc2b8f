#!/usr/bin/env python3
"""GIMP's own floor under a filter call, for bench/bench_gimp.py (installed next to AI Enhance in a
throw-away profile; never shipped).  Three PDB procedures on the active layer, no menu entries:

  python-fu-aie-bench-empty   does nothing: a Python plug-in call's cost (process start, gi,
                              GIMP's handshake)
  python-fu-aie-bench-read    reads the layer's pixels once, as AI Enhance reads them (R'G'B' u8
                              for an 8-bit RGB layer): the buffer API's read cost
  python-fu-aie-bench-copy    reads them, and in one undo step adds a layer of the source's type
                              above with those pixels (no conversion) and a white mask: what any
                              layer-making filter must do, without any of AI Enhance's own code
  python-fu-aie-bench-copy-flush  the same, then Gimp.displays_flush() as an interactive filter does

With AI_ENHANCE_PROFILE set, each call appends {"wall0", "wall_end", "phases": {}} like AI Enhance.
"""
import time

_WALL0 = time.time()

import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402

import gi  # noqa: E402

gi.require_version("Gimp", "3.0")
gi.require_version("Gegl", "0.4")
from gi.repository import Gegl, Gimp, GObject  # noqa: E402

PROCS = ("python-fu-aie-bench-empty", "python-fu-aie-bench-read", "python-fu-aie-bench-copy",
         "python-fu-aie-bench-copy-flush")


def _fmt(image, layer) -> str:
    gray = image.get_base_type() == Gimp.ImageBaseType.GRAY
    return ("Y'" if gray else "R'G'B'") + ("A" if layer.has_alpha() else "") + " u8"


_PHASES = {}
_LAST = [_WALL0]


def _mark(name):
    now = time.time()
    _PHASES[name] = now - _LAST[0]
    _LAST[0] = now


def _ok(layer=None):
    if os.environ.get("AI_ENHANCE_PROFILE"):
        _mark("rest")
        with open(os.environ["AI_ENHANCE_PROFILE"], "a") as f:
            f.write(json.dumps({"wall0": _WALL0, "wall_end": time.time(), "phases": _PHASES}) + "\n")
    return Gimp.ValueArray.new_from_values([
        GObject.Value(Gimp.PDBStatusType, Gimp.PDBStatusType.SUCCESS),
        GObject.Value(Gimp.Layer, layer)])


class Bench(Gimp.PlugIn):
    def do_query_procedures(self):
        return list(PROCS)

    def do_set_i18n(self, name):
        return False

    def do_create_procedure(self, name):
        p = Gimp.ImageProcedure.new(self, name, Gimp.PDBProcType.PLUGIN, self.run, None)
        p.set_image_types("RGB*, GRAY*")
        p.set_sensitivity_mask(Gimp.ProcedureSensitivityMask.DRAWABLE)
        p.set_documentation("AI Enhance benchmark floor", __doc__, name)
        p.set_attribution("gimp-ai-enhance contributors", "gimp-ai-enhance contributors", "2025")
        p.add_layer_return_value("layer", "Layer", "The new layer (copy only)", True,
                                 GObject.ParamFlags.READWRITE)
        return p

    def run(self, procedure, run_mode, image, drawables, config, run_data):
        _mark("import gi, GIMP handshake")
        name = procedure.get_name()
        if name.endswith("empty"):
            return _ok()
        src = drawables[0]
        w, h = src.get_width(), src.get_height()
        fmt = _fmt(image, src)
        pixels = src.get_buffer().get(Gegl.Rectangle.new(0, 0, w, h), 1.0, fmt, Gegl.AbyssPolicy.CLAMP)
        _mark("read pixels")
        if name.endswith("read"):
            return _ok()
        image.undo_group_start()
        try:
            layer = Gimp.Layer.new(image, "bench copy", w, h, src.type(), 100.0, Gimp.LayerMode.NORMAL)
            image.insert_layer(layer, src.get_parent(), image.get_item_position(src))
            buf = layer.get_buffer()
            buf.set(Gegl.Rectangle.new(0, 0, w, h), fmt, pixels)
            buf.flush()
            _mark("new layer + write pixels")
            layer.update(0, 0, w, h)
            layer.add_mask(layer.create_mask(Gimp.AddMaskType.WHITE))
        finally:
            image.undo_group_end()
        _mark("update, mask, undo group end")
        if name.endswith("flush"):
            Gimp.displays_flush()
            _mark("displays flush")
        # the next PDB call after a big change waits for what GIMP does with it (as AI Enhance's
        # progress_end does)
        Gimp.progress_end()
        _mark("one more PDB call (progress end)")
        return _ok(layer)


Gimp.main(Bench.__gtype__, sys.argv)
