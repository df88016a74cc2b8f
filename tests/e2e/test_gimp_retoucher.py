"""The retoucher's side of every filter in a real GIMP 3 (3.0 and 3.2) under Xvfb, driven through
the plug-in's test hooks: the dialog of EVERY row of the operation table builds (controls, units,
tooltips, Advanced, output size, Help), the preview renders a region 1:1 and toggles, a missing
model shows Download and the backend downloads it from GIMP, a cancel inside a tile returns within
2 s with nothing added, and the Models... manager lists, installs and removes.

Screenshots of each dialog land in the run's folder; with AI_ENHANCE_UPDATE_DOCS_IMG=1 they are
copied (as small palette PNGs) to docs/img/."""
from __future__ import annotations

import hashlib
import http.server
import json
import os
import shutil
import sys
import threading
from pathlib import Path

import pytest

from ai_enhance_client import ops as optable
from testkit import REPO, link, make_compact, make_rrdb, serve_env, start_serve

sys.path.insert(0, str(REPO / "tests" / "installer"))
from inst_helpers import FileServer, Served, _handler  # noqa: E402

pytestmark = pytest.mark.gimp

DOCS_IMG = REPO / "docs" / "img"
MAX_PNG = 100_000


@pytest.fixture(scope="session")
def retouch_backend(tmp_path_factory):
    """A backend with the tiny test models, a slow RRDBNet (a tile takes seconds on a CPU), and
    two catalogue entries downloadable from a local HTTP server."""
    d = tmp_path_factory.mktemp("retouch-models")
    make_compact(d / "nearest-x4.pth", zero_last=True, seed=6)
    make_compact(d / "nearest-x1.pth", scale=1, zero_last=True, seed=7)
    # the real fast models when they are at hand (the screenshots then show real results)
    for name in ("realesr-animevideov3.pth", "ffdnet_color.pth"):
        real = _weights() / name if _weights() else None
        if real is not None and real.is_file():
            link(real, d / name)    # the backend refuses links out of its folder
    if not (d / "realesr-animevideov3.pth").exists():
        make_compact(d / "realesr-animevideov3.pth", seed=1)
    # 24 blocks: the 256 px preview (~3.5 s) and the 112x96 job (~4 s) still compute on an idle
    # 2-core CPU when the preview-in-flight and cancel cases look (at 1.5 s)
    make_rrdb(d / "slow-x4.pth", scale=4, num_filters=64, num_blocks=24, seed=5)
    from randnets import path_of        # a random DDColor (cached): Colorize previews too
    link(path_of("ddcolor"), d / "ddcolor_paper_tiny.pth")
    src = tmp_path_factory.mktemp("served")
    data = make_compact(src / "tiny-dl.pth", zero_last=True, seed=21).read_bytes()
    state = FileServer("")
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    srv.daemon_threads = True
    state.base = f"http://127.0.0.1:{srv.server_address[1]}"
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    state.files["tiny-dl.pth"] = Served(data)
    state.files["tiny-dl2.pth"] = Served(data)
    entries = [{"id": mid, "name": f"Tiny download {i}", "short": "Tiny", "kind": "photo",
                "file": f"{mid}.pth", "url": state.url(f"{mid}.pth"),
                "sha256": hashlib.sha256(data).hexdigest(), "size": len(data), "family": "test",
                "arch": "Compact", "ops": ["upscale"], "scale": 4, "role": None}
               for i, mid in enumerate(("tiny-dl", "tiny-dl2"), 1)]
    extra = src / "extra.json"
    extra.write_text(json.dumps({"models": entries}))
    b = start_serve(d, tmp_path_factory.mktemp("retouch-serve"), wait=120,
                    env=serve_env(d, AI_ENHANCE_EXTRA_CATALOG=extra))
    yield b
    b.stop()
    srv.shutdown()


def _weights() -> Path | None:
    for c in (os.environ.get("AI_ENHANCE_MODELS_DIR"), REPO.parent / "shared" / "weights"):
        if c and Path(c).is_dir():
            return Path(c)
    return None


PHOTO = (240, 180)


def _photo_bytes() -> bytes:
    """skimage's astronaut at PHOTO size, RGB u8 (a real photo for the docs' screenshots)."""
    import numpy as np
    from skimage import data, transform

    img = transform.resize(data.astronaut()[:384, 64:576], (PHOTO[1], PHOTO[0]), anti_aliasing=True)
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8).tobytes()


