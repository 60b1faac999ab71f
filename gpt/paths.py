"""Where things live on disk: the cache (prepared data sets, sample corpus) and the runs directory."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """`$GPT_PLAYGROUND_CACHE`, else `~/.cache/gpt-playground`."""
    env = os.environ.get("GPT_PLAYGROUND_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "gpt-playground"


def runs_dir() -> Path:
    """`$GPT_PLAYGROUND_RUNS`, else `./checkpoints` (ignored by git)."""
    return Path(os.environ.get("GPT_PLAYGROUND_RUNS", "checkpoints"))
