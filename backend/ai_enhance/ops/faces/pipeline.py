"""The "faces" op: detect faces, align each to the 512x512 FFHQ template, restore it with a face
model (GFPGAN, CodeFormer, RestoreFormer through spandrel) and paste it back with a soft mask over
a background (the input resized, or a Real-ESRGAN model's output at the same scale).

Called by the engine as ``run(ctx) -> JobOutput`` (ops registry); ``ctx.image`` is the colour
plane (the engine handles alpha).

* Detection: facexlib's RetinaFace network (``models.helpers``, loaded safely, never downloaded):
  the first installed catalogue entry of role ``face_detector`` (ResNet-50, then MobileNet-0.25).
* Paste mask: face parsing (facexlib's ParseNet) when ``parsing_parsenet.pth`` is installed, else a
  soft ellipse over the aligned face (``face_masks.ellipse_mask``).  Never needs a missing file.
* The result is ``background * (1 - M) + faces * M`` with M the combined soft mask returned as the
  "faces" mask, quantised to 8 bits *before* blending: where the mask is 0 the output is the
  background bit for bit, and a GIMP layer + that mask over the background reproduces the result.
* Coordinates in ``info["faces"]`` are continuous coordinates of the frame the client sent
  (pixel j spans [j, j+1)), before the roi cut and the scale.

Options (declared in the operation table, validated by the engine): ``background`` (model id of
an upscaler; empty = resize), ``codeformer-weight`` (CodeFormer's w), ``det-threshold``,
``det-size`` (short side the detector sees), ``face-mask`` ("auto" | "parsing" | "ellipse").
"""
from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ai_enhance_client.protocol import ErrorKind

from ...errors import EnhanceError
from ...jobs import JobOutput
from ...models import ModelService
from ...pixels import LUMA, PEAK, resize, to_rgb01
from ..context import OpContext
from ..image_model import check_serves, run_model
from . import masks as fm

log = logging.getLogger(__name__)

FACE_SIZE = 512
MIN_SIDE = 16            # smaller frames cannot hold a detectable face
MIN_EYE_DIST = 4.0       # input pixels; below that a "face" is a speck, not worth restoring
DEFAULT_THRESHOLD = 0.95
DEFAULT_DET_SIZE = 640
DET_MAX_LONG_SIDE = 2150


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


# --------------------------------------------------------------------------- support networks


def support_info(models: ModelService, role: str):
    """The first installed catalogue entry of ``role`` (catalogue order: best first), or None."""
    return next((m for m in models.store.list() if m.role == role and m.installed), None)


def get_detector(models: ModelService):
    """(net, catalogue id) of the best installed face detector; MODEL_MISSING when none is."""
    info = support_info(models, "face_detector")
    if info is None:
        folder = models.store.dir
        files = [m.file for m in models.store.list() if m.role == "face_detector"]
        raise EnhanceError(ErrorKind.MODEL_MISSING,
                           f"no face detector installed: {' or '.join(files) or 'a RetinaFace file'} "
                           f"is not in {folder}",
                           f"install it with the installer, or put {files[-1] if files else 'it'} into {folder}")
    return models.helper(info), info.id


def get_parser(models: ModelService):
    """The face-parsing network if one is installed, else None."""
    info = support_info(models, "face_parser")
    return None if info is None else models.helper(info)


def load_restorer(ctx: OpContext, info):
    """The cached LoadedModel of a resolved face model; UNSUPPORTED for models that are not face
    restorers or cannot take a 512x512 face."""
    lm = ctx.models.get_model(info, ctx.options)
    hint = "choose a face model: gfpgan-v1.4, gfpgan-v1.3, codeformer or restoreformer"
    if str(lm.purpose) != "FaceSR":
        raise EnhanceError(ErrorKind.UNSUPPORTED,
                           f"{info.id} is a {lm.descriptor.architecture.name} {lm.purpose} model, not a "
                           "face restorer", hint)
    if not lm.descriptor.size_requirements.check(FACE_SIZE, FACE_SIZE):
        raise EnhanceError(ErrorKind.UNSUPPORTED, f"{info.id} cannot take a {FACE_SIZE}x{FACE_SIZE} aligned face",
                           hint)
    return lm


