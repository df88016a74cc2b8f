"""Batch file handling: PNG/JPEG/TIFF/WebP with 8/16-bit pixels, EXIF/ICC/XMP carried over,
EXIF orientation, corrupt and oversized files, atomic writes, inputs and the resume manifest."""
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageCms, ImageOps

from ai_enhance.batch import files as F
from ai_enhance.batch.inputs import gather
from ai_enhance.batch.manifest import Entry, Manifest, RunLock
from ai_enhance.batch.progress import FileResult, Progress, Status, summary
from ai_enhance.cli import batch as cli_batch

rng = np.random.default_rng(3)
ICC = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
XMP = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
       b'<rdf:Description xmlns:tiff="http://ns.adobe.com/tiff/1.0/" xmlns:exif="http://ns.adobe.com/exif/1.0/" '
       b'tiff:Orientation="6" exif:PixelXDimension="64"><exif:PixelYDimension>48</exif:PixelYDimension>'
       b'<dc:creator xmlns:dc="http://purl.org/dc/elements/1.1/">Ann</dc:creator>'
       b'</rdf:Description></rdf:RDF></x:xmpmeta>')


def exif_bytes(orientation=1, w=64, h=48):
    ex = Image.Exif()
    ex[0x010F] = "Canon"
    ex[0x0110] = "EOS R"
    ex[0x0112] = orientation
    ex[0x0111] = 1234                       # StripOffsets: file layout, must not travel
    ex[0x8769] = {0x9003: "2021:06:05 04:03:02", 0xA002: w, 0xA003: h, 0x829A: (1, 250)}
    ex[0x8825] = {1: "N", 2: (52.0, 31.0, 12.5)}
    return ex.tobytes()[6:]


def photo(h=48, w=64):
    from skimage import data
    return np.ascontiguousarray(data.astronaut()[:h * 4:4, :w * 4:4])


# --------------------------------------------------------------------------- formats and depths

@pytest.mark.parametrize("fmt", ["png", "tif"])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_lossless_formats_keep_every_value(fmt, dtype, channels):
    peak = np.iinfo(dtype).max
    a = rng.integers(0, peak + 1, (20, 30, channels)).astype(dtype)
    data = F.encode(a, F.Metadata(), fmt)
    d = F.decode(data, "x." + fmt)
    expect = a if channels != 2 else np.dstack([a[:, :, 0]] * 3 + [a[:, :, 1]])   # gray+alpha -> RGBA
    assert d.pixels.dtype == dtype and np.array_equal(d.pixels, expect)


def test_float_tiff_stays_float():
    a = rng.random((10, 12, 3)).astype(np.float32)
    d = F.decode(F.encode(a, F.Metadata(), "tif"), "x.tif")
    assert d.pixels.dtype == np.float32 and np.array_equal(d.pixels, a)


@pytest.mark.parametrize("fmt", ["jpg", "webp"])
def test_lossy_formats_are_8bit_and_close(fmt):
    a = photo()
    d = F.decode(F.encode(a, F.Metadata(), fmt, quality=95), "x." + fmt)
    assert d.pixels.dtype == np.uint8 and d.pixels.shape == a.shape
    assert np.abs(d.pixels.astype(int) - a).mean() < 4
    a16 = a.astype(np.uint16) * 257
    d16 = F.decode(F.encode(a16, F.Metadata(), fmt, quality=95), "x." + fmt)
    assert d16.pixels.dtype == np.uint8


def test_jpeg_flattens_alpha_on_white():
    a = np.zeros((8, 8, 4), np.uint8)
    a[..., 0] = 255
    a[:4, ..., 3] = 0                      # transparent red: must not show red
    a[4:, ..., 3] = 255
    d = F.decode(F.encode(a, F.Metadata(), "jpg", quality=100), "x.jpg").pixels
    assert (d[:3, :, 1] > 240).all() and (d[5:, :, 1] < 20).all()


@pytest.mark.parametrize("fmt", ["png", "tif", "jpg", "webp"])
def test_metadata_travels_and_is_updated(fmt):
    src = F.Metadata(exif=exif_bytes(orientation=6), icc=ICC, xmp=XMP, orientation=6)
    a = photo()
    meta = F.output_metadata(src, a.shape[1] * 2, a.shape[0] * 2)
    d = F.decode(F.encode(a, meta, fmt), "x." + fmt)
    m = d.meta
    assert m.icc == ICC
    assert m.orientation == 1
    ex = F.exif_from(m.exif)
    assert ex[0x010F] == "Canon" and ex[0x0110] == "EOS R" and ex.get(0x0112) == 1
    assert 0x0111 not in ex                                   # layout tags stay behind
    sub = ex.get_ifd(0x8769)
    assert sub[0x9003] == "2021:06:05 04:03:02" and sub[0xA002] == 128 and sub[0xA003] == 96
    assert ex.get_ifd(0x8825)[1] == "N"
    x = m.xmp.decode()
    assert 'tiff:Orientation="1"' in x and 'exif:PixelXDimension="128"' in x
    assert "<exif:PixelYDimension>96</exif:PixelYDimension>" in x and "Ann" in x


