"""Reads backend/ai_enhance/models/catalog.json (the one model catalogue) defensively, without the backend.

The file is a JSON object holding a list of entries (or a bare list); each entry has at least
`id`, `file`, `url`, `sha256` (null = not pinned) and `family`, optionally `role`, `companions`
(ids installed together with it), `size`."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

#: What the installer installs without --models: two upscalers, face restoration and its detector.
DEFAULT_MODELS = ("realesrgan-x4plus", "realesr-general-x4v3", "gfpgan-v1.4")


class CatalogError(Exception):
    pass


@dataclass
class Entry:
    id: str
    file: str
    url: str | None = None
    sha256: str | None = None
    family: str = ""
    role: str = ""
    companions: list[str] = field(default_factory=list)
    ops: list[str] = field(default_factory=list)
    size: int | None = None
    name: str = ""
    raw: dict = field(default_factory=dict, repr=False)

    @property
    def is_face_detector(self) -> bool:
        return self.role == "face_detector"


def _entries_of(data) -> list:
    if isinstance(data, list):
        return data
    if isinstance(data, dict):
        for key in ("models", "entries", "catalog", "catalogue"):
            if isinstance(data.get(key), list):
                return data[key]
        for v in data.values():
            if isinstance(v, list) and v and all(isinstance(x, dict) and "id" in x for x in v):
                return v
        # {"id": {...}, ...}
        if data and all(isinstance(v, dict) for v in data.values()):
            return [dict(v, id=v.get("id", k)) for k, v in data.items()]
    raise CatalogError("catalog.json holds no list of model entries")


def load_catalog(path: Path) -> list[Entry]:
    try:
        data = json.loads(Path(path).read_text("utf-8"))
    except OSError as e:
        raise CatalogError(f"cannot read the model catalogue {path} ({e.strerror})") from None
    except ValueError as e:
        raise CatalogError(f"the model catalogue {path} is not valid JSON ({e})") from None
    out: list[Entry] = []
    for raw in _entries_of(data):
        if not isinstance(raw, dict):
            continue
        mid, f = raw.get("id"), raw.get("file") or raw.get("filename")
        if not isinstance(mid, str) or not isinstance(f, str) or not f or "/" in f or "\\" in f or f.startswith("."):
            continue
        comp = raw.get("companions") or []
        if isinstance(comp, str):
            comp = [comp]
        sha = raw.get("sha256")
        size = raw.get("size")
        out.append(Entry(id=mid, file=f, url=raw.get("url") if isinstance(raw.get("url"), str) else None,
                         sha256=sha.lower() if isinstance(sha, str) and sha else None,
                         family=str(raw.get("family") or ""), role=str(raw.get("role") or ""),
                         companions=[c for c in comp if isinstance(c, str)],
                         ops=[o for o in (raw.get("ops") or []) if isinstance(o, str)],
                         size=size if isinstance(size, int) and size > 0 else None,
                         name=str(raw.get("name") or mid), raw=raw))
    if not out:
        raise CatalogError(f"the model catalogue {path} has no usable entry (id + file)")
    return out


def select(entries: list[Entry], ids: list[str] | None) -> tuple[list[Entry], list[str]]:
    """The entries to install for `ids` (None: the defaults), with their companions, in a stable
    order.  Returns (entries, unknown ids)."""
    by_id = {e.id: e for e in entries}
    wanted = list(ids) if ids else list(DEFAULT_MODELS)
    unknown = [i for i in wanted if i not in by_id]
    chosen: list[Entry] = []
    seen: set[str] = set()

    def add(mid: str) -> None:
        e = by_id.get(mid)
        if e is None or mid in seen:
            return
        seen.add(mid)
        chosen.append(e)
        for c in e.companions:
            add(c)

    for mid in wanted:
        add(mid)
    # A face model is no use without the face detector: add it when no companion named it.
    needs_detector = any("faces" in e.ops for e in chosen)
    if needs_detector and not any(e.is_face_detector for e in chosen):
        for e in entries:
            if e.is_face_detector:
                add(e.id)
                break
    return chosen, unknown
