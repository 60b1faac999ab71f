"""The Train tab's pure pieces, without a server: chart decimation, the form -> config, the progress line."""

from __future__ import annotations

import html
import json
import math

import numpy as np
import pytest

from gpt.circuits import CircuitScores
from gpt.errors import UserInputError
from gpt.events import Compile, Curves, Eval, Event, Start, Step
from gpt.health import Health, diagnose, init_check
from playground import charts, health_panel, live_chart
from playground.charts import decimate
from playground.jobs import STATUS, JobStatus, Snapshot
from playground.train_tab import (
    FIELDS,
    SWITCHES,
    build_config,
    export_note,
    headline,
    preset_values,
    progress_html,
    recipe_values,
    switch_text,
)


def test_decimate_keeps_the_extremes_in_order_within_the_budget() -> None:
    x = np.arange(100_000)
    y = np.sin(x / 500.0) + np.where(x == 31_337, 5.0, 0.0)  # one spike that must survive
    dx, dy = decimate(x, y, max_points=2000)
    assert len(dx) <= 2000 and np.all(np.diff(dx) > 0)
    assert max(dy) == y.max() and min(dy) == y.min() and 31_337 in dx
    short_x, short_y = decimate([1, 2, 3], [3.0, 1.0, 2.0])
    assert short_x == [1, 2, 3] and short_y == [3.0, 1.0, 2.0]  # short series pass unchanged


def test_build_config_applies_the_form_and_refuses_what_is_wrong() -> None:
    values = preset_values("tiny")
    names = [key for key, *_ in FIELDS]
    values[names.index("model.n_layer")] = 2
    values[names.index("train.lr")] = 3e-3
    cfg = build_config("custom", values)
    assert cfg.model.n_layer == 2 and cfg.train.lr == 3e-3 and cfg.model.n_embd == 128  # the rest: tiny's
    for key, bad, message in [("train.lr", None, "empty"), ("train.lr", float("nan"), "finite"),
                              ("train.max_steps", "1; model.n_layer=99", "must be a number"),
                              ("model.n_head", 3, "divisible")]:  # fmt: skip
        wrong = list(values)
        wrong[names.index(key)] = bad
        with pytest.raises(UserInputError, match=message):
            build_config("custom", wrong)
    with pytest.raises(UserInputError, match="expected"):
        build_config("tiny", values[:-1])


def test_the_recipe_fills_the_switches_and_each_switch_says_why() -> None:
    names = [key for key, *_ in FIELDS]
    old = dict(zip(names, recipe_values("tiny", "gpt2"), strict=True))
    assert (old["model.pos"], old["model.norm"], old["train.optimizer"], old["model.tie_head"]) == (
        "learned", "layernorm", "adamw", True)  # fmt: skip
    assert old["train.batch_size"] == 12 and old["train.max_steps"] == 2000  # nanoGPT's settings come with it
    assert not isinstance(old["model.n_embd"], int)  # the size stays the user's (gr.skip())
    modern = dict(zip(names, preset_values("tiny"), strict=True))
    assert (modern["model.pos"], modern["model.qk_norm"], modern["train.optimizer"]) == ("rope", True, "muon")
    for key in SWITCHES:
        label, why = switch_text(key)
        assert label and (why is None) == key.startswith(("train.muon_lr", "train.min_lr")), key
        assert why is None or (20 < len(why) < 260 and why.endswith(".")), key
    values = preset_values("tiny", "gpt2")
    values[names.index("model.qk_norm")] = True  # one switch flipped by hand: a custom recipe
    cfg = build_config("tiny", values)
    assert cfg.model.qk_norm and cfg.model.pos == "learned" and cfg.train.optimizer == "adamw"
    values[names.index("model.qk_norm")] = "yes please"
    with pytest.raises(UserInputError, match="yes / no"):
        build_config("tiny", values)
    values[names.index("model.qk_norm")] = False
    values[names.index("model.pos")] = "alibi"
    with pytest.raises(UserInputError, match="learned or rope"):
        build_config("tiny", values)


