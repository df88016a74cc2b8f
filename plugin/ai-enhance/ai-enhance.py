#!/usr/bin/env python3
"""AI Enhance for GIMP 3: Filters > AI Enhance > one entry per row of the operation table
(ai_enhance_client/ops.py: AI Upscale, AI Restore Faces, AI Denoise, ...) and Models...

A thin client: pixels go to the local ai-enhance backend over ZeroMQ (started on demand), the
result comes back as a NEW layer directly above the source, masked by the selection (or by what
the model found, e.g. faces), its opacity set by `strength`.  The source layer is never written.
The whole change is one undo step.

The dialog of every filter is generated from the table: a 1:1 preview of the result (computed by
the backend for that region only), the model list (installed first, photo models first, missing
ones with their download size and a Download button: the backend fetches them), sliders with
units, the output size, an Advanced section, tooltips.  While a filter runs, a small window shows
the real progress and a Cancel button that the backend confirms.

Every GIMP call of the plug-in is in this file; rectangle and mask arithmetic live in the pure
modules ai_enhance_client/geometry.py and masks.py, what a procedure reads, how a result is named
and what the dialog shows in ai_enhance_client/filters.py and preview.py, the table of operations
in ai_enhance_client/ops.py.  Imports: gi, the standard library and (through ai_enhance_client)
pyzmq.  numpy is not needed.
"""
from __future__ import annotations

import time  # first: with AI_ENHANCE_PROFILE set, a call's phases are measured from this line

_START = (time.time(), time.perf_counter())

import os  # noqa: E402
import sys  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)
from ai_enhance_client import phases  # noqa: E402

_CLOCK = phases.from_env(_START)

import dataclasses  # noqa: E402
import json  # noqa: E402
import queue  # noqa: E402
import threading  # noqa: E402
import traceback  # noqa: E402
import uuid  # noqa: E402

_CLOCK.mark("import stdlib")
# pyzmq unpacked here by the installer for a GIMP that bundles its own Python (Windows, macOS,
# Flatpak, Snap): searched after the plug-in's own modules, before site-packages.
VENDOR = os.path.join(HERE, "vendor")
if os.path.isdir(VENDOR) and VENDOR not in sys.path:
    sys.path.insert(1, VENDOR)

import gi  # noqa: E402

gi.require_version("Gimp", "3.0")
gi.require_version("Gegl", "0.4")
from gi.repository import Gegl, Gimp, GLib, GObject  # noqa: E402

_CLOCK.mark("import gi + Gimp")

from ai_enhance_client import alpha, geometry, masks  # noqa: E402  (pure, no pyzmq)
from ai_enhance_client import ops as optable  # noqa: E402
from ai_enhance_client import preview as pv  # noqa: E402
from ai_enhance_client import recipes  # noqa: E402  (pure: the layer parasite and Save Recipe)
from ai_enhance_client.filters import (applicable, best_model, caps_models, dialog_params,  # noqa: E402
                                       explain, image_defaults, layer_name, model_rows, read_settings,
                                       result_transport, size_summary, transport)
from ai_enhance_client.filters import JobSettings  # noqa: E402
from ai_enhance_client.params import Kind, ParamError, validate  # noqa: E402

_CLOCK.mark("import plug-in modules")

#: Seconds to wait for an autostarted backend before giving up (the whole run stays under 30 s).
BACKEND_START_WAIT = float(os.environ.get("AI_ENHANCE_START_WAIT", "25"))
#: The backend drops a job of this plug-in after this many seconds without a heartbeat: GIMP's
#: status-bar Cancel kills the plug-in, and the backend must stop soon after (heartbeats go out
#: from a thread of their own every quarter of that, whatever GIMP's main loop does).
HEARTBEAT_LIMIT = float(os.environ.get("AI_ENHANCE_HEARTBEAT_LIMIT", "1.2"))
#: Milliseconds between the last change of a parameter and a new preview.
PREVIEW_DEBOUNCE_MS = 350
MODELS_PROC = optable.PROC_PREFIX + "models"


class UserError(Exception):
    """Something the user can fix; the text is shown as is (one line with a hint)."""


class Cancelled(Exception):
    """The user cancelled a run; the backend confirmed (or did not, within a few seconds)."""


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


def _parasite_bytes(item, name: str = recipes.PARASITE) -> bytes | None:
    """The bytes of an item's parasite ``name`` (default: our own "ai-enhance"), or None."""
    p = item.get_parasite(name)
    return bytes(p.get_data()) if p is not None else None


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


def _selection_box(image, src) -> geometry.Box | None:
    """The selection's bounds on the layer (layer coordinates), None without a selection."""
    if Gimp.Selection.is_empty(image):
        return None
    ok, x, y, w, h = src.mask_intersect()
    return geometry.Box(x, y, w, h) if ok else geometry.Box(0, 0, 0, 0)


def _progress(text: str) -> None:
    Gimp.progress_init(text)


def _on_wait(text: str) -> None:
    Gimp.progress_set_text(text)
    Gimp.progress_pulse()


def _import_client():
    try:
        from ai_enhance_client import client, protocol
    except ImportError as e:  # pyzmq missing from GIMP's Python
        raise UserError(f"the plug-in cannot import pyzmq ({e}); install it for GIMP's Python "
                        "(Debian/Ubuntu: apt install python3-zmq) or run the AI Enhance installer "
                        "again") from None
    return client, protocol


def _autostart_log() -> str:
    """Where an autostarted backend writes (ai_enhance_client.client.start_backend's default)."""
    import tempfile     # here: a call that goes well never needs it
    uid = os.getuid() if hasattr(os, "getuid") else 0
    return os.path.join(tempfile.gettempdir(), f"ai-enhance-serve-{uid}.log")


def _client_error(e, caps: dict | None = None) -> UserError:
    """A ClientError in a retoucher's words (what happened, what to do), the technical line kept."""
    log = (caps or {}).get("log") or (_autostart_log() if e.kind == "connection" else None)
    return UserError(explain(e.kind, str(e), log))


def human_size(n) -> str:
    from ai_enhance_client.model_plan import human_size as f     # dialogs only: not every call
    return f(n)


def install_plan(models, ids):
    from ai_enhance_client.model_plan import install_plan as f
    return f(models, ids)


def _have_display() -> bool:
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")) or os.name == "nt" \
        or sys.platform == "darwin"


def _pango():
    gi.require_version("Pango", "1.0")
    from gi.repository import Pango
    return Pango


def _ui():
    gi.require_version("GimpUi", "3.0")
    gi.require_version("Gtk", "3.0")
    gi.require_version("Gdk", "3.0")
    from gi.repository import Gdk, GimpUi, Gtk
    return GimpUi, Gtk, Gdk


# --------------------------------------------------------------------------- work off the main thread

def run_in_background(fn, on_progress, *, window=None, cancel: threading.Event | None = None):
    """``fn(should_cancel, progress)`` in a thread (its client heartbeats from there, whatever
    GIMP's main loop does); here, on the main thread, its progress reaches GIMP (PDB calls belong to
    this thread) and a progress window's Cancel reaches it.  Returns fn's value or raises its error."""
    q: queue.Queue = queue.Queue()
    out: dict = {}
    cancel = cancel or threading.Event()

    def work():
        try:
            out["value"] = fn(cancel.is_set, lambda f, t: q.put((f, t)))
        except BaseException as e:  # noqa: BLE001 - re-raised on the main thread
            out["error"] = e
        finally:
            q.put(None)

    t = threading.Thread(target=work, name="ai-enhance-job", daemon=True)
    t.start()
    while True:
        if window is not None:
            window.pump()
            if window.cancel_requested:
                cancel.set()
        try:
            item = q.get(timeout=0.05 if window is not None else 0.25)
        except queue.Empty:
            continue
        if item is None:
            break
        on_progress(*item)
        if window is not None:
            window.update(*item)
    t.join()
    if "error" in out:
        raise out["error"]
    return out["value"]


class ProgressWindow:
    """A small window beside GIMP's status bar: the phase as it is, the bar, the time left, and a
    Cancel that asks the backend to stop and waits for it to say so (GIMP's own status-bar Cancel
    kills the plug-in; the backend then stops on its own within about a second)."""

    def __init__(self, title: str):
        GimpUi, Gtk, _ = _ui()
        GimpUi.init("ai-enhance")
        self.Gtk = Gtk
        self.cancel_requested = False
        self.cancel_clicked_at: float | None = None
        self.texts: list[str] = []
        self.win = Gtk.Window(title=title)
        self.win.set_default_size(380, -1)
        self.win.set_keep_above(True)
        box = Gtk.Box(orientation=Gtk.Orientation.VERTICAL, spacing=8)
        box.set_border_width(12)
        self.label = Gtk.Label(label=f"{title}: starting\u2026", xalign=0.0)
        self.label.set_ellipsize(_pango().EllipsizeMode.END)
        self.bar = Gtk.ProgressBar()
        self.button = Gtk.Button.new_with_mnemonic("_Cancel")
        self.button.set_tooltip_text("Stop the filter: the engine stops within a second or two "
                                     "and nothing is added to the image")
        self.button.connect("clicked", self._on_cancel)
        self.win.connect("delete-event", lambda *a: self._on_cancel() or True)
        row = Gtk.Box(orientation=Gtk.Orientation.HORIZONTAL)
        row.pack_end(self.button, False, False, 0)
        for w in (self.label, self.bar, row):
            box.pack_start(w, False, False, 0)
        self.win.add(box)
        self.win.show_all()
        self.title = title
        self.pump()

    def _on_cancel(self, *_a):
        if not self.cancel_requested:
            self.cancel_requested = True
            self.cancel_clicked_at = time.time()
            self.button.set_sensitive(False)
            self.label.set_text(f"{self.title}: cancelling\u2026")

    def update(self, fraction: float, text: str) -> None:
        if self.cancel_requested:
            return
        self.bar.set_fraction(max(0.0, min(1.0, fraction)))
        if text:
            self.label.set_text(f"{self.title}: {text}")
            if not self.texts or self.texts[-1] != text:
                self.texts.append(text)
        _TestHook.on_progress(self, fraction, text)

    def pump(self) -> None:
        Gtk = self.Gtk
        n = 0
        while Gtk.events_pending() and n < 100:
            Gtk.main_iteration_do(False)
            n += 1

    def show_cancelled(self, confirmed: bool, seconds: float = 0.6) -> None:
        """Say it, briefly, where the retoucher looked: the window (and the status bar)."""
        self.label.set_text(f"{self.title}: cancelled" + (", the engine stopped; nothing was added"
                                                         if confirmed else "; nothing was added"))
        self.bar.set_fraction(0.0)
        t0 = time.monotonic()
        while time.monotonic() - t0 < seconds:
            self.pump()
            time.sleep(0.03)

    def close(self) -> None:
        self.win.destroy()
        self.pump()


# --------------------------------------------------------------------------- one run

