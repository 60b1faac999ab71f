"""A task model's answers checked (the tasks of gpt/tasks.py): the right answer to any prompt of a task, a typed prompt
answered by the model and marked right or wrong, and the examples of a split scored one by one, the ones it still
gets wrong listed.

`solve` computes the answer from the prompt itself, so any prompt of the task's shape is marked, not only the
examples that were generated (a sort task draws 20,000 of its 100 million inputs); `tests/test_task_check.py` checks
it against every generator's own answers. Everything returns plain data.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from gpt.config import TaskConfig
from gpt.errors import UserInputError
from gpt.model import GPT
from gpt.tasks import Shown, Split, Task, greedy_answers, render, score_rows
from gpt.tokenizer import SymbolTokenizer

MAX_GRADED = 5000  # examples of a split scored at a time (a forward pass over each)
MAX_LISTED = 100  # of those, the wrong ones listed with the model's answer


def _pattern(cfg: TaskConfig, tok: SymbolTokenizer) -> list[set[int]]:
    """The ids allowed at each position of a prompt of the task (the generators' layouts, gpt/tasks.py)."""
    sym = {s: i for i, s in enumerate(tok.symbols)}

    def numbers(n: int) -> set[int]:
        return set(range(n))

    if cfg.name == "modular-addition":
        p = cfg.modulus
        return [numbers(p), {sym["+"]}, numbers(p), {sym["="]}]
    if cfg.name in ("sort", "reverse", "copy"):
        return [numbers(cfg.values)] * cfg.length + [{sym["="]}]
    if cfg.name == "addition":
        return [numbers(10)] * cfg.digits + [{sym["+"]}] + [numbers(10)] * cfg.digits + [{sym["="]}]
    if cfg.name in ("parity", "brackets"):
        return [numbers(2)] * cfg.length + [{sym["="]}]
    raise UserInputError(f"no task named {cfg.name[:40]!r}")


def prompt_form(cfg: TaskConfig) -> str:
    """What a prompt of the task looks like, in words with an example."""
    n, v, d = cfg.length, cfg.values, cfg.digits
    numbers = " ".join(str((3 * i + 2) % v) for i in range(n))
    forms = {
        "modular-addition": f"a + b = with a and b from 0 to {cfg.modulus - 1}, such as `3 + 5 =`",
        "sort": f"{n} numbers from 0 to {v - 1} then =, spaced, such as `{numbers} =`",
        "addition": f"two {d}-digit numbers joined by + then =, such as `{'1' * d}+{'2' * d}=`",
        "parity": f"{n} bits then =, such as `{'10' * (n // 2)}{'1' * (n % 2)}=`",
        "brackets": f"{n} brackets then =, such as `{'()' * (n // 2)}{'(' * (n % 2)}=`",
    }
    return forms.get(cfg.name, forms["sort"])  # (reverse and copy: sort's form)


def parse_prompt(cfg: TaskConfig, tok: SymbolTokenizer, text: str) -> list[int]:
    """The token ids of a typed prompt, checked against the task's shape (the "=" at its end may be left out).
    Raises UserInputError saying what a prompt of this task looks like."""
    ids = tok.encode(text)  # (a symbol the task lacks is refused there, by name)
    pattern = _pattern(cfg, tok)
    if len(ids) == len(pattern) - 1:
        ids = [*ids, next(iter(pattern[-1]))]
    if len(ids) != len(pattern) or any(i not in allowed for i, allowed in zip(ids, pattern, strict=True)):
        raise UserInputError(f"a prompt of this task ({cfg.name}) is {prompt_form(cfg)}; the model writes the answer")
    return ids


def solve(cfg: TaskConfig, prompt: list[int]) -> list[int]:
    """The answer's token ids to a prompt of the task's shape (`parse_prompt`), as the task's generator computes it."""
    if cfg.name == "modular-addition":
        return [(prompt[0] + prompt[2]) % cfg.modulus]
    body = prompt[:-1]
    if cfg.name == "sort":
        return sorted(body)
    if cfg.name == "reverse":
        return body[::-1]
    if cfg.name == "copy":
        return list(body)
    if cfg.name == "addition":
        d = cfg.digits
        total = int("".join(map(str, body[:d]))) + int("".join(map(str, body[d + 1 :])))
        return [int(c) for c in reversed(str(total).rjust(d + 1, "0"))]  # least significant first, d + 1 digits
    if cfg.name == "parity":
        return [sum(body) % 2]
    if cfg.name == "brackets":
        depth = np.cumsum([1 - 2 * b for b in body])  # "(" is 0, ")" is 1
        return [3 if depth.min() >= 0 and depth[-1] == 0 else 4]  # "y" or "n"
    raise UserInputError(f"no task named {cfg.name[:40]!r}")


@dataclass(frozen=True)
class Answered:
    """A typed prompt, the right answer, the model's (greedy) and whether they agree; where the prompt is one of the
    task's examples, which split holds it (a held-out one was never trained on)."""

    prompt: str
    answer: str
    model_answer: str
    correct: bool
    split: Split | None  # None: not among the examples (or they are not at hand)


def find_example(task: Task, prompt: list[int]) -> Split | None:
    """The split that holds the example with this prompt, if any."""
    for split, rows in (("train", task.train), ("val", task.val)):
        if (np.asarray(rows[:, : task.prompt_len]) == np.asarray(prompt)).all(axis=1).any():
            return split  # type: ignore[return-value]
    return None


@torch.no_grad()
def answer_prompt(
    model: GPT, cfg: TaskConfig, tok: SymbolTokenizer, text: str, examples: Task | None = None
) -> Answered:
    """The model's greedy answer to a typed prompt of task `cfg`, marked against `solve`'s."""
    prompt = parse_prompt(cfg, tok, text)
    answer = solve(cfg, prompt)
    x = torch.tensor([prompt], device=next(model.parameters()).device)
    got = greedy_answers(model, x, len(answer), tok.vocab_size)[0].tolist()
    split = find_example(examples, prompt) if examples is not None else None
    return Answered(tok.decode(prompt), tok.decode(answer), tok.decode(got), got == answer, split)


@dataclass(frozen=True)
class Graded:
    """A split's examples scored one by one: how many, how many right, and the wrong ones (the first MAX_LISTED),
    each with the model's answer."""

    split: Split
    scored: int
    right: int
    wrong: list[Shown]


@torch.no_grad()
def grade(model: GPT, task: Task, split: Split = "val", limit: int = MAX_GRADED) -> Graded:
    """Exact match on the split's first `limit` examples (the rows are shuffled when made: a random sample), the wrong
    ones listed with the model's greedy answer."""
    picked = np.asarray((task.train if split == "train" else task.val)[:limit], dtype=np.int64)
    rows = torch.from_numpy(picked).to(next(model.parameters()).device)
    vocab = task.tokenizer.vocab_size
    right, _ = score_rows(model, rows, task.prompt_len, vocab)
    wrong = (~right).nonzero().flatten()[:MAX_LISTED].tolist()
    listed: list[Shown] = []
    if wrong:
        got = greedy_answers(model, rows[wrong, : task.prompt_len], task.answer_len, vocab).tolist()
        for i, answer in zip(wrong, got, strict=True):
            shown = render(task, task.example(split, i), split)
            listed.append(replace(shown, model_answer=task.tokenizer.decode(answer), correct=False))
    return Graded(split, len(rows), int(right.sum()), listed)
