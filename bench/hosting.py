"""A public Space's figures: start time, server memory idle and while training, and the queue's shown wait
against the real one.

    python -m bench.hosting [--steps 1000] [--smoke]

Launches `python app.py` as a Space would run it (SPACE_ID set: private visitors, one training slot). Visitor A
trains the tiny preset for --steps steps on the built-in corpus; visitors B and C press Start meanwhile and wait in
line. Each one's wait as the Train tab shows it at that moment is compared with the time its run really waited.
Memory is the resident set (RSS) of the server and of the training process, read from /proc, and so is the CPU the
idle server spends (taken from any training on the same machine). --smoke: does it still run (A 60 steps, B and C
10, no sample texts, short settling waits; seconds, not minutes); its figures mean little and go to a temporary file,
not bench/results/.
"""

from __future__ import annotations

import argparse
import json
import re
import tempfile
import time
from pathlib import Path

from bench.app_latency import ROOT, cpu_seconds, launched_app

# start from, preset, then the tiny preset's form: layers, heads, embd, context, dropout, batch, lr, schedule, warmup,
# steps (set below), eval, sample, seed
TINY = ["", "tiny", 4, 4, 128, 64, 0.0, 12, 1e-3, "cosine", 100, 0, 250, 500, 1337]


def rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024  # type: ignore[union-attr]


def children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        kids = (task / "children").read_text().split()
        out += [int(k) for k in kids]
    return out + [g for k in out for g in children(k)]


UNITS = {"h": 3600, "min": 60, "m": 60, "s": 1}


def seconds(text: str) -> float:
    """Back from gpt.events.format_duration, at the start of `text`: "1 h 3 min", "2 min 5 s", "14 s" (or the older
    "1h02m03s", "2m05s")."""
    lead = re.match(r"\s*((?:\d+\s*(?:h|min|m|s)(?![a-z])\s*)+)", text)
    if lead is None:
        raise ValueError(f"no duration at the start of {text[:80]!r}")
    return sum(int(n) * UNITS[u] for n, u in re.findall(r"(\d+)\s*(h|min|m|s)", lead.group(1)))


def shown_wait(progress: str) -> float:
    """The wait the Train tab shows a run in line: "the runs ahead should end in about 2 min 5 s; ..." (0 when it
    says "any moment now")."""
    _, about, rest = progress.partition("should end in about")
    return seconds(rest) if about else 0.0


def main() -> None:
    from gradio_client import Client

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--smoke", action="store_true", help="does it still run: 60 steps, short waits")
    args = ap.parse_args()
    if args.smoke:
        args.steps = 60  # run A still trains when B and C press Start (they do at once)
    settle, idle_s, eta_s, every = (0.5, 1, 0, 0.2) if args.smoke else (5, 10, 5, 0.5)
    form = [*TINY[:11], args.steps, *TINY[12:]]
    # --smoke: no sample text at a run's end, and the runs in line (B, C) train 10 steps: their waits are what counts
    form_a = [*form[:13], 0, *form[14:]] if args.smoke else form
    form_bc = [*form_a[:11], 10, *form_a[12:]] if args.smoke else form
    with tempfile.TemporaryDirectory() as tmp, launched_app(Path(tmp), SPACE_ID="bench/hosting") as url:
        time.sleep(settle)  # the fork server and the start-up measurement settle
        idle = rss_mb(url.pid)
        cpu = cpu_seconds(url.pid)
        time.sleep(idle_s)
        idle_cpu = (cpu_seconds(url.pid) - cpu) / idle_s
        a, b, c = (Client(url, verbose=False) for _ in range(3))
        for v in (a, b, c):
            v.predict("Shakespeare (built-in)", [], "", "char", 0.1, api_name="/prepare_data")
        a.predict(*form_a, api_name="/start_training")
        while "step" not in (r := a.predict(api_name="/poll"))[0] or " 0 / " in r[0]:
            time.sleep(every)
        time.sleep(eta_s)  # the run's ETA settles
        queued_at: dict[str, float] = {}
        shown: dict[str, float] = {}
        for name, v in (("b", b), ("c", c)):
            said = v.predict(*form_bc, api_name="/start_training")
            assert "In line" in said, said
            queued_at[name] = time.time()
            shown[name] = shown_wait(v.predict(api_name="/poll")[0])
        training_rss = [rss_mb(url.pid), sum(rss_mb(k) for k in children(url.pid))]
        real: dict[str, float] = {}
        while len(real) < 2:
            for name, v in (("b", b), ("c", c)):
                if name not in real and v.predict(api_name="/poll")[4] != "queued":
                    real[name] = time.time() - queued_at[name]
            time.sleep(every)
        while c.predict(api_name="/poll")[4] in ("starting", "running"):
            time.sleep(2 * every)
    report = {
        "start_s": round(url.start_s, 1),
        "server_rss_idle_mb": round(idle, 1),
        "server_cpu_idle": round(idle_cpu, 4),  # CPU seconds per second with nobody on the page
        "server_rss_training_mb": round(training_rss[0], 1),
        "children_rss_training_mb": round(training_rss[1], 1),
        "queue_wait_shown_s": shown,  # b: first in line (the running run's ETA); c: second (plus b's estimate)
        "queue_wait_real_s": {k: round(v, 1) for k, v in real.items()},
    }
    out = Path(tempfile.mkdtemp()) / "hosting.json" if args.smoke else ROOT / "bench" / "results" / "hosting.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
