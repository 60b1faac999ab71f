"""Helpers the tabs share: turning library errors into UI messages, the checkpoint list, a small model cache."""

from __future__ import annotations

import dataclasses
import functools
import inspect
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import gradio as gr

from gpt import checkpoint as ckpt
from gpt.device import sampling_model
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


def short_path(path: str) -> str:
    """A checkpoint path as the UI shows it: relative to the runs directory when inside it."""
    p, root = Path(path), runs_root()
    return str(p.relative_to(root)) if p.is_relative_to(root) else path


NEW_MODEL = ("a new model (sizes below)", "")


def checkpoint_choices(with_new: bool = False) -> list[tuple[str, str]]:
    """(label, path) for every complete checkpoint under the runs directory, newest first."""
    out = [NEW_MODEL] if with_new else []
    for r in ckpt.list_checkpoints(runs_root()):
        val = f", val {r['val_loss']:.3f}" if r["val_loss"] is not None else ""
        out.append((f"{short_path(r['path'])} · step {r['step']}{val}", r["path"]))
    return out


def checkpoint_dropdown_update(
    current: str | None = None, state: dict[str, Any] | None = None, with_new: bool = False
) -> dict[str, Any]:
    """Fresh choices; selected: this session's latest checkpoint if it has a run, else the current, else the newest.

    `with_new` adds "a new model" first (the Train tab's "Start from"), which stays selected unless changed.
    """
    choices = checkpoint_choices(with_new)
    paths = [p for _, p in choices]
    mine = str(Path(state["run_dir"]) / "latest") if state and state.get("run_dir") else None
    value: str | None
    if with_new:
        value = current if current in paths else ""
    elif mine in paths:
        value = mine
    else:
        value = current if current in paths else (paths[0] if paths else None)
    return gr.update(choices=choices, value=value)


_models: OrderedDict[tuple[str, int, bool], ckpt.Checkpoint] = OrderedDict()
_models_lock = threading.Lock()


def load_checkpoint(path: str | None, for_sampling: bool = False) -> ckpt.Checkpoint:
    """Load (and cache the 4 most recent) checkpoints; the key includes the file time, so updates reload.

    `for_sampling`: the model is the fastest to generate from on this machine (`gpt.device.sampling_model`: bf16
    weights for large models on CPUs with native bf16); the Inspect tab keeps the exact fp32 model.
    """
    if not path:
        raise UserInputError("no checkpoint yet: train a model in the Train tab (or upload one) first")
    resolved = ckpt.resolve(path)
    key = (str(resolved), (resolved / ckpt.CONFIG).stat().st_mtime_ns, for_sampling)
    with _models_lock:
        if key in _models:
            _models.move_to_end(key)
            return _models[key]
    if for_sampling:
        exact = load_checkpoint(path)
        loaded = dataclasses.replace(exact, model=sampling_model(exact.model))
    else:
        loaded = ckpt.load(resolved)
    with _models_lock:
        _models[key] = loaded
        while len(_models) > 4:
            _models.popitem(last=False)
    return loaded


@user_errors
def import_pretrained(source: str, with_new: bool = False) -> tuple[str, Any]:
    """A GPT-2 from a local Hugging Face directory, the local HF cache, or (with internet) the Hub by name,
    converted once into a checkpoint under the runs directory so every tab can use it."""
    from gpt.interop import from_hf, hf_cache_dirs

    source = (source or "").strip()
    if not source:
        raise UserInputError("enter a local Hugging Face model directory or a model name such as gpt2")
    if Path(source).is_dir():
        hf_dir = Path(source)
    elif cached := hf_cache_dirs(source):
        hf_dir = cached[0]
    else:
        hf_dir = _download(source)
    target = runs_root() / "pretrained" / "".join(c if c.isalnum() or c in "-_." else "-" for c in hf_dir.name)[:60]
    if not (target / ckpt.CONFIG).is_file():
        from_hf(hf_dir, target)
    loaded = load_checkpoint(str(target))
    label = f"Loaded {source} ({loaded.model.num_params() / 1e6:.1f}M parameters) as `{target}`"
    return label, checkpoint_dropdown_update(str(target), with_new=with_new)


def _download(name: str) -> Path:
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(name, allow_patterns=["config.json", "model.safetensors"]))
    except Exception as e:  # noqa: BLE001 - offline, unknown name, no huggingface_hub: one clear message
        raise UserInputError(
            f"the weights of {name!r} are not available offline ({type(e).__name__}): no such local directory and "
            "nothing in the Hugging Face cache. On a machine with internet run "
            f"`huggingface-cli download {name}` (or save a GPT2LMHeadModel with save_pretrained), then enter its "
            "directory here"
        ) from None


def pretrained_row(checkpoint: gr.Dropdown, api_name: str | None = None, with_new: bool = False) -> None:
    """A row to bring in a Hugging Face GPT-2; on success it becomes the tab's selected checkpoint."""
    with gr.Accordion("Load a pretrained GPT-2 (Hugging Face format)", open=False):
        with gr.Row():
            source = gr.Textbox(
                value="gpt2", label="Local model directory, or a name found in the Hugging Face cache", scale=3
            )
            button = gr.Button("Load", scale=1)
        message = gr.Markdown()
    handler = functools.partial(import_pretrained, with_new=with_new)
    button.click(
        handler, source, [message, checkpoint], api_name=api_name, api_visibility="public" if api_name else "private"
    )
