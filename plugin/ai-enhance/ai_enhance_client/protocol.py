"""Wire protocol between the GIMP plug-in (or the CLI) and the ai-enhance backend.

One source of truth, shared by both sides: the plug-in imports this file from its own folder,
the backend installs the same file as ``ai_enhance_client.protocol``.  Pure standard library
(GIMP's Python may have neither numpy nor torch).

A message is a list of ZeroMQ frames: frame 0 is a small UTF-8 JSON header, every further frame
is raw pixel data described by the header.  No pickle, ever.  See docs/protocol.md.

v3 (this version) adds to v2: results whose image is larger than one frame travel in row bands
(``image_rows``), data frames may be deflated (``codecs``, asked for with ``accept``), the client
confirms a result it has read (``received``), the owner may stop the backend (``shutdown``), and
the error kind ``shutting_down``.  Every transport is authenticated with ZeroMQ CURVE (keys.py).
"""
from __future__ import annotations

import json
import re
import zlib
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Iterable, Sequence

VERSION = 3
#: Versions this side can tell apart well enough to answer with a useful error.
OLDEST_KNOWN = 1

#: Largest JSON header accepted (bytes).
MAX_HEADER_BYTES = 64 * 1024
#: Deepest nesting of JSON arrays/objects accepted in a header, checked on the raw bytes BEFORE
#: parsing (json.loads recurses: a 2 KB header nested 1,000 levels deep would raise RecursionError).
MAX_JSON_DEPTH = 32
#: Largest single frame accepted by default (bytes); both sides set ZMQ MAXMSGSIZE to this.
#: A result image larger than one frame travels in row bands (``image_rows``).
MAX_FRAME_BYTES = 1 << 30
#: Data frames at least this large may be deflated on links that are not loopback (``codecs``).
COMPRESS_MIN_BYTES = 1 << 20
#: The one codec: zlib (level 1) over the frame's bytes regrouped by sample byte (``shuffle``).
CODEC_ZLIB = "zlib"
#: Largest image side and pixel count accepted in a header (checked before any allocation).
MAX_SIDE = 65536
MAX_PIXELS = 256 * 1024 * 1024
MAX_SCALE = 8
MAX_TILE = 8192
MAX_MASKS = 8
MAX_INPUTS = 4
#: Most row bands one result image may be split into.
MAX_BANDS = 1024
MAX_MODEL_IDS = 16
#: The shortest client silence (s) a client may ask the backend to treat as "gone" (`heartbeat`).
MIN_HEARTBEAT_TIMEOUT = 0.5

_JOB_ID_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
_NAME_RE = re.compile(r"^[A-Za-z0-9_.+-]{1,128}$")
_OP_RE = re.compile(r"^[a-z][a-z0-9-]{0,40}$")


class ProtocolError(Exception):
    """A message that does not follow this protocol.  ``str()`` is one line with a hint."""

    def __init__(self, message: str, job_id: str | None = None, peer_version: int | None = None):
        super().__init__(message)
        self.job_id = job_id
        #: the version an older peer speaks, so that the answer can be in its version
        self.peer_version = peer_version


class MsgType(str, Enum):
    # requests (client -> backend)
    PING = "ping"
    ENHANCE = "enhance"
    CANCEL = "cancel"
    HEARTBEAT = "heartbeat"
    RECEIVED = "received"      # v3: the client has read its result (frees the backend's bound)
    SHUTDOWN = "shutdown"      # v3: stop the backend (only its owner's key may)
    MODELS = "models"          # install or remove catalogue models (downloads with progress)
    # replies (backend -> client)
    PONG = "pong"
    ACCEPTED = "accepted"
    PROGRESS = "progress"
    RESULT = "result"
    DONE = "done"              # the end of a `models` request
    ERROR = "error"


#: HEARTBEAT goes both ways: the client sends one per second while it waits for a job; the backend
#: answers each, so a client knows the backend lives even while one tile takes minutes.
REQUEST_TYPES = frozenset({MsgType.PING, MsgType.ENHANCE, MsgType.CANCEL, MsgType.HEARTBEAT,
                           MsgType.RECEIVED, MsgType.SHUTDOWN, MsgType.MODELS})
