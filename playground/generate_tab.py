"""The Generate tab: stream text from a checkpoint, tune sampling live, see each token's probability."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import gradio as gr

from gpt.config import SampleConfig
from gpt.errors import UserInputError
from gpt.sampling import stream
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


def sample_config(
    temperature: float,
    top_k: float,
    top_p: float,
    repetition_penalty: float,
    min_p: float,
    max_new_tokens: float,
    seed: float | None,
    presence: float,
    frequency: float,
    stop: str,
) -> SampleConfig:
    n = number(max_new_tokens, "max_new_tokens", 1, None, integer=True)
    if n > LIMITS.max_new_tokens:
        raise UserInputError(f"at most {LIMITS.max_new_tokens} new tokens on this server")
    cfg = SampleConfig(
        max_new_tokens=n,
        temperature=number(temperature, "temperature"),
        top_k=number(top_k, "top_k", integer=True),
        top_p=number(top_p, "top_p"),
        min_p=number(min_p, "min_p"),
        repetition_penalty=number(repetition_penalty, "repetition_penalty"),
        presence_penalty=number(presence, "presence_penalty"),
        frequency_penalty=number(frequency, "frequency_penalty"),
        seed=None if seed is None or seed == "" else number(seed, "seed", 0, 2**63 - 1, integer=True),
        stop=[s for s in text(stop, "stop text", 1000).split("|") if s],
    )
    cfg.validate()
    return cfg


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
    for tok in stream(loaded.model, loaded.tokenizer, prompt or "", cfg):
        if not tok.text:
            continue
        pieces.append((tok.text, bucket(tok.prob)))
        details.append({"text": tok.text, "prob": tok.prob, "alternatives": tok.alternatives})
        plain += tok.text
        if time.perf_counter() - last >= REFRESH_S:
            last = time.perf_counter()
            yield pieces, plain, details
    yield pieces, plain, details


def show_alternatives(details: list[dict[str, Any]], prompt: str, evt: gr.SelectData) -> list[list[Any]]:
    """Clicking a generated token shows what else the model considered at that step."""
    index = evt.index - (1 if prompt else 0)
    if not 0 <= index < len(details):
        return []
    d = details[index]
    rows = [[f"→ {d['text']!r} (chosen)", round(d["prob"], 4)]]
    rows += [[repr(t), round(p, 4)] for t, p in d["alternatives"]]
    return rows


def build(demo: gr.Blocks, state: gr.State, tab: gr.Tab) -> None:
    with gr.Row():
        with gr.Column(scale=1, min_width=300):
            checkpoint = gr.Dropdown(label="Checkpoint", choices=[], allow_custom_value=True)
            refresh = gr.Button("Refresh checkpoints", size="sm")
            pretrained_row(checkpoint, api_name="import_pretrained")
            prompt = gr.Textbox(label="Prompt", value="ROMEO:", lines=3)
            temperature = gr.Slider(0.0, 2.0, value=0.8, step=0.05, label="Temperature (0 = greedy)")
            top_k = gr.Slider(0, 200, value=40, step=1, label="Top-k (0 = off)")
            top_p = gr.Slider(0.05, 1.0, value=1.0, step=0.05, label="Top-p")
            repetition = gr.Slider(1.0, 2.0, value=1.0, step=0.05, label="Repetition penalty")
            min_p = gr.Slider(0.0, 1.0, value=0.0, step=0.01, label="Min-p (1 = greedy)")
            max_new = gr.Slider(1, LIMITS.max_new_tokens, value=200, step=1, label="Max new tokens")
            seed = gr.Number(value=42, precision=0, label="Seed (same seed: same text)")
            with gr.Accordion("More", open=False):
                presence = gr.Slider(-2.0, 2.0, value=0.0, step=0.1, label="Presence penalty")
                frequency = gr.Slider(-2.0, 2.0, value=0.0, step=0.1, label="Frequency penalty")
                stop = gr.Textbox(label="Stop text (separate several with |)")
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
    details = gr.State([])
    settings = [temperature, top_k, top_p, repetition, min_p, max_new, seed, presence, frequency, stop]
    outputs = [output, plain, details]
    go.click(generate, [checkpoint, prompt, *settings], outputs, api_name="generate")
    for slider in [temperature, top_k, top_p, repetition, min_p, max_new, presence, frequency]:
        # live tuning: releasing a slider re-generates with the same seed
        slider.release(
            generate, [checkpoint, prompt, *settings], outputs, api_visibility="private", trigger_mode="always_last"
        )
    output.select(show_alternatives, [details, prompt], alternatives, api_visibility="private")
    for trigger in (refresh.click, tab.select, demo.load):
        trigger(checkpoint_dropdown_update, [checkpoint, state], checkpoint, api_visibility="private")
