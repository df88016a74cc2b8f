"""Reading and writing image files for the CLI: PNG, JPEG, TIFF; 8/16-bit and float kept as they
are (no hidden 8-bit round trip).  Arrays are HWC in RGB(A) order (or HW1 gray).

The output is checked BEFORE any job runs (``check_output``: extension, not the input, no
existing file without ``overwrite``, a writable folder); the file is encoded in memory and written
by Python, so a full disk is reported as a full disk."""
from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np


OUTPUT_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")


class ImageFileError(Exception):
    """Unreadable or unwritable image file; one line with what to do."""


def _same_file(a: Path, b: Path) -> bool:
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return os.path.realpath(a) == os.path.realpath(b)


def check_output(path: str | os.PathLike, inputs=(), overwrite: bool = False) -> Path:
    """Refuse an output file that could not be written, or would destroy something, before the
    job runs: a wrong extension, one of the ``inputs`` themselves (never, even with
    ``overwrite``), an existing file without ``overwrite``, a folder that is not writable."""
    p = Path(path)
    if p.suffix.lower() not in OUTPUT_SUFFIXES:
        raise ImageFileError(f"cannot write {p}: use a .png, .jpg or .tif file name")
    for src in inputs:
        if src is not None and _same_file(Path(src), p):
            raise ImageFileError(f"the output {p} is the input file itself; choose another name "
                                 "(the original is never overwritten)")
    if p.is_dir():
        raise ImageFileError(f"{p} is a folder; give a file name such as {p / 'result.png'}")
    if p.exists() and not overwrite:
        raise ImageFileError(f"{p} already exists; pass --overwrite to replace it, or choose another name")
    folder = p.parent if str(p.parent) else Path(".")
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ImageFileError(f"cannot write into {folder}: permission denied; choose a folder of yours")
    return p


def frame_count(path: str | os.PathLike) -> int:
    """Frames (pages) in an image file: animated GIF, multi-page TIFF; 1 when unknown."""
    cv2 = _cv2()
    try:
        return max(1, int(cv2.imcount(str(path))))
    except Exception:  # noqa: BLE001 - a format imcount does not know: one frame
        return 1


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
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ImageFileError(_write_problem(p, e)) from None
    ok, data = cv2.imencode(ext, np.ascontiguousarray(out))
    if not ok:
        raise ImageFileError(f"cannot encode the result as {ext}; use .png or .tif")
    tmp = p.with_name(p.name + ".part" + ext)
    try:
        with open(tmp, "wb") as f:
            f.write(data.tobytes())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except OSError as e:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        raise ImageFileError(_write_problem(p, e)) from None


def _write_problem(p: Path, e: OSError) -> str:
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"disk full while writing {p}; free some space (or choose another disk) and try again"
    if e.errno == errno.EROFS:
        return f"cannot write {p}: the disk is read-only; choose another folder"
    if e.errno in (errno.EACCES, errno.EPERM):
        return f"cannot write {p}: permission denied; choose a folder of yours"
    return f"cannot write {p}: {e.strerror or e}; check the folder exists and is writable"
