"""ZeroMQ client of the ai-enhance backend, used by the GIMP plug-in and by the `ai-enhance` CLI
alike (one path).  Standard library + pyzmq only: never numpy, never torch.

Every connection is CURVE-authenticated (keys.py): the client proves its key and accepts only a
backend holding the secret of the public key it trusts.  A listener that cannot complete that
handshake (another user's backend, a program squatting on the port) is named, never used.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import zmq

from . import keys as K
from . import protocol as P
from .settings import Endpoint, EndpointError, Settings, parse_endpoint

ProgressFn = Callable[[float, str], None]

HEARTBEAT_S = 1.0
#: Silence after which a client looks whether a local backend's process still exists.
CRASH_CHECK_S = 3.0
#: A gap this long between two turns of the wait loop means THIS process was paused (SIGSTOP,
#: a suspended laptop, a debugger): the backend's silence over it is not the backend's fault.
PAUSE_GAP_S = 3.0
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
    layers: dict = field(default_factory=dict)  # name -> (ImageSpec, bytes): e.g. "grain"


_HANDSHAKE_FAILED = {getattr(zmq, n) for n in ("EVENT_HANDSHAKE_FAILED_NO_DETAIL", "EVENT_HANDSHAKE_FAILED_PROTOCOL",
                                               "EVENT_HANDSHAKE_FAILED_AUTH") if hasattr(zmq, n)}
_HANDSHAKE_OK = getattr(zmq, "EVENT_HANDSHAKE_SUCCEEDED", None)


class Client:
    """One DEALER socket to the backend.  Not thread-safe; cheap to create."""

    def __init__(self, endpoint: str | None = None, *, settings: Settings | None = None,
                 idle_timeout: float = 30.0, context: zmq.Context | None = None,
                 keys_dir: str | os.PathLike | None = None, server_key: str | bytes | None = None,
                 compress: bool | None = None, heartbeat: float | None = None):
        self.settings = settings or Settings.load()
        self.endpoint = endpoint or self.settings.endpoint
        self.idle_timeout = idle_timeout
        self.keys_dir = Path(keys_dir) if keys_dir else self.settings.keys_path()
        self._server_key = server_key
        self._compress = compress
        #: None: heartbeats every HEARTBEAT_S and the backend's own silence limit; a number: ask the
        #: backend to drop this client's jobs after that many silent seconds (and beat 4x as often),
        #: so that a killed client (GIMP's status-bar Cancel) stops the backend within ~1-2 s
        self.heartbeat = heartbeat
        self.beat_s = HEARTBEAT_S if heartbeat is None else max(0.05, min(HEARTBEAT_S, heartbeat / 4))
        self._ctx = context or zmq.Context.instance()
        self._sock = None
        self._monitor = None
        self._events: list[tuple[int, int]] = []
        self._ep: Endpoint | None = None
        self._ack_pending = False
        self.backend: dict = {}          # pid, log, cgroup facts of the backend that answered

    # ------------------------------------------------------------------ plumbing
    @property
    def parsed(self) -> Endpoint:
        if self._ep is None:
            try:
                self._ep = parse_endpoint(self.endpoint)
            except EndpointError as e:
                raise ClientError(f"{e}; set {self._fix_endpoint()}", "endpoint") from None
        return self._ep

    def _trusted_server_key(self) -> bytes:
        try:
            if self._server_key:
                return K.parse_public(self._server_key)
            if not self.parsed.local and not (self.settings.server_key or os.environ.get(K.ENV_SERVER_KEY)):
                raise ClientError(f"{self.endpoint} is another machine, and this client does not know its "
                                  f"backend's public key; run `ai-enhance keys server-key` there and set "
                                  f"{K.ENV_SERVER_KEY} (or `ai-enhance keys trust KEY --endpoint {self.endpoint}`)",
                                  "auth")
            return K.server_public(self.keys_dir, self.settings.server_key)
        except K.KeysError as e:
            raise ClientError(str(e), "auth") from None
        except OSError as e:
            raise ClientError(f"cannot read the keys in {self.keys_dir} ({e.strerror}); set AI_ENHANCE_KEYS "
                              "to a private folder of yours", "auth") from None

    def _socket(self):
        if self._sock is None:
            ep = self.parsed
            server_key = self._trusted_server_key()
            try:
                pair = K.client_pair(self.keys_dir)
            except (K.KeysError, OSError) as e:
                raise ClientError(f"cannot use the client keys in {self.keys_dir} ({e}); run "
                                  "`ai-enhance keys init` or set AI_ENHANCE_KEYS to a private folder", "auth") from None
            s = self._ctx.socket(zmq.DEALER)
            s.setsockopt(zmq.LINGER, 0)
            s.setsockopt(zmq.MAXMSGSIZE, P.MAX_FRAME_BYTES)
            if ep.ipv6:
                s.setsockopt(zmq.IPV6, 1)
            s.curve_serverkey = server_key
            s.curve_publickey = pair.public
            s.curve_secretkey = pair.secret
            try:
                self._monitor = s.get_monitor_socket()
            except zmq.ZMQError:
                self._monitor = None
            try:
                s.connect(self.endpoint)
            except zmq.ZMQError as e:
                s.close()
                raise ClientError(f"bad backend endpoint {self.endpoint!r} ({e}); set {self._fix_endpoint()}",
                                  "endpoint") from None
            self._sock = s
            self._events = []
        return self._sock

    def _fix_endpoint(self) -> str:
        return "AI_ENHANCE_ENDPOINT to e.g. tcp://127.0.0.1:5588"

    def close(self) -> None:
        if self._sock is not None:
            if self._monitor is not None:
                try:
                    self._sock.disable_monitor()
                except zmq.ZMQError:
                    pass
                self._monitor.close(0)
                self._monitor = None
            # a `received` just sent must still reach the backend (it frees the result's bound)
            self._sock.close(linger=500 if self._ack_pending else 0)
            self._sock = None
            self._ack_pending = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _reset(self) -> None:
        """Drop the socket: queued requests to a dead peer must not be replayed later."""
        self.close()

    def _drain_events(self) -> None:
        m = self._monitor
        if m is None:
            return
        from zmq.utils.monitor import recv_monitor_message
        while True:
            try:
                if not m.poll(0):
                    return
                ev = recv_monitor_message(m, zmq.NOBLOCK)
            except (zmq.ZMQError, ValueError):
                return
            self._events.append((int(ev["event"]), int(ev.get("value") or 0)))
            del self._events[:-64]

    def untrusted_listener(self) -> str | None:
        """When something accepted the connection but no CURVE handshake with the trusted key
        succeeded: one line naming it (None otherwise)."""
        self._drain_events()
        kinds = [e for e, _ in self._events]
        if _HANDSHAKE_OK is not None and _HANDSHAKE_OK in kinds:
            return None
        if zmq.EVENT_CONNECTED not in kinds:
            return None
        who = listener_owner(self.parsed)
        if getattr(zmq, "EVENT_HANDSHAKE_FAILED_AUTH", -1) in kinds:
            return (f"the backend at {self.endpoint}{who} refused this client's key: it is another user's "
                    "or another machine's backend; allow this client there (`ai-enhance keys allow` with "
                    "the key `ai-enhance keys export` prints here), or use your own backend on a free port")
        if any(e in _HANDSHAKE_FAILED for e in kinds) or zmq.EVENT_DISCONNECTED in kinds:
            return (f"something listens at {self.endpoint}{who} but is not a backend this client trusts "
                    "(CURVE handshake failed: another user's backend or another program holds the port; "
                    "nothing was sent to it); stop it, or set AI_ENHANCE_ENDPOINT to a free port such as "
                    "tcp://127.0.0.1:5589")
        return None

    def _send(self, frames: list, timeout: float | None = None, *, must: bool = True) -> bool:
        """Send without ever blocking on a dead or untrusted connection (a DEALER blocks while it
        has no peer): wait for room up to ``timeout``, naming an untrusted listener at once.
        ``must`` False: a heartbeat, dropped when there is no room."""
        sock = self._socket()
        if not must:
            try:
                sock.send_multipart(frames, zmq.NOBLOCK, copy=False)
                return True
            except zmq.Again:
                return False
        deadline = time.monotonic() + (self.idle_timeout if timeout is None else timeout)
        while True:
            if sock.poll(200, zmq.POLLOUT):
                try:
                    sock.send_multipart(frames, zmq.NOBLOCK, copy=False)
                    return True
                except zmq.Again:       # the peer went away between the poll and the send
                    pass
            why = self.untrusted_listener()
            if why:
                self._reset()
                raise ClientError(why, "untrusted")
            if time.monotonic() >= deadline:
                self._reset()
                return False

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
        """Capabilities of the backend (models, devices, version), or None if nothing answers.
        Raises ClientError when a listener answers that is not a backend this client trusts."""
        job_id = "ping-" + uuid.uuid4().hex[:12]
        if not self._send(P.encode(P.new_header(P.MsgType.PING, job_id)), timeout):
            return None
        msg = self._recv(job_id, timeout)
        if msg is None:
            why = self.untrusted_listener()
            self._reset()
            if why:
                raise ClientError(why, "untrusted")
            return None
        if msg.type == P.MsgType.ERROR:
            raise ClientError(_error_text(msg.header), msg.header.get("kind", "internal"))
        self._note_backend(msg.header)
        return msg.header

    def _note_backend(self, h: dict) -> None:
        pid = h.get("pid")
        if isinstance(pid, int) and pid > 0 and self.parsed.local:
            if self.backend.get("pid") != pid:
                self.backend = {"pid": pid, "visible": is_backend_process(pid),
                                "cgroup": _cgroup_oom_state(pid)}
            if h.get("log"):
                self.backend["log"] = h.get("log")
            if isinstance(h.get("memory"), dict):
                self.backend["memory"] = h["memory"]

    def check_identity(self, caps: dict) -> None:
        """Refuse a backend of another installation (the settings name the one expected)."""
        want = self.settings.installation
        have = caps.get("installation")
        if not want or not self.parsed.local:
            return
        if not have or _same_path(want, have):
            return
        pid = caps.get("pid")
        stop = f"`{Path(have) / 'bin' / 'ai-enhance'} stop --endpoint {self.endpoint}`"
        if pid:
            stop += f" (or `kill {pid}`)"
        raise ClientError(f"the backend answering at {self.endpoint} (pid {pid}, installation {have}, models "
                          f"{caps.get('models_dir')}) belongs to another installation than this one ({want}); "
                          f"stop it with {stop}, or give this installation its own port "
                          "(installer --endpoint)", "identity")

    def ensure_backend(self, *, autostart: bool = True, wait: float = 90.0,
                       on_wait: Callable[[str], None] | None = None,
                       log_path: str | os.PathLike | None = None) -> dict:
        """Ping; when nothing answers and autostart is on, start `ai-enhance serve` in its own
        session (GIMP's Cancel kills the plug-in's process group, never the backend) and wait."""
        caps = self.ping(timeout=1.5)
        if caps is not None:
            self.check_identity(caps)
            return caps
        if not autostart:
            raise ClientError(f"no ai-enhance backend answers at {self.endpoint}; start it with "
                              "`ai-enhance serve` or check AI_ENHANCE_ENDPOINT")
        if not self.parsed.local:
            # another machine: never started from here; it may be starting up, so keep asking
            deadline = time.monotonic() + min(wait, 30.0)
            while time.monotonic() < deadline:
                if on_wait:
                    on_wait("Waiting for the remote AI Enhance backend…")
                caps = self.ping(timeout=1.5)
                if caps is not None:
                    return caps
            raise ClientError(f"no ai-enhance backend answers at {self.endpoint} (another machine: it is "
                              "not started from here); start `ai-enhance serve --listen ...` there, see docs/remote.md")
        cmd = self.settings.serve_command
        if not cmd:
            raise ClientError(f"no ai-enhance backend answers at {self.endpoint} and none is installed "
                              "to start; run `python3 installer/install.py` or start `ai-enhance serve`")
        try:
            K.ensure(self.keys_dir)     # first use: the backend finds its keys there
        except (K.KeysError, OSError) as e:
            raise ClientError(f"cannot create the keys in {self.keys_dir} ({e}); set AI_ENHANCE_KEYS "
                              "to a private folder", "auth") from None
        proc = start_backend(cmd, self.endpoint, log_path, keys_dir=self.keys_dir)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if on_wait:
                on_wait("Starting the AI Enhance backend…")
            caps = self.ping(timeout=1.0)
            if caps is not None:
                self.check_identity(caps)
                return caps
            rc = proc.poll()
            if rc is not None:
                # It exited: either it lost a race with another backend (then that one answers) or failed.
                caps = self.ping(timeout=2.0)
                if caps is not None:
                    self.check_identity(caps)
                    return caps
                raise ClientError(f"the backend exited at start ({_tail(proc.log_path)}); "
                                  f"run `{' '.join(cmd)}` in a terminal to see why")
        proc.kill()
        raise ClientError(f"the backend did not answer within {wait:.0f} s at {self.endpoint}; "
                          f"see its log {proc.log_path}")

    def cancel(self, job_id: str) -> None:
        self._send(P.encode(P.new_header(P.MsgType.CANCEL, job_id)), must=False)

    def shutdown(self, timeout: float = 5.0) -> dict | None:
        """Ask the backend to stop (only its owner's key may): the answer says what it cancels."""
        job_id = "shutdown-" + uuid.uuid4().hex[:8]
        if not self._send(P.shutdown_request(job_id), timeout):
            return None
        msg = self._recv(job_id, timeout)
        if msg is None:
            return None
        if msg.type == P.MsgType.ERROR and msg.header.get("kind") != P.ErrorKind.SHUTTING_DOWN.value:
            raise ClientError(_error_text(msg.header), msg.header.get("kind", "internal"))
        return msg.header

    def compress(self) -> bool:
        """Deflate large frames: never on loopback or ipc://; on a network link when the settings
        say so (``compress``, AI_ENHANCE_COMPRESS=1).  Measured (docs/security.md): photos shrink
        ~1.4x at ~35 MB/s, so it pays only on links slower than ~8 MB/s (Wi-Fi, VPN), not on
        gigabit Ethernet."""
        if self._compress is not None:
            return self._compress
        return self.settings.compress and not self.parsed.loopback

    def _acknowledge(self, job_id: str) -> None:
        """Tell the backend the result of ``job_id`` arrived (it stops counting it as unread)."""
        try:
            self._ack_pending = self._send(P.received_request(job_id), must=False) or self._ack_pending
        except zmq.ZMQError:
            pass

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
                if msg.type == P.MsgType.RESULT:
                    self._acknowledge(job_id)
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
                reuse: str | None = None,
                on_progress: ProgressFn | None = None,
                should_cancel: Callable[[], bool] | None = None,
                job_id: str | None = None) -> Result:
        """Run one job; blocks, calling on_progress(fraction, text) as tiles finish.  ``mask`` is
        the optional named input "mask" (1 channel u8, the image's size).

        Sends a heartbeat every second; if the backend stops answering heartbeats for
        `idle_timeout` seconds, gives up with a ClientError (at once when a local backend's
        process is gone: a crash)."""
        job_id = job_id or uuid.uuid4().hex
        extra = [("mask", mask[0], mask[1])] if mask is not None else []
        request = P.enhance_request(job_id, op=op, model=model, image=spec, pixels=pixels, scale=scale,
                                    tile=tile, roi=roi, options=options, post=post, extra_inputs=extra,
                                    reuse=reuse, compress=self.compress(), heartbeat=self.heartbeat)
        if not self._send(request):
            raise ClientError(f"no backend took the job at {self.endpoint} within {self.idle_timeout:.0f} s; "
                              "start it with `ai-enhance serve` or check AI_ENHANCE_ENDPOINT", "timeout")
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
        if not self._send(P.models_request(job_id, action, ids, heartbeat=self.heartbeat)):
            raise ClientError(f"no backend took the request at {self.endpoint} within {self.idle_timeout:.0f} s; "
                              "start it with `ai-enhance serve` or check AI_ENHANCE_ENDPOINT", "timeout")
        return self._wait(job_id, on_progress, should_cancel)

    def _wait(self, job_id: str, on_progress: ProgressFn | None,
              should_cancel: Callable[[], bool] | None):
        """The replies of one request until its end: a Result (enhance), the info dict (models) or
        a ClientError; heartbeats meanwhile."""
        last_seen = time.monotonic()
        last_turn = last_seen
        paused = 0.0
        next_beat = last_seen + self.beat_s
        while True:
            now = time.monotonic()
            gap = now - last_turn
            last_turn = now
            if gap > PAUSE_GAP_S:
                # this process did not run for `gap` seconds: give the backend a fresh window
                paused += gap
                last_seen = now
            if should_cancel is not None and should_cancel():
                raise self._cancel_confirmed(job_id)
            if now >= next_beat:
                self._send(P.encode(P.new_header(P.MsgType.HEARTBEAT, job_id)), must=False)
                next_beat = now + self.beat_s
            msg = self._recv(job_id, max(0.01, min(next_beat - now, 0.1 if should_cancel else 1e9)))
            if msg is None:
                silent = time.monotonic() - last_seen
                if silent > CRASH_CHECK_S:
                    self._check_alive()
                    if silent > CRASH_CHECK_S + 1:
                        why = self.untrusted_listener()
                        if why:
                            self._reset()
                            raise ClientError(why, "untrusted")
                if silent > self.idle_timeout:
                    self._reset()
                    raise ClientError(f"the backend at {self.endpoint} stopped answering for "
                                      f"{self.idle_timeout:.0f} s (its process still exists); see its log"
                                      f"{' ' + self.backend['log'] if self.backend.get('log') else ''}, "
                                      "then try again", "timeout")
                continue
            last_seen = time.monotonic()
            if msg.type == P.MsgType.ACCEPTED:
                self._note_backend(msg.header)
            elif msg.type == P.MsgType.PROGRESS:
                if on_progress:
                    on_progress(msg.header["fraction"], msg.header.get("text", ""))
            elif msg.type == P.MsgType.RESULT:
                h = msg.header
                spec_out = P.ImageSpec.from_json(h["image"]) if h.get("image") else None
                frames = list(msg.frames)
                pixels_out = bytes(frames.pop(0)) if spec_out is not None else None
                masks, layers = {}, {}
                for m, f in zip(h.get("masks", []), frames):
                    masks[m["name"]] = (P.ImageSpec.from_json(m["image"], "mask"), bytes(f))
                for m, f in zip(h.get("layers", []), frames[len(masks):]):
                    layers[m["name"]] = (P.ImageSpec.from_json(m["image"], "layer"), bytes(f))
                self._acknowledge(job_id)
                return Result(spec_out, pixels_out, masks, h.get("info", {}), layers)
            elif msg.type == P.MsgType.DONE:
                return dict(msg.header.get("info") or {})
            elif msg.type == P.MsgType.ERROR:
                kind = msg.header.get("kind", "internal")
                text = _error_text(msg.header)
                if kind == P.ErrorKind.CLIENT_GONE.value and paused:
                    text = (f"this program was paused for {paused:.0f} s (stopped or suspended), so the "
                            "backend gave the job up; run it again")
                raise ClientError(text, kind)
            elif msg.type == P.MsgType.HEARTBEAT and msg.header.get("state") == "unknown":
                # Replies on one connection arrive in order: the job is gone without a result.
                if paused:
                    raise ClientError(f"this program was paused for {paused:.0f} s (stopped or suspended), "
                                      "so the backend gave the job up; run it again", P.ErrorKind.CLIENT_GONE.value)
                raise ClientError("the backend dropped this job without a result (was it restarted, or "
                                  "the image over its frame limit?); try again, with a selection if large",
                                  P.ErrorKind.INTERNAL.value)
            # HEARTBEAT: liveness only

    def _check_alive(self) -> None:
        """A local backend whose process is gone crashed or was killed: say so at once, with
        the likely reason, and write it into the backend's log (it could not)."""
        pid = self.backend.get("pid")
        if not pid or not self.backend.get("visible") or is_backend_process(pid):
            return
        reason = _death_reason(self.backend)
        log = self.backend.get("log")
        if log:
            try:
                with open(log, "a", encoding="utf-8") as f:
                    f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')},000 ERROR ai_enhance.client: backend pid "
                            f"{pid} died without a goodbye while running a job: {reason} (noted by client "
                            f"pid {os.getpid()})\n")
            except OSError:
                pass
        self._reset()
        raise ClientError(f"the backend (pid {pid}) crashed while running this job: {reason}; it starts "
                          f"again with the next run{' (log ' + log + ')' if log else ''}", "crashed")


