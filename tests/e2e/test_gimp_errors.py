"""The plug-in in a real GIMP 3 when things go wrong: no backend, bad targets.  Every failure is an
EXECUTION_ERROR with one line that says what to do, within 30 s, and the image is untouched."""
import base64
import time

import pytest

pytestmark = pytest.mark.gimp


@pytest.fixture(scope="module")
def errors_run(gimp):
    # nothing listens on port 1, and the backend the plug-in autostarts dies at once
    t0 = time.monotonic()
    serve = '["/bin/sh", "-c", "echo boom: no torch here >&2; exit 3"]'
    run = gimp.run("errors.py", env={"AI_ENHANCE_ENDPOINT": "tcp://127.0.0.1:1",
                                     "AI_ENHANCE_SERVE_COMMAND": serve}, timeout=240)
    run.total = time.monotonic() - t0
    return run


def test_procedures_registered_with_their_arguments(errors_run):
    reg = errors_run.case("registered")
    up, faces = reg["upscale"], reg["faces"]
    assert up and faces, "both procedures are in the PDB"
    for info in (up, faces):
        assert info["menu_paths"] == ["<Image>/Filters/AI Enhance"]
        assert info["image_types"] == "RGB*, GRAY*"
        assert info["return_values"] == ["layer"]
    a = up["args"]
    assert a["model"]["default_value"] == "realesrgan-x4plus"
    assert (a["scale"]["minimum"], a["scale"]["maximum"], a["scale"]["default_value"]) == (1, 8, 2)
    assert (a["strength"]["minimum"], a["strength"]["maximum"], a["strength"]["default_value"]) == (0.0, 1.0, 1.0)
    assert a["tile-size"]["minimum"] == 0 and a["tile-size"]["default_value"] == 0
    f = faces["args"]
    assert f["model"]["default_value"] == "gfpgan-v1.4"
    assert (f["scale"]["minimum"], f["scale"]["maximum"]) == (1, 4)
    assert f["mask"]["default_value"] == "faces"
    assert up["menu_label"] == "AI _Upscale..." and faces["menu_label"] == "AI Restore _Faces..."


@pytest.mark.parametrize("case, proc", [("dead_backend", "AI Upscale"),
                                        ("dead_backend_faces", "AI Restore Faces")])
def test_dead_backend_fails_fast_and_leaves_nothing(errors_run, case, proc):
    r = errors_run.case(case)
    run = r["run"]
    assert not run["success"] and run["status"] == "execution-error"
    msg = run["error"]
    assert msg.startswith(f"{proc}: ") and "\n" not in msg
    # the autostarted backend's own last words, and how to see more
    assert "the backend exited at start (boom: no torch here)" in msg, msg
    assert "in a terminal to see why" in msg
    assert run["seconds"] < 30
    assert r["after"] == r["before"], "no stray layer, image size unchanged (scale 2 requested)"
    if "src_before" in r:
        assert r["src_after"]["b64"] == r["src_before"]["b64"]


@pytest.mark.parametrize("case, words", [
    ("selection_outside_layer", "selection does not touch the active layer"),
    ("indexed_image", "indexed images are not supported; convert with Image > Mode > RGB"),
    ("group_as_target", "is a layer group"),
    ("two_layers", "select exactly one layer"),
])
def test_user_errors_are_one_line_with_a_fix(errors_run, case, words):
    r = errors_run.case(case)
    assert not r["run"]["success"]
    assert words in r["run"]["error"] and "\n" not in r["run"]["error"]
    assert not any(l["name"].startswith("AI ") for l in r["after"]["layers"])


def test_no_mounts_left_behind(errors_run, gimp):
    assert gimp.mounts() == [], "the private mount namespace took /proc and /dev with it"
