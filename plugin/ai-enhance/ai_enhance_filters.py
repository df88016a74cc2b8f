"""The plug-in's filters as data: one FilterSpec per PDB procedure, plus the pure decisions the
GIMP module needs (pixel transport format per precision, layer names, the dialog's model list).

No GIMP imports here: the table and helpers are unit-tested without GIMP.  Adding a filter
(Denoise, Sharpen, ...) is one more FilterSpec in FILTERS; ai-enhance.py registers and runs every
entry through the same code path.
"""
from __future__ import annotations

from dataclasses import dataclass

from ai_enhance_client.geometry import DEFAULT_MARGIN
from ai_enhance_client.masks import MASK_MODES


@dataclass(frozen=True)
class FilterSpec:
    proc_name: str              # PDB name
    op: str                     # protocol.Op value the backend runs
    menu_label: str             # "<Image>/Filters/AI Enhance" entry
    title: str                  # layer-name prefix and dialog title
    blurb: str
    help: str
    default_model: str
    scale_max: int
    scale_default: int
    tile_argument: bool = False         # adds `tile-size`
    mask_argument: bool = False         # adds `mask` (choice of MASK_MODES), default "faces"
    result_mask: str = ""               # name of the backend mask used by mask mode "faces"
    margin: int = DEFAULT_MARGIN        # context pixels around a selection box

    @property
    def short_name(self) -> str:
        return self.proc_name.rsplit("-", 1)[-1]


MENU_PATH = "<Image>/Filters/AI Enhance"

FILTERS: tuple[FilterSpec, ...] = (
    FilterSpec(
        proc_name="python-fu-ai-enhance-upscale",
        op="upscale",
        menu_label="_Upscale...",
        title="AI Upscale",
        blurb="Upscale or enhance with an AI super-resolution model, as a new masked layer",
        help="Runs a super-resolution model (Real-ESRGAN and others) on the active layer, or on "
             "the selection's bounding box when there is a selection, and puts the result on a new "
             "layer directly above it, masked by the selection. Scale > 1 first scales the whole "
             "image so every layer stays aligned. The source layer is never modified.",
        default_model="realesrgan-x4plus",
        scale_max=8,
        scale_default=2,
        tile_argument=True,
    ),
    FilterSpec(
        proc_name="python-fu-ai-enhance-faces",
        op="faces",
        menu_label="Restore _Faces...",
        title="AI Restore Faces",
        blurb="Restore faces with an AI face-restoration model, as a new layer masked to the faces",
        help="Finds the faces in the active layer (or in the selection's bounding box), restores "
             "them with a face-restoration model (GFPGAN and others) and puts the result on a new "
             "layer above the source. The layer mask covers the restored faces (mask 'faces'), "
             "the selection (mask 'selection') or everything (mask 'full').",
        default_model="gfpgan-v1.4",
        scale_max=4,
        scale_default=1,
        mask_argument=True,
        result_mask="faces",
    ),
)

BY_NAME = {f.proc_name: f for f in FILTERS}


def layer_name(spec: FilterSpec, model: str, scale: int) -> str:
    return f"{spec.title} {model} \u00d7{scale}"


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
