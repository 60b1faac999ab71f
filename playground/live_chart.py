"""Live training charts that cost the page almost nothing: the page gets each new point once and appends it.

Redrawing whole Plotly figures at every refresh cost headless chromium ~450 ms of CPU and the server ~100 ms,
taken from the training they show when both share a small machine. Here a chart is a `gr.HTML` that draws with
plotly.js itself, and each refresh sends only what the page lacks:

- the page reports what it holds in the component's own value, `{"kind": "have", "run", "sent", "shown"}`, which
  the next timer tick reads back as an input: the page, not the server, is the record of what was delivered, so a
  lost update never leaves a gap in a chart, nor a repeated one a doubled point (an update that does not follow
  what the page holds makes it ask for the whole figure);
- the server answers with `{"kind": "extend", ...}` (the points after `sent`, appended with `Plotly.extendTraces`)
  or, for a new run, a page that holds nothing, or a chart past 2 x MAX_POINTS points, `{"kind": "full", ...}`: the
  figure from `playground.charts`, decimated again, so a long run keeps a bounded chart with its extremes.

A client without a browser (`gradio_client`) sends no "have" and gets the whole (decimated) figure every time.
A chart in a tab the visitor has not opened yet (Gradio builds a tab's content when it is first opened) sends back
the last update it got, undrawn, and gets the whole figure again (not nothing: a page that had not drawn an update
when the next came stalled its chart for good under load); the Train tab refreshes when opened.

`python -m bench.train_tab --runs 4 --steps 1000` (2 cores; the code before this module run in the same session):
training with the tab open went from 0.86x to 0.93x of the CLI's tokens/s; CPU per second of training, browser 0.225
-> 0.121 s and server 0.099 -> 0.016 s (with app.idle_gently). Most of the browser's remainder is Gradio's own: its
page runs a 60 Hz animation-frame loop even when idle.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import gradio as gr
import plotly
import plotly.graph_objects as go

from gpt.events import Curves
from playground import charts

# plotly.js from the plotly package the server already has: served as a static file, loaded once per page.
PLOTLY_JS = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
gr.set_static_paths([PLOTLY_JS])
HEAD = f'<script src="gradio_api/file={quote(str(PLOTLY_JS))}"></script>'  # relative: works under a root path too
MAX_SHOWN = 2 * charts.MAX_POINTS  # past this many points in the page, a chart is sent again, decimated


@dataclass(frozen=True)
class Chart:
    """A live figure: how to draw it whole, and its traces (`charts.Trace`: where each one's points are in the
    `Curves`), in the figure's order; a chart whose lines are one per group or layer lists them from the curves."""

    figure: Callable[[Curves], go.Figure]
    traces: Callable[[Curves], list[charts.Trace]]


def _fixed(*traces: tuple[str, str]) -> Callable[[Curves], list[charts.Trace]]:
    return lambda _: [charts.Trace(x, y) for x, y in traces]


CHARTS = {
    "loss": Chart(
        charts.loss_figure,
        _fixed(("steps", "loss"), ("steps", "smooth"), ("eval_steps", "val_loss"), ("eval_steps", "val_bpb")),
    ),
    "rate": Chart(charts.rate_figure, _fixed(("steps", "lr"), ("steps", "tokens_per_s"))),
    # the Train tab's training-health and circuits panels: a point every health_interval steps, at each evaluation
    "health": Chart(charts.health_figure, charts.health_traces),
    "circuits": Chart(charts.circuits_figure, charts.circuit_traces),
    # a task run's (gpt/tasks.py): train and held-out exact-match accuracy at each evaluation, the answers' losses
    "accuracy": Chart(charts.accuracy_figure, charts.accuracy_traces),
}

