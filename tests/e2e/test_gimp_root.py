"""tests/e2e/ensure_gimp_root.sh on a finished root: idempotent and ~free, says nothing, changes
nothing; the harness leaves nothing mounted."""
import subprocess
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.gimp

SCRIPT = Path(__file__).resolve().parent / "ensure_gimp_root.sh"


def test_ensure_root_is_idempotent_and_fast(gimp):
    marker = gimp.root / ".ai-enhance-gimp-root"
    before = (marker.read_text(), marker.stat().st_mtime_ns)
    suite = "sid" if gimp.label == "gimp3.2" else "trixie"
    t0 = time.monotonic()
    p = subprocess.run(["bash", str(SCRIPT), str(gimp.root), suite], capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0, p.stderr
    assert time.monotonic() - t0 < 5
    assert (marker.read_text(), marker.stat().st_mtime_ns) == before, "a finished root is kept"
    assert p.stdout == "" and p.stderr == ""
    assert f"gimp={gimp.version}" in before[0] and gimp.version.startswith("3.")


def test_ensure_root_needs_a_path():
    p = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=30)
    assert p.returncode != 0 and "usage" in p.stderr