def _error_text(h: dict) -> str:
    msg, hint = h.get("message", "backend error"), h.get("hint")
    return f"{msg}; {hint}" if hint else msg


def _same_path(a: str, b: str) -> bool:
    try:
        return os.path.realpath(a) == os.path.realpath(b)
    except (OSError, ValueError):
        return a == b


# --------------------------------------------------------------------------- process facts (Linux)

def is_backend_process(pid: int) -> bool:
    """Is ``pid`` a live (not zombie) process that looks like the backend?  Where /proc is not
    available, any live pid counts."""
    stat_path = Path(f"/proc/{pid}/stat")
    if stat_path.parent.parent.is_dir() and Path("/proc/self").exists():
        try:
            st = stat_path.read_text()
            state = st[st.rindex(")") + 2:].split()[0]
            if state in ("Z", "X"):
                return False
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
            return b"ai_enhance" in cmd or b"ai-enhance" in cmd or not cmd
        except (OSError, ValueError, IndexError):
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def _cgroup_files(pid: int) -> list[Path]:
    out = []
    try:
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        ctrls, path = parts[1], parts[2].lstrip("/")
        if ctrls == "":
            out.append(Path("/sys/fs/cgroup") / path / "memory.events")
        elif "memory" in ctrls.split(","):
            out.append(Path("/sys/fs/cgroup/memory") / path / "memory.oom_control")
    return [p for p in out if p.is_file()]


