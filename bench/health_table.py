"""Does the health view tell a learning rate too high or too low on any text, and say nothing at a good one?

    python -m bench.health_table [--corpora NAME ...] [--recipes tiny tiny-2019] [--rates 1 10 0.1] [--jobs 2] [--smoke]

Trains each preset (tiny: the modern recipe; tiny-2019: GPT-2's) at 1x, 10x and 0.1x its learning rates (every rate
of the schedule: train.lr, train.min_lr and Muon's train.muon_lr) on each corpus, for the preset's own steps, as
`gpt-train --config PRESET` does (no samples, no checkpoints), and collects what the health view said at any
reading (`gpt.health.findings`, as the Train tab's note lists them: the first step of each kind). A finding whose
remedy lowers the rate says "too high", one whose remedy raises it "too low". The rule it is held to: at 1x nothing
about the rate, at 10x "too high" and never "too low", at 0.1x "too low" and never "too high". It prints a line per
run as it ends, then the table (corpus x recipe x rate), and exits 1 when a run broke the rule.

The corpora (built once into the cache; 1-5 MB each): the built-in Shakespeare and repeated words (char-level);
English prose (the licence texts of the installed packages and Python's own documentation topics, char-level);
source code (the standard library's modules, char-level); and the same prose tokenised by a BPE of 2,048 trained on
it. --jobs runs that many trainings at once (each on one thread). --smoke: one small corpus, 12 steps a run with a
reading every 4, seconds; its table means nothing.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import sysconfig
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

import torch

from gpt.config import apply_overrides, load_config, resolve_config_path
from gpt.corpus import repeats_corpus_path, sample_corpus_path
from gpt.data import load_prepared, prepare
from gpt.events import Eval, Event
from gpt.health import Health, findings
from gpt.paths import cache_dir
from gpt.trainer import Trainer

CORPORA = ("shakespeare", "repeats", "prose", "code", "prose-bpe")
RECIPES = ("tiny", "tiny-2019")
RATES = (1.0, 10.0, 0.1)
CODE_CHARS = 2_000_000  # of the standard library's modules: a corpus the size of the others
SMOKE_CHARS = 200_000


@dataclass
class Outcome:
    corpus: str
    recipe: str
    rate: float
    found: dict[str, int] = field(default_factory=dict)  # finding kind -> the step of the first reading that said it
    high: bool = False  # some finding said the rate is too high
    low: bool = False
    final_val: float = float("nan")
    seconds: float = 0.0

    @property
    def said(self) -> str:
        kinds = ", ".join(f"{kind}@{step}" for kind, step in self.found.items())
        verdict = "too high and too low" if self.high and self.low else "too high" if self.high else "too low" if \
            self.low else "nothing about the rate"  # fmt: skip
        return verdict + (f" ({kinds})" if kinds else "")

    @property
    def ok(self) -> bool:
        """The rule: 1x says nothing about the rate, 10x says too high (never too low), 0.1x too low (never high)."""
        return (self.high, self.low) == ((False, False) if self.rate == 1.0 else (self.rate > 1.0, self.rate < 1.0))


def _prose(target: Path) -> None:
    """The licence texts of the installed packages (each text once) and Python's documentation topics."""
    import pydoc_data.topics

    seen, parts = set(), []
    site = Path(sysconfig.get_paths()["purelib"])
    for f in sorted([*site.glob("*/LICENSE*"), *site.glob("*/licenses/*")]):
        if f.is_file() and (digest := hashlib.sha1(f.read_bytes()).hexdigest()) not in seen:
            seen.add(digest)
            parts.append(f.read_text(encoding="utf-8", errors="replace"))
    topics = pydoc_data.topics.topics
    parts += [topics[k] for k in sorted(topics)]
    target.write_text("\n\n".join(parts), encoding="utf-8")


def code_corpus(target: Path, chars: int) -> None:
    """The standard library's top-level modules, in name order, up to `chars` characters."""
    parts, n = [], 0
    for f in sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py")):
        if n >= chars:
            break
        parts.append(f.read_text(encoding="utf-8", errors="replace")[: chars - n])
        n += len(parts[-1])
    target.write_text("\n\n".join(parts), encoding="utf-8")