def test_the_switches_say_before_training_whether_the_model_exports() -> None:
    """The sentence under the recipe switches applies the export's own rule (gpt.interop) to the form's settings."""
    names = [key for key, *_ in FIELDS]
    note = lambda values: export_note("", "tiny", None, None, *values)  # noqa: E731 - (no request: no checkpoint)
    modern = note(preset_values("tiny"))
    assert modern.startswith("✅") and "ForCausalLM`" in modern and "context" not in modern  # the default leaves
    old = note(preset_values("tiny", "gpt2"))
    assert "`GPT2LMHeadModel`" in old and "stops at 64 tokens" in old  # learned positions: a hard end there
    values = preset_values("tiny")
    values[names.index("model.activation")], values[names.index("model.qk_norm")] = "relu2", True
    stuck = note(values)
    assert stuck.startswith("⚠️") and "model.activation=relu2 with model.qk_norm=true" in stuck
    values[names.index("model.bias")] = True
    assert "model.bias=true" in note(values)
    values[names.index("model.n_layer")] = "lots"
    assert note(values) == ""  # settings that do not hold together: the size line says what is wrong


def snapshot(
    status: JobStatus, last: Step | None, message: str = "", queue: tuple[int, int, float] | None = None
) -> Snapshot:
    return Snapshot("j1", status, message, 3, 150, 300, last, "/runs/run-1", Curves(), None, queue)


def test_progress_line_says_where_the_run_is() -> None:
    step = Step(loss=2.5, lr=1e-3, grad_norm=1.0, tokens_per_s=20_000, step_time=0.04, elapsed=6, eta=6, max_steps=300)
    running = progress_html(snapshot("running", step), "run-1")
    assert "step 150 / 300" in running and "ETA 6 s" in running and "20,000 tokens/s" in running
    assert "val" not in running  # not evaluated yet
    evaluated = snapshot("running", step)
    for e in (Event(0, Start(1, 256, 300, "cpu", "float32", 1, "/runs/run-1", {})),
              Event(150, Eval(1.52, 4.57, True, 1.52 / math.log(2) / 1.0015))):  # fmt: skip
        evaluated.curves.record(e)
    assert "loss 2.500 · val 1.520 (2.19 bits/byte)" in progress_html(evaluated, "run-1")
    assert "width:50.0%" in running
    stopped = progress_html(snapshot("stopped", step, "Training stopped at step 150."), "run-1")
    assert "Training stopped at step 150." in stopped and "ETA" not in stopped
    assert f"background:{STATUS['stopped'].colour}" in stopped and f"background:{STATUS['running'].colour}" in running
    assert STATUS["stopped"].colour != STATUS["running"].colour != STATUS["error"].colour
    starting = progress_html(snapshot("starting", None), "run-1")
    assert "Starting…" in starting and "tokens/s" not in starting
    queued = progress_html(snapshot("queued", None, queue=(2, 3, 125.0)), "run-1")
    assert "position 2 of 3" in queued and "2 min 5 s" in queued
    # a run that never trained (it left the line, or failed before its first step) shows no bar, steps or checkpoint
    for status, message in [("left", "You left the queue."), ("error", "the data set is too short")]:
        never = progress_html(Snapshot("j1", status, message, 3, 0, 2000, None, "/runs/run-1", Curves(), None), "r")
        assert message in never and "step" not in never and "checkpoint" not in never
    # Stop pressed: the line says so, with no ETA, until the run says where it stopped
    stopping = Snapshot("j1", "running", "", 3, 150, 300, step, "/runs/run-1", Curves(), None, stopping=True)
    assert "Stopping after the current step (step 150)" in progress_html(stopping, "r")
    assert "ETA" not in progress_html(stopping, "r")
    assert headline(stopping, "r") == "Stopping after the current step (step 150)…"
    assert headline(snapshot("stopped", step, "Training stopped at step 157."), "r") == "Training stopped at step 157."
    # torch.compile's phase (a GPU's default): said while the first step waits for it, and its failure kept in view
    compiling = Snapshot("j1", "running", "", 3, 0, 300, None, "/runs/r", Curves(), None, compile=Compile(None))
    assert headline(compiling, "r").startswith("Compiling the model (torch.compile; the first step waits for it")
    failed = Snapshot("j1", "running", "", 3, 150, 300, step, "/runs/r", Curves(), None,
                      compile=Compile(3.0, "RuntimeError: no C++ compiler"))  # fmt: skip
    assert "no C++ compiler" in headline(failed, "r") and "training on without it (eager)" in headline(failed, "r")
    done = Snapshot("j1", "running", "", 3, 150, 300, step, "/runs/r", Curves(), None, compile=Compile(42.0))
    assert headline(done, "r") == "Training… → `r`"