REPLY_TYPES = frozenset({MsgType.PONG, MsgType.ACCEPTED, MsgType.PROGRESS, MsgType.RESULT,
                         MsgType.DONE, MsgType.ERROR, MsgType.HEARTBEAT})


class ModelsAction(str, Enum):
    INSTALL = "install"        # download (catalogue URL, sha256, resume) with companions
    REMOVE = "remove"          # delete the files (support files no other model needs go too)


class ErrorKind(str, Enum):
    BAD_REQUEST = "bad_request"          # malformed header/frames; the sender's bug
    VERSION = "version"                  # protocol version mismatch: update plug-in or backend
    TOO_LARGE = "too_large"              # image or frame over the backend's budget
    BUSY = "busy"                        # queue full
    UNKNOWN_MODEL = "unknown_model"      # no such model id
    MODEL_MISSING = "model_missing"      # known id, file not installed
    MODEL_CORRUPT = "model_corrupt"      # file present but unreadable / unsafe / not a model
    UNSUPPORTED = "unsupported"          # valid request the model/operation cannot do
    OUT_OF_MEMORY = "out_of_memory"
    CANCELLED = "cancelled"
    CLIENT_GONE = "client_gone"
    DISK = "disk"                        # disk full / not writable
    SHUTTING_DOWN = "shutting_down"      # the backend is stopping (SIGTERM, `ai-enhance stop`)
    DOWNLOAD = "download"                # a model download failed (network, server, sha256)
    INTERNAL = "internal"


class DType(str, Enum):
    U8 = "u8"
    U16 = "u16"
    F32 = "f32"

    @property
    def itemsize(self) -> int:
        return {"u8": 1, "u16": 2, "f32": 4}[self.value]

    @property
    def numpy_name(self) -> str:
        return {"u8": "uint8", "u16": "<u2", "f32": "<f4"}[self.value]


@dataclass(frozen=True)
class ImageSpec:
    """Shape and sample type of one raw pixel frame: C-contiguous, row-major HWC, little-endian."""

    width: int
    height: int
    channels: int
    dtype: DType

    @property
    def nbytes(self) -> int:
        return self.width * self.height * self.channels * self.dtype.itemsize

    @property
    def pixels(self) -> int:
        return self.width * self.height

    def to_json(self) -> dict:
        return {"width": self.width, "height": self.height, "channels": self.channels,
                "dtype": self.dtype.value}

    @classmethod
    def from_json(cls, obj: Any, what: str = "image") -> "ImageSpec":
        if not isinstance(obj, dict):
            raise ProtocolError(f"'{what}' must be an object with width, height, channels, dtype")
        w = _int_field(obj, "width", 1, MAX_SIDE, what)
        h = _int_field(obj, "height", 1, MAX_SIDE, what)
        c = _int_field(obj, "channels", 1, 4, what)
        dt = obj.get("dtype")
        try:
            dtype = DType(dt)
        except ValueError:
            raise ProtocolError(f"{what}.dtype must be one of u8, u16, f32, got {dt!r}") from None
        if w * h > MAX_PIXELS:
            raise ProtocolError(f"{what} has {w * h} pixels, more than the protocol's {MAX_PIXELS}")
        return cls(w, h, c, dtype)

    def check_frame(self, frame: bytes | memoryview, what: str = "image") -> None:
        n = len(frame) if not isinstance(frame, memoryview) else frame.nbytes
        if n != self.nbytes:
            raise ProtocolError(
                f"{what} frame has {n} bytes but {self.width}x{self.height}x{self.channels} "
                f"{self.dtype.value} needs {self.nbytes}")