def _oom_kills(path: Path) -> int | None:
    try:
        for line in path.read_text().splitlines():
            k, _, v = line.partition(" ")
            if k == "oom_kill":
                return int(v)
    except (OSError, ValueError):
        return None
    return None


def _cgroup_oom_state(pid: int) -> dict:
    """The OOM-kill counters of the backend's memory cgroups now (compared after a death)."""
    return {str(p): _oom_kills(p) for p in _cgroup_files(pid)}


def _death_reason(backend: dict) -> str:
    for path, before in (backend.get("cgroup") or {}).items():
        now = _oom_kills(Path(path))
        if now is not None and before is not None and now > before:
            lim = (backend.get("memory") or {}).get("limit_mb")
            return ("killed by the out-of-memory killer of its memory cgroup"
                    + (f" (limit {lim} MB)" if lim else "")
                    + "; use a smaller tile size or selection, or raise the container's memory limit")
    lim = (backend.get("memory") or {}).get("limit_mb")
    return ("it was killed (by the out-of-memory killer, a signal, or a crash of the GPU driver)"
            + (f"; its memory limit was {lim} MB" if lim else "")
            + "; try a smaller tile size or selection, and see `journalctl -k` for an OOM kill")


def listener_owner(ep: Endpoint) -> str:
    """' (held by user NAME, pid N ...)' for a local TCP listener, from /proc/net/tcp{,6}; ''
    when unknown."""
    if ep.scheme != "tcp" or not ep.loopback or not ep.port:
        return ""
    entries = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            f = row.split()
            if len(f) < 10 or f[3] != "0A":       # LISTEN
                continue
            try:
                if int(f[1].rsplit(":", 1)[1], 16) == ep.port:
                    entries.append((int(f[7]), f[9]))
            except (ValueError, IndexError):
                continue
    if not entries:
        return ""
    uid, inode = entries[0]
    try:
        import pwd
        user = pwd.getpwuid(uid).pw_name
    except (ImportError, KeyError):
        user = str(uid)
    if hasattr(os, "getuid") and uid != os.getuid():
        return f" (held by another user: {user}, uid {uid})"
    pid = _pid_of_socket(inode)
    return f" (held by your process {pid}: {_cmdline(pid)})" if pid else f" (held by user {user})"


def _pid_of_socket(inode: str) -> int | None:
    target = f"socket:[{inode}]"
    try:
        pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return None
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                    return pid
        except OSError:
            continue
    return None


def _cmdline(pid: int) -> str:
    try:
        return P.one_line(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace"), 100)
    except OSError:
        return "?"


# --------------------------------------------------------------------------- starting a backend

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


def start_backend(cmd: list[str], endpoint: str, log_path=None, keys_dir: Path | None = None) -> _Started:
    """Start the backend detached from the caller: own session/process group, no stdin.  It
    gets the same keys folder as this client (so it knows this client's key)."""
    if log_path is None:
        import tempfile
        log_path = Path(tempfile.gettempdir()) / f"ai-enhance-serve-{os.getuid() if hasattr(os, 'getuid') else 0}.log"
    env = dict(os.environ, AI_ENHANCE_ENDPOINT=endpoint)
    if keys_dir is not None:
        env[K.ENV_KEYS] = str(keys_dir)
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


if sys.platform == "win32":  # pragma: no cover - no /proc there
    def listener_owner(ep: Endpoint) -> str:  # noqa: F811
        return ""
