"""The Compare tab: several runs' loss curves overlaid, their results side by side, and the settings that differ.

It reads each run's metrics.jsonl (written as the run trains), so runs still training keep growing here too.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from gpt.config import Config, SampleConfig
from gpt.errors import UserInputError
from gpt.events import Curves, read_metrics
from gpt.generate import generate
from playground import charts, jobs
from playground.common import load_checkpoint, user_errors
from playground.hosting import heavy_slot, visitor
from playground.inputs import number, text
from playground.settings import MODEL

PROMPT_CHARS = 2_000

# the x axis's choices: label -> the series of the runs' curves (gpt.events.Curves) it draws
AXES: dict[str, charts.XSeries] = {"step": "steps", "tokens seen": "tokens", "training time (s)": "times"}
# the y axis's: per token (the trainer's loss), or bits per byte of text, which compares runs whose tokenizers differ
UNITS: dict[str, charts.YUnit] = {"loss per token": "loss", "bits per byte": "bpb"}
ACCURACY = "accuracy"  # a task run's exact match (gpt/tasks.py): train and held out
MAX_RUNS = len(charts.COLOURS)
REFRESH_S = 5.0  # while a compared run trains


def flat(config: dict[str, Any] | None) -> dict[str, Any]:
    """{"train": {"lr": 1e-3}} -> {"train.lr": 1e-3}."""
    return {f"{section}.{k}": v for section, values in (config or {}).items() for k, v in (values or {}).items()}


def summary_rows(runs: dict[str, Curves]) -> list[list[Any]]:
    """One row per run: its steps, latest and best val loss (per token and in bits per byte), speed and size."""
    rows = []
    for name, m in runs.items():
        vals = [v for v in m.val_loss if v is not None]
        bpbs = [v for v in m.val_bpb if v is not None]
        rates = [v for v in m.tokens_per_s if v is not None]
        rate = statistics.median(rates) if rates else None
        accs = [v for v in m.val_acc if v is not None]
        rows.append([name, m.steps[-1] if m.steps else 0, *_last_and_best(vals, 4), *_last_and_best(bpbs, 3),
                     round(rate) if rate else None, m.params, *_accuracy(accs)])  # fmt: skip
    return rows


def _last_and_best(values: list[float], digits: int) -> list[float | None]:
    return [round(values[-1], digits), round(min(values), digits)] if values else [None, None]


def _accuracy(values: list[float]) -> list[float | None]:
    """A task run's latest and best held-out accuracy (None: a text run)."""
    return [round(values[-1], 4), round(max(values), 4)] if values else [None, None]


SUMMARY = ["run", "steps", "val loss", "best val loss", "val bits/byte", "best bits/byte", "tokens/s", "parameters",
           "held-out accuracy", "best held-out accuracy"]  # fmt: skip


def complete(config: Any) -> Any:
    """A run's config with every setting: one from before a setting existed has that setting's default (for the
    recipe switches: GPT-2's), so it differs only where the runs really do."""
    try:
        return Config.from_dict(config).to_dict()
    except (UserInputError, TypeError, AttributeError):
        return config


def differences(runs: dict[str, Curves]) -> dict[str, Any]:
    """The settings whose values differ between the runs, one row each."""
    configs = {name: flat(complete(m.config)) for name, m in runs.items()}
    keys = sorted({k for c in configs.values() for k in c})
    rows = [[k, *(str(c.get(k, "")) for c in configs.values())] for k in keys]
    differing = [r for r in rows if len(set(r[1:])) > 1]
    return {"headers": ["setting", *configs], "data": differing or [["(no difference)", *[""] * len(configs)]]}


@user_errors
def compare(
    names: list[str] | None, axis: str, unit: str, request: gr.Request, profile: gr.OAuthProfile | None,
    log_x: Any = False,
) -> tuple[Any, list[list[Any]], dict[str, Any], Any, Any]:  # fmt: skip
    """The runs' loss (or a task's accuracy) overlay, their results, the settings that differ, the refresh timer (on
    while one trains) and their circuits' overlay; `log_x`: the x axes on a log scale (the grokking picture)."""
    if not names:
        raise UserInputError("pick one or more runs to compare")
    if not isinstance(names, list) or len(names) > MAX_RUNS:
        raise UserInputError(f"compare at most {MAX_RUNS} runs at a time")
    if axis not in AXES:
        raise UserInputError(f"the x axis is one of {', '.join(AXES)}")
    if unit not in UNITS and unit != ACCURACY:
        raise UserInputError(f"the y axis is one of {', '.join([*UNITS, ACCURACY])}")
    me = visitor(request, profile)
    dirs = {name: me.resolve(name) for name in names}
    runs = {name: read_metrics(d / "metrics.jsonl") for name, d in dirs.items()}
    training = {Path(j.run_dir).resolve() for j in jobs.REGISTRY.active()}
    live = any(d.resolve() in training for d in dirs.values())
    if unit == ACCURACY:
        figure = charts.compare_accuracy_figure(runs, AXES[axis], axis)
    else:
        figure = charts.compare_figure(runs, AXES[axis], axis, UNITS[unit])
    circuits = charts.compare_circuits_figure(runs, AXES[axis], axis)
    if log_x is True:  # (the points at 0, which a log axis cannot show, are left out of view)
        for fig in (figure, circuits):
            fig.update_xaxes(type="log")
    return figure, summary_rows(runs), differences(runs), gr.Timer(REFRESH_S, active=live), circuits


SAMPLE_TOKENS = 200  # each run's sample in "Samples side by side"