@dataclass(frozen=True)
class Rect:
    x: int
    y: int
    width: int
    height: int

    def to_json(self) -> list[int]:
        return [self.x, self.y, self.width, self.height]

    @classmethod
    def from_json(cls, obj: Any, what: str = "roi") -> "Rect":
        if (not isinstance(obj, (list, tuple)) or len(obj) != 4
                or not all(isinstance(v, int) and not isinstance(v, bool) for v in obj)):
            raise ProtocolError(f"'{what}' must be [x, y, width, height] integers")
        x, y, w, h = obj
        if x < 0 or y < 0 or w < 1 or h < 1:
            raise ProtocolError(f"'{what}' {list(obj)} must have x, y >= 0 and width, height >= 1")
        return cls(x, y, w, h)

    def inside(self, width: int, height: int) -> bool:
        return self.x + self.width <= width and self.y + self.height <= height


# --------------------------------------------------------------------------- messages


@dataclass
class Message:
    """A decoded message: the header dict (validated) plus its raw frames."""

    type: MsgType
    job_id: str
    header: dict
    frames: list = field(default_factory=list)


def new_header(type_: MsgType, job_id: str, *, wire_version: int = VERSION, **fields: Any) -> dict:
    header = {"v": wire_version, "type": MsgType(type_).value, "job_id": job_id}
    header.update({k: v for k, v in fields.items() if v is not None})
    return header


def encode(header: dict, frames: Sequence[bytes | memoryview] = ()) -> list:
    """Header dict + raw frames -> list of frames ready for ``socket.send_multipart``."""
    raw = json.dumps(header, separators=(",", ":"), allow_nan=False).encode("utf-8")
    if len(raw) > MAX_HEADER_BYTES:
        raise ProtocolError(f"header is {len(raw)} bytes, more than {MAX_HEADER_BYTES}")
    return [raw, *frames]


_JSON_TOKEN = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]')


def json_depth(raw: bytes, limit: int = MAX_JSON_DEPTH) -> int:
    """Deepest nesting of arrays/objects in JSON text, read without parsing it; stops counting
    past ``limit`` (returns limit + 1).  Brackets inside strings do not count."""
    depth = deepest = 0
    for m in _JSON_TOKEN.finditer(raw):
        t = m.group()[:1]
        if t in (b"[", b"{"):
            depth += 1
            if depth > limit:
                return depth
            deepest = max(deepest, depth)
        elif t in (b"]", b"}"):
            depth -= 1
    return deepest


def decode(frames: Sequence[Any], *, expect: Iterable[MsgType] | None = None,
           max_frame_bytes: int = MAX_FRAME_BYTES) -> Message:
    """Validate and decode a received multipart message (bytes or zmq.Frame objects).

    Raises ProtocolError (one line, says what is wrong) for anything malformed, and nothing
    else whatever the bytes; the error carries the job id when the header was readable far
    enough to have one.  Deflated frames (``codecs``) come back inflated, row bands of a result
    image (``image_rows``) joined into one frame."""
    try:
        return _decode(frames, expect, max_frame_bytes)
    except ProtocolError:
        raise
    except Exception as e:  # noqa: BLE001 - any surprise is the sender's malformed message
        raise ProtocolError(f"malformed message ({type(e).__name__}); is something else talking "
                            "to this port?") from None


def _decode(frames: Sequence[Any], expect, max_frame_bytes: int) -> Message:
    if not frames:
        raise ProtocolError("empty message")
    frames = [_buffer(f) for f in frames]
    head = frames[0]
    if len(head) > MAX_HEADER_BYTES:
        raise ProtocolError(f"header frame is {len(head)} bytes, more than {MAX_HEADER_BYTES}")
    raw = bytes(head)
    # no header can nest deeper than it has openers: most need no scan at all
    if raw.count(b"[") + raw.count(b"{") > MAX_JSON_DEPTH and json_depth(raw) > MAX_JSON_DEPTH:
        raise ProtocolError(f"header nests JSON deeper than {MAX_JSON_DEPTH} levels")
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise ProtocolError("header frame is not UTF-8 JSON (is something else talking to this port?)") from None
    if not isinstance(header, dict):
        raise ProtocolError("header must be a JSON object")
    job_id = header.get("job_id")
    if not isinstance(job_id, str) or not _JOB_ID_RE.match(job_id):
        raise ProtocolError("job_id must be 1-64 characters of letters, digits, '_.:-'")
    v = header.get("v")
    if v != VERSION:
        older = isinstance(v, int) and not isinstance(v, bool) and OLDEST_KNOWN <= v < VERSION
        raise ProtocolError(version_mismatch(v), job_id, v if older else None)
    try:
        mtype = MsgType(header.get("type"))
    except (ValueError, TypeError):
        raise ProtocolError(f"unknown message type {one_line(repr(header.get('type')), 60)} here", job_id) from None
    if expect is not None and mtype not in set(expect):
        raise ProtocolError(f"unexpected message type {mtype.value!r} here", job_id)
    for i, f in enumerate(frames[1:], 1):
        if len(f) > max_frame_bytes:
            raise ProtocolError(f"frame {i} is {len(f)} bytes, more than {max_frame_bytes}", job_id)
    msg = Message(mtype, job_id, header, list(frames[1:]))
    try:
        _inflate(msg)
        _VALIDATORS.get(mtype, _no_frames)(msg)
    except ProtocolError as e:
        e.job_id = e.job_id or job_id
        raise
    return msg


