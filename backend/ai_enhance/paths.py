"""Platform folders of the backend: models, logs.  `AI_ENHANCE_MODELS_DIR` overrides the models
folder."""
from __future__ import annotations

import os
import sys
from pathlib import Path

ENV_MODELS_DIR = "AI_ENHANCE_MODELS_DIR"
APP = "ai-enhance"


def data_dir() -> Path:
    if sys.platform == "win32":
        return Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local") / APP
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / APP
    return Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / APP


def models_dir() -> Path:
    env = os.environ.get(ENV_MODELS_DIR)
    return Path(env).expanduser() if env else data_dir() / "models"


def state_dir() -> Path:
    if sys.platform in ("win32", "darwin"):
        return data_dir() / "logs"
    return Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state") / APP


def default_log_file() -> Path:
    return state_dir() / "backend.log"
