"""The installer's view of the one downloader (backend/ai_enhance/models/download.py, loaded by its
path: the installer runs before any virtual environment exists).  This module only connects it to
the installer's console (progress bars, notes) and words ("run the installer again")."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from .ui import Console

_PATH = Path(__file__).resolve().parents[2] / "backend" / "ai_enhance" / "models" / "download.py"
_NAME = "_aie_download"


def _shared():
    mod = sys.modules.get(_NAME)
    if mod is None:
        spec = importlib.util.spec_from_file_location(_NAME, _PATH)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[_NAME] = mod
        spec.loader.exec_module(mod)
    return mod


_dl = _shared()
DownloadError = _dl.DownloadError
DownloadCancelled = _dl.DownloadCancelled
sha256_file = _dl.sha256_file
CHUNK = _dl.CHUNK

HINTS = _dl.Hints(resume="run the installer again to resume",
                  manual="install the file with --models-from DIR",
                  retry="run the installer again")


def fetch(url: str, dest: Path, sha256: str | None, *, name: str | None = None, size: int | None = None,
          console: Console | None = None, retries: int = 3, timeout: float = 30.0,
          retry_delay: float = 2.0) -> str:
    """Download with a progress bar on the installer's console; see the shared ``fetch``."""
    name = name or Path(dest).name
    state: dict = {"bar": None}

    def on_start(already: int, total: int | None) -> None:
        if console:
            state["bar"] = console.bar(name, total)
            state["bar"].begin(already)

    def on_progress(done: int, total: int | None) -> None:
        bar = state["bar"]
        if bar is not None:
            bar.update(done)

    def on_finish() -> None:
        if state["bar"] is not None:
            state["bar"].finish()
            state["bar"] = None

    return _dl.fetch(url, dest, sha256, name=name, size=size, on_progress=on_progress,
                     on_note=console.info if console else None, on_start=on_start, on_finish=on_finish,
                     retries=retries, timeout=timeout, retry_delay=retry_delay, hints=HINTS,
                     user_agent="gimp-ai-enhance-installer/0.1 (+https://github.com/; python-urllib)")


def copy_verified(src: Path, dest: Path, expected_sha256: str | None, *, console: Console | None = None,
                  name: str | None = None) -> tuple[str, str]:
    """Copy a local file into place with a progress bar; see the shared ``copy_verified``."""
    bar = console.bar(name or Path(dest).name, Path(src).stat().st_size) if console else None
    try:
        return _dl.copy_verified(src, dest, expected_sha256,
                                 on_progress=(lambda done, total: bar.update(done)) if bar else None)
    finally:
        if bar:
            bar.finish()
