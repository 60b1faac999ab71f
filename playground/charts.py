"""Plotly figures for the UI: training curves, attention heatmaps, probabilities, logit lens, embeddings.

Training series are decimated to at most ~2,000 points per line (keeping each bucket's minimum and
maximum), so a refresh costs about the same at step 100 and at step 100,000.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import plotly.graph_objects as go
from plotly.colors import sample_colorscale
from plotly.subplots import make_subplots

from gpt.events import Curves
from gpt.health import COLLAPSED, DEAD_WARN, HEALTHY_RATIO, RATIO_HIGH, RATIO_LOW
from gpt.inspect import Analysis, Projection, SamplingStep, Spectrum

MAX_POINTS = 2000
COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"]  # one per run
_LAYOUT = dict(template="plotly_white", margin=dict(l=50, r=20, t=40, b=40), height=340)


def decimate(x: Sequence[Any], y: Sequence[float], max_points: int = MAX_POINTS) -> tuple[list[Any], list[float]]:
    """At most `max_points` points: the min and the max of each of max_points/2 buckets, in order. Plain lists, not
    numpy arrays: plotly would send those as typed arrays of the smallest dtype (int8 steps), which a live chart
    cannot append to (`playground.live_chart`)."""
    n = len(x)
    if n <= max_points:
        return list(x), [float(v) for v in y]
    xa, ya = np.asarray(x), np.asarray(y, dtype=float)
    edges = np.linspace(0, n, max_points // 2 + 1).astype(int)
    keep = []
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        lo, hi = a + int(np.argmin(ya[a:b])), a + int(np.argmax(ya[a:b]))
        keep.extend(sorted({lo, hi}))
    idx = np.array(keep)
    return xa[idx].tolist(), ya[idx].tolist()


def loss_figure(s: Curves) -> go.Figure:
    """The losses per token; beside them, the val loss in bits per byte of text (the figure that compares runs with
    different tokenizers, as in the Compare tab)."""
    fig = make_subplots(rows=1, cols=2, column_widths=[0.72, 0.28], horizontal_spacing=0.1,
                        subplot_titles=("Loss", "Val loss in bits per byte"))  # fmt: skip
    x, y = decimate(s.steps, s.loss)
    fig.add_trace(go.Scatter(x=x, y=y, name="train loss", mode="lines", line=dict(color="#9ecae1", width=1)), 1, 1)
    x, y = decimate(s.steps, s.smooth)
    fig.add_trace(
        go.Scatter(x=x, y=y, name="train (smoothed)", mode="lines", line=dict(color="#1f77b4", width=2)), 1, 1
    )
    fig.add_trace(
        go.Scatter(x=s.eval_steps, y=s.val_loss, name="val loss", mode="lines+markers", line=dict(color="#d62728")),
        1, 1,
    )  # fmt: skip
    fig.add_trace(go.Scatter(x=s.eval_steps, y=s.val_bpb, name="val bits/byte", mode="lines+markers",
                             line=dict(color="#9467bd"), showlegend=False), 1, 2)  # fmt: skip
    fig.update_xaxes(title_text="step")
    fig.update_xaxes(matches="x", row=1, col=2)  # the same steps side by side
    fig.update_yaxes(title_text="cross-entropy (nats per token)", row=1, col=1)
    fig.update_yaxes(title_text="bits per byte", row=1, col=2)
    if s.baselines is not None:  # what counting letters and pairs gets: the run learns what lies below them
        for name, bpb in (("unigram", s.baselines.unigram), ("bigram", s.baselines.bigram)):
            fig.add_hline(y=bpb, line=dict(dash="dash", color="#aaa", width=1), annotation_text=name,
                          annotation_position="top right", annotation_font=dict(size=10, color="#888"),
                          row=1, col=2)  # fmt: skip
    if not s.eval_steps:
        _waiting(fig, "after the first evaluation", row=1, col=2)
    fig.update_layout(legend=dict(orientation="h", y=1.08, x=0.72, xanchor="right", yanchor="bottom"), **_LAYOUT)
    return fig


def _waiting(fig: go.Figure, when: str, row: int, col: int) -> None:
    """A panel with no points yet says when they come instead of drawing made-up axes (Plotly's empty -1..2 range);
    the live chart is sent whole again once its first point arrives (playground.live_chart)."""
    fig.update_yaxes(showticklabels=False, showgrid=False, zeroline=False, title_text="", row=row, col=col)
    fig.add_annotation(text=when, showarrow=False, font=dict(color="#888"), row=row, col=col,
                       x=0.5, y=0.5, xref="x domain", yref="y domain")  # fmt: skip


def rate_figure(s: Curves) -> go.Figure:
    fig = make_subplots(rows=1, cols=2, subplot_titles=("Learning rate", "Throughput (tokens/s)"))
    x, y = decimate(s.steps, s.lr)
    fig.add_trace(go.Scatter(x=x, y=y, mode="lines", name="lr", line=dict(color="#2ca02c")), row=1, col=1)
    x, y = decimate(s.steps, s.tokens_per_s)
    fig.add_trace(go.Scatter(x=x, y=y, mode="lines", name="tokens/s", line=dict(color="#ff7f0e")), row=1, col=2)
    fig.update_layout(showlegend=False, **{**_LAYOUT, "height": 260})
    fig.update_xaxes(title_text="step")
    return fig


@dataclass(frozen=True)
class Trace:
    """One line of a training chart: the `Curves` fields of its x and y values and, for a series that holds a value
    per group, layer or head at each point, how one point gives the line's value (None: the point is the value).
    A live chart's figure has its traces in order, and its updates append to them in that order
    (`playground.live_chart`). The rest says how `draw` draws it."""

    x: str
    y: str
    pick: Callable[[Any], float | None] | None = None
    name: str = ""
    colour: str = COLOURS[0]
    dash: str = "solid"
    cell: tuple[int, int] = (1, 1)  # its subplot: (row, col)
    group: str = ""  # its legend entry, which shows and hides it (default: its name's)
    legend: bool = True  # whether that entry is this line (False: another line's entry stands for it)

    def points(self, s: Curves, start: int = 0) -> tuple[list[Any], list[float | None]]:
        """Its points from the `start`-th on."""
        xs, ys = getattr(s, self.x)[start:], getattr(s, self.y)[start:]
        if self.pick is not None:
            ys = [None if v is None else self.pick(v) for v in ys]
        return list(xs), list(ys)


def _item(i: int) -> Callable[[Any], float | None]:
    """A point's value for the i-th group or layer."""
    return lambda row: row[i] if i < len(row) else None


def _best_of_layer(i: int) -> Callable[[Any], float | None]:
    """A point's ([layer][head] scores) best head of layer i."""
    return lambda grid: max(grid[i]) if i < len(grid) and grid[i] else None


def best_head(grid: list[list[float]]) -> tuple[int, int, float]:
    """(layer, head, score) of the best-scoring head of [layer][head] scores, 0-based."""
    return max(((li, hi, s) for li, layer in enumerate(grid) for hi, s in enumerate(layer)), key=lambda t: t[2])


def thin(x: Sequence[Any], y: Sequence[Any], max_points: int = MAX_POINTS) -> tuple[list[Any], list[Any]]:
    """At most `max_points` evenly spaced points, the first and the last among them: for the sparse series (a point
    every few steps), which may hold gaps (None) that `decimate`'s minimum and maximum cannot take."""
    if len(x) <= max_points:
        return list(x), list(y)
    keep = sorted({round(i * (len(x) - 1) / (max_points - 1)) for i in range(max_points)})
    return [x[i] for i in keep], [y[i] for i in keep]


def layer_colours(n: int) -> list[str]:
    """One colour per layer, dark (the first) to light (the last)."""
    return sample_colorscale("Viridis", [0.85 * i / max(1, n - 1) for i in range(n)]) if n else []


def _group_colour(group: str, colours: list[str]) -> str:
    """A parameter group's colour: its layer's ("layer 2 MLP"), grey for the embeddings, black for the head."""
    words = group.split()
    if words[0] == "layer" and words[1].isdigit() and int(words[1]) <= len(colours):
        return colours[int(words[1]) - 1]
    return "#7f7f7f" if group in ("embedding", "positions") else "#000000"


def draw(fig: go.Figure, s: Curves, traces: list[Trace], fmt: str) -> None:
    """Add `traces` to `fig`, each in its subplot (a training chart's points are never many: thinned past
    MAX_POINTS); hovering a point shows its line's name, step and value (`fmt`, a d3 format)."""
    for t in traces:
        x, y = thin(*t.points(s))
        fig.add_scatter(x=x, y=y, name=t.name, mode="lines+markers", line=dict(color=t.colour, dash=t.dash, width=1.5),
                        marker=dict(size=4), legendgroup=t.group or t.name, showlegend=t.legend,
                        hovertemplate=f"%{{fullData.name}}<br>step %{{x}}: %{{y:{fmt}}}<extra></extra>",
                        row=t.cell[0], col=t.cell[1])  # fmt: skip


HEALTH_TITLES = ("Update:data ratio, log10 (lectures' −3 dashed)", "Gradient norm per group",
                 "Dead MLP units per layer", "Attention entropy per layer (nats)")  # fmt: skip


def health_traces(s: Curves) -> list[Trace]:
    """The training-health chart's lines: the update:data ratio and the gradient norm of each parameter group, the
    dead MLP units and the attention entropy of each layer (in the legend: the group each reading is of; a layer's
    dead units go with its MLP, its entropy with its attention). None before the first reading."""
    if not s.health_steps:
        return []
    groups, n_layers = s.health_groups[0], len(s.dead_units[0])
    colours = layer_colours(n_layers)
    at = "health_steps"
    return [
        *(Trace(at, "update_ratio", _item(g), name, _group_colour(name, colours), _dash(name), (1, 1))
          for g, name in enumerate(groups)),
        *(Trace(at, "group_grad_norm", _item(g), name, _group_colour(name, colours), _dash(name), (1, 2), legend=False)
          for g, name in enumerate(groups)),
        *(Trace(at, "dead_units", _item(i), f"layer {i + 1} MLP", colours[i], "dot", (2, 1), legend=False)
          for i in range(n_layers)),
        *(Trace(at, "attn_entropy", _item(i), f"layer {i + 1} attention", colours[i], "solid", (2, 2), legend=False)
          for i in range(n_layers)),
    ]  # fmt: skip


def _dash(group: str) -> str:
    return "dot" if group.endswith("MLP") else "solid"


def health_figure(s: Curves) -> go.Figure:
    """Is the run healthy (gpt.health): the update:data ratio against the lectures' -3 (the band: where the panel
    says nothing), the gradient norms (log scale), the dead MLP units and the attention entropy against attention
    spread evenly (dashed) and collapsed (dotted, where the panel warns)."""
    fig = make_subplots(rows=2, cols=2, subplot_titles=HEALTH_TITLES, vertical_spacing=0.16, horizontal_spacing=0.09)
    draw(fig, s, health_traces(s), ".3g")
    shapes = [dict(type="rect", xref="x domain", x0=0, x1=1, yref="y", y0=RATIO_LOW, y1=RATIO_HIGH, layer="below",
                   fillcolor="#2ca02c", opacity=0.06, line_width=0),
              _hline(1, HEALTHY_RATIO, "dash"), _hline(3, DEAD_WARN, "dot")]  # fmt: skip
    if s.attn_uniform:
        shapes += [_hline(4, s.attn_uniform[-1], "dash"), _hline(4, COLLAPSED * s.attn_uniform[-1], "dot")]
    fig.update_layout(shapes=shapes)
    fig.update_yaxes(type="log", dtick="D2", row=1, col=2)  # (labels at 1, 2 and 5 of each decade)
    fig.update_yaxes(tickformat=".0%", rangemode="tozero", row=2, col=1)
    fig.update_yaxes(rangemode="tozero", row=2, col=2)
    fig.update_annotations(font_size=13)  # the subplot titles
    fig.update_layout(legend=dict(font=dict(size=10), tracegroupgap=0), hovermode="closest",
                      **{**_LAYOUT, "height": 310, "margin": dict(l=45, r=10, t=25, b=22)})  # fmt: skip
    return fig


def _hline(axis: int, y: float, dash: str) -> dict[str, Any]:
    """A grey reference line across the subplot of axes number `axis` (1: x and y, 2: x2 and y2, ...), as a plain
    shape (plotly's add_hline on a grid of subplots costs a tenth of a second each)."""
    n = "" if axis == 1 else str(axis)
    return dict(type="line", xref=f"x{n} domain", x0=0, x1=1, yref=f"y{n}", y0=y, y1=y,
                line=dict(color="#7f7f7f", width=1, dash=dash))  # fmt: skip


def circuit_traces(s: Curves) -> list[Trace]:
    """The circuits chart's lines: each layer's best induction and previous-token head, and the in-context score."""
    if not s.circuit_steps:
        return []
    n_layers = len(s.induction[0])
    colours = layer_colours(n_layers)
    at = "circuit_steps"
    return [
        *(Trace(at, "induction", _best_of_layer(i), f"layer {i + 1} induction", colours[i], "solid", (1, 1))
          for i in range(n_layers)),
        *(Trace(at, "previous_token", _best_of_layer(i), f"layer {i + 1} previous token", colours[i], "dot", (1, 1))
          for i in range(n_layers)),
        Trace(at, "in_context", None, "in-context", "#d62728", "solid", (1, 2), legend=False),
    ]  # fmt: skip


def circuits_figure(s: Curves) -> go.Figure:
    """Circuits forming (gpt.circuits): each layer's best head as an induction head and as a previous-token head
    over the steps, and the in-context-learning score (negative: the context helps)."""
    fig = make_subplots(rows=1, cols=2, column_widths=[0.68, 0.32], horizontal_spacing=0.1,
                        subplot_titles=("Best head per layer: induction (solid), previous token (dotted)",
                                        "In-context: late − early loss"))  # fmt: skip
    draw(fig, s, circuit_traces(s), ".2f")
    fig.update_layout(shapes=[_hline(2, 0.0, "dash")])
    # noise stays low on a scale up to 0.3 at least: a head that forms rises clearly
    fig.update_yaxes(title_text="score", autorangeoptions=dict(include=[0, 0.3]), row=1, col=1)
    fig.update_yaxes(title_text="nats", row=1, col=2)
    fig.update_xaxes(title_text="step", title_standoff=4)
    fig.update_annotations(font_size=13)
    fig.update_layout(legend=dict(font=dict(size=10), tracegroupgap=0), hovermode="closest",
                      **{**_LAYOUT, "height": 300, "margin": dict(l=50, r=10, t=30, b=40)})  # fmt: skip
    return fig


def accuracy_traces(s: Curves) -> list[Trace]:
    """A task run's accuracy chart's lines (gpt/tasks.py's exact match at each evaluation): train and held-out
    accuracy, and beside them the train and held-out loss of the answers. None for a text run (no accuracy)."""
    if not any(a is not None for a in s.train_acc):
        return []
    return [
        Trace("eval_steps", "train_acc", name="train", colour="#1f77b4"),
        Trace("eval_steps", "val_acc", name="held out", colour="#d62728"),
        Trace("steps", "loss", name="train loss", colour="#1f77b4", cell=(1, 2), group="train", legend=False),
        Trace("eval_steps", "val_loss", name="held-out loss", colour="#d62728", cell=(1, 2), group="held out",
              legend=False),
    ]  # fmt: skip


def accuracy_figure(s: Curves) -> go.Figure:
    """The grokking picture: exact-match accuracy on train and held-out examples against step (a model that memorises
    reaches 100% on train long before held out follows), and the answers' losses beside it (log scale); the steps on
    a log scale at a click (the buttons above it)."""
    fig = make_subplots(rows=1, cols=2, column_widths=[0.62, 0.38], horizontal_spacing=0.1,
                        subplot_titles=("Exact-match accuracy", "Loss of the answers"))  # fmt: skip
    draw(fig, s, accuracy_traces(s), ".3g")
    fig.update_yaxes(tickformat=".0%", range=[-0.03, 1.03], row=1, col=1)
    fig.update_yaxes(type="log", dtick="D2", title_text="nats per answer token", row=1, col=2)  # (1, 2 and 5 labelled)
    fig.update_xaxes(title_text="step", title_standoff=4, nticks=6)
    fig.update_annotations(font_size=13)
    fig.update_layout(updatemenus=[log_steps_buttons(2)], hovermode="closest",
                      legend=dict(orientation="h", y=1.12, x=1, xanchor="right", yanchor="bottom"),
                      **{**_LAYOUT, "height": 320, "margin": dict(l=50, r=20, t=60, b=40)})  # fmt: skip
    return fig


def log_steps_buttons(axes: int) -> dict[str, Any]:
    """Two buttons above a figure that put the x axes of its `axes` subplots on a linear or a log scale, in the page
    (no request: a live chart keeps appending; playground.live_chart keeps the choice across whole redraws)."""
    names = ["xaxis"] + [f"xaxis{i}" for i in range(2, axes + 1)]
    return dict(type="buttons", direction="right", showactive=True, active=0, x=0, y=1.2, xanchor="left",
                yanchor="bottom", pad=dict(t=0, r=4), font=dict(size=11),
                buttons=[dict(label=label, method="relayout", args=[{f"{n}.type": kind for n in names}])
                         for label, kind in (("linear steps", "linear"), ("log steps", "log"))])  # fmt: skip


def spectrum_figure(s: Spectrum) -> go.Figure:
    """The token embeddings' norm at each frequency of the Fourier basis over the numbers (gpt.inspect.Spectrum): a
    model that generalised modular addition holds a few key frequencies (darker), one that memorised spreads out."""
    key = set(s.key)
    colours = ["#08519c" if k in key else "#9ecae1" for k in s.frequencies]
    fig = go.Figure(go.Bar(x=s.frequencies, y=s.norms, marker_color=colours,
                           hovertemplate="frequency %{x}: norm %{y:.3f}<extra></extra>"))  # fmt: skip
    said = f"key frequencies {', '.join(map(str, s.key))}" if s.key else "no frequency stands out"
    fig.update_xaxes(title_text=f"frequency k (a wave cos / sin of 2π·k·a / {s.n} over the numbers a)")
    fig.update_layout(
        title=dict(text=f"Token embeddings in the Fourier basis: {said} ({s.top_share:.0%} of the embedding in the "
                        "5 strongest)", font=dict(size=14)),
        yaxis_title="norm", **{**_LAYOUT, "height": 360},
    )  # fmt: skip
    return fig


def _token_axes(fig: go.Figure, tokens: list[str], **where: int) -> None:
    ticks = dict(tickmode="array", tickvals=list(range(len(tokens))), ticktext=tokens, tickfont=dict(size=10))
    fig.update_xaxes(**ticks, **where)
    fig.update_yaxes(**ticks, autorange="reversed", **where)


def attention_figure(a: Analysis, layer: int, head: int) -> go.Figure:
    m = a.attention[layer, head]
    fig = go.Figure(
        go.Heatmap(
            z=m,
            colorscale="Blues",
            zmin=0,
            zmax=1,
            hovertemplate="query %{y}<br>key %{x}<br>attention %{z:.3f}<extra></extra>",
        )
    )
    _token_axes(fig, a.tokens)
    fig.update_layout(
        title=f"Attention: layer {layer + 1}, head {head + 1}",
        xaxis_title="key (attended to)",
        yaxis_title="query",
        **{**_LAYOUT, "height": 480},
    )
    return fig


def heads_grid_figure(a: Analysis, layer: int) -> go.Figure:
    n_heads = a.attention.shape[1]
    cols = min(4, n_heads)
    rows = -(-n_heads // cols)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=[f"head {h + 1}" for h in range(n_heads)])
    for h in range(n_heads):
        fig.add_trace(
            go.Heatmap(z=a.attention[layer, h], colorscale="Blues", zmin=0, zmax=1, showscale=False),
            row=h // cols + 1,
            col=h % cols + 1,
        )
    fig.update_yaxes(autorange="reversed", showticklabels=False)
    fig.update_xaxes(showticklabels=False)
    fig.update_layout(title=f"All heads of layer {layer + 1}", **{**_LAYOUT, "height": 220 * rows + 60})
    return fig


def next_token_figure(a: Analysis) -> go.Figure:
    labels = [f"{t}" for t, _ in a.next_tokens][::-1]
    probs = [p for _, p in a.next_tokens][::-1]
    fig = go.Figure(go.Bar(x=probs, y=list(range(len(labels))), orientation="h", marker_color="#1f77b4"))
    fig.update_yaxes(tickmode="array", tickvals=list(range(len(labels))), ticktext=labels)
    fig.update_layout(
        title=f"Next token after “{''.join(a.tokens[-8:])}”",
        xaxis_title="probability",
        **{**_LAYOUT, "height": 480},
    )
    return fig


def logit_lens_figure(a: Analysis) -> go.Figure:
    fig = go.Figure(
        go.Heatmap(
            z=a.lens_probs,
            text=a.lens_tokens,
            texttemplate="%{text}",
            colorscale="Viridis",
            zmin=0,
            zmax=1,
            hovertemplate="%{y}, position %{x}<br>predicts %{text} (p=%{z:.2f})<extra></extra>",
            colorbar=dict(title="p"),
        )
    )
    fig.update_xaxes(tickmode="array", tickvals=list(range(len(a.tokens))), ticktext=a.tokens, title="input token")
    fig.update_yaxes(tickmode="array", tickvals=list(range(len(a.lens_layers))), ticktext=a.lens_layers)
    fig.update_layout(
        title="Logit lens: the top next-token guess after each layer",
        **{**_LAYOUT, "height": 120 + 40 * len(a.lens_layers)},
    )
    return fig


def embedding_figure(p: Projection) -> go.Figure:
    fig = go.Figure(
        go.Scatter(
            x=p.xy[:, 0],
            y=p.xy[:, 1],
            mode="markers+text" if len(p.labels) <= 150 else "markers",
            text=p.labels,
            textposition="top center",
            hovertext=[f"{t} (id {i})" for t, i in zip(p.labels, p.token_ids, strict=True)],
            hoverinfo="text",
            marker=dict(size=7, color="#9467bd", opacity=0.7),
        )
    )
    fig.update_layout(
        title="Token embeddings, PCA to 2-D",
        xaxis_title=f"PC1 ({p.explained[0]:.0%} of variance)",
        yaxis_title=f"PC2 ({p.explained[1]:.0%})",
        **{**_LAYOUT, "height": 480},
    )
    return fig


def sampling_figure(s: SamplingStep, title: str) -> go.Figure:
    """The model's distribution over its top candidates, after penalties and temperature, and what the sampler
    finally draws from; the candidates a filter took out are marked with the filter's name."""
    x = list(range(len(s.labels)))
    shaped = dict(s.stages)["temperature"]  # penalties, then temperature: before any filter
    fig = go.Figure()
    fig.add_bar(x=x, y=s.model, name="the model", marker_color="#c6dbef")
    fig.add_bar(x=x, y=shaped, name="after penalties and temperature", marker_color="#6baed6")
    fig.add_bar(x=x, y=s.final, name="what the sampler draws from", marker_color="#08519c")
    for i, why in enumerate(s.removed_by):
        if why is not None:
            fig.add_annotation(x=i, y=max(s.model[i], shaped[i]), text=f"✕ {why}", showarrow=False, yshift=12,
                               font=dict(color="#d62728", size=11), textangle=-60)  # fmt: skip
    fig.update_xaxes(tickmode="array", tickvals=x, ticktext=s.labels)
    fig.update_layout(title=dict(text=f"{title} · {s.drawable:,} token(s) can be drawn", font=dict(size=14)),
                      yaxis_title="probability", barmode="group", **{**_LAYOUT, "height": 420},
                      legend=dict(orientation="h", y=-0.12, x=0.5, xanchor="center", yanchor="top"))  # fmt: skip
    return fig


# What Compare may put on its x axis: series of the logged steps (`gpt.events.Curves`); on its y axis: the loss per
# token, or in bits per byte of text (which compares runs with different tokenizers)
XSeries = Literal["steps", "tokens", "times"]
YUnit = Literal["loss", "bpb"]
Y_TITLE: dict[YUnit, str] = {"loss": "cross-entropy (nats per token)", "bpb": "bits per byte"}


def compare_figure(runs: dict[str, Curves], x: XSeries, axis: str, y: YUnit = "loss") -> go.Figure:
    """Train loss (lines) and val loss (dashed, with markers) of each run against its series `x`, whose title is
    `axis`, per token or (`y`="bpb") in bits per byte; the runs that have no bits per byte yet are named."""
    fig, missing = go.Figure(), []
    for (name, m), colour in zip(runs.items(), COLOURS, strict=False):
        train, val = (m.loss, m.val_loss) if y == "loss" else (m.train_bpb(), m.val_bpb)
        if train is None:  # (bits per byte only: a run not evaluated yet, or logged before they were recorded)
            missing.append(name)
            continue
        tx, ty = decimate(getattr(m, x), train)
        fig.add_scatter(x=tx, y=ty, name=f"{name} train", mode="lines", line=dict(color=colour, width=1.5))
        fig.add_scatter(x=_x_at(m, x, m.eval_steps), y=val, name=f"{name} val", mode="lines+markers",
                        line=dict(color=colour, dash="dash"))  # fmt: skip
    notes = [] if y == "loss" else ["train: at the val split's bytes per token"]
    if missing:
        notes.append(f"not shown, no evaluation in bits per byte yet: {', '.join(missing)}")
    title = ("Loss" if y == "loss" else "Loss in bits per byte") + "".join(f"<br><sup>{n}</sup>" for n in notes)
    fig.update_layout(title=title, xaxis_title=axis, yaxis_title=Y_TITLE[y], **_compare_layout(len(notes)))
    return fig


def _compare_layout(notes: int) -> dict[str, Any]:
    """Compare's charts, side by side: room for the notes under the title, the legend under the plot."""
    return {**_LAYOUT, "height": 460, "margin": dict(l=50, r=20, t=40 + 20 * notes, b=40),
            "legend": dict(orientation="h", x=0, y=-0.16, yanchor="top", font=dict(size=11))}  # fmt: skip


def compare_circuits_figure(runs: dict[str, Curves], x: XSeries, axis: str) -> go.Figure:
    """Each run's best induction head (solid) and best previous-token head (dotted) over its series `x`, whose title
    is `axis`; the runs that have no circuit scores (logged before they were recorded) are named."""
    fig, missing = go.Figure(), []
    for (name, m), colour in zip(runs.items(), COLOURS, strict=False):
        if not m.circuit_steps:
            missing.append(name)
            continue
        at = _x_at(m, x, m.circuit_steps)
        for label, grids, dash in (("induction", m.induction, "solid"), ("previous token", m.previous_token, "dot")):
            fig.add_scatter(x=at, y=[best_head(g)[2] for g in grids], name=f"{name} {label}", mode="lines+markers",
                            line=dict(color=colour, dash=dash), marker=dict(size=5))  # fmt: skip
    notes = ["solid: induction, dotted: previous token"]
    if missing:
        notes.append(f"not shown, no circuit scores logged: {', '.join(missing)}")
    title = "Circuits: the best head's score" + "".join(f"<br><sup>{n}</sup>" for n in notes)
    fig.update_layout(title=title, xaxis_title=axis, **_compare_layout(len(notes)))
    fig.update_yaxes(title_text="score (1: does nothing else)", autorangeoptions=dict(include=[0, 0.3]))
    return fig


def compare_accuracy_figure(runs: dict[str, Curves], x: XSeries, axis: str) -> go.Figure:
    """Each task run's held-out accuracy (solid, with markers) and train accuracy (dotted) against its series `x`,
    whose title is `axis`; the runs without accuracy (text runs) are named."""
    fig, missing = go.Figure(), []
    for (name, m), colour in zip(runs.items(), COLOURS, strict=False):
        if not any(a is not None for a in m.train_acc):
            missing.append(name)
            continue
        at = _x_at(m, x, m.eval_steps)
        fig.add_scatter(x=at, y=m.val_acc, name=f"{name} held out", mode="lines+markers", marker=dict(size=5),
                        line=dict(color=colour))  # fmt: skip
        fig.add_scatter(x=at, y=m.train_acc, name=f"{name} train", mode="lines", line=dict(color=colour, dash="dot"))
    notes = ["exact match: solid held out, dotted train"]
    if missing:
        notes.append(f"not shown, no accuracy (not a task): {', '.join(missing)}")
    title = "Accuracy" + "".join(f"<br><sup>{n}</sup>" for n in notes)
    fig.update_layout(title=title, xaxis_title=axis, yaxis_title="accuracy", **_compare_layout(len(notes)))
    fig.update_yaxes(tickformat=".0%", range=[-0.03, 1.03])
    return fig


def _x_at(m: Curves, x: XSeries, steps: list[int]) -> list[Any]:
    """Where points logged at `steps` (evaluations, circuit scores) sit on a run's axis `x`: at their step's value
    (step 0: 0); None where that step was not logged."""
    if x == "steps":
        return list(steps)
    x_of = {0: 0, **dict(zip(m.steps, getattr(m, x), strict=True))}
    return [x_of.get(step) for step in steps]
