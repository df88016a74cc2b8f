"""Which files a batch processes and where each result goes.

Inputs are files, folders (searched recursively for PNG, JPEG, TIFF and WebP files) and glob
patterns (``photos/**/*.jpg``); the output keeps each file's path relative to the folder (or the
pattern's fixed part) it was found under.  Nothing inside the output folder is ever taken as an
input, so a rerun into a folder beneath the inputs does not process its own results.
"""
from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from .files import EXTENSIONS, FORMATS


@dataclass(frozen=True)
class Item:
    path: Path                 # the input file (absolute)
    rel: PurePosixPath         # its path relative to where it was found
    out: PurePosixPath         # the output path relative to the output folder


@dataclass(frozen=True)
class Problem:
    input: str
    reason: str


def _has_magic(s: str) -> bool:
    return any(ch in s for ch in "*?[")


def _glob_base(pattern: str) -> Path:
    parts = Path(pattern).parts
    fixed = []
    for part in parts:
        if _has_magic(part):
            break
        fixed.append(part)
    return Path(*fixed) if fixed else Path(".")


def _inside(p: Path, root: Path) -> bool:
    try:
        p.relative_to(root)
        return True
    except ValueError:
        return False


def output_rel(rel: PurePosixPath, fmt: str | None) -> PurePosixPath:
    """The output's relative path: the input's, with the extension of ``fmt`` when given."""
    return rel.with_suffix(FORMATS[fmt]) if fmt else rel


def gather(inputs: list[str], out_dir: Path, fmt: str | None = None) -> tuple[list[Item], list[Problem]]:
    """Items in a stable order (sorted within each input), and the inputs that gave nothing or
    collide on an output name."""
    out_root = out_dir.resolve()
    found: list[tuple[Path, PurePosixPath]] = []
    problems: list[Problem] = []
    for arg in inputs:
        p = Path(arg).expanduser()
        if p.is_dir():
            base = p.resolve()
            files = sorted(f for f in base.rglob("*") if f.suffix.lower() in EXTENSIONS and f.is_file()
                           and not any(part.startswith(".") for part in f.relative_to(base).parts))
            files = [f for f in files if not _inside(f.resolve(), out_root)]
            if not files:
                problems.append(Problem(arg, "no PNG, JPEG, TIFF or WebP files in this folder"))
            found += [(f.resolve(), PurePosixPath(f.relative_to(base).as_posix())) for f in files]
        elif p.is_file():
            found.append((p.resolve(), PurePosixPath(p.name)))
        elif _has_magic(arg):
            base = _glob_base(os.path.expanduser(arg)).resolve()
            files = sorted(Path(m).resolve() for m in glob.glob(os.path.expanduser(arg), recursive=True)
                           if Path(m).is_file())
            files = [f for f in files if not _inside(f, out_root)]
            if not files:
                problems.append(Problem(arg, "the pattern matches no files"))
            for f in files:
                rel = f.relative_to(base) if _inside(f, base) else Path(f.name)
                found.append((f, PurePosixPath(rel.as_posix())))
        else:
            problems.append(Problem(arg, "no such file or folder"))
    items: list[Item] = []
    seen_in: set[Path] = set()
    seen_out: dict[str, Path] = {}
    for path, rel in found:
        if path in seen_in:
            continue
        seen_in.add(path)
        out = output_rel(rel, fmt)
        key = out.as_posix().casefold()          # case-insensitive file systems collide too
        if key in seen_out:
            problems.append(Problem(str(path), f"its output {out} would overwrite the output of "
                                               f"{seen_out[key]}; rename one or run them separately"))
            continue
        seen_out[key] = path
        items.append(Item(path, rel, out))
    return items, problems
