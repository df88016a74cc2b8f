"""CURVE keys: which clients a backend accepts, and which backend a client trusts.

ZeroMQ CURVE authenticates both ends and encrypts the link: a client connects only to a backend
whose PUBLIC key it knows (a program squatting on the port cannot complete the handshake, so it
gets no pixels and the client accepts no forged image), and a backend accepts only client keys it
was given (another local user, or anything on the network, is refused before a byte of the
protocol is read).

One folder per user (0700): ``AI_ENHANCE_KEYS``, else ``keys_dir`` of the settings, else
``<config dir>/keys``:

    client.key, client.key_secret   this user's client pair (the CLI and the GIMP plug-in)
    server.key, server.key_secret   this user's backend pair
    allowed/NAME.key                further client public keys this backend accepts
                                    (`ai-enhance keys allow`: a laptop using this GPU box)

The files use ZeroMQ's certificate format (``zmq.auth.load_certificate`` reads them); secret
files are 0600.  A client learns a REMOTE backend's public key from ``AI_ENHANCE_SERVER_KEY`` or
the settings' ``server_key`` (`ai-enhance keys trust KEY --endpoint ...` writes it); for its own
(local) backend it reads ``server.key``.

Standard library + pyzmq only: this runs inside GIMP's Python.
"""
from __future__ import annotations

import datetime
import os
import re
import stat
import sys
from dataclasses import dataclass
from pathlib import Path

ENV_KEYS = "AI_ENHANCE_KEYS"
ENV_SERVER_KEY = "AI_ENHANCE_SERVER_KEY"
CLIENT = "client"
SERVER = "server"
ALLOWED = "allowed"
_KEY_RE = re.compile(r'(public|secret)-key\s*=\s*"([^"]{40})"')
_Z85_RE = re.compile(r"^[0-9a-zA-Z.\-:+=^!/*?&<>()\[\]{}@%$#]{40}$")
_NAME_RE = re.compile(r"[^A-Za-z0-9_.-]")


class KeysError(Exception):
    """A key is missing, malformed or unsafe: one line with the fix."""


@dataclass(frozen=True)
class KeyPair:
    public: bytes            # z85 text, 40 bytes
    secret: bytes | None     # z85 text; None when only the public half is known

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.public)


def fingerprint(public: bytes | str) -> str:
    """A short, readable form of a public key for messages and logs."""
    p = public.decode("ascii") if isinstance(public, bytes) else public
    return p[:8]


def default_dir() -> Path:
    from .settings import config_dir
    return config_dir() / "keys"


def keys_dir(configured: str | os.PathLike | None = None) -> Path:
    """The keys folder: AI_ENHANCE_KEYS, else ``configured`` (the settings), else the default."""
    env = os.environ.get(ENV_KEYS)
    if env:
        return Path(env).expanduser()
    if configured:
        return Path(configured).expanduser()
    return default_dir()


def curve_available() -> bool:
    import zmq
    return bool(zmq.has("curve"))


def parse_public(text: str | bytes) -> bytes:
    """A public key given by a person (``keys export`` output, AI_ENHANCE_SERVER_KEY): 40 Z85
    characters, surrounding blanks and quotes ignored."""
    s = (text.decode("ascii", "replace") if isinstance(text, bytes) else str(text)).strip().strip('"\'')
    if not _Z85_RE.match(s):
        raise KeysError(f"{s[:50]!r} is not a CURVE public key (40 Z85 characters); copy it from "
                        "`ai-enhance keys export` or `ai-enhance keys server-key` on the other machine")
    return s.encode("ascii")


# --------------------------------------------------------------------------- files

def _private_dir(folder: Path) -> None:
    """Create ``folder`` 0700, or make an existing one of ours 0700; refuse one of another user."""
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    if os.name == "nt":
        return
    st = folder.stat()
    if hasattr(os, "getuid") and st.st_uid != os.getuid():
        raise KeysError(f"the keys folder {folder} belongs to another user (uid {st.st_uid}); "
                        f"use your own with {ENV_KEYS}=/a/private/folder")
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        os.chmod(folder, 0o700)


