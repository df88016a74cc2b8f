"""The "faces" op: detect faces, align each to the 512x512 FFHQ template, restore it with a face
model (GFPGAN, CodeFormer, RestoreFormer through spandrel) and paste it back with a soft mask over
a background (the input resized, or a Real-ESRGAN model's output at the same scale).

Called by the engine as ``run_faces(engine, req, image, progress, is_cancelled) -> JobOutput``.

* Detection: facexlib's RetinaFace network with weights loaded from the models folder ourselves
  (``torch.load(weights_only=True)``; facexlib never downloads anything here): ResNet-50 when
  ``detection_Resnet50_Final.pth`` is installed, else MobileNet-0.25.
* Paste mask: face parsing (facexlib's ParseNet) when ``parsing_parsenet.pth`` is installed, else a
  soft ellipse over the aligned face (``face_masks.ellipse_mask``).  Never needs a missing file.
* The result is ``background * (1 - M) + faces * M`` with M the combined soft mask returned as the
  "faces" mask, quantised to 8 bits *before* blending: where the mask is 0 the output is the
  background bit for bit, and a GIMP layer + that mask over the background reproduces the result.
* Coordinates in ``info["faces"]`` are continuous coordinates of the frame the client sent
  (pixel j spans [j, j+1)), before the roi cut and the scale.

Options (``req.options``): ``background`` (model id of an upscaler; absent = resize),
``fidelity`` (0..1, CodeFormer's w), ``det_threshold`` (0.3..0.999, default 0.95),
``det_size`` (short side the detector sees, 160..2048, default 640), ``face_mask``
("auto" | "parsing" | "ellipse").
"""
from __future__ import annotations

import dataclasses
import logging
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ai_enhance_client.protocol import ErrorKind

from . import face_masks as fm
from .engine import LUMA, PEAK, JobOutput
from .errors import Cancelled, EnhanceError

log = logging.getLogger(__name__)

FACE_SIZE = 512
MAX_SCALE = 4
MIN_SIDE = 16            # smaller frames cannot hold a detectable face
MIN_EYE_DIST = 4.0       # input pixels; below that a "face" is a speck, not worth restoring
DEFAULT_THRESHOLD = 0.95
DEFAULT_DET_SIZE = 640
DET_MAX_LONG_SIDE = 2150

#: Detector choice, best first: (catalogue id, official file name, facexlib network name).
DETECTORS = (
    ("retinaface-resnet50", "detection_Resnet50_Final.pth", "resnet50"),
    ("retinaface-mobile0.25", "detection_mobilenet0.25_Final.pth", "mobile0.25"),
)
PARSER = ("parsenet", "parsing_parsenet.pth")


# --------------------------------------------------------------------------- small helpers


@dataclass
class Face:
    box: np.ndarray          # x0, y0, x1, y1 (continuous input-frame coordinates, inside the frame)
    landmarks: np.ndarray    # 5 x 2 (continuous input-frame coordinates)
    score: float
    to_template: np.ndarray = field(default=None)   # 2x3: input index coords -> template index coords

    def to_json(self) -> dict:
        return {"box": [round(float(v), 2) for v in self.box],
                "landmarks": [[round(float(x), 2), round(float(y), 2)] for x, y in self.landmarks],
                "score": round(float(self.score), 4)}


def _opt_float(opts: dict, key: str, default: float, lo: float, hi: float) -> float:
    v = opts.get(key, default)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= float(v) <= hi:
        raise EnhanceError(ErrorKind.BAD_REQUEST, f"option {key} must be a number in {lo}..{hi}, got {v!r}",
                           f"leave {key} out for the default {default}")
    return float(v)


def _check_cancel(is_cancelled: Callable[[], bool]) -> None:
    if is_cancelled():
        raise Cancelled()


def _color_to_rgb01(region: np.ndarray, ncolor: int) -> np.ndarray:
    """Native-dtype HxWxC pixels -> float32 RGB 0..1 (gray repeated, alpha dropped, clipped)."""
    unit = PEAK[region.dtype]
    c = region[..., :ncolor].astype(np.float32)
    if unit != 1.0:
        c *= 1.0 / unit
    np.clip(c, 0.0, 1.0, out=c)
    if ncolor == 1:
        c = np.repeat(c, 3, axis=2)
    return c


