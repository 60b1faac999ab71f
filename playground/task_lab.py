"""The tasks lab's pieces the tabs share (gpt/tasks.py's algorithmic tasks): the Data tab's Task source (its form, the
task prepared into the visitor's home, a few examples with the prompt and the answer marked), the server's caps on a
task's sizes, and which task a checkpoint learned (for Generate's marked answers and Inspect's task views)."""

from __future__ import annotations

import copy
import dataclasses
import functools
import html
import json
from dataclasses import dataclass
from typing import Any

import gradio as gr

from gpt import checkpoint as ckpt
from gpt.config import Config, TaskConfig, apply_overrides
from gpt.data import PreparedData
from gpt.errors import UserInputError
from gpt.tasks import (
    TASKS,
    Shown,
    Task,
    examples_preview,
    generator_settings,
    load_task,
    make_task,
    prepare_task,
    task_config,
)
from gpt.tokenizer import SymbolTokenizer
from playground.common import own_data, user_errors
from playground.hosting import Visitor, enforce_quota, remember, visitor
from playground.inputs import number
from playground.session import Session
from playground.settings import HEAVY, LIMITS

DEFAULTS = TaskConfig()
# The form starts at the grokking preset's task (configs/grokking.yaml): p = 59, 40% of the pairs trained on
START = dataclasses.replace(DEFAULTS, name="modular-addition", modulus=59, train_fraction=0.4)
# The options each task reads (gpt/tasks.py); the others keep their defaults, so that they do not change the data
# set's cache key
OPTIONS: dict[str, tuple[str, ...]] = {
    "modular-addition": ("modulus",),
    "sort": ("length", "values", "examples"),
    "reverse": ("length", "values", "examples"),
    "copy": ("length", "values", "examples"),
    "addition": ("digits", "examples"),
    "parity": ("length", "examples"),
    "brackets": ("length", "examples"),
}
SHOWN_EXAMPLES = 4  # of each split, in the Data tab


def caps() -> dict[str, tuple[int, int, str]]:
    """Each option's range on this server (its lowest, its highest) and its label."""
    return {
        "modulus": (2, LIMITS.max_task_modulus, "modulus p"),  # (p² examples)
        "length": (1, LIMITS.max_task_length, "length"),
        "values": (2, LIMITS.max_task_values, "values"),
        "digits": (1, LIMITS.max_task_digits, "digits"),
        "examples": (2, LIMITS.max_task_examples, "examples"),
    }


def task_settings(name: Any, options: dict[str, Any], train_fraction: Any, seed: Any) -> TaskConfig:
    """The TaskConfig a form (or an API call) asks for, each option the task reads checked against this server's
    caps (the message names the option and its range); the options it does not read keep their defaults."""
    if not isinstance(name, str) or name not in OPTIONS:
        raise UserInputError(f"the task is one of {', '.join(TASKS)}, not {str(name)[:40]!r}")
    kept: dict[str, Any] = {}
    for option in OPTIONS[name]:
        lo, hi, label = caps()[option]
        kept[option] = number(options.get(option), f"the {label}", lo, hi, integer=True)
    fraction = number(train_fraction, "the train fraction", 0.01, 0.99)
    cfg = dataclasses.replace(DEFAULTS, name=name, train_fraction=fraction,
                              seed=number(seed, "the seed", 0, 2**31 - 1, integer=True), **kept)  # fmt: skip
    try:
        cfg.validate()  # (what no single range says: brackets need an even length)
    except UserInputError as e:
        raise UserInputError(str(e).replace("task.", "the task's ")) from None
    return cfg


def label_of(cfg: TaskConfig) -> str:
    """What the Data tab calls a prepared task."""
    said = ", ".join(f"{o} {getattr(cfg, o):,}" for o in OPTIONS.get(cfg.name, ()))
    return f"Task: {cfg.name} ({said}, {cfg.train_fraction:.0%} trained on, seed {cfg.seed})"


def prepare_for(me: Visitor, cfg: TaskConfig) -> PreparedData:
    """The task prepared into the visitor's home on a shared server (their share of the disk counts it), else the
    cache: instant when done before; then remembered for their next page load."""
    home = None if me.owner is None else me.home / "data"
    data = prepare_task(cfg, cache=home)
    enforce_quota(me, protected=[data.dir])
    remember(me, data_dir=str(data.dir), data_label=label_of(cfg))
    return data


