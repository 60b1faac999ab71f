"""Time to a target val loss, recipe against recipe: the way the field measures training now.

    python -m bench.race [--smoke] [--rounds 1] [--only gpt2,modern] [--png bench/results/race.png] [--json PATH]
    python -m bench.race --from-json bench/results/race.json [--png PATH]   # the table and chart again
    python -m bench.race --only relu2+qk_norm,swiglu+qk_norm,relu2 --no-study --rounds 2 [--seed 1338]
                                                       # the default's candidates (`CANDIDATES`), 10 steps apart

Every entrant is a whole `gpt-train` process (`python -m gpt.cli train`) on the built-in corpus, as a user runs it,
timed from its start (imports, data, model) to its end; its output is read as it comes, so each "val loss" line gets
the wall time at which it was printed. The entrants take turns, round after round (the order rotated each round), so
a busy moment of the machine slows a round of all of them, not one entrant's every run.

- gpt2: configs/tiny-2019.yaml, GPT-2's recipe at nanoGPT's CPU shakespeare_char settings (2,000 steps of 12);
- +switch: each of the modern recipe's switches alone on top of it;
- modern: configs/tiny.yaml, the default `gpt-train --config tiny`;
- modern, equal time: the same with as many steps as fit in gpt2's time (scaled from this round's two runs);
- the default's candidates, only when named: the modern recipe with each pairing of MLP (ReLU², SwiGLU) and QK-norm,
  evaluated every 10 steps, with the step and the (interpolated) second at which each reached gpt2's loss;
- the batch study: Muon against AdamW on the modern architecture, at batch sizes 8 to 64 with the same tokens, to
  show where Newton-Schulz's fixed cost per step (it does not grow with the batch) eats Muon's gain.

The val loss is measured the same way for all: during a run, the trainer's evaluations over the same number of
windows (eval_iters x batch_size = EVAL_WINDOWS, whatever the batch); at the end, every window of the whole
validation split, non-overlapping, read from the run's last checkpoint (the table's "final val").
"Time to target" is the first moment an entrant's val loss is at or under gpt2's final val (median over rounds).

Prints the table; writes a PNG of val loss against wall time (the README shows it) and the figures as JSON.
--smoke: does it still run (a few entrants of a few steps, seconds each, evaluated on a few windows, no equal-time
run, a one-layer model of context 32); its figures mean nothing.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
EVAL_WINDOWS = 320  # windows per evaluation during a run, for every entrant
# name: (config, overrides)
ENTRANTS: dict[str, tuple[str, list[str]]] = {
    "gpt2": ("tiny-2019", []),
    "+rope": ("tiny-2019", ["model.pos=rope"]),
    "+rmsnorm": ("tiny-2019", ["model.norm=rmsnorm"]),
    "+relu2": ("tiny-2019", ["model.activation=relu2"]),
    "+swiglu": ("tiny-2019", ["model.activation=swiglu"]),
    "+qk_norm": ("tiny-2019", ["model.qk_norm=true"]),
    "+untied": ("tiny-2019", ["model.tie_head=false"]),
    "+zero_init": ("tiny-2019", ["model.zero_init=true"]),
    "+no_bias": ("tiny-2019", ["model.bias=false"]),
    "+muon": ("tiny-2019", ["train.optimizer=muon"]),
    "+wsd": ("tiny-2019", ["train.schedule=wsd"]),
    "modern": ("tiny", []),
}
# The default's candidates: the modern recipe with each pairing of MLP and QK-norm that a Hugging Face format holds,
# beside the pairing that none does (ReLU² with QK-norm, the default until it had to be exported). They evaluate
# every 10 steps, so that a 5% difference in time to target shows (the preset's every 50 steps is a fifth of its
# run); run only when named in --only, e.g. --only relu2+qk_norm,swiglu+qk_norm,relu2.
FINE = ["train.eval_interval=10"]
CANDIDATES: dict[str, tuple[str, list[str]]] = {
    "relu2+qk_norm": ("tiny", ["model.activation=relu2", "model.qk_norm=true", *FINE]),  # no format has it
    "swiglu+qk_norm": ("tiny", ["model.activation=swiglu", "model.qk_norm=true", *FINE]),  # Qwen3
    "relu2": ("tiny", ["model.activation=relu2", "model.qk_norm=false", *FINE]),  # Arcee
    "swiglu": ("tiny", ["model.activation=swiglu", "model.qk_norm=false", *FINE]),  # Llama
}
EQUAL_TIME = "modern, equal time"
TOKENS = 250 * 32  # the batch study: every run sees the tiny preset's sequences (250 steps of 32)
BATCHES = [8, 16, 32, 64]
# (a smaller model too: one layer, a context of 32; the figures' steps and batches stay)
SMOKE_STEPS = ["train.max_steps=12", "train.eval_interval=6", "train.sample_interval=0", "train.warmup_steps=2",
               "train.health_interval=0", "model.n_layer=1", "model.block_size=32"]  # fmt: skip
SMOKE_WINDOWS = 24  # the smoke's evaluations, during a run and at its end: does it run, not how well

_VAL = re.compile(r"^step (\d+) \| val loss ([\d.]+)")
_COMPLETED = re.compile(r"^training completed at step (\d+)")


@dataclass
class Run:
    name: str
    round: int
    steps: int
    batch: int
    wall_s: float
    final_val: float
    curve: list[tuple[float, float]] = field(default_factory=list)  # (seconds since the process started, val loss)
    curve_steps: list[int] = field(default_factory=list)  # the step of each point of the curve
    tokens_per_s: float = 0.0
    startup_s: float = 0.0  # from the process start to its first training step (imports, data, model)


def config_of(config: str, overrides: list[str]) -> Any:
    from gpt.config import apply_overrides, load_config, resolve_config_path

    return apply_overrides(load_config(resolve_config_path(config)), overrides)


def train(name: str, config: str, overrides: list[str], out: Path, rnd: int, env: dict[str, str],
          windows: int | None = None) -> Run:  # fmt: skip
    """One gpt-train process, its val lines timestamped as they are printed; then the common evaluation (`windows`:
    that many windows in each evaluation, during the run and at its end; None: EVAL_WINDOWS, then the whole split)."""
    cfg = config_of(config, overrides)
    iters = max(1, math.ceil((windows or EVAL_WINDOWS) / cfg.train.batch_size))
    cmd = [sys.executable, "-m", "gpt.cli", "train", "--config", config, "--out", str(out), *overrides,
           f"train.eval_iters={iters}", "train.tensorboard=false"]  # fmt: skip
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    curve, steps, lines, startup = [], [], [], 0.0
    for line in proc.stdout:
        lines.append(line)
        if not startup and line.startswith("training ") and " parameters on " in line:
            startup = time.perf_counter() - start
        if m := _VAL.match(line):
            curve.append((time.perf_counter() - start, float(m.group(2))))
            steps.append(int(m.group(1)))
    wall = time.perf_counter() - start
    if proc.wait() != 0 or not any(_COMPLETED.match(x) for x in lines):
        raise SystemExit(f"{name} failed:\n{''.join(lines[-10:])}")
    final = common_val_loss(out / "latest", windows)
    curve.append((wall, final))
    steps.append(cfg.train.max_steps)
    rates = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    tps = statistics.median(r["tokens_per_s"] for r in rates if "tokens_per_s" in r)
    return Run(name, rnd, cfg.train.max_steps, cfg.train.batch_size, wall, final, curve, steps, tps, startup)


@torch.no_grad()
def common_val_loss(checkpoint: Path, windows: int | None = None) -> float:
    """Mean loss over every non-overlapping window of the validation split (or its first `windows`): the same
    measure for every entrant."""
    from gpt import checkpoint as ckpt
    from gpt.data import load_prepared

    c = ckpt.load(checkpoint)
    val = torch.from_numpy(np.asarray(load_prepared(c.meta["data_dir"]).val).astype(np.int64))
    T = c.config.model.block_size
    n = min((len(val) - 1) // T, windows or len(val))
    x, y = val[: n * T].view(n, T), val[1 : n * T + 1].view(n, T)
    total = 0.0
    for i in range(0, n, 256):
        _, loss = c.model(x[i : i + 256], y[i : i + 256])
        assert loss is not None
        total += float(loss) * len(x[i : i + 256])
    return total / n


def time_to(run: Run, target: float) -> float | None:
    """The first moment the run's val loss was at or under `target` (None: never)."""
    return next((t for t, v in run.curve if v <= target), None)