def _resize(img: np.ndarray, w: int, h: int, interpolation: int) -> np.ndarray:
    import cv2

    out = cv2.resize(img, (w, h), interpolation=interpolation)
    if out.ndim == 2:
        out = out[:, :, None]
    return out


# --------------------------------------------------------------------------- engine access
# Through the engine: engine.store (ModelStore), engine.device_info, engine.get_model()/using()
# for the restorers (the engine's cache).  The facexlib networks (detector, parser) are no spandrel
# models: they are cached here, keyed by file and device, and dropped after the engine's idle time.


_cache: dict[tuple, list] = {}           # key -> [object, last_used]
_cache_lock = threading.Lock()


def unload_idle(idle_s: float, now: float | None = None) -> int:
    """Drop cached face networks unused for ``idle_s`` seconds; returns how many were dropped."""
    now = time.monotonic() if now is None else now
    with _cache_lock:
        old = [k for k, (_, t) in _cache.items() if now - t >= idle_s]
        for k in old:
            del _cache[k]
    if old:
        _empty_device_cache()
    return len(old)


def clear_cache() -> None:
    with _cache_lock:
        _cache.clear()
    _empty_device_cache()


def _empty_device_cache() -> None:
    import sys

    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


def _cached(key: tuple, build: Callable[[], Any]) -> Any:
    with _cache_lock:
        hit = _cache.get(key)
        if hit is not None:
            hit[1] = time.monotonic()
            return hit[0]
    obj = build()
    with _cache_lock:
        _cache[key] = [obj, time.monotonic()]
    return obj


def _file_key(path: Path) -> tuple:
    st = path.stat()
    return (str(path), st.st_size, st.st_mtime_ns)


def _store_of(engine):
    return engine.store


def _models_dir(store) -> Path:
    return Path(store.dir)


def _torch_device(engine):
    """The engine's torch device ("auto" already resolved by the engine)."""
    import torch

    return torch.device(engine.device_info.torch_device)


def _support_file(store, model_id: str, file_name: str) -> Path | None:
    """Installed path of a support file (detector, parser) of the catalogue, or None; a file of
    that name in the models folder counts too (older catalogues without the entry)."""
    try:
        return Path(store.resolve(model_id).path)
    except EnhanceError:
        pass
    p = _models_dir(store) / file_name
    return p if p.is_file() else None


def _load_into(net, path: Path, model_id: str, what: str):
    """Weights of ``path`` into a facexlib network: the store's safe reader (weights_only, no
    TorchScript, truncation detected), then a strict load."""
    from .models import INSTALL_COMMAND, read_state_dict

    sd = read_state_dict(path, model_id)
    try:
        net.load_state_dict(sd, strict=True)
    except RuntimeError:
        raise EnhanceError(ErrorKind.MODEL_CORRUPT, f"{path.name} is not a {what} in facexlib's layout",
                           f"delete {path} and install it again: {INSTALL_COMMAND.format(id=model_id)}") from None
    return net


def build_detector(path: Path, net_name: str, device, model_id: str | None = None):
    """facexlib's RetinaFace ("resnet50" | "mobile0.25") with the weights of ``path``; never
    downloads anything."""
    with warnings.catch_warnings():   # torchvision's "pretrained is deprecated" for resnet50
        warnings.simplefilter("ignore")
        from facexlib.detection.retinaface import RetinaFace
        net = RetinaFace(network_name=net_name, half=False, device=device)
    model_id = model_id or f"retinaface-{net_name}"
    return _load_into(net, path, model_id, f"RetinaFace {net_name} face detector").eval().to(device)


def get_detector(engine):
    """(net, catalogue id) of the best installed face detector; MODEL_MISSING when none is."""
    store = _store_of(engine)
    device = _torch_device(engine)
    for model_id, file_name, net_name in DETECTORS:
        path = _support_file(store, model_id, file_name)
        if path is not None:
            net = _cached(("detector", *_file_key(path), str(device)),
                          lambda: build_detector(path, net_name, device, model_id))
            return net, model_id
    folder = _models_dir(store)
    raise EnhanceError(ErrorKind.MODEL_MISSING,
                       f"no face detector installed: {DETECTORS[1][1]} (or {DETECTORS[0][1]}) is not in {folder}",
                       f"install it with the installer, or put {DETECTORS[1][1]} into {folder}")


