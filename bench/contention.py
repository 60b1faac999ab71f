"""Training and serving on the same cores: does Generate keep its speed while a run trains?

    python -m bench.contention [--seconds 8] [--smoke]

The app serves requests in its own process and trains each run in a child process (playground.jobs). This measures,
in one run, the two policies for sharing the cores:

- *before*: both processes with torch's default threads (every core) at the same CPU priority;
- *ours*: the server on `gpt.device.serve_in_foreground`'s threads, the run lowered by `train_in_background`
  (what app.py and playground.jobs do).

For each: the tokens/s of generating from the tiny preset (a person waiting on it), alone and while a child trains
`configs/tiny-2019.yaml` on the built-in corpus, and the child's steps/s while the generation runs against its steps/s
alone. The figures (2-core AMD EPYC, torch 2.13): before, generation kept 0.14x of its speed; ours, see the note
of the serving issue and this bench's output. --smoke: a quarter of a second per window, figures meaningless.
"""

from __future__ import annotations

import argparse
import multiprocessing
import tempfile
import threading
import time
from multiprocessing.synchronize import Event as StopFlag
from typing import Any

import torch

from gpt.config import SampleConfig, load_config, padded_vocab, resolve_config_path
from gpt.corpus import sample_corpus_path
from gpt.data import prepare
from gpt.device import cores, serve_in_foreground, train_in_background
from gpt.generate import stream
from gpt.model import GPT
from gpt.tokenizer import CharTokenizer
from gpt.trainer import Trainer

CTX = multiprocessing.get_context("spawn")  # a child with torch's defaults, as the fork server's are


def _train(background: bool, steps: Any, stop: StopFlag) -> None:
    """The child: train tiny-2019 until told to stop, keeping the steps taken in the shared value `steps`."""
    if background:
        train_in_background()
    cfg = load_config(resolve_config_path("tiny-2019"))
    cfg.train.max_steps, cfg.train.eval_interval, cfg.train.sample_interval = 1_000_000, 1_000_000, 0
    cfg.train.checkpoint_interval, cfg.train.log_interval = 0, 1
    data = prepare([sample_corpus_path()], tokenizer="char")
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(cfg, data, out, listeners=[lambda e: setattr(steps, "value", e.step)])

        def watch() -> None:
            stop.wait()
            trainer.stop()

        threading.Thread(target=watch, daemon=True).start()
        trainer.run()


def generation_speed(model: GPT, tokenizer: CharTokenizer, seconds: float) -> float:
    """Tokens/s of generating 100-token texts from `model`, one after another for `seconds`."""
    cfg = SampleConfig(max_new_tokens=100, temperature=0.8, top_k=40, seed=1)
    tokens, t0 = 0, time.perf_counter()
    while not tokens or time.perf_counter() - t0 < seconds:  # (at least one text)
        tokens += sum(1 for _ in stream(model, tokenizer, "ROMEO:", cfg))
    return tokens / (time.perf_counter() - t0)


def steps_per_s(steps: Any, seconds: float) -> float:
    first, t0 = steps.value, time.perf_counter()
    time.sleep(seconds)
    return (steps.value - first) / (time.perf_counter() - t0)


def measure(ours: bool, model: GPT, tokenizer: CharTokenizer, seconds: float,
            smoke: bool = False) -> tuple[float, float, float, float]:  # fmt: skip
    """(generation tokens/s alone, while training; training steps/s alone, while generating) under one policy.
    smoke: no warm-up text, and the child measured from its first step (not its fifth)."""
    torch.set_num_threads(cores())
    if ours:
        serve_in_foreground()
    if not smoke:
        generation_speed(model, tokenizer, 0)  # (the first text compiles the decoder's step)
    alone = generation_speed(model, tokenizer, seconds)
    steps, stop = CTX.Value("l", 0), CTX.Event()
    child = CTX.Process(target=_train, args=(ours, steps, stop), daemon=True)
    child.start()
    try:
        while steps.value < (1 if smoke else 5):  # past its start and first steps
            if not child.is_alive():
                raise RuntimeError("the training child ended before it trained")
            time.sleep(0.1)
        train_alone = steps_per_s(steps, seconds)
        first, t0 = steps.value, time.perf_counter()
        shared = generation_speed(model, tokenizer, seconds)
        train_shared = (steps.value - first) / (time.perf_counter() - t0)
    finally:
        stop.set()
        child.join(30)
    return alone, shared, train_alone, train_shared


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=8.0, help="each measuring window")
    ap.add_argument("--smoke", action="store_true", help="does it still run: quarter-second windows, no warm-up")
    args = ap.parse_args(argv)
    seconds = 0.25 if args.smoke else args.seconds
    cfg = load_config(resolve_config_path("tiny"))
    tokenizer = CharTokenizer.from_text(sample_corpus_path().read_text())
    cfg.model.vocab_size = padded_vocab(tokenizer.vocab_size)
    model = GPT(cfg.model).eval()
    for name, ours in (("before (every core, one priority)", False), ("ours (foreground/background)", True)):
        alone, shared, t_alone, t_shared = measure(ours, model, tokenizer, seconds, args.smoke)
        print(
            f"{name}: generation {alone:.0f} tok/s alone, {shared:.0f} while a run trains ({shared / alone:.2f}x); "
            f"the run {t_alone:.1f} steps/s alone, {t_shared:.1f} while generating "
            f"({t_shared / max(t_alone, 1e-9):.2f}x)",
            flush=True,
        )


if __name__ == "__main__":
    main()
