"""tests/randnets.py: every random network file loads through the project's safe loader, spandrel
detects the architecture upstream's file would be detected as, reports the facts the real file
has, and runs one forward pass; the cache is keyed and written atomically."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

import randnets
from ai_enhance.errors import EnhanceError
# the project's safe loader, imported in this one place (moving to ai_enhance.models.loading)
from ai_enhance.models import build_descriptor, read_state_dict
from ai_enhance_client.protocol import ErrorKind


def _params(table: dict) -> list:
    return [pytest.param(k, marks=[pytest.mark.slow] if s.huge else [], id=k) for k, s in table.items()]


# --------------------------------------------------------------------------- cache


def _tiny(path: Path, *, seed: int = 0, width: int = 2) -> Path:
    torch.manual_seed(seed)
    torch.save({"w": torch.randn(width)}, str(path))
    return path


def _failing(path: Path, *, seed: int = 0) -> Path:
    Path(path).write_bytes(b"partial")
    raise RuntimeError("maker failed half-way")


def test_cached_is_keyed_by_maker_arguments_defaults_and_version(tmp_path, monkeypatch):
    monkeypatch.setenv(randnets.ENV_CACHE, str(tmp_path))
    a = randnets.cached("x.pth", _tiny)
    assert a.parent.parent == tmp_path / "randnets" and a.name == "x.pth"
    assert randnets.cached("x.pth", _tiny) == a
    assert randnets.cached("x.pth", _tiny, width=2) == a          # the default spelled out
    b = randnets.cached("x.pth", _tiny, width=3)
    c = randnets.cached("x.pth", _tiny, seed=1)
    assert len({a.parent, b.parent, c.parent}) == 3
    monkeypatch.setattr(randnets, "MAKER_VERSION", randnets.MAKER_VERSION + 1)
    assert randnets.cached("x.pth", _tiny).parent != a.parent
    assert torch.load(str(b), weights_only=True)["w"].shape == (3,)


def test_cached_reuses_the_file_without_calling_the_maker_again(tmp_path, monkeypatch):
    monkeypatch.setenv(randnets.ENV_CACHE, str(tmp_path))
    calls = []

    def counting(path, *, seed=0):
        calls.append(path)
        return _tiny(path, seed=seed)

    p = randnets.cached("y.pth", counting)
    mtime = p.stat().st_mtime_ns
    assert randnets.cached("y.pth", counting) == p
    assert len(calls) == 1 and p.stat().st_mtime_ns == mtime
    # the maker wrote a temporary name, never the final one
    assert calls[0] != p and calls[0].parent == p.parent and calls[0].suffix == ".pth"


def test_a_failing_maker_leaves_neither_the_file_nor_its_temporary(tmp_path, monkeypatch):
    monkeypatch.setenv(randnets.ENV_CACHE, str(tmp_path))
    with pytest.raises(RuntimeError, match="half-way"):
        randnets.cached("z.pth", _failing)
    folder = next((tmp_path / "randnets").iterdir())
    assert list(folder.iterdir()) == []


def test_concurrent_processes_making_the_same_file_both_get_a_whole_one(tmp_path):
    """Two processes race for the same (slow-ish) file: both return the final path and the file
    loads; no temporary is left behind."""
    import subprocess
    import sys

    code = ("import randnets, torch; p = randnets.cached('race.pth', randnets.drunet, nb=3); "
            "torch.load(str(p), weights_only=True); print(p)")
    env = dict(os.environ, **{randnets.ENV_CACHE: str(tmp_path)})
    env["PYTHONPATH"] = os.pathsep.join([str(Path(randnets.__file__).parent), env.get("PYTHONPATH", "")])
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-500:] for o in outs]
    paths = {o[0].strip() for o in outs}
    assert len(paths) == 1
    folder = Path(paths.pop()).parent
    assert [f.name for f in folder.iterdir()] == ["race.pth"]


def test_cache_falls_back_to_a_temp_folder_when_the_configured_one_cannot_be_made(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv(randnets.ENV_CACHE, str(blocker / "cache"))
    root = randnets.cache_root()
    assert root.is_dir() and blocker not in root.parents
    assert os.access(root, os.W_OK)


def test_weights_are_deterministic_per_seed(tmp_path):
    a = read_state_dict(randnets.drunet(tmp_path / "a.pth", seed=3))
    b = read_state_dict(randnets.drunet(tmp_path / "b.pth", seed=3))
    c = read_state_dict(randnets.drunet(tmp_path / "c.pth", seed=4))
    assert a.keys() == b.keys() == c.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a if a[k].is_floating_point())


# --------------------------------------------------------------------------- every architecture


@pytest.mark.parametrize("key", _params(randnets.NETS))
def test_file_loads_safely_and_spandrel_detects_the_real_architecture(key):
    spec = randnets.NETS[key]
    path = spec.path()
    assert path.name == spec.file
    raw = (None if path.suffix == ".safetensors"
           else torch.load(str(path), map_location="cpu", weights_only=True, mmap=True))
    if spec.wrap:
        assert isinstance(raw, dict) and list(raw) == [spec.wrap]
    elif raw is not None:
        assert all(isinstance(v, torch.Tensor) for v in raw.values())

    sd = read_state_dict(path)
    d = build_descriptor(sd, path)
    assert str(d.architecture.id) == spec.arch
    assert d.purpose == spec.purpose
    assert d.scale == spec.scale
    assert (d.input_channels, d.output_channels) == (spec.input_channels, spec.output_channels)

    d.model.eval()
    s = spec.test_size
    h, w = (s, s) if s >= 512 else (s - 3, s - 5)      # odd sizes: the call's padding is exercised
    torch.manual_seed(0)
    x = torch.rand(1, spec.input_channels, h, w)
    with torch.inference_mode():
        if spec.masked:
            mask = torch.zeros(1, 1, h, w)
            mask[..., h // 4: h // 2, w // 4: w // 2] = 1
            y = d(x, mask)
        else:
            y = d(x)
    assert tuple(y.shape) == (1, spec.output_channels, h * spec.scale, w * spec.scale)
    assert torch.isfinite(y).all()


def test_small_nets_are_small():
    """The non-huge files stay a few MB: the tests of every architecture run on 2 CPU cores."""
    for key, spec in randnets.NETS.items():
        if not spec.huge:
            assert spec.path().stat().st_size < 10e6, key


@pytest.mark.parametrize("key", _params(randnets.UNSUPPORTED))
def test_official_files_spandrel_cannot_load_are_refused_as_unsupported(key):
    spec = randnets.UNSUPPORTED[key]
    path = spec.path()
    sd = read_state_dict(path)                  # a readable weights file ...
    assert any(k.startswith("vqvae.") for k in sd)
    with pytest.raises(EnhanceError) as e:      # ... that no spandrel architecture claims
        build_descriptor(sd, path)
    assert e.value.kind == ErrorKind.UNSUPPORTED
