"""The plug-in's pure decisions derived from the operation table (ai_enhance_client/filters.py)."""
import ast
import sys
from pathlib import Path

import pytest

PLUGIN = Path(__file__).resolve().parents[2] / "plugin" / "ai-enhance"
sys.path.insert(0, str(PLUGIN))

from ai_enhance_client import filters as F  # noqa: E402
from ai_enhance_client import ops as optable  # noqa: E402
from ai_enhance_client import protocol as P  # noqa: E402
from ai_enhance_client.params import ParamError  # noqa: E402


def test_one_procedure_per_menu_row():
    names = [o.proc_name for o in optable.menu_ops()]
    assert len(set(names)) == len(names)
    assert names[:2] == ["python-fu-ai-enhance-upscale", "python-fu-ai-enhance-faces"]
    assert {"python-fu-ai-enhance-denoise", "python-fu-ai-enhance-sharpen",
            "python-fu-ai-enhance-jpeg"} <= set(names)
    for o in optable.menu_ops():
        assert o.proc_name.startswith("python-fu-ai-enhance-") and optable.BY_PROC[o.proc_name] is o
        lo, hi, default = o.scale
        assert 1 <= lo <= default <= hi <= P.MAX_SCALE
        assert o.title.startswith("AI ") and "..." in o.menu_label     # it opens a dialog
        assert set(o.result_masks) <= set(o.mask_modes) and o.mask_default in o.mask_modes
    up, faces = optable.BY_NAME["upscale"], optable.BY_NAME["faces"]
    assert (up.default_model, up.scale, up.tile) == ("realesrgan-x4plus", (1, 8, 2), True)
    assert (faces.default_model, faces.scale[1], faces.mask_default, faces.result_masks) == \
        ("gfpgan-v1.4", 4, "faces", ("faces",))


def test_read_settings_validates_through_the_table():
    den = optable.BY_NAME["denoise"]
    cfg = {"model": " ffdnet-color ", "strength": 0.5, "tile-size": 0, "mask": "selection", "noise-level": 25.0}
    st = F.read_settings(den, cfg.get)
    assert (st.model, st.scale, st.strength, st.mask, st.options) == \
        ("ffdnet-color", 1, 0.5, "selection", {"noise-level": 25.0})
    with pytest.raises(ParamError, match="noise-level"):
        F.read_settings(den, dict(cfg, **{"noise-level": 80.0}).get)
    with pytest.raises(ParamError, match="mask"):
        F.read_settings(den, dict(cfg, mask="faces").get)      # denoise returns no faces mask


def test_jpeg_quality_from_gimps_parasite():
    jpeg = optable.BY_NAME["jpeg"]
    # GIMP's "jpeg-settings": colour space, IJG quality, components, tables, sampling factors
    rec = bytes([3, 72, 3, 0, 2, 2, 1, 1, 1, 1])
    assert F.jpeg_quality(rec) == 72
    assert F.image_defaults(jpeg, {"jpeg-settings": rec}.get) == {"quality": 72}
    assert F.image_defaults(jpeg, {}.get) == {}                                  # not from a JPEG
    assert F.image_defaults(jpeg, {"jpeg-settings": bytes([3, 0, 3, 0])}.get) == {}   # unknown quality
    assert F.image_defaults(jpeg, {"jpeg-settings": b"\x03"}.get) == {}          # truncated
    assert F.image_defaults(optable.BY_NAME["denoise"], {"jpeg-settings": rec}.get) == {}


def test_layer_name():
    up, den, jpeg = (optable.BY_NAME[n] for n in ("upscale", "denoise", "jpeg"))
    assert F.layer_name(up, "realesrgan-x4plus", 2) == "AI Upscale \u00d72 \u00b7 realesrgan-x4plus"
    assert F.layer_name(den, "ffdnet-color", 1, {"noise_level": 23.4, "noise_level_estimated": True}) == \
        "AI Denoise \u00b7 ffdnet-color \u03c323.4 (auto)"
    assert F.layer_name(jpeg, "fbcnn-color", 1, {"quality": 40}) == "AI JPEG Cleanup \u00b7 fbcnn-color q40"


