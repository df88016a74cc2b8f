"""The plug-in's pure decisions, derived from the operation table (``ops``): what each PDB
procedure reads from its config, the layer name of a result, the pixel transport format per
precision, and the dialog's model list.

No GIMP imports here: unit-tested without GIMP.  ai-enhance.py registers and runs every row of the
table through the same code path.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from .ops import OpSpec
from .params import Param, Stage, validate


@dataclass(frozen=True)
class JobSettings:
    """What one run of a filter asks for, read from the procedure's config."""
    model: str
    scale: int
    strength: float
    tile: int
    mask: str
    options: dict
    post: dict
    show_changes: bool = False      # add the change map as a hidden layer "AI changes"


def read_settings(op: OpSpec, get: Callable[[str], Any]) -> JobSettings:
    """The run's settings from ``get(name)`` (the config's get_property), validated by the one
    validator; ParamError (one line) for a value out of range."""
    values = {p.name: _plain(get(p.name)) for p in op.all_params}
    job = {p.name: values[p.name] for p in op.job_params}
    for p in op.job_params:
        job[p.name] = p.check(job[p.name], op.title)
    options = validate([p for p in op.params if p.stage is Stage.OPTION],
                       {p.name: values[p.name] for p in op.params if p.stage is Stage.OPTION}, what=op.title)
    post = validate([p for p in op.params if p.stage is Stage.POST],
                    {p.name: values[p.name] for p in op.params if p.stage is Stage.POST}, what=op.title)
    show_changes = bool(post.get("change-map"))
    if job.get("mask") == "changes":
        post["change-map"] = True           # the "changes" mask comes from the change map
    return JobSettings(model=(job.get("model") or "").strip(), scale=int(job.get("scale", 1)),
                       strength=float(job.get("strength", 1.0)), tile=int(job.get("tile-size", 0)),
                       mask=str(job.get("mask", "selection")), options=options, post=post,
                       show_changes=show_changes)


def _plain(v: Any) -> Any:
    """GObject values as plain Python: a choice's nick stays a string (trimmed: a typed model id
    may carry spaces), numbers stay numbers."""
    if isinstance(v, str):
        return v.strip()
    if isinstance(v, (bool, int, float)) or v is None:
        return v
    return str(v).strip()


def result_transport(op: OpSpec, component: str, *, gray: bool, alpha: bool) -> "Transport":
    """How the result of ``op`` travels back: like the pixels sent, except that an operation that
    needs colour returns RGB for a gray image (which the plug-in converts to RGB first)."""
    return transport(component, gray=gray and not op.needs_rgb, alpha=alpha)


def jpeg_quality(parasite: bytes | None) -> int | None:
    """The JPEG quality GIMP's JPEG loader recorded in the image's "jpeg-settings" parasite
    (byte 0: colour space, byte 1: IJG quality 1..100, 0 when it could not tell), or None."""
    if not parasite or len(parasite) < 4:
        return None
    q = parasite[1]
    return q if 1 <= q <= 100 else None


#: image facts that can give a parameter's dialog default: name -> (parasite name, reader)
IMAGE_FACTS: dict[str, tuple[str, Callable[[bytes | None], Any]]] = {
    "jpeg-quality": ("jpeg-settings", jpeg_quality),
}


def image_defaults(op: OpSpec, parasite: Callable[[str], bytes | None]) -> dict:
    """Dialog defaults an image supplies (``parasite(name)`` reads an image parasite's bytes)."""
    out = {}
    for p in op.params:
        fact = IMAGE_FACTS.get(p.from_image)
        if fact is not None:
            value = fact[1](parasite(fact[0]))
            if value is not None:
                out[p.name] = p.check(value)
    return out


def dialog_params(op: OpSpec) -> list[Param]:
    """The controls of the dialog, in table order: everything but the model (which gets a list of
    the backend's models)."""
    return [p for p in op.all_params if p.name != "model"]


def layer_name(op: OpSpec, model: str, scale: int, info: dict | None = None, short: str = "") -> str:
    """Short and friendly, so that a default Layers dock shows what it is: "AI Upscale \u00d72 \u00b7
    Real-ESRGAN", "AI Denoise \u00b7 FFDNet \u03c323 (auto)", "AI JPEG Cleanup \u00b7 FBCNN q40".
    ``short`` is the model's short name (the backend's list), else its id."""
    name = op.title
    if scale != 1 or op.scale[2] > 1:       # an upscaler says its scale, even x1
        name += f" \u00d7{scale}"
    name += f" \u00b7 {short or model}"
    info = info or {}
    if isinstance(info.get("noise_level"), (int, float)):
        name += f" \u03c3{info['noise_level']:g}" + (" (auto)" if info.get("noise_level_estimated") else "")
    if isinstance(info.get("quality"), int):
        name += f" q{info['quality']}" + (" (auto)" if info.get("quality_estimated") else "")
    return name


