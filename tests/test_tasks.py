"""Algorithmic tasks (gpt/tasks.py): the generators against hand-computed examples, seeds, the split by example, the
answer-only loss, exact-match scoring, task runs (accuracy in metrics.jsonl, exact resume with Grokfast, checkpoints
that carry the task's tokenizer), and the CLI's one-line errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gpt import checkpoint as ckpt
from gpt.archive import zip_dir
from gpt.config import (
    Config,
    ModelConfig,
    SampleConfig,
    TaskConfig,
    TaskName,
    choices,
    load_config,
    resolve_config_path,
)
from gpt.data import answer_xy
from gpt.errors import UserInputError
from gpt.events import Event, eval_line, print_event, read_metrics, run_listeners
from gpt.generate import generate
from gpt.grokfast import Grokfast
from gpt.model import GPT
from gpt.tasks import (
    GENERATORS,
    TASKS,
    Example,
    Scorer,
    answers_preview,
    examples_preview,
    greedy_answers,
    load_task,
    make_task,
    prepare_task,
    render,
    score_rows,
)
from gpt.tokenizer import SymbolTokenizer, from_spec
from gpt.trainer import Trainer

ROOT = Path(__file__).resolve().parent.parent


def texts(task) -> dict[str, str]:
    """Every example of a task as prompt text -> answer text."""
    shown = [render(task, task.example(s, i), s) for s, rows in (("train", task.train), ("val", task.val))
             for i in range(len(rows))]  # fmt: skip
    return {s.prompt: s.answer for s in shown}


def balanced(s: str) -> bool:
    depth = 0
    for c in s:
        depth += 1 if c == "(" else -1
        if depth < 0:
            return False
    return depth == 0


# ----- generators -----------------------------------------------------------------------------------


def test_every_task_name_has_a_generator() -> None:
    assert sorted(GENERATORS) == sorted(choices(TaskName)) == sorted(TASKS)


def test_modular_addition_is_every_pair_once_with_its_sum_mod_p() -> None:
    task = make_task(TaskConfig(name="modular-addition", modulus=5, train_fraction=0.4))
    shown = texts(task)
    assert len(shown) == 25 and len(task.train) == 10 and len(task.val) == 15
    assert shown["3 + 4 ="] == "2" and shown["4 + 4 ="] == "3" and shown["0 + 0 ="] == "0" and shown["2 + 1 ="] == "3"
    assert all(shown[f"{a} + {b} ="] == str((a + b) % 5) for a in range(5) for b in range(5))
    tok = task.tokenizer  # one token per residue, then "+" and "="
    assert tok.symbols == ["0", "1", "2", "3", "4", "+", "="] and tok.encode("3 + 4 =") == [3, 5, 4, 6]
    assert task.prompt_len == 4 and task.answer_len == 1


def test_sequence_tasks_against_hand_computed_answers() -> None:
    for name, solve in (("sort", sorted), ("reverse", lambda x: x[::-1]), ("copy", list)):
        task = make_task(TaskConfig(name=name, length=5, values=12, examples=300))
        assert task.prompt_len == 6 and task.answer_len == 5 and task.tokenizer.symbols[-1] == "="
        for prompt, answer in texts(task).items():
            numbers = [int(t) for t in prompt.split()[:-1]]
            assert prompt.endswith(" =") and len(numbers) == 5 and all(0 <= v < 12 for v in numbers)
            assert answer == " ".join(str(v) for v in solve(numbers))
    sort = make_task(TaskConfig(name="sort", length=3, values=12, examples=2000))
    assert texts(sort)["11 2 10 ="] == "2 10 11"  # (every one of the 1,728 inputs is there: all, in 2,000)


def test_addition_writes_the_sum_least_significant_digit_first() -> None:
    task = make_task(TaskConfig(name="addition", digits=3, examples=500))
    for prompt, answer in texts(task).items():
        a, b = prompt.rstrip("=").split("+")
        assert len(a) == len(b) == 3 and len(answer) == 4
        assert int(answer[::-1]) == int(a) + int(b)
    two = make_task(TaskConfig(name="addition", digits=1, examples=100))  # every pair of digits
    assert texts(two)["7+5="] == "21" and texts(two)["0+3="] == "30" and texts(two)["9+9="] == "81"


def test_parity_and_brackets() -> None:
    parity = texts(make_task(TaskConfig(name="parity", length=4, examples=100)))
    assert len(parity) == 16 and parity["1011="] == "1" and parity["1001="] == "0" and parity["0000="] == "0"
    brackets = texts(make_task(TaskConfig(name="brackets", length=6, examples=100)))
    assert len(brackets) == 20  # every string of three ( and three ): 5 balanced, 15 not
    assert brackets["(()())="] == "y" and brackets["())(()="] == "n" and brackets[")()(()="] == "n"
    assert all((answer == "y") == balanced(prompt[:-1]) for prompt, answer in brackets.items())
    many = texts(make_task(TaskConfig(name="brackets", length=24, examples=400)))  # drawn, not listed
    assert len(many) == 400 and sum(a == "y" for a in many.values()) == 200
    assert all((answer == "y") == balanced(prompt[:-1]) for prompt, answer in many.items())


def test_the_seed_decides_the_examples() -> None:
    for name in TASKS:
        cfg = TaskConfig(name=name, modulus=11, length=6, examples=200, seed=3)
        one, two, other = make_task(cfg), make_task(cfg), make_task(TaskConfig(**{**vars(cfg), "seed": 4}))
        assert np.array_equal(one.train, two.train) and np.array_equal(one.val, two.val), name
        assert not np.array_equal(one.train, other.train), name


def test_train_and_held_out_share_no_example() -> None:
    for name in TASKS:
        task = make_task(TaskConfig(name=name, modulus=13, length=6, digits=2, examples=300, train_fraction=0.5))
        train = {tuple(r[: task.prompt_len]) for r in task.train.tolist()}
        val = {tuple(r[: task.prompt_len]) for r in task.val.tolist()}
        assert len(train) == len(task.train) and len(val) == len(task.val), name  # each example once
        assert not train & val, name
        assert abs(len(task.train) / (len(task.train) + len(task.val)) - 0.5) < 0.01, name


def test_sizes_are_capped_with_one_line_errors() -> None:
    for bad, field in ((dict(modulus=100_000), "task.modulus"), (dict(length=1000), "task.length"),
                       (dict(examples=10**9), "task.examples"), (dict(values=1), "task.values"),
                       (dict(digits=99), "task.digits"), (dict(train_fraction=1.0), "task.train_fraction"),
                       (dict(name="nope"), "task.name")):  # fmt: skip
        with pytest.raises(UserInputError, match=field) as e:
            make_task(TaskConfig(**{"name": "sort", **bad}))  # type: ignore[arg-type]
        assert "\n" not in str(e.value)
    with pytest.raises(UserInputError, match="none held out"):
        make_task(TaskConfig(name="parity", length=1, train_fraction=0.9))
    with pytest.raises(UserInputError, match="even"):
        make_task(TaskConfig(name="brackets", length=5))


def test_examples_preview_is_plain_data_with_prompt_and_answer_apart() -> None:
    task = make_task(TaskConfig(name="modular-addition", modulus=7))
    shown = examples_preview(task, 2)
    assert [s.split for s in shown] == ["train", "train", "val", "val"]
    first = shown[0]
    a, plus, b, eq = first.prompt_tokens
    assert (plus, eq) == ("+", "=") and first.answer_tokens == [str((int(a) + int(b)) % 7)]
    assert first.prompt == f"{a} + {b} =" and first.answer == first.answer_tokens[0] and first.sep == " "
    assert render(task, Example((3, 7, 4, 8), (0,))).prompt == "3 + 4 ="


# ----- the tokenizer --------------------------------------------------------------------------------


def test_symbols_tokenizer_round_trips_and_travels_in_its_spec() -> None:
    tok = SymbolTokenizer([*map(str, range(12)), "+", "="])
    ids = tok.encode(" 11 +  3 =")
    assert ids == [11, 12, 3, 13] and tok.decode(ids) == "11 + 3 ="
    again = from_spec(tok.spec())
    assert isinstance(again, SymbolTokenizer) and again.encode("11 + 3 =") == ids and again.vocab_size == 14
    stream = tok.stream_decoder()
    assert "3 + 4 =" + "".join(stream.push(i) for i in tok.encode("7 1")) == "3 + 4 = 7 1"
    with pytest.raises(UserInputError, match="'12' is not one of this task's symbols"):
        tok.encode("12 + 3")
    chars = SymbolTokenizer(list("0123456789+="), sep="")
    assert chars.encode("12+ 3=") == [1, 2, 10, 3, 11] and chars.decode([1, 2, 10]) == "12+"
    for bad in ([], ["a", "a"], ["a b"]):
        with pytest.raises(UserInputError):
            SymbolTokenizer(bad)


# ----- the loss and the score -----------------------------------------------------------------------


def test_the_loss_counts_only_the_answer_tokens() -> None:
    rows = torch.tensor([[3, 12, 4, 13, 7], [1, 12, 2, 13, 3]])
    x, y = answer_xy(rows, prompt=4)
    assert x.tolist() == [[3, 12, 4, 13], [1, 12, 2, 13]] and y.tolist() == [[-1, -1, -1, 7], [-1, -1, -1, 3]]
    sort_rows = torch.tensor([[2, 1, 9, 1, 2]])  # "2 1 =" -> "1 2": the answer's two tokens count
    assert answer_xy(sort_rows, prompt=3)[1].tolist() == [[-1, -1, 1, 2]]
    torch.manual_seed(0)
    model = GPT(ModelConfig(vocab_size=14, block_size=4, n_layer=1, n_head=2, n_embd=16))
    with torch.no_grad():
        logits, loss = model(x, y)
    answer_only = F.cross_entropy(logits[:, 3].float(), rows[:, 4])
    assert loss is not None and float(loss) == pytest.approx(float(answer_only), rel=1e-6)
    # a loss that moves only when the answer's logits move: its gradient is zero at every prompt position
    free = logits.detach().clone().requires_grad_(True)
    F.cross_entropy(free.view(-1, 14), y.reshape(-1), ignore_index=-1).backward()
    assert free.grad is not None
    assert free.grad[:, :3].abs().max() == 0 and free.grad[:, 3].abs().min() > 0


class Oracle(torch.nn.Module):
    """A hand-built model of modular addition mod p: certain of (a + b) mod p after "a + b =", except that it
    answers (a + b + 1) mod p when a is 0; anywhere else it predicts token 0."""

    def __init__(self, p: int) -> None:
        super().__init__()
        self.p, self.w = p, torch.nn.Parameter(torch.zeros(1))

    def forward(self, idx: torch.Tensor, targets: object = None, last_only: bool = False):  # noqa: ARG002
        logits = torch.full((*idx.shape, self.p + 2), -10.0)
        logits[..., 0] = 0.0
        if idx.size(1) >= 4:
            a, b = idx[:, 0], idx[:, 2]
            answer = (a + b + (a == 0).long()) % self.p
            logits[:, 3, :] = -10.0
            logits[torch.arange(len(idx)), 3, answer] = 10.0
        return (logits[:, -1:] if last_only else logits), None


def test_exact_match_on_a_hand_built_model() -> None:
    task = make_task(TaskConfig(name="modular-addition", modulus=7, train_fraction=0.5))
    rows = torch.from_numpy(task.val)
    right, losses = score_rows(Oracle(7), rows, task.prompt_len, task.tokenizer.vocab_size)  # type: ignore[arg-type]
    assert right.tolist() == [int(r[0]) != 0 for r in rows]  # wrong exactly where a is 0
    assert losses[right].max() < 1e-3 and losses[~right].min() > 10
    greedy = greedy_answers(Oracle(7), rows[:, :4], 1, 9)  # type: ignore[arg-type]
    assert ((greedy[:, 0] == rows[:, 4]) == right).all()  # the one-pass score is greedy decoding's
    scores = Scorer.__new__(Scorer)
    scores.prompt, scores.vocab, scores.train, scores.val = 4, 9, torch.from_numpy(task.train), rows
    s = scores.score(Oracle(7))  # type: ignore[arg-type]
    assert s.train_acc == pytest.approx(float((torch.from_numpy(task.train)[:, 0] != 0).float().mean()))
    assert s.val_acc == pytest.approx(float(right.float().mean()))
    shown = answers_preview(Oracle(7), task, 7)  # type: ignore[arg-type]
    assert [s.correct for s in shown] == right[:7].tolist()
    assert all(s.model_answer == s.answer for s in shown if s.correct)


def test_a_multi_token_answer_is_right_only_when_every_token_is() -> None:
    task = make_task(TaskConfig(name="sort", length=3, values=5, examples=60))
    rows = torch.from_numpy(task.train)

    class Sorter(torch.nn.Module):  # sorts, but writes the last number wrong when the first input is 0
        def forward(self, idx: torch.Tensor, targets: object = None, last_only: bool = False):  # noqa: ARG002
            answer = idx[:, :3].sort(dim=1).values
            answer[:, 2] = torch.where(idx[:, 0] == 0, (answer[:, 2] + 1) % 5, answer[:, 2])
            logits = torch.zeros(*idx.shape, 6)
            for k in range(min(3, idx.size(1) - 3)):
                logits[torch.arange(len(idx)), 3 + k, answer[:, k]] = 5.0
            return (logits[:, -1:] if last_only else logits), None

    right, _ = score_rows(Sorter(), rows, 4, 6)  # type: ignore[arg-type]
    assert right.tolist() == [int(r[0]) != 0 for r in rows]
    greedy = greedy_answers(Sorter(), rows[:, :4], 3, 6)  # type: ignore[arg-type]
    assert ((greedy == rows[:, 4:]).all(dim=1) == right).all()


def test_grokfast_adds_lamb_times_the_gradients_moving_average() -> None:
    p = torch.nn.Parameter(torch.zeros(2))
    f = Grokfast([p], alpha=0.5, lamb=2.0)
    p.grad = torch.tensor([1.0, -2.0])
    f.apply()  # the average starts at the first gradient: g + 2g
    assert p.grad.tolist() == [3.0, -6.0]
    p.grad = torch.tensor([3.0, 0.0])
    f.apply()  # average 0.5 * [1, -2] + 0.5 * [3, 0] = [2, -1]; g + 2 * that
    assert p.grad.tolist() == [7.0, -2.0]
    again = Grokfast([p], 0.5, 2.0)
    again.load_state_dict(f.state_dict())
    assert again.ema[0].tolist() == [2.0, -1.0]
    with pytest.raises(UserInputError):
        again.load_state_dict([torch.zeros(3)])


# ----- task runs ------------------------------------------------------------------------------------


def task_config(**train: object) -> Config:
    cfg = Config()
    cfg.task = TaskConfig(name="modular-addition", modulus=11, train_fraction=0.5, eval_examples=40)
    cfg.model.n_layer, cfg.model.n_head, cfg.model.n_embd = 1, 2, 32
    t = cfg.train
    t.batch_size, t.max_steps, t.warmup_steps, t.eval_interval, t.lr, t.weight_decay = 16, 24, 2, 6, 3e-3, 1.0
    t.log_interval, t.sample_interval, t.checkpoint_interval, t.health_interval = 1, 12, 0, 6
    t.dtype, t.tensorboard = "float32", False
    for k, v in train.items():
        setattr(t, k, v)
    return cfg.validate()


def train(cfg: Config, data, out: Path, resume: Path | None = None) -> list[Event]:
    events: list[Event] = []
    Trainer(cfg, data, out, resume=resume, listeners=[events.append, *run_listeners(out, cfg.train.tensorboard)]).run()
    return events


def test_a_task_run_reports_accuracy_everywhere(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = task_config(tensorboard=True)
    data = prepare_task(cfg.task, cache=tmp_path / "cache")
    assert prepare_task(cfg.task, cache=tmp_path / "cache").dir == data.dir  # the same settings: the same data set
    events = train(cfg, data, tmp_path / "run")
    evals = [e.data for e in events if e.kind == "eval"]
    assert len(evals) == 4 and all(0 <= e.train_acc <= 1 and 0 <= e.val_acc <= 1 for e in evals)
    logged = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert logged.train_acc == [e.train_acc for e in evals] and logged.val_acc == [e.val_acc for e in evals]
    assert logged.eval_steps == [6, 12, 18, 24]
    start = next(e.data for e in events if e.kind == "start")
    assert start.config["model"]["block_size"] == 4 and start.config["task"]["name"] == "modular-addition"
    assert start.config["train"]["batch_size"] == 16 and start.config["data"]["tokenizer"] == "symbols"
    assert not [e for e in events if e.kind == "circuits"]  # (no text, no repeated tokens: not measured)
    sample = next(e.data.text for e in events if e.kind == "sample")
    assert len(sample.splitlines()) == 4 and all(" = " in line for line in sample.splitlines())
    print_event(events[-1].__class__(24, evals[-1]))
    assert "val acc" in capsys.readouterr().out and "val acc" in eval_line(24, evals[-1])
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    board = EventAccumulator(str(tmp_path / "run" / "tb"))
    board.Reload()
    assert [s.value for s in board.Scalars("val/acc")] == pytest.approx([e.val_acc for e in evals])
    # the checkpoint carries the task's tokenizer: it loads, answers, and travels as a zip
    loaded = ckpt.load(tmp_path / "run")
    assert loaded.tokenizer.spec() == data.tokenizer.spec() and loaded.config.task.modulus == 11
    answer = generate(loaded.model, loaded.tokenizer, "3 + 4 =", SampleConfig(max_new_tokens=1, temperature=0))
    assert answer.startswith(" ") and answer.strip() in loaded.tokenizer.symbols
    archive = zip_dir(tmp_path / "run" / "latest", tmp_path / "run.zip")
    back = ckpt.load(ckpt.unpack(archive, tmp_path / "up", max_bytes=10 << 20))
    assert back.tokenizer.spec() == data.tokenizer.spec()
    shown = answers_preview(back.model, load_task(data), 3)
    assert all(s.model_answer is not None and s.correct is not None for s in shown)


def test_a_task_run_resumes_exactly_with_grokfast(tmp_path: Path) -> None:
    cfg = task_config(grokfast=True, sample_interval=0)
    data = prepare_task(cfg.task, cache=tmp_path / "cache")
    full = train(cfg, data, tmp_path / "full")
    part = Trainer(cfg, data, tmp_path / "part")
    part.listeners.append(lambda e: part.stop() if e.kind == "step" and e.step == 12 else None)
    assert part.run().status == "stopped"
    rest = train(cfg, data, tmp_path / "part", resume=tmp_path / "part")

    def losses(events: list[Event]) -> dict[tuple[str, int], tuple[float | None, ...]]:
        return {(e.kind, e.step): (e.data.loss,) if e.kind == "step" else (e.data.train_acc, e.data.val_acc,
                                                                           e.data.val_loss)
                for e in events if e.kind in ("step", "eval") and e.step > 12}  # fmt: skip

    assert losses(rest) == losses(full) and len(losses(full)) == 12 + 2  # steps 13-24, evaluations at 18 and 24
    state = ckpt.load_trainer_state(tmp_path / "part")
    assert state is not None and len(state["grokfast"]) == len(list(GPT(ckpt.load(tmp_path / "part").config.model)
                                                                     .parameters()))  # fmt: skip


def test_the_presets_name_their_tasks() -> None:
    grok, sort = (load_config(resolve_config_path(n)) for n in ("grokking", "sort"))
    assert grok.task.name == "modular-addition" and grok.train.optimizer == "adamw" and grok.train.weight_decay > 0
    assert not grok.train.grokfast and sort.task.name == "sort"


# ----- the command line -----------------------------------------------------------------------------


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gpt.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)  # fmt: skip


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["prepare", "--task", "modular-addition", "--modulus", "100000"], "--modulus must be a whole number"),
        (["prepare", "--task", "sort", "--length", "500"], "--length must be a whole number"),
        (["prepare", "--task", "sort", "--examples", "999999999"], "--examples must be a whole number"),
        (["prepare", "--task", "parity", "--train-fraction", "1.5"], "--train-fraction must be a number"),
        (["prepare", "--task", "brackets", "--length", "7"], "--length must be even"),
        (["prepare", "--task", "juggling"], "invalid choice: 'juggling'"),
        (["prepare", "--modulus", "7"], "--modulus belongs to --task NAME"),
        (["prepare", "corpus.txt", "--task", "sort"], "not both"),
        (["train", "--config", "grokking", "task.modulus=1000"], "task.modulus must be a whole number"),
    ],
)
def test_cli_task_errors_exit_2_with_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    (tmp_path / "corpus.txt").write_text("some text\n", encoding="utf-8")
    done = cli(*args, *(["--out", "data"] if args[0] == "prepare" else []), cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("error: ") and message in done.stderr and done.stderr.count("\n") == 1
    assert not (tmp_path / "data").exists() or not any((tmp_path / "data").iterdir())


def test_cli_prepares_a_task_and_trains_the_grokking_preset_on_its_own(tmp_path: Path) -> None:
    done = cli("prepare", "--task", "addition", "--digits", "2", "--examples", "300", "--out", "data", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (
        "addition of two 2-digit numbers" in done.stdout
        and "90 train + 210 held-out examples of 9 tokens" in done.stdout
    )
    again = load_task(prepare_task(TaskConfig(name="addition", digits=2, examples=300), out=tmp_path / "data"))
    assert len(again.train) == 90 and len(again.val) == 210
    done = cli("train", "--config", "grokking", "--out", "run", "train.max_steps=4", "train.eval_interval=2",
               "task.eval_examples=50", cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "train acc" in done.stdout and "val acc" in done.stdout
    assert read_metrics(tmp_path / "run" / "metrics.jsonl").val_acc != []