def test_gray_output_drops_an_rgb_profile():
    a = rng.integers(0, 256, (8, 8, 1)).astype(np.uint8)
    d = F.decode(F.encode(a, F.Metadata(icc=ICC), "png"), "x.png")
    assert d.meta.icc is None
    assert F.icc_fits(ICC, gray=False) and not F.icc_fits(ICC, gray=True)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orientation_matches_pillow(orientation):
    a = rng.integers(0, 256, (6, 9, 3)).astype(np.uint8)
    im = Image.fromarray(a)
    ex = Image.Exif()
    ex[0x0112] = orientation
    buf = io.BytesIO()
    im.save(buf, "PNG", exif=ex.tobytes())
    d = F.decode(buf.getvalue(), "x.png")
    expect = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(buf.getvalue()))))
    assert d.meta.orientation == orientation
    assert np.array_equal(d.pixels, expect)


def test_real_camera_like_jpeg_round_trip(tmp_path):
    """A JPEG as a camera writes it (EXIF with orientation 8, ICC), written back as 16-bit TIFF."""
    a = photo()
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "JPEG", quality=92, exif=b"Exif\x00\x00" + exif_bytes(8), icc_profile=ICC)
    d = F.decode(buf.getvalue(), "cam.jpg")
    assert d.pixels.shape == (64, 48, 3)                    # rotated upright
    assert d.sha256 == F.sha256_bytes(buf.getvalue())
    out16 = d.pixels.astype(np.uint16) * 257
    data = F.encode(out16, F.output_metadata(d.meta, 48, 64), "tif")
    back = F.decode(data, "x.tif")
    assert back.pixels.dtype == np.uint16 and np.array_equal(back.pixels, out16)
    assert back.meta.icc == ICC and F.exif_from(back.meta.exif)[0x010F] == "Canon"
    # Pillow (another reader) sees the same EXIF in the TIFF
    assert Image.open(io.BytesIO(data)).getexif().get_ifd(0x8769)[0x9003] == "2021:06:05 04:03:02"


def test_lzw_tiff_and_planar_tiff_read(tmp_path):
    a = photo()
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "TIFF", compression="tiff_lzw")
    assert np.array_equal(F.decode(buf.getvalue(), "x.tif").pixels, a)
    import tifffile
    b = io.BytesIO()
    tifffile.imwrite(b, np.moveaxis(a, -1, 0), photometric="rgb", planarconfig="separate")
    assert np.array_equal(F.decode(b.getvalue(), "x.tif").pixels, a)


@pytest.mark.parametrize("data, words", [
    (b"", "not a PNG"),
    (b"hello world", "not a PNG"),
    (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "cannot decode"),
])
def test_corrupt_files(data, words):
    with pytest.raises(F.FileError, match=words):
        F.decode(data, "bad.png")


def test_truncated_jpeg_is_refused_or_decoded_whole():
    buf = io.BytesIO()
    Image.fromarray(photo()).save(buf, "JPEG")
    cut = buf.getvalue()[:200]
    with pytest.raises(F.FileError):
        F.decode(cut, "cut.jpg")


def test_too_large_is_refused_before_decoding():
    data = F.encode(np.zeros((100, 200, 3), np.uint8), F.Metadata(), "png")
    with pytest.raises(F.FileError, match="too large: 200x100"):
        F.decode(data, "x.png", max_pixels=10_000)


def test_write_atomic_and_leftover_parts(tmp_path):
    out = tmp_path / "a" / "b.png"
    F.write_atomic(out, b"one")
    F.write_atomic(out, b"two")
    assert out.read_bytes() == b"two"
    assert [p.name for p in out.parent.iterdir()] == ["b.png"]
    stale = F.part_name(out)
    stale.write_bytes(b"partial")
    assert stale.name.startswith(".b.png.") and stale.name.endswith(F.PART_SUFFIX)
    assert F.remove_parts(tmp_path) == 1 and not stale.exists() and out.exists()


def test_cli_formats_equal_the_codecs():
    assert tuple(cli_batch.FORMATS) == tuple(F.FORMATS)


# --------------------------------------------------------------------------- inputs

def touch(p: Path):
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(b"x")
    return p


