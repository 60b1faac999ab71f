"""The contributor workflow: the justfile's recipes exist and explain themselves."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RECIPES = ["setup", "test", "test-cov", "lint", "format", "typecheck", "app", "prepare-data", "train", "train-quick",
           "train-with-config", "generate", "tensorboard", "bench", "bench-compare", "bench-train-tab",
           "check-device", "clean", "clean-all"]  # fmt: skip


@pytest.fixture
def just() -> str:
    exe = shutil.which("just")
    if exe is None:
        pytest.fail("just is not installed: pip install rust-just (requirements-dev.txt has it)")
    return exe


def test_just_lists_every_recipe_with_a_description(just: str) -> None:
    out = subprocess.run([just, "--list"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    lines = {line.split()[0]: line for line in out.splitlines()[1:] if line.strip()}
    for name in RECIPES:
        assert name in lines, name
        assert "#" in lines[name], f"{name} has no description"


def test_check_device_reports_the_cpu(just: str) -> None:
    out = subprocess.run([just, "check-device"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert "device: cpu" in out and "CPU threads" in out


def test_train_quick_is_a_one_liner_over_gpt_train(just: str) -> None:
    out = subprocess.run([just, "--dry-run", "train-quick"], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stderr.strip().startswith("gpt-train --config configs/tiny.yaml")
