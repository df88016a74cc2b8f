"""ai_enhance.models.adapters with random networks in the real key layouts (tests/randnets.py), and
the real FFDNet weights where ../shared/weights has them."""
from __future__ import annotations

import functools
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import randnets
from ai_enhance.models import adapters as A
from ai_enhance.errors import EnhanceError
# the project's safe loader, imported in this one place (moving to ai_enhance.models.loading)
from ai_enhance.models import build_descriptor, read_state_dict
from ai_enhance_client.protocol import ErrorKind

REPO = Path(__file__).resolve().parents[2]
REAL_FFDNET = REPO.parent / "shared" / "weights" / "ffdnet_color.pth"
FACT_KEYS = {"scale", "input_channels", "output_channels", "size_req", "tiling", "purpose",
             "supports_half"}
slow = pytest.mark.slow


@functools.lru_cache(maxsize=None)
def descriptor(key: str):
    path = randnets.path_of(key)
    d = build_descriptor(read_state_dict(path), path)
    d.model.eval()
    return d


def adapt(key: str, info=None, name: str | None = None):
    d = descriptor(key)
    facts, forward = A.adapter_for(d, name)(d, info, randnets.path_of(key))
    assert set(facts) == FACT_KEYS
    return facts, forward


def rand(h: int, w: int, c: int = 3, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, c, h, w, generator=g)


def info_with() -> SimpleNamespace:
    return SimpleNamespace(id="test-model")


def psnr(a, b) -> float:
    mse = float(((a - b) ** 2).mean())
    return 10 * math.log10(1.0 / mse)


# --------------------------------------------------------------------------- plain models

PLAIN = {  # key: (adapter, multiple_of the engine must pad to)
    "scunet": (A.plain, 1),
    "fftformer": (A.plain, 32),
    "restormer": (A.plain, 8),
    "mprnet": (A.plain, 8),
    "nafnet": (A.internally_padded, 16),
    "kbnet-s": (A.internally_padded, 16),
    "kbnet-l": (A.internally_padded, 16),
}


@pytest.mark.parametrize("key", list(PLAIN))
def test_plain_models_keep_the_size_and_range(key):
    adapter, multiple = PLAIN[key]
    d = descriptor(key)
    assert A.adapter_for(d) is adapter
    facts, forward = adapt(key)
    assert facts["size_req"].multiple_of == multiple
    assert (facts["scale"], facts["input_channels"], facts["output_channels"]) == (1, 3, 3)
    x = rand(45, 38)
    y = forward(x, {})
    assert y.shape == x.shape
    assert float(y.min()) >= 0 and float(y.max()) <= 1


def test_internally_padded_reports_the_networks_own_multiple():
    d = descriptor("nafnet")
    assert d.size_requirements.multiple_of == 1                 # spandrel says nothing ...
    facts, forward = adapt("nafnet")
    assert facts["size_req"].multiple_of == d.model.padder_size == 2 ** len(d.model.encoders)
    x = rand(32, 48)                                            # ... the call is spandrel's
    assert torch.equal(forward(x, {}), d(x))


# --------------------------------------------------------------------------- noise level


def _first_conv_inputs(net) -> list:
    """Records what the first convolution of ``net`` receives."""
    first = next(m for m in net.modules() if isinstance(m, torch.nn.Conv2d))
    seen = []
    first.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach().clone()))
    return seen


def test_ffdnet_feeds_sigma_over_255_as_the_last_channel_and_keeps_odd_sizes():
    facts, forward = adapt("ffdnet", name="ffdnet")
    assert facts["input_channels"] == 3 and facts["size_req"].multiple_of == 2
    seen = _first_conv_inputs(descriptor("ffdnet").model)
    x = rand(31, 27)
    a, b = forward(x, {"noise-level": 5}), forward(x, {"noise-level": 50})
    assert a.shape == b.shape == x.shape and not torch.equal(a, b)
    assert seen[-1].shape == (1, 13, 16, 14)                     # unshuffled 32x28 + the map
    assert torch.allclose(seen[-1][:, 12], torch.full((1, 16, 14), 50 / 255))


def test_ffdnet_without_a_level_uses_25():
    """The operation table's default reaches the adapter in the options; called bare, 25."""
    _, forward = adapt("ffdnet", name="ffdnet")
    x = rand(16, 16)
    assert torch.equal(forward(x, {}), forward(x, {"noise-level": 25}))
    assert not torch.equal(forward(x, {}), forward(x, {"noise-level": 40}))


