"""What the installer added to this machine, so that `--uninstall` removes exactly that.

Kept in PREFIX/install-manifest.json:
- files:   files it wrote (model files, the settings file, ...)
- trees:   folders it created and owns entirely (the venv, each plug-in folder)
- dirs:    folders it had to create on the way (removed at uninstall only if empty)
- backups: files it replaced: original path -> copy of the original (restored at uninstall)
- runtime: app-owned folders the backend creates while running (its log folder), with the
           parents that did not exist at install time
- system:  changes outside the user's folders it cannot undo safely (e.g. an apt package),
           reported with the command that undoes them
- state:   fingerprints that make a second run a no-op
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

NAME = "install-manifest.json"
VERSION = 1


class Manifest:
    def __init__(self, prefix: Path):
        self.prefix = Path(prefix)
        self.path = self.prefix / NAME
        self.data: dict = {"version": VERSION, "prefix": str(self.prefix), "files": [], "trees": [],
                           "dirs": [], "backups": {}, "runtime": [], "system": [], "state": {}}
        self.existed = False

    # ------------------------------------------------------------------ persistence
    @classmethod
    def load(cls, prefix: Path) -> "Manifest":
        m = cls(prefix)
        try:
            data = json.loads(m.path.read_text("utf-8"))
            if isinstance(data, dict) and data.get("version") == VERSION:
                for k, v in m.data.items():
                    data.setdefault(k, v)
                m.data = data
                m.existed = True
        except (OSError, ValueError):
            pass
        return m

    def save(self) -> None:
        self.mkdirs(self.prefix)
        text = json.dumps(self.data, indent=1, sort_keys=True)
        try:
            if self.path.read_text("utf-8") == text:
                return
        except OSError:
            pass
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(text, "utf-8")
        os.replace(tmp, self.path)

    # ------------------------------------------------------------------ recording
    def _add(self, key: str, p: Path) -> None:
        s = str(Path(p))
        if s not in self.data[key]:
            self.data[key].append(s)

    def mkdirs(self, d: Path) -> None:
        """mkdir -p, recording every folder it creates."""
        d = Path(d)
        missing = []
        while not d.exists():
            missing.append(d)
            if d.parent == d:
                break
            d = d.parent
        for m in reversed(missing):
            m.mkdir()
            self._add("dirs", m)

    def add_file(self, p: Path) -> None:
        self._add("files", p)

    def add_tree(self, p: Path) -> None:
        self._add("trees", p)

    def owns(self, p: Path) -> bool:
        s = str(Path(p))
        return s in self.data["files"] or s in self.data["trees"] or any(
            s.startswith(t.rstrip(os.sep) + os.sep) for t in self.data["trees"])

    def _backup_slot(self, p: Path) -> Path:
        bdir = self.prefix / "backups"
        self.mkdirs(bdir)
        self._add("trees", bdir)
        return bdir / f"{len(self.data['backups'])}-{p.name}"

    def backup(self, p: Path) -> None:
        """Keep a copy of an existing file we are about to replace (once: the first original)."""
        p = Path(p)
        if str(p) in self.data["backups"] or self.owns(p) or not p.is_file():
            return
        dst = self._backup_slot(p)
        shutil.copy2(p, dst)
        self.data["backups"][str(p)] = str(dst)

    def backup_tree(self, p: Path) -> None:
        """Keep a copy of an existing folder we are about to replace (restored at uninstall)."""
        p = Path(p)
        if str(p) in self.data["backups"] or self.owns(p) or not p.is_dir():
            return
        dst = self._backup_slot(p)
        shutil.copytree(p, dst, symlinks=True)
        self.data["backups"][str(p)] = str(dst)

    def add_runtime(self, d: Path) -> None:
        """An app-owned folder the backend creates at run time (e.g. its logs), removed at
        uninstall with those of its parents that did not exist now."""
        d = Path(d)
        chain = []
        p = d
        while not p.exists() and p.parent != p:
            chain.append(str(p))
            p = p.parent
        entry = {"path": str(d), "new_parents": chain[1:]}
        if not any(r["path"] == entry["path"] for r in self.data["runtime"]):
            self.data["runtime"].append(entry)

    def add_system(self, what: str, undo: str) -> None:
        entry = {"what": what, "undo": undo}
        if entry not in self.data["system"]:
            self.data["system"].append(entry)

    @property
    def state(self) -> dict:
        return self.data["state"]


def uninstall(m: Manifest, log=print, keep: set[str] | None = None) -> list[str]:
    """Remove what `m` lists; returns the paths it had to keep (not empty, or kept on request)."""
    keep = keep or set()
    kept: list[str] = []
    for f in m.data["files"]:
        if f in keep:
            kept.append(f)
            continue
        p = Path(f)
        if p.is_file() or p.is_symlink():
            p.unlink()
            log(f"removed {p}")
        part = p.with_name(p.name + ".part")
        if part.is_file():
            part.unlink()
    bdir = str(m.prefix / "backups")
    for t in sorted(m.data["trees"], key=len, reverse=True):
        p = Path(t)
        if t == bdir:
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
            log(f"removed {p}/")
        elif p.exists() or p.is_symlink():
            p.unlink()
    for orig, bak in m.data["backups"].items():
        b, o = Path(bak), Path(orig)
        if b.is_dir():
            if o.exists():
                shutil.rmtree(o)
            shutil.copytree(b, o, symlinks=True)
        elif b.is_file():
            o.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(b, o)
        else:
            continue
        log(f"restored {orig}")
    if Path(bdir).is_dir():
        shutil.rmtree(bdir)
    for r in m.data["runtime"]:
        p = Path(r["path"])
        if p.is_dir():
            shutil.rmtree(p)
            log(f"removed {p}/ (written by the backend)")
        for parent in r.get("new_parents", []):
            try:
                Path(parent).rmdir()
            except OSError:
                pass
    if m.path.is_file():
        m.path.unlink()
    for d in sorted(m.data["dirs"], key=lambda s: s.count(os.sep), reverse=True):
        p = Path(d)
        if not p.is_dir():
            continue
        try:
            p.rmdir()
        except OSError:
            kept.append(d)
            log(f"kept {p}/: it holds files the installer did not put there")
    return kept