def test_every_job_status_has_its_label_and_colour() -> None:
    from typing import get_args

    assert set(STATUS) == set(get_args(JobStatus))
    # a run without a message of its own says its status in words, not the status's code
    assert headline(snapshot("error", None), "r") == "Training failed"
    assert headline(snapshot("left", None), "r") == "Left the queue"


def test_durations_read_as_people_write_them() -> None:
    from gpt.events import format_duration

    assert [format_duration(s) for s in (0, 14, 60, 125, 3600, 3780, 7322)] == [
        "0 s", "14 s", "1 min", "2 min 5 s", "1 h", "1 h 3 min", "2 h 2 min"]  # fmt: skip


class Page:
    """What the browser does with the live chart's updates (playground.live_chart.JS), in Python."""

    def __init__(self, name: str) -> None:
        self.name, self.traces, self.have = name, [], ""

    def tick(self, run: str, series: Curves) -> dict | None:
        raw = live_chart.update(self.name, run, series, self.have)
        if raw is None:
            return None
        update = json.loads(raw)
        if update["kind"] == "full":
            self.traces = [(list(t["x"]), list(t["y"])) for t in update["figure"]["data"]]
        else:
            assert update["from"] == json.loads(self.have)["sent"]  # exactly the points the page lacks
            for i, x, y in zip(update["traces"], update["x"], update["y"], strict=True):
                self.traces[i][0].extend(x)
                self.traces[i][1].extend(y)
        self.have = json.dumps({"kind": "have", "run": update["run"], "sent": update["sent"],
                                "shown": len(self.traces[0][0])})  # fmt: skip
        return update


def grow(series: Curves, steps: range) -> None:
    for step in steps:
        series.steps.append(step)
        series.loss.append(3.0 - step / 1e4 + (1.0 if step == 3_333 else 0.0))  # one spike that must stay visible
        series.lr.append(1e-3)
        series.tokens_per_s.append(20_000.0)
        if step % 50 == 0:
            series.eval_steps.append(step)
            series.val_loss.append(3.1 - step / 1e4)
            series.val_bpb.append((3.1 - step / 1e4) / math.log(2))


def test_live_chart_sends_each_point_once_then_decimates_a_long_run() -> None:
    series, page = Curves(), Page("loss")
    grow(series, range(1, 101))
    assert page.tick("run-a", series)["kind"] == "full"  # a page that holds nothing gets the figure
    assert page.tick("run-a", series) is None  # nothing new: nothing sent
    grow(series, range(101, 121))
    update = page.tick("run-a", series)
    assert update["kind"] == "extend" and [len(x) for x in update["x"]] == [20, 20, 0, 0]  # only the 20 new points
    assert len(json.dumps(update)) < 1500
    grow(series, range(121, 151))
    page.tick("run-a", series)
    assert page.traces[0] == (series.steps, series.loss) and page.traces[2] == (series.eval_steps, series.val_loss)
    assert page.traces[3] == (series.eval_steps, series.val_bpb)  # the val loss in bits per byte, beside it
    kinds = []
    for start in range(151, 10_001, 150):  # a long run: the page never holds more than 2 x MAX_POINTS points
        grow(series, range(start, start + 150))
        kinds.append(page.tick("run-a", series)["kind"])
        assert len(page.traces[0][0]) <= live_chart.MAX_SHOWN
    assert "full" in kinds[1:] and kinds.count("extend") > 10 * kinds.count("full")
    x, y = page.traces[0]
    assert x[-1] == series.steps[-1] and x == sorted(set(x)) and max(y) == max(series.loss)
    assert page.traces[2] == (series.eval_steps, series.val_loss)  # val points are never decimated
    assert page.tick("run-b", series)["kind"] == "full"  # another run: drawn whole


