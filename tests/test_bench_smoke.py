"""Every benchmark in bench/ still runs: each one's --smoke mode (tiny sizes, a few steps, seconds), started as a user
starts it (`python -m bench.X --smoke` from the repository root), exits 0 and prints its figures. A benchmark nobody
runs rots: `python -m bench.compare --cases app` crashed once the app's /generate had changed under it. A new file in
bench/ with a `__main__` block is picked up here by itself; give it a --smoke mode and its figures below."""

from __future__ import annotations

import math
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
NUM = r"[\d,]+(?:\.\d+)?"
# What each benchmark prints when it worked: its figures (numbers where numbers belong).
FIGURES = {
    "bench": [rf"tiny\s+train\s+{NUM} tok/s\s+MFU\s+{NUM}% \| generate\s+{NUM} tok/s, first token {NUM} ms", r"wrote "],
    "bench.compare": [
        rf"train tiny\s+ours\s+{NUM} tok/s .*\| reference\s+{NUM} \(float32\) \|\s+{NUM}x.* MFU {NUM}% of fp32",
        rf"generate tiny \(top-k\)\s+ours\s+{NUM} tok/s .*static {NUM}x, compiled in {NUM} s .*"
        rf"\| first token {NUM} ms vs {NUM}",
        rf"generate tiny \(every option\)\s+ours\s+{NUM} tok/s .*static {NUM}x",
        rf"prepare gpt2\s+{NUM} MB/s, peak RSS {NUM} MB",
        rf"prepare char\s+{NUM} MB/s, peak RSS {NUM} MB",
        r"wrote ",
    ],
    "bench.app_latency": [rf"median of 2: {NUM} ms \(p90 {NUM}\) \| library in-process {NUM} ms"],
    "bench.hosting": [
        rf'"start_s": {NUM}',
        rf'"server_rss_idle_mb": {NUM}',
        rf'"server_rss_training_mb": {NUM}',
        rf'"queue_wait_shown_s": \{{\s*"b": {NUM},\s*"c": {NUM}\s*\}}',
        rf'"queue_wait_real_s": \{{\s*"b": {NUM},\s*"c": {NUM}\s*\}}',
    ],
    "bench.train_tab": [
        rf"run 1: CLI {NUM} tok/s \| Train tab open {NUM} tok/s \| in its {NUM} s, CPU: browser {NUM} s, server {NUM}",
        rf"training tokens/s, tiny preset, 30 steps: CLI {NUM} \| Train tab open {NUM} \| {NUM}x, paired {NUM}x",
    ],
    "bench.estimate": [
        rf"smoke: estimate {NUM} s \(printed {NUM} s\), real {NUM} s",
        rf"smoke\s+30\s+{NUM} s\s+{NUM} s\s+[+-]{NUM}%\s+\|\s+{NUM} s\s+{NUM} s",
    ],
    "bench.race": [
        rf"target: gpt2's final val loss {NUM}, reached in {NUM} s",
        rf"modern\s+12\s+32\s+{NUM}\s+{NUM}\s+{NUM}\s",
        rf"\+rope\s+12\s+12\s+{NUM}",
        rf"batch\s+16: muon\s+{NUM} s val {NUM} \| adamw\s+{NUM} s val {NUM}",
        r"wrote .*race\.png",
    ],
    "bench.health": [
        rf"health every {NUM} steps: {NUM} readings, {NUM} s of a {NUM} s run \({NUM}%\) \| without: {NUM} s",
        rf"tiny preset, 30 steps: readings {NUM}% of training time \(median\), paired wall time {NUM}x",
    ],
    "bench.contention": [
        rf"before \(every core, one priority\): generation {NUM} tok/s alone, {NUM} while a run trains \({NUM}x\); "
        rf"the run {NUM} steps/s alone, {NUM} while generating \({NUM}x\)",
        rf"ours \(foreground/background\): generation {NUM} tok/s alone, {NUM} while a run trains",
    ],
    "bench.tasks": [
        rf"^{run}: train acc 0\.99 at (step {NUM} \({NUM} s\)|never) \| "
        rf"val acc 0\.9[59] at (step {NUM} \({NUM} s\)|never) \| .* \| final val acc {NUM} \| {NUM} steps in {NUM} s$"
        for run in ("grokking", "grokking-wd0", "grokking-grokfast", "sort")
    ],
    "bench.health_table": [rf"health table: {NUM}/{NUM} runs as the rule says"],
    "bench.long_generation": [
        rf"inside the context:\s+{NUM} tokens/s",
        rf"past the context:\s+{NUM} tokens/s",
        rf"past / inside:\s+{NUM}",
    ],
}
TIMEOUT_S = 600  # each takes seconds to a minute or two on 2 cores; this is for a machine shared with other work
# seconds; the others launch the app (and a browser): slow
FAST = {"bench", "bench.long_generation", "bench.health", "bench.tasks"}


def benchmarks() -> list[str]:
    """`bench` itself and each bench/X.py that runs as a program."""
    found = [
        f"bench.{p.stem}"
        for p in sorted((ROOT / "bench").glob("*.py"))
        if p.stem not in ("__init__", "__main__") and "__main__" in p.read_text(encoding="utf-8")
    ]
    return ["bench", *found]


