"""The model catalogue (``catalog.json`` beside this file) and what a models folder holds.

``catalog.json`` is the one catalogue: official file names, pinned URLs and sha256, the operations
each model serves, native scale, support-file roles.  The stdlib-only installer reads the same
file.  Status of a catalogue file: ``verified`` (sha256 equals the official file's),
``unverified`` (present but different or unpinned: e.g. re-converted weights; they still load),
``missing``.  Hashes are computed lazily and cached by (path, size, mtime).
"""
from __future__ import annotations

import hashlib
import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

CATALOG_PATH = Path(__file__).with_name("catalog.json")
#: A JSON file of further entries (same format) added to the catalogue, an entry with the id of a
#: catalogue entry replacing it: a private collection of models, or a test's local download server.
ENV_EXTRA_CATALOG = "AI_ENHANCE_EXTRA_CATALOG"
#: How the messages tell a user to fetch a catalogue model: the backend downloads it (from GIMP's
#: model manager or the CLI), so neither needs the installer's folder.
INSTALL_COMMAND = "ai-enhance models install {id}"
INSTALL_HINT = ("download it in GIMP with Filters > AI Enhance > Models... (or run "
                "`ai-enhance models install {id}`, or `python3 installer/install.py --models {id}` "
                "from the source folder)")


def load_catalog(path: Path | None = None) -> list[dict]:
    """The catalogue entries (list of dicts, file order)."""
    with open(path or CATALOG_PATH, encoding="utf-8") as f:
        data = json.load(f)
    entries = data["models"] if isinstance(data, dict) else data
    return [dict(e) for e in entries]


_catalog_cache: list[dict] | None = None


def catalog() -> list[dict]:
    """The catalogue, with the entries of AI_ENHANCE_EXTRA_CATALOG when it names a file."""
    global _catalog_cache
    if _catalog_cache is None:
        entries = load_catalog()
        extra = os.environ.get(ENV_EXTRA_CATALOG)
        if extra:
            more = load_catalog(Path(extra))
            ids = {e["id"] for e in more}
            entries = [e for e in entries if e["id"] not in ids] + more
        _catalog_cache = entries
    return _catalog_cache


_hash_lock = threading.Lock()
_hash_cache: dict[tuple[str, int, int], str] = {}


def file_sha256(path: Path) -> str:
    """sha256 of a file, cached by (path, size, mtime_ns): a second call costs one stat()."""
    st = os.stat(path)
    key = (str(Path(path).resolve()), st.st_size, st.st_mtime_ns)
    with _hash_lock:
        got = _hash_cache.get(key)
    if got:
        return got
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    digest = h.hexdigest()
    with _hash_lock:
        _hash_cache[key] = digest
    return digest


def hash_cache_size() -> int:
    with _hash_lock:
        return len(_hash_cache)


@dataclass
class ModelInfo:
    id: str
    name: str
    file: str                          # official (or, for custom models, actual) file name
    path: Path | None                  # where it is (or would be) in the models folder
    installed: bool
    size: int | None                   # official size in bytes (custom: actual)
    url: str | None
    sha256: str | None                 # official sha256 (None: not pinned / custom)
    family: str
    ops: list[str]
    scale: int | None
    role: str | None = None            # None: user-selectable; "face_detector", "companion", ...
    arch: str | None = None
    adapter: str | None = None
    companions: list[str] = field(default_factory=list)
    dni: dict | None = None
    description: str = ""
    license: str | None = None
    custom: bool = False
    purpose: str | None = None         # custom models: spandrel's purpose
    builtin: bool = False              # computed by the backend itself: no file, always installed
    helper: str | None = None          # support networks: how models.helpers builds it
    short: str = ""                    # a short name for layer names ("Real-ESRGAN")
    kind: str = ""                     # photo | illustration | support | custom: the dialogs' grouping

    @property
    def status(self) -> str:
        """verified | unverified | custom | missing (hashes the file once, then cached)."""
        if self.builtin:
            return "builtin"
        if not self.installed or self.path is None:
            return "missing"
        if self.custom:
            return "custom"
        if not self.sha256:
            return "unverified"
        try:
            return "verified" if file_sha256(self.path) == self.sha256.lower() else "unverified"
        except OSError:
            return "missing"

    @property
    def file_size(self) -> int | None:
        try:
            return self.path.stat().st_size if self.path is not None and self.installed else None
        except OSError:
            return None

    @property
    def selectable(self) -> bool:
        return self.role is None

    def to_json(self) -> dict:
        return {
            "id": self.id, "name": self.name, "file": self.file,
            "path": str(self.path) if self.path else None,
            "installed": self.installed, "status": self.status,
            "size": self.size, "file_size": self.file_size,
            "url": self.url, "sha256": self.sha256, "family": self.family,
            "ops": list(self.ops), "scale": self.scale, "role": self.role, "arch": self.arch,
            "companions": list(self.companions), "builtin": self.builtin,
            "description": self.description, "license": self.license, "custom": self.custom,
            "short": self.short or self.id, "kind": self.kind,
        }


def info_from_entry(e: dict, folder: Path) -> ModelInfo:
    if e.get("builtin"):
        return ModelInfo(id=e["id"], name=e.get("name") or e["id"], file="", path=None, installed=True,
                         size=0, url=None, sha256=None, family=e.get("family") or "builtin",
                         ops=list(e.get("ops") or []), scale=e.get("scale") or 1,
                         description=e.get("description") or "", license=e.get("license"),
                         builtin=True, short=e.get("short") or "", kind=e.get("kind") or "photo")
    path = find_file(folder, e["file"])
    return ModelInfo(
        id=e["id"], name=e.get("name") or e["id"], file=e["file"],
        path=path or folder / e["file"], installed=path is not None,
        size=e.get("size"), url=e.get("url"), sha256=(e.get("sha256") or None),
        family=e.get("family") or "", ops=list(e.get("ops") or []), scale=e.get("scale"),
        role=e.get("role"), arch=e.get("arch"), adapter=e.get("adapter"),
        companions=list(e.get("companions") or []), dni=e.get("dni"),
        description=e.get("description") or "", helper=e.get("helper"),
        license=e.get("license"), short=e.get("short") or "", kind=e.get("kind") or "",
    )


def find_file(folder: Path, name: str) -> Path | None:
    """``folder/name`` if it is a file; else a case-insensitive match (downloads renamed by a
    browser or a case-insensitive file system)."""
    p = folder / name
    if p.is_file():
        return p
    try:
        low = name.casefold()
        for q in folder.iterdir():
            if q.name.casefold() == low and q.is_file():
                return q
    except OSError:
        pass
    return None


