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
    GROUP = "group"                  # one layer per step (result layers), in a new layer group


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
        changes = ("changes",) if any(p.name == "change-map" for p in self.params) else ()
        return tuple(self.result_masks) + ("selection",) + changes + ("full",)

    def params_of(self, stage: Stage) -> tuple[Param, ...]:
        return tuple(p for p in self.params if p.stage is stage)

    def post_off(self) -> dict:
        """Every post-processing dial at "off": the model's output as it is (benchmarks, tests
        of the raw operation)."""
        return {p.name: False if p.kind is Kind.BOOL else p.min for p in self.params_of(Stage.POST)}

    @property
    def job_params(self) -> tuple[Param, ...]:
        """model, scale, strength, tile size and mask: header fields and layer settings."""
        out = []
        if self.models or self.purposes or self.archs:
            out.append(Param("model", Kind.STRING, self.default_model, "_Model",
                             "Model id (see `ai-enhance models list`); empty = the best installed one",
                             stage=Stage.JOB))
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
                             choices=tuple(MASK_CHOICES[m] for m in self.mask_modes), stage=Stage.JOB))
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


MASK_CHOICES = {
    "selection": Choice("selection", "Selection", "Mask the new layer with the selection (all of it "
                                                  "when nothing is selected)"),
    "full": Choice("full", "Full", "Show the whole new layer"),
    "faces": Choice("faces", "Faces", "Mask the new layer to the restored faces (within the selection)"),
    "changes": Choice("changes", "Where the AI agrees", "Show the result where it agrees with the photo and "
                      "the original where the AI invented (the inverse of the change map, within the "
                      "selection); paint from there"),
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
    "the layer name shows its estimate. A lower value cleans harder. For an image opened from a "
    "JPEG file the dialog starts at the quality GIMP read from the file",
    min=0, max=100, from_image="jpeg-quality")

DENOISE_STRENGTH = Param(
    "denoise-strength", Kind.FLOAT, 0.5, "_Denoise strength",
    "How much noise the model removes while upscaling (1 = the most); only for models with this "
    "control (Real-ESRGAN general v3)",
    min=0.0, max=1.0, applies_to=("realesr-general-x4v3",))

CODEFORMER_WEIGHT = Param(
    "codeformer-weight", Kind.FLOAT, 0.5, "Co_deFormer fidelity",
    "CodeFormer only: 0 = the most restored face, 1 = the closest to the original face",
    min=0.0, max=1.0, applies_to=("CodeFormer",))

def post_params(*, fidelity: float | None = 0.0, grain: float = 0.0, keep_texture: float | None = None,
                color_lock: bool | None = True) -> tuple[Param, ...]:
    """The post-processing dials (docs/fidelity.md), with this operation's defaults; None leaves
    a dial out where it makes no sense (inpainting must not be pulled back to the damage)."""
    out = []
    if fidelity is not None:
        out.append(Param("fidelity", Kind.FLOAT, fidelity, "_Fidelity",
                         "How closely the result must agree with the photo: 1 = shrunk back to the photo's "
                         "size it matches the photo (the AI may sharpen but not invent), 0 = the model's "
                         "output as it is", min=0.0, max=1.0, percent=True, unit="%", stage=Stage.POST))
    if color_lock is not None:
        out.append(Param("color-lock", Kind.BOOL, color_lock, "Keep the photo's co_lours",
                         "The result keeps the photo's colours (the model brings detail, not a colour shift)",
                         stage=Stage.POST))
    out += [
        Param("grain", Kind.FLOAT, grain, "_Grain",
              "Puts back grain matching the photo's own (its level and size), as a layer in Grain merge "
              "mode above the result: its opacity is this amount", min=0.0, max=1.0, percent=True,
              unit="%", stage=Stage.POST),
    ]
    if keep_texture is not None:
        out.append(Param("keep-texture", Kind.FLOAT, keep_texture, "Keep skin te_xture",
                         "Puts the photo's fine detail back into restored skin, against the plastic look",
                         min=0.0, max=1.0, percent=True, unit="%", stage=Stage.POST))
    out.append(Param("change-map", Kind.BOOL, False, "Show th_e change map",
                     "Adds a hidden layer 'AI changes' that is bright where the AI departed from what the "
                     "photo supports (where it invented)", stage=Stage.POST))
    return tuple(out)