def _write_private(path: Path, text: str, mode: int, replace: bool = True) -> bool:
    """Write ``path`` atomically with ``mode``.  ``replace`` False: never replace an existing file
    (two first uses at once, e.g. GIMP and the CLI, must not end with two different keys): returns
    False when another writer won."""
    import secrets
    import threading

    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(text)
        if os.name != "nt":
            os.chmod(tmp, mode)
        if replace:
            os.replace(tmp, path)
            return True
        try:
            os.link(tmp, path)          # atomic, and fails when the file exists
            return True
        except FileExistsError:
            return False
        except OSError:                 # no hard links here (FAT, some network shares)
            if path.exists():
                return False
            os.replace(tmp, path)
            return True
    finally:
        try:
            os.unlink(tmp)
        except OSError:
            pass


def _cert_text(public: bytes, secret: bytes | None, what: str) -> str:
    when = datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S")
    lines = [f"#   ****  Generated on {when} by ai-enhance  ****",
             f"#   ZeroMQ CURVE {'**Secret** ' if secret else ''}Certificate ({what})"]
    if secret:
        lines.append("#   DO NOT PROVIDE THIS FILE TO OTHER USERS nor change its permissions.")
    lines += ["", "metadata", "curve", f'    public-key = "{public.decode("ascii")}"']
    if secret:
        lines.append(f'    secret-key = "{secret.decode("ascii")}"')
    return "\n".join(lines) + "\n"


def read_key_file(path: Path) -> KeyPair:
    try:
        text = path.read_text("ascii", "replace")
    except OSError as e:
        raise KeysError(f"cannot read the key {path} ({e.strerror}); run `ai-enhance keys init`") from None
    found = dict(_KEY_RE.findall(text))
    if "public" not in found:
        raise KeysError(f"{path} holds no CURVE public key; delete it and run `ai-enhance keys init`")
    return KeyPair(parse_public(found["public"]),
                   found["secret"].encode("ascii") if "secret" in found else None)


def _check_secret_file(path: Path) -> None:
    if os.name == "nt":
        return
    st = path.stat()
    if hasattr(os, "getuid") and st.st_uid != os.getuid():
        raise KeysError(f"{path} belongs to another user (uid {st.st_uid}); delete it and run "
                        "`ai-enhance keys init`")
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        os.chmod(path, 0o600)


def write_pair(folder: Path, name: str) -> KeyPair:
    """Create the pair ``name`` unless it exists; returns the pair that is there afterwards (ours,
    or the one a concurrent first use wrote a moment earlier)."""
    import zmq

    if not zmq.has("curve"):
        raise KeysError("this pyzmq/libzmq has no CURVE support; install pyzmq from its wheels "
                        "(pip install pyzmq) or a libzmq built with libsodium")
    public, secret = zmq.curve_keypair()
    _private_dir(folder)
    _write_private(folder / f"{name}.key_secret", _cert_text(public, secret, name), 0o600, replace=False)
    pair = read_pair(folder, name)
    _write_public(folder, name, pair.public)
    return pair


def _write_public(folder: Path, name: str, public: bytes) -> None:
    path = folder / f"{name}.key"
    if not path.is_file():
        _write_private(path, _cert_text(public, None, name), 0o644, replace=False)


def read_pair(folder: Path, name: str) -> KeyPair:
    path = folder / f"{name}.key_secret"
    _check_secret_file(path)
    pair = read_key_file(path)
    if pair.secret is None:
        raise KeysError(f"{path} holds no secret key; delete it and run `ai-enhance keys init`")
    return pair


def ensure(folder: Path | None = None) -> Path:
    """Create what is missing of the keys folder (both pairs, ``allowed/``): install time or
    first use.  Existing keys are never replaced."""
    folder = folder or keys_dir()
    _private_dir(folder)
    for name in (CLIENT, SERVER):
        if not (folder / f"{name}.key_secret").is_file():
            write_pair(folder, name)
        elif not (folder / f"{name}.key").is_file():
            _write_public(folder, name, read_pair(folder, name).public)
    (folder / ALLOWED).mkdir(exist_ok=True, mode=0o700)
    return folder