# Runs once per chart in the page (Gradio's js_on_load, after HEAD's plotly.js has loaded). `watch` fires when the
# server sends a value; the page then writes back what it holds, for the next tick to read.
JS = """
const gd = element.querySelector(".live-chart");
const empty = element.querySelector(".live-chart-empty");
const config = { displaylogo: false, responsive: true };
let have = null;  // what this page holds: the run, the points sent per x series, the points drawn
const follows = (u) => have && have.run === u.run && Object.keys(u.from).every((k) => u.from[k] === have.sent[k]);
function apply() {
  let update;
  try { update = JSON.parse(props.value || "null"); } catch (e) { return; }
  if (!update || (update.kind !== "full" && update.kind !== "extend")) return;
  if (update.kind === "full") {
    empty.style.display = "none";
    // the scale the visitor chose for the steps (the accuracy chart's log-steps buttons) outlives a whole redraw
    const layout = update.figure.layout;
    const chosen = gd.layout && gd.layout.xaxis && gd.layout.xaxis.type === "log";
    for (const key of Object.keys(layout)) if (chosen && /^xaxis\\d*$/.test(key)) layout[key].type = "log";
    for (const menu of (chosen && layout.updatemenus) || []) {
      menu.active = menu.buttons.findIndex((b) => /log/.test(b.label));
    }
    Plotly.react(gd, update.figure.data, layout, config);
  } else if (follows(update)) {
    Plotly.extendTraces(gd, { x: update.x, y: update.y }, update.traces);
  } else {  // not the points this page is missing (it was reloaded, or missed an update): ask for the whole figure
    have = null;
    props.value = JSON.stringify({ kind: "have", run: null });
    return;
  }
  have = { kind: "have", run: update.run, sent: update.sent, shown: gd.data[0].x.length };
  props.value = JSON.stringify(have);
}
watch("value", apply);
apply();
// A chart drawn in a hidden tab has no width: redraw at the real size once it shows, and when the window changes.
new ResizeObserver(() => { if (gd.data) Plotly.Plots.resize(gd); }).observe(gd);
"""


def live_chart(name: str, placeholder: str) -> gr.HTML:
    """An empty chart that the timer's updates (from `update`) fill; `placeholder` shows until the first."""
    return gr.HTML(
        "",
        html_template=f'<div class="live-chart-empty">{placeholder}</div><div class="live-chart"></div>',
        css_template=".live-chart-empty { color: var(--body-text-color-subdued); padding: 2em 0; text-align: center; }",
        js_on_load=JS,
        head=HEAD,
        elem_id=f"live-{name}",
        container=True,
    )


def update(name: str, run: str, series: Curves, have: Any) -> str | None:
    """What chart `name` of the page needs to show `series` of run `run`, given what the page says it holds
    (`have`, the component's value as it came in: anything at all from a crafted call); None when nothing new."""
    chart = CHARTS[name]
    traces = chart.traces(series)
    sizes = {t.x: len(getattr(series, t.x)) for t in traces}
    if not any(sizes.values()):
        return None  # no points yet: the placeholder stays (an empty chart says nothing)
    sent = _sent(have, run, sizes, traces[0].x)
    if sent is None:
        figure = chart.figure(series).to_plotly_json()
        # plain lists, not plotly's base64 arrays: the page appends to them
        return json.dumps({"kind": "full", "run": run, "sent": sizes, "figure": figure}, default=_plain)
    if sent == sizes:
        return None
    x, y = zip(*(t.points(series, sent[t.x]) for t in traces), strict=True)
    extend = {"kind": "extend", "run": run, "from": sent, "sent": sizes, "x": x, "y": y,
              "traces": list(range(len(traces)))}  # fmt: skip
    return json.dumps(extend)


def _sent(have: Any, run: str, sizes: dict[str, int], first: str) -> dict[str, int] | None:
    """The points sent per x series when the page holds an earlier state of this run's chart that may grow by
    appending; None when it must be sent whole."""
    if not isinstance(have, str) or len(have) > 1000:
        return None
    try:
        h = json.loads(have)
        if h["kind"] != "have" or h["run"] != run:
            return None
        sent = {k: int(h["sent"][k]) for k in sizes}
        shown = int(h["shown"])
    except (ValueError, TypeError, KeyError, OverflowError, RecursionError):
        return None
    if any(not 0 <= sent[k] <= sizes[k] for k in sizes):
        return None
    if any(sent[k] == 0 < sizes[k] for k in sizes):  # a panel's first points: its axes are drawn now (charts._waiting)
        return None
    if shown + sizes[first] - sent[first] > MAX_SHOWN:  # a long run: decimate again (`first`: the first trace's x)
        return None
    return sent


def _plain(value: Any) -> Any:
    """numpy arrays and numbers as JSON lists and numbers."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")
