#!/usr/bin/env python3
"""AI Enhance for GIMP 3: Filters > AI Enhance > one entry per row of the operation table
(ai_enhance_client/ops.py: Upscale, Restore Faces, Denoise, Sharpen / Deblur, JPEG Cleanup, ...).

A thin client: pixels go to the local ai-enhance backend over ZeroMQ (started on demand), the
result comes back as a NEW layer directly above the source, masked by the selection (or by what
the model found, e.g. faces), its opacity set by `strength`.  The source layer is never written.
The whole change is one undo step.

Every GIMP call of the plug-in is in this file; rectangle and mask arithmetic live in the pure
modules ai_enhance_client/geometry.py and masks.py, what a procedure reads and how a result is
named in ai_enhance_client/filters.py, the table of operations in ai_enhance_client/ops.py.
Imports: gi, the standard library and (through ai_enhance_client) pyzmq.  numpy is not needed.
"""
from __future__ import annotations

import os
import sys
import traceback
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)
# pyzmq unpacked here by the installer for a GIMP that bundles its own Python (Windows, macOS,
# Flatpak, Snap): searched after the plug-in's own modules, before site-packages.
VENDOR = os.path.join(HERE, "vendor")
if os.path.isdir(VENDOR) and VENDOR not in sys.path:
    sys.path.insert(1, VENDOR)

import gi  # noqa: E402

gi.require_version("Gimp", "3.0")
gi.require_version("Gegl", "0.4")
from gi.repository import Gegl, Gimp, GLib, GObject  # noqa: E402

from ai_enhance_client import geometry, masks  # noqa: E402  (pure, no pyzmq)
from ai_enhance_client import ops as optable  # noqa: E402
from ai_enhance_client import recipes  # noqa: E402  (pure: the layer parasite and Save Recipe)
from ai_enhance_client.filters import (dialog_params, layer_name, model_choices, read_settings,  # noqa: E402
                                       transport)
from ai_enhance_client.params import Kind, ParamError  # noqa: E402

#: Seconds to wait for an autostarted backend before giving up (the whole run stays under 30 s).
BACKEND_START_WAIT = float(os.environ.get("AI_ENHANCE_START_WAIT", "25"))


class UserError(Exception):
    """Something the user can fix; the text is shown as is (one line with a hint)."""


# --------------------------------------------------------------------------- GIMP helpers

def _precision_component(image) -> str:
    """U8 / U16 / U32 / HALF / FLOAT / DOUBLE for the image's precision (enum-agnostic: works with
    PyGObject's int-like enums on 3.0 and Python enums on 3.2)."""
    prec = image.get_precision()
    for comp in ("U8", "U16", "U32", "HALF", "FLOAT", "DOUBLE"):
        for trc in ("LINEAR", "NON_LINEAR", "PERCEPTUAL"):
            member = getattr(Gimp.Precision, f"{comp}_{trc}", None)
            if member is not None and prec == member:
                return comp
    raise UserError(f"unsupported image precision {prec}; convert with Image > Precision first")


def _offsets(drawable) -> tuple[int, int]:
    r = drawable.get_offsets()
    if isinstance(r, tuple) and len(r) == 3:   # (ok, x, y)
        return int(r[1]), int(r[2])
    return int(r[0]), int(r[1])


def _rect(box: geometry.Box):
    return Gegl.Rectangle.new(box.x, box.y, box.width, box.height)


def _target_layer(image, drawables):
    if not drawables or len(drawables) != 1:
        raise UserError("select exactly one layer in the Layers dialog, then run the filter again")
    d = drawables[0]
    if d.is_layer_mask() or d.is_channel() or not d.is_layer():
        raise UserError("the active drawable is not a layer (a mask or channel?); click a layer's "
                        "thumbnail in the Layers dialog, then run the filter again")
    if d.is_group_layer():
        raise UserError("the active layer is a layer group; pick a pixel layer inside it "
                        "(or merge the group first)")
    if image.get_base_type() == Gimp.ImageBaseType.INDEXED or d.is_indexed():
        raise UserError("indexed images are not supported; convert with Image > Mode > RGB first")
    return d


def _progress(text: str) -> None:
    Gimp.progress_init(text)


