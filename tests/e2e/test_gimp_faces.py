"""Filters > AI Enhance > Restore Faces... in a real GIMP 3 against a real backend: the real face
detector finds the astronaut's face, a random-weight restorer (real architecture) restores it, the
new layer is masked to the face (times the selection when there is one)."""
import base64

import numpy as np
import pytest

pytestmark = pytest.mark.gimp

SIDE = 256


def arr(d, channels):
    a = np.frombuffer(base64.b64decode(d["b64"]), np.uint8)
    return a.reshape(d["h"], d["w"], channels)


@pytest.fixture(scope="module")
def photo():
    import cv2
    skimage_data = pytest.importorskip("skimage.data")
    img = cv2.resize(skimage_data.astronaut(), (SIDE, SIDE), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(img)


# the astronaut's face lies around x 85..130, y 25..90 at 256 px; the selection covers its left
# part and reaches well beyond it upwards/downwards
SEL = (60, 0, 45, 140)


@pytest.fixture(scope="module")
def faces_run(gimp, faces_backend, photo):
    return gimp.run("faces.py", env={"AI_ENHANCE_ENDPOINT": faces_backend.endpoint}, timeout=300,
                    params={"model": "tiny-restoreformer", "w": SIDE, "h": SIDE, "sel": SEL},
                    files={"photo.rgb": photo.tobytes()})


def new_layer(r, scale=1):
    assert r["run"]["success"], r["run"]
    lid = r["run"]["layer_id"]
    assert lid
    after = {l["id"]: l for l in r["after"]["layers"]}
    new, src = after[lid], after[r["src_id"]]
    # short and friendly: what it did (the scale only when it enlarged), then the model
    assert new["name"] == ("AI Restore Faces" + (f" \u00d7{scale}" if scale != 1 else "")
                           + " \u00b7 tiny-restoreformer")
    assert new["parent"] == src["parent"] and new["position"] == src["position"] - 1
    # Restore Faces puts grain back by default (40 %, the table's default): its own Grain merge
    # layer directly above the result, masked like it; nothing else is added
    added = [l for l in r["after"]["layers"] if l["id"] not in {b["id"] for b in r["before"]["layers"]}]
    grain = [l for l in added if l["id"] != lid]
    assert len(added) == 2 and len(grain) == 1, [l["name"] for l in added]
    grain = grain[0]
    assert grain["name"] == "AI grain \u00b7 Restore Faces" and grain["mode"] == "grain-merge"
    assert grain["opacity"] == pytest.approx(40.0) and grain["has_mask"]
    assert grain["parent"] == new["parent"] and grain["position"] == new["position"] - 1
    assert grain["offsets"] == new["offsets"] and grain["size"] == new["size"]
    return new, src


def test_mask_covers_the_face_only(faces_run):
    r = faces_run.case("faces_mask_faces")
    new, src = new_layer(r)
    assert new["offsets"] == [0, 0] and new["size"] == [SIDE, SIDE]
    assert new["opacity"] == pytest.approx(80.0)
    mask = arr(r["mask"], 1)[..., 0]
    ys, xs = np.nonzero(mask > 128)
    assert len(xs) > 500, "a face-sized area shows"
    cx, cy = xs.mean(), ys.mean()
    assert 80 < cx < 140 and 20 < cy < 100, (cx, cy)
    assert mask.max() == 255 and (mask[:, :40] == 0).all() and (mask[150:, :] == 0).all()
    assert ((mask > 0) & (mask < 255)).any(), "soft edges"
    out, src_px = arr(r["pixels"], 4), arr(r["src_before"], 4)
    # where the mask hides the layer it holds the untouched background (bit for bit at scale 1)
    np.testing.assert_array_equal(out[mask == 0][:, :3], src_px[mask == 0][:, :3])
    assert np.abs(out[mask == 255][:, :3].astype(int) - src_px[mask == 255][:, :3]).mean() > 5, \
        "the face itself was replaced by the restorer's output"


def test_faces_mask_times_selection(faces_run):
    r = faces_run.case("faces_times_selection")
    new, src = new_layer(r)
    x0, y0 = new["offsets"]
    sx, sy, sw, sh = SEL
    assert x0 == 10 + sx and y0 == 6 + sy, "the layer covers the selection box"
    assert new["size"] == [sw, sh]
    mask = arr(r["mask"], 1)[..., 0].astype(int)
    sel = arr(r["selection_under_layer"], 1)[..., 0]
    assert (sel == 255).all()
    assert mask.max() == 255
    ys, xs = np.nonzero(mask > 128)
    assert xs.max() < sw and 80 < xs.mean() + sx < 110, "the face's left part"


def test_mask_full_and_scale2(faces_run):
    r = faces_run.case("faces_mask_full_scale2")
    new, src = new_layer(r, scale=2)
    assert r["after"]["size"] == [2 * SIDE, 2 * SIDE]
    assert new["size"] == src["size"] == [2 * SIDE, 2 * SIDE]
    assert (arr(r["mask"], 1) == 255).all()


def test_no_face_adds_nothing(faces_run):
    r = faces_run.case("no_face")
    assert r["run"]["success"] and r["run"]["layer_id"] is None
    assert r["after"] == r["before"]
