"""Resumable, verified downloads: the one implementation, used by the backend (a model installed
from GIMP's Models... dialog or `ai-enhance models install`) and by the installer.

Standard library only and no imports from the package: the installer loads this file by its path
before any virtual environment exists.

A transfer writes ``FILE.part`` next to its destination and asks for the rest with an HTTP Range
header when a ``.part`` is already there; a server that ignores Range (answers 200) restarts the
file from byte 0.  The finished file must match the pinned sha256 or it is deleted; only then is
it renamed into place, so a model file is either complete and verified or absent.  A cancelled
transfer keeps its ``.part`` for the next attempt.
"""
from __future__ import annotations

import hashlib
import http.client
import os
import re
import shutil
import socket
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional
from urllib.parse import urlsplit

CHUNK = 1 << 20
#: Bytes read per step of a running transfer: small enough that a cancel lands within a fraction
#: of a second even on a slow line, large enough to cost nothing on a fast one.
READ_STEP = 256 * 1024
USER_AGENT = "gimp-ai-enhance/0.1 (+https://github.com/; python-urllib)"

#: on_progress(done_bytes, total_bytes or None)
OnProgress = Callable[[int, Optional[int]], None]
#: on_note(text): something worth telling the user (a restart from 0, a resume after a drop)
OnNote = Callable[[str], None]
#: on_start(already_bytes, total_bytes or None): a transfer begins, with that many bytes already on
#: disk (a resume)
OnStart = Callable[[int, Optional[int]], None]


class DownloadError(Exception):
    """One line: what failed and what to do."""


class DownloadCancelled(DownloadError):
    """The caller cancelled; the ``.part`` file is kept so the next attempt resumes."""


@dataclass(frozen=True)
class Hints:
    """The last words of the messages: what the user of THIS front end does next."""
    resume: str = "try again to resume"
    manual: str = "copy the file into the models folder yourself"
    retry: str = "try again"


def human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000.0
    return f"{n:.1f} GB"


def sha256_file(path: Path, chunk: int = CHUNK) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def _reason(e: BaseException) -> str:
    r = getattr(e, "reason", None)
    if isinstance(r, BaseException):
        r = getattr(r, "strerror", None) or str(r)
    return str(r or e) or type(e).__name__


_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")


