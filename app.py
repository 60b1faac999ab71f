"""GPT Playground: train a small GPT on your own text, sample from it and look inside, in the browser.

    python app.py [--host 127.0.0.1] [--port 7860] [--runs-dir checkpoints]

Also the Hugging Face Space entry point. Env vars: GPT_PLAYGROUND_HOST, GPT_PLAYGROUND_PORT (else Gradio's own
GRADIO_SERVER_NAME / GRADIO_SERVER_PORT, which a Space sets), GPT_PLAYGROUND_RUNS and the settings in
playground/settings.py.
"""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
# Gradio rebuilds a pandas summary of up to 10,000 past events after every event (for its monitoring page, which
# this app does not show): tens of ms of a core per request on a Space, growing with its uptime. Every 1,000th.
os.environ.setdefault("GRADIO_ANALYTICS_CACHE_FREQUENCY", "1000")

# Gradio and the tabs are imported inside the functions below: every training process runs this file again as its
# main module (multiprocessing does, before it calls the process's target in playground.jobs), and importing Gradio
# there cost each Start about 4.5 s. Imported here, this file only defines things.
if TYPE_CHECKING:
    import gradio as gr

# Enter in a slider's number box of the Generate tab regenerates, as releasing the slider does: Gradio fires a
# slider's "release" when its box loses focus, so Enter takes the focus away.
JS = """
() => document.addEventListener("keydown", (e) => {
  const box = e.target;
  const inSettings = box instanceof HTMLInputElement && box.closest("#generate-settings");
  if (e.key === "Enter" && inSettings && box.type === "number") box.blur();
})
"""
CSS = """
.token-view .tok { border-radius: 3px; padding: 0 1px; margin: 0 1px 0 0; }
#generated .token-container, #generated .token { margin: 0 !important; padding: 0 1px !important; gap: 0 !important; }
#generated .textfield { line-height: 1.9; }
#header h1 { margin-bottom: 0.2em; }
.chart-views { gap: 0 !important; }
"""


def build_app() -> gr.Blocks:
    import gradio as gr

    from playground import compare_tab, data_tab, generate_tab, inspect_tab, train_tab
    from playground.common import forget_me, guard_every_handler, restore_session
    from playground.hosting import browser_state_secret, unbind
    from playground.session import Session
    from playground.settings import LIMITS, PRIVATE

    # delete_cache: Gradio's copies of uploads and downloads older than an hour go, checked hourly.
    sign_in = PRIVATE and bool(os.environ.get("OAUTH_CLIENT_ID"))  # a Space with `hf_oauth: true`
    with gr.Blocks(title="GPT Playground", delete_cache=(3600, 3600)) as demo:
        with gr.Row(equal_height=False):
            gr.Markdown(
                "# GPT Playground\nUpload text, train a small GPT on it while the curves move, sample from it, "
                f"and look inside.{keeper(sign_in)} <details style='display:inline'><summary><small>Limits on this "
                f"server</small></summary><small>{LIMITS.describe()}</small></details>",
                elem_id="header",
            )
            if PRIVATE:
                with gr.Column(scale=0, min_width=200):
                    if sign_in:
                        gr.LoginButton("Sign in to keep your runs", min_width=220)
                    forget = gr.Button("Forget me", size="sm", variant="secondary")
        # Who this browser is, across reloads and tabs: a random secret in its localStorage (playground.hosting).
        browser = gr.BrowserState(None, storage_key="gpt-playground-visitor", secret=browser_state_secret())
        state = gr.State(Session())  # on the server: the browser keeps only the secret above
        # every tab's first refresh waits for this, so each finds the visitor's runs and data
        ready = demo.load(restore_session, [browser, state], [browser, state], api_visibility="private")
        demo.unload(unbind)
        with gr.Tabs() as tabs:
            with gr.Tab("Data", id="data") as tab:
                data_tab.build(demo, state, tab, ready)
            with gr.Tab("Train", id="train") as tab:
                checkpoints = train_tab.build(demo, state, tab, ready)
            with gr.Tab("Generate", id="generate") as tab:
                generate_tab.build(demo, state, tab, ready)
            with gr.Tab("Inspect", id="inspect") as tab:
                inspect_tab.build(demo, state, tab, ready)
            with gr.Tab("Compare", id="compare") as tab:
                compare = compare_tab.build(demo, state, tab, ready)
        compare_tab.link_from(checkpoints, compare, tabs)
        if PRIVATE:
            confirmed = gr.Checkbox(visible=False)
            forget.click(
                forget_me, confirmed, [browser, state, confirmed], api_visibility="private",
                js="() => confirm('Delete your runs, uploads and data sets on this server, and forget this browser?')",
            ).then(None, confirmed, None, js="(done) => { if (done) window.location.reload(); }")  # fmt: skip
    guard_every_handler(demo)
    return demo


