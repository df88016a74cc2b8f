"""The interactive path of Upscale... in a real GIMP 3 with an X server (Xvfb): the dialog is
built from GIMP's own widgets plus a model list from the backend, OK runs with the chosen values,
GIMP remembers them for the next run, Cancel adds nothing."""
import pytest

pytestmark = pytest.mark.gimp


@pytest.fixture(scope="module")
def dialog_run(gimp, e2e_backend):
    if not any((gimp.root / "usr/bin").glob("xvfb-run")):
        pytest.skip(f"{gimp.root} has no xvfb-run; rebuild it with tests/e2e/ensure_gimp_root.sh")
    return gimp.run("dialog.py", display=True, timeout=240, params={"model": "nearest-x4"},
                    env={"AI_ENHANCE_ENDPOINT": e2e_backend.endpoint,
                         "AI_ENHANCE_DIALOG_AUTORESPONSE": "{work}/dialog-answer",
                         "AI_ENHANCE_DIALOG_REPORT": "{work}/dialog-report.json"})


def _new_layer(r):
    assert r["success"], r
    new = [l for l in r["after"]["layers"] if l["id"] == r["layer_id"]]
    assert len(new) == 1
    return new[0]


def test_dialog_lists_backend_models_and_runs_with_given_values(dialog_run):
    r = dialog_run.case("ok_with_given_values")
    d = r["dialog"]
    assert d is not None, "the dialog was shown"
    assert d["title"] == "AI Upscale"
    # the list comes from the backend: its upscale models, installed first, faces models left out
    assert "nearest-x4" in d["choices"] and "realesrgan-x4plus" in d["choices"]
    assert not any(c.startswith(("gfpgan", "retinaface", "parsenet")) for c in d["choices"]), \
        "face models and support files are not upscalers"
    assert d["choices"].index("nearest-x4") < d["choices"].index("realesrgan-x4plus-anime"), \
        "installed models first"
    assert d["active"] == "nearest-x4"
    assert d["values"]["scale"] == 1 and d["values"]["strength"] == pytest.approx(0.5)
    new = _new_layer(r)
    assert new["name"] == "AI Upscale \u00d71 \u00b7 nearest-x4"
    assert new["opacity"] == pytest.approx(50.0)
    assert r["after"]["size"] == r["before"]["size"]


def test_dialog_remembers_last_values(dialog_run):
    r = dialog_run.case("ok_again_remembers_last_values")
    d = r["dialog"]
    assert d["active"] == "nearest-x4", "last run's model, not the default realesrgan-x4plus"
    assert d["values"]["scale"] == 1 and d["values"]["strength"] == pytest.approx(0.5)
    assert _new_layer(r)["opacity"] == pytest.approx(50.0)


def test_dialog_widgets_have_distinct_mnemonics(dialog_run):
    assert "duplicate mnemonic" not in dialog_run.stderr


def test_dialog_cancel_adds_nothing(dialog_run):
    r = dialog_run.case("cancel")
    assert r["dialog"] is not None
    assert not r["success"] and r["status"] == "cancel"
    assert r["after"] == r["before"]


def test_jpeg_cleanup_starts_at_the_quality_gimp_read_from_the_file(dialog_run):
    r = dialog_run.case("jpeg_dialog_starts_at_the_files_quality")
    assert r["dialog"] is not None and r["dialog"]["title"] == "AI JPEG Cleanup"
    assert r["dialog"]["values"]["quality"] == 72
