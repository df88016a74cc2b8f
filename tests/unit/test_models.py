"""ModelStore: catalogue + custom files, verification status, safe loading, clear errors.
Tiny random-initialised networks of the real architectures, saved at test time."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from ai_enhance import models
import importlib
_catalog_module = importlib.import_module("ai_enhance.models.catalog")
from ai_enhance.models.loading import interpolate_state_dicts
from ai_enhance_client.ops import ops_for_model
from ai_enhance.errors import EnhanceError
from ai_enhance.models import ModelStore, read_state_dict
from ai_enhance_client.protocol import ErrorKind
from testkit import make_compact, make_rrdb


def make_ffdnet(path: Path, nc: int = 8, seed: int = 0) -> Path:
    """A random network in KAIR FFDNet's key layout (13 -> nc -> ... -> 12 channels)."""
    from spandrel.architectures.DnCNN import DnCNN

    torch.manual_seed(seed)
    net = DnCNN(in_nc=13, out_nc=12, nc=nc, nb=8, act_mode="R", mode="FDnCNN")
    torch.save(net.state_dict(), path)
    return path


@pytest.fixture
def mdir(tmp_path) -> Path:
    d = tmp_path / "models"
    d.mkdir()
    make_compact(d / "realesr-animevideov3.pth", seed=1)
    make_rrdb(d / "RealESRGAN_x2plus.pth", scale=2, seed=3)
    make_compact(d / "my-nearest.pth", zero_last=True, seed=6)
    (d / "detection_mobilenet0.25_Final.pth").write_bytes(b"support file, not a model")
    (d / "notes.txt").write_text("not a model")
    return d


# --------------------------------------------------------------------------- listing

def test_list_has_catalogue_and_custom_models(mdir):
    store = ModelStore(mdir)
    by_id = {m.id: m for m in store.list()}
    # every catalogue entry is listed, installed or not
    for e in models.catalog():
        assert e["id"] in by_id
    anime = by_id["realesr-animevideov3"]
    assert anime.installed and anime.status == "unverified"      # not the official bytes
    assert by_id["realesrgan-x4plus"].status == "missing" and not by_id["realesrgan-x4plus"].installed
    custom = by_id["my-nearest"]
    assert custom.custom and custom.status == "custom" and custom.arch == "Compact"
    assert custom.scale == 4 and custom.ops == ["upscale", "sharpen"]      # an SR model
    # support files are catalogue entries with a role, never custom models
    det = by_id["retinaface-mobile0.25"]
    assert det.role == "face_detector" and det.installed and not det.custom
    assert not any(m.custom and m.file == "detection_mobilenet0.25_Final.pth" for m in by_id.values())
    assert "notes" not in by_id
    json.dumps([m.to_json() for m in store.list()])              # JSON-able


def test_custom_files_that_are_not_models_are_not_listed(mdir):
    torch.save({"foo": torch.zeros(3)}, mdir / "random-tensors.pth")
    (mdir / "broken.pth").write_bytes(b"PK\x03\x04 half a zip")
    (mdir / ".hidden.pth").write_bytes(b"x")
    make_compact(mdir / "also-a-model.safetensors.part")       # partial download: ignored
    ids = {m.id for m in ModelStore(mdir).list()}
    assert "random-tensors" not in ids and "broken" not in ids and ".hidden" not in ids
    assert not any("part" in i for i in ids)


def test_custom_safetensors_model(mdir):
    from safetensors.torch import save_file

    sd = torch.load(make_compact(mdir / "tmp.pth", scale=2, seed=9), weights_only=True)["params"]
    (mdir / "tmp.pth").unlink()
    save_file({k: v.contiguous() for k, v in sd.items()}, str(mdir / "Fancy Model x2.safetensors"))
    store = ModelStore(mdir)
    m = store.resolve("Fancy_Model_x2")                          # id is a safe protocol name
    assert m.custom and m.scale == 2
    lm = store.load(m, "cpu")
    assert lm.scale == 2 and lm.input_channels == 3
    out = lm.forward(torch.rand(1, 3, 8, 8), {})
    assert out.shape == (1, 3, 16, 16)


