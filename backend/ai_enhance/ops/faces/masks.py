"""Geometry and soft masks of the face pipeline: pure numpy (+ OpenCV for the warps).

Coordinates: "index" coordinates, pixel (i, j) has its centre at (x=j, y=i), like OpenCV's
warpAffine.  The face detector reports continuous coordinates (pixel j spans [j, j+1)); convert with
``- 0.5`` before building warps.

The aligned face lives in a ``size`` x ``size`` square (512 for GFPGAN/CodeFormer/RestoreFormer) in
which the five landmarks sit on the FFHQ template.
"""
from __future__ import annotations

import numpy as np

#: The five FFHQ landmarks (left eye, right eye, nose tip, left and right mouth corner) of a
#: 512x512 aligned face, as used by GFPGAN / CodeFormer / facexlib.
FFHQ_TEMPLATE_512 = np.array([[192.98138, 239.94708], [318.90277, 240.1936], [256.63416, 314.01935],
                              [201.26117, 371.41043], [313.08905, 371.15118]], np.float64)

#: Soft elliptical face mask in template units (at size 512): full weight inside the ellipse
#: centre/radii (brow to chin, cheek to cheek), falling smoothly to zero at FEATHER times the radii
#: (a ~35 px ramp, like upstream's blurred square), which keeps it inside the square on real faces
#: (checked on the test photos: the ramp covers >= 90% of every detected box); also faded out over
#: EDGE_FADE px before the square's border so no hard edge of the square can ever show.
ELLIPSE_CENTRE = (256.0, 272.0)
ELLIPSE_RADII = (166.0, 184.0)
FEATHER = 1.22
EDGE_FADE = 24.0

#: ParseNet / BiSeNet (CelebAMask-HQ) classes that count as "face" for the paste mask: skin, brows,
#: eyes, glasses, ears, earrings, nose, mouth, lips.  Left out: 0 background, 14 neck, 16 cloth,
#: 17 hair, 18 hat (the restorers invent those; the photo's own are better).
PARSE_FACE_CLASSES = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 15)


def template(size: int = 512) -> np.ndarray:
    return FFHQ_TEMPLATE_512 * (size / 512.0)


def similarity_to_template(landmarks: np.ndarray, size: int = 512) -> np.ndarray:
    """2x3 similarity transform (rotation, uniform scale, translation) taking the five ``landmarks``
    (index coordinates of the source image) onto the template; least squares (Umeyama), so it is
    deterministic, unlike a RANSAC/LMEDS estimate."""
    src = np.asarray(landmarks, np.float64).reshape(5, 2)
    dst = template(size)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s0, d0 = src - mu_s, dst - mu_d
    var = (s0 ** 2).sum()
    if var < 1e-9:
        raise ValueError("degenerate landmarks")
    # complex-number form of the 2D similarity: d = a * s, a = sum(conj(s) d) / sum(|s|^2)
    sc = s0[:, 0] + 1j * s0[:, 1]
    dc = d0[:, 0] + 1j * d0[:, 1]
    a = (np.conj(sc) * dc).sum() / var
    m = np.array([[a.real, -a.imag, 0.0], [a.imag, a.real, 0.0]])
    m[:, 2] = mu_d - m[:, :2] @ mu_s
    return m


def invert_affine(m: np.ndarray) -> np.ndarray:
    a = np.vstack([m, [0.0, 0.0, 1.0]])
    return np.linalg.inv(a)[:2]