@pytest.mark.parametrize(
    "have",
    ["", None, 7, ["x"], "{", "null", "[]", '"have"', '{"kind": "have"}', "x" * 5000,
     '{"kind": "have", "run": "run-a", "sent": {"steps": 1e400, "eval_steps": 0}, "shown": 1}',
     '{"kind": "have", "run": "run-a", "sent": {"steps": NaN, "eval_steps": 0}, "shown": 1}',
     '{"kind": "have", "run": "run-a", "sent": {"steps": 999, "eval_steps": 0}, "shown": 1}',
     '{"kind": "have", "run": "run-a", "sent": {"steps": -1, "eval_steps": 0}, "shown": 1}',
     '{"kind": "have", "run": "run-a", "sent": "steps", "shown": 1}',
     '{"kind": "have", "run": "other", "sent": {"steps": 1, "eval_steps": 0}, "shown": 1}'],
)  # fmt: skip
def test_live_chart_answers_anything_a_page_may_claim_with_the_whole_figure(have: object) -> None:
    series = Curves()
    grow(series, range(1, 11))
    update = json.loads(live_chart.update("loss", "run-a", series, have))
    assert update["kind"] == "full" and update["figure"]["data"][0]["x"] == series.steps


def test_the_app_slows_gradios_idle_polling() -> None:
    """app.idle_gently sets attributes of Gradio's queue: they must still be Gradio's own, or setting them does
    nothing (an upgrade of the pinned gradio that renames them fails here)."""
    import gradio as gr

    from app import idle_gently

    demo = gr.Blocks()
    demo.queue()
    assert (demo._queue.sleep_when_free, demo._queue.progress_update_sleep_when_free) == (0.001, 0.01)
    idle_gently(demo)
    assert (demo._queue.sleep_when_free, demo._queue.progress_update_sleep_when_free) == (0.01, 0.1)


def test_compare_puts_a_char_and_a_bpe_run_on_one_bits_per_byte_axis() -> None:
    """Per token their losses do not compare (a BPE token is several characters); per byte of text they do."""
    from playground.charts import compare_figure

    def run(bytes_per_token: float, losses: list[float]) -> Curves:
        c = Curves()
        c.record(Event(0, Start(1, 64, 100, "cpu", "float32", 1, "/runs/r", {})))
        for i, loss in enumerate(losses, start=1):
            c.record(Event(10 * i, Step(loss, 1e-3, 1.0, 1000.0, 0.1, float(i), 1.0, 100)))
        c.record(Event(10 * len(losses), Eval(losses[-1], math.exp(losses[-1]), True,
                                              losses[-1] / math.log(2) / bytes_per_token)))  # fmt: skip
        return c

    char, bpe, old = run(1.0, [2.0, 1.6]), run(2.5, [4.0, 3.5]), run(1.0, [2.0, 1.9])
    old.val_bpb[-1] = None  # (logged before bits per byte were)
    per_token = compare_figure({"char": char, "bpe": bpe}, "steps", "step")
    assert [t.y[-1] for t in per_token.data] == [1.6, 1.6, 3.5, 3.5]  # the BPE run looks far worse per token
    per_byte = compare_figure({"char": char, "bpe": bpe, "old": old}, "steps", "step", "bpb")
    assert [t.name for t in per_byte.data] == ["char train", "char val", "bpe train", "bpe val"]
    expected = [1.6 / math.log(2), 1.6 / math.log(2), 3.5 / math.log(2) / 2.5, 3.5 / math.log(2) / 2.5]
    assert [t.y[-1] for t in per_byte.data] == pytest.approx(expected)  # 2.31 and 2.02 bits per byte: BPE is better
    assert per_byte.layout.yaxis.title.text == "bits per byte" and "old" in per_byte.layout.title.text
    fresh = Curves()  # a run still before its first evaluation: its train curve per token, and a note per byte
    fresh.record(Event(10, Step(3.0, 1e-3, 1.0, 1000.0, 0.1, 1.0, 1.0, 100)))
    assert [t.name for t in compare_figure({"new": fresh}, "steps", "step").data] == ["new train", "new val"]
    assert "new" in compare_figure({"new": fresh}, "steps", "step", "bpb").layout.title.text


GROUPS = ["embedding", "layer 1 attention", "layer 1 MLP", "layer 2 attention", "layer 2 MLP", "head"]


def reading(ratio: float, sick: bool = False) -> Health:
    """A health reading of a 2-layer model: every group's ratio `ratio` (layer 1 MLP's None: no update reached it);
    a sick one has a quarter of layer 2's MLP units dead and its attention collapsed."""
    ratios = [ratio, ratio, None, ratio, ratio, ratio]
    dead, entropy = ([0.0, 0.25], [0.05, 0.1]) if sick else ([0.0, 0.02], [1.9, 2.2])
    return Health(GROUPS, ratios, [0.5, 0.2, 0.1, 0.2, 0.1, 0.4], ["layer 1", "layer 2"], dead, [0.1, 0.3], entropy,
                  2.9)  # fmt: skip


