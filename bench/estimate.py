"""The time estimate against the real run: what `gpt-train` prints before it starts, and the trainer's ETA.

    python -m bench.estimate [--smoke] [--runs tiny,narrow,wide] [--app] [--cache] [--json PATH]

Each run is a real `python -m gpt.cli train --config tiny ... train.max_steps=N` in a subprocess, its output read
line by line as it comes. The estimate (gpt.estimate.train_seconds, printed by the CLI once the model is built)
covers the trainer's run: its steps, evaluations, samples and checkpoint saves, not the process start (imports,
data, building the model). So "real" is the time from that line to "training completed"; the whole process time is
printed too. The ETA check: the `eta` of the first step line at >= 10% of the steps, against the time left then.

The runs (the tiny preset's intervals: evaluation every 250 steps and at the end, sample every 500 and at the end):
tiny (the preset, 300 steps), narrow (n_layer=2 n_embd=64, 600 steps), wide (n_layer=6 n_embd=192 block 128,
150 steps). By default a fresh cache directory: the machine is calibrated first (`python -m gpt.calibrate`, as the
app does at its first start) and the corpus prepared; --cache uses the user's cache as it is.

--app: also the tiny run started from the app's Train tab in headless chromium and watched to its end, against the
estimate the form showed (from the click on Start: the app's estimate is all its visitor waits).

--smoke: does it still run (one tiny run of 30 steps, seconds); its figures mean little.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

RUNS: dict[str, tuple[int, list[str]]] = {
    "tiny": (300, []),
    "narrow": (600, ["model.n_layer=2", "model.n_embd=64"]),
    "wide": (150, ["model.n_layer=6", "model.n_embd=192", "model.block_size=128"]),
}
SMOKE: tuple[int, list[str]] = (
    30,
    ["train.eval_interval=10", "train.eval_iters=2", "train.sample_interval=30", "train.sample_tokens=20"],
)

_ESTIMATE = re.compile(r"steps should take about (.+) on this machine")
_STEP = re.compile(r"^step (\d+)/(\d+) \|.*\| eta (.+)$")


def parse_duration(text: str) -> float:
    """Seconds of a gpt.events.format_duration text: "14 s", "2 min 5 s", "1 h 3 min"."""
    units = {"h": 3600, "min": 60, "s": 1}
    parts = re.findall(r"(\d+)\s*(h|min|s)\b", text)
    if not parts:
        raise ValueError(f"not a duration: {text!r}")
    return float(sum(int(n) * units[u] for n, u in parts))


def train_run(steps: int, overrides: Sequence[str], env: dict[str, str], out: Path) -> dict[str, Any]:
    """One CLI run: the estimate it printed, the real times, and the ETA at >= 10% of the steps."""
    cmd = [sys.executable, "-m", "gpt.cli", "train", "--config", "tiny", "--out", str(out),
           *overrides, f"train.max_steps={steps}"]  # fmt: skip
    estimate = precise(overrides, steps)  # before the run: its own time then teaches the estimate (run_factor)
    t0 = time.perf_counter()
    lines: list[tuple[float, str]] = []
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env) as p:
        assert p.stdout is not None
        for line in p.stdout:
            lines.append((time.perf_counter(), line.rstrip("\n")))
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({p.returncode}):\n" + "\n".join(t for _, t in lines[-20:]))
    est_at, printed = next((t, parse_duration(m.group(1))) for t, s in lines if (m := _ESTIMATE.search(s)))
    done_at = next(t for t, s in lines if s.startswith("training completed"))
    eta_at, eta = next(
        (t, parse_duration(m.group(3))) for t, s in lines if (m := _STEP.match(s)) and int(m.group(1)) >= steps / 10
    )
    return {"steps": steps, "overrides": list(overrides), "printed_s": printed, "estimate_s": estimate,
            "real_s": done_at - est_at, "start_s": est_at - t0, "wall_s": wall, "eta_s": eta,
            "eta_real_s": done_at - eta_at}  # fmt: skip


def precise(overrides: Sequence[str], steps: int) -> float:
    """The estimate the CLI prints, unrounded: gpt.estimate.train_seconds of the run's config with the built-in
    corpus's vocabulary (what the CLI trains on), at this machine's costs from the same cache (this process's
    GPT_PLAYGROUND_CACHE), corrected by the last runs as the CLI's is."""
    from gpt.calibrate import costs_for
    from gpt.cli import resolve_config_path
    from gpt.config import apply_overrides, load_config
    from gpt.corpus import sample_corpus_path
    from gpt.data import prepare
    from gpt.estimate import model_size, train_seconds

    cfg = apply_overrides(load_config(resolve_config_path("tiny")), [*overrides, f"train.max_steps={steps}"])
    data = prepare([sample_corpus_path()], tokenizer=cfg.data.tokenizer, val_fraction=cfg.data.val_fraction)
    flops = model_size(cfg, data.tokenizer.vocab_size)[1]
    return train_seconds(cfg, flops, costs=costs_for(cfg.train), corrected=True)


