"""Training and generation speed of the presets on this machine.

    python -m bench [--presets tiny small] [--steps 30] [--json bench/results/latest.json] [--smoke]

Prints, per preset: training tokens/s (median of timed steps after warm-up), MFU against the fp32 matmul
ceiling measured here at start, and generation tokens/s (200 new tokens, KV cache, top-k, batch 1), each with the
defaults the trainer and sampler pick on this machine (gpt/device.py). --smoke: does it still run (the tiny preset, a
few steps and tokens, seconds; its figures mean nothing and go to a temporary file unless --json is given).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from gpt.cli import resolve_config_path
from gpt.config import SampleConfig, load_config, padded_vocab
from gpt.device import autocast, pick_dtype, sampling_model
from gpt.generate import stream
from gpt.model import GPT
from gpt.tokenizer import ByteTokenizer


def matmul_ceiling(dtype: torch.dtype, n: int = 2048, reps: int = 5) -> float:
    """FLOP/s of an n x n matmul: the best this machine does, the denominator of MFU."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t)
    return 2 * n**3 / min(times)


def train_speed(preset: str, steps: int, warmup: int = 5) -> dict[str, float]:
    cfg = load_config(resolve_config_path(preset))
    cfg.model.vocab_size = padded_vocab(65 if cfg.data.tokenizer == "char" else 50257)
    torch.manual_seed(0)
    model = GPT(cfg.model)
    opts = model.optimizers(cfg.train, "cpu")  # the preset's: AdamW, or AdamW and Muon
    cpu = torch.device("cpu")
    amp = autocast(cpu, pick_dtype("auto", cpu))
    B, T = cfg.train.batch_size, cfg.model.block_size
    x = torch.randint(0, cfg.model.vocab_size, (B, T))
    times = []
    for i in range(steps + warmup):
        t = time.perf_counter()
        with amp:
            _, loss = model(x, x)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        for opt in opts:
            opt.step()
            opt.zero_grad(set_to_none=True)
        if i >= warmup:  # warm-up steps are not timed
            times.append(time.perf_counter() - t)
    step = statistics.median(times)
    return {"train_tokens_per_s": B * T / step, "flops_per_s": model.flops_per_token() * B * T / step}


def generation_speed(preset: str, new_tokens: int = 200, repeats: int = 3) -> dict[str, float]:
    cfg = load_config(resolve_config_path(preset))
    cfg.model.vocab_size = 256
    model = sampling_model(GPT(cfg.model).eval())
    sc = SampleConfig(max_new_tokens=new_tokens, top_k=40, seed=0)
    runs, first = [], []
    for _ in range(repeats):
        t = time.perf_counter()
        n = 0
        for n, _tok in enumerate(stream(model, ByteTokenizer(), "0123456789", sc), start=1):
            if n == 1:
                first.append(time.perf_counter() - t)
        runs.append(n / (time.perf_counter() - t))
    return {"gen_tokens_per_s": statistics.median(runs), "first_token_ms": 1000 * statistics.median(first)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", nargs="+", default=["tiny", "small"])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--json", default=None, help="where the figures go (default bench/results/latest.json)")
    ap.add_argument("--smoke", action="store_true", help="does it still run: tiny preset, 2 steps, 20 tokens")
    args = ap.parse_args()
    if args.smoke:
        args.presets, args.steps = ["tiny"], 2
    json_path = args.json or (Path(tempfile.mkdtemp()) / "latest.json" if args.smoke else "bench/results/latest.json")
    warmup, new_tokens, repeats = (1, 20, 1) if args.smoke else (5, 200, 3)
    ceiling = matmul_ceiling(torch.float32, *((256, 2) if args.smoke else ()))
    print(f"threads {torch.get_num_threads()} | fp32 matmul ceiling {ceiling / 1e9:.0f} GFLOP/s")
    rows = []
    for preset in args.presets:
        train, gen = train_speed(preset, args.steps, warmup), generation_speed(preset, new_tokens, repeats)
        row = {"preset": preset, **train, **gen}
        row["mfu_fp32"] = row["flops_per_s"] / ceiling
        rows.append(row)
        print(
            f"{preset:6s} train {row['train_tokens_per_s']:9,.0f} tok/s  MFU {row['mfu_fp32']:5.1%} | "
            f"generate {row['gen_tokens_per_s']:6,.0f} tok/s, first token {row['first_token_ms']:.1f} ms"
        )
    out = Path(json_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"threads": torch.get_num_threads(), "ceiling_fp32": ceiling, "rows": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
