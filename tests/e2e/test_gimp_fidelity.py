"""The fidelity dials in a real GIMP 3 (3.0 and 3.2) against the real backend: mask 'changes' is
the inverse change map, grain is its own Grain merge layer at opacity = grain, the change map a
hidden layer; AI Re-tune replaces the result with new dials without running the model (the backend
says it reused its raw output), in place, together with its grain and change-map layers."""
import base64

import numpy as np
import pytest

pytestmark = pytest.mark.gimp

MODEL = "realesr-animevideov3"          # a random Compact: an inventive x4 model


def arr(d: dict, c: int) -> np.ndarray:
    return np.frombuffer(base64.b64decode(d["b64"]), np.uint8).reshape(d["h"], d["w"], c)


@pytest.fixture(scope="module")
def fid_run(gimp, e2e_backend):
    import cv2
    import skimage.data

    img = cv2.resize(skimage.data.astronaut()[40:200, 150:310], (96, 96), interpolation=cv2.INTER_AREA)
    rng = np.random.default_rng(0)
    img = np.clip(img + rng.normal(0, 8, img.shape), 0, 255).astype(np.uint8)
    return gimp.run("fidelity.py", timeout=300, env={"AI_ENHANCE_ENDPOINT": e2e_backend.endpoint},
                    params={"model": MODEL, "w": 96, "h": 96}, files={"photo.rgb": img.tobytes()})


def test_changes_mask_grain_layer_and_hidden_change_map(fid_run):
    r = fid_run.case("dials_and_retune")
    assert r["run"]["success"], r["run"]
    layers = r["after"]
    names = [l["name"] for l in layers]
    new = next(l for l in layers if l["id"] == r["run"]["layer_id"])
    grain = next(l for l in layers if l["name"].startswith("AI grain"))
    changes = next(l for l in layers if l["name"] == "AI changes")
    photo = next(l for l in layers if l["name"] == "photo")
    # top to bottom: change map (hidden), grain, result, photo
    assert [changes["position"], grain["position"], new["position"], photo["position"]] == [0, 1, 2, 3], names
    assert not changes["visible"] and grain["mode"] == "grain-merge" and grain["opacity"] == pytest.approx(70.0)
    assert grain["has_mask"] and new["opacity"] == pytest.approx(80.0)
    mask = arr(r["mask"], 1)[..., 0]
    # the inverse of the change map: below white where the model departed from the photo, varying
    assert mask.max() > 200 and int(mask.max()) - int(mask.min()) >= 5 and mask.mean() < 254
    par = r["parasite"]
    assert par["post"]["grain"] == 0.7 and par["post"]["fidelity"] == 0.5 and par["mask"] == "changes"
    assert par["raw-key"] and par["crop"] and par["roi"]


def test_retune_replaces_the_result_without_running_the_model(fid_run):
    r = fid_run.case("dials_and_retune")
    t = r["retune"]
    assert t["success"], t
    layers = r["after_retune"]
    names = [l["name"] for l in layers]
    assert not any(n.startswith("AI grain") or n == "AI changes" for n in names), names   # replaced too
    tuned = next(l for l in layers if l["id"] == t["layer_id"])
    photo = next(l for l in layers if l["name"] == "photo")
    assert tuned["position"] == photo["position"] - 1 and tuned["opacity"] == pytest.approx(50.0)
    assert len(layers) == 2
    par = r["tuned_parasite"]
    assert par["post"]["fidelity"] == 1.0 and par["post"]["grain"] == 0.0 and par["mask"] == "full"
    assert par["raw-key"] == r["parasite"]["raw-key"], "the same raw output"
    assert (arr(r["tuned_mask"], 1) == 255).all()
    before, after = arr(r["pixels"], 4).astype(int), arr(r["tuned_pixels"], 4).astype(int)
    assert before.shape == after.shape and np.abs(before - after).mean() > 0.5   # fidelity 1 moved it


def test_retune_refuses_a_layer_that_is_not_an_ai_result(fid_run):
    bad = fid_run.case("dials_and_retune")["retune_photo"]
    assert not bad["success"] and "not made by an AI Enhance filter" in bad["error"]
    assert "\n" not in bad["error"]
