"""The Generate tab: stream text from a checkpoint, tune sampling live, see each token's probability; a task model
answers a typed prompt of its task, marked right or wrong."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator, Sequence
from dataclasses import Field, dataclass, fields
from typing import Any

import gradio as gr
import torch

from gpt.config import SampleConfig
from gpt.errors import UserInputError
from gpt.generate import stream
from gpt.inspect import explain_sampling, next_logits
from gpt.sampling import encode_prompt
from gpt.task_check import Answered, answer_prompt, prompt_form
from gpt.tokenizer import SymbolTokenizer, Tokenizer
from playground import charts, task_lab
from playground.common import (
    DEFAULT_PROMPTS,
    checkpoint_dropdown_update,
    load_checkpoint,
    model_text,
    pretrained_row,
    suggested_prompt,
    user_errors,
)
from playground.hosting import heavy_slot, visitor
from playground.inputs import number, text
from playground.settings import LIMITS, MODEL

# Probability buckets, coloured from confident (green) to surprising (red).
BUCKETS = [(0.5, "p ≥ 0.5"), (0.2, "0.2–0.5"), (0.05, "0.05–0.2"), (0.0, "p < 0.05")]
BRANCH = "↳ your choice"  # the category of a token the visitor chose in place of the model's (a branch point)
COLOURS = {"p ≥ 0.5": "#b7e4c7", "0.2–0.5": "#fff3b0", "0.05–0.2": "#ffd6a5", "p < 0.05": "#ffadad", BRANCH: "#a0c4ff"}
REFRESH_S = 0.05  # stream at most ~20 UI updates per second
PROMPT_CHARS = 100_000  # far more than any context holds; only its last tokens are used


def bucket(p: float) -> str:
    return next(name for lo, name in BUCKETS if p >= lo)


SETTINGS = fields(SampleConfig)  # one control per field, in order: what /generate takes after checkpoint and prompt


def sample_config(*values: Any) -> SampleConfig:
    """The SampleConfig the Generate tab's controls describe, each value checked as it comes from the wire."""
    if len(values) != len(SETTINGS):
        raise UserInputError(f"expected {len(SETTINGS)} sampling settings, got {len(values)}")
    kw: dict[str, Any] = {}
    for f, value in zip(SETTINGS, values, strict=True):
        if f.name == "stop":
            kw["stop"] = [s for s in text(value, "stop text", 1000).split("|") if s]
        elif f.name == "seed":
            kw["seed"] = None if value is None or value == "" else number(value, "seed", 0, 2**63 - 1, integer=True)
        else:
            kw[f.name] = number(value, f.name, integer=f.type == "int")
    if kw["max_new_tokens"] > LIMITS.max_new_tokens:
        raise UserInputError(f"at most {LIMITS.max_new_tokens} new tokens on this server")
    cfg = SampleConfig(**kw)
    cfg.validate()
    return cfg


def setting_control(f: Field[Any]) -> gr.Slider | gr.Textbox | gr.Number:
    """A field of SampleConfig as a control: a slider where its metadata gives a range, else a box."""
    meta = f.metadata
    value: Any = meta["ui"] if meta["ui"] is not None else f.default
    lo, hi, step = meta["range"]
    if f.name == "max_new_tokens":
        hi = LIMITS.max_new_tokens
    if lo is not None:
        return gr.Slider(lo, hi, value=value, step=step, label=meta["label"])
    if f.name == "stop":
        return gr.Textbox(label=meta["label"])
    return gr.Number(value=value, precision=0, label=meta["label"])


@dataclass(frozen=True)
class Piece:
    """One piece of the generated text, as the tab keeps it (in gr.State, on the server) for the alternatives table,
    the explainer and branching. Usually one token; a UTF-8 character the model wrote in several tokens is one piece,
    with its last token's probability and alternatives."""

    text: str
    prob: float  # the model's probability of its (last) token
    alternatives: tuple[tuple[str, float], ...]  # the model's top tokens at that step, this one among them
    alternative_ids: tuple[int, ...]  # their token ids, in the same order
    ids: tuple[int, ...]  # the token ids this piece is made of
    branch: bool = False  # the visitor chose it in place of the model's token

    @property
    def category(self) -> str:
        """Its colour's name in the output (COLOURS)."""
        return BRANCH if self.branch else bucket(self.prob)


