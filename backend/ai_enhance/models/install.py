"""Installing and removing catalogue models from the backend: what GIMP's Models... dialog, the
Download button of a filter and `ai-enhance models install|remove` ask for.

The files, companions and sizes follow ``ai_enhance_client.model_plan`` (the same decision the
dialog shows before); the transfer is the one downloader (``download.fetch``: catalogue URL,
pinned sha256, resume of a ``.part``).  One install runs at a time per process: two requests for
the same file must not write the same ``.part``.
"""
from __future__ import annotations

import errno
import logging
import threading
import time
from dataclasses import dataclass

from ai_enhance_client.model_plan import InstallPlan, RemovalPlan, human_size, install_plan, removal_plan
from ai_enhance_client.protocol import ErrorKind

from ..errors import Cancelled, EnhanceError
from ..jobs import IsCancelled, Progress
from . import download
from .catalog import ModelInfo
from .store import ModelStore

log = logging.getLogger("ai_enhance.models.install")

_one_at_a_time = threading.Lock()

HINTS = download.Hints(resume="start the download again to resume it",
                       manual="copy the file into the models folder yourself",
                       retry="try again")


@dataclass
class Report:
    """What a request changed (sent back as the `done` reply's info)."""
    installed: list[str]
    present: list[str]
    removed: list[str]
    bytes: int
    models_dir: str

    def to_json(self) -> dict:
        return {"installed": self.installed, "present": self.present, "removed": self.removed,
                "bytes": self.bytes, "models_dir": self.models_dir}


def _entries(store: ModelStore) -> list[dict]:
    """The catalogue as the plan sees it (no hashing: ``status`` is not needed here)."""
    return [{"id": m.id, "installed": m.installed, "size": m.size, "role": m.role,
             "companions": list(m.companions), "url": m.url, "sha256": m.sha256,
             "builtin": m.builtin, "custom": m.custom} for m in store.list()]


def plan_install(store: ModelStore, ids: list[str]) -> InstallPlan:
    plan = install_plan(_entries(store), ids)
    if plan.unknown:
        known = ", ".join(store.catalog_ids()[:10])
        raise EnhanceError(ErrorKind.UNKNOWN_MODEL, f"unknown model {', '.join(map(repr, plan.unknown))}",
                           f"the catalogue has: {known} (`ai-enhance models list` shows all)")
    if plan.refused:
        raise EnhanceError(ErrorKind.UNSUPPORTED,
                           f"{', '.join(plan.refused)} cannot be downloaded safely: the catalogue pins no "
                           "download with a sha256 for it",
                           f"copy the file into the models folder {store.dir} yourself")
    return plan


def _wait_turn(is_cancelled: IsCancelled, progress: Progress) -> None:
    told = False
    while not _one_at_a_time.acquire(timeout=0.2):
        if is_cancelled():
            raise Cancelled()
        if not told:
            progress(0.0, "waiting for another download to finish")
            told = True


def install(store: ModelStore, ids: list[str], progress: Progress, is_cancelled: IsCancelled) -> Report:
    """Download what ``ids`` need; progress over all bytes, 1.0 at the end.  Raises EnhanceError
    (DOWNLOAD, DISK, UNKNOWN_MODEL, UNSUPPORTED) or Cancelled (the ``.part`` is kept)."""
    _wait_turn(is_cancelled, progress)
    try:
        plan = plan_install(store, ids)      # after the wait: another request may have fetched it
        infos = [store.get(mid) for mid in plan.ids]
        total = plan.bytes or 0
        done_before = 0
        t0 = time.monotonic()
        for k, info in enumerate(infos, 1):
            _fetch_one(store, info, k, len(infos), done_before, total, t0, progress, is_cancelled)
            done_before += info.size or 0
        progress(1.0, "installed " + ", ".join(_name(i) for i in infos) if infos else "already installed")
        log.info("installed %s (asked: %s) into %s", ", ".join(plan.ids) or "nothing", ", ".join(ids), store.dir)
        return Report(list(plan.ids), list(plan.present), [], done_before, str(store.dir))
    finally:
        _one_at_a_time.release()


