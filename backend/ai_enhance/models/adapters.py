"""How each architecture is called: the one table of per-architecture differences, keyed by
spandrel's architecture id (plus "ffdnet", the catalogue's ``adapter`` name for KAIR FFDNet, which
spandrel mistakes for an FDnCNN).

An adapter is ``adapter(descriptor, info, path) -> (facts, forward)``:

* ``facts``: dict(scale, input_channels, output_channels, size_req, tiling, purpose,
  supports_half) -- exactly LoadedModel's fields; what the ENGINE must know, which is not always
  what spandrel's descriptor says (e.g. DDColor takes RGB here, not spandrel's one channel).
* ``forward(x, options) -> tensor | (tensor, info)``: ``x`` is (1, C, H, W) float in [0, 1] on
  the model's device and dtype; the result is (1, C', H*scale, W*scale) in [0, 1].  ``options``
  are the operation's parameters by their kebab-case names: ``noise-level`` (sigma in 8-bit
  levels, FFDNet/DRUNet), ``quality`` (FBCNN: 0 = estimate it, 1..100 = assume it),
  ``codeformer-weight`` (CodeFormer's w), ``input-size`` (DDColor's working resolution).
  A forward may return ``(tensor, info)``; FBCNN's automatic mode reports ``{"quality": q}``.
* Inpainting models (LaMa, MAT; ``forward.takes_mask`` is True and their ids are in
  :data:`MASKED`): ``forward(x, options, mask)`` with ``mask`` (1, 1, H, W) float, 1 = fill,
  0 = keep (binarised at 0.5).  Kept pixels come back exactly as they went in.

Architectures without an entry (SCUNet, Restormer, FFTformer, MPRNet, ESRGAN, Compact, SwinIR ...)
run through :func:`plain`: spandrel's descriptor call already maps [0, 1] -> [0, 1], unwraps
tuple outputs (MPRNet's stage list) and reflect-pads to its size requirements.  torch is imported
lazily, inside the adapters.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable

from ai_enhance_client.protocol import ErrorKind

from ..errors import EnhanceError
from ..runtime.tiling import SizeReq

OPT_NOISE = "noise-level"
OPT_QUALITY = "quality"
OPT_CF_WEIGHT = "codeformer-weight"
OPT_INPUT_SIZE = "input-size"

NOISE_RANGE = (0.0, 75.0)
FACE_SIZE = 512
MAT_SIZE = 512
MAT_MAX_SIDE = 1024         # MAT pads to squares of 512*k; bigger inputs are shrunk to this first
DDCOLOR_SIZE = 512          # upstream's inference default (scripts/infer.py --input_size 512)
MAT_SEED = 0                # MAT's latent z: fixed, so the same request gives the same fill


# --------------------------------------------------------------------------- helpers


def facts_of(descriptor, **override) -> dict:
    """The engine's facts from a spandrel descriptor, with ``override`` applied."""
    tiling = getattr(getattr(descriptor, "tiling", None), "name", "SUPPORTED").lower()
    facts = dict(scale=int(getattr(descriptor, "scale", 1)),
                 input_channels=int(descriptor.input_channels),
                 output_channels=int(descriptor.output_channels),
                 size_req=SizeReq.of(descriptor.size_requirements), tiling=tiling,
                 purpose=str(descriptor.purpose), supports_half=bool(descriptor.supports_half))
    facts.update(override)
    return facts


def _bad_option(key: str, value: Any, lo: float, hi: float, default: float) -> EnhanceError:
    return EnhanceError(ErrorKind.BAD_REQUEST, f"option {key} must be a number from {lo:g} to {hi:g}, "
                        f"got {value!r}", f"leave {key} out for the default {default:g}")


def number_option(options: dict, key: str, default: float, lo: float, hi: float) -> float:
    """``options[key]`` as a float in [lo, hi] (``default`` when absent or None)."""
    v = options.get(key) if options else None
    if v is None:
        return float(default)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= float(v) <= hi:
        raise _bad_option(key, v, lo, hi, default)
    return float(v)


