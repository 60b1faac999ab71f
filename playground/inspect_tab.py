"""The Inspect tab: attention heatmaps, next-token probabilities, the logit lens, the heads' circuit scores,
ablation, direct logit attribution, embeddings, parameter counts; for a task model, which examples it gets wrong and,
for modular addition, the Fourier spectrum of its number embeddings."""

from __future__ import annotations

from typing import Any, cast

import gradio as gr
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from gpt import checkpoint as ckpt
from gpt.circuits import MIN_CONTEXT, CircuitScores, even_score, head_scores
from gpt.config import Config, recipe_summary
from gpt.errors import UserInputError
from gpt.inspect import (
    AblationMode,
    AblationResult,
    Attribution,
    Component,
    ablate,
    analyse,
    attribute,
    embedding_projection,
    embedding_spectrum,
    parameter_table,
)
from gpt.task_check import MAX_GRADED, grade
from gpt.tasks import Split
from playground import charts, task_lab
from playground.common import (
    checkpoint_dropdown_update,
    load_checkpoint,
    pretrained_row,
    suggested_prompt,
    user_errors,
)
from playground.hosting import heavy_slot, visitor
from playground.inputs import number, text
from playground.settings import MODEL

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


SCORES = [("previous_token", "Previous token (i → i−1)"), ("duplicate_token", "Duplicate token (→ same token before)"),
          ("induction", "Induction (→ the token after it)")]  # fmt: skip
ABLATE_WHAT = ["attention head", "MLP"]
ABLATE_BY = ["zero", "mean"]
INDUCTION_HEAD = 0.3  # a head scoring this high mostly does induction (one that spreads its attention: ~0.02)


@user_errors
def score_heads(checkpoint: str | None, request: gr.Request, profile: gr.OAuthProfile | None) -> tuple[Any, str]:
    """Each head's previous-token, duplicate-token and induction score, and the in-context-learning score."""
    me = visitor(request, profile)
    loaded = load_checkpoint(checkpoint, me)
    if (n := loaded.config.model.block_size) < MIN_CONTEXT:  # (a task of 3-token examples: said, not failed)
        return go.Figure(), f"Circuit scores read sequences shown twice: they need a context of {MIN_CONTEXT} tokens " \
                            f"or more, and this model's is {n}."  # fmt: skip
    with heavy_slot(me, request):
        s = head_scores(loaded.model, tokenizer=loaded.tokenizer)
    layer, head, best = s.best_head("induction")
    verdict = (
        f"Layer {layer + 1}, head {head + 1} is an induction head ({best:.2f})."
        if best > INDUCTION_HEAD
        else f"No induction head yet: the best is layer {layer + 1}, head {head + 1} at {best:.2f}."
    )
    note = (
        f"Scored on {s.seq_len}-token random sequences shown twice. A head that spreads its attention evenly scores "
        f"about {even_score(s.seq_len):.2f} on duplicate and induction; 1 is a head that does only this. {verdict} "
        f"**In-context learning:** the loss on the second repeat minus the first is **{s.in_context:+.2f}** nats "
        "(negative: the model uses what it has already read; only an induction mechanism can predict the repeat)."
    )
    return circuits_figure(s), note


def circuits_figure(s: CircuitScores) -> go.Figure:
    n_layer, n_head = len(s.induction), len(s.induction[0])
    fig = make_subplots(rows=1, cols=3, subplot_titles=[title for _, title in SCORES], horizontal_spacing=0.06)
    heads, layers = [f"H{h + 1}" for h in range(n_head)], [f"L{i + 1}" for i in range(n_layer)]
    for col, (name, title) in enumerate(SCORES, start=1):
        z = getattr(s, name)
        fig.add_trace(
            go.Heatmap(z=z, x=heads, y=layers, zmin=0, zmax=1, colorscale="Blues", showscale=col == 3,
                       text=[[f"{v:.2f}" for v in row] for row in z], texttemplate="%{text}" if n_head <= 16 else "",
                       hovertemplate=f"{title}<br>%{{y}} %{{x}}: %{{z:.3f}}<extra></extra>"),
            row=1, col=col,
        )  # fmt: skip
    fig.update_yaxes(autorange="reversed")
    fig.update_layout(  # (room above the panels' own titles for the figure's)
        title=dict(text="Circuit scores: each head's attention on repeated random tokens", font=dict(size=14)),
        **{**charts._LAYOUT, "height": 180 + 28 * n_layer, "margin": dict(l=50, r=20, t=80, b=40)},
    )
    return fig


