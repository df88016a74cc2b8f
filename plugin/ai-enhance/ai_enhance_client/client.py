"""ZeroMQ client of the ai-enhance backend, used by the GIMP plug-in and by the `ai-enhance` CLI
alike (one path).  Standard library + pyzmq only: never numpy, never torch."""
from __future__ import annotations

import os
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import zmq

from . import protocol as P
from .settings import Settings

ProgressFn = Callable[[float, str], None]

HEARTBEAT_S = 1.0
#: How long a cancelling client waits for the backend to confirm that the job stopped.
CONFIRM_S = 3.0


class ClientError(Exception):
    """What went wrong, in one line that says how to fix it (shown to the user as is)."""

    def __init__(self, message: str, kind: str = "connection"):
        super().__init__(P.one_line(message))
        self.kind = kind
        self.confirmed: bool | None = None     # a cancel: did the backend confirm it stopped?
        self.seconds: float | None = None      # ...and how long that took


@dataclass
class Result:
    spec: P.ImageSpec | None        # None: the operation returns masks only (find-damage)
    pixels: bytes | None
    masks: dict = field(default_factory=dict)   # name -> (ImageSpec, bytes)
    info: dict = field(default_factory=dict)


class Client:
    """One DEALER socket to the backend.  Not thread-safe; cheap to create."""

    def __init__(self, endpoint: str | None = None, *, settings: Settings | None = None,
                 idle_timeout: float = 30.0, context: zmq.Context | None = None,
                 heartbeat: float | None = None):
        self.settings = settings or Settings.load()
        self.endpoint = endpoint or self.settings.endpoint
        self.idle_timeout = idle_timeout
        #: None: heartbeats every HEARTBEAT_S and the backend's own silence limit; a number: ask the
        #: backend to drop this client's jobs after that many silent seconds (and beat 4x as often),
        #: so that a killed client (GIMP's status-bar Cancel) stops the backend within ~1-2 s
        self.heartbeat = heartbeat
        self.beat_s = HEARTBEAT_S if heartbeat is None else max(0.05, min(HEARTBEAT_S, heartbeat / 4))
        self._ctx = context or zmq.Context.instance()
        self._sock = None

    # ------------------------------------------------------------------ plumbing
    def _socket(self):
        if self._sock is None:
            s = self._ctx.socket(zmq.DEALER)
            s.setsockopt(zmq.LINGER, 0)
            s.setsockopt(zmq.MAXMSGSIZE, P.MAX_FRAME_BYTES)
            try:
                s.connect(self.endpoint)
            except zmq.ZMQError as e:
                s.close()
                raise ClientError(f"bad backend endpoint {self.endpoint!r} ({e}); set {self._fix_endpoint()}") from None
            self._sock = s
        return self._sock

    def _fix_endpoint(self) -> str:
        return "AI_ENHANCE_ENDPOINT to e.g. tcp://127.0.0.1:5588"

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close(0)
            self._sock = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _reset(self) -> None:
        """Drop the socket: queued requests to a dead peer must not be replayed later."""
        self.close()

    def _recv(self, job_id: str, timeout: float) -> P.Message | None:
        sock = self._socket()
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not sock.poll(int(left * 1000) + 1, zmq.POLLIN):
                return None
            frames = sock.recv_multipart(copy=False)
            try:
                msg = P.decode(frames, expect=P.REPLY_TYPES)
            except P.ProtocolError as e:
                if e.peer_version is not None or "protocol v" in str(e):
                    raise ClientError(f"the backend speaks another protocol version: {e}", "version") from None
                raise ClientError(f"the backend sent a malformed reply ({e}); reinstall the plug-in "
                                  "and the backend from the same release", "protocol") from None
            if msg.job_id == job_id:
                return msg
            # a stale reply for an older job of this socket: ignore

    # ------------------------------------------------------------------ requests
    def ping(self, timeout: float = 2.0) -> dict | None:
        """Capabilities of the backend (models, devices, version), or None if nothing answers."""
        job_id = "ping-" + uuid.uuid4().hex[:12]
        self._socket().send_multipart(P.encode(P.new_header(P.MsgType.PING, job_id)))
        msg = self._recv(job_id, timeout)
        if msg is None:
            self._reset()
            return None
        if msg.type == P.MsgType.ERROR:
            raise ClientError(_error_text(msg.header), msg.header.get("kind", "internal"))
        return msg.header

    def ensure_backend(self, *, autostart: bool = True, wait: float = 90.0,
                       on_wait: Callable[[str], None] | None = None,
                       log_path: str | os.PathLike | None = None) -> dict:
        """Ping; when nothing answers and autostart is on, start `ai-enhance serve` in its own
        session (GIMP's Cancel kills the plug-in's process group, never the backend) and wait."""
        caps = self.ping(timeout=1.5)
        if caps is not None:
            return caps
        if not autostart:
            raise ClientError(f"no ai-enhance backend answers at {self.endpoint}; start it with "
                              "`ai-enhance serve` or check AI_ENHANCE_ENDPOINT")
        cmd = self.settings.serve_command
        if not cmd:
            raise ClientError(f"no ai-enhance backend answers at {self.endpoint} and none is installed "
                              "to start; run `python3 installer/install.py` or start `ai-enhance serve`")
        proc = start_backend(cmd, self.endpoint, log_path)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if on_wait:
                on_wait("Starting the AI Enhance backend…")
            caps = self.ping(timeout=1.0)
            if caps is not None:
                return caps
            rc = proc.poll()
            if rc is not None:
                # It exited: either it lost a race with another backend (then that one answers) or failed.
                caps = self.ping(timeout=2.0)
                if caps is not None:
                    return caps
                raise ClientError(f"the backend exited at start ({_tail(proc.log_path)}); "
                                  f"run `{' '.join(cmd)}` in a terminal to see why")
        proc.kill()
        raise ClientError(f"the backend did not answer within {wait:.0f} s at {self.endpoint}; "
                          f"see its log {proc.log_path}")

    def cancel(self, job_id: str) -> None:
        self._socket().send_multipart(P.encode(P.new_header(P.MsgType.CANCEL, job_id)))

    def _cancel_confirmed(self, job_id: str, wait: float = CONFIRM_S) -> "ClientError":
        """Cancel ``job_id`` and wait for the backend to say it stopped (its `cancelled` error, or
        the result that was already on its way): the ClientError to raise, with ``confirmed`` and
        the ``seconds`` it took."""
        t0 = time.monotonic()
        self.cancel(job_id)
        confirmed = False
        while time.monotonic() - t0 < wait:
            msg = self._recv(job_id, max(0.01, wait - (time.monotonic() - t0)))
            if msg is None:
                break
            if msg.type in (P.MsgType.ERROR, P.MsgType.RESULT, P.MsgType.DONE):
                confirmed = True
                break
            if msg.type == P.MsgType.HEARTBEAT and msg.header.get("state") == "unknown":
                confirmed = True      # gone already
                break
        err = ClientError("cancelled" if confirmed else
                          f"cancelled (the backend did not confirm within {wait:.0f} s)",
                          P.ErrorKind.CANCELLED.value)
        err.confirmed, err.seconds = confirmed, time.monotonic() - t0
        return err

    def enhance(self, *, op: str, spec: P.ImageSpec, pixels, model: str | None = None, scale: int = 1,
                tile: int = 0, roi: P.Rect | None = None, options: dict | None = None,
                post: dict | None = None, mask: tuple[P.ImageSpec, bytes] | None = None,
                on_progress: ProgressFn | None = None,
                should_cancel: Callable[[], bool] | None = None,
                job_id: str | None = None) -> Result:
        """Run one job; blocks, calling on_progress(fraction, text) as tiles finish.  ``mask`` is
        the optional named input "mask" (1 channel u8, the image's size).

        Sends a heartbeat every second; if the backend stops answering heartbeats for
        `idle_timeout` seconds, gives up with a ClientError."""
        job_id = job_id or uuid.uuid4().hex
        sock = self._socket()
        extra = [("mask", mask[0], mask[1])] if mask is not None else []
        sock.send_multipart(P.enhance_request(job_id, op=op, model=model, image=spec, pixels=pixels,
                                              scale=scale, tile=tile, roi=roi, options=options,
                                              post=post, extra_inputs=extra, heartbeat=self.heartbeat),
                            copy=False)
        return self._wait(job_id, on_progress, should_cancel)

    def install_models(self, ids: list[str], *, on_progress: ProgressFn | None = None,
                       should_cancel: Callable[[], bool] | None = None, job_id: str | None = None) -> dict:
        """The backend downloads the catalogue models ``ids`` (with what they need), verified;
        returns what changed (``installed``, ``present``, ``bytes``).  Cancelling keeps the partial
        file: the next install resumes it."""
        return self._models(P.ModelsAction.INSTALL, ids, on_progress, should_cancel, job_id)

    def remove_models(self, ids: list[str], *, job_id: str | None = None) -> dict:
        """The backend deletes the files of ``ids`` (and support files only they needed)."""
        return self._models(P.ModelsAction.REMOVE, ids, None, None, job_id)

    def _models(self, action, ids, on_progress, should_cancel, job_id) -> dict:
        job_id = job_id or "models-" + uuid.uuid4().hex[:16]
        self._socket().send_multipart(P.models_request(job_id, action, ids, heartbeat=self.heartbeat))
        return self._wait(job_id, on_progress, should_cancel)

    def _wait(self, job_id: str, on_progress: ProgressFn | None,
              should_cancel: Callable[[], bool] | None):
        """The replies of one request until its end: a Result (enhance), the info dict (models) or
        a ClientError; heartbeats meanwhile."""
        sock = self._socket()
        last_seen = time.monotonic()
        next_beat = last_seen + self.beat_s
        while True:
            now = time.monotonic()
            if should_cancel is not None and should_cancel():
                raise self._cancel_confirmed(job_id)
            if now >= next_beat:
                sock.send_multipart(P.encode(P.new_header(P.MsgType.HEARTBEAT, job_id)))
                next_beat = now + self.beat_s
            msg = self._recv(job_id, max(0.01, min(next_beat - now, 0.1 if should_cancel else 1e9)))
            if msg is None:
                if time.monotonic() - last_seen > self.idle_timeout:
                    self._reset()
                    raise ClientError(f"the backend at {self.endpoint} stopped answering for "
                                      f"{self.idle_timeout:.0f} s; see its log, then try again")
                continue
            last_seen = time.monotonic()
            if msg.type == P.MsgType.PROGRESS:
                if on_progress:
                    on_progress(msg.header["fraction"], msg.header.get("text", ""))
            elif msg.type == P.MsgType.RESULT:
                h = msg.header
                spec_out = P.ImageSpec.from_json(h["image"]) if h.get("image") else None
                frames = list(msg.frames)
                pixels = bytes(frames.pop(0)) if spec_out is not None else None
                masks = {}
                for m, f in zip(h.get("masks", []), frames):
                    masks[m["name"]] = (P.ImageSpec.from_json(m["image"], "mask"), bytes(f))
                return Result(spec_out, pixels, masks, h.get("info", {}))
            elif msg.type == P.MsgType.DONE:
                return dict(msg.header.get("info") or {})
            elif msg.type == P.MsgType.ERROR:
                raise ClientError(_error_text(msg.header), msg.header.get("kind", "internal"))
            elif msg.type == P.MsgType.HEARTBEAT and msg.header.get("state") == "unknown":
                # Replies on one connection arrive in order: the job is gone without a result.
                raise ClientError("the backend dropped this job without a result (was it restarted, or "
                                  "the image over its frame limit?); try again, with a selection if large",
                                  P.ErrorKind.INTERNAL.value)
            # ACCEPTED / HEARTBEAT: liveness only


