"""The one cache of loaded networks: spandrel models and helper networks (face detector, face
parser, ...) alike.

Entries are built once per key (concurrent callers of the same key wait for one build), marked in
use while a job runs them, dropped when idle longer than ``idle_s`` and, for models, bounded in
number (the least recently used idle one goes first).  Helper networks are small and follow the
same idle clock but do not count against the bound.
"""
from __future__ import annotations

import logging
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Callable, Hashable, Iterator

log = logging.getLogger("ai_enhance.cache")


class EntryKind(str, Enum):
    MODEL = "model"          # a spandrel model a user picked: listed as loaded, bounded in number
    HELPER = "helper"        # a support network of an operation (detector, parser)


@dataclass
class Entry:
    key: Hashable
    obj: Any
    kind: EntryKind
    label: str
    last_used: float = field(default_factory=time.monotonic)
    in_use: int = 0


class NetworkCache:
    def __init__(self, max_models: int = 3, idle_s: float = 600.0,
                 on_drop: Callable[[], None] | None = None):
        self.max_models = max(1, int(max_models))
        self.idle_s = float(idle_s)
        self.on_drop = on_drop                  # e.g. empty the CUDA cache after dropping
        self._entries: dict[Hashable, Entry] = {}
        self._lock = threading.RLock()
        self._building: dict[Hashable, threading.Lock] = {}
        self.builds: dict[EntryKind, int] = {k: 0 for k in EntryKind}   # networks built, per kind

    def get(self, key: Hashable, build: Callable[[], Any], *, kind: EntryKind = EntryKind.MODEL,
            label: str = "") -> Any:
        """The cached object for ``key``, built by ``build()`` on first use (once, also when
        several threads ask at the same time)."""
        with self._lock:
            e = self._entries.get(key)
            if e is not None:
                e.last_used = time.monotonic()
                return e.obj
            gate = self._building.setdefault(key, threading.Lock())
        with gate:
            with self._lock:
                e = self._entries.get(key)
                if e is not None:
                    return e.obj
            obj = build()
            self.builds[kind] += 1
            with self._lock:
                self._entries[key] = Entry(key, obj, kind, label or str(key))
                self._building.pop(key, None)
                dropped = self._evict()
        if dropped:
            self._dropped(dropped)
        return obj

    def peek(self, key: Hashable) -> Any | None:
        with self._lock:
            e = self._entries.get(key)
            return None if e is None else e.obj

    @contextmanager
    def using(self, key: Hashable) -> Iterator[None]:
        """Mark ``key`` in use: never dropped while inside."""
        with self._lock:
            e = self._entries.get(key)
            if e is not None:
                e.in_use += 1
        try:
            yield
        finally:
            with self._lock:
                if e is not None:
                    e.in_use -= 1
                    e.last_used = time.monotonic()

    def unload_idle(self, now: float | None = None) -> list[Entry]:
        """Drop entries unused for ``idle_s`` (never those in use); returns them."""
        now = time.monotonic() if now is None else now
        with self._lock:
            old = [e for e in self._entries.values() if not e.in_use and now - e.last_used >= self.idle_s]
            for e in old:
                del self._entries[e.key]
        if old:
            self._dropped(old)
        return old

    def clear(self) -> None:
        with self._lock:
            gone = [e for e in self._entries.values() if not e.in_use]
            for e in gone:
                del self._entries[e.key]
        if gone:
            self._dropped(gone)

    def entries(self, kind: EntryKind | None = None) -> list[Entry]:
        with self._lock:
            return [e for e in self._entries.values() if kind is None or e.kind is kind]

    def _evict(self) -> list[Entry]:
        """Under the lock: the least recently used idle models beyond the bound."""
        gone = []
        while True:
            models = [e for e in self._entries.values() if e.kind is EntryKind.MODEL]
            if len(models) <= self.max_models:
                return gone
            idle = [e for e in models if not e.in_use]
            if not idle:
                return gone
            victim = min(idle, key=lambda e: e.last_used)
            del self._entries[victim.key]
            gone.append(victim)

    def _dropped(self, entries: list[Entry]) -> None:
        log.info("unloaded: %s", ", ".join(e.label for e in entries))
        if self.on_drop is not None:
            try:
                self.on_drop()
            except Exception:  # noqa: BLE001 - freeing memory must never fail a job
                log.exception("freeing device memory failed")
