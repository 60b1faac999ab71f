"""On a shared server (GPT_PLAYGROUND_PRIVATE=1), in a real browser: anonymous visitors are their browser. Apart
from tests/test_browser.py so that the two run side by side (each module launches its own app)."""

from __future__ import annotations

import re

import pytest

from tests.conftest import SHAKESPEARE as SHAKESPEARE_START
from tests.test_browser import ARTIFACTS, browser, open_app, start_from_train_tab  # noqa: F401 - browser: a fixture

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def shared_url(tmp_path_factory: pytest.TempPathFactory):
    from tests.conftest import launch_app

    yield from launch_app(tmp_path_factory, GPT_PLAYGROUND_PRIVATE="1")


def test_on_a_shared_server_a_reload_and_a_second_tab_find_the_same_runs(browser, shared_url) -> None:  # noqa: F811
    """Anonymous visitors are their browser: a reload, a second tab find their data, runs and live run again;
    another browser and an API client without the secret see none; the secret never reaches the server's log."""
    from gradio_client import Client

    page = open_app(browser, shared_url)
    page.get_by_role("radio", name="Paste text").check()
    page.get_by_role("textbox", name="Paste text").fill(SHAKESPEARE_START * 40)
    page.get_by_role("button", name="Prepare data").click()
    page.get_by_text("chars / token").wait_for(timeout=60_000)
    start_from_train_tab(page, 20000)
    page.wait_for_function("() => /step [1-9]/.test(document.querySelector('.progress-box').innerText)",
                           timeout=60_000)  # fmt: skip

    page.reload()
    page.get_by_role("tab", name="Train").click()
    # the live run again: its progress moves, its charts fill, Stop is its
    page.wait_for_function("() => /step [1-9]/.test(document.querySelector('.progress-box').innerText)",
                           timeout=30_000)  # fmt: skip
    page.wait_for_function(
        "() => [...document.querySelectorAll('.js-plotly-plot')].some(p => p.calcdata && p.calcdata[0].length >= 2)",
        timeout=30_000,
    )
    page.get_by_role("tab", name="Data").click()
    page.get_by_text("chars / token").wait_for(timeout=30_000)  # and the data set
    page.screenshot(path=str(ARTIFACTS / "7-reloaded.png"))

    tab2 = page.context.new_page()  # a second tab of the same browser
    tab2.goto(shared_url)
    tab2.get_by_role("tab", name="Train").click()
    tab2.wait_for_function("() => /step [1-9]/.test(document.querySelector('.progress-box').innerText)",
                           timeout=30_000)  # fmt: skip

    stranger = open_app(browser, shared_url)  # another browser: nothing of hers
    stranger.get_by_role("tab", name="Train").click()
    stranger.get_by_text("No training run yet").wait_for(timeout=10_000)
    client = Client(shared_url, verbose=False)  # an API client without the secret: none of her checkpoints
    assert client.predict(api_name="/list_checkpoints")[0]["data"] in ([], [[None] * 5], [["", "", "", "", ""]])
    with pytest.raises(Exception, match="no training run of yours"):
        client.predict(api_name="/stop_training")

    tab2.get_by_role("button", name="Stop").click()  # the second tab can stop it
    page.get_by_role("tab", name="Train").click()
    page.get_by_text("Training stopped at step").first.wait_for(timeout=60_000)

    # the header says what keeps the runs; Forget me deletes them and the browser starts afresh
    page.get_by_text("kept for this browser").first.wait_for()
    page.get_by_role("tab", name="Train").click()
    page.get_by_text("Training stopped at step").first.wait_for(timeout=60_000)
    page.screenshot(path=str(ARTIFACTS / "7b-before-forget.png"))
    assert page.evaluate("() => localStorage.getItem('gpt-playground-visitor')")  # kept by the browser
    # ... and never written by the server: no 256-bit token (43 URL-safe characters) anywhere in its log
    log = shared_url.log.read_text()
    assert not re.search(r"(?<![A-Za-z0-9_-])[A-Za-z0-9_-]{43}(?![A-Za-z0-9_-])", log)

    kept = page.evaluate("() => localStorage.getItem('gpt-playground-visitor')")
    page.on("dialog", lambda d: d.accept())
    with page.expect_navigation(timeout=60_000):  # the page reloads as a new visitor
        page.get_by_role("button", name="Forget me").click()
    page.get_by_role("tab", name="Data").wait_for()
    page.wait_for_function("(k) => localStorage.getItem('gpt-playground-visitor') !== k", arg=kept, timeout=30_000)
    page.get_by_role("tab", name="Train").click()
    page.screenshot(path=str(ARTIFACTS / "7c-forgotten.png"))
    page.get_by_text("No training run yet").wait_for(timeout=30_000)
    assert not [d for d in shared_url.runs.glob("users/*") if any(d.rglob("config.json"))]  # her runs are gone