def build_parser(path: Path, device):
    """facexlib's ParseNet (512 px, 19 CelebAMask-HQ classes) with the weights of ``path``."""
    from facexlib.parsing.parsenet import ParseNet

    net = ParseNet(in_size=512, out_size=512, parsing_ch=19)
    return _load_into(net, path, PARSER[0], "ParseNet face-parsing model").eval().to(device)


def get_parser(engine):
    """The face-parsing network if parsing_parsenet.pth is installed, else None."""
    store = _store_of(engine)
    path = _support_file(store, *PARSER)
    if path is None:
        return None
    device = _torch_device(engine)
    return _cached(("parser", *_file_key(path), str(device)), lambda: build_parser(path, device))


def resolve_restorer(engine, model_id: str):
    """ModelInfo of an installed face restoration model; the store raises UNKNOWN_MODEL, or
    MODEL_MISSING naming the file, the folder to put it in and the installer command."""
    return _store_of(engine).resolve(model_id)


def load_restorer(engine, info):
    """The engine's LoadedModel of a resolved face model (the engine caches it and unloads it when
    idle); UNSUPPORTED for models that are not face restorers or cannot take a 512x512 face."""
    lm = engine.get_model(info)
    desc = lm.descriptor
    if str(lm.purpose) != "FaceSR":
        raise EnhanceError(ErrorKind.UNSUPPORTED,
                           f"{info.id} is a {desc.architecture.name} {lm.purpose} model, not a face restorer",
                           "choose a face model: gfpgan-v1.4, gfpgan-v1.3, codeformer or restoreformer")
    sreq = desc.size_requirements
    if not sreq.check(FACE_SIZE, FACE_SIZE):
        raise EnhanceError(ErrorKind.UNSUPPORTED, f"{info.id} cannot take a {FACE_SIZE}x{FACE_SIZE} aligned face",
                           "choose a face model: gfpgan-v1.4, gfpgan-v1.3, codeformer or restoreformer")
    return lm


# --------------------------------------------------------------------------- restorers
# How each face architecture wants to be called (spandrel's descriptor __call__ expects 0..1, but
# GFPGAN and CodeFormer are trained on -1..1 and their spandrel call_fn does not convert).


def _call_minus1_1(net_call):
    def run(desc, x01, opts):
        y = net_call(desc.model, x01 * 2.0 - 1.0, opts)
        return (y + 1.0) * 0.5
    return run


def _gfpgan(model, x, opts):
    # fixed (stored) StyleGAN noise: the same photo gives the same face every time
    return model(x, return_rgb=False, randomize_noise=False)[0]


def _codeformer(model, x, opts):
    return model(x, weight=opts["fidelity"])[0]


def _restoreformer(model, x, opts):
    return model(x)[0]


def _spandrel_call(desc, x01, opts):
    return desc(x01)


RESTORERS: dict[str, Callable] = {
    "GFPGAN": _call_minus1_1(_gfpgan),
    "CodeFormer": _call_minus1_1(_codeformer),
    "RestoreFormer": _call_minus1_1(_restoreformer),
}


def restore_face(desc, crop: np.ndarray, opts: dict) -> np.ndarray:
    """512x512x3 float32 RGB 0..1 -> restored (512*scale)^2 x 3 float32 0..1."""
    import torch

    params = next(iter(desc.model.parameters()), None)
    device = params.device if params is not None else torch.device("cpu")
    dtype = params.dtype if params is not None and params.dtype.is_floating_point else torch.float32
    x = torch.from_numpy(np.ascontiguousarray(crop.transpose(2, 0, 1)))[None].to(device=device, dtype=dtype)
    call = RESTORERS.get(desc.architecture.id, _spandrel_call)
    with torch.inference_mode():
        desc.model.eval()
        y = call(desc, x, opts)[0].float().clamp(0.0, 1.0).cpu().numpy().transpose(1, 2, 0)
    return np.ascontiguousarray(y)