@user_errors
def ablate_component(
    checkpoint: str | None,
    prompt: str,
    layer: float,
    what: str,
    head: float,
    mode: str,
    request: gr.Request,
    profile: gr.OAuthProfile | None,
) -> tuple[Any, ...]:
    """Zero- or mean-ablate one head or MLP: loss, next token and greedy continuation, beside the original."""
    prompt = text(prompt, "prompt", PROMPT_CHARS)
    if what not in ABLATE_WHAT:
        raise UserInputError(f"choose what to ablate: {' or '.join(ABLATE_WHAT)}, not {str(what)[:40]!r}")
    if mode not in ABLATE_BY:
        raise UserInputError(f"ablate by zero or mean, not {str(mode)[:40]!r}")
    me = visitor(request, profile)
    loaded = load_checkpoint(checkpoint, me)
    mc = loaded.config.model
    layer_n = number(layer, "the ablated layer", 1, mc.n_layer, integer=True)
    head_i = None
    if what == "attention head":
        head_i = number(head, "the ablated head", 1, mc.n_head, integer=True) - 1
    with heavy_slot(me, request):
        r = ablate(loaded.model, loaded.tokenizer, prompt, Component(layer_n - 1, head_i), cast(AblationMode, mode))
    return ablation_summary(r), ablation_figure(r), r.original.continuation, r.ablated.continuation


def ablation_summary(r: AblationResult) -> str:
    what = r.component.name if r.component else "nothing"
    how = "set to zero" if r.mode == "zero" else "set to its mean over the prompt's positions"
    ablated, original = r.ablated.loss, r.original.loss
    if ablated is None or original is None:
        loss = "The prompt is one token: there is no loss to measure within it."
    else:
        change = ablated - original
        meaning = "no change" if abs(change) < 0.005 else "it helped predict this text" if change > 0 else (
            "it hurt the prediction of this text")  # fmt: skip
        loss = f"Loss on the prompt: **{original:.3f}** → **{ablated:.3f}** ablated ({change:+.3f}: {meaning})."
    top_o, top_a = r.original.next_tokens[0], r.ablated.next_tokens[0]
    return (
        f"**{what}** {how}. {loss} Top next token: **{top_o[0]}** ({top_o[1]:.0%}) → **{top_a[0]}** ({top_a[1]:.0%})."
    )


def ablation_figure(r: AblationResult) -> go.Figure:
    x = list(range(len(r.candidates)))
    name = r.component.name if r.component else "nothing"
    fig = go.Figure()
    fig.add_bar(x=x, y=r.original_probs, name="original", marker_color="#9ecae1")
    fig.add_bar(x=x, y=r.ablated_probs, name=f"{name} ablated ({r.mode})", marker_color="#d62728")
    fig.update_xaxes(tickmode="array", tickvals=x, ticktext=r.candidates)
    fig.update_layout(
        title=dict(text=f"Next token after “{''.join(r.tokens[-8:])}”, with and without {name}", font=dict(size=14)),
        yaxis_title="probability", barmode="group",
        legend=dict(orientation="h", y=1.0, x=1, xanchor="right", yanchor="bottom"), **charts._LAYOUT,
    )  # fmt: skip
    return fig


