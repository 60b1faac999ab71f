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
from playground.hosting import visitor
from playground.inputs import number, text
from playground.settings import LIMITS

# Probability buckets, coloured from confident (green) to surprising (red).
BUCKETS = [(0.5, "p ≥ 0.5"), (0.2, "0.2–0.5"), (0.05, "0.05–0.2"), (0.0, "p < 0.05")]
COLOURS = {"p ≥ 0.5": "#b7e4c7", "0.2–0.5": "#fff3b0", "0.05–0.2": "#ffd6a5", "p < 0.05": "#ffadad"}
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


@user_errors
def generate(
    checkpoint: str | None, prompt: str, request: gr.Request, profile: gr.OAuthProfile | None, *settings: Any
) -> Iterator[tuple[list[tuple[str, str | None]], str, list[dict[str, Any]]]]:
    """Stream (highlighted tokens, plain text, per-token details); the prompt is shown uncoloured first."""
    cfg = sample_config(*settings)
    prompt = text(prompt, "prompt", PROMPT_CHARS)
    loaded = load_checkpoint(checkpoint, visitor(request, profile), for_sampling=True)
    pieces: list[tuple[str, str | None]] = [(prompt, None)] if prompt else []
    details: list[dict[str, Any]] = []
    plain = ""
    last = 0.0
    ids: list[int] = []  # token ids of the piece being completed (a UTF-8 character may take several tokens)
    for tok in stream(loaded.model, loaded.tokenizer, prompt or "", cfg):
        if tok.alternatives:  # (the last piece, text held back for a stop string, repeats the last id)
            ids.append(tok.id)
        if not tok.text:
            continue
        pieces.append((tok.text, bucket(tok.prob)))
        details.append({"text": tok.text, "prob": tok.prob, "alternatives": tok.alternatives, "ids": ids})
        ids = []
        plain += tok.text
        if time.perf_counter() - last >= REFRESH_S:
            last = time.perf_counter()
            yield pieces, plain, details
    yield pieces, plain, details


def show_alternatives(details: list[dict[str, Any]], prompt: str, evt: gr.SelectData) -> tuple[list[list[Any]], Any]:
    """Clicking a generated token shows what else the model considered at that step, and moves the explainer there."""
    index = evt.index - (1 if prompt else 0)
    if not 0 <= index < len(details):
        return [], gr.skip()
    d = details[index]
    rows = [[f"→ {d['text']!r} (chosen)", round(d["prob"], 4)]]
    rows += [[repr(t), round(p, 4)] for t, p in d["alternatives"]]
    return rows, index


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
    loaded = load_checkpoint(checkpoint, visitor(request, profile), for_sampling=True)
    details = details or []
    if at >= max(1, len(details)):
        at = 0
    before = [i for d in details[:at] for i in d["ids"]] + (details[at]["ids"][:-1] if details else [])
    history = encode_prompt(loaded.tokenizer, prompt) + before
    shown = (prompt + "".join(d["text"] for d in details[:at]))[-16:]
    cache = {"checkpoint": checkpoint, "history": history, "logits": next_logits(loaded.model, history),
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


def build(demo: gr.Blocks, state: gr.State, tab: gr.Tab) -> None:
    with gr.Row():
        with gr.Column(scale=1, min_width=300, elem_id="generate-settings"):
            checkpoint = gr.Dropdown(label="Checkpoint", choices=[], allow_custom_value=True)
            refresh = gr.Button("Refresh checkpoints", size="sm")
            pretrained_row(checkpoint, api_name="import_pretrained")
            prompt = gr.Textbox(label="Prompt", value="ROMEO:", lines=3)
            settings = [setting_control(f) for f in SETTINGS if not f.metadata["more"]]
            with gr.Accordion("More", open=False):
                settings += [setting_control(f) for f in SETTINGS if f.metadata["more"]]
            go = gr.Button("Generate", variant="primary")
        with gr.Column(scale=2):
            output = gr.HighlightedText(
                label="Output, coloured by the model's probability of each token (click a token for alternatives)",
                color_map=COLOURS,
                show_legend=True,
                show_inline_category=False,
                combine_adjacent=False,
                elem_id="generated",
            )
            plain = gr.Textbox(label="Plain text", lines=6, buttons=["copy"])
            alternatives = gr.Dataframe(headers=["token", "probability"], label="Alternatives at the chosen step")
            explainer = gr.Plot(label="How sampling reshapes the next-token distribution", show_label=False)
            gr.Markdown(
                "<small>The bars come from the sampler's own code: the model's probabilities, after the penalties and "
                "the temperature, and after the top-k / top-p / min-p filters. Moving a slider redraws them at once; "
                "click a generated token to see its step.</small>"
            )
    details = gr.State([])
    step = gr.Number(0, visible=False)
    cache = gr.State(None)
    outputs = [output, plain, details]
    explain_inputs = [checkpoint, prompt, step, details, *settings]
    # for API clients (registered first, so it gets the name): the explainer at a step of this session's last text
    gr.Button(visible=False).click(explain, explain_inputs, [explainer, cache], api_name="explain")
    first_step = dict(fn=lambda: 0, outputs=step, api_visibility="private", queue=False)
    go.click(generate, [checkpoint, prompt, *settings], outputs, api_name="generate").then(**first_step).then(
        explain, explain_inputs, [explainer, cache], api_visibility="private"
    )
    for slider in [c for c in settings if isinstance(c, gr.Slider)]:
        # live tuning: releasing a slider re-generates with the same seed (and the explainer follows)
        slider.release(
            generate, [checkpoint, prompt, *settings], outputs, api_visibility="private", trigger_mode="always_last"
        ).then(**first_step).then(explain, explain_inputs, [explainer, cache], api_visibility="private")
    for control in settings:  # the explainer redraws as a setting moves: the distribution is cached
        control.change(redraw, [cache, *settings], explainer, api_visibility="private", trigger_mode="always_last",
                       show_progress="hidden")  # fmt: skip
    output.select(show_alternatives, [details, prompt], [alternatives, step], api_visibility="private").then(
        explain, explain_inputs, [explainer, cache], api_visibility="private"
    )
    for trigger in (refresh.click, tab.select, demo.load):
        trigger(checkpoint_dropdown_update, [checkpoint, state], checkpoint, api_visibility="private")