def fetch(url: str, dest: Path, sha256: str | None, *, name: str | None = None, size: int | None = None,
          on_progress: OnProgress | None = None, on_note: OnNote | None = None,
          on_start: OnStart | None = None, on_finish: Callable[[], None] | None = None,
          is_cancelled: Callable[[], bool] | None = None, retries: int = 3, timeout: float = 30.0,
          retry_delay: float = 2.0, hints: Hints = Hints(), user_agent: str = USER_AGENT) -> str:
    """Download ``url`` to ``dest``, resuming ``dest.part``; verify sha256.

    Returns 'present' (already there and verified), 'downloaded' or 'resumed'.  Raises
    DownloadError with one clear line (DownloadCancelled when ``is_cancelled()`` turned true)."""
    dest = Path(dest)
    name = name or dest.name
    cancelled = is_cancelled or (lambda: False)
    if not sha256:
        raise DownloadError(
            f"refusing to download {name}: the catalogue pins no sha256 for {url}, so the file "
            f"could not be verified; {hints.manual}, or add its sha256 to catalog.json")
    sha256 = sha256.lower()
    if dest.is_file() and sha256_file(dest) == sha256:
        return "present"
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    host = urlsplit(url).netloc or url
    note = on_note or (lambda text: None)
    resumed = False
    attempt = 0
    while True:
        attempt += 1
        if cancelled():
            raise DownloadCancelled(f"download of {name} cancelled; {part.name} is kept: {hints.resume}")
        have = part.stat().st_size if part.is_file() else 0
        headers = {"User-Agent": user_agent, "Accept-Encoding": "identity"}
        if have:
            headers["Range"] = f"bytes={have}-"
        req = urllib.request.Request(url, headers=headers)
        try:
            resp = urllib.request.urlopen(req, timeout=timeout)
        except urllib.error.HTTPError as e:
            e.close()
            if e.code == 416 and have:
                # Nothing left to send: the .part is complete (or longer than the file).
                if sha256_file(part) == sha256:
                    os.replace(part, dest)
                    return "resumed"
                part.unlink()
                note(f"{name}: the partial file does not match; starting again from 0")
                continue
            if e.code >= 500 and attempt <= retries:
                time.sleep(retry_delay * attempt)
                continue
            what = {404: "not found (the file moved upstream?)", 403: "access denied",
                    410: "gone"}.get(e.code, e.reason or "error")
            raise DownloadError(f"download of {name} failed: HTTP {e.code} {what} from {url}; "
                                + ("try again later" if e.code >= 500 else
                                   f"update gimp-ai-enhance, or {hints.manual}")) from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
            if attempt <= retries and not isinstance(getattr(e, "reason", None), socket.gaierror):
                time.sleep(retry_delay * attempt)
                continue
            raise DownloadError(f"cannot download {name}: {host} unreachable ({_reason(e)}); check the "
                                f"internet connection, or {hints.manual}") from None

        with resp:
            status = resp.status
            length = resp.headers.get("Content-Length")
            length = int(length) if length and length.isdigit() else None
            mode = "wb"
            start = 0
            if have and status == 206:
                m = _CONTENT_RANGE.match(resp.headers.get("Content-Range", ""))
                if m and int(m.group(1)) == have:
                    mode, start, resumed = "ab", have, True
                    if m.group(3) != "*":
                        size = int(m.group(3))
                else:
                    note(f"{name}: the server answered another range; starting again from 0")
                    part.unlink()
                    continue
            elif have and status == 200:
                note(f"{name}: the server does not support resuming; starting again from 0")
            elif status != 200:
                raise DownloadError(f"download of {name} failed: unexpected HTTP {status} from {url}")
            total = (start + length) if length is not None else size
            h = hashlib.sha256()
            if start:
                with open(part, "rb") as f:
                    for b in iter(lambda: f.read(CHUNK), b""):
                        h.update(b)
            if on_start:
                on_start(start, total)
            done = start
            err: BaseException | None = None
            stopped = False
            with open(part, mode) as out:
                try:
                    while True:
                        if cancelled():
                            stopped = True
                            break
                        b = resp.read(READ_STEP)
                        if not b:
                            break
                        out.write(b)
                        h.update(b)
                        done += len(b)
                        if on_progress:
                            on_progress(done, total)
                except (OSError, http.client.HTTPException, socket.timeout) as e:
                    err = e
            if on_finish:
                on_finish()
            if stopped:
                raise DownloadCancelled(f"download of {name} cancelled at {human(done)}; {part.name} is "
                                        f"kept: {hints.resume}")
            if err is None and total is not None and done < total:
                err = ConnectionError(f"connection closed at {human(done)} of {human(total)}")
            if err is not None:
                if attempt <= retries:
                    note(f"{name}: transfer interrupted at {human(done)} ({_reason(err)}); resuming")
                    time.sleep(retry_delay * attempt)
                    continue
                raise DownloadError(f"download of {name} interrupted at {human(done)}"
                                    + (f" of {human(total)}" if total else "")
                                    + f" ({_reason(err)}); {part.name} is kept: {hints.resume}") from None
        digest = h.hexdigest()
        if digest != sha256:
            part.unlink()
            raise DownloadError(f"{name}: sha256 mismatch (got {digest[:16]}..., expected {sha256[:16]}...): "
                                f"the download was corrupted or the file changed upstream; deleted it, "
                                f"{hints.retry}")
        os.replace(part, dest)
        return "resumed" if resumed else "downloaded"


def copy_verified(src: Path, dest: Path, expected_sha256: str | None, *,
                  on_progress: OnProgress | None = None) -> tuple[str, str]:
    """Copy a local file into place (through dest.part), hashing on the way.

    Returns (label, sha256) where label is 'verified' when the hash equals the catalogue's and
    'unverified' otherwise: files from a local folder are accepted either way."""
    src, dest = Path(src), Path(dest)
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    total = src.stat().st_size
    h = hashlib.sha256()
    done = 0
    with open(src, "rb") as fi, open(part, "wb") as fo:
        for b in iter(lambda: fi.read(CHUNK), b""):
            fo.write(b)
            h.update(b)
            done += len(b)
            if on_progress:
                on_progress(done, total)
    shutil.copymode(src, part)
    os.chmod(part, 0o644)
    os.replace(part, dest)
    digest = h.hexdigest()
    label = "verified" if expected_sha256 and digest == expected_sha256.lower() else "unverified"
    return label, digest
