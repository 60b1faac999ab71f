"""Many users at once (127.0.0.1 only, bounded): 20 sessions generate and inspect while one trains."""

from __future__ import annotations

import json
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

from tests.app_helpers import TRAIN, poll_until, step_of
from tests.conftest import SHAKESPEARE

pytestmark = pytest.mark.slow
SESSIONS = 20
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


def timed(latencies: dict[str, list[float]], name: str, fn, *args: Any, **kw: Any) -> Any:
    t = time.perf_counter()
    try:
        return fn(*args, **kw)
    finally:
        latencies.setdefault(name, []).append(time.perf_counter() - t)


def test_twenty_sessions_while_one_trains(app_url: str) -> None:
    trainer = Client(app_url, verbose=False)
    trainer.predict("Paste text", [], SHAKESPEARE * 30, "char", 0.1, api_name="/prepare_data")
    assert "started" in trainer.predict(*TRAIN, api_name="/start_training")
    poll_until(trainer, lambda r: step_of(r) >= 10)
    checkpoint = ""
    deadline = time.time() + 120
    while not checkpoint and time.time() < deadline:  # any run's checkpoint (this one saves its first at a checkpoint)
        choices = trainer.predict(api_name="/list_checkpoints")[1]["choices"]
        checkpoint = next((p for _, p in choices if "run-" in p), "")
        time.sleep(0.5)
    assert checkpoint

    latencies: dict[str, list[float]] = {}

    def session(i: int) -> list[str]:
        errors = []
        c = Client(app_url, verbose=False)
        text = f"Session {i} has its own words here.\n" * 40
        stats = timed(latencies, "prepare", c.predict, "Paste text", [], text, "char", 0.1, api_name="/prepare_data")[0]
        if f"{len(text):,}" not in stats:
            errors.append(f"session {i} saw someone else's data: {stats}")
        for seed in range(2):
            out = timed(latencies, "generate", c.predict, checkpoint, "ROMEO:", 0.8, 40, 1.0, 1.0, 0.0, 30, seed,
                        0.0, 0.0, "", api_name="/generate")  # fmt: skip
            if not out[1]:
                errors.append(f"session {i}: empty generation")
            timed(latencies, "inspect", c.predict, checkpoint, "ROMEO:", 1, 1, "", api_name="/inspect")
        if isinstance(c.predict(api_name="/poll")[0], str):
            errors.append(f"session {i} sees a training run it did not start")
        try:
            c.predict(api_name="/stop_training")
            errors.append(f"session {i} could stop another session's run")
        except AppError as e:
            assert "no training run of yours" in str(e)
        return errors

    with ThreadPoolExecutor(SESSIONS) as pool:
        errors = [e for errs in pool.map(session, range(SESSIONS)) for e in errs]
    assert errors == []

    # two more training requests while one runs: they wait in line, in order, and can leave it
    waiting = [Client(app_url, verbose=False) for _ in range(2)]
    for w in waiting:
        assert "in line" in w.predict(*TRAIN, api_name="/start_training").lower()
    assert "position 2 of 2" in waiting[1].predict(api_name="/poll")[0]
    for w in waiting:
        assert "left the queue" in w.predict(api_name="/leave_queue")
    trainer.predict(api_name="/stop_training")
    poll_until(trainer, lambda r: r[4] == "stopped")
    late = Client(app_url, verbose=False)  # the queue drains: the next request trains
    assert "started" in late.predict(*TRAIN, api_name="/start_training")
    late.predict(api_name="/stop_training")
    poll_until(late, lambda r: r[4] == "stopped")

    report = {
        name: {"requests": len(v), "median_s": statistics.median(v), "p95_s": sorted(v)[int(0.95 * (len(v) - 1))]}
        for name, v in latencies.items()
    }
    report["sessions"] = SESSIONS
    report["errors"] = 0
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "load.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