def _corrupt(path: Path | None, what: str, info) -> EnhanceError:
    name = Path(path).name if path else "the model file"
    mid = getattr(info, "id", None)
    fix = f"delete {path} and install {mid} again" if mid else f"delete or replace {name}"
    return EnhanceError(ErrorKind.MODEL_CORRUPT, f"{name}: {what}", fix)


def pad_to(x, height: int, width: int):
    """Pad (N, C, h, w) at the bottom/right to ``height x width``: reflect as far as the image
    allows, the rest by repeating the edge (spandrel's and the engine's rule)."""
    import torch.nn.functional as F

    h, w = x.shape[-2:]
    ph, pw = max(0, height - h), max(0, width - w)
    if not ph and not pw:
        return x
    rh, rw = min(ph, h - 1), min(pw, w - 1)
    if rh or rw:
        x = F.pad(x, (0, rw, 0, rh), mode="reflect")
    if ph - rh or pw - rw:
        x = F.pad(x, (0, pw - rw, 0, ph - rh), mode="replicate")
    return x


def pad_multiple(x, multiple: int, minimum: int = 0):
    """Pad at the bottom/right so both sides are multiples of ``multiple`` and >= ``minimum``."""
    h, w = x.shape[-2:]
    m = max(1, int(multiple))
    th = -(-max(h, minimum) // m) * m
    tw = -(-max(w, minimum) // m) * m
    return pad_to(x, th, tw)


def _check_mask(x, mask):
    if mask is None or tuple(mask.shape) != (1, 1, *x.shape[-2:]):
        got = None if mask is None else tuple(mask.shape)
        raise EnhanceError(ErrorKind.BAD_REQUEST,
                           f"an inpainting model needs a (1, 1, {x.shape[-2]}, {x.shape[-1]}) mask, got {got}",
                           "send the selection as the mask (1 = fill, 0 = keep)")
    return (mask > 0.5).to(dtype=x.dtype, device=x.device)


def _check_face(x):
    if tuple(x.shape[-2:]) != (FACE_SIZE, FACE_SIZE):
        raise EnhanceError(ErrorKind.UNSUPPORTED,
                           f"face models take {FACE_SIZE}x{FACE_SIZE} aligned faces, got "
                           f"{x.shape[-1]}x{x.shape[-2]}", "run them through the faces operation")


# --------------------------------------------------------------------------- plain models


def plain(descriptor, info=None, path=None):
    """spandrel's own call: facts from the descriptor, ``descriptor(x)`` as the forward."""
    def forward(x, _options):
        return descriptor(x)
    return facts_of(descriptor), forward


def internally_padded(descriptor, info=None, path=None):
    """NAFNet and KBNet_s zero-pad their input to a multiple of 2**levels inside the network
    (``padder_size``) and spandrel reports no size requirement, so a border that is not a
    multiple sees black pixels.  Reporting the multiple lets the engine reflect-pad (and align
    its tiles) instead; the call itself is spandrel's."""
    facts, forward = plain(descriptor)
    m = int(getattr(descriptor.model, "padder_size", 1) or 1)
    req = facts["size_req"]
    if m > 1:
        multiple = req.multiple_of * m // math.gcd(req.multiple_of, m)
        facts["size_req"] = SizeReq(req.minimum, multiple, req.square)
    return facts, forward


# --------------------------------------------------------------------------- denoisers


def ffdnet(descriptor, info=None, path=None):
    """KAIR FFDNet: spandrel detects the conv body as an FDnCNN (4C+1 -> 4C channels).  Around it:
    pixel-unshuffle by 2, append a constant noise-level map (sigma/255), run, pixel-shuffle back.
    Option ``noise-level``: sigma in 8-bit levels, 0..75 (the operation table's default applies;
    25 when called without one)."""
    import torch
    import torch.nn.functional as F

    body = descriptor.model
    net = getattr(body, "model", body)
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    c_in = convs[0].in_channels if convs else 0
    if not convs or (c_in - 1) % 4 or convs[-1].out_channels != c_in - 1:
        raise _corrupt(path, f"is not an FFDNet model (its first layer takes {c_in} channels)", info)
    colors = (c_in - 1) // 4
    default = 25.0

    @torch.inference_mode()
    def forward(x, options):
        sigma = number_option(options, OPT_NOISE, default, *NOISE_RANGE) / 255.0
        h, w = x.shape[-2:]
        y = F.pixel_unshuffle(pad_multiple(x, 2), 2)
        noise = torch.full((1, 1, *y.shape[-2:]), sigma, dtype=y.dtype, device=y.device)
        out = F.pixel_shuffle(net(torch.cat([y, noise], 1)), 2)
        return out[..., :h, :w].clamp_(0, 1)

    facts = dict(scale=1, input_channels=colors, output_channels=colors,
                 size_req=SizeReq(minimum=2, multiple_of=2), tiling="supported",
                 purpose="Restoration", supports_half=False)
    return facts, forward


def drunet(descriptor, info=None, path=None):
    """KAIR DRUNet: the image plus one constant noise-level map channel (sigma/255), like
    FFDNet but without the pixel-unshuffle.  spandrel's call fixes sigma at 15; here option
    ``noise-level`` (0..75; 15 like upstream's test script when called without one) sets
    it.  Three stride-2 levels: input padded to a multiple of 8."""
    import torch

    net = descriptor.model
    colors = int(descriptor.input_channels)
    default = 15.0               # upstream's test script
    multiple = max(8, SizeReq.of(descriptor.size_requirements).multiple_of)

    @torch.inference_mode()
    def forward(x, options):
        sigma = number_option(options, OPT_NOISE, default, *NOISE_RANGE) / 255.0
        h, w = x.shape[-2:]
        xp = pad_multiple(x, multiple)
        noise = torch.full((1, 1, *xp.shape[-2:]), sigma, dtype=x.dtype, device=x.device)
        return net(torch.cat([xp, noise], 1))[..., :h, :w].clamp_(0, 1)

    return facts_of(descriptor, input_channels=colors, output_channels=colors,
                    size_req=SizeReq(multiple_of=multiple)), forward


# --------------------------------------------------------------------------- JPEG


def fbcnn(descriptor, info=None, path=None):
    """FBCNN returns (image, qf) with qf = 1 - quality/100 predicted from the image; its
    flexible mode takes qf_input = 1 - quality/100 (upstream main_test_fbcnn_color.py).
    Option ``quality``: 0 = automatic (the model's own estimate, returned as
    ``{"quality": int}``), 1..100 = the JPEG quality to assume (lower = stronger cleanup).

    The estimate comes from a global average over the picture the forward sees: on tiles, each
    tile estimates its own; call :func:`estimate_jpeg_quality` once on the whole picture (or a
    large crop) and pass that quality to every tile for a consistent result."""
    import torch

    net = descriptor.model

    @torch.inference_mode()
    def forward(x, options):
        q = number_option(options, OPT_QUALITY, 0, 0, 100)
        if 0 < q < 1:
            raise _bad_option(OPT_QUALITY, q, 0, 100, 0)
        if q == 0:
            out, qf = net(x)
            return out.clamp_(0, 1), {"quality": _quality_of(qf)}
        qf_in = torch.full((1, 1), 1.0 - q / 100.0, dtype=x.dtype, device=x.device)
        out, _ = net(x, qf_in)
        return out.clamp_(0, 1)

    # one estimate for the whole picture (the operation asks before tiling)
    forward.estimate_quality = lambda x: estimate_jpeg_quality(descriptor, x)
    return facts_of(descriptor), forward


def _quality_of(qf) -> int:
    return int(round(float((1.0 - qf.float().mean()).clamp(0, 1)) * 100))


def estimate_jpeg_quality(descriptor, x) -> int:
    """FBCNN's estimate of the JPEG quality (1..100) of ``x`` (1, C, H, W) in [0, 1]: the
    encoder and the quality head only."""
    import torch

    net = descriptor.model
    with torch.inference_mode():
        y = pad_multiple(x, 8)
        f = net.m_head(y)
        for stage in (net.m_down1, net.m_down2, net.m_down3, net.m_body_encoder, net.qf_pred):
            f = stage(f)
    return max(1, _quality_of(f))


# --------------------------------------------------------------------------- inpainting


def lama(descriptor, info=None, path=None):
    """LaMa: ``forward(x, options, mask)``.  Like upstream: the mask is binarised, the masked
    image (holes zeroed) and the mask go into the FFC generator, whose prediction fills the
    holes only (spandrel's LaMa does the composite); padded to a multiple of 8 (reflect).
    No options.  The model sees the whole input: the operation crops around the mask."""
    import torch

    net = descriptor.model
    req = SizeReq.of(descriptor.size_requirements)

    @torch.inference_mode()
    def forward(x, options, mask=None):
        m = _check_mask(x, mask)
        h, w = x.shape[-2:]
        xp = pad_multiple(x, req.multiple_of, req.minimum)
        mp = pad_multiple(m, req.multiple_of, req.minimum)
        return net(xp, mp)[..., :h, :w].clamp_(0, 1)

    forward.takes_mask = True
    return facts_of(descriptor, tiling="internal"), forward


def mat_plan(height: int, width: int) -> tuple[float, int]:
    """(resize factor, padded square side) for MAT: upstream runs at any multiple of 512 and
    pads (never resizes); past :data:`MAT_MAX_SIDE` the picture is first shrunk so the cost
    stays bounded (MAT's cost grows with the square of the side)."""
    side = max(height, width)
    factor = min(1.0, MAT_MAX_SIDE / side)
    side = max(1, round(side * factor))
    return factor, -(-side // MAT_SIZE) * MAT_SIZE


def mat(descriptor, info=None, path=None):
    """MAT (Places 512): ``forward(x, options, mask)``.  The generator works on squares whose side
    is a multiple of 512: like upstream's generate_image.py the input is padded (reflect, so the
    padding is plausible context, marked "keep") instead of resized, up to
    :data:`MAT_MAX_SIDE`; larger inputs are shrunk first (see :func:`mat_plan`) and the fill is
    resized back.  The result is composited so kept pixels are untouched.  spandrel's MAT draws
    its latent z from numpy's global RNG when it is built and leaves it on the CPU; here z is
    fixed (seed :data:`MAT_SEED`) and moved to the input's device."""
    import torch
    import torch.nn.functional as F

    net = descriptor.model
    z = torch.randn(1, net.model.z_dim, generator=torch.Generator().manual_seed(MAT_SEED))

    @torch.inference_mode()
    def forward(x, options, mask=None):
        m = _check_mask(x, mask)
        h, w = x.shape[-2:]
        factor, side = mat_plan(h, w)
        xs, ms = x, m
        if factor < 1.0:
            sh, sw = max(1, round(h * factor)), max(1, round(w * factor))
            xs = F.interpolate(x, size=(sh, sw), mode="bicubic", align_corners=False,
                               antialias=True).clamp_(0, 1)
            # a hole must survive the shrink: any covered pixel of the small grid is a hole
            ms = (F.interpolate(m, size=(sh, sw), mode="area") > 0).to(x.dtype)
        sh, sw = xs.shape[-2:]
        xs, ms = pad_to(xs, side, side), F.pad(ms, (0, side - sw, 0, side - sh))
        net.z = z.to(device=x.device)
        net.label = torch.zeros(1, 0, device=x.device)
        y = net(xs, ms).clamp_(0, 1)[..., :sh, :sw]
        if factor < 1.0:
            y = F.interpolate(y, size=(h, w), mode="bicubic", align_corners=False).clamp_(0, 1)
        return x * (1 - m) + y * m

    forward.takes_mask = True
    return facts_of(descriptor, size_req=SizeReq(), tiling="internal"), forward


# --------------------------------------------------------------------------- colorization


def srgb_to_lab(rgb):
    """(N, 3, H, W) sRGB in [0, 1] -> CIE L*a*b* (D65; L 0..100), the conversion OpenCV's
    float COLOR_RGB2Lab does (upstream DDColor's pipeline uses it)."""
    import torch

    rgb = rgb.clamp(0, 1)
    lin = torch.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    m = torch.tensor(_RGB2XYZ, dtype=rgb.dtype, device=rgb.device)
    xyz = torch.einsum("ij,njhw->nihw", m, lin)
    white = torch.tensor(_WHITE, dtype=rgb.dtype, device=rgb.device).view(1, 3, 1, 1)
    t = xyz / white
    f = torch.where(t > _EPS, t.clamp_min(1e-12) ** (1 / 3), (_KAPPA * t + 16) / 116)
    fx, fy, fz = f[:, 0:1], f[:, 1:2], f[:, 2:3]
    return torch.cat([116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)], 1)


def lab_to_srgb(lab):
    """Inverse of :func:`srgb_to_lab`; out-of-gamut colours are clipped to [0, 1]."""
    import torch

    L, a, b = lab[:, 0:1], lab[:, 1:2], lab[:, 2:3]
    fy = (L + 16) / 116
    fx = fy + a / 500
    fz = fy - b / 200

    def finv(f):
        return torch.where(f ** 3 > _EPS, f ** 3, (116 * f - 16) / _KAPPA)

    white = torch.tensor(_WHITE, dtype=lab.dtype, device=lab.device).view(1, 3, 1, 1)
    xyz = torch.cat([finv(fx), torch.where(L > _KAPPA * _EPS, fy ** 3, L / _KAPPA), finv(fz)], 1) * white
    m = torch.linalg.inv(torch.tensor(_RGB2XYZ, dtype=torch.float64)).to(dtype=lab.dtype, device=lab.device)
    lin = torch.einsum("ij,njhw->nihw", m, xyz).clamp(0, 1)
    return torch.where(lin <= 0.0031308, lin * 12.92, 1.055 * lin.clamp_min(1e-12) ** (1 / 2.4) - 0.055).clamp(0, 1)


_RGB2XYZ = ((0.412453, 0.357580, 0.180423),
            (0.212671, 0.715160, 0.072169),
            (0.019334, 0.119193, 0.950227))
_WHITE = (0.950456, 1.0, 1.088754)
_EPS = 216 / 24389
_KAPPA = 24389 / 27


def ddcolor(descriptor, info=None, path=None):
    """DDColor.  What the network expects (upstream ``ColorizationPipeline.process``): the
    picture resized to a SQUARE of ``input_size`` (512 in upstream's inference script, 256 in
    training), its CIE L* with a* = b* = 0 converted back to RGB (a neutral gray RGB image in
    [0, 1]); the network ImageNet-normalises it itself and predicts a*b* (Lab units) at that size.
    Upstream then resizes a*b* to the original size (nearest) and combines it with the ORIGINAL
    L*.  spandrel's descriptor call does the same but (a) takes a single gray channel, so a colour
    picture's L* is lost, (b) always works at the 256 px its loader builds the model with, and
    (c) resizes a*b* bilinearly.

    Here: ``forward(x, options)`` takes RGB (or gray) x, works at option ``input-size``
    (64..1024, rounded to a multiple of 32; default 512 like upstream), resizes a*b* bilinearly
    (no blocks) and returns RGB at the input size with x's own L*: the model's colours on the
    source luminance.  The operation can rebuild full resolution the same way from a smaller
    call (:func:`srgb_to_lab` / :func:`lab_to_srgb`).  The whole picture must be seen at once
    (tiling "internal")."""
    import torch
    import torch.nn.functional as F

    net = descriptor.model
    if getattr(net, "num_output_channels", 2) != 2:
        raise _corrupt(path, "is a DDColor model that does not predict a*b* (2 channels)", info)

    @torch.inference_mode()
    def forward(x, options):
        size = number_option(options, OPT_INPUT_SIZE, DDCOLOR_SIZE, 64, 1024)
        size = max(64, int(round(size / 32)) * 32)
        rgb = x[:, :3] if x.shape[1] >= 3 else x[:, :1].expand(-1, 3, -1, -1)
        h, w = rgb.shape[-2:]
        lightness = srgb_to_lab(rgb)[:, :1]
        small = F.interpolate(rgb, size=(size, size), mode="bilinear", align_corners=False,
                              antialias=size < max(h, w))
        ls = srgb_to_lab(small)[:, :1]
        gray = lab_to_srgb(torch.cat([ls, torch.zeros_like(ls), torch.zeros_like(ls)], 1))
        ab = net(gray)
        ab = F.interpolate(ab, size=(h, w), mode="bilinear", align_corners=False)
        return lab_to_srgb(torch.cat([lightness, ab.to(lightness.dtype)], 1))

    return facts_of(descriptor, input_channels=3, output_channels=3, size_req=SizeReq(),
                    tiling="internal"), forward


# --------------------------------------------------------------------------- faces
# Trained on -1..1.  spandrel's GFPGAN and CodeFormer calls pass [0, 1] straight through (wrong
# range); its RestoreFormer call converts.  All three are called directly here, on 512x512
# aligned faces (the faces operation aligns them).


def _face_facts(descriptor) -> dict:
    return facts_of(descriptor, scale=1, size_req=SizeReq(FACE_SIZE, FACE_SIZE, True),
                    tiling="internal")


def gfpgan(descriptor, info=None, path=None):
    """GFPGANv1Clean with its stored StyleGAN noise (``randomize_noise=False``): the same face
    gives the same result every time."""
    import torch

    net = descriptor.model

    @torch.inference_mode()
    def forward(x, options):
        _check_face(x)
        y = net(x * 2 - 1, return_rgb=False, randomize_noise=False)[0]
        return ((y + 1) * 0.5).clamp_(0, 1)

    return _face_facts(descriptor), forward


def codeformer(descriptor, info=None, path=None):
    """CodeFormer; option ``codeformer-weight`` is its w (0 = strongest restoration from the
    codebook, 1 = closest to the input; 0.5 when called without one)."""
    import torch

    net = descriptor.model
    default = 0.5

    @torch.inference_mode()
    def forward(x, options):
        _check_face(x)
        w = number_option(options, OPT_CF_WEIGHT, default, 0.0, 1.0)
        y = net(x * 2 - 1, weight=w)[0]
        return ((y + 1) * 0.5).clamp_(0, 1)

    return _face_facts(descriptor), forward


def restoreformer(descriptor, info=None, path=None):
    """RestoreFormer (GFPGAN's republication)."""
    import torch

    net = descriptor.model

    @torch.inference_mode()
    def forward(x, options):
        _check_face(x)
        y = net(x * 2 - 1)[0]
        return ((y + 1) * 0.5).clamp_(0, 1)

    return _face_facts(descriptor), forward


# --------------------------------------------------------------------------- the table

ADAPTERS: dict[str, Callable] = {
    "ffdnet": ffdnet,
    "DRUNet": drunet,
    "FBCNN": fbcnn,
    "NAFNet": internally_padded,
    "KBNet": internally_padded,
    "LaMa": lama,
    "MAT": mat,
    "DDColor": ddcolor,
    "GFPGAN": gfpgan,
    "CodeFormer": codeformer,
    "RestoreFormer": restoreformer,
}

#: Adapters whose forward is the module's own call on the picture (padding aside): another
#: runtime (OpenVINO) can run the converted module instead.
CONVERTIBLE = frozenset({plain, internally_padded})

#: Architectures whose forward is ``forward(x, options, mask)``.
MASKED = frozenset({"LaMa", "MAT"})


def adapter_for(descriptor, name: str | None = None) -> Callable:
    """The adapter named ``name`` (a catalogue entry's "adapter"), else the one of the
    descriptor's architecture, else :func:`plain`."""
    if name:
        if name not in ADAPTERS:
            raise EnhanceError(ErrorKind.INTERNAL, f"catalogue: unknown adapter {name!r}",
                               "report this: the catalogue names an adapter the backend lacks")
        return ADAPTERS[name]
    return ADAPTERS.get(str(descriptor.architecture.id), plain)
