"""Runs inside GIMP: recipes.

- composite_*: stacks of layers (Normal, Grain merge, LCh Color; opacity, masks, alpha) in 8-bit,
  16-bit, gray and alpha images; every layer's pixels and GIMP's own flattening are recorded, so
  that pytest can check ai_enhance.batch.composite against GIMP.
- stack_*: the real filters (PARAMS["runs"]) build a stack of AI layers; Save Recipe writes its
  recipe; GIMP flattens a copy.  pytest replays the recipe through the backend on the bottom layer
  and compares with the flattening.
- The parasite survives an .xcf round trip; Save Recipe refuses an image without AI layers.
"""
import json
import os

from drive_lib import *  # noqa: F403

W, H = 40, 32
SAVE = "python-fu-ai-enhance-save-recipe"
WORK = PARAMS["workdir"]

MODES = {"normal": Gimp.LayerMode.NORMAL, "grain_merge": Gimp.LayerMode.GRAIN_MERGE,
         "lch_color": Gimp.LayerMode.LCH_COLOR}


@case
def registered():
    return {"save": proc_info(SAVE)}


# --------------------------------------------------------------------------- compositing

STACKS = {
    # name: (base type, precision, base alpha, [(mode, opacity, alpha, mask)])
    "rgb_u8": ("RGB", "u8", False, [("normal", 60.0, False, True), ("grain_merge", 80.0, False, False),
                                     ("lch_color", 55.0, False, True), ("normal", 100.0, True, False),
                                     ("normal", 35.0, False, False)]),
    "rgb_u16": ("RGB", "u16", False, [("normal", 70.0, True, True), ("grain_merge", 65.0, False, True),
                                      ("lch_color", 90.0, False, False)]),
    "gray_u8": ("GRAY", "u8", False, [("normal", 45.0, False, True), ("grain_merge", 75.0, True, False),
                                      ("lch_color", 60.0, False, False)]),
    "rgba_base": ("RGB", "u8", True, [("normal", 70.0, True, True), ("grain_merge", 60.0, True, False),
                                      ("normal", 50.0, False, False)]),
}


def _fmt(base, precision, alpha):
    model = ("R'G'B'" if base == "RGB" else "Y'") + ("A" if alpha else "")
    return f"{model} {precision}"


def _nbytes(fmt):
    comps = {"R'G'B'A": 4, "R'G'B'": 3, "Y'A": 2, "Y'": 1}[fmt.split()[0]]
    return W * H * comps * (2 if fmt.endswith("u16") else 1)


def _composite_case(name):
    base, precision, base_alpha, layers = STACKS[name]

    def fn():
        img = new_image(W, H, base=base, precision=precision)
        bfmt = _fmt(base, precision, base_alpha)
        bottom = add_layer(img, "base", W, H, base=base, alpha=base_alpha, fmt=bfmt,
                           data=pattern(_nbytes(bfmt), 10))
        dumped = {"base": dump_pixels(bottom, bfmt), "layers": [], "fmt": bfmt}
        for i, (mode, opacity, alpha, with_mask) in enumerate(layers):
            fmt = _fmt(base, precision, alpha)
            layer = Gimp.Layer.new(img, f"l{i}", W, H, LAYER_TYPE[(base, alpha)], opacity, MODES[mode])
            img.insert_layer(layer, None, 0)
            set_pixels(layer, fmt, pattern(_nbytes(fmt), 20 + i))
            d = {"mode": mode, "opacity": layer.get_opacity(), "pixels": dump_pixels(layer, fmt),
                 "mode_read": str(layer.get_mode()),
                 "spaces": [str(layer.get_blend_space()), str(layer.get_composite_space()),
                            str(layer.get_composite_mode())]}
            if with_mask:
                mask = layer.create_mask(Gimp.AddMaskType.WHITE)
                layer.add_mask(mask)
                set_pixels(mask, "Y u8", pattern(W * H, 40 + i))
                d["mask"] = dump_pixels(mask, "Y float")
            dumped["layers"].append(d)
        copy = img.duplicate()
        if base_alpha:
            flat = copy.merge_visible_layers(Gimp.MergeType.CLIP_TO_IMAGE)
        else:
            flat = copy.flatten()
        rfmt = _fmt(base, precision, base_alpha)
        dumped["flat"] = dump_pixels(flat, rfmt)
        dumped["flat_has_alpha"] = flat.has_alpha()
        copy.delete()
        img.delete()
        return dumped

    fn.__name__ = f"composite_{name}"
    return fn