def crossing(run: Run, target: float) -> tuple[int, float] | None:
    """(step, seconds) at which the run's val loss first reached `target`, the seconds interpolated linearly between
    the evaluation above it and the one at or under it (None: never)."""
    points = list(zip(run.curve_steps, run.curve, strict=False))
    for i, (step, (t, v)) in enumerate(points):
        if v <= target:
            if i == 0:
                return step, t
            t0, v0 = points[i - 1][1]
            return step, t0 + (v0 - target) / (v0 - v) * (t - t0)
    return None


def report_candidates(by: dict[str, list[Run]], target: float) -> list[dict[str, Any]]:
    """The default's candidates side by side: steps and seconds to gpt2's final loss, against the first of them."""
    names = [n for n in CANDIDATES if n in by]
    print(f"\nthe default's candidates (evaluated every 10 steps), to gpt2's final loss {target:.4f}:")
    rows, base = [], None
    for n in names:
        found = [crossing(r, target) for r in by[n]]
        if any(x is None for x in found):
            print(f"  {n:16s} never reaches it (final val {statistics.median(r.final_val for r in by[n]):.4f})")
            continue
        steps = statistics.median(x[0] for x in found if x is not None)
        t = statistics.median(x[1] for x in found if x is not None)
        tps = statistics.median(r.tokens_per_s for r in by[n])
        base = base or t
        print(f"  {n:16s} step {steps:5.0f} | {t:5.1f} s (interpolated) | {tps:7.0f} tok/s | final val "
              f"{statistics.median(r.final_val for r in by[n]):.4f} | {t / base:.3f}x {names[0]}'s time")  # fmt: skip
        rows.append({"entrant": n, "steps_to_target": steps, "seconds_to_target": t, "tokens_per_s": tps,
                     "ratio_to_first": t / base})  # fmt: skip
    return rows


