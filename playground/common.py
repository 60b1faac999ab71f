"""Helpers the tabs share: turning library errors into UI messages, the checkpoint list, a small model cache."""

from __future__ import annotations

import functools
import inspect
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import gradio as gr

from gpt import checkpoint as ckpt
from gpt.errors import UserInputError
from playground.settings import runs_root

F = TypeVar("F", bound=Callable[..., Any])


def new_session() -> dict[str, Any]:
    """Per-browser-session state (held in gr.State): the prepared data set and this session's training job."""
    return {"data_dir": None, "data_label": None, "job_id": None, "run_dir": None}


def user_errors(fn: F) -> F:
    """Show a library UserInputError as a gr.Error popup (the state stays as it was), never a traceback."""

    if inspect.isgeneratorfunction(fn):  # streaming handlers must stay generator functions for Gradio

        @functools.wraps(fn)
        def stream_wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                yield from fn(*args, **kwargs)
            except UserInputError as e:
                raise gr.Error(str(e), print_exception=False) from None

        return stream_wrapper  # type: ignore[return-value]

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except UserInputError as e:
            raise gr.Error(str(e), print_exception=False) from None

    return wrapper  # type: ignore[return-value]


def checkpoint_choices() -> list[tuple[str, str]]:
    """(label, path) for every complete checkpoint under the runs directory, newest first."""
    root = runs_root()
    out = []
    for r in ckpt.list_checkpoints(root):
        rel = Path(r["path"]).relative_to(root) if Path(r["path"]).is_relative_to(root) else Path(r["path"])
        val = f", val {r['val_loss']:.3f}" if r["val_loss"] is not None else ""
        out.append((f"{rel} · step {r['step']}{val}", r["path"]))
    return out


def checkpoint_dropdown_update(current: str | None = None, state: dict[str, Any] | None = None) -> dict[str, Any]:
    """Fresh choices; selected: this session's latest checkpoint if it has a run, else the current, else the newest."""
    choices = checkpoint_choices()
    paths = [p for _, p in choices]
    mine = str(Path(state["run_dir"]) / "latest") if state and state.get("run_dir") else None
    if mine in paths:
        value = mine
    else:
        value = current if current in paths else (paths[0] if paths else None)
    return gr.update(choices=choices, value=value)


_models: OrderedDict[tuple[str, int], ckpt.Checkpoint] = OrderedDict()
_models_lock = threading.Lock()


def load_checkpoint(path: str | None) -> ckpt.Checkpoint:
    """Load (and cache the 4 most recent) checkpoints; the key includes the file time, so updates reload."""
    if not path:
        raise UserInputError("no checkpoint yet: train a model in the Train tab (or upload one) first")
    resolved = ckpt.resolve(path)
    key = (str(resolved), (resolved / ckpt.CONFIG).stat().st_mtime_ns)
    with _models_lock:
        if key in _models:
            _models.move_to_end(key)
            return _models[key]
    loaded = ckpt.load(resolved)
    with _models_lock:
        _models[key] = loaded
        while len(_models) > 4:
            _models.popitem(last=False)
    return loaded
