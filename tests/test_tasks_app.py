"""The tasks lab through the app's API (gradio_client, against the launched app): a task prepared in the Data tab and
shown as examples, trained with its accuracy chart live, its answers marked in Generate, its examples scored and its
Fourier spectrum in Inspect, its accuracy in Compare; a task preset preparing its own task; a shared server's caps."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

from gpt.events import read_metrics
from playground import task_lab
from playground.train_tab import FIELDS, build_config, preset_values, recipe_values
from tests.app_helpers import plot_data, poll_until, raw_call
from tests.conftest import SHAKESPEARE, launch_app

# name, modulus, length, values, digits, examples, train fraction, seed (the /prepare_task API's order)
MOD23 = ["modular-addition", 23, 8, 10, 3, 1000, 0.5, 0]
# start from, preset, layers, heads, embd, context, dropout, batch, lr, schedule, warmup, steps, eval, sample, seed
TASK_TRAIN = ["", "custom", 1, 4, 64, 32, 0.0, 512, 3e-3, "constant", 10, 100, 25, 0, 1]
ACCURACY = 11  # the accuracy chart among /poll's outputs as a client gets them (playground.train_tab.POLLED)
# bad options, each with its message (locally: the library's caps)
REFUSED = [
    (["modular-addition", 1000, *MOD23[2:]], "the modulus p must be from 2 to 400, got 1000"),
    (["brackets", 23, 7, 10, 3, 100, 0.5, 0], "length must be even for brackets"),
    (["sort", 23, 8, 10, 3, 1, 0.5, 0], "the examples must be from 2 to 200000"),
    (["modular-addition", 2, *MOD23[2:6], 0.05, 0], "leaves no example to train on"),
]
# a shared server's caps
CAPPED = [
    (["modular-addition", 200, *MOD23[2:]], "the modulus p must be from 2 to 113, got 200"),
    (["sort", 23, 8, 10, 3, 50_000, 0.5, 0], "the examples must be from 2 to 20000"),
    (["sort", 23, 8, 500, 3, 100, 0.5, 0], "the values must be from 2 to 100"),
    (["addition", 23, 8, 10, 20, 100, 0.5, 0], "the digits must be from 1 to 10"),
]


@pytest.fixture(scope="module")
def task_run(app_url: str) -> dict[str, Any]:
    """One session: a + b mod 23 prepared (half the 529 pairs trained on), a one-layer model trained 100 steps."""
    c = Client(app_url, verbose=False)
    stats, examples, *_ = c.predict(*MOD23, api_name="/prepare_task")
    status = c.predict(*TASK_TRAIN, api_name="/start_training")
    assert "Training started" in status, status
    last = poll_until(c, lambda r: r[4] in ("completed", "error"), timeout=300)
    assert last[4] == "completed", last[6]
    run = status.split("`")[1]
    return {"client": c, "stats": stats, "examples": examples, "run": run, "ckpt": f"{run}/latest", "last": last}


def test_a_task_is_prepared_and_shown_with_the_prompt_and_answer_marked(task_run: dict[str, Any]) -> None:
    stats, examples = task_run["stats"], task_run["examples"]
    assert "a + b mod 23" in stats and "| 529 | 264 | 265 | 4 prompt + 1 answer | 25 symbols |" in stats
    assert examples.count('class="tok prompt"') == 8 * 4 and examples.count('class="tok answer"') == 8
    assert examples.count("<td style='padding:2px 14px 2px 0;text-align:left'>held out</td>") == 4
    c = Client(str(task_run["client"].src), verbose=False)
    stats, examples, *_ = c.predict("addition", 23, 8, 10, 2, 300, 0.5, 7, api_name="/prepare_task")
    assert "| 300 | 150 | 150 | 6 prompt + 3 answer |" in stats  # 12+34= -> the sum's 3 digits, least significant first
    for args, message in REFUSED:
        with pytest.raises(AppError, match=message):
            c.predict(*args, api_name="/prepare_task")
    kind, said = raw_call(c.src, "/prepare_task", ["sort", 23, 8, float("nan"), 3, 100, 0.5, 0])
    assert kind == "error" and "values" in said, said
    with pytest.raises(AppError, match="Prepare task"):
        c.predict("Task (an algorithm)", [], "", "char", 0.1, api_name="/prepare_data")


def test_a_task_run_draws_train_and_held_out_accuracy_live(task_run: dict[str, Any], app_url: Any) -> None:
    traces = plot_data(task_run["last"][ACCURACY])
    assert [t["name"] for t in traces] == ["train", "held out", "train loss", "held-out loss"]
    train, held_out = traces[0], traces[1]
    assert train["x"] == held_out["x"] == [25, 50, 75, 100]
    assert all(0 <= a <= 1 for a in train["y"] + held_out["y"]) and train["y"][-1] >= held_out["y"][-1]
    figure = json.loads(task_run["last"][ACCURACY])["figure"]
    assert [b["label"] for b in figure["layout"]["updatemenus"][0]["buttons"]] == ["linear steps", "log steps"]
    curves = read_metrics(app_url.runs / task_run["run"] / "metrics.jsonl")
    assert curves.train_acc == train["y"] and curves.val_acc == held_out["y"]


def test_generate_marks_a_task_models_answer(task_run: dict[str, Any]) -> None:
    c, ckpt = task_run["client"], task_run["ckpt"]
    said = c.predict(ckpt, "3 + 4", api_name="/task_answer")  # (the "=" may be left out)
    right = re.fullmatch(r"✓ \*\*Right:\*\* `3 \+ 4 =` → \*\*7\*\* \((.+)\)", said)
    wrong = re.fullmatch(r"✗ \*\*Wrong:\*\* `3 \+ 4 =` → \*\*(\d+)\*\*; the answer is \*\*7\*\* \((.+)\)", said)
    assert right or (wrong and wrong.group(1) != "7"), said
    assert ("held-out example" in said) or ("example it trained on" in said)  # every pair is one or the other
    for prompt, message in [("3 + 4 = 7", "a \\+ b = with a and b from 0 to 22"), ("30 + 1", "not one of this task")]:
        with pytest.raises(AppError, match=message):
            c.predict(ckpt, prompt, api_name="/task_answer")


def test_inspect_lists_the_wrong_examples_and_draws_the_fourier_spectrum(task_run: dict[str, Any]) -> None:
    c, ckpt = task_run["client"], task_run["ckpt"]
    note, table = c.predict(ckpt, "val", api_name="/task_examples")
    got = re.search(r"\*\*([\d,]+) of 265\*\* held-out examples", note)
    assert got, note
    rows = table["data"]
    assert len(rows) == min(100, 265 - int(got.group(1)))
    for split, prompt, answer, its in rows:
        assert split == "held out" and prompt.endswith(" =") and answer != its
        a, b = (int(v) for v in prompt[:-2].split(" + "))
        assert int(answer) == (a + b) % 23
    fig, note = c.predict(ckpt, api_name="/task_spectrum")
    (bars,) = plot_data(fig)
    assert bars["type"] == "bar" and bars["x"] == list(range(1, 12)) and all(v >= 0 for v in bars["y"])
    assert "of the embedding is in its 5 strongest frequencies" in note
    attention = c.predict(ckpt, "3 + 4 =", 1, 1, "", api_name="/inspect")[0]  # the text views work on it as well
    assert len(plot_data(attention)[0]["z"]) == 4
    assert "In-context learning" in c.predict(ckpt, api_name="/head_scores")[1]  # (its context: an example's 4)
    assert "Loss on the prompt" in c.predict(ckpt, "3 + 4 =", 1, "MLP", 1, "zero", api_name="/ablate")[0]
    assert "The parts add up to the logit" in c.predict(ckpt, "3 + 4 =", "7", api_name="/attribute")[1]
    sort = Client(str(c.src), verbose=False)  # a sort model: its examples scored, no spectrum (no circle of numbers)
    sort.predict("sort", 23, 3, 5, 3, 100, 0.5, 0, api_name="/prepare_task")
    run = sort.predict(*TASK_TRAIN[:11], 5, 5, 0, 1, api_name="/start_training").split("`")[1]
    poll_until(sort, lambda r: r[4] in ("completed", "error"))
    assert "of 50** held-out examples" in sort.predict(f"{run}/latest", "val", api_name="/task_examples")[0]
    with pytest.raises(AppError, match="Fourier view is for modular addition, .* this model learned sort"):
        sort.predict(f"{run}/latest", api_name="/task_spectrum")


def test_compare_overlays_task_accuracy_on_log_steps(task_run: dict[str, Any]) -> None:
    c, run = task_run["client"], task_run["run"]
    fig, summary, *_ = c.predict([run], "step", "accuracy", True, api_name="/compare")
    plot = json.loads(fig["plot"])
    assert [t["name"] for t in plot["data"]] == [f"{run} held out", f"{run} train"]
    assert plot["layout"]["xaxis"]["type"] == "log"
    assert summary["headers"][-2:] == ["held-out accuracy", "best held-out accuracy"]
    assert 0 <= summary["data"][0][-2] <= summary["data"][0][-1] <= 1


def test_a_task_preset_prepares_its_own_task(app_url: str) -> None:
    c = Client(app_url, verbose=False)
    c.predict("Paste text", [], SHAKESPEARE * 10, "char", 0.1, api_name="/prepare_data")
    grokking = ["", "grokking", 1, 4, 64, 64, 0.0, 4096, 1e-3, "constant", 10, 20, 10, 0, 1]
    status = c.predict(*grokking, api_name="/start_training")
    assert "its task is your data set now" in status and "a + b mod 59" in status, status
    last = poll_until(c, lambda r: r[4] in ("completed", "error"), timeout=300)
    assert last[4] == "completed" and len(plot_data(last[ACCURACY])[1]["y"]) == 2  # evaluated at 10 and 20


def test_the_task_presets_fill_the_form_and_fit_the_estimate() -> None:
    """In-process: grokking's and sort's settings fill the form (weight decay among them); a recipe changes only
    their switches; the estimate is of the model the trainer runs (an example's context, the batch at most the
    examples)."""
    names = [k for k, *_ in FIELDS]
    grok = dict(zip(names, preset_values("grokking"), strict=True))
    assert grok["train.weight_decay"] == 1.0 and grok["train.batch_size"] == 4096 and grok["model.pos"] == "learned"
    cfg = build_config("grokking", preset_values("grokking"))
    assert cfg.task.name == "modular-addition" and cfg.task.modulus == 59
    fitted, vocab = task_lab.fitted(cfg, None)
    assert fitted.model.block_size == 4 and fitted.train.batch_size == 1392 and vocab == 61
    modern = dict(zip(names, recipe_values("sort", "gpt2"), strict=True))
    assert modern["model.pos"] == "learned" and not isinstance(modern["train.max_steps"], int)  # (gr.skip())


@pytest.mark.slow
def test_a_shared_server_caps_a_tasks_sizes(tmp_path_factory: pytest.TempPathFactory) -> None:
    for url in launch_app(tmp_path_factory, GPT_PLAYGROUND_PRIVATE="1"):
        c = Client(url, verbose=False)
        for args, message in CAPPED:
            with pytest.raises(AppError, match=message):
                c.predict(*args, api_name="/prepare_task")
        stats = c.predict("modular-addition", 59, 8, 10, 3, 1000, 0.4, 0, api_name="/prepare_task")[0]
        assert "3,481" in stats and "/" not in stats.split("\n")[0]  # no server path in what the visitor reads
        assert len(list(url.runs.glob("users/*/data/task-*/meta.json"))) == 1  # in the visitor's home, not shared