# --------------------------------------------------------------------------- codecs

def shuffle(data, itemsize: int) -> bytes:
    """Regroup bytes by their position in a sample (all low bytes, then all high bytes ...):
    16-bit and float pixels deflate much better so.  Pure slicing: C speed, no numpy."""
    data = bytes(data) if not isinstance(data, bytes) else data
    if itemsize <= 1:
        return data
    return b"".join(data[i::itemsize] for i in range(itemsize))


def unshuffle(data: bytes, itemsize: int) -> bytes:
    if itemsize <= 1:
        return data
    n = len(data)
    if n % itemsize:
        raise ProtocolError(f"a shuffled frame of {n} bytes is not a whole number of {itemsize}-byte samples")
    plane = n // itemsize
    out = bytearray(n)
    for i in range(itemsize):
        out[i::itemsize] = data[i * plane:(i + 1) * plane]
    return bytes(out)


def deflate(data, itemsize: int = 1, level: int = 1) -> bytes:
    return zlib.compress(shuffle(data, itemsize), level)


def compress_frames(frames: Sequence[Any], itemsizes: Sequence[int],
                    min_bytes: int = COMPRESS_MIN_BYTES) -> tuple[list, list]:
    """(frames, codecs): frames of at least ``min_bytes`` deflated where that makes them smaller;
    ``codecs`` is the header field (one entry per frame, None = sent as is)."""
    out, codecs = [], []
    for f, k in zip(frames, itemsizes):
        n = f.nbytes if isinstance(f, memoryview) else len(f)
        if n >= min_bytes:
            z = deflate(f, k)
            if len(z) < n:
                out.append(z)
                codecs.append([CODEC_ZLIB, n, k])
                continue
        out.append(f)
        codecs.append(None)
    return out, codecs


def _inflate(msg: Message) -> None:
    """Inflate the frames the header marks as deflated, each to exactly its announced size (a
    frame that would inflate past it is refused: no zip bomb)."""
    codecs = msg.header.get("codecs")
    if codecs is None:
        return
    if not isinstance(codecs, list) or len(codecs) != len(msg.frames):
        raise ProtocolError(f"codecs must list one entry per data frame ({len(msg.frames)})")
    for i, c in enumerate(codecs):
        if c is None:
            continue
        if (not isinstance(c, list) or len(c) != 3 or c[0] != CODEC_ZLIB
                or not all(isinstance(x, int) and not isinstance(x, bool) for x in c[1:])
                or not 0 <= c[1] <= MAX_FRAME_BYTES or c[2] not in (1, 2, 4)):
            raise ProtocolError(f"codecs[{i}] must be null or [\"zlib\", bytes, itemsize 1|2|4]")
        d = zlib.decompressobj()
        try:
            raw = d.decompress(bytes(msg.frames[i]), c[1] + 1)
        except zlib.error as e:
            raise ProtocolError(f"data frame {i + 1} is not valid deflate data ({e})") from None
        if len(raw) != c[1] or d.unconsumed_tail or not d.eof:
            raise ProtocolError(f"data frame {i + 1} does not inflate to the announced {c[1]} bytes")
        msg.frames[i] = unshuffle(raw, c[2])
    del msg.header["codecs"]


