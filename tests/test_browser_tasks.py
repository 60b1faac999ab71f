"""The tasks lab in a real browser (Playwright driving chromium) at 1366x768: a visitor prepares a modular-addition
task, trains the grokking preset briefly and watches its accuracy chart, has a typed prompt answered, and opens the
Fourier spectrum in Inspect. Screenshots under test-artifacts/ (tasks-*.png)."""

from __future__ import annotations

import pytest

from tests.test_browser import ARTIFACTS, above_the_fold, browser, open_app, run_in_tab  # noqa: F401 - a fixture

pytestmark = pytest.mark.slow

VISIBLE = "[...document.querySelectorAll('.js-plotly-plot')].filter(p => p.offsetParent && p.data)"
# the accuracy chart has its points: train and held out at every evaluation (25 to 150)
ACCURACY_DRAWN = (
    "() => { const p = document.querySelector('#live-accuracy .live-chart');"
    " return p && p.offsetParent && p.data && p.data[1].x.length === 6; }"
)
SPECTRUM = f"() => {VISIBLE}.some(p => p.data[0].type === 'bar' && p.data[0].x.length === 11)"


def test_a_visitor_prepares_a_task_trains_it_and_sees_what_it_learned(browser, app_url: str) -> None:  # noqa: F811
    page = open_app(browser, app_url)
    # Data: the Task source, a + b mod 23, half the pairs trained on; a few examples with prompt and answer marked
    page.get_by_label("Task (an algorithm)").check()
    modulus = page.get_by_label("Modulus p")
    modulus.fill("23")
    page.get_by_label("number input for Train fraction").fill("0.5")
    page.get_by_label("number input for Train fraction").press("Tab")
    prepare = page.get_by_role("button", name="Prepare task")
    above_the_fold(page, prepare)
    assert not page.get_by_role("button", name="Prepare data").is_visible()  # (the task has its own tokenizer)
    prepare.click()
    page.get_by_text("tokens per example").wait_for(timeout=60_000)
    assert page.locator(".task-examples .tok.answer").count() == 8 and page.get_by_text("a + b mod 23").count() == 1
    page.screenshot(path=str(ARTIFACTS / "tasks-1-data.png"), full_page=True)

    # Train: the grokking preset (weight decay 1 with its sentence), 150 steps; the accuracy chart fills as it trains
    page.get_by_role("tab", name="Train").click()
    page.wait_for_function("() => window.Plotly")
    page.get_by_label("Preset").click()
    page.get_by_role("option", name="grokking").click()
    decay = page.get_by_label("Weight decay")
    page.wait_for_function("() => [...document.querySelectorAll('input')].some(i => i.value === '4096')")
    assert decay.input_value() == "1"
    assert page.get_by_text("turns a memorised table into the algorithm").count() == 1
    for label, value in (("Steps", "150"), ("Eval every N steps", "25")):
        box = page.get_by_label(label, exact=True)
        box.fill(value)
        box.press("Tab")
    page.get_by_role("button", name="Start").click()
    page.get_by_text("Training completed at step 150").first.wait_for(timeout=180_000)
    page.wait_for_function(ACCURACY_DRAWN, timeout=30_000)
    accuracy = page.locator("#live-accuracy")
    assert accuracy.is_visible() and page.get_by_text("Exact-match accuracy").count() >= 1
    page.get_by_text("log steps").click()  # the steps on a log scale (in the page: no request)
    page.wait_for_function(
        "() => document.querySelector('#live-accuracy .live-chart').layout.xaxis.type === 'log'", timeout=10_000
    )
    accuracy.scroll_into_view_if_needed()
    page.screenshot(path=str(ARTIFACTS / "tasks-2-train.png"), full_page=True)
    page.evaluate("() => window.scrollTo(0, 0)")
    page.screenshot(path=str(ARTIFACTS / "tasks-2b-train-fold.png"))

    # Generate: a typed prompt of the task, answered and marked
    run_in_tab(page, "Generate", "Refresh", "Answer", "() => /Right:|Wrong:/.test(document.body.innerText)")
    assert page.get_by_label("Ask the task model (Enter)").input_value().endswith(" =")  # a held-out prompt
    page.screenshot(path=str(ARTIFACTS / "tasks-3-generate.png"))

    # Inspect: the task's views appear for a task model; the Fourier spectrum of its number embeddings
    run_in_tab(page, "Inspect", "Refresh", "Fourier spectrum", SPECTRUM)
    page.get_by_text("of the embedding is in its 5 strongest frequencies").wait_for(timeout=30_000)
    page.get_by_role("button", name="Score the examples").click()
    page.get_by_text("held-out examples (never trained on) right").wait_for(timeout=30_000)
    page.locator("#task-views").scroll_into_view_if_needed()
    page.screenshot(path=str(ARTIFACTS / "tasks-4-inspect.png"), full_page=True)
    page.get_by_role("button", name="Fourier spectrum").evaluate("e => e.scrollIntoView({block: 'start'})")
    page.screenshot(path=str(ARTIFACTS / "tasks-4b-spectrum.png"))
