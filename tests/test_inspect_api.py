"""The Inspect tab's circuit scores, ablation and logit attribution through the API (gradio_client), against the
launched app, on a model it trained."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

from tests.app_helpers import TRAIN, plot_data, poll_until, raw_call
from tests.conftest import SHAKESPEARE

PROMPT = "ROMEO:\nBut soft"


@pytest.fixture(scope="module")
def model(app_url: str) -> tuple[Client, str]:
    """A session that pasted a corpus and trained TRAIN's model (2 layers of 2 heads, rope, untied) for 60 steps."""
    c = Client(app_url, verbose=False)
    c.predict("Paste text", [], SHAKESPEARE * 30, "char", 0.1, api_name="/prepare_data")
    status = c.predict(*TRAIN[:11], 60, *TRAIN[12:], api_name="/start_training")
    poll_until(c, lambda r: r[4] == "completed", timeout=600)
    return c, f"{status.split('`')[1]}/latest"


def title(fig: dict[str, Any]) -> str:
    return json.loads(fig["plot"])["layout"]["title"]["text"]


def test_head_scores_heatmaps(model: tuple[Client, str]) -> None:
    c, ckpt = model
    fig, note = c.predict(ckpt, api_name="/head_scores")
    traces = plot_data(fig)
    assert [t["type"] for t in traces] == ["heatmap"] * 3  # previous token, duplicate, induction
    for t in traces:
        assert len(t["z"]) == 2 and all(len(row) == 2 for row in t["z"])  # layers x heads
        assert all(0 <= v <= 1 for row in t["z"] for v in row)
    assert "In-context learning" in note and re.search(r"\*\*[+-]\d+\.\d\d\*\* nats", note)


def test_ablation_beside_the_original(model: tuple[Client, str]) -> None:
    c, ckpt = model
    summary, fig, original, ablated = c.predict(ckpt, PROMPT, 2, "attention head", 1, "zero", api_name="/ablate")
    assert "**L2 H1** set to zero" in summary and "Loss on the prompt" in summary
    before, after = plot_data(fig)
    assert len(before["y"]) >= 10 and len(before["y"]) == len(after["y"])
    assert 0.5 < sum(before["y"]) <= 1.0001  # the original's probabilities of the candidates
    assert len(original) == 20 and len(ablated) == 20  # a char model: 20 tokens of greedy continuation
    # the original continuation is what the Generate tab writes at temperature 0
    greedy = c.predict(ckpt, PROMPT, 0.0, 0, 1.0, 1.0, 0.0, 20, 1, 0.0, 0.0, "", api_name="/generate")[1]
    assert original == greedy
    mlp = c.predict(ckpt, PROMPT, 1, "MLP", 1, "mean", api_name="/ablate")[0]
    assert "**L1 MLP** set to its mean over the prompt's positions" in mlp
    loss = re.search(r"Loss on the prompt: \*\*([\d.]+)\*\* → \*\*([\d.]+)\*\*", mlp)
    assert loss and loss.group(1) != loss.group(2)  # the first MLP matters


def test_ablation_refuses_what_the_model_lacks(model: tuple[Client, str]) -> None:
    c, ckpt = model
    with pytest.raises(AppError, match="the ablated head must be from 1 to 2, got 3"):
        c.predict(ckpt, PROMPT, 1, "attention head", 3, "zero", api_name="/ablate")
    with pytest.raises(AppError, match="the ablated layer must be from 1 to 2, got 9"):
        c.predict(ckpt, PROMPT, 9, "MLP", 1, "zero", api_name="/ablate")
    with pytest.raises(AppError, match="never saw"):
        c.predict(ckpt, "ROMEO: 日本", 1, "MLP", 1, "zero", api_name="/ablate")


def test_logit_attribution_adds_up(model: tuple[Client, str]) -> None:
    c, ckpt = model
    fig, note = c.predict(ckpt, PROMPT, "", api_name="/attribute")
    (bars,) = plot_data(fig)
    # the modern recipe: rope (no position embedding), no biases; per layer its 2 heads and its MLP
    assert bars["x"] == ["token embedding", "L1 H1", "L1 H2", "L1 MLP", "L2 H1", "L2 H2", "L2 MLP"]
    parts, logit = (float(v) for v in re.search(r"\*\*(-?[\d.]+)\*\* = \*\*(-?[\d.]+)\*\*", note).groups())
    assert sum(bars["y"]) == pytest.approx(parts, abs=2e-3) and parts == pytest.approx(logit, abs=2e-3)
    assert "(the top prediction)" in note and "scale frozen at" in note
    fig, note = c.predict(ckpt, PROMPT, "e", api_name="/attribute")
    assert "“e”" in title(fig) and "of **e**" in note
    with pytest.raises(AppError, match="'ee' is 2 tokens"):
        c.predict(ckpt, PROMPT, "ee", api_name="/attribute")
    with pytest.raises(AppError, match="not a token this model knows"):
        c.predict(ckpt, PROMPT, "日", api_name="/attribute")


def test_hostile_requests_get_a_message(model: tuple[Client, str], app_url: str) -> None:
    """What gradio_client will not send (NaN, lone surrogates, wrong types), sent by hand: a message each."""
    _, ckpt = model
    cases = [
        ("/ablate", [ckpt, PROMPT, float("nan"), "MLP", 1, "zero"]),
        ("/ablate", [ckpt, PROMPT, 1, "neuron", 1, "zero"]),
        ("/ablate", [ckpt, PROMPT, 1, "attention head", 1, "half"]),
        ("/ablate", [ckpt, PROMPT, 1, "attention head", [1], "zero"]),
        ("/attribute", [ckpt, PROMPT, "\ud800"]),
        ("/attribute", [ckpt, PROMPT, ["e"]]),
        ("/head_scores", ["../../etc"]),
    ]
    for api_name, data in cases:
        kind, message = raw_call(app_url, api_name, data)
        assert kind == "error" and message and "Something went wrong" not in str(message), (api_name, data, message)