def test_gather_folders_files_and_globs(tmp_path):
    src = tmp_path / "shoot"
    for rel in ["a.jpg", "day1/b.PNG", "day1/deep/c.tif", "day2/d.webp", "notes.txt", ".hidden/e.jpg"]:
        touch(src / rel)
    out = src / "out"                                 # an output folder inside the inputs
    touch(out / "a.jpg")
    single = touch(tmp_path / "single.jpeg")
    items, problems = gather([str(src), str(single), str(tmp_path / "g" / "**" / "*.png"),
                              str(tmp_path / "missing")], out)
    rels = [(i.rel.as_posix(), i.out.as_posix()) for i in items]
    assert rels == [("a.jpg", "a.jpg"), ("day1/b.PNG", "day1/b.PNG"), ("day1/deep/c.tif", "day1/deep/c.tif"),
                    ("day2/d.webp", "day2/d.webp"), ("single.jpeg", "single.jpeg")]
    assert [p.input for p in problems] == [str(tmp_path / "g" / "**" / "*.png"), str(tmp_path / "missing")]
    touch(tmp_path / "g" / "x" / "y.png")
    items, _ = gather([str(tmp_path / "g" / "**" / "*.png")], tmp_path / "o", fmt="jpg")
    assert [(i.rel.as_posix(), i.out.as_posix()) for i in items] == [("x/y.png", "x/y.jpg")]


def test_gather_reports_collisions(tmp_path):
    touch(tmp_path / "a.jpg")
    touch(tmp_path / "a.png")
    items, problems = gather([str(tmp_path)], tmp_path / "out", fmt="png")
    assert len(items) == 1 and len(problems) == 1 and "would overwrite" in problems[0].reason


# --------------------------------------------------------------------------- manifest and progress

def test_manifest_resume_and_cut_lines(tmp_path):
    m = Manifest(tmp_path)
    (tmp_path / "a.png").write_bytes(b"x")
    m.record(Entry("a.png", "/in/a.png", "s1", "r1", 1, 1.0))
    m.record(Entry("b.png", "/in/b.png", "s2", "r1", 1, 1.0))
    with open(m.path, "a") as f:
        f.write('{"output": "c.png", "inp')              # a kill in the middle of a line
    m2 = Manifest(tmp_path)
    assert m2.is_done("a.png", "s1", "r1", tmp_path)
    assert not m2.is_done("a.png", "s1", "r2", tmp_path)     # recipe changed
    assert not m2.is_done("a.png", "sX", "r1", tmp_path)     # input changed
    assert not m2.is_done("b.png", "s2", "r1", tmp_path)     # output file gone
    assert not m2.knows("c.png")
    m2.compact()
    assert [json.loads(x)["output"] for x in m2.path.read_text().splitlines()] == ["a.png", "b.png"]


def test_intents_make_a_killed_runs_file_ours(tmp_path):
    """A file renamed into place just before a kill (no "done" line) is redone, not refused as
    somebody else's; a file no batch set out to write is refused."""
    from ai_enhance.batch.run import Options, plan

    src = tmp_path / "in"
    touch(src / "a.png")
    touch(src / "b.png")
    out = tmp_path / "out"
    touch(out / "a.png")
    touch(out / "b.png")
    Manifest(out).record_intents(["a.png"])
    m = Manifest(out)
    assert m.knows("a.png") and not m.knows("b.png") and not m.is_done("a.png", "x", "r", out)
    m.compact()
    assert Manifest(out).knows("a.png") and Manifest(out).lines() == []
    items, _ = gather([str(src)], out)
    tasks, refused = plan(items, Options(out_dir=out), Manifest(out))
    assert [t.item.out.as_posix() for t in tasks] == ["a.png"]
    assert [Path(r.input).name for r in refused] == ["b.png"] and "--overwrite" in refused[0].reason


def test_run_lock(tmp_path):
    a, b = RunLock(tmp_path), RunLock(tmp_path)
    assert a.acquire()
    assert not b.acquire()
    a.release()
    assert b.acquire()
    b.release()


def test_progress_line_and_summary():
    stream = io.StringIO()
    p = Progress(4, stream=stream)
    p.add(FileResult("a", "A", Status.DONE, megapixels=2.0))
    p.add(FileResult("b", "B", Status.SKIPPED))
    p.add(FileResult("c", "C", Status.FAILED, reason="corrupt"))
    line = p.line()
    assert "3/4 files" in line and "files/s" in line and "MP/s" in line and "ETA" in line
    assert "1 skipped" in line and "1 failed" in line
    s = summary([FileResult("a", "A", Status.DONE, megapixels=2.0),
                 FileResult("c", "C", Status.FAILED, reason="corrupt")], 2.0, engine="local",
                recipe_hash="h")
    assert (s["done"], s["failed"], s["megapixels_per_s"]) == (1, 1, 1.0)
    assert s["failures"] == [{"input": "c", "reason": "corrupt"}]
