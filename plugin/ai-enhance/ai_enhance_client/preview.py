"""The dialog's preview, as pure arithmetic: which region of the layer it shows, what is sent for
it, where it starts, and how before and after are put side by side.

The preview shows RESULT pixels at 1:1 (``view`` x ``view`` output pixels): for a scale of 4 that
is a view/4 square of the layer, enlarged by the model.  The request is an ordinary enhance request
for that region with context around it (``roi`` = the region), so the preview is exactly what the
filter will give there.

Pixels here are bytes of packed 8-bit RGB (3 per pixel); no numpy (GIMP's Python may lack it).
Standard library only.
"""
from __future__ import annotations

from dataclasses import dataclass

from .geometry import DEFAULT_MARGIN, Box, context_crop

#: Side of the preview in screen (= result) pixels.
VIEW = 256


@dataclass(frozen=True)
class Region:
    """One preview request, in layer coordinates."""
    box: Box            # the layer pixels the preview shows (view / scale square, clamped)
    crop: Box           # what is sent: box plus context, clamped to the layer
    roi: Box            # box inside crop
    scale: int

    @property
    def out_size(self) -> tuple[int, int]:
        return self.box.width * self.scale, self.box.height * self.scale


def region(layer_size: tuple[int, int], center: tuple[float, float], scale: int, view: int = VIEW,
           margin: int = DEFAULT_MARGIN) -> Region:
    """The region around ``center`` (layer coordinates) whose result fills a ``view`` square;
    smaller only when the layer is."""
    lw, lh = layer_size
    s = max(1, int(scale))
    side = max(1, -(-view // s))
    w, h = min(side, lw), min(side, lh)
    x = int(round(center[0] - w / 2))
    y = int(round(center[1] - h / 2))
    x = max(0, min(lw - w, x))
    y = max(0, min(lh - h, y))
    box = Box(x, y, w, h)
    crop = context_crop(box, Box(0, 0, lw, lh), margin)
    return Region(box, crop, box.translate(-crop.x, -crop.y), s)


def pan(center: tuple[float, float], drag: tuple[float, float], scale: int) -> tuple[float, float]:
    """The new centre after dragging the preview by ``drag`` screen pixels (the picture follows
    the pointer: dragging right shows what lies to the left)."""
    s = max(1, int(scale))
    return center[0] - drag[0] / s, center[1] - drag[1] / s


def detail_center(gray: bytes, width: int, height: int, block: int = 8) -> tuple[float, float]:
    """The centre of the most detailed ``block`` square of a small gray thumbnail (sum of absolute
    differences between neighbours: edges and texture, not flat sky), in thumbnail pixels.
    Where a face or fabric is, a retoucher wants to look first."""
    if width < 2 or height < 2 or len(gray) < width * height:
        return width / 2, height / 2
    b = max(2, min(block, width, height))
    energy = [0] * (width * height)
    for y in range(height):
        row = y * width
        for x in range(width):
            v = gray[row + x]
            e = 0
            if x + 1 < width:
                e += abs(v - gray[row + x + 1])
            if y + 1 < height:
                e += abs(v - gray[row + width + x])
            energy[row + x] = e
    best, best_xy = -1, (width / 2, height / 2)
    step = max(1, b // 2)
    for y0 in range(0, height - b + 1, step):
        for x0 in range(0, width - b + 1, step):
            total = 0
            for y in range(y0, y0 + b):
                r = y * width
                total += sum(energy[r + x0: r + x0 + b])
            if total > best:
                best, best_xy = total, (x0 + b / 2, y0 + b / 2)
    return best_xy


def default_center(layer_size: tuple[int, int], selection: Box | None,
                   thumb: tuple[bytes, int, int] | None = None) -> tuple[float, float]:
    """Where the preview starts: the selection's centre; else the most detailed area of the
    layer (from a gray thumbnail of it: bytes, width, height); else the layer's centre."""
    lw, lh = layer_size
    if selection is not None and not selection.empty:
        return selection.x + selection.width / 2, selection.y + selection.height / 2
    if thumb is not None:
        data, tw, th = thumb
        if tw > 0 and th > 0:
            cx, cy = detail_center(data, tw, th)
            return cx * lw / tw, cy * lh / th
    return lw / 2, lh / 2


def enlarge(rgb: bytes, width: int, height: int, scale: int, bpp: int = 3) -> bytes:
    """Nearest-neighbour enlargement (the "before" of an upscale: the pixels as they are)."""
    if scale == 1:
        return bytes(rgb)
    rows = []
    stride = width * bpp
    for y in range(height):
        line = rgb[y * stride:(y + 1) * stride]
        big = b"".join(line[i:i + bpp] * scale for i in range(0, stride, bpp))
        rows.append(big * scale)
    return b"".join(rows)


def blend(before: bytes, after: bytes, strength: float, mask: bytes | None = None, bpp: int = 3) -> bytes:
    """What the new layer at opacity ``strength`` over the original looks like (normal mode),
    through its layer mask when it has one (one byte per pixel, e.g. the faces found)."""
    a = max(0, min(256, int(round(strength * 256))))
    if mask is None:
        if a >= 256:
            return bytes(after)
        if a <= 0:
            return bytes(before)
        return bytes(b + (((r - b) * a) >> 8) for b, r in zip(before, after))
    weights = [(m * a + 127) // 255 for m in mask]
    return bytes(b + (((r - b) * weights[i // bpp]) >> 8) for i, (b, r) in enumerate(zip(before, after)))


def split(before: bytes, after: bytes, width: int, height: int, at: int, bpp: int = 3) -> bytes:
    """Before left of column ``at``, after from it on, with a 1-pixel white line between."""
    at = max(0, min(width, at))
    stride = width * bpp
    out = bytearray(after)
    for y in range(height):
        r = y * stride
        out[r: r + at * bpp] = before[r: r + at * bpp]
        if 0 < at < width:
            out[r + at * bpp: r + (at + 1) * bpp] = b"\xff" * bpp
    return bytes(out)


def gray_to_rgb(data: bytes) -> bytes:
    return bytes(v for g in data for v in (g, g, g))


def overlay(before: bytes, mask: bytes, color: tuple[int, int, int] = (255, 32, 32),
            opacity: float = 0.6) -> bytes:
    """A mask result shown over the original (RGB), tinted like GIMP shows a red channel: Find
    Damage's preview (255 = found)."""
    a = max(0, min(256, int(round(opacity * 256))))
    out = bytearray(before)
    for i, m in enumerate(mask):
        if m:
            w = (m * a + 127) // 255
            j = 3 * i
            for k in range(3):
                b = out[j + k]
                out[j + k] = b + (((color[k] - b) * w) >> 8)
    return bytes(out)


def color_mode(below: bytes, layer: bytes) -> bytes:
    """The look of an RGB layer in a colour mode (Colorize's LCh colour layer) over ``below``:
    the layer's colour with the lightness of what is below (luma, Rec. 601): an approximation
    good for a preview."""
    out = bytearray(len(below))
    for j in range(0, len(below), 3):
        rb, gb, bb = below[j], below[j + 1], below[j + 2]
        rl, gl, bl = layer[j], layer[j + 1], layer[j + 2]
        d = round((299 * (rb - rl) + 587 * (gb - gl) + 114 * (bb - bl)) / 1000)
        out[j] = min(255, max(0, rl + d))
        out[j + 1] = min(255, max(0, gl + d))
        out[j + 2] = min(255, max(0, bl + d))
    return bytes(out)


def stack(before: bytes, layers: list[tuple[bytes, bytes | None, str]]) -> bytes:
    """Layers (RGB, mask or None, mode "normal" or a colour mode) over ``before``, bottom to top,
    as GIMP shows them: Restore Old Photo's steps in its layer group."""
    out = bytes(before)
    for rgb, mask, mode in layers:
        top = color_mode(out, rgb) if mode != "normal" else rgb
        out = blend(out, top, 1.0, mask)
    return out
