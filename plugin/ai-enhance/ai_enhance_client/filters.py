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
    if job.get("mask") == "changes":
        post["change-map"] = True           # the "changes" mask comes from the change map
    return JobSettings(model=(job.get("model") or "").strip(), scale=int(job.get("scale", 1)),
                       strength=float(job.get("strength", 1.0)), tile=int(job.get("tile-size", 0)),
                       mask=str(job.get("mask", "selection")), options=options, post=post)


def _plain(v: Any) -> Any:
    """GObject values as plain Python: a choice's nick stays a string (trimmed: a typed model id
    may carry spaces), numbers stay numbers."""
    if isinstance(v, str):
        return v.strip()
    if isinstance(v, (bool, int, float)) or v is None:
        return v
    return str(v).strip()


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


def layer_name(op: OpSpec, model: str, scale: int, info: dict | None = None) -> str:
    """"AI Upscale realesrgan-x4plus ×2", "AI Denoise ffdnet-color σ23 (auto)", ..."""
    name = f"{op.title} {model}"
    if op.scale[1] > 1:
        name += f" \u00d7{scale}"
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

def model_choices(capabilities: dict | None, op: str, current: str = "") -> list[tuple[str, str]]:
    """(id, label) of the models able to run `op`, installed ones first; `current` is kept even
    when the backend does not list it (a custom id typed earlier).  Entries with a `role`
    (face detector, parser, a blend companion) are support files, never offered; an entry without
    an `ops` list (an older backend) is offered for every op."""
    models = []
    if capabilities:
        models = capabilities.get("models")
        if models is None and isinstance(capabilities.get("capabilities"), dict):
            models = capabilities["capabilities"].get("models")
    out: list[tuple[bool, str, str, str]] = []
    for m in models or []:
        if not isinstance(m, dict) or not isinstance(m.get("id"), str):
            continue
        ops = m.get("ops")
        if m.get("role") or (isinstance(ops, list) and op not in ops):
            continue   # support files (detectors, parsers, blend companions) or another op
        installed = bool(m.get("installed", True))
        name = m.get("name") or m["id"]
        scale = m.get("scale")
        label = name + (f" (\u00d7{scale})" if isinstance(scale, int) and scale > 1 else "")
        if m.get("status") == "custom":
            label += " [custom]"
        if not installed:
            label += " \u2014 not installed"
        out.append((not installed, label.lower(), m["id"], label))
    out.sort(key=lambda t: (t[0], t[1]))
    choices = [(mid, label) for _, _, mid, label in out]
    if current and current not in {mid for mid, _ in choices}:
        choices.insert(0, (current, current))
    return choices
