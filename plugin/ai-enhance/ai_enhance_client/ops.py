"""The table of operations, shared by the GIMP plug-in, the CLI and the backend.

One row per operation: its name (the wire's ``op``, the CLI's ``--op``, the PDB procedure
``python-fu-ai-enhance-<name>``), its words (title, menu label, help), which models it runs, its
scale range, its parameters (declared once, see ``params``), its named inputs and result masks, the
layer mode of its result and whether it needs RGB.  The plug-in registers one procedure per row and
builds the dialog from it, the CLI builds its flags from it, and the backend's registry of
operation modules must equal it (a test checks).

Standard library only (this file runs inside GIMP's Python).
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from .params import Choice, Kind, Param, ParamError, Stage

PROC_PREFIX = "python-fu-ai-enhance-"
MENU_PATH = "<Image>/Filters/AI Enhance"


class LayerMode(str, Enum):
    """How the result layer combines with what lies under it (GIMP layer modes)."""
    NORMAL = "normal"
    LCH_COLOR = "lch-color"          # colour only: the tones underneath stay editable
    GRAIN_MERGE = "grain-merge"


class ResultKind(str, Enum):
    LAYER = "layer"                  # a new layer above the source
    CHANNEL = "channel"              # a mask only: a new channel (and the selection)


@dataclass(frozen=True)
class OpSpec:
    name: str
    title: str                       # "AI Upscale": layer-name prefix, dialog title
    menu_label: str                  # the menu entry, with mnemonic: also what Repeat and Undo say
    blurb: str
    help: str
    models: tuple[str, ...] = ()     # catalogue ids, best first; the first installed is the default
    purposes: tuple[str, ...] = ()   # spandrel purposes of custom model files it can run
    archs: tuple[str, ...] = ()      # architectures it runs whatever their purpose (and only it)
    scale: tuple[int, int, int] = (1, 1, 1)      # min, max, default
    params: tuple[Param, ...] = ()   # the operation's options
    inputs: tuple[str, ...] = ("image",)
    result_masks: tuple[str, ...] = ()
    mask_default: str = "selection"
    layer_mode: LayerMode = LayerMode.NORMAL
    needs_rgb: bool = False
    strength_default: float = 1.0
    result: ResultKind = ResultKind.LAYER
    tile: bool = True                # has a tile size (models run tiled)
    menu: bool = True                # False: wire-only (noop, for benchmarks and tests)
    margin: int = 32                 # context pixels the model sees around a selection

    @property
    def proc_name(self) -> str:
        return PROC_PREFIX + self.name

    @property
    def default_model(self) -> str:
        return self.models[0] if self.models else ""

    @property
    def mask_modes(self) -> tuple[str, ...]:
        return tuple(self.result_masks) + ("selection", "full")

    @property
    def job_params(self) -> tuple[Param, ...]:
        """model, scale, strength, tile size and mask: header fields and layer settings."""
        out = [Param("model", Kind.STRING, self.default_model, "_Model",
                     "Model id (see `ai-enhance models list`); empty = the best installed one",
                     stage=Stage.JOB)]
        lo, hi, default = self.scale
        if hi > 1:
            out.append(Param("scale", Kind.INT, default, "Sc_ale",
                             "Output size as a multiple of the input; 1 keeps the size, more "
                             "enlarges the whole image first so every layer stays aligned",
                             min=lo, max=hi, unit="\u00d7", stage=Stage.JOB))
        if self.result is ResultKind.LAYER:
            out.append(Param("strength", Kind.FLOAT, self.strength_default, "S_trength",
                             "Opacity of the new layer: lower it to blend the result with the original",
                             min=0.0, max=1.0, percent=True, unit="%", stage=Stage.JOB))
        if self.tile:
            out.append(Param("tile-size", Kind.INT, 0, "T_ile size",
                             "Pixels per tile the model computes at once; 0 = automatic (from the free "
                             "memory). Smaller tiles need less memory, larger ones are a little faster",
                             min=0, max=8192, unit="px", stage=Stage.JOB, advanced=True))
        if self.result is ResultKind.LAYER:
            out.append(Param("mask", Kind.CHOICE, self.mask_default, "Mas_k",
                             "Layer mask of the result",
                             choices=tuple(_MASK_CHOICES[m] for m in self.mask_modes), stage=Stage.JOB))
        return tuple(out)

    @property
    def all_params(self) -> tuple[Param, ...]:
        return self.job_params + self.params

    def param(self, name: str) -> Param | None:
        return next((p for p in self.all_params if p.name == name), None)

    def check_scale(self, scale: int) -> int:
        lo, hi, _ = self.scale
        if isinstance(scale, bool) or not isinstance(scale, int) or not lo <= scale <= hi:
            only = f"only {lo}" if lo == hi else f"{lo}..{hi}"
            raise ParamError(f"{self.name}: scale must be {only}, got {scale!r}")
        return scale


_MASK_CHOICES = {
    "selection": Choice("selection", "Selection", "Mask the new layer with the selection (all of it "
                                                  "when nothing is selected)"),
    "full": Choice("full", "Full", "Show the whole new layer"),
    "faces": Choice("faces", "Faces", "Mask the new layer to the restored faces (within the selection)"),
}


# --------------------------------------------------------------------------- parameters

NOISE_LEVEL = Param(
    "noise-level", Kind.FLOAT, 0.0, "_Noise level",
    "Strength of the noise to remove, as its standard deviation in 8-bit levels (0-255 scale); "
    "0 = automatic: measured from the image and shown in the layer name",
    min=0.0, max=75.0, unit="levels")

QUALITY = Param(
    "quality", Kind.INT, 0, "JPEG _quality",
    "The JPEG quality the image was saved with (1-100); 0 = automatic: the model estimates it and "
    "the layer name shows its estimate. A lower value cleans harder",
    min=0, max=100)

DENOISE_STRENGTH = Param(
    "denoise-strength", Kind.FLOAT, 0.5, "_Denoise strength",
    "How much noise the model removes while upscaling (1 = the most); only for models with this "
    "control (Real-ESRGAN general v3)",
    min=0.0, max=1.0, applies_to=("realesr-general-x4v3",))

CODEFORMER_WEIGHT = Param(
    "codeformer-weight", Kind.FLOAT, 0.5, "CodeFormer _fidelity",
    "CodeFormer only: 0 = the most restored face, 1 = the closest to the original face",
    min=0.0, max=1.0, applies_to=("CodeFormer",))

FACE_PARAMS = (
    CODEFORMER_WEIGHT,
    Param("det-threshold", Kind.FLOAT, 0.95, "Detection _threshold",
          "How sure the detector must be that it sees a face (lower finds more, and more false ones)",
          min=0.3, max=0.999, advanced=True),
    Param("det-size", Kind.INT, 640, "Detection si_ze",
          "Short side, in pixels, of the image the face detector sees; larger finds smaller faces",
          min=160, max=2048, unit="px", advanced=True),
    Param("face-mask", Kind.CHOICE, "auto", "Face _shape",
          "How each restored face blends in: face parsing when its model is installed, else a soft ellipse",
          choices=(Choice("auto", "Automatic"), Choice("parsing", "Face parsing"),
                   Choice("ellipse", "Soft ellipse")), advanced=True),
    Param("background", Kind.STRING, "", "_Background model",
          "Model id of an upscaler for everything outside the faces; empty = a classical resize",
          advanced=True),
)


# --------------------------------------------------------------------------- the table

OPS: tuple[OpSpec, ...] = (
    OpSpec(
        name="upscale", title="AI Upscale", menu_label="AI _Upscale...",
        blurb="Upscale or enhance with an AI super-resolution model, as a new masked layer",
        help="Runs a super-resolution model (Real-ESRGAN and others) on the active layer, or on the "
             "selection's bounding box when there is a selection, and puts the result on a new layer "
             "directly above it, masked by the selection. Scale > 1 first scales the whole image so "
             "every layer stays aligned. The source layer is never modified.",
        models=("realesrgan-x4plus", "realesr-general-x4v3", "realesrgan-x2plus",
                "realesrgan-x4plus-anime", "realesr-animevideov3"),
        purposes=("SR", "Restoration"), scale=(1, 8, 2), params=(DENOISE_STRENGTH,)),
    OpSpec(
        name="faces", title="AI Restore Faces", menu_label="AI Restore _Faces...",
        blurb="Restore faces with an AI face-restoration model, as a new layer masked to the faces",
        help="Finds the faces in the active layer (or in the selection's bounding box), restores them "
             "with a face-restoration model (GFPGAN and others) and puts the result on a new layer "
             "above the source. The layer mask covers the restored faces (mask 'faces'), the "
             "selection (mask 'selection') or everything (mask 'full').",
        models=("gfpgan-v1.4", "codeformer", "gfpgan-v1.3", "restoreformer-pp"),
        purposes=("FaceSR",), scale=(1, 4, 1), params=FACE_PARAMS,
        # 40-70 % is what retouchers use for faces: a fully restored face looks pasted on
        result_masks=("faces",), mask_default="faces", tile=False, strength_default=0.6),
    OpSpec(
        name="denoise", title="AI Denoise", menu_label="AI _Denoise...",
        blurb="Remove noise with an AI denoiser, as a new masked layer",
        help="Removes sensor noise and film grain with a denoising model (FFDNet by default; SCUNet, "
             "DRUNet, NAFNet, Restormer ... when installed). Noise level 0 measures the noise first. "
             "The result is a new layer above the source, masked by the selection.",
        models=("ffdnet-color", "scunet-color-real-psnr", "drunet-color", "nafnet-sidd",
                "restormer-denoise"),
        purposes=("Restoration",), params=(NOISE_LEVEL,)),
    OpSpec(
        name="sharpen", title="AI Sharpen", menu_label="AI _Sharpen / Deblur...",
        blurb="Remove motion or focus blur with an AI deblurring model, as a new masked layer",
        help="Sharpens a blurred photo with a deblurring model (NAFNet, FFTformer, Restormer, MPRNet "
             "when installed) or, without one, with a super-resolution model run at the same size, "
             "which sharpens and cleans. The result is a new layer above the source.",
        models=("nafnet-gopro", "fftformer-gopro", "restormer-deblur", "nafnet-reds",
                "mprnet-deblur", "realesrgan-x4plus"),
        purposes=("Restoration", "SR")),
    OpSpec(
        name="jpeg", title="AI JPEG Cleanup", menu_label="AI _JPEG Cleanup...",
        blurb="Remove JPEG blocks and ringing with an AI model, as a new masked layer",
        help="Removes the 8x8 blocks, ringing and colour smearing of JPEG compression with FBCNN. "
             "Quality 0 lets the model estimate the damage; a quality of 1-100 tells it how the file "
             "was saved (lower cleans harder).",
        models=("fbcnn-color",), purposes=("Restoration",), archs=("FBCNN",), params=(QUALITY,)),
    OpSpec(
        name="noop", title="AI No-op", menu_label="No-op",
        blurb="Returns the input (transport benchmarks and tests)", help="",
        tile=False, menu=False),
)

BY_NAME = {o.name: o for o in OPS}
BY_PROC = {o.proc_name: o for o in OPS}


def get(name: str) -> OpSpec:
    try:
        return BY_NAME[name]
    except KeyError:
        raise ParamError(f"unknown operation {name!r}; use one of "
                         f"{', '.join(o.name for o in OPS if o.menu)}") from None


def menu_ops() -> tuple[OpSpec, ...]:
    return tuple(o for o in OPS if o.menu)


def exclusive_archs() -> frozenset[str]:
    """Architectures named by some operation: they serve those operations only."""
    return frozenset(a for o in OPS for a in o.archs)


def ops_for_model(purpose: str | None, arch: str | None) -> list[str]:
    """The operations a model file not in the catalogue can serve, from what spandrel says of it."""
    if arch and arch in exclusive_archs():
        return [o.name for o in OPS if arch in o.archs]
    return [o.name for o in OPS if purpose and purpose in o.purposes]
