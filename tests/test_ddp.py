"""Several processes (DDP, gloo on CPU), as a user starts them: `torchrun --nproc_per_node=2 -m gpt.cli train`.

Both recipes: GPT-2's (AdamW) and the modern one (Muon for the blocks' matrices: every process orthogonalises the
same averaged gradient, so the replicas stay identical). The run completes, its checkpoint loads and resumes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gpt import checkpoint as ckpt

ROOT = Path(__file__).resolve().parent.parent
SHORT = ["train.max_steps=16", "train.eval_interval=8", "train.eval_iters=2", "train.sample_interval=0",
         "train.log_interval=4", "train.warmup_steps=2", "train.tensorboard=false"]  # fmt: skip


def torchrun(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "gpt.cli",
           "train", *args]  # fmt: skip
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("config", ["tiny", "tiny-2019"])
def test_two_processes_train_save_and_resume(config: str, tmp_path: Path) -> None:
    out = tmp_path / "run"
    done = torchrun("--config", config, "--out", str(out), *SHORT)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "2 process(es)" in done.stdout and "training completed at step 16" in done.stdout
    loaded = ckpt.load(out)
    assert loaded.step == 16 and loaded.config.train.optimizer == ("muon" if config == "tiny" else "adamw")
    resumed = torchrun("--resume", str(out), "train.max_steps=24")
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    assert "training completed at step 24" in resumed.stdout
