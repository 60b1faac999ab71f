"""Where things live on disk: the cache (prepared data sets, sample corpus) and the runs directory.

On a Hugging Face Space the disk is wiped at every restart except `/data` (persistent storage, when the Space's
owner enables it): there, when our own variables are unset, both default under `/data/gpt-playground`.
"""

from __future__ import annotations

import os
from pathlib import Path


def on_space() -> bool:
    """Running on a Hugging Face Space (it sets SPACE_ID)."""
    return bool(os.environ.get("SPACE_ID"))


def persistent_dir() -> Path | None:
    """`/data/gpt-playground` on a Space whose persistent storage is enabled and writable, else None.

    `GPT_PLAYGROUND_PERSISTENT` names another folder than `/data` (the tests use it)."""
    data = Path(os.environ.get("GPT_PLAYGROUND_PERSISTENT", "/data"))
    if on_space() and data.is_dir() and os.access(data, os.W_OK | os.X_OK):
        return data / "gpt-playground"
    return None


def cache_dir() -> Path:
    """`$GPT_PLAYGROUND_CACHE`, else persistent storage on a Space, else `~/.cache/gpt-playground`."""
    env = os.environ.get("GPT_PLAYGROUND_CACHE")
    if env:
        return Path(env)
    persistent = persistent_dir()
    return persistent / "cache" if persistent else Path.home() / ".cache" / "gpt-playground"


def runs_dir() -> Path:
    """`$GPT_PLAYGROUND_RUNS`, else persistent storage on a Space, else `./checkpoints` (ignored by git)."""
    env = os.environ.get("GPT_PLAYGROUND_RUNS")
    if env:
        return Path(env)
    persistent = persistent_dir()
    return persistent / "runs" if persistent else Path("checkpoints")