def version_mismatch(v: Any) -> str:
    """The one-line message for a peer speaking another protocol version: which side to update."""
    if isinstance(v, int) and not isinstance(v, bool) and v < VERSION:
        return (f"the other side speaks protocol v{v}, this one v{VERSION}: an older plug-in or CLI is "
                "talking to a newer backend; update the plug-in (re-run `python3 installer/install.py`)")
    if isinstance(v, int) and not isinstance(v, bool) and v > VERSION:
        return (f"the other side speaks protocol v{v}, this one v{VERSION}: update this side "
                "(re-run `python3 installer/install.py`) so the plug-in and the backend match")
    return (f"protocol version {v!r} is not supported (this side speaks v{VERSION}); "
            "install the plug-in and the backend from the same release")


def _buffer(f: Any):
    if isinstance(f, (bytes, bytearray, memoryview)):
        return f if not isinstance(f, memoryview) else f.cast("B")
    buf = getattr(f, "buffer", None)  # zmq.Frame
    if buf is not None:
        return buf.cast("B") if isinstance(buf, memoryview) else buf
    raise ProtocolError(f"frame of type {type(f).__name__} is not bytes")


def _int_field(obj: dict, key: str, lo: int, hi: int, what: str, default: Any = ...) -> int:
    if key not in obj and default is not ...:
        return default
    v = obj.get(key)
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        raise ProtocolError(f"{what}.{key} must be an integer in {lo}..{hi}, got {v!r}")
    return v


def _float_field(obj: dict, key: str, lo: float, hi: float, what: str) -> float:
    v = obj.get(key)
    if not isinstance(v, (int, float)) or isinstance(v, bool) or not lo <= v <= hi:
        raise ProtocolError(f"{what}.{key} must be a number in {lo}..{hi}, got {v!r}")
    return float(v)


def _str_field(obj: dict, key: str, what: str, pattern: re.Pattern = _NAME_RE) -> str:
    v = obj.get(key)
    if not isinstance(v, str) or not pattern.match(v):
        raise ProtocolError(f"{what}.{key} must be a short name (letters, digits, '_.+-'), got {v!r}")
    return v


def _no_frames(msg: Message) -> None:
    if msg.frames:
        raise ProtocolError(f"a {msg.type.value} message carries no data frames", msg.job_id)


def _check_options(obj: Any, what: str) -> None:
    if not isinstance(obj, dict) or len(obj) > 32:
        raise ProtocolError(f"{what} must be an object with at most 32 entries")
    for k, v in obj.items():
        if not _NAME_RE.match(k):
            raise ProtocolError(f"{what} key {k!r} is not a short name")
        if not (v is None or isinstance(v, (bool, int, float)) or (isinstance(v, str) and len(v) <= 256)):
            raise ProtocolError(f"{what}.{k} must be a number, boolean or short string")


def _validate_enhance(msg: Message) -> None:
    h, j = msg.header, msg.job_id
    try:
        op = h.get("op")
        if not isinstance(op, str) or not _OP_RE.match(op):
            raise ProtocolError(f"enhance.op must be an operation name such as 'upscale', got {op!r}")
        if "model" in h:
            _str_field(h, "model", "enhance")
        if "reuse" in h:
            _str_field(h, "reuse", "enhance")
        _int_field(h, "scale", 1, MAX_SCALE, "enhance", default=1)
        _int_field(h, "tile", 0, MAX_TILE, "enhance", default=0)
        if "timeout" in h:
            _float_field(h, "timeout", 1, 7 * 24 * 3600, "enhance")
        _check_heartbeat(h, "enhance")
        for key in ("options", "post"):
            if key in h:
                _check_options(h[key], key)
        accept = h.get("accept", [])
        if not isinstance(accept, list) or len(accept) > 4 or not all(isinstance(a, str) and len(a) <= 16 for a in accept):
            raise ProtocolError("enhance.accept must list at most 4 codec names such as \"zlib\"")
        specs = input_specs(h)
        if len(msg.frames) != len(specs):
            raise ProtocolError(f"enhance announces {len(specs)} input frame(s) but carries {len(msg.frames)}")
        for (name, spec), frame in zip(specs, msg.frames):
            spec.check_frame(frame, name)
        image = specs[0][1]
        if "roi" in h:
            roi = Rect.from_json(h["roi"], "roi")
            if not roi.inside(image.width, image.height):
                raise ProtocolError(f"roi {roi.to_json()} lies outside the {image.width}x{image.height} image")
    except ProtocolError as e:
        e.job_id = j
        raise


