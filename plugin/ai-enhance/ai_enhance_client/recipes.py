"""Recipes: the operations tuned on one photo in GIMP, replayed on many files by `ai-enhance batch`.

A recipe is a small, versioned JSON document: a list of steps, each one operation of the table
(``ops``) with its model, scale, strength, mask mode, options and post-processing parameters.  Every
value is checked by THE validator (``params.validate``) against the operation's own declarations,
so a recipe accepts exactly what the plug-in and the CLI accept; an error names the step and the
field.  Parameters are never listed here: a step takes whatever its table row declares (options
are the row's ``Stage.OPTION`` parameters, post parameters its ``Stage.POST`` ones).

The GIMP plug-in attaches a parasite ``ai-enhance`` to every layer it creates (``layer_parasite``);
**Save Recipe** turns the image's AI layers, bottom to top, into a recipe (``recipe_from_layers``).
The format is documented in docs/recipes.md.

Standard library only (this file runs inside GIMP's Python too).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from . import ops as optable
from .params import ParamError, Stage, validate

FORMAT = "ai-enhance-recipe"
VERSION = 1
PARASITE = "ai-enhance"          # name of the layer parasite the plug-in attaches
PARASITE_VERSION = 1

#: Where a step's input comes from.
SOURCE_IMAGE = "image"           # the bottom layer: the input file (resampled by earlier scale steps)
SOURCE_COMPOSITE = "composite"   # everything so far, flattened (GIMP: Layer > New from Visible)

#: Top-level keys of a recipe document and keys of a step besides the job parameters.
_DOC_KEYS = ("format", "version", "steps", "notes", "created-by")
_STEP_KEYS = ("op", "options", "post", "source", "layer-mode")

#: Said in every saved recipe: what a recipe cannot carry.
MASK_NOTE = ("Layer masks painted by hand or made from a selection are not part of a recipe: such "
             "a step shows its whole result (mask 'full'). Masks the backend computes (faces, "
             "changes, damage ...) are recomputed for every image.")


class RecipeError(ParamError):
    """A recipe that cannot be used: one line naming the step and field, with the fix."""


@dataclass(frozen=True)
class Step:
    op: str
    model: str = ""                  # "" = the operation's best installed model
    scale: int = 1
    strength: float = 1.0
    mask: str = "full"               # "full", "selection" (= full outside GIMP) or a backend mask
    tile: int = 0
    options: dict = field(default_factory=dict)
    post: dict = field(default_factory=dict)
    source: str | int = SOURCE_COMPOSITE   # "image", "composite" or the index of an earlier step
    layer_mode: str = ""             # "" = the operation's layer mode (the table's)

    @property
    def spec(self) -> optable.OpSpec:
        return optable.BY_NAME[self.op]

    @property
    def mode(self) -> optable.LayerMode:
        return optable.LayerMode(self.layer_mode) if self.layer_mode else self.spec.layer_mode

    @property
    def backend_mask(self) -> str | None:
        """The backend mask this step's layer is masked with (None: the whole result shows)."""
        return self.mask if self.mask in self.spec.result_masks else None

    def to_json(self) -> dict:
        spec = self.spec
        out: dict[str, Any] = {"op": self.op}
        values = {"model": self.model, "scale": self.scale, "strength": self.strength,
                  "tile-size": self.tile, "mask": self.mask}
        for p in spec.job_params:
            out[p.name] = values[p.name]
        out["options"] = dict(self.options)
        out["post"] = dict(self.post)
        out["source"] = self.source
        if self.layer_mode and self.mode is not spec.layer_mode:
            out["layer-mode"] = self.layer_mode
        return out