def restore_face(lm, crop: np.ndarray, options: dict) -> np.ndarray:
    """512x512x3 float32 RGB 0..1 -> restored (512*scale)^2 x 3 float32 0..1, through the model's
    adapter (models.adapters: the -1..1 convention of face models, CodeFormer's weight)."""
    import torch

    dtype = torch.float16 if lm.dtype == "float16" else torch.float32
    x = torch.from_numpy(np.ascontiguousarray(crop.transpose(2, 0, 1)))[None].to(device=lm.device, dtype=dtype)
    with torch.inference_mode():
        y = lm.forward(x, options)[0].float().clamp(0.0, 1.0).cpu().numpy().transpose(1, 2, 0)
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
    small = color if (dw, dh) == (w, h) else resize(color, dw, dh, interp)
    rgb = to_rgb01(small)
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


def _background(ctx: OpContext, bg_model: str, progress) -> np.ndarray:
    """The picture under the faces: an upscaler's output at the job's scale, or a resize."""
    import cv2

    rx, ry, rw, rh = ctx.roi
    scale = ctx.scale
    if bg_model:
        info = ctx.models.resolve(bg_model)
        check_serves(info, "upscale", ctx.models.store)
        sub = dataclasses.replace(ctx, progress=progress,
                                  req=dataclasses.replace(ctx.req, op="upscale", model=bg_model))
        return run_model(sub, info, options={}).image
    crop = ctx.crop()
    if scale == 1:
        return crop.copy()
    return resize(crop, rw * scale, rh * scale, cv2.INTER_LANCZOS4)


def run(ctx: OpContext) -> JobOutput:
    t0 = time.monotonic()
    image, progress = ctx.image, ctx.progress
    h, w, ncolor = image.shape
    scale = ctx.scale
    roi = ctx.roi
    rw, rh = roi[2], roi[3]
    opts = ctx.options
    threshold = float(opts["det-threshold"])
    det_size = int(opts["det-size"])
    mask_mode = opts["face-mask"]
    bg_model = opts["background"] or None
    out_h, out_w = rh * scale, rw * scale
    info = ctx.model        # resolved by the engine first: a missing GFPGAN file is reported before any work

    # 1. detection on the whole frame sent (context beyond the roi helps faces cut by its edge)
    progress(0.0, "detecting faces")
    detector, det_id = get_detector(ctx.models)
    faces = detect_faces(detector, image, threshold=threshold, det_size=det_size)
    ctx.check_cancel()

    # 2. background (its own progress range when a model runs)
    bg_share = 0.4 if bg_model else 0.05

    def bg_progress(f: float, text: str) -> None:
        progress(bg_share * f, f"background: {text}")
    out = _background(ctx, bg_model, bg_progress)       # a fresh array
    combined = np.zeros((out_h, out_w), np.uint8)

    # 3. faces whose aligned square reaches into the output: restore, paste
    lm = load_restorer(ctx, info) if faces else None
    fsize = FACE_SIZE * lm.scale if lm is not None else FACE_SIZE
    kept = place_faces(faces, fsize, scale, roi)
    outside = len(faces) - len(kept)
    parser = None
    if kept and mask_mode in ("auto", "parsing"):
        parser = get_parser(ctx.models)
        if parser is None and mask_mode == "parsing":
            folder = ctx.models.store.dir
            raise EnhanceError(ErrorKind.MODEL_MISSING, f"face-mask parsing needs a face-parsing model "
                               f"(parsing_parsenet.pth), not found in {folder}",
                               f"put parsing_parsenet.pth into {folder}, or use face-mask auto")
    mask_kind = "parsing" if parser is not None else "ellipse"
    ellipse = fm.ellipse_mask(fsize) if parser is None else None
    n = len(kept)
    counter = iter(range(n))

    def restore(i: int) -> tuple[np.ndarray, np.ndarray]:
        import cv2

        ctx.check_cancel()
        k = next(counter)
        progress(bg_share + (1.0 - bg_share) * k / n, f"face {k + 1}/{n}")
        crop = align_face(image, kept[i].face.to_template, ncolor)
        restored = restore_face(lm, crop, opts)
        if restored.shape[0] != fsize:
            restored = cv2.resize(restored, (fsize, fsize), interpolation=cv2.INTER_AREA)
        mask = parse_mask(parser, restored) if parser is not None else ellipse
        return restored, mask

    if kept:
        with ctx.models.using(lm):          # not unloaded while we run it
            paste_faces(out, kept, restore, ncolor, combined)

    # 4. answer
    progress(1.0, "done")
    if kept:
        msg = f"restored {n} face{'s' if n != 1 else ''} with {info.name}"
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
                "mask": mask_kind if kept else None, "model": info.id, "model_name": info.name,
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
    region = to_rgb01(image[iy0:iy1, ix0:ix1, :ncolor])
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
