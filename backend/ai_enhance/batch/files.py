"""Image files for the batch: decode and encode PNG, JPEG, TIFF and WebP with their metadata.

Pixels keep their depth: 8-bit stays 8-bit, 16-bit PNG and TIFF stay 16-bit (OpenCV and tifffile
decode and encode them; Pillow would narrow 16-bit colour to 8), float TIFF stays float.  The EXIF
block, ICC profile and XMP packet are carried from the input to the output:

- EXIF orientation is applied to the pixels when reading (the output is upright and says
  Orientation = 1, so it looks like the input in every viewer, whether or not it reads the tag);
- the EXIF and XMP image dimensions are set to the output's size; the EXIF thumbnail (IFD1) is
  dropped (it would show the old pixels);
- only descriptive IFD0 tags travel (camera, dates, author, copyright, the EXIF and GPS
  sub-IFDs), never a TIFF's layout tags.

Arrays are HWC in RGB(A) order, or HW1 / HW2 gray (+ alpha).
"""
from __future__ import annotations

import hashlib
import io
import os
import re
import struct
import uuid
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

#: Output formats and the file name extensions they take.
FORMATS = {"png": ".png", "jpg": ".jpg", "tif": ".tif", "webp": ".webp"}
#: How the formats are called in messages.
NAMES = {"png": "PNG", "jpg": "JPEG", "tif": "TIFF", "webp": "WebP"}
#: Input extensions -> format.
EXTENSIONS = {".png": "png", ".jpg": "jpg", ".jpeg": "jpg", ".jpe": "jpg", ".tif": "tif",
              ".tiff": "tif", ".webp": "webp"}

#: Temporary names of outputs being written: `.NAME.<hex>.ai-enhance-part` beside NAME.
PART_SUFFIX = ".ai-enhance-part"

ORIENTATION = 0x0112
EXIF_IFD = 0x8769
GPS_IFD = 0x8825
EXIF_WIDTH, EXIF_HEIGHT = 0xA002, 0xA003
#: IFD0 tags that describe the picture (not the file layout); everything else stays behind.
IFD0_KEEP = frozenset({
    0x010E,   # ImageDescription
    0x010F,   # Make
    0x0110,   # Model
    0x0112,   # Orientation (rewritten to 1)
    0x011A, 0x011B, 0x0128,   # X/YResolution, ResolutionUnit
    0x0131,   # Software
    0x0132,   # DateTime
    0x013B,   # Artist
    0x013E, 0x013F,   # WhitePoint, PrimaryChromaticities
    0x8298,   # Copyright
    EXIF_IFD, GPS_IFD,
})


class FileError(Exception):
    """A file that cannot be read or written; one line with the reason (shown in the summary)."""


@dataclass
class Metadata:
    exif: bytes | None = None        # TIFF-structured EXIF (no "Exif\\0\\0" prefix)
    icc: bytes | None = None
    xmp: bytes | None = None
    orientation: int = 1             # as read (the pixels are already upright)
    format: str = ""                 # png / jpg / tif / webp
    notes: list[str] = field(default_factory=list)


@dataclass
class Decoded:
    pixels: np.ndarray
    meta: Metadata
    sha256: str