def report(runs: list[Run], png: Path | None) -> dict[str, Any]:
    names = list(dict.fromkeys(r.name for r in runs))
    by = {n: [r for r in runs if r.name == n] for n in names}
    med = {n: {k: statistics.median(getattr(r, k) for r in rs) for k in ("wall_s", "final_val", "tokens_per_s")}
           for n, rs in by.items()}  # fmt: skip
    target = med["gpt2"]["final_val"]
    base_time = med["gpt2"]["wall_s"]
    rows = []
    print(f"target: gpt2's final val loss {target:.4f}, reached in {base_time:.1f} s "
          f"(median of {len(by['gpt2'])} round(s))\n")  # fmt: skip
    print(f"{'entrant':22s} {'steps':>6s} {'batch':>5s} {'wall s':>7s} {'tok/s':>7s} {'final val':>9s} "
          f"{'to target s':>11s} {'vs gpt2':>8s}")  # fmt: skip
    for n in names:
        reached = [time_to(r, target) for r in by[n]]
        t = statistics.median(x for x in reached if x is not None) if all(x is not None for x in reached) else None
        r0 = by[n][0]
        ratio = f"{t / base_time:.2f}x" if t is not None else "never"
        print(f"{n:22s} {r0.steps:6d} {r0.batch:5d} {med[n]['wall_s']:7.1f} {med[n]['tokens_per_s']:7.0f} "
              f"{med[n]['final_val']:9.4f} {(f'{t:.1f}' if t is not None else '-'):>11s} {ratio:>8s}")  # fmt: skip
        rows.append({"entrant": n, "steps": r0.steps, "batch": r0.batch, **med[n], "time_to_target_s": t,
                     "ratio_to_gpt2": t / base_time if t is not None else None})  # fmt: skip
    if "modern" in med:
        t = next(r["time_to_target_s"] for r in rows if r["entrant"] == "modern")
        line = f"\nmodern (the default) reaches gpt2's loss in {t / base_time:.2f}x its time" if t else ""
        if EQUAL_TIME in med:
            eq = med[EQUAL_TIME]
            line += f"; in gpt2's time ({eq['wall_s']:.0f} s) its val loss is {eq['final_val']:.4f}"
        print(line)
    study = [n for n in names if n.startswith(("muon b", "adamw b"))]
    if study:
        print("\nthe batch study: the modern architecture, the same tokens at every batch size")
        for b in sorted({by[n][0].batch for n in study}):
            pair = {opt: med.get(f"{opt} b{b}") for opt in ("muon", "adamw")}
            if pair["muon"] and pair["adamw"]:
                m, a = pair["muon"], pair["adamw"]
                # Muon's gain in time: when it reached AdamW's final loss, against AdamW's whole run
                reached = [time_to(r, a["final_val"]) for r in by[f"muon b{b}"]]
                t = statistics.median(x for x in reached if x is not None) if None not in reached else None
                gain = f"reaches adamw's loss in {t / a['wall_s']:.2f}x its time" if t else "never reaches adamw's loss"
                print(f"  batch {b:3d}: muon {m['wall_s']:5.1f} s val {m['final_val']:.4f} | adamw "
                      f"{a['wall_s']:5.1f} s val {a['final_val']:.4f} | muon's time {m['wall_s'] / a['wall_s']:.2f}x, "
                      f"loss {m['final_val'] - a['final_val']:+.4f}; muon {gain}")  # fmt: skip
    candidates = report_candidates(by, target) if any(n in CANDIDATES for n in names) else []
    if png is not None:
        chart(by, target, png)
        print(f"\nwrote {png}")
    return {"target": target, "rows": rows, "candidates": candidates, "runs": [asdict(r) for r in runs]}