def parse_mask(parser, face: np.ndarray) -> np.ndarray:
    """Soft mask (face-size square, float32 0..1) from ParseNet's labels of the restored face."""
    import cv2
    import torch

    size = face.shape[0]
    f = face if size == 512 else cv2.resize(face, (512, 512), interpolation=cv2.INTER_AREA)
    device = next(parser.parameters()).device
    x = torch.from_numpy(np.ascontiguousarray(f.transpose(2, 0, 1)))[None].to(device) * 2.0 - 1.0
    with torch.inference_mode():
        labels = parser(x)[0].argmax(dim=1)[0].cpu().numpy()
    m = fm.parsing_mask(labels)
    if size != 512:
        m = cv2.resize(m, (size, size), interpolation=cv2.INTER_LINEAR)
    return m


# --------------------------------------------------------------------------- detection


def detect_faces(detector, image: np.ndarray, *, threshold: float = DEFAULT_THRESHOLD,
                 det_size: int = DEFAULT_DET_SIZE) -> list[Face]:
    """Faces in a whole HWC frame (any supported dtype, 1..4 channels), best score first, in
    continuous frame coordinates.  The detector sees the frame with its short side at ``det_size``
    (like upstream GFPGAN's 640; long side at most 2150): small frames are enlarged, which also
    finds a face that fills the whole frame."""
    import cv2
    import torch

    h, w = image.shape[:2]
    if min(h, w) < MIN_SIDE:
        return []
    ncolor = 1 if image.shape[2] in (1, 2) else 3
    s = min(det_size / min(h, w), DET_MAX_LONG_SIDE / max(h, w))
    dw, dh = max(1, round(w * s)), max(1, round(h * s))
    sx, sy = dw / w, dh / h
    color = image[..., :ncolor]
    interp = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
    small = color if (dw, dh) == (w, h) else _resize(np.ascontiguousarray(color), dw, dh, interp)
    rgb = _color_to_rgb01(small, ncolor)
    bgr255 = np.ascontiguousarray(rgb[:, :, ::-1] * 255.0)     # facexlib's detector wants BGR 0..255
    with torch.inference_mode():
        det = detector.detect_faces(bgr255, conf_threshold=threshold)
    faces: list[Face] = []
    for row in det:
        box = np.clip(np.array([row[0] / sx, row[1] / sy, row[2] / sx, row[3] / sy]), 0, [w, h, w, h])
        lm = np.asarray(row[5:15], np.float64).reshape(5, 2) / [sx, sy]
        if np.hypot(*(lm[0] - lm[1])) < MIN_EYE_DIST:
            continue
        faces.append(Face(box=box, landmarks=lm, score=float(row[4])))
    faces.sort(key=lambda f: -f.score)
    return faces


# --------------------------------------------------------------------------- the op


def _background(engine, req, image, roi, scale, bg_model, progress, is_cancelled) -> np.ndarray:
    import cv2

    rx, ry, rw, rh = roi
    if bg_model:
        sub = _sub_request(req, op="upscale", model=bg_model, options={})
        out = engine.run(sub, image, progress, is_cancelled)
        bg = out.image
        if bg.ndim == 2:
            bg = bg[:, :, None]
        if bg.shape[:2] != (rh * scale, rw * scale) or bg.dtype != image.dtype:
            raise EnhanceError(ErrorKind.INTERNAL,
                               f"the background model {bg_model} returned {bg.shape} {bg.dtype}, "
                               f"expected {(rh * scale, rw * scale)} {image.dtype}",
                               "report this with the backend log")
        return bg
    crop = image[ry:ry + rh, rx:rx + rw]
    if scale == 1:
        return crop.copy()
    return _resize(np.ascontiguousarray(crop), rw * scale, rh * scale, cv2.INTER_LANCZOS4)


def _sub_request(req, **changes):
    return dataclasses.replace(req, **changes)