@pytest.mark.parametrize("component, gray, alpha, fmt, channels, dtype", [
    ("U8", False, False, "R'G'B' u8", 3, "u8"),
    ("U8", False, True, "R'G'B'A u8", 4, "u8"),
    ("U8", True, False, "Y' u8", 1, "u8"),
    ("U8", True, True, "Y'A u8", 2, "u8"),
    ("U16", False, True, "R'G'B'A u16", 4, "u16"),
    ("U16", True, False, "Y' u16", 1, "u16"),
    ("U32", False, False, "R'G'B' float", 3, "f32"),
    ("HALF", False, True, "R'G'B'A float", 4, "f32"),
    ("FLOAT", True, True, "Y'A float", 2, "f32"),
    ("DOUBLE", False, False, "R'G'B' float", 3, "f32"),
    ("u16", False, False, "R'G'B' u16", 3, "u16"),          # case-insensitive
])
def test_transport(component, gray, alpha, fmt, channels, dtype):
    t = F.transport(component, gray=gray, alpha=alpha)
    assert (t.babl_format, t.channels, t.dtype) == (fmt, channels, dtype)
    P.DType(t.dtype)
    # never narrower than the image: only U8 images travel as u8
    assert (t.dtype == "u8") == (component.upper() == "U8")


def test_transport_rejects_unknown_precision():
    with pytest.raises(ValueError, match="unsupported precision"):
        F.transport("U64", gray=False, alpha=False)


CAPS = {"models": [
    {"id": "realesrgan-x4plus", "name": "Real-ESRGAN x4plus", "installed": True, "ops": ["upscale"], "scale": 4},
    {"id": "gfpgan-v1.4", "name": "GFPGAN v1.4", "installed": True, "ops": ["faces"], "scale": 1},
    {"id": "aaa-missing", "name": "AAA not here", "installed": False, "ops": ["upscale"], "scale": 4},
    {"id": "nearest-x4", "name": "nearest-x4", "installed": True, "ops": ["upscale"], "scale": 4,
     "status": "custom"},
    {"id": "anything", "name": "Anything", "installed": True},            # no ops: offered everywhere
    {"id": "retinaface-mobile0.25", "name": "RetinaFace", "installed": True, "ops": [],
     "role": "face_detector"},
    {"id": "realesr-general-wdn-x4v3", "name": "wdn", "installed": True, "ops": ["upscale"],
     "role": "companion"},
    {"id": "parsenet", "name": "ParseNet", "installed": True, "ops": []},
    {"name": "no id"}, "junk",
]}


def test_model_choices_installed_first_and_filtered_by_op():
    ids = [mid for mid, _ in F.model_choices(CAPS, "upscale")]
    # installed first; among them the table's best-first order, then entries of unknown kind,
    # then custom files (the issue: photo models before the others)
    assert ids == ["realesrgan-x4plus", "anything", "nearest-x4", "aaa-missing"]
    labels = dict(F.model_choices(CAPS, "upscale"))
    assert labels["aaa-missing"].endswith("not installed")     # no URL in CAPS: no size to offer
    assert labels["nearest-x4"] == "nearest-x4" and labels["realesrgan-x4plus"] == "Real-ESRGAN x4plus"
    assert [m for m, _ in F.model_choices(CAPS, "faces")] == ["gfpgan-v1.4", "anything"]


def test_model_choices_keeps_current_and_tolerates_no_backend():
    assert F.model_choices(None, "upscale", "my-model") == [("my-model", "my-model")]
    assert F.model_choices({"capabilities": CAPS}, "faces", "gfpgan-v1.4")[0][0] == "gfpgan-v1.4"
    assert F.model_choices(CAPS, "upscale", "custom-x")[0] == ("custom-x", "custom-x")


def test_plugin_module_keeps_gimp_calls_in_one_file_and_imports_no_numpy():
    """ai-enhance.py: the only module touching gi; pure modules import neither gi nor numpy at
    module level; the plug-in never requires numpy."""
    main = (PLUGIN / "ai-enhance.py").read_text()
    assert main.startswith("#!/usr/bin/env python3\n")
    assert (PLUGIN / "ai-enhance.py").stat().st_mode & 0o111, "ai-enhance.py must be executable"
    top = {n.names[0].name.split(".")[0] for n in ast.parse(main).body if isinstance(n, ast.Import)}
    top |= {n.module.split(".")[0] for n in ast.parse(main).body
            if isinstance(n, ast.ImportFrom) and n.module}
    assert "numpy" not in top and "gi" in top
    for pure in (PLUGIN / "ai_enhance_client").glob("*.py"):
        tree = ast.parse(pure.read_text())
        mods = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        mods |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        assert "gi" not in mods, pure
        toplevel = {a.name.split(".")[0] for n in tree.body if isinstance(n, ast.Import) for a in n.names}
        assert "numpy" not in toplevel, f"{pure.name} must not need numpy"
