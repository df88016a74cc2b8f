"""`ai-enhance serve`: the persistent ZeroMQ service.

One ROUTER socket, owned by the main thread, answers pings, heartbeats and cancels at once; jobs go
into a bounded queue worked by one worker thread (one accelerator: jobs run one at a time, models
stay loaded between them).  The worker hands replies back through an in-process queue and wakes the
main thread with an inproc socket.  Clients send a heartbeat per second while they wait; a job whose
client falls silent (GIMP's Cancel kills the plug-in process outright) is dropped.

Trust (docs/security.md): the socket is a CURVE server; pyzmq's ZAP authenticator admits only the
client keys of the keys folder (this user's own and ``allowed/``, re-read at every handshake), so
no byte of an unknown peer reaches the protocol.  No message can stop the loop (every message is
handled inside one catch-all).  Results wait, bounded per client and in total, until their client
confirms it read them.  SIGTERM, SIGINT or a ``shutdown`` from the owner's key stop it gracefully:
new jobs are refused, queued and running ones cancelled within ``--stop-grace`` seconds, and every
client with a job is told "backend shutting down" before the process exits.
"""
from __future__ import annotations

import collections
import contextlib
import logging
import logging.handlers
import os
import queue
import signal
import stat
import sys
import threading
import time
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

import numpy as np
import zmq

from ai_enhance_client import keys as K
from ai_enhance_client import protocol as P
from ai_enhance_client.settings import EndpointError, parse_endpoint

from . import __version__, paths
from .errors import Cancelled, EnhanceError
from .jobs import JobRequest
from .pixels import NUMPY_OF, WIRE_OF

log = logging.getLogger("ai_enhance.server")

#: The ZAP domain of the backend's socket (the authenticator answers for it alone).
ZAP_DOMAIN = "ai-enhance"
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
    raw_cache_bytes: int = 1 << 30      # recent raw outputs kept for re-tuning
    keys_dir: Path | None = None        # None: AI_ENHANCE_KEYS or the user's keys folder
    listen: list = field(default_factory=list)   # further endpoints for other machines (--listen)
    stop_grace: float = 5.0             # running jobs get this long to stop at SIGTERM
    max_unread_client_bytes: int = 3 << 30    # results sent but not yet confirmed, per client
    max_unread_total_bytes: int = 6 << 30     # ... and over all clients (waiting ones included)
    #: results handed over but never confirmed are forgotten after this long without a word from
    #: their client (an old client, or one that died while reading)
    unread_expiry: float = 30.0


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
    compress: bool = False              # the client accepts deflated frames
    heartbeat: float | None = None      # the client's own silence limit (GIMP: ~1 s), else the config's


@dataclass
class Unread:
    """A finished result on its way to a client: waiting (``frames`` kept here) or handed over
    to ZeroMQ and not yet confirmed (``frames`` None)."""
    identity: bytes
    job_id: str
    nbytes: int
    frames: list | None
    since: float = field(default_factory=time.monotonic)


# --------------------------------------------------------------------------- endpoint safety

def check_endpoint(endpoint: str, *, listen: bool = False) -> None:
    """Syntax first (port 0, ``@``, abstract sockets refused); then ``--endpoint`` takes loopback
    TCP or an IPC socket in a private (0700) folder, and only ``--listen`` (other machines, CURVE
    keys required of every client) takes another address."""
    hint = "the backend listens on loopback (tcp://127.0.0.1:5588) or ipc://; serve other machines with --listen"
    try:
        ep = parse_endpoint(endpoint)
    except EndpointError as e:
        raise ServerError(f"{e} ({hint})") from None
    if ep.scheme == "tcp":
        if not ep.loopback and not listen:
            raise ServerError(f"refusing to listen on {endpoint} with --endpoint: {hint} "
                              f"(`ai-enhance serve --listen {endpoint}`, see docs/remote.md)")
    else:
        path = Path(ep.path)
        folder = path.parent
        if not folder.exists():
            folder.mkdir(parents=True, mode=0o700)
        st = folder.stat()
        if hasattr(os, "getuid") and (st.st_uid != os.getuid() or st.st_mode & (stat.S_IRWXG | stat.S_IRWXO)):
            raise ServerError(f"refusing ipc endpoint {endpoint}: folder {folder} must belong to you with "
                              "mode 0700 (chmod 700 it, or pick a private folder)")


