"""What the training-health readings cost (issue 22: under 3% of training time).

    python -m bench.health [--steps 250] [--pairs 3] [--smoke]

Trains the tiny preset on the built-in corpus with its default health interval and with none (train.health_interval
= 0), alternately, `--pairs` times, and reports two figures: the time the readings themselves took (the probe around
the optimizer step and its forward pass, timed inside the run) as a share of the run's time, and the median ratio of
the paired runs' wall times (noisier: this machine's speed varies up to 2x between runs). Evaluations and samples
are off in both, so that the runs differ only by the readings. --smoke: 30 steps of 2 sequences, one pair, seconds.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from typing import Any

from gpt import trainer as trainer_module
from gpt.config import load_config, resolve_config_path
from gpt.corpus import sample_corpus_path
from gpt.data import prepare
from gpt.health import Probe
from gpt.trainer import Trainer


class TimedProbe(Probe):
    """The trainer's probe, with the seconds its three calls take."""

    seconds = 0.0

    def before_update(self) -> None:
        t = time.perf_counter()
        super().before_update()
        TimedProbe.seconds += time.perf_counter() - t

    def after_update(self) -> None:
        t = time.perf_counter()
        super().after_update()
        TimedProbe.seconds += time.perf_counter() - t

    def health(self, *args: Any) -> Any:
        t = time.perf_counter()
        out = super().health(*args)
        TimedProbe.seconds += time.perf_counter() - t
        return out


def run(steps: int, health_interval: int, batch: int | None = None) -> tuple[float, float, int]:
    """(wall seconds, seconds in the readings, readings) of one run (`batch`: sequences a step, default the
    preset's)."""
    cfg = load_config(resolve_config_path("tiny"))
    cfg.train.max_steps, cfg.train.health_interval = steps, health_interval
    cfg.train.eval_interval, cfg.train.sample_interval, cfg.train.checkpoint_interval = steps, 0, 0
    cfg.train.eval_iters = 1
    cfg.train.batch_size = batch or cfg.train.batch_size
    data = prepare([sample_corpus_path()], tokenizer="char")
    readings = []
    TimedProbe.seconds = 0.0
    with tempfile.TemporaryDirectory() as out:
        t = time.perf_counter()
        Trainer(cfg, data, out, listeners=[lambda e: readings.append(e) if e.kind == "health" else None]).run()
        wall = time.perf_counter() - t
    return wall, TimedProbe.seconds, len(readings)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=250)
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--smoke", action="store_true", help="does it still run: 30 steps, one pair")
    args = ap.parse_args(argv)
    batch = None
    if args.smoke:
        args.steps, args.pairs, batch = 30, 1, 2  # 2 sequences a step: does it run, not what it costs
    trainer_module.Probe = TimedProbe  # type: ignore[misc]
    interval = load_config(resolve_config_path("tiny")).train.health_interval
    ratios, shares = [], []
    for _ in range(args.pairs):
        on, spent, n = run(args.steps, interval, batch)
        off, _, _ = run(args.steps, 0, batch)
        ratios.append(on / off)
        shares.append(spent / on)
        print(f"health every {interval} steps: {n} readings, {spent:.2f} s of a {on:.1f} s run ({spent / on:.2%}) | "
              f"without: {off:.1f} s | paired {on / off:.3f}x", flush=True)  # fmt: skip
    print(
        f"tiny preset, {args.steps} steps: readings {statistics.median(shares):.2%} of training time (median), "
        f"paired wall time {statistics.median(ratios):.3f}x"
    )


if __name__ == "__main__":
    main()