def corpus(name: str, smoke: bool = False) -> tuple[Path, str]:
    """The corpus `name`'s text file (built once into the cache) and its tokenizer."""
    if name in ("shakespeare", "repeats"):
        return (sample_corpus_path() if name == "shakespeare" else repeats_corpus_path()), "char"
    root = cache_dir() / "bench-corpora"
    root.mkdir(parents=True, exist_ok=True)
    kind = name.removesuffix("-bpe")
    path = root / (f"{kind}-smoke.txt" if smoke else f"{kind}.txt")
    if not path.is_file():
        _prose(path) if kind == "prose" else code_corpus(path, SMOKE_CHARS if smoke else CODE_CHARS)
    return path, "bpe" if name.endswith("-bpe") else "char"


def overrides(recipe: str, rate: float, smoke: bool) -> list[str]:
    """The preset at `rate` times its learning rates (the whole schedule: its end and Muon's rate too)."""
    t = load_config(resolve_config_path(recipe)).train
    out = [f"train.lr={t.lr * rate:g}", f"train.min_lr={t.min_lr * rate:g}", f"train.muon_lr={t.muon_lr * rate:g}"]
    out += ["train.sample_interval=0", "train.checkpoint_interval=0", "train.compile=off"]
    if smoke:
        out += ["train.max_steps=12", "train.health_interval=4", "train.warmup_steps=2", "train.eval_interval=12",
                "train.eval_iters=1", "train.batch_size=4"]  # fmt: skip
    return out


def train(job: tuple[str, str, float, str, bool]) -> Outcome:
    """One run: what its health readings said, its final val loss and its seconds."""
    name, recipe, rate, data_dir, smoke = job
    torch.set_num_threads(1)
    cfg = apply_overrides(load_config(resolve_config_path(recipe)), overrides(recipe, rate, smoke))
    out = Outcome(name, recipe, rate)

    def listen(e: Event) -> None:
        if isinstance(e.data, Eval):
            out.final_val = e.data.val_loss
        elif isinstance(e.data, Health):
            for f in findings(e.data):
                out.found.setdefault(f.kind, e.step)
                if f.remedy is not None:
                    out.high |= f.remedy.lr_factor < 1.0
                    out.low |= f.remedy.lr_factor > 1.0

    t = time.perf_counter()
    with tempfile.TemporaryDirectory() as run_dir:
        Trainer(cfg, load_prepared(data_dir), run_dir, listeners=[listen]).run()
    out.seconds = time.perf_counter() - t
    return out


def table(outcomes: list[Outcome], recipes: list[str], rates: list[float]) -> str:
    """A Markdown table: a row per corpus, a column per recipe and rate, each cell what was said and ok / FAIL."""
    cells = {(o.corpus, o.recipe, o.rate): o for o in outcomes}
    columns = [(r, x) for r in recipes for x in rates]
    lines = ["| corpus | " + " | ".join(f"{r} {x:g}x" for r, x in columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for name in dict.fromkeys(o.corpus for o in outcomes):
        row = []
        for r, x in columns:
            o = cells.get((name, r, x))
            row.append("" if o is None else f"{'ok' if o.ok else 'FAIL'}: {o.said}")
        lines.append(f"| {name} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpora", nargs="+", choices=CORPORA, default=list(CORPORA))
    ap.add_argument("--recipes", nargs="+", choices=RECIPES, default=list(RECIPES))
    ap.add_argument("--rates", nargs="+", type=float, default=list(RATES))
    ap.add_argument("--jobs", type=int, default=1, help="trainings at once, each on one thread")
    ap.add_argument("--smoke", action="store_true", help="does it still run: one small corpus, 12 steps a run")
    args = ap.parse_args(argv)
    if args.smoke:
        args.corpora = ["code"]
    jobs = []
    for name in args.corpora:  # (prepared here, once, before any run reads them)
        path, tokenizer = corpus(name, args.smoke)
        data = prepare([path], tokenizer=tokenizer)
        jobs += [(name, r, x, str(data.dir), args.smoke) for r in args.recipes for x in args.rates]
    outcomes = []
    with ProcessPoolExecutor(max_workers=max(1, args.jobs), mp_context=get_context("spawn")) as pool:
        for o in pool.map(train, jobs):
            outcomes.append(o)
            print(f"{o.corpus} {o.recipe} {o.rate:g}x: {'ok' if o.ok else 'FAIL'}, said {o.said} | final val loss "
                  f"{o.final_val:.3f} | {o.seconds:.0f} s", flush=True)  # fmt: skip
    print(table(outcomes, args.recipes, args.rates))
    passed = sum(o.ok for o in outcomes)
    print(f"health table: {passed}/{len(outcomes)} runs as the rule says", flush=True)
    if passed < len(outcomes) and not args.smoke:
        sys.exit(1)


if __name__ == "__main__":
    main()