@pytest.mark.parametrize("bad", [-1, 76, 1e9, "25", True, [25]])
def test_noise_level_out_of_range_or_not_a_number_is_a_bad_request(bad):
    _, forward = adapt("drunet")
    with pytest.raises(EnhanceError) as e:
        forward(rand(16, 16), {"noise-level": bad})
    assert e.value.kind == ErrorKind.BAD_REQUEST and "noise-level" in e.value.message


def test_ffdnet_adapter_refuses_a_plain_dncnn(tmp_path):
    from spandrel.architectures.DnCNN import DnCNN

    p = tmp_path / "dncnn.pth"
    torch.save(DnCNN(in_nc=3, out_nc=3, nc=8, nb=8, mode="DnCNN").state_dict(), p)
    d = build_descriptor(read_state_dict(p), p)
    with pytest.raises(EnhanceError) as e:
        A.ADAPTERS["ffdnet"](d, info_with(), p)
    assert e.value.kind == ErrorKind.MODEL_CORRUPT


@pytest.mark.skipif(not REAL_FFDNET.is_file(), reason=f"real FFDNet weights not at {REAL_FFDNET}")
def test_real_ffdnet_removes_the_noise_level_it_is_told():
    skimage_data = pytest.importorskip("skimage.data")
    p = REAL_FFDNET
    d = build_descriptor(read_state_dict(p), p)
    d.model.eval()
    _, forward = A.ffdnet(d, info_with(), p)
    clean = torch.from_numpy(skimage_data.astronaut()[100:228, 150:278].astype(np.float32) / 255)
    clean = clean.permute(2, 0, 1)[None]
    g = torch.Generator().manual_seed(1)
    noisy = (clean + torch.randn(clean.shape, generator=g) * 25 / 255).clamp(0, 1)
    out = {s: forward(noisy, {"noise-level": s}) for s in (0, 10, 25, 75)}
    gain = {s: psnr(y, clean) - psnr(noisy, clean) for s, y in out.items()}
    assert gain[25] > 5                                          # measured +9.5 dB
    assert gain[25] == max(gain.values())                        # the matched level is best
    change = [float((out[s] - noisy).abs().mean()) for s in (0, 10, 25, 75)]
    assert change == sorted(change)                              # more sigma, more smoothing
    assert psnr(forward(clean, {"noise-level": 0}), clean) > 40   # measured 49.8 dB


def test_drunet_noise_level_changes_the_output_default_15():
    facts, forward = adapt("drunet")
    assert facts["input_channels"] == 3 and facts["size_req"].multiple_of == 8
    seen = _first_conv_inputs(descriptor("drunet").model)
    x = rand(37, 29)
    a = forward(x, {})
    assert a.shape == x.shape
    assert seen[-1].shape == (1, 4, 40, 32)                      # padded to 8, map appended
    assert torch.allclose(seen[-1][:, 3], torch.full((1, 40, 32), 15 / 255))
    assert torch.equal(a, forward(x, {"noise-level": 15}))
    assert float((a - forward(x, {"noise-level": 60})).abs().mean()) > 1e-4


# --------------------------------------------------------------------------- JPEG


def test_fbcnn_quality_zero_returns_the_models_estimate():
    d = descriptor("fbcnn")
    _, forward = adapt("fbcnn")
    x = rand(40, 44)
    out = forward(x, {"quality": 0})
    assert isinstance(out, tuple)
    y, info = out
    assert y.shape == x.shape and set(info) == {"quality"}
    q = info["quality"]
    assert isinstance(q, int) and 0 <= q <= 100
    with torch.inference_mode():
        ref, qf = d.model(x)
    assert q == round((1 - float(qf)) * 100)
    assert torch.allclose(y, ref.clamp(0, 1))
    assert forward(x, {})[1] == info                              # 0 is the default
    assert A.estimate_jpeg_quality(d, x) == max(1, q)               # the same head, run alone


def test_fbcnn_assumed_quality_goes_in_as_one_minus_q_over_100():
    d = descriptor("fbcnn")
    _, forward = adapt("fbcnn")
    x = rand(32, 32)
    y10, y90 = forward(x, {"quality": 10}), forward(x, {"quality": 90})
    assert isinstance(y10, torch.Tensor) and y10.shape == x.shape
    assert float((y10 - y90).abs().mean()) > 1e-5
    with torch.inference_mode():
        ref = d.model(x, torch.tensor([[0.9]]))[0].clamp(0, 1)
    assert torch.allclose(y10, ref)


