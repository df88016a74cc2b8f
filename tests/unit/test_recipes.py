"""Recipes: the document format, the one validator's errors (naming step and field), post
parameters taken generically from the table, the layer parasite and Save Recipe's reading of a
layer stack."""
import dataclasses
import json

import pytest

from ai_enhance_client import ops as optable
from ai_enhance_client import recipes as R
from ai_enhance_client.params import Kind, Param, Stage


def doc(*steps, **top):
    return dict({"format": R.FORMAT, "version": R.VERSION, "steps": list(steps)}, **top)


def test_round_trip_and_defaults():
    r = R.parse(doc({"op": "upscale", "model": "realesrgan-x4plus", "scale": 4, "strength": 0.5,
                     "options": {"denoise-strength": 0.3}},
                    {"op": "denoise", "source": 0, "mask": "full"}))
    up, dn = r.steps
    assert (up.op, up.model, up.scale, up.strength, up.mask, up.tile) == ("upscale", "realesrgan-x4plus", 4, 0.5,
                                                                           "selection", 0)
    assert up.options == {"denoise-strength": 0.3}
    # unspecified: the table's defaults, "" model = the best installed one, composite source
    assert (dn.model, dn.scale, dn.strength, dn.source) == ("", 1, 1.0, 0)
    assert dn.options == {"noise-level": 0.0}
    assert R.parse(r.to_json()) == r
    assert R.loads(r.dumps()) == r
    # denoise has no scale: the written step has no scale field either
    assert "scale" not in r.to_json()["steps"][1]


@pytest.mark.parametrize("step, words", [
    ({"op": "denoise", "options": {"noise-level": 99}}, ["step 0 (denoise) options", "noise-level", "99"]),
    ({"op": "upscale", "scale": 9}, ["step 0 (upscale)", "scale"]),
    ({"op": "upscale", "strength": "much"}, ["step 0 (upscale)", "strength"]),
    ({"op": "faces", "mask": "sky"}, ["step 0 (faces)", "mask", "sky"]),
    ({"op": "upscale", "options": {"noise-level": 3}}, ["step 0 (upscale) options", "unknown", "noise-level"]),
    ({"op": "upscale", "colour": 1}, ["step 0 (upscale)", "unknown field", "colour"]),
    ({"op": "upscale", "source": 0}, ["step 0 (upscale)", "source"]),
    ({"op": "upscale", "layer-mode": "multiply"}, ["step 0 (upscale)", "layer-mode", "multiply"]),
    ({"op": "paint"}, ["step 0", "op", "paint"]),
    ({"op": "upscale", "options": [1]}, ["step 0 (upscale)", "options"]),
])
def test_errors_name_the_step_and_field(step, words):
    with pytest.raises(R.RecipeError) as e:
        R.parse(doc(step))
    for w in words:
        assert w in str(e.value), (w, str(e.value))


def test_error_names_the_right_step_index():
    with pytest.raises(R.RecipeError, match=r"step 2 \(jpeg\) options: quality"):
        R.parse(doc({"op": "upscale"}, {"op": "denoise"}, {"op": "jpeg", "options": {"quality": 101}}))


@pytest.mark.parametrize("bad, words", [
    ([], ["a recipe is a JSON object"]),
    ({"format": "x", "version": 1, "steps": []}, ["format"]),
    (doc(version=R.VERSION + 1), ["newer", "update"]),
    (doc(), ["non-empty"]),
    (dict(doc({"op": "upscale"}), extra=1), ["unknown recipe field", "extra"]),
    (dict(doc({"op": "upscale"}), notes="x"), ["notes"]),
])
def test_document_errors(bad, words):
    with pytest.raises(R.RecipeError) as e:
        R.parse(bad)
    for w in words:
        assert w in str(e.value)


def test_not_json():
    with pytest.raises(R.RecipeError, match="not valid JSON"):
        R.loads("{")