def _name(info: ModelInfo) -> str:
    return info.name or info.id


def _fetch_one(store: ModelStore, info: ModelInfo, k: int, n: int, before: int, total: int, t0: float,
               progress: Progress, is_cancelled: IsCancelled) -> None:
    of = f" (file {k} of {n})" if n > 1 else ""
    name = _name(info)
    progress(before / total if total else 0.0, f"downloading {name}{of}")

    def on_progress(done: int, size: int | None) -> None:
        size = size or info.size
        now_total = before + done
        frac = now_total / total if total else (done / size if size else 0.0)
        text = f"downloading {name}{of}: {human_size(done)} of {human_size(size)}" if size else \
            f"downloading {name}{of}: {human_size(done)}"
        elapsed = time.monotonic() - t0
        if total and elapsed > 3 and 0 < frac < 1:
            text += f" \u00b7 {_eta(elapsed / frac * (1 - frac))} left"
        progress(min(frac, 0.999), text)

    dest = store.dir / info.file
    try:
        how = download.fetch(info.url, dest, info.sha256, name=info.file, size=info.size,
                             on_progress=on_progress, on_note=lambda t: log.info("%s", t),
                             is_cancelled=is_cancelled, hints=HINTS)
    except download.DownloadCancelled:
        log.info("download of %s cancelled; %s.part kept", info.id, info.file)
        raise Cancelled() from None
    except download.DownloadError as e:
        log.warning("download of %s failed: %s", info.id, e)
        raise EnhanceError(ErrorKind.DOWNLOAD, f"{name} could not be downloaded",
                           str(e)) from None
    except OSError as e:
        log.exception("writing %s failed", dest)
        if e.errno in (errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM):
            raise EnhanceError(ErrorKind.DISK, f"cannot write {name} into {store.dir} ({e.strerror})",
                               "free some disk space or make the models folder writable") from None
        raise
    log.info("%s: %s %s (sha256 verified)", info.id, info.file, how)


def _eta(seconds: float) -> str:
    if seconds < 60:
        return f"{max(1, round(seconds))} s"
    if seconds < 3600:
        return f"{round(seconds / 60)} min"
    return f"{seconds / 3600:.1f} h"


def plan_remove(store: ModelStore, ids: list[str]) -> RemovalPlan:
    plan = removal_plan(_entries(store), ids)
    if plan.unknown:
        raise EnhanceError(ErrorKind.UNKNOWN_MODEL, f"unknown model {', '.join(map(repr, plan.unknown))}",
                           "`ai-enhance models list` shows the models")
    return plan


def remove(store: ModelStore, ids: list[str], progress: Progress | None = None) -> Report:
    """Delete the files of ``ids`` and the support files only they needed.  A custom model is
    removed too (its file is deleted): the caller asked for it by its id."""
    with _one_at_a_time:
        plan = plan_remove(store, ids)
        removed = []
        for mid in plan.ids:
            info = store.get(mid)
            if info is None or info.path is None or not info.installed:
                continue
            try:
                info.path.unlink()
            except FileNotFoundError:
                pass
            except OSError as e:
                raise EnhanceError(ErrorKind.DISK, f"cannot delete {info.path} ({e.strerror})",
                                   "check the permissions of the models folder") from None
            part = info.path.with_name(info.path.name + ".part")
            if part.exists():
                part.unlink()
            removed.append(mid)
        if progress:
            progress(1.0, "removed " + ", ".join(removed) if removed else "nothing to remove")
        log.info("removed %s (asked: %s) from %s", ", ".join(removed) or "nothing", ", ".join(ids), store.dir)
        return Report([], [], removed, 0, str(store.dir))
