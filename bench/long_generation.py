"""Generation speed inside the context against past it (issue 20): a token past the context should cost about what
one inside it costs (the KV cache is refilled from half the window now and then, gpt.sampling.window_start).

    python -m bench.long_generation [--smoke] [--new-tokens 1000] [--runs 1] [--threads 0]

The model: a ~30M-parameter GPT (6 layers of 384, GPT-2's vocabulary, context 1,024) with random weights, sampled
as the app samples it (gpt.device.sampling_model: bf16 on a CPU with native bf16), top-k 50, batch 1. Inside: the
new tokens after a prompt that leaves just room for them in the context; past: the same number after a prompt that
fills the whole context. Tokens/s is the decode rate, from the first new token to the last (the prompt's own
forward pass is left out; the refills past the context are counted). --smoke: a tiny model, a few tokens, seconds.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from gpt.config import ModelConfig, SampleConfig
from gpt.device import sampling_model
from gpt.generate import stream
from gpt.model import GPT
from gpt.tokenizer import ByteTokenizer

FULL = ModelConfig(vocab_size=50304, block_size=1024, n_layer=6, n_head=6, n_embd=384)
SMOKE = ModelConfig(vocab_size=256, block_size=64, n_layer=2, n_head=2, n_embd=64)
TEXT = "ROMEO: But, soft! what light through yonder window breaks? It is the east, and Juliet is the sun. "


def decode_rate(model: GPT, prompt_tokens: int, new_tokens: int) -> float:
    """Tokens/s from the first new token to the last, after a prompt of `prompt_tokens` (one byte a token)."""
    prompt = (TEXT * (prompt_tokens // len(TEXT) + 1))[:prompt_tokens]
    cfg = SampleConfig(temperature=1.0, top_k=50, seed=0, max_new_tokens=new_tokens)
    times = [time.perf_counter() for _ in stream(model, ByteTokenizer(), prompt, cfg)][:new_tokens]
    return (len(times) - 1) / (times[-1] - times[0])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="a tiny model and a few tokens: runs in seconds")
    ap.add_argument("--new-tokens", type=int, default=None, help="tokens generated per case (default 1000; smoke 48)")
    ap.add_argument("--runs", type=int, default=1, help="runs per case, interleaved; the median is reported")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = SMOKE if args.smoke else FULL
    new = args.new_tokens or (48 if args.smoke else 1000)
    block = cfg.block_size
    if not 2 <= new < block:
        ap.error(f"--new-tokens must be between 2 and {block - 1} (the context is {block})")
    torch.manual_seed(0)
    model = sampling_model(GPT(cfg).eval())
    dtype = str(model.lm_head.weight.dtype).removeprefix("torch.")
    print(f"{model.num_params() / 1e6:.1f}M parameters ({dtype}), context {block}, {new} new tokens, top-k 50")
    decode_rate(model, block - new, min(new, 8))  # warm-up
    inside, past = [], []
    for _ in range(args.runs):
        inside.append(decode_rate(model, block - new, new))  # prompt + new tokens fill the context exactly
        past.append(decode_rate(model, block, new))  # every new token is past the context
    a, b = statistics.median(inside), statistics.median(past)
    print(f"inside the context: {a:8.1f} tokens/s  (prompt {block - new} tokens)")
    print(f"past the context:   {b:8.1f} tokens/s  (prompt {block} tokens)")
    print(f"past / inside:      {b / a:8.2f}")


if __name__ == "__main__":
    main()
