"""The plug-in's layer-mask decisions and mask arithmetic (ai_enhance_client/masks.py)."""
import builtins
import random

import pytest

from ai_enhance_client import masks
from ai_enhance_client.masks import MaskSource, choose_mask


@pytest.mark.parametrize("mode, has_sel, result_masks, expected", [
    ("selection", True, (), MaskSource.SELECTION),
    ("selection", False, (), MaskSource.WHITE),        # empty selection would hide the layer
    ("selection", True, ("faces",), MaskSource.SELECTION),
    ("full", True, ("faces",), MaskSource.WHITE),
    ("full", False, (), MaskSource.WHITE),
    ("faces", False, ("faces",), MaskSource.RESULT),
    ("faces", True, ("faces",), MaskSource.RESULT_X_SELECTION),
    ("faces", True, (), MaskSource.SELECTION),         # backend sent no faces mask
    ("faces", False, ("other",), MaskSource.WHITE),
])
def test_choose_mask(mode, has_sel, result_masks, expected):
    assert choose_mask(mode, has_selection=has_sel, result_masks=result_masks) is expected


def test_choose_mask_rejects_unknown_mode():
    with pytest.raises(ValueError, match="faces, selection, full"):
        choose_mask("everything", has_selection=False)


@pytest.mark.parametrize("a, b, expected", [
    (255, 255, 255), (0, 255, 0), (255, 0, 0), (128, 128, 64), (255, 77, 77), (1, 1, 0),
    (200, 100, 78),   # 20000 / 255 = 78.4
    (254, 254, 253),  # 64516 / 255 = 253.0
])
def test_multiply_values(a, b, expected):
    assert masks.multiply(bytes([a]), bytes([b])) == bytes([expected])
    assert masks.multiply_pure(bytes([a]), bytes([b])) == bytes([expected])


def test_multiply_pure_equals_numpy_path():
    rnd = random.Random(3)
    a, b = rnd.randbytes(5000), rnd.randbytes(5000)
    assert masks.multiply(a, b) == masks.multiply_pure(a, b)
    full = bytes([255]) * 5000
    assert masks.multiply_pure(full, b) == b and masks.multiply_pure(a, full) == a


def test_multiply_without_numpy(monkeypatch):
    real_import = builtins.__import__

    def no_numpy(name, *args, **kw):
        if name == "numpy" or name.startswith("numpy."):
            raise ImportError("no numpy here")
        return real_import(name, *args, **kw)

    monkeypatch.setattr(builtins, "__import__", no_numpy)
    assert masks.multiply(bytes([128, 255, 0]), bytes([128, 10, 99])) == bytes([64, 10, 0])
    assert masks.coverage(bytes([255, 0])) == pytest.approx(0.5)


def test_multiply_size_mismatch():
    with pytest.raises(ValueError, match="differ in size"):
        masks.multiply(b"\x00\x01", b"\x00")
    with pytest.raises(ValueError, match="differ in size"):
        masks.multiply_pure(b"\x00\x01", b"\x00")


def test_coverage():
    assert masks.coverage(b"") == 0.0
    assert masks.coverage(bytes([255] * 10)) == 1.0
    assert masks.coverage(bytes([0, 255, 0, 255])) == pytest.approx(0.5)


@pytest.mark.parametrize("strength, opacity", [(1.0, 100.0), (0.75, 75.0), (0.0, 0.0),
                                               (-1, 0.0), (3, 100.0)])
def test_opacity_percent(strength, opacity):
    assert masks.opacity_percent(strength) == pytest.approx(opacity)
