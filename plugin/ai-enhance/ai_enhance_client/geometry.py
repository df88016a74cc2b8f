"""Rectangle arithmetic of the GIMP plug-in: which pixels to send, which part the backend returns,
where the new layer goes.  Pure Python (no GIMP, no numpy), so it is unit-tested on its own.

Coordinate systems (all integers, half-open boxes: x..x+width):
  * image:  GIMP's canvas coordinates;
  * layer:  relative to the source layer's top-left corner (image = layer + layer offsets);
  * crop:   relative to the top-left corner of the pixels sent to the backend.
"""
from __future__ import annotations

from dataclasses import dataclass

#: Pixels of context the model sees around the selection box (cropped away from the result).
DEFAULT_MARGIN = 32


@dataclass(frozen=True)
class Box:
    x: int
    y: int
    width: int
    height: int

    def __post_init__(self):
        if self.width < 0 or self.height < 0:
            raise ValueError(f"negative size {self.width}x{self.height}")

    @property
    def x2(self) -> int:
        return self.x + self.width

    @property
    def y2(self) -> int:
        return self.y + self.height

    @property
    def empty(self) -> bool:
        return self.width == 0 or self.height == 0

    @classmethod
    def from_corners(cls, x1: int, y1: int, x2: int, y2: int) -> "Box":
        return cls(x1, y1, max(0, x2 - x1), max(0, y2 - y1))

    def intersect(self, other: "Box") -> "Box":
        x1, y1 = max(self.x, other.x), max(self.y, other.y)
        x2, y2 = min(self.x2, other.x2), min(self.y2, other.y2)
        if x2 <= x1 or y2 <= y1:
            return Box(x1, y1, 0, 0)
        return Box(x1, y1, x2 - x1, y2 - y1)

    def translate(self, dx: int, dy: int) -> "Box":
        return Box(self.x + dx, self.y + dy, self.width, self.height)

    def scale(self, factor: int) -> "Box":
        return Box(self.x * factor, self.y * factor, self.width * factor, self.height * factor)

    def grow(self, margin: int) -> "Box":
        return Box(self.x - margin, self.y - margin, self.width + 2 * margin, self.height + 2 * margin)

    def contains(self, other: "Box") -> bool:
        return (self.x <= other.x and self.y <= other.y
                and other.x2 <= self.x2 and other.y2 <= self.y2)

    def as_tuple(self) -> tuple[int, int, int, int]:
        return (self.x, self.y, self.width, self.height)


class GeometryError(ValueError):
    """Nothing to process (e.g. the selection misses the layer).  One line, says what to do."""


@dataclass(frozen=True)
class Plan:
    """Everything the plug-in needs to place one job.

    box:         the processed area, layer coordinates (selection bounds ∩ layer, or the layer)
    crop:        the pixels sent, layer coordinates (box + context margin, clamped to the layer)
    roi:         box inside crop (crop coordinates) = the `roi` of the enhance request
    scale:       integer output scale
    out_size:    (width, height) the backend must return = roi size × scale
    out_offsets: image offsets of the new layer AFTER the image was scaled by `scale`
    image_size:  the image size after scaling (unchanged for scale 1)
    """

    box: Box
    crop: Box
    roi: Box
    scale: int
    out_size: tuple[int, int]
    out_offsets: tuple[int, int]
    image_size: tuple[int, int]

    @property
    def whole_layer(self) -> bool:
        return self.roi.x == 0 and self.roi.y == 0 and self.roi.width == self.crop.width \
            and self.roi.height == self.crop.height


def context_crop(box: Box, bounds: Box, margin: int) -> Box:
    """`box` grown by `margin` on every side, clamped to `bounds` (box must lie inside bounds)."""
    if margin < 0:
        raise ValueError("margin must be >= 0")
    if box.empty or not bounds.contains(box):
        raise ValueError(f"box {box.as_tuple()} is not a non-empty part of {bounds.as_tuple()}")
    return box.grow(margin).intersect(bounds)


def plan_job(*, layer_size: tuple[int, int], layer_offsets: tuple[int, int],
             image_size: tuple[int, int], selection: Box | None, scale: int = 1,
             margin: int = DEFAULT_MARGIN) -> Plan:
    """Plan one job for a layer.

    selection: the selection's bounds already intersected with the layer, in LAYER coordinates
               (what `drawable.mask_intersect()` gives), or None for the whole layer.
    """
    lw, lh = layer_size
    if lw < 1 or lh < 1:
        raise GeometryError("the layer is empty; pick a layer with pixels")
    if not isinstance(scale, int) or scale < 1:
        raise ValueError(f"scale must be an integer >= 1, got {scale!r}")
    layer = Box(0, 0, lw, lh)
    if selection is None:
        box = layer
    else:
        box = selection.intersect(layer)
        if box.empty:
            raise GeometryError("the selection does not touch the active layer; "
                                "select part of the layer or Select > None")
    crop = context_crop(box, layer, margin)
    roi = box.translate(-crop.x, -crop.y)
    ox, oy = layer_offsets
    out_offsets = ((ox + box.x) * scale, (oy + box.y) * scale)
    iw, ih = image_size
    return Plan(box=box, crop=crop, roi=roi, scale=scale,
                out_size=(box.width * scale, box.height * scale),
                out_offsets=out_offsets, image_size=(iw * scale, ih * scale))


def scaled_offsets(offsets: tuple[int, int], scale: int) -> tuple[int, int]:
    """Where GIMP puts a layer's offsets when the image is scaled by an integer factor."""
    return offsets[0] * scale, offsets[1] * scale


def crop_box_to_image(box: list | tuple, plan: Plan, layer_offsets: tuple[int, int]) -> list[float]:
    """A box [x0, y0, x1, y1] in the coordinates of the frame that was sent (the crop) to image
    coordinates after scaling (e.g. face boxes reported by the backend)."""
    x0, y0, x1, y1 = (float(v) for v in box)
    dx, dy = plan.crop.x + layer_offsets[0], plan.crop.y + layer_offsets[1]
    s = plan.scale
    return [(x0 + dx) * s, (y0 + dy) * s, (x1 + dx) * s, (y1 + dy) * s]


def check_result_size(plan: Plan, width: int, height: int) -> None:
    """The backend must return exactly roi × scale; anything else is a version mismatch."""
    if (width, height) != plan.out_size:
        raise GeometryError(
            f"the backend returned {width}x{height} pixels but {plan.out_size[0]}x{plan.out_size[1]} "
            "were expected; install the plug-in and the backend from the same release")
