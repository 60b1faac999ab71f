"""The Train tab's pure pieces, without a server: chart decimation, the form -> config, the progress line."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from gpt.errors import UserInputError
from gpt.events import Compile, Curves, Eval, Event, Start, Step
from playground import live_chart
from playground.charts import decimate
from playground.jobs import STATUS, JobStatus, Snapshot
from playground.train_tab import (
    FIELDS,
    SWITCHES,
    build_config,
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