def _error_text(h: dict) -> str:
    msg, hint = h.get("message", "backend error"), h.get("hint")
    return f"{msg}; {hint}" if hint else msg


class _Started:
    def __init__(self, popen: subprocess.Popen, log_path: str):
        self.popen, self.log_path = popen, log_path

    def poll(self):
        return self.popen.poll()

    def kill(self):
        try:
            self.popen.kill()
        except OSError:
            pass


def start_backend(cmd: list[str], endpoint: str, log_path=None) -> _Started:
    """Start the backend detached from the caller: own session/process group, no stdin."""
    if log_path is None:
        import tempfile
        log_path = Path(tempfile.gettempdir()) / f"ai-enhance-serve-{os.getuid() if hasattr(os, 'getuid') else 0}.log"
    env = dict(os.environ, AI_ENHANCE_ENDPOINT=endpoint)
    kwargs: dict = {}
    if os.name == "nt":
        kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP | getattr(subprocess, "DETACHED_PROCESS", 0)
    else:
        kwargs["start_new_session"] = True
    try:
        log = open(log_path, "ab")
    except OSError:
        log = subprocess.DEVNULL
    try:
        popen = subprocess.Popen(list(cmd) + ["--endpoint", endpoint], stdin=subprocess.DEVNULL,
                                 stdout=log, stderr=log, env=env, close_fds=True, **kwargs)
    except OSError as e:
        raise ClientError(f"cannot start the backend `{' '.join(cmd)}` ({e.strerror}); "
                          "re-run the installer or set serve_command in the settings file") from None
    finally:
        if log is not subprocess.DEVNULL:
            log.close()
    return _Started(popen, str(log_path))


def _tail(path: str) -> str:
    try:
        lines = [ln.strip() for ln in Path(path).read_text("utf-8", "replace").splitlines() if ln.strip()]
        return P.one_line(lines[-1], 200) if lines else "no output"
    except OSError:
        return "no log"