def sha256_bytes(data: bytes | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


def format_of(path: str | os.PathLike) -> str | None:
    return EXTENSIONS.get(Path(path).suffix.lower())


# --------------------------------------------------------------------------- decoding

def decode(data: bytes, name: str = "image", *, max_pixels: int | None = None) -> Decoded:
    """File bytes -> upright pixels + metadata.  FileError for anything unreadable."""
    fmt = _sniff(data)
    if fmt is None:
        claimed = format_of(name)
        if claimed:
            raise FileError(f"not a {NAMES[claimed]} file: its content is not image data "
                            "(empty, corrupt, or another file renamed?)")
        raise FileError("not a PNG, JPEG, TIFF or WebP file")
    meta = read_metadata(data, fmt)
    size = _header_size(data)
    if max_pixels and size and size[0] * size[1] > max_pixels:
        raise FileError(f"too large: {size[0]}x{size[1]} is over the limit of "
                        f"{max_pixels / 1e6:g} megapixels (raise it with --max-mp)")
    pixels = _decode_pixels(data, fmt)
    if max_pixels and pixels.shape[0] * pixels.shape[1] > max_pixels:
        raise FileError(f"too large: {pixels.shape[1]}x{pixels.shape[0]} is over the limit of "
                        f"{max_pixels / 1e6:g} megapixels (raise it with --max-mp)")
    pixels = apply_orientation(pixels, meta.orientation)
    return Decoded(np.ascontiguousarray(pixels), meta, sha256_bytes(data))


def _sniff(data: bytes) -> str | None:
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if data[:3] == b"\xff\xd8\xff":
        return "jpg"
    if data[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return None


def _header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the header alone (a decompression bomb is refused before decoding)."""
    try:
        from PIL import Image
        with Image.open(io.BytesIO(data)) as im:
            return im.size
    except Exception:  # noqa: BLE001 - Pillow cannot open some TIFFs; the decoder decides
        return None


def _decode_pixels(data: bytes, fmt: str) -> np.ndarray:
    if fmt == "tif":
        # tifffile keeps every depth and unassociated alpha; Pillow reads the 8-bit LZW/JPEG
        # TIFFs tifffile needs imagecodecs for; OpenCV (libtiff) last: it premultiplies 8-bit alpha
        for reader in (_tiff_pixels, _pillow_8bit_pixels):
            img = reader(data)
            if img is not None:
                return _check_dtype(img)
    cv2 = _cv2()
    img = None
    try:
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error:
        img = None
    if img is None:
        raise FileError(f"cannot decode this {NAMES[fmt]} file (corrupt or truncated?)")
    if img.ndim == 3 and img.shape[2] == 3:
        img = img[:, :, ::-1]
    elif img.ndim == 3 and img.shape[2] == 4:
        img = img[:, :, [2, 1, 0, 3]]
    return _check_dtype(img)


def _cv2():
    import cv2
    try:    # a corrupt file is reported in the summary; OpenCV's own log lines would only clutter
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    except AttributeError:
        pass
    return cv2


def _tiff_pixels(data: bytes) -> np.ndarray | None:
    try:
        import tifffile
        with tifffile.TiffFile(io.BytesIO(data)) as tf:
            page = tf.pages[0]
            if page.photometric not in (0, 1, 2):      # white/black-is-zero, RGB only
                return None
            arr = page.asarray()
            axes = page.axes
            if page.photometric == 0:                   # min-is-white
                arr = (np.iinfo(arr.dtype).max - arr) if arr.dtype.kind == "u" else 1.0 - arr
    except Exception:  # noqa: BLE001 - unreadable here: the next reader tries
        return None
    if axes.startswith("S") and arr.ndim == 3:          # planar: SYX -> YXS
        arr = np.moveaxis(arr, 0, -1)
    if arr.ndim == 3 and arr.shape[2] > 4 or arr.ndim not in (2, 3):
        return None
    return arr


def _pillow_8bit_pixels(data: bytes) -> np.ndarray | None:
    try:
        from PIL import Image
        with Image.open(io.BytesIO(data)) as im:
            bits = getattr(im, "tag_v2", {}).get(258, (8,))
            if im.mode not in ("L", "LA", "RGB", "RGBA", "P") or any(b != 8 for b in
                                                                   (bits if isinstance(bits, tuple) else (bits,))):
                return None
            if im.mode == "P":
                im = im.convert("RGBA" if "transparency" in im.info else "RGB")
            return np.asarray(im)
    except Exception:  # noqa: BLE001
        return None


def _check_dtype(img: np.ndarray) -> np.ndarray:
    if img.ndim == 2:
        img = img[:, :, None]
    if img.ndim != 3 or img.shape[2] not in (1, 2, 3, 4):
        raise FileError(f"unsupported pixel layout {img.shape}")
    if img.dtype == np.float64:
        img = img.astype(np.float32)
    if img.dtype not in (np.uint8, np.uint16, np.float32):
        raise FileError(f"unsupported sample type {img.dtype}; use 8-bit, 16-bit or 32-bit float")
    return img


def apply_orientation(img: np.ndarray, orientation: int) -> np.ndarray:
    """Pixels as a viewer shows them for EXIF orientation 1..8 (anything else: as stored)."""
    if orientation == 2:
        return img[:, ::-1]
    if orientation == 3:
        return img[::-1, ::-1]
    if orientation == 4:
        return img[::-1]
    if orientation == 5:
        return img.transpose(1, 0, 2)
    if orientation == 6:
        return np.rot90(img, -1)
    if orientation == 7:
        return img.transpose(1, 0, 2)[::-1, ::-1]
    if orientation == 8:
        return np.rot90(img, 1)
    return img


def read_metadata(data: bytes, fmt: str) -> Metadata:
    """EXIF, ICC and XMP of a file (each None when absent; never raises for odd metadata)."""
    meta = Metadata(format=fmt)
    try:
        from PIL import Image
        with Image.open(io.BytesIO(data)) as im:
            info = im.info
            meta.icc = info.get("icc_profile") or None
            xmp = info.get("xmp") or info.get("XML:com.adobe.xmp")
            if xmp is None and fmt == "tif":
                xmp = getattr(im, "tag_v2", {}).get(700)
            if isinstance(xmp, str):
                xmp = xmp.encode("utf-8")
            meta.xmp = bytes(xmp) if xmp else None
            exif = im.getexif()
            meta.orientation = int(exif.get(ORIENTATION, 1) or 1)
            if len(exif):
                meta.exif = _clean_exif(exif)
    except Exception:  # noqa: BLE001 - Pillow cannot open float TIFFs: ICC/XMP via tifffile
        if fmt == "tif":
            _tiff_metadata(data, meta)
    if meta.orientation not in range(1, 9):
        meta.orientation = 1
    return meta


def _tiff_metadata(data: bytes, meta: Metadata) -> None:
    try:
        import tifffile
        with tifffile.TiffFile(io.BytesIO(data)) as tf:
            tags = tf.pages[0].tags
            if 34675 in tags:
                meta.icc = bytes(tags[34675].value)
            if 700 in tags:
                v = tags[700].value
                meta.xmp = v.encode("utf-8") if isinstance(v, str) else bytes(v)
            if 274 in tags:
                meta.orientation = int(tags[274].value)
    except Exception:  # noqa: BLE001
        return
    meta.notes.append("EXIF of this TIFF was not carried over (Pillow cannot open it)")


def _clean_exif(exif) -> bytes | None:
    """Descriptive tags only, thumbnail dropped; raw TIFF-structured bytes."""
    from PIL import Image

    out = Image.Exif()
    for tag, value in exif.items():
        if tag not in IFD0_KEEP:
            continue
        if tag in (EXIF_IFD, GPS_IFD):
            sub = dict(exif.get_ifd(tag))
            if sub:
                out[tag] = sub
        else:
            out[tag] = value
    if not len(out):
        return None
    raw = out.tobytes()
    return raw[6:] if raw.startswith(b"Exif\x00\x00") else raw


# --------------------------------------------------------------------------- metadata for the output

def output_metadata(meta: Metadata, width: int, height: int) -> Metadata:
    """The metadata to write beside pixels of ``width`` x ``height`` that are already upright."""
    out = Metadata(icc=meta.icc, format=meta.format, orientation=1)
    if meta.exif:
        out.exif = _exif_for_output(meta.exif, width, height)
    if meta.xmp:
        out.xmp = _xmp_for_output(meta.xmp, width, height)
    return out


def _exif_for_output(raw: bytes, width: int, height: int) -> bytes | None:
    from PIL import Image

    try:
        exif = Image.Exif()
        exif.load(raw)
        ex = dict(exif.get_ifd(EXIF_IFD))
        gps = dict(exif.get_ifd(GPS_IFD))
    except Exception:  # noqa: BLE001 - unparsable EXIF is dropped, not fatal
        return None
    out = Image.Exif()
    for tag, value in exif.items():
        if tag in IFD0_KEEP and tag not in (EXIF_IFD, GPS_IFD):
            out[tag] = value
    if ORIENTATION in out:
        out[ORIENTATION] = 1
    if ex:
        if EXIF_WIDTH in ex or EXIF_HEIGHT in ex:
            ex[EXIF_WIDTH], ex[EXIF_HEIGHT] = int(width), int(height)
        out[EXIF_IFD] = ex
    if gps:
        out[GPS_IFD] = gps
    raw = out.tobytes()
    return raw[6:] if raw.startswith(b"Exif\x00\x00") else raw


_XMP_FIELDS = {
    "tiff:Orientation": lambda w, h: "1",
    "exif:PixelXDimension": lambda w, h: str(w),
    "exif:PixelYDimension": lambda w, h: str(h),
    "tiff:ImageWidth": lambda w, h: str(w),
    "tiff:ImageLength": lambda w, h: str(h),
}


def _xmp_for_output(xmp: bytes, width: int, height: int) -> bytes:
    """Orientation and dimensions in an XMP packet, in attribute or element form."""
    try:
        text = xmp.decode("utf-8")
    except UnicodeDecodeError:
        return xmp
    for name, value in _XMP_FIELDS.items():
        v = value(width, height)
        text = re.sub(rf'({re.escape(name)}\s*=\s*")[^"]*(")', rf"\g<1>{v}\g<2>", text)
        text = re.sub(rf"(<{re.escape(name)}>)[^<]*(</{re.escape(name)}>)", rf"\g<1>{v}\g<2>", text)
    return text.encode("utf-8")


def exif_from(raw: bytes | None):
    """A Pillow Exif of raw EXIF bytes (for tests and callers that want the tags)."""
    from PIL import Image

    exif = Image.Exif()
    if raw:
        exif.load(raw)
    return exif


# --------------------------------------------------------------------------- encoding

def encode(pixels: np.ndarray, meta: Metadata, fmt: str, *, quality: int = 95) -> bytes:
    """Pixels (already upright) and the output metadata -> file bytes of ``fmt``.  16-bit and
    float pixels stay so in PNG (float -> 16-bit) and TIFF; JPEG and WebP are 8-bit."""
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    gray = pixels.shape[2] in (1, 2) and fmt != "webp"
    if meta.icc and not icc_fits(meta.icc, gray):
        meta = Metadata(exif=meta.exif, icc=None, xmp=meta.xmp, orientation=meta.orientation,
                        format=meta.format, notes=meta.notes + ["the ICC profile's colour space "
                                                                "does not fit the output; left out"])
    if fmt == "png":
        return _encode_png(pixels, meta)
    if fmt == "tif":
        return _encode_tiff(pixels, meta)
    if fmt in ("jpg", "webp"):
        return _encode_pillow(pixels, meta, fmt, quality)
    raise FileError(f"unknown output format {fmt!r}; use one of {', '.join(FORMATS)}")


def icc_fits(icc: bytes, gray: bool) -> bool:
    """Whether an ICC profile's data colour space (header bytes 16..19) fits gray or RGB pixels."""
    space = icc[16:20]
    return space == (b"GRAY" if gray else b"RGB ") or len(icc) < 20


def to_u8(a: np.ndarray) -> np.ndarray:
    if a.dtype == np.uint8:
        return a
    peak = 65535.0 if a.dtype == np.uint16 else 1.0
    return np.clip(np.rint(a.astype(np.float32) * (255.0 / peak)), 0, 255).astype(np.uint8)


def _flatten_alpha_on_white(a: np.ndarray) -> np.ndarray:
    """For formats without alpha: composite over white (hidden colours under alpha=0 must not show)."""
    c = a.shape[2]
    if c not in (2, 4):
        return a
    f = a.astype(np.float32) / 255.0
    alpha = f[:, :, -1:]
    col = f[:, :, :-1] * alpha + (1.0 - alpha)
    return np.clip(np.rint(col * 255.0), 0, 255).astype(np.uint8)


def _encode_pillow(pixels: np.ndarray, meta: Metadata, fmt: str, quality: int) -> bytes:
    from PIL import Image

    a = to_u8(pixels)
    if fmt == "jpg":
        a = _flatten_alpha_on_white(a)
    c = a.shape[2]
    if c == 1:
        im = Image.fromarray(a[:, :, 0], "L")
        if fmt == "webp":
            im = im.convert("RGB")
    elif c == 2:
        im = Image.fromarray(np.dstack([a[:, :, 0]] * 3 + [a[:, :, 1]]), "RGBA")
    else:
        im = Image.fromarray(np.ascontiguousarray(a), "RGBA" if c == 4 else "RGB")
    kw: dict = {}
    if meta.icc:
        kw["icc_profile"] = meta.icc
    if meta.exif:
        kw["exif"] = b"Exif\x00\x00" + meta.exif
    buf = io.BytesIO()
    if fmt == "jpg":
        im.save(buf, "JPEG", quality=int(quality), subsampling=0 if quality >= 90 else 2,
                optimize=True, **kw)
        data = buf.getvalue()
        return _jpeg_insert_xmp(data, meta.xmp) if meta.xmp else data
    if meta.xmp:
        kw["xmp"] = meta.xmp
    im.save(buf, "WEBP", quality=int(quality), lossless=quality >= 100, method=4, **kw)
    return buf.getvalue()


_XMP_NS = b"http://ns.adobe.com/xap/1.0/\x00"


def _jpeg_insert_xmp(data: bytes, xmp: bytes) -> bytes:
    """An APP1 XMP segment after the leading APPn segments (Pillow < 11 cannot write XMP)."""
    payload = _XMP_NS + xmp
    if len(payload) + 2 > 0xFFFF:
        return data       # extended XMP is not written: too rare to matter here
    pos = 2
    while pos + 4 <= len(data) and data[pos] == 0xFF and 0xE0 <= data[pos + 1] <= 0xEF:
        pos += 2 + struct.unpack(">H", data[pos + 2:pos + 4])[0]
    seg = b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload
    return data[:pos] + seg + data[pos:]


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def _encode_png(pixels: np.ndarray, meta: Metadata) -> bytes:
    import cv2

    a = pixels
    if a.dtype == np.float32:
        a = np.clip(np.rint(a * 65535.0), 0, 65535).astype(np.uint16)
    c = a.shape[2]
    if c == 3:
        a = a[:, :, ::-1]
    elif c == 4:
        a = a[:, :, [2, 1, 0, 3]]
    elif c == 2:       # gray + alpha: OpenCV writes no LA PNG; RGBA keeps every value
        g, al = a[:, :, 0], a[:, :, 1]
        a = np.dstack([g, g, g, al])
    ok, enc = cv2.imencode(".png", np.ascontiguousarray(a), [cv2.IMWRITE_PNG_COMPRESSION, 6])
    if not ok:
        raise FileError("the PNG encoder failed")
    data = enc.tobytes()
    chunks = b""
    if meta.icc:
        chunks += _png_chunk(b"iCCP", b"ICC Profile\x00\x00" + zlib.compress(meta.icc))
    if meta.exif:
        chunks += _png_chunk(b"eXIf", meta.exif)
    if meta.xmp:
        chunks += _png_chunk(b"iTXt", b"XML:com.adobe.xmp\x00\x00\x00\x00\x00" + meta.xmp)
    if not chunks:
        return data
    ihdr_end = 8 + 4 + 4 + 13 + 4
    return data[:ihdr_end] + chunks + data[ihdr_end:]


#: Private placeholder tags tifffile will write, renamed afterwards into the EXIF / GPS pointers
#: (tifffile refuses to write those two itself).
_PLACEHOLDER = {65000: EXIF_IFD, 65001: GPS_IFD}


def _encode_tiff(pixels: np.ndarray, meta: Metadata) -> bytes:
    import tifffile

    a = np.ascontiguousarray(pixels)
    c = a.shape[2]
    if c == 2:                 # gray + alpha -> RGBA (tifffile's minisblack + extra sample works,
        g, al = a[:, :, 0], a[:, :, 1]          # but many readers mishandle it)
        a = np.ascontiguousarray(np.dstack([g, g, g, al]))
        c = 4
    photometric = "minisblack" if c == 1 else "rgb"
    if c == 1:
        a = a[:, :, 0]
    extratags = []
    subifds = {}
    exif_tags = {}
    if meta.exif:
        exif = exif_from(meta.exif)
        for tag, value in exif.items():
            if tag in (EXIF_IFD, GPS_IFD):
                sub = dict(exif.get_ifd(tag))
                if sub:
                    subifds[tag] = sub
            elif tag in IFD0_KEEP and tag not in (ORIENTATION, 0x011A, 0x011B, 0x0128):
                exif_tags[tag] = value
    for tag, value in sorted(exif_tags.items()):
        if isinstance(value, str):
            extratags.append((tag, "s", 0, value, True))
    if meta.icc:
        extratags.append((34675, "B", len(meta.icc), meta.icc, True))
    if meta.xmp:
        extratags.append((700, "B", len(meta.xmp), meta.xmp, True))
    for ph, real in _PLACEHOLDER.items():
        if real in subifds:
            extratags.append((ph, "I", 1, 0, True))
    buf = io.BytesIO()
    tifffile.imwrite(buf, a, photometric=photometric, compression="adobe_deflate",
                     extrasamples=["unassalpha"] if c == 4 else None, metadata=None,
                     extratags=extratags, bigtiff=False, byteorder="<")
    data = bytearray(buf.getvalue())
    if subifds:
        data = _tiff_attach_subifds(data, subifds)
    return bytes(data)


def _tiff_attach_subifds(data: bytearray, subifds: dict) -> bytearray:
    """Append the EXIF / GPS IFDs and point IFD0's placeholder tags at them (entries re-sorted)."""
    from PIL import TiffImagePlugin

    ifd0 = struct.unpack_from("<I", data, 4)[0]
    n = struct.unpack_from("<H", data, ifd0)[0]
    entries = [bytearray(data[ifd0 + 2 + 12 * i: ifd0 + 14 + 12 * i]) for i in range(n)]
    for e in entries:
        tag = struct.unpack_from("<H", e, 0)[0]
        real = _PLACEHOLDER.get(tag)
        if real is None or real not in subifds:
            continue
        while len(data) % 4:
            data.append(0)
        ifd = TiffImagePlugin.ImageFileDirectory_v2(prefix=b"II")
        for k, v in subifds[real].items():
            try:
                ifd[k] = v
            except Exception:  # noqa: BLE001 - a tag Pillow cannot type is left out
                continue
        offset = len(data)
        data += ifd.tobytes(offset)
        struct.pack_into("<HHII", e, 0, real, 4, 1, offset)
    entries.sort(key=lambda e: struct.unpack_from("<H", e, 0)[0])
    for i, e in enumerate(entries):
        data[ifd0 + 2 + 12 * i: ifd0 + 14 + 12 * i] = e
    return data


# --------------------------------------------------------------------------- atomic writes

def part_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}{PART_SUFFIX}")


def write_atomic(path: Path, data: bytes) -> None:
    """Write to a temporary name beside ``path``, fsync, then rename over it: a reader (or a
    crash, a kill, a power loss) sees the old file or the whole new one, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = part_name(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise FileError(f"cannot write {path}: {e.strerror or e}") from None
    _fsync_dir(path.parent)


def _fsync_dir(d: Path) -> None:
    if os.name != "posix":
        return
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def remove_parts(root: Path) -> int:
    """Delete temporary files a killed run left under ``root``; returns how many."""
    n = 0
    if not root.is_dir():
        return 0
    for p in root.rglob(f"*{PART_SUFFIX}"):
        if p.is_file() and p.name.startswith("."):
            try:
                p.unlink()
                n += 1
            except OSError:
                pass
    return n
