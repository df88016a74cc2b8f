"""Random-initialised networks of the real upstream architectures, saved in the key layout and
file format of the official releases, for tests that cannot have the real weights.

* One maker per architecture: ``maker(path, *, seed=0, **shape) -> path`` writes the file (the
  format follows the file name: ``.safetensors`` via safetensors, anything else via
  ``torch.save``, which ``torch.load(weights_only=True)`` reads).  The wrapper around the state
  dict is upstream's (``{"params": sd}``, ``{"params_ema": sd}``, ``{"state_dict": sd}`` or the
  plain dict); the keys are the module names upstream uses, so spandrel detects the file as the
  real thing.  Shapes are as small as spandrel's detection allows; where an architecture has fixed
  sizes (LaMa, MAT, CodeFormer's VQ autoencoder, DDColor's ConvNeXt encoder, GFPGAN) the file is
  big and :data:`NETS` marks it ``huge``.
* :func:`cached` stores every file once under ``$AI_ENHANCE_CACHE/randnets/`` (default
  /var/cache/gimp-ai-enhance/randnets, a temp folder when that is not writable), keyed by maker,
  arguments and :data:`MAKER_VERSION`; it writes to a temporary name and renames, so concurrent
  test processes never see half a file.
* :data:`NETS` lists, per architecture, the official file name, the maker and its arguments, and
  what spandrel must report for the file (architecture id, purpose, scale, channels) plus a test
  input size.

Weights are deterministic per seed (``torch.manual_seed`` before construction); the files are not
byte-identical across runs because ``torch.save`` writes a random serialization id.
"""
from __future__ import annotations

import hashlib
import importlib.util
import inspect
import json
import os
import sys
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

#: Bump when any maker changes what it writes: every cached file is regenerated.
MAKER_VERSION = 1

ENV_CACHE = "AI_ENHANCE_CACHE"
DEFAULT_CACHE = "/var/cache/gimp-ai-enhance"
TESTS = Path(__file__).resolve().parent


# --------------------------------------------------------------------------- cache


def cache_root() -> Path:
    """The folder of cached random networks (created); a per-user temp folder when the
    configured one cannot be written."""
    root = Path(os.environ.get(ENV_CACHE) or DEFAULT_CACHE) / "randnets"
    try:
        root.mkdir(parents=True, exist_ok=True)
        if os.access(root, os.W_OK | os.X_OK):
            return root
    except OSError:
        pass
    root = Path(tempfile.gettempdir()) / f"gimp-ai-enhance-randnets-{os.getuid()}"
    root.mkdir(parents=True, exist_ok=True)
    return root


def cache_key(maker: Callable, kw: dict) -> str:
    """Maker name + its arguments with the defaults filled in + the maker's source + MAKER_VERSION:
    editing a maker or a default makes a new file; MAKER_VERSION covers the shared helpers."""
    bound = inspect.signature(maker).bind(None, **kw)
    bound.apply_defaults()
    args = {k: v for k, v in bound.arguments.items() if k != "path"}
    try:
        source = inspect.getsource(maker)
    except (OSError, TypeError):
        source = ""
    blob = json.dumps({"maker": maker.__name__, "kw": args, "version": MAKER_VERSION,
                       "source": hashlib.sha256(source.encode()).hexdigest()},
                      sort_keys=True, default=repr)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def cached(name: str, maker: Callable, **kw) -> Path:
    """``<cache>/randnets/<maker>-<key>/<name>``, made by ``maker(path, **kw)`` the first time.
    ``name`` is the file name the model folder would hold (the official one)."""
    folder = cache_root() / f"{maker.__name__}-{cache_key(maker, kw)}"
    final = folder / name
    if final.is_file() and final.stat().st_size > 0:
        return final
    folder.mkdir(parents=True, exist_ok=True)
    # keep the suffix: the makers choose the format from it
    tmp = folder / f".{final.stem}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp{final.suffix}"
    try:
        maker(tmp, **kw)
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()
    return final


# --------------------------------------------------------------------------- saving


def _save(path: Path, sd: dict, wrap: str | None) -> Path:
    """Write ``sd`` (wrapped as ``{wrap: sd}`` unless None) in the format the suffix names."""
    path = Path(path)
    sd = {k: v.detach().contiguous().clone() for k, v in sd.items()}
    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import save_file
        if wrap:
            raise ValueError("safetensors files hold a flat state dict")
        save_file(sd, str(path))
    else:
        import torch
        torch.save({wrap: sd} if wrap else sd, str(path))
    return path