def test_custom_name_colliding_with_a_catalogue_id(mdir):
    make_compact(mdir / "codeformer.safetensors.pth", seed=2)   # harmless name
    make_compact(mdir / "realesrgan-x4plus.pth", seed=2)         # stem equals a catalogue id
    ids = {m.id for m in ModelStore(mdir).list() if m.custom}
    assert "realesrgan-x4plus-custom" in ids


def test_catalogue_file_found_case_insensitively(tmp_path):
    make_compact(tmp_path / "REALESR-ANIMEVIDEOV3.PTH", seed=1)
    info = ModelStore(tmp_path).resolve("realesr-animevideov3")
    assert info.installed and info.path.name == "REALESR-ANIMEVIDEOV3.PTH"


# --------------------------------------------------------------------------- verification

def test_verified_when_sha256_matches(tmp_path):
    f = make_compact(tmp_path / "tiny.pth", seed=1)
    sha = hashlib.sha256(f.read_bytes()).hexdigest()
    entries = [{"id": "tiny", "name": "Tiny", "file": "tiny.pth", "url": "https://x/y", "sha256": sha,
                "family": "realesrgan", "ops": ["upscale"], "scale": 4, "role": None},
               {"id": "tiny-unpinned", "name": "T", "file": "tiny.pth", "url": "https://x/z",
                "sha256": None, "family": "realesrgan", "ops": ["upscale"], "scale": 4, "role": None},
               {"id": "tiny-other", "name": "T", "file": "tiny.pth", "url": "https://x/z",
                "sha256": "0" * 64, "family": "realesrgan", "ops": ["upscale"], "scale": 4, "role": None}]
    store = ModelStore(tmp_path, catalog_entries=entries)
    assert store.resolve("tiny").status == "verified"
    assert store.resolve("tiny-unpinned").status == "unverified"
    assert store.resolve("tiny-other").status == "unverified"


def test_sha256_is_cached_by_path_size_mtime(tmp_path, monkeypatch):
    f = make_compact(tmp_path / "realesr-animevideov3.pth", seed=1)
    calls = []
    real = hashlib.sha256

    def counting(*a, **k):
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(_catalog_module.hashlib, "sha256", counting)
    store = ModelStore(tmp_path)
    for _ in range(5):
        assert store.resolve("realesr-animevideov3").status == "unverified"
        store.list()
    assert len(calls) == 1                                       # hashed once
    # a changed file is hashed again
    st = f.stat()
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    store.resolve("realesr-animevideov3").status
    assert len(calls) == 2


def test_resolve_does_not_hash(tmp_path, monkeypatch):
    make_compact(tmp_path / "realesr-animevideov3.pth", seed=1)
    monkeypatch.setattr(models, "file_sha256", lambda p: pytest.fail("hashed on resolve"))
    info = ModelStore(tmp_path).resolve("realesr-animevideov3")
    assert info.installed


# --------------------------------------------------------------------------- errors

def test_unknown_model(mdir):
    with pytest.raises(EnhanceError) as e:
        ModelStore(mdir).resolve("no-such-model")
    assert e.value.kind == ErrorKind.UNKNOWN_MODEL
    assert "no-such-model" in e.value.message
    assert "realesrgan-x4plus" in e.value.hint and "\n" not in str(e.value)


def test_missing_model_names_file_folder_and_installer(mdir):
    with pytest.raises(EnhanceError) as e:
        ModelStore(mdir).resolve("realesrgan-x4plus")
    err = e.value
    assert err.kind == ErrorKind.MODEL_MISSING
    assert "RealESRGAN_x4plus.pth" in err.message and str(mdir) in err.message
    assert "Filters > AI Enhance > Models" in err.hint                 # what to do inside GIMP
    assert "ai-enhance models install realesrgan-x4plus" in err.hint
    assert "https://github.com/xinntao/Real-ESRGAN/releases/download/" in err.hint
    assert "\n" not in str(err)


def _corrupt_kind(path: Path) -> EnhanceError:
    with pytest.raises(EnhanceError) as e:
        read_state_dict(path, "realesr-animevideov3")
    assert "\n" not in str(e.value)
    return e.value


