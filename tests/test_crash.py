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


# The child runs gpt-train with a pause planted inside checkpoint.save: at PAUSE=write after the temporary directory
# is complete and before any rename, at PAUSE=rename between the two renames (the old checkpoint moved aside, the
# new one not yet in place), at PAUSE=delete after them (the new one in place, the old one not yet deleted). It
# touches FLAG and sleeps there, so the kill lands exactly at that point.
PAUSED_SAVE = """
import os, sys, time, types
from pathlib import Path
import gpt.checkpoint as ckpt

where, flag = os.environ["PAUSE"], Path(os.environ["FLAG"])
renames = 0

def pause():
    flag.touch()
    time.sleep(600)

def replace(src, dst):
    src_name, dst_name = Path(src).name, Path(dst).name
    in_save = src_name.startswith(".latest.tmp") or dst_name.startswith(".latest.old")
    if where == "write" and in_save and ckpt.save_count >= 2:
        pause()
    os.replace(src, dst)
    if where == "rename" and dst_name.startswith(".latest.old") and ckpt.save_count >= 2:
        pause()
    if where == "delete" and src_name.startswith(".latest.tmp") and ckpt.save_count >= 2:
        pause()

real_save = ckpt.save
def save(*args, **kwargs):
    ckpt.save_count += 1
    return real_save(*args, **kwargs)

ckpt.save_count = 0
ckpt.save = save
names = {k: getattr(os, k) for k in dir(os) if not k.startswith("__")}
ckpt.os = types.SimpleNamespace(**{**names, "replace": replace})
from gpt.cli import train_main
sys.exit(train_main(sys.argv[1:]))
"""


def start(data: Path, out: Path, *extra: str, pause: str = "", flag: Path | None = None) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PAUSE": pause, "FLAG": str(flag or "")}
    args = ["--data", str(data), "--out", str(out), *ARGS, *extra]
    cmd = [sys.executable, "-c", PAUSED_SAVE, *args] if pause else [sys.executable, "-m", "gpt.cli", "train", *args]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def prepared(tmp_path: Path, corpus_file: Path) -> Path:
    from gpt.data import prepare

    return prepare([corpus_file], tokenizer="char", out=tmp_path / "data").dir


def kill_when(proc: subprocess.Popen[str], condition, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None and not condition():
        time.sleep(0.01)
    assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""  # it was still running when killed
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)


def test_sigkill_mid_run_and_mid_write_then_resume(tmp_path: Path, corpus_file: Path) -> None:
    data, run = prepared(tmp_path, corpus_file), tmp_path / "run"
    rng = random.Random(0)
    for attempt, pause in enumerate(["", "write", "", "rename", "", "delete", "write"]):
        flag = tmp_path / f"paused-{attempt}"
        proc = start(data, run, *(["--resume", str(run)] if attempt else []), pause=pause, flag=flag)
        if not pause:  # at a random moment after the first checkpoint
            until = time.time() + rng.uniform(0.5, 2.0)
            kill_when(proc, lambda until=until: (run / "latest").exists() and time.time() > until)
        else:  # inside a save, at the planted pause
            kill_when(proc, flag.exists)
            assert flag.exists()
            assert any(p.name.startswith(".latest.") for p in run.iterdir())  # a save was under way
        listed = ckpt.list_checkpoints(run)
        assert listed and all(not Path(r["path"]).name.startswith(".") for r in listed)  # no half-written one
        loaded = ckpt.load(run)  # the latest complete checkpoint loads
        assert ckpt.load_trainer_state(run) is not None and loaded.step >= 1

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