def _seed(seed: int) -> None:
    import random

    import numpy as np
    import torch

    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


# --------------------------------------------------------------------------- makers
# Defaults are the smallest shapes spandrel still detects and runs; each docstring names the
# upstream file whose layout it reproduces.


def scunet(path: Path, *, seed: int = 0, dim: int = 64, config=(2, 1, 0, 0, 0, 1, 2)) -> Path:
    """KAIR SCUNet (scunet_color_real_psnr.pth / _gan.pth): plain state dict.  ``dim`` cannot
    go below 64: the first stage's attention has dim/2 channels in heads of 32.  The default
    leaves the three deepest stages empty (~8 MB instead of ~70 MB) and keeps a shifted-window
    block in the outer stages."""
    from spandrel.architectures.SCUNet import SCUNet

    _seed(seed)
    net = SCUNet(in_nc=3, config=list(config), dim=dim)
    return _save(path, net.state_dict(), None)


def drunet(path: Path, *, seed: int = 0, nc=(8, 16, 32, 64), nb: int = 2, colors: int = 3) -> Path:
    """KAIR DRUNet (drunet_color.pth): plain state dict; the input has one extra channel, the
    noise-level map.  spandrel detects it from block index 2 on, so ``nb`` >= 2."""
    from spandrel.architectures.DRUNet import DRUNet

    _seed(seed)
    net = DRUNet(in_nc=colors + 1, out_nc=colors, nc=list(nc), nb=nb, act_mode="R",
                 downsample_mode="strideconv", upsample_mode="convtranspose")
    return _save(path, net.state_dict(), None)


def ffdnet(path: Path, *, seed: int = 0, nc: int = 8, nb: int = 8, colors: int = 3) -> Path:
    """KAIR FFDNet (ffdnet_color.pth): plain state dict of the conv stack ``model.N`` that takes
    4*colors+1 channels (pixel-unshuffled image + noise map) and returns 4*colors; spandrel reads
    it as an FDnCNN (architecture id "DnCNN"), which needs at least 8 convolutions.  FFDNet
    predicts the image itself: the last bias is set to mid-gray so that a random net's output is
    not clipped to black (which would hide any effect of the noise level)."""
    import torch
    from spandrel.architectures.DnCNN import DnCNN

    _seed(seed)
    net = DnCNN(in_nc=4 * colors + 1, out_nc=4 * colors, nc=nc, nb=nb, act_mode="R", mode="FDnCNN")
    sd = net.state_dict()
    last = max((k for k in sd if k.endswith(".bias")), key=lambda k: int(k.split(".")[1]))
    with torch.no_grad():
        sd[last].fill_(0.5)
    return _save(path, sd, None)


def nafnet(path: Path, *, seed: int = 0, width: int = 8, enc=(1, 1, 1, 1), middle: int = 1,
           dec=(1, 1, 1, 1)) -> Path:
    """NAFNet (NAFNet-GoPro-width64.pth, -REDS-, -SIDD-): basicsr's {"params": sd}."""
    from spandrel.architectures.NAFNet import NAFNet

    _seed(seed)
    net = NAFNet(img_channel=3, width=width, middle_blk_num=middle, enc_blk_nums=list(enc),
                 dec_blk_nums=list(dec))
    return _save(path, net.state_dict(), "params")


def fftformer(path: Path, *, seed: int = 0, dim: int = 8, num_blocks=(1, 1, 1),
              num_refinement_blocks: int = 1, ffn_expansion_factor: float = 3) -> Path:
    """FFTformer (fftformer_GoPro.pth, committed in kkkls/FFTformer/pretrain_model): plain
    state dict (upstream's test script loads it straight into the network)."""
    from spandrel.architectures.FFTformer import FFTformer

    _seed(seed)
    net = FFTformer(inp_channels=3, out_channels=3, dim=dim, num_blocks=list(num_blocks),
                    num_refinement_blocks=num_refinement_blocks,
                    ffn_expansion_factor=ffn_expansion_factor, bias=False)
    return _save(path, net.state_dict(), None)