def keeper(sign_in: bool) -> str:
    """The header's word on what keeps a visitor's runs."""
    from playground.settings import PRIVATE

    if not PRIVATE:
        return ""
    where = "sign in to keep them anywhere" if sign_in else "another browser or a private window starts afresh"
    return f" <small>Your runs are private and kept for this browser ({where}); Forget me deletes them.</small>"


def idle_gently(demo: gr.Blocks) -> None:
    """Gradio's queue looks for work 1,000 times a second while it has none (and for progress to report 100 times):
    5% of a core, all the time, taken from the training the app runs on the same CPU. Every 10 ms (and 100 ms) adds
    at most 10 ms before a queued event starts. (Attributes of gradio 6.31's Queue, which requirements.txt pins;
    tests/test_ui_units.py checks they are still its own.)"""
    queue = demo._queue
    queue.sleep_when_free, queue.progress_update_sleep_when_free = 0.01, 0.1


def warm_up() -> None:
    """Start-up work, done once before the app serves (never while a layout is built: tests and tools build it too).
    Measure this machine for the Train tab's time estimates, in the background, while it is still quiet; start the
    process that training runs fork from, so that the first Start does not wait for it to import torch."""
    from gpt.calibrate import start_calibration
    from gpt.device import serve_in_foreground
    from playground import jobs

    serve_in_foreground()
    start_calibration()
    jobs.warm_up()


def main() -> None:
    ap = argparse.ArgumentParser(description="Run the GPT Playground web app.")
    env = os.environ.get
    ap.add_argument("--host", default=env("GPT_PLAYGROUND_HOST") or env("GRADIO_SERVER_NAME") or "127.0.0.1")
    ap.add_argument("--port", type=int, default=int(env("GPT_PLAYGROUND_PORT") or env("GRADIO_SERVER_PORT") or 7860))
    ap.add_argument("--runs-dir", help="where runs and checkpoints go (default ./checkpoints)")
    args = ap.parse_args()
    if args.runs_dir:
        os.environ["GPT_PLAYGROUND_RUNS"] = args.runs_dir
    from playground.settings import LIMITS

    warm_up()
    demo = build_app()
    # show_error: what Gradio itself refuses before a handler runs (a value of the wrong type sent to the API, too few
    # values) reaches the caller as its message instead of a bare "Error". Our handlers' own failures are all
    # gr.Error messages already (playground.common.user_errors).
    demo.queue(default_concurrency_limit=8)
    idle_gently(demo)
    demo.launch(
        server_name=args.host,
        server_port=args.port,
        css=CSS,
        js=JS,
        max_file_size=f"{LIMITS.max_upload_mb}mb",
        show_error=True,
        # every request waiting its turn for the model holds a thread (playground.hosting.FairGate); the rest of the
        # app keeps Gradio's usual 40
        max_threads=40 + LIMITS.max_model_waiting,
    )


if __name__ == "__main__":
    main()