def stats_markdown(data: PreparedData, label: str) -> str:
    """A prepared task in numbers: its examples, the split, an example's tokens, the vocabulary."""
    task = load_task(data)
    n_train, n_val = len(task.train), len(task.val)
    return (
        f"**{html.escape(label)}**  \n{html.escape(task.description)}; its own tokenizer, one token per symbol\n\n"
        "| examples | trained on | held out | tokens per example | vocabulary |\n|---|---|---|---|---|\n"
        f"| {n_train + n_val:,} | {n_train:,} | {n_val:,} | {task.prompt_len} prompt + {task.answer_len} answer | "
        f"{task.tokenizer.vocab_size:,} symbols |"
    )


# each token a box: the prompt's grey, the answer's green (inline: the view is the Data tab's token-view box)
_BOX = "display:inline-block;font-family:monospace;border-radius:3px;padding:0 4px;margin:1px 2px 1px 0;"
_LOOK = {"prompt": "background:#e5e7eb", "answer": "background:#b7e4c7;font-weight:600"}


def _tokens(shown: list[str], kind: str) -> str:
    return "".join(f'<span class="tok {kind}" style="{_BOX}{_LOOK[kind]}">{html.escape(t)}</span>' for t in shown)


def examples_html(data: PreparedData) -> str:
    """A few train and held-out examples, each token a box: the prompt's grey (given), the answer's green (what the
    model learns to write; the loss counts only those)."""
    cell = "style='padding:2px 14px 2px 0;text-align:left'"
    rows = "".join(
        f"<tr><td {cell}>{'trained on' if s.split == 'train' else 'held out'}</td>"
        f"<td {cell} class='task-prompt'>{_tokens(s.prompt_tokens, 'prompt')}</td>"
        f"<td {cell} class='task-answer'>{_tokens(s.answer_tokens, 'answer')}</td></tr>"
        for s in examples_preview(load_task(data), SHOWN_EXAMPLES)
    )
    return (
        "<div class='task-examples'><p>A few examples: the <b>prompt</b> (grey) is given, the <b>answer</b> (green) "
        "is what the model learns to write (the loss counts only its tokens). Held-out examples are never trained "
        "on: their accuracy says whether it learned the algorithm or memorised the table.</p><table>"
        f"<tr><th {cell}>split</th><th {cell}>prompt</th><th {cell}>answer</th></tr>{rows}</table></div>"
    )


@user_errors
def prepare_task_data(
    name: str, modulus: Any, length: Any, values: Any, digits: Any, examples: Any, train_fraction: Any, seed: Any,
    state: Session, request: gr.Request, profile: gr.OAuthProfile | None,
) -> tuple[str, str, Session, Any]:  # fmt: skip
    """The Data tab's Task source: the task generated and prepared as the visitor's data set; its numbers, a few
    examples, and the session's data set now this one (the BPE section hidden: a task has its own tokenizer)."""
    options = {"modulus": modulus, "length": length, "values": values, "digits": digits, "examples": examples}
    cfg = task_settings(name, options, train_fraction, seed)
    data = prepare_for(visitor(request, profile), cfg)
    label = label_of(cfg)
    state = dataclasses.replace(state, data_dir=str(data.dir), data_label=label)
    return stats_markdown(data, label), examples_html(data), state, gr.update(visible=False)


def option_visibility(name: str) -> list[Any]:
    """The form's option boxes: those the chosen task reads."""
    reads = OPTIONS.get(name, ())
    return [gr.update(visible=option in reads) for option in ("modulus", "length", "values", "digits", "examples")]


@dataclass
class Form:
    """The Data tab's Task source: the task, its options, the split and the seed, and its button."""

    box: gr.Column
    inputs: list[Any]  # name, modulus, length, values, digits, examples, train fraction, seed: the /prepare_task API's
    button: gr.Button


def _option(option: str, value: int, info: str, visible: bool = False) -> gr.Number:
    """A box for one of the task's options; its range on this server said under it (the check is the handler's,
    whose message names the option: Gradio's own bounds and rounding would refuse without naming it)."""
    lo, hi, label = caps()[option]
    return gr.Number(value, label=label[0].upper() + label[1:], info=f"{info} ({lo} to {hi:,} here)",
                     visible=visible, min_width=120)  # fmt: skip