Highlighted = list[tuple[str, str | None]]  # the HighlightedText's value: (text, category); the prompt has none


def outputs_of(prompt: str, pieces: list[Piece]) -> tuple[Highlighted, str, list[Piece]]:
    """The outputs of a generation: the coloured output (the prompt first, uncoloured), the plain text, the pieces."""
    highlighted: Highlighted = [(prompt, None)] if prompt else []
    highlighted += [(p.text, p.category) for p in pieces]
    return highlighted, "".join(p.text for p in pieces), pieces


@user_errors
def generate(
    checkpoint: str | None, prompt: str, request: gr.Request, profile: gr.OAuthProfile | None, *settings: Any
) -> Iterator[tuple[Highlighted, str, list[Piece]]]:
    """Stream (highlighted tokens, plain text, pieces); the prompt is shown uncoloured first."""
    cfg = sample_config(*settings)
    prompt = text(prompt, "prompt", PROMPT_CHARS)
    me = visitor(request, profile)
    with heavy_slot(me, request):
        yield from _generate(load_checkpoint(checkpoint, me, for_sampling=True), prompt, cfg, prompt)


def _generate(
    loaded: Any, prompt: str | list[int], cfg: SampleConfig, prompt_shown: str = "", before: Sequence[Piece] = ()
) -> Iterator[tuple[Highlighted, str, list[Piece]]]:
    """Stream the continuation of `prompt` (text, or token ids) as the tab's outputs (`outputs_of`). `prompt_shown`:
    the prompt as the output starts with it; `before`: the pieces that stand before the continuation (a branch's)."""
    pieces = list(before)
    last = 0.0
    ids: list[int] = []  # token ids of the piece being completed (a UTF-8 character may take several tokens)
    for tok in stream(loaded.model, loaded.tokenizer, prompt or "", cfg):
        if tok.alternatives:  # (the last piece, text held back for a stop string, repeats the last id)
            ids.append(tok.id)
        if not tok.text:
            continue
        pieces.append(Piece(tok.text, tok.prob, tuple(tok.alternatives), tuple(tok.alternative_ids), tuple(ids)))
        ids = []
        if time.perf_counter() - last >= REFRESH_S:
            last = time.perf_counter()
            yield outputs_of(prompt_shown, pieces)
    yield outputs_of(prompt_shown, pieces)


def branch_choices(piece: Piece) -> list[tuple[str, float, int | None]]:
    """The other tokens the model considered at one step (not the one shown there), in the alternatives table's
    order, its rows after the first: (text, probability, token id, None where unknown). A visitor branches to one."""
    ids: Sequence[int | None] = piece.alternative_ids or [None] * len(piece.alternatives)
    return [(t, p, i) for (t, p), i in zip(piece.alternatives, ids, strict=False) if t != piece.text]


def branch(
    checkpoint: str | None, prompt: str, details: Any, step: Any, row: Any, original: Any, request: gr.Request,
    profile: gr.OAuthProfile | None, *settings: Any,
) -> Iterator[tuple[Any, Any, Any, Any]]:  # fmt: skip
    """Continue from a step with one of its alternatives in place of the token the model picked: the text up to that
    step, the chosen token (marked), then the model's continuation with the current settings. The pieces before the
    first branch are kept (`original`), for "Back to the original"."""
    cfg = sample_config(*settings)
    prompt = text(prompt, "prompt", PROMPT_CHARS)
    step = number(step, "step", 0, None, integer=True)
    row = number(row, "alternative", 1, None, integer=True)
    if not isinstance(details, list) or step >= len(details) or not isinstance(details[step], Piece):
        raise UserInputError("generate some text first, then click one of its tokens")
    at: Piece = details[step]
    choices = branch_choices(at)
    if row > len(choices):
        raise UserInputError("choose one of the alternatives in the table (a row below the chosen token)")
    chosen_text, chosen_prob, chosen_id = choices[row - 1]
    if chosen_id is None:
        raise UserInputError("generate again: this text was made before branching was possible")
    me = visitor(request, profile)
    with heavy_slot(me, request):
        loaded = load_checkpoint(checkpoint, me, for_sampling=True)
        kept = details[:step]
        # (a piece may be several tokens, a UTF-8 character's bytes: its alternatives are those of its last one)
        earlier = at.ids[:-1]
        ids = encode_prompt(loaded.tokenizer, prompt) + [i for p in kept for i in p.ids] + [*earlier, chosen_id]
        mark = dataclasses.replace(at, text=chosen_text, prob=chosen_prob, ids=(*earlier, chosen_id), branch=True)
        keep = original or details
        for highlighted, plain, pieces in _generate(loaded, ids, cfg, prompt, [*kept, mark]):
            yield highlighted, plain, pieces, keep