@user_errors
def attribute_token(
    checkpoint: str | None, prompt: str, token: str, request: gr.Request, profile: gr.OAuthProfile | None
) -> tuple[Any, str]:
    """Direct logit attribution of a next token (empty: the top prediction) to each embedding, head and MLP."""
    prompt, token = text(prompt, "prompt", PROMPT_CHARS), text(token, "token", 200)
    me = visitor(request, profile)
    loaded = load_checkpoint(checkpoint, me)
    with heavy_slot(me, request):
        a = attribute(loaded.model, loaded.tokenizer, prompt, token)
    norm = loaded.config.model.norm
    bias = f" + the final norm's bias **{a.norm_bias:+.3f}**" if a.norm_bias else ""
    note = (
        f"The parts add up to the logit of **{a.token}**{' (the top prediction)' if not token or a.top else ''}: "
        f"**{sum(a.contributions):.3f}**{bias} = **{a.logit:.3f}**. Each part is its output at the last position read "
        f"through the final {norm} and the head, the norm's scale frozen at **{a.norm_scale:.3f}** (the final "
        f"residual's {'standard deviation' if norm == 'layernorm' else 'root mean square'}): "
        "a part is what it writes in the token's direction, not what the model would lose without it (ablate it to "
        "see that)."
    )
    return attribution_figure(a), note


def attribution_figure(a: Attribution) -> go.Figure:
    colours = ["#1f77b4" if v >= 0 else "#d62728" for v in a.contributions]
    fig = go.Figure(go.Bar(x=a.components, y=a.contributions, marker_color=colours,
                           hovertemplate="%{x}: %{y:+.3f}<extra></extra>"))  # fmt: skip
    fig.add_hline(y=0, line=dict(color="#444", width=1))
    fig.update_xaxes(tickangle=-60 if len(a.components) > 24 else 0, tickfont=dict(size=10))
    fig.update_layout(
        title=dict(text=f"What pushes the logit of “{a.token}” up (blue) or down (red) after “"
                        f"{''.join(a.tokens[-8:])}”: logit {a.logit:.2f}", font=dict(size=14)),
        yaxis_title="contribution to the logit", **charts._LAYOUT,
    )  # fmt: skip
    return fig


def slider_update(count: int, value: int) -> dict[str, Any]:
    """A 1..count slider; with one layer (or head) there is nothing to choose, and a slider needs max > min."""
    return gr.update(maximum=max(count, 2), value=value, interactive=count > 1)


@user_errors
def model_ranges(checkpoint: str | None, request: gr.Request, profile: gr.OAuthProfile | None) -> tuple[Any, ...]:
    """The Layer and Head sliders (the attention's and the ablation's) follow the chosen model as soon as it is
    chosen."""
    if not checkpoint:
        return (gr.skip(),) * 4
    try:
        mc = Config.from_dict(
            ckpt.read_meta(ckpt.resolve(visitor(request, profile).resolve(checkpoint)))["config"]
        ).model
    except UserInputError:
        return (gr.skip(),) * 4
    return (slider_update(mc.n_layer, 1), slider_update(mc.n_head, 1)) * 2


def two_line_prompt(
    checkpoint: str | None, current: str, suggested: str, request: gr.Request, profile: gr.OAuthProfile | None
) -> tuple[Any, str]:
    return suggested_prompt(checkpoint, current, suggested, request, profile, lines=2)


@user_errors
def project_embeddings(checkpoint: str | None, words: str, request: gr.Request, profile: gr.OAuthProfile | None) -> Any:
    words = text(words, "tokens to project", PROMPT_CHARS)
    loaded = load_checkpoint(checkpoint, visitor(request, profile))
    return charts.embedding_figure(embedding_projection(loaded.model, loaded.tokenizer, words))


# ----- a task model: its examples scored, its number embeddings in the Fourier basis --------------------------------

SPLITS: list[tuple[str, Split]] = [("held out", "val"), ("trained on", "train")]