def input_specs(header: dict) -> list[tuple[str, ImageSpec]]:
    """The named input frames of an enhance header, in frame order; the first is "image"."""
    inputs = header.get("inputs")
    if not isinstance(inputs, list) or not 1 <= len(inputs) <= MAX_INPUTS:
        raise ProtocolError(f"enhance.inputs must list 1..{MAX_INPUTS} named input frames")
    out: list[tuple[str, ImageSpec]] = []
    for i, entry in enumerate(inputs):
        if not isinstance(entry, dict):
            raise ProtocolError("each enhance.inputs entry must be an object with name and image")
        name = _str_field(entry, "name", f"inputs[{i}]")
        if any(name == n for n, _ in out):
            raise ProtocolError(f"input {name!r} appears twice")
        out.append((name, ImageSpec.from_json(entry.get("image"), name)))
    if out[0][0] != "image":
        raise ProtocolError(f"the first input must be named 'image', got {out[0][0]!r}")
    return out


def _check_heartbeat(h: dict, what: str) -> None:
    if "heartbeat" in h:
        _float_field(h, "heartbeat", MIN_HEARTBEAT_TIMEOUT, 3600, what)


def _validate_models(msg: Message) -> None:
    h = msg.header
    try:
        try:
            ModelsAction(h.get("action"))
        except ValueError:
            raise ProtocolError(f"models.action must be 'install' or 'remove', got {h.get('action')!r}") from None
        ids = h.get("ids")
        if not isinstance(ids, list) or not 1 <= len(ids) <= MAX_MODEL_IDS:
            raise ProtocolError(f"models.ids must list 1..{MAX_MODEL_IDS} model ids")
        for i in ids:
            if not isinstance(i, str) or not _NAME_RE.match(i):
                raise ProtocolError(f"models.ids entry {i!r} is not a model id")
        _check_heartbeat(h, "models")
        _no_frames(msg)
    except ProtocolError as e:
        e.job_id = msg.job_id
        raise


def _validate_cancel(msg: Message) -> None:
    _no_frames(msg)


def _validate_progress(msg: Message) -> None:
    _float_field(msg.header, "fraction", 0.0, 1.0, "progress")
    _no_frames(msg)


