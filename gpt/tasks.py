"""Algorithmic tasks: watch a model learn an algorithm from examples, scored by exact match.

A task is data, beside the text corpora: each example is a prompt and its answer, in the tokens of a tokenizer that
fits the task (`gpt.tokenizer.SymbolTokenizer`: one token per number, so 96 is one symbol, as the algorithm sees it):

    modular-addition   "12 + 90 ="  -> "5"        a + b mod p, each of the p * p pairs once (task.modulus)
    sort               "3 1 2 ="    -> "1 2 3"    task.length numbers from 0 to task.values - 1
    reverse            "3 1 2 ="    -> "2 1 3"
    copy               "3 1 2 ="    -> "3 1 2"
    addition           "123+045="   -> "8610"     task.digits digits each; the sum's digits least significant first,
                                                  the order in which a carry is found (a model writes left to right)
    parity             "10110="     -> "1"        whether the count of ones is odd (task.length bits)
    brackets           "(()())="    -> "y"        balanced or not; half are (task.length, even)

Every example is generated from `task.seed` (the same seed, the same examples, on any machine), and the examples,
not the positions, are split: a share `task.train_fraction` is trained on, the rest is held out, and no example is in
both (each is drawn once). `make_task` builds a task in memory, `prepare_task` writes it as a prepared data set (one
example a row: `gpt.data.write_examples`, cached by its settings like a corpus), `load_task` reads it back.

Training on it (gpt/trainer.py) counts only the answer's tokens in the loss (`gpt.data.answer_xy`), and each
evaluation scores exact-match accuracy (`Scorer`): the share of a fixed sample of train examples, and of held-out
ones, whose whole answer the model gets right by greedy decoding. `render` and `examples_preview` give examples as
plain data, the prompt and the answer apart (and the model's answer beside them: `answers_preview`).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from gpt.config import Config, TaskConfig, TaskName, choices
from gpt.data import MAX_META_BYTES, PreparedData, answer_xy, load_prepared, open_regular, write_examples
from gpt.device import autocast
from gpt.errors import UserInputError
from gpt.model import GPT
from gpt.paths import cache_dir
from gpt.tokenizer import SymbolTokenizer

TASKS: list[str] = choices(TaskName)
# The generators' version, part of a prepared task's cache key: a change in how examples are made makes new data.
GENERATOR_VERSION = 1
ENUMERATE_UP_TO = 200_000  # brackets: strings listed in full up to this many, drawn at random past it
Split = Literal["train", "val"]


@dataclass(frozen=True)
class Example:
    """One example: the prompt's token ids, then the answer's."""

    prompt: tuple[int, ...]
    answer: tuple[int, ...]


@dataclass
class Task:
    """A task's examples: one example a row of token ids (the prompt's `prompt_len`, then the answer's), train and
    held-out apart; made in memory (`make_task`) or read from a prepared data set's files (`load_task`)."""

    config: TaskConfig  # its generator's settings (name, options, seed, train fraction)
    tokenizer: SymbolTokenizer
    train: np.ndarray  # (examples, width) token ids
    val: np.ndarray  # the held-out examples, likewise
    prompt_len: int
    description: str  # one line: what the task is, at these settings

    @property
    def answer_len(self) -> int:
        return int(self.train.shape[1]) - self.prompt_len

    def example(self, split: Split, i: int) -> Example:
        row = [int(t) for t in (self.train if split == "train" else self.val)[i]]
        return Example(tuple(row[: self.prompt_len]), tuple(row[self.prompt_len :]))


@dataclass(frozen=True)
class Shown:
    """An example as text, its prompt and its answer apart (the tokens too, one string each), for a table of
    examples. With a model (`answers_preview`): what the model answers and whether that is the answer."""

    split: Split
    prompt: str
    answer: str
    prompt_tokens: list[str]
    answer_tokens: list[str]
    sep: str  # what stands between the prompt and the answer written on one line (the tokenizer's separator)
    model_answer: str | None = None
    correct: bool | None = None


# ----- the generators -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Made:
    symbols: list[str]
    sep: str
    prompts: np.ndarray  # (n, prompt_len)
    answers: np.ndarray  # (n, answer_len)
    description: str


def _numbers(n: int) -> list[str]:
    return [str(i) for i in range(n)]