@user_errors
def samples(
    names: list[str] | None, prompt: str, seed: Any, request: gr.Request, profile: gr.OAuthProfile | None
) -> list[list[str]]:
    """The same prompt and seed continued by each run's latest checkpoint (the sampler's defaults): what the curves'
    differences read like. One row per run."""
    if not names or not isinstance(names, list) or len(names) > MAX_RUNS:
        raise UserInputError(f"pick one to {MAX_RUNS} runs to sample from")
    prompt = text(prompt, "prompt", PROMPT_CHARS)
    seed = number(seed, "seed", 0, 2**31 - 1, integer=True)
    me = visitor(request, profile)
    cfg = SampleConfig(max_new_tokens=SAMPLE_TOKENS, seed=seed)
    rows = []
    with heavy_slot(me, request):
        for name in names:
            if not isinstance(name, str):
                raise UserInputError("a run is named by its name")
            loaded = load_checkpoint(f"{name}/latest", me, for_sampling=True)
            rows.append([name, prompt + generate(loaded.model, loaded.tokenizer, prompt, cfg)])
    return rows


def run_list(request: gr.Request, profile: gr.OAuthProfile | None) -> Any:
    """The visitor's runs to pick from. The picked ones stay as they are: this answer may come after the visitor has
    already typed a run in (a value sent here would undo it); compare() names a run that is gone."""
    return gr.update(choices=visitor(request, profile).runs())


@dataclass
class Panel:
    """What the Compare tab offers the others: a click elsewhere adds a run to `runs` and compares them again."""

    runs: gr.Dropdown
    inputs: list[Any]  # compare()'s, the runs first
    outputs: list[Any]  # compare()'s


def build(demo: gr.Blocks, state: gr.State, tab: gr.Tab, ready: Any) -> Panel:
    gr.Markdown("Pick runs to overlay their curves. Clicking a run in the Train tab's checkpoint table adds it here.")
    with gr.Row():
        # any name may come in (the choices are this visitor's runs, filled in per session); compare() resolves each
        runs = gr.Dropdown(label="Runs", choices=[], multiselect=True, allow_custom_value=True, scale=3)
        with gr.Column(scale=1):
            axis = gr.Radio(list(AXES), value="step", label="x axis")
            unit = gr.Radio([*UNITS, ACCURACY], value="loss per token", label="y axis",
                            info="bits per byte: runs with different tokenizers on one scale; accuracy: task runs' "
                            "exact match")  # fmt: skip
            log_x = gr.Checkbox(False, label="log-scale x axis", info="grokking's late rise shows on it")
            go_btn = gr.Button("Compare", variant="primary")
    with gr.Row():  # the loss overlay, and beside it the best heads' scores: when each run's induction heads formed
        plot = gr.Plot(label="Loss", show_label=False, scale=3)
        circuits = gr.Plot(label="Circuits", show_label=False, scale=2)
    summary = gr.Dataframe(headers=SUMMARY, label="Results", interactive=False)
    diff = gr.Dataframe(
        value={"headers": ["setting"], "data": [["Pick two or more runs above: the settings that differ show here."]]},
        label="Settings that differ",
        interactive=False,
    )
    _samples_section(runs)
    timer = gr.Timer(REFRESH_S, active=False)
    inputs, outputs = [runs, axis, unit, log_x], [plot, summary, diff, timer, circuits]
    go_btn.click(compare, inputs, outputs, api_name="compare", show_progress="hidden")
    gr.on([axis.change, unit.change, log_x.change], compare, inputs, outputs, api_visibility="private",
          show_progress="hidden")  # fmt: skip
    timer.tick(compare, inputs, outputs, api_visibility="private", show_progress="hidden")
    for trigger in (tab.select, ready.then):
        trigger(run_list, None, runs, api_visibility="private")
    return Panel(runs, inputs, outputs)


def _samples_section(runs: gr.Dropdown) -> None:
    gr.Markdown("### Samples side by side\nThe same prompt and seed, continued by each run's latest checkpoint.")
    with gr.Row():
        prompt = gr.Textbox(label="Prompt", value="", placeholder="(empty: from nothing)", scale=3)
        seed = gr.Number(label="Seed", value=1, precision=0, minimum=0, scale=1)
        go_btn = gr.Button("Sample each run", scale=1)
    table = gr.Dataframe(headers=["run", "sample"], label="Samples", interactive=False, wrap=True,
                         column_widths=["20%", "80%"])  # fmt: skip
    go_btn.click(samples, [runs, prompt, seed], table, api_name="compare_samples", show_progress="hidden", **MODEL)


def link_from(table: gr.Dataframe, panel: Panel, tabs: gr.Tabs) -> None:
    """One click on a run's row in the Train tab's checkpoint table adds it to the comparison and opens this tab."""

    @user_errors
    def pick(
        current: list[str] | None, evt: gr.SelectData, request: gr.Request, profile: gr.OAuthProfile | None
    ) -> tuple[Any, Any]:
        current = [c for c in current if isinstance(c, str)] if isinstance(current, list) else []
        row = getattr(evt, "row_value", None)
        if not isinstance(row, list) or not row or not isinstance(row[0], str) or len(row[0]) > 300:
            return gr.skip(), gr.skip()  # a crafted call: only a row of the table names a run
        run = str(Path(row[0]).parent)
        if run not in visitor(request, profile).runs() and run not in (current or []):
            gr.Warning(f"{run or 'this checkpoint'} has no training log to compare (uploaded or imported)")
            return gr.skip(), gr.skip()
        return gr.update(value=list(dict.fromkeys([*(current or []), run]))), gr.Tabs(selected="compare")

    table.select(pick, panel.runs, [panel.runs, tabs], api_visibility="private").then(
        compare, panel.inputs, panel.outputs, api_visibility="private", show_progress="hidden"
    )