def health_run(*readings: Health, init_loss: float = 4.2) -> Curves:
    """A run's curves: its start, the init check, the heads scored at step 0 and 50, a reading every 25 steps."""
    c = Curves()
    c.record(Event(0, Start(1, 64, 100, "cpu", "float32", 1, "/runs/r", {"train": {"health_interval": 25}})))
    c.record(Event(0, init_check(init_loss, 65)))
    for step, induction in ((0, [[0.02, 0.03], [0.04, 0.05]]), (50, [[0.03, 0.02], [0.1, 0.6]])):
        c.record(Event(step, CircuitScores([[0.3, 0.1], [0.05, 0.08]], [[0.0] * 2] * 2, induction, -0.2 * step / 50,
                                           "text", 16)))  # fmt: skip
    for i, r in enumerate(readings):
        c.record(Event(25 * (i + 1), r))
    return c


def test_the_health_chart_draws_every_group_and_layer_against_the_healthy_range() -> None:
    c = health_run(reading(-2.0), reading(-2.5))
    fig = charts.health_figure(c)
    assert [t.name for t in fig.data if t.showlegend is not False] == GROUPS  # the legend: one entry per group
    by_panel = {axis: [t for t in fig.data if t.yaxis == axis] for axis in ("y", "y2", "y3", "y4")}
    assert [len(by_panel[a]) for a in by_panel] == [6, 6, 2, 2]  # ratio and gradient per group, two per layer
    embedding, _, mlp1 = by_panel["y"][:3]
    assert list(embedding.x) == [25, 50] and list(embedding.y) == [-2.0, -2.5]
    assert list(mlp1.y) == [None, None]  # no update: a gap, not a zero
    assert list(by_panel["y2"][0].y) == [0.5, 0.5] and fig.layout.yaxis2.type == "log"
    assert [t.name for t in by_panel["y4"]] == ["layer 1 attention", "layer 2 attention"]  # toggled with its group
    assert list(by_panel["y3"][1].y) == [0.02, 0.02] and by_panel["y3"][1].legendgroup == "layer 2 MLP"
    lines = {(s.yref, s.y0) for s in fig.layout.shapes if s.type == "line"}
    assert ("y", -3.0) in lines and ("y4", 2.9) in lines  # the lectures' -3; attention spread evenly
    assert "Update:data ratio" in fig.layout.annotations[0].text


def test_the_health_chart_appends_each_reading_live() -> None:
    c, page = health_run(reading(-2.0)), Page("health")
    assert page.tick("run-a", c)["kind"] == "full"
    c.record(Event(50, reading(-1.5)))
    update = page.tick("run-a", c)
    assert update["kind"] == "extend" and update["x"] == [[50]] * 16  # one point more on each of the 16 lines
    fresh = [(list(t.x), list(t.y)) for t in charts.health_figure(c).data]
    assert page.traces == fresh  # the page holds what a whole redraw would show
    echo = live_chart.update("health", "run-b", c, None)  # a chart in a tab not opened yet sends our update back:
    assert echo is not None and live_chart.update("health", "run-b", c, echo) == echo  # it gets it whole again
    assert live_chart.update("health", "run-a", Curves(), "") is None  # no reading yet: the placeholder stays


def test_the_circuits_chart_shows_each_layers_best_head_and_the_in_context_score() -> None:
    c = health_run(reading(-2.0))
    fig = charts.circuits_figure(c)
    named = {t.name: t for t in fig.data}
    assert list(named) == ["layer 1 induction", "layer 2 induction", "layer 1 previous token",
                           "layer 2 previous token", "in-context"]  # fmt: skip
    assert list(named["layer 2 induction"].x) == [0, 50] and list(named["layer 2 induction"].y) == [0.05, 0.6]
    assert list(named["layer 1 previous token"].y) == [0.3, 0.3] and named["layer 1 previous token"].line.dash == "dot"
    assert list(named["in-context"].y) == [0.0, -0.2]
    note = health_panel.circuits_note(c)
    assert "At step 50: best induction head L2H2 0.60 · best previous-token head L1H1 0.30" in note
    assert "in-context -0.20 nats (the context helps)" in note and "induction head</b> completes" in note