def _make_progress_callback(title: str):
    state = {"text": None}

    def on_progress(fraction: float, text: str) -> None:
        Gimp.progress_update(max(0.0, min(1.0, float(fraction))))
        if text and text != state["text"]:
            state["text"] = text
            Gimp.progress_set_text(f"{title}: {text}")

    return on_progress


def _on_wait(text: str) -> None:
    Gimp.progress_set_text(text)
    Gimp.progress_pulse()


def _import_client():
    try:
        from ai_enhance_client import client, protocol
    except ImportError as e:  # pyzmq missing from GIMP's Python
        raise UserError(f"the plug-in cannot import pyzmq ({e}); install it for GIMP's Python "
                        "(Debian/Ubuntu: apt install python3-zmq) or re-run the installer") from None
    return client, protocol


# --------------------------------------------------------------------------- one run

class Job:
    """One filter run on one layer, from reading pixels to the finished layer."""

    def __init__(self, op, image, source):
        self.op, self.image, self.source = op, image, source
        self.settings = None        # filters.JobSettings, read from the config before run()
        self.client = None
        self.caps = None
        self.job_id = uuid.uuid4().hex   # also recorded in the result layer's parasite

    # -- backend
    def connect(self):
        client_mod, _ = _import_client()
        if self.client is None:
            self.client = client_mod.Client()
        _progress(f"{self.op.title}: connecting to the backend\u2026")
        try:
            self.caps = self.client.ensure_backend(wait=BACKEND_START_WAIT, on_wait=_on_wait)
        except client_mod.ClientError as e:
            raise UserError(str(e)) from None
        return self.caps

    def close(self):
        if self.client is not None:
            self.client.close()

    # -- the job
    def run(self):
        st = self.settings
        image, src = self.image, self.source
        gray = image.get_base_type() == Gimp.ImageBaseType.GRAY
        tr = transport(_precision_component(image), gray=gray, alpha=src.has_alpha())
        has_selection = not Gimp.Selection.is_empty(image)
        selection = None
        if has_selection:
            ok, x, y, w, h = src.mask_intersect()
            selection = geometry.Box(x, y, w, h) if ok else geometry.Box(0, 0, 0, 0)
        offsets = _offsets(src)
        try:
            plan = geometry.plan_job(layer_size=(src.get_width(), src.get_height()),
                                     layer_offsets=offsets,
                                     image_size=(image.get_width(), image.get_height()),
                                     selection=selection, scale=st.scale, margin=self.op.margin)
        except geometry.GeometryError as e:
            raise UserError(str(e)) from None

        # Pixels are read BEFORE anything changes (scale > 1 resamples the image afterwards).
        pixels = src.get_buffer().get(_rect(plan.crop), 1.0, tr.babl_format, Gegl.AbyssPolicy.CLAMP)

        client_mod, P = _import_client()
        if self.caps is None:
            self.connect()
        _progress(f"{self.op.title} ({st.model or 'automatic model'})")
        spec_in = P.ImageSpec(plan.crop.width, plan.crop.height, tr.channels, P.DType(tr.dtype))
        roi = None if plan.whole_layer else P.Rect(*plan.roi.as_tuple())
        try:
            result = self.client.enhance(
                op=self.op.name, model=st.model or None, spec=spec_in, pixels=pixels, scale=st.scale,
                tile=st.tile, roi=roi, options=st.options, post=st.post,
                on_progress=_make_progress_callback(self.op.title), job_id=self.job_id)
        except client_mod.ClientError as e:
            raise UserError(str(e)) from None
        self._check_result(plan, result, tr)
        Gimp.progress_update(1.0)

        info = result.info or {}
        faces = info.get("faces")
        if st.mask == "faces" and isinstance(faces, list) and not faces:
            # Nothing found: a layer with an all-black mask would only confuse.
            msg = info.get("message") or "no faces found in the processed area"
            Gimp.message(f"{self.op.title}: {msg}; nothing was added")
            return None
        return self._apply(plan, result, tr, has_selection)

    def _check_result(self, plan, result, tr) -> None:
        s = result.spec
        try:
            geometry.check_result_size(plan, s.width, s.height)
        except geometry.GeometryError as e:
            raise UserError(str(e)) from None
        if s.channels != tr.channels or s.dtype.value != tr.dtype:
            raise UserError(f"the backend returned {s.channels} channels {s.dtype.value}, expected "
                            f"{tr.channels} {tr.dtype}; install the plug-in and the backend from "
                            "the same release")

    def _apply(self, plan, result, tr, has_selection):
        """Everything that changes the image: one undo group, cleaned up on error."""
        image, src = self.image, self.source
        gray = image.get_base_type() == Gimp.ImageBaseType.GRAY
        st = self.settings
        source_mask = masks.choose_mask(st.mask, has_selection=has_selection,
                                        result_masks=tuple(result.masks), modes=self.op.mask_modes)
        ow, oh = plan.out_size
        new = None
        scaled = False
        image.undo_group_start()
        try:
            if plan.scale > 1:
                Gimp.context_push()
                try:
                    Gimp.context_set_interpolation(Gimp.InterpolationType.NOHALO)
                    image.scale(plan.image_size[0], plan.image_size[1])
                finally:
                    Gimp.context_pop()
                scaled = True
            # Where the source lies now (GIMP scales offsets by the same integer factor).
            sx, sy = _offsets(src)
            ox, oy = sx + plan.box.x * plan.scale, sy + plan.box.y * plan.scale

            layer_type = Gimp.ImageType.GRAYA_IMAGE if gray else Gimp.ImageType.RGBA_IMAGE
            model = (result.info or {}).get("model") or st.model
            new = Gimp.Layer.new(image, layer_name(self.op, model, plan.scale, result.info), ow, oh,
                                 layer_type, 100.0, _LAYER_MODES[self.op.layer_mode])
            image.insert_layer(new, src.get_parent(), image.get_item_position(src))
            new.set_offsets(ox, oy)
            buf = new.get_buffer()
            buf.set(Gegl.Rectangle.new(0, 0, ow, oh), tr.babl_format, result.pixels)
            buf.flush()
            new.update(0, 0, ow, oh)

            self._add_mask(new, source_mask, result, (ox, oy, ow, oh))
            new.set_opacity(masks.opacity_percent(st.strength))
            self._attach_parasite(new, source_mask, model, plan.scale)
        except Exception:
            if new is not None:
                try:
                    image.remove_layer(new)
                except Exception:  # noqa: BLE001 - cleanup must not hide the first error
                    pass
            if scaled:
                Gimp.message(f"{self.op.title}: failed after scaling the image; Edit > Undo "
                             "restores the original size")
            raise
        finally:
            image.undo_group_end()
        Gimp.displays_flush()
        return new

    def _attach_parasite(self, layer, mask_source, model, scale) -> None:
        """What made the layer (parasite `ai-enhance`, kept in .xcf): Save Recipe reads it."""
        st = self.settings
        source = recipes.read_parasite(_parasite_bytes(self.source)) or {}
        data = recipes.layer_parasite(
            op=self.op.name, model=model or "", scale=scale, strength=st.strength, mask=st.mask,
            tile=st.tile, options=st.options, post=st.post, mask_source=mask_source.value,
            backend_version=str((self.caps or {}).get("version") or ""), job_id=self.job_id,
            source_job=source.get("job-id"), source_tattoo=self.source.get_tattoo())
        layer.attach_parasite(Gimp.Parasite.new(recipes.PARASITE, Gimp.PARASITE_PERSISTENT, data))

    def _add_mask(self, new, source, result, rect) -> None:
        M = masks.MaskSource
        if source is M.SELECTION:
            mask = new.create_mask(Gimp.AddMaskType.SELECTION)
            new.add_mask(mask)
            return
        mask = new.create_mask(Gimp.AddMaskType.WHITE)
        new.add_mask(mask)
        if source is M.WHITE:
            return
        ox, oy, ow, oh = rect
        mspec, data = result.masks[self.settings.mask]
        if (mspec.width, mspec.height, mspec.channels, mspec.dtype.value) != (ow, oh, 1, "u8"):
            raise UserError(f"the backend's '{self.settings.mask}' mask is {mspec.width}x"
                            f"{mspec.height}x{mspec.channels} {mspec.dtype.value}, expected "
                            f"{ow}x{oh} u8; install the plug-in and backend from the same release")
        if source is M.RESULT_X_SELECTION:
            sel = self.image.get_selection().get_buffer().get(
                Gegl.Rectangle.new(ox, oy, ow, oh), 1.0, "Y u8", Gegl.AbyssPolicy.NONE)
            data = masks.multiply(data, sel)
        mbuf = mask.get_buffer()
        mbuf.set(Gegl.Rectangle.new(0, 0, ow, oh), "Y u8", data)
        mbuf.flush()
        mask.update(0, 0, ow, oh)


