"""Limits for public hosting, read from environment variables, with safe defaults.

They are enforced where the UI calls the library (not only in slider ranges) and shown in the app.
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpt.config import MAX_DIGITS, MAX_EXAMPLES, MAX_MODULUS, MAX_TASK_LENGTH, MAX_TASK_VALUES
from gpt.paths import cache_dir, on_space, runs_dir


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
    # Each visitor's share of it (runs, uploads and data sets together); past it their own oldest items go first.
    max_user_runs: int = _env_int("GPT_PLAYGROUND_MAX_USER_RUNS", 20 if PRIVATE else 0)
    max_user_mb: int = _env_int("GPT_PLAYGROUND_MAX_USER_MB", 500 if PRIVATE else 0)
    # Places in line from one address (anonymous visitors; a signed-in visitor has their one place): a client that
    # makes up sessions cannot take the whole queue. 0: no cap.
    max_queue_per_address: int = _env_int("GPT_PLAYGROUND_MAX_QUEUE_PER_ADDRESS", 2 if PRIVATE else 0)
    # A place in line lapses when no page of its visitor has asked for it for this long (the page asks every 2 s).
    queue_lapse_s: int = _env_int("GPT_PLAYGROUND_QUEUE_LAPSE_S", 30)
    # Requests that run the model (generate, inspect, explain) at once; the rest wait in turn (playground.hosting's
    # FairGate). Two: a Space has two cores, and one request already keeps one busy.
    model_slots: int = _env_int("GPT_PLAYGROUND_MODEL_SLOTS", 2)
    # Such requests of one visitor running or waiting; more are refused (they would only wait behind their own).
    max_heavy_per_visitor: int = _env_int("GPT_PLAYGROUND_MAX_HEAVY_PER_VISITOR", 2)
    # Such requests running or waiting in all, each holding a worker thread while it waits; past it they wait in
    # Gradio's queue. One address (a classroom behind one router) may hold up to `max_model_per_address` of them.
    max_model_waiting: int = _env_int("GPT_PLAYGROUND_MAX_MODEL_WAITING", 64)
    max_model_per_address: int = _env_int("GPT_PLAYGROUND_MAX_MODEL_PER_ADDRESS", 48)
    # A task's sizes (the Data tab's Task source; gpt/tasks.py): the examples are generated in the server's memory and
    # scored at every evaluation. On a shared server a classroom's sizes (grokking's p = 59, sort's 20,000 examples
    # fit); locally the library's own caps.
    max_task_modulus: int = _env_int("GPT_PLAYGROUND_MAX_TASK_MODULUS", 113 if PRIVATE else MAX_MODULUS)
    max_task_examples: int = _env_int("GPT_PLAYGROUND_MAX_TASK_EXAMPLES", 20_000 if PRIVATE else MAX_EXAMPLES)
    max_task_length: int = _env_int("GPT_PLAYGROUND_MAX_TASK_LENGTH", 32 if PRIVATE else MAX_TASK_LENGTH)
    max_task_values: int = _env_int("GPT_PLAYGROUND_MAX_TASK_VALUES", 100 if PRIVATE else MAX_TASK_VALUES)
    max_task_digits: int = _env_int("GPT_PLAYGROUND_MAX_TASK_DIGITS", 10 if PRIVATE else MAX_DIGITS)

    def describe(self) -> str:
        shared = (
            f"; {self.max_jobs} training run(s) at a time, {self.max_queue} in line (one per visitor)"
            if PRIVATE
            else ""
        )
        return (
            f"Limits on this server: uploads {self.max_upload_mb} MB, {self.max_files} files; "
            f"models up to {self.max_params / 1e6:.0f}M parameters, context {self.max_context}, "
            f"{self.max_steps:,} steps{shared}; {self.max_new_tokens:,} generated tokens; tasks up to p = "
            f"{self.max_task_modulus}, {self.max_task_examples:,} examples, length {self.max_task_length}, "
            f"{self.max_task_values} values, {self.max_task_digits} digits.{self.describe_storage()}"
        )

    def describe_storage(self) -> str:
        share = [f"{self.max_user_runs} runs"] if self.max_user_runs else []
        share += [f"{self.max_user_mb:,} MB"] if self.max_user_mb else []
        quota = (
            f" Each visitor keeps up to {' and '.join(share)} (runs, uploads and data sets); past that, their own "
            "oldest items are deleted first (never one training or in line)."
            if share
            else ""
        )
        return quota


LIMITS = Limits()

# Handlers that hold a core for seconds (tokenizing an upload, unpacking or zipping a checkpoint, importing a model)
# share these few workers, so a burst of them waits in Gradio's queue instead of stalling every other request.
HEAVY: dict[str, Any] = {"concurrency_id": "heavy", "concurrency_limit": 2}
# Handlers that run the model: one group whose places are the FairGate's waiting places (it orders them fairly).
MODEL: dict[str, Any] = {"concurrency_id": "model", "concurrency_limit": LIMITS.max_model_waiting}


def runs_root() -> Path:
    """Where runs and uploaded checkpoints live ($GPT_PLAYGROUND_RUNS, default ./checkpoints)."""
    root = runs_dir()
    root.mkdir(parents=True, exist_ok=True)
    return root.resolve()


# A server path anywhere in a message: two or more /parts, not inside a word (so "train/val" stays).
_ANY_PATH = re.compile(r"(?<![\w.~])(?:/[\w.@+-]+){2,}/?")


def scrub_paths(message: str) -> str:
    """A message as a visitor on a shared server may see it: no server paths. The runs directory, the cache and the
    temporary folder are cut off (what is left is the name the visitor knows); any other path shows its last part."""
    if not PRIVATE:
        return message
    bases = {str(runs_root()), str(cache_dir().resolve()), str(Path(tempfile.gettempdir()).resolve())}
    for base in sorted(bases, key=len, reverse=True):
        message = re.sub(re.escape(base) + r"(/users/[0-9a-f]+)?/?", "", message)
    return _ANY_PATH.sub(lambda m: "…/" + m.group(0).rstrip("/").rsplit("/", 1)[-1], message)
