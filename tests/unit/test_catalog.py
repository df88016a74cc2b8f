"""The model catalogue (backend/ai_enhance/models/catalog.json) is well-formed data."""
from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from ai_enhance_client import ops as optable

KNOWN_OPS = {o.name for o in optable.OPS}

CATALOG = Path(__file__).resolve().parents[2] / "backend" / "ai_enhance" / "models" / "catalog.json"

REQUIRED_IDS = {
    "realesrgan-x4plus": "RealESRGAN_x4plus.pth",
    "realesrgan-x2plus": "RealESRGAN_x2plus.pth",
    "realesr-general-x4v3": "realesr-general-x4v3.pth",
    "realesr-general-wdn-x4v3": "realesr-general-wdn-x4v3.pth",
    "realesr-animevideov3": "realesr-animevideov3.pth",
    "realesrgan-x4plus-anime": "RealESRGAN_x4plus_anime_6B.pth",
    "gfpgan-v1.4": "GFPGANv1.4.pth",
    "gfpgan-v1.3": "GFPGANv1.3.pth",
    "restoreformer": "RestoreFormer.pth",
    "scunet-color-real-psnr": "scunet_color_real_psnr.pth",
    "drunet-color": "drunet_color.pth",
    "nafnet-gopro": "NAFNet-GoPro-width64.pth",
    "nafnet-sidd": "NAFNet-SIDD-width64.pth",
    "fftformer-gopro": "fftformer_GoPro.pth",
    "restormer-deblur": "motion_deblurring.pth",
    "fbcnn-color": "fbcnn_color.pth",
    "codeformer": "codeformer.pth",
    "retinaface-resnet50": "detection_Resnet50_Final.pth",
    "retinaface-mobile0.25": "detection_mobilenet0.25_Final.pth",
    "parsenet": "parsing_parsenet.pth",
}
OFFICIAL_HOSTS = {  # the projects' own GitHub release pages
    "realesrgan": "/xinntao/Real-ESRGAN/releases/download/",
    "gfpgan": "/TencentARC/GFPGAN/releases/download/",
    "facexlib": "/xinntao/facexlib/releases/download/",
    "codeformer": "/sczhou/CodeFormer/releases/download/",
    "ffdnet": "/cszn/KAIR/releases/download/",
}
ID_RE = re.compile(r"^[a-z0-9][a-z0-9_.+-]{0,63}$")   # also a valid protocol model name


def _pairs_no_duplicates(pairs):
    keys = [k for k, _ in pairs]
    dup = {k for k in keys if keys.count(k) > 1}
    assert not dup, f"duplicate JSON keys {dup}"
    return dict(pairs)


@pytest.fixture(scope="module")
def everything() -> list[dict]:
    data = json.loads(CATALOG.read_text("utf-8"), object_pairs_hook=_pairs_no_duplicates)
    assert isinstance(data, dict) and isinstance(data["models"], list)
    return data["models"]


@pytest.fixture(scope="module")
def entries(everything) -> list[dict]:
    """The entries with a model file (built-in methods have none)."""
    return [e for e in everything if not e.get("builtin")]


def test_builtin_methods_have_no_file_and_serve_a_table_operation(everything):
    builtins = [e for e in everything if e.get("builtin")]
    assert {e["id"] for e in builtins} >= {"damage-analysis", "classical"}
    for e in builtins:
        assert "file" not in e and "url" not in e and e["ops"] and set(e["ops"]) <= KNOWN_OPS


def test_required_entries_with_official_file_names(entries):
    by_id = {e["id"]: e for e in entries}
    for mid, fname in REQUIRED_IDS.items():
        assert mid in by_id, mid
        assert by_id[mid]["file"] == fname


def test_ids_and_files_unique(entries):
    ids = [e["id"] for e in entries]
    files = [e["file"].casefold() for e in entries]
    assert len(ids) == len(set(ids))
    assert len(files) == len(set(files))
    for i in ids:
        assert ID_RE.match(i), i


def test_every_entry_is_complete(entries):
    for e in entries:
        for key in ("id", "name", "file", "url", "family", "ops", "scale"):
            assert key in e and e[key] not in ("", None), (e["id"], key)
        assert "sha256" in e and "size" in e and "role" in e
        assert isinstance(e["ops"], list) and set(e["ops"]) <= KNOWN_OPS, e["id"]
        assert isinstance(e["scale"], int) and 1 <= e["scale"] <= 8
        if e["size"] is not None:
            assert isinstance(e["size"], int) and e["size"] > 1000
        assert Path(e["file"]).suffix in (".pth", ".ckpt", ".safetensors")
        assert "/" not in e["file"] and "\\" not in e["file"]
        # selectable models do something; support files do nothing by themselves
        if e["role"] is None:
            assert e["ops"], e["id"]