def test_the_health_note_says_what_is_wrong_in_words() -> None:
    fresh = health_panel.health_note(health_run())
    assert "✓ Init: the loss at step 0 is 4.20, close to ln(65)" in fresh
    assert "The first health reading comes soon: one every 25 steps" in fresh
    healthy = health_panel.health_note(health_run(reading(-3.5), reading(-2.2)))
    assert 'class="ok">✓ At step 50: all readings in their healthy range.' in healthy and "warn" not in healthy
    sick = health_panel.health_note(health_run(reading(-2.2), reading(-0.5, sick=True), init_loss=9.0))
    problems = diagnose(reading(-0.5, sick=True))
    assert len(problems) == 3  # the rate, the dead units of layer 2 and the collapsed attention
    assert f'class="warn">⚠️ Init: {html.escape(init_check(9.0, 65).message)}' in sick
    assert all(f'class="warn">⚠️ At step 50: {html.escape(p)}' in sick for p in problems)
    assert sick.count('class="warn"') == 4 and "healthy range" not in sick
    # a warning that came and went stays on screen: the latest reading is fine, an earlier one was not
    healed = health_panel.health_note(health_run(reading(-2.2), reading(-0.5, sick=True), reading(-2.2)))
    assert "✓ At step 75: all readings in their healthy range." in healed
    assert all(f"⚠️ Earlier, at step 50: {html.escape(p)}." in healed for p in problems)
    assert health_panel.health_note(Curves()) == '<div class="health-note"></div>'  # no run: nothing to say
    none = Curves()
    none.record(Event(0, Start(1, 64, 100, "cpu", "float32", 1, "/runs/r", {"train": {"health_interval": 0}})))
    assert "takes no health readings" in health_panel.health_note(none)


def test_compare_draws_each_runs_best_heads_and_names_the_runs_without_scores() -> None:
    a, b, old = health_run(reading(-2.0)), health_run(), Curves()
    b.induction[-1] = [[0.1, 0.2], [0.3, 0.9]]
    for c, step in ((a, 50), (b, 50), (old, 10)):  # (steps logged, for the tokens axis)
        c.record(Event(step, Step(2.0, 1e-3, 1.0, 1000.0, 0.1, 1.0, 1.0, 100)))
    fig = charts.compare_circuits_figure({"a": a, "b": b, "old": old}, "tokens", "tokens seen")
    assert [t.name for t in fig.data] == ["a induction", "a previous token", "b induction", "b previous token"]
    assert list(fig.data[0].y) == [0.05, 0.6] and list(fig.data[2].y) == [0.05, 0.9]  # the best of all heads
    assert list(fig.data[0].x) == [0, 50 * 64]  # tokens seen at step 0 and 50
    assert fig.data[0].line.color == fig.data[1].line.color != fig.data[2].line.color  # a colour per run
    assert "not shown, no circuit scores logged: old" in fig.layout.title.text


def test_after_a_restart_the_train_tab_draws_the_last_run_from_its_log(tmp_path, monkeypatch) -> None:
    from gpt.events import MetricsLog
    from playground.hosting import Visitor
    from playground.train_tab import POLLED, logged_run

    monkeypatch.setenv("GPT_PLAYGROUND_RUNS", str(tmp_path))
    run = tmp_path / "run-1"
    log = MetricsLog(run / "metrics.jsonl")
    for e in (Event(0, Start(1, 64, 100, "cpu", "float32", 1, str(run), {})), Event(0, init_check(4.2, 65)),
              Event(10, Step(3.0, 1e-3, 1.0, 1000.0, 0.1, 1.0, 1.0, 100)), Event(25, reading(-2.0))):  # fmt: skip
        log(e)
    out = logged_run(str(run), {}, {}, Visitor(None))
    assert set(out) <= set(POLLED)
    assert "Your last run</b> <code>run-1</code>, as its log has it: step 10" in out["progress"]
    assert json.loads(out["health"])["kind"] == "full" and json.loads(out["loss"])["kind"] == "full"
    assert "At step 25: all readings in their healthy range" in out["health_note"]
    again = logged_run(str(run), out["seen"], {}, Visitor(None))
    assert set(again) == {"seen", "timer"}  # drawn once
    gone = logged_run(str(tmp_path / "gone"), {}, {}, Visitor(None))  # deleted since: the page says so, once
    assert "no longer on this server" in gone["progress"] and gone["message"] == "" and set(gone) > {"timer"}