def restormer(path: Path, *, seed: int = 0, dim: int = 8, num_blocks=(1, 1, 1, 1),
              num_refinement_blocks: int = 1, heads=(1, 1, 1, 1)) -> Path:
    """Restormer (motion_deblurring.pth, real_denoising.pth): basicsr's {"params": sd}."""
    from spandrel_extra_arches.architectures.Restormer import Restormer

    _seed(seed)
    net = Restormer(inp_channels=3, out_channels=3, dim=dim, num_blocks=list(num_blocks),
                    num_refinement_blocks=num_refinement_blocks, heads=list(heads),
                    ffn_expansion_factor=2.66, bias=False, LayerNorm_type="WithBias",
                    dual_pixel_task=False)
    return _save(path, net.state_dict(), "params")


def mprnet(path: Path, *, seed: int = 0, n_feat: int = 8, scale_unetfeats: int = 4,
           scale_orsnetfeats: int = 4, num_cab: int = 1) -> Path:
    """MPRNet (Deblurring/pretrained_models/model_deblurring.pth): {"state_dict": sd} (upstream
    saves the training checkpoint; its loader reads ``checkpoint["state_dict"]``)."""
    from spandrel_extra_arches.architectures.MPRNet import MPRNet

    _seed(seed)
    net = MPRNet(in_c=3, out_c=3, n_feat=n_feat, scale_unetfeats=scale_unetfeats,
                 scale_orsnetfeats=scale_orsnetfeats, num_cab=num_cab, kernel_size=3,
                 reduction=4, bias=False)
    return _save(path, net.state_dict(), "state_dict")


def kbnet(path: Path, *, seed: int = 0, variant: str = "s", width: int = 8, enc=(1, 1, 1, 1),
          middle: int = 1, dec=(1, 1, 1, 1), lightweight: bool = False) -> Path:
    """KBNet (basicsr {"params": sd}): ``variant="s"`` is KBNet_s (SIDD / deblurring),
    ``"l"`` is KBNet_l (the Restormer-like real-denoising / deraining network; its grouped
    convolutions accept widths 12, 24, 48 ..., not 8 or 16)."""
    from spandrel.architectures.KBNet import KBNet_l, KBNet_s

    _seed(seed)
    if variant == "s":
        net = KBNet_s(img_channel=3, width=width, middle_blk_num=middle, enc_blk_nums=list(enc),
                      dec_blk_nums=list(dec), lightweight=lightweight, ffn_scale=2)
    elif variant == "l":
        net = KBNet_l(inp_channels=3, out_channels=3, dim=width, num_blocks=[1, 1, 1, 1],
                      num_refinement_blocks=1, heads=[1, 1, 1, 1], ffn_expansion_factor=1.5,
                      bias=False)
    else:
        raise ValueError(f"KBNet variant {variant!r}: use 's' or 'l'")
    return _save(path, net.state_dict(), "params")


def fbcnn(path: Path, *, seed: int = 0, nc=(8, 16, 32, 512), nb: int = 2, colors: int = 3) -> Path:
    """FBCNN (fbcnn_color.pth): plain state dict.  The deepest level must have 512 channels
    (the quality-factor head is hard-wired to 512 features) and ``nb`` must be >= 2 (KAIR's
    ``sequential`` unwraps a single block, which changes the keys spandrel looks for), so the
    file is ~120 MB (the real one, nb=4, is 288 MB)."""
    from spandrel.architectures.FBCNN import FBCNN

    _seed(seed)
    net = FBCNN(in_nc=colors, out_nc=colors, nc=list(nc), nb=nb, act_mode="R",
                downsample_mode="strideconv", upsample_mode="convtranspose")
    return _save(path, net.state_dict(), None)


def lama(path: Path, *, seed: int = 0, layout: str = "generator") -> Path:
    """LaMa big-lama generator (fixed size: ~51 M parameters, ~205 MB; cannot be small).
    ``layout="generator"``: the keys of upstream's Lightning checkpoint (``generator.model.*``)
    as a flat state dict, the form of the plain-weights re-releases; ``"spandrel"``: spandrel's
    own ``model.model.*``.  BatchNorm statistics are randomised too so the net is not an
    identity at init."""
    import torch
    from spandrel.architectures.LaMa import LaMa

    _seed(seed)
    net = LaMa(in_nc=4, out_nc=3)
    sd = net.state_dict()
    with torch.no_grad():
        for k, v in sd.items():
            if k.endswith("running_var"):
                v.uniform_(0.5, 2.0)
            elif k.endswith("running_mean"):
                v.normal_(0.0, 0.1)
    if layout == "generator":
        sd = {k.replace("model.model.", "generator.model.", 1): v for k, v in sd.items()}
    elif layout != "spandrel":
        raise ValueError(f"LaMa layout {layout!r}: use 'generator' or 'spandrel'")
    return _save(path, sd, None)