def test_urls_are_pinned_https_release_assets(entries):
    """A downloadable entry (sha256 pinned) comes from a GitHub release tag or a Hugging Face
    file; an unpinned one may name any https page (the installer refuses to download it)."""
    for e in entries:
        u = urlsplit(e["url"])
        assert u.scheme == "https" and not u.fragment, e["url"]
        if e["sha256"] is None:
            continue
        assert u.netloc in ("github.com", "huggingface.co"), e["url"]
        if u.netloc == "github.com":
            assert "/releases/download/" in u.path, e["url"]
            tag = u.path.split("/releases/download/")[1].split("/")[0]
            assert tag and tag != "latest", e["url"]          # pinned to a release tag
            prefix = OFFICIAL_HOSTS.get(e["family"])
            if prefix:
                assert u.path.startswith(prefix), (e["id"], e["url"])
        else:
            assert "/resolve/" in u.path, e["url"]
        assert not u.query
        # the URL's last segment is the official file name (percent-encoded '+' allowed)
        assert u.path.rsplit("/", 1)[1].replace("%2B", "+") == e["file"]


def test_pinned_hashes_added_from_public_sources_say_where(entries):
    for e in entries:
        if "source_of_hash" in e:
            assert bool(e["source_of_hash"]) == bool(e["sha256"]), e["id"]


def test_sha256_are_lowercase_hex_or_null(entries):
    pinned = 0
    for e in entries:
        s = e["sha256"]
        if s is None:
            continue
        assert re.fullmatch(r"[0-9a-f]{64}", s), e["id"]
        pinned += 1
    assert pinned >= 11
    shas = [e["sha256"] for e in entries if e["sha256"]]
    assert len(shas) == len(set(shas))                    # no copy-paste slip
    # the main upscaler and the default face model are pinned
    by_id = {e["id"]: e for e in entries}
    for mid in ("realesrgan-x4plus", "realesr-general-x4v3", "realesr-general-wdn-x4v3",
                "gfpgan-v1.4", "retinaface-resnet50", "retinaface-mobile0.25"):
        assert by_id[mid]["sha256"], mid


def test_references_resolve(entries):
    by_id = {e["id"]: e for e in entries}
    for e in entries:
        for c in e.get("companions", []):
            assert c in by_id and c != e["id"], (e["id"], c)
        if e.get("dni"):
            d = e["dni"]
            assert d["companion"] in e.get("companions", [])
            # the weight is a parameter of the operations the model serves, 0..1
            params = [optable.BY_NAME[o].param(d["option"]) for o in e["ops"]]
            assert params and all(p is not None and (p.min, p.max) == (0, 1) for p in params), e["id"]
            assert all(e["id"] in p.applies_to for p in params)
            comp = by_id[d["companion"]]
            assert comp["arch"] == e["arch"] and comp["scale"] == e["scale"]
        # parameters are declared once, in the operation table, never per model
        assert "options" not in e, e["id"]


def test_every_model_the_table_names_is_in_the_catalogue(everything):
    by_id = {e["id"]: e for e in everything}
    for op in optable.OPS:
        for mid in op.models:
            assert mid in by_id, (op.name, mid)
            assert op.name in by_id[mid]["ops"], (op.name, mid)


def test_support_files_have_roles(entries):
    roles = {e["id"]: e["role"] for e in entries}
    assert roles["retinaface-resnet50"] == "face_detector"
    assert roles["retinaface-mobile0.25"] == "face_detector"
    assert roles["parsenet"] == "face_parser"
    assert roles["realesr-general-wdn-x4v3"] == "companion"
    for mid in ("gfpgan-v1.4", "gfpgan-v1.3", "restoreformer", "codeformer"):
        assert roles[mid] is None and "faces" in {o for e in entries if e["id"] == mid for o in e["ops"]}


def test_adapters_exist_in_backend(entries):
    from ai_enhance.models.adapters import ADAPTERS
    for e in entries:
        if e.get("adapter"):
            assert e["adapter"] in ADAPTERS


def test_catalog_is_stdlib_json_readable_by_the_installer():
    """The installer runs before any venv exists: plain json, no comments, UTF-8."""
    raw = CATALOG.read_bytes()
    raw.decode("utf-8")
    json.loads(raw)


def test_backend_reads_the_same_file():
    from ai_enhance import models
    assert models.CATALOG_PATH.resolve() == CATALOG.resolve()
    assert [e["id"] for e in models.load_catalog()] == [
        e["id"] for e in json.loads(CATALOG.read_text("utf-8"))["models"]]
