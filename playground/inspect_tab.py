"""The Inspect tab: attention heatmaps, next-token probabilities, the logit lens, embeddings, parameter counts."""

from __future__ import annotations

from typing import Any

import gradio as gr

from gpt import checkpoint as ckpt
from gpt.config import Config, recipe_summary
from gpt.errors import UserInputError
from gpt.inspect import analyse, embedding_projection, parameter_table
from playground import charts
from playground.common import checkpoint_dropdown_update, load_checkpoint, pretrained_row, user_errors
from playground.generate_tab import DEFAULT_PROMPTS, suggested_prompt
from playground.hosting import heavy_slot, visitor
from playground.inputs import number, text

PROMPT_CHARS = 100_000  # only the last tokens are inspected (gpt.inspect.MAX_TOKENS)


@user_errors
def inspect_prompt(
    checkpoint: str | None,
    prompt: str,
    layer: float,
    head: float,
    words: str,
    request: gr.Request,
    profile: gr.OAuthProfile | None,
) -> tuple[Any, ...]:
    prompt, words = text(prompt, "prompt", PROMPT_CHARS), text(words, "tokens to project", PROMPT_CHARS)
    layer_n, head_n = number(layer, "layer", 1, None, integer=True), number(head, "head", 1, None, integer=True)
    me = visitor(request, profile)
    loaded = load_checkpoint(checkpoint, me)
    mc = loaded.config.model
    layer_i, head_i = min(layer_n, mc.n_layer) - 1, min(head_n, mc.n_head) - 1
    with heavy_slot(me, request):
        a = analyse(loaded.model, loaded.tokenizer, prompt)
    if a.dropped:
        gr.Info(f"Showing the last {len(a.token_ids)} tokens of the prompt ({a.dropped:,} before them are left out).")
    params = [[r["module"], r["parameters"], r["share"]] for r in parameter_table(loaded.model)]
    return (
        charts.attention_figure(a, layer_i, head_i),
        charts.heads_grid_figure(a, layer_i),
        charts.next_token_figure(a),
        charts.logit_lens_figure(a),
        params,
        charts.embedding_figure(embedding_projection(loaded.model, loaded.tokenizer, words)),
        slider_update(mc.n_layer, layer_i + 1),
        slider_update(mc.n_head, head_i + 1),
        f"**The model's recipe:** {recipe_summary(mc)}",
    )


def slider_update(count: int, value: int) -> dict[str, Any]:
    """A 1..count slider; with one layer (or head) there is nothing to choose, and a slider needs max > min."""
    return gr.update(maximum=max(count, 2), value=value, interactive=count > 1)


@user_errors
def model_ranges(checkpoint: str | None, request: gr.Request, profile: gr.OAuthProfile | None) -> tuple[Any, Any]:
    """The Layer and Head sliders follow the chosen model as soon as it is chosen."""
    if not checkpoint:
        return gr.skip(), gr.skip()
    try:
        mc = Config.from_dict(
            ckpt.read_meta(ckpt.resolve(visitor(request, profile).resolve(checkpoint)))["config"]
        ).model
    except UserInputError:
        return gr.skip(), gr.skip()
    return slider_update(mc.n_layer, 1), slider_update(mc.n_head, 1)


def two_line_prompt(
    checkpoint: str | None, current: str, suggested: str, request: gr.Request, profile: gr.OAuthProfile | None
) -> tuple[Any, str]:
    return suggested_prompt(checkpoint, current, suggested, request, profile, lines=2)


@user_errors
def project_embeddings(checkpoint: str | None, words: str, request: gr.Request, profile: gr.OAuthProfile | None) -> Any:
    words = text(words, "tokens to project", PROMPT_CHARS)
    loaded = load_checkpoint(checkpoint, visitor(request, profile))
    return charts.embedding_figure(embedding_projection(loaded.model, loaded.tokenizer, words))


def build(demo: gr.Blocks, state: gr.State, tab: gr.Tab, ready: Any) -> None:
    with gr.Row():
        checkpoint = gr.Dropdown(label="Checkpoint", choices=[], allow_custom_value=True, scale=3)
        refresh = gr.Button("Refresh", scale=1)
    pretrained_row(checkpoint)
    with gr.Row():
        prompt = gr.Textbox(label="Prompt", value=DEFAULT_PROMPTS[1], lines=2, scale=3)
        layer = gr.Slider(1, 12, value=1, step=1, label="Layer", scale=1)
        head = gr.Slider(1, 12, value=1, step=1, label="Head", scale=1)
    run = gr.Button("Inspect", variant="primary")
    with gr.Row():
        attention = gr.Plot(label="Attention", show_label=False)
        next_tokens = gr.Plot(label="Next token", show_label=False)
    heads = gr.Plot(label="All heads", show_label=False)
    lens = gr.Plot(label="Logit lens", show_label=False)
    with gr.Row():
        words = gr.Textbox(
            label="Tokens to project (empty: the first 400 of the vocabulary)",
            placeholder="king queen man woman",
            scale=3,
        )
        embed_btn = gr.Button("Project embeddings", scale=1)
    embeddings = gr.Plot(label="Embeddings", show_label=False)
    recipe = gr.Markdown()
    params = gr.Dataframe(headers=["module", "parameters", "share %"], label="Parameters per module")
    outputs = [attention, heads, next_tokens, lens, params, embeddings, layer, head, recipe]
    inputs = [checkpoint, prompt, layer, head, words]
    # a bad input (a layer the model lacks) shows its message; the charts and sliders stay as they were
    quiet: dict[str, Any] = dict(show_progress="hidden")
    run.click(inspect_prompt, inputs, outputs, api_name="inspect", **quiet)
    for slider in (layer, head):
        slider.release(inspect_prompt, inputs, outputs, api_visibility="private", **quiet)
    embed_btn.click(project_embeddings, [checkpoint, words], embeddings, api_name="embeddings", **quiet)
    for trigger in (refresh.click, tab.select, ready.then):
        trigger(checkpoint_dropdown_update, [checkpoint, state], checkpoint, api_visibility="private")
    suggested = gr.State("")
    checkpoint.change(model_ranges, checkpoint, [layer, head], api_visibility="private", **quiet)
    checkpoint.change(two_line_prompt, [checkpoint, prompt, suggested], [prompt, suggested],
                      api_visibility="private", **quiet)  # fmt: skip