def test_load_names_the_file(tmp_path):
    p = tmp_path / "r.json"
    p.write_text(json.dumps(doc({"op": "upscale", "scale": 0})))
    with pytest.raises(R.RecipeError, match=str(p)):
        R.load(p)
    with pytest.raises(R.RecipeError, match="cannot read"):
        R.load(tmp_path / "missing.json")


def test_digest_is_about_the_pixels_only():
    a = R.parse(doc({"op": "upscale", "strength": 0.5, "scale": 2}))
    b = R.parse(doc({"scale": 2, "strength": 0.50, "op": "upscale"}, notes=["hello"], **{"created-by": "x"}))
    assert a.digest() == b.digest()
    assert a.digest("png") != a.digest("jpg")
    c = R.parse(doc({"op": "upscale", "strength": 0.6, "scale": 2}))
    assert a.digest() != c.digest()


def test_post_parameters_come_from_the_table(monkeypatch):
    """A Stage.POST parameter added to a row is accepted under "post" (and only there) with no
    change to recipes.py."""
    up = optable.BY_NAME["upscale"]
    extra = Param("grain-amount", Kind.FLOAT, 0.0, "_Grain", "film grain added back", min=0.0, max=1.0,
                  stage=Stage.POST)
    row = dataclasses.replace(up, params=up.params + (extra,))
    monkeypatch.setitem(optable.BY_NAME, "upscale", row)
    defaults = {p.name: p.default for p in row.params if p.stage is Stage.POST}
    assert defaults["grain-amount"] == 0.0 and len(defaults) > 1     # next to the row's own dials
    r = R.parse(doc({"op": "upscale", "post": {"grain-amount": 0.25}}))
    assert r.steps[0].post == {**defaults, "grain-amount": 0.25}
    assert R.parse(doc({"op": "upscale"})).steps[0].post == defaults
    with pytest.raises(R.RecipeError, match=r"step 0 \(upscale\) post: grain-amount"):
        R.parse(doc({"op": "upscale", "post": {"grain-amount": 2}}))
    with pytest.raises(R.RecipeError, match="options: unknown parameter 'grain-amount'"):
        R.parse(doc({"op": "upscale", "options": {"grain-amount": 0.1}}))
    with pytest.raises(R.RecipeError, match="post: unknown parameter"):
        R.parse(doc({"op": "denoise", "post": {"grain-amount": 0.1}}))


def test_single_step_recipe():
    r = R.single("upscale", model="realesr-animevideov3", scale=4, strength=0.8, mask="full")
    s = r.steps[0]
    assert (s.op, s.model, s.scale, s.strength, s.mask, s.source) == \
        ("upscale", "realesr-animevideov3", 4, 0.8, "full", "image")
    with pytest.raises(R.RecipeError, match="scale"):
        R.single("denoise", scale=2)
    with pytest.raises(R.RecipeError, match="noise-level"):
        R.single("denoise", options={"noise-level": -1})


def test_masks_only_operations_make_no_step(monkeypatch):
    row = dataclasses.replace(optable.BY_NAME["upscale"], name="find-damage", result=optable.ResultKind.CHANNEL)
    monkeypatch.setitem(optable.BY_NAME, "find-damage", row)
    with pytest.raises(R.RecipeError, match="makes no layer"):
        R.parse(doc({"op": "find-damage"}))


# --------------------------------------------------------------------------- parasites and Save Recipe

def parasite(op="upscale", *, job, source_job=None, tattoo=1, mask="selection", mask_source="white",
             strength=1.0, **kw):
    d = dict(op=op, model=kw.pop("model", "realesrgan-x4plus"), scale=kw.pop("scale", 1),
             strength=strength, mask=mask, tile=0, options=kw.pop("options", {}), post={},
             mask_source=mask_source, backend_version="0.1.0", job_id=job, source_job=source_job,
             source_tattoo=tattoo)
    if op == "denoise":
        d["options"] = d["options"] or {"noise-level": 12.0}
    return R.layer_parasite(**d)