@user_errors
def task_examples(
    checkpoint: str | None, split: str, request: gr.Request, profile: gr.OAuthProfile | None
) -> tuple[str, list[list[str]]]:
    """A task model's exact match on a split's examples, one by one, and the ones it still gets wrong."""
    if split not in ("val", "train"):
        raise UserInputError("the examples are the held-out ones (val) or those trained on (train)")
    me = visitor(request, profile)
    with heavy_slot(me, request):
        learned = task_lab.checkpoint_task(checkpoint, me)
        if learned is None:
            raise UserInputError("this model learned text, not a task: the task views are for task models")
        if learned.task is None:
            raise UserInputError("this model's task is larger than this server generates; its examples are not here")
        g = grade(load_checkpoint(checkpoint, me).model, learned.task, split)  # type: ignore[arg-type]
    which = "held-out examples (never trained on)" if split == "val" else "examples it trained on"
    sample = f" (the first {MAX_GRADED:,}, a random sample)" if g.scored == MAX_GRADED else ""
    note = f"**{g.right:,} of {g.scored:,}** {which}{sample} right: **{g.right / max(g.scored, 1):.1%}**."
    if g.wrong:
        listed = f"the first {len(g.wrong)} of them" if len(g.wrong) < g.scored - g.right else "all of them"
        note += f" The {g.scored - g.right:,} it gets wrong, {listed}, with its answer:"
    else:
        note += " It gets every one right."
    return note, task_lab.example_rows(g.wrong)


@user_errors
def task_spectrum(checkpoint: str | None, request: gr.Request, profile: gr.OAuthProfile | None) -> tuple[Any, str]:
    """A modular-addition model's number embeddings in the Fourier basis (gpt.inspect.embedding_spectrum)."""
    me = visitor(request, profile)
    with heavy_slot(me, request):
        learned = task_lab.checkpoint_task(checkpoint, me)
        if learned is None or learned.config.name != "modular-addition":
            what = learned.config.name if learned is not None else "text"
            raise UserInputError(f"the Fourier view is for modular addition, whose numbers go round a circle; this "
                                 f"model learned {what}")  # fmt: skip
        s = embedding_spectrum(load_checkpoint(checkpoint, me).model, learned.config.modulus)
    even = min(5, len(s.norms)) / len(s.norms)
    note = (
        f"The {s.n} number tokens' embeddings, written as waves over the numbers a (cos and sin of 2π·k·a / {s.n}): "
        f"the bar at k is how much of frequency k they hold. **{s.top_share:.0%}** of the embedding is in its 5 "
        f"strongest frequencies (spread evenly: {even:.0%}). "
        + (f"**Key frequencies: {', '.join(map(str, s.key))}.** " if s.key else "No frequency stands out yet. ")
        + "A model that has generalised adds with a few such waves (Nanda et al. 2023, *Progress measures for "
        "grokking via mechanistic interpretability*): it turns a and b into rotations and adds the angles. One "
        "that memorised the table, or an untrained one, spreads out over them all."
    )
    return charts.spectrum_figure(s), note


def task_views(
    checkpoint: str | None, split: str, request: gr.Request, profile: gr.OAuthProfile | None
) -> tuple[Any, ...]:
    """After Inspect: a task model's views filled (the spectrum for modular addition only); a text model's left."""
    try:
        learned = task_lab.checkpoint_task(checkpoint, visitor(request, profile))
    except UserInputError:
        learned = None
    if learned is None:
        return (gr.skip(),) * 4
    spectrum = task_spectrum(checkpoint, request, profile) if learned.config.name == "modular-addition" else (
        gr.skip(), "")  # fmt: skip
    return *task_examples(checkpoint, split, request, profile), *spectrum