class _AllowedKeys:
    """ZAP credentials: the keys folder's client keys, re-read at every handshake (a key added
    with `ai-enhance keys allow` works at the next connection; no restart)."""

    def __init__(self, folder: Path):
        self.folder = folder
        self._last_denied = 0.0

    def callback(self, domain: str, key: bytes) -> bool:
        ok = key in K.allowed_keys(self.folder)
        if not ok and time.monotonic() - self._last_denied > 5:
            self._last_denied = time.monotonic()
            log.warning("refused a client with an unknown key %s… (allow it with `ai-enhance keys allow "
                        "%s`)", K.fingerprint(key), key.decode("ascii", "replace"))
        return ok


# --------------------------------------------------------------------------- server

class Server:
    def __init__(self, config: ServeConfig, engine=None):
        self.cfg = config
        if engine is None:
            from .engine import Engine
            from .models import ModelStore

            engine = Engine(ModelStore(config.models_dir), device=config.device,
                            idle_unload_s=config.idle_unload, raw_cache_bytes=config.raw_cache_bytes)
        self.engine = engine
        self.ctx = zmq.Context()
        self.jobs: dict[str, Job] = {}
        self.queue: collections.deque[Job] = collections.deque()
        self.cv = threading.Condition()
        self.outbox: queue.SimpleQueue = queue.SimpleQueue()
        self.wake_addr = f"inproc://wake-{id(self)}"
        self.stopping = threading.Event()      # stop asked: drain, tell everyone, exit
        self.stop_reason = ""
        self.started = time.time()
        self.jobs_done = 0
        self.keys_dir = Path(config.keys_dir) if config.keys_dir else K.keys_dir()
        self.owner_key = ""
        self.unread: dict[str, Unread] = {}    # job_id -> result on its way
        self.peers: dict[bytes, float] = {}    # identity -> last message (monotonic)
        self.auth = None
        self._caps: dict | None = None
        self._caps_lock = threading.Lock()
        self._caps_wanted = threading.Event()

    # ------------------------------------------------------------ lifecycle
    def bind(self) -> None:
        check_endpoint(self.cfg.endpoint)
        for ep in self.cfg.listen:
            check_endpoint(ep, listen=True)
        try:
            K.ensure(self.keys_dir)
            pair = K.server_pair(self.keys_dir)
            self.owner_key = K.client_pair(self.keys_dir).public.decode("ascii")
        except (K.KeysError, OSError) as e:
            raise ServerError(f"cannot use the keys in {self.keys_dir} ({e}); run `ai-enhance keys init` "
                              "or set AI_ENHANCE_KEYS to a private folder") from None
        if not zmq.has("curve"):
            raise ServerError("this pyzmq/libzmq has no CURVE support; reinstall pyzmq from its wheels")
        self._refuse_if_answering()
        from zmq.auth.thread import ThreadAuthenticator

        self.auth = ThreadAuthenticator(self.ctx, log=logging.getLogger("ai_enhance.auth"))
        self.auth.start()
        self.auth.configure_curve_callback(ZAP_DOMAIN, _AllowedKeys(self.keys_dir))
        self.router = self.ctx.socket(zmq.ROUTER)
        self.router.setsockopt(zmq.LINGER, int(max(1.0, self.cfg.stop_grace) * 1000))
        self.router.setsockopt(zmq.MAXMSGSIZE, self.cfg.max_frame_bytes)
        self.router.setsockopt(zmq.SNDHWM, 1000)
        self.router.curve_server = True
        self.router.curve_secretkey = pair.secret
        self.router.curve_publickey = pair.public
        self.router.zap_domain = ZAP_DOMAIN.encode()
        endpoints = [self.cfg.endpoint, *self.cfg.listen]
        if any(parse_endpoint(e).ipv6 for e in endpoints):
            self.router.setsockopt(zmq.IPV6, 1)
        for ep in endpoints:
            try:
                self.router.bind(ep)
            except zmq.ZMQError as e:
                self.router.close(0)
                self.auth.stop()
                if e.errno == zmq.EADDRINUSE:
                    raise ServerError(f"{ep} is already in use by another program; stop it "
                                      "or set AI_ENHANCE_ENDPOINT to a free port") from None
                raise ServerError(f"cannot listen on {ep}: {e}") from None
        self.wake_pull = self.ctx.socket(zmq.PULL)
        self.wake_pull.bind(self.wake_addr)
        log.info("auth: CURVE, backend key %s… (%s), %d client key(s) allowed", K.fingerprint(pair.public),
                 self.keys_dir, len(K.allowed_keys(self.keys_dir)))

    def _refuse_if_answering(self) -> None:
        from ai_enhance_client.client import Client, ClientError
        c = Client(self.cfg.endpoint, context=self.ctx, keys_dir=self.keys_dir,
                   server_key=K.server_public(self.keys_dir))
        try:
            caps = c.ping(timeout=0.7)
        except ClientError as e:
            raise ServerError(f"cannot serve {self.cfg.endpoint}: {e}") from None
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
        log.info("device: %s", (self._caps or {}).get("device"))
        self._log_memory()
        threading.Thread(target=self._caps_loop, name="ai-enhance-caps", daemon=True).start()
        log.info("serving on %s (pid %d, models %s, installation %s)", ", ".join([self.cfg.endpoint, *self.cfg.listen]),
                 os.getpid(), self.cfg.models_dir, installation())
        try:
            self._loop()
            self._drain(worker)
        finally:
            self.stopping.set()
            with self.cv:
                for job in self.jobs.values():
                    job.cancel.set()
                self.cv.notify_all()
            worker.join(timeout=2)
            self.router.close()        # LINGER: the goodbyes go out before the context ends
            self.wake_pull.close(0)
            if self.auth is not None:
                self.auth.stop()
            self.ctx.term()
            log.info("stopped (%s)", self.stop_reason or "normal exit")

    def stop(self, reason: str = "stop requested") -> None:
        """Begin a graceful stop (safe from a signal handler: it only sets flags)."""
        if not self.stopping.is_set():
            self.stop_reason = reason
        self.stopping.set()

    def _log_memory(self) -> None:
        try:
            from .runtime import devices
            lim = devices.memory_limits()
            log.info("memory: %s", lim.describe())
        except Exception:  # noqa: BLE001 - informative only
            log.debug("memory limits unknown", exc_info=True)

    # ------------------------------------------------------------ capabilities (own thread)
    def _refresh_caps(self) -> None:
        """Rebuild the capabilities: listing the models may hash a newly dropped file, probing
        devices may take a while: never on the I/O thread, which must answer heartbeats."""
        try:
            caps = self.engine.capabilities()
        except Exception:  # noqa: BLE001 - keep the last good answer
            log.exception("building the capabilities failed")
            return
        try:
            from .runtime import devices
            caps.setdefault("memory", devices.memory_limits().to_json())
        except Exception:  # noqa: BLE001
            pass
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
            self._turn(poller, 250)
            now = time.monotonic()
            if now >= next_watch:
                self._watchdog(now)
                next_watch = now + 0.2    # a client asking for a short heartbeat limit gets it
        self._flush_outbox()

    def _turn(self, poller, timeout_ms: int) -> None:
        events = dict(poller.poll(timeout_ms))
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

    def _drain(self, worker: threading.Thread) -> None:
        """Graceful stop: refuse new jobs, cancel queued and running ones (a running job stops at
        its next tile, or is given up after ``stop_grace``), and send every client with a job or
        a waiting result the "backend shutting down" error."""
        reason = self.stop_reason or "stop requested"
        log.info("shutting down (%s): refusing new jobs, cancelling %d", reason, len(self.jobs))
        with self.cv:
            for job in list(self.jobs.values()):
                if job.state != JobState.DONE:
                    self._cancel(job, P.ErrorKind.SHUTTING_DOWN)
            self.cv.notify_all()
        poller = zmq.Poller()
        poller.register(self.router, zmq.POLLIN)
        poller.register(self.wake_pull, zmq.POLLIN)
        deadline = time.monotonic() + max(0.0, self.cfg.stop_grace)
        while time.monotonic() < deadline:
            with self.cv:
                running = [j for j in self.jobs.values() if j.state == JobState.RUNNING]
            if not running:
                break
            self._turn(poller, 100)
        self._flush_outbox()
        with self.cv:
            left = [j for j in self.jobs.values() if j.state != JobState.DONE]
            for job in left:     # still computing past the grace time: tell its client now
                log.warning("job %s did not stop within %.1f s: giving it up", job.job_id, self.cfg.stop_grace)
                self._send(job.identity, self._shutdown_reply(job.job_id))
                self.jobs.pop(job.job_id, None)
        for u in list(self.unread.values()):
            if u.frames is not None:      # a result still waiting for its turn: it will not come
                self._send(u.identity, self._shutdown_reply(u.job_id))
        self.unread.clear()

    def _shutdown_reply(self, job_id: str) -> list:
        return P.error_reply(job_id, P.ErrorKind.SHUTTING_DOWN,
                             f"backend shutting down ({self.stop_reason or 'stop requested'})",
                             "run it again: the next run starts a new backend")

    def _send(self, identity: bytes, frames: list) -> bool:
        try:
            self.router.send_multipart([identity, *frames], copy=False)
            return True
        except zmq.ZMQError as e:   # peer gone: nothing to tell
            log.debug("send to gone peer failed: %s", e)
            return False

    def _flush_outbox(self) -> None:
        while True:
            try:
                identity, job_id, frames, final, nbytes = self.outbox.get_nowait()
            except queue.Empty:
                return
            if final and nbytes:
                self._deliver(Unread(identity, job_id, nbytes, frames))
            else:
                self._send(identity, frames)
            if final:
                with self.cv:
                    self.jobs.pop(job_id, None)

    # ------------------------------------------------------------ unread results
    def _unread_bytes(self, identity: bytes | None = None, sent_only: bool = False) -> int:
        return sum(u.nbytes for u in self.unread.values()
                   if (identity is None or u.identity == identity) and not (sent_only and u.frames is not None))

    def _deliver(self, item: Unread) -> None:
        """A finished result: hand it over when its client and the whole backend are within the
        unread bounds, else keep it waiting; over the total bound the OLDEST waiting result is
        dropped with an error."""
        self.unread[item.job_id] = item
        while self._unread_bytes() > self.cfg.max_unread_total_bytes:
            waiting = [u for u in self.unread.values() if u.frames is not None]
            if not waiting:
                break
            oldest = min(waiting, key=lambda u: u.since)
            del self.unread[oldest.job_id]
            log.warning("job %s: result dropped, %d MB of results wait unread", oldest.job_id,
                        self._unread_bytes() >> 20)
            self._send(oldest.identity, P.error_reply(
                oldest.job_id, P.ErrorKind.BUSY,
                "result dropped: the backend holds too many results that their clients have not read",
                "read each result before sending more jobs, then run this one again"))
        self._pump()

    def _pump(self) -> None:
        """Hand over waiting results, oldest first, as far as the bounds allow."""
        for u in sorted((u for u in self.unread.values() if u.frames is not None), key=lambda u: u.since):
            mine = self._unread_bytes(u.identity, sent_only=True)
            if mine and mine + u.nbytes > self.cfg.max_unread_client_bytes:
                continue
            if self._unread_bytes(sent_only=True) and \
                    self._unread_bytes(sent_only=True) + u.nbytes > self.cfg.max_unread_total_bytes:
                continue
            frames, u.frames, u.since = u.frames, None, time.monotonic()
            self._send(u.identity, frames)

    def _on_received(self, identity: bytes, msg: P.Message) -> None:
        u = self.unread.get(msg.job_id)
        if u is not None and u.identity == identity and u.frames is None:
            del self.unread[msg.job_id]
            self._pump()

    # ------------------------------------------------------------ messages
    def _handle(self, frames: list) -> None:
        """One message, whatever it holds: nothing in it may stop the loop."""
        try:
            self._handle_one(frames)
        except Exception:  # noqa: BLE001 - never let one message take the service down
            log.exception("internal error handling a message")
            try:
                if frames and len(frames) > 1:
                    self._send(frames[0].bytes, P.error_reply("unknown", P.ErrorKind.INTERNAL,
                                                              "internal backend error",
                                                              f"see the log {self.cfg.log_file}"))
            except Exception:  # noqa: BLE001
                pass

    def _handle_one(self, frames: list) -> None:
        identity, body = frames[0].bytes, frames[1:]
        self.peers[identity] = time.monotonic()
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
            P.MsgType.RECEIVED: self._on_received,
            P.MsgType.SHUTDOWN: self._on_shutdown,
            P.MsgType.MODELS: self._on_models,
        }[msg.type]
        try:
            if msg.type == P.MsgType.SHUTDOWN:
                self._on_shutdown(identity, msg, _user_id(body[0]))
            else:
                handler(identity, msg)
        except EnhanceError as e:
            self._send(identity, P.error_reply(msg.job_id, e.kind, e.message, e.hint))
        except Exception:  # never let one request take the service down
            log.exception("internal error handling %s", msg.type.value)
            self._send(identity, P.error_reply(msg.job_id, P.ErrorKind.INTERNAL,
                                               "internal backend error", f"see the log {self.cfg.log_file}"))

    def _on_shutdown(self, identity: bytes, msg: P.Message, user: str | None = None) -> None:
        if user != self.owner_key:
            raise EnhanceError(P.ErrorKind.BAD_REQUEST, "only the backend's owner may stop it",
                               "run `ai-enhance stop` as the user who started it, or stop it on its machine")
        log.info("stop requested by the owner's client (`ai-enhance stop`)")
        self.stop("`ai-enhance stop`")
        pending = sum(1 for j in self.jobs.values() if j.state != JobState.DONE)
        self._send(identity, P.encode(P.new_header(P.MsgType.ERROR, msg.job_id,
                                                   kind=P.ErrorKind.SHUTTING_DOWN.value,
                                                   message=f"backend shutting down (pid {os.getpid()}, "
                                                           f"cancelling {pending} job(s))")))

    def _on_ping(self, identity: bytes, msg: P.Message) -> None:
        caps = self.capabilities()
        with self.cv:
            queued = sum(1 for j in self.jobs.values() if j.state == JobState.QUEUED)
            running = sum(1 for j in self.jobs.values() if j.state == JobState.RUNNING)
        header = P.new_header(P.MsgType.PONG, msg.job_id, version=__version__, protocol=P.VERSION,
                              pid=os.getpid(), uptime=round(time.time() - self.started, 1),
                              installation=installation(), models_dir=str(self.cfg.models_dir or ""),
                              auth="curve",
                              queue={"queued": queued, "running": running, "size": self.cfg.queue_size,
                                     "done": self.jobs_done, "unread": len(self.unread),
                                     "stopping": self.stopping.is_set()},
                              limits={"max_input_pixels": self.cfg.max_input_pixels,
                                      "max_output_pixels": self.cfg.max_output_pixels,
                                      "max_frame_bytes": self.cfg.max_frame_bytes,
                                      "max_side": P.MAX_SIDE},
                              log=str(self.cfg.log_file) if self.cfg.log_file else None,
                              features=["models", "heartbeat"], **caps)
        self._send(identity, P.encode(header))

    def _on_heartbeat(self, identity: bytes, msg: P.Message) -> None:
        with self.cv:
            job = self.jobs.get(msg.job_id)
            if job is not None and job.identity == identity:
                job.last_seen = time.monotonic()
            state = job.state.value if job is not None else "unknown"
        if job is None and msg.job_id in self.unread and self.unread[msg.job_id].identity == identity:
            state = JobState.DONE.value      # the result is on its way
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
            self.outbox.put((job.identity, job.job_id, self._cancel_reply(job), False, 0))

    def _cancel_reply(self, job: Job) -> list:
        if job.cancel_reason == P.ErrorKind.CLIENT_GONE:
            return P.error_reply(job.job_id, P.ErrorKind.CLIENT_GONE,
                                 "job dropped: its client stopped sending heartbeats")
        if job.cancel_reason == P.ErrorKind.TOO_LARGE:
            return P.error_reply(job.job_id, P.ErrorKind.CANCELLED, "job ran past its timeout",
                                 "use a smaller image or selection, or a larger timeout")
        if job.cancel_reason == P.ErrorKind.SHUTTING_DOWN:
            return self._shutdown_reply(job.job_id)
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
        # results handed over long ago to a client that has said nothing since: it read them
        # before the RECEIVED existed, or died; either way ZeroMQ no longer holds them for it
        expired = [u for u in self.unread.values() if u.frames is None
                   and now - max(u.since, self.peers.get(u.identity, 0.0)) > self.cfg.unread_expiry]
        for u in expired:
            del self.unread[u.job_id]
        # waiting results of a client that went silent: nobody will read them
        for u in [u for u in self.unread.values() if u.frames is not None
                  and now - self.peers.get(u.identity, now) > max(self.cfg.unread_expiry, self.cfg.client_timeout)]:
            log.info("job %s: result dropped, its client is gone", u.job_id)
            del self.unread[u.job_id]
        if expired:
            self._pump()
        for ident in [i for i, t in self.peers.items() if now - t > 600
                      and not any(u.identity == i for u in self.unread.values())]:
            del self.peers[ident]

    def _on_enhance(self, identity: bytes, msg: P.Message) -> None:
        h = msg.header
        if self.stopping.is_set():
            raise EnhanceError(P.ErrorKind.SHUTTING_DOWN, f"backend shutting down ({self.stop_reason})",
                               "run it again in a moment: the next run starts a new backend")
        specs = P.input_specs(h)
        spec = specs[0][1]
        scale = h.get("scale", 1)
        roi = P.Rect.from_json(h["roi"]) if "roi" in h else P.Rect(0, 0, spec.width, spec.height)
        if spec.pixels > self.cfg.max_input_pixels:
            raise EnhanceError(P.ErrorKind.TOO_LARGE,
                               f"image of {spec.pixels / 1e6:.1f} MP is over the backend's input budget "
                               f"of {self.cfg.max_input_pixels / 1e6:.0f} MP",
                               "process a selection, or start the backend with a larger --max-input-mp")
        out_w, out_h = roi.width * scale, roi.height * scale
        if max(out_w, out_h) > P.MAX_SIDE:
            fit = max(1, P.MAX_SIDE // max(roi.width, roi.height))
            raise EnhanceError(P.ErrorKind.TOO_LARGE,
                               f"result of {out_w}x{out_h} px is wider or taller than the {P.MAX_SIDE} px "
                               "an image may have",
                               f"use scale {fit} or less for this size, or a selection at most "
                               f"{P.MAX_SIDE // scale} px on its longer side")
        out_px = out_w * out_h
        if out_px > self.cfg.max_output_pixels:
            raise EnhanceError(P.ErrorKind.TOO_LARGE,
                               f"result of {out_px / 1e6:.0f} MP ({roi.width}x{roi.height} at x{scale}) is "
                               f"over the backend's output budget of {self.cfg.max_output_pixels / 1e6:.0f} MP",
                               "use a smaller scale or a selection, or start the backend with a larger "
                               "--max-output-mp")
        out_bytes = out_px * spec.channels * spec.dtype.itemsize
        if out_bytes > self.cfg.max_unread_client_bytes:
            side = int((self.cfg.max_unread_client_bytes / (spec.channels * spec.dtype.itemsize)) ** 0.5 / scale)
            raise EnhanceError(P.ErrorKind.TOO_LARGE,
                               f"result of {out_bytes / 2**30:.1f} GiB is more than the backend holds for one "
                               f"client ({self.cfg.max_unread_client_bytes / 2**30:.1f} GiB)",
                               f"use a selection of about {side}x{side} px or less at x{scale}, a smaller scale, "
                               "or an 8-bit image")
        with self.cv:
            if msg.job_id in self.jobs or msg.job_id in self.unread:
                raise EnhanceError(P.ErrorKind.BAD_REQUEST, f"job id {msg.job_id} is already in use",
                                   "use a fresh job id per request")
            waiting = sum(1 for u in self.unread.values() if u.identity == identity)
            if len(self.jobs) + waiting >= self.cfg.queue_size:
                raise EnhanceError(P.ErrorKind.BUSY,
                                   f"the backend is busy ({len(self.jobs)} jobs queued or running"
                                   + (f", {waiting} result(s) of yours unread" if waiting else "") + ")",
                                   "try again when the current jobs are done")
            inputs = {name: np.frombuffer(frame, dtype=NUMPY_OF[s.dtype]).reshape(s.height, s.width, s.channels)
                      for (name, s), frame in zip(specs, msg.frames)}
            req = JobRequest(op=h["op"], model=h.get("model", ""), scale=scale, tile=h.get("tile", 0),
                             roi=None if "roi" not in h else (roi.x, roi.y, roi.width, roi.height),
                             options=dict(h.get("options") or {}), post=dict(h.get("post") or {}),
                             reuse=h.get("reuse", ""))
            timeout = h.get("timeout")
            job = Job(identity, msg.job_id, req, inputs, msg.frames,
                      time.monotonic() + timeout if timeout else None,
                      compress=P.CODEC_ZLIB in (h.get("accept") or []), heartbeat=h.get("heartbeat"))
            self.jobs[job.job_id] = job
            self.queue.append(job)
            position = len(self.queue)
            self.cv.notify()
        log.info("job %s: %s %s x%d %dx%d %s queued (%d)", job.job_id, req.op, req.model or "(default)", scale,
                 spec.width, spec.height, spec.dtype.value, position)
        self._send(identity, P.encode(P.new_header(P.MsgType.ACCEPTED, msg.job_id, position=position,
                                                   pid=os.getpid(),
                                                   log=str(self.cfg.log_file) if self.cfg.log_file else None)))

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

        def post(job: Job, frames: list, final: bool, nbytes: int = 0) -> None:
            self.outbox.put((job.identity, job.job_id, frames, final, nbytes))
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
        with self._poster() as post:
            while not self.stopping.is_set():
                with self.cv:
                    if not self.queue:
                        self.cv.wait(timeout=2.0)
                    job = self.queue.popleft() if self.queue and not self.stopping.is_set() else None
                    if job is not None:
                        job.state = JobState.RUNNING
                if job is None:
                    try:
                        self.engine.unload_idle()
                    except Exception:
                        log.exception("unloading idle models failed")
                    continue
                self._run(job, post)

    def _run(self, job: Job, post) -> None:
        t0 = time.monotonic()
        last = [0.0, -1.0]   # time, fraction of the last progress sent
        nbytes = 0

        def progress(fraction: float, text: str = "") -> None:
            # every step of 2 % or more (a tile of a small job) goes out; finer ones at most 20/s
            now = time.monotonic()
            if fraction < 1.0 and now - last[0] < 0.05 and fraction - last[1] < 0.02:
                return
            last[:] = [now, fraction]
            post(job, P.progress_reply(job.job_id, fraction, text), False)

        try:
            out = self.engine.run(job.request, job.inputs, progress, job.cancel.is_set)
            if job.cancel.is_set() and job.cancel_reason == P.ErrorKind.SHUTTING_DOWN:
                raise Cancelled()
            spec, pixels = None, None
            if out.image is not None:
                image = np.ascontiguousarray(out.image)
                if image.ndim == 2:
                    image = image[:, :, None]
                spec = P.ImageSpec(image.shape[1], image.shape[0], image.shape[2], WIRE_OF[image.dtype])
                pixels = memoryview(image).cast("B")
                nbytes += spec.nbytes
            masks = []
            for name, m in out.masks:
                m = np.ascontiguousarray(m, dtype=np.uint8)
                masks.append((name, P.ImageSpec(m.shape[1], m.shape[0], 1, P.DType.U8), memoryview(m).cast("B")))
                nbytes += m.nbytes
            layers = []
            for name, a in out.layers:
                a = np.ascontiguousarray(a if a.ndim == 3 else a[:, :, None])
                layers.append((name, P.ImageSpec(a.shape[1], a.shape[0], a.shape[2], WIRE_OF[a.dtype]),
                               memoryview(a).cast("B")))
                nbytes += a.nbytes
            reply = P.result_reply(job.job_id, spec, pixels, masks, out.info, layers,
                                   max_frame_bytes=min(self.cfg.max_frame_bytes, P.MAX_FRAME_BYTES),
                                   compress=job.compress)
            size = f"{spec.width}x{spec.height}" if spec else "masks only"
            wire = sum(f.nbytes if isinstance(f, memoryview) else len(f) for f in reply[1:])
            if wire < nbytes:
                size += f" (deflated {nbytes / 1e6:.1f} -> {wire / 1e6:.1f} MB for the link)"
            log.info("job %s done in %.2f s -> %s", job.job_id, time.monotonic() - t0, size)
        except Cancelled:
            log.info("job %s cancelled (%s) after %.2f s", job.job_id, job.cancel_reason.value, time.monotonic() - t0)
            reply, nbytes = self._cancel_reply(job), 0
        except EnhanceError as e:
            log.info("job %s failed: %s", job.job_id, e)
            reply, nbytes = P.error_reply(job.job_id, e.kind, e.message, e.hint), 0
        except MemoryError:
            log.exception("job %s: out of memory", job.job_id)
            reply, nbytes = P.error_reply(job.job_id, P.ErrorKind.OUT_OF_MEMORY, "out of memory",
                                          "use a smaller tile size, a selection or a smaller scale"), 0
        except OSError as e:
            log.exception("job %s: OS error", job.job_id)
            kind = P.ErrorKind.DISK if e.errno in (28, 30) else P.ErrorKind.INTERNAL   # ENOSPC, EROFS
            reply, nbytes = P.error_reply(job.job_id, kind, f"backend I/O error: {e.strerror or e}",
                                          "free some disk space" if kind == P.ErrorKind.DISK else
                                          f"see the log {self.cfg.log_file}"), 0
        except Exception as e:
            log.exception("job %s: internal error", job.job_id)
            reply, nbytes = P.error_reply(job.job_id, P.ErrorKind.INTERNAL,
                                          f"internal backend error ({type(e).__name__})",
                                          f"see the log {self.cfg.log_file}"), 0
        with self.cv:
            job.state = JobState.DONE
            job.inputs = {}
            job.frames = []
            self.jobs_done += 1
        self.refresh_capabilities()      # a job may have loaded or unloaded models
        post(job, reply, True, nbytes)


def _user_id(frame) -> str | None:
    """The ZAP User-Id of the peer that sent ``frame`` (its CURVE public key in Z85)."""
    try:
        return frame.get("User-Id")
    except Exception:  # noqa: BLE001 - no metadata (inproc, tests)
        return None


def installation() -> str:
    """This backend's installation: the environment (venv) it runs from."""
    return os.path.realpath(sys.prefix)


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

        def on_signal(signum, _frame):
            name = signal.Signals(signum).name
            if server.stopping.is_set():
                log.warning("%s again while stopping: exiting now", name)
                os._exit(1)
            server.stop(name)

        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, on_signal)
        server.serve_forever()
        busy = server.engine.models.converting() if hasattr(server.engine, "models") else []
        if busy:
            # a native OpenVINO conversion cannot be interrupted, and tearing the interpreter down
            # under it aborts the process: leave at once (nothing was written for it yet)
            log.info("stopped while converting %s for OpenVINO: it is converted again next time",
                     ", ".join(busy))
            logging.shutdown()
            os._exit(0)
    except ServerError as e:
        log.error("%s", e)
        print(f"ai-enhance serve: {e}")
        return 2
    return 0
