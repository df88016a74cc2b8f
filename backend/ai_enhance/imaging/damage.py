"""Find Damage: scratches, cracks, dust specks and small spots on old photos.  `find_damage`
returns a uint8 mask, 255 = damaged.

The detector is a small convolutional network (imaging/damage_net.py: ~85 k weights shipped in the
package, trained on synthetic damage over sample photos by bench/train_damage_net.py) that gives
each pixel the probability of being part of a mark, and, if it is, of the mark being a scratch
rather than a speck.  What this module adds:

- sensitivity: the threshold on that probability, on a logistic scale around the one tuned for
  the default (0.5): 0 asks for near-certainty, 1 takes anything the network suspects;
- kinds: each flagged component is a scratch or dust by the network's average vote over it, so a
  mark is never split between the two;
- crowds: a speck with more than MAX_CROWD others within CROWD_WIN px is one of many alike dots
  of the scene (beads, sequins, stars, gravel), not dust, and is dropped;
- components lying along the image's edge are dropped (the border of a scanned print or the
  scanner's lid is a line along the edge, not damage);
- region: only the selection's bounding box (plus the network's reach) is analysed, and the mask
  is multiplied by the selection (a feathered selection fades it).

Where torch cannot be imported the hand-built detector (imaging/damage_classical.py) runs
instead; bench/bench_damage.py compares the two.

Not covered (on purpose): wide stains, water marks, foxing, silvering and faded areas: tonal
defects spanning tens to hundreds of pixels that local analysis cannot tell from shadows and
objects; inpainting them would invent content.  Marks are found up to ~7 px wide (the training
drew them up to 3.5 px x 2.2); on scans over HALF_RES_FROM px the network also runs at half
resolution for wider ones."""
from __future__ import annotations

import importlib.util
import math
from enum import Enum

import cv2
import numpy as np

from ai_enhance.errors import EnhanceError
from ai_enhance_client.protocol import ErrorKind

from . import damage_net

LUMA = np.array([0.299, 0.587, 0.114], np.float32)
THRESHOLD = 0.5          # probability that counts as damage at the default sensitivity
SPAN = 4.0               # logits the threshold moves from sensitivity 0 to 1
EDGE_BAND = 4            # px: components within this band along the image's edge are dropped
CROWD_WIN = 121          # px: window in which specks are counted
MAX_CROWD = 6            # more specks than this around one: a pattern of the scene (beads, stars)


class Kinds(str, Enum):
    SCRATCHES = "scratches"
    DUST = "dust"
    BOTH = "both"


class Detector(str, Enum):
    LEARNED = "learned"        # imaging/damage_net.py (torch)
    CLASSICAL = "classical"    # imaging/damage_classical.py (numpy + OpenCV)


def _luma(img: np.ndarray) -> np.ndarray:
    if img.ndim == 2:
        return img.astype(np.float32)
    if img.shape[2] < 3:
        return img[:, :, 0].astype(np.float32)
    return np.ascontiguousarray(img[:, :, :3], np.float32) @ LUMA


def _rgb(img: np.ndarray) -> np.ndarray:
    """HxWx3 float32: grey (with or without alpha) repeated, alpha dropped."""
    if img.ndim == 2:
        img = img[:, :, None]
    if img.shape[2] < 3:
        img = np.repeat(img[:, :, :1], 3, 2)
    return np.ascontiguousarray(img[:, :, :3], np.float32)


def threshold(sensitivity: float) -> int:
    """The uint8 probability code (0..255) from which a pixel counts as damaged."""
    logit = math.log(THRESHOLD / (1 - THRESHOLD)) + (0.5 - float(sensitivity)) * SPAN
    return max(1, min(255, math.ceil(255 / (1 + math.exp(-logit)))))