def client_pair(folder: Path | None = None, create: bool = True) -> KeyPair:
    folder = folder or keys_dir()
    if create and not (folder / f"{CLIENT}.key_secret").is_file():
        ensure(folder)
    return read_pair(folder, CLIENT)


def server_pair(folder: Path | None = None, create: bool = True) -> KeyPair:
    folder = folder or keys_dir()
    if create and not (folder / f"{SERVER}.key_secret").is_file():
        ensure(folder)
    return read_pair(folder, SERVER)


def server_public(folder: Path | None = None, configured: str | None = None, create: bool = True) -> bytes:
    """The public key of the backend this client trusts: AI_ENHANCE_SERVER_KEY, else the
    settings' ``server_key`` (a remote backend), else this user's own backend (``server.key``)."""
    env = os.environ.get(ENV_SERVER_KEY)
    if env:
        return parse_public(env)
    if configured:
        return parse_public(configured)
    folder = folder or keys_dir()
    path = folder / f"{SERVER}.key"
    if not path.is_file():
        if (folder / f"{SERVER}.key_secret").is_file():      # being written right now
            return read_key_file(folder / f"{SERVER}.key_secret").public
        if not create:
            raise KeysError(f"no backend key in {folder}; run `ai-enhance keys init`, or for a remote "
                            f"backend set {ENV_SERVER_KEY} to its `ai-enhance keys server-key`")
        ensure(folder)
    return read_key_file(path).public


def allow(folder: Path, public: str | bytes, name: str | None = None) -> Path:
    """Authorise a client key on this user's backend; a running backend sees it at the next
    connection (it re-reads the folder at every handshake)."""
    key = parse_public(public)
    _private_dir(folder)
    d = folder / ALLOWED
    d.mkdir(exist_ok=True, mode=0o700)
    for existing in d.glob("*.key"):
        try:
            if read_key_file(existing).public == key:
                return existing
        except KeysError:
            continue
    stem = _NAME_RE.sub("_", name or "")[:60] or "client-" + _NAME_RE.sub("_", fingerprint(key))
    path = d / f"{stem}.key"
    n = 1
    while path.exists():
        n += 1
        path = d / f"{stem}-{n}.key"
    _write_private(path, _cert_text(key, None, f"allowed client {stem}"), 0o644)
    return path


def allowed_keys(folder: Path) -> set[bytes]:
    """The client public keys a backend with this keys folder accepts: this user's own client key
    and every ``allowed/*.key``.  Unreadable files are skipped (``keys list`` shows why)."""
    out: set[bytes] = set()
    own = folder / f"{CLIENT}.key"
    paths = [own] if own.is_file() else []
    try:
        paths += sorted((folder / ALLOWED).glob("*.key"))
    except OSError:
        pass
    for p in paths:
        try:
            out.add(read_key_file(p).public)
        except KeysError:
            continue
    return out


def describe(folder: Path) -> str:
    """One line for `doctor` and logs: where the keys are and their fingerprints."""
    try:
        c = read_key_file(folder / f"{CLIENT}.key").public
        s = read_key_file(folder / f"{SERVER}.key").public
    except KeysError as e:
        return f"keys {folder}: {e}"
    n = len(allowed_keys(folder)) - 1
    return f"keys {folder}: client {fingerprint(c)}…, backend {fingerprint(s)}…, {max(0, n)} more allowed client(s)"


def is_private(folder: Path) -> bool:
    if os.name == "nt" or sys.platform == "win32":
        return True
    try:
        st = folder.stat()
    except OSError:
        return False
    return not st.st_mode & (stat.S_IRWXG | stat.S_IRWXO) and (not hasattr(os, "getuid") or st.st_uid == os.getuid())
