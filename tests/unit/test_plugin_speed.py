"""The plug-in's per-call speed helpers: the opaque alpha it adds itself (ai_enhance_client/alpha.py)
and the phase clock behind AI_ENHANCE_PROFILE (ai_enhance_client/phases.py)."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest

PLUGIN = Path(__file__).resolve().parents[2] / "plugin" / "ai-enhance"
sys.path.insert(0, str(PLUGIN))

from ai_enhance_client import alpha as A  # noqa: E402
from ai_enhance_client import filters as F  # noqa: E402
from ai_enhance_client import phases  # noqa: E402


@pytest.mark.parametrize("channels, dtype", [(3, np.uint8), (1, np.uint8), (3, np.dtype("<u2")),
                                             (1, np.dtype("<u2")), (2, np.uint8)])
@pytest.mark.parametrize("h, w", [(1, 1), (7, 5), (64, 48)])
def test_with_opaque_alpha_equals_numpy(channels, dtype, h, w):
    rng = np.random.default_rng(h * w + channels)
    dtype = np.dtype(dtype)
    src = rng.integers(0, np.iinfo(dtype).max, (h, w, channels), endpoint=True).astype(dtype)
    out = A.with_opaque_alpha(src.tobytes(), channels, dtype.itemsize)
    assert isinstance(out, bytes), "bytes: PyGObject walks a bytearray element by element"
    got = np.frombuffer(out, dtype).reshape(h, w, channels + 1)
    np.testing.assert_array_equal(got[..., :channels], src)
    assert (got[..., channels] == np.iinfo(dtype).max).all()


def test_with_opaque_alpha_takes_a_memoryview_and_empty_input():
    assert A.with_opaque_alpha(memoryview(b"\x01\x02\x03\x04\x05\x06"), 3, 1) == b"\x01\x02\x03\xff\x04\x05\x06\xff"
    assert A.with_opaque_alpha(b"", 3, 1) == b""


def test_with_opaque_alpha_refuses_a_partial_pixel():
    with pytest.raises(ValueError, match="whole number"):
        A.with_opaque_alpha(b"\x00" * 7, 3, 1)


@pytest.mark.parametrize("fmt, here, with_alpha", [
    ("R'G'B' u8", True, "R'G'B'A u8"),        # babl: ~0.4 s to find it in a new process
    ("Y' u8", True, "Y'A u8"),
    ("Y' u16", True, "Y'A u16"),               # babl: ~0.2 s
    ("R'G'B' u16", False, "R'G'B'A u16"),      # babl finds these in < 0.02 s: left to it
    ("R'G'B' float", False, "R'G'B'A float"),
    ("Y' float", False, "Y'A float"),
    ("R'G'B'A u8", False, None),               # has alpha already
    ("Y'A u16", False, None),
])
def test_which_transports_get_their_alpha_here(fmt, here, with_alpha):
    assert A.adds_alpha_here(fmt) is here
    if with_alpha:
        assert A.with_alpha_format(fmt) == with_alpha


def test_every_transport_without_alpha_names_its_component_size():
    for comp in ("U8", "U16", "U32", "HALF", "FLOAT", "DOUBLE"):
        for gray in (False, True):
            t = F.transport(comp, gray=gray, alpha=False)
            assert t.babl_format.rpartition(" ")[2] in A.COMPONENT_BYTES
            assert t.gray is gray
            assert F.transport(comp, gray=gray, alpha=True).gray is gray


class FakeClock:
    def __init__(self, *ticks):
        self.ticks = list(ticks)

    def __call__(self):
        return self.ticks.pop(0)


def test_phase_clock_adds_up_marks_and_writes_one_line(tmp_path):
    path = tmp_path / "p.jsonl"
    c = phases.PhaseClock(str(path), clock=FakeClock(10.5, 11.0, 13.0), wall=lambda: 100.0,
                          start=(90.0, 10.0))
    c.mark("a")         # 10.0 -> 10.5
    c.mark("b")         # 10.5 -> 11.0
    c.mark("a")         # 11.0 -> 13.0, added to a
    c.write()
    c.write()
    lines = path.read_text().splitlines()
    assert len(lines) == 2
    rec = json.loads(lines[0])
    assert rec["phases"] == {"a": 2.5, "b": 0.5}
    assert (rec["wall0"], rec["wall_end"]) == (90.0, 100.0)


def test_phase_clock_without_a_file_measures_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.delenv(phases.ENV, raising=False)
    c = phases.from_env()
    c.mark("a")
    c.write()
    assert not c.enabled and c.phases == {}
    monkeypatch.setenv(phases.ENV, str(tmp_path / "x.jsonl"))
    c = phases.from_env()
    c.mark("a")
    c.write()
    assert c.enabled and json.loads((tmp_path / "x.jsonl").read_text())["phases"].keys() == {"a"}


def test_phase_clock_write_never_fails_the_call(tmp_path):
    c = phases.PhaseClock(str(tmp_path / "no" / "such" / "dir" / "p.jsonl"))
    c.mark("a")
    c.write()           # an unwritable profile is ignored


def test_summarize_takes_medians_and_counts_missing_phases_as_zero():
    recs = [{"phases": {"a": 1.0, "b": 2.0}}, {"phases": {"a": 3.0}}, {"phases": {"a": 2.0, "c": 9.0}}]
    assert phases.summarize(recs) == {"a": 2.0, "b": 0.0, "c": 0.0}
    assert list(phases.summarize(recs)) == ["a", "b", "c"]
    assert phases.summarize([]) == {}


def test_phases_imports_only_os_and_time():
    src = (PLUGIN / "ai_enhance_client" / "phases.py").read_text()
    top = [ln for ln in src.splitlines() if ln.startswith(("import ", "from "))]
    assert top == ["from __future__ import annotations", "import os", "import time"]