def mat(path: Path, *, seed: int = 0, half: bool = False) -> Path:
    """MAT Places512 generator (fixed size: ~63 M parameters, ~250 MB, half with ``half``):
    the official generator keys (``synthesis.*``, ``mapping.*``) as a flat state dict."""
    from spandrel_extra_arches.architectures.MAT import MAT

    _seed(seed)
    net = MAT()
    sd = {k[len("model."):] if k.startswith("model.") else k: v for k, v in net.state_dict().items()}
    if half:
        sd = {k: v.half() if v.is_floating_point() else v for k, v in sd.items()}
    return _save(path, sd, None)


def ddcolor(path: Path, *, seed: int = 0, num_queries: int = 100, dec_layers: int = 9,
            num_scales: int = 3) -> Path:
    """DDColor with the ConvNeXt-T encoder (ddcolor_paper_tiny.pth layout; the -L models only
    differ in encoder depth/width): {"params": sd}.  The encoder and the U-Net decoder have fixed
    sizes, so even ``num_queries=8, dec_layers=1`` gives a ~170 MB file (paper_tiny is ~220 MB)."""
    from spandrel_extra_arches.architectures.DDColor import DDColor

    _seed(seed)
    net = DDColor(encoder_name="convnext-t", decoder_name="MultiScaleColorDecoder",
                  num_input_channels=3, input_size=(256, 256), nf=512, num_output_channels=2,
                  last_norm="Spectral", do_normalize=False, num_queries=num_queries,
                  num_scales=num_scales, dec_layers=dec_layers)
    return _save(path, net.state_dict(), "params")


def codeformer(path: Path, *, seed: int = 0, dim_embd: int = 64, n_layers: int = 1,
               codebook_size: int = 64, connect_list=("32", "64", "128", "256")) -> Path:
    """CodeFormer (codeformer.pth v0.1.0): {"params_ema": sd}.  The VQ autoencoder is fixed
    (~72 M parameters): only the transformer shrinks, so the file is ~290 MB."""
    from spandrel_extra_arches.architectures.CodeFormer import CodeFormer

    _seed(seed)
    net = CodeFormer(dim_embd=dim_embd, n_head=8, n_layers=n_layers, codebook_size=codebook_size,
                     latent_size=256, connect_list=list(connect_list))
    return _save(path, net.state_dict(), "params_ema")


def _facekit():
    """tests/faces/facekit.py (not a package: loaded by path, once)."""
    mod = sys.modules.get("facekit")
    if mod is None:
        spec = importlib.util.spec_from_file_location("facekit", TESTS / "faces" / "facekit.py")
        mod = importlib.util.module_from_spec(spec)
        sys.modules["facekit"] = mod
        spec.loader.exec_module(mod)
    return mod


def restoreformer(path: Path, *, seed: int = 0) -> Path:
    """RestoreFormer as republished by GFPGAN (RestoreFormer.pth), 32 channels per level:
    facekit's tiny RestoreFormer, {"params_ema": sd}."""
    return _facekit().make_tiny_restoreformer(Path(path), seed=seed)


def gfpgan(path: Path, *, seed: int = 0) -> Path:
    """GFPGANv1Clean at full size (GFPGANv1.3/1.4 layout, ~350 MB): facekit's maker."""
    return _facekit().make_gfpgan(Path(path), seed=seed)


