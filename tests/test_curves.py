"""A run's curves (gpt.events.Curves): recorded from events, written to metrics.jsonl, read back, old files too."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest

from gpt.circuits import CircuitScores
from gpt.events import Curves, Eval, Event, MetricsLog, Sample, Start, Step, read_metrics
from gpt.health import Health, init_check


def start(step: int = 0) -> Event:
    return Event(step, Start(1234, 128, 100, "cpu", "float32", 1, "/runs/r", {"train": {"lr": 0.001}}))


def step(n: int, loss: float, elapsed: float) -> Event:
    return Event(n, Step(loss, lr=1e-3 * n, grad_norm=0.5, tokens_per_s=1000.0, step_time=0.1, elapsed=elapsed, eta=9.0,
                         max_steps=100))  # fmt: skip


def evaluation(n: int, val: float, bytes_per_token: float = 2.0) -> Event:
    return Event(n, Eval(val, 2.718281828**val, True, val / math.log(2) / bytes_per_token))


def health(n: int) -> Event:
    return Event(n, Health(["embedding", "layer 1 MLP"], [-2.5, None], [0.3, 0.1], ["layer 1"], [0.0], [0.5], [1.2],
                           2.1))  # fmt: skip


def circuits(n: int) -> Event:
    return Event(n, CircuitScores([[0.9, 0.1]], [[0.0, 0.2]], [[0.05, 0.6]], -0.3, "text", 16))


SERIES = [f.name for f in dataclasses.fields(Curves) if "at" in f.metadata]


def test_what_a_run_records_is_what_metrics_jsonl_reads_back(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    live, log = Curves(), MetricsLog(path)
    events = [start(), Event(0, init_check(4.2, 65)), circuits(0), step(10, 2.0, 1.5), health(10),
              step(20, 1.0, 3.0), evaluation(20, 1.5), circuits(20), Event(20, Sample("hi"))]  # fmt: skip
    for e in events:
        live.record(e)
        log(e)
    assert live.steps == [10, 20] and live.tokens == [1280, 2560] and live.times == [1.5, 3.0]
    assert live.lr == [0.01, 0.02] and live.eval_steps == [20] and live.val_loss == [1.5]
    assert live.val_bpb == [1.5 / math.log(2) / 2.0]
    assert live.smooth == [2.0, 0.6 * 2.0 + 0.4 * 1.0]  # TensorBoard's smoothing
    assert (live.config, live.params) == ({"train": {"lr": 0.001}}, 1234)
    back = read_metrics(path)
    assert {name: getattr(back, name) for name in SERIES} == {name: getattr(live, name) for name in SERIES}
    assert back.smooth == live.smooth and (back.config, back.params) == (live.config, live.params)
    assert live.health_steps == [10] and live.update_ratio == [[-2.5, None]] and live.attn_uniform == [2.1]
    assert back.health() == live.health() == health(10).data and Curves().health() is None  # the reading, whole
    assert live.circuit_steps == [0, 20] and live.induction == [[[0.05, 0.6]]] * 2 and live.in_context == [-0.3] * 2
    assert back.init == live.init and back.init is not None and back.init.ok and back.init.expected == math.log(65)
    assert len(path.read_text().splitlines()) == 8  # all but the sample


def test_every_series_gets_a_point_at_each_event_of_its_kind() -> None:
    """A series added to Curves without its append in `record` fails here (its lists would not line up)."""
    curves = Curves()
    for e in (start(), step(10, 2.0, 1.5), evaluation(10, 1.9), health(10), circuits(10)):
        curves.record(e)
    kinds = {f.name: f.metadata["at"] for f in dataclasses.fields(Curves) if "at" in f.metadata}
    assert set(kinds.values()) == {"step", "eval", "health", "circuits"}
    for name in SERIES:
        assert len(getattr(curves, name)) == 1, name


def test_a_resumed_run_goes_on_with_its_training_time(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    first = MetricsLog(path)
    for e in (start(), step(10, 2.0, 4.0)):
        first(e)
    second = MetricsLog(path)  # the resumed part: a new process, its clock from 0 again
    for e in (start(10), step(20, 1.0, 1.0)):
        second(e)
    curves = read_metrics(path)
    assert curves.steps == [10, 20] and curves.times == [4.0, 5.0] and curves.tokens == [1280, 2560]


def test_an_older_metrics_file_reads_with_the_series_it_has(tmp_path: Path) -> None:
    """The lines MetricsLog wrote before Curves (no "kind", no lr): read as they are, the new series None."""
    path = tmp_path / "metrics.jsonl"
    lines = [{"start": 0, "config": {"model": {"n_layer": 2}}, "params": 99},
             {"step": 10, "loss": 2.5, "tokens": 1280, "time": 1.25, "tokens_per_s": 900.0},
             {"step": 10, "val_loss": 2.6}]  # fmt: skip
    path.write_text("\n".join(json.dumps(line) for line in lines) + '\n{"step": 20, "lo')  # the last one cut short
    curves = read_metrics(path)
    assert curves.steps == [10] and curves.loss == [2.5] and curves.times == [1.25] and curves.lr == [None]
    assert curves.eval_steps == [10] and curves.val_loss == [2.6] and curves.val_bpb == [None]
    assert curves.train_bpb() is None  # no evaluation in bits per byte: no train curve in them either
    assert curves.config == {"model": {"n_layer": 2}} and curves.params == 99
    assert read_metrics(tmp_path / "missing.jsonl") == Curves()  # a run that has logged nothing yet: empty


def test_a_copy_is_not_reached_by_later_points() -> None:
    curves = Curves()
    for e in (start(), step(10, 2.0, 1.5)):
        curves.record(e)
    shown = curves.copy()
    curves.record(step(20, 1.0, 3.0))
    assert shown.steps == [10] and shown.smooth == [2.0] and curves.smooth == [2.0, 1.6]


def test_the_train_curve_in_bits_per_byte_takes_the_val_splits_bytes_per_token() -> None:
    curves = Curves()
    for e in (start(), step(10, 3.0, 1.0), step(20, 2.0, 2.0)):
        curves.record(e)
    assert curves.train_bpb() is None  # not evaluated yet
    curves.record(evaluation(20, 2.2, bytes_per_token=4.0))
    assert curves.train_bpb() == pytest.approx([3.0 / math.log(2) / 4.0, 2.0 / math.log(2) / 4.0])