SENSITIVITY = Param(
    "sensitivity", Kind.FLOAT, 0.5, "_Sensitivity",
    "How faint a scratch or speck may be and still be found: higher finds more (and more that is not "
    "damage)", min=0.0, max=1.0, percent=True, unit="%")

DAMAGE_KINDS = Param(
    "kinds", Kind.CHOICE, "both", "_Look for", "Which kinds of damage to find",
    choices=(Choice("both", "Scratches and dust"), Choice("scratches", "Scratches and cracks"),
             Choice("dust", "Dust and specks")))

SATURATION = Param(
    "saturation", Kind.FLOAT, 1.0, "Colour _saturation",
    "How colourful the guessed colours are: 0 = gray, 1 = as the model predicts, 2 = twice as strong",
    min=0.0, max=2.0, percent=True, unit="%")

COLORIZE_SIZE = Param(
    "input-size", Kind.INT, 512, "Model resol_ution",
    "The size the colouriser looks at the photo (the colours are then spread over the full "
    "resolution; the tones are never changed): larger sees small things better, slower",
    min=256, max=1024, unit="px", advanced=True)


def _step(name: str, label: str, default: bool, help_: str) -> Param:
    return Param(name, Kind.BOOL, default, label, help_)


RESTORE_STEPS = (
    _step("repair-damage", "Repair scratches and _dust", True,
          "Find scratches, cracks and dust, and fill them from their surroundings"),
    _step("denoise", "Remove _noise", True, "Remove film grain and scanner noise"),
    _step("restore-faces", "Restore _faces", True, "Restore every face (needs a face model)"),
    _step("colorize", "Colori_ze", False, "Guess the colours of a black-and-white photo (a colour layer)"),
)


