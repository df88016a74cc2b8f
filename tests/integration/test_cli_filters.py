"""The CLI's flags generated from the operation table, through a real backend: each operation's
parameters as flags (a flag of another operation refused before any job), the post-processing
outputs (--change-map, grain composited like GIMP), the old-photo operations (find-damage writes
its mask, inpaint takes --mask, restore-old-photo writes its steps with --layers)."""
from __future__ import annotations

import subprocess
import sys

import cv2
import numpy as np
import pytest

CLI = [sys.executable, "-m", "ai_enhance"]


def cli(backend, *args, timeout=300):
    return subprocess.run([*CLI, "enhance", "--endpoint", backend.endpoint, "--no-autostart", "-q", *args],
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    import skimage.data

    d = tmp_path_factory.mktemp("cli-photos")
    img = cv2.resize(skimage.data.astronaut(), (400, 400), interpolation=cv2.INTER_AREA)
    rng = np.random.default_rng(0)
    noisy = np.clip(img + rng.normal(0, 10, img.shape), 0, 255).astype(np.uint8)
    cv2.imwrite(str(d / "photo.png"), noisy[:, :, ::-1])
    return d / "photo.png"


def test_a_flag_of_another_operation_is_refused_before_any_job(backend, photo, tmp_path):
    r = cli(backend, str(photo), "-o", str(tmp_path / "o.png"), "--op", "denoise", "--quality", "40")
    assert r.returncode == 2 and "--quality does not apply to --op denoise" in r.stderr
    assert "--noise-level" in r.stderr and not (tmp_path / "o.png").exists()
    r = cli(backend, str(photo), "-o", str(tmp_path / "o.png"), "--op", "denoise", "--noise-level", "99")
    assert r.returncode == 2 and "noise-level" in r.stderr and "0..75" in r.stderr


def test_change_map_and_grain(backend, photo, tmp_path):
    r = cli(backend, str(photo), "-o", str(tmp_path / "plain.png"), "--op", "denoise",
            "--model", "nearest-x1", "--no-color-lock", "--change-map", str(tmp_path / "cm.png"))
    assert r.returncode == 0, r.stderr
    cm = cv2.imread(str(tmp_path / "cm.png"), cv2.IMREAD_UNCHANGED)
    assert cm.shape == (400, 400) and cm.dtype == np.uint8 and cm.max() <= 3   # an identity model
    r = cli(backend, str(photo), "-o", str(tmp_path / "grain.png"), "--op", "denoise",
            "--model", "nearest-x1", "--grain", "1")
    assert r.returncode == 0, r.stderr
    plain = cv2.imread(str(tmp_path / "plain.png")).astype(int)
    grain = cv2.imread(str(tmp_path / "grain.png")).astype(int)
    # the identity already carries the photo's noise: the top-up adds little, but deterministically
    assert np.abs(grain - plain).mean() < 6
    r2 = cli(backend, str(photo), "-o", str(tmp_path / "grain2.png"), "--op", "denoise",
             "--model", "nearest-x1", "--grain", "1")
    assert r2.returncode == 0
    np.testing.assert_array_equal(cv2.imread(str(tmp_path / "grain2.png")), grain.astype(np.uint8))


def test_find_damage_then_inpaint_then_restore_old_photo(backend, photo, tmp_path):
    src = cv2.imread(str(photo))
    bad = src.copy()
    cv2.line(bad, (10, 20), (390, 380), (255, 255, 255), 2)
    cv2.imwrite(str(tmp_path / "scan.png"), bad)
    r = cli(backend, str(tmp_path / "scan.png"), "-o", str(tmp_path / "damage.png"), "--op", "find-damage")
    assert r.returncode == 0, r.stderr
    mask = cv2.imread(str(tmp_path / "damage.png"), cv2.IMREAD_UNCHANGED)
    assert mask.shape == (400, 400) and mask.dtype == np.uint8        # 8-bit gray
    line = np.zeros((400, 400), np.uint8)
    cv2.line(line, (10, 20), (390, 380), 255, 2)
    assert (mask[line > 0] > 0).mean() > 0.5                          # the scratch is found
    r = cli(backend, str(tmp_path / "scan.png"), "-o", str(tmp_path / "fixed.png"), "--op", "inpaint")
    assert r.returncode == 2 and "--mask" in r.stderr                 # inpaint needs one
    r = cli(backend, str(tmp_path / "scan.png"), "-o", str(tmp_path / "fixed.png"), "--op", "inpaint",
            "--mask", str(tmp_path / "damage.png"))
    assert r.returncode == 0, r.stderr
    fixed = cv2.imread(str(tmp_path / "fixed.png"))
    err = lambda a: np.abs(a.astype(int) - src.astype(int))[line > 0].mean()   # noqa: E731
    assert err(fixed) < 0.5 * err(bad)
    np.testing.assert_array_equal(fixed[mask == 0], bad[mask == 0])
    r = cli(backend, str(tmp_path / "scan.png"), "-o", str(tmp_path / "restored.png"),
            "--op", "restore-old-photo", "--layers", str(tmp_path / "steps"))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "steps" / "inpaint.png").is_file() and (tmp_path / "steps" / "damage-mask.png").is_file()
    assert cv2.imread(str(tmp_path / "restored.png")).shape == (400, 400, 3)
