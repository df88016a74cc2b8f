"""Console output of the installer: numbered steps, one-line messages, progress bars.

A terminal gets a bar redrawn in place; a pipe or log file gets a line every 10 %, so logs stay
readable."""
from __future__ import annotations

import sys
import time


def human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000.0
    return f"{n:.1f} GB"


class Console:
    def __init__(self, stream=None, total_steps: int = 0, quiet: bool = False):
        self.stream = stream or sys.stdout
        self.total = total_steps
        self.n = 0
        self.quiet = quiet
        self.warnings: list[str] = []
        self.errors: list[str] = []

    @property
    def tty(self) -> bool:
        try:
            return self.stream.isatty()
        except (AttributeError, ValueError):
            return False

    def _w(self, text: str) -> None:
        self.stream.write(text + "\n")
        self.stream.flush()

    def step(self, title: str) -> None:
        self.n += 1
        total = f"/{self.total}" if self.total else ""
        self._w(f"[{self.n}{total}] {title}")

    def info(self, text: str) -> None:
        if not self.quiet:
            self._w(f"      {text}")

    def ok(self, text: str) -> None:
        self._w(f"   ok {text}")

    def warn(self, text: str) -> None:
        self.warnings.append(text)
        self._w(f" warn {text}")

    def error(self, text: str) -> None:
        self.errors.append(text)
        self._w(f"ERROR {text}")

    def bar(self, label: str, total: int | None) -> "Bar":
        return Bar(self, label, total)


class Bar:
    """Progress of one transfer: call update(done_bytes); finish() when done."""

    WIDTH = 28

    def __init__(self, console: Console, label: str, total: int | None):
        self.c = console
        self.label = label
        self.total = total or None
        self.t0 = time.monotonic()
        self.start_bytes = 0
        self.last_decile = -1
        self.last_draw = 0.0

    def begin(self, already: int) -> None:
        """`already` bytes were there before (a resumed .part file): not counted in the speed."""
        self.start_bytes = already
        self.t0 = time.monotonic()

    def update(self, done: int) -> None:
        now = time.monotonic()
        speed = (done - self.start_bytes) / max(now - self.t0, 1e-6)
        if self.c.tty:
            if now - self.last_draw < 0.1 and (self.total is None or done < self.total):
                return
            self.last_draw = now
            if self.total:
                frac = min(1.0, done / self.total)
                n = int(frac * self.WIDTH)
                bar = "#" * n + "." * (self.WIDTH - n)
                text = f"\r      {self.label[:30]:<30} [{bar}] {frac * 100:5.1f}% {human(done)}/{human(self.total)} " \
                       f"{human(speed)}/s "
            else:
                text = f"\r      {self.label[:30]:<30} {human(done)} {human(speed)}/s "
            self.c.stream.write(text)
            self.c.stream.flush()
        elif self.total:
            decile = int(10 * done / self.total)
            if decile != self.last_decile:
                self.last_decile = decile
                self.c.stream.write(f"      {self.label}: {min(100, decile * 10)}% of {human(self.total)}\n")
                self.c.stream.flush()

    def finish(self) -> None:
        if self.c.tty:
            self.c.stream.write("\n")
            self.c.stream.flush()
