"""The batch's progress line (files/s, megapixels/s, ETA) and its final summary."""
from __future__ import annotations

import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from enum import Enum


class Status(str, Enum):
    DONE = "done"            # written this run
    SKIPPED = "skipped"      # already done with this input and recipe (manifest)
    FAILED = "failed"


@dataclass
class FileResult:
    input: str
    output: str
    status: Status
    reason: str = ""
    seconds: float = 0.0
    megapixels: float = 0.0          # input size
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        d = asdict(self)
        d["status"] = self.status.value
        return d


def _clock(seconds: float) -> str:
    s = int(max(0, seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


class Progress:
    """Thread-safe; draws on stderr (a bar on a terminal, a line every 10 % otherwise)."""

    def __init__(self, total: int, *, quiet: bool = False, stream=None):
        self.total = total
        self.quiet = quiet
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.t0 = time.monotonic()
        self.done = self.skipped = self.failed = 0
        self.worked = 0                  # files that took processing (rates are over these)
        self.mp = 0.0
        self._lock = threading.Lock()
        self._last_decile = -1
        self._drawn = False

    @property
    def finished(self) -> int:
        return self.done + self.skipped + self.failed

    def add(self, r: FileResult) -> None:
        with self._lock:
            if r.status is Status.DONE or (r.status is Status.FAILED and r.seconds > 0):
                self.worked += 1
            if r.status is Status.DONE:
                self.done += 1
                self.mp += r.megapixels
            elif r.status is Status.SKIPPED:
                self.skipped += 1
            else:
                self.failed += 1
            self._draw()

    def rates(self) -> tuple[float, float, float | None]:
        """(files/s, MP/s, ETA seconds) over the files processed this run (skips excluded)."""
        dt = max(1e-6, time.monotonic() - self.t0)
        fps = self.worked / dt
        left = self.total - self.finished
        eta = left / fps if fps > 0 else None
        return fps, self.mp / dt, eta

    def line(self) -> str:
        fps, mps, eta = self.rates()
        n = self.finished
        width = 24
        fill = int(width * n / self.total) if self.total else width
        extra = []
        if self.skipped:
            extra.append(f"{self.skipped} skipped")
        if self.failed:
            extra.append(f"{self.failed} failed")
        return (f"[{'#' * fill}{'.' * (width - fill)}] {n}/{self.total} files  {fps:.2f} files/s  "
                f"{mps:.2f} MP/s  ETA {_clock(eta) if eta is not None else '?'}"
                + (f"  ({', '.join(extra)})" if extra else ""))

    def _draw(self) -> None:
        if self.quiet:
            return
        if self.tty:
            self.stream.write("\r" + self.line() + "\x1b[K")
            self.stream.flush()
            self._drawn = True
            return
        decile = int(10 * self.finished / self.total) if self.total else 10
        if decile != self._last_decile:
            self._last_decile = decile
            self.stream.write(self.line() + "\n")
            self.stream.flush()

    def close(self) -> None:
        if self._drawn and not self.quiet:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False


def summary(results: list[FileResult], seconds: float, *, engine: str, recipe_hash: str,
            interrupted: bool = False, problems: list | None = None) -> dict:
    done = [r for r in results if r.status is Status.DONE]
    failed = [r for r in results if r.status is Status.FAILED]
    mp = sum(r.megapixels for r in done)
    failures = [{"input": r.input, "reason": r.reason} for r in failed]
    failures += [{"input": p.input, "reason": p.reason} for p in problems or []]
    return {
        "engine": engine, "recipe": recipe_hash, "interrupted": interrupted,
        "files": len(results), "done": len(done),
        "skipped": sum(r.status is Status.SKIPPED for r in results),
        "failed": len(failures), "seconds": round(seconds, 3),
        "files_per_s": round(len(done) / seconds, 4) if seconds > 0 else 0.0,
        "megapixels_per_s": round(mp / seconds, 4) if seconds > 0 else 0.0,
        "failures": failures,
        "results": [r.to_json() for r in results],
    }


def print_summary(s: dict, stream=None) -> None:
    stream = stream or sys.stderr
    head = "interrupted: " if s["interrupted"] else ""
    stream.write(f"{head}{s['done']} written, {s['skipped']} already done, {s['failed']} failed "
                 f"in {_clock(s['seconds'])} ({s['files_per_s']:.2f} files/s, "
                 f"{s['megapixels_per_s']:.2f} MP/s, engine {s['engine']})\n")
    for f in s["failures"]:
        stream.write(f"  FAILED {f['input']}: {f['reason']}\n")
    stream.flush()