def _setup(model: str | None = None, **values) -> list[dict]:
    """Steps that choose the model and values in the dialog (an interactive run starts from the
    last values GIMP remembers, whatever the caller put in the config)."""
    steps = [{"do": "model", "id": model}] if model else []
    return steps + [{"do": "set", "prop": k.replace("_", "-"), "value": v} for k, v in values.items()]


# Inpaint fills the selection: its dialog opens with one (a box around the photo's middle)
INPAINT_SELECTION = (60, 50, 40, 30)


def _dialog_case(op) -> dict:
    model = {"upscale": "realesr-animevideov3", "faces": None, "inpaint": "classical",
             "colorize": "ddcolor-paper-tiny"}.get(op.name, "nearest-x1")
    if not op.param("model") or op.name == "find-damage":
        model = None                  # no model to choose (Find Damage: image analysis only)
    if op.name == "denoise" and _weights() and (_weights() / "ffdnet_color.pth").is_file():
        model = "ffdnet-color"
    values = {"strength": op.strength_default} if op.param("strength") else {}
    if op.param("scale"):
        values["scale"] = 2 if op.name == "upscale" else 1
    steps = _setup(model, **values) + ([{"do": "wait_preview", "timeout": 90}] if op.name != "faces" else []) + [
        {"do": "expand"}, {"do": "report"}, {"do": "shot", "name": f"dialog-{op.name}.png"},
        {"do": "help"}, {"do": "respond", "answer": "cancel"}]
    case = {"name": f"dialog_{op.name}", "op": op.name, "proc": op.proc_name, "steps": steps,
            "photo": True}
    if "mask" in op.inputs:
        case["select"] = INPAINT_SELECTION
    return case


UP = "python-fu-ai-enhance-upscale"
CASES = [_dialog_case(op) for op in optable.menu_ops()] + [
    {"name": "preview_exact", "op": "upscale", "proc": UP,
     "steps": _setup("nearest-x4", scale=2, strength=1.0) + [
         {"do": "wait_preview", "timeout": 60}, {"do": "report"},
         {"do": "mode", "mode": "original"}, {"do": "report"},
         {"do": "mode", "mode": "split"}, {"do": "report"}, {"do": "mode", "mode": "result"},
         {"do": "respond", "answer": "cancel"}]},
    {"name": "preview_toggles", "op": "upscale", "proc": UP,
     "steps": _setup("realesr-animevideov3", scale=2, strength=1.0) + [
         {"do": "wait_preview", "timeout": 60}, {"do": "report"},
         {"do": "mode", "mode": "original"}, {"do": "report"},
         {"do": "mode", "mode": "split"}, {"do": "report"},
         {"do": "mode", "mode": "result"}, {"do": "set", "prop": "strength", "value": 0.0},
         {"do": "report"}, {"do": "set", "prop": "strength", "value": 1.0},
         {"do": "drag", "by": [120, 100]}, {"do": "wait_preview", "count": 2, "timeout": 60},
         {"do": "report"}, {"do": "respond", "answer": "cancel"}]},
    {"name": "preview_cancelled_by_a_change", "op": "upscale", "proc": UP,
     "steps": _setup("slow-x4", scale=4) + [{"do": "wait", "seconds": 1.5}, {"do": "report"},
                                             {"do": "model", "id": "nearest-x4"},
                                             {"do": "wait_preview", "timeout": 60}, {"do": "report"},
                                             {"do": "respond", "answer": "cancel"}]},
    {"name": "preview_at_selection", "op": "denoise", "proc": "python-fu-ai-enhance-denoise",
     "select": (10, 20, 30, 20),
     "steps": _setup("nearest-x1") + [{"do": "wait_preview", "timeout": 60}, {"do": "report"},
                                      {"do": "respond", "answer": "cancel"}]},
    {"name": "missing_model", "op": "faces", "proc": "python-fu-ai-enhance-faces",
     "steps": [{"do": "report"}, {"do": "respond", "answer": "cancel"}]},
    {"name": "download_then_run", "op": "upscale", "proc": UP,
     "steps": _setup("tiny-dl", scale=1, strength=1.0) + [
         {"do": "report"}, {"do": "download"}, {"do": "wait_downloaded", "timeout": 60},
         {"do": "wait_preview", "timeout": 60}, {"do": "report"}, {"do": "respond", "answer": "ok"}]},
    {"name": "cancel_mid_tile", "op": "upscale", "proc": UP, "size": (112, 96), "cancel": "tile:1.5",
     "steps": _setup("slow-x4", scale=4) + [{"do": "respond", "answer": "ok"}]},
    {"name": "models_manager", "proc": "python-fu-ai-enhance-models",
     "steps": [{"do": "select", "id": "realesrgan-x4plus"}, {"do": "shot", "name": "models.png"},
               {"do": "install", "id": "tiny-dl2"}, {"do": "report"}, {"do": "remove", "id": "tiny-dl2"},
               {"do": "report"}, {"do": "close"}]},
]