def _validate_result(msg: Message) -> None:
    h = msg.header
    spec = None if h.get("image") is None else ImageSpec.from_json(h.get("image"), "image")
    rows = h.get("image_rows")
    n_image = 0 if spec is None else 1
    if spec is not None and rows is not None:
        if (not isinstance(rows, list) or not 1 <= len(rows) <= MAX_BANDS
                or not all(isinstance(r, int) and not isinstance(r, bool) and r > 0 for r in rows)
                or sum(rows) != spec.height):
            raise ProtocolError(f"result.image_rows must be 1..{MAX_BANDS} positive row counts adding "
                                f"up to the image height {spec.height}", msg.job_id)
        n_image = len(rows)
    masks, layers = h.get("masks", []), h.get("layers", [])
    for key, seq in (("masks", masks), ("layers", layers)):
        if not isinstance(seq, list) or len(seq) > MAX_MASKS:
            raise ProtocolError(f"result.{key} must be a list of at most {MAX_MASKS} entries", msg.job_id)
    if len(msg.frames) != n_image + len(masks) + len(layers):
        raise ProtocolError(f"result has {len(msg.frames)} frames, header announces "
                            f"{n_image + len(masks) + len(layers)}", msg.job_id)
    if spec is not None:
        if n_image > 1:
            row_bytes = spec.nbytes // spec.height
            for r, f in zip(rows, msg.frames[:n_image]):
                n = f.nbytes if isinstance(f, memoryview) else len(f)
                if n != r * row_bytes:
                    raise ProtocolError(f"a band of {r} rows has {n} bytes, not {r * row_bytes}", msg.job_id)
            msg.frames[:n_image] = [b"".join(msg.frames[:n_image])]
            del h["image_rows"]
        spec.check_frame(msg.frames[0])
    elif not masks:
        raise ProtocolError("a result carries an image, masks, or both", msg.job_id)
    n_image = 0 if spec is None else 1
    for i, (m, f) in enumerate(zip(masks + layers, msg.frames[n_image:])):
        what = "mask" if i < len(masks) else "layer"
        if not isinstance(m, dict):
            raise ProtocolError(f"each result.{what}s entry must be an object", msg.job_id)
        _str_field(m, "name", what)
        s = ImageSpec.from_json(m.get("image"), what)
        if what == "mask" and (s.channels, s.dtype) != (1, DType.U8):
            raise ProtocolError("a result mask is one channel of u8", msg.job_id)
        s.check_frame(f, what)


def _validate_done(msg: Message) -> None:
    if not isinstance(msg.header.get("info", {}), dict):
        raise ProtocolError("done.info must be an object", msg.job_id)
    _no_frames(msg)


def _validate_error(msg: Message) -> None:
    h = msg.header
    try:
        ErrorKind(h.get("kind"))
    except ValueError:
        h["kind"] = ErrorKind.INTERNAL.value  # tolerate kinds added by a newer backend
    if not isinstance(h.get("message"), str):
        raise ProtocolError("error.message must be a string", msg.job_id)
    _no_frames(msg)


_VALIDATORS = {
    MsgType.ENHANCE: _validate_enhance,
    MsgType.CANCEL: _validate_cancel,
    MsgType.MODELS: _validate_models,
    MsgType.PROGRESS: _validate_progress,
    MsgType.RESULT: _validate_result,
    MsgType.DONE: _validate_done,
    MsgType.ERROR: _validate_error,
}


# --------------------------------------------------------------------------- builders


def enhance_request(job_id: str, *, op: str, image: ImageSpec, pixels, model: str | None = None,
                    scale: int = 1, tile: int = 0, roi: Rect | None = None,
                    options: dict | None = None, post: dict | None = None,
                    extra_inputs: Sequence[tuple[str, ImageSpec, Any]] = (),
                    timeout: float | None = None, reuse: str | None = None,
                    compress: bool = False, heartbeat: float | None = None) -> list:
    """An enhance request: ``image`` + ``pixels`` is the first input; ``extra_inputs`` are further
    named frames (e.g. ``("mask", spec, bytes)``); ``reuse`` names a raw output the backend may
    still hold (a result's ``info["raw_key"]``): then only the post-processing runs again.
    ``compress``: deflate large frames and ask for a deflated result (worth it on a network link,
    not on loopback).  ``heartbeat``: drop the job when this client is silent that long (s;
    default: the backend's --client-timeout)."""
    inputs = [{"name": "image", "image": image.to_json()}]
    inputs += [{"name": n, "image": s.to_json()} for n, s, _ in extra_inputs]
    frames = [pixels, *[p for _, _, p in extra_inputs]]
    codecs = None
    if compress:
        frames, codecs = compress_frames(frames, [image.dtype.itemsize] + [s.dtype.itemsize for _, s, _ in extra_inputs])
        if not any(codecs):
            codecs = None
    header = new_header(MsgType.ENHANCE, job_id, op=op, model=model or None, scale=scale,
                        tile=tile, inputs=inputs,
                        roi=roi.to_json() if roi else None, options=options or None,
                        post=post or None, timeout=timeout, reuse=reuse or None,
                        accept=[CODEC_ZLIB] if compress else None, codecs=codecs, heartbeat=heartbeat)
    return encode(header, frames)