def _components_by_vote(mask: np.ndarray, scratch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(scratches, specks): each 8-connected component of the mask goes whole to the kind that
    the network's scratch probability, averaged over it, favours."""
    n, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    if n <= 1:
        return mask.copy(), mask.copy()
    on = labels > 0
    votes = np.bincount(labels[on], weights=scratch[on].astype(np.float64), minlength=n)
    size = np.bincount(labels[on], minlength=n)
    is_scratch = votes >= 127.5 * np.maximum(size, 1)
    is_scratch[0] = False
    scr = is_scratch[labels]
    return scr, mask & ~scr


def _drop_crowds(spk: np.ndarray, win: int = CROWD_WIN, most: int = MAX_CROWD) -> None:
    """Remove specks that have more than `most` others within a win x win window: a row of beads
    or pearls, sequins, stars, gravel, a print's halftone are many alike dots, while dust on a
    scan is sparse.  Counted by the specks' centres."""
    n, labels, _, cent = cv2.connectedComponentsWithStats(spk.astype(np.uint8), connectivity=8)
    if n - 1 <= most:
        return
    h, w = spk.shape
    cy = np.clip(np.rint(cent[1:, 1]).astype(int), 0, h - 1)
    cx = np.clip(np.rint(cent[1:, 0]).astype(int), 0, w - 1)
    dots = np.zeros((h, w), np.float32)
    np.add.at(dots, (cy, cx), 1.0)
    crowd = cv2.boxFilter(dots, -1, (win, win), normalize=False, borderType=cv2.BORDER_CONSTANT)
    busy = np.zeros(n, bool)
    busy[1:] = crowd[cy, cx] > most + 0.5      # the speck itself counts once
    spk &= ~busy[labels]


def _learned(rgb: np.ndarray, sensitivity: float) -> tuple[np.ndarray, np.ndarray]:
    probs = damage_net.probabilities(rgb)
    q = threshold(sensitivity)
    scr, spk = _components_by_vote(probs.damage >= q, probs.scratch)
    if MAX_CROWD > 0:
        _drop_crowds(spk)
    return scr, spk


def _detect(img: np.ndarray, sensitivity: float, detector: Detector) -> tuple[np.ndarray, np.ndarray]:
    if detector is Detector.LEARNED and importlib.util.find_spec("torch") is None:
        detector = Detector.CLASSICAL
    if detector is Detector.CLASSICAL:
        from .damage_classical import detect
        return detect(_luma(img), sensitivity)
    return _learned(_rgb(img), sensitivity)


def _drop_edge_lines(mask: np.ndarray, box: tuple[int, int, int, int], h: int, w: int, band: int = 4) -> None:
    """Remove components lying within `band` px of the image's edge: the border of a scanned print
    or the scanner's lid is a line along the edge, not damage (and no good pixels lie beyond it
    to fill it from)."""
    y0, y1, x0, x1 = box
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    top = stats[:, cv2.CC_STAT_TOP] + y0
    left = stats[:, cv2.CC_STAT_LEFT] + x0
    bottom = top + stats[:, cv2.CC_STAT_HEIGHT]
    right = left + stats[:, cv2.CC_STAT_WIDTH]
    edge = (bottom <= band) | (top >= h - band) | (right <= band) | (left >= w - band)
    edge[0] = False
    if edge.any():
        mask &= ~edge[labels]


def _check(img: np.ndarray, sensitivity: float, kinds: str, region: np.ndarray | None) -> Kinds:
    if img.ndim not in (2, 3) or img.ndim == 3 and img.shape[2] not in (1, 2, 3, 4):
        raise EnhanceError(ErrorKind.BAD_REQUEST, f"find-damage needs an HxW or HxWxC image, got shape {img.shape}",
                           "pass a gray or RGB(A) image")
    if not (np.issubdtype(img.dtype, np.floating) or img.dtype in (np.uint8, np.uint16)):
        raise EnhanceError(ErrorKind.BAD_REQUEST, f"find-damage got {img.dtype} samples",
                           "pass float 0..1, uint8 or uint16 pixels")
    if min(img.shape[:2]) < 1:
        raise EnhanceError(ErrorKind.BAD_REQUEST, f"the image is empty ({img.shape[1]}x{img.shape[0]})",
                           "pass an image with pixels")
    if not np.isfinite(sensitivity) or not 0.0 <= float(sensitivity) <= 1.0:
        raise EnhanceError(ErrorKind.BAD_REQUEST, f"sensitivity {sensitivity} is outside 0..1",
                           "use 0 (only obvious damage) to 1 (everything suspicious); 0.5 is the default")
    try:
        k = Kinds(kinds)
    except ValueError:
        raise EnhanceError(ErrorKind.BAD_REQUEST, f"unknown damage kind {kinds!r}",
                           "use scratches, dust or both") from None
    if region is not None and np.asarray(region).shape[:2] != img.shape[:2]:
        r = np.asarray(region)
        raise EnhanceError(ErrorKind.BAD_REQUEST,
                           f"the selection is {r.shape[1] if r.ndim > 1 else '?'}x{r.shape[0]} but the image is "
                           f"{img.shape[1]}x{img.shape[0]}", "pass a selection mask of the image's size")
    return k


def _selection(region: np.ndarray) -> np.ndarray:
    """The selection as float32 HxW in 0..1."""
    sel = np.asarray(region)
    if sel.ndim == 3:
        sel = sel[:, :, 0]
    if sel.dtype == bool:
        return sel.astype(np.float32)
    if sel.dtype == np.uint8:
        return sel.astype(np.float32) / 255.0
    if sel.dtype == np.uint16:
        return sel.astype(np.float32) / 65535.0
    return np.clip(np.nan_to_num(sel.astype(np.float32)), 0.0, 1.0)


def find_damage(img: np.ndarray, *, sensitivity: float = 0.5, kinds: str = "both",
                region: np.ndarray | None = None, detector: str = "learned") -> np.ndarray:
    """Mask of damaged pixels (uint8 HxW, 255 = damaged) of a float32 HxWxC [0,1] photo (C = 1
    gray, 3 RGB, or 2/4 with alpha, which is ignored; uint8/uint16 samples are scaled to 0..1).
    sensitivity 0..1 (0.5 default; higher finds fainter marks and flags more); kinds
    "scratches", "dust" or "both"; region: the selection (uint8, bool or float HxW), outside of
    which nothing is flagged (a feathered selection fades the mask); detector "learned" (the
    network; falls back to "classical" where torch is missing) or "classical"."""
    k = _check(img, sensitivity, kinds, region)
    try:
        det = Detector(detector)
    except ValueError:
        raise EnhanceError(ErrorKind.BAD_REQUEST, f"unknown damage detector {detector!r}",
                           "use learned or classical") from None
    if img.dtype == np.uint8 or img.dtype == np.uint16:     # a file's samples: scale to 0..1
        img = img.astype(np.float32) / (255.0 if img.dtype == np.uint8 else 65535.0)
    h, w = img.shape[:2]
    out = np.zeros((h, w), np.uint8)
    sel = None
    y0, y1, x0, x1 = 0, h, 0, w
    if region is not None:
        sel = _selection(region)
        rows = np.flatnonzero(sel.any(axis=1))
        if len(rows) == 0:
            return out
        cols = np.flatnonzero(sel.any(axis=0))
        pad = damage_net.MARGIN   # the detector's reach: context around the selection
        y0, y1 = max(int(rows[0]) - pad, 0), min(int(rows[-1]) + 1 + pad, h)
        x0, x1 = max(int(cols[0]) - pad, 0), min(int(cols[-1]) + 1 + pad, w)
    scr, spk = _detect(img[y0:y1, x0:x1], sensitivity, det)
    _drop_edge_lines(scr, (y0, y1, x0, x1), h, w, EDGE_BAND)
    keep = {Kinds.SCRATCHES: scr, Kinds.DUST: spk, Kinds.BOTH: scr | spk}[k]
    out[y0:y1, x0:x1] = keep.astype(np.uint8) * 255
    if sel is not None:
        out = np.rint(out * sel).astype(np.uint8)
    return out