@pytest.mark.parametrize("bad", [0.5, -1, 101, "high"])
def test_fbcnn_quality_must_be_0_or_1_to_100(bad):
    _, forward = adapt("fbcnn")
    with pytest.raises(EnhanceError) as e:
        forward(rand(16, 16), {"quality": bad})
    assert e.value.kind == ErrorKind.BAD_REQUEST


# --------------------------------------------------------------------------- inpainting


def _mask(h, w, box):
    m = torch.zeros(1, 1, h, w)
    y0, y1, x0, x1 = box
    m[..., y0:y1, x0:x1] = 1
    return m


@slow
def test_lama_keeps_unmasked_pixels_and_fills_masked_ones():
    d = descriptor("lama")
    facts, forward = adapt("lama")
    assert A.adapter_for(d) is A.lama and forward.takes_mask and "LaMa" in A.MASKED
    assert facts["tiling"] == "internal" and facts["purpose"] == "Inpainting"
    h, w = 45, 53                                               # not multiples of 8
    x = rand(h, w)
    m = _mask(h, w, (10, 30, 12, 40)) * 0.8                    # soft: binarised at 0.5
    x[..., 10:30, 12:40] = 1.0                                  # a white object to remove
    y = forward(x, {}, m)
    keep = (m < 0.5).expand_as(x)
    assert y.shape == x.shape
    assert torch.equal(y[keep], x[keep])
    assert float((y[~keep] - 1.0).abs().mean()) > 0.05
    assert float(y.min()) >= 0 and float(y.max()) <= 1


@slow
def test_lama_wants_a_mask_of_the_image_size():
    _, forward = adapt("lama")
    x = rand(32, 32)
    for bad in (None, torch.zeros(1, 1, 16, 16), torch.zeros(1, 3, 32, 32)):
        with pytest.raises(EnhanceError) as e:
            forward(x, {}, bad)
        assert e.value.kind == ErrorKind.BAD_REQUEST


@pytest.mark.parametrize("h, w, factor, side", [
    (200, 300, 1.0, 512), (512, 512, 1.0, 512), (513, 100, 1.0, 1024), (1024, 700, 1.0, 1024),
    (2048, 1024, 0.5, 1024), (4000, 3000, 0.256, 1024), (10, 10, 1.0, 512),
])
def test_mat_pads_to_squares_of_512_and_shrinks_only_past_the_cap(h, w, factor, side):
    f, s = A.mat_plan(h, w)
    assert s == side and s % 512 == 0 and abs(f - factor) < 1e-9
    assert round(max(h, w) * f) <= s


@slow
def test_mat_fills_any_size_and_keeps_unmasked_pixels():
    d = descriptor("mat")
    facts, forward = adapt("mat")
    assert forward.takes_mask and facts["size_req"].minimum == 0
    h, w = 200, 300                                              # neither 512 nor square
    x = rand(h, w)
    x[..., 60:120, 100:180] = 0.0
    m = _mask(h, w, (60, 120, 100, 180))
    y = forward(x, {}, m)
    keep = (m < 0.5).expand_as(x)
    assert y.shape == x.shape
    assert torch.equal(y[keep], x[keep])
    assert float(y[~keep].mean()) > 0.02
    # the latent z is the fixed one, on the input's device (spandrel draws it at load time)
    z = torch.randn(1, 512, generator=torch.Generator().manual_seed(A.MAT_SEED))
    assert torch.equal(d.model.z.float(), z) and d.model.z.device == x.device


# --------------------------------------------------------------------------- colorization


def test_lab_conversion_matches_skimage_and_opencv_and_round_trips():
    cv2 = pytest.importorskip("cv2")
    color = pytest.importorskip("skimage.color")
    x = rand(17, 23)
    lab = A.srgb_to_lab(x)
    hwc = np.ascontiguousarray(x[0].permute(1, 2, 0).numpy())
    ours = lab[0].permute(1, 2, 0).numpy()
    assert np.abs(ours - color.rgb2lab(hwc)).max() < 0.05      # exact formulas
    # OpenCV (upstream DDColor's converter) approximates in float mode: ~0.4 units off at worst
    assert np.abs(ours - cv2.cvtColor(hwc, cv2.COLOR_RGB2Lab)).max() < 0.6
    assert torch.allclose(A.lab_to_srgb(lab), x, atol=1e-4)
    gray = A.lab_to_srgb(torch.cat([lab[:, :1], torch.zeros_like(lab[:, 1:])], 1))
    assert torch.allclose(gray[:, 0], gray[:, 1], atol=1e-5) and torch.allclose(gray[:, 1], gray[:, 2], atol=1e-5)