# --------------------------------------------------------------------------- dialog

def _dialog(procedure, config, op, caps) -> bool:
    """The interactive dialog: the model list comes from the backend (installed models first);
    every other control is GIMP's own for the procedure's arguments (last values remembered),
    in the order of the operation table."""
    gi.require_version("GimpUi", "3.0")
    gi.require_version("Gtk", "3.0")
    from gi.repository import GimpUi, Gtk

    GimpUi.init("ai-enhance")
    dialog = GimpUi.ProcedureDialog(procedure=procedure, config=config, title=op.title)
    others = [p.name for p in dialog_params(op)]

    current = config.get_property("model") or op.default_model
    choices = model_choices(caps, op.name, current)
    row = Gtk.Box(orientation=Gtk.Orientation.HORIZONTAL, spacing=6)
    label = Gtk.Label.new_with_mnemonic("_Model")
    combo = Gtk.ComboBoxText()
    for mid, text in choices:
        combo.append(mid, text)
    label.set_mnemonic_widget(combo)
    if not combo.set_active_id(current) and choices:
        combo.set_active(0)
    if combo.get_active_id():
        config.set_property("model", combo.get_active_id())
    combo.connect("changed", lambda c: c.get_active_id() and config.set_property("model", c.get_active_id()))
    row.pack_start(label, False, False, 0)
    row.pack_start(combo, True, True, 0)
    dialog.fill(others)
    content = dialog.get_content_area()
    content.pack_start(row, False, False, 6)
    content.reorder_child(row, 0)
    if not choices:
        hint = Gtk.Label(label="The backend lists no models: run `ai-enhance models list`.")
        content.pack_start(hint, False, False, 0)
    row.show_all()
    _test_autorespond(dialog, combo, config, choices)
    ok = dialog.run()
    dialog.destroy()
    return bool(ok)


