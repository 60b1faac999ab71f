"""The task presets: how many steps and seconds until the model has learned the algorithm.

    python -m bench.tasks [--runs grokking grokking-wd0 grokking-grokfast sort] [--full] [--smoke] [--set KEY=VALUE ...]

Each run trains a preset (configs/grokking.yaml, configs/sort.yaml) in this process, as `gpt-train --config NAME`
does (its task prepared first, not timed), and prints when the train accuracy first reached 0.99 and when the
held-out accuracy first reached the preset's target (grokking 0.95, sort 0.99): the step and the seconds since
training started, and how many times later the held-out target came than the train one (grokking: the delay that
is the point). grokking-wd0 is the grokking preset at train.weight_decay=0 (it should not generalise in the
preset's steps), grokking-grokfast the preset with train.grokfast=true (it should generalise sooner). A run stops
at its target unless --full is given (then it trains all its steps, as gpt-train does). --set applies overrides to
every run (how the presets were tuned). --smoke: each run at a few steps, seconds; its figures mean nothing.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import dataclass

from gpt.config import apply_overrides, load_config, resolve_config_path
from gpt.events import Eval, Event
from gpt.tasks import prepare_task
from gpt.trainer import Trainer

TRAIN_TARGET = 0.99
# name -> (preset, overrides, the held-out accuracy it is to reach)
RUNS: dict[str, tuple[str, list[str], float]] = {
    "grokking": ("grokking", [], 0.95),
    "grokking-wd0": ("grokking", ["train.weight_decay=0"], 0.95),
    "grokking-grokfast": ("grokking", ["train.grokfast=true"], 0.95),
    "sort": ("sort", [], 0.99),
}


@dataclass
class Outcome:
    train_at: tuple[int, float] | None = None  # (step, seconds) where train accuracy first reached TRAIN_TARGET
    val_at: tuple[int, float] | None = None  # likewise for the held-out target
    val_acc: float = 0.0  # at the last evaluation
    steps: int = 0
    seconds: float = 0.0  # the whole run's training (from the trainer's start to its end)


def run(preset: str, overrides: list[str], target: float, stop: bool) -> Outcome:
    """Train `preset` with `overrides`; when its accuracies first reached their targets."""
    cfg = apply_overrides(load_config(resolve_config_path(preset)), overrides)
    data = prepare_task(cfg.task)
    out = Outcome()
    with tempfile.TemporaryDirectory() as run_dir:
        t0 = time.perf_counter()

        def listen(e: Event) -> None:
            if not isinstance(e.data, Eval) or e.data.train_acc is None or e.data.val_acc is None:
                return
            now = (e.step, time.perf_counter() - t0)
            out.train_at = out.train_at or (now if e.data.train_acc >= TRAIN_TARGET else None)
            out.val_at = out.val_at or (now if e.data.val_acc >= target else None)
            out.val_acc, out.steps = e.data.val_acc, e.step
            if stop and out.val_at is not None:
                trainer.stop()

        trainer = Trainer(cfg, data, run_dir, listeners=[listen])
        trainer.run()
        out.seconds = time.perf_counter() - t0
    return out


def _at(reached: tuple[int, float] | None) -> str:
    return f"step {reached[0]:,} ({reached[1]:.1f} s)" if reached else "never"


def report(name: str, target: float, o: Outcome) -> str:
    later = f"{o.val_at[0] / o.train_at[0]:.1f}x later" if o.val_at and o.train_at else "-"
    return (f"{name}: train acc {TRAIN_TARGET:g} at {_at(o.train_at)} | val acc {target:g} at {_at(o.val_at)} | "
            f"{later} | final val acc {o.val_acc:.3f} | {o.steps:,} steps in {o.seconds:.1f} s")  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", nargs="+", choices=list(RUNS), default=list(RUNS))
    ap.add_argument("--full", action="store_true", help="train every step of each run, not only to its target")
    ap.add_argument("--set", nargs="*", default=[], help="overrides for every run, e.g. task.modulus=97")
    ap.add_argument("--smoke", action="store_true", help="does it still run: a few steps a run")
    args = ap.parse_args(argv)
    for name in args.runs:
        preset, overrides, target = RUNS[name]
        more = ["train.max_steps=10", "train.eval_interval=5", "task.eval_examples=32"] if args.smoke else []
        outcome = run(preset, overrides + args.set + more, target, stop=not args.full)
        print(report(name, target, outcome), flush=True)


if __name__ == "__main__":
    main()