def chart(by: dict[str, list[Run]], target: float, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5.5), dpi=110)
    highlight = {"gpt2": ("#1f77b4", 2.5), "modern": ("#d62728", 2.5), EQUAL_TIME: ("#ff7f0e", 2.0)}
    for name, runs in by.items():
        if name.startswith(("muon b", "adamw b")):
            continue
        r = runs[0]
        colour, width = highlight.get(name, (None, 1.0))
        ts, vs = zip(*r.curve, strict=True)
        ax.plot(ts, vs, marker="o", markersize=3, label=name, color=colour, linewidth=width,
                alpha=1.0 if colour else 0.55)  # fmt: skip
    ax.set_xlim(left=0)
    ax.axhline(target, color="grey", linestyle="--", linewidth=1)
    ax.text(ax.get_xlim()[1], target, " gpt2's final loss", va="bottom", ha="right", color="grey", fontsize=8)
    ax.set_xlabel("wall time since the process started (s)")
    ax.set_ylabel("val loss")
    ax.set_title("Time to a target loss: GPT-2's recipe, each modern switch alone, the modern default")
    low = min(v for rs in by.values() for r in rs for _, v in r.curve)
    ax.set_ylim(low - 0.05, max(2.6, target + 0.5))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png)
    plt.close(fig)