# --------------------------------------------------------------------------- pixel transport

@dataclass(frozen=True)
class Transport:
    """How pixels of one layer travel: the babl format used to read/write GIMP buffers and the
    matching wire description (channels, protocol dtype)."""

    babl_format: str
    channels: int
    dtype: str          # protocol.DType value: "u8", "u16", "f32"

    @property
    def gray(self) -> bool:
        return self.channels in (1, 2)


#: GIMP precision component -> (babl component type, wire dtype).  Never narrower than the image:
#: 8-bit stays u8, 16-bit travels as u16, 32-bit integer, half, float and double as f32.
_COMPONENTS = {
    "U8": ("u8", "u8"),
    "U16": ("u16", "u16"),
    "U32": ("float", "f32"),
    "HALF": ("float", "f32"),
    "FLOAT": ("float", "f32"),
    "DOUBLE": ("float", "f32"),
}


def transport(component: str, *, gray: bool, alpha: bool) -> Transport:
    """Transport for an image of precision component `component` (U8, U16, U32, HALF, FLOAT,
    DOUBLE).  Pixels travel gamma-encoded (R'G'B' / Y'), the encoding the models were trained
    on, in the image's bit depth, so a 16-bit or float image never takes an 8-bit round trip."""
    try:
        babl_type, dtype = _COMPONENTS[component.upper()]
    except KeyError:
        raise ValueError(f"unsupported precision {component!r}") from None
    model = ("Y'" if gray else "R'G'B'") + ("A" if alpha else "")
    channels = (1 if gray else 3) + (1 if alpha else 0)
    return Transport(f"{model} {babl_type}", channels, dtype)


# --------------------------------------------------------------------------- the dialog's models

@dataclass(frozen=True)
class ModelRow:
    """One entry of a filter's model list."""
    id: str
    label: str                  # the friendly name; "... \u2014 download 64 MB" when missing
    installed: bool
    kind: str                   # photo | illustration | custom | "" (unknown)
    short: str                  # for the layer name
    arch: str
    download: int | None        # bytes a download fetches (with what it needs); None: unknown


#: The order of the groups: photo models first, then what is not known, custom files, illustrations.
KIND_ORDER = {"photo": 0, "": 1, "custom": 2, "illustration": 3}


def caps_models(capabilities: dict | None) -> list[dict]:
    """The model entries of a pong (tolerates an older backend nesting them)."""
    models = []
    if capabilities:
        models = capabilities.get("models")
        if models is None and isinstance(capabilities.get("capabilities"), dict):
            models = capabilities["capabilities"].get("models")
    return [m for m in models or [] if isinstance(m, dict) and isinstance(m.get("id"), str)]


def model_rows(capabilities: dict | None, op: OpSpec, current: str = "") -> list[ModelRow]:
    """The models able to run ``op``: installed first; in each part photo models, then custom
    files, then illustration models; within a kind the table's order (best first).  Support files
    (a ``role``: detectors, parsers, blend companions) are never offered; an entry without an
    ``ops`` list (an older backend) is offered everywhere.  ``current`` stays even when the backend
    does not list it (an id typed earlier)."""
    from .model_plan import human_size, install_plan

    models = caps_models(capabilities)
    rank = {mid: i for i, mid in enumerate(op.models)}
    rows = []
    for m in models:
        ops = m.get("ops")
        if m.get("role") or (isinstance(ops, list) and op.name not in ops):
            continue
        installed = bool(m.get("installed", True))
        kind = m.get("kind") if m.get("kind") in KIND_ORDER else ("custom" if m.get("custom") or
                                                                  m.get("status") == "custom" else "")
        name = m.get("name") or m["id"]
        download = None
        label = name
        if not installed:
            download = install_plan(models, [m["id"]]).bytes
            label += f" \u2014 download {human_size(download)}" if download else " \u2014 not installed"
        rows.append(((not installed, KIND_ORDER[kind], rank.get(m["id"], 99), label.lower()),
                     ModelRow(m["id"], label, installed, kind, m.get("short") or m["id"],
                              str(m.get("arch") or ""), download)))
    rows.sort(key=lambda t: t[0])
    out = [r for _, r in rows]
    if current and current not in {r.id for r in out}:
        out.insert(0, ModelRow(current, current, True, "", current, "", None))
    return out


