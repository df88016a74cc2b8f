"""Recipes in a real GIMP 3 (3.0 and 3.2):

- ai_enhance.batch.composite reproduces GIMP's own flattening of Normal, Grain merge and LCh Color
  layers (opacity, masks, alpha; 8-bit, 16-bit, gray) within 1 level;
- Filters > AI Enhance > Save Recipe writes the recipe of a stack of AI layers made by the real
  filters (bottom to top, current opacity, sources, notes), its parasites survive an .xcf round
  trip, and replaying the recipe through the backend on the bottom layer gives GIMP's flattening
  of the stack within 1 level;
- a selection mask is reported in the recipe's notes; an image without AI layers is refused.
"""
import base64
import json

import numpy as np
import pytest

from ai_enhance.batch import composite as C
from ai_enhance.batch.apply import apply_recipe
from ai_enhance.batch.runners import ClientRunner
from ai_enhance_client import recipes

pytestmark = pytest.mark.gimp

DTYPES = {"u8": np.uint8, "u16": np.dtype("<u2"), "float": np.dtype("<f4")}
CHANNELS = {"R'G'B'A": 4, "R'G'B'": 3, "Y'A": 2, "Y'": 1, "Y": 1}

STACKS = {
    "three_steps": {
        "size": [40, 32], "extra": "hidden_plain_layer",
        "steps": [
            {"proc": "python-fu-ai-enhance-upscale", "model": "realesr-animevideov3", "on": -1,
             "props": {"scale": 1, "strength": 0.6, "mask": "full"}, "opacity": 70.0},
            {"proc": "python-fu-ai-enhance-sharpen", "model": "realesrgan-x4plus", "on": 0,
             "props": {"strength": 0.45, "mask": "selection"}},
            {"proc": "python-fu-ai-enhance-upscale", "model": "realesr-general-x4v3", "on": -1,
             "props": {"scale": 1, "strength": 0.8, "mask": "full"}},
        ]},
    "scaled": {
        "size": [24, 20],
        "steps": [
            {"proc": "python-fu-ai-enhance-upscale", "model": "realesr-animevideov3", "on": -1,
             "props": {"scale": 2, "strength": 1.0, "mask": "full"}},
            {"proc": "python-fu-ai-enhance-sharpen", "model": "realesrgan-x4plus", "on": 0,
             "props": {"strength": 0.5, "mask": "full"}},
        ]},
    "selection": {
        "size": [40, 32],
        "steps": [
            {"proc": "python-fu-ai-enhance-upscale", "model": "realesr-animevideov3", "on": -1,
             "select": [8, 6, 16, 12], "props": {"scale": 1, "strength": 1.0, "mask": "selection"}},
        ]},
}


def arr(d: dict) -> np.ndarray:
    model, kind = d["fmt"].split()
    a = np.frombuffer(base64.b64decode(d["b64"]), DTYPES[kind])
    return a.reshape(d["h"], d["w"], CHANNELS[model])


@pytest.fixture(scope="module")
def recipe_run(gimp, e2e_backend):
    return gimp.run("recipe.py", timeout=600, env={"AI_ENHANCE_ENDPOINT": e2e_backend.endpoint},
                    params={"stacks": STACKS})


def test_save_recipe_is_registered(recipe_run):
    info = recipe_run.case("registered")["save"]
    assert info is not None, "python-fu-ai-enhance-save-recipe is not in the PDB"
    assert info["menu_paths"] == ["<Image>/Filters/AI Enhance"]
    assert info["menu_label"] == "Save _Recipe..."
    assert "file" in info["args"] and info["return_values"] == ["steps"]


@pytest.mark.parametrize("name", ["rgb_u8", "rgb_u16", "gray_u8", "rgba_base"])
def test_composite_matches_gimp_flattening(recipe_run, name):
    r = recipe_run.case(f"composite_{name}")
    base = arr(r["base"])
    comp = C.to_linear_rgba(base)
    for layer in r["layers"]:
        mask = arr(layer["mask"])[:, :, 0] if "mask" in layer else None
        comp = C.composite(comp, C.to_linear_rgba(arr(layer["pixels"])), opacity=layer["opacity"] / 100.0,
                           mask=mask, mode=recipes.GIMP_MODES[layer["mode"]])
    flat = arr(r["flat"])
    ours = C.from_linear_rgba(comp, flat.dtype, flat.shape[2])
    diff = np.abs(ours.astype(np.int64) - flat.astype(np.int64))
    level = 257 if flat.dtype != np.uint8 else 1          # one 8-bit level
    if flat.shape[2] in (2, 4):
        # where the result is fully transparent GIMP keeps whatever colour: only alpha counts
        visible = flat[:, :, -1] > 0
        diff = diff * visible[:, :, None]
    assert diff.max() <= level, (name, int(diff.max()), np.argwhere(diff == diff.max())[:3].tolist())
    # the layers made a difference (the test compares something)
    assert np.abs(flat.astype(np.int64) - base.astype(np.int64)).max() > 8 * level


