"""The app case: from a changed slider in the Generate tab to the first streamed token, through gradio_client.

    python -m bench.app_latency [--requests 20]

Launches `python app.py` on 127.0.0.1 with a fresh runs directory, trains the tiny preset briefly for a checkpoint
to sample from, then sends `--requests` generate requests, each with a new temperature (what releasing the slider
sends), and times each until its first streamed update arrives. The reference, measured in the same run, is the
library's own first token (`gpt.sampling.stream`) on the same checkpoint in this process: the difference is what
the web stack adds.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# The Generate tab's inputs after checkpoint and prompt, at the app's defaults (temperature is varied per request).
SETTINGS = {"top_k": 40, "top_p": 1.0, "repetition": 1.0, "min_p": 0.0, "max_new": 200, "seed": 42,
            "presence": 0.0, "frequency": 0.0, "stop": ""}  # fmt: skip


class AppURL(str):
    """The launched app's address, with its server's process id and how long it took to answer."""

    pid: int = 0
    start_s: float = 0.0


def cpu_seconds(pid: int | None = None) -> float:
    """CPU time (user + system) of process `pid`, or of all chromium processes when None."""
    pids = [pid] if pid else [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and _is_chromium(p)]
    total = 0
    for p in pids:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (in clock ticks)
        except (OSError, IndexError, ValueError):
            pass  # it ended meanwhile
    return total / os.sysconf("SC_CLK_TCK")


def _is_chromium(proc: Path) -> bool:
    try:
        return "chrom" in (proc / "comm").read_text()
    except OSError:
        return False


@contextmanager
def launched_app(runs: Path, **env: str) -> Iterator[AppURL]:
    """`python app.py` on 127.0.0.1 with a fresh runs directory (and `env` added), until the block ends."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.time()
    proc = subprocess.Popen([sys.executable, "app.py", "--port", str(port), "--runs-dir", str(runs)], cwd=ROOT,
                            env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", **env},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    url = AppURL(f"http://127.0.0.1:{port}/")
    url.pid = proc.pid
    try:
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(url, timeout=2)
                break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError("the app did not start") from None
                time.sleep(0.5)
        url.start_s = time.time() - t0
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def tiny_checkpoint(runs: Path, steps: int = 100) -> Path:
    from gpt.cli import resolve_config_path
    from gpt.config import apply_overrides, load_config
    from gpt.corpus import sample_corpus_path
    from gpt.data import prepare
    from gpt.trainer import Trainer

    cfg = apply_overrides(
        load_config(resolve_config_path("tiny")), [f"train.max_steps={steps}", "train.tensorboard=false"]
    )
    data = prepare([sample_corpus_path()], tokenizer="char", out=runs.parent / "data")
    Trainer(cfg, data, runs / "bench-tiny").run()
    return runs / "bench-tiny" / "latest"


def app_first_token_ms(url: str, checkpoint: str, requests: int) -> list[float]:
    from gradio_client import Client

    client = Client(url, verbose=False)
    times = []
    for i in range(requests + 2):  # the first two warm the model cache and the connection
        temperature = round(0.5 + 0.05 * (i % 10), 2)
        t = time.perf_counter()
        job = client.submit(checkpoint, "ROMEO:", temperature, *SETTINGS.values(), api_name="/generate")
        updates = iter(job)
        next(updates)
        if i >= 2:
            times.append(1000 * (time.perf_counter() - t))
        for _ in updates:  # let it finish so requests do not overlap
            pass
    return times


def library_first_token_ms(checkpoint: Path, requests: int) -> list[float]:
    from gpt import checkpoint as ckpt
    from gpt.config import SampleConfig
    from gpt.device import sampling_model
    from gpt.sampling import stream

    loaded = ckpt.load(checkpoint)
    model = sampling_model(loaded.model)
    times = []
    for i in range(requests + 2):
        cfg = SampleConfig(max_new_tokens=200, temperature=0.5 + 0.05 * (i % 10), top_k=40, seed=42)
        t = time.perf_counter()
        next(iter(stream(model, loaded.tokenizer, "ROMEO:", cfg)))
        if i >= 2:
            times.append(1000 * (time.perf_counter() - t))
    return times


def measure(requests: int) -> dict[str, Any]:
    runs = Path(tempfile.mkdtemp(prefix="bench-app-")) / "runs"
    checkpoint = tiny_checkpoint(runs)
    with launched_app(runs) as url:
        app = app_first_token_ms(url, str(checkpoint), requests)
    lib = library_first_token_ms(checkpoint, requests)
    p90 = sorted(app)[int(0.9 * len(app))]
    return {"ours": statistics.median(app), "reference": statistics.median(lib), "p90": p90, "requests": requests}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=20)
    args = ap.parse_args()
    r = measure(args.requests)
    print(f"app: slider change to first token, median of {args.requests}: {r['ours']:.1f} ms (p90 {r['p90']:.1f}) | "
          f"library in-process {r['reference']:.1f} ms")  # fmt: skip


if __name__ == "__main__":
    main()