def _test_autorespond(dialog, combo, config, choices) -> None:
    """For the end-to-end tests only (a headless GIMP has nobody to click OK): when
    AI_ENHANCE_DIALOG_AUTORESPONSE is "ok" or "cancel" (or names a file holding one of them),
    report what the dialog shows to the JSON file AI_ENHANCE_DIALOG_REPORT and answer it
    shortly after it appears."""
    answer = os.environ.get("AI_ENHANCE_DIALOG_AUTORESPONSE")
    if answer and os.path.isfile(answer):
        with open(answer) as f:
            answer = f.read().strip()
    if answer not in ("ok", "cancel"):
        return
    from gi.repository import Gtk

    def respond():
        names = [p.name for p in config.list_properties() if p.name not in ("procedure", "image", "drawables")]
        report = {"choices": [mid for mid, _ in choices], "active": combo.get_active_id(),
                  "values": {name: _jsonable(config.get_property(name)) for name in names},
                  "title": dialog.get_title()}
        path = os.environ.get("AI_ENHANCE_DIALOG_REPORT")
        if path:
            import json
            with open(path, "w") as f:
                json.dump(report, f)
        dialog.response(Gtk.ResponseType.OK if answer == "ok" else Gtk.ResponseType.CANCEL)
        return False

    GLib.timeout_add(200, respond)


def _jsonable(v):
    return v if isinstance(v, (int, float, str, bool)) or v is None else str(v)


# --------------------------------------------------------------------------- Save Recipe

SAVE_RECIPE = optable.PROC_PREFIX + "save-recipe"


def _parasite_bytes(item) -> bytes | None:
    p = item.get_parasite(recipes.PARASITE)
    return bytes(p.get_data()) if p is not None else None