def form() -> Form:
    """The Task source's controls (shown when the Data tab's source is Task): the task and its button first, its
    options side by side, so that the button is in view at 1366x768."""
    at = START
    with gr.Column(visible=False) as box:
        with gr.Row(equal_height=True):  # (the source's radio names it a task: the box needs no label of its own)
            name = gr.Dropdown(TASKS, value=at.name, label="Task", show_label=False, container=False, scale=2)
            button = gr.Button("Prepare task", variant="primary", scale=1, min_width=120)
        with gr.Row():
            modulus = _option("modulus", at.modulus, "a + b mod p, every pair", visible=True)
            length = _option("length", at.length, "the input's tokens")
            values = _option("values", at.values, "numbers 0 .. values − 1")
            digits = _option("digits", at.digits, "of each number added")
            examples = _option("examples", at.examples, "drawn at random")
        with gr.Row():
            fraction = gr.Slider(0.05, 0.95, value=at.train_fraction, step=0.05, label="Train fraction", scale=2,
                                 info="the share trained on; the rest is held out")  # fmt: skip
            seed = gr.Number(at.seed, label="Seed", info="the same seed, the same examples", scale=1, min_width=120)
    name.change(option_visibility, name, [modulus, length, values, digits, examples], api_visibility="private",
                queue=False)  # fmt: skip
    return Form(box, [name, modulus, length, values, digits, examples, fraction, seed], button)


def wire(f: Form, state: gr.State, outputs: list[Any], progress_box: Any) -> None:
    """Prepare task: the task's statistics and examples in the Data tab's `outputs` (stats, token view, state, the
    BPE section)."""
    f.button.click(prepare_task_data, [*f.inputs, state], outputs, api_name="prepare_task", show_progress="full",
                   show_progress_on=progress_box, **HEAVY)  # fmt: skip


# ----- the task a checkpoint learned ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Learned:
    """What a task checkpoint learned: its task's settings, and its examples (None: neither its data set nor a
    generation within this server's caps is at hand)."""

    config: TaskConfig
    task: Task | None


def within_caps(cfg: TaskConfig) -> bool:
    """Whether this server would generate the task (its options within the Data tab's caps)."""
    return all(getattr(cfg, o) <= caps()[o][1] for o in OPTIONS.get(cfg.name, ()))


def checkpoint_task(name: str | None, me: Visitor) -> Learned | None:
    """The task checkpoint `name` learned (None: it learned text), with its examples: its data set's when that is
    still there and the same task, else the task generated again from its settings (the same seed, the same
    examples)."""
    if not name:
        return None
    meta = ckpt.read_meta(ckpt.resolve(me.resolve(name)))
    cfg = Config.from_dict(meta["config"]).task
    if not cfg.name or meta.get("tokenizer", {}).get("type") != SymbolTokenizer.name:
        return None
    data = own_data(meta.get("data_dir"), me)
    recorded = task_config(data) if data is not None else None
    if data is not None and recorded is not None and generator_settings(recorded) == generator_settings(cfg):
        return Learned(cfg, load_task(data))
    return Learned(cfg, make_task(cfg) if within_caps(cfg) else None)


@functools.lru_cache(maxsize=16)
def _shape(settings: str) -> tuple[int, int, int]:
    task = make_task(TaskConfig(**json.loads(settings)))
    return int(task.train.shape[1]), len(task.train), task.tokenizer.vocab_size


def fitted(cfg: Config, data: PreparedData | None) -> tuple[Config, int | None]:
    """The config as the trainer runs it on a task (gpt.trainer's `_fit_task`: a new model's context is an example
    less its last token, the batch at most the examples trained on), with the task's vocabulary: on the session's
    task data, else on a task preset's own task (generated in memory to measure it: a hundredth of a second for the
    presets'); on text as it is, and None. For the size and time estimates before Start."""
    if data is not None and data.examples is not None:
        width, n_train, vocab = data.examples.width, len(data.rows("train")), data.tokenizer.vocab_size
    elif cfg.task.name and within_caps(cfg.task):
        width, n_train, vocab = _shape(json.dumps(generator_settings(cfg.task), sort_keys=True))
    else:
        return cfg, None
    fit = [f"model.block_size={width - 1}", f"train.batch_size={min(cfg.train.batch_size, n_train)}"]
    return apply_overrides(copy.deepcopy(cfg), fit), vocab


def is_task_data(data: PreparedData, name: str) -> bool:
    """Whether a data set holds task `name`'s examples."""
    recorded = task_config(data)
    return recorded is not None and recorded.name == name


def example_rows(shown: list[Shown]) -> list[list[str]]:
    """Examples as table rows: split, prompt, answer, the model's answer."""
    return [["held out" if s.split == "val" else "trained on", s.prompt, s.answer, s.model_answer or ""]
            for s in shown]  # fmt: skip
