"""Limits for public hosting, read from environment variables, with safe defaults.

They are enforced where the UI calls the library (not only in slider ranges) and shown in the app.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from gpt.paths import runs_dir


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


@dataclass(frozen=True)
class Limits:
    max_upload_mb: int = _env_int("GPT_PLAYGROUND_MAX_UPLOAD_MB", 50)
    max_files: int = _env_int("GPT_PLAYGROUND_MAX_FILES", 200)
    max_paste_chars: int = _env_int("GPT_PLAYGROUND_MAX_PASTE_CHARS", 5_000_000)
    max_params: int = _env_int("GPT_PLAYGROUND_MAX_PARAMS", 30_000_000)
    max_steps: int = _env_int("GPT_PLAYGROUND_MAX_STEPS", 20_000)
    max_context: int = _env_int("GPT_PLAYGROUND_MAX_CONTEXT", 1024)
    max_jobs: int = _env_int("GPT_PLAYGROUND_MAX_JOBS", 1)
    max_new_tokens: int = _env_int("GPT_PLAYGROUND_MAX_NEW_TOKENS", 1000)

    def describe(self) -> str:
        return (
            f"Limits on this server: uploads {self.max_upload_mb} MB, {self.max_files} files; "
            f"models up to {self.max_params / 1e6:.0f}M parameters, context {self.max_context}, "
            f"{self.max_steps:,} steps; {self.max_jobs} training run(s) at a time; "
            f"{self.max_new_tokens} generated tokens."
        )


LIMITS = Limits()


def runs_root() -> Path:
    """Where runs and uploaded checkpoints live ($GPT_PLAYGROUND_RUNS, default ./checkpoints)."""
    root = runs_dir()
    root.mkdir(parents=True, exist_ok=True)
    return root
