"""backend/ai_enhance/catalog_additions.json (entries waiting for the inpaint and colorize
operations) is well-formed, in catalog.json's entry format, and every pinned hash says where it
was found."""
from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from ai_enhance.models import adapters as arch_adapters

BACKEND = Path(__file__).resolve().parents[2] / "backend" / "ai_enhance"
ADDITIONS = BACKEND / "catalog_additions.json"
CATALOG = BACKEND / "models" / "catalog.json"
OPS = {"upscale", "faces", "denoise", "sharpen", "jpeg", "inpaint", "colorize"}
ID_RE = re.compile(r"^[a-z0-9][a-z0-9.+-]{0,63}$")
FIELDS = {"id", "name", "file", "url", "sha256", "size", "family", "arch", "adapter", "ops", "scale",
          "role", "license", "description", "source_of_hash"}
REQUIRED_IDS = {"big-lama", "ddcolor-modelscope"}


def _no_duplicate_keys(pairs):
    keys = [k for k, _ in pairs]
    assert len(keys) == len(set(keys)), f"duplicate JSON keys in {keys}"
    return dict(pairs)


@pytest.fixture(scope="module")
def entries() -> list[dict]:
    data = json.loads(ADDITIONS.read_text("utf-8"), object_pairs_hook=_no_duplicate_keys)
    return data["models"]


def test_the_asked_for_entries_are_there_with_unique_ids_and_files(entries):
    ids = [e["id"] for e in entries]
    assert REQUIRED_IDS <= set(ids)
    assert len(ids) == len(set(ids))
    assert len({e["file"].casefold() for e in entries}) == len(entries)


@pytest.mark.parametrize("field", sorted(FIELDS))
def test_every_entry_has_the_catalogue_fields(entries, field):
    for e in entries:
        assert field in e, (e["id"], field)


def test_values_have_the_catalogue_types(entries):
    for e in entries:
        assert ID_RE.match(e["id"]), e["id"]
        assert e["ops"] and set(e["ops"]) <= OPS, e["id"]
        assert e["scale"] == 1
        assert e["role"] is None
        assert e["file"] == Path(e["file"]).name and Path(e["file"]).suffix in (".pth", ".ckpt", ".safetensors")
        assert urlsplit(e["url"]).scheme == "https", e["id"]
        assert e["size"] is None or (isinstance(e["size"], int) and e["size"] > 1_000_000)
        assert e["adapter"] is None or e["adapter"] in arch_adapters.ADAPTERS, e["id"]


def test_a_pinned_hash_is_64_hex_and_says_where_it_was_found(entries):
    for e in entries:
        if e["sha256"] is None:
            assert not e["source_of_hash"], e["id"]
            continue
        assert re.fullmatch(r"[0-9a-f]{64}", e["sha256"]), e["id"]
        assert e["source_of_hash"] and all(isinstance(s, str) and s for s in e["source_of_hash"]), e["id"]
    assert len({e["sha256"] for e in entries if e["sha256"]}) == sum(1 for e in entries if e["sha256"])


def test_entries_that_repeat_a_catalogue_file_agree_on_its_hash(entries):
    current = {e["file"]: e for e in json.loads(CATALOG.read_text("utf-8"))["models"]}
    for e in entries:
        old = current.get(e["file"])
        if old is not None and old.get("sha256") and e["sha256"]:
            assert old["sha256"] == e["sha256"], e["id"]


def test_option_names_are_kebab_case_with_a_default_in_range(entries):
    for e in entries:
        for name, spec in (e.get("options") or {}).items():
            assert re.fullmatch(r"[a-z]+(-[a-z]+)*", name), name
            assert spec["min"] <= spec["default"] <= spec["max"], (e["id"], name)
