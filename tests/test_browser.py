"""The app in a real browser (Playwright driving Debian's chromium): the path a new user takes.

Screenshots of each tab are saved under test-artifacts/ (ignored by git).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from gpt.corpus import sample_corpus_path
from gpt.events import read_metrics

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def browser():
    playwright = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.fail("chromium is not installed: apt-get install -y chromium (scripts/test.sh does it)")
    ARTIFACTS.mkdir(exist_ok=True)
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


SCREEN = {"width": 1366, "height": 768}  # a common laptop screen: each tab's main action must fit it


def open_app(browser, url: str):
    """A new visitor: a fresh browser context (its own browser storage and session) on the app."""
    pg = browser.new_context(viewport=SCREEN).new_page()
    pg.goto(url)
    pg.get_by_role("tab", name="Data").wait_for()
    return pg


def above_the_fold(page, *locators) -> None:
    """Each element is on screen without scrolling (the page scrolled to its top)."""
    page.evaluate("() => window.scrollTo(0, 0)")
    for loc in locators:
        box = loc.bounding_box()
        assert box is not None and box["y"] >= 0 and box["y"] + min(box["height"], 40) <= SCREEN["height"], (loc, box)


@pytest.fixture(scope="module")
def page(browser, app_url: str):
    return open_app(browser, app_url)


def n_points(page, index: int = 0) -> int:
    """Points in the first trace of the index-th Plotly chart on the page (0 when not drawn yet)."""
    return page.evaluate(
        """(i) => { const p = [...document.querySelectorAll('.js-plotly-plot')].filter(e => e.offsetParent)[i];
                   return p && p.calcdata && p.calcdata.length ? p.calcdata[0].length : 0; }""",
        index,
    )


def run_in_tab(page, tab: str, refresh: str, button: str, done_js: str) -> None:
    """Open a tab, refresh its checkpoint list, press its button and wait until `done_js` holds."""
    page.get_by_role("tab", name=tab).click()
    page.get_by_role("button", name=refresh).click()
    # the checkpoint list has arrived: the tab's dropdown shows a run
    page.wait_for_function(
        "() => [...document.querySelectorAll('input[role=listbox], input')].some(i => i.offsetParent"
        " && /run-.*latest/.test(i.value))",
        timeout=30_000,
    )
    # and the prompt the model's own text suggests (a user reads the filled-in page before pressing the button)
    from playwright.sync_api import expect

    prompt = page.get_by_label("Prompt", exact=True).filter(visible=True)
    if prompt.count():
        expect(prompt.first).not_to_have_value("", timeout=30_000)
    page.get_by_role("button", name=button).click()
    page.wait_for_function(done_js, timeout=60_000)


# Counts the live charts' whole draws and appends (playground.live_chart).
COUNT_DRAWS = """() => { window.draws = { react: 0, extendTraces: 0 };
  for (const name of ["react", "extendTraces"]) {
    const original = Plotly[name];
    Plotly[name] = (...args) => { window.draws[name] += 1; return original(...args); };
  } }"""


def test_a_new_user_prepares_trains_generates_and_inspects(page, app_url) -> None:
    # Data: the built-in corpus is offered; prepare it and see statistics and the token view.
    page.get_by_role("button", name="Prepare data").click()
    page.get_by_text("chars / token").wait_for(timeout=60_000)
    assert page.locator(".token-view .tok").count() == 300
    above_the_fold(page, page.get_by_role("button", name="Prepare data"), page.get_by_text("chars / token"))
    page.screenshot(path=str(ARTIFACTS / "1-data.png"), full_page=True)

    # Train: tiny preset, 60 steps (evaluations at 50 and 60, health at 25 and 50); the loss chart gains points.
    page.get_by_role("tab", name="Train").click()
    page.get_by_text("parameters** (without", exact=False).or_(page.get_by_text("parameters (without")).first.wait_for()
    page.wait_for_function("() => window.Plotly")  # the live charts' plotly.js has loaded
    page.evaluate(COUNT_DRAWS)
    # The recipe: GPT-2's fills the switches with 2019's, a switch flipped by hand makes it custom; back to modern.
    positions = page.get_by_label("Positions", exact=True)
    assert positions.input_value() == "rope"
    page.get_by_label("GPT-2 (2019)").check()
    page.wait_for_function("() => [...document.querySelectorAll('input')].some(i => i.value === 'learned')")
    assert page.get_by_label("Optimizer", exact=True).input_value() == "adamw"
    page.get_by_label("QK-norm").check()
    page.get_by_label("Custom switches").wait_for(state="attached")
    page.wait_for_function(
        "() => [...document.querySelectorAll('input[type=radio]')].some(r => r.checked && r.value === 'custom')"
    )
    page.screenshot(path=str(ARTIFACTS / "2b-recipe.png"), full_page=True)
    page.get_by_label("Modern (nanochat, speedrun)").check()
    page.wait_for_function("() => [...document.querySelectorAll('input')].some(i => i.value === 'rope')")
    assert page.get_by_label("QK-norm").is_checked() and page.get_by_label("Tied head").is_checked() is False
    steps = page.get_by_label("Steps", exact=True)
    steps.fill("60")
    steps.press("Tab")
    start = page.get_by_role("button", name="Start")
    above_the_fold(page, start, page.locator(".progress-box"))
    start.click()
    # the press answers at once: the button is off and the page says it is starting (the child takes seconds)
    page.wait_for_function(
        "() => [...document.querySelectorAll('button')].some(b => b.innerText.trim() === 'Start' && b.disabled)",
        timeout=1_500,
    )
    page.get_by_text("Starting…").first.wait_for(timeout=1_500)
    page.screenshot(path=str(ARTIFACTS / "2a-start-pressed.png"))
    page.get_by_text("Training…").first.wait_for(timeout=60_000)
    # the status beside the buttons and the progress box say the same
    assert page.locator(".progress-box").get_by_text("Training…").count() == 1
    page.wait_for_function(
        "() => [...document.querySelectorAll('.js-plotly-plot')].some(p => p.calcdata && p.calcdata[0].length >= 3)",
        timeout=60_000,
    )
    early = n_points(page)
    page.wait_for_function(  # the chart gains points while it trains
        "(n) => [...document.querySelectorAll('.js-plotly-plot')].some(p => p.calcdata && p.calcdata[0].length > n)",
        arg=early,
        timeout=30_000,
    )
    page.get_by_text("Training completed at step 60").first.wait_for(timeout=180_000)
    page.wait_for_function(  # the last redraw has the last step
        "() => { const p = document.querySelector('#live-loss .js-plotly-plot'); return p && p.calcdata"
        " && p.calcdata[0].length && p.calcdata[0][p.calcdata[0].length - 1].x == 60; }",
        timeout=30_000,
    )
    # The page got each logged point once, appended (drawn whole once per chart): train and val as the run logged.
    logged = read_metrics(max(app_url.runs.rglob("metrics.jsonl"), key=lambda p: p.stat().st_mtime))  # this run's
    loss_x = page.evaluate("() => document.querySelector('#live-loss .live-chart').data.map(t => Array.from(t.x))")
    assert loss_x == [logged.steps, logged.steps, logged.eval_steps, logged.eval_steps]  # val loss, in bits/byte
    assert page.locator(".progress-box").get_by_text("bits/byte").count() == 1  # the val loss's, in the status line
    draws = page.evaluate("() => window.draws")
    # loss, rate, training health, circuits; the loss again when its bits-per-byte panel got its first point (unless
    # the page's first tick came after the first evaluation)
    assert draws["react"] in (4, 5) and draws["extendTraces"] >= 4, draws
    page.screenshot(path=str(ARTIFACTS / "2-train.png"), full_page=True)

    # Generate: the newest checkpoint is chosen; text appears, coloured by probability.
    run_in_tab(
        page, "Generate", "Refresh", "Generate",
        "() => [...document.querySelectorAll('textarea')].some(t => t.offsetParent && t.value.length > 50)",
    )  # fmt: skip
    # the stream has finished: all 200 new characters are in the plain text (a char model: a token each)
    page.wait_for_function(
        "() => [...document.querySelectorAll('textarea')].some(t => t.offsetParent && t.value.length >= 200)",
        timeout=60_000,
    )
    # the button and the start of the output fit the screen; the prompt came from the model's own text
    above_the_fold(page, page.get_by_role("button", name="Generate"), page.locator("#generated"))
    prompt = page.get_by_label("Prompt")
    first_line = sample_corpus_path().read_text().lstrip().splitlines()[0].strip()
    assert prompt.input_value() == first_line  # "THESEUS:" for the built-in corpus
    # after a generation the alternatives are step 1's, as the explainer's
    page.get_by_test_id("cell-0-0").filter(has_text="step 1:").wait_for(timeout=10_000)
    page.screenshot(path=str(ARTIFACTS / "3-generate-fold.png"))
    # Clicking a generated token shows the alternatives the model weighed at that step, the chosen one once.
    token = page.locator('[data-testid="highlighted-text"] .token.highlighted').nth(5)
    clicked = token.inner_text()
    token.click()
    chosen = page.get_by_test_id("cell-0-0").filter(has_text="(chosen)").filter(has_not_text="step 1:")
    chosen.wait_for(timeout=10_000)  # the table moved to the clicked step
    assert not clicked.strip() or repr(clicked) in chosen.inner_text()
    cells = page.locator('[data-testid^="cell-"][data-testid$="-0"]').all_inner_texts()
    assert sum(repr(clicked) == c.strip() for c in cells) == 0  # not listed again among the alternatives
    page.screenshot(path=str(ARTIFACTS / "3-generate.png"), full_page=True)

    # Branching: click an alternative, continue from it (the chosen token marked), then go back to the original.
    from playwright.sync_api import expect

    original = page.locator("#generated").inner_text()
    page.get_by_test_id("cell-1-0").click()
    go_branch = page.get_by_role("button", name="Continue with this alternative")
    expect(go_branch).to_be_enabled(timeout=10_000)
    go_branch.click()
    back = page.get_by_role("button", name="Back to the original")
    expect(back).to_be_enabled(timeout=30_000)
    page.locator("#generated").get_by_text("↳ your choice").first.wait_for(timeout=30_000)  # the legend marks it
    assert page.locator("#generated").inner_text() != original
    page.screenshot(path=str(ARTIFACTS / "3d-branch.png"), full_page=True)
    back.click()
    page.wait_for_function("t => document.querySelector('#generated').innerText === t", arg=original, timeout=30_000)
    expect(back).to_be_disabled(timeout=10_000)

    # A bad input shows its message and leaves the last good output in place (no "Error" badges over it).
    shown = page.locator("#generated").inner_text()
    prompt.fill("€€€ a character this char model never saw")
    page.get_by_role("button", name="Generate").click()
    page.get_by_text("never saw in training", exact=False).first.wait_for(timeout=30_000)
    # (once the request has ended: a request that waited its turn for the model shows its time until then)
    page.wait_for_function(
        "t => document.querySelector('#generated').innerText.replace(/^Error\\n/, '') === t",
        arg=shown.removeprefix("Error\n"),
        timeout=10_000,
    )
    page.screenshot(path=str(ARTIFACTS / "3c-generate-error.png"))
    prompt.fill("First")

    # Typing a value in a slider's box and pressing Enter regenerates, as releasing the slider does.
    before = page.evaluate("() => [...document.querySelectorAll('textarea')].map(t => t.value).join('|')")
    box = page.get_by_label("number input for Temperature (0 = greedy)")
    box.fill("1.6")
    box.press("Enter")
    page.wait_for_function(
        "(b) => [...document.querySelectorAll('textarea')].map(t => t.value).join('|') !== b",
        arg=before,
        timeout=30_000,
    )

    # The sampling explainer: setting top-k to 3 leaves three tokens to draw from in its picture.
    box = page.get_by_label("number input for Top-k (0 = off)")
    box.fill("3")
    box.press("Enter")
    page.wait_for_function(
        "() => [...document.querySelectorAll('.js-plotly-plot')].some(p => p.offsetParent && p.data"
        " && p.data.length === 3 && p.data[2].type === 'bar' && [...p.data[2].y].filter(v => v > 0).length === 3)",
        timeout=30_000,
    )
    page.screenshot(path=str(ARTIFACTS / "3b-explainer.png"), full_page=True)

    # Inspect: a heatmap is drawn.
    run_in_tab(
        page, "Inspect", "Refresh", "Inspect",
        "() => [...document.querySelectorAll('.js-plotly-plot')].some(p => p.offsetParent && p.data"
        " && p.data[0].type === 'heatmap')",
    )  # fmt: skip
    page.wait_for_function(  # every chart of the tab is drawn: attention, all heads, next token, logit lens
        "() => [...document.querySelectorAll('.js-plotly-plot')].filter(p => p.offsetParent && p.data).length >= 4",
        timeout=30_000,
    )
    above_the_fold(page, page.get_by_role("button", name="Inspect", exact=True),
                   page.locator(".js-plotly-plot:visible").first)  # fmt: skip
    # the Layer slider follows the model: the tiny preset's 4 layers
    assert page.get_by_label("number input for Layer", exact=True).get_attribute("max") == "4"
    page.screenshot(path=str(ARTIFACTS / "4-inspect.png"), full_page=True)
    # a layer the model lacks: a message; the charts stay
    layer = page.get_by_label("number input for Layer", exact=True)
    layer.fill("9")
    layer.press("Enter")
    page.get_by_role("button", name="Inspect", exact=True).click()
    page.locator(".toast-body").first.wait_for(timeout=30_000)
    assert page.locator(".js-plotly-plot").filter(has=page.locator(".main-svg")).count() >= 4
    page.screenshot(path=str(ARTIFACTS / "4b-inspect-error.png"))

    # Compare: one click on the run's row in the Train tab's checkpoint table opens it in the Compare tab.
    page.get_by_role("tab", name="Train").click()
    page.get_by_text("Checkpoints", exact=True).click()
    page.get_by_test_id("cell-0-0").click()
    page.get_by_role("tab", name="Compare", selected=True).wait_for(timeout=30_000)
    page.wait_for_function(
        "() => [...document.querySelectorAll('.js-plotly-plot')].some(p => p.offsetParent && p.calcdata"
        " && p.calcdata.length === 2 && p.calcdata[0].length > 3)",
        timeout=30_000,
    )
    page.screenshot(path=str(ARTIFACTS / "5-compare.png"), full_page=True)
    # the y axis in bits per byte: the run redrawn on the scale that compares tokenizers
    page.get_by_label("bits per byte", exact=True).check()
    page.wait_for_function(
        "() => [...document.querySelectorAll('.js-plotly-plot')].some(p => p.offsetParent && p.layout"
        " && p.layout.yaxis.title.text === 'bits per byte' && p.calcdata.length === 2)",
        timeout=30_000,
    )
    page.screenshot(path=str(ARTIFACTS / "5b-compare-bpb.png"), full_page=True)


def test_a_user_trains_a_tokenizer_on_the_corpus_and_sees_what_it_learned(browser, app_url: str) -> None:
    page = open_app(browser, app_url)
    page.get_by_label("Tokenizer", exact=True).click()
    page.get_by_role("option", name="BPE trained on this corpus").click()
    page.get_by_label("number input for BPE vocabulary size").wait_for()  # the size appears with the choice
    page.get_by_role("button", name="Prepare data").click()
    learned = page.locator("#tokenizer-learned")
    learned.get_by_text("The first merges").wait_for(timeout=60_000)
    assert learned.locator("table.merges tr").count() == 21  # 20 merges and the header
    assert learned.locator(".token-views .token-view").count() >= 3  # this BPE, char, byte (and GPT-2)
    # the side-by-side views fit the screen: none runs past the page's right edge
    right = page.evaluate("() => Math.max(...[...document.querySelectorAll('.token-views')].map(e => "
                          "e.getBoundingClientRect().right))")  # fmt: skip
    assert right <= SCREEN["width"], right
    word = learned.get_by_label("See a word merged step by step (Enter)")
    word.fill(" wherefore")
    word.press("Enter")
    page.wait_for_function("() => document.querySelector('.merge-steps').innerText.includes('␣w')", timeout=30_000)
    page.screenshot(path=str(ARTIFACTS / "1b-bpe.png"), full_page=True)
    page.context.close()


def test_a_second_visitor_waits_in_line_sees_the_wait_and_can_leave(browser, page, app_url: str) -> None:
    start_from_train_tab(page, 5000)
    # while it trains, Start and Resume are off (from the run's state, at each refresh: nothing to press by mistake)
    page.wait_for_function(f"() => !{ENABLED}('Start') && !{ENABLED}('Resume')", timeout=10_000)

    other = open_app(browser, app_url)
    other.get_by_role("tab", name="Train").click()
    leave = other.get_by_role("button", name="Leave the queue")
    assert not leave.is_visible()
    other.get_by_role("button", name="Start").click()
    other.get_by_text("Waiting in line: position 1 of 1").wait_for(timeout=30_000)
    assert leave.is_visible()
    above_the_fold(other, leave)  # beside the position in line, in reach at 1366x768
    other.screenshot(path=str(ARTIFACTS / "6-queue.png"))
    leave.click()
    other.get_by_text("You left the queue.").first.wait_for(timeout=10_000)
    other.get_by_role("button", name="Leave the queue").wait_for(state="hidden", timeout=10_000)
    assert "step 0" not in other.locator(".progress-box").inner_text()  # it never trained: no steps, no checkpoint

    page.get_by_role("button", name="Stop").click()
    page.get_by_text("Training stopped at step").first.wait_for(timeout=60_000)
    # once stopped, nothing still says "Stopping…", and Start and Resume are back (the refused Start left nothing)
    page.wait_for_function("() => !document.body.innerText.includes('Stopping after')", timeout=10_000)
    page.wait_for_function(f"() => {ENABLED}('Start') && {ENABLED}('Resume')", timeout=10_000)

    # Muon's own rate shows only while Muon trains
    muon_lr = other.get_by_label("Muon's learning rate (the blocks' matrices)")
    assert muon_lr.is_visible()
    other.get_by_label("Optimizer").click()
    other.get_by_role("option", name="adamw").click()
    muon_lr.wait_for(state="hidden", timeout=10_000)


def start_from_train_tab(page, steps: int) -> None:
    """Open the Train tab, set its Steps, press Start; wait until the run trains."""
    page.get_by_role("tab", name="Train").click()
    box = page.get_by_label("Steps", exact=True)
    box.fill(str(steps))
    box.press("Tab")
    page.get_by_role("button", name="Start").click()
    page.get_by_text("Training…").first.wait_for(timeout=60_000)


# a button of that name, enabled (JavaScript: a function of its name)
ENABLED = "((n) => [...document.querySelectorAll('button')].some(b => b.innerText.trim() === n && !b.disabled))"
