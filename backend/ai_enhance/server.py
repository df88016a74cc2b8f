"""`ai-enhance serve`: the persistent ZeroMQ service.

One ROUTER socket, owned by the main thread, answers pings, heartbeats and cancels at once; jobs go
into a bounded queue worked by one worker thread (one accelerator: jobs run one at a time, models
stay loaded between them).  The worker hands replies back through an in-process queue and wakes the
main thread with an inproc socket.  Clients send a heartbeat per second while they wait; a job whose
client falls silent (GIMP's Cancel kills the plug-in process outright) is dropped.
"""
from __future__ import annotations

import collections
import contextlib
import ipaddress
import logging
import logging.handlers
import os
import queue
import signal
import stat
import threading
import time
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import zmq

from ai_enhance_client import protocol as P

from . import __version__, paths
from .errors import Cancelled, EnhanceError
from .jobs import JobRequest
from .pixels import NUMPY_OF, WIRE_OF

log = logging.getLogger("ai_enhance.server")

#: How often the capabilities (model list, devices, loaded models) are rebuilt off the I/O thread.
CAPS_REFRESH_S = 2.0


class ServerError(Exception):
    """The backend cannot start (endpoint taken, unsafe endpoint, ...): one line with a fix."""


class JobState(str, Enum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"


@dataclass
class ServeConfig:
    endpoint: str = ""
    models_dir: Path | None = None
    log_file: Path | None = None
    device: str = "auto"
    queue_size: int = 8                 # queued + running jobs; more -> BUSY at once
    client_timeout: float = 5.0         # a job's client silent this long -> job dropped
    idle_unload: float = 600.0          # unload models unused this long
    max_input_pixels: int = 64_000_000
    max_output_pixels: int = 256_000_000
    max_frame_bytes: int = P.MAX_FRAME_BYTES


@dataclass
class Job:
    identity: bytes
    job_id: str
    request: JobRequest
    inputs: dict                        # name -> numpy view of a received frame
    frames: list                        # keeps the received buffers alive (inputs are views)
    deadline: float | None
    state: JobState = JobState.QUEUED
    last_seen: float = field(default_factory=time.monotonic)
    cancel: threading.Event = field(default_factory=threading.Event)
    cancel_reason: P.ErrorKind = P.ErrorKind.CANCELLED
    heartbeat: float | None = None      # the client's own silence limit (GIMP: ~1 s), else the config's


# --------------------------------------------------------------------------- endpoint safety

def check_endpoint(endpoint: str) -> None:
    """Only loopback TCP or an IPC socket in a private (0700) folder: the backend has no auth."""
    scheme = endpoint.split("://", 1)[0] if "://" in endpoint else ""
    if scheme == "tcp":
        host = urlsplit(endpoint).hostname or ""
        try:
            ok = host == "localhost" or ipaddress.ip_address(host).is_loopback
        except ValueError:
            ok = False
        if not ok or urlsplit(endpoint).port is None:
            raise ServerError(f"refusing to listen on {endpoint}: the backend only listens on loopback "
                              "(e.g. tcp://127.0.0.1:5588) or ipc://; it has no authentication")
    elif scheme == "ipc":
        path = Path(endpoint[len("ipc://"):])
        folder = path.parent
        if not folder.exists():
            folder.mkdir(parents=True, mode=0o700)
        st = folder.stat()
        if hasattr(os, "getuid") and (st.st_uid != os.getuid() or st.st_mode & (stat.S_IRWXG | stat.S_IRWXO)):
            raise ServerError(f"refusing ipc endpoint {endpoint}: folder {folder} must belong to you with "
                              "mode 0700 (chmod 700 it, or pick a private folder)")
    else:
        raise ServerError(f"unsupported endpoint {endpoint!r}; use tcp://127.0.0.1:PORT or ipc:///private/dir/sock")


# --------------------------------------------------------------------------- server

class Server:
    def __init__(self, config: ServeConfig, engine=None):
        self.cfg = config
        if engine is None:
            from .engine import Engine
            from .models import ModelStore

            engine = Engine(ModelStore(config.models_dir), device=config.device,
                            idle_unload_s=config.idle_unload)
        self.engine = engine
        self.ctx = zmq.Context()
        self.jobs: dict[str, Job] = {}
        self.queue: collections.deque[Job] = collections.deque()
        self.cv = threading.Condition()
        self.outbox: queue.SimpleQueue = queue.SimpleQueue()
        self.wake_addr = f"inproc://wake-{id(self)}"
        self.stopping = threading.Event()
        self.started = time.time()
        self.jobs_done = 0
        self._caps: dict | None = None
        self._caps_lock = threading.Lock()
        self._caps_wanted = threading.Event()

    # ------------------------------------------------------------ lifecycle
    def bind(self) -> None:
        check_endpoint(self.cfg.endpoint)
        self._refuse_if_answering()
        self.router = self.ctx.socket(zmq.ROUTER)
        self.router.setsockopt(zmq.LINGER, 1000)
        self.router.setsockopt(zmq.MAXMSGSIZE, self.cfg.max_frame_bytes)
        self.router.setsockopt(zmq.SNDHWM, 1000)
        try:
            self.router.bind(self.cfg.endpoint)
        except zmq.ZMQError as e:
            self.router.close(0)
            if e.errno == zmq.EADDRINUSE:
                raise ServerError(f"{self.cfg.endpoint} is already in use by another program; stop it "
                                  "or set AI_ENHANCE_ENDPOINT to a free port") from None
            raise ServerError(f"cannot listen on {self.cfg.endpoint}: {e}") from None
        self.wake_pull = self.ctx.socket(zmq.PULL)
        self.wake_pull.bind(self.wake_addr)

    def _refuse_if_answering(self) -> None:
        from ai_enhance_client.client import Client
        c = Client(self.cfg.endpoint, context=self.ctx)
        try:
            caps = c.ping(timeout=0.7)
        finally:
            c.close()
        if caps is not None:
            raise ServerError(f"another ai-enhance backend (pid {caps.get('pid')}) already serves "
                              f"{self.cfg.endpoint}; use it, or stop it first")

    def serve_forever(self) -> None:
        self.bind()
        worker = threading.Thread(target=self._worker, name="ai-enhance-worker", daemon=True)
        worker.start()
        self._refresh_caps()   # import torch and probe devices now, not at the first ping
        log.info("device: %s", self._caps.get("device"))
        threading.Thread(target=self._caps_loop, name="ai-enhance-caps", daemon=True).start()
        log.info("serving on %s (pid %d, models %s)", self.cfg.endpoint, os.getpid(), self.cfg.models_dir)
        try:
            self._loop()
        finally:
            self.stopping.set()
            with self.cv:
                for job in self.jobs.values():
                    job.cancel.set()
                self.cv.notify_all()
            worker.join(timeout=10)
            self.router.close(0)
            self.wake_pull.close(0)
            self.ctx.term()
            log.info("stopped")

    def stop(self) -> None:
        self.stopping.set()

    # ------------------------------------------------------------ capabilities (own thread)
    def _refresh_caps(self) -> None:
        """Rebuild the capabilities: listing the models may hash a newly dropped file, probing
        devices may take a while: never on the I/O thread, which must answer heartbeats."""
        try:
            caps = self.engine.capabilities()
        except Exception:  # noqa: BLE001 - keep the last good answer
            log.exception("building the capabilities failed")
            return
        with self._caps_lock:
            self._caps = caps

    def _caps_loop(self) -> None:
        while not self.stopping.is_set():
            self._caps_wanted.wait(CAPS_REFRESH_S)
            self._caps_wanted.clear()
            if not self.stopping.is_set():
                self._refresh_caps()

    def refresh_capabilities(self) -> None:
        """Ask the capabilities thread for a rebuild now (after a job, a model install ...)."""
        self._caps_wanted.set()

    def capabilities(self) -> dict:
        with self._caps_lock:
            caps = dict(self._caps or {})
        caps["loaded"] = self.engine.loaded_models()    # cheap, and should be current
        return caps

    # ------------------------------------------------------------ main thread
    def _loop(self) -> None:
        poller = zmq.Poller()
        poller.register(self.router, zmq.POLLIN)
        poller.register(self.wake_pull, zmq.POLLIN)
        next_watch = 0.0
        while not self.stopping.is_set():
            events = dict(poller.poll(250))
            if self.wake_pull in events:
                while self.wake_pull.poll(0):
                    self.wake_pull.recv()
            self._flush_outbox()
            if self.router in events:
                for _ in range(100):   # drain, but keep the outbox flowing
                    try:
                        frames = self.router.recv_multipart(zmq.NOBLOCK, copy=False)
                    except zmq.Again:
                        break
                    self._handle(frames)
            now = time.monotonic()
            if now >= next_watch:
                self._watchdog(now)
                next_watch = now + 0.2    # a client asking for a short heartbeat limit gets it
        self._flush_outbox()

    def _send(self, identity: bytes, frames: list) -> None:
        try:
            self.router.send_multipart([identity, *frames], copy=False)
        except zmq.ZMQError as e:   # peer gone: nothing to tell
            log.debug("send to gone peer failed: %s", e)

    def _flush_outbox(self) -> None:
        while True:
            try:
                identity, job_id, frames, final = self.outbox.get_nowait()
            except queue.Empty:
                return
            self._send(identity, frames)
            if final:
                with self.cv:
                    self.jobs.pop(job_id, None)

    def _handle(self, frames: list) -> None:
        identity, body = frames[0].bytes, frames[1:]
        try:
            msg = P.decode(body, expect=P.REQUEST_TYPES, max_frame_bytes=self.cfg.max_frame_bytes)
        except P.ProtocolError as e:
            kind = P.ErrorKind.VERSION if "protocol v" in str(e) else P.ErrorKind.BAD_REQUEST
            log.warning("rejected a malformed message: %s", e)
            # an older client understands an error in its own version: tell it to update
            self._send(identity, P.error_reply(e.job_id or "unknown", kind, str(e),
                                               version=e.peer_version or P.VERSION))
            return
        handler = {
            P.MsgType.PING: self._on_ping,
            P.MsgType.ENHANCE: self._on_enhance,
            P.MsgType.CANCEL: self._on_cancel,
            P.MsgType.HEARTBEAT: self._on_heartbeat,
            P.MsgType.MODELS: self._on_models,
        }[msg.type]
        try:
            handler(identity, msg)
        except EnhanceError as e:
            self._send(identity, P.error_reply(msg.job_id, e.kind, e.message, e.hint))
        except Exception:  # never let one request take the service down
            log.exception("internal error handling %s", msg.type.value)
            self._send(identity, P.error_reply(msg.job_id, P.ErrorKind.INTERNAL,
                                               "internal backend error", f"see the log {self.cfg.log_file}"))

    def _on_ping(self, identity: bytes, msg: P.Message) -> None:
        caps = self.capabilities()
        with self.cv:
            queued = sum(1 for j in self.jobs.values() if j.state == JobState.QUEUED)
            running = sum(1 for j in self.jobs.values() if j.state == JobState.RUNNING)
        header = P.new_header(P.MsgType.PONG, msg.job_id, version=__version__, protocol=P.VERSION,
                              pid=os.getpid(), uptime=round(time.time() - self.started, 1),
                              queue={"queued": queued, "running": running, "size": self.cfg.queue_size,
                                     "done": self.jobs_done},
                              limits={"max_input_pixels": self.cfg.max_input_pixels,
                                      "max_output_pixels": self.cfg.max_output_pixels,
                                      "max_frame_bytes": self.cfg.max_frame_bytes},
                              log=str(self.cfg.log_file) if self.cfg.log_file else None,
                              features=["models", "heartbeat"], **caps)
        self._send(identity, P.encode(header))

    def _on_heartbeat(self, identity: bytes, msg: P.Message) -> None:
        with self.cv:
            job = self.jobs.get(msg.job_id)
            if job is not None and job.identity == identity:
                job.last_seen = time.monotonic()
            state = job.state.value if job is not None else "unknown"
        self._send(identity, P.encode(P.new_header(P.MsgType.HEARTBEAT, msg.job_id, state=state)))

    def _on_cancel(self, identity: bytes, msg: P.Message) -> None:
        with self.cv:
            job = self.jobs.get(msg.job_id)
            if job is None or job.identity != identity:
                return
            self._cancel(job, P.ErrorKind.CANCELLED)

    def _cancel(self, job: Job, reason: P.ErrorKind) -> None:
        """Under self.cv.  A queued job ends now; a running one at its next tile."""
        job.cancel_reason = reason
        job.cancel.set()
        if job.state == JobState.QUEUED:
            try:
                self.queue.remove(job)
            except ValueError:
                pass
            job.state = JobState.DONE
            self.jobs.pop(job.job_id, None)
            self.outbox.put((job.identity, job.job_id, self._cancel_reply(job), False))

    def _cancel_reply(self, job: Job) -> list:
        if job.cancel_reason == P.ErrorKind.CLIENT_GONE:
            return P.error_reply(job.job_id, P.ErrorKind.CLIENT_GONE,
                                 "job dropped: its client stopped sending heartbeats")
        if job.cancel_reason == P.ErrorKind.TOO_LARGE:
            return P.error_reply(job.job_id, P.ErrorKind.CANCELLED, "job ran past its timeout",
                                 "use a smaller image or selection, or a larger timeout")
        return P.error_reply(job.job_id, P.ErrorKind.CANCELLED, "cancelled")

    def _watchdog(self, now: float) -> None:
        with self.cv:
            for job in list(self.jobs.values()):
                if job.cancel.is_set() or job.state == JobState.DONE:
                    continue
                if now - job.last_seen > (job.heartbeat or self.cfg.client_timeout):
                    log.info("job %s: client silent for %.1f s, dropping it", job.job_id, now - job.last_seen)
                    self._cancel(job, P.ErrorKind.CLIENT_GONE)
                elif job.deadline is not None and now > job.deadline:
                    log.info("job %s: past its timeout, cancelling", job.job_id)
                    self._cancel(job, P.ErrorKind.TOO_LARGE)

    def _on_enhance(self, identity: bytes, msg: P.Message) -> None:
        h = msg.header
        specs = P.input_specs(h)
        spec = specs[0][1]
        scale = h.get("scale", 1)
        roi = P.Rect.from_json(h["roi"]) if "roi" in h else P.Rect(0, 0, spec.width, spec.height)
        if spec.pixels > self.cfg.max_input_pixels:
            raise EnhanceError(P.ErrorKind.TOO_LARGE,
                               f"image of {spec.pixels / 1e6:.1f} MP is over the backend's input budget "
                               f"of {self.cfg.max_input_pixels / 1e6:.0f} MP",
                               "process a selection, or start the backend with a larger --max-input-mp")
        out_px = roi.width * roi.height * scale * scale
        if out_px > self.cfg.max_output_pixels:
            raise EnhanceError(P.ErrorKind.TOO_LARGE,
                               f"result of {out_px / 1e6:.0f} MP ({roi.width}x{roi.height} at x{scale}) is "
                               f"over the backend's output budget of {self.cfg.max_output_pixels / 1e6:.0f} MP",
                               "use a smaller scale or a selection, or start the backend with a larger "
                               "--max-output-mp")
        with self.cv:
            if msg.job_id in self.jobs:
                raise EnhanceError(P.ErrorKind.BAD_REQUEST, f"job id {msg.job_id} is already in use",
                                   "use a fresh job id per request")
            if len(self.jobs) >= self.cfg.queue_size:
                raise EnhanceError(P.ErrorKind.BUSY,
                                   f"the backend is busy ({len(self.jobs)} jobs queued or running)",
                                   "try again when the current jobs are done")
            inputs = {name: np.frombuffer(frame, dtype=NUMPY_OF[s.dtype]).reshape(s.height, s.width, s.channels)
                      for (name, s), frame in zip(specs, msg.frames)}
            req = JobRequest(op=h["op"], model=h.get("model", ""), scale=scale, tile=h.get("tile", 0),
                             roi=None if "roi" not in h else (roi.x, roi.y, roi.width, roi.height),
                             options=dict(h.get("options") or {}), post=dict(h.get("post") or {}))
            timeout = h.get("timeout")
            job = Job(identity, msg.job_id, req, inputs, msg.frames,
                      time.monotonic() + timeout if timeout else None, heartbeat=h.get("heartbeat"))
            self.jobs[job.job_id] = job
            self.queue.append(job)
            position = len(self.queue)
            self.cv.notify()
        log.info("job %s: %s %s x%d %dx%d %s queued (%d)", job.job_id, req.op, req.model or "(default)", scale,
                 spec.width, spec.height, spec.dtype.value, position)
        self._send(identity, P.encode(P.new_header(P.MsgType.ACCEPTED, msg.job_id, position=position)))

    # ------------------------------------------------------------ models: install / remove
    def _on_models(self, identity: bytes, msg: P.Message) -> None:
        """Downloads run on their own thread: a filter job never waits for a 300 MB transfer (and a
        download never for a job); cancel, heartbeats and the watchdog work as for a job."""
        h = msg.header
        with self.cv:
            if msg.job_id in self.jobs:
                raise EnhanceError(P.ErrorKind.BAD_REQUEST, f"job id {msg.job_id} is already in use",
                                   "use a fresh job id per request")
            job = Job(identity, msg.job_id, None, {}, [], None, state=JobState.RUNNING,
                      heartbeat=h.get("heartbeat"))
            self.jobs[job.job_id] = job
        log.info("job %s: models %s %s", job.job_id, h["action"], " ".join(h["ids"]))
        self._send(identity, P.encode(P.new_header(P.MsgType.ACCEPTED, msg.job_id, position=0)))
        threading.Thread(target=self._run_models, args=(job, P.ModelsAction(h["action"]), list(h["ids"])),
                         name=f"ai-enhance-models-{job.job_id[:8]}", daemon=True).start()

    def _run_models(self, job: Job, action: P.ModelsAction, ids: list[str]) -> None:
        from .models import install

        with self._poster() as post:
            def progress(fraction: float, text: str = "") -> None:
                post(job, P.progress_reply(job.job_id, fraction, text), False)

            store = self.engine.store
            try:
                if action is P.ModelsAction.INSTALL:
                    report = install.install(store, ids, progress, job.cancel.is_set)
                else:
                    report = install.remove(store, ids, progress)
                self._refresh_caps()      # now, so that the client's next ping lists the change
                reply = P.done_reply(job.job_id, report.to_json())
            except Cancelled:
                reply = self._cancel_reply(job)
            except EnhanceError as e:
                reply = P.error_reply(job.job_id, e.kind, e.message, e.hint)
            except Exception as e:  # noqa: BLE001
                log.exception("job %s: models %s failed", job.job_id, action.value)
                reply = P.error_reply(job.job_id, P.ErrorKind.INTERNAL, f"internal backend error ({type(e).__name__})",
                                      f"see the log {self.cfg.log_file}")
            with self.cv:
                job.state = JobState.DONE
            post(job, reply, True)

    @contextlib.contextmanager
    def _poster(self):
        """post(job, frames, final) for a thread other than the main one: replies go through the
        outbox, and an inproc socket of the thread's own wakes the main loop."""
        wake = self.ctx.socket(zmq.PUSH)
        wake.setsockopt(zmq.LINGER, 0)
        wake.connect(self.wake_addr)

        def post(job: Job, frames: list, final: bool) -> None:
            self.outbox.put((job.identity, job.job_id, frames, final))
            try:
                wake.send(b"", zmq.NOBLOCK)
            except zmq.Again:
                pass
        try:
            yield post
        finally:
            wake.close(0)

    # ------------------------------------------------------------ worker thread
    def _worker(self) -> None:
        wake = self.ctx.socket(zmq.PUSH)
        wake.setsockopt(zmq.LINGER, 0)
        wake.connect(self.wake_addr)

        def post(job: Job, frames: list, final: bool) -> None:
            self.outbox.put((job.identity, job.job_id, frames, final))
            try:
                wake.send(b"", zmq.NOBLOCK)
            except zmq.Again:
                pass

        try:
            while not self.stopping.is_set():
                with self.cv:
                    if not self.queue:
                        self.cv.wait(timeout=2.0)
                    job = self.queue.popleft() if self.queue else None
                    if job is not None:
                        job.state = JobState.RUNNING
                if job is None:
                    try:
                        self.engine.unload_idle()
                    except Exception:
                        log.exception("unloading idle models failed")
                    continue
                self._run(job, post)
        finally:
            wake.close(0)

    def _run(self, job: Job, post) -> None:
        t0 = time.monotonic()
        last = [0.0, -1.0]   # time, fraction of the last progress sent

        def progress(fraction: float, text: str = "") -> None:
            # every step of 2 % or more (a tile of a small job) goes out; finer ones at most 20/s
            now = time.monotonic()
            if fraction < 1.0 and now - last[0] < 0.05 and fraction - last[1] < 0.02:
                return
            last[:] = [now, fraction]
            post(job, P.progress_reply(job.job_id, fraction, text), False)

        try:
            out = self.engine.run(job.request, job.inputs, progress, job.cancel.is_set)
            spec, pixels = None, None
            if out.image is not None:
                image = np.ascontiguousarray(out.image)
                if image.ndim == 2:
                    image = image[:, :, None]
                spec = P.ImageSpec(image.shape[1], image.shape[0], image.shape[2], WIRE_OF[image.dtype])
                pixels = memoryview(image).cast("B")
            masks = []
            for name, m in out.masks:
                m = np.ascontiguousarray(m, dtype=np.uint8)
                masks.append((name, P.ImageSpec(m.shape[1], m.shape[0], 1, P.DType.U8), memoryview(m).cast("B")))
            reply = P.result_reply(job.job_id, spec, pixels, masks, out.info)
            size = f"{spec.width}x{spec.height}" if spec else "masks only"
            log.info("job %s done in %.2f s -> %s", job.job_id, time.monotonic() - t0, size)
        except Cancelled:
            log.info("job %s cancelled (%s) after %.2f s", job.job_id, job.cancel_reason.value, time.monotonic() - t0)
            reply = self._cancel_reply(job)
        except EnhanceError as e:
            log.info("job %s failed: %s", job.job_id, e)
            reply = P.error_reply(job.job_id, e.kind, e.message, e.hint)
        except MemoryError:
            log.exception("job %s: out of memory", job.job_id)
            reply = P.error_reply(job.job_id, P.ErrorKind.OUT_OF_MEMORY, "out of memory",
                                  "use a smaller tile size, a selection or a smaller scale")
        except OSError as e:
            log.exception("job %s: OS error", job.job_id)
            kind = P.ErrorKind.DISK if e.errno in (28, 30) else P.ErrorKind.INTERNAL   # ENOSPC, EROFS
            reply = P.error_reply(job.job_id, kind, f"backend I/O error: {e.strerror or e}",
                                  "free some disk space" if kind == P.ErrorKind.DISK else
                                  f"see the log {self.cfg.log_file}")
        except Exception as e:
            log.exception("job %s: internal error", job.job_id)
            reply = P.error_reply(job.job_id, P.ErrorKind.INTERNAL, f"internal backend error ({type(e).__name__})",
                                  f"see the log {self.cfg.log_file}")
        with self.cv:
            job.state = JobState.DONE
            job.inputs = {}
            job.frames = []
            self.jobs_done += 1
        self.refresh_capabilities()      # a job may have loaded or unloaded models
        post(job, reply, True)


# --------------------------------------------------------------------------- entry

def setup_logging(log_file: Path | None, verbose: bool = False) -> None:
    root = logging.getLogger("ai_enhance")
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    if log_file is not None:
        try:
            log_file.parent.mkdir(parents=True, exist_ok=True)
            h = logging.handlers.RotatingFileHandler(log_file, maxBytes=5_000_000, backupCount=2)
            h.setFormatter(fmt)
            root.addHandler(h)
        except OSError as e:
            print(f"ai-enhance: cannot write log {log_file} ({e.strerror}); logging to stderr only")
    s = logging.StreamHandler()
    s.setFormatter(fmt)
    s.setLevel(logging.DEBUG if verbose else logging.WARNING)
    root.addHandler(s)


def serve(config: ServeConfig, verbose: bool = False) -> int:
    config.log_file = config.log_file or paths.default_log_file()
    config.models_dir = config.models_dir or paths.models_dir()
    setup_logging(config.log_file, verbose)
    try:
        server = Server(config)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: server.stop())
        server.serve_forever()
    except ServerError as e:
        log.error("%s", e)
        print(f"ai-enhance serve: {e}")
        return 2
    return 0
