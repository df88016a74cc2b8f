"""The retoucher's side of the dialog, as pure decisions (no GIMP): words, model list, defaults,
what the dialog shows, the preview's geometry and compositing (ai_enhance_client/filters.py,
preview.py, ops.py)."""
import sys
from pathlib import Path

import pytest

PLUGIN = Path(__file__).resolve().parents[2] / "plugin" / "ai-enhance"
sys.path.insert(0, str(PLUGIN))

from ai_enhance_client import filters as F  # noqa: E402
from ai_enhance_client import ops as optable  # noqa: E402
from ai_enhance_client import preview as PV  # noqa: E402
from ai_enhance_client.geometry import Box  # noqa: E402

UP, FACES, DEN, JPEG = (optable.BY_NAME[n] for n in ("upscale", "faces", "denoise", "jpeg"))


def test_menu_labels_say_what_repeat_and_undo_will_say():
    for op in optable.menu_ops():
        plain = op.menu_label.replace("_", "")
        assert plain.startswith(op.title) and plain.endswith("..."), op.menu_label
    assert UP.menu_label.replace("_", "") == "AI Upscale..."
    assert FACES.menu_label.replace("_", "") == "AI Restore Faces..."
    mnemonics = [op.menu_label[op.menu_label.index("_") + 1].lower() for op in optable.menu_ops()]
    assert len(set(mnemonics)) == len(mnemonics), "one mnemonic per entry of the submenu"


# GIMP's own dialog buttons (_Cancel, _OK, _Reset, _Help, _Load Defaults, _Save Defaults) and the
# plug-in's fixed widgets (_Preview, Do_wnload, Ad_vanced): GIMP prints "duplicate mnemonic" for
# any property label that reuses one
DIALOG_MNEMONICS = {"c": "Cancel", "o": "OK", "r": "Reset", "h": "Help", "l": "Load Defaults",
                    "s": "Save Defaults", "p": "Preview", "w": "Download", "v": "Advanced"}


def test_every_dialog_control_has_its_own_mnemonic():
    for op in optable.menu_ops():
        seen = dict(DIALOG_MNEMONICS)
        for p in op.all_params:
            assert p.label.count("_") == 1, (op.name, p.label)
            key = p.label[p.label.index("_") + 1].lower()
            assert key.isalpha() and key not in seen, (op.name, p.label, seen.get(key))
            seen[key] = p.label


def test_defaults_follow_the_fields_advice():
    assert FACES.param("strength").default == pytest.approx(0.6)
    assert UP.param("strength").default == 1.0
    for op in optable.menu_ops():
        st = op.param("strength")
        assert (st is not None) == (op.result is optable.ResultKind.LAYER), op.name   # a layer's opacity
        assert st is None or (st.percent and st.unit == "%")
        if op.tile:
            assert op.param("tile-size").advanced and op.param("tile-size").default == 0
        for p in op.all_params:
            assert p.help and p.label, (op.name, p.name)     # every control has a tooltip


def test_layer_names_are_short_and_keep_the_measurements():
    assert F.layer_name(UP, "realesrgan-x4plus", 2, short="Real-ESRGAN") == "AI Upscale \u00d72 \u00b7 Real-ESRGAN"
    assert F.layer_name(UP, "nearest-x4", 1) == "AI Upscale \u00d71 \u00b7 nearest-x4"
    assert F.layer_name(DEN, "ffdnet-color", 1, {"noise_level": 23, "noise_level_estimated": True},
                        short="FFDNet") == "AI Denoise \u00b7 FFDNet \u03c323 (auto)"
    assert F.layer_name(JPEG, "fbcnn-color", 1, {"quality": 40, "quality_estimated": True},
                        short="FBCNN") == "AI JPEG Cleanup \u00b7 FBCNN q40 (auto)"
    assert F.layer_name(FACES, "gfpgan-v1.4", 1, short="GFPGAN 1.4") == "AI Restore Faces \u00b7 GFPGAN 1.4"


