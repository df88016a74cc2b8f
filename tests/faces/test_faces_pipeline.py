"""The whole "faces" op through the real Engine and ModelStore: real detector, restorers of the
real architectures with random weights (facekit.py), paste-back, masks, roi, scale, dtypes."""
from __future__ import annotations

import json
import warnings

import cv2
import numpy as np
import pytest

from facekit import DETECTOR_FILE, Recorder, astronaut, link, make_engine, read_rgb, run

from ai_enhance.ops.faces import masks as fm
from ai_enhance.errors import Cancelled, EnhanceError
from ai_enhance.ops.faces.pipeline import align_face, detect_faces, place_faces, paste_faces
from ai_enhance_client.protocol import ErrorKind


def lanczos_bg(image, roi, scale):
    """The documented background without a background model: the roi resized with Lanczos."""
    x, y, w, h = roi
    crop = np.ascontiguousarray(image[y:y + h, x:x + w])
    if scale == 1:
        return crop
    r = cv2.resize(crop, (w * scale, h * scale), interpolation=cv2.INTER_LANCZOS4)
    return r[:, :, None] if r.ndim == 2 else r


def to_out(xy, roi, scale):
    """Continuous input-frame point -> output pixel index."""
    return (int((xy[0] - roi[0]) * scale), int((xy[1] - roi[1]) * scale))


def assert_soft_mask_over(mask, face_json, roi, scale):
    """255 at the face centre, > 0 over most of the detected box, a soft (0 < m < 255) edge."""
    x0, y0, x1, y1 = face_json["box"]
    lm = np.array(face_json["landmarks"])
    cx, cy = to_out(lm.mean(0), roi, scale)
    assert mask[cy, cx] == 255
    for p in lm:                                           # eyes, nose, mouth: fully restored
        u, v = to_out(p, roi, scale)
        if 0 <= v < mask.shape[0] and 0 <= u < mask.shape[1]:
            assert mask[v, u] == 255
    bx0, by0 = to_out((x0, y0), roi, scale)
    bx1, by1 = to_out((x1, y1), roi, scale)
    box = mask[max(0, by0):max(0, by1), max(0, bx0):max(0, bx1)]
    if box.size:
        assert (box > 0).mean() > 0.85, (box > 0).mean()
    # along a ray from the centre to the right: 255 ... strictly between ... 0
    ray = mask[cy, cx:]
    soft = (ray > 0) & (ray < 255)
    assert soft.sum() >= 3 * scale
    assert ray[0] == 255 and (ray == 0).any()
    first0 = int(np.argmax(ray == 0))
    assert np.all(np.diff(ray[:first0].astype(int)) <= 0)  # monotone fall-off, no ring artefacts


# --------------------------------------------------------------------------- full-size GFPGAN


def test_gfpgan_full_path_astronaut_rgba(gfpgan_models_dir):
    """Load (spandrel GFPGAN from GFPGANv1.4.pth), detect, align, restore, paste back: the one run
    of the real-size network (several seconds on a CPU)."""
    engine = make_engine(gfpgan_models_dir)
    rgb = astronaut()
    alpha = np.tile(np.linspace(0, 255, 512).astype(np.uint8), (512, 1))
    img = np.dstack([rgb, alpha])
    rec = Recorder()
    out = run(engine, img, model="gfpgan-v1.4", rec=rec)

    assert out.image.shape == img.shape and out.image.dtype == np.uint8
    faces = out.info["faces"]
    assert len(faces) == 1 and faces[0]["score"] > 0.99
    assert np.allclose(faces[0]["box"], [178, 58, 273, 178], atol=6)
    assert "restored 1 face" in out.info["message"] and out.info["mask"] == "ellipse"
    (name, mask), = out.masks
    assert name == "faces" and mask.shape == img.shape[:2] and mask.dtype == np.uint8
    assert_soft_mask_over(mask, faces[0], (0, 0, 512, 512), 1)

    outside = mask == 0
    assert outside.mean() > 0.85
    assert np.array_equal(out.image[outside], img[outside])          # untouched, bit for bit
    assert np.array_equal(out.image[:, :, 3], alpha)                   # alpha kept everywhere
    inside = mask == 255
    changed = np.abs(out.image[:, :, :3].astype(int) - rgb).max(axis=2) > 8
    assert changed[inside].mean() > 0.5                                # the network's output is there
    assert len(engine.loaded_models()) == 1 and engine.loaded_models()[0]["id"] == "gfpgan-v1.4"
    texts = [t for _, t in rec.events]
    assert "face 1/1" in texts and rec.events[-1] == (1.0, "done")
    fr = [f for f, _ in rec.events]
    assert fr == sorted(fr)


