"""The Train tab's Training health and Circuits views, and Compare's circuits, in a real browser (Playwright driving
chromium): the tiny preset with GPT-2's recipe at its learning rate, and at ten times it. Screenshots under
test-artifacts/: 8a-health.png (the healthy run), 8b-health-10x.png, 8c-circuits.png, 8d-compare-circuits.png."""

from __future__ import annotations

import re
from typing import Any

import pytest

from gpt.events import read_metrics
from tests.test_browser import ARTIFACTS, SCREEN, above_the_fold, browser, open_app  # noqa: F401 - browser: a fixture

pytestmark = pytest.mark.slow

NOTE = "#health-note"
# the live chart's traces as the page holds them (playground.live_chart): x and y of each
TRACES = "(id) => document.querySelector(`#live-${id} .live-chart`).data.map(t => [Array.from(t.x), Array.from(t.y)])"


def train(page: Any, lr: str, until: str) -> str:
    """Train the tiny preset with GPT-2's recipe at learning rate `lr` (a short warmup), watching the Training health
    view, until its note shows `until` (a regular expression); then stop. Returns the run's name."""
    page.get_by_role("tab", name="Train").click()
    page.wait_for_function("() => window.Plotly")
    page.get_by_label("GPT-2 (2019)").check()
    page.wait_for_function("() => [...document.querySelectorAll('input')].some(i => i.value === 'learned')")
    for label, value in (("Learning rate", lr), ("Warmup steps", "20"), ("Eval every N steps", "50")):
        box = page.get_by_label(label, exact=True)
        box.fill(value)
        box.press("Tab")
    page.get_by_role("button", name="Start").click()
    page.get_by_text("Training…").first.wait_for(timeout=60_000)
    page.get_by_label("Training health").check()
    page.wait_for_function("(re) => new RegExp(re).test(document.querySelector('#health-note').innerText)", arg=until,
                           timeout=150_000)  # fmt: skip
    page.get_by_role("button", name="Stop").click()
    page.get_by_text("Training stopped at step").first.wait_for(timeout=60_000)
    return re.search(r"run-[\w-]+", page.locator(".progress-box").inner_text()).group(0)


def drawn_as_logged(page: Any, runs: Any, run: str) -> None:
    """The page got each reading once (appended as they came): its charts hold what the run's log holds."""
    log = read_metrics(runs / run / "metrics.jsonl")
    page.wait_for_function(  # (the last refresh after the stop)
        "(n) => document.querySelector('#live-health .live-chart').data[0].x.length === n", arg=len(log.health_steps)
    )
    health = page.evaluate(TRACES, "health")
    groups = log.health_groups[0]
    assert len(health) == 2 * len(groups) + 2 * len(log.dead_units[0])  # per group: ratio, gradient; per layer: 2
    assert [x for x, _ in health] == [log.health_steps] * len(health)
    assert [y for _, y in health[: len(groups)]] == [[r[g] for r in log.update_ratio] for g in range(len(groups))]
    circuits = page.evaluate(TRACES, "circuits")
    assert circuits[0][0] == log.circuit_steps and circuits[0][0][0] == 0  # from step 0, at every evaluation
    assert circuits[-1][1] == log.in_context


@pytest.fixture(scope="module")
def healthy(browser, app_url: str) -> tuple[Any, str]:  # noqa: F811 - test_browser's fixture
    """A visitor's healthy run (GPT-2's rate, 1e-3), stopped after the reading of step 100: the page and the run."""
    page = open_app(browser, app_url)
    return page, train(page, "0.001", r"At step 100:")


def test_a_healthy_run_says_so(healthy: tuple[Any, str], app_url: Any) -> None:
    page, run = healthy
    note = page.locator(NOTE)
    assert "✓ Init: the loss at step 0 is" in note.inner_text()
    assert re.search(r"At step 1\d\d: all readings in their healthy range", note.inner_text())  # (the stop: 100+)
    assert "⚠" not in note.inner_text()
    drawn_as_logged(page, app_url.runs, run)
    above_the_fold(page, note, page.locator("#live-health"))
    page.screenshot(path=str(ARTIFACTS / "8a-health.png"))
    page.get_by_label("Circuits", exact=True).check()
    page.locator("#circuits-note").get_by_text("induction head", exact=True).wait_for()
    assert re.search(r"At step 1\d\d: best induction head L\dH\d 0\.\d\d", page.locator("#circuits-note").inner_text())
    above_the_fold(page, page.locator("#circuits-note"), page.locator("#live-circuits"))
    page.screenshot(path=str(ARTIFACTS / "8c-circuits.png"))


def test_ten_times_the_rate_is_flagged_within_a_few_hundred_steps_and_compared(
    healthy: tuple[Any, str],
    browser,  # noqa: F811 - test_browser's fixture
    app_url: Any,
) -> None:
    page = open_app(browser, app_url)  # another visitor: one run each at a time
    run = train(page, "0.01", r"⚠️ At step")
    note = page.locator(NOTE).inner_text()
    assert "learning rate is too high" in note and "✓ Init" in note, note  # what is wrong, and the likely cause
    drawn_as_logged(page, app_url.runs, run)
    above_the_fold(page, page.locator(NOTE), page.locator("#live-health"))
    page.screenshot(path=str(ARTIFACTS / "8b-health-10x.png"))

    # Compare: both runs' loss, and beside it their best heads
    page.get_by_role("tab", name="Compare").click()
    runs = page.get_by_label("Runs")
    for name in (healthy[1], run):
        runs.fill(name)
        runs.press("Enter")
    page.get_by_role("button", name="Compare").click()
    page.wait_for_function(
        "() => [...document.querySelectorAll('.js-plotly-plot')].some(p => p.offsetParent && p.data"
        " && p.data.length === 4 && p.data.every(t => / (induction|previous token)$/.test(t.name)))",
        timeout=30_000,
    )
    right = page.evaluate("() => Math.max(...[...document.querySelectorAll('.js-plotly-plot')].map(p => "
                          "p.getBoundingClientRect().right))")  # fmt: skip
    assert right <= SCREEN["width"], right
    page.screenshot(path=str(ARTIFACTS / "8d-compare-circuits.png"), full_page=True)
    page.context.close()