def run_faces(engine, req, image: np.ndarray, progress: Callable[[float, str], None],
              is_cancelled: Callable[[], bool]):
    t0 = time.monotonic()
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or not 1 <= image.shape[2] <= 4 or image.dtype not in PEAK:
        raise EnhanceError(ErrorKind.BAD_REQUEST, f"faces needs an HxWxC image with 1-4 channels of u8/u16/f32, "
                           f"got {image.shape} {image.dtype}", "send RGB(A) or gray(+alpha) pixels")
    h, w, nch = image.shape
    ncolor = 1 if nch in (1, 2) else 3
    scale = int(req.scale or 1)
    if not 1 <= scale <= MAX_SCALE:
        raise EnhanceError(ErrorKind.UNSUPPORTED, f"face restoration supports output scale 1..{MAX_SCALE}, not {scale}",
                           f"restore faces at scale {MAX_SCALE} or less, then upscale the result")
    roi = tuple(int(v) for v in req.roi) if req.roi else (0, 0, w, h)
    rx, ry, rw, rh = roi
    if rx < 0 or ry < 0 or rw < 1 or rh < 1 or rx + rw > w or ry + rh > h:
        raise EnhanceError(ErrorKind.BAD_REQUEST, f"roi {list(roi)} lies outside the {w}x{h} image",
                           "send a roi inside the image")
    opts = dict(req.options or {})
    fidelity = _opt_float(opts, "fidelity", 0.5, 0.0, 1.0)
    threshold = _opt_float(opts, "det_threshold", DEFAULT_THRESHOLD, 0.3, 0.999)
    det_size = int(_opt_float(opts, "det_size", DEFAULT_DET_SIZE, 160, 2048))
    mask_mode = opts.get("face_mask") or "auto"
    if mask_mode not in ("auto", "parsing", "ellipse"):
        raise EnhanceError(ErrorKind.BAD_REQUEST, f"option face_mask must be auto, parsing or ellipse, got {mask_mode!r}",
                           "leave face_mask out for auto")
    bg_model = opts.get("background") or None
    if bg_model is not None and not isinstance(bg_model, str):
        raise EnhanceError(ErrorKind.BAD_REQUEST, "option background must be a model id",
                           "e.g. realesrgan-x4plus, or leave it out to resize the background")
    out_h, out_w = rh * scale, rw * scale

    # 1. resolve the restorer first: a missing GFPGAN file is reported before any work is done
    _check_cancel(is_cancelled)
    unload_idle(getattr(engine, "idle_unload_s", 600.0))    # detector/parser unused for long
    info = resolve_restorer(engine, req.model)
    model_name = getattr(info, "name", None) or req.model

    # 2. detection on the whole frame sent (context beyond the roi helps faces cut by its edge)
    progress(0.0, "detecting faces")
    detector, det_id = get_detector(engine)
    faces = detect_faces(detector, image, threshold=threshold, det_size=det_size)
    _check_cancel(is_cancelled)

    # 3. background (its own progress range when a model runs)
    bg_share = 0.4 if bg_model else 0.05

    def bg_progress(f: float, text: str) -> None:
        progress(bg_share * f, f"background: {text}")
    out = _background(engine, req, image, roi, scale, bg_model, bg_progress, is_cancelled)  # a fresh array
    combined = np.zeros((out_h, out_w), np.uint8)

    # 4. faces whose aligned square reaches into the output: restore, paste
    lm = load_restorer(engine, info) if faces else None
    fsize = FACE_SIZE * lm.scale if lm is not None else FACE_SIZE
    kept = place_faces(faces, fsize, scale, roi)
    outside = len(faces) - len(kept)
    parser = None
    if kept and mask_mode in ("auto", "parsing"):
        parser = get_parser(engine)
        if parser is None and mask_mode == "parsing":
            folder = _models_dir(_store_of(engine))
            raise EnhanceError(ErrorKind.MODEL_MISSING, f"face_mask=parsing needs {PARSER[1]}, not found in {folder}",
                               f"put {PARSER[1]} into {folder}, or use face_mask=auto")
    mask_kind = "parsing" if parser is not None else "ellipse"
    ellipse = fm.ellipse_mask(fsize) if parser is None else None
    n = len(kept)
    counter = iter(range(n))

    def restore(i: int) -> tuple[np.ndarray, np.ndarray]:
        import cv2

        _check_cancel(is_cancelled)
        k = next(counter)
        progress(bg_share + (1.0 - bg_share) * k / n, f"face {k + 1}/{n}")
        crop = align_face(image, kept[i].face.to_template, ncolor)
        restored = restore_face(lm.descriptor, crop, {"fidelity": fidelity})
        if restored.shape[0] != fsize:
            restored = cv2.resize(restored, (fsize, fsize), interpolation=cv2.INTER_AREA)
        mask = parse_mask(parser, restored) if parser is not None else ellipse
        return restored, mask

    if kept:
        with engine.using(lm):          # not unloaded while we run it
            paste_faces(out, kept, restore, ncolor, combined)

    # 5. answer
    progress(1.0, "done")
    if kept:
        msg = f"restored {n} face{'s' if n != 1 else ''} with {model_name}"
        if outside:
            msg += f"; {outside} more outside the selected area left alone"
    elif faces:
        msg = f"no faces in the selected area ({len(faces)} elsewhere in the image); nothing changed"
    elif min(h, w) < MIN_SIDE:
        msg = f"no faces found: the image ({w}x{h}) is too small to hold a face"
    else:
        msg = (f"no faces found (detector {det_id}, threshold {threshold:g}); "
               "the result is the background only")
    log.info("faces: %s (%d detected, %s, %s mask, %.2f s)", msg, len(faces), det_id,
             mask_kind if kept else "no", time.monotonic() - t0)
    info_out = {"faces": [p.face.to_json() for p in kept], "message": msg, "detector": det_id,
                "mask": mask_kind if kept else None, "model": req.model,
                "background": bg_model or "resize", "seconds": round(time.monotonic() - t0, 3)}
    return JobOutput(image=out, masks=[("faces", combined)], info=info_out)