@dataclass(frozen=True)
class Recipe:
    steps: tuple[Step, ...]
    notes: tuple[str, ...] = ()
    created_by: str = ""

    def to_json(self) -> dict:
        doc: dict[str, Any] = {"format": FORMAT, "version": VERSION}
        if self.created_by:
            doc["created-by"] = self.created_by
        if self.notes:
            doc["notes"] = list(self.notes)
        doc["steps"] = [s.to_json() for s in self.steps]
        return doc

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2, ensure_ascii=False) + "\n"

    def digest(self, *extra: Any) -> str:
        """sha256 of what decides the pixels (the steps, normalised, plus ``extra`` such as the
        output format): equal recipes written differently hash the same; notes do not count."""
        canon = json.dumps({"steps": [s.to_json() for s in self.steps], "extra": list(extra)},
                           sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        return hashlib.sha256(canon.encode("utf-8")).hexdigest()

    @property
    def max_scale(self) -> int:
        s = 1
        for st in self.steps:
            s *= st.scale
        return s


# --------------------------------------------------------------------------- reading

def loads(text: str) -> Recipe:
    try:
        doc = json.loads(text)
    except ValueError as e:
        raise RecipeError(f"the recipe is not valid JSON ({e}); save it again from GIMP "
                          "(Filters > AI Enhance > Save Recipe...)") from None
    return parse(doc)


def load(path) -> Recipe:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise RecipeError(f"cannot read the recipe {path}: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise RecipeError(f"{path} is not a text file; give a recipe saved by GIMP's Save Recipe") from None
    try:
        return loads(text)
    except RecipeError as e:
        raise RecipeError(f"{path}: {e}") from None


def parse(doc: Any) -> Recipe:
    """A recipe document (parsed JSON) -> Recipe, every value checked against the table."""
    if not isinstance(doc, dict):
        raise RecipeError("a recipe is a JSON object with \"format\", \"version\" and \"steps\"")
    if doc.get("format") != FORMAT:
        raise RecipeError(f"not a recipe: \"format\" must be \"{FORMAT}\", got {doc.get('format')!r}")
    version = doc.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise RecipeError(f"\"version\" must be a whole number from 1, got {version!r}")
    if version > VERSION:
        raise RecipeError(f"recipe version {version} is newer than this ai-enhance understands "
                          f"(up to {VERSION}); update ai-enhance")
    unknown = sorted(k for k in doc if k not in _DOC_KEYS)
    if unknown:
        raise RecipeError(f"unknown recipe field{'s' if len(unknown) > 1 else ''} "
                          f"{', '.join(map(repr, unknown))}; known: {', '.join(_DOC_KEYS)}")
    steps = doc.get("steps")
    if not isinstance(steps, list) or not steps:
        raise RecipeError("\"steps\" must be a non-empty list of steps")
    notes = doc.get("notes", [])
    if not isinstance(notes, list) or not all(isinstance(n, str) for n in notes):
        raise RecipeError("\"notes\" must be a list of strings")
    created = doc.get("created-by", "")
    if not isinstance(created, str):
        raise RecipeError("\"created-by\" must be a string")
    return Recipe(tuple(parse_step(s, i) for i, s in enumerate(steps)), tuple(notes), created)


def parse_step(obj: Any, index: int) -> Step:
    """One step (index counts from 0, as ``source`` does); errors say "step N (op) field: ..."."""
    where = f"step {index}"
    if not isinstance(obj, dict):
        raise RecipeError(f"{where} must be an object with at least \"op\"")
    name = obj.get("op")
    spec = optable.BY_NAME.get(name) if isinstance(name, str) else None
    if spec is None:
        known = ", ".join(o.name for o in optable.OPS if o.menu)
        raise RecipeError(f"{where}: op must be one of {known}, got {name!r}")
    if spec.result is not optable.ResultKind.LAYER:
        raise RecipeError(f"{where}: {spec.name} makes no layer (it returns a mask); a recipe "
                          "step must make a layer")
    where = f"{where} ({spec.name})"
    job_names = [p.name for p in spec.job_params]
    unknown = sorted(k for k in obj if k not in _STEP_KEYS and k not in job_names)
    if unknown:
        raise RecipeError(f"{where}: unknown field{'s' if len(unknown) > 1 else ''} "
                          f"{', '.join(map(repr, unknown))}; a {spec.name} step takes: "
                          f"{', '.join(('op', *job_names, 'options', 'post', 'source', 'layer-mode'))}")
    try:
        job = validate(spec.job_params, {k: obj[k] for k in job_names if k in obj}, what=where)
        if "scale" in job:
            spec.check_scale(job["scale"])
        options = validate(_stage(spec, Stage.OPTION), _mapping(obj.get("options"), where, "options"),
                           what=f"{where} options")
        post = validate(_stage(spec, Stage.POST), _mapping(obj.get("post"), where, "post"),
                        what=f"{where} post")
    except RecipeError:
        raise
    except ParamError as e:
        raise RecipeError(str(e)) from None
    source = obj.get("source", SOURCE_COMPOSITE)
    if isinstance(source, bool) or not (source in (SOURCE_IMAGE, SOURCE_COMPOSITE)
                                        or (isinstance(source, int) and 0 <= source < index)):
        raise RecipeError(f"{where}: source must be \"image\", \"composite\" or the number of an "
                          f"earlier step (0..{index - 1}), got {source!r}")
    mode = obj.get("layer-mode", "")
    if mode:
        try:
            optable.LayerMode(mode)
        except ValueError:
            raise RecipeError(f"{where}: layer-mode must be one of "
                              f"{', '.join(m.value for m in optable.LayerMode)}, got {mode!r}") from None
    return Step(op=spec.name, model=(obj.get("model") or "").strip() if "model" in obj else "",
                scale=int(job.get("scale", 1)), strength=float(job.get("strength", 1.0)),
                mask=str(job.get("mask", "full")), tile=int(job.get("tile-size", 0)),
                options=options, post=post, source=source, layer_mode=mode)


def _stage(spec: optable.OpSpec, stage: Stage):
    return [p for p in spec.all_params if p.stage is stage]


def _mapping(v: Any, where: str, what: str) -> dict:
    if v is None:
        return {}
    if not isinstance(v, dict):
        raise RecipeError(f"{where}: {what} must be an object of parameter: value")
    return v


def single(op: str, *, model: str = "", scale: int | None = None, strength: float | None = None,
           mask: str | None = None, tile: int = 0, options: Mapping | None = None,
           post: Mapping | None = None) -> Recipe:
    """A one-step recipe (``ai-enhance batch --op ...``), checked like a recipe file."""
    spec = optable.get(op)
    step: dict[str, Any] = {"op": spec.name, "options": dict(options or {}), "post": dict(post or {}),
                            "source": SOURCE_IMAGE}
    names = {p.name for p in spec.job_params}
    for name, value in (("model", model), ("scale", scale), ("strength", strength),
                        ("mask", mask), ("tile-size", tile)):
        if value is not None and name in names:
            step[name] = value
        elif value not in (None, "", 0) and name not in names:
            raise RecipeError(f"--{name} does not apply to --op {spec.name}")
    return Recipe((parse_step(step, 0),))


# --------------------------------------------------------------------------- the layer parasite

def layer_parasite(*, op: str, model: str, scale: int, strength: float, mask: str, tile: int,
                   options: Mapping, post: Mapping, mask_source: str, backend_version: str,
                   job_id: str, source_job: str | None, source_tattoo: int | None,
                   raw_key: str = "", crop: Sequence[int] = (), roi: Sequence[int] = ()) -> bytes:
    """The JSON the plug-in attaches (parasite ``ai-enhance``) to a result layer: what ran, how the
    layer was masked (``mask_source``: white, selection, result, result*selection) and which layer
    it ran on (the source layer's own job id when it is an AI layer, and its tattoo).  Re-tune
    reads ``raw-key`` (the backend's raw output) and ``crop``/``roi`` (the pixels sent and the part
    returned, source-layer coordinates at the size it had then)."""
    doc = {"version": PARASITE_VERSION, "op": op, "model": model, "scale": int(scale),
           "strength": float(strength), "mask": mask, "mask-source": mask_source, "tile-size": int(tile),
           "options": dict(options), "post": dict(post), "backend-version": backend_version or "",
           "job-id": job_id, "source-job": source_job, "source-tattoo": source_tattoo,
           "raw-key": raw_key or "", "crop": [int(v) for v in crop], "roi": [int(v) for v in roi]}
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode("utf-8")


def read_parasite(data: bytes | str | None) -> dict | None:
    """The parasite's JSON, or None when it is missing or not ours (never raises)."""
    if not data:
        return None
    try:
        doc = json.loads(data.decode("utf-8") if isinstance(data, (bytes, bytearray)) else data)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("op"), str):
        return None
    return doc


@dataclass(frozen=True)
class LayerInfo:
    """What Save Recipe reads of one top-level layer (bottom to top order in the list)."""
    name: str
    parasite: bytes | None
    opacity: float = 100.0           # GIMP's 0..100
    visible: bool = True
    mode: str = "normal"             # a LayerMode value, or GIMP's name of another mode
    tattoo: int | None = None
    group: bool = False


def recipe_from_layers(layers: Sequence[LayerInfo], created_by: str = "") -> Recipe:
    """The recipe of an image's layers, bottom (index 0: the photo) to top.  Each AI layer is one
    step at its CURRENT opacity (tuning the slider counts).  Layers that cannot be replayed are
    named in the notes: hand-made masks, other layers, hidden layers.  RecipeError when there is
    no AI layer, or a layer mode a batch cannot reproduce."""
    if not layers:
        raise RecipeError("the image has no layers")
    base = layers[0]
    notes = [MASK_NOTE]
    if read_parasite(base.parasite) is not None:
        notes.append(f"The bottom layer '{base.name}' is itself an AI result; the recipe starts "
                     "from the input file instead.")
    entries = []                    # (layer, parasite) of the AI layers above the bottom one
    for layer in layers[1:]:
        par = read_parasite(layer.parasite)
        if layer.group:
            notes.append(f"Layer group '{layer.name}' is not part of the recipe (groups are not replayed).")
        elif par is None:
            notes.append(f"Layer '{layer.name}' is not an AI Enhance result and is not part of the recipe.")
        else:
            entries.append((layer, par))
    if not entries:
        raise RecipeError("the image has no AI Enhance layers to save (layers made by the filters "
                          "of Filters > AI Enhance carry their settings)")
    job_of = {par.get("job-id"): i for i, (_, par) in enumerate(entries) if par.get("job-id")}
    needed = {job_of[par.get("source-job")] for _, par in entries if par.get("source-job") in job_of}
    steps: list[Step] = []
    index_of: dict[int, int] = {}   # entry index -> step index
    for i, (layer, par) in enumerate(entries):
        where = f"layer '{layer.name}'"
        if not layer.visible and i not in needed:
            notes.append(f"Hidden {where} is not part of the recipe.")
            continue
        try:
            step = _step_from_parasite(par, where)
        except ParamError as e:
            raise RecipeError(f"{where}: {e}") from None
        mode = _layer_mode(layer.mode, step.op, where)
        source: str | int = SOURCE_IMAGE
        src_job = par.get("source-job")
        if src_job and src_job in job_of:
            j = job_of[src_job]
            if j not in index_of:
                raise RecipeError(f"{where} was made from an AI layer above it; move it back above "
                                  "its source before saving the recipe")
            source = index_of[j]
        elif src_job or (par.get("source-tattoo") is not None and base.tattoo is not None
                         and par.get("source-tattoo") != base.tattoo):
            notes.append(f"{_cap(where)} was made from a layer that is not in the recipe; "
                         "the batch runs it on the input image.")
        mask = step.mask
        msrc = par.get("mask-source", "")
        if msrc in ("selection", "result*selection"):
            notes.append(f"{_cap(where)} was masked by a selection, which does not transfer"
                         + ("; the backend's mask still applies." if msrc != "selection" else
                            "; the batch shows its whole result."))
        if mask == "selection":
            mask = "full"
        strength = max(0.0, min(1.0, float(layer.opacity) / 100.0)) if layer.visible else 0.0
        if not layer.visible:
            notes.append(f"Hidden {where} is only used as the source of a later step (strength 0).")
        steps.append(Step(op=step.op, model=step.model, scale=step.scale, strength=round(strength, 6),
                          mask=mask, tile=step.tile, options=step.options, post=step.post,
                          source=source, layer_mode=mode))
        index_of[i] = len(steps) - 1
    if not steps:
        raise RecipeError("every AI Enhance layer is hidden; show the ones the recipe should apply")
    # every value checked once more through the one validator, as a reader would
    return parse(Recipe(tuple(steps), tuple(notes), created_by).to_json())


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _step_from_parasite(par: dict, where: str) -> Step:
    spec = optable.BY_NAME.get(par.get("op"))
    if spec is None:
        raise RecipeError(f"its operation {par.get('op')!r} is unknown to this version; update the plug-in")
    job_names = {p.name for p in spec.job_params}
    raw = {"op": spec.name, "options": par.get("options") or {}, "post": par.get("post") or {},
           "source": SOURCE_IMAGE}
    for name in ("model", "scale", "strength", "mask", "tile-size"):
        if name in job_names and par.get(name) is not None:
            raw[name] = par[name]
    return parse_step(raw, 0)


#: GIMP layer-mode names (Gimp.LayerMode members, lower case) -> the table's modes.
GIMP_MODES = {"normal": optable.LayerMode.NORMAL, "lch_color": optable.LayerMode.LCH_COLOR,
              "grain_merge": optable.LayerMode.GRAIN_MERGE}


def _layer_mode(mode: str, op: str, where: str) -> str:
    m = GIMP_MODES.get(mode.lower().replace("-", "_"))
    if m is None:
        supported = ", ".join(k.replace("_", " ").title() for k in GIMP_MODES)
        raise RecipeError(f"{where} has layer mode '{mode}', which a batch cannot reproduce; use one of "
                          f"{supported}")
    return "" if m is optable.BY_NAME[op].layer_mode else m.value


def step_sources(recipe: Recipe) -> dict[int, int]:
    """For each step used as a source, the index of the last step that reads it (so a runner can
    drop its pixels afterwards)."""
    last: dict[int, int] = {}
    for i, s in enumerate(recipe.steps):
        if isinstance(s.source, int):
            last[s.source] = i
    return last
