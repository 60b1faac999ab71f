"""gpt.task_check (a task model's answers marked) and gpt.inspect.embedding_spectrum, without a server."""

from __future__ import annotations

import math

import pytest
import torch

from gpt.config import ModelConfig, TaskConfig
from gpt.errors import UserInputError
from gpt.inspect import embedding_spectrum
from gpt.model import GPT
from gpt.task_check import answer_prompt, find_example, grade, parse_prompt, solve
from gpt.tasks import make_task

SMALL = {
    "modular-addition": TaskConfig(name="modular-addition", modulus=13, train_fraction=0.5),
    "sort": TaskConfig(name="sort", length=5, values=7, examples=300),
    "reverse": TaskConfig(name="reverse", length=4, values=12, examples=300),
    "copy": TaskConfig(name="copy", length=3, values=20, examples=300),
    "addition": TaskConfig(name="addition", digits=3, examples=300),
    "parity": TaskConfig(name="parity", length=7, examples=100),
    "brackets": TaskConfig(name="brackets", length=8, examples=60),
}


@pytest.mark.parametrize("name", sorted(SMALL))
def test_solve_gives_every_generated_example_its_answer(name: str) -> None:
    task = make_task(SMALL[name])
    for split, rows in (("train", task.train), ("val", task.val)):
        for i in range(len(rows)):
            ex = task.example(split, i)  # type: ignore[arg-type]
            assert solve(task.config, list(ex.prompt)) == list(ex.answer), (name, ex)
    # a prompt typed as the examples are shown parses back to the example's ids
    shown = task.example("val", 0)
    assert parse_prompt(task.config, task.tokenizer, task.tokenizer.decode(list(shown.prompt))) == list(shown.prompt)


def test_a_typed_prompt_of_the_wrong_shape_is_refused_saying_the_form() -> None:
    task = make_task(SMALL["modular-addition"])
    cfg, tok = task.config, task.tokenizer
    assert parse_prompt(cfg, tok, "3 + 5") == parse_prompt(cfg, tok, "3 + 5 =")  # the "=" may be left out
    for bad, match in [("3 + 5 = 8", "a \\+ b = with a and b from 0 to 12"), ("3 5 + =", "such as `3 \\+ 5 =`"),
                       ("3+5=", "not one of this task's symbols"),
                       ("13 + 1 =", "not one of this task's symbols")]:  # fmt: skip
        with pytest.raises(UserInputError, match=match):
            parse_prompt(cfg, tok, bad)
    add = make_task(SMALL["addition"])
    with pytest.raises(UserInputError, match="two 3-digit numbers"):
        parse_prompt(add.config, add.tokenizer, "12+345=")


def test_a_model_is_marked_right_or_wrong_and_the_wrong_examples_listed() -> None:
    task = make_task(SMALL["modular-addition"])
    torch.manual_seed(0)
    model = GPT(ModelConfig(n_layer=1, n_head=2, n_embd=32, block_size=4, vocab_size=16))
    a = answer_prompt(model, task.config, task.tokenizer, "3 + 12 =", task)
    assert a.answer == "2" and a.correct == (a.model_answer == "2") and a.prompt == "3 + 12 ="
    assert a.split == find_example(task, parse_prompt(task.config, task.tokenizer, "3 + 12")) in ("train", "val")
    g = grade(model, task, "val")
    assert g.scored == len(task.val) and 0 <= g.right < g.scored  # an untrained model: some wrong
    assert len(g.wrong) == min(100, g.scored - g.right)
    w = g.wrong[0]
    assert w.correct is False and w.model_answer != w.answer and w.split == "val"
    assert solve(task.config, parse_prompt(task.config, task.tokenizer, w.prompt)) == task.tokenizer.encode(w.answer)


def test_the_spectrum_of_a_wave_embedding_has_its_frequencies_standing_out() -> None:
    p, d = 23, 16
    model = GPT(ModelConfig(n_layer=1, n_head=2, n_embd=d, block_size=4, vocab_size=p + 2))
    a = torch.arange(p, dtype=torch.float32)[:, None]
    waves = torch.zeros(p, d)
    for j, k in enumerate((3, 7)):  # cos and sin of two frequencies, as a grokked model's embedding
        waves[:, 2 * j] = torch.cos(2 * math.pi * k * a[:, 0] / p)
        waves[:, 2 * j + 1] = torch.sin(2 * math.pi * k * a[:, 0] / p)
    with torch.no_grad():
        model.transformer.wte.weight[:p] = waves + 0.5  # (and a constant part, frequency 0)
    s = embedding_spectrum(model, p)
    assert s.frequencies == list(range(1, 12)) and len(s.norms) == 11
    assert sorted(s.key) == [3, 7] and s.top_share > 0.99
    total = float((model.transformer.wte.weight[:p].detach() ** 2).sum())
    assert math.isclose(sum(v * v for v in s.norms) + s.constant**2, total, rel_tol=1e-4)  # Parseval: all of it
    torch.manual_seed(0)
    with torch.no_grad():
        model.transformer.wte.weight.normal_()
    spread = embedding_spectrum(model, p)
    assert spread.key == [] and spread.top_share < 0.75  # an untrained embedding: no wave stands out
    with pytest.raises(UserInputError, match="3 to"):
        embedding_spectrum(model, 1000)