@pytest.fixture(scope="module")
def retouch_run(gimp, retouch_backend):
    if not any((gimp.root / "usr/bin").glob("xvfb-run")):
        pytest.skip(f"{gimp.root} has no xvfb-run; rebuild it with tests/e2e/ensure_gimp_root.sh")
    env = {"AI_ENHANCE_ENDPOINT": retouch_backend.endpoint,
           "AI_ENHANCE_DIALOG_SCRIPT": "{work}/script.json", "AI_ENHANCE_DIALOG_REPORT": "{work}/report.json",
           "AI_ENHANCE_PROGRESS_CANCEL": "{work}/cancel.txt", "AI_ENHANCE_PROGRESS_REPORT": "{work}/progress.json",
           "AI_ENHANCE_HELP_LOG": "{work}/help.log", "AI_ENHANCE_SHOT_DIR": "{work}/tmp"}
    from ai_enhance_client.client import Client
    with Client(retouch_backend.endpoint) as c:          # the download cases start from "missing"
        if any(m["id"] in ("tiny-dl", "tiny-dl2") and m["installed"] for m in c.ping()["models"]):
            c.remove_models(["tiny-dl", "tiny-dl2"])
    keep = os.environ.get("AI_ENHANCE_E2E_KEEP")
    os.environ["AI_ENHANCE_E2E_KEEP"] = "1"          # the screenshots are read after the run
    try:
        run = gimp.run("retoucher.py", display=True, timeout=900, env=env,
                       files={"photo.rgb": _photo_bytes()},
                       params={"cases": CASES, "photo": list(PHOTO), "models_actions": [["install", "tiny-dl2"], ["remove", "tiny-dl2"]]})
    finally:
        if keep is None:
            del os.environ["AI_ENHANCE_E2E_KEEP"]
        else:
            os.environ["AI_ENHANCE_E2E_KEEP"] = keep
    yield run
    if keep != "1":
        shutil.rmtree(run.workdir, ignore_errors=True)


def _dialog(run, name):
    r = run.case(name)
    assert r["dialog"] is not None, f"{name}: the dialog was shown and reported ({r.get('error')})"
    return r, r["dialog"]


@pytest.mark.parametrize("op", optable.menu_ops(), ids=lambda o: o.name)
def test_every_dialog_builds_from_the_table(retouch_run, op):
    r, d = _dialog(retouch_run, f"dialog_{op.name}")
    assert d["title"] == op.title and r["status"] == "cancel" and r["after"] == r["before"]
    shown = {p.name for p in op.all_params if p.name != "model"}
    assert shown <= set(d["visible"]), f"a control for every parameter: missing {shown - set(d['visible'])}"
    for p in op.all_params:
        if p.name in d["tooltips"]:
            assert d["tooltips"][p.name] and d["tooltips"][p.name].startswith(p.help[:20]), (op.name, p.name)
    # strength as 0-100 %: the slider shows the percentage of the layer's opacity
    if op.param("strength"):
        assert d["strength_widget"] == pytest.approx(100 * d["values"]["strength"])
    if op.tile:
        assert d["tile_auto"] is True and d["values"]["tile-size"] == 0, "tile size: Automatic by default"
    assert d["advanced"] == (op.tile or any(p.advanced for p in op.params))
    w, h = PHOTO
    selected = "mask" in op.inputs
    aw, ah = INPAINT_SELECTION[2:] if selected else PHOTO
    where = "the selection" if selected else "the whole layer"
    assert d["summary"] and d["area"] == f"Processes {where} ({aw} \u00d7 {ah})"
    if op.param("scale") and d["values"]["scale"] == 2:
        assert d["summary"] == f"Image {w} \u00d7 {h} \u2192 {2 * w} \u00d7 {2 * h}"
    elif op.param("scale") is None or d["values"]["scale"] == 1:
        assert d["summary"] == f"Output {aw} \u00d7 {ah} (same size)"
    # the Help button opens this filter's page, installed with the plug-in
    assert r["help"] and r["help"][-1].endswith(f"/ai-enhance/help/{op.name}.html")
    assert (REPO / "plugin" / "ai-enhance" / "help" / f"{op.name}.html").is_file()
    if op.name != "faces":       # every other filter previews with what the test backend has
        assert d["preview"]["state"] == "shown" and d["preview"]["shown"] >= 1, (op.name, d["preview"])
        assert d["ok_sensitive"]


