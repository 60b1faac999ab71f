"""Helpers the tabs share: turning library errors into UI messages, the checkpoint list, a small model cache, the
prompts suggested."""

from __future__ import annotations

import dataclasses
import functools
import inspect
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import gradio as gr

from gpt import checkpoint as ckpt
from gpt import decode
from gpt.config import ModelConfig
from gpt.corpus import sample_corpus_path
from gpt.data import PreparedData, load_prepared, prepare
from gpt.device import sampling_model
from gpt.errors import UserInputError
from gpt.model import GPT
from gpt.paths import cache_dir
from gpt.sampling import sampling_vocab
from playground import hosting, jobs
from playground.hosting import Visitor, enforce_quota, scrub_paths, visitor
from playground.inputs import text
from playground.session import Session
from playground.settings import HEAVY, LIMITS, runs_root

F = TypeVar("F", bound=Callable[..., Any])
log = logging.getLogger("playground")


def user_errors(fn: F) -> F:
    """Every failure of a handler reaches the user as a message, never as a bare "Error" or a traceback.

    A library UserInputError is shown as it is (the state stays as it was). Anything else is a bug or a case we did
    not foresee: its traceback goes to the server log and the user is told what happened and what to try. On a
    shared server no message shows a server path."""

    def fail(e: Exception) -> gr.Error:
        if isinstance(e, gr.Error):
            return e
        if isinstance(e, UserInputError):
            return gr.Error(scrub_paths(str(e)), print_exception=False)
        log.exception("unexpected error in %s", fn.__name__)
        return gr.Error(
            f"Something went wrong on the server ({type(e).__name__}) and it was logged. Check the inputs of this "
            "step, or reload the page and try again.",
            print_exception=False,
        )

    if inspect.isgeneratorfunction(fn):  # streaming handlers must stay generator functions for Gradio

        @functools.wraps(fn)
        def stream_wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                yield from fn(*args, **kwargs)
            except Exception as e:  # noqa: BLE001 - see fail()
                raise fail(e) from None

        stream_wrapper._user_errors = True  # type: ignore[attr-defined]
        return stream_wrapper  # type: ignore[return-value]

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 - see fail()
            raise fail(e) from None

    wrapper._user_errors = True  # type: ignore[attr-defined]
    return wrapper  # type: ignore[return-value]


def guard_every_handler(demo: gr.Blocks) -> None:
    """Every handler of the app answers its failures as messages (user_errors), also those only the page calls
    (lambdas, the chained steps): a crafted call reaches any of them, with any data."""
    for block_fn in demo.fns.values():
        if block_fn.fn is not None and not getattr(block_fn.fn, "_user_errors", False):
            block_fn.fn = user_errors(block_fn.fn)


NEW_MODEL = ("a new model (sizes below)", "")


def checkpoint_choices(me: Visitor, with_new: bool = False) -> list[tuple[str, str]]:
    """(label, name) for every complete checkpoint this visitor may use, newest first."""
    out = [NEW_MODEL] if with_new else []
    for r in me.checkpoints():
        val = f", val {r['val_loss']:.3f}" if r["val_loss"] is not None else ""
        out.append((f"{r['name']} · step {r['step']}{val}", r["name"]))
    return out


@user_errors
def checkpoint_dropdown_update(
    current: str | None = None,
    state: Session | None = None,
    request: gr.Request | None = None,
    profile: gr.OAuthProfile | None = None,
    with_new: bool = False,
) -> dict[str, Any]:
    """Fresh choices; selected: this session's latest checkpoint if it has a run, else the current, else the newest.

    `with_new` adds "a new model" first (the Train tab's "Start from"), which stays selected unless changed.
    """
    me = visitor(request, profile)
    choices = checkpoint_choices(me, with_new)
    names = [n for _, n in choices]
    mine = me.name(Path(state.run_dir) / "latest") if state and state.run_dir else None
    value: str | None
    if with_new:
        value = current if current in names else ""
    elif mine in names:
        value = mine
    else:
        value = current if current in names else (names[0] if names else None)
    return gr.update(choices=choices, value=value)


def start_from_update(
    current: str | None, request: gr.Request | None, profile: gr.OAuthProfile | None
) -> dict[str, Any]:
    """The Train tab's "Start from": a new model, or any checkpoint of this visitor's."""
    return checkpoint_dropdown_update(current, None, request, profile, with_new=True)


_models: OrderedDict[tuple[str, int, bool], ckpt.Checkpoint] = OrderedDict()
_models_lock = threading.Lock()


