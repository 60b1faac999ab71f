"""Watching must not slow the work: training with the Train tab open in a browser against the same run from the CLI.

    python -m bench.train_tab [--steps 600] [--runs 2] [--detach] [--smoke]

Alternates (CLI, browser, CLI, browser, ...) the tiny preset for --steps steps on the built-in corpus: once as
`gpt-train`, once started from the Train tab of `python app.py` in headless chromium (Playwright) that stays open on
the live charts until the run completes (with --detach, the page is left as soon as the run starts: what the
server alone costs). Both read tokens/s from the run's own TensorBoard log (the median over
its log windows, the first two dropped as warm-up). The target: the browser run at 0.9x of the CLI or better (the
ratio of the medians, and the median of each pair's ratio, which the machine's drift disturbs less). It
also reports the CPU seconds the browser (all chromium processes) and the app's server process spent while a run
trained from the tab: what watching costs, read from /proc. --smoke: does it still run (one pair of 30-step runs,
the CLI's while the app starts; seconds, not minutes; its figures mean little).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from bench.app_latency import ROOT, AppURL, cpu_seconds, launched_app

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip


def logged_rate(run_dir: Path) -> float:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tb"))
    acc.Reload()
    rates = [e.value for e in acc.Scalars("train/tokens_per_s")]
    return statistics.median(rates[2:])


def cli_run(steps: int, out: Path) -> float:
    subprocess.run([sys.executable, "-m", "gpt.cli", "train", "--config", "tiny", "--out", str(out),
                    f"train.max_steps={steps}"], cwd=ROOT, check=True, capture_output=True)  # fmt: skip
    return logged_rate(out)


def cli_run_meanwhile(steps: int, out: Path) -> Callable[[], float]:
    """`cli_run` in a thread, started now; what it returns gives its rate once it is done (--smoke: while the app and
    the browser start)."""
    done: list[float] = []
    thread = threading.Thread(target=lambda: done.append(cli_run(steps, out)), daemon=True)
    thread.start()

    def result() -> float:
        thread.join()
        if not done:
            raise RuntimeError("the CLI run failed")
        return done[0]

    return result


def browser_run(page, url: AppURL, runs: Path, steps: int, watch: bool) -> tuple[float, tuple[float, float, float]]:  # type: ignore[no-untyped-def]
    """Start the run from the Train tab; watch it there to the end, or (watch=False) leave the page at once.
    Returns the run's tokens/s, and the CPU seconds of the browser and the server, and the seconds, from the run's
    first step shown to its end."""
    before = set(runs.glob("run-*"))
    page.goto(url)
    page.get_by_role("tab", name="Train").click()
    box = page.get_by_label("Steps", exact=True)
    box.fill(str(steps))
    box.press("Tab")
    page.wait_for_timeout(500)
    page.get_by_role("button", name="Start").click()
    page.get_by_text("Training…").first.wait_for(timeout=60_000)  # the status line, and the progress box
    cpu = cpu_seconds(), cpu_seconds(url.pid), time.time()
    if watch:
        page.get_by_text(f"Training completed at step {steps}").first.wait_for(timeout=600_000)
    else:
        page.goto("about:blank")
        while not _finished(runs, before, steps):
            time.sleep(0.5)
    used = cpu_seconds() - cpu[0], cpu_seconds(url.pid) - cpu[1], time.time() - cpu[2]
    (run_dir,) = set(runs.glob("run-*")) - before
    return logged_rate(run_dir), used


def _finished(runs: Path, before: set[Path], steps: int) -> bool:
    for run in set(runs.glob("run-*")) - before:
        try:
            return json.loads((run / "latest" / "config.json").read_text()).get("step") == steps
        except (OSError, ValueError):
            return False
    return False


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--detach", action="store_true", help="start from the browser, then leave the page (server only)")
    ap.add_argument("--smoke", action="store_true", help="does it still run: one pair of 30-step runs")
    args = ap.parse_args()
    if args.smoke:
        args.steps, args.runs = 30, 1  # 3 log windows: the median has one left after the 2 warm-up ones
    where = "started in the app, no page open" if args.detach else "Train tab open"
    from playwright.sync_api import sync_playwright

    tmp = Path(tempfile.mkdtemp(prefix="bench-tab-"))
    runs = tmp / "runs"
    runs.mkdir()
    cli, browser, costs = [], [], []
    # --smoke: the (one) CLI run trains while the app and the browser start, and the page is not loaded twice
    first_cli = cli_run_meanwhile(args.steps, tmp / "cli-0") if args.smoke else None
    with launched_app(runs) as url, sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = chromium.new_page(viewport={"width": 1400, "height": 1000})
        if not args.smoke:
            page.goto(url)
        for i in range(args.runs):
            cli.append(first_cli() if first_cli and i == 0 else cli_run(args.steps, tmp / f"cli-{i}"))
            rate, used = browser_run(page, url, runs, args.steps, watch=not args.detach)
            browser.append(rate)
            costs.append(used)
            print(f"run {i + 1}: CLI {cli[-1]:,.0f} tok/s | {where} {browser[-1]:,.0f} tok/s | in its {used[2]:.0f} s, "
                  f"CPU: browser {used[0]:.1f} s, server {used[1]:.1f} s", flush=True)  # fmt: skip
        page.screenshot(path=str(tmp / "train-tab.png"), full_page=True)
        chromium.close()
    c, b = statistics.median(cli), statistics.median(browser)
    # each browser run against the CLI run just before it: the machine's speed drifts less within a pair
    paired = statistics.median(x / y for x, y in zip(browser, cli, strict=True))
    wall = sum(x[2] for x in costs)
    per_s = [sum(x[k] for x in costs) / wall for k in (0, 1)]
    print(f"training tokens/s, tiny preset, {args.steps} steps: CLI {c:,.0f} | {where} {b:,.0f} "
          f"| {b / c:.2f}x, paired {paired:.2f}x (target >= 0.9x); CPU per second of training: "
          f"browser {per_s[0]:.3f} s, server {per_s[1]:.3f} s; screenshot {tmp / 'train-tab.png'}")  # fmt: skip


if __name__ == "__main__":
    main()