def test_truncated_and_garbage_files(tmp_path):
    data = make_compact(tmp_path / "good.pth", seed=1).read_bytes()
    cases = {
        "half.pth": data[: len(data) // 2],
        "head.pth": data[:100],
        "empty.pth": b"",
        "noise.pth": np.random.default_rng(0).bytes(4096),
        "text.ckpt": b"<html>404 Not Found</html>",
    }
    for name, raw in cases.items():
        (tmp_path / name).write_bytes(raw)
        err = _corrupt_kind(tmp_path / name)
        assert err.kind == ErrorKind.MODEL_CORRUPT, name
        assert name in err.message
        assert "ai-enhance models install realesr-animevideov3" in err.hint
    assert "truncated" in _corrupt_kind(tmp_path / "half.pth").message
    assert "empty" in _corrupt_kind(tmp_path / "empty.pth").message


def test_torchscript_is_refused(tmp_path):
    m = torch.jit.script(torch.nn.Conv2d(3, 3, 3))
    torch.jit.save(m, str(tmp_path / "ts.pth"))
    err = _corrupt_kind(tmp_path / "ts.pth")
    assert err.kind == ErrorKind.MODEL_CORRUPT and "TorchScript" in err.message


class _Payload:
    """Pickles to a call of os.system: loading it with plain pickle would run a command."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_with_code_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    sd = torch.load(make_compact(tmp_path / "ok.pth"), weights_only=True)
    sd["extra"] = _Payload(marker)
    torch.save(sd, tmp_path / "evil.pth")
    err = _corrupt_kind(tmp_path / "evil.pth")
    assert err.kind == ErrorKind.MODEL_CORRUPT
    assert "full pickle" in err.message and "system" in err.message
    assert not marker.exists()
    # also through the store listing and loading of a custom file
    store = ModelStore(tmp_path)
    assert "evil" not in {m.id for m in store.list()}
    assert not marker.exists()


def test_unrecognised_architecture_is_unsupported(tmp_path):
    torch.save({"params": {"encoder.weight": torch.zeros(4, 4)}}, tmp_path / "mystery.pth")
    store = ModelStore(tmp_path)
    info = store.get("mystery")
    assert info is not None and info.custom
    with pytest.raises(EnhanceError) as e:
        store.load(info, "cpu")
    assert e.value.kind == ErrorKind.UNSUPPORTED and "mystery.pth" in e.value.message


def test_weights_not_fitting_the_detected_architecture(tmp_path):
    sd = torch.load(make_compact(tmp_path / "x.pth", seed=1), weights_only=True)["params"]
    sd["body.2.weight"] = torch.zeros(3, 3, 3, 3)           # wrong shape for the layer
    torch.save({"params": sd}, tmp_path / "realesr-animevideov3.pth")
    store = ModelStore(tmp_path)
    with pytest.raises(EnhanceError) as e:
        store.load(store.resolve("realesr-animevideov3"), "cpu")
    assert e.value.kind == ErrorKind.MODEL_CORRUPT


# --------------------------------------------------------------------------- loading

def test_model_facts_come_from_spandrel(mdir):
    import spandrel

    store = ModelStore(mdir)
    lm = store.load(store.resolve("realesrgan-x2plus"), "cpu")
    ref = spandrel.ModelLoader().load_from_file(mdir / "RealESRGAN_x2plus.pth")
    assert lm.scale == ref.scale == 2
    assert lm.input_channels == ref.input_channels == 3
    assert (lm.size_req.minimum, lm.size_req.multiple_of, lm.size_req.square) == (
        ref.size_requirements.minimum, ref.size_requirements.multiple_of, ref.size_requirements.square)
    assert lm.purpose == "SR" and lm.dtype == "float32" and lm.device == "cpu"
    assert not any(p.requires_grad for p in lm.module.parameters())
    x = torch.rand(1, 3, 12, 12)
    torch.testing.assert_close(lm.forward(x, {}), ref(x))


def test_unwraps_params_ema_before_params(tmp_path):
    a = torch.load(make_compact(tmp_path / "a.pth", seed=1), weights_only=True)["params"]
    b = torch.load(make_compact(tmp_path / "b.pth", seed=2), weights_only=True)["params"]
    torch.save({"params": b, "params_ema": a}, tmp_path / "both.pth")
    sd = read_state_dict(tmp_path / "both.pth")
    torch.testing.assert_close(sd["body.0.weight"], a["body.0.weight"])


def test_dni_blends_state_dicts(tmp_path):
    main = make_compact(tmp_path / "realesr-general-x4v3.pth", seed=4)
    wdn = make_compact(tmp_path / "realesr-general-wdn-x4v3.pth", seed=5)
    store = ModelStore(tmp_path)
    info = store.resolve("realesr-general-x4v3")
    a = torch.load(main, weights_only=True)["params"]
    b = torch.load(wdn, weights_only=True)["params"]
    for strength in (1.0, 0.0, 0.3):
        lm = store.load(info, "cpu", options={"denoise-strength": strength})
        got = lm.module.state_dict()["body.0.weight"]
        torch.testing.assert_close(got, strength * a["body.0.weight"] + (1 - strength) * b["body.0.weight"])
    # default strength is the operation table's (0.5)
    lm = store.load(info, "cpu")
    torch.testing.assert_close(lm.module.state_dict()["body.2.weight"],
                               0.5 * a["body.2.weight"] + 0.5 * b["body.2.weight"])
    with pytest.raises(EnhanceError) as e:
        store.load(info, "cpu", options={"denoise-strength": 1.5})
    assert e.value.kind == ErrorKind.BAD_REQUEST


def test_dni_without_companion(tmp_path):
    make_compact(tmp_path / "realesr-general-x4v3.pth", seed=4)
    store = ModelStore(tmp_path)
    info = store.resolve("realesr-general-x4v3")
    with pytest.raises(EnhanceError) as e:
        store.load(info, "cpu", options={"denoise-strength": 0.5})
    assert e.value.kind == ErrorKind.MODEL_MISSING
    assert "realesr-general-wdn-x4v3.pth" in e.value.message
    assert "denoise-strength" in str(e.value)
    # strength 1 needs only the main file
    assert store.load(info, "cpu", options={"denoise-strength": 1}).scale == 4


def test_ffdnet_adapter(tmp_path):
    import torch.nn.functional as F
    from spandrel import ModelLoader

    make_ffdnet(tmp_path / "ffdnet_color.pth", seed=3)
    store = ModelStore(tmp_path)
    info = store.resolve("ffdnet-color")
    lm = store.load(info, "cpu")
    assert (lm.scale, lm.input_channels, lm.output_channels) == (1, 3, 3)
    assert lm.size_req.multiple_of == 2
    net = ModelLoader().load_from_file(tmp_path / "ffdnet_color.pth").model
    x = torch.rand(1, 3, 10, 14)
    for sigma in (5.0, 50.0):
        y = F.pixel_unshuffle(x, 2)
        m = torch.full((1, 1, 5, 7), sigma / 255)
        ref = F.pixel_shuffle(net.model(torch.cat([y, m], 1)), 2).clamp(0, 1)
        torch.testing.assert_close(lm.forward(x, {"noise-level": sigma}), ref)
    # odd sizes are padded and cropped back
    assert lm.forward(torch.rand(1, 3, 9, 11), {}).shape == (1, 3, 9, 11)
    # a DnCNN that is not an FFDNet is refused by the adapter
    from spandrel.architectures.DnCNN import DnCNN
    torch.save(DnCNN(in_nc=3, out_nc=3, nc=8, nb=8, act_mode="R").state_dict(), tmp_path / "ffdnet_color.pth")
    with pytest.raises(EnhanceError) as e:
        store.load(store.resolve("ffdnet-color"), "cpu")
    assert e.value.kind == ErrorKind.MODEL_CORRUPT


def test_interpolate_rejects_mismatched_files(tmp_path):
    a = torch.load(make_compact(tmp_path / "a.pth", num_feat=8), weights_only=True)["params"]
    b = torch.load(make_compact(tmp_path / "b.pth", num_feat=16), weights_only=True)["params"]
    with pytest.raises(ValueError):
        interpolate_state_dicts(a, b, 0.5)


def test_ops_for_custom_models_follow_the_table():
    assert ops_for_model("SR", "ESRGAN") == ["upscale", "sharpen"]
    assert {"upscale", "denoise", "sharpen", "jpeg"} <= set(ops_for_model("Restoration", "SCUNet"))
    assert ops_for_model("FaceSR", "GFPGAN") == ["faces"]
    assert ops_for_model("Restoration", "FBCNN") == ["jpeg"]      # named by one operation: only it
    assert ops_for_model(None, None) == []
