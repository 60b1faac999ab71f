"""The Inspect tab's circuits, ablation and logit attribution in a real browser (Playwright driving chromium), on
a model trained through the API. Screenshots under test-artifacts/ (4c-circuits.png and the sections' close-ups)."""

from __future__ import annotations

from typing import Any

import pytest
from gradio_client import Client

from tests.app_helpers import TRAIN, poll_until
from tests.conftest import SHAKESPEARE
from tests.test_browser import ARTIFACTS, SCREEN, browser, open_app, run_in_tab  # noqa: F401 - browser: a fixture

pytestmark = pytest.mark.slow

# JavaScript tests of the visible Plotly charts
VISIBLE = "[...document.querySelectorAll('.js-plotly-plot')].filter(p => p.offsetParent && p.data)"
CIRCUITS = f"() => {VISIBLE}.some(p => p.data.length === 3 && p.data.every(t => t.type === 'heatmap'))"
ABLATION = f"() => {VISIBLE}.some(p => p.data.length === 2 && /ablated/.test(p.data[1].name))"
DLA = f"() => {VISIBLE}.some(p => p.data.length === 1 && p.data[0].x && p.data[0].x[0] === 'token embedding')"


@pytest.fixture(scope="module")
def trained_run(app_url: str) -> str:
    """A run of TRAIN's model (2 layers of 2 heads) for 300 steps on a pasted corpus, trained through the API."""
    c = Client(app_url, verbose=False)
    c.predict("Paste text", [], SHAKESPEARE * 30, "char", 0.1, api_name="/prepare_data")
    status = c.predict(*TRAIN[:11], 300, *TRAIN[12:], api_name="/start_training")
    poll_until(c, lambda r: r[4] == "completed", timeout=600)
    return status.split("`")[1]


def to_top(locator: Any) -> None:
    """Scroll the page so that the element stands at the top of the screen (for a screenshot of its section)."""
    locator.evaluate("e => e.scrollIntoView({block: 'start'})")


def no_overflow(page: Any) -> None:
    """Nothing runs past the right edge of the 1366-pixel screen."""
    width = page.evaluate("() => document.documentElement.scrollWidth")
    right = page.evaluate(f"() => Math.max(...{VISIBLE}.map(p => p.getBoundingClientRect().right))")
    assert width <= SCREEN["width"] and right <= SCREEN["width"], (width, right)


def test_a_user_scores_heads_ablates_one_and_attributes_a_logit(
    browser,  # noqa: F811 - test_browser's fixture
    app_url: str,
    trained_run: str,
) -> None:
    page = open_app(browser, app_url)
    # Inspect fills every view: the attention charts, then circuits, ablation and attribution
    run_in_tab(page, "Inspect", "Refresh", "Inspect", CIRCUITS)
    page.wait_for_function(ABLATION, timeout=60_000)
    page.wait_for_function(DLA, timeout=60_000)
    assert page.get_by_text("In-context learning").count() == 1
    assert page.get_by_text("Loss on the prompt").count() == 1
    assert page.get_by_text("The parts add up to the logit").count() == 1
    # the ablation's sliders follow the model: 2 layers of 2 heads
    assert page.get_by_label("number input for Ablate head", exact=True).get_attribute("max") == "2"
    no_overflow(page)
    page.screenshot(path=str(ARTIFACTS / "4c-circuits.png"), full_page=True)
    to_top(page.get_by_role("button", name="Score heads"))
    page.screenshot(path=str(ARTIFACTS / "4d-circuits-fold.png"))

    # Ablate layer 1's MLP by its mean: the summary and the continuation change
    summary = page.get_by_text("Loss on the prompt")
    before = summary.inner_text()
    page.get_by_label("MLP", exact=True).check()
    page.get_by_label("mean", exact=True).check()
    page.get_by_role("button", name="Ablate", exact=True).click()
    page.get_by_text("L1 MLP set to its mean").wait_for(timeout=30_000)
    assert summary.inner_text() != before
    ablated = page.get_by_label("Greedy continuation: ablated").input_value()
    assert len(ablated) == 20
    to_top(page.get_by_text("L1 MLP set to its mean"))
    page.screenshot(path=str(ARTIFACTS / "4e-ablation.png"))

    # Attribute another token; then one that is two tokens: a message, the chart stays
    token = page.get_by_label("Token (empty: the top prediction)")
    token.fill("e")
    page.get_by_role("button", name="Attribute", exact=True).click()
    page.get_by_text("The parts add up to the logit of e").wait_for(timeout=30_000)
    to_top(page.get_by_role("button", name="Attribute", exact=True))
    page.screenshot(path=str(ARTIFACTS / "4f-attribution.png"))
    token.fill("ee")
    page.get_by_role("button", name="Attribute", exact=True).click()
    page.locator(".toast-body").filter(has_text="2 tokens").first.wait_for(timeout=30_000)
    page.wait_for_function(DLA, timeout=5_000)
    assert page.get_by_text("The parts add up to the logit of e").count() == 1
    page.screenshot(path=str(ARTIFACTS / "4g-attribution-error.png"))
    no_overflow(page)
    page.context.close()
