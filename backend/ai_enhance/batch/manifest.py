"""The resume manifest: one line of JSON per finished output, in the output folder.

A line is appended (and fsync'ed) only after its output has been renamed into place, so the
manifest never names a file that is not complete.  Before a run starts writing, one "writing" line
per output it may write records the intent: a file there that the manifest does not list as done
is then known to be this batch's (a kill between the rename and the manifest line), and is redone
rather than refused as somebody else's.  Each line records the input's sha256 and the
recipe hash; a rerun skips an output whose line matches both (and whose file is there) and redoes
the others.  A line cut short by a kill is ignored.  At the start of a run the file is compacted
(one line per output, written to a temporary name and renamed).
"""
from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

NAME = ".ai-enhance-manifest.jsonl"
LOCK_NAME = ".ai-enhance-batch.lock"


@dataclass(frozen=True)
class Entry:
    output: str              # relative to the output folder, POSIX separators
    input: str               # the input file it came from
    input_sha256: str
    recipe: str              # recipe hash (recipes.Recipe.digest with the output settings)
    bytes: int = 0
    finished: float = 0.0    # time.time()


class Manifest:
    def __init__(self, out_dir: Path):
        self.path = Path(out_dir) / NAME
        self.entries: dict[str, Entry] = {}
        self.intents: set[str] = set()   # outputs a run set out to write (done or not)
        self._lock = threading.Lock()
        self._load()

    def _load(self) -> None:
        try:
            text = self.path.read_text("utf-8")
        except FileNotFoundError:
            return
        except (OSError, UnicodeDecodeError):
            return
        for line in text.splitlines():
            try:
                d = json.loads(line)
                if d.get("state") == "writing":
                    self.intents.add(str(d["output"]))
                    continue
                e = Entry(**{k: d[k] for k in Entry.__dataclass_fields__ if k in d})
            except (ValueError, TypeError, KeyError):
                continue          # a line cut short by a kill, or garbage: as if absent
            self.entries[e.output] = e

    def compact(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            for e in self.entries.values():
                f.write(json.dumps(asdict(e), sort_keys=True) + "\n")
            for o in sorted(self.intents - set(self.entries)):
                f.write(json.dumps({"output": o, "state": "writing"}) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)

    def is_done(self, output: str, input_sha256: str, recipe: str, out_dir: Path) -> bool:
        e = self.entries.get(output)
        return (e is not None and e.input_sha256 == input_sha256 and e.recipe == recipe
                and (Path(out_dir) / output).is_file())

    def knows(self, output: str) -> bool:
        """Whether a batch into this folder wrote (or set out to write) ``output``."""
        return output in self.entries or output in self.intents

    def record_intents(self, outputs: list[str]) -> None:
        new = [o for o in outputs if o not in self.intents]
        if not new:
            return
        with self._lock:
            self.intents.update(new)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as f:
                for o in new:
                    f.write(json.dumps({"output": o, "state": "writing"}) + "\n")
                f.flush()
                os.fsync(f.fileno())

    def record(self, entry: Entry) -> None:
        line = json.dumps(asdict(entry), sort_keys=True) + "\n"
        with self._lock:
            self.entries[entry.output] = entry
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(line)
                f.flush()
                os.fsync(f.fileno())

    def lines(self) -> list[dict]:
        """Every "done" line of the file as written (tests check none is there twice per run)."""
        out = []
        try:
            for line in self.path.read_text("utf-8").splitlines():
                try:
                    d = json.loads(line)
                    if d.get("state") != "writing":
                        out.append(d)
                except ValueError:
                    continue
        except OSError:
            pass
        return out


class RunLock:
    """One batch at a time per output folder (an advisory lock file; POSIX only)."""

    def __init__(self, out_dir: Path):
        self.path = Path(out_dir) / LOCK_NAME
        self._f = None

    def acquire(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(self.path, "a+")
        try:
            import fcntl
        except ImportError:      # Windows: no advisory lock; the user runs one batch per folder
            return True
        try:
            fcntl.flock(self._f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._f.close()
            self._f = None
            return False
        self._f.seek(0)
        self._f.truncate()
        self._f.write(f"{os.getpid()} {time.time():.0f}\n")
        self._f.flush()
        return True

    def release(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None
