"""The app case: from a changed slider in the Generate tab to the first streamed token, through gradio_client.

    python -m bench.app_latency [--requests 20] [--smoke]

Launches `python app.py` on 127.0.0.1 with a fresh runs directory, trains the tiny preset briefly for a checkpoint
to sample from, then sends `--requests` generate requests, each with a new temperature (what releasing the slider
sends), and times each until its first streamed update arrives. The reference, measured in the same run, is the
library's own first token (`gpt.generate.stream`) on the same checkpoint in this process: the difference is what
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
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import fields
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def app_settings() -> dict[str, Any]:
    """What /generate takes after checkpoint and prompt: one value per field of SampleConfig, in order (as
    playground/generate_tab.py builds its controls), each at the app's starting value; the stop text as the box
    sends it. Read from the dataclass, so that a new setting cannot leave this call behind."""
    from gpt.config import SampleConfig

    defaults, out = SampleConfig(), {}
    for f in fields(SampleConfig):
        value = getattr(defaults, f.name) if f.metadata.get("ui") is None else f.metadata["ui"]
        out[f.name] = "|".join(value) if isinstance(value, list) else value
    return out


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


def tiny_checkpoint(runs: Path, steps: int = 100, *overrides: str) -> Path:
    from gpt.cli import resolve_config_path
    from gpt.config import apply_overrides, load_config
    from gpt.corpus import sample_corpus_path
    from gpt.data import prepare
    from gpt.trainer import Trainer

    cfg = apply_overrides(
        load_config(resolve_config_path("tiny")), [f"train.max_steps={steps}", "train.tensorboard=false", *overrides]
    )
    data = prepare([sample_corpus_path()], tokenizer="char", out=runs.parent / "data")
    Trainer(cfg, data, runs / "bench-tiny").run()
    return runs / "bench-tiny" / "latest"


def app_first_token_ms(url: str, checkpoint: str, requests: int, warmup: int = 2, **changed: Any) -> list[float]:
    """Each request's time to its first streamed update, after `warmup` untimed ones (they warm the model cache and
    the connection); `changed`: settings other than the app's starting values."""
    from gradio_client import Client

    client = Client(url, verbose=False)
    settings = {**app_settings(), **changed}
    times = []
    for i in range(requests + warmup):
        settings["temperature"] = round(0.5 + 0.05 * (i % 10), 2)
        t = time.perf_counter()
        job = client.submit(checkpoint, "ROMEO:", *settings.values(), api_name="/generate")
        updates = iter(job)
        if next(updates, None) is None:
            job.result()  # raises the app's error
            raise RuntimeError("/generate streamed nothing")
        if i >= warmup:
            times.append(1000 * (time.perf_counter() - t))
        for _ in updates:  # let it finish so requests do not overlap
            pass
    return times


def library_first_token_ms(checkpoint: Path, requests: int, warmup: int = 2) -> list[float]:
    from gpt import checkpoint as ckpt
    from gpt.config import SampleConfig
    from gpt.device import sampling_model
    from gpt.generate import stream

    loaded = ckpt.load(checkpoint)
    model = sampling_model(loaded.model)
    times = []
    for i in range(requests + warmup):
        cfg = SampleConfig(max_new_tokens=200, temperature=0.5 + 0.05 * (i % 10), top_k=40, seed=42)
        t = time.perf_counter()
        next(iter(stream(model, loaded.tokenizer, "ROMEO:", cfg)))
        if i >= warmup:
            times.append(1000 * (time.perf_counter() - t))
    return times


def measure(requests: int, smoke: bool = False) -> dict[str, Any]:
    """smoke: does it still run (a 5-step checkpoint, trained while the app starts, no sample text, a short
    evaluation, no warm-up requests, 20 new tokens a request); its figures mean nothing."""
    runs = Path(tempfile.mkdtemp(prefix="bench-app-")) / "runs"
    if smoke:  # (the app finds a checkpoint by its name when a request names it: it can start meanwhile)
        runs.mkdir(parents=True)
        made: list[Path] = []
        trainer = threading.Thread(target=lambda: made.append(
            tiny_checkpoint(runs, 5, "train.sample_interval=0", "train.eval_iters=2")))  # fmt: skip
        trainer.start()
    else:
        checkpoint = tiny_checkpoint(runs)
    warmup = 0 if smoke else 2
    with launched_app(runs) as url:
        if smoke:
            trainer.join()
            if not made:
                raise RuntimeError("training the checkpoint failed")
            checkpoint = made[0]
        # the app takes a checkpoint by its name in the runs directory, as its list shows it ("bench-tiny/latest")
        name = checkpoint.relative_to(runs).as_posix()
        app = app_first_token_ms(url, name, requests, warmup, **({"max_new_tokens": 20} if smoke else {}))
    lib = library_first_token_ms(checkpoint, requests, warmup)
    p90 = sorted(app)[int(0.9 * len(app))]
    return {"ours": statistics.median(app), "reference": statistics.median(lib), "p90": p90, "requests": requests}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=20)
    ap.add_argument("--smoke", action="store_true", help="does it still run: 2 requests, a 5-step checkpoint")
    args = ap.parse_args()
    if args.smoke:
        args.requests = 2
    r = measure(args.requests, args.smoke)
    print(f"app: slider change to first token, median of {args.requests}: {r['ours']:.1f} ms (p90 {r['p90']:.1f}) | "
          f"library in-process {r['reference']:.1f} ms")  # fmt: skip


if __name__ == "__main__":
    main()