def test_a_page_load_restores_the_session_from_what_the_visitor_kept_checking_each_value(tmp_path, monkeypatch) -> None:
    """The browser may send any secret, and the visitor's record on disk any JSON: only what checks out comes back."""
    from playground import hosting
    from playground.common import restore_session
    from playground.session import Session

    monkeypatch.setenv("GPT_PLAYGROUND_CACHE", str(tmp_path / "cache"))
    me = hosting.visitor(None)
    data, run = tmp_path / "data", tmp_path / "run-1"
    data.mkdir()
    run.mkdir()
    (data / "meta.json").write_text("{}")
    hosting.remember(me, data_dir=str(data), data_label="mine", run_dir=str(run))
    secret, session = restore_session({"not": "a secret"}, None, None, None)
    assert hosting.SECRET.match(secret)
    assert session == Session(data_dir=str(data), data_label="mine", run_dir=str(run))
    kept = Session(data_dir="/elsewhere", data_label="chosen here")  # this page's own choice stays
    assert restore_session(secret, kept, None, None)[1].data_dir == "/elsewhere"
    record = next((tmp_path / "cache" / "visitors").glob("*.json"))
    record.write_text(json.dumps({"data_dir": 5, "run_dir": ["x"], "data_label": None}))
    assert restore_session(secret, None, None, None)[1] == Session()
    record.write_text(json.dumps({"data_dir": str(tmp_path / "gone"), "run_dir": str(tmp_path / "gone")}))
    assert restore_session(secret, None, None, None)[1] == Session()


def test_generated_pieces_show_their_alternatives_and_branch_marks() -> None:
    import gradio as gr

    from playground.generate_tab import (
        BRANCH,
        Piece,
        alternatives_rows,
        back_to_original,
        branch_choices,
        outputs_of,
    )

    a = Piece("a", 0.6, (("a", 0.6), ("b", 0.3), ("c", 0.1)), (1, 2, 3), (1,))
    b = Piece("é", 0.1, (("é", 0.1),), (9,), (7, 9), branch=True)
    assert branch_choices(a) == [("b", 0.3, 2), ("c", 0.1, 3)]  # the piece's own token is not a choice
    assert alternatives_rows(a, 0) == [["step 1: → 'a' (chosen)", 0.6], ["'b'", 0.3], ["'c'", 0.1]]
    highlighted, plain, pieces = outputs_of("P", [a, b])
    assert highlighted == [("P", None), ("a", "p ≥ 0.5"), ("é", BRANCH)] and plain == "aé" and pieces == [a, b]
    assert back_to_original("P", [a])[:3] == ([("P", None), ("a", "p ≥ 0.5")], "a", [a])
    for junk in (None, [], ("x", "y", "z"), "text"):  # nothing kept (or not ours): nothing changes
        assert back_to_original("P", junk) == (gr.skip(),) * 4


def test_a_panel_without_points_says_when_they_come_and_is_drawn_whole_when_they_do() -> None:
    series, page = Curves(), Page("loss")
    grow(series, range(1, 40))  # steps, no evaluation yet
    first = page.tick("run-a", series)
    layout = first["figure"]["layout"]
    assert layout["yaxis2"]["showticklabels"] is False  # no made-up -1..2 axis for bits per byte
    assert any(a["text"] == "after the first evaluation" for a in layout["annotations"])
    grow(series, range(40, 60))  # the evaluation at step 50: that panel's first point
    update = page.tick("run-a", series)
    assert update["kind"] == "full"
    layout = update["figure"]["layout"]
    assert layout["yaxis2"].get("showticklabels", True) is True
    assert not any(a["text"] == "after the first evaluation" for a in layout["annotations"])
    grow(series, range(60, 70))
    assert page.tick("run-a", series)["kind"] == "extend"  # and appended to from then on


def test_before_its_first_logged_step_a_run_says_what_it_is_doing() -> None:
    from playground.jobs import Snapshot
    from playground.train_tab import headline

    snap = Snapshot("j", "running", "", 1, 0, 250, None, "/x/run-a", Curves(), None)
    assert headline(snap, "run-a") == "First steps: scoring the untrained model, then training → `run-a`"
