"""The Train tab's pure pieces, without a server: chart decimation, the form -> config, the progress line."""

from __future__ import annotations

import numpy as np
import pytest

from gpt.errors import UserInputError
from gpt.events import Step
from playground.charts import decimate
from playground.jobs import Series, Snapshot
from playground.train_tab import FIELDS, build_config, preset_values, progress_html


def test_decimate_keeps_the_extremes_in_order_within_the_budget() -> None:
    x = np.arange(100_000)
    y = np.sin(x / 500.0) + np.where(x == 31_337, 5.0, 0.0)  # one spike that must survive
    dx, dy = decimate(x, y, max_points=2000)
    assert len(dx) <= 2000 and np.all(np.diff(dx) > 0)
    assert dy.max() == y.max() and dy.min() == y.min() and 31_337 in dx
    short_x, short_y = decimate([1, 2, 3], [3.0, 1.0, 2.0])
    assert list(short_x) == [1, 2, 3] and list(short_y) == [3.0, 1.0, 2.0]  # short series pass unchanged


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


def snapshot(
    status: str, last: Step | None, message: str = "", queue: tuple[int, int, float] | None = None
) -> Snapshot:
    return Snapshot("j1", status, message, 3, 150, 300, last, "/runs/run-1", Series(), None, queue)


def test_progress_line_says_where_the_run_is() -> None:
    step = Step(loss=2.5, lr=1e-3, grad_norm=1.0, tokens_per_s=20_000, step_time=0.04, elapsed=6, eta=6, max_steps=300)
    running = progress_html(snapshot("running", step), "run-1")
    assert "step 150 / 300" in running and "ETA 0m06s" in running and "20,000 tokens/s" in running
    assert "width:50.0%" in running
    stopped = progress_html(snapshot("stopped", step, "Training stopped at step 150."), "run-1")
    assert "Training stopped at step 150." in stopped and "ETA" not in stopped
    starting = progress_html(snapshot("starting", None), "run-1")
    assert "Starting…" in starting and "tokens/s" not in starting
    queued = progress_html(snapshot("queued", None, queue=(2, 3, 125.0)), "run-1")
    assert "position 2 of 3" in queued and "2m05s" in queued