@slow
def test_ddcolor_returns_rgb_of_the_input_size_on_the_inputs_lightness():
    d = descriptor("ddcolor")
    facts, forward = adapt("ddcolor")
    assert d.input_channels == 1                                 # spandrel's call: gray only
    assert (facts["input_channels"], facts["output_channels"], facts["tiling"]) == (3, 3, "internal")
    x = rand(70, 90) * 0.5 + 0.25                                # mid tones: in gamut after colouring
    y = forward(x, {"input-size": 128})                          # the random net as it is
    assert y.shape == x.shape
    assert float(y.min()) >= 0 and float(y.max()) <= 1
    assert not torch.equal(y, forward(x, {"input-size": 64}))    # the working size matters

    # what the network sees and what becomes of its a*b*: replace its prediction by a constant
    seen = []

    def constant_ab(_module, args, _out):
        seen.append(args[0].detach().clone())
        ab = torch.empty(1, 2, *args[0].shape[-2:])
        ab[:, 0], ab[:, 1] = 20.0, -10.0
        return ab

    hook = d.model.register_forward_hook(constant_ab)
    try:
        y = forward(x, {"input-size": 128})
        gray = forward(x[:, :1], {"input-size": 128})            # a gray picture works too
    finally:
        hook.remove()
    net_in = seen[0]
    assert net_in.shape == (1, 3, 128, 128)                      # a square of the working size
    assert torch.allclose(net_in[:, 0], net_in[:, 1], atol=1e-4)  # neutral gray RGB
    assert torch.allclose(net_in[:, 1], net_in[:, 2], atol=1e-4)
    lab_y, lab_x = A.srgb_to_lab(y), A.srgb_to_lab(x)
    assert float((lab_y[:, 0] - lab_x[:, 0]).abs().max()) < 0.5  # the source L*, untouched
    assert float((lab_y[:, 1] - 20).abs().max()) < 0.5           # the model's a*b*
    assert float((lab_y[:, 2] + 10).abs().max()) < 0.5
    assert gray.shape == x.shape and float((A.srgb_to_lab(gray)[:, 1] - 20).abs().max()) < 0.5


# --------------------------------------------------------------------------- faces


def test_restoreformer_adapter_matches_spandrels_own_range_conversion():
    d = descriptor("restoreformer")
    facts, forward = adapt("restoreformer")
    assert facts["size_req"] == A.SizeReq(512, 512, True) and facts["purpose"] == "FaceSR"
    x = rand(512, 512)
    with torch.inference_mode():
        ref = d(x)                                # spandrel converts to -1..1 for this one
    assert torch.allclose(forward(x, {}), ref, atol=1e-5)


def test_face_models_take_512_faces_only():
    _, forward = adapt("restoreformer")
    with pytest.raises(EnhanceError) as e:
        forward(rand(256, 256), {})
    assert e.value.kind == ErrorKind.UNSUPPORTED


@slow
def test_codeformer_weight_changes_the_output():
    _, forward = adapt("codeformer", info=info_with())
    x = rand(512, 512)
    a, b = forward(x, {"codeformer-weight": 0.0}), forward(x, {"codeformer-weight": 1.0})
    assert a.shape == b.shape == x.shape
    assert float(a.min()) >= 0 and float(a.max()) <= 1
    assert float((a - b).abs().mean()) > 1e-4
    with pytest.raises(EnhanceError):
        forward(x, {"codeformer-weight": 1.5})


@slow
def test_gfpgan_is_deterministic_and_in_range():
    _, forward = adapt("gfpgan")
    x = rand(512, 512)
    a, b = forward(x, {}), forward(x, {})
    assert a.shape == x.shape and torch.equal(a, b)              # stored noise, not random
    assert float(a.min()) >= 0 and float(a.max()) <= 1


# --------------------------------------------------------------------------- the table


def test_adapter_table_lookup():
    d = descriptor("scunet")
    assert A.adapter_for(d) is A.plain
    assert A.adapter_for(d, "ffdnet") is A.ffdnet
    with pytest.raises(EnhanceError) as e:
        A.adapter_for(d, "no-such-adapter")
    assert e.value.kind == ErrorKind.INTERNAL
    assert A.MASKED <= set(A.ADAPTERS)
    assert "ffdnet" in A.ADAPTERS     # the catalogue's key for KAIR FFDNet
