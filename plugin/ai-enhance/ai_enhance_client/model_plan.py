"""What installing or removing catalogue models involves: which files, how many bytes.

One decision for both sides: the backend follows it when it downloads or deletes, the GIMP
dialog shows it before ("Download (349 MB)").  It works on the model entries of the backend's
capabilities (dicts with ``id``, ``installed``, ``size``, ``role``, ``companions``, ``url``,
``sha256``, ``builtin``, ``custom``), so the plug-in needs nothing but a ping.

A model's ``companions`` are the entries it needs.  A companion with a support ``role`` (a face
detector, a face parser) is satisfied by ANY installed entry of that role: a small detector already
there saves the download of the large one.

Standard library only (this file runs inside GIMP's Python).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence


#: Support roles where any one file does the job (the face pipeline takes the first installed).
SHARED_ROLES = frozenset({"face_detector", "face_parser"})


@dataclass(frozen=True)
class InstallPlan:
    ids: tuple[str, ...]                 # to download, in order: the asked-for ones, then what they need
    bytes: int | None                    # their total size (None: a size is unknown)
    present: tuple[str, ...] = ()        # asked for, already installed
    unknown: tuple[str, ...] = ()        # no such catalogue entry
    refused: tuple[str, ...] = ()        # no pinned URL and sha256: cannot be downloaded safely

    @property
    def ok(self) -> bool:
        return not self.unknown and not self.refused


@dataclass(frozen=True)
class RemovalPlan:
    ids: tuple[str, ...]                 # files to delete: the asked-for ones, then orphaned support files
    not_installed: tuple[str, ...] = ()
    unknown: tuple[str, ...] = ()
    builtin: tuple[str, ...] = ()        # computed by the backend: nothing to remove


def _by_id(models: Iterable[Mapping]) -> dict[str, Mapping]:
    return {m["id"]: m for m in models if isinstance(m, Mapping) and isinstance(m.get("id"), str)}


def downloadable(m: Mapping) -> bool:
    return bool(m.get("url")) and bool(m.get("sha256")) and not m.get("custom") and not m.get("builtin")


def install_plan(models: Iterable[Mapping], ids: Sequence[str]) -> InstallPlan:
    by_id = _by_id(models)
    roles_installed = {m.get("role") for m in by_id.values()
                       if m.get("role") in SHARED_ROLES and m.get("installed")}
    chosen: list[str] = []
    present: list[str] = []
    unknown: list[str] = []
    refused: list[str] = []

    def add(mid: str, asked: bool) -> None:
        m = by_id.get(mid)
        if m is None:
            if asked:
                unknown.append(mid)
            return
        if mid in chosen or mid in present:
            return
        if m.get("installed") or m.get("builtin"):
            if asked:               # there: but what it needs may be missing (a repair)
                present.append(mid)
                for c in m.get("companions") or []:
                    add(c, False)
            return
        if not asked and m.get("role") and m.get("role") in roles_installed:
            return                      # another file of that role is there already
        if not downloadable(m):
            refused.append(mid)
            return
        chosen.append(mid)
        if m.get("role") in SHARED_ROLES:
            roles_installed.add(m.get("role"))
        for c in m.get("companions") or []:
            add(c, False)

    for mid in ids:
        add(mid, True)
    sizes = [by_id[m].get("size") for m in chosen]
    total = sum(sizes) if all(isinstance(s, int) and s > 0 for s in sizes) else None
    return InstallPlan(tuple(chosen), total, tuple(present), tuple(unknown), tuple(refused))


def removal_plan(models: Iterable[Mapping], ids: Sequence[str]) -> RemovalPlan:
    by_id = _by_id(models)
    gone: list[str] = []
    not_installed, unknown, builtin = [], [], []
    for mid in ids:
        m = by_id.get(mid)
        if m is None:
            unknown.append(mid)
        elif m.get("builtin"):
            builtin.append(mid)
        elif not m.get("installed"):
            not_installed.append(mid)
        elif mid not in gone:
            gone.append(mid)

    def serves(companion_id: str, support: Mapping) -> bool:
        cm = by_id.get(companion_id)
        return companion_id == support["id"] or (
            cm is not None and cm.get("role") in SHARED_ROLES and cm.get("role") == support.get("role"))

    def needed(support: Mapping) -> bool:
        """Does a model that stays installed need this support file (or any of its role)?"""
        return any(serves(c, support) for m in by_id.values()
                   if m["id"] not in gone and m.get("installed") and not m.get("role")
                   for c in m.get("companions") or [])

    # the support files the removed models needed (any of a shared role), unless a model that
    # stays needs them: a companion without a role is a model of its own and stays
    for mid in list(gone):
        for c in by_id[mid].get("companions") or []:
            cm = by_id.get(c)
            if cm is None or not cm.get("role"):
                continue
            candidates = [x for x in by_id.values() if serves(c, x)]
            for x in candidates:
                if x.get("installed") and x["id"] not in gone and x.get("role") and not needed(x):
                    gone.append(x["id"])
    return RemovalPlan(tuple(gone), tuple(not_installed), tuple(unknown), tuple(builtin))


def human_size(n: int | None) -> str:
    """"349 MB", "4.9 MB", "1.2 GB" (decimal units, as download sizes are usually given)."""
    if not isinstance(n, int) or n <= 0:
        return "size unknown"
    if n >= 1e9:
        return f"{n / 1e9:.1f} GB"
    if n >= 1e6:
        return f"{n / 1e6:.0f} MB" if n >= 1e7 else f"{n / 1e6:.1f} MB"
    return f"{max(1, round(n / 1e3))} KB"
