"""How big a model is and how long training it takes on this machine, before anything is built or trained.

The Train tab shows these next to its form, `gpt-train` prints them before it starts, and the app's queue uses them
for the wait of runs that have not started yet.
"""

from __future__ import annotations

import functools
import time

import torch

from gpt.config import Config, ModelConfig
from gpt.device import autocast, pick_device, pick_dtype
from gpt.model import GPT

OPTIMIZER_SHARE = 0.95  # of a training step, forward and backward are the rest (`python -m bench.compare` profile)


def padded_vocab(vocab_size: int) -> int:
    """Large vocabularies are padded to a multiple of 64 (faster matmuls); the sampler never picks the padding."""
    return vocab_size if vocab_size <= 1024 else (vocab_size + 63) // 64 * 64


def model_size(cfg: Config, vocab_size: int) -> tuple[int, float]:
    """(parameters, training FLOPs per token) of the model `cfg` describes, for a tokenizer of `vocab_size`."""
    model_cfg = ModelConfig(**{**vars(cfg.model), "vocab_size": padded_vocab(vocab_size)})
    with torch.device("meta"):  # shapes only: no memory, even for absurd sizes
        model = GPT(model_cfg)
    return model.num_params(), model.flops_per_token()


@functools.lru_cache(maxsize=1)
def machine_flops() -> float:
    """The FLOP/s training reaches on this machine, measured on a few steps of the tiny preset's shape with the
    trainer's own device and dtype. A matmul benchmark alone misleads: on CPUs with AMX a bf16 matmul runs at
    several TFLOP/s, while a small model's step is bound by its other work (GELU, attention, the optimizer)."""
    device = pick_device()
    dtype = pick_dtype("auto", device)
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=128, block_size=64, n_layer=4, n_head=4, n_embd=128, dropout=0.0)
    model = GPT(cfg).to(device)
    x = torch.randint(0, cfg.vocab_size, (12, cfg.block_size), device=device)
    best = float("inf")
    for i in range(8):  # the first steps warm up; the best of the rest, so a busy moment is not taken as the speed
        t = time.perf_counter()
        with autocast(device, dtype):
            _, loss = model(x, x)
        loss.backward()  # type: ignore[union-attr]
        model.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= 3:
            best = min(best, time.perf_counter() - t)
    # Forward and backward only: the optimizer (~5% of a step here) would pull torch._dynamo (~100 MB) into the
    # web server's process, which measures this at start-up.
    return model.flops_per_token() * x.numel() / (best / OPTIMIZER_SHARE)


def train_seconds(cfg: Config, flops_per_token: float, steps: int | None = None) -> float:
    """Seconds to train `steps` steps (default: all of them) of a model with `flops_per_token` on this machine."""
    steps = cfg.train.max_steps if steps is None else steps
    tokens = cfg.train.batch_size * cfg.model.block_size * cfg.train.grad_accum
    return steps * flops_per_token * tokens / machine_flops()
