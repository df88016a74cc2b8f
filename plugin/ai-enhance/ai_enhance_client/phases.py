"""Where one plug-in call spends its time: named phases, measured with perf_counter, written as
one JSON line per call to the file named by AI_ENHANCE_PROFILE (nothing is measured or written
without it).  bench/bench_gimp.py reads these lines; ``summarize`` turns many calls into medians.

GIMP 3 starts a new plug-in process for every call, so the process's own start (fork + exec +
Python's start-up, before the plug-in's first line runs) is part of a call's cost: the caller sees
it as the time from its call to ``wall0``, the plug-in's first line.

Standard library only, and only os and time at import: the plug-in imports this first.
"""
from __future__ import annotations

import os
import time

ENV = "AI_ENHANCE_PROFILE"


class PhaseClock:
    """``mark(name)``: the time since the previous mark was spent in ``name`` (a name marked twice
    adds up).  ``wall0`` / ``wall_end`` are wall-clock times, comparable across processes."""

    def __init__(self, path: str | None, *, clock=time.perf_counter, wall=time.time,
                 start: tuple[float, float] | None = None):
        """``start``: (wall, clock) readings taken earlier, at the plug-in's very first line."""
        self.path = path
        self._clock, self._wall = clock, wall
        self.wall0, self._last = start if start is not None else (wall(), clock())
        self.phases: dict[str, float] = {}
        self.extra: dict = {}

    @property
    def enabled(self) -> bool:
        return bool(self.path)

    def mark(self, name: str) -> None:
        if not self.path:
            return
        now = self._clock()
        self.phases[name] = self.phases.get(name, 0.0) + (now - self._last)
        self._last = now

    def record(self) -> dict:
        return {"wall0": self.wall0, "wall_end": self._wall(),
                "phases": {k: round(v, 6) for k, v in self.phases.items()}, **self.extra}

    def write(self) -> None:
        """Append this call's line; never fails the call (a profile is a diagnostic)."""
        if not self.path:
            return
        import json
        try:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(self.record()) + "\n")
        except OSError:
            pass


def from_env(start: tuple[float, float] | None = None) -> PhaseClock:
    return PhaseClock(os.environ.get(ENV) or None, start=start)


def summarize(records: list[dict]) -> dict[str, float]:
    """Median seconds of every phase over ``records`` (``phases`` dicts), in first-seen order; a
    phase missing from a record counts as 0 there (e.g. a call that did not need it)."""
    import statistics
    names: list[str] = []
    for r in records:
        for k in r.get("phases", {}):
            if k not in names:
                names.append(k)
    return {k: statistics.median([float(r.get("phases", {}).get(k, 0.0)) for r in records])
            for k in names} if records else {}