def band_rows(spec: ImageSpec, max_frame_bytes: int = MAX_FRAME_BYTES) -> list[int]:
    """Row counts of the bands an image of ``spec`` travels in: one band when it fits a frame."""
    row = spec.width * spec.channels * spec.dtype.itemsize
    per = max(1, max_frame_bytes // max(1, row))
    if per >= spec.height:
        return [spec.height]
    rows = [per] * (spec.height // per)
    if spec.height % per:
        rows.append(spec.height % per)
    return rows


def models_request(job_id: str, action: ModelsAction | str, ids: Sequence[str], *,
                   heartbeat: float | None = None) -> list:
    """Install or remove catalogue models; answered by `accepted`, `progress`*, then `done`
    (``info``: what changed) or `error`."""
    return encode(new_header(MsgType.MODELS, job_id, action=ModelsAction(action).value, ids=list(ids),
                             heartbeat=heartbeat))


def done_reply(job_id: str, info: dict | None = None) -> list:
    return encode(new_header(MsgType.DONE, job_id, info=info or {}))


def result_reply(job_id: str, image: ImageSpec | None, pixels,
                 masks: Sequence[tuple[str, ImageSpec, Any]] = (), info: dict | None = None,
                 layers: Sequence[tuple[str, ImageSpec, Any]] = (), *,
                 max_frame_bytes: int = MAX_FRAME_BYTES, compress: bool = False) -> list:
    """A result: the image (or None), named 8-bit masks and named extra layers (e.g. "grain",
    which the client stacks above the result).  An image larger than ``max_frame_bytes`` goes in
    row bands (``image_rows``); ``compress`` deflates large frames (when the request accepts it)."""
    header = new_header(MsgType.RESULT, job_id,
                        masks=[{"name": n, "image": s.to_json()} for n, s, _ in masks],
                        info=info or {})
    if layers:
        header["layers"] = [{"name": n, "image": s.to_json()} for n, s, _ in layers]
    header["image"] = image.to_json() if image else None
    frames: list = []
    itemsizes: list = []
    if image is not None:
        rows = band_rows(image, max_frame_bytes)
        view = pixels if isinstance(pixels, memoryview) else memoryview(pixels)
        view = view.cast("B") if view.format != "B" or view.ndim != 1 else view
        row_bytes = image.nbytes // image.height
        if len(rows) > 1:
            header["image_rows"] = rows
            y = 0
            for r in rows:
                frames.append(view[y * row_bytes:(y + r) * row_bytes])
                y += r
        else:
            frames.append(view)
        itemsizes += [image.dtype.itemsize] * len(frames)
    frames += [p for _, _, p in masks]
    itemsizes += [1] * len(masks)
    frames += [p for _, _, p in layers]
    itemsizes += [s.dtype.itemsize for _, s, _ in layers]
    if compress:
        frames, codecs = compress_frames(frames, itemsizes)
        if any(codecs):
            header["codecs"] = codecs
    return encode(header, frames)


def received_request(job_id: str) -> list:
    """The client read the result of ``job_id`` (the backend stops counting it as unread)."""
    return encode(new_header(MsgType.RECEIVED, job_id))


def shutdown_request(job_id: str = "shutdown") -> list:
    return encode(new_header(MsgType.SHUTDOWN, job_id))


def error_reply(job_id: str, kind: ErrorKind, message: str, hint: str = "",
                version: int = VERSION) -> list:
    """An error reply; ``version`` lets an older peer read it (its error message had the same
    fields in every version so far)."""
    return encode(new_header(MsgType.ERROR, job_id, wire_version=version, kind=ErrorKind(kind).value,
                             message=one_line(message), hint=one_line(hint) if hint else None))


def progress_reply(job_id: str, fraction: float, text: str = "") -> list:
    return encode(new_header(MsgType.PROGRESS, job_id, fraction=min(1.0, max(0.0, float(fraction))),
                             text=one_line(text)))


def one_line(text: str, limit: int = 400) -> str:
    s = " ".join(str(text).split())
    return s if len(s) <= limit else s[: limit - 1] + "…"
