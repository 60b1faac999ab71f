"""The command-line tools end to end in a temporary directory, as a user runs them.

Each console script (gpt-prepare, gpt-train, gpt-generate; gpt-convert in test_hostile_cli) runs at least once as a
real process, and so does `python -m gpt.cli`. The cases that cannot crash or hang the interpreter when the code
regresses run `cli.main` in this process instead (`run_in_process`): a subprocess spends seconds importing torch.
"""

from __future__ import annotations

import math
import os
import pty
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from gpt import checkpoint as ckpt
from gpt import cli as gpt_cli

FAST = ["train.max_steps=30", "train.eval_interval=15", "train.eval_iters=2", "train.sample_interval=0",
        "model.n_layer=1", "model.n_embd=32", "model.n_head=2", "model.block_size=32",
        "train.batch_size=4"]  # fmt: skip
ROOT = Path(__file__).resolve().parent.parent
# What a fresh interpreter does not print (Python's default filters, for code outside __main__)
QUIET_BY_DEFAULT = (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning)


def cli(*args: str, cwd: Path, cmd: str = "gpt.cli") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", cmd, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def script(name: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """A console script (gpt-train, ...) of this environment, as a user types it (this checkout's code first)."""
    exe = Path(sysconfig.get_path("scripts")) / name
    path = str(exe) if exe.is_file() else shutil.which(name)
    assert path, f"{name} missing: pip install -e ."
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([path, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def exit_status(value: object) -> tuple[int, str]:
    """The exit status (and what is printed on stderr) of `sys.exit(value)` at the end of a process."""
    if value is None:
        return 0, ""
    if isinstance(value, int):
        return value & 0xFF, ""
    return 1, f"{value}\n"


def run_in_process(
    args: list[str], cwd: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> subprocess.CompletedProcess[str]:
    """`python -m gpt.cli ARGS` (which is `sys.exit(cli.main(ARGS))`) run in this process, in `cwd`: its exit status,
    and its stdout and stderr captured at the file descriptors, with the warnings a fresh interpreter would print
    (pytest would otherwise collect them). Only for cases that cannot crash or hang the interpreter when the code
    regresses; an uncaught exception (a traceback, in a process) fails the test as it propagates."""
    monkeypatch.chdir(cwd)
    monkeypatch.delenv("GPT_DEBUG", raising=False)
    threads, on_ctrl_c = torch.get_num_threads(), signal.getsignal(signal.SIGINT)
    if os.environ.get("OMP_NUM_THREADS", "").isdigit():  # a process's threads, whatever a test before set here
        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    capfd.readouterr()
    with warnings.catch_warnings(record=True) as caught:
        warnings.resetwarnings()
        for category in QUIET_BY_DEFAULT:
            warnings.simplefilter("ignore", category)
        try:
            code, note = exit_status(gpt_cli.main(list(args)))
        except SystemExit as e:  # argparse: --help, and its complaints through _Parser.error
            code, note = exit_status(e.code)
        finally:  # what a run may change in the process, as a process's end would
            torch.set_num_threads(threads)
            signal.signal(signal.SIGINT, on_ctrl_c)
    out, err = capfd.readouterr()
    shown = "".join(warnings.formatwarning(w.message, w.category, w.filename, w.lineno, w.line) for w in caught)
    return subprocess.CompletedProcess(list(args), code, out, err + shown + note)


Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def inproc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]) -> Run:
    """`python -m gpt.cli ARGS` in this process, in tmp_path (see run_in_process)."""

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return run_in_process(list(args), tmp_path, monkeypatch, capfd)

    return run


def test_console_scripts_are_installed() -> None:
    for name in ("gpt-prepare", "gpt-train", "gpt-generate", "gpt-convert"):
        assert shutil.which(name), f"{name} missing: pip install -e ."


def test_prepare_train_resume_generate(tmp_path: Path, corpus_file: Path, inproc: Run) -> None:
    r = script("gpt-prepare", str(corpus_file), "--tokenizer", "char", "--out", "data/mine", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "train" in r.stdout and (tmp_path / "data/mine/train.bin").is_file()

    # overrides may come anywhere on the line: before, between and after the options
    r = script("gpt-train", *FAST[:3], "--config", "tiny", *FAST[3:6], "--data", "data/mine", "--out", "run",
               *FAST[6:], cwd=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "step 30/30 | loss" in r.stdout and "tok/s" in r.stdout and "training completed at step 30" in r.stdout
    # each evaluation's line has its loss in bits per byte (an ASCII corpus, a char each: loss / ln 2)
    val, bpb = re.search(r"step 30 \| val loss ([\d.]+) \(([\d.]+) bits/byte\) \| perplexity", r.stdout).groups()
    assert float(bpb) == pytest.approx(float(val) / math.log(2), abs=2e-3)
    assert ckpt.load(tmp_path / "run").step == 30

    r = cli("train", "--resume", "run", "train.max_steps=40", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "step 31/40" not in r.stdout and "step 40/40" in r.stdout and "completed at step 40" in r.stdout

    args = ["--checkpoint", "run", "--prompt", "ROMEO:", "--max-new-tokens", "40", "--seed", "1"]
    flags = ["--temperature", "0.9", "--top-k", "10", "--top-p", "0.9", "--min-p", "0.01",
             "--repetition-penalty", "1.2", "--presence-penalty", "0.1", "--frequency-penalty", "0.1"]  # fmt: skip
    a = script("gpt-generate", *args, *flags, cwd=tmp_path)
    b = inproc("generate", *args, *flags, "--stream")  # (in this process: the same text from another process)
    assert a.returncode == 0 and b.returncode == 0, a.stderr + b.stderr
    assert len(a.stdout.strip()) > 10 and a.stdout == b.stdout  # same seed: same text, streamed or not
    greedy = inproc("generate", *args, "--temperature", "0")
    other_seed = inproc("generate", *args, "--temperature", "0", "--seed", "2")
    assert greedy.returncode == other_seed.returncode == 0 and greedy.stdout == other_seed.stdout  # greedy: no dice

    # no --prompt in a terminal: prompts are asked for, each continuation streamed, a blank line ends it
    master, terminal = pty.openpty()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "gpt.cli", "generate", "--checkpoint", "run", "--max-new-tokens",
                             "20", "--seed", "1"], cwd=tmp_path, env=env, stdin=terminal, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    os.close(terminal)
    os.write(master, b"ROMEO:\nJULIET:\n\n")
    out, err = proc.communicate(timeout=120)
    os.close(master)
    assert proc.returncode == 0, err
    assert out.startswith("Type a prompt") and out.count("> ") == 3  # two prompts answered, then the blank line
    assert len(out.split("> ")[1].strip()) >= 10  # a continuation of ROMEO:


def test_default_corpus_needs_no_data_argument(inproc: Run) -> None:
    r = inproc("train", "--config", "tiny", "--out", "run", *FAST[:1], "train.eval_interval=30", *FAST[2:])
    assert r.returncode == 0, r.stderr
    assert "step 30/30" in r.stdout


@pytest.mark.parametrize(
    "args,message",
    [
        (["train", "--config", "nope"], "config 'nope' not found"),
        (["train", "train.lr=-1"], "train.lr must be"),
        (["train", "model.n_layer=10000"], "model.n_layer must be"),
        (["train", "train.steps=10"], "unknown setting train.steps"),
        (["train", "--data", "missing-dir"], "not a prepared data set"),
        (["generate", "--checkpoint", "missing", "--prompt", "x"], "not a checkpoint"),
        (["prepare", "missing.txt", "--out", "o"], "does not exist"),
        (["train", "--no-such-flag"], "unrecognized arguments: --no-such-flag"),  # argparse too: one line
        (["no-such-command"], "unknown command 'no-such-command'"),
        (["train", "train.lr=" + "[" * 3000 + "]" * 3000], "nests deeper than"),
        (["generate", "--checkpoint", "missing", "--device", "nowhere"], "not a device"),
    ],
)
def test_bad_input_exits_2_with_one_line(inproc: Run, args: list[str], message: str) -> None:
    r = inproc(*args)  # (test_hostile_cli runs such failures in processes of their own too)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.slow
def test_ddp_two_processes_gloo(tmp_path: Path, corpus_file: Path, inproc: Run) -> None:
    assert inproc("prepare", str(corpus_file), "--tokenizer", "char", "--out", "data").returncode == 0
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            "-m",
            "gpt.cli",
            "train",
            "--data",
            "data",
            "--out",
            "run",
            *FAST,
        ],  # fmt: skip
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert "2 process(es)" in r.stdout
    assert r.stdout.count("training completed at step 30") == 1  # rank 0 alone logs
    assert sorted(p.name for p in (tmp_path / "run").iterdir() if not p.name.startswith(".")) == [
        "best",
        "latest",
        "metrics.jsonl",  # written once: by rank 0
        "tb",
    ]
    assert ckpt.load(tmp_path / "run").step == 30