def back_to_original(prompt: Any, original: Any) -> tuple[Any, Any, Any, Any]:
    """The output as it was before the first branch (the prompt, uncoloured, first)."""
    if not isinstance(original, list) or not original:
        return gr.skip(), gr.skip(), gr.skip(), gr.skip()
    return *outputs_of(prompt if isinstance(prompt, str) else "", original), None


def clicked_index(evt: gr.SelectData) -> int | None:
    """The index a click on a component names (Gradio sends [i] for some; a crafted call may send anything)."""
    index = getattr(evt, "index", None)
    if isinstance(index, list | tuple) and index:
        index = index[0]
    return None if isinstance(index, bool) or not isinstance(index, int) else index


@user_errors
def show_alternatives(details: Any, prompt: Any, evt: gr.SelectData) -> tuple[Any, Any]:
    """Clicking a generated token shows what else the model considered at that step, and moves the explainer there.
    (The page sends the click; a crafted call may send anything, which changes nothing.)"""
    index = clicked_index(evt)
    if index is None or not isinstance(details, list):
        return gr.skip(), gr.skip()
    index -= 1 if prompt else 0
    if not 0 <= index < len(details) or not isinstance(details[index], Piece):
        return gr.skip(), gr.skip()
    return alternatives_rows(details[index], index), index


def pick_row(evt: gr.SelectData) -> tuple[Any, Any]:
    """A click on the alternatives table: which row, and whether it can be branched to (not the chosen token's)."""
    r = clicked_index(evt)
    if r is None or r < 0:
        return gr.skip(), gr.skip()
    return r, gr.update(interactive=r > 0)


def alternatives_rows(piece: Piece, step: int) -> list[list[Any]]:
    """The chosen token first, then the others the model considered at that step (the chosen one not again)."""
    rows = [[f"step {step + 1}: → {piece.text!r} (chosen)", round(piece.prob, 4)]]
    rows += [[repr(t), round(p, 4)] for t, p, _ in branch_choices(piece)]
    return rows


def first_alternatives(details: list[Piece]) -> Any:
    """After a (re)generation, the table shows step 1, as the explainer does."""
    return alternatives_rows(details[0], 0) if details else []


@dataclass(frozen=True)
class Explained:
    """One step's next-token distribution, from one forward pass, kept in gr.State: the explainer redraws it for
    new settings without running the model again."""

    checkpoint: str | None
    history: list[int]  # the token ids before the step (the penalties read them)
    logits: torch.Tensor  # the model's raw logits for the step
    title: str


@user_errors
def explain(
    checkpoint: str | None,
    prompt: str,
    step: float,
    details: list[Piece],
    request: gr.Request,
    profile: gr.OAuthProfile | None,
    *settings: Any,
) -> tuple[Any, Explained]:
    """The explainer at generated piece `step` (0: the first): one forward pass, kept for the redraws."""
    cfg = sample_config(*settings)  # checked before the model runs
    prompt = text(prompt, "prompt", PROMPT_CHARS)
    at: int = number(step, "step", 0, None, integer=True)
    me = visitor(request, profile)
    loaded = load_checkpoint(checkpoint, me, for_sampling=True)
    details = details or []
    if at >= max(1, len(details)):
        at = 0
    before = [i for p in details[:at] for i in p.ids] + (list(details[at].ids[:-1]) if details else [])
    history = encode_prompt(loaded.tokenizer, prompt) + before
    so_far = (prompt + "".join(p.text for p in details[:at]))[-16:]
    with heavy_slot(me, request):
        logits = next_logits(loaded.model, history)
    cache = Explained(checkpoint, history, logits, f"Step {at + 1}: the token after “{so_far}”")
    return explainer_figure(cache, cfg, loaded.tokenizer), cache


