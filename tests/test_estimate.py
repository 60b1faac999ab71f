"""The time estimate: what a run does (plan), its cost arithmetic, the calibration's fit (gpt.calibrate) and store,
the trainer's ETA, and one real CLI run against its printed estimate (a generous factor: the +-25% figure is
bench/estimate.py's)."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gpt import calibrate, estimate
from gpt.config import Config, ModelConfig, TrainConfig
from gpt.estimate import FEATURES, KINDS, Costs, Plan, Units, plan, run_seconds, train_seconds, units
from gpt.trainer import Meter

N = len(FEATURES)


def unit(index: int, value: float) -> tuple[float, ...]:
    return tuple(value if i == index else 0.0 for i in range(N))


# every step costs 10 ms, every eval forward 2 ms, every sampled token 1 ms, every save 50 ms (+ nothing per byte)
COSTS = Costs(step=unit(0, 0.010), first=unit(0, 0.5), eval=unit(0, 0.002), token=unit(0, 0.001), save=(0.05, 0.0))


def tiny(**train: object) -> Config:
    cfg = Config()
    cfg.model = ModelConfig(vocab_size=80, block_size=64, n_layer=4, n_head=4, n_embd=128, dropout=0.0)
    preset = {"eval_interval": 250, "eval_iters": 20, "sample_interval": 500, "sample_tokens": 200,
              "checkpoint_interval": 500}  # fmt: skip
    cfg.train = dataclasses.replace(TrainConfig(), **{**preset, **train})  # type: ignore[arg-type]
    return cfg


def test_plan_counts_what_the_trainer_does() -> None:
    tc = tiny(max_steps=300).train
    assert plan(tc) == Plan(steps=300, evals=2, samples=1, latest=1, best=2)  # evals at 250 and 300, sample at 300
    tc = tiny(max_steps=2000).train
    # evals at 250..2000, samples at 500..2000, checkpoints at 500, 1000, 1500 and after the loop
    assert plan(tc) == Plan(steps=2000, evals=8, samples=4, latest=4, best=8)
    assert plan(tc, 1999) == Plan(1, 1, 1, 1, 1)  # the last step still evaluates, samples and saves
    assert plan(tc, 1000) == Plan(1000, 4, 2, 2, 4)  # what is left of a run resumed at step 1000
    assert plan(tc, 2000) == Plan(0, 0, 0, 0, 0)
    tc = tiny(max_steps=301, sample_interval=0, checkpoint_interval=0).train
    assert plan(tc) == Plan(301, 2, 0, 1, 2)  # 250 and the last (301); no samples; only the final save


def test_train_seconds_counts_evals_samples_and_checkpoints() -> None:
    cfg = tiny(max_steps=300)
    steps = 300 * 0.010 + 0.5  # the steps and the first one's extra
    evals = 2 * 20 * 0.002
    samples = 1 * 200 * 0.001
    saves = (1 + 2) * 0.05  # the final latest, two best
    assert train_seconds(cfg, 0.0, costs=COSTS) == pytest.approx(steps + evals + samples + saves)
    assert train_seconds(cfg, 0.0, 100, extras=False, costs=COSTS) == pytest.approx(1.0)
    # each part moves the total by exactly its own cost
    more_evals = tiny(max_steps=300, eval_interval=100)  # 100, 200, 300
    assert train_seconds(more_evals, 0.0, costs=COSTS) - train_seconds(cfg, 0.0, costs=COSTS) == pytest.approx(
        20 * 0.002 + 0.05
    )
    no_samples = tiny(max_steps=300, sample_interval=0)
    assert train_seconds(cfg, 0.0, costs=COSTS) - train_seconds(no_samples, 0.0, costs=COSTS) == pytest.approx(0.2)
    checkpoints = tiny(max_steps=300, checkpoint_interval=100)  # 100 and 200, plus the final one
    assert train_seconds(checkpoints, 0.0, costs=COSTS) - train_seconds(cfg, 0.0, costs=COSTS) == pytest.approx(0.1)


def test_more_steps_take_proportionally_longer() -> None:
    costs = Costs(step=(1e-3, 5e-4, 1e-9, 1e-8, 1e-12, 1e-11, 1e-9), first=unit(0, 0.0), eval=unit(0, 0.0),
                  token=unit(0, 0.0), save=(0.0, 0.0))  # fmt: skip
    cfg = tiny(max_steps=2000)
    flops = estimate.model_size(cfg, 80)[1]
    assert train_seconds(cfg, flops, 600, costs=costs) == pytest.approx(3 * train_seconds(cfg, flops, 200, costs=costs))
    # and with everything counted, a run twice as long (same intervals) takes about twice as long
    default = estimate.DEFAULT_COSTS
    t300 = train_seconds(tiny(max_steps=300), flops, costs=default)
    t600 = train_seconds(tiny(max_steps=600), flops, costs=default)
    assert 1.6 < t600 / t300 < 2.2
    # a bigger model takes longer per step
    big = tiny(max_steps=300)
    big.model.n_layer, big.model.n_embd = 8, 256
    assert train_seconds(big, estimate.model_size(big, 80)[1], costs=costs) > 2 * t300 / t300 * train_seconds(
        tiny(max_steps=300), flops, costs=costs
    )


def test_vocabulary_comes_from_the_flops() -> None:
    """The Train tab's config carries the library's default vocabulary; model_size's FLOPs carry the data's."""
    costs = Costs(step=unit(6, 1e-6), first=unit(0, 0.0), eval=unit(6, 1e-6), token=unit(6, 1e-6), save=(0.0, 1e-9))
    form = tiny(max_steps=100)
    form.model.vocab_size = 50304
    _, flops = estimate.model_size(form, 80)
    data = tiny(max_steps=100)
    assert units(form, flops, costs=costs) == pytest.approx(units(data, costs=costs))
    assert units(form, costs=costs).step > 100 * units(data, costs=costs).step


@pytest.mark.parametrize(
    "shape", [{}, {"bias": False}, {"n_layer": 3, "n_embd": 96, "block_size": 32, "vocab_size": 1000}]
)
def test_sizes_counted_from_the_shapes_are_the_models(shape: dict[str, object]) -> None:
    from gpt.model import GPT

    mc = ModelConfig(**{"vocab_size": 80, "n_layer": 2, "n_embd": 64, "n_head": 4, "block_size": 64, **shape})  # type: ignore[arg-type]
    model = GPT(mc)
    assert estimate._size(mc) == (model.num_params(), model.flops_per_token())


def synthetic_rows(costs: Costs) -> list[dict[str, object]]:
    rows = []
    for shape in calibrate.SHAPES:
        n_layer, n_embd, n_head, block, batch, vocab = shape
        mc = ModelConfig(vocab_size=vocab, block_size=block, n_layer=n_layer, n_head=n_head, n_embd=n_embd)
        params, fpt = estimate._size(mc)
        row: dict[str, object] = {"shape": list(shape), "params": params, "flops_per_token": fpt}
        for kind in KINDS:
            row[kind] = costs.seconds(kind, estimate.features(mc, 1 if kind == "token" else batch * block))
        weights = 4.0 * params
        row["saves"] = [(3 * weights, costs.save[0] + costs.save[1] * 3 * weights),
                        (weights, costs.save[0] + costs.save[1] * weights)]  # fmt: skip
        rows.append(row)
    return rows


def test_fit_recovers_the_costs_it_was_timed_with() -> None:
    fitted = calibrate.fit(synthetic_rows(estimate.DEFAULT_COSTS))
    for kind in KINDS:
        assert all(c >= 0 for c in getattr(fitted, kind))
    for shape in [(2, 64, 4, 64, 12, 65), (6, 192, 6, 128, 12, 65), (4, 128, 4, 64, 12, 80)]:
        n_layer, n_embd, n_head, block, batch, vocab = shape
        mc = ModelConfig(vocab_size=vocab, block_size=block, n_layer=n_layer, n_head=n_head, n_embd=n_embd)
        feats = estimate.features(mc, batch * block)
        assert fitted.seconds("step", feats) == pytest.approx(estimate.DEFAULT_COSTS.seconds("step", feats), rel=0.02)
    assert fitted.save == pytest.approx(estimate.DEFAULT_COSTS.save, rel=1e-3)


def test_nnls_is_non_negative() -> None:
    rng = np.random.default_rng(0)
    a = rng.random((12, 4))
    x = calibrate.nnls(a, a @ np.array([1.0, 0.0, 2.0, 0.5]))
    assert x == pytest.approx([1.0, 0.0, 2.0, 0.5], abs=1e-9)
    x = calibrate.nnls(a, a @ np.array([1.0, -3.0, 2.0, 0.5]))  # the best non-negative fit of a negative part
    assert (x >= 0).all()


def test_median_of_calibrations_ignores_a_busy_one() -> None:
    slow = dataclasses.replace(COSTS, step=unit(0, 0.100))
    assert Costs.median([COSTS, COSTS, slow]).step == COSTS.step
    again = Costs.from_dict(json.loads(json.dumps(COSTS.to_dict())))
    assert again == COSTS
    with pytest.raises(ValueError):
        Costs.from_dict({**COSTS.to_dict(), "step": [-1.0] * N})


def test_cache_keeps_the_last_calibrations(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPT_PLAYGROUND_CACHE", str(tmp_path))
    assert estimate.known_costs() is None
    key = estimate.machine_key()
    for i in range(estimate.KEEP + 2):
        estimate.add_calibration(key, dataclasses.replace(COSTS, step=unit(0, 0.010 + i * 1e-4)))
    assert len(estimate.calibrations(key)) == estimate.KEEP
    assert estimate.known_costs().step[0] == pytest.approx(0.010 + 4e-4)  # the median of the last five  # type: ignore[union-attr]
    estimate.cache_path().write_text("{not json", encoding="utf-8")
    assert estimate.known_costs() is None  # a broken cache is no calibration, not an error


def test_runs_teach_the_estimate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPT_PLAYGROUND_CACHE", str(tmp_path))
    cfg = tiny(max_steps=300)
    tc, flops = cfg.train, estimate.model_size(cfg, 80)[1]
    estimate.add_calibration(estimate.machine_key(), COSTS)  # this machine's calibration
    here = calibrate.costs_for(tc)
    assert here == COSTS  # (from the store: nothing measured)
    before = train_seconds(cfg, flops, costs=here, corrected=True)
    assert estimate.run_factor(tc) == 1.0
    for ratio in (1.4, 1.6, 9.0):  # runs took longer than estimated (one absurdly)
        estimate.record_run(tc, ratio * 10.0, 10.0)
    assert estimate.run_factor(tc) == pytest.approx(1.6)  # the median
    assert train_seconds(cfg, flops, costs=here, corrected=True) == pytest.approx(1.6 * before)
    assert train_seconds(cfg, flops, costs=COSTS) == pytest.approx(before)  # uncorrected: the model alone
    for _ in range(estimate.KEEP):
        estimate.record_run(tc, 100.0, 1.0)
    assert estimate.run_factor(tc) == 3.0  # kept within bounds
    estimate.record_run(tc, float("nan"), 1.0)  # ignored


def test_start_calibration_does_not_wait_nor_load_dynamo(tmp_path: Path) -> None:
    """The web server calls it at start-up (app.warm_up): it must return at once and keep torch._dynamo out of the
    process, and the estimates meanwhile use the defaults."""
    code = (
        "import sys, time\n"
        "from gpt import calibrate\n"
        "calibrate._measure_in_child = lambda *a: time.sleep(30)\n"  # a calibration that would take long
        "t = time.perf_counter(); calibrate.start_calibration(); took = time.perf_counter() - t\n"
        "print(calibrate.known_costs() is None, took < 1.0, 'torch._dynamo' in sys.modules)\n"
    )
    env = {**os.environ, "GPT_PLAYGROUND_CACHE": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.split() == ["True", "True", "False"], out.stderr


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_eta_uses_the_measured_pace_and_counts_remaining_evals() -> None:
    tc = tiny(max_steps=300).train
    guess = Units(step=0.010, first=0.5, eval=0.040, sample=0.200, latest=0.05, best=0.05)
    clock = Clock()
    meter = Meter(tc, guess, clock)
    clock.now += 2.0  # a slow first step
    meter.tick()
    for _ in range(9):
        clock.now += 0.020  # then twice the estimated pace
        meter.tick()
    step_time, elapsed, eta = meter.lap(10)
    assert step_time == pytest.approx(0.020)  # the first step left out
    assert elapsed == pytest.approx(2.18)
    # 290 steps at the measured pace; 2 evals, 1 sample, 3 saves at the estimate scaled by 0.020 / 0.010
    assert eta == pytest.approx(290 * 0.020 + 2 * (0.080 + 0.1) + 0.4 + 0.1)
    for _ in range(10):
        clock.now += 0.030
        meter.tick()
    _, _, eta = meter.lap(20)  # the second window replaces the first
    assert eta == pytest.approx(280 * 0.030 + 2 * (0.120 + 0.15) + 0.6 + 0.15)
    for _ in range(230):  # ... to step 250, where the evaluation is still to come
        clock.now += 0.030
        meter.tick()
    _, _, eta = meter.lap(250)
    assert eta == pytest.approx(50 * 0.030 + 2 * (0.120 + 0.15) + 0.6 + 0.15)
    with meter.timing("eval"):
        clock.now += 1.0  # it took 1 s, not the 0.12 s guessed
    with meter.timing("best"):
        clock.now += 0.05
    for _ in range(10):
        clock.now += 0.030
        meter.tick()
    step_time, _, eta = meter.lap(260)
    assert step_time == pytest.approx(0.030)  # the evaluation is not a training step
    assert eta == pytest.approx(40 * 0.030 + 1.0 + 0.05 + 0.6 + 0.15)


def test_eta_after_the_last_step_is_what_follows_it() -> None:
    tc = tiny(max_steps=30, eval_interval=10, log_interval=10).train
    clock = Clock()
    meter = Meter(tc, Units(0.01, 0.0, 0.1, 0.2, 0.05, 0.05), clock)
    for _ in range(30):
        clock.now += 0.01
        meter.tick()
    meter.lap(30)
    assert meter.eta(30) == pytest.approx(run_seconds(Plan(0, 1, 1, 1, 1), Units(0.01, 0, 0.1, 0.2, 0.05, 0.05)))


def test_cli_run_takes_about_what_it_printed(tmp_path: Path) -> None:
    """A real run (a fresh calibration, in the CLI's process: the session's cache is empty) against the estimate it
    printed and its ETA at 10% of the steps: within 2x either way (a shared 2-core machine is noisy)."""
    from bench.estimate import train_run

    overrides = ["model.n_layer=2", "model.n_embd=64", "train.eval_interval=100", "train.sample_tokens=100",
                 "train.tensorboard=false"]  # fmt: skip
    # a cache of its own: the session's holds the real times of runs other tests trained under load, which later
    # estimates learn from
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "GPT_PLAYGROUND_CACHE": str(tmp_path / "cache")}
    r = train_run(300, overrides, env, tmp_path / "run")
    real = r["real_s"]
    assert 0.5 * real <= max(r["printed_s"], 0.5) <= 2 * real + 1, r  # printed in whole seconds
    assert 0.5 * r["eta_real_s"] <= max(r["eta_s"], 0.5) <= 2 * r["eta_real_s"] + 1, r


def test_a_calibration_made_while_the_machine_was_busy_is_not_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GPT_PLAYGROUND_CACHE", str(tmp_path))
    monkeypatch.setattr(calibrate, "measure", lambda *a: estimate.DEFAULT_COSTS)
    key = estimate.machine_key()
    ticks = iter([(0, 0), (1000, 900), (2000, 1900), (3000, 2000)])  # quiet, quiet, then 1.8 of 2 busy
    monkeypatch.setattr(calibrate, "_cpu_times", lambda: next(ticks))
    monkeypatch.setattr(calibrate.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(calibrate, "_own_cpu", lambda: 0.0)  # none of it ours
    assert calibrate.measure_and_keep()[1] == pytest.approx(0.2)
    assert len(estimate.calibrations(key)) == 1  # a quiet one: kept
    _, others = calibrate.measure_and_keep()
    assert others == pytest.approx(1.8) and len(estimate.calibrations(key)) == 1  # a busy one: not kept


def test_the_estimate_says_when_the_machine_is_busy_and_gives_a_range(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(calibrate.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(calibrate, "busy_now", lambda: 0.1)
    assert calibrate.busy_note(60) == ""  # quiet: the estimate alone
    monkeypatch.setattr(calibrate, "busy_now", lambda: 1.5)
    assert calibrate.busy_note(60) == (
        "this machine is busy now (1.5 of 2 processors in use): 1 min if it calms down, up to 1 min 45 s while it "
        "stays so"
    )
    monkeypatch.undo()
    assert isinstance(calibrate.busy_now(0.01), float | None)  # the real reading, without waiting long
