"""What runs one recipe step on one image: the running backend (``ClientRunner``, the local engine)
or an Engine in this process (``EngineRunner``, inside each Ray actor).  Both are
``run_step(step, pixels) -> StepOutput`` callables for ``apply.apply_recipe``."""
from __future__ import annotations

import random
import threading
import time
from typing import Callable

import numpy as np

from ai_enhance_client.recipes import Step

from ..pixels import NUMPY_OF, WIRE_OF
from .apply import StepFailed, StepOutput


class Stopped(Exception):
    """The run is being stopped (Ctrl-C): the step was cancelled, not failed."""


class ClientRunner:
    """Steps through the running backend, one ZeroMQ client per thread (a Client is not
    thread-safe).  A BUSY answer (the backend's queue is full) is retried with exponential
    back-off and jitter for up to ``busy_wait`` seconds; every other error fails the step."""

    def __init__(self, endpoint: str | None = None, *, busy_wait: float = 600.0,
                 stop: threading.Event | None = None, client_factory: Callable | None = None):
        self.endpoint = endpoint
        self.busy_wait = busy_wait
        self.stop = stop or threading.Event()
        self._local = threading.local()
        self._clients: list = []
        self._lock = threading.Lock()
        self._factory = client_factory
        self.busy_retries = 0

    def _client(self):
        c = getattr(self._local, "client", None)
        if c is None:
            if self._factory is not None:
                c = self._factory()
            else:
                from ai_enhance_client.client import Client
                c = Client(self.endpoint)
            self._local.client = c
            with self._lock:
                self._clients.append(c)
        return c

    def close(self) -> None:
        with self._lock:
            for c in self._clients:
                c.close()
            self._clients.clear()

    def __call__(self, step: Step, pixels: np.ndarray) -> StepOutput:
        from ai_enhance_client import protocol as P
        from ai_enhance_client.client import ClientError

        img = np.ascontiguousarray(pixels)
        if img.ndim == 2:
            img = img[:, :, None]
        spec = P.ImageSpec(img.shape[1], img.shape[0], img.shape[2], WIRE_OF[img.dtype])
        deadline = time.monotonic() + self.busy_wait
        delay = 0.2
        while True:
            if self.stop.is_set():
                raise Stopped()
            try:
                res = self._client().enhance(
                    op=step.op, model=step.model or None, spec=spec, pixels=memoryview(img).cast("B"),
                    scale=step.scale, tile=step.tile, options=dict(step.options), post=dict(step.post),
                    should_cancel=self.stop.is_set)
                break
            except ClientError as e:
                if e.kind == P.ErrorKind.CANCELLED.value and self.stop.is_set():
                    raise Stopped() from None
                if e.kind != P.ErrorKind.BUSY.value or time.monotonic() + delay > deadline:
                    raise StepFailed(str(e)) from None
                self.busy_retries += 1
                # back off with jitter, so that several threads do not retry in lock step
                if self.stop.wait(delay * (0.5 + random.random())):
                    raise Stopped() from None
                delay = min(delay * 2.0, 5.0)
        image = None
        if res.spec is not None:
            image = np.frombuffer(res.pixels, dtype=NUMPY_OF[res.spec.dtype]).reshape(
                res.spec.height, res.spec.width, res.spec.channels)
        masks = {name: np.frombuffer(data, np.uint8).reshape(ms.height, ms.width)
                 for name, (ms, data) in res.masks.items()}
        layers = {name: np.frombuffer(data, dtype=NUMPY_OF[ls.dtype]).reshape(ls.height, ls.width, ls.channels)
                  for name, (ls, data) in res.layers.items()}
        return StepOutput(image, masks, dict(res.info or {}), layers)


class EngineRunner:
    """Steps through an Engine in this process (models loaded once, kept while it lives)."""

    def __init__(self, models_dir=None, device: str = "auto", threads: int | None = None):
        if threads:
            import torch
            torch.set_num_threads(max(1, int(threads)))
        from ..engine import Engine
        from ..models import ModelStore

        self.engine = Engine(ModelStore(models_dir) if models_dir else ModelStore(), device=device)

    def __call__(self, step: Step, pixels: np.ndarray) -> StepOutput:
        from ..errors import EnhanceError
        from ..jobs import JobRequest

        req = JobRequest(op=step.op, model=step.model, scale=step.scale, tile=step.tile,
                         options=dict(step.options), post=dict(step.post))
        try:
            out = self.engine.run(req, {"image": np.ascontiguousarray(pixels)},
                                  lambda fraction, text="": None, lambda: False)
        except EnhanceError as e:
            raise StepFailed(str(e)) from None
        except MemoryError:
            raise StepFailed("out of memory; use a smaller tile size (--tile) or fewer workers") from None
        return StepOutput(out.image, {name: m for name, m in out.masks}, dict(out.info),
                          {name: a for name, a in out.layers})