# --------------------------------------------------------------------------- geometry


@pytest.mark.parametrize("scale,roi", [(1, (0, 0, 512, 512)), (2, (150, 60, 200, 150)), (3, (100, 0, 300, 300))])
def test_identity_restorer_round_trip(detector, scale, roi):
    """Align and paste back with an identity "restorer": inside the mask the result must match the
    background to >= 38 dB (a half-pixel misplacement gives ~32 dB), outside it is untouched."""
    img = astronaut()
    faces = detect_faces(detector, img)
    placed = place_faces(faces, 512, scale, roi)
    assert len(placed) == 1
    bg = lanczos_bg(img, roi, scale)
    out = bg.copy()
    combined = np.zeros(bg.shape[:2], np.uint8)
    ell = fm.ellipse_mask(512)
    paste_faces(out, placed, lambda i: (align_face(img, placed[i].face.to_template, 3), ell), 3, combined)
    sel = combined > 0
    assert sel.sum() > 1000
    d = out[sel].astype(np.float64) - bg[sel]
    psnr = 10 * np.log10(255.0 ** 2 / np.mean(d ** 2))
    assert psnr > 38, psnr
    assert np.array_equal(out[~sel], bg[~sel])


def test_align_face_puts_landmarks_on_the_template(detector):
    img = astronaut()
    face = detect_faces(detector, img)[0]
    placed = place_faces([face], 512, 1, (0, 0, 512, 512))
    crop = align_face(img, placed[0].face.to_template, 3)
    assert crop.shape == (512, 512, 3) and crop.dtype == np.float32
    assert 0.0 <= crop.min() and crop.max() <= 1.0
    # the landmarks land near the FFHQ points (a real face never fits the template exactly: the
    # least-squares fit must do at least as well as upstream's cv2 LMEDS estimate)
    lm = face.landmarks - 0.5
    m = face.to_template
    t = lm @ m[:, :2].T + m[:, 2]
    rms = np.sqrt(((t - fm.template(512)) ** 2).sum(1).mean())
    up = cv2.estimateAffinePartial2D(lm, fm.template(512), method=cv2.LMEDS)[0]
    rms_up = np.sqrt((((lm @ up[:, :2].T + up[:, 2]) - fm.template(512)) ** 2).sum(1).mean())
    assert rms < 15 and rms <= rms_up + 1e-6, (rms, rms_up)
    # and the crop is the face: compare with a plain cv2 warp of the whole image
    ref = cv2.warpAffine(img.astype(np.float32) / 255.0, m, (512, 512), flags=cv2.INTER_LINEAR)
    assert np.abs(crop[100:400, 100:400] - ref[100:400, 100:400]).max() < 1e-4


# --------------------------------------------------------------------------- roi, scale, dtypes