CAPS = {"models": [
    {"id": "realesrgan-x4plus-anime", "name": "Anime", "installed": True, "ops": ["upscale"],
     "kind": "illustration"},
    {"id": "realesr-general-x4v3", "name": "General v3", "installed": True, "ops": ["upscale"],
     "kind": "photo", "arch": "Compact", "companions": ["realesr-general-wdn-x4v3"]},
    {"id": "realesrgan-x4plus", "name": "Real-ESRGAN x4plus", "installed": False, "ops": ["upscale"],
     "kind": "photo", "size": 67040989, "url": "u", "sha256": "s", "short": "Real-ESRGAN"},
    {"id": "nearest-x4", "name": "nearest-x4 (custom)", "installed": True, "ops": ["upscale"], "custom": True,
     "status": "custom"},
    {"id": "realesr-general-wdn-x4v3", "name": "wdn", "installed": True, "ops": ["upscale"], "role": "companion"},
    {"id": "gfpgan-v1.4", "name": "GFPGAN v1.4 (faces)", "installed": False, "ops": ["faces"], "kind": "photo",
     "size": 348632874, "url": "u", "sha256": "s", "companions": ["retinaface-resnet50"]},
    {"id": "codeformer", "name": "CodeFormer", "installed": True, "ops": ["faces"], "kind": "photo",
     "arch": "CodeFormer", "companions": ["retinaface-resnet50"]},
    {"id": "retinaface-resnet50", "name": "det", "installed": False, "role": "face_detector", "ops": [],
     "size": 109497761, "url": "u", "sha256": "s"},
]}


def test_model_rows_installed_first_photo_before_illustration_sizes_of_missing():
    rows = F.model_rows(CAPS, UP)
    assert [r.id for r in rows] == ["realesr-general-x4v3", "nearest-x4", "realesrgan-x4plus-anime",
                                    "realesrgan-x4plus"]
    missing = rows[-1]
    assert not missing.installed and missing.download == 67040989
    assert missing.label == "Real-ESRGAN x4plus \u2014 download 67 MB"
    assert "\u00d7" not in " ".join(r.label for r in rows), "no native scale beside the Scale control"
    faces = F.model_rows(CAPS, FACES)
    assert [r.id for r in faces] == ["codeformer", "gfpgan-v1.4"]
    assert faces[1].download == 348632874 + 109497761, "the face detector comes with it"
    assert "458 MB" in faces[1].label


def test_best_model_is_the_best_installed_unless_the_last_one_is_installed():
    rows = F.model_rows(CAPS, UP)
    assert F.best_model(rows, "realesrgan-x4plus") == "realesr-general-x4v3", "not a missing default"
    assert F.best_model(rows, "nearest-x4") == "nearest-x4"
    nothing = F.model_rows({"models": [m for m in CAPS["models"] if m["id"] == "gfpgan-v1.4"]}, FACES)
    assert F.best_model(nothing, "gfpgan-v1.4") == "gfpgan-v1.4", "nothing installed: offer the download"


def test_codeformer_weight_only_for_codeformer():
    rows = {r.id: r for r in F.model_rows(CAPS, FACES)}
    assert "codeformer-weight" in F.applicable(FACES, rows["codeformer"])
    assert "codeformer-weight" not in F.applicable(FACES, rows["gfpgan-v1.4"])
    up = {r.id: r for r in F.model_rows(CAPS, UP)}
    assert "denoise-strength" in F.applicable(UP, up["realesr-general-x4v3"])
    assert "denoise-strength" not in F.applicable(UP, up["nearest-x4"])
    assert {"strength", "scale", "tile-size"} <= F.applicable(UP, up["nearest-x4"])


def test_size_summary():
    assert F.size_summary(UP, image_size=(700, 464), area=(700, 464), selection=False, scale=2) == \
        ("Image 700 \u00d7 464 \u2192 1400 \u00d7 928", "Processes the whole layer (700 \u00d7 464)")
    assert F.size_summary(DEN, image_size=(700, 464), area=(120, 80), selection=True, scale=1) == \
        ("Output 120 \u00d7 80 (same size)", "Processes the selection (120 \u00d7 80)")


