"""Where the backend is, how to start it and which keys to use: environment, then the installer's
settings files, then defaults.  Standard library only (runs inside GIMP's Python).

Two settings files, both written by the installer, merged in this order (later wins):
  1. ``ai-enhance-settings.json`` in the plug-in's own folder inside the GIMP profile: the one a
     sandboxed GIMP (Flatpak, Snap) can always read, whatever its HOME/XDG folders are;
  2. the user's ``settings.json`` (``AI_ENHANCE_CONFIG``, else ``<config dir>/settings.json``);
then the environment: AI_ENHANCE_ENDPOINT, AI_ENHANCE_SERVE_COMMAND, AI_ENHANCE_KEYS,
AI_ENHANCE_SERVER_KEY.  A relative ``keys_dir`` in a file is relative to that file's folder.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_ENDPOINT = "tcp://127.0.0.1:5588"
ENV_ENDPOINT = "AI_ENHANCE_ENDPOINT"
ENV_CONFIG = "AI_ENHANCE_CONFIG"          # path of settings.json (tests, portable installs)
ENV_SERVE_COMMAND = "AI_ENHANCE_SERVE_COMMAND"  # JSON list, overrides the settings file
ENV_KEYS = "AI_ENHANCE_KEYS"
ENV_SERVER_KEY = "AI_ENHANCE_SERVER_KEY"
ENV_COMPRESS = "AI_ENHANCE_COMPRESS"      # 1/0: deflate large frames on a network link
APP = "ai-enhance"
#: The settings file the installer puts beside ai-enhance.py in each GIMP profile.
PLUGIN_SETTINGS = "ai-enhance-settings.json"


def config_dir() -> Path:
    if sys.platform == "win32":
        return Path(os.environ.get("APPDATA") or Path.home() / "AppData" / "Roaming") / APP
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / APP
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / APP


def settings_path() -> Path:
    return Path(os.environ[ENV_CONFIG]) if os.environ.get(ENV_CONFIG) else config_dir() / "settings.json"


def plugin_settings_path() -> Path | None:
    """The settings file of the plug-in folder this package was loaded from (None when this copy
    is the backend's installed package, not a plug-in folder)."""
    folder = Path(__file__).resolve().parent.parent
    if (folder / "ai-enhance.py").is_file():
        return folder / PLUGIN_SETTINGS
    return None


def _read(path: Path | None) -> dict:
    if path is None:
        return {}
    try:
        data = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


@dataclass
class Settings:
    endpoint: str = DEFAULT_ENDPOINT
    serve_command: list[str] = field(default_factory=list)
    source: str = "default"   # where the endpoint came from, for messages and `doctor`
    keys_dir: str | None = None          # None: AI_ENHANCE_KEYS or <config dir>/keys
    server_key: str | None = None        # a REMOTE backend's public key (Z85)
    installation: str | None = None      # the installation whose backend this client expects
    compress: bool = False               # deflate large frames on a network link (slow links only)

    @classmethod
    def load(cls) -> "Settings":
        s = cls()
        cmd = None
        for path in (plugin_settings_path(), settings_path()):
            data = _read(path)
            if not data:
                continue
            if isinstance(data.get("endpoint"), str) and data["endpoint"]:
                s.endpoint, s.source = data["endpoint"], str(path)
            if isinstance(data.get("serve_command"), list):
                cmd = data["serve_command"]
            if isinstance(data.get("keys_dir"), str) and data["keys_dir"]:
                k = Path(data["keys_dir"]).expanduser()
                s.keys_dir = str(k if k.is_absolute() else path.parent / k)
            for key in ("server_key", "installation"):
                if key in data:
                    setattr(s, key, data[key] if isinstance(data[key], str) and data[key] else None)
            if isinstance(data.get("compress"), bool):
                s.compress = data["compress"]
        if os.environ.get(ENV_ENDPOINT):
            s.endpoint, s.source = os.environ[ENV_ENDPOINT], ENV_ENDPOINT
        if os.environ.get(ENV_SERVE_COMMAND):
            try:
                cmd = json.loads(os.environ[ENV_SERVE_COMMAND])
            except ValueError:
                cmd = None
        if isinstance(cmd, list) and cmd and all(isinstance(c, str) for c in cmd):
            s.serve_command = cmd
        else:
            s.serve_command = default_serve_command()
        if os.environ.get(ENV_KEYS):
            s.keys_dir = os.environ[ENV_KEYS]
        if os.environ.get(ENV_SERVER_KEY):
            s.server_key = os.environ[ENV_SERVER_KEY]
        if os.environ.get(ENV_COMPRESS, "").lower() in ("1", "on", "yes", "true"):
            s.compress = True
        elif os.environ.get(ENV_COMPRESS, "").lower() in ("0", "off", "no", "false"):
            s.compress = False
        return s

    def keys_path(self) -> Path:
        from . import keys
        return keys.keys_dir(self.keys_dir)


def default_serve_command() -> list[str]:
    """`ai-enhance serve` from PATH, else this Python when it has the backend installed."""
    exe = shutil.which("ai-enhance")
    if exe:
        return [exe, "serve"]
    try:
        import importlib.util
        if importlib.util.find_spec("ai_enhance") is not None:
            return [sys.executable, "-m", "ai_enhance", "serve"]
    except (ImportError, ValueError):
        pass
    return []


def save(endpoint: str, serve_command: list[str], path: Path | None = None, **extra) -> Path:
    """Write a settings file.  ``extra`` (keys_dir, server_key, installation): None leaves the
    field as it is, "" removes it.  Fields of an existing file that are not given are kept."""
    path = path or settings_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    data = _read(path)
    data.update({"endpoint": endpoint, "serve_command": serve_command})
    for k, v in extra.items():
        if v == "":
            data.pop(k, None)
        elif v is not None:
            data[k] = v
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2), "utf-8")
    os.replace(tmp, path)
    return path


