"""Limits for public hosting, read from environment variables, with safe defaults.

They are enforced where the UI calls the library (not only in slider ranges) and shown in the app.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpt.paths import on_space, runs_dir


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


def _env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name, "").strip().lower()
    return default if not value else value in ("1", "true", "yes", "on")


# Private by default on a Space: many strangers share one server there. Locally, one user sees the whole runs directory.
PRIVATE = _env_bool("GPT_PLAYGROUND_PRIVATE", on_space())


@dataclass(frozen=True)
class Limits:
    max_upload_mb: int = _env_int("GPT_PLAYGROUND_MAX_UPLOAD_MB", 50)
    max_files: int = _env_int("GPT_PLAYGROUND_MAX_FILES", 200)
    max_paste_chars: int = _env_int("GPT_PLAYGROUND_MAX_PASTE_CHARS", 5_000_000)
    max_params: int = _env_int("GPT_PLAYGROUND_MAX_PARAMS", 30_000_000)
    max_steps: int = _env_int("GPT_PLAYGROUND_MAX_STEPS", 20_000)
    max_context: int = _env_int("GPT_PLAYGROUND_MAX_CONTEXT", 1024)
    max_jobs: int = _env_int("GPT_PLAYGROUND_MAX_JOBS", 1)
    max_queue: int = _env_int("GPT_PLAYGROUND_MAX_QUEUE", 8)  # runs waiting for a slot, one per visitor
    max_new_tokens: int = _env_int("GPT_PLAYGROUND_MAX_NEW_TOKENS", 1000)
    # Storage quota (0: none): past it the oldest runs go, never one that is training or queued. On by default
    # where strangers share the disk; a local user's runs are never deleted unless they ask for it.
    max_runs: int = _env_int("GPT_PLAYGROUND_MAX_RUNS", 100 if PRIVATE else 0)
    max_disk_mb: int = _env_int("GPT_PLAYGROUND_MAX_DISK_MB", 5000 if PRIVATE else 0)

    def describe(self) -> str:
        return (
            f"Limits on this server: uploads {self.max_upload_mb} MB, {self.max_files} files; "
            f"models up to {self.max_params / 1e6:.0f}M parameters, context {self.max_context}, "
            f"{self.max_steps:,} steps; {self.max_jobs} training run(s) at a time, {self.max_queue} in line "
            f"(one per visitor); {self.max_new_tokens} generated tokens.{self.describe_storage()}"
        )

    def describe_storage(self) -> str:
        rules = [f"{self.max_runs} runs"] if self.max_runs else []
        rules += [f"{self.max_disk_mb:,} MB"] if self.max_disk_mb else []
        quota = (
            f" Past {' or '.join(rules)} in all, the oldest runs are deleted (never one training or queued)."
            if rules
            else ""
        )
        privacy = " Your runs are private: other visitors cannot see them." if PRIVATE else ""
        return (quota if rules else "") + privacy


LIMITS = Limits()

# Handlers that hold a core for seconds (tokenizing an upload, unpacking or zipping a checkpoint, importing a model)
# share these few workers, so a burst of them waits in Gradio's queue instead of stalling every other request.
HEAVY: dict[str, Any] = {"concurrency_id": "heavy", "concurrency_limit": 2}


def runs_root() -> Path:
    """Where runs and uploaded checkpoints live ($GPT_PLAYGROUND_RUNS, default ./checkpoints)."""
    root = runs_dir()
    root.mkdir(parents=True, exist_ok=True)
    return root.resolve()
