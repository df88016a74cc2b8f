"""Helpers for drive scripts: code that runs INSIDE GIMP (python-fu-eval) and records what it saw.

A drive script does `from drive_lib import *`, defines cases with @case, then calls finish().
Each case returns a JSON-able dict (pixels as base64 via dump_pixels); an exception in one case
is recorded (with its traceback) and the next case still runs.  Assertions happen in pytest,
which reads the JSON file named by AI_ENHANCE_E2E_OUT.
"""
import base64
import json
import os
import sys
import time
import traceback

import gi

gi.require_version("Gimp", "3.0")
gi.require_version("Gegl", "0.4")
from gi.repository import Gegl, Gimp, Gio, GLib  # noqa: E402,F401

OUT = os.environ.get("AI_ENHANCE_E2E_OUT", "/tmp/ai-enhance-e2e.json")
PARAMS = {}
if os.environ.get("AI_ENHANCE_E2E_PARAMS"):
    with open(os.environ["AI_ENHANCE_E2E_PARAMS"]) as _f:
        PARAMS = json.load(_f)

_results = {"_meta": {"gimp_version": Gimp.version(), "python": sys.version.split()[0],
                      "cases": []}}
_cases = []


def case(fn):
    _cases.append(fn)
    return fn


def run_cases():
    only = PARAMS.get("only")
    for fn in _cases:
        name = fn.__name__
        if only and name not in only:
            continue
        t0 = time.monotonic()
        try:
            r = fn() or {}
            r["ok"] = True
        except Exception as e:  # noqa: BLE001 - recorded for pytest
            r = {"ok": False, "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()}
        r["seconds"] = round(time.monotonic() - t0, 3)
        _results[name] = r
        _results["_meta"]["cases"].append(name)


def finish():
    run_cases()
    tmp = OUT + ".tmp"
    with open(tmp, "w") as f:
        json.dump(_results, f)
    os.replace(tmp, OUT)


# --------------------------------------------------------------------------- image building

BASE = {"RGB": Gimp.ImageBaseType.RGB, "GRAY": Gimp.ImageBaseType.GRAY,
        "INDEXED": Gimp.ImageBaseType.INDEXED}
PRECISION = {"u8": Gimp.Precision.U8_NON_LINEAR, "u16": Gimp.Precision.U16_NON_LINEAR,
             "f32": Gimp.Precision.FLOAT_NON_LINEAR, "f32-linear": Gimp.Precision.FLOAT_LINEAR}
LAYER_TYPE = {("RGB", False): Gimp.ImageType.RGB_IMAGE, ("RGB", True): Gimp.ImageType.RGBA_IMAGE,
              ("GRAY", False): Gimp.ImageType.GRAY_IMAGE, ("GRAY", True): Gimp.ImageType.GRAYA_IMAGE}


def new_image(w, h, base="RGB", precision="u8"):
    if precision == "u8":
        return Gimp.Image.new(w, h, BASE[base])
    return Gimp.Image.new_with_precision(w, h, BASE[base], PRECISION[precision])


def add_layer(img, name, w, h, *, base="RGB", alpha=False, offsets=(0, 0), parent=None,
              position=0, fmt=None, data=None):
    layer = Gimp.Layer.new(img, name, w, h, LAYER_TYPE[(base, alpha)], 100.0, Gimp.LayerMode.NORMAL)
    img.insert_layer(layer, parent, position)
    layer.set_offsets(*offsets)
    if data is not None:
        set_pixels(layer, fmt, data)
    return layer


def add_group(img, name, parent=None, position=0):
    g = Gimp.GroupLayer.new(img, name)
    img.insert_layer(g, parent, position)
    return g


def set_pixels(drawable, fmt, data):
    w, h = drawable.get_width(), drawable.get_height()
    buf = drawable.get_buffer()
    buf.set(Gegl.Rectangle.new(0, 0, w, h), fmt, data)
    buf.flush()
    drawable.update(0, 0, w, h)


def get_pixels(drawable, fmt, rect=None):
    if rect is None:
        rect = (0, 0, drawable.get_width(), drawable.get_height())
    return drawable.get_buffer().get(Gegl.Rectangle.new(*rect), 1.0, fmt, Gegl.AbyssPolicy.NONE)


def dump_pixels(drawable, fmt, rect=None):
    if rect is None:
        rect = (0, 0, drawable.get_width(), drawable.get_height())
    data = get_pixels(drawable, fmt, rect)
    return {"w": rect[2], "h": rect[3], "fmt": fmt, "b64": base64.b64encode(bytes(data)).decode()}


def pattern(n, seed):
    """n pseudo-random bytes (deterministic, stdlib only)."""
    import random
    return random.Random(seed).randbytes(n)


def select_rect(img, x, y, w, h, feather=0.0):
    img.select_rectangle(Gimp.ChannelOps.REPLACE, x, y, w, h)
    if feather:
        Gimp.Selection.feather(img, feather)


def selection_bounds(img):
    r = Gimp.Selection.bounds(img)
    # (ok, non_empty, x1, y1, x2, y2) on 3.0; tolerate a shorter tuple
    vals = list(r)[-5:]
    return {"non_empty": bool(vals[0]), "box": [vals[1], vals[2], vals[3] - vals[1], vals[4] - vals[2]]}


def dump_selection(img, rect):
    sel = img.get_selection()
    data = sel.get_buffer().get(Gegl.Rectangle.new(*rect), 1.0, "Y u8", Gegl.AbyssPolicy.NONE)
    return {"w": rect[2], "h": rect[3], "fmt": "Y u8", "b64": base64.b64encode(bytes(data)).decode()}


# --------------------------------------------------------------------------- describing

def offsets(item):
    r = item.get_offsets()
    return [int(r[1]), int(r[2])] if len(r) == 3 else [int(r[0]), int(r[1])]


def describe(img):
    """Every layer, depth first, top to bottom."""
    out = []

    def walk(items, parent):
        for it in items:
            d = {"id": it.get_id(), "name": it.get_name(), "parent": parent,
                 "position": img.get_item_position(it), "offsets": offsets(it),
                 "size": [it.get_width(), it.get_height()], "opacity": it.get_opacity(),
                 "group": it.is_group_layer(), "has_alpha": it.has_alpha(),
                 "has_mask": it.get_mask() is not None, "gray": it.is_gray(),
                 "mode": getattr(it.get_mode(), "value_nick", str(it.get_mode())),
                 "visible": it.get_visible()}
            out.append(d)
            if it.is_group_layer():
                walk(it.get_children(), it.get_name())

    walk(img.get_layers(), None)
    return {"size": [img.get_width(), img.get_height()], "layers": out,
            "base": getattr(img.get_base_type(), "value_nick", str(img.get_base_type())),
            "precision": precision_name(img)}


def precision_name(img):
    """e.g. "U16_NON_LINEAR" (enum-agnostic: PyGObject 3.50 and 3.58 print enums differently)."""
    p = img.get_precision()
    for name in dir(Gimp.Precision):
        if name.isupper() and getattr(Gimp.Precision, name) == p:
            return name
    return str(p)


def proc_config(name, img, drawables, props, run_mode=None):
    """(procedure, its config) for ``name`` on ``drawables`` of ``img``, with ``props`` set
    (property names as the PDB spells them)."""
    proc = Gimp.get_pdb().lookup_procedure(name)
    if proc is None:
        raise RuntimeError(f"procedure {name} is not registered")
    cfg = proc.create_config()
    cfg.set_property("run-mode", Gimp.RunMode.NONINTERACTIVE if run_mode is None else run_mode)
    cfg.set_property("image", img)
    cfg.set_core_object_array("drawables", list(drawables))
    for k, v in props.items():
        cfg.set_property(k, v)
    return proc, cfg


def run_proc(name, img, drawables, **props):
    """Run a PDB procedure like a script would; returns status, error text, return layer id."""
    proc, cfg = proc_config(name, img, drawables, {k.replace("_", "-"): v for k, v in props.items()})
    t0 = time.monotonic()
    result = proc.run(cfg)
    elapsed = time.monotonic() - t0
    status = result.index(0)
    out = {"status": getattr(status, "value_nick", None) or str(status), "seconds": round(elapsed, 3),
           "success": status == Gimp.PDBStatusType.SUCCESS}
    if status == Gimp.PDBStatusType.SUCCESS:
        layer = result.index(1) if result.length() > 1 else None
        out["layer_id"] = layer.get_id() if layer is not None else None
    else:
        err = Gimp.get_pdb().get_last_error()
        out["error"] = err
        if result.length() > 1:
            v = result.index(1)
            if isinstance(v, str):
                out["error"] = v
    return out


def proc_info(name):
    proc = Gimp.get_pdb().lookup_procedure(name)
    if proc is None:
        return None
    args = {}
    for spec in proc.get_arguments():
        d = {"type": spec.value_type.name}
        for attr in ("default_value", "minimum", "maximum"):
            if hasattr(spec, attr):
                v = getattr(spec, attr)
                if isinstance(v, (int, float, str, bool)) or v is None:
                    d[attr] = v
        args[spec.name] = d
    return {"args": args, "menu_paths": list(proc.get_menu_paths()),
            "menu_label": proc.get_menu_label(), "image_types": proc.get_image_types(),
            "sensitivity": int(proc.get_sensitivity_mask()),
            "return_values": [s.name for s in proc.get_return_values()]}