@dataclass
class Placed:
    face: Face
    q: np.ndarray                        # 2x3: restored-face index coords -> output index coords
    rect: tuple[int, int, int, int]      # x0, y0, x1, y1 (exclusive) in the output it may touch


def place_faces(faces: list[Face], fsize: int, scale: int, roi: tuple[int, int, int, int]) -> list[Placed]:
    """Alignment transforms of the faces and where each lands in the output (roi * scale); faces
    whose aligned square does not reach into the output are left out."""
    rx, ry, rw, rh = roi
    out_w, out_h = rw * scale, rh * scale
    k = FACE_SIZE / fsize
    g = np.array([[k, 0.0, 0.5 * k - 0.5], [0.0, k, 0.5 * k - 0.5]])   # face grid -> template grid
    placed = []
    for face in faces:
        try:
            face.to_template = fm.similarity_to_template(face.landmarks - 0.5, FACE_SIZE)
        except ValueError:
            continue
        q = fm.to_output_frame(fm.compose(fm.invert_affine(face.to_template), g), scale, (rx, ry))
        x0, y0, x1, y1 = fm.transformed_bounds(q, fsize, fsize)
        rect = (max(0, int(np.floor(x0)) - 1), max(0, int(np.floor(y0)) - 1),
                min(out_w, int(np.ceil(x1)) + 2), min(out_h, int(np.ceil(y1)) + 2))
        if rect[0] < rect[2] and rect[1] < rect[3]:
            placed.append(Placed(face, q, rect))
    return placed


def paste_faces(out: np.ndarray, placed: list[Placed],
                restore: Callable[[int], tuple[np.ndarray, np.ndarray]], ncolor: int,
                combined: np.ndarray) -> None:
    """Paste the faces into ``out`` (the background, modified in place) and write the combined
    8-bit mask into ``combined``.  ``restore(i)`` gives face i's restored square (float32 RGB 0..1)
    and its soft mask (same square, float32 0..1).  Overlapping faces are composited in order;
    each group of overlapping faces is blended into the background once, with the quantised mask."""
    import cv2

    for members, (gx0, gy0, gx1, gy1) in fm.group_rects([p.rect for p in placed]):
        acc = np.zeros((gy1 - gy0, gx1 - gx0, 3), np.float32)     # faces, premultiplied by coverage
        trans = np.ones((gy1 - gy0, gx1 - gx0), np.float32)       # weight left for the background
        for i in members:
            p = placed[i]
            restored, mask = restore(i)
            x0, y0, x1, y1 = p.rect
            qr = p.q.copy()
            qr[:, 2] -= (x0, y0)
            size = (x1 - x0, y1 - y0)
            enlarge = np.hypot(*p.q[:, 0]) > 1.0
            wf = cv2.warpAffine(restored, qr, size, flags=cv2.INTER_CUBIC if enlarge else cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_REPLICATE)
            np.clip(wf, 0.0, 1.0, out=wf)
            wm = cv2.warpAffine(mask, qr, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                                borderValue=0)
            sl = (slice(y0 - gy0, y1 - gy0), slice(x0 - gx0, x1 - gx0))
            a = acc[sl]
            a *= (1.0 - wm)[:, :, None]
            a += wm[:, :, None] * wf
            trans[sl] *= 1.0 - wm
        _blend(out, acc, trans, (gx0, gy0, gx1, gy1), ncolor, combined)