def _mode_name(mode) -> str:
    for name, member in (("normal", Gimp.LayerMode.NORMAL), ("lch_color", Gimp.LayerMode.LCH_COLOR),
                         ("grain_merge", Gimp.LayerMode.GRAIN_MERGE)):
        if mode == member:
            return name
    return str(getattr(mode, "value_nick", None) or getattr(mode, "name", None) or mode)


def _layer_infos(image) -> list:
    """The image's top-level layers, bottom to top, as Save Recipe sees them."""
    out = []
    for layer in reversed(list(image.get_layers())):
        out.append(recipes.LayerInfo(
            name=layer.get_name(), parasite=_parasite_bytes(layer), opacity=layer.get_opacity(),
            visible=bool(layer.get_visible()), mode=_mode_name(layer.get_mode()),
            tattoo=layer.get_tattoo(), group=bool(layer.is_group_layer())))
    return out


def save_recipe(image, path: str) -> int:
    recipe = recipes.recipe_from_layers(_layer_infos(image),
                                        created_by=f"GIMP {Gimp.version()} AI Enhance Save Recipe")
    tmp = f"{path}.{uuid.uuid4().hex[:8]}.part"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(recipe.dumps())
        os.replace(tmp, path)
    except OSError as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise UserError(f"cannot write {path}: {e.strerror or e}; choose another folder") from None
    return len(recipe.steps)


def _save_recipe_dialog(procedure, config) -> bool:
    gi.require_version("GimpUi", "3.0")
    from gi.repository import GimpUi

    GimpUi.init("ai-enhance")
    dialog = GimpUi.ProcedureDialog(procedure=procedure, config=config, title="Save Recipe")
    dialog.fill(["file"])
    ok = dialog.run()
    dialog.destroy()
    return bool(ok)


# --------------------------------------------------------------------------- registration

def _error(procedure, message: str):
    return procedure.new_return_values(Gimp.PDBStatusType.EXECUTION_ERROR,
                                       GLib.Error(str(message)))


def _success(layer):
    return Gimp.ValueArray.new_from_values([
        GObject.Value(Gimp.PDBStatusType, Gimp.PDBStatusType.SUCCESS),
        GObject.Value(Gimp.Layer, layer),
    ])


_LAYER_MODES = {
    optable.LayerMode.NORMAL: Gimp.LayerMode.NORMAL,
    optable.LayerMode.LCH_COLOR: Gimp.LayerMode.LCH_COLOR,
    optable.LayerMode.GRAIN_MERGE: Gimp.LayerMode.GRAIN_MERGE,
}


def _add_argument(procedure, p) -> None:
    """One PDB argument from its table declaration."""
    rw = GObject.ParamFlags.READWRITE
    if p.kind is Kind.INT:
        procedure.add_int_argument(p.name, p.label, p.help, int(p.min), int(p.max), int(p.default), rw)
    elif p.kind is Kind.FLOAT:
        procedure.add_double_argument(p.name, p.label, p.help, float(p.min), float(p.max), float(p.default), rw)
    elif p.kind is Kind.BOOL:
        procedure.add_boolean_argument(p.name, p.label, p.help, bool(p.default), rw)
    elif p.kind is Kind.CHOICE:
        choice = Gimp.Choice.new()
        for i, c in enumerate(p.choices):
            choice.add(c.value, i, c.label, c.help)
        procedure.add_choice_argument(p.name, p.label, p.help, choice, p.default, rw)
    else:
        procedure.add_string_argument(p.name, p.label, p.help, p.default, rw)