def _modular_addition(cfg: TaskConfig, rng: np.random.Generator) -> _Made:
    p = cfg.modulus
    plus, eq = p, p + 1
    a, b = np.divmod(rng.permutation(p * p), p)  # every pair once, in a random order
    prompts = np.stack([a, np.full_like(a, plus), b, np.full_like(a, eq)], axis=1)
    return _Made(_numbers(p) + ["+", "="], " ", prompts, ((a + b) % p)[:, None],
                 f"modular addition: a + b mod {p}, each of the {p * p:,} pairs once")  # fmt: skip


def _sequence_task(solve: Callable[[np.ndarray], np.ndarray], what: str) -> Callable[..., _Made]:
    def make(cfg: TaskConfig, rng: np.random.Generator) -> _Made:
        n, v = cfg.length, cfg.values
        inputs = _distinct(v, n, cfg.examples, rng)
        prompts = np.concatenate([inputs, np.full((len(inputs), 1), v)], axis=1)
        return _Made(_numbers(v) + ["="], " ", prompts, solve(inputs),
                     f"{what} {n} numbers from 0 to {v - 1}")  # fmt: skip

    return make


def _addition(cfg: TaskConfig, rng: np.random.Generator) -> _Made:
    d = cfg.digits
    digits = _distinct(10, 2 * d, cfg.examples, rng)  # a's digits then b's, most significant first
    a, b = digits[:, :d], digits[:, d:]
    carry = np.zeros(len(digits), dtype=np.int64)
    out = []
    for i in range(d - 1, -1, -1):  # column by column from the least significant: the sum's digits in that order
        s = a[:, i] + b[:, i] + carry
        out.append(s % 10)
        carry = s // 10
    out.append(carry)
    plus, eq = np.full((len(digits), 1), 10), np.full((len(digits), 1), 11)
    return _Made(list("0123456789+="), "", np.concatenate([a, plus, b, eq], axis=1), np.stack(out, axis=1),
                 f"addition of two {d}-digit numbers, the sum's {d + 1} digits written least significant "
                 "first")  # fmt: skip


def _parity(cfg: TaskConfig, rng: np.random.Generator) -> _Made:
    bits = _distinct(2, cfg.length, cfg.examples, rng)
    prompts = np.concatenate([bits, np.full((len(bits), 1), 2)], axis=1)
    return _Made(["0", "1", "="], "", prompts, (bits.sum(axis=1) % 2)[:, None],
                 f"parity: whether {cfg.length} bits hold an odd number of ones")  # fmt: skip


def _brackets(cfg: TaskConfig, rng: np.random.Generator) -> _Made:
    strings = _bracket_strings(cfg.length, cfg.examples, rng)  # 0 = "(", 1 = ")"
    balanced = _balanced(strings)
    prompts = np.concatenate([strings, np.full((len(strings), 1), 2)], axis=1)
    return _Made(["(", ")", "=", "y", "n"], "", prompts, np.where(balanced, 3, 4)[:, None],
                 f"balanced brackets: whether {cfg.length} brackets pair up (y) or not (n), half of each, every "
                 "string with as many ( as )")  # fmt: skip


GENERATORS: dict[str, Callable[[TaskConfig, np.random.Generator], _Made]] = {
    "modular-addition": _modular_addition,
    "sort": _sequence_task(lambda x: np.sort(x, axis=1), "sorting:"),
    "reverse": _sequence_task(lambda x: x[:, ::-1].copy(), "reversing:"),
    "copy": _sequence_task(lambda x: x.copy(), "copying:"),
    "addition": _addition,
    "parity": _parity,
    "brackets": _brackets,
}


