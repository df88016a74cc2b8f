"""Reading and writing image files for the CLI: PNG, JPEG, TIFF; 8/16-bit and float kept as they
are (no hidden 8-bit round trip).  Arrays are HWC in RGB(A) order (or HW1 gray)."""
from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np


class ImageFileError(Exception):
    """Unreadable or unwritable image file; one line with what to do."""


def _cv2():
    import cv2  # opencv: ~0.1 s, no torch
    return cv2


def read_image(path: str | os.PathLike) -> np.ndarray:
    cv2 = _cv2()
    p = Path(path)
    if not p.is_file():
        raise ImageFileError(f"no such image file: {p}")
    img = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise ImageFileError(f"cannot read {p} as an image; use PNG, JPEG or TIFF")
    if img.dtype not in (np.uint8, np.uint16, np.float32):
        if img.dtype == np.float64:
            img = img.astype(np.float32)
        else:
            raise ImageFileError(f"{p} has {img.dtype} samples; convert it to 8/16-bit or 32-bit float")
    if img.ndim == 2:
        return img[:, :, None]
    if img.shape[2] == 3:
        return img[:, :, ::-1].copy()
    if img.shape[2] == 4:
        return img[:, :, [2, 1, 0, 3]].copy()
    return img


def write_image(path: str | os.PathLike, img: np.ndarray) -> None:
    cv2 = _cv2()
    p = Path(path)
    ext = p.suffix.lower()
    if ext not in (".png", ".jpg", ".jpeg", ".tif", ".tiff"):
        raise ImageFileError(f"cannot write {p}: use a .png, .jpg or .tif file name")
    out = img
    if out.ndim == 3 and out.shape[2] == 3:
        out = out[:, :, ::-1]
    elif out.ndim == 3 and out.shape[2] == 4:
        out = out[:, :, [2, 1, 0, 3]]
    elif out.ndim == 3 and out.shape[2] == 2:   # gray + alpha: write as RGBA
        g, a = out[:, :, 0], out[:, :, 1]
        out = np.dstack([g, g, g, a])
    if ext in (".jpg", ".jpeg"):
        if out.dtype != np.uint8:
            scale = 255.0 / (65535.0 if out.dtype == np.uint16 else 1.0)
            out = np.clip(np.rint(out.astype(np.float32) * scale), 0, 255).astype(np.uint8)
        if out.ndim == 3 and out.shape[2] == 4:
            out = out[:, :, :3]
    elif ext == ".png" and out.dtype == np.float32:
        out = np.clip(np.rint(out * 65535.0), 0, 65535).astype(np.uint16)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".part" + ext)
    try:
        ok = cv2.imwrite(str(tmp), np.ascontiguousarray(out))
        if not ok:
            raise ImageFileError(f"cannot write {p}; check the folder exists and is writable")
        os.replace(tmp, p)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        if e.errno == errno.ENOSPC:
            raise ImageFileError(f"disk full while writing {p}; free some space and try again") from None
        raise ImageFileError(f"cannot write {p}: {e.strerror}") from None
    except ImageFileError:
        tmp.unlink(missing_ok=True)
        raise