def app_run(steps: int, tmp: Path, repeat: int = 2) -> list[dict[str, Any]]:
    """The tiny preset started `repeat` times from the Train tab of `python app.py` in headless chromium, the page
    open on its live charts: each time the estimate the form shows, and the seconds from Start to the run's last
    checkpoint (the child's start and building the model included: in the app, that is what the visitor waits).
    The first run teaches the next estimates how runs go in the app (gpt.estimate.run_factor)."""
    from playwright.sync_api import sync_playwright

    from bench.app_latency import launched_app
    from bench.train_tab import ARGS, CHROMIUM, _finished

    runs = tmp / "app-runs"
    runs.mkdir()
    out = []
    with launched_app(runs) as url, sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = chromium.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(url)
        page.get_by_role("tab", name="Train").click()
        box = page.get_by_label("Steps", exact=True)
        for _ in range(repeat):
            for n in (steps + 1, steps):  # a change, so that the form estimates again
                box.fill(str(n))
                box.press("Tab")
                shown = page.get_by_text(re.compile(rf"{n:,} steps ≈ .+ with evaluations")).first
                shown.wait_for(timeout=60_000)
            estimate = parse_duration(re.search(r"steps ≈ (.+?) with", shown.inner_text()).group(1))  # type: ignore[union-attr]
            quiet(False)
            before = set(runs.glob("run-*"))
            t = time.perf_counter()
            page.get_by_role("button", name="Start").click()
            while not any((r / "metrics.jsonl").exists() for r in set(runs.glob("run-*")) - before):
                time.sleep(0.05)  # the trainer's Start event: the child has built its model
            started = time.perf_counter() - t
            while not _finished(runs, before, steps):
                time.sleep(0.1)
            out.append({"steps": steps, "estimate_s": estimate, "real_s": time.perf_counter() - t, "start_s": started})
            page.wait_for_timeout(3000)  # the page shows the end, the child has recorded its time
        chromium.close()
    return out


def quiet(smoke: bool) -> None:
    """Wait (up to 2 min) for idle processors: a 2-thread step runs many times slower while another process holds a
    core, and what the figures should show is the estimate, not the neighbours. Not in --smoke (seconds)."""
    from gpt.calibrate import wait_quiet

    if not smoke and not wait_quiet(120):
        print("(the processors stayed busy: these figures time the neighbours too)", flush=True)


def error(estimate: float, real: float) -> float:
    """Relative error of an estimate, in %: + too long, - too short."""
    return 100.0 * (estimate - real) / real if real > 0 else float("nan")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.estimate", description=__doc__.split("\n\n")[0])
    p.add_argument("--smoke", action="store_true", help="one tiny run of 30 steps (seconds)")
    p.add_argument("--runs", default=",".join(RUNS), help=f"which of {', '.join(RUNS)}")
    p.add_argument("--cache", action="store_true", help="use the user's cache (its calibration) as it is")
    p.add_argument("--app", action="store_true", help="also the tiny run in the app, the Train tab open (chromium)")
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args(argv)
    runs = {"smoke": SMOKE} if args.smoke else {name: RUNS[name] for name in args.runs.split(",")}
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"}
    with tempfile.TemporaryDirectory(prefix="bench-estimate-") as tmp:
        if not args.cache:
            env["GPT_PLAYGROUND_CACHE"] = os.environ["GPT_PLAYGROUND_CACHE"] = str(Path(tmp) / "cache")
            quiet(args.smoke)
            t = time.perf_counter()
            subprocess.run([sys.executable, "-m", "gpt.calibrate"], env=env, check=True, stdout=subprocess.DEVNULL)
            print(f"calibrated in {time.perf_counter() - t:.1f} s (python -m gpt.calibrate, a fresh cache)")
        results = {}
        for name, (steps, overrides) in runs.items():
            quiet(args.smoke)
            results[name] = r = train_run(steps, overrides, env, Path(tmp) / name)
            print(f"{name}: estimate {r['estimate_s']:.1f} s (printed {r['printed_s']:.0f} s), "
                  f"real {r['real_s']:.1f} s (the process: {r['wall_s']:.1f} s, {r['start_s']:.1f} s of it "
                  "before the estimate)", flush=True)  # fmt: skip
        if args.app:
            for i, a in enumerate(app_run(RUNS["tiny"][0], Path(tmp))):
                results[f"app {i + 1}"] = a
                print(f"app run {i + 1}: estimate shown {a['estimate_s']:.0f} s, real {a['real_s']:.1f} s (Start to "
                      f"the last checkpoint, the Train tab open; {a['start_s']:.1f} s of it to the trainer's start) "
                      f"{error(a['estimate_s'], a['real_s']):+.0f}%", flush=True)  # fmt: skip
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"\n(load average {load:.1f}; real: from the estimate line to 'training completed')")
    print("run       steps  estimate      real   error | ETA at 10%  real left   error")
    for name, r in results.items():
        if name.startswith("app"):
            continue
        print(f"{name:<9} {r['steps']:>5}  {r['estimate_s']:>6.1f} s  {r['real_s']:>6.1f} s "
              f"{error(r['estimate_s'], r['real_s']):>+5.0f}%  | {r['eta_s']:>8.0f} s  {r['eta_real_s']:>7.1f} s "
              f"{error(r['eta_s'], r['eta_real_s']):>+5.0f}%")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