def params() -> list[object]:
    return [pytest.param(m, id=m, marks=() if m in FAST else pytest.mark.slow) for m in benchmarks()]


@pytest.mark.parametrize("module", params())
def test_benchmark_smoke(module: str) -> None:
    if module == "bench.train_tab" and not Path(shutil.which("chromium") or "/usr/bin/chromium").exists():
        pytest.fail("chromium is not installed: apt-get install -y chromium (scripts/test.sh does it)")
    # one torch thread in each process (the bench, the app, its training runs): these check that it runs, not its
    # speed, and on a machine shared with other work two OpenMP threads a process ran 2.6x slower than one
    env = {"OMP_NUM_THREADS": "1", **os.environ, "GRADIO_ANALYTICS_ENABLED": "False"}
    # its own process group: a hung one is ended with the app and the browser it started, none left running
    proc = subprocess.Popen([sys.executable, "-m", module, "--smoke"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)  # fmt: skip
    try:
        stdout, stderr = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        pytest.fail(f"{module} --smoke ran past {TIMEOUT_S} s\n{stdout[-3000:]}\n{stderr[-3000:]}")
    said = f"--- stdout\n{stdout[-3000:]}\n--- stderr\n{stderr[-3000:]}"
    assert proc.returncode == 0, said
    for figure in FIGURES.get(module, [r"\d"]):  # (a new one, not listed yet, fails the test below)
        assert re.search(figure, stdout, re.MULTILINE), f"{figure!r} not printed\n{said}"


def test_every_benchmark_has_a_smoke_mode() -> None:
    """Each is known here, with its figures, and says --smoke in its usage line (its docstring)."""
    for module in benchmarks():
        assert module in FIGURES, f"{module}: add its figures to FIGURES"
        path = ROOT / "bench" / ("__main__.py" if module == "bench" else f"{module.split('.')[1]}.py")
        assert "--smoke" in path.read_text(encoding="utf-8"), f"{path}: no --smoke mode"


def _run_compare(*args: str, env: dict[str, str] | None = None) -> tuple[str, str]:
    """`python -m bench.compare ARGS` as a user starts it; its stdout, after checking it exited 0 with no traceback."""
    env = {"OMP_NUM_THREADS": "1", **os.environ, **(env or {})}
    done = subprocess.run([sys.executable, "-m", "bench.compare", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=TIMEOUT_S)  # fmt: skip
    said = f"--- stdout\n{done.stdout[-3000:]}\n--- stderr\n{done.stderr[-3000:]}"
    assert done.returncode == 0, said
    assert "Traceback" not in done.stderr, said
    return done.stdout, said


def test_compare_cuda_smoke_skips_without_cuda() -> None:
    """`--device cuda --smoke` where there is no CUDA (hidden here with CUDA_VISIBLE_DEVICES on a machine that has it):
    each GPU case says in one line that it was skipped, and the run exits 0 and still writes its JSON."""
    stdout, said = _run_compare("--device", "cuda", "--smoke", env={"CUDA_VISIBLE_DEVICES": ""})
    skips = re.findall(r"^(train|decode) .+: skipped, CUDA is not available$", stdout, re.MULTILINE)
    assert len(skips) == 6, said  # 3 cases at the 124M shape, 1 at shakespeare_char's, decode in fp32 and bf16
    assert re.search(r"^wrote ", stdout, re.MULTILINE), said


def test_compare_nanogpt_case_on_cpu() -> None:
    """The nanoGPT-style reference through bench.compare on CPU: training ms/step, ours against it, both eager."""
    stdout, said = _run_compare("--cases", "nanogpt", "--device", "cpu", "--smoke")
    figure = rf"train tiny nanogpt eager\s+ours\s+{NUM} ms/step \(\w+\) \| reference\s+{NUM} \(float32\) \|\s+{NUM}x"
    assert re.search(figure, stdout), said


def test_nanogpt_reference_model_on_cpu() -> None:
    """bench/nanogpt_ref.py: forward and backward on CPU, tied head, loss at init near ln(vocab), and it learns."""
    from bench.nanogpt_ref import BETAS, LEARNING_RATE, WEIGHT_DECAY, NanoGPT, RefConfig

    torch.manual_seed(0)
    cfg = RefConfig(block_size=32, vocab_size=65, n_layer=2, n_head=2, n_embd=64)
    model = NanoGPT(cfg)
    assert model.lm_head.weight is model.transformer.wte.weight
    x, y = torch.randint(0, cfg.vocab_size, (2, 4, cfg.block_size))
    logits, loss = model(x, y)
    assert logits.shape == (4, cfg.block_size, cfg.vocab_size)
    assert loss is not None and abs(loss.item() - math.log(cfg.vocab_size)) < 0.1
    assert model(x)[0].shape == (4, 1, cfg.vocab_size)  # without targets: the last position only, as nanoGPT
    opt = model.configure_optimizers(WEIGHT_DECAY, LEARNING_RATE * 10, BETAS, "cpu")
    first = loss.item()
    for _ in range(10):
        _, loss = model(x, y)
        assert loss is not None
        loss.backward()
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
        opt.step()
        opt.zero_grad(set_to_none=True)
    assert loss.item() < first - 0.5  # the same batch, memorised