@user_errors
def redraw(cache: Explained | None, request: gr.Request | None, profile: gr.OAuthProfile | None, *settings: Any) -> Any:
    """The explainer again for new settings: no model run, the distribution is the cached one."""
    if not isinstance(cache, Explained):
        return gr.skip()
    try:
        cfg = sample_config(*settings)
    except UserInputError:  # a half-typed value: keep the picture until it is a valid one
        return gr.skip()
    tokenizer = load_checkpoint(cache.checkpoint, visitor(request, profile), for_sampling=True).tokenizer
    return explainer_figure(cache, cfg, tokenizer)


def explainer_figure(cache: Explained, cfg: SampleConfig, tokenizer: Tokenizer) -> Any:
    """The cached step's distribution through the sampler's stages with these settings."""
    step = explain_sampling(cache.logits, cache.history, cfg, tokenizer)
    return charts.sampling_figure(step, cache.title)


# ---- a task model's answer, marked -------------------------------------------------------------------------------

TASK_PROMPT_CHARS = 2_000  # a task's prompt is at most a few hundred symbols
NOT_A_TASK = ("this model learned text, not a task: train one on a task (the Data tab's Task source, or the Train "
              "tab's grokking and sort presets) to have its answers marked")  # fmt: skip


@user_errors
def answer_task(checkpoint: str | None, prompt: str, request: gr.Request, profile: gr.OAuthProfile | None) -> str:
    """A task model's greedy answer to a typed prompt of its task, marked right or wrong (gpt.task_check)."""
    prompt = text(prompt, "task prompt", TASK_PROMPT_CHARS)
    me = visitor(request, profile)
    with heavy_slot(me, request):
        learned = task_lab.checkpoint_task(checkpoint, me)
        loaded = load_checkpoint(checkpoint, me)
        if learned is None or not isinstance(loaded.tokenizer, SymbolTokenizer):
            raise UserInputError(NOT_A_TASK)
        return answered_markdown(answer_prompt(loaded.model, learned.config, loaded.tokenizer, prompt, learned.task))


WHERE = {"val": "a held-out example: never trained on", "train": "an example it trained on",
         None: "not one of the task's examples"}  # fmt: skip


def answered_markdown(a: Answered) -> str:
    """The marked answer in a line: right, or wrong with the right answer."""
    asked = f"`{a.prompt}` → **{a.model_answer}**"
    if a.correct:
        return f"✓ **Right:** {asked} ({WHERE[a.split]})"  # (✓ and ✗: in every font, unlike the emoji)
    return f"✗ **Wrong:** {asked}; the answer is **{a.answer}** ({WHERE[a.split]})"


def task_box_update(checkpoint: str | None, request: gr.Request, profile: gr.OAuthProfile | None) -> tuple[Any, ...]:
    """The task box follows the chosen model: shown for a task model, with its first held-out prompt and the form of
    its prompts; hidden for a text model."""
    try:
        me = visitor(request, profile)
        learned = task_lab.checkpoint_task(checkpoint, me)
        suggested = model_text(checkpoint, me) if learned is not None else ""
    except UserInputError:
        learned, suggested = None, ""
    if learned is None:
        return gr.update(visible=False), gr.skip(), ""
    form = f"A prompt of its task ({learned.config.name}) is {prompt_form(learned.config)}."
    return gr.update(visible=True), gr.update(value=suggested, info=form), ""


@dataclass
class TaskAsk:
    """The left column's box for a task model: a prompt of its task, its answer marked."""

    box: gr.Group
    prompt: gr.Textbox
    ask: gr.Button
    result: gr.Markdown


def task_ask() -> TaskAsk:
    with gr.Group(visible=False, elem_id="task-ask") as box:
        prompt = gr.Textbox(label="Ask the task model (Enter)", max_length=TASK_PROMPT_CHARS)
        ask = gr.Button("Answer", size="md")
        result = gr.Markdown(padding=True)
    return TaskAsk(box, prompt, ask, result)