def align_face(image: np.ndarray, to_template: np.ndarray, ncolor: int) -> np.ndarray:
    """The aligned FACE_SIZE^2 crop (float32 RGB 0..1) of one face, read from only the region it
    needs (no float copy of the whole frame), pre-shrunk with area averaging for big faces."""
    import cv2

    h, w = image.shape[:2]
    inv = fm.invert_affine(to_template)
    x0, y0, x1, y1 = fm.transformed_bounds(inv, FACE_SIZE, FACE_SIZE)
    ix0, iy0 = max(0, int(np.floor(x0)) - 2), max(0, int(np.floor(y0)) - 2)
    ix1, iy1 = min(w, int(np.ceil(x1)) + 3), min(h, int(np.ceil(y1)) + 3)
    m = to_template.copy()
    if ix0 >= ix1 or iy0 >= iy1:      # the whole square is off the frame: reflect from the frame
        ix0, iy0, ix1, iy1 = 0, 0, w, h
    region = _color_to_rgb01(image[iy0:iy1, ix0:ix1], ncolor)
    m[:, 2] += m[:, :2] @ np.array([ix0, iy0], np.float64)
    k = float(np.hypot(*m[:, 0]))          # template pixels per input pixel
    if k < 0.5:
        f = min(1.0, 2.0 * k)
        rh_, rw_ = region.shape[:2]
        sw, sh = max(1, round(rw_ * f)), max(1, round(rh_ * f))
        fx, fy = sw / rw_, sh / rh_
        region = cv2.resize(region, (sw, sh), interpolation=cv2.INTER_AREA)
        # small-grid index u = f (x + 0.5) - 0.5  ->  x = (u + 0.5) / f - 0.5
        back = np.array([[1 / fx, 0.0, 0.5 / fx - 0.5], [0.0, 1 / fy, 0.5 / fy - 0.5]])
        m = fm.compose(m, back)
    return cv2.warpAffine(region, m, (FACE_SIZE, FACE_SIZE), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REFLECT101)


def _blend(out: np.ndarray, acc: np.ndarray, trans: np.ndarray, rect, ncolor: int,
           combined: np.ndarray) -> None:
    """out[rect] = bg * (1 - M) + faces * M with M the 8-bit combined mask; pixels where M is 0
    keep the background's exact values."""
    gx0, gy0, gx1, gy1 = rect
    mq = fm.quantize_mask(1.0 - trans)
    np.maximum(combined[gy0:gy1, gx0:gx1], mq, out=combined[gy0:gy1, gx0:gx1])
    sel = mq > 0
    if not sel.any():
        return
    cov = np.maximum(1.0 - trans, 1e-6)
    faces = acc / cov[:, :, None]            # the faces alone, un-premultiplied
    if ncolor == 1:
        faces = (faces @ LUMA)[:, :, None]   # the same RGB -> gray as the engine's other ops
    region = out[gy0:gy1, gx0:gx1]
    unit = PEAK[out.dtype]
    bgf = region[..., :ncolor].astype(np.float32)
    if unit != 1.0:
        bgf *= 1.0 / unit
    wgt = (mq.astype(np.float32) / 255.0)[:, :, None]
    res = bgf * (1.0 - wgt) + faces * wgt
    if out.dtype != np.float32:
        res = np.clip(np.rint(res * unit), 0, unit).astype(out.dtype)
    else:
        res = res.astype(np.float32)
    color = region[..., :ncolor]
    color[sel] = res[sel]
