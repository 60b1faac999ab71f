"""Watching must not slow the work: training with the Train tab open in a browser against the same run from the CLI.

    python -m bench.train_tab [--steps 600] [--runs 2] [--detach]

Alternates (CLI, browser, CLI, browser, ...) the tiny preset for --steps steps on the built-in corpus: once as
`gpt-train`, once started from the Train tab of `python app.py` in headless chromium (Playwright) that stays open on
the live charts until the run completes (with --detach, the page is left as soon as the run starts: what the
server alone costs). Both read tokens/s from the run's own TensorBoard log (the median over
its log windows, the first two dropped as warm-up). The design target: the browser run within 5% of the CLI.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.app_latency import ROOT, launched_app

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


def browser_run(page, url: str, runs: Path, steps: int, watch: bool) -> float:  # type: ignore[no-untyped-def]
    """Start the run from the Train tab; watch it there to the end, or (watch=False) leave the page at once."""
    before = set(runs.glob("run-*"))
    page.goto(url)
    page.get_by_role("tab", name="Train").click()
    box = page.get_by_label("Steps", exact=True)
    box.fill(str(steps))
    box.press("Tab")
    page.wait_for_timeout(500)
    page.get_by_role("button", name="Start").click()
    if watch:
        page.get_by_text(f"Training completed at step {steps}").wait_for(timeout=600_000)
    else:
        page.get_by_text("Training…").wait_for(timeout=60_000)
        page.goto("about:blank")
        while not _finished(runs, before, steps):
            time.sleep(0.5)
    (run_dir,) = set(runs.glob("run-*")) - before
    return logged_rate(run_dir)


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
    args = ap.parse_args()
    where = "started in the app, no page open" if args.detach else "Train tab open"
    from playwright.sync_api import sync_playwright

    tmp = Path(tempfile.mkdtemp(prefix="bench-tab-"))
    runs = tmp / "runs"
    runs.mkdir()
    cli, browser = [], []
    with launched_app(runs) as url, sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = chromium.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(url)
        for i in range(args.runs):
            cli.append(cli_run(args.steps, tmp / f"cli-{i}"))
            browser.append(browser_run(page, url, runs, args.steps, watch=not args.detach))
            print(f"run {i + 1}: CLI {cli[-1]:,.0f} tok/s | {where} {browser[-1]:,.0f} tok/s", flush=True)
        page.screenshot(path=str(tmp / "train-tab.png"), full_page=True)
        chromium.close()
    c, b = statistics.median(cli), statistics.median(browser)
    print(f"training tokens/s, tiny preset, {args.steps} steps: CLI {c:,.0f} | {where} {b:,.0f} "
          f"| {b / c:.2f}x (target >= 0.95x); screenshot {tmp / 'train-tab.png'}")  # fmt: skip


if __name__ == "__main__":
    main()