def _wire_task(c: Controls) -> None:
    t = c.task
    io = dict(fn=answer_task, inputs=[c.checkpoint, t.prompt], outputs=t.result, show_progress="hidden", **MODEL)
    t.ask.click(**io, api_name="task_answer")
    t.prompt.submit(**io, api_visibility="private")
    c.checkpoint.change(task_box_update, c.checkpoint, [t.box, t.prompt, t.result], **QUIET)


# ---- layout and wiring -------------------------------------------------------------------------------------------


@dataclass
class Controls:
    """The left column: the model, the prompt, the sampling settings."""

    checkpoint: gr.Dropdown
    refresh: gr.Button
    prompt: gr.Textbox
    go: gr.Button
    settings: list[gr.Slider | gr.Textbox | gr.Number]  # in SETTINGS' order, the /generate API's
    task: TaskAsk  # a task model's marked answers (shown for one)


@dataclass
class Output:
    """The right column: the text, the alternatives at a step (to branch from), the sampler's explainer; and what
    the page keeps between events."""

    text: gr.HighlightedText
    plain: gr.Textbox
    alternatives: gr.Dataframe
    go_branch: gr.Button
    back: gr.Button
    explainer: gr.Plot
    details: gr.State  # the generated pieces (list[Piece])
    step: gr.Number  # the step the table and the explainer show
    row: gr.Number  # the alternatives table's row clicked (0: the token the model chose)
    original: gr.State  # the pieces before the first branch, or None
    cache: gr.State  # the explained step (Explained), or None

    @property
    def generated(self) -> list[Any]:
        """What a generation writes (`outputs_of`'s values)."""
        return [self.text, self.plain, self.details]


# A bad input shows its message and leaves the last good output in place (Gradio's progress tracker would cover the
# outputs with "Error" badges): the streaming text is the progress.
QUIET: dict[str, Any] = dict(api_visibility="private", show_progress="hidden")


def controls_column() -> Controls:
    with gr.Row():
        checkpoint = gr.Dropdown(label="Checkpoint", choices=[], allow_custom_value=True, scale=4)
        refresh = gr.Button("Refresh", size="sm", scale=0, min_width=80)
    prompt = gr.Textbox(label="Prompt", value=DEFAULT_PROMPTS[0], lines=2)
    go = gr.Button("Generate", variant="primary")
    task = task_ask()
    settings = [setting_control(f) for f in SETTINGS if not f.metadata["more"]]
    with gr.Accordion("More", open=False):  # (SampleConfig lists these last)
        settings += [setting_control(f) for f in SETTINGS if f.metadata["more"]]
    pretrained_row(checkpoint, api_name="import_pretrained")
    return Controls(checkpoint, refresh, prompt, go, settings, task)


def output_column() -> Output:
    text_out = gr.HighlightedText(
        label="Output, coloured by the model's probability of each token (click a token for alternatives)",
        color_map=COLOURS,
        show_legend=True,
        show_inline_category=False,
        combine_adjacent=False,
        elem_id="generated",
    )
    plain = gr.Textbox(label="Plain text", lines=4, buttons=["copy"])
    alternatives = gr.Dataframe(headers=["token", "probability"], label="Alternatives at the chosen step "
                                "(click one to branch from it)", interactive=False)  # fmt: skip
    with gr.Row():
        go_branch = gr.Button("Continue with this alternative", size="sm", interactive=False)
        back = gr.Button("Back to the original", size="sm", interactive=False)
    explainer = gr.Plot(label="How sampling reshapes the next-token distribution", show_label=False)
    gr.Markdown(
        "<small>The bars come from the sampler's own code: the model's probabilities, after the penalties and "
        "the temperature, and after the top-k / top-p / min-p filters. Moving a slider redraws them at once; "
        "click a generated token to see its step.</small>"
    )
    return Output(text_out, plain, alternatives, go_branch, back, explainer, details=gr.State([]),
                  step=gr.Number(0, visible=False), row=gr.Number(0, visible=False), original=gr.State(None),
                  cache=gr.State(None))  # fmt: skip


