"""Recent raw outputs (an operation's output before post-processing), kept so that changing only
the post-processing dials (GIMP's Re-tune, a second run with other dials) skips the model.

Bounded in bytes (least recently used dropped first).  An entry holds the inputs it was made from
(the post stage and the alpha need them) and the raw output; its key is a hash of everything that
decides the raw output: the operation, the resolved model, scale, tile, region, options and the
input pixels, so an identical request finds it too.
"""
from __future__ import annotations

import copy
import hashlib
import json
import threading
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

from .jobs import JobOutput, JobRequest


@dataclass
class RawEntry:
    request: JobRequest                  # op, model, scale, tile, roi, options (post unused)
    inputs: dict                         # name -> array (copies: the received frames are freed)
    output: JobOutput                    # before post-processing, alpha not merged
    nbytes: int = field(default=0)


def content_key(req: JobRequest, inputs: dict) -> str:
    h = hashlib.blake2b(digest_size=16)
    h.update(json.dumps({"op": req.op, "model": req.model, "scale": req.scale, "tile": req.tile,
                         "roi": list(req.roi) if req.roi else None, "options": req.options},
                        sort_keys=True, default=str).encode())
    for name in sorted(inputs):
        a = np.ascontiguousarray(inputs[name])
        h.update(f"{name}:{a.shape}:{a.dtype.str}".encode())
        h.update(memoryview(a).cast("B"))
    return h.hexdigest()


def _size(out: JobOutput, inputs: dict) -> int:
    arrays = [out.image] if out.image is not None else []
    arrays += [m for _, m in out.masks] + [a for _, a in out.layers] + list(inputs.values())
    return sum(a.nbytes for a in arrays)


class RawCache:
    def __init__(self, max_bytes: int):
        self.max_bytes = max(0, int(max_bytes))
        self._items: OrderedDict[str, RawEntry] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: str) -> RawEntry | None:
        """A copy-safe view of the entry (its output's lists are fresh: post appends to them)."""
        with self._lock:
            e = self._items.get(key)
            if e is None:
                return None
            self._items.move_to_end(key)
        out = JobOutput(e.output.image, list(e.output.masks), copy.deepcopy(e.output.info),
                        list(e.output.layers))
        return RawEntry(e.request, e.inputs, out, e.nbytes)

    def put(self, key: str, req: JobRequest, inputs: dict, out: JobOutput) -> None:
        entry = RawEntry(copy.copy(req), {k: np.array(v) for k, v in inputs.items()},
                         JobOutput(out.image, list(out.masks), copy.deepcopy(out.info), list(out.layers)))
        entry.nbytes = _size(entry.output, entry.inputs)
        if entry.nbytes > self.max_bytes:
            return
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= old.nbytes
            self._items[key] = entry
            self._bytes += entry.nbytes
            while self._bytes > self.max_bytes and self._items:
                _, gone = self._items.popitem(last=False)
                self._bytes -= gone.nbytes

    @property
    def nbytes(self) -> int:
        with self._lock:
            return self._bytes

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)
