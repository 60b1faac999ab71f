"""Training jobs of the web app: each trains in its own process and reports back through events."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from gpt.config import Config
from gpt.data import prepare
from gpt.errors import UserInputError
from playground.jobs import Job, Registry, RunRequest


def config(max_steps: int) -> Config:
    cfg = Config()
    cfg.model.block_size, cfg.model.n_layer, cfg.model.n_head, cfg.model.n_embd = 16, 1, 2, 32
    t = cfg.train
    t.batch_size, t.max_steps, t.warmup_steps, t.eval_interval, t.eval_iters = 4, max_steps, 5, 50, 2
    t.log_interval, t.sample_interval, t.checkpoint_interval, t.tensorboard = 5, 0, 0, False
    return cfg.validate()


def wait_for(job: Job, predicate, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate(job):
            return
        time.sleep(0.1)
    raise AssertionError(f"not reached in {timeout} s: {job.status} {job.message}")


@pytest.fixture
def data(corpus_file: Path, tmp_path: Path):
    return prepare([corpus_file], tokenizer="char", out=tmp_path / "data")


def test_a_job_trains_in_its_own_process_and_stops_on_request(data, tmp_path: Path) -> None:
    reg = Registry(max_jobs=1)
    job = reg.start(RunRequest(config(100_000), data, tmp_path / "run"))
    assert job.process.pid != os.getpid() and job.status == "running"
    wait_for(job, lambda j: len(j.curves.steps) >= 3)
    job.stop()
    wait_for(job, lambda j: not j.active)
    assert job.status == "stopped" and job.message.startswith("Training stopped at step")
    assert (tmp_path / "run" / "latest" / "model.safetensors").is_file()  # the stop saved a checkpoint
    job.process.join(30)
    assert job.process.exitcode == 0


def test_runs_over_the_slots_wait_in_line_and_start_in_order(data, tmp_path: Path) -> None:
    reg = Registry(max_jobs=1, max_queue=3)
    first = reg.start(RunRequest(config(100_000), data, tmp_path / "a", owner="a"))  # no estimate: no rescaling below
    second = reg.start(RunRequest(config(20), data, tmp_path / "b", owner="b", estimate_s=30, address="10.0.0.2"),
                       per_address=1)  # fmt: skip
    third = reg.start(RunRequest(config(20), data, tmp_path / "c", owner="c", session="page-c", estimate_s=30))
    assert (first.status, second.status, third.status) == ("running", "queued", "queued")
    for owner in ("a", "b"):  # one run per visitor, training or waiting
        with pytest.raises(UserInputError, match="still training or waiting"):
            reg.start(RunRequest(config(20), data, tmp_path / f"{owner}2", owner=owner))
    with pytest.raises(UserInputError, match="from your address"):  # a new session from a full address
        reg.start(RunRequest(config(20), data, tmp_path / "e", owner="e", address="10.0.0.2"), per_address=1)
    reg.start(RunRequest(config(20), data, tmp_path / "f", owner="f"))
    with pytest.raises(UserInputError, match="Busy"):
        reg.start(RunRequest(config(20), data, tmp_path / "d", owner="d"))
    reg.leave(reg.latest("f").id)
    pos2 = reg.queue_position(second.id)
    pos3 = reg.queue_position(third.id)
    assert pos2 is not None and pos3 is not None and pos2[:2] == (1, 2) and pos3[:2] == (2, 2)
    assert pos3[2] == pytest.approx(pos2[2] + 30)  # the run ahead takes its estimate after the slot frees up
    # the third's page stops asking (closed): its place lapses; the second's page goes on asking
    reg.touch(second.id)
    third.seen_at -= 3600
    assert reg.queue_position(second.id)[:2] == (1, 1)
    assert third.status == "left" and reg.queue_position(third.id) is None and "left the queue" in third.message
    first.stop()
    wait_for(second, lambda j: j.status == "completed")  # started by itself when the slot freed, and ran to its end
    assert first.status == "stopped" and not (tmp_path / "c").exists()
    assert reg.latest("b") is second and reg.latest("nobody") is None


def test_the_shown_wait_counts_down() -> None:
    """Refined estimates (the running run's pace) do not make the wait tick up and down: it counts down, and jumps
    only when the new figure is clearly different."""
    from types import SimpleNamespace

    job: Any = SimpleNamespace(shown_wait=None)
    assert Registry._countdown(job, 39.0) == 39.0
    job.shown_wait = (39.0, time.monotonic() - 5)  # shown 5 s ago
    assert Registry._countdown(job, 44.0) == pytest.approx(34.0, abs=0.5)  # not up to 44: down to 34
    assert Registry._countdown(job, 90.0) == 90.0  # clearly longer now: shown as it is


def test_two_starts_at_once_make_one_run(data, tmp_path: Path) -> None:
    """Sent together from one visitor (two tabs, a double click, a script): one run, the other refused."""
    import threading

    reg = Registry(max_jobs=2, max_queue=2)
    results: list[Any] = []

    def start(i: int) -> None:
        try:
            results.append(reg.start(RunRequest(config(100_000), data, tmp_path / f"r{i}", owner="same")))
        except UserInputError as e:
            results.append(e)

    threads = [threading.Thread(target=start, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    jobs_made = [r for r in results if not isinstance(r, Exception)]
    assert len(jobs_made) == 1 and len(results) == 4
    assert reg.stop_owner("same") == jobs_made  # and the visitor can stop it
    wait_for(jobs_made[0], lambda j: not j.active)


def test_bad_settings_found_by_the_child_reach_start(data, tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match="nothing-here. is not a checkpoint"):
        Registry(max_jobs=1).start(RunRequest(config(10), data, tmp_path / "run", resume=tmp_path / "nothing-here"))


def test_a_killed_training_process_is_reported(data, tmp_path: Path) -> None:
    job = Registry(max_jobs=1).start(RunRequest(config(100_000), data, tmp_path / "run"))
    wait_for(job, lambda j: len(j.curves.steps) >= 1)
    assert job.process.pid is not None
    os.kill(job.process.pid, signal.SIGKILL)
    wait_for(job, lambda j: not j.active)
    assert job.status == "error" and "ended unexpectedly" in job.message


APP = """
import sys, time
from pathlib import Path
from gpt.data import load_prepared
from playground.jobs import Registry, RunRequest
from tests.test_jobs import config

job = Registry(max_jobs=1).start(RunRequest(config(100_000), load_prepared(sys.argv[1]), Path(sys.argv[2])))
print(job.process.pid, flush=True)
time.sleep(600)
"""


def test_training_stops_and_saves_when_the_app_goes_away(data, tmp_path: Path) -> None:
    """Ctrl-C on `python app.py` (or a crash) must not leave a run training on, unseen, burning the CPU."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    app = subprocess.Popen([sys.executable, "-c", APP, str(data.dir), str(tmp_path / "run")], cwd=root,
                           stdout=subprocess.PIPE, text=True)  # fmt: skip
    child = int(app.stdout.readline())
    deadline = time.time() + 60
    while not (tmp_path / "run" / "metrics.jsonl").exists() and time.time() < deadline:
        time.sleep(0.1)  # training has begun
    app.kill()
    app.wait(10)
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        time.sleep(0.2)
    else:
        os.kill(child, signal.SIGKILL)
        raise AssertionError("the training process went on after the app was gone")
    assert (tmp_path / "run" / "latest" / "model.safetensors").is_file()  # it saved on its way out