def _distinct(base: int, k: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """`n` different sequences of `k` digits in `base` (all there are, where there are fewer), in a random order:
    numbered and drawn without replacement when the numbers fit in 63 bits, else drawn digit by digit and
    deduplicated."""
    space = base**k
    n = min(n, space)
    if space < 2**63:
        index = rng.choice(space, size=n, replace=False) if space > n else rng.permutation(space)
        out = np.empty((n, k), dtype=np.int64)
        for j in range(k - 1, -1, -1):  # the number's digits, the least significant last
            index, out[:, j] = np.divmod(index, base)
        return out
    rows = np.empty((0, k), dtype=np.int64)
    while len(rows) < n:  # (a repeat among 2^63 and more is rare: one round, nearly always)
        drawn = np.concatenate([rows, rng.integers(0, base, size=(n - len(rows) + 16, k))])
        _, first = np.unique(drawn, axis=0, return_index=True)
        rows = drawn[np.sort(first)]
    return rows[:n]


def _balanced(strings: np.ndarray) -> np.ndarray:
    """Which rows of brackets (0 = "(", 1 = ")") pair up: no prefix closes more than it opened, and none left open."""
    depth = np.cumsum(1 - 2 * strings, axis=1)
    return (depth.min(axis=1) >= 0) & (depth[:, -1] == 0)


def _bracket_strings(length: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """`n` different strings of `length` brackets, as many "(" as ")", half balanced and half not (as near as there
    are of each), in a random order."""
    m = length // 2
    total, catalan = math.comb(length, m), math.comb(length, m) // (m + 1)
    want_yes = min(n // 2, catalan)
    want_no = min(n - want_yes, total - catalan)
    want_yes = min(n - want_no, catalan)  # (few unbalanced strings: more balanced ones, if there are)
    if total <= ENUMERATE_UP_TO:
        every = np.zeros((total, length), dtype=np.int64)
        for i, opens in enumerate(itertools.combinations(range(length), m)):
            every[i] = 1
            every[i, list(opens)] = 0
        every = every[rng.permutation(total)]
        yes = _balanced(every)
        picked = np.concatenate([every[yes][:want_yes], every[~yes][:want_no]])
    else:
        picked = np.concatenate([_drawn_brackets(length, want_yes, True, rng),
                                 _drawn_brackets(length, want_no, False, rng)])  # fmt: skip
    return picked[rng.permutation(len(picked))]


def _drawn_brackets(length: int, n: int, balanced: bool, rng: np.random.Generator) -> np.ndarray:
    """`n` different random strings with as many "(" as ")", balanced or not. A balanced one is a shuffled string
    turned to start just after its deepest point (its lowest prefix): every prefix of the turned string then opens at
    least as many as it closes (the cycle lemma)."""
    m = length // 2
    rows = np.empty((0, length), dtype=np.int64)
    for _ in range(64):  # (the strings are far more than n: a round or two; a cap all the same)
        if len(rows) >= n:
            break
        k = 2 * (n - len(rows)) + 16
        shuffled = np.argsort(rng.random((k, length)), axis=1) >= m  # m zeros and m ones per row, shuffled
        s = shuffled.astype(np.int64)
        if balanced:
            lowest = np.argmin(np.cumsum(1 - 2 * s, axis=1), axis=1)
            s = np.take_along_axis(s, (np.arange(length)[None, :] + lowest[:, None] + 1) % length, axis=1)
        else:
            s = s[~_balanced(s)]
        drawn = np.concatenate([rows, s])
        _, first = np.unique(drawn, axis=0, return_index=True)
        rows = drawn[np.sort(first)]
    return rows[:n]


# ----- tasks: made, written, read -------------------------------------------------------------------


def make_task(cfg: TaskConfig) -> Task:
    """Generate the task `cfg.name` with its options: every example from `cfg.seed`, the examples shuffled and split,
    `cfg.train_fraction` of them for training. Raises UserInputError when a setting is out of range or the split
    would leave either side empty."""
    cfg.validate()
    if cfg.name not in GENERATORS:
        raise UserInputError(f"no task named {cfg.name[:40]!r}; the tasks are {', '.join(TASKS)}")
    made = GENERATORS[cfg.name](cfg, np.random.default_rng(cfg.seed))
    rows = np.concatenate([made.prompts, made.answers], axis=1).astype(np.int64)
    n = len(rows)
    n_train = round(cfg.train_fraction * n)
    if not 1 <= n_train < n:
        raise UserInputError(
            f"task.train_fraction={cfg.train_fraction:g} of {n:,} examples leaves "
            f"{'no example to train on' if n_train < 1 else 'none held out'}; change the fraction or the examples"
        )
    tok = SymbolTokenizer(made.symbols, made.sep)
    return Task(cfg, tok, rows[:n_train], rows[n_train:], made.prompts.shape[1], made.description)


def generator_settings(cfg: TaskConfig) -> dict[str, Any]:
    """The settings that make a task's examples (every field but what evaluations score): its cache key's, and what
    a prepared task's meta.json records."""
    return {k: v for k, v in asdict(cfg).items() if k != "eval_examples"}


def prepare_task(cfg: TaskConfig, out: str | Path | None = None, cache: str | Path | None = None) -> PreparedData:
    """The task written as a prepared data set in `out` (default: under `cache`, else the cache directory, keyed by
    its settings): instant when done before. The rows are the examples, shuffled, train and held-out apart."""
    cfg.validate()
    key = hashlib.sha256(json.dumps(["task", GENERATOR_VERSION, generator_settings(cfg)]).encode()).hexdigest()[:24]
    base = Path(cache) if cache else cache_dir() / "datasets"
    target = Path(out) if out is not None else base / f"task-{key}"
    if target.exists() and not target.is_dir():
        raise UserInputError(f"the output {str(target)!r} is a file; give a folder for train.bin, val.bin, meta.json")
    if (target / "meta.json").is_file():
        try:
            if _meta_key(target / "meta.json") == key:
                return load_prepared(target)
        except (OSError, ValueError, UserInputError):
            pass  # a broken earlier output: write it again
    task = make_task(cfg)
    meta = {"key": key, "task": generator_settings(cfg), "description": task.description}
    return write_examples(target, task.tokenizer, task.train, task.val, task.prompt_len, meta)


def _meta_key(path: Path) -> Any:
    with open_regular(path) as fh:
        return json.loads(fh.read(MAX_META_BYTES).decode("utf-8")).get("key")


def task_config(data: PreparedData) -> TaskConfig | None:
    """The settings of the task a prepared data set holds (None: it is text), as its meta.json records them."""
    if data.examples is None:
        return None
    recorded = data.meta.get("task")
    try:
        if not isinstance(recorded, dict):
            raise UserInputError("no task settings")
        known = {f.name for f in fields(TaskConfig)}
        cfg = Config.from_dict({"task": {k: v for k, v in recorded.items() if k in known}}).task
        cfg.validate()
    except UserInputError as e:
        raise UserInputError(
            f"{data.dir}: meta.json's task settings are unusable ({e}); prepare the task again"
        ) from None
    return cfg


def load_task(data: PreparedData) -> Task:
    """A prepared task (what `prepare_task` wrote) as a `Task`, its rows read from disk."""
    cfg = task_config(data)
    if cfg is None or data.examples is None or not isinstance(data.tokenizer, SymbolTokenizer):
        raise UserInputError(f"{data.dir} holds text, not a task's examples; prepare one with gpt-prepare --task")
    desc = str(data.meta.get("description", cfg.name))
    # (the rows stay on disk, memory-mapped: what a preview reads is read)
    return Task(cfg, data.tokenizer, data.rows("train"), data.rows("val"), data.examples.prompt, desc)


# ----- examples as plain data -----------------------------------------------------------------------


def render(task: Task, example: Example, split: Split = "train") -> Shown:
    """An example as text, the prompt and the answer apart."""
    tok = task.tokenizer
    return Shown(split, tok.decode(list(example.prompt)), tok.decode(list(example.answer)),
                 [tok.token_text(i) for i in example.prompt], [tok.token_text(i) for i in example.answer],
                 tok.sep)  # fmt: skip


def examples_preview(task: Task, n: int = 3) -> list[Shown]:
    """The first `n` train examples and the first `n` held-out ones, as text."""
    splits: list[tuple[Split, np.ndarray]] = [("train", task.train), ("val", task.val)]
    return [render(task, task.example(split, i), split) for split, rows in splits for i in range(min(n, len(rows)))]


def answers_preview(model: GPT, task: Task, n: int = 3, split: Split = "val") -> list[Shown]:
    """The first `n` examples of a split with what the model answers by greedy decoding, and whether it is right."""
    picked = np.asarray((task.train if split == "train" else task.val)[:n], dtype=np.int64)
    rows = torch.from_numpy(picked).to(_device_of(model))
    got = greedy_answers(model, rows[:, : task.prompt_len], task.answer_len, task.tokenizer.vocab_size)
    out = []
    for i, answer in enumerate(got.tolist()):
        shown = render(task, task.example(split, i), split)
        truth = [int(t) for t in rows[i, task.prompt_len :]]
        out.append(replace(shown, model_answer=task.tokenizer.decode(answer), correct=answer == truth))
    return out


def answers_text(shown: list[Shown]) -> str:
    """Examples with the model's answers, a line each ("12 + 90 = 5  right"), as the trainer's samples show them."""
    return "\n".join(f"{s.prompt}{s.sep}{s.model_answer}  {'right' if s.correct else f'wrong: it is {s.answer}'}"
                     for s in shown)  # fmt: skip


# ----- scoring --------------------------------------------------------------------------------------


def _device_of(model: GPT) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def greedy_answers(model: GPT, prompts: torch.Tensor, answer_len: int, vocab: int) -> torch.Tensor:
    """(n, answer_len) token ids: each prompt continued by greedy decoding, the most likely of the tokenizer's
    `vocab` tokens (never the model's padding) at each step."""
    was_training = model.training
    model.eval()
    try:
        seq = prompts
        for _ in range(answer_len):
            logits, _ = model(seq, last_only=True)
            seq = torch.cat([seq, logits[:, -1, :vocab].argmax(dim=-1, keepdim=True)], dim=1)
    finally:
        model.train(was_training)
    return seq[:, prompts.size(1) :]


@torch.no_grad()
def score_rows(model: GPT, rows: torch.Tensor, prompt: int, vocab: int, dtype: torch.dtype | None = None,
               batch: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """For each example (a row: prompt, then answer): whether the model's greedy answer is exactly the answer (bool),
    and the loss of the answer's tokens (nats, summed over them).

    One forward pass over the whole rows, not a token-by-token decode: greedy decoding gets every answer token right
    exactly when, fed the right tokens before it, each one is the model's most likely; and at the first wrong one
    both are wrong. So exact match is "every answer position's argmax is its token"; `greedy_answers` decodes."""
    was_training = model.training
    model.eval()
    amp = autocast(rows.device, dtype) if dtype is not None else torch.autocast(rows.device.type, enabled=False)
    right, losses = [], []
    try:
        for chunk in rows.split(batch):
            x, y = answer_xy(chunk, prompt)
            with amp:
                logits, _ = model(x)
            logits = logits[:, prompt - 1 :, :vocab].float()  # the positions that predict the answer's tokens
            target = y[:, prompt - 1 :]
            right.append((logits.argmax(dim=-1) == target).all(dim=1))
            loss = F.cross_entropy(logits.reshape(-1, vocab), target.reshape(-1), reduction="none")
            losses.append(loss.view(target.shape).sum(dim=1))
    finally:
        model.train(was_training)
    return torch.cat(right), torch.cat(losses)


@dataclass(frozen=True)
class Scores:
    train_acc: float  # exact-match accuracy, 0 to 1, on the fixed sample of train examples
    val_acc: float  # likewise on held-out examples
    val_loss: float  # the held-out sample's loss per answer token (nats)


class Scorer:
    """What every evaluation of a task run scores: the first `n` train examples and the first `n` held-out ones
    (the rows are shuffled when made: a fixed random sample of each), on the model's device."""

    def __init__(self, data: PreparedData, n: int, device: torch.device) -> None:
        if data.examples is None:
            raise UserInputError("accuracy is scored on a task's examples; this data set is text")
        self.prompt, self.vocab = data.examples.prompt, data.tokenizer.vocab_size
        self.train, self.val = (torch.from_numpy(np.asarray(data.rows(s)[:n], dtype=np.int64)).to(device)
                                for s in ("train", "val"))  # fmt: skip

    def score(self, model: GPT, dtype: torch.dtype | None = None) -> Scores:
        train_right, _ = score_rows(model, self.train, self.prompt, self.vocab, dtype)
        val_right, val_loss = score_rows(model, self.val, self.prompt, self.vocab, dtype)
        per_token = float(val_loss.sum()) / (len(val_loss) * (self.val.size(1) - self.prompt))
        return Scores(float(train_right.float().mean()), float(val_right.float().mean()), per_token)

    def val_loss(self, model: GPT, dtype: torch.dtype | None = None) -> float:
        """The held-out sample's loss per answer token (what the trainer reports as its val loss on a task)."""
        _, loss = score_rows(model, self.val, self.prompt, self.vocab, dtype)
        return float(loss.sum()) / (len(loss) * (self.val.size(1) - self.prompt))
