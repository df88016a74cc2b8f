"""Where the backend is and how to start it: environment, then the installer's settings file,
then defaults.  Standard library only (runs inside GIMP's Python)."""
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
APP = "ai-enhance"


def config_dir() -> Path:
    if sys.platform == "win32":
        return Path(os.environ.get("APPDATA") or Path.home() / "AppData" / "Roaming") / APP
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / APP
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / APP


def settings_path() -> Path:
    return Path(os.environ[ENV_CONFIG]) if os.environ.get(ENV_CONFIG) else config_dir() / "settings.json"


@dataclass
class Settings:
    endpoint: str = DEFAULT_ENDPOINT
    serve_command: list[str] = field(default_factory=list)
    source: str = "default"   # where the endpoint came from, for messages and `doctor`

    @classmethod
    def load(cls) -> "Settings":
        data: dict = {}
        path = settings_path()
        try:
            data = json.loads(path.read_text("utf-8"))
            if not isinstance(data, dict):
                data = {}
        except (OSError, ValueError):
            data = {}
        s = cls()
        if isinstance(data.get("endpoint"), str) and data["endpoint"]:
            s.endpoint, s.source = data["endpoint"], str(path)
        if os.environ.get(ENV_ENDPOINT):
            s.endpoint, s.source = os.environ[ENV_ENDPOINT], ENV_ENDPOINT
        cmd = data.get("serve_command")
        if os.environ.get(ENV_SERVE_COMMAND):
            try:
                cmd = json.loads(os.environ[ENV_SERVE_COMMAND])
            except ValueError:
                cmd = None
        if isinstance(cmd, list) and cmd and all(isinstance(c, str) for c in cmd):
            s.serve_command = cmd
        else:
            s.serve_command = default_serve_command()
        return s


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


def save(endpoint: str, serve_command: list[str], path: Path | None = None) -> Path:
    path = path or settings_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"endpoint": endpoint, "serve_command": serve_command}, indent=2), "utf-8")
    os.replace(tmp, path)
    return path