def _recipe(run, name) -> recipes.Recipe:
    saved = run.case(f"stack_{name}")["saved"]
    assert saved["success"], saved
    return recipes.loads(saved["text"])


def test_save_recipe_writes_the_stack(recipe_run):
    r = recipe_run.case("stack_three_steps")
    assert r["saved"]["steps"] == 3
    doc = json.loads(r["saved"]["text"])
    assert doc["format"] == "ai-enhance-recipe" and doc["version"] == recipes.VERSION
    steps = doc["steps"]
    # bottom to top: a filter puts its layer directly above its source, so the third filter's
    # layer (run on the photo) lies under the first two
    assert [(s["op"], s["model"], s["source"]) for s in steps] == [
        ("upscale", "realesr-general-x4v3", "image"),
        ("upscale", "realesr-animevideov3", "image"),
        ("sharpen", "realesrgan-x4plus", 1)]
    # the current opacity (70 % set after the run), not the strength the filter ran with
    assert [s["strength"] for s in steps] == [pytest.approx(0.8), pytest.approx(0.7), pytest.approx(0.45)]
    assert [s["mask"] for s in steps] == ["full", "full", "full"]
    assert steps[0]["scale"] == 1 and "scale" not in steps[2]
    assert recipes.MASK_NOTE in doc["notes"]
    assert any("'retouch'" in n for n in doc["notes"]), doc["notes"]
    # every layer carries a persistent parasite naming what made it and on what
    pars = r["parasites"]
    assert pars[0]["parasite"] is None and pars[-1]["parasite"] is None      # photo, retouch
    ai = [p["parasite"] for p in pars[1:4]]
    assert all(p["job-id"] and p["backend-version"] for p in ai)
    assert ai[2]["source-job"] == ai[1]["job-id"] and ai[1]["source-job"] is None
    assert ai[0]["source-tattoo"] == ai[1]["source-tattoo"] == pars[0]["tattoo"]
    assert (ai[1]["op"], ai[1]["model"], ai[1]["strength"], ai[1]["mask"]) == \
        ("upscale", "realesr-animevideov3", 0.6, "full")                     # as the filter ran
    assert all(p["persistent"] for p in pars[1:4])
    # the parasites survive .xcf: the reloaded image saves the same recipe
    assert r["reloaded"]["success"], r["reloaded"]
    assert recipes.loads(r["reloaded"]["text"]).steps == recipes.loads(r["saved"]["text"]).steps


@pytest.mark.parametrize("name", ["three_steps", "scaled"])
def test_replaying_the_recipe_gives_gimps_flattening(recipe_run, e2e_backend, name):
    r = recipe_run.case(f"stack_{name}")
    recipe = _recipe(recipe_run, name)
    base, flat = arr(r["base"]), arr(r["flat"])
    runner = ClientRunner(e2e_backend.endpoint)
    try:
        ours = apply_recipe(recipe, base, runner)
    finally:
        runner.close()
    assert ours.shape == flat.shape and ours.dtype == flat.dtype
    assert flat.shape[0] == base.shape[0] * recipe.max_scale
    diff = np.abs(ours.astype(np.int64) - flat.astype(np.int64))
    assert diff.max() <= 1, (name, int(diff.max()))
    if flat.shape == base.shape:     # the layers changed the picture (the comparison means something)
        assert np.abs(flat.astype(np.int64) - base).max() > 8


def test_selection_masks_are_noted(recipe_run):
    r = recipe_run.case("stack_selection")
    doc = json.loads(r["saved"]["text"])
    assert doc["steps"][0]["mask"] == "full"
    assert any("selection" in n and "whole result" in n for n in doc["notes"]), doc["notes"]
    assert r["parasites"][1]["parasite"]["mask-source"] == "selection"


def test_image_without_ai_layers_is_refused(recipe_run):
    r = recipe_run.case("no_ai_layers")
    assert not r["success"] and not r["file_exists"]
    assert "no AI Enhance layers" in r["error"], r["error"]