for _name in STACKS:
    case(_composite_case(_name))


# --------------------------------------------------------------------------- real AI layers

def _run(proc, img, layer, **props):
    r = run_proc(proc, img, [layer], **props)
    if not r["success"]:
        raise RuntimeError(f"{proc} failed: {r.get('error')}")
    return Gimp.Layer.get_by_id(r["layer_id"])


def _save(img, path):
    proc = Gimp.get_pdb().lookup_procedure(SAVE)
    cfg = proc.create_config()
    cfg.set_property("run-mode", Gimp.RunMode.NONINTERACTIVE)
    cfg.set_property("image", img)
    cfg.set_core_object_array("drawables", [])
    cfg.set_property("file", Gio.File.new_for_path(path))
    result = proc.run(cfg)
    status = result.index(0)
    out = {"success": status == Gimp.PDBStatusType.SUCCESS}
    if out["success"]:
        out["steps"] = result.index(1)
        with open(path) as f:
            out["text"] = f.read()
    else:
        out["error"] = Gimp.get_pdb().get_last_error()
    return out


def _parasites(img):
    out = []
    for layer in reversed(list(img.get_layers())):
        p = layer.get_parasite("ai-enhance")
        out.append({"name": layer.get_name(), "tattoo": layer.get_tattoo(),
                    "parasite": json.loads(bytes(p.get_data()).decode()) if p is not None else None,
                    "persistent": bool(p.get_flags() & Gimp.PARASITE_PERSISTENT) if p is not None else None})
    return out


def _stack_case(name, spec):
    """spec: {"size": [w, h], "steps": [{proc, model, props, on (-1 = base, k = k-th step's layer),
    opacity (percent, set after the run; optional)}], "extra": "hidden_plain_layer" | None}"""
    def fn():
        w, h = spec["size"]
        img = new_image(w, h)
        base = add_layer(img, "photo", w, h, fmt="R'G'B' u8", data=pattern(w * h * 3, 5))
        photo = dump_pixels(base, "R'G'B' u8")      # before a scale step enlarges it
        made = []
        for st in spec["steps"]:
            src = base if st["on"] < 0 else made[st["on"]]
            if st.get("select"):
                select_rect(img, *st["select"])
            new = _run(st["proc"], img, src, model=st["model"], **st["props"])
            if st.get("select"):
                Gimp.Selection.none(img)
            if "opacity" in st:
                new.set_opacity(st["opacity"])
            made.append(new)
        if spec.get("extra") == "hidden_plain_layer":
            extra = add_layer(img, "retouch", w, h, fmt="R'G'B' u8", data=pattern(w * h * 3, 99))
            extra.set_visible(False)
        path = os.path.join(WORK, f"{name}.recipe.json")
        saved = _save(img, path)
        copy = img.duplicate()
        flat = copy.flatten()
        out = {"saved": saved, "size": [img.get_width(), img.get_height()],
               "base": photo, "flat": dump_pixels(flat, "R'G'B' u8"),
               "parasites": _parasites(img)}
        copy.delete()
        # the parasite is persistent: it survives saving and loading the .xcf
        xcf = os.path.join(WORK, f"{name}.xcf")
        Gimp.file_save(Gimp.RunMode.NONINTERACTIVE, img, Gio.File.new_for_path(xcf), None)
        again = Gimp.file_load(Gimp.RunMode.NONINTERACTIVE, Gio.File.new_for_path(xcf))
        out["reloaded"] = _save(again, os.path.join(WORK, f"{name}.reloaded.recipe.json"))
        again.delete()
        img.delete()
        return out

    fn.__name__ = f"stack_{name}"
    return fn


for _name, _spec in PARAMS.get("stacks", {}).items():
    case(_stack_case(_name, _spec))


@case
def no_ai_layers():
    img = new_image(W, H)
    add_layer(img, "photo", W, H, fmt="R'G'B' u8", data=pattern(W * H * 3, 1))
    out = _save(img, os.path.join(WORK, "none.recipe.json"))
    out["file_exists"] = os.path.exists(os.path.join(WORK, "none.recipe.json"))
    img.delete()
    return out


finish()