def load_checkpoint(name: str | None, me: Visitor, for_sampling: bool = False) -> ckpt.Checkpoint:
    """Load (and cache the 4 most recent) checkpoints; the key includes the file time, so updates reload.

    `name` is resolved for `me` (refused unless it is theirs or shared). `for_sampling`: the model is the fastest
    to generate from on this machine (`gpt.device.sampling_model`: bf16 weights for large models on CPUs with
    native bf16); the Inspect tab keeps the exact fp32 model.
    """
    if not name:
        raise UserInputError("no checkpoint yet: train a model in the Train tab (or upload one) first")
    resolved = ckpt.resolve(me.resolve(name))
    key = (str(resolved), (resolved / ckpt.CONFIG).stat().st_mtime_ns, for_sampling)
    with _models_lock:
        if key in _models:
            _models.move_to_end(key)
            return _models[key]
    if for_sampling:
        exact = load_checkpoint(name, me)
        loaded = dataclasses.replace(exact, model=sampling_model(exact.model))
        # the Generate tab samples from it again and again: its decode step compiles in the background
        decode.warm_up(loaded.model, sampling_vocab(loaded.model, loaded.tokenizer))
    else:
        loaded = ckpt.load(resolved)
    with _models_lock:
        _models[key] = loaded
        while len(_models) > 4:
            _models.popitem(last=False)
    return loaded


def own_data(data_dir: Any, me: Visitor) -> PreparedData | None:
    """The data set a checkpoint was trained on, if it is still there and this visitor may read it (theirs, or the
    shared cache of the built-in corpus); a checkpoint's config could name any path."""
    if not isinstance(data_dir, str) or not data_dir:
        return None
    path = Path(data_dir)
    try:
        real = path.resolve()
        allowed = [me.home.resolve(), (cache_dir() / "datasets").resolve()]
        if me.owner is not None and not any(real.is_relative_to(a) for a in allowed):
            return None
        return load_prepared(real) if (real / "meta.json").is_file() else None
    except (OSError, ValueError, UserInputError):
        return None


def model_text(name: str | None, me: Visitor, lines: int = 1, max_chars: int = 60) -> str:
    """The first lines of the text a checkpoint was trained on (a prompt in the model's own style; a task model's:
    a held-out example's prompt), or ""."""
    if not name:
        return ""
    data = own_data(ckpt.read_meta(ckpt.resolve(me.resolve(name))).get("data_dir"), me)
    if data is None or len(data.train) == 0:
        return ""
    if data.examples is not None:  # a task's: the prompt of its first held-out example, which the model answers
        return data.tokenizer.decode([int(i) for i in data.rows("val")[0][: data.examples.prompt]])
    text = data.tokenizer.decode([int(i) for i in data.train[:256]])
    first = [line.strip() for line in text.splitlines() if line.strip()][:lines]
    return "\n".join(first)[:max_chars]


# The prompts the Generate and Inspect tabs show before a model is chosen (the built-in corpus's style)
DEFAULT_PROMPTS = ("ROMEO:", "ROMEO:\nBut soft, what light")


def suggested_prompt(checkpoint: str | None, current: str, suggested: str, request: gr.Request,
                     profile: gr.OAuthProfile | None, lines: int = 1) -> tuple[Any, str]:  # fmt: skip
    """A prompt from the chosen model's own training text (its first `lines`), unless the visitor typed their own.
    Returns the prompt box's update and the suggestion to remember (a box still showing it may be replaced)."""
    if current and current != suggested and current not in DEFAULT_PROMPTS:
        return gr.skip(), suggested
    try:
        new = model_text(checkpoint, visitor(request, profile), lines)
    except UserInputError:
        return gr.skip(), suggested
    if not new:
        return gr.skip(), suggested
    return new, new


def check_model_size(cfg: ModelConfig, params: int | None = None) -> None:
    """The caps on a model, whichever way it arrives (trained, uploaded, converted, pretrained)."""
    params = GPT.size_of(cfg) if params is None else params
    if params > LIMITS.max_params:
        raise UserInputError(
            f"this model has {params / 1e6:.1f}M parameters; the limit here is {LIMITS.max_params / 1e6:.0f}M "
            "— use fewer layers or a smaller embedding size"
        )
    if cfg.block_size > LIMITS.max_context:
        raise UserInputError(f"context {cfg.block_size} asked; the limit here is {LIMITS.max_context}")


def _is_dir(path: str) -> bool:
    try:
        return Path(path).is_dir()
    except (OSError, ValueError):  # a name too long for the disk, a NUL byte: not a directory
        return False


def _import(source: str, me: Visitor) -> tuple[str, str]:
    """A GPT-2 from the Hugging Face Hub by name (or the local HF cache), or, for the local single user, from a
    directory; refused before its weights are read if it is over the caps; converted once into a checkpoint under
    `pretrained/`, which every visitor may use. Returns the message and the checkpoint's name."""
    from gpt.interop import HUB_NAME, fetch_hf, from_hf, hf_cache_dirs

    source = text(source, "model name", 4096).strip()
    if not source:
        raise UserInputError("enter a Hugging Face model name such as gpt2 (or, locally, a model directory)")
    if me.owner is None and _is_dir(source):
        hf_dir = Path(source)
    elif not HUB_NAME.match(source):
        where = "" if me.owner is None else " (this shared server loads models from the Hugging Face Hub only)"
        raise UserInputError(f"{source[:80]!r} is neither a model directory nor a Hub model name{where}")
    elif cached := hf_cache_dirs(source):
        hf_dir = cached[0]
    else:
        hf_dir = fetch_hf(source, check_model_size)
    name = hf_dir.name if hf_dir == Path(source) else source  # a Hub model by its name, not its snapshot's hash
    target = runs_root() / "pretrained" / "".join(c if c.isalnum() or c in "-_." else "-" for c in name)[:60]
    if not (target / ckpt.CONFIG).is_file():
        from_hf(hf_dir, target, check_model_size)
        enforce_quota(protected=[target])
    loaded = load_checkpoint(me.name(target), me)
    return f"Loaded {source} ({loaded.model.num_params() / 1e6:.1f}M parameters) as `{me.name(target)}`", me.name(
        target
    )