def test_parasite_round_trip():
    raw = parasite(job="j1", options={"denoise-strength": 0.2})
    p = R.read_parasite(raw)
    assert p["op"] == "upscale" and p["job-id"] == "j1" and p["options"] == {"denoise-strength": 0.2}
    assert p["source-tattoo"] == 1 and p["mask-source"] == "white"
    assert R.read_parasite(b"not json") is None and R.read_parasite(None) is None
    assert R.read_parasite(b'{"x": 1}') is None


def test_recipe_from_layers_bottom_to_top():
    layers = [
        R.LayerInfo("photo", None, tattoo=1),
        R.LayerInfo("AI Upscale", parasite(job="a", strength=0.6), opacity=70.0, tattoo=2),
        R.LayerInfo("AI Denoise", parasite("denoise", job="b", source_job="a", tattoo=2, mask="full"),
                    opacity=45.0, tattoo=3),
        R.LayerInfo("retouch", None, tattoo=4),
        R.LayerInfo("AI Upscale 2", parasite(job="c", model="realesr-animevideov3", scale=2,
                                             mask_source="selection"), tattoo=5),
    ]
    r = R.recipe_from_layers(layers, created_by="test")
    assert [(s.op, s.source, s.strength, s.mask) for s in r.steps] == [
        ("upscale", "image", 0.7, "full"), ("denoise", 0, 0.45, "full"), ("upscale", "image", 1.0, "full")]
    assert r.steps[1].options == {"noise-level": 12.0} and r.steps[2].scale == 2
    assert R.MASK_NOTE in r.notes
    assert any("'retouch'" in n for n in r.notes)
    assert any("'AI Upscale 2'" in n and "selection" in n for n in r.notes)
    assert r.created_by == "test"


def test_hidden_layers_are_left_out_unless_a_source():
    layers = [R.LayerInfo("photo", None, tattoo=1),
              R.LayerInfo("A", parasite(job="a"), visible=False),
              R.LayerInfo("B", parasite(job="b"), visible=False),
              R.LayerInfo("C", parasite(job="c", source_job="b"))]
    r = R.recipe_from_layers(layers)
    assert [(s.strength, s.source) for s in r.steps] == [(0.0, "image"), (1.0, 0)]
    assert any("Hidden layer 'A'" in n for n in r.notes)


def test_faces_mask_transfers():
    layers = [R.LayerInfo("photo", None, tattoo=1),
              R.LayerInfo("faces", parasite("faces", job="f", model="gfpgan-v1.4", mask="faces",
                                            mask_source="result*selection"))]
    r = R.recipe_from_layers(layers)
    assert r.steps[0].mask == "faces" and r.steps[0].backend_mask == "faces"
    assert any("backend's mask still applies" in n for n in r.notes)


def test_layer_modes():
    par = parasite(job="a")
    r = R.recipe_from_layers([R.LayerInfo("p", None), R.LayerInfo("a", par, mode="grain_merge")])
    assert r.steps[0].mode is optable.LayerMode.GRAIN_MERGE
    assert r.to_json()["steps"][0]["layer-mode"] == "grain-merge"
    with pytest.raises(R.RecipeError, match="layer mode 'multiply'"):
        R.recipe_from_layers([R.LayerInfo("p", None), R.LayerInfo("a", par, mode="multiply")])


def test_nothing_to_save():
    with pytest.raises(R.RecipeError, match="no AI Enhance layers"):
        R.recipe_from_layers([R.LayerInfo("photo", None), R.LayerInfo("paint", None)])
    with pytest.raises(R.RecipeError, match="every AI Enhance layer is hidden"):
        R.recipe_from_layers([R.LayerInfo("photo", None), R.LayerInfo("a", parasite(job="a"), visible=False)])


def test_unknown_operation_in_a_parasite():
    bad = json.dumps({"op": "levitate", "job-id": "x"}).encode()
    with pytest.raises(R.RecipeError, match="levitate"):
        R.recipe_from_layers([R.LayerInfo("p", None), R.LayerInfo("a", bad)])