class Job:
    """One filter run on one layer, from reading pixels to the finished layer."""

    def __init__(self, op, image, source):
        self.op, self.image, self.source = op, image, source
        self.settings = None        # filters.JobSettings, read from the config before run()
        self.client = None
        self.caps = None
        self.window: ProgressWindow | None = None
        self.job_id = uuid.uuid4().hex   # also recorded in the result layer's parasite
        self.reuse: str | None = None    # Re-tune: the raw output the backend may still hold
        self.replaces = None             # Re-tune: the layer the new result takes the place of
        #: Refresh the displays when done.  Not in a non-interactive run: its script flushes once
        #: when it is done (GIMP's own plug-ins flush only when run interactively), and GIMP's
        #: work after each flush costs ~0.2 s for a 12 MP layer.
        self.flush_displays = True

    # -- backend
    def connect(self):
        client_mod, _ = _import_client()
        if self.client is None:
            self.client = client_mod.Client(heartbeat=HEARTBEAT_LIMIT)
        _progress(f"{self.op.title}: connecting to the AI Enhance engine\u2026")
        try:
            self.caps = self.client.ensure_backend(wait=BACKEND_START_WAIT, on_wait=_on_wait)
        except client_mod.ClientError as e:
            raise _client_error(e) from None
        return self.caps

    def close(self):
        if self.window is not None:
            self.window.close()
            self.window = None
        if self.client is not None:
            self.client.close()

    def _short_name(self, model: str) -> str:
        m = next((m for m in caps_models(self.caps) if m["id"] == model), None)
        return (m or {}).get("short") or model

    # -- the job
    def run(self):
        st = self.settings
        image, src = self.image, self.source
        gray = image.get_base_type() == Gimp.ImageBaseType.GRAY
        tr = transport(_precision_component(image), gray=gray, alpha=src.has_alpha())
        selection = _selection_box(image, src)
        has_selection = selection is not None
        offsets = _offsets(src)
        try:
            plan = geometry.plan_job(layer_size=(src.get_width(), src.get_height()),
                                     layer_offsets=offsets,
                                     image_size=(image.get_width(), image.get_height()),
                                     selection=selection, scale=st.scale, margin=self.op.margin)
        except geometry.GeometryError as e:
            raise UserError(str(e)) from None

        _CLOCK.mark("layer facts + plan")
        # Pixels are read BEFORE anything changes (scale > 1 resamples the image afterwards).
        pixels = src.get_buffer().get(_rect(plan.crop), 1.0, tr.babl_format, Gegl.AbyssPolicy.CLAMP)
        mask_input = self._mask_input(plan, has_selection) if "mask" in self.op.inputs else None
        _CLOCK.mark("read pixels")

        client_mod, P = _import_client()
        _CLOCK.mark("import client (pyzmq)")
        if self.caps is None:
            self.connect()
        _CLOCK.mark("connect + ping")
        title = self.op.title
        _progress(f"{title}: sending the pixels\u2026")
        spec_in = P.ImageSpec(plan.crop.width, plan.crop.height, tr.channels, P.DType(tr.dtype))
        roi = None if plan.whole_layer else P.Rect(*plan.roi.as_tuple())
        state = {"text": None}

        def to_gimp(fraction: float, text: str) -> None:
            Gimp.progress_update(max(0.0, min(1.0, float(fraction))))
            if text and text != state["text"]:
                state["text"] = text
                Gimp.progress_set_text(f"{title}: {text}")

        def call(should_cancel, progress):
            return self.client.enhance(
                op=self.op.name, model=st.model or None, spec=spec_in, pixels=pixels, scale=st.scale,
                tile=st.tile, roi=roi, options=st.options, post=st.post, on_progress=progress,
                should_cancel=should_cancel, job_id=self.job_id, reuse=self.reuse,
                mask=None if mask_input is None else (P.ImageSpec(plan.crop.width, plan.crop.height, 1,
                                                                  P.DType.U8), mask_input))

        try:
            result = run_in_background(call, to_gimp, window=self.window)
        except client_mod.ClientError as e:
            if e.kind == P.ErrorKind.CANCELLED.value:
                Gimp.progress_set_text(f"{title}: cancelled; nothing was added")
                Gimp.progress_update(0.0)
                if self.window is not None:
                    self.window.show_cancelled(bool(e.confirmed))
                _TestHook.cancelled(self.window, e)
                raise Cancelled(str(e)) from None
            raise _client_error(e, self.caps) from None
        _CLOCK.mark("enhance: send, backend, receive")
        rtr = result_transport(self.op, _precision_component(image), gray=gray, alpha=src.has_alpha())
        self._check_result(plan, result, rtr)
        Gimp.progress_update(1.0)

        info = result.info or {}
        faces = info.get("faces")
        if st.mask == "faces" and isinstance(faces, list) and not faces:
            # Nothing found: a layer with an all-black mask would only confuse.
            msg = info.get("message") or "no faces found in the processed area"
            Gimp.message(f"{title}: {msg}; nothing was added")
            return None
        if self.window is not None:
            self.window.update(1.0, "adding the layer")
        if self.op.result is optable.ResultKind.CHANNEL:
            return self._apply_channel(plan, result, has_selection)
        return self._apply(plan, result, rtr, has_selection)

    def _check_result(self, plan, result, tr) -> None:
        s = result.spec
        if s is None:               # a masks-only operation (Find Damage): the masks are checked on use
            if self.op.result is not optable.ResultKind.CHANNEL:
                raise UserError("the backend returned no image; install the plug-in and the backend "
                                "from the same release")
            return
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
        st = self.settings
        source_mask = masks.choose_mask(st.mask, has_selection=has_selection,
                                        result_masks=tuple(result.masks), modes=self.op.mask_modes)
        ow, oh = plan.out_size
        added = []
        scaled = False
        image.undo_group_start()
        try:
            if plan.scale > 1:
                Gimp.progress_set_text(f"{self.op.title}: enlarging the image \u00d7{plan.scale} "
                                       "(so every layer stays aligned)")
                Gimp.context_push()
                try:
                    Gimp.context_set_interpolation(Gimp.InterpolationType.NOHALO)
                    image.scale(plan.image_size[0], plan.image_size[1])
                finally:
                    Gimp.context_pop()
                scaled = True
            if self.op.needs_rgb and image.get_base_type() == Gimp.ImageBaseType.GRAY:
                image.convert_rgb()          # a colour layer needs an RGB image (same undo step)
            # GIMP's own scaling drove the bar; the job is done: say so, at 100 %
            Gimp.progress_set_text(f"{self.op.title}: adding the layer")
            Gimp.progress_update(1.0)
            # Where the source lies now (GIMP scales offsets by the same integer factor).
            sx, sy = _offsets(src)
            rect = (sx + plan.box.x * plan.scale, sy + plan.box.y * plan.scale, ow, oh)
            gray = image.get_base_type() == Gimp.ImageBaseType.GRAY
            model = (result.info or {}).get("model") or st.model
            name = layer_name(self.op, model, plan.scale, result.info, self._short_name(model))
            parent, position = self._place()
            _CLOCK.mark("undo group start, name, place")
            if self.op.result is optable.ResultKind.GROUP:
                top = self._add_group(result, tr, rect, gray, has_selection, parent, position, added)
            else:
                top = self._layer(name, result.pixels, tr, rect, gray, self.op.layer_mode, parent, position)
                added.append(top)
                self._add_mask(top, source_mask, result, rect)
                top.set_opacity(masks.opacity_percent(st.strength))
                _CLOCK.mark("mask + opacity")
                self._attach_parasite(top, source_mask, model, plan.scale, plan.crop.as_tuple(),
                                      plan.roi.as_tuple(), result)
                self._extra_layers(top, source_mask, result, tr, rect, gray, added)
                _CLOCK.mark("parasite + extra layers")
            if self.replaces is not None:
                self._remove_replaced()
        except Exception:
            for layer in reversed(added):
                try:
                    image.remove_layer(layer)
                except Exception:  # noqa: BLE001 - cleanup must not hide the first error
                    pass
            if scaled:
                Gimp.message(f"{self.op.title}: failed after scaling the image; Edit > Undo "
                             "restores the original size")
            raise
        finally:
            image.undo_group_end()
        if self.flush_displays:
            Gimp.displays_flush()
        _CLOCK.mark("undo group end + flush")
        return top

    def retune(self, old, par: dict):
        """Re-tune: the same job as ``old`` was made by (parasite ``par``) with this job's settings
        (post-processing, mask, strength): the backend reuses its raw output when it still holds it,
        else runs the model again on the same pixels; the result takes ``old``'s place."""
        st, image, src = self.settings, self.image, self.source
        s = int(par.get("scale") or 1)
        crop, roi = par.get("crop") or [], par.get("roi") or []
        if len(crop) != 4 or len(roi) != 4:
            raise UserError("this layer was made by an older AI Enhance that did not record what it "
                            "processed; run the filter again instead")
        gray = image.get_base_type() == Gimp.ImageBaseType.GRAY
        tr = transport(_precision_component(image), gray=gray and not self.op.needs_rgb, alpha=src.has_alpha())
        # the pixels sent then: the crop at the size the layer had (GEGL shrinks a since-enlarged one)
        pixels = src.get_buffer().get(Gegl.Rectangle.new(*crop), 1.0 / s, tr.babl_format, Gegl.AbyssPolicy.CLAMP)
        mask_input = None
        if "mask" in self.op.inputs:        # the layer's own mask is the selection it was made with
            m = old.get_mask()
            if m is None:
                raise UserError("the layer has no mask to re-tune its fill with; run Inpaint again")
            mask_input = bytes(m.get_buffer().get(Gegl.Rectangle.new(0, 0, old.get_width(), old.get_height()),
                                                  1.0 / s, "Y u8", Gegl.AbyssPolicy.NONE))
            mask_input = _pad_mask(mask_input, roi, crop)
        _CLOCK.mark("read pixels")
        client_mod, P = _import_client()
        if self.caps is None:
            self.connect()
        _CLOCK.mark("import client, connect + ping")
        spec_in = P.ImageSpec(crop[2], crop[3], tr.channels, P.DType(tr.dtype))
        title = self.op.title

        def call(should_cancel, progress):
            return self.client.enhance(
                op=self.op.name, model=st.model or None, spec=spec_in, pixels=pixels, scale=s, tile=st.tile,
                roi=P.Rect(*roi), options=st.options, post=st.post, on_progress=progress,
                should_cancel=should_cancel, job_id=self.job_id, reuse=self.reuse,
                mask=None if mask_input is None else (P.ImageSpec(crop[2], crop[3], 1, P.DType.U8), mask_input))

        def to_gimp(fraction: float, text: str) -> None:
            Gimp.progress_update(max(0.0, min(1.0, float(fraction))))
            if text:
                Gimp.progress_set_text(f"Re-tune {title}: {text}")

        try:
            result = run_in_background(call, to_gimp, window=self.window)
        except client_mod.ClientError as e:
            raise _client_error(e, self.caps) from None
        _CLOCK.mark("enhance: send, backend, receive")
        ox, oy = _offsets(old)
        rect = (ox, oy, old.get_width(), old.get_height())
        if (result.spec.width, result.spec.height) != rect[2:]:
            raise UserError(f"the backend returned {result.spec.width}x{result.spec.height} for a "
                            f"{rect[2]}x{rect[3]} layer; run the filter again instead")
        has_selection = not Gimp.Selection.is_empty(image)
        source_mask = masks.choose_mask(st.mask, has_selection=has_selection, result_masks=tuple(result.masks),
                                        modes=self.op.mask_modes)
        model = (result.info or {}).get("model") or st.model
        added = []
        image.undo_group_start()
        try:
            parent, position = self._place()
            name = layer_name(self.op, model, s, result.info, self._short_name(model))
            top = self._layer(name, result.pixels, tr, rect, gray, self.op.layer_mode, parent, position)
            added.append(top)
            self._add_mask(top, source_mask, result, rect)
            top.set_opacity(masks.opacity_percent(st.strength))
            self._attach_parasite(top, source_mask, model, s, crop, roi, result)
            self._extra_layers(top, source_mask, result, tr, rect, gray, added)
            self._remove_replaced()
        except Exception:
            for layer in reversed(added):
                try:
                    image.remove_layer(layer)
                except Exception:  # noqa: BLE001
                    pass
            raise
        finally:
            image.undo_group_end()
        if self.flush_displays:
            Gimp.displays_flush()
        info = result.info or {}
        how = ("without running the model" if info.get("reused") else
               "the model ran again: its earlier result was no longer in the engine's memory")
        Gimp.progress_set_text(f"Re-tune {title}: done, {how}")
        return top, info

    def _place(self):
        """(parent, position) for the new layer: directly above the source, or where the layer a
        Re-tune replaces lies."""
        anchor = self.replaces if self.replaces is not None else self.source
        return anchor.get_parent(), self.image.get_item_position(anchor)

    def _layer(self, name, pixels, tr, rect, gray, mode, parent, position):
        """A new layer (always with an alpha channel) holding ``pixels`` in transport ``tr``."""
        ox, oy, ow, oh = rect
        # an opaque alpha added here where babl would spend ~0.4 s finding the conversion (alpha.py)
        pixels, fmt = alpha.for_layer(pixels, tr.babl_format, layer_gray=gray)
        if fmt != tr.babl_format:
            _CLOCK.mark("add alpha")
        layer_type = Gimp.ImageType.GRAYA_IMAGE if gray else Gimp.ImageType.RGBA_IMAGE
        layer = Gimp.Layer.new(self.image, name, ow, oh, layer_type, 100.0, _LAYER_MODES[mode])
        self.image.insert_layer(layer, parent, position)
        layer.set_offsets(ox, oy)
        _CLOCK.mark("new layer")
        buf = layer.get_buffer()
        buf.set(Gegl.Rectangle.new(0, 0, ow, oh), fmt, pixels)
        buf.flush()
        _CLOCK.mark("write pixels")
        layer.update(0, 0, ow, oh)
        return layer

    def _extra_layers(self, top, source_mask, result, tr, rect, gray, added) -> None:
        """The post-processing's own layers above the result: "AI grain" (Grain merge, opacity =
        the grain dial, the result's mask) and, when asked, the hidden "AI changes" map."""
        st = self.settings
        grain = float(st.post.get("grain") or 0.0)
        if grain > 0 and "grain" in result.layers:
            spec, data = result.layers["grain"]
            g = self._layer(f"AI grain \u00b7 {self.op.title[3:]}", data, tr, rect, gray,
                            optable.LayerMode.GRAIN_MERGE, top.get_parent(), self.image.get_item_position(top))
            added.append(g)
            self._add_mask(g, source_mask, result, rect)
            g.set_opacity(masks.opacity_percent(grain))
            self._tag_companion(g)
        if st.show_changes and "change-map" in result.masks:
            spec, data = result.masks["change-map"]
            ctr = transport("U8", gray=True, alpha=False)
            c = self._layer("AI changes", data, ctr, rect, gray, optable.LayerMode.NORMAL,
                            top.get_parent(), self.image.get_item_position(added[-1]))   # on top
            c.set_visible(False)
            self._tag_companion(c)
            added.append(c)

    def _tag_companion(self, layer) -> None:
        """Mark a layer as belonging to this result (Re-tune replaces it together with the result)."""
        layer.attach_parasite(Gimp.Parasite.new(COMPANION_PARASITE, Gimp.PARASITE_PERSISTENT,
                                                self.job_id.encode()))

    def _remove_replaced(self) -> None:
        """Re-tune: the layer it replaces goes, with its grain and change-map layers."""
        old = self.replaces
        job = (recipes.read_parasite(_parasite_bytes(old)) or {}).get("job-id", "")
        parent = old.get_parent()
        siblings = parent.get_children() if parent is not None else self.image.get_layers()
        for layer in siblings:
            if job and _parasite_bytes(layer, COMPANION_PARASITE) == job.encode():
                self.image.remove_layer(layer)
        self.image.remove_layer(old)

    def _add_group(self, result, tr, rect, gray, has_selection, parent, position, added):
        """Restore Old Photo: a layer group with one masked layer per step, bottom to top."""
        info = result.info or {}
        group = Gimp.GroupLayer.new(self.image, self.op.title)
        self.image.insert_layer(group, parent, position)
        added.append(group)
        for step in info.get("steps", []):
            spec, data = result.layers[step["layer"]]
            name = f"AI {step['step'].capitalize()} \u00b7 {self._short_name(step['model'])}"
            layer = self._layer(name, data, tr, rect, gray, optable.LayerMode(step.get("mode", "normal")),
                                group, 0)
            mask_mode = step.get("mask") if step.get("mask") in result.masks else "selection"
            source = masks.choose_mask(mask_mode, has_selection=has_selection, result_masks=tuple(result.masks),
                                       modes=(mask_mode, "selection", "full"))
            self._add_mask(layer, source, result, rect, mask_name=mask_mode)
        skipped = info.get("skipped") or []
        if skipped:
            Gimp.message(f"{self.op.title}: skipped {'; '.join(skipped)}")
        return group

    def _apply_channel(self, plan, result, has_selection):
        """Find Damage: the mask becomes the channel "AI damage" and the selection (within the
        selection there was), in one undo step; nothing else changes."""
        image, src = self.image, self.source
        name = self.op.result_masks[0]
        mspec, data = result.masks[name]
        ox, oy = _offsets(src)
        ox, oy = ox + plan.box.x, oy + plan.box.y
        w, h = mspec.width, mspec.height
        if has_selection:
            sel = image.get_selection().get_buffer().get(Gegl.Rectangle.new(ox, oy, w, h), 1.0, "Y u8",
                                                         Gegl.AbyssPolicy.NONE)
            data = masks.multiply(data, sel)
        image.undo_group_start()
        try:
            channel = Gimp.Channel.new(image, f"AI {name}", image.get_width(), image.get_height(), 50.0,
                                       Gegl.Color.new("red"))
            image.insert_channel(channel, None, 0)
            buf = channel.get_buffer()
            buf.set(Gegl.Rectangle.new(ox, oy, w, h), "Y u8", data)
            buf.flush()
            channel.update(ox, oy, w, h)
            image.select_item(Gimp.ChannelOps.REPLACE, channel)
        finally:
            image.undo_group_end()
        if self.flush_displays:
            Gimp.displays_flush()
        msg = (result.info or {}).get("message")
        if msg:
            Gimp.progress_set_text(f"{self.op.title}: {msg}")
        return None

    def _mask_input(self, plan, has_selection) -> bytes:
        """The "mask" input (Inpaint): the selection over the pixels sent, one byte per pixel."""
        if not has_selection:
            raise UserError("select the pixels to fill first (Select > ..., or Filters > AI Enhance > "
                            "AI Find Damage, which selects scratches and dust), then run it again")
        ox, oy = _offsets(self.source)
        c = plan.crop
        return bytes(self.image.get_selection().get_buffer().get(
            Gegl.Rectangle.new(ox + c.x, oy + c.y, c.width, c.height), 1.0, "Y u8", Gegl.AbyssPolicy.NONE))

    def _attach_parasite(self, layer, mask_source, model, scale, crop, roi, result) -> None:
        """What made the layer (parasite `ai-enhance`, kept in .xcf): Save Recipe and Re-tune
        read it."""
        st = self.settings
        source = recipes.read_parasite(_parasite_bytes(self.source)) or {}
        data = recipes.layer_parasite(
            op=self.op.name, model=model or "", scale=scale, strength=st.strength, mask=st.mask,
            tile=st.tile, options=st.options, post=st.post,
            mask_source=mask_source.value,
            backend_version=str((self.caps or {}).get("version") or ""), job_id=self.job_id,
            source_job=source.get("job-id"), source_tattoo=self.source.get_tattoo(),
            raw_key=str((result.info or {}).get("raw_key") or ""), crop=crop, roi=roi)
        layer.attach_parasite(Gimp.Parasite.new(recipes.PARASITE, Gimp.PARASITE_PERSISTENT, data))

    def _add_mask(self, new, source, result, rect, mask_name: str | None = None) -> None:
        M = masks.MaskSource
        mask_name = mask_name or self.settings.mask
        if source is M.SELECTION:
            mask = new.create_mask(Gimp.AddMaskType.SELECTION)
            new.add_mask(mask)
            return
        mask = new.create_mask(Gimp.AddMaskType.WHITE)
        new.add_mask(mask)
        if source is M.WHITE:
            return
        ox, oy, ow, oh = rect
        mspec, data = result.masks[mask_name]
        if (mspec.width, mspec.height, mspec.channels, mspec.dtype.value) != (ow, oh, 1, "u8"):
            raise UserError(f"the backend's '{mask_name}' mask is {mspec.width}x"
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


# --------------------------------------------------------------------------- the preview

class Preview:
    """A 1:1 view of the result (``pv.VIEW`` square of result pixels) at a movable place: drag it
    to look elsewhere.  Each change of a parameter that changes the result asks the backend again
    (debounced; the request in flight is cancelled); strength only re-blends.  Result, Original,
    or Split shows both."""

    def __init__(self, dlg: "FilterDialog"):
        GimpUi, Gtk, Gdk = _ui()
        self.dlg, self.Gtk, self.Gdk = dlg, Gtk, Gdk
        self.op, self.src = dlg.op, dlg.src
        self.layer_size = (self.src.get_width(), self.src.get_height())
        self.center = pv.default_center(self.layer_size, dlg.selection, self._thumb())
        self.gen = 0
        self.cancel: threading.Event | None = None
        self.timer = None
        self.region: pv.Region | None = None
        self.before: bytes | None = None     # original pixels of the region, enlarged to the result size
        self.after: bytes | None = None      # the model's result there (RGB u8)
        self.mask: bytes | None = None       # its result mask (faces), one byte per pixel
        self.mode = "result"
        self.state = "idle"                  # idle | computing | shown | error | off
        self.last_seconds: float | None = None
        self.shown_count = 0
        self.drag = None

        self.area = GimpUi.PreviewArea()
        self.area.set_size_request(pv.VIEW, pv.VIEW)
        self.area.add_events(Gdk.EventMask.BUTTON_PRESS_MASK | Gdk.EventMask.BUTTON_RELEASE_MASK
                             | Gdk.EventMask.POINTER_MOTION_MASK)
        self.area.connect("button-press-event", self._press)
        self.area.connect("motion-notify-event", self._motion)
        self.area.connect("button-release-event", self._release)
        # GimpPreviewArea keeps its pixels in a buffer made at allocation: draw again then
        self.area.connect("size-allocate", lambda *_a: self.draw())
        self.area.set_tooltip_text("The result at 100 %, computed by the engine for this part of the "
                                   "layer only. Drag to look elsewhere.")
        frame = Gtk.Frame()
        frame.set_shadow_type(Gtk.ShadowType.IN)
        frame.set_halign(Gtk.Align.CENTER)
        frame.add(self.area)
        self.toggle = Gtk.CheckButton.new_with_mnemonic("_Preview")
        self.toggle.set_active(True)
        self.toggle.set_tooltip_text("Compute a preview when a setting changes")
        self.toggle.connect("toggled", lambda b: self.request(now=True) if b.get_active() else self._off())
        modes = Gtk.Box(orientation=Gtk.Orientation.HORIZONTAL, spacing=4)
        self.mode_buttons = {}
        group = None
        for key, text, tip in (("result", "Result", "Show the result as the new layer will look"),
                               ("original", "Original", "Show the original pixels (enlarged 1:1 "
                                                        "like the result)"),
                               ("split", "Split", "Original on the left, result on the right")):
            b = Gtk.RadioButton.new_with_label_from_widget(group, text)
            group = group or b
            b.set_mode(False)
            b.set_tooltip_text(tip)
            b.connect("toggled", self._mode_toggled, key)
            modes.pack_start(b, False, False, 0)
            self.mode_buttons[key] = b
        self.status = Gtk.Label(label="", xalign=0.0)
        self.status.set_line_wrap(True)
        self.status.set_max_width_chars(36)
        top = Gtk.Box(orientation=Gtk.Orientation.HORIZONTAL, spacing=6)
        top.pack_start(self.toggle, False, False, 0)
        top.pack_end(modes, False, False, 0)
        self.widget = Gtk.Box(orientation=Gtk.Orientation.VERTICAL, spacing=4)
        self.widget.pack_start(frame, False, False, 0)
        self.widget.pack_start(top, False, False, 0)
        self.widget.pack_start(self.status, False, False, 0)

    # -- where
    def _thumb(self):
        """A small gray version of the layer, to find its most detailed area."""
        lw, lh = self.layer_size
        s = min(1.0, 96.0 / max(lw, lh))
        tw, th = max(1, int(lw * s)), max(1, int(lh * s))
        try:
            data = self.src.get_buffer().get(Gegl.Rectangle.new(0, 0, tw, th), s, "Y' u8",
                                             Gegl.AbyssPolicy.CLAMP)
            return bytes(data), tw, th
        except Exception:  # noqa: BLE001 - only a starting place
            return None

    def _press(self, _w, ev):
        self.drag = (ev.x, ev.y, self.center)
        return True

    def _motion(self, _w, ev):
        if self.drag is None:
            return False
        x0, y0, c0 = self.drag
        self.center = pv.pan(c0, (ev.x - x0, ev.y - y0), self._scale())
        self._show_original_here()
        return True

    def _release(self, _w, ev):
        if self.drag is not None:
            self._motion(_w, ev)
            self.drag = None
            self.request()
        return True

    def _scale(self) -> int:
        try:
            return int(self.dlg.config.get_property("scale")) if self.op.param("scale") else 1
        except Exception:  # noqa: BLE001
            return 1

    def _read_region(self, region: pv.Region) -> tuple[bytes, bytes]:
        """(crop pixels to send, the region's original enlarged to the result size), RGB u8."""
        crop = bytes(self.src.get_buffer().get(_rect(region.crop), 1.0, "R'G'B' u8", Gegl.AbyssPolicy.CLAMP))
        b = region.roi
        stride = region.crop.width * 3
        rows = [crop[(b.y + y) * stride + b.x * 3:(b.y + y) * stride + (b.x + b.width) * 3] for y in range(b.height)]
        return crop, pv.enlarge(b"".join(rows), b.width, b.height, region.scale)

    def _read_selection(self, region: pv.Region) -> bytes:
        """The selection over the crop sent (Inpaint's mask input), one byte per pixel."""
        ox, oy = _offsets(self.src)
        c = region.crop
        return bytes(self.dlg.image.get_selection().get_buffer().get(
            Gegl.Rectangle.new(ox + c.x, oy + c.y, c.width, c.height), 1.0, "Y u8", Gegl.AbyssPolicy.NONE))

    def _show_original_here(self):
        region = pv.region(self.layer_size, self.center, self._scale(), margin=self.op.margin)
        _, before = self._read_region(region)
        self.region, self.before, self.after, self.mask = region, before, None, None
        self.draw()

    # -- what
    def _mode_toggled(self, button, key):
        if button.get_active():
            self.mode = key
            self.draw()

    def composed(self) -> bytes | None:
        if self.before is None:
            return None
        if self.after is None or self.mode == "original":
            return self.before
        try:
            strength = float(self.dlg.config.get_property("strength"))
        except Exception:  # noqa: BLE001 - an op without strength
            strength = 1.0
        mask = self.mask if self.dlg.current_mask() == "faces" else None
        shown = pv.blend(self.before, self.after, strength, mask)
        if self.mode == "split":
            w, h = self.region.out_size
            shown = pv.split(self.before, shown, w, h, w // 2)
        return shown

    def draw(self):
        data = self.composed()
        alloc = self.area.get_allocation()
        aw, ah = max(pv.VIEW, alloc.width), max(pv.VIEW, alloc.height)
        self.area.fill(0, 0, aw, ah, 128, 128, 128)
        if data is not None and self.region is not None:
            w, h = self.region.out_size        # smaller than the view only for a small layer
            self.area.draw((aw - w) // 2, (ah - h) // 2, w, h, Gimp.ImageType.RGB_IMAGE, data, w * 3)
        self.area.queue_draw()

    # -- when
    def _off(self):
        self._cancel_inflight()
        self.state = "off"
        self.status.set_text("")

    def _cancel_inflight(self):
        if self.cancel is not None:
            self.cancel.set()
            self.cancel = None
        if self.timer is not None:
            GLib.source_remove(self.timer)
            self.timer = None

    def request(self, now: bool = False):
        """Ask for a new preview after a short quiet time (now: at once)."""
        if not self.toggle.get_active():
            return
        if self.timer is not None:
            GLib.source_remove(self.timer)
        self.timer = GLib.timeout_add(1 if now else PREVIEW_DEBOUNCE_MS, self._start)

    def _start(self):
        self.timer = None
        row = self.dlg.current_row()
        if self.dlg.has_model and (row is None or not row.installed):
            self._cancel_inflight()
            self.state = "idle"
            self._show_original_here()
            self.status.set_text("The preview needs the model: download it first.")
            return False
        try:
            st = read_settings(self.op, self.dlg.config.get_property)
        except ParamError as e:
            self.status.set_text(str(e))
            return False
        region = pv.region(self.layer_size, self.center, st.scale, margin=self.op.margin)
        crop, before = self._read_region(region)
        self.region, self.before, self.after, self.mask = region, before, None, None
        self.draw()
        mask_input = None
        if "mask" in self.op.inputs:             # Inpaint fills the selection
            if self.dlg.selection is None:
                self._cancel_inflight()
                self.state = "idle"
                self.status.set_text("Select what to fill first: the preview then shows it filled.")
                return False
            mask_input = self._read_selection(region)
        if self.cancel is not None:
            self.cancel.set()            # the request in flight is no longer wanted
        self.gen += 1
        gen, cancel = self.gen, threading.Event()
        self.cancel = cancel
        self.state = "computing"
        self.status.set_text("Computing the preview\u2026")
        t0 = time.monotonic()
        endpoint = self.dlg.endpoint

        def work():
            client_mod, P = _import_client()
            c = client_mod.Client(endpoint, heartbeat=HEARTBEAT_LIMIT)
            try:
                mask = None if mask_input is None else (
                    P.ImageSpec(region.crop.width, region.crop.height, 1, P.DType.U8), mask_input)
                res = c.enhance(op=self.op.name, model=st.model or None,
                                spec=P.ImageSpec(region.crop.width, region.crop.height, 3, P.DType.U8),
                                pixels=crop, scale=st.scale, tile=st.tile, mask=mask,
                                roi=P.Rect(*region.roi.as_tuple()), options=st.options, post=st.post,
                                on_progress=lambda f, t: GLib.idle_add(self._progress, gen, f, t),
                                should_cancel=cancel.is_set)
                GLib.idle_add(self._done, gen, res, time.monotonic() - t0, None)
            except Exception as e:  # noqa: BLE001 - shown in the status line
                GLib.idle_add(self._done, gen, None, time.monotonic() - t0, e)
            finally:
                c.close()

        threading.Thread(target=work, name="ai-enhance-preview", daemon=True).start()
        return False

    def _progress(self, gen, fraction, text):
        if gen == self.gen and self.state == "computing":
            self.status.set_text(f"Computing the preview\u2026 {int(fraction * 100)} %"
                                 + (f" ({text})" if text else ""))
        return False

    def _done(self, gen, res, seconds, err):
        if gen != self.gen:
            return False                 # an older request: its answer is not wanted
        self.cancel = None
        if err is not None:
            kind = getattr(err, "kind", "internal")
            if kind == "cancelled":
                return False
            self.state = "error"
            self.status.set_text(explain(kind, str(err), (self.dlg.caps or {}).get("log")))
            return False
        w, h = self.region.out_size
        try:
            self.after, self.mask = self._shown_result(res, w, h)
        except ValueError:
            self.state = "error"
            self.status.set_text("The engine sent a preview of another size; install the plug-in and "
                                 "the engine from the same release.")
            return False
        self.state = "shown"
        self.last_seconds = seconds
        self.shown_count += 1
        note = ""
        if isinstance((res.info or {}).get("faces"), list) and not res.info["faces"]:
            note = " No face in this part: drag to a face."
        self.status.set_text(f"Preview: {w} \u00d7 {h} px at 100 %, {seconds:.1f} s.{note}")
        self.draw()
        _TestHook.preview_shown(self)
        return False

    def _shown_result(self, res, w: int, h: int) -> tuple[bytes, bytes | None]:
        """(what the result looks like over the original in this region, the faces mask): a layer
        as it is (a colour-mode layer over the tones), a mask result (Find Damage) tinted over the
        original, a layer group (Restore Old Photo) as its steps stacked through their masks."""
        def image(spec, data):
            if spec is None or (spec.width, spec.height) != (w, h) or spec.channels != 3:
                raise ValueError("size")
            return data

        def mask_of(name):
            m = res.masks.get(name)
            if m is None:
                return None
            if (m[0].width, m[0].height) != (w, h):
                raise ValueError("size")
            return m[1]

        kind = self.op.result
        if kind is optable.ResultKind.CHANNEL:
            found = mask_of(self.op.result_masks[0])
            if found is None:
                raise ValueError("no mask")
            return pv.overlay(self.before, found), None
        if kind is optable.ResultKind.GROUP:
            steps = []
            for st in (res.info or {}).get("steps", []):
                spec, data = res.layers[st["layer"]]
                steps.append((image(spec, data), mask_of(st.get("mask") or ""), st.get("mode", "normal")))
            return pv.stack(self.before, steps), None
        after = image(res.spec, res.pixels)
        if self.op.layer_mode is not optable.LayerMode.NORMAL:
            after = pv.color_mode(self.before, after)
        return after, mask_of("faces")

    def close(self):
        self._cancel_inflight()
        self.gen += 1


# --------------------------------------------------------------------------- the dialog

class FilterDialog:
    """The dialog of one filter, generated from its table row."""

    def __init__(self, procedure, config, op, image, src, caps, endpoint: str):
        GimpUi, Gtk, Gdk = _ui()
        self.Gtk, self.GimpUi = Gtk, GimpUi
        self.procedure, self.config, self.op = procedure, config, op
        self.image, self.src, self.caps, self.endpoint = image, src, caps, endpoint
        self.selection = _selection_box(image, src)
        if self.selection is not None and self.selection.empty:
            self.selection = None
        GimpUi.init("ai-enhance")
        self.dialog = GimpUi.ProcedureDialog(procedure=procedure, config=config, title=op.title)
        self.widgets: dict = {}
        self.download_cancel: threading.Event | None = None
        self.downloading = False
        self.rows = []
        self._build()

    # -- building
    def _param_widget(self, p):
        d = self.dialog
        if p.kind in (Kind.FLOAT, Kind.INT) and p.name != "tile-size":
            w = d.get_scale_entry(p.name, 100.0 if p.percent else 1.0)
            if p.kind is Kind.FLOAT and not p.percent:
                w.set_digits(2)
            if p.unit and p.unit not in ("\u00d7",):
                lab = w.get_label()
                lab.set_text_with_mnemonic(f"{p.label} ({p.unit})")
        else:
            w = d.get_widget(p.name, GObject.TYPE_NONE)
        w.set_tooltip_text(p.help)
        self.widgets[p.name] = w
        return w

    def _tile_row(self):
        """Tile size: "Automatic" (0) or a number of pixels."""
        Gtk = self.Gtk
        p = self.op.param("tile-size")
        box = Gtk.Box(orientation=Gtk.Orientation.HORIZONTAL, spacing=6)
        label = Gtk.Label.new_with_mnemonic(p.label)
        auto = Gtk.CheckButton(label="Automatic")
        adj = Gtk.Adjustment(value=512, lower=32, upper=int(p.max), step_increment=32, page_increment=128)
        spin = Gtk.SpinButton(adjustment=adj, digits=0)
        label.set_mnemonic_widget(spin)
        unit = Gtk.Label(label="px")
        current = int(self.config.get_property("tile-size"))
        auto.set_active(current == 0)
        if current:
            spin.set_value(current)
        spin.set_sensitive(current != 0)

        def sync(*_a):
            spin.set_sensitive(not auto.get_active())
            self.config.set_property("tile-size", 0 if auto.get_active() else int(spin.get_value()))
        auto.connect("toggled", sync)
        spin.connect("value-changed", sync)
        for w in (box, label, auto, spin):
            w.set_tooltip_text(p.help + ". Automatic picks it from the free memory and, on a "
                               "processor, from the time a tile takes")
        box.pack_start(label, False, False, 0)
        box.pack_start(auto, False, False, 0)
        box.pack_start(spin, False, False, 0)
        box.pack_start(unit, False, False, 0)
        self.widgets["tile-size"] = box
        self.tile_auto, self.tile_spin = auto, spin
        return box

    def _build(self):
        Gtk, op = self.Gtk, self.op
        params = dialog_params(op)
        basic = [p for p in params if not p.advanced and p.name != "tile-size"]
        advanced = [p for p in params if p.advanced and p.name != "tile-size"]

        # the model row
        mrow = Gtk.Box(orientation=Gtk.Orientation.HORIZONTAL, spacing=6)
        mlabel = Gtk.Label.new_with_mnemonic("_Model")
        self.store = Gtk.ListStore(str, str, bool)       # id, label, selectable
        self.combo = Gtk.ComboBox.new_with_model(self.store)
        cell = Gtk.CellRendererText()
        cell.set_property("ellipsize", _pango().EllipsizeMode.END)
        self.combo.pack_start(cell, True)
        self.combo.add_attribute(cell, "markup", 1)
        self.combo.add_attribute(cell, "sensitive", 2)
        self.combo.set_id_column(0)
        self.has_model = op.param("model") is not None      # Restore Old Photo picks per step
        if self.has_model:
            self.combo.set_tooltip_text(op.param("model").help.split(";")[0] + ". Installed models "
                                        "first; the others can be downloaded here")
        mlabel.set_mnemonic_widget(self.combo)
        mrow.pack_start(mlabel, False, False, 0)
        mrow.pack_start(self.combo, True, True, 0)

        # what is missing, and the download
        self.dl_box = Gtk.Box(orientation=Gtk.Orientation.VERTICAL, spacing=4)
        self.dl_label = Gtk.Label(label="", xalign=0.0)
        self.dl_label.set_line_wrap(True)
        self.dl_label.set_max_width_chars(44)
        self.dl_button = Gtk.Button.new_with_mnemonic("Do_wnload")
        self.dl_button.set_tooltip_text("The AI Enhance engine downloads the model from its official "
                                        "release (verified, resumable); then the filter can run")
        self.dl_button.connect("clicked", self._download_clicked)
        self.dl_bar = Gtk.ProgressBar()
        self.dl_bar.set_show_text(True)
        self.dl_bar.set_no_show_all(True)
        brow = Gtk.Box(orientation=Gtk.Orientation.HORIZONTAL, spacing=6)
        brow.pack_start(self.dl_button, False, False, 0)
        brow.pack_start(self.dl_bar, True, True, 0)
        self.dl_box.pack_start(self.dl_label, False, False, 0)
        self.dl_box.pack_start(brow, False, False, 0)
        self.dl_box.set_no_show_all(True)

        controls = Gtk.Box(orientation=Gtk.Orientation.VERTICAL, spacing=6)
        if self.has_model:
            controls.pack_start(mrow, False, False, 0)
        controls.pack_start(self.dl_box, False, False, 0)
        for p in basic:
            controls.pack_start(self._param_widget(p), False, False, 0)

        # what will happen
        self.summary = Gtk.Label(label="", xalign=0.0)
        self.area_label = Gtk.Label(label="", xalign=0.0)
        for w in (self.summary, self.area_label):
            w.get_style_context().add_class("dim-label")
            controls.pack_start(w, False, False, 0)

        if advanced or op.tile:
            exp = Gtk.Expander.new_with_mnemonic("Ad_vanced")
            exp.set_tooltip_text("Settings that rarely need a change")
            inner = Gtk.Box(orientation=Gtk.Orientation.VERTICAL, spacing=6)
            inner.set_margin_start(12)
            if op.tile:
                inner.pack_start(self._tile_row(), False, False, 0)
            for p in advanced:
                inner.pack_start(self._param_widget(p), False, False, 0)
            exp.add(inner)
            controls.pack_start(exp, False, False, 0)
            self.expander = exp
        else:
            self.expander = None

        self.preview = Preview(self)
        main = Gtk.Box(orientation=Gtk.Orientation.HORIZONTAL, spacing=12)
        main.set_border_width(6)
        main.pack_start(self.preview.widget, False, False, 0)
        main.pack_start(controls, True, True, 0)
        self.dialog.get_content_area().pack_start(main, True, True, 0)
        main.show_all()
        self.dl_box.hide()

        self._replace_help_button()
        if self.has_model:
            self._fill_models(self.config.get_property("model") or op.default_model)
        self.combo.connect("changed", self._model_changed)
        self.config.connect("notify", self._config_changed)
        self._update_summary()
        self.preview._show_original_here()
        self._model_changed(self.combo)

    def _replace_help_button(self):
        """GIMP's Help button looks for the GIMP manual; ours opens this filter's own page."""
        Gtk = self.Gtk
        theirs = self.dialog.get_widget_for_response(Gtk.ResponseType.HELP)
        mine = Gtk.Button.new_with_mnemonic("_Help")
        mine.set_tooltip_text("Open the page of this filter (installed with the plug-in)")
        mine.connect("clicked", lambda b: open_help(self.op, self.dialog))
        if theirs is not None and theirs.get_parent() is not None:
            parent = theirs.get_parent()
            theirs.set_no_show_all(True)
            theirs.hide()
            parent.add(mine)
            try:
                parent.set_child_secondary(mine, True)
                parent.reorder_child(mine, 0)
            except Exception:  # noqa: BLE001 - not a button box: any place is fine
                pass
        else:
            self.dialog.get_content_area().pack_end(mine, False, False, 0)
        mine.show()
        self.help_button = mine

    # -- models
    def _fill_models(self, current: str):
        self.rows = model_rows(self.caps, self.op, current)
        chosen = best_model(self.rows, current)
        self.store.clear()
        installed = [r for r in self.rows if r.installed]
        missing = [r for r in self.rows if not r.installed]
        if installed and missing:
            self.store.append(["", "<b>Installed</b>", False])
        for r in installed:
            self.store.append([r.id, GLib.markup_escape_text(r.label), True])
        if missing:
            self.store.append(["", "<b>Available to download</b>", False])
        for r in missing:
            self.store.append([r.id, GLib.markup_escape_text(r.label), True])
        if chosen:
            self.combo.set_active_id(chosen)
            self.config.set_property("model", chosen)

    def current_row(self):
        mid = self.combo.get_active_id()
        return next((r for r in self.rows if r.id == mid), None)

    def current_mask(self) -> str:
        try:
            return str(self.config.get_property("mask"))
        except Exception:  # noqa: BLE001
            return ""

    def _model_changed(self, combo):
        row = self.current_row()
        if row is None:
            if not self.has_model:
                self.preview.request()
            return
        if self.config.get_property("model") != row.id:
            self.config.set_property("model", row.id)
        for p in self.op.params:       # e.g. the CodeFormer weight: only for CodeFormer
            w = self.widgets.get(p.name)
            if w is not None and p.applies_to:
                w.set_visible(p.name in applicable(self.op, row))
        self._update_download(row)
        if not row.installed:
            self.preview.status.set_text("The preview needs the model: download it first.")
        self.preview.request()

    def _update_download(self, row):
        Gtk = self.Gtk
        ok = row.installed and not self.downloading
        self.dialog.set_response_sensitive(Gtk.ResponseType.OK, ok)
        if row.installed and not self.downloading:
            self.dl_box.hide()
            return
        if not self.downloading:
            anything = any(r.installed for r in self.rows)
            size = human_size(row.download) if row.download else None
            name = row.label.split(" \u2014 ")[0]
            lead = ("" if anything else f"No model for {self.op.title} is installed yet. ")
            self.dl_label.set_text(lead + f"{name} is not installed: download it to use it"
                                   + ("" if anything else " with this filter") + ".")
            self.dl_button.set_label(f"Do_wnload ({size})" if size else "Do_wnload")
            self.dl_button.set_use_underline(True)
            can = bool(row.download) or bool(install_plan(caps_models(self.caps), [row.id]).ids)
            self.dl_button.set_sensitive(can)
            if not can:
                self.dl_label.set_text(f"{name} cannot be downloaded from "
                                       "GIMP (no verified download in the catalogue): copy its file "
                                       "into the models folder.")
        self.dl_box.set_no_show_all(False)
        self.dl_box.show_all()
        if not self.downloading:
            self.dl_bar.hide()

    def _download_clicked(self, _b):
        if self.downloading:
            if self.download_cancel is not None:
                self.download_cancel.set()
            return
        row = self.current_row()
        if row is None or row.installed:
            return
        self.download(row.id)

    def download(self, mid: str):
        """The backend downloads ``mid`` (with what it needs); the bar shows its progress."""
        self.downloading = True
        self.download_cancel = cancel = threading.Event()
        self.dl_button.set_label("_Cancel download")
        self.dl_button.set_use_underline(True)
        self.dl_bar.set_no_show_all(False)
        self.dl_bar.show()
        self.dl_bar.set_fraction(0.0)
        self.dl_bar.set_text("starting\u2026")
        self.dialog.set_response_sensitive(self.Gtk.ResponseType.OK, False)
        endpoint = self.endpoint

        def work():
            client_mod, _ = _import_client()
            c = client_mod.Client(endpoint, heartbeat=HEARTBEAT_LIMIT)
            try:
                info = c.install_models([mid], on_progress=lambda f, t: GLib.idle_add(self._dl_progress, f, t),
                                        should_cancel=cancel.is_set)
                caps = c.ping(timeout=5.0)
                GLib.idle_add(self._dl_done, mid, info, caps, None)
            except Exception as e:  # noqa: BLE001 - shown in the dialog
                GLib.idle_add(self._dl_done, mid, None, None, e)
            finally:
                c.close()

        threading.Thread(target=work, name="ai-enhance-download", daemon=True).start()

    def _dl_progress(self, fraction, text):
        if self.downloading:
            self.dl_bar.set_fraction(max(0.0, min(1.0, fraction)))
            self.dl_bar.set_text(text or f"{int(fraction * 100)} %")
        return False

    def _dl_done(self, mid, info, caps, err):
        self.downloading = False
        self.download_cancel = None
        self.dl_bar.hide()
        if err is None and caps is not None:
            self.caps = caps
            self._fill_models(mid)
            _TestHook.downloaded(self, mid, info)
        elif err is not None:
            kind = getattr(err, "kind", "internal")
            text = "Download cancelled; it resumes where it stopped next time." if kind == "cancelled" \
                else explain(kind, str(err), (self.caps or {}).get("log"))
            _TestHook.downloaded(self, mid, None, text)
            self._model_changed(self.combo)
            self.dl_label.set_text(text)
            return False
        self._model_changed(self.combo)
        return False

    # -- parameters
    def _config_changed(self, _config, pspec):
        name = pspec.name
        if name in ("strength", "mask"):
            self.preview.draw()                  # only the blend changes
        elif name == "scale":
            self._update_summary()
            self.preview.request()
        elif name not in ("tile-size",):
            self.preview.request()

    def _update_summary(self):
        sel = self.selection
        area = (sel.width, sel.height) if sel is not None else (self.src.get_width(), self.src.get_height())
        scale = self.preview._scale() if hasattr(self, "preview") else 1
        out, where = size_summary(self.op, image_size=(self.image.get_width(), self.image.get_height()),
                                  area=area, selection=sel is not None, scale=scale)
        self.summary.set_text(out)
        self.area_label.set_text(where)

    # -- running
    def run(self) -> bool:
        _TestHook.attach(self)
        ok = bool(self.dialog.run())
        self.preview.close()
        if self.download_cancel is not None:
            self.download_cancel.set()
        self.dialog.destroy()
        return ok


def open_help(op, parent=None) -> str:
    """Open the local page of ``op`` (help/<name>.html beside the plug-in) in the browser."""
    path = os.path.join(HERE, "help", f"{op.name}.html")
    uri = GLib.filename_to_uri(path, None)
    log = os.environ.get("AI_ENHANCE_HELP_LOG")
    if log:                                # tests: record instead of launching a browser
        with open(log, "a") as f:
            f.write(uri + "\n")
        return uri
    try:
        from gi.repository import Gio
        Gio.AppInfo.launch_default_for_uri(uri, None)
    except Exception as e:  # noqa: BLE001 - no browser: say where the page is
        Gimp.message(f"{op.title}: could not open a browser ({e}); the help page is {path}")
    return uri


# --------------------------------------------------------------------------- the models manager

class ModelsDialog:
    """Filters > AI Enhance > Models...: every model, what it is for, installed or its size;
    Download and Remove (the backend does both, with progress here)."""

    COLS = ("id", "name", "for", "status", "size")

    def __init__(self, caps, endpoint: str):
        GimpUi, Gtk, _ = _ui()
        GimpUi.init("ai-enhance")
        self.Gtk, self.caps, self.endpoint = Gtk, caps, endpoint
        self.busy = False
        self.cancel: threading.Event | None = None
        self.dialog = GimpUi.Dialog(title="AI Enhance Models", role="ai-enhance-models")
        self.dialog.add_button("_Close", Gtk.ResponseType.CLOSE)
        self.dialog.set_default_size(640, 420)
        self.store = Gtk.ListStore(str, str, str, str, str)
        self.view = Gtk.TreeView(model=self.store)
        for i, title in enumerate(("Model", "For", "Status", "Size")):
            col = Gtk.TreeViewColumn(title, Gtk.CellRendererText(), text=i + 1)
            col.set_resizable(True)
            self.view.append_column(col)
        self.view.get_selection().connect("changed", lambda s: self._sync_buttons())
        scroll = Gtk.ScrolledWindow()
        scroll.set_policy(Gtk.PolicyType.NEVER, Gtk.PolicyType.AUTOMATIC)
        scroll.set_min_content_height(260)
        scroll.add(self.view)
        self.install_b = Gtk.Button.new_with_mnemonic("_Download")
        self.install_b.set_tooltip_text("The engine downloads the model (verified, resumable)")
        self.remove_b = Gtk.Button.new_with_mnemonic("_Remove")
        self.remove_b.set_tooltip_text("Delete the model's file (and support files no other model needs)")
        self.install_b.connect("clicked", lambda b: self._act("install"))
        self.remove_b.connect("clicked", lambda b: self._act("remove"))
        self.bar = Gtk.ProgressBar()
        self.bar.set_show_text(True)
        self.bar.set_text("")
        self.status = Gtk.Label(label="", xalign=0.0)
        self.status.set_line_wrap(True)
        row = Gtk.Box(orientation=Gtk.Orientation.HORIZONTAL, spacing=6)
        row.pack_start(self.install_b, False, False, 0)
        row.pack_start(self.remove_b, False, False, 0)
        row.pack_start(self.bar, True, True, 0)
        box = Gtk.Box(orientation=Gtk.Orientation.VERTICAL, spacing=6)
        box.set_border_width(8)
        for w, expand in ((scroll, True), (row, False), (self.status, False)):
            box.pack_start(w, expand, expand, 0)
        self.dialog.get_content_area().pack_start(box, True, True, 0)
        box.show_all()
        self.refill()

    def refill(self, keep: str | None = None):
        self.store.clear()
        models = [m for m in caps_models(self.caps) if not m.get("role")]
        models.sort(key=lambda m: (not m.get("installed"), m.get("kind") == "illustration", m.get("name", m["id"])))
        all_models = caps_models(self.caps)
        for m in models:
            status = "installed" if m.get("installed") else "not installed"
            size = m.get("file_size") if m.get("installed") else install_plan(all_models, [m["id"]]).bytes
            self.store.append([m["id"], m.get("name") or m["id"], ", ".join(_op_titles(m.get("ops"))),
                               status, human_size(size) if size else "\u2014"])
        self.status.set_text(f"Models folder: {self._folder()}")
        if keep:
            for i, r in enumerate(self.store):
                if r[0] == keep:
                    self.view.get_selection().select_path(Gtk_path(i))
        self._sync_buttons()

    def _folder(self) -> str:
        paths = [m.get("path") for m in caps_models(self.caps) if m.get("path")]
        return os.path.dirname(paths[0]) if paths else "?"

    def selected(self) -> str | None:
        model, it = self.view.get_selection().get_selected()
        return model[it][0] if it is not None else None

    def _sync_buttons(self):
        mid = self.selected()
        m = next((m for m in caps_models(self.caps) if m["id"] == mid), None)
        if self.busy:
            self.install_b.set_sensitive(True)
            self.install_b.set_label("_Cancel")
            self.remove_b.set_sensitive(False)
            return
        self.install_b.set_label("_Download")
        self.install_b.set_sensitive(bool(m) and not m.get("installed")
                                     and bool(install_plan(caps_models(self.caps), [mid]).ids))
        self.remove_b.set_sensitive(bool(m) and bool(m.get("installed")) and not m.get("builtin"))

    def _act(self, action: str, mid: str | None = None):
        if self.busy:
            if self.cancel is not None:
                self.cancel.set()
            return
        mid = mid or self.selected()
        if not mid:
            return
        self.busy = True
        self.cancel = cancel = threading.Event()
        self._sync_buttons()
        self.bar.set_fraction(0.0)
        self.bar.set_text("starting\u2026")
        endpoint = self.endpoint

        def work():
            client_mod, _ = _import_client()
            c = client_mod.Client(endpoint, heartbeat=HEARTBEAT_LIMIT)
            try:
                if action == "install":
                    info = c.install_models([mid], should_cancel=cancel.is_set,
                                            on_progress=lambda f, t: GLib.idle_add(self._progress, f, t))
                else:
                    info = c.remove_models([mid])
                GLib.idle_add(self._done, mid, info, c.ping(timeout=5.0), None)
            except Exception as e:  # noqa: BLE001
                GLib.idle_add(self._done, mid, None, None, e)
            finally:
                c.close()

        threading.Thread(target=work, name="ai-enhance-models", daemon=True).start()

    def _progress(self, fraction, text):
        self.bar.set_fraction(max(0.0, min(1.0, fraction)))
        self.bar.set_text(text or "")
        return False

    def _done(self, mid, info, caps, err):
        self.busy = False
        self.cancel = None
        if err is None:
            self.caps = caps or self.caps
            done = info.get("installed") or info.get("removed") or []
            self.bar.set_fraction(1.0)
            self.bar.set_text(("installed " if info.get("installed") else "removed ") + ", ".join(done)
                              if done else "nothing to do")
            self.refill(mid)
        else:
            kind = getattr(err, "kind", "internal")
            self.bar.set_text("cancelled" if kind == "cancelled" else "failed")
            self.status.set_text("Cancelled; the download resumes where it stopped next time."
                                 if kind == "cancelled" else explain(kind, str(err), (self.caps or {}).get("log")))
            self._sync_buttons()
        _TestHook.models_done(self, mid, info, err)
        return False

    def run(self):
        self.dialog.show()
        _TestHook.attach_models(self)
        while True:
            r = self.dialog.run()
            if r in (self.Gtk.ResponseType.CLOSE, self.Gtk.ResponseType.DELETE_EVENT, self.Gtk.ResponseType.NONE) \
                    or not self.busy:
                break
        if self.cancel is not None:
            self.cancel.set()
        self.dialog.destroy()


def Gtk_path(i: int):
    _, Gtk, _ = _ui()
    return Gtk.TreePath.new_from_indices([i])


def _op_titles(ops) -> list[str]:
    return [optable.BY_NAME[o].title.replace("AI ", "", 1) for o in ops or [] if o in optable.BY_NAME and
            optable.BY_NAME[o].menu]


# --------------------------------------------------------------------------- test hooks

class _TestHook:
    """For the end-to-end tests only (a headless GIMP has nobody to click): everything here is
    inert unless its environment variable is set.

    AI_ENHANCE_DIALOG_AUTORESPONSE  "ok" / "cancel" (or a file holding it): report what the dialog
                                    shows to AI_ENHANCE_DIALOG_REPORT and answer shortly after.
    AI_ENHANCE_DIALOG_SCRIPT        a JSON file: a list of steps (wait for the preview, toggle it,
                                    pick a model, download, screenshot, report, answer).
    AI_ENHANCE_PROGRESS_CANCEL      "tile:SECONDS" (or a file holding it): click the progress
                                    window's Cancel that long after the first "tile" progress;
                                    AI_ENHANCE_PROGRESS_REPORT gets the times.
    AI_ENHANCE_SHOT_DIR             where screenshots are written.
    """

    dialog: FilterDialog | None = None
    events: dict = {}
    report: dict = {}

    @classmethod
    def _report_path(cls):
        return os.environ.get("AI_ENHANCE_DIALOG_REPORT")

    @classmethod
    def _write(cls):
        path = cls._report_path()
        if path:
            with open(path, "w") as f:
                json.dump(cls.report, f)

    @classmethod
    def state(cls, dlg: FilterDialog) -> dict:
        Gtk = dlg.Gtk
        cfg = dlg.config
        names = [p.name for p in cfg.list_properties() if p.name not in ("procedure", "image", "drawables")]
        ok = dlg.dialog.get_widget_for_response(Gtk.ResponseType.OK)
        pvw = dlg.preview
        return {"choices": [r.id for r in dlg.rows], "labels": {r.id: r.label for r in dlg.rows},
                "installed": [r.id for r in dlg.rows if r.installed],
                "active": dlg.combo.get_active_id(),
                "values": {n: _jsonable(cfg.get_property(n)) for n in names},
                "title": dlg.dialog.get_title(), "ok_sensitive": bool(ok and ok.get_sensitive()),
                "download_visible": dlg.dl_box.get_visible(), "download_label": dlg.dl_button.get_label(),
                "download_text": dlg.dl_label.get_text(),
                "visible": {n: bool(w.get_visible()) for n, w in dlg.widgets.items()},
                "tooltips": {n: w.get_tooltip_text() for n, w in dlg.widgets.items()},
                "strength_widget": _value_of(dlg.widgets.get("strength")),
                "summary": dlg.summary.get_text(), "area": dlg.area_label.get_text(),
                "tile_auto": dlg.tile_auto.get_active() if hasattr(dlg, "tile_auto") else None,
                "advanced": bool(dlg.expander is not None),
                "preview": {"state": pvw.state, "seconds": pvw.last_seconds, "shown": pvw.shown_count,
                            "mode": pvw.mode, "status": pvw.status.get_text(),
                            "region": list(pvw.region.box.as_tuple()) if pvw.region else None,
                            "center": list(pvw.center),
                            "digest": _digest(pvw.composed())},
                "help_button": dlg.help_button.get_label()}

    @classmethod
    def dialog_shown(cls, dialog, config, names) -> None:
        """A plain procedure dialog (Re-tune): report its values, answer it."""
        answer = os.environ.get("AI_ENHANCE_DIALOG_AUTORESPONSE")
        if answer and os.path.isfile(answer):
            with open(answer) as f:
                answer = f.read().strip()
        if answer not in ("ok", "cancel"):
            return
        from gi.repository import Gtk

        def respond():
            cls.report.update({"title": dialog.get_title(), "fields": list(names),
                               "values": {n: _jsonable(config.get_property(n)) for n in names}})
            cls._write()
            dialog.response(Gtk.ResponseType.OK if answer == "ok" else Gtk.ResponseType.CANCEL)
            return False
        GLib.timeout_add(200, respond)

    @classmethod
    def attach(cls, dlg: FilterDialog) -> None:
        cls.dialog = dlg
        answer = os.environ.get("AI_ENHANCE_DIALOG_AUTORESPONSE")
        if answer and os.path.isfile(answer):
            with open(answer) as f:
                answer = f.read().strip()
        script = os.environ.get("AI_ENHANCE_DIALOG_SCRIPT")
        steps = None
        if script and os.path.isfile(script):
            with open(script) as f:
                steps = json.load(f).get(dlg.op.name)
        if steps is None and answer in ("ok", "cancel"):
            steps = [{"do": "report"}, {"do": "respond", "answer": answer}]
            GLib.timeout_add(200, lambda: cls._run_steps(dlg, steps, {}) and False)
        elif steps is not None:
            GLib.timeout_add(200, lambda: cls._run_steps(dlg, list(steps), {}) and False)

    @classmethod
    def _run_steps(cls, dlg, steps, ctx):
        """One step at a time; a waiting step re-arms itself until its condition or timeout."""
        Gtk = dlg.Gtk
        while steps:
            st = steps[0]
            do = st["do"]
            now = time.monotonic()
            if do.startswith("wait"):
                start = ctx.setdefault("wait_start", now)
                if do == "wait_preview":
                    done = dlg.preview.shown_count >= st.get("count", 1) and dlg.preview.state == "shown"
                elif do == "wait_downloaded":
                    done = "downloaded" in cls.events
                elif do == "wait_models":
                    done = "models_done" in cls.events
                else:
                    done = now - start >= st.get("seconds", 0)
                if not done and now - start < st.get("timeout", 60):
                    GLib.timeout_add(100, lambda: cls._run_steps(dlg, steps, ctx) and False)
                    return
                cls.report.setdefault("waits", []).append({"step": do, "done": done,
                                                           "seconds": round(now - start, 3)})
                ctx.pop("wait_start", None)
            elif do == "report":
                cls.report.update(cls.state(dlg))
                cls.report.setdefault("snapshots", []).append(cls.state(dlg))
            elif do == "mode":
                dlg.preview.mode_buttons[st["mode"]].set_active(True)
            elif do == "set":
                dlg.config.set_property(st["prop"], st["value"])
            elif do == "model":
                dlg.combo.set_active_id(st["id"])
            elif do == "download":
                dlg._download_clicked(None)
            elif do == "drag":
                c0 = dlg.preview.center
                dlg.preview.center = pv.pan(c0, tuple(st["by"]), dlg.preview._scale())
                dlg.preview.request(now=True)
            elif do == "help":
                dlg.help_button.clicked()
            elif do == "expand":
                if dlg.expander is not None:
                    dlg.expander.set_expanded(True)
            elif do == "shot":
                GLib.timeout_add(300, lambda: cls._shot_then(dlg, st["name"], steps[1:], ctx) and False)
                return
            elif do == "respond":
                cls._write()
                dlg.dialog.response(Gtk.ResponseType.OK if st["answer"] == "ok" else Gtk.ResponseType.CANCEL)
                return
            steps.pop(0)
        cls._write()

    @classmethod
    def _shot_then(cls, dlg, name, rest, ctx):
        shoot(dlg.dialog, name)
        cls._run_steps(dlg, rest, ctx)

    @classmethod
    def preview_shown(cls, preview) -> None:
        cls.events["preview"] = time.monotonic()

    @classmethod
    def downloaded(cls, dlg, mid, info, error: str | None = None) -> None:
        cls.events["downloaded"] = {"id": mid, "info": info, "error": error}
        cls.report["download"] = cls.events["downloaded"]

    @classmethod
    def on_progress(cls, window, fraction, text) -> None:
        spec = os.environ.get("AI_ENHANCE_PROGRESS_CANCEL")
        if spec and os.path.isfile(spec):
            with open(spec) as f:
                spec = f.read().strip()
        if not spec or window.cancel_requested or "cancel_armed" in cls.events:
            return
        when, _, delay = spec.partition(":")
        if text.startswith(when):
            cls.events["cancel_armed"] = True

            def click():
                window.button.clicked()
                return False
            GLib.timeout_add(int(float(delay or 0) * 1000), click)

    @classmethod
    def cancelled(cls, window, err) -> None:
        path = os.environ.get("AI_ENHANCE_PROGRESS_REPORT")
        if path:
            with open(path, "w") as f:
                json.dump({"clicked_at": getattr(window, "cancel_clicked_at", None), "confirmed": err.confirmed,
                           "confirm_s": err.seconds, "returned_at": time.time(),
                           "texts": getattr(window, "texts", [])}, f)

    @classmethod
    def attach_models(cls, dlg: ModelsDialog) -> None:
        script = os.environ.get("AI_ENHANCE_DIALOG_SCRIPT")
        if not script or not os.path.isfile(script):
            return
        with open(script) as f:
            steps = list(json.load(f).get("models") or [])

        def go():
            while steps:
                st = steps.pop(0)
                if st["do"] == "shot":
                    GLib.timeout_add(300, lambda: (shoot(dlg.dialog, st["name"]), go()) and False)
                    return False
                if st["do"] in ("install", "remove"):
                    dlg._act(st["do"], st["id"])
                    cls.events.pop("models_done", None)
                    GLib.timeout_add(100, wait)
                    return False
                if st["do"] == "select":
                    for i, r in enumerate(dlg.store):
                        if r[0] == st["id"]:
                            dlg.view.get_selection().select_path(Gtk_path(i))
                if st["do"] == "report":
                    cls.report["models"] = [list(r) for r in dlg.store]
                    cls._write()
                if st["do"] == "close":
                    cls._write()
                    dlg.dialog.response(dlg.Gtk.ResponseType.CLOSE)
                    return False
            return False

        def wait():
            if "models_done" in cls.events:
                go()
                return False
            return True

        GLib.timeout_add(200, go)

    @classmethod
    def models_done(cls, dlg, mid, info, err) -> None:
        cls.events["models_done"] = True
        cls.report.setdefault("models_actions", []).append(
            {"id": mid, "info": info, "error": None if err is None else str(err)})


def shoot(window, name: str) -> str | None:
    """A PNG of ``window`` (the docs' screenshots) into AI_ENHANCE_SHOT_DIR."""
    folder = os.environ.get("AI_ENHANCE_SHOT_DIR")
    if not folder:
        return None
    _, Gtk, Gdk = _ui()
    while Gtk.events_pending():
        Gtk.main_iteration_do(False)
    win = window.get_window()
    pb = Gdk.pixbuf_get_from_window(win, 0, 0, win.get_width(), win.get_height())
    path = os.path.join(folder, name)
    pb.savev(path, "png", ["compression"], ["9"])
    return path


def _digest(data) -> str | None:
    if data is None:
        return None
    import hashlib
    return hashlib.sha256(bytes(data)).hexdigest()[:16]


def _value_of(w):
    try:
        return w.get_value() if w is not None else None
    except Exception:  # noqa: BLE001
        return None


def _jsonable(v):
    return v if isinstance(v, (int, float, str, bool)) or v is None else str(v)


# --------------------------------------------------------------------------- Save Recipe

SAVE_RECIPE = optable.PROC_PREFIX + "save-recipe"
RETUNE = optable.PROC_PREFIX + "retune"
#: On the grain and change-map layers of a result: its job id (Re-tune replaces them together).
COMPANION_PARASITE = "ai-enhance-companion"


def _layer_by_tattoo(image, tattoo):
    if not isinstance(tattoo, int):
        return None
    try:
        return image.get_layer_by_tattoo(tattoo)
    except Exception:  # noqa: BLE001 - an older GIMP or no such layer
        return None


def _retune_dialog(procedure, config, op) -> bool:
    """Re-tune's dialog: strength, mask and the dials this layer's operation has."""
    GimpUi, Gtk, _ = _ui()
    GimpUi.init("ai-enhance")
    dialog = GimpUi.ProcedureDialog(procedure=procedure, config=config, title=f"Re-tune {op.title}")
    names = ["strength", "mask"] + [p.name for p in op.params_of(optable.Stage.POST)]
    dialog.fill(names)
    _TestHook.dialog_shown(dialog, config, names)
    ok = dialog.run()
    dialog.destroy()
    return bool(ok)


def _pad_mask(data: bytes, roi, crop) -> bytes:
    """A mask read over the roi (the layer) placed into the crop's frame (zeros around)."""
    rx, ry, rw, rh = roi
    cw, ch = crop[2], crop[3]
    out = bytearray(cw * ch)
    for y in range(rh):
        out[(ry + y) * cw + rx:(ry + y) * cw + rx + rw] = data[y * rw:(y + 1) * rw]
    return bytes(out)


def retune_params() -> list:
    """Re-tune's arguments: strength, mask and every post-processing dial of the table (each
    operation uses its own; the dialog shows the layer's current values)."""
    seen: dict = {}
    for op in optable.menu_ops():
        if op.result is not optable.ResultKind.LAYER:
            continue
        for p in (op.param("strength"), op.param("mask")) + op.params_of(optable.Stage.POST):
            if p is not None and p.name not in seen:
                seen[p.name] = p
    modes = []
    for op in optable.menu_ops():
        if op.result is optable.ResultKind.LAYER:     # only layers are re-tuned
            modes += [m for m in op.mask_modes if m not in modes]
    mask = seen["mask"]
    seen["mask"] = dataclasses.replace(mask, default="selection",
                                       choices=tuple(optable.MASK_CHOICES[m] for m in modes))
    return list(seen.values())


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
        # a row without a menu entry (the no-op) is still a PDB procedure: scripts and
        # bench/bench_gimp.py measure GIMP's round trip with it
        return [op.proc_name for op in optable.OPS] + [RETUNE, MODELS_PROC, SAVE_RECIPE]

    def do_set_i18n(self, name):
        return False

    def do_create_procedure(self, name):
        if name == MODELS_PROC:
            return self._models_procedure(name)
        if name == SAVE_RECIPE:
            return self._create_save_recipe(name)
        if name == RETUNE:
            return self._create_retune(name)
        op = optable.BY_PROC[name]
        p = Gimp.ImageProcedure.new(self, name, Gimp.PDBProcType.PLUGIN, self.run, None)
        p.set_image_types("RGB*, GRAY*")
        p.set_sensitivity_mask(Gimp.ProcedureSensitivityMask.DRAWABLE)
        if op.menu:
            p.set_menu_label(op.menu_label)
            p.add_menu_path(optable.MENU_PATH)
        p.set_documentation(op.blurb, op.help, name)
        p.set_attribution("gimp-ai-enhance contributors", "gimp-ai-enhance contributors", "2025")
        for param in op.all_params:
            _add_argument(p, param)
        p.add_layer_return_value("layer", "Layer", "The new layer (none when nothing was added)",
                                 True, GObject.ParamFlags.READWRITE)
        return p

    def _models_procedure(self, name):
        p = Gimp.Procedure.new(self, name, Gimp.PDBProcType.PLUGIN, self.run_models, None)
        p.set_menu_label("_Models...")
        p.add_menu_path(optable.MENU_PATH)
        p.set_sensitivity_mask(Gimp.ProcedureSensitivityMask.ALWAYS)
        p.set_documentation("Download and remove the AI models of AI Enhance",
                            "Lists every model with what it is for, whether it is installed and the "
                            "size of its download; the AI Enhance engine downloads (verified, "
                            "resumable) and removes them. Non-interactively: action 'install' or "
                            "'remove' with model ids, comma separated.", name)
        p.set_attribution("gimp-ai-enhance contributors", "gimp-ai-enhance contributors", "2025")
        rw = GObject.ParamFlags.READWRITE
        p.add_enum_argument("run-mode", "Run mode", "The run mode", Gimp.RunMode,
                            Gimp.RunMode.INTERACTIVE, rw)
        p.add_string_argument("action", "Action", "install or remove (non-interactive runs)", "", rw)
        p.add_string_argument("ids", "Models", "Model ids, comma separated (non-interactive runs)", "", rw)
        p.add_string_return_value("result", "Result", "What changed, as JSON", "", rw)
        return p

    def run_models(self, procedure, config, run_data):
        client_mod = None
        try:
            client_mod, _ = _import_client()
            c = client_mod.Client(heartbeat=HEARTBEAT_LIMIT)
            try:
                _progress("AI Enhance: connecting to the engine\u2026")
                try:
                    caps = c.ensure_backend(wait=BACKEND_START_WAIT, on_wait=_on_wait)
                except client_mod.ClientError as e:
                    raise _client_error(e) from None
                mode = config.get_property("run-mode")
                if mode == Gimp.RunMode.INTERACTIVE:
                    ModelsDialog(caps, c.endpoint).run()
                    info = {}
                else:
                    action = (config.get_property("action") or "").strip()
                    ids = [i.strip() for i in (config.get_property("ids") or "").split(",") if i.strip()]
                    if action not in ("install", "remove") or not ids:
                        raise UserError("give action 'install' or 'remove' and one or more model ids")
                    try:
                        info = run_in_background(
                            lambda should_cancel, progress: c.install_models(ids, on_progress=progress,
                                                                             should_cancel=should_cancel)
                            if action == "install" else c.remove_models(ids),
                            lambda f, t: (Gimp.progress_update(f), Gimp.progress_set_text(f"AI Enhance: {t}")))
                    except client_mod.ClientError as e:
                        raise _client_error(e, caps) from None
            finally:
                c.close()
            return Gimp.ValueArray.new_from_values([
                GObject.Value(Gimp.PDBStatusType, Gimp.PDBStatusType.SUCCESS),
                GObject.Value(GObject.TYPE_STRING, json.dumps(info))])
        except UserError as e:
            return _error(procedure, f"AI Enhance Models: {e}")
        except Exception as e:  # noqa: BLE001
            traceback.print_exc()
            return _error(procedure, f"AI Enhance Models: internal error ({type(e).__name__}: "
                                     f"{' '.join(str(e).split())[:200]}); please report it with "
                                     "GIMP's error console output")
        finally:
            try:
                Gimp.progress_end()
            except Exception:  # noqa: BLE001
                pass

    def _create_retune(self, name):
        p = Gimp.ImageProcedure.new(self, name, Gimp.PDBProcType.PLUGIN, self.run_retune, None)
        p.set_image_types("RGB*, GRAY*")
        p.set_sensitivity_mask(Gimp.ProcedureSensitivityMask.DRAWABLE)
        p.set_menu_label("AI _Re-tune...")
        p.add_menu_path(optable.MENU_PATH)
        p.set_documentation(
            "Change the fidelity, colour, grain and mask of an AI layer without running the model again",
            "On a layer made by an AI Enhance filter: changes its post-processing dials (fidelity, "
            "colour lock, grain, skin texture, change map), its mask and its strength. The engine "
            "keeps recent raw results, so this takes a second; when the result is no longer kept the "
            "model runs again (and the status bar says so). The layer is replaced in one undo step.",
            name)
        p.set_attribution("gimp-ai-enhance contributors", "gimp-ai-enhance contributors", "2025")
        for param in retune_params():
            _add_argument(p, param)
        p.add_layer_return_value("layer", "Layer", "The re-tuned layer", True, GObject.ParamFlags.READWRITE)
        return p

    def run_retune(self, procedure, run_mode, image, drawables, config, run_data):
        _CLOCK.mark("GIMP: handshake, procedure, arguments")
        job = None
        title = "AI Re-tune"
        try:
            if not drawables or len(drawables) != 1 or not drawables[0].is_layer():
                raise UserError("select the one AI layer to re-tune in the Layers dialog")
            old = drawables[0]
            par = recipes.read_parasite(_parasite_bytes(old))
            op = optable.BY_NAME.get((par or {}).get("op", ""))
            if par is None or op is None or op.result is not optable.ResultKind.LAYER:
                raise UserError("this layer was not made by an AI Enhance filter: pick a layer whose name "
                                "starts with 'AI' (made by Filters > AI Enhance)")
            title = f"Re-tune {op.title}"
            source = _layer_by_tattoo(image, par.get("source-tattoo"))
            if source is None:
                raise UserError("the layer this one was made from is gone (deleted or merged); run the "
                                "filter again instead")
            if run_mode == Gimp.RunMode.INTERACTIVE:
                # the dialog starts at the layer's values
                config.set_property("strength", old.get_opacity() / 100.0)
                if par.get("mask") in [c.value for c in retune_params()[1].choices]:
                    config.set_property("mask", par["mask"])
                for k, v in (par.get("post") or {}).items():
                    if config.find_property(k) is not None:
                        config.set_property(k, v)
                if not _retune_dialog(procedure, config, op):
                    return procedure.new_return_values(Gimp.PDBStatusType.CANCEL, None)
            values = {p.name: config.get_property(p.name) for p in retune_params()}
            try:
                post = validate(op.params_of(optable.Stage.POST),
                                {k: v for k, v in values.items() if op.param(k) is not None
                                 and op.param(k).stage is optable.Stage.POST}, what=title)
                mask = str(values["mask"])
                if mask not in op.mask_modes:
                    raise ParamError(f"{title}: mask must be one of {', '.join(op.mask_modes)}, got {mask!r}")
            except ParamError as e:
                raise UserError(str(e)) from None
            show_changes = bool(post.get("change-map"))
            if mask == "changes":
                post["change-map"] = True
            job = Job(op, image, source)
            job.flush_displays = run_mode != Gimp.RunMode.NONINTERACTIVE
            job.settings = JobSettings(model=par.get("model", ""), scale=int(par.get("scale") or 1),
                                       strength=float(values["strength"]), tile=int(par.get("tile-size") or 0),
                                       mask=mask, options=dict(par.get("options") or {}), post=post,
                                       show_changes=show_changes)
            job.reuse = par.get("raw-key") or None
            job.replaces = old
            _progress(f"{title}\u2026")
            layer, _ = job.retune(old, par)
            return _success(layer)
        except UserError as e:
            return _error(procedure, f"{title}: {e}")
        except Exception as e:  # noqa: BLE001 - a bug: one line, details on stderr
            traceback.print_exc()
            return _error(procedure, f"{title}: internal error ({type(e).__name__}: "
                                     f"{' '.join(str(e).split())[:200]}); please report it")
        finally:
            _CLOCK.mark("return values")
            try:
                Gimp.progress_end()
            except Exception:  # noqa: BLE001
                pass
            if job is not None:
                job.close()
            _CLOCK.mark("progress end, close the connection")
            _CLOCK.write()      # a Re-tune call is profiled like a filter call (AI_ENHANCE_PROFILE)

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
        _CLOCK.mark("GIMP: handshake, procedure, arguments")
        op = optable.BY_PROC[procedure.get_name()]
        job = None
        try:
            source = _target_layer(image, drawables)
            job = Job(op, image, source)
            job.flush_displays = run_mode != Gimp.RunMode.NONINTERACTIVE
            interactive = run_mode == Gimp.RunMode.INTERACTIVE
            if interactive:
                caps = job.connect()
                for name, value in image_defaults(op, lambda n: _parasite_bytes(image, n)).items():
                    config.set_property(name, value)
                dlg = FilterDialog(procedure, config, op, image, source, caps, job.client.endpoint)
                if not dlg.run():
                    return procedure.new_return_values(Gimp.PDBStatusType.CANCEL, None)
            try:
                job.settings = read_settings(op, config.get_property)
            except ParamError as e:
                raise UserError(str(e)) from None
            if run_mode != Gimp.RunMode.NONINTERACTIVE and _have_display():
                job.window = ProgressWindow(op.title)
            _CLOCK.mark("target checks + settings")
            layer = job.run()
            return _success(layer)
        except Cancelled:
            return procedure.new_return_values(Gimp.PDBStatusType.CANCEL, None)
        except UserError as e:
            return _error(procedure, f"{op.title}: {e}")
        except Exception as e:  # noqa: BLE001 - a bug: say so in one line, details on stderr
            traceback.print_exc()
            return _error(procedure, f"{op.title}: internal error ({type(e).__name__}: "
                                     f"{' '.join(str(e).split())[:200]}); please report it with "
                                     "GIMP's error console output")
        finally:
            _CLOCK.mark("return values")
            try:
                Gimp.progress_end()
            except Exception:  # noqa: BLE001
                pass
            _CLOCK.mark("progress end")
            if job is not None:
                job.close()
            _CLOCK.mark("close the connection")
            _CLOCK.write()


Gimp.main(AIEnhance.__gtype__, sys.argv)
