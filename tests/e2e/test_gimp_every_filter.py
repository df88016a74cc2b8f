"""Every filter of the operation table in a real GIMP 3 (3.0 and 3.2), driven generically from the
table: each row is registered with exactly the table's arguments, and each one, run with a model
the test backend serves, puts a new layer directly above the source, masked by the selection,
at opacity = strength, leaving the source untouched, on RGB 8-bit, a feathered selection and
gray 16-bit with alpha.  A new row is tested here without new GIMP test code."""
import base64

import numpy as np
import pytest

from ai_enhance_client import ops as optable
from ai_enhance_client.client import Client

pytestmark = pytest.mark.gimp

#: Operations whose model needs more than the shared test backend has (a face detector): run by
#: test_gimp_faces.py against its own backend.
ELSEWHERE = {"faces"}
LAYER, CHANNEL, GROUP = optable.ResultKind.LAYER, optable.ResultKind.CHANNEL, optable.ResultKind.GROUP
KINDS = ("rgb_u8", "rgb_u8_feathered", "gray_u16_alpha")
DTYPES = {"u8": np.uint8, "u16": np.dtype("<u2")}
CHANNELS = {"R'G'B'A": 4, "Y'A": 2, "Y": 1}


def arr(d: dict) -> np.ndarray:
    model, kind = d["fmt"].split()
    a = np.frombuffer(base64.b64decode(d["b64"]), DTYPES[kind])
    return a.reshape(d["h"], d["w"], CHANNELS[model])


def _short(models: list[dict], mid: str) -> str:
    return next((m.get("short") or mid for m in models if m["id"] == mid), mid)


def _test_model(op, models: list[dict]) -> str | None:
    """An installed model of the test backend that serves ``op``: the exact nearest-neighbour
    nets first (their output is known), else any."""
    serving = [m for m in models if m.get("installed") and op.name in (m.get("ops") or []) and not m.get("role")]
    exact = [m["id"] for m in serving if m["id"].startswith("nearest-x")]
    return (exact or [m["id"] for m in serving] or [None])[0]


@pytest.fixture(scope="module")
def plan(e2e_backend):
    with Client(e2e_backend.endpoint) as c:
        models = c.ping()["models"]
    runs = []
    for op in optable.menu_ops():
        has_model = op.param("model") is not None
        model = _test_model(op, models) if has_model else ""
        if model is None:
            continue
        props = {"model": model} if has_model else {}
        if op.param("scale"):
            props["scale"] = 1
        if op.result is LAYER:
            props.update(strength=0.6, mask="selection")
        runs.append({"op": op.name, "proc": op.proc_name, "model": model, "props": props,
                     "short": _short(models, model), "select": "mask" in op.inputs})
    return runs


@pytest.fixture(scope="module")
def every_run(gimp, e2e_backend, plan):
    return gimp.run("every_filter.py", timeout=600, env={"AI_ENHANCE_ENDPOINT": e2e_backend.endpoint},
                    params={"runs": plan, "procs": [o.proc_name for o in optable.menu_ops()]})


def test_every_row_is_covered(plan):
    covered = {r["op"] for r in plan} | ELSEWHERE
    assert covered == {o.name for o in optable.menu_ops()}, "a row without a test model"


def test_procedures_registered_exactly_as_the_table_says(every_run):
    reg = every_run.case("registered")
    for op in optable.menu_ops():
        info = reg[op.proc_name]
        assert info, f"{op.proc_name} is not in the PDB"
        assert info["menu_paths"] == [optable.MENU_PATH] and info["menu_label"] == op.menu_label
        assert info["image_types"] == "RGB*, GRAY*" and info["return_values"] == ["layer"]
        args = {k: v for k, v in info["args"].items() if k not in ("run-mode", "image", "drawables")}
        assert list(args) == [p.name for p in op.all_params], op.name
        for p in op.all_params:
            a = args[p.name]
            default = a.get("default_value")
            if p.kind.value == "string" and default is None:
                default = ""            # GIMP reports an empty string default as None
            assert default == p.default, (op.name, p.name, a)
            if p.min is not None:
                assert (a["minimum"], a["maximum"]) == (p.min, p.max), (op.name, p.name)