FACE_PARAMS = (
    CODEFORMER_WEIGHT,
    Param("det-threshold", Kind.FLOAT, 0.95, "Detect_ion threshold",
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
        purposes=("SR", "Restoration"), scale=(1, 8, 2),
        params=(DENOISE_STRENGTH,) + post_params(fidelity=0.5)),
    OpSpec(
        name="faces", title="AI Restore Faces", menu_label="AI Restore _Faces...",
        blurb="Restore faces with an AI face-restoration model, as a new layer masked to the faces",
        help="Finds the faces in the active layer (or in the selection's bounding box), restores them "
             "with a face-restoration model (GFPGAN and others) and puts the result on a new layer "
             "above the source. The layer mask covers the restored faces (mask 'faces'), the "
             "selection (mask 'selection') or everything (mask 'full').",
        models=("gfpgan-v1.4", "codeformer", "gfpgan-v1.3", "restoreformer"),
        purposes=("FaceSR",), scale=(1, 4, 1),
        params=FACE_PARAMS + post_params(grain=0.4, keep_texture=0.4),
        # 40-70 % is what retouchers use for faces: a fully restored face looks pasted on
        result_masks=("faces",), mask_default="faces", tile=False, strength_default=0.6),
    OpSpec(
        name="denoise", title="AI Denoise", menu_label="AI _Denoise...",
        blurb="Remove noise with an AI denoiser, as a new masked layer",
        help="Removes sensor noise and film grain with a denoising model (FFDNet by default; SCUNet, "
             "DRUNet, NAFNet, Restormer ... when installed). Noise level 0 measures the noise first. "
             "The result is a new layer above the source, masked by the selection.",
        models=("ffdnet-color", "scunet-color-real-psnr", "drunet-color", "nafnet-sidd",
                "restormer-real-denoise", "scunet-color-real-gan"),
        purposes=("Restoration",), params=(NOISE_LEVEL,) + post_params()),
    OpSpec(
        name="sharpen", title="AI Sharpen", menu_label="AI _Sharpen / Deblur...",
        blurb="Remove motion or focus blur with an AI deblurring model, as a new masked layer",
        help="Sharpens a blurred photo with a deblurring model (NAFNet, FFTformer, Restormer, MPRNet "
             "when installed) or, without one, with a super-resolution model run at the same size, "
             "which sharpens and cleans. The result is a new layer above the source.",
        models=("nafnet-gopro", "fftformer-gopro", "restormer-deblur", "nafnet-reds",
                "mprnet-deblur", "realesrgan-x4plus"),
        purposes=("Restoration", "SR"), params=post_params()),
    OpSpec(
        name="jpeg", title="AI JPEG Cleanup", menu_label="AI _JPEG Cleanup...",
        blurb="Remove JPEG blocks and ringing with an AI model, as a new masked layer",
        help="Removes the 8x8 blocks, ringing and colour smearing of JPEG compression with FBCNN. "
             "Quality 0 lets the model estimate the damage; a quality of 1-100 tells it how the file "
             "was saved (lower cleans harder).",
        models=("fbcnn-color",), purposes=("Restoration",), archs=("FBCNN",),
        params=(QUALITY,) + post_params()),
    OpSpec(
        name="find-damage", title="AI Find Damage", menu_label="AI Find Da_mage...",
        blurb="Find scratches, cracks and dust on a scanned photo, as a selection you can edit",
        help="Finds scratches, cracks, dust specks and spots by image analysis (no model to download) "
             "and puts them in a new channel 'AI damage' that also becomes the selection: check it with "
             "Quick Mask, add or remove parts with a brush, then run Inpaint Selection. With a "
             "selection, only damage inside it is found.",
        models=("damage-analysis",), params=(SENSITIVITY, DAMAGE_KINDS), result_masks=("damage",),
        result=ResultKind.CHANNEL, tile=False, margin=64),
    OpSpec(
        name="inpaint", title="AI Inpaint", menu_label="AI _Inpaint Selection...",
        blurb="Fill the selection from its surroundings, as a new layer masked by the selection",
        help="Fills the selected pixels (scratches, dust, a torn corner, something to remove) from what "
             "surrounds them, with LaMa when it is installed, else with the built-in classical method. "
             "Pixels outside the selection are returned unchanged and the new layer is masked by the "
             "selection, so only the filled areas show.",
        models=("big-lama", "mat-places512", "classical"), purposes=("Inpainting",),
        inputs=("image", "mask"), params=post_params(fidelity=None, color_lock=None),
        tile=False, margin=96),
    OpSpec(
        name="colorize", title="AI Colorize", menu_label="AI _Colorize...",
        blurb="Guess the colours of a black-and-white photo, as a colour layer over the tones",
        help="A colourising model (DDColor) guesses the colours; only colour comes from it: the layer is "
             "in LCh colour mode, so the photo's tones underneath stay as they are and stay editable. "
             "A grayscale image is converted to RGB first (in the same undo step).",
        models=("ddcolor-modelscope", "ddcolor-artistic", "ddcolor-paper", "ddcolor-paper-tiny"),
        archs=("DDColor",), params=(SATURATION, COLORIZE_SIZE), needs_rgb=True,
        layer_mode=LayerMode.LCH_COLOR, tile=False),
    OpSpec(
        name="restore-old-photo", title="AI Restore Old Photo", menu_label="AI Restore _Old Photo...",
        blurb="Repair, denoise, restore faces and optionally colorize, as a group of editable layers",
        help="Runs Find Damage, Inpaint, Denoise, Restore Faces and (if asked) Colorize one after the "
             "other, and puts each step's result on its own masked layer inside a new layer group "
             "'AI Restore Old Photo' above the photo: toggle, mask or fade any single step. Steps "
             "whose model is not installed are skipped, and the message says which.",
        params=(SENSITIVITY,) + RESTORE_STEPS, result_masks=("damage", "faces"),
        # a colorize step makes colour layers: a gray scan becomes RGB (in the same undo step)
        needs_rgb=True, result=ResultKind.GROUP, tile=False, margin=64),
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