def test_codeformer_weight_only_with_codeformer(retouch_run):
    _, d = _dialog(retouch_run, "dialog_faces")
    assert d["active"] == "gfpgan-v1.4" and d["visible"]["codeformer-weight"] is False
    assert d["values"]["strength"] == pytest.approx(0.6), "faces open at 60 %"
    _, up = _dialog(retouch_run, "dialog_upscale")
    assert up["visible"]["denoise-strength"] is False, "only for Real-ESRGAN general v3"


def test_preview_renders_the_region_exactly_and_toggles(retouch_run):
    _, d = _dialog(retouch_run, "preview_exact")
    res, orig, split = d["snapshots"]
    assert res["preview"]["state"] == "shown" and res["preview"]["mode"] == "result"
    # nearest-x4 at scale 2 enlarges exactly like the "Original" view: the region and its roi are right
    assert res["preview"]["digest"] == orig["preview"]["digest"]
    assert split["preview"]["digest"] != orig["preview"]["digest"], "split draws its dividing line"
    # no selection: the preview starts on the detailed corner of the picture, not its flat middle
    x, y, w, h = res["preview"]["region"]
    assert (w, h) == (128, 120), "256 x 240 result pixels: the whole height of a 120 px layer at x2"
    assert x + w / 2 > 160 * 0.55 and y + h / 2 >= 120 * 0.5


def test_preview_shows_the_model_toggles_blends_and_follows_a_drag(retouch_run):
    _, d = _dialog(retouch_run, "preview_toggles")
    res, orig, split, zero, moved = d["snapshots"]
    digests = {s["preview"]["digest"] for s in (res, orig, split)}
    assert len(digests) == 3, "result, original and split differ for a real model"
    assert zero["preview"]["digest"] == orig["preview"]["digest"], "strength 0 % shows the original"
    assert moved["preview"]["shown"] == 2 and moved["preview"]["region"] != res["preview"]["region"]
    assert res["preview"]["seconds"] < 10


def test_a_change_cancels_the_preview_in_flight(retouch_run):
    """The slow model's preview is still computing when the model changes: it is cancelled at
    once (the backend runs one job at a time, so the fast model's preview would otherwise wait
    the slow one's many seconds)."""
    _, d = _dialog(retouch_run, "preview_cancelled_by_a_change")
    busy, done = d["snapshots"]
    assert busy["active"] == "slow-x4" and busy["preview"]["state"] == "computing"
    assert done["active"] == "nearest-x4" and done["preview"]["state"] == "shown"
    assert done["preview"]["shown"] == 1, "the slow preview never arrived"
    assert done["preview"]["seconds"] < 5, done["preview"]


def test_preview_starts_at_the_selection(retouch_run):
    _, d = _dialog(retouch_run, "preview_at_selection")
    assert d["preview"]["center"] == [25, 30]
    assert d["area"] == "Processes the selection (30 \u00d7 20)"


def test_missing_model_offers_the_download_not_a_dead_ok(retouch_run):
    r, d = _dialog(retouch_run, "missing_model")
    assert not d["installed"] and d["active"] == "gfpgan-v1.4"
    assert d["ok_sensitive"] is False and d["download_visible"] is True
    assert d["download_label"] == "Do_wnload (458 MB)", "GFPGAN (349 MB) and its face detector"
    assert d["download_text"].startswith("No model for AI Restore Faces is installed yet.")