def restoreformer_pp(path: Path, *, seed: int = 0, ch: int = 32) -> Path:
    """RestoreFormer++ (RestoreFormer++.ckpt) in its release layout: a Lightning checkpoint
    ``{"state_dict": {"vqvae.<module>": ...}}`` whose decoder has attention at 16 *and* 32 px
    (upstream's ``ex_multi_scale_num=1``) while the encoder keeps 16 px only.  spandrel 0.4.2 does
    NOT recognise this file (the ``vqvae.`` prefix, the extra decoder attention, head size 4):
    tests use it to pin down that gap."""
    from spandrel.architectures.RestoreFormer import RestoreFormer

    _seed(seed)
    net = RestoreFormer(n_embed=64, embed_dim=ch, ch=ch, out_ch=3, ch_mult=(1, 1, 1, 1, 1, 1),
                        num_res_blocks=1, attn_resolutions=(16, 32), dropout=0.0, in_channels=3,
                        resolution=512, z_channels=ch, double_z=False, enable_mid=True, head_size=1)
    levels = 6
    res32 = levels - 2          # encoder level working at 32 px (512 / 2**4)
    sd = {f"vqvae.{k}": v for k, v in net.state_dict().items()
          if not k.startswith(f"encoder.down.{res32}.attn.")}
    return _save(path, sd, "state_dict")


# --------------------------------------------------------------------------- the table


@dataclass(frozen=True)
class NetSpec:
    """One architecture: how to make its file and what spandrel must report for it."""

    arch: str                    # spandrel architecture id
    file: str                    # official release file name
    maker: Callable
    kwargs: dict = field(default_factory=dict)
    purpose: str = "Restoration"
    scale: int = 1
    input_channels: int = 3      # as spandrel reports them
    output_channels: int = 3
    test_size: int = 64          # side of the square input of the forward-pass check
    wrap: str | None = None      # upstream's wrapper key around the state dict (None: plain)
    huge: bool = False           # > 50 MB or slow to build/run: generated once, tests marked slow
    masked: bool = False         # inpainting: takes (image, mask)

    def path(self) -> Path:
        return cached(self.file, self.maker, **self.kwargs)


NETS: dict[str, NetSpec] = {
    "scunet": NetSpec("SCUNet", "scunet_color_real_psnr.pth", scunet),
    "drunet": NetSpec("DRUNet", "drunet_color.pth", drunet),
    "ffdnet": NetSpec("DnCNN", "ffdnet_color.pth", ffdnet, input_channels=12, output_channels=12),
    "nafnet": NetSpec("NAFNet", "NAFNet-GoPro-width64.pth", nafnet, wrap="params"),
    "fftformer": NetSpec("FFTformer", "fftformer_GoPro.pth", fftformer),
    "restormer": NetSpec("Restormer", "motion_deblurring.pth", restormer, wrap="params"),
    "mprnet": NetSpec("MPRNet", "model_deblurring.pth", mprnet, wrap="state_dict"),
    "kbnet-s": NetSpec("KBNet", "kbnet_s_sidd.pth", kbnet, wrap="params"),
    "kbnet-l": NetSpec("KBNet", "kbnet_l_real_denoising.pth", kbnet, {"variant": "l", "width": 12},
                       wrap="params"),
    "fbcnn": NetSpec("FBCNN", "fbcnn_color.pth", fbcnn, huge=True),
    "lama": NetSpec("LaMa", "big-lama.safetensors", lama, purpose="Inpainting", huge=True,
                    masked=True),
    "mat": NetSpec("MAT", "MAT_Places512_G_fp16.safetensors", mat, {"half": True},
                   purpose="Inpainting", test_size=512, huge=True, masked=True),
    "ddcolor": NetSpec("DDColor", "ddcolor_paper_tiny.pth", ddcolor,
                       {"num_queries": 8, "dec_layers": 1}, input_channels=1, wrap="params",
                       huge=True),
    "codeformer": NetSpec("CodeFormer", "codeformer.pth", codeformer, purpose="FaceSR",
                          test_size=512, wrap="params_ema", huge=True),
    "restoreformer": NetSpec("RestoreFormer", "RestoreFormer.pth", restoreformer,
                             purpose="FaceSR", test_size=512, wrap="params_ema"),
    "gfpgan": NetSpec("GFPGAN", "GFPGANv1.4.pth", gfpgan, purpose="FaceSR", test_size=512,
                      wrap="params_ema", huge=True),
}

#: Official files spandrel 0.4.2 cannot load (see each maker).
UNSUPPORTED: dict[str, NetSpec] = {
    "restoreformer-pp": NetSpec("RestoreFormer++", "RestoreFormer++.ckpt", restoreformer_pp,
                                purpose="FaceSR", test_size=512, wrap="state_dict"),
}


def path_of(key: str) -> Path:
    """The cached file of ``NETS[key]`` (or ``UNSUPPORTED[key]``)."""
    spec = NETS.get(key) or UNSUPPORTED[key]
    return spec.path()