# Gradio shows the progress of the tqdm bars huggingface_hub draws while it downloads weights.
DOWNLOAD_PROGRESS = gr.Progress(track_tqdm=True)


@user_errors
def import_pretrained(
    source: str,
    request: gr.Request,
    profile: gr.OAuthProfile | None,
    progress: gr.Progress = DOWNLOAD_PROGRESS,
) -> tuple[str, Any]:
    """ "Load a pretrained model": the imported model becomes the tab's selected checkpoint."""
    label, name = _import(source, visitor(request, profile))
    return label, checkpoint_dropdown_update(name, None, request, profile)


@user_errors
def import_pretrained_to_start_from(
    source: str,
    request: gr.Request,
    profile: gr.OAuthProfile | None,
    progress: gr.Progress = DOWNLOAD_PROGRESS,
) -> tuple[str, Any]:
    """The same in the Train tab: the imported model becomes "Start from" (fine-tuning it)."""
    label, name = _import(source, visitor(request, profile))
    return label, start_from_update(name, request, profile)


def pretrained_row(checkpoint: gr.Dropdown, api_name: str | None = None, with_new: bool = False) -> None:
    """A row to bring in a Hugging Face GPT-2, Llama or Qwen3 model; it becomes the tab's selected checkpoint."""
    with gr.Accordion("Load a pretrained model (Hugging Face GPT-2, Llama or Qwen3)", open=False):
        with gr.Row():
            source = gr.Textbox(
                value="gpt2", label="Local model directory, or a name found in the Hugging Face cache", scale=3
            )
            button = gr.Button("Load", scale=1)
        message = gr.Markdown()
    handler = import_pretrained_to_start_from if with_new else import_pretrained
    visibility = "public" if api_name else "private"
    button.click(handler, source, [message, checkpoint], api_name=api_name, api_visibility=visibility, **HEAVY)


# ----- the session: found again at a page load, ended by Forget me -------------------------------------------------


def restore_session(
    secret: Any, state: Session | None, request: gr.Request, profile: gr.OAuthProfile | None
) -> tuple[str, Session]:
    """The page loaded: bind it to its browser (the secret it keeps), and find the visitor's work again: the data set
    they prepared, their run (training, waiting in line, or the last one). Returns the secret to keep, and the
    session. (`secret` comes from the browser, anything at all: `bind_browser` checks it; `recall` keeps only the
    string values of the visitor's record.)"""
    secret = hosting.bind_browser(secret, request)
    me = visitor(request, profile)
    session = state if isinstance(state, Session) else Session()
    record = hosting.recall(me)
    data_dir = record.get("data_dir")
    if data_dir and (Path(data_dir) / "meta.json").is_file() and not session.data_dir:
        session = dataclasses.replace(session, data_dir=data_dir, data_label=record.get("data_label"))
    job = jobs.REGISTRY.latest(me.key)
    if job is not None:
        session = dataclasses.replace(session, job_id=job.id, run_dir=str(job.run_dir))
    elif (run_dir := record.get("run_dir")) and Path(run_dir).is_dir():
        session = dataclasses.replace(session, run_dir=run_dir)
    return secret, session


@user_errors
def forget_me(confirmed: Any, request: gr.Request, profile: gr.OAuthProfile | None) -> tuple[Any, Any, bool]:
    """ "Forget me" (once the visitor confirmed): stop their run, delete everything they keep here, and let the
    browser forget its secret (the page then reloads as a new visitor). Returns (secret, session, done)."""
    if confirmed is not True:
        return gr.skip(), gr.skip(), False
    me = visitor(request, profile)
    stopped = jobs.REGISTRY.stop_owner(me.key)
    for job in stopped:  # let them save and end before their folder goes
        job.process.join(timeout=30)
    hosting.forget(me)
    jobs.REGISTRY.forget(me.key)
    hosting.unbind(request)
    return hosting.bind_browser(None, request), Session(), True  # a new secret: the browser is someone new


def current_data(session: Session, tokenizer: str = "char") -> PreparedData:
    """This session's data set; until the visitor prepares one, the built-in corpus with `tokenizer`."""
    if session.data_dir:
        if not (Path(session.data_dir) / "meta.json").is_file():
            raise UserInputError(
                "your prepared data set is no longer on the server (removed to stay within the storage quota, or "
                "by Forget me); prepare it again in the Data tab"
            )
        return load_prepared(session.data_dir)
    return prepare([sample_corpus_path()], tokenizer=tokenizer)