class AIEnhance(Gimp.PlugIn):
    def do_query_procedures(self):
        return [op.proc_name for op in optable.menu_ops()] + [SAVE_RECIPE]

    def do_set_i18n(self, name):
        return False

    def do_create_procedure(self, name):
        if name == SAVE_RECIPE:
            return self._create_save_recipe(name)
        op = optable.BY_PROC[name]
        p = Gimp.ImageProcedure.new(self, name, Gimp.PDBProcType.PLUGIN, self.run, None)
        p.set_image_types("RGB*, GRAY*")
        p.set_sensitivity_mask(Gimp.ProcedureSensitivityMask.DRAWABLE)
        p.set_menu_label(op.menu_label)
        p.add_menu_path(optable.MENU_PATH)
        p.set_documentation(op.blurb, op.help, name)
        p.set_attribution("gimp-ai-enhance contributors", "gimp-ai-enhance contributors", "2025")
        for param in op.all_params:
            _add_argument(p, param)
        p.add_layer_return_value("layer", "Layer", "The new layer (none when nothing was added)",
                                 True, GObject.ParamFlags.READWRITE)
        return p

    def _create_save_recipe(self, name):
        p = Gimp.ImageProcedure.new(self, name, Gimp.PDBProcType.PLUGIN, self.run_save_recipe, None)
        p.set_image_types("*")
        mask = Gimp.ProcedureSensitivityMask
        p.set_sensitivity_mask(getattr(mask, "ALWAYS", mask.DRAWABLE | mask.NO_DRAWABLES | mask.DRAWABLES))
        p.set_menu_label("Save _Recipe...")
        p.add_menu_path(optable.MENU_PATH)
        p.set_documentation(
            "Save the settings of this image's AI layers as a recipe for ai-enhance batch",
            "Writes the operations, models, strengths and mask modes of the image's AI Enhance "
            "layers, bottom to top, to a JSON recipe that `ai-enhance batch --recipe FILE` applies to "
            "many files. Masks painted by hand or made from a selection do not transfer (the file "
            "says so); masks the backend computes (faces ...) do.", name)
        p.set_attribution("gimp-ai-enhance contributors", "gimp-ai-enhance contributors", "2025")
        p.add_file_argument("file", "_File", "The recipe file to write (.json)",
                            Gimp.FileChooserAction.SAVE, False, None, GObject.ParamFlags.READWRITE)
        p.add_int_return_value("steps", "Steps", "Number of steps written", 0, 10000, 0,
                               GObject.ParamFlags.READWRITE)
        return p

    def run_save_recipe(self, procedure, run_mode, image, drawables, config, run_data):
        try:
            if run_mode == Gimp.RunMode.INTERACTIVE and not _save_recipe_dialog(procedure, config):
                return procedure.new_return_values(Gimp.PDBStatusType.CANCEL, None)
            gfile = config.get_property("file")
            path = gfile.get_path() if gfile is not None else None
            if not path:
                raise UserError("choose a local file to save the recipe to")
            try:
                steps = save_recipe(image, path)
            except recipes.RecipeError as e:
                raise UserError(str(e)) from None
            return Gimp.ValueArray.new_from_values([
                GObject.Value(Gimp.PDBStatusType, Gimp.PDBStatusType.SUCCESS),
                GObject.Value(GObject.TYPE_INT, steps)])
        except UserError as e:
            return _error(procedure, f"Save Recipe: {e}")
        except Exception as e:  # noqa: BLE001 - a bug: one line, details on stderr
            traceback.print_exc()
            return _error(procedure, f"Save Recipe: internal error ({type(e).__name__}: "
                                     f"{' '.join(str(e).split())[:200]}); please report it")

    def run(self, procedure, run_mode, image, drawables, config, run_data):
        op = optable.BY_PROC[procedure.get_name()]
        job = None
        try:
            source = _target_layer(image, drawables)
            job = Job(op, image, source)
            if run_mode == Gimp.RunMode.INTERACTIVE:
                caps = job.connect()
                if not _dialog(procedure, config, op, caps):
                    return procedure.new_return_values(Gimp.PDBStatusType.CANCEL, None)
            try:
                job.settings = read_settings(op, config.get_property)
            except ParamError as e:
                raise UserError(str(e)) from None
            layer = job.run()
            return _success(layer)
        except UserError as e:
            return _error(procedure, f"{op.title}: {e}")
        except Exception as e:  # noqa: BLE001 - a bug: say so in one line, details on stderr
            traceback.print_exc()
            return _error(procedure, f"{op.title}: internal error ({type(e).__name__}: "
                                     f"{' '.join(str(e).split())[:200]}); please report it with "
                                     "GIMP's error console output")
        finally:
            try:
                Gimp.progress_end()
            except Exception:  # noqa: BLE001
                pass
            if job is not None:
                job.close()


Gimp.main(AIEnhance.__gtype__, sys.argv)