def study_overrides(optimizer: str, batch: int) -> list[str]:
    steps = TOKENS // batch
    return [f"train.optimizer={optimizer}", f"train.batch_size={batch}", f"train.max_steps={steps}",
            f"train.warmup_steps={max(2, steps // 12)}"]  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--smoke", action="store_true", help="a few entrants, a few steps: does it still run")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument(
        "--only",
        help="comma-separated entrants (gpt2 always runs: it sets the target); the default's "
        f"candidates run only when named: {', '.join(CANDIDATES)}",
    )
    ap.add_argument("--seed", type=int, help="train every entrant with this train.seed (default: each config's)")
    ap.add_argument("--no-study", action="store_true", help="leave out the Muon / AdamW batch study")
    ap.add_argument("--png", type=Path, help="default: bench/results/race.png (smoke: a temporary file)")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--from-json", type=Path, help="print the table and draw the chart of an earlier race's JSON")
    args = ap.parse_args()
    if args.from_json:
        saved = json.loads(args.from_json.read_text())
        saved_runs = [Run(**{**r, "curve": [tuple(p) for p in r["curve"]]}) for r in saved["runs"]]
        report(saved_runs, args.png)
        return

    entrants = {n: (c, list(o)) for n, (c, o) in ENTRANTS.items()}
    if args.only:
        keep = {"gpt2", *args.only.split(",")}
        if unknown := keep - set(ENTRANTS) - set(CANDIDATES):
            raise SystemExit(f"no entrant {', '.join(sorted(unknown))}; they are {', '.join([*ENTRANTS, *CANDIDATES])}")
        entrants = {n: (c, list(o)) for n, (c, o) in {**ENTRANTS, **CANDIDATES}.items() if n in keep}
    study = {f"{opt} b{b}": ("tiny", study_overrides(opt, b))
             for b in BATCHES for opt in ("muon", "adamw")}  # fmt: skip
    seed = [f"train.seed={args.seed}"] if args.seed is not None else []
    entrants = {n: (c, o + seed) for n, (c, o) in entrants.items()}
    study = {n: (c, o + seed) for n, (c, o) in study.items()}
    if args.smoke:
        entrants = {n: (c, o + SMOKE_STEPS) for n, (c, o) in entrants.items() if n in ("gpt2", "+rope", "modern")}
        study = {n: (c, o + SMOKE_STEPS) for n, (c, o) in study.items() if n.endswith(" b16")}
    if args.no_study:
        study = {}
    windows = SMOKE_WINDOWS if args.smoke else None
    work = Path(tempfile.mkdtemp(prefix="race-"))
    png = args.png or (work / "race.png" if args.smoke else ROOT / "bench" / "results" / "race.png")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    runs: list[Run] = []
    for rnd in range(args.rounds):
        names = list(entrants)
        shift = rnd % len(names)
        order = ["gpt2", "modern"] + [n for n in names[shift:] + names[:shift] if n not in ("gpt2", "modern")]
        this: dict[str, Run] = {}
        for n in [x for x in order if x in entrants]:
            config, overrides = entrants[n]
            this[n] = train(n, config, overrides, work / f"{n}-{rnd}", rnd, env, windows)
            runs.append(this[n])
            print(f"round {rnd + 1}: {n:14s} {this[n].wall_s:6.1f} s  final val {this[n].final_val:.4f}", flush=True)
        if "modern" in this and not args.only and not args.smoke:
            # as many steps as fit in gpt2's time: the steps' share of modern's time scales, the start-up does not
            modern, base = this["modern"], this["gpt2"]
            training = max(1e-6, modern.wall_s - modern.startup_s)
            steps = max(modern.steps, round(modern.steps * (base.wall_s - modern.startup_s) / training))
            config, overrides = entrants["modern"]
            run = train(EQUAL_TIME, config, [*overrides, f"train.max_steps={steps}"], work / f"equal-{rnd}", rnd, env)
            runs.append(run)
            print(f"round {rnd + 1}: {EQUAL_TIME:14s} {run.wall_s:6.1f} s  final val {run.final_val:.4f}", flush=True)
        for n, (config, overrides) in study.items():
            run = train(n, config, overrides, work / f"{n.replace(' ', '-')}-{rnd}", rnd, env, windows)
            runs.append(run)
            print(f"round {rnd + 1}: {n:14s} {run.wall_s:6.1f} s  final val {run.final_val:.4f}", flush=True)
    print()
    figures = report(runs, png)
    if args.json or not args.smoke:
        out = args.json or ROOT / "bench" / "results" / "race.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(figures, indent=1))
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
