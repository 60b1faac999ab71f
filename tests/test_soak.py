"""Long runs: train, generate and inspect over and over; the server's memory must stay flat.

Not in the default suite (marker `soak`). Run it with `just soak` (10 minutes), or shorter with
SOAK_SECONDS=120 python -m pytest -m soak -s.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from gradio_client import Client

from tests.app_helpers import TRAIN, poll_until, step_of
from tests.conftest import SHAKESPEARE

pytestmark = pytest.mark.soak
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_memory_stays_flat(app_url) -> None:
    seconds = float(os.environ.get("SOAK_SECONDS", "600"))
    c = Client(app_url, verbose=False)
    c.predict("Paste text", [], SHAKESPEARE * 30, "char", 0.1, api_name="/prepare_data")
    readings: list[tuple[float, float]] = []
    start = time.time()
    rounds = 0
    while time.time() - start < seconds:
        c.predict(*TRAIN, api_name="/start_training")
        poll_until(c, lambda r: step_of(r) >= 30)
        c.predict(api_name="/stop_training")
        poll_until(c, lambda r: r[4] == "stopped")
        latest = next(p for _, p in c.predict(api_name="/list_checkpoints")[1]["choices"] if "run-" in p)
        for seed in range(3):
            c.predict(latest, "ROMEO:", 0.8, 40, 1.0, 1.0, 0.0, 60, seed, 0.0, 0.0, "", api_name="/generate")
            c.predict(latest, "ROMEO:\nBut soft", 1, 1, "", api_name="/inspect")
        rounds += 1
        readings.append((time.time() - start, rss_mb(app_url.pid)))
    assert rounds >= 3, "too short to judge: raise SOAK_SECONDS"
    warm = readings[len(readings) // 3][1]  # after warm-up: caches, imports, first models
    final = max(r for _, r in readings[len(readings) // 3 :])
    report = {"seconds": seconds, "rounds": rounds, "rss_mb_after_warmup": warm, "rss_mb_max_after": final,
              "readings": readings}  # fmt: skip
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "soak.json").write_text(json.dumps(report, indent=2))
    print(json.dumps({k: v for k, v in report.items() if k != "readings"}))
    assert final < warm * 1.15 + 50, report  # flat: within 15% (+50 MB allocator slack) of the warm level
