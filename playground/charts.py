"""Plotly figures for the UI: training curves, attention heatmaps, probabilities, logit lens, embeddings.

Training series are decimated to at most ~2,000 points per line (keeping each bucket's minimum and
maximum), so a refresh costs about the same at step 100 and at step 100,000.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from gpt.events import Curves
from gpt.inspect import Analysis, Projection, SamplingStep

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
    fig.update_layout(legend=dict(orientation="h", y=1.08, x=0.72, xanchor="right", yanchor="bottom"), **_LAYOUT)
    return fig


def rate_figure(s: Curves) -> go.Figure:
    fig = make_subplots(rows=1, cols=2, subplot_titles=("Learning rate", "Throughput (tokens/s)"))
    x, y = decimate(s.steps, s.lr)
    fig.add_trace(go.Scatter(x=x, y=y, mode="lines", name="lr", line=dict(color="#2ca02c")), row=1, col=1)
    x, y = decimate(s.steps, s.tokens_per_s)
    fig.add_trace(go.Scatter(x=x, y=y, mode="lines", name="tokens/s", line=dict(color="#ff7f0e")), row=1, col=2)
    fig.update_layout(showlegend=False, **{**_LAYOUT, "height": 260})
    fig.update_xaxes(title_text="step")
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
        xs = getattr(m, x)
        x_of = dict(zip(m.steps, xs, strict=True))  # val points sit at their step's x
        tx, ty = decimate(xs, train)
        fig.add_scatter(x=tx, y=ty, name=f"{name} train", mode="lines", line=dict(color=colour, width=1.5))
        val_x = [x_of.get(s, s if x == "steps" else None) for s in m.eval_steps]
        fig.add_scatter(x=val_x, y=val, name=f"{name} val", mode="lines+markers",
                        line=dict(color=colour, dash="dash"))  # fmt: skip
    notes = [] if y == "loss" else ["train: at the val split's bytes per token"]
    if missing:
        notes.append(f"not shown, no evaluation in bits per byte yet: {', '.join(missing)}")
    title = ("Loss" if y == "loss" else "Loss in bits per byte") + "".join(f"<br><sup>{n}</sup>" for n in notes)
    margin = dict(l=50, r=20, t=40 + 20 * len(notes), b=40)  # room for the notes under the title
    fig.update_layout(
        title=title, xaxis_title=axis, yaxis_title=Y_TITLE[y], **{**_LAYOUT, "height": 420, "margin": margin}
    )
    return fig