def compose(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The 2x3 affine ``a`` after ``b`` (x -> a(b(x)))."""
    return (np.vstack([a, [0, 0, 1]]) @ np.vstack([b, [0, 0, 1]]))[:2]


def to_output_frame(m_template_to_input: np.ndarray, scale: float, roi_xy: tuple[float, float]) -> np.ndarray:
    """Template -> input index coordinates, followed by input -> output index coordinates, where the
    output is the roi (x, y) cut of the input enlarged ``scale`` times with pixel edges aligned
    (output centre u+0.5 = scale * (x + 0.5 - roi_x))."""
    s = float(scale)
    rx, ry = roi_xy
    io = np.array([[s, 0.0, 0.5 * (s - 1.0) - s * rx], [0.0, s, 0.5 * (s - 1.0) - s * ry]])
    return compose(io, m_template_to_input)


def transformed_bounds(m: np.ndarray, w: float, h: float) -> tuple[float, float, float, float]:
    """Bounding box (x0, y0, x1, y1) of the [0, w] x [0, h] rectangle under the 2x3 affine m."""
    c = np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float64)
    t = c @ m[:, :2].T + m[:, 2]
    return float(t[:, 0].min()), float(t[:, 1].min()), float(t[:, 0].max()), float(t[:, 1].max())


def _smoothstep(t: np.ndarray) -> np.ndarray:
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def edge_fade(size: int, fade: float) -> np.ndarray:
    """size x size weights: 0 on the border pixels, rising smoothly to 1 at ``fade`` px inside."""
    i = np.arange(size, dtype=np.float32)
    d = np.minimum(i, size - 1 - i)
    r = _smoothstep(d / max(fade, 1e-6))
    return np.minimum(r[:, None], r[None, :])


def ellipse_mask(size: int = 512) -> np.ndarray:
    """Soft face mask in the aligned square, float32 0..1: 1 over the face (forehead to chin, cheek
    to cheek), a wide smooth feather around it, exactly 0 far from the face and at the border."""
    k = size / 512.0
    cx, cy = ELLIPSE_CENTRE[0] * k, ELLIPSE_CENTRE[1] * k
    rx, ry = ELLIPSE_RADII[0] * k, ELLIPSE_RADII[1] * k
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    d = np.sqrt(((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2)
    m = 1.0 - _smoothstep((d - 1.0) / (FEATHER - 1.0))
    return (m * edge_fade(size, EDGE_FADE * k)).astype(np.float32)


def parsing_mask(classes: np.ndarray, blur_sigma: float | None = None) -> np.ndarray:
    """Soft face mask from a face-parsing label map (HxW ints, CelebAMask-HQ classes): the face
    classes, feathered by a Gaussian blur, faded out at the square's border.  float32 0..1."""
    import cv2

    size = classes.shape[0]
    k = size / 512.0
    hard = np.isin(classes, PARSE_FACE_CLASSES).astype(np.float32)
    sigma = blur_sigma if blur_sigma is not None else 10.0 * k
    # two passes of a moderate blur: a smooth, wide-ish ramp that stays inside the skin region's
    # neighbourhood (a single huge blur would bleed into hair and background)
    soft = cv2.GaussianBlur(hard, (0, 0), sigma)
    soft = cv2.GaussianBlur(soft, (0, 0), sigma)
    soft = np.clip(soft * 1.25, 0.0, 1.0)   # push the inside of the face back up to full weight
    return (soft * edge_fade(size, EDGE_FADE * k)).astype(np.float32)


def quantize_mask(m: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(m * 255.0), 0, 255).astype(np.uint8)


def rects_overlap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def group_rects(rects: list[tuple[int, int, int, int]]) -> list[tuple[list[int], tuple[int, int, int, int]]]:
    """Connected groups of overlapping rectangles (x0, y0, x1, y1; x1/y1 exclusive): list of (member
    indices, union rectangle), the union rectangles pairwise disjoint."""
    groups: list[tuple[list[int], list[int]]] = [([i], list(r)) for i, r in enumerate(rects)]
    merged = True
    while merged:
        merged = False
        for i in range(len(groups)):
            for j in range(i + 1, len(groups)):
                if rects_overlap(tuple(groups[i][1]), tuple(groups[j][1])):
                    a, b = groups[i], groups.pop(j)
                    a[0].extend(b[0])
                    r = a[1]
                    a[1][:] = [min(r[0], b[1][0]), min(r[1], b[1][1]), max(r[2], b[1][2]), max(r[3], b[1][3])]
                    merged = True
                    break
            if merged:
                break
    return [(sorted(idx), tuple(r)) for idx, r in groups]
