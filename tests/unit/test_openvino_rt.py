"""The OpenVINO runtime on tiny random networks of the real architectures (Compact = realesr-
animevideov3's, RRDBNet = RealESRGAN_x4plus'), against torch running the same module.

The pure parts (core counting, settings, runtime/device choice, the precision decision, cache
names, the probe image) run everywhere; the rest skips when openvino is not importable."""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from ai_enhance.runtime import openvino_rt as rt
from testkit import REPO, make_compact, make_rrdb

needs_ov = pytest.mark.skipif(not rt.available(), reason="openvino is not installed "
                                                         "(pip install openvino)")
needs_low = pytest.mark.skipif(not (rt.available() and rt.fast_precision("CPU")),
                               reason="this CPU has neither bf16 nor f16 in OpenVINO")


def load(path: Path):
    from spandrel import ModelLoader
    d = ModelLoader().load_from_file(str(path))
    d.model.eval()
    return d


def torch_ref(module, x: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return module(torch.from_numpy(x)).clamp(0, 1).numpy()


def rand_img(h, w, c=3, seed=0):
    return np.random.default_rng(seed).random((1, c, h, w), dtype=np.float32)


@pytest.fixture(scope="module")
def nets(tmp_path_factory):
    d = tmp_path_factory.mktemp("ov-nets")
    return {"compact": load(make_compact(d / "compact.pth", seed=11)),
            "rrdb": load(make_rrdb(d / "rrdb.pth", seed=12)),
            "compact-gray": load(make_compact(d / "gray.pth", seed=13, in_ch=1))}


# --------------------------------------------------------------------------- pure parts

CPUINFO_HT = """processor\t: 0
physical id\t: 0
core id\t\t: 0

processor\t: 1
physical id\t: 0
core id\t\t: 1

processor\t: 2
physical id\t: 0
core id\t\t: 0

processor\t: 3
physical id\t: 0
core id\t\t: 1
"""
CPUINFO_2SOCKETS = """processor : 0
physical id : 0
core id : 0

processor : 1
physical id : 1
core id : 0
"""
CPUINFO_NO_IDS = """processor : 0
BogoMIPS : 50.00

processor : 1
BogoMIPS : 50.00
"""


@pytest.mark.parametrize("text, allowed, want", [
    (CPUINFO_HT, None, 2),                 # 4 hyper-threads on 2 cores
    (CPUINFO_HT, {0, 2}, 1),               # affinity: both threads of core 0
    (CPUINFO_HT, {0, 1}, 2),
    (CPUINFO_2SOCKETS, None, 2),           # core 0 on two packages is two cores
    (CPUINFO_NO_IDS, None, None),          # no core ids: caller falls back
    ("", None, None),
])
def test_parse_cpuinfo(text, allowed, want):
    assert rt.parse_cpuinfo(text, allowed) == want


@pytest.mark.parametrize("line, want", [
    ("max 100000", None), ("200000 100000", 2.0), ("150000 100000", 1.5), ("garbage", None),
    ("", None), ("-1 100000", None),
])
def test_cgroup_cpu_limit(line, want):
    assert rt.cgroup_cpu_limit(line) == want


def test_count_cores_dedups_threads():
    assert rt.count_cores([(0, 0), (0, 0), (0, 1), (1, 0)]) == 3


def test_physical_cores_is_sane():
    n = rt.physical_cores()
    assert 1 <= n <= (os.cpu_count() or 1)


@pytest.mark.parametrize("setting, kind, ov, want", [
    ("auto", "cpu", True, "openvino"),
    ("auto", "cpu", False, "torch"),
    ("auto", "cuda", True, "torch"),
    ("auto", "mps", True, "torch"),
    ("torch", "cpu", True, "torch"),
    ("openvino", "cpu", True, "openvino"),
    ("openvino", "cuda", True, "openvino"),      # explicit wins (CPU via OpenVINO)
])
def test_choose_runtime(setting, kind, ov, want):
    assert rt.choose_runtime(setting, kind, ov) == want


def test_choose_runtime_openvino_missing_says_how():
    with pytest.raises(rt.OVRuntimeUnavailable, match="pip install openvino"):
        rt.choose_runtime("openvino", "cpu", False)
    with pytest.raises(ValueError):
        rt.choose_runtime("tensorrt", "cpu", True)


@pytest.mark.parametrize("devs, pref, want", [
    ([("CPU", "integrated")], "auto", "CPU"),
    ([("CPU", "integrated"), ("GPU", "integrated")], "auto", "GPU"),
    ([("CPU", "integrated"), ("GPU.0", "integrated"), ("GPU.1", "discrete")], "auto", "GPU.1"),
    ([("CPU", "integrated"), ("GPU.0", "integrated"), ("GPU.1", "discrete")], "cpu", "CPU"),
    ([("CPU", "integrated"), ("GPU.0", "integrated")], "GPU", "GPU.0"),
    ([("CPU", "integrated"), ("GPU.0", "integrated"), ("GPU.1", "discrete")], "GPU.0", "GPU.0"),
])
def test_pick_device(devs, pref, want):
    assert rt.pick_device(devs, pref) == want


def test_pick_device_absent_preference_raises():
    with pytest.raises(rt.OVRuntimeUnavailable, match="GPU"):
        rt.pick_device([("CPU", "integrated")], "GPU")


@pytest.mark.parametrize("requested, cand, p, min_psnr, want", [
    ("auto", "bf16", 45.0, 40.0, "bf16"),
    ("auto", "bf16", 39.9, 40.0, "f32"),
    ("auto", "bf16", float("inf"), 40.0, "bf16"),
    ("auto", "f16", 50.0, 40.0, "f16"),
    ("auto", None, None, 40.0, "f32"),            # device has no low precision
    ("f32", "bf16", 80.0, 40.0, "f32"),           # the setting that forces f32
    ("bf16", "bf16", 20.0, 40.0, "bf16"),         # forced: the gate does not apply
    ("bf16", None, None, 40.0, "f32"),            # forced but absent: f32
])
def test_decide(requested, cand, p, min_psnr, want):
    assert rt._decide(requested, cand, p, min_psnr) == want


def test_settings_from_env(monkeypatch, tmp_path, caplog):
    for name in (rt.ENV_RUNTIME, rt.ENV_PRECISION, rt.ENV_CACHE, rt.ENV_DEVICE):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert (rt.runtime_setting(), rt.precision_setting(), rt.device_setting()) == ("auto", "auto", "auto")
    if sys.platform.startswith("linux"):
        assert rt.default_cache_dir() == tmp_path / "xdg" / "ai-enhance" / "ov-cache"
    monkeypatch.setenv(rt.ENV_RUNTIME, " Torch ")
    monkeypatch.setenv(rt.ENV_PRECISION, "F32")
    monkeypatch.setenv(rt.ENV_CACHE, str(tmp_path / "c"))
    monkeypatch.setenv(rt.ENV_DEVICE, "gpu.1")
    assert (rt.runtime_setting(), rt.precision_setting(), rt.device_setting()) == ("torch", "f32", "GPU.1")
    assert rt.default_cache_dir() == tmp_path / "c"
    monkeypatch.setenv(rt.ENV_PRECISION, "int4")
    with caplog.at_level(logging.WARNING, logger="ai_enhance.openvino"):
        assert rt.precision_setting() == "auto"
    assert "int4" in caplog.text


def test_entry_name_keys():
    base = rt.entry_name("e58cc48d" * 8 + "|dni=0.5", "auto", "CPU", "2026.4.1-22982-abc/2026/4")
    assert "/" not in base and len(base) < 100
    others = [rt.entry_name("e58cc48d" * 8 + "|dni=0.6", "auto", "CPU", "2026.4.1-22982-abc/2026/4"),
              rt.entry_name("e58cc48d" * 8 + "|dni=0.5", "f32", "CPU", "2026.4.1-22982-abc/2026/4"),
              rt.entry_name("e58cc48d" * 8 + "|dni=0.5", "auto", "GPU", "2026.4.1-22982-abc/2026/4"),
              rt.entry_name("e58cc48d" * 8 + "|dni=0.5", "auto", "CPU", "2026.5.0-1-def/2026/5")]
    assert len({base, *others}) == 5
    assert rt.entry_name("k", "auto", "CPU", "v") == rt.entry_name("k", "auto", "CPU", "v")


def test_cache_key_for():
    sha = "E58CC48D" + "0" * 56
    assert rt.cache_key_for(sha) == sha.lower()
    a = rt.cache_key_for(sha, (("dni", 0.5),), "ESRGAN")
    assert a == rt.cache_key_for(sha.lower(), [("dni", 0.5)], "ESRGAN")
    assert a != rt.cache_key_for(sha, (("dni", 0.6),), "ESRGAN")
    assert a != rt.cache_key_for(sha, (("dni", 0.5),))


def test_probe_image_fixed_natural_and_sized():
    a = rt.probe_image(40, 56)
    assert a.shape == (1, 3, 40, 56) and a.dtype == np.float32
    assert np.array_equal(a, rt.probe_image(40, 56))                 # deterministic
    assert 0.0 <= a.min() and a.max() <= 1.0
    assert a.std() > 0.05                                            # not flat
    assert np.abs(np.diff(a, axis=3)).max() > 0.1                    # has edges
    big = rt.probe_image(400, 350)                                   # larger than the asset
    assert big.shape == (1, 3, 400, 350) and big.std() > 0.05
    g = rt.probe_image(24, 32, channels=1)
    assert g.shape == (1, 1, 24, 32)


def test_psnr():
    a = np.zeros((1, 3, 4, 4), np.float32)
    assert rt.psnr(a, a) == float("inf")
    assert rt.psnr(a, a + 0.1) == pytest.approx(20.0)
    assert rt.psnr(a - 5, a) == float("inf")                         # clipped to [0, 1] first


def test_openvino_missing_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setattr(rt, "available", lambda: False)
    with pytest.raises(rt.OVRuntimeUnavailable, match="not installed"):
        rt.compile_model(torch.nn.Identity(), in_channels=3, cache_key="k", cache_dir=tmp_path)


# --------------------------------------------------------------------------- numerics

@needs_ov
@pytest.mark.parametrize("name", ["compact", "rrdb", "compact-gray"])
def test_f32_equals_torch_at_two_sizes(nets, name, tmp_path):
    d = nets[name]
    c = d.input_channels
    m = rt.compile_model(d.model, in_channels=c, cache_key=name, cache_dir=tmp_path, precision="f32")
    assert m.precision == "f32" and m.scale == 4 and m.out_channels == c
    for h, w in ((24, 40), (37, 29)):             # one compiled model, two shapes (dynamic H/W)
        x = rand_img(h, w, c, seed=h)
        y = m(x)
        ref = torch_ref(d.model, x)
        assert y.shape == ref.shape == (1, c, 4 * h, 4 * w)
        assert np.abs(y - ref).max() < 1e-4, name
    assert m.max_abs_vs_torch is not None and m.max_abs_vs_torch < 1e-4


@needs_ov
def test_size_multiple_pads_and_crops(nets, tmp_path):
    d = nets["compact"]
    m = rt.compile_model(d.model, in_channels=3, cache_key="mult", cache_dir=tmp_path,
                         precision="f32", size_multiple=8)
    x = rand_img(21, 30)
    y = m(x)
    xp = rt._pad_nchw(x, 3, 2)                    # 24 x 32: what the model saw
    ref = torch_ref(d.model, xp)[:, :, :84, :120]
    assert y.shape == (1, 3, 84, 120)
    assert np.abs(y - ref).max() < 1e-4


@needs_ov
def test_torch_forward_adapter(nets, tmp_path):
    d = nets["compact"]
    m = rt.compile_model(d.model, in_channels=3, cache_key="fwd", cache_dir=tmp_path, precision="f32")
    x = torch.from_numpy(rand_img(16, 20))
    y = m.forward(x, {})
    assert isinstance(y, torch.Tensor) and y.shape == (1, 3, 64, 80)
    assert torch.allclose(y, d.model(x).clamp(0, 1), atol=1e-4)


@needs_ov
def test_concurrent_calls_share_one_model(nets, tmp_path):
    d = nets["compact"]
    m = rt.compile_model(d.model, in_channels=3, cache_key="conc", cache_dir=tmp_path, precision="f32")
    inputs = [rand_img(16 + 4 * i, 20 + 3 * i, seed=i) for i in range(6)]
    want = [m(x) for x in inputs]
    got: dict[int, np.ndarray] = {}

    def work(i):
        for _ in range(3):
            got[i] = m(inputs[i])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(inputs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, w in enumerate(want):
        assert np.array_equal(got[i], w)


# --------------------------------------------------------------------------- the disk cache

def _entry_files(cache_dir: Path) -> list[Path]:
    return sorted(p for p in cache_dir.iterdir() if p.suffix in (".xml", ".bin", ".json"))


@needs_ov
@pytest.mark.slow
def test_cache_reuse_and_keys(nets, tmp_path):
    d = nets["rrdb"]
    first = rt.compile_model(d.model, in_channels=3, cache_key="sha-a", cache_dir=tmp_path)
    assert not first.cache_hit and first.cache_entry
    second = rt.compile_model(d.model, in_channels=3, cache_key="sha-a", cache_dir=tmp_path)
    assert second.cache_hit
    assert second.precision == first.precision and second.psnr_vs_f32 == first.psnr_vs_f32
    assert second.compile_seconds < 0.5 * first.compile_seconds
    x = rand_img(20, 28)
    assert np.array_equal(first(x), second(x))
    # other weights, or another precision setting: another entry, converted afresh
    assert not rt.compile_model(d.model, in_channels=3, cache_key="sha-b", cache_dir=tmp_path).cache_hit
    f32 = rt.compile_model(d.model, in_channels=3, cache_key="sha-a", cache_dir=tmp_path, precision="f32")
    assert not f32.cache_hit and f32.cache_entry != first.cache_entry
    assert len([p for p in _entry_files(tmp_path) if p.suffix == ".json"]) == 3


@needs_ov
@pytest.mark.slow
def test_cache_survives_a_restart(nets, tmp_path):
    """A fresh process (fresh openvino.Core) finds the entry: no conversion, same output."""
    d = nets["compact"]
    torch.save({"params": d.model.state_dict()}, tmp_path / "w.pth")
    x = rand_img(18, 22)
    np.save(tmp_path / "x.npy", x)
    first = rt.compile_model(d.model, in_channels=3, cache_key="restart", cache_dir=tmp_path / "c")
    script = f"""
import json, sys, numpy as np
from spandrel import ModelLoader
from ai_enhance.runtime import openvino_rt as rt
d = ModelLoader().load_from_file({str(tmp_path / 'w.pth')!r})
m = rt.compile_model(d.model, in_channels=3, cache_key="restart", cache_dir=__import__('pathlib').Path({str(tmp_path / 'c')!r}))
np.save({str(tmp_path / 'y.npy')!r}, m(np.load({str(tmp_path / 'x.npy')!r})))
print(json.dumps(m.to_json()))
"""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(REPO / "backend"), str(REPO / "plugin" / "ai-enhance"), os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    info = json.loads(out.stdout.strip().splitlines()[-1])
    assert info["cache_hit"] is True and info["precision"] == first.precision
    assert np.array_equal(np.load(tmp_path / "y.npy"), first(x))


@needs_ov
@pytest.mark.parametrize("damage", ["truncate-bin", "garble-xml", "truncate-json", "garble-json",
                                    "drop-json", "drop-bin", "garble-blobs", "hashed-garbage"])
def test_corrupt_cache_is_rebuilt(nets, tmp_path, damage, caplog):
    d = nets["compact"]
    good = rt.compile_model(d.model, in_channels=3, cache_key="c", cache_dir=tmp_path)
    x = rand_img(20, 24)
    want = good(x)
    xml = Path(good.cache_entry)
    binf, rec = xml.with_suffix(".bin"), xml.with_suffix(".json")
    if damage == "truncate-bin":
        binf.write_bytes(binf.read_bytes()[: binf.stat().st_size // 2])
    elif damage == "garble-xml":
        xml.write_text("<net><<<not xml")
    elif damage == "truncate-json":
        rec.write_text(rec.read_text()[:20])
    elif damage == "garble-json":
        rec.write_text(json.dumps({"format": 1, "status": "ok", "openvino": rt.ov_version(),
                                   "bin_size": "x"}))
    elif damage == "drop-json":
        rec.unlink()
    elif damage == "drop-bin":
        binf.unlink()
    elif damage == "hashed-garbage":     # hashes match, OpenVINO still refuses the files
        xml.write_text("<net><<<not xml")
        r = json.loads(rec.read_text())
        r["xml_sha256"] = rt._sha256_file(xml)
        rec.write_text(json.dumps(r))
    elif damage == "garble-blobs":
        for b in (tmp_path / "compiled").iterdir():
            b.write_bytes(b"garbage" * 10)
    with caplog.at_level(logging.WARNING, logger="ai_enhance.openvino"):
        again = rt.compile_model(d.model, in_channels=3, cache_key="c", cache_dir=tmp_path)
    assert np.array_equal(again(x), want)
    if damage == "garble-blobs":         # our files are sound; OpenVINO recompiles its blob
        assert again.cache_hit
    else:
        assert not again.cache_hit
        assert "rebuilding" in caplog.text and "Traceback" not in caplog.text
        third = rt.compile_model(d.model, in_channels=3, cache_key="c", cache_dir=tmp_path)
        assert third.cache_hit                       # the rebuilt entry is sound
        assert np.array_equal(third(x), want)


@needs_ov
def test_unwritable_cache_dir_runs_without_cache(nets, tmp_path, caplog):
    d = nets["compact"]
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with caplog.at_level(logging.WARNING, logger="ai_enhance.openvino"):
        m = rt.compile_model(d.model, in_channels=3, cache_key="k", cache_dir=blocker / "cache")
    assert m.cache_entry is None and not m.cache_hit
    x = rand_img(16, 16)
    assert np.abs(m(x) - torch_ref(d.model, x)).max() < 1e-2
    lines = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(lines) == 1 and "cache off" in lines[0].getMessage()


@needs_ov
def test_disk_full_while_saving_runs_without_cache(nets, tmp_path, monkeypatch, caplog):
    import openvino as ov

    d = nets["compact"]

    def full(model, path, *a, **k):
        Path(path).write_bytes(b"partial")           # a partial write, then the failure
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ov, "save_model", full)
    with caplog.at_level(logging.WARNING, logger="ai_enhance.openvino"):
        m = rt.compile_model(d.model, in_channels=3, cache_key="full", cache_dir=tmp_path)
    assert m.cache_entry is None
    assert _entry_files(tmp_path) == []               # nothing half-written left behind
    assert "No space left" in caplog.text
    x = rand_img(16, 16)
    assert np.abs(m(x) - torch_ref(d.model, x)).max() < 1e-2


# --------------------------------------------------------------------------- precision gate

@needs_ov
@needs_low
@pytest.mark.slow
def test_gate_falls_back_to_f32_and_is_recorded(nets, tmp_path, monkeypatch):
    d = nets["rrdb"]
    cand = rt.fast_precision("CPU")
    strict = rt.compile_model(d.model, in_channels=3, cache_key="g", cache_dir=tmp_path, min_psnr=1e9)
    assert strict.precision == "f32"
    assert strict.psnr_vs_f32 is not None and 20 < strict.psnr_vs_f32 < 1e9
    rec = json.loads(Path(strict.cache_entry).with_suffix(".json").read_text())
    assert rec["candidate"] == cand and rec["candidate_psnr"] == pytest.approx(strict.psnr_vs_f32)

    # the next start reuses the recorded check: no second PSNR measurement
    def no_check(*_a, **_k):
        raise AssertionError("the gate was measured again")

    monkeypatch.setattr(rt, "psnr", no_check)
    again = rt.compile_model(d.model, in_channels=3, cache_key="g", cache_dir=tmp_path, min_psnr=1e9)
    assert again.cache_hit and again.precision == "f32"
    # a gate the recorded PSNR passes picks the fast precision, still without measuring
    lax = rt.compile_model(d.model, in_channels=3, cache_key="g", cache_dir=tmp_path, min_psnr=0.0)
    assert lax.cache_hit and lax.precision == cand
    x = rand_img(20, 20)
    ref = torch_ref(d.model, x)
    monkeypatch.undo()
    assert rt.psnr(lax(x), ref) > 25                  # it really runs, and close to f32
    assert np.abs(again(x) - ref).max() < 1e-4        # and the f32 one is f32


@needs_ov
@needs_low
@pytest.mark.slow
def test_auto_precision_follows_the_gate(nets, tmp_path):
    d = nets["rrdb"]
    m = rt.compile_model(d.model, in_channels=3, cache_key="auto", cache_dir=tmp_path)
    assert m.psnr_vs_f32 is not None
    assert m.precision == (rt.fast_precision("CPU") if m.psnr_vs_f32 >= 40 else "f32")
    forced = rt.compile_model(d.model, in_channels=3, cache_key="auto", cache_dir=tmp_path,
                              precision="f32")
    assert forced.precision == "f32" and forced.psnr_vs_f32 is None


# --------------------------------------------------------------------------- refusals

class Histc(torch.nn.Module):
    """An op OpenVINO has no rule for."""

    def forward(self, x):
        return x * torch.histc(x, 4).sum() / x.numel()


class FrozenWidth(torch.nn.Module):
    """Converts, but the tracer freezes the example's width into the graph: wrong at other
    sizes (the kind of model that must fall back to torch, not run wrong)."""

    def forward(self, x):
        return x * (float(x.shape[-1]) / 64.0)


@needs_ov
def test_unconvertible_module_names_the_op_and_is_remembered(tmp_path):
    with pytest.raises(rt.OVRuntimeUnavailable) as e:
        rt.compile_model(Histc(), in_channels=3, cache_key="h", cache_dir=tmp_path)
    assert "aten::histc" in str(e.value) and not e.value.cached
    t0 = time.monotonic()
    with pytest.raises(rt.OVRuntimeUnavailable) as e2:
        rt.compile_model(Histc(), in_channels=3, cache_key="h", cache_dir=tmp_path)
    assert e2.value.cached and str(e2.value) == str(e.value)
    assert time.monotonic() - t0 < 1.0


@needs_ov
@pytest.mark.filterwarnings("ignore")
def test_wrong_output_is_refused(tmp_path):
    with pytest.raises(rt.OVRuntimeUnavailable, match="differs from torch"):
        rt.compile_model(FrozenWidth(), in_channels=3, cache_key="f", cache_dir=tmp_path)


def test_converting_a_model_sends_and_writes_no_telemetry(tmp_path):
    """OpenVINO's converter counts a user without a consent file as opted in to usage telemetry
    (it wrote ~/intel/stats in the installer test and would send data): ours runs with its stub."""
    pytest.importorskip("openvino")
    home = tmp_path / "home"
    home.mkdir()
    code = (
        "import sys, torch\n"
        "from ai_enhance.runtime import openvino_rt as rt\n"
        "net = torch.nn.Conv2d(3, 3, 3, padding=1).eval()\n"
        "m = rt._convert(net, 3, (32, 32))\n"
        "assert m is not None\n"
        "print(sys.modules.get('openvino_telemetry'))\n")
    env = dict(os.environ, HOME=str(home))
    env.pop("CI", None)              # the converter skips telemetry in CI: test the user's case
    p = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.strip() == "None"
    assert not (home / "intel").exists(), sorted(str(x) for x in home.rglob("*"))