def _explain_io(c: Controls, out: Output) -> tuple[list[Any], list[Any]]:
    """The explainer's inputs (the text so far, the step shown, the settings) and outputs (the figure, its cache)."""
    return [c.checkpoint, c.prompt, out.step, out.details, *c.settings], [out.explainer, out.cache]


def _then_show_step(event: Any, c: Controls, out: Output) -> Any:
    """After a (re)generation: the alternatives and the explainer at step 1."""
    event = event.success(first_alternatives, out.details, out.alternatives, queue=False, **QUIET)
    event = event.success(lambda: 0, None, out.step, api_visibility="private", queue=False)
    return event.success(explain, *_explain_io(c, out), **QUIET, **MODEL)


def _wire_generation(c: Controls, out: Output) -> None:
    """Generate, live tuning (releasing a slider generates again with the same seed), the explainer and the
    alternatives of a clicked token."""
    explain_io = _explain_io(c, out)
    # for API clients (registered first, so it gets the name): the explainer at a step of this session's last text
    gr.Button(visible=False).click(explain, *explain_io, api_name="explain", **MODEL)
    gen_inputs = [c.checkpoint, c.prompt, *c.settings]
    run = c.go.click(generate, gen_inputs, out.generated, api_name="generate", show_progress="hidden", **MODEL)
    sliders = [s for s in c.settings if isinstance(s, gr.Slider)]
    releases = [s.release for s in sliders]
    tuned = gr.on(releases, generate, gen_inputs, out.generated, trigger_mode="always_last", **QUIET, **MODEL)
    for event in (run, tuned):  # a new text: nothing to go back to
        shown_step = _then_show_step(event, c, out)
        shown_step.success(lambda: (None, gr.update(interactive=False)), None, [out.original, out.back], **QUIET)
    # the explainer redraws as a setting moves: the distribution is cached
    gr.on([s.change for s in c.settings], redraw, [out.cache, *c.settings], out.explainer, trigger_mode="always_last",
          **QUIET)  # fmt: skip
    # the branch button goes off with the new table, before the explainer: a pick made while the explainer runs stays
    out.text.select(show_alternatives, [out.details, c.prompt], [out.alternatives, out.step], **QUIET).then(
        lambda: (0, gr.update(interactive=False)), None, [out.row, out.go_branch], **QUIET
    ).then(explain, *explain_io, **QUIET, **MODEL)


def _wire_branching(c: Controls, out: Output) -> None:
    """Click an alternative, continue from it; the output before the first branch can be brought back."""
    out.alternatives.select(pick_row, None, [out.row, out.go_branch], **QUIET)
    branched = out.go_branch.click(branch, [c.checkpoint, c.prompt, out.details, out.step, out.row, out.original,
                                   *c.settings], [*out.generated, out.original], api_name="branch",
                                   show_progress="hidden", **MODEL)  # fmt: skip
    restored = out.back.click(back_to_original, [c.prompt, out.original], [*out.generated, out.original],
                              api_name="back_to_original", show_progress="hidden")  # fmt: skip
    for event in (branched, restored):
        event = event.success(lambda kept: gr.update(interactive=bool(kept)), out.original, out.back, **QUIET)
        _then_show_step(event, c, out)


def build(demo: gr.Blocks, state: gr.State, tab: gr.Tab, ready: Any) -> None:
    with gr.Row():
        # the prompt and Generate first: the button and the start of the output fit a laptop's screen
        with gr.Column(scale=1, min_width=300, elem_id="generate-settings"):
            c = controls_column()
        with gr.Column(scale=2):
            out = output_column()
    _wire_generation(c, out)
    _wire_branching(c, out)
    _wire_task(c)
    for trigger in (c.refresh.click, tab.select, ready.then):
        trigger(checkpoint_dropdown_update, [c.checkpoint, state], c.checkpoint, api_visibility="private")
    suggested = gr.State("")  # the prompt last suggested: a prompt box still showing it follows the model chosen
    c.checkpoint.change(suggested_prompt, [c.checkpoint, c.prompt, suggested], [c.prompt, suggested], **QUIET)