def test_download_from_the_dialog_then_run(retouch_run):
    r, d = _dialog(retouch_run, "download_then_run")
    first, after = d["snapshots"]
    assert first["active"] == "tiny-dl" and not first["ok_sensitive"] and first["download_visible"]
    assert d["download"]["error"] is None and d["download"]["info"]["installed"] == ["tiny-dl"]
    assert "tiny-dl" in after["installed"] and after["ok_sensitive"] and not after["download_visible"]
    assert after["preview"]["state"] == "shown"
    assert r["success"], r.get("error")
    new = next(l for l in r["after"]["layers"] if l["id"] == r["layer_id"])
    assert new["name"] == "AI Upscale \u00d71 \u00b7 Tiny"


def test_cancel_inside_a_tile_returns_within_2s_with_nothing_added(retouch_run):
    r = retouch_run.case("cancel_mid_tile")
    assert r["status"] == "cancel" and not r["success"]
    assert r["after"] == r["before"], "nothing added, image size unchanged (scale 4 was asked)"
    p = r["progress"]
    assert p and p["clicked_at"], "the progress window's Cancel was clicked"
    assert any(t.startswith("tile 1 of") for t in p["texts"]), p["texts"]
    assert p["confirmed"], "the backend confirmed that it stopped"
    latency = r["returned_at"] - p["clicked_at"]
    assert latency < 2.0, f"cancel took {latency:.2f} s"


def test_models_manager_lists_installs_and_removes(retouch_run):
    r = retouch_run.case("models_manager")
    d = r["dialog"]
    ids = [row[0] for row in d["models"]]
    assert "realesrgan-x4plus" in ids and "gfpgan-v1.4" in ids and "retinaface-resnet50" not in ids
    acts = d["models_actions"]
    assert acts[0]["info"]["installed"] == ["tiny-dl2"] and acts[1]["info"]["removed"] == ["tiny-dl2"]
    row = next(x for x in d["models"] if x[0] == "gfpgan-v1.4")
    assert row[3] == "not installed" and row[4] == "458 MB"
    ni = retouch_run.case("models_noninteractive")
    assert ni["install:tiny-dl2"]["success"] and json.loads(ni["install:tiny-dl2"]["result"])["installed"] == ["tiny-dl2"]
    assert ni["remove:tiny-dl2"]["success"] and json.loads(ni["remove:tiny-dl2"]["result"])["removed"] == ["tiny-dl2"]


def test_screenshots_are_small_pngs(retouch_run, gimp):
    shots = retouch_run.workdir / "tmp"
    names = [f"dialog-{op.name}.png" for op in optable.menu_ops()] + ["models.png"]
    for n in names:
        p = shots / n
        assert p.is_file() and p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", n
    small = _small_pngs(shots, names)
    for n, data in small.items():
        assert len(data) < MAX_PNG, (n, len(data))
    if os.environ.get("AI_ENHANCE_UPDATE_DOCS_IMG") == "1" and gimp.label == "gimp3.0":
        DOCS_IMG.mkdir(parents=True, exist_ok=True)
        for n, data in small.items():
            (DOCS_IMG / n).write_bytes(data)


def _small_pngs(folder: Path, names) -> dict:
    """Palette PNGs (256 colours): a dialog screenshot in a few tens of KB."""
    import io

    from PIL import Image

    out = {}
    for n in names:
        im = Image.open(folder / n).convert("RGB")
        q = im.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
        buf = io.BytesIO()
        q.save(buf, "PNG", optimize=True)
        out[n] = buf.getvalue()
    return out


# --------------------------------------------------------------------------- the Layers dock

