"""What installing or removing models involves (ai_enhance_client/model_plan.py): the one decision
the backend follows and the GIMP dialog shows ("Download (458 MB)")."""
import json
import sys
from pathlib import Path

import pytest

PLUGIN = Path(__file__).resolve().parents[2] / "plugin" / "ai-enhance"
sys.path.insert(0, str(PLUGIN))

from ai_enhance_client.model_plan import human_size, install_plan, removal_plan  # noqa: E402

CATALOG = Path(__file__).resolve().parents[2] / "backend" / "ai_enhance" / "models" / "catalog.json"


def models(installed=()):
    out = []
    for e in json.loads(CATALOG.read_text())["models"]:
        out.append(dict(e, installed=e["id"] in installed, builtin=False, custom=False))
    return out


def test_face_model_brings_the_detector_unless_one_is_installed():
    p = install_plan(models(), ["gfpgan-v1.4"])
    assert p.ids == ("gfpgan-v1.4", "retinaface-resnet50") and p.ok
    assert p.bytes == 348632874 + 109497761
    # the small detector is there: it does the job, the large one is not fetched
    p = install_plan(models({"retinaface-mobile0.25"}), ["gfpgan-v1.4"])
    assert p.ids == ("gfpgan-v1.4",) and p.bytes == 348632874


def test_companion_of_a_model_and_repair_of_an_installed_one():
    p = install_plan(models(), ["realesr-general-x4v3"])
    assert p.ids == ("realesr-general-x4v3", "realesr-general-wdn-x4v3")
    # installed, but its companion is missing: only the companion comes
    p = install_plan(models({"realesr-general-x4v3"}), ["realesr-general-x4v3"])
    assert p.present == ("realesr-general-x4v3",) and p.ids == ("realesr-general-wdn-x4v3",)
    p = install_plan(models({"realesrgan-x4plus"}), ["realesrgan-x4plus", "realesrgan-x4plus"])
    assert p.ids == () and p.present == ("realesrgan-x4plus",) and p.bytes == 0


def test_unknown_and_unpinned_are_reported_not_planned():
    p = install_plan(models(), ["nope", "ffdnet-color", "realesrgan-x4plus"])
    assert p.unknown == ("nope",) and p.refused == ("ffdnet-color",) and not p.ok
    assert p.ids == ("realesrgan-x4plus",)
    m = models()
    next(e for e in m if e["id"] == "realesrgan-x4plus")["size"] = None
    assert install_plan(m, ["realesrgan-x4plus"]).bytes is None, "an unknown size is not a total"


def test_removal_takes_support_files_nobody_else_needs():
    both = {"gfpgan-v1.4", "codeformer", "retinaface-resnet50", "retinaface-mobile0.25"}
    # another face model stays: the detectors stay
    assert removal_plan(models(both), ["gfpgan-v1.4"]).ids == ("gfpgan-v1.4",)
    # the last face model goes: every face detector goes with it
    r = removal_plan(models(both - {"codeformer"}), ["gfpgan-v1.4"])
    assert r.ids == ("gfpgan-v1.4", "retinaface-resnet50", "retinaface-mobile0.25")
    r = removal_plan(models({"realesr-general-x4v3", "realesr-general-wdn-x4v3", "realesrgan-x4plus"}),
                     ["realesr-general-x4v3"])
    assert r.ids == ("realesr-general-x4v3", "realesr-general-wdn-x4v3")
    r = removal_plan(models({"realesrgan-x4plus"}), ["realesrgan-x2plus", "zzz", "realesrgan-x4plus"])
    assert (r.ids, r.not_installed, r.unknown) == (("realesrgan-x4plus",), ("realesrgan-x2plus",), ("zzz",))


def test_removal_keeps_a_support_file_nothing_named():
    # a detector installed on its own (no face model removed now): not touched
    r = removal_plan(models({"retinaface-resnet50", "realesrgan-x4plus"}), ["realesrgan-x4plus"])
    assert r.ids == ("realesrgan-x4plus",)


@pytest.mark.parametrize("n, text", [(348632874, "349 MB"), (4885111, "4.9 MB"), (1789735, "1.8 MB"),
                                     (1_200_000_000, "1.2 GB"), (512, "1 KB"), (None, "size unknown")])
def test_human_size(n, text):
    assert human_size(n) == text