def test_roi_cutting_faces_scale2_u16_rgba(engine, detector):
    """Family photo (3 faces), u16 RGBA, a roi whose edge cuts through one face, scale 2: detection
    on the whole frame, boxes in frame coordinates, output = roi * 2 only."""
    rgb = read_rgb("10045.png", max_side=640)                      # 640x437
    h, w = rgb.shape[:2]
    alpha = np.full((h, w), 50000, np.uint16)
    alpha[:, : w // 3] = 0
    img = np.dstack([rgb.astype(np.uint16) * 257, alpha])
    whole = detect_faces(detector, img)
    assert len(whole) == 3
    # the roi's left edge runs through the middle of the left-most face: it is cut, the face to
    # its right is inside, the third (lower) face is outside
    left = min(whole, key=lambda f: f.box[0])
    cut_x = int((left.box[0] + left.box[2]) / 2)
    top = min(f.box[1] for f in whole)
    roi = (cut_x, max(0, int(top) - 10), int(max(f.box[2] for f in whole if f.box[1] < 200)) + 20 - cut_x, 150)
    out = run(engine, img, scale=2, roi=roi)

    assert out.image.shape == (roi[3] * 2, roi[2] * 2, 4) and out.image.dtype == np.uint16
    got = sorted(f["box"] for f in out.info["faces"])
    want = sorted([float(v) for v in f.box] for f in whole
                  if f.box[1] < roi[1] + roi[3] and f.box[3] > roi[1] and f.box[2] > roi[0] and f.box[0] < roi[0] + roi[2])
    assert len(want) == 2 and any(np.allclose(wb, left.box, atol=0.01) for wb in want)
    assert len(got) == 2 and np.allclose(got, want, atol=0.01), (got, want, roi)   # frame coordinates
    assert "1 more outside" in out.info["message"]
    (_, mask), = out.masks
    assert mask.shape == out.image.shape[:2]
    bg = lanczos_bg(img[:, :, :3], roi, 2)
    outside = mask == 0
    assert np.array_equal(out.image[:, :, :3][outside], bg[outside])
    # alpha never goes through the operation: the engine resizes it, as for every operation
    from ai_enhance.pixels import resize_alpha
    assert np.array_equal(out.image[:, :, 3], resize_alpha(img[:, :, 3], roi, 2))
    for f in out.info["faces"]:
        if f["box"][0] > roi[0]:                                    # the face fully inside
            assert_soft_mask_over(mask, f, roi, 2)
    # the cut face is restored on its visible part: mask reaches the roi's left edge
    assert mask[:, 0].max() == 255


def test_gray_and_gray_alpha(engine):
    g = cv2.cvtColor(astronaut(), cv2.COLOR_RGB2GRAY)
    for img in (g[:, :, None], np.dstack([g, np.full_like(g, 200)])):
        out = run(engine, img)
        assert out.image.shape == img.shape and out.image.dtype == np.uint8
        assert len(out.info["faces"]) == 1
        (_, mask), = out.masks
        outside = mask == 0
        assert np.array_equal(out.image[outside], img[outside])
        assert not np.array_equal(out.image[mask == 255], img[mask == 255])
        if img.shape[2] == 2:
            assert np.array_equal(out.image[:, :, 1], img[:, :, 1])


def test_face_cut_by_the_frame_edge(engine):
    """A face cut by the image border (the aligned square reaches outside the frame): restored on
    its visible part, the mask reaching the border, nothing else touched."""
    img = np.ascontiguousarray(astronaut()[90:346, 215:471])      # the face's left/top cut off
    out = run(engine, img)
    assert len(out.info["faces"]) == 1
    x0, y0, _, _ = out.info["faces"][0]["box"]
    assert x0 < 5 and y0 < 5                                       # the box touches the border
    (_, mask), = out.masks
    assert mask[:, 0].max() == 255 or mask[0].max() == 255
    assert np.array_equal(out.image[mask == 0], img[mask == 0])


def test_float32_keeps_out_of_range_background(engine):
    img = astronaut().astype(np.float32) / 255.0
    img[400:, :] *= 1.5                                # HDR-ish values outside the face
    img[0, 0] = -0.25
    out = run(engine, img, scale=1)
    assert out.image.dtype == np.float32
    (_, mask), = out.masks
    outside = mask == 0
    assert np.array_equal(out.image[outside], img[outside])
    assert out.image[mask == 255].max() <= 1.0 and out.image[mask == 255].min() >= 0.0


def test_background_model_same_scale(engine):
    """option background = an upscaler id: outside the faces the output is that model's output;
    nearest-x2 is exactly a nearest-neighbour x2 upscale."""
    img = astronaut()
    roi = (128, 0, 256, 256)
    rec = Recorder()
    out = run(engine, img, scale=2, roi=roi, options={"background": "nearest-x2"}, rec=rec)
    crop = img[roi[1]:roi[1] + roi[3], roi[0]:roi[0] + roi[2]]
    nearest = crop.repeat(2, axis=0).repeat(2, axis=1)
    (_, mask), = out.masks
    assert out.image.shape == nearest.shape and out.info["background"] == "nearest-x2"
    outside = mask == 0
    assert outside.mean() > 0.5
    assert np.array_equal(out.image[outside], nearest[outside])
    assert any(t.startswith("background:") for _, t in rec.events)


def test_background_model_missing(engine):
    with pytest.raises(EnhanceError) as e:
        run(engine, astronaut(), scale=2, options={"background": "realesrgan-x4plus"})
    assert e.value.kind == ErrorKind.MODEL_MISSING and "RealESRGAN_x4plus.pth" in e.value.message


# --------------------------------------------------------------------------- zero faces, bad input


@pytest.mark.parametrize("scale", [1, 2])
def test_no_faces_is_a_normal_answer(faces_models_dir, scale):
    coffee = pytest.importorskip("skimage.data").coffee()
    engine = make_engine(faces_models_dir)
    out = run(engine, coffee, scale=scale)
    assert out.info["faces"] == [] and out.info["message"].startswith("no faces found")
    (name, mask), = out.masks
    assert name == "faces" and mask.shape == out.image.shape[:2] and mask.max() == 0
    assert np.array_equal(out.image, lanczos_bg(coffee, (0, 0, coffee.shape[1], coffee.shape[0]), scale))
    assert engine.loads == 0          # the restorer was resolved (file checked) but never loaded


def test_tiny_image(engine):
    img = np.full((6, 9, 3), 77, np.uint8)
    out = run(engine, img, scale=4)
    assert out.image.shape == (24, 36, 3) and out.info["faces"] == []
    assert "too small" in out.info["message"]
    assert out.masks[0][1].shape == (24, 36) and out.masks[0][1].max() == 0


def test_missing_gfpgan_names_file_and_folder(faces_models_dir, tmp_path):
    d = tmp_path / "models"
    d.mkdir()
    link(faces_models_dir / DETECTOR_FILE, d / DETECTOR_FILE)
    engine = make_engine(d)
    with pytest.raises(EnhanceError) as e:
        run(engine, astronaut(), model="gfpgan-v1.4")
    err = e.value
    assert err.kind == ErrorKind.MODEL_MISSING
    assert "GFPGANv1.4.pth" in err.message and str(d) in err.message
    assert err.hint and "\n" not in str(err)


def test_missing_detector(faces_models_dir, tmp_path):
    d = tmp_path / "models"
    d.mkdir()
    link(faces_models_dir / "tiny-restoreformer.pth", d / "tiny-restoreformer.pth")
    with pytest.raises(EnhanceError) as e:
        run(make_engine(d), astronaut())
    assert e.value.kind == ErrorKind.MODEL_MISSING
    assert DETECTOR_FILE in e.value.message and str(d) in e.value.message


def test_corrupt_detector(faces_models_dir, tmp_path):
    d = tmp_path / "models"
    d.mkdir()
    link(faces_models_dir / "tiny-restoreformer.pth", d / "tiny-restoreformer.pth")
    (d / DETECTOR_FILE).write_bytes((faces_models_dir / DETECTOR_FILE).read_bytes()[:50000])
    with pytest.raises(EnhanceError) as e:
        run(make_engine(d), astronaut())
    assert e.value.kind == ErrorKind.MODEL_CORRUPT and DETECTOR_FILE in e.value.message


def test_resnet50_detector_preferred_when_installed(faces_models_dir, tmp_path):
    import torch
    from facexlib.detection.retinaface import RetinaFace

    from ai_enhance.ops.faces.pipeline import get_detector

    d = tmp_path / "models"
    d.mkdir()
    link(faces_models_dir / DETECTOR_FILE, d / DETECTOR_FILE)
    engine = make_engine(d)
    assert get_detector(engine.models)[1] == "retinaface-mobile0.25"
    with warnings.catch_warnings():          # torchvision: "pretrained" is deprecated
        warnings.simplefilter("ignore")
        net = RetinaFace(network_name="resnet50", device="cpu")
    torch.save(net.state_dict(), d / "detection_Resnet50_Final.pth")
    det, det_id = get_detector(engine.models)
    assert det_id == "retinaface-resnet50" and det.backbone == "Resnet50"


def test_upscaler_is_not_a_face_model(engine):
    with pytest.raises(EnhanceError) as e:
        run(engine, astronaut(), model="nearest-x2")
    assert e.value.kind == ErrorKind.UNSUPPORTED and "does not do 'faces'" in e.value.message


def test_unknown_model(engine):
    with pytest.raises(EnhanceError) as e:
        run(engine, astronaut(), model="no-such-model")
    assert e.value.kind == ErrorKind.UNKNOWN_MODEL


@pytest.mark.parametrize("kw,kind", [
    (dict(scale=5), ErrorKind.BAD_REQUEST),          # outside the table's 1..4, like every op's scale
    (dict(options={"codeformer-weight": 1.5}), ErrorKind.BAD_REQUEST),
    (dict(options={"det-threshold": "high"}), ErrorKind.BAD_REQUEST),
    (dict(options={"face-mask": "square"}), ErrorKind.BAD_REQUEST),
    (dict(options={"fidelity": 0.5}), ErrorKind.BAD_REQUEST),      # unknown keys are refused
    (dict(options={"background": 3}), ErrorKind.BAD_REQUEST),
    (dict(roi=(500, 500, 20, 20)), ErrorKind.BAD_REQUEST),
])
def test_bad_requests(engine, kw, kind):
    with pytest.raises(EnhanceError) as e:
        run(engine, astronaut(), **kw)
    assert e.value.kind == kind
    assert e.value.hint


def test_parsing_mask_requested_but_not_installed(engine):
    with pytest.raises(EnhanceError) as e:
        run(engine, astronaut(), options={"face-mask": "parsing"})
    assert e.value.kind == ErrorKind.MODEL_MISSING and "parsing_parsenet.pth" in e.value.message


# --------------------------------------------------------------------------- progress, cancel


def test_cancel_between_faces(engine):
    img = read_rgb("Blake_Lively.jpg")
    rec = Recorder(cancel_when=lambda ev: any(t == "face 1/2" for _, t in ev))
    with pytest.raises(Cancelled):
        run(engine, img, rec=rec)
    texts = [t for _, t in rec.events]
    assert "face 1/2" in texts and "face 2/2" not in texts


def test_cancel_before_anything(engine):
    rec = Recorder(cancel_when=lambda ev: True)
    with pytest.raises(Cancelled):
        run(engine, astronaut(), rec=rec)
    assert rec.events == []


def test_two_faces_progress_and_masks(engine):
    img = read_rgb("Blake_Lively.jpg")
    rec = Recorder()
    out = run(engine, img, rec=rec)
    faces = out.info["faces"]
    assert len(faces) == 2 and out.info["message"].startswith("restored 2 faces")
    (_, mask), = out.masks
    for f in faces:
        assert_soft_mask_over(mask, f, (0, 0, img.shape[1], img.shape[0]), 1)
    texts = [t for _, t in rec.events]
    assert texts.index("face 1/2") < texts.index("face 2/2")
    assert json.loads(json.dumps(out.info, allow_nan=False)) == out.info   # what the server sends
    outside = mask == 0
    assert np.array_equal(out.image[outside], img[outside])


# --------------------------------------------------------------------------- parsing mask


def test_parsing_model_used_when_installed(faces_models_dir, tmp_path):
    """With parsing_parsenet.pth in the folder the paste mask comes from face parsing (a random
    ParseNet here: the mask is arbitrary, the plumbing and the invariants are what is checked);
    face_mask=ellipse still forces the ellipse."""
    import torch
    from facexlib.parsing.parsenet import ParseNet

    d = tmp_path / "models"
    d.mkdir()
    for f in (DETECTOR_FILE, "tiny-restoreformer.pth"):
        link(faces_models_dir / f, d / f)
    torch.manual_seed(0)
    torch.save(ParseNet(in_size=512, out_size=512, parsing_ch=19).state_dict(), d / "parsing_parsenet.pth")
    engine = make_engine(d)
    img = astronaut()
    out = run(engine, img)
    assert out.info["mask"] == "parsing"
    (_, mask), = out.masks
    assert np.array_equal(out.image[mask == 0], img[mask == 0])
    x0, y0, x1, y1 = out.info["faces"][0]["box"]
    bw, bh = x1 - x0, y1 - y0
    ys, xs = np.nonzero(mask)
    assert len(ys) > 0                                            # stays near the face:
    assert xs.min() > x0 - bw and xs.max() < x1 + bw and ys.min() > y0 - bh and ys.max() < y1 + bh
    ell = run(engine, img, options={"face-mask": "ellipse"})
    assert ell.info["mask"] == "ellipse"