# --------------------------------------------------------------------------- endpoints

class EndpointError(ValueError):
    """A malformed or unusable endpoint: one line saying what a good one looks like."""


@dataclass(frozen=True)
class Endpoint:
    scheme: str              # "tcp" | "ipc"
    host: str = ""           # tcp: IP literal (IPv6 without brackets) or host name
    port: int = 0
    path: str = ""           # ipc: socket path
    ipv6: bool = False

    @property
    def loopback(self) -> bool:
        """Traffic never leaves this machine: ipc:// or a loopback address."""
        if self.scheme == "ipc":
            return True
        if self.host == "localhost":
            return True
        import ipaddress
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    @property
    def local(self) -> bool:
        """The backend runs on this machine (its pid means something here)."""
        return self.loopback

    @property
    def wildcard(self) -> bool:
        return self.host in ("0.0.0.0", "::", "*")


_EXAMPLE = "tcp://127.0.0.1:5588, tcp://[::1]:5588 or ipc:///private/folder/sock"


def parse_endpoint(endpoint: str) -> Endpoint:
    """Check an endpoint's syntax (both sides use this): tcp://HOST:PORT with a port in 1..65535
    and HOST an IPv4 address, a bracketed IPv6 address or a host name; or ipc:// with an absolute
    path (not an abstract socket: those have no permissions).  EndpointError otherwise."""
    import ipaddress

    if not isinstance(endpoint, str) or not endpoint or any(c.isspace() or ord(c) < 32 for c in endpoint):
        raise EndpointError(f"bad endpoint {endpoint!r}: use {_EXAMPLE}")
    scheme, sep, rest = endpoint.partition("://")
    if not sep:
        raise EndpointError(f"bad endpoint {endpoint!r} (no scheme): use {_EXAMPLE}")
    if scheme == "ipc":
        if rest.startswith("@"):
            raise EndpointError(f"refusing {endpoint}: an abstract socket (ipc://@...) has no permissions, so "
                                "any local user could connect; use ipc:///a/private/folder/sock")
        if not rest.startswith("/") or "\0" in rest:
            raise EndpointError(f"bad endpoint {endpoint!r}: an ipc socket needs an absolute path, e.g. "
                                "ipc:///run/user/1000/ai-enhance/sock")
        return Endpoint("ipc", path=rest)
    if scheme != "tcp":
        raise EndpointError(f"unsupported endpoint {endpoint!r}: use {_EXAMPLE}")
    if any(c in rest for c in "@/?#;\\"):
        raise EndpointError(f"bad endpoint {endpoint!r}: no user, path or options allowed; use {_EXAMPLE}")
    if rest.startswith("["):
        host, close, port_s = rest[1:].partition("]")
        if not close or not port_s.startswith(":"):
            raise EndpointError(f"bad endpoint {endpoint!r}: write an IPv6 address as tcp://[::1]:5588")
        port_s = port_s[1:]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise EndpointError(f"bad endpoint {endpoint!r}: {host!r} is not an IPv6 address") from None
        ipv6 = True
    else:
        host, colon, port_s = rest.rpartition(":")
        if not colon or not host:
            raise EndpointError(f"bad endpoint {endpoint!r}: it needs a host and a port, e.g. {_EXAMPLE}")
        if ":" in host:
            raise EndpointError(f"bad endpoint {endpoint!r}: put an IPv6 address in brackets, e.g. tcp://[::1]:5588")
        ipv6 = False
        if host != "*" and not all(part and (part.isalnum() or all(ch.isalnum() or ch == "-" for ch in part))
                                   for part in host.split(".")):
            raise EndpointError(f"bad endpoint {endpoint!r}: {host!r} is not a host name or address")
    if not port_s.isdigit() or not 1 <= int(port_s) <= 65535:
        raise EndpointError(f"bad endpoint {endpoint!r}: the port must be a number from 1 to 65535 "
                            "(port 0 or * would pick a random port no client can find)")
    return Endpoint("tcp", host=host, port=int(port_s), ipv6=ipv6)