@pytest.mark.parametrize("kind, message, words", [
    ("connection", "no ai-enhance backend answers at tcp://x and none is installed to start; run ...",
     "Run the AI Enhance installer once"),
    ("connection", "the backend exited at start (boom); run `x` in a terminal", "ai-enhance doctor"),
    ("model_missing", "model 'gfpgan-v1.4' is not installed", "click Download"),
    ("out_of_memory", "out of memory", "smaller tile size under Advanced"),
    ("internal", "internal backend error (KeyError)", "/var/log/b.log"),
    ("bad_request", "unknown message type 'models'", "older than the plug-in"),
])
def test_errors_say_what_to_do_inside_gimp(kind, message, words):
    text = F.explain(kind, message, log="/var/log/b.log")
    assert words in text and message in text, "the plain words, then the technical line"
    assert text.index(words) < text.index(message) and "\n" not in text


def test_preview_region_is_a_1to1_view_of_the_result_with_context():
    r = PV.region((700, 464), (350, 232), 4)
    assert r.box == Box(318, 200, 64, 64) and r.out_size == (256, 256)
    assert r.crop == Box(286, 168, 128, 128) and r.roi == Box(32, 32, 64, 64)
    r = PV.region((700, 464), (5, 460), 1)                 # clamped to the layer
    assert r.box == Box(0, 208, 256, 256) and r.crop == Box(0, 176, 288, 288)
    r = PV.region((40, 30), (20, 15), 2)                   # a small layer: all of it
    assert r.box == Box(0, 0, 40, 30) and r.crop == r.box
    assert PV.pan((100, 100), (40, -8), 4) == (90, 102)


def test_preview_starts_at_the_selection_or_the_most_detailed_area():
    assert PV.default_center((700, 464), Box(100, 40, 50, 20), None) == (125, 50)
    w, h = 32, 24
    flat = bytearray([128] * (w * h))
    for y in range(16, 24):                  # a checkerboard at the bottom right
        for x in range(24, 32):
            flat[y * w + x] = 255 if (x + y) % 2 else 0
    cx, cy = PV.default_center((320, 240), None, (bytes(flat), w, h))
    assert 240 <= cx <= 320 and 160 <= cy <= 240
    assert PV.default_center((320, 240), None, None) == (160, 120)


def test_preview_compositing():
    before, after = bytes([0, 100, 200] * 4), bytes([200, 100, 0] * 4)
    assert PV.blend(before, after, 1.0) == after and PV.blend(before, after, 0.0) == before
    assert PV.blend(before, after, 0.5)[:3] == bytes([100, 100, 100])
    masked = PV.blend(before, after, 1.0, mask=bytes([255, 0, 255, 128]))
    assert masked[:3] == after[:3] and masked[3:6] == before[3:6] and all(abs(v - 100) <= 1 for v in masked[9:12])
    s = PV.split(before, after, 4, 1, 2)
    assert s[:6] == before[:6] and s[6:9] == b"\xff\xff\xff" and s[9:] == after[9:]
    big = PV.enlarge(bytes([1, 2, 3, 4, 5, 6]), 2, 1, 2)
    assert big == bytes([1, 2, 3, 1, 2, 3, 4, 5, 6, 4, 5, 6] * 2)
    assert PV.gray_to_rgb(b"\x01\x02") == b"\x01\x01\x01\x02\x02\x02"


def test_preview_of_a_mask_a_colour_layer_and_a_layer_group():
    before = bytes([100, 100, 100] * 3)
    # Find Damage: found pixels tinted red, the rest untouched
    o = PV.overlay(before, bytes([255, 0, 128]))
    assert o[3:6] == before[3:6]
    assert o[0] >= 190 and o[1] <= 60 and o[2] <= 60 and o[0] - 100 > 2 * (o[6] - 100) > 0
    # Colorize (LCh colour layer): the layer's colour at the lightness below
    gray = bytes([120, 120, 120])
    red = bytes([200, 40, 40])
    c = PV.color_mode(gray, red)
    luma = lambda p: 0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2]   # noqa: E731
    assert abs(luma(c) - 120) <= 1.5 and c[0] > c[1] + 100 and c[1] == c[2]
    assert PV.color_mode(red, red) == red
    # Restore Old Photo: each step through its mask over the one below, bottom to top
    step1, step2 = bytes([10, 10, 10] * 3), bytes([250, 250, 250] * 3)
    out = PV.stack(before, [(step1, bytes([255, 255, 0]), "normal"), (step2, bytes([0, 255, 0]), "normal")])
    assert out == bytes([10, 10, 10, 250, 250, 250, 100, 100, 100])
    assert PV.stack(before, []) == before
