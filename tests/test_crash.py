"""Crashes lose little: SIGKILL a training process mid-run and mid-checkpoint-write, then restart."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gpt import checkpoint as ckpt

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
# a small model that saves `latest` after every step, so kills often land inside a save
ARGS = ["--config", "tiny", "train.max_steps=100000", "train.checkpoint_interval=1", "train.eval_interval=1000",
        "train.sample_interval=0", "train.log_interval=1", "model.n_layer=1", "model.n_embd=32", "model.n_head=2",
        "model.block_size=32", "train.batch_size=4", "train.tensorboard=false"]  # fmt: skip


def start(data: Path, out: Path, *extra: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "gpt.cli", "train", "--data", str(data), "--out", str(out), *ARGS, *extra]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def prepared(tmp_path: Path, corpus_file: Path) -> Path:
    from gpt.data import prepare

    return prepare([corpus_file], tokenizer="char", out=tmp_path / "data").dir


def kill_when(proc: subprocess.Popen[str], condition, timeout: float = 60) -> None:  # type: ignore[no-untyped-def]
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if condition():
            break
        time.sleep(0.0005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)


def test_sigkill_mid_run_and_mid_write_then_resume(tmp_path: Path, corpus_file: Path) -> None:
    data, run = prepared(tmp_path, corpus_file), tmp_path / "run"
    rng = random.Random(0)
    caught_mid_write = 0
    for attempt in range(6):
        proc = start(data, run, *(["--resume", str(run)] if attempt else []))
        if attempt % 2 == 0:  # at a random moment after the first checkpoint
            until = time.time() + rng.uniform(0.5, 2.0)
            kill_when(proc, lambda until=until: (run / "latest").exists() and time.time() > until)
        else:  # the moment a checkpoint write is under way
            kill_when(
                proc, lambda: any(p.name.startswith(".latest.") for p in run.iterdir()) if run.exists() else False
            )
            caught_mid_write += any(p.name.startswith(".latest.") for p in run.iterdir())
        listed = ckpt.list_checkpoints(run)
        assert listed and all(not Path(r["path"]).name.startswith(".") for r in listed)  # no half-written one
        loaded = ckpt.load(run)  # the latest complete checkpoint loads
        assert ckpt.load_trainer_state(run) is not None and loaded.step >= 1
    assert caught_mid_write >= 1  # at least one kill really landed inside a save

    step = ckpt.load(run).step
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "gpt.cli",
            "train",
            "--data",
            str(data),
            "--resume",
            str(run),
            *ARGS,
            f"train.max_steps={step + 5}",
        ],  # fmt: skip
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert f"step {step + 1}/{step + 5}" in done.stdout and f"completed at step {step + 5}" in done.stdout
    assert not [p for p in run.iterdir() if p.name.startswith(".latest.")]  # stale temporaries cleaned up
