"""The command-line tools end to end in a temporary directory, as a user runs them."""

from __future__ import annotations

import math
import os
import pty
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gpt import checkpoint as ckpt

FAST = ["train.max_steps=30", "train.eval_interval=15", "train.eval_iters=2", "train.sample_interval=0",
        "model.n_layer=1", "model.n_embd=32", "model.n_head=2", "model.block_size=32",
        "train.batch_size=4"]  # fmt: skip


def cli(*args: str, cwd: Path, cmd: str = "gpt.cli") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    return subprocess.run(
        [sys.executable, "-m", cmd, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def test_console_scripts_are_installed() -> None:
    for name in ("gpt-prepare", "gpt-train", "gpt-generate"):
        assert shutil.which(name), f"{name} missing: pip install -e ."


def test_prepare_train_resume_generate(tmp_path: Path, corpus_file: Path) -> None:
    r = cli("prepare", str(corpus_file), "--tokenizer", "char", "--out", "data/mine", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "train" in r.stdout and (tmp_path / "data/mine/train.bin").is_file()

    # overrides may come anywhere on the line: before, between and after the options
    r = cli("train", *FAST[:3], "--config", "tiny", *FAST[3:6], "--data", "data/mine", "--out", "run", *FAST[6:],
            cwd=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "step 30/30 | loss" in r.stdout and "tok/s" in r.stdout and "training completed at step 30" in r.stdout
    # each evaluation's line has its loss in bits per byte (an ASCII corpus, a char each: loss / ln 2)
    val, bpb = re.search(r"step 30 \| val loss ([\d.]+) \(([\d.]+) bits/byte\) \| perplexity", r.stdout).groups()
    assert float(bpb) == pytest.approx(float(val) / math.log(2), abs=2e-3)
    assert ckpt.load(tmp_path / "run").step == 30

    r = cli("train", "--resume", "run", "train.max_steps=40", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "step 31/40" not in r.stdout and "step 40/40" in r.stdout and "completed at step 40" in r.stdout

    args = ["generate", "--checkpoint", "run", "--prompt", "ROMEO:", "--max-new-tokens", "40", "--seed", "1"]
    flags = ["--temperature", "0.9", "--top-k", "10", "--top-p", "0.9", "--min-p", "0.01",
             "--repetition-penalty", "1.2", "--presence-penalty", "0.1", "--frequency-penalty", "0.1"]  # fmt: skip
    a = cli(*args, *flags, cwd=tmp_path)
    b = cli(*args, *flags, "--stream", cwd=tmp_path)
    assert a.returncode == 0 and b.returncode == 0, a.stderr + b.stderr
    assert len(a.stdout.strip()) > 10 and a.stdout == b.stdout  # same seed: same text, streamed or not
    greedy = cli(*args, "--temperature", "0", cwd=tmp_path)
    assert greedy.stdout == cli(*args, "--temperature", "0", "--seed", "2", cwd=tmp_path).stdout

    # no --prompt in a terminal: prompts are asked for, each continuation streamed, a blank line ends it
    master, terminal = pty.openpty()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
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


def test_default_corpus_needs_no_data_argument(tmp_path: Path) -> None:
    r = cli("train", "--config", "tiny", "--out", "run", *FAST[:1], "train.eval_interval=30", *FAST[2:], cwd=tmp_path)
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
def test_bad_input_exits_2_with_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    r = cli(*args, cwd=tmp_path)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.slow
def test_ddp_two_processes_gloo(tmp_path: Path, corpus_file: Path) -> None:
    assert cli("prepare", str(corpus_file), "--tokenizer", "char", "--out", "data", cwd=tmp_path).returncode == 0
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent), "OMP_NUM_THREADS": "1"}
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