SESSIONRC = b"""(session-info "toplevel"
    (factory-entry "gimp-single-image-window")
    (position 0 0)
    (size 1100 640)
    (open-on-exit)
    (aux-info
        (left-docks-width "188")
        (right-docks-width "420")
        (maximized "no"))
    (gimp-toolbox
        (side left)
        (book
            (current-page 0)
            (dockable "gimp-tool-options"
                (tab-style icon)
                (aux-info
                    (show-button-bar "true")))
            (dockable "gimp-device-status"
                (tab-style icon)
                (aux-info
                    (show-button-bar "true")))
            (dockable "gimp-undo-history"
                (tab-style icon)
                (aux-info
                    (show-button-bar "true")))
            (dockable "gimp-image-list"
                (tab-style icon)
                (aux-info
                    (show-button-bar "true")))))
    (gimp-dock
        (side right)
        (book
            (current-page 0)
            (dockable "gimp-brush-grid"
                (tab-style icon)
                (aux-info
                    (show-button-bar "true")))
            (dockable "gimp-pattern-grid"
                (tab-style icon)
                (aux-info
                    (show-button-bar "true")))
            (dockable "gimp-font-list"
                (tab-style icon)
                (aux-info
                    (show-button-bar "true")))
            (dockable "gimp-document-list"
                (tab-style icon)
                (aux-info
                    (show-button-bar "true"))))
        (book
            (position 250)
            (current-page 0)
            (dockable "gimp-layer-list"
                (tab-style icon)
                (preview-size 32)
                (aux-info
                    (show-button-bar "true")))
            (dockable "gimp-channel-list"
                (tab-style icon)
                (preview-size 32)
                (aux-info
                    (show-button-bar "true")))
            (dockable "gimp-vectors-list"
                (tab-style icon)
                (preview-size 32)
                (aux-info
                    (show-button-bar "true"))))))

(hide-docks no)
(single-window-mode yes)
(show-tabs yes)
(tabs-position 0)
(last-tip-shown 0)

# end of sessionrc
"""
DOCK_BOX = (670, 262, 1100, 640)     # the Layers dock of that window (left, top, right, bottom)


@pytest.fixture(scope="module")
def dock_run(gimp, retouch_backend):
    """GIMP with its windows (gimp-3 on Xvfb): two filters on a photo, then the screen."""
    if not any((gimp.root / "usr/bin").glob("xvfb-run")):
        pytest.skip(f"{gimp.root} has no xvfb-run")
    denoise = "ffdnet-color" if _weights() and (_weights() / "ffdnet_color.pth").is_file() else "nearest-x1"
    runs = [["python-fu-ai-enhance-upscale", {"model": "realesr-animevideov3", "scale": 2, "strength": 0.8}],
            ["python-fu-ai-enhance-denoise", {"model": denoise, "strength": 0.6}]]
    keep = os.environ.get("AI_ENHANCE_E2E_KEEP")
    os.environ["AI_ENHANCE_E2E_KEEP"] = "1"
    try:
        run = gimp.run("layers_dock.py", gui=True, timeout=300, files={"photo.rgb": _photo_bytes()},
                       profile_files={"sessionrc": SESSIONRC},
                       env={"AI_ENHANCE_ENDPOINT": retouch_backend.endpoint},
                       params={"photo": list(PHOTO), "runs": runs})
    finally:
        if keep is None:
            del os.environ["AI_ENHANCE_E2E_KEEP"]
        else:
            os.environ["AI_ENHANCE_E2E_KEEP"] = keep
    yield run
    if keep != "1":
        shutil.rmtree(run.workdir, ignore_errors=True)


def test_layers_dock_after_two_filters(dock_run, gimp):
    r = dock_run.case("layers_dock")
    assert all(x["success"] for x in r["runs"].values()), r["runs"]
    names = r["layers"]
    # each result sits directly above the layer it came from: the second filter ran on Background
    assert names[0].startswith("AI Upscale \u00d72 \u00b7 ") and names[1].startswith("AI Denoise \u00b7 ")
    assert names[-1] == "Background"
    import io

    from PIL import Image

    screen = Image.open(dock_run.workdir / "tmp" / "screen.png").convert("RGB")
    dock = screen.crop(DOCK_BOX)
    assert len(set(dock.getdata())) > 50, "the dock is drawn (not a blank screen)"
    buf = io.BytesIO()
    dock.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(buf, "PNG", optimize=True)
    assert len(buf.getvalue()) < MAX_PNG
    if os.environ.get("AI_ENHANCE_UPDATE_DOCS_IMG") == "1" and gimp.label == "gimp3.0":
        (DOCS_IMG / "layers-dock.png").write_bytes(buf.getvalue())
        small = screen.crop((0, 0, 1100, 640)).resize((825, 480), Image.LANCZOS)
        buf = io.BytesIO()
        small.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(buf, "PNG", optimize=True)
        if len(buf.getvalue()) < MAX_PNG:
            (DOCS_IMG / "gimp-window.png").write_bytes(buf.getvalue())