def _cases(every_run, plan):
    return [(r, kind, every_run.case(f"{r['op']}__{kind}")) for r in plan for kind in KINDS]


def test_each_filter_adds_a_masked_layer_above_the_untouched_source(every_run, plan):
    for run, kind, r in _cases(every_run, plan):
        op = optable.BY_NAME[run["op"]]
        if op.result is not LAYER:
            continue
        assert r["run"]["success"], (run, kind, r["run"])
        before, after = r["before"], r["after"]
        assert len(after["layers"]) == len(before["layers"]) + 1, (run, kind)
        new = next(l for l in after["layers"] if l["id"] == r["run"]["layer_id"])
        src = next(l for l in after["layers"] if l["id"] == r["src_id"])
        assert new["position"] == src["position"] - 1 and new["parent"] == src["parent"], (run, kind)
        assert new["name"].startswith(op.title), new["name"]
        assert new["opacity"] == pytest.approx(60.0) and new["has_mask"], (run, kind)
        assert r["src_after"]["b64"] == r["src_before"]["b64"], f"{run} {kind}: the source changed"
        mask, sel = arr(r["mask"])[..., 0], arr(r["selection_under_layer"])[..., 0]
        if kind.endswith("feathered") or run["select"]:
            np.testing.assert_array_equal(mask, sel, err_msg=f"{run} {kind}: the mask is the selection")
            assert kind != "rgb_u8_feathered" or ((mask > 0) & (mask < 255)).any()
        else:
            assert (mask == 255).all() and new["size"] == src["size"], (run, kind)
        out = arr(r["pixels"])
        assert out.shape[2] == arr(r["src_before"]).shape[2]
        if run["model"] in ("nearest-x1", "nearest-x4"):
            # an exact nearest-neighbour model at scale 1: the result is the source, bit for bit
            x, y = new["offsets"]
            w, h = new["size"]
            np.testing.assert_array_equal(out, arr(r["src_before"])[y:y + h, x:x + w],
                                          err_msg=f"{run} {kind}")
        if op.needs_rgb:
            assert after["base"] == "rgb", f"{run} {kind}: a gray image is converted to RGB"
        if op.layer_mode is optable.LayerMode.LCH_COLOR:
            assert new["mode"] == "lch-color", new["mode"]


def test_mask_results_become_a_channel_and_the_selection(every_run, plan):
    runs = [r for r in plan if optable.BY_NAME[r["op"]].result is CHANNEL]
    assert runs, "the table has a mask-only operation (Find Damage)"
    for run, kind, r in _cases(every_run, [x for x in plan if x in runs]):
        op = optable.BY_NAME[run["op"]]
        assert r["run"]["success"], (run, kind, r["run"])
        assert r["after"]["layers"] == r["before"]["layers"], "no layer added or changed"
        assert f"AI {op.result_masks[0]}" in r["channels"], r["channels"]
        assert r["src_after"]["b64"] == r["src_before"]["b64"]


def test_step_results_become_a_layer_group_above_the_source(every_run, plan):
    runs = [r for r in plan if optable.BY_NAME[r["op"]].result is GROUP]
    assert runs, "the table has a multi-step operation (Restore Old Photo)"
    for run, kind, r in _cases(every_run, runs):
        op = optable.BY_NAME[run["op"]]
        assert r["run"]["success"], (run, kind, r["run"])
        after = r["after"]
        group = next(l for l in after["layers"] if l["id"] == r["run"]["layer_id"])
        src = next(l for l in after["layers"] if l["id"] == r["src_id"])
        assert group["group"] and group["name"] == op.title
        assert group["position"] == src["position"] - 1 and group["parent"] == src["parent"]
        steps = [l for l in after["layers"] if l["parent"] == op.title]
        assert steps and all(l["has_mask"] for l in steps), steps
        assert r["src_after"]["b64"] == r["src_before"]["b64"]