def task_box_update(checkpoint: str | None, request: gr.Request, profile: gr.OAuthProfile | None) -> tuple[Any, ...]:
    """The task section follows the chosen model: shown for a task model (its spectrum for modular addition)."""
    try:
        learned = task_lab.checkpoint_task(checkpoint, visitor(request, profile))
    except UserInputError:
        learned = None
    modular = learned is not None and learned.config.name == "modular-addition"
    return gr.update(visible=learned is not None), gr.update(visible=modular)


def task_section(checkpoint: gr.Dropdown) -> tuple[list[Any], list[Any]]:
    """A task model's views, shown for one (`task_box_update`): its examples scored (which it still gets wrong), its
    Fourier spectrum (for modular addition), each with its button. Returns `task_views`' inputs and outputs (what
    Inspect fills)."""
    with gr.Column(visible=False, elem_id="task-views") as box:
        gr.Markdown("### What the task model learned\nExact match on each example (the whole answer right by greedy "
                    "decoding), and which it still gets wrong.")  # fmt: skip
        with gr.Row():
            split = gr.Radio(SPLITS, value="val", label="Examples", scale=2)
            grade_btn = gr.Button("Score the examples", scale=1)
        graded_note = gr.Markdown()
        graded = gr.Dataframe(headers=["example", "prompt", "answer", "its answer"], label="The examples it gets "
                              "wrong", interactive=False, max_height=260)  # fmt: skip
        with gr.Column() as spectrum_part:
            with gr.Row():
                gr.Markdown("#### The number embeddings in the Fourier basis")
                spectrum_btn = gr.Button("Fourier spectrum", scale=0, min_width=220)
            spectrum = gr.Plot(label="Fourier spectrum", show_label=False)
            spectrum_note = gr.Markdown()
    model: dict[str, Any] = {"show_progress": "hidden", **MODEL}
    grade_btn.click(task_examples, [checkpoint, split], [graded_note, graded], api_name="task_examples", **model)
    spectrum_btn.click(task_spectrum, checkpoint, [spectrum, spectrum_note], api_name="task_spectrum", **model)
    checkpoint.change(task_box_update, checkpoint, [box, spectrum_part], api_visibility="private",
                      show_progress="hidden")  # fmt: skip
    return [checkpoint, split], [graded_note, graded, spectrum, spectrum_note]


def ablation_section(checkpoint: gr.Dropdown, prompt: gr.Textbox) -> tuple[gr.Button, tuple[Any, Any], list[Any]]:
    """The ablation's controls and views. Returns its button, its handler's inputs and outputs, and its Layer and
    Head sliders (which follow the chosen model)."""
    gr.Markdown("### Ablation\nTake one head or MLP out of the model for this prompt and see what changes.")
    with gr.Row():
        ab_layer = gr.Slider(1, 12, value=1, step=1, label="Ablate layer", scale=2, interactive=False)
        ab_what = gr.Radio(ABLATE_WHAT, value=ABLATE_WHAT[0], label="Component", scale=2)
        ab_head = gr.Slider(1, 12, value=1, step=1, label="Ablate head", scale=2, interactive=False)
        ab_mode = gr.Radio(ABLATE_BY, value="zero", label="Replace its output by", scale=2,
                           info="zero, or its mean over the prompt's positions")  # fmt: skip
        ab_run = gr.Button("Ablate", scale=1, min_width=120)
    ab_summary = gr.Markdown()
    ab_plot = gr.Plot(label="Next token, ablated", show_label=False)
    with gr.Row():
        ab_original = gr.Textbox(label="Greedy continuation: original", lines=2, interactive=False)
        ab_ablated = gr.Textbox(label="Greedy continuation: ablated", lines=2, interactive=False)
    io = ([checkpoint, prompt, ab_layer, ab_what, ab_head, ab_mode], [ab_summary, ab_plot, ab_original, ab_ablated])
    return ab_run, io, [ab_layer, ab_head]


