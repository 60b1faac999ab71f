"""The Generate tab: stream text from a checkpoint, tune sampling live, see each token's probability."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import Field, fields
from typing import Any

import gradio as gr

from gpt.config import SampleConfig
from gpt.errors import UserInputError
from gpt.inspect import explain_sampling, next_logits
from gpt.sampling import encode_prompt, stream
from gpt.tokenizer import Tokenizer
from playground import charts
from playground.common import checkpoint_dropdown_update, load_checkpoint, pretrained_row, user_errors
from playground.hosting import heavy_slot, visitor
from playground.inputs import number, text
from playground.settings import LIMITS

# Probability buckets, coloured from confident (green) to surprising (red).
BUCKETS = [(0.5, "p ≥ 0.5"), (0.2, "0.2–0.5"), (0.05, "0.05–0.2"), (0.0, "p < 0.05")]
BRANCH = "↳ your choice"  # the category of a token the visitor chose in place of the model's (a branch point)
COLOURS = {"p ≥ 0.5": "#b7e4c7", "0.2–0.5": "#fff3b0", "0.05–0.2": "#ffd6a5", "p < 0.05": "#ffadad", BRANCH: "#a0c4ff"}
REFRESH_S = 0.05  # stream at most ~20 UI updates per second
PROMPT_CHARS = 100_000  # far more than any context holds; only its last tokens are used
DEFAULT_PROMPTS = ("ROMEO:", "ROMEO:\nBut soft, what light")  # before a model is chosen (the built-in corpus)


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


@user_errors
def generate(
    checkpoint: str | None, prompt: str, request: gr.Request, profile: gr.OAuthProfile | None, *settings: Any
) -> Iterator[tuple[list[tuple[str, str | None]], str, list[dict[str, Any]]]]:
    """Stream (highlighted tokens, plain text, per-token details); the prompt is shown uncoloured first."""
    cfg = sample_config(*settings)
    prompt = text(prompt, "prompt", PROMPT_CHARS)
    me = visitor(request, profile)
    with heavy_slot(me, request):
        yield from _generate(load_checkpoint(checkpoint, me, for_sampling=True), prompt, cfg, prompt)


def _generate(
    loaded: Any, prompt: str | list[int], cfg: SampleConfig, shown: str = "", before: Any = None
) -> Iterator[tuple[list[tuple[str, str | None]], str, list[dict[str, Any]]]]:
    """Stream the continuation of `prompt` (text, or token ids) as (pieces, plain text, details). `shown` is the prompt
    as the output starts with it; `before`: the (pieces, details) that stand before the continuation (a branch's)."""
    pieces: list[tuple[str, str | None]] = [(shown, None)] if shown else []
    details: list[dict[str, Any]] = []
    if before is not None:
        pieces, details = pieces + before[0], list(before[1])
    plain = "".join(d["text"] for d in details)
    last = 0.0
    ids: list[int] = []  # token ids of the piece being completed (a UTF-8 character may take several tokens)
    for tok in stream(loaded.model, loaded.tokenizer, prompt or "", cfg):
        if tok.alternatives:  # (the last piece, text held back for a stop string, repeats the last id)
            ids.append(tok.id)
        if not tok.text:
            continue
        pieces.append((tok.text, bucket(tok.prob)))
        details.append({"text": tok.text, "prob": tok.prob, "alternatives": tok.alternatives,
                        "alternative_ids": tok.alternative_ids, "ids": ids})  # fmt: skip
        ids = []
        plain += tok.text
        if time.perf_counter() - last >= REFRESH_S:
            last = time.perf_counter()
            yield pieces, plain, details
    yield pieces, plain, details


def branch_choices(d: dict[str, Any]) -> list[tuple[str, float, int | None]]:
    """The other tokens the model considered at one step (not the one shown there), in the alternatives table's
    order, its rows after the first: (text, probability, token id, None where unknown). A visitor branches to one."""
    ids = d.get("alternative_ids") or [None] * len(d["alternatives"])
    return [(t, p, i) for (t, p), i in zip(d["alternatives"], ids, strict=False) if t != d["text"]]


def branch(
    checkpoint: str | None, prompt: str, details: Any, step: Any, row: Any, original: Any, request: gr.Request,
    profile: gr.OAuthProfile | None, *settings: Any,
) -> Iterator[tuple[Any, Any, Any, Any]]:  # fmt: skip
    """Continue from a step with one of its alternatives in place of the token the model picked: the text up to that
    step, the chosen token (marked), then the model's continuation with the current settings. The output before the
    first branch is kept, for "Back to the original"."""
    cfg = sample_config(*settings)
    prompt = text(prompt, "prompt", PROMPT_CHARS)
    step = number(step, "step", 0, None, integer=True)
    row = number(row, "alternative", 1, None, integer=True)
    if not isinstance(details, list) or step >= len(details) or not isinstance(details[step], dict):
        raise UserInputError("generate some text first, then click one of its tokens")
    choices = branch_choices(details[step])
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
        earlier = list(details[step].get("ids") or [])[:-1]
        ids = encode_prompt(loaded.tokenizer, prompt) + [i for d in kept for i in d["ids"]] + earlier + [chosen_id]
        mark = {**details[step], "text": chosen_text, "prob": chosen_prob, "ids": [*earlier, chosen_id], "branch": True}
        marked = [*kept, mark]
        keep = original or (pieces_of("", details), "".join(d["text"] for d in details), details)
        for pieces, plain, new in _generate(loaded, ids, cfg, prompt, (pieces_of("", marked), marked)):
            yield pieces, plain, new, keep


def pieces_of(prompt: str, details: list[dict[str, Any]]) -> list[tuple[str, str | None]]:
    """The output's coloured pieces for these tokens (after the prompt, uncoloured): a chosen token marked."""
    pieces: list[tuple[str, str | None]] = [(prompt, None)] if prompt else []
    return pieces + [(d["text"], BRANCH if d.get("branch") else bucket(float(d["prob"]))) for d in details]


def back_to_original(prompt: Any, original: Any) -> tuple[Any, Any, Any, Any]:
    """The output as it was before the first branch (the prompt, uncoloured, first)."""
    if not isinstance(original, tuple | list) or len(original) != 3:
        return gr.skip(), gr.skip(), gr.skip(), gr.skip()
    pieces, plain, details = original
    shown = [(prompt, None)] if isinstance(prompt, str) and prompt else []
    return shown + list(pieces), plain, details, None


@user_errors
def show_alternatives(details: Any, prompt: Any, evt: gr.SelectData) -> tuple[Any, Any]:
    """Clicking a generated token shows what else the model considered at that step, and moves the explainer there.
    (The page sends the click; a crafted call may send anything, which changes nothing.)"""
    index = getattr(evt, "index", None)
    if isinstance(index, list | tuple) and index:  # Gradio sends [i] for some components
        index = index[0]
    if isinstance(index, bool) or not isinstance(index, int) or not isinstance(details, list):
        return gr.skip(), gr.skip()
    index -= 1 if prompt else 0
    if not 0 <= index < len(details) or not isinstance(details[index], dict):
        return gr.skip(), gr.skip()
    return alternatives_rows(details[index], index), index


def pick_row(evt: gr.SelectData) -> tuple[Any, Any]:
    """A click on the alternatives table: which row, and whether it can be branched to (not the chosen token's)."""
    index = getattr(evt, "index", None)
    r = index[0] if isinstance(index, list | tuple) and index else index
    if isinstance(r, bool) or not isinstance(r, int) or r < 0:
        return gr.skip(), gr.skip()
    return r, gr.update(interactive=r > 0)


def alternatives_rows(d: dict[str, Any], step: int) -> list[list[Any]]:
    """The chosen token first, then the others the model considered at that step (the chosen one not again)."""
    rows = [[f"step {step + 1}: → {d['text']!r} (chosen)", round(float(d["prob"]), 4)]]
    rows += [[repr(t), round(float(p), 4)] for t, p, _ in branch_choices(d)]
    return rows


def first_alternatives(details: list[dict[str, Any]]) -> Any:
    """After a (re)generation, the table shows step 1, as the explainer does."""
    return alternatives_rows(details[0], 0) if details else []


def suggested_prompt(checkpoint: str | None, current: str, suggested: str, request: gr.Request,
                     profile: gr.OAuthProfile | None, lines: int = 1) -> tuple[Any, str]:  # fmt: skip
    """A prompt from the chosen model's own training text (its first line), unless the visitor typed their own."""
    from playground.common import model_text

    if current and current != suggested and current not in DEFAULT_PROMPTS:
        return gr.skip(), suggested
    try:
        new = model_text(checkpoint, visitor(request, profile), lines)
    except UserInputError:
        return gr.skip(), suggested
    if not new:
        return gr.skip(), suggested
    return new, new


@user_errors
def explain(
    checkpoint: str | None,
    prompt: str,
    step: float,
    details: list[dict[str, Any]],
    request: gr.Request,
    profile: gr.OAuthProfile | None,
    *settings: Any,
) -> tuple[Any, dict[str, Any]]:
    """The explainer at generated piece `step` (0: the first): one forward pass, kept for the redraws."""
    cfg = sample_config(*settings)  # checked before the model runs
    prompt = text(prompt, "prompt", PROMPT_CHARS)
    at: int = number(step, "step", 0, None, integer=True)
    me = visitor(request, profile)
    loaded = load_checkpoint(checkpoint, me, for_sampling=True)
    details = details or []
    if at >= max(1, len(details)):
        at = 0
    before = [i for d in details[:at] for i in d["ids"]] + (details[at]["ids"][:-1] if details else [])
    history = encode_prompt(loaded.tokenizer, prompt) + before
    shown = (prompt + "".join(d["text"] for d in details[:at]))[-16:]
    with heavy_slot(me, request):
        logits = next_logits(loaded.model, history)
    cache = {"checkpoint": checkpoint, "history": history, "logits": logits,
             "title": f"Step {at + 1}: the token after “{shown}”"}  # fmt: skip
    return explainer_figure(cache, cfg, loaded.tokenizer), cache


@user_errors
def redraw(
    cache: dict[str, Any] | None, request: gr.Request | None, profile: gr.OAuthProfile | None, *settings: Any
) -> Any:
    """The explainer again for new settings: no model run, the distribution is the cached one."""
    if not cache:
        return gr.skip()
    try:
        cfg = sample_config(*settings)
    except UserInputError:  # a half-typed value: keep the picture until it is a valid one
        return gr.skip()
    tokenizer = load_checkpoint(cache["checkpoint"], visitor(request, profile), for_sampling=True).tokenizer
    return explainer_figure(cache, cfg, tokenizer)


def explainer_figure(cache: dict[str, Any], cfg: SampleConfig, tokenizer: Tokenizer) -> Any:
    """The cached step's distribution through the sampler's stages with these settings."""
    step = explain_sampling(cache["logits"], cache["history"], cfg, tokenizer)
    return charts.sampling_figure(step, cache["title"])


def build(demo: gr.Blocks, state: gr.State, tab: gr.Tab, ready: Any) -> None:
    with gr.Row():
        # the prompt and Generate first: the button and the start of the output fit a laptop's screen
        with gr.Column(scale=1, min_width=300, elem_id="generate-settings"):
            with gr.Row():
                checkpoint = gr.Dropdown(label="Checkpoint", choices=[], allow_custom_value=True, scale=4)
                refresh = gr.Button("Refresh", size="sm", scale=0, min_width=80)
            prompt = gr.Textbox(label="Prompt", value=DEFAULT_PROMPTS[0], lines=2)
            go = gr.Button("Generate", variant="primary")
            settings = [setting_control(f) for f in SETTINGS if not f.metadata["more"]]
            with gr.Accordion("More", open=False):
                settings += [setting_control(f) for f in SETTINGS if f.metadata["more"]]
            pretrained_row(checkpoint, api_name="import_pretrained")
        with gr.Column(scale=2):
            output = gr.HighlightedText(
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
    details = gr.State([])
    step = gr.Number(0, visible=False)
    row = gr.Number(0, visible=False)  # the alternatives table's row clicked (0: the token the model chose)
    original = gr.State(None)  # the output before the first branch: (pieces, plain, details)
    cache = gr.State(None)
    suggested = gr.State("")
    outputs = [output, plain, details]
    explain_inputs = [checkpoint, prompt, step, details, *settings]
    # A bad input shows its message and leaves the last good output in place (Gradio's progress tracker would cover
    # the outputs with "Error" badges): the streaming text is the progress.
    quiet: dict[str, Any] = dict(api_visibility="private", show_progress="hidden")
    # for API clients (registered first, so it gets the name): the explainer at a step of this session's last text
    gr.Button(visible=False).click(explain, explain_inputs, [explainer, cache], api_name="explain")
    first_step: dict[str, Any] = dict(fn=lambda: 0, outputs=step, api_visibility="private", queue=False)
    after: list[dict[str, Any]] = [
        dict(fn=first_alternatives, inputs=details, outputs=alternatives, queue=False, **quiet),
        first_step,
        dict(fn=explain, inputs=explain_inputs, outputs=[explainer, cache], **quiet),
    ]
    run = go.click(generate, [checkpoint, prompt, *settings], outputs, api_name="generate", show_progress="hidden")
    for slider in [c for c in settings if isinstance(c, gr.Slider)]:
        # live tuning: releasing a slider re-generates with the same seed (and the explainer follows)
        slider_run = slider.release(generate, [checkpoint, prompt, *settings], outputs, trigger_mode="always_last",
                                    **quiet)  # fmt: skip
        for then in after:
            slider_run = slider_run.success(**then)
        slider_run.success(lambda: (None, gr.update(interactive=False)), None, [original, back], **quiet)
    for then in after:
        run = run.success(**then)
    for control in settings:  # the explainer redraws as a setting moves: the distribution is cached
        control.change(redraw, [cache, *settings], explainer, trigger_mode="always_last", **quiet)
    output.select(show_alternatives, [details, prompt], [alternatives, step], **quiet).then(
        explain, explain_inputs, [explainer, cache], **quiet
    ).then(lambda: (0, gr.update(interactive=False)), None, [row, go_branch], **quiet)
    # branching: click an alternative, continue from it; the output before the first branch can be brought back
    alternatives.select(pick_row, None, [row, go_branch], **quiet)
    branched = go_branch.click(branch, [checkpoint, prompt, details, step, row, original, *settings],
                               [*outputs, original], api_name="branch", show_progress="hidden")  # fmt: skip
    restored = back.click(back_to_original, [prompt, original], [*outputs, original], api_name="back_to_original",
                          show_progress="hidden")  # fmt: skip
    for chain in (branched, restored):
        chain = chain.success(lambda kept: gr.update(interactive=bool(kept)), original, back, **quiet)
        for then in after:
            chain = chain.success(**then)
    run.success(lambda: (None, gr.update(interactive=False)), None, [original, back], **quiet)
    for trigger in (refresh.click, tab.select, ready.then):
        trigger(checkpoint_dropdown_update, [checkpoint, state], checkpoint, api_visibility="private")
    checkpoint.change(suggested_prompt, [checkpoint, prompt, suggested], [prompt, suggested], **quiet)