def model_choices(capabilities: dict | None, op: str, current: str = "") -> list[tuple[str, str]]:
    """(id, label) of ``model_rows`` for the operation named ``op``."""
    from .ops import BY_NAME
    return [(r.id, r.label) for r in model_rows(capabilities, BY_NAME[op], current)]


def best_model(rows: list[ModelRow], current: str = "") -> str:
    """The model a dialog opens with: the last one used when it is installed, else the best
    installed one, else (nothing installed) the best one to download."""
    by_id = {r.id: r for r in rows}
    if current in by_id and by_id[current].installed:
        return current
    for r in rows:
        if r.installed:
            return r.id
    return rows[0].id if rows else current


def applicable(op: OpSpec, row: ModelRow | None) -> set[str]:
    """Names of the parameters that mean something for the chosen model (``Param.applies_to``:
    e.g. the CodeFormer weight only for CodeFormer)."""
    mid, arch = (row.id, row.arch) if row else ("", "")
    return {p.name for p in op.all_params if p.applies(mid, arch)}


# --------------------------------------------------------------------------- what the dialog shows

def size_summary(op: OpSpec, *, image_size: tuple[int, int], area: tuple[int, int],
                 selection: bool, scale: int) -> tuple[str, str]:
    """("Output: 700 \u00d7 464 \u2192 1400 \u00d7 928", "Processes the whole layer") for the dialog:
    scale > 1 enlarges the whole image (so every layer stays aligned), scale 1 keeps the size."""
    iw, ih = image_size
    aw, ah = area
    if scale > 1:
        out = f"Image {iw} \u00d7 {ih} \u2192 {iw * scale} \u00d7 {ih * scale}"
    else:
        out = f"Output {aw} \u00d7 {ah} (same size)"
    where = f"Processes the selection ({aw} \u00d7 {ah})" if selection else \
        f"Processes the whole layer ({aw} \u00d7 {ah})"
    return out, where


def explain(kind: str, message: str, log: str | None = None) -> str:
    """What happened and what to do, in a retoucher's words, for an error of the backend or the
    connection; the technical line follows, and the backend's log is named where it has more."""
    k = str(kind or "")
    where_log = f" Its log has the details: {log}." if log else ""
    plain = {
        "model_missing": "The model for this filter is not installed. Pick it in the filter's dialog "
                         "and click Download, or open Filters > AI Enhance > Models\u2026",
        "unknown_model": "This model is not known to the AI Enhance engine. Pick another one in the "
                         "dialog, or see Filters > AI Enhance > Models\u2026",
        "model_corrupt": "The model file is damaged. Remove it and download it again in "
                         "Filters > AI Enhance > Models\u2026",
        "out_of_memory": "Not enough memory for this size. Select a smaller area, or choose a smaller "
                         "tile size under Advanced in the dialog.",
        "too_large": "The image is too large for the engine's limits. Select a smaller area or use a "
                     "smaller scale.",
        "busy": "The AI Enhance engine is busy with other jobs. Try again in a moment.",
        "version": "The plug-in and the AI Enhance engine come from different versions. Run the AI "
                   "Enhance installer again so that both match.",
        "download": "The model could not be downloaded. Check the internet connection and try again "
                    "(the download resumes where it stopped).",
        "disk": "The disk is full or the models folder cannot be written. Free some space and try again.",
        "internal": "Something went wrong inside the AI Enhance engine." + (where_log or
                    " Run `ai-enhance doctor` to check the installation."),
        "client_gone": "The job was stopped because GIMP stopped waiting for it.",
        "cancelled": "Cancelled; nothing was added.",
    }.get(k)
    if k == "bad_request" and "unknown message type" in message:
        plain = ("The AI Enhance engine is older than the plug-in. Run the AI Enhance installer again "
                 "so that both match.")
    if k == "connection":
        if "none is installed" in message or "cannot start the backend" in message:
            plain = ("The AI Enhance engine is not installed (or GIMP cannot find it). Run the AI "
                     "Enhance installer once: it sets up the engine and the models.")
        elif "exited at start" in message or "did not answer" in message or "stopped answering" in message:
            plain = ("The AI Enhance engine did not start or stopped answering." + where_log
                     + " `ai-enhance doctor` finds the usual causes.")
        else:
            plain = "GIMP cannot reach the AI Enhance engine." + where_log
    if plain is None:
        return message
    return f"{plain} Details: {message}" if k != "cancelled" else plain