def build(demo: gr.Blocks, state: gr.State, tab: gr.Tab, ready: Any) -> None:
    with gr.Row():
        checkpoint = gr.Dropdown(label="Checkpoint", choices=[], allow_custom_value=True, scale=3)
        refresh = gr.Button("Refresh", scale=1)
    pretrained_row(checkpoint)
    with gr.Row():
        # (before a model is picked there is nothing to offer: its training text gives the prompt, its shape the
        # sliders' ranges, as soon as it is picked; until then they are off. Their layout maximum stays 12: Gradio
        # checks an API value against it before our handler, which checks it against the model's own shape)
        prompt = gr.Textbox(label="Prompt", value="", placeholder="pick a checkpoint: a prompt from its own training "
                            "text appears here", lines=2, scale=3)  # fmt: skip
        layer = gr.Slider(1, 12, value=1, step=1, label="Layer", scale=1, interactive=False)
        head = gr.Slider(1, 12, value=1, step=1, label="Head", scale=1, interactive=False)
    run = gr.Button("Inspect", variant="primary")
    task_io = task_section(checkpoint)
    with gr.Row():
        attention = gr.Plot(label="Attention", show_label=False)
        next_tokens = gr.Plot(label="Next token", show_label=False)
    heads = gr.Plot(label="All heads", show_label=False)
    lens = gr.Plot(label="Logit lens", show_label=False)
    with gr.Row():
        gr.Markdown("### Circuits\nWhich heads look one token back, at the same token earlier, or at the token after "
                    "it (an induction head: it completes `A B … A` with `B`)?")  # fmt: skip
        score = gr.Button("Score heads", scale=0, min_width=160)
    circuits = gr.Plot(label="Circuit scores", show_label=False)
    circuits_note = gr.Markdown()
    ab_run, ablate_io, ab_sliders = ablation_section(checkpoint, prompt)
    gr.Markdown("### Direct logit attribution\nHow much each embedding, head and MLP writes towards one next token.")
    with gr.Row():
        dla_token = gr.Textbox(label="Token (empty: the top prediction)", placeholder="e", scale=3)
        dla_run = gr.Button("Attribute", scale=1)
    dla_plot = gr.Plot(label="Logit attribution", show_label=False)
    dla_note = gr.Markdown()
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
    model = {**quiet, **MODEL}  # (runs the model: waits its turn with every visitor's others)
    score_io: tuple[Any, Any] = ([checkpoint], [circuits, circuits_note])
    attribute_io: tuple[Any, Any] = ([checkpoint, prompt, dla_token], [dla_plot, dla_note])
    # Inspect fills every view (a task model's too); each panel's own button redoes only its own with its settings
    (
        run.click(inspect_prompt, inputs, outputs, api_name="inspect", **model)
        .success(score_heads, *score_io, api_visibility="private", **model)
        .success(ablate_component, *ablate_io, api_visibility="private", **model)
        .success(attribute_token, *attribute_io, api_visibility="private", **model)
        .success(task_views, *task_io, api_visibility="private", **model)
    )
    score.click(score_heads, *score_io, api_name="head_scores", **model)
    ab_run.click(ablate_component, *ablate_io, api_name="ablate", **model)
    dla_run.click(attribute_token, *attribute_io, api_name="attribute", **model)
    dla_token.submit(attribute_token, *attribute_io, api_visibility="private", **model)
    for slider in (layer, head):
        slider.release(inspect_prompt, inputs, outputs, api_visibility="private", **model)
    embed_btn.click(project_embeddings, [checkpoint, words], embeddings, api_name="embeddings", **quiet)
    for trigger in (refresh.click, tab.select, ready.then):
        trigger(checkpoint_dropdown_update, [checkpoint, state], checkpoint, api_visibility="private")
    suggested = gr.State("")
    checkpoint.change(model_ranges, checkpoint, [layer, head, *ab_sliders], api_visibility="private", **quiet)
    checkpoint.change(two_line_prompt, [checkpoint, prompt, suggested], [prompt, suggested],
                      api_visibility="private", **quiet)  # fmt: skip
