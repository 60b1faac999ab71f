"""Our speed against a reference measured in the same run: Hugging Face `transformers`' GPT2LMHeadModel (and, for
training with --device cuda, a nanoGPT-style model).

    python -m bench.compare [--threads 2] [--runs 5] [--quick] [--smoke] [--cases train,generate,prepare,app]
                            [--device cpu|cuda]

Same shapes, same weights (copied through gpt.interop), same data and AdamW settings; runs interleaved
(ours, reference, ours, ...) after warm-up, medians of --runs. Cases: training tokens/s at the tiny and small
shapes (with MFU against the fp32 and bf16 matmul ceilings measured at start), generation tokens/s and time to
first token (200 new tokens from a 10-token prompt, top-k 50, KV cache, batch 1) at the tiny and GPT-2 124M
shapes (at tiny also with every sampling option on, and ours also with its static decode step off: gpt.decode's
compiled step against the eager path, in the same run; the compile is waited for before timing, and its time
printed), data preparation MB/s and peak RSS on a 200 MB corpus (GPT-2 BPE and char), and the app's slider change
to first token (bench/app_latency.py).

Ours runs with the defaults the trainer and sampler pick on this machine (on a CPU with native bf16: bf16 autocast
for training, bf16 weights for sampling from large models). The reference runs as its users run it, in fp32; where
our dtype differs, it also runs in ours, and that figure is printed too. `transformers` is a bench-only
dependency (requirements-dev.txt). Results go to --json (default bench/results/compare.json).

--smoke: does it still run, every case in seconds (tiny shapes only, one timed run and no warm-up, 10 new tokens, one
pair of generation models for both samplings, a 1 MB corpus, two app requests); its figures mean nothing and go to a
temporary file unless --json is given.

--device cpu (the default) runs the cases above. `--cases nanogpt` (CPU) adds training ms/step at the tiny shape, ours
against the nanoGPT-style reference (bench/nanogpt_ref.py, nanoGPT's model.py architecture), both eager.

--device cuda runs the GPU cases instead, all in one run, interleaved, medians of --runs, ratios ours / reference
(for ms/step below 1 is ours faster, for tok/s above 1):
- train (or nanogpt): ms per optimizer step against bench/nanogpt_ref.py, same shape and data, each its own init.
  Ours as gpt/trainer.py runs it (`GPT.optimizers` with TrainConfig's defaults, `pick_dtype("auto")`: bf16 autocast
  on CUDA, torch.compile when the case says compiled); the reference as nanoGPT's train.py (fused AdamW, lr 6e-4,
  betas 0.9/0.95, bf16 autocast). At the GPT-2 124M shape (vocab 50304, block 1024, 12 layers, 12 heads, 768 wide,
  batch 12) three cases: each with its defaults (nanoGPT compiled, ours eager), both eager, both compiled; at
  nanoGPT's shakespeare_char shape (vocab 65, block 256, 6 layers, 6 heads, 384 wide, batch 64) both compiled, with
  dropout 0.0 in both (nanoGPT's config uses 0.2; 0 is the same work for both). 10 steps between
  torch.cuda.synchronize() calls per timing; TF32 is left at torch's default in both (nanoGPT's train.py turns it
  on; under bf16 autocast it changes little).
- generate: greedy decoding at batch 1 at the 124M shape, tokens/s for 200 new tokens from a 10-token prompt, in
  fp32 and in bf16: ours (`gpt.generate.stream`, the model moved to the GPU) against Hugging Face `generate` on the
  same weights with its dynamic cache (the ratio), with cache_implementation="static" and with static cache +
  torch.compile(model.forward, mode="reduce-overhead", fullgraph=True), HF's documented recipe (transformers'
  own automatic compile of static-cache generation is switched off in both, so each figure is what it says).
Without CUDA each of these prints one line saying it was skipped (exit 0). --smoke runs them at tiny shapes, one step
and one timed run each. The figures go to the same JSON, with "device" and "gpu" added.
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from bench.__main__ import matmul_ceiling
from gpt import decode
from gpt.config import ModelConfig, SampleConfig, TrainConfig
from gpt.device import autocast, pick_dtype, sampling_model
from gpt.generate import stream
from gpt.interop import model_to_hf_config, ours_to_hf_state
from gpt.model import GPT
from gpt.sampling import sampling_vocab
from gpt.tokenizer import ByteTokenizer

TRAIN_SHAPES = {
    "tiny": (ModelConfig(vocab_size=65, block_size=64, n_layer=4, n_head=4, n_embd=128), 12),
    "small": (ModelConfig(vocab_size=50304, block_size=256, n_layer=6, n_head=6, n_embd=384), 12),
}
GEN_SHAPES = {  # tiny's context is 256 here: the reference cannot generate past its context (10 + 200 > 64)
    "tiny": ModelConfig(vocab_size=65, block_size=256, n_layer=4, n_head=4, n_embd=128),
    "gpt2-124M": ModelConfig(vocab_size=50257, block_size=1024, n_layer=12, n_head=12, n_embd=768),
}


def twins(cfg: ModelConfig) -> tuple[GPT, Any]:
    """Our model and a GPT2LMHeadModel with the same weights."""
    import transformers

    torch.manual_seed(0)
    ours = GPT(cfg)
    hf_cfg = {k: v for k, v in model_to_hf_config(cfg, ByteTokenizer()).items() if k not in ("architectures",)}
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(**hf_cfg))
    hf.load_state_dict(ours_to_hf_state(ours), strict=False)
    return ours, hf


def interleaved(fns: dict[str, Callable[[], float]], runs: int, warmup: int = 2) -> dict[str, float]:
    """Median of `runs` timings each, alternating between the functions; each fn returns its own measure."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    out: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(runs):
        for k, fn in fns.items():
            out[k].append(fn())
    return {k: statistics.median(v) for k, v in out.items()}


def train_case(cfg: ModelConfig, batch: int, runs: int, warmup: int = 2) -> dict[str, float]:
    """One optimizer step, timed: ours with the trainer's own defaults on this machine (compute dtype, fused AdamW);
    the reference as users run it (fp32) and, for comparison, under the same autocast as ours."""
    ours, hf = twins(cfg)
    cpu = torch.device("cpu")
    dtype = pick_dtype("auto", cpu)
    x = torch.randint(0, cfg.vocab_size, (batch, cfg.block_size))
    opt_ours = ours.optimizer(1e-4, 0.1, (0.9, 0.95), "cpu")
    opt_hf = torch.optim.AdamW(hf.parameters(), lr=1e-4, weight_decay=0.1, betas=(0.9, 0.95))

    def step(loss_fn: Callable[[], torch.Tensor], model: torch.nn.Module, opt: torch.optim.Optimizer,
             amp: torch.dtype = torch.float32) -> float:  # fmt: skip
        t = time.perf_counter()
        with autocast(cpu, amp):
            loss = loss_fn()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return batch * cfg.block_size / (time.perf_counter() - t)

    fns = {
        "ours": lambda: step(lambda: ours(x, x)[1], ours, opt_ours, dtype),  # type: ignore[return-value,arg-type]
        "reference": lambda: step(lambda: hf(input_ids=x, labels=x).loss, hf, opt_hf),
    }
    if dtype != torch.float32:
        fns["reference_same_dtype"] = lambda: step(lambda: hf(input_ids=x, labels=x).loss, hf, opt_hf, dtype)
    med = interleaved(fns, runs, warmup)
    return {**med, "flops_per_token": ours.flops_per_token(), "dtype": str(dtype).replace("torch.", "")}  # type: ignore[dict-item]


# "top-k": the case as it always was; "every option": every sampling setting on (HF has no presence or frequency
# penalty: it runs without those two)
SAMPLING: dict[str, dict[str, Any]] = {
    "top-k": dict(top_k=50),
    "every option": dict(top_k=50, top_p=0.9, min_p=0.05, repetition_penalty=1.2),
}
OURS_ONLY: dict[str, Any] = dict(presence_penalty=0.1, frequency_penalty=0.1)


def generation_case(cfg: ModelConfig, runs: int, new_tokens: int, sampling: str = "top-k", warmup: int = 1,
                    models: tuple[GPT, Any] | None = None) -> dict[str, Any]:  # fmt: skip
    """Ours as the app and CLI sample (`sampling_model`: bf16 weights for large models on CPUs with native bf16;
    the static decode step, compiled, where gpt.decode compiles it: its compile is waited for before timing and
    reported, and the eager path is timed too, as "ours_eager"); the reference's generate() as users run it (fp32)
    and, where ours is bf16, in bf16 too. `models`: the twins to use (--smoke: one pair, one compile, for both
    samplings), else new ones."""
    ours, hf = models or twins(cfg)
    ours = sampling_model(ours.eval())
    hf.eval()
    tok = ByteTokenizer() if cfg.vocab_size <= 256 else _IdTokenizer(cfg.vocab_size)
    state = decode.warm_up(ours, sampling_vocab(ours, tok), wait=True)
    dtype = ours.lm_head.weight.dtype
    hf_same = copy.deepcopy(hf).to(dtype) if dtype != torch.float32 else None
    prompt = tok.encode("0123456789")  # 10 tokens for both
    options = SAMPLING[sampling]
    ours_options = {**options, **(OURS_ONLY if sampling == "every option" else {})}

    def ours_run(n: int, static: bool = True) -> float:  # tokens/s for n > 1; for n = 1, the seconds to the first token
        decode.ENABLED = static
        try:
            t = time.perf_counter()
            cfg_ = SampleConfig(max_new_tokens=n, seed=0, **ours_options)
            count = sum(1 for _ in stream(ours, tok, "0123456789", cfg_))
            return count / (time.perf_counter() - t) if n > 1 else time.perf_counter() - t
        finally:
            decode.ENABLED = True

    def hf_run(model: Any, n: int) -> float:
        ids = torch.tensor([prompt])
        t = time.perf_counter()
        with torch.no_grad():
            out = model.generate(ids, do_sample=True, max_new_tokens=n, min_new_tokens=n, pad_token_id=0, **options)
        return (out.shape[1] - len(prompt)) / (time.perf_counter() - t) if n > 1 else time.perf_counter() - t

    def cases(n: int) -> dict[str, Callable[[], float]]:
        fns = {"ours": lambda: ours_run(n), "reference": lambda: hf_run(hf, n)}
        if state is not None:  # (where it does not compile, the eager path is what "ours" runs)
            fns["ours_eager"] = lambda: ours_run(n, static=False)
        if hf_same is not None:
            fns["reference_same_dtype"] = lambda: hf_run(hf_same, n)
        return fns

    tps = interleaved(cases(new_tokens), runs, warmup)
    ttft = interleaved(cases(1), runs, warmup)
    compiled = {} if state is None else {"compile_s": state.seconds, "compile_error": state.error}
    return {**tps, **{f"{k}_ttft_ms": 1000 * v for k, v in ttft.items()}, **compiled,
            "dtype": str(dtype).replace("torch.", "")}  # fmt: skip


# --device cuda: nanoGPT's two published shapes (GPT-2 124M, config/train_gpt2.py's batch 12; shakespeare_char)
GPU_TRAIN = {
    "gpt2-124M": (ModelConfig(vocab_size=50304, block_size=1024, n_layer=12, n_head=12, n_embd=768), 12),
    "shakespeare-char": (ModelConfig(vocab_size=65, block_size=256, n_layer=6, n_head=6, n_embd=384), 64),
}
GPU_SMOKE_TRAIN = {  # --smoke: the same cases at tiny shapes
    "gpt2-124M": ("tiny", *TRAIN_SHAPES["tiny"]),
    "shakespeare-char": ("tiny-char", ModelConfig(vocab_size=65, block_size=32, n_layer=2, n_head=2, n_embd=64), 8),
}
# (case, ours compiled, reference compiled): each with its defaults (nanoGPT compiles, our trainer does not),
# both eager, both compiled
GPU_TRAIN_CASES = {
    "gpt2-124M": [("defaults", False, True), ("eager", False, False), ("compiled", True, True)],
    "shakespeare-char": [("compiled", True, True)],
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def nanogpt_train_case(cfg: ModelConfig, batch: int, runs: int, warmup: int, device: torch.device,
                       ours_compile: bool, ref_compile: bool, steps: int) -> dict[str, Any]:  # fmt: skip
    """ms per optimizer step, ours against the nanoGPT-style reference (bench/nanogpt_ref.py): same shape, same data
    (dropout 0 in both), each initialised its own way. Ours as gpt/trainer.py runs it (`GPT.optimizers` with
    TrainConfig's defaults, `pick_dtype("auto")` autocast, a grad scaler for fp16, `torch.compile` when asked); the
    reference as nanoGPT's train.py does (its AdamW settings, bf16 autocast on CUDA, none on CPU). Each timed call
    runs `steps` steps between two synchronizations."""
    from bench import nanogpt_ref as ref_lib

    torch._dynamo.reset()  # each case compiles its own models afresh
    if device.type == "cuda":  # the previous case's models are gone: give their memory back before this one's
        gc.collect()
        torch.cuda.empty_cache()
    torch.manual_seed(0)
    tc = TrainConfig(batch_size=batch, compile="on" if ours_compile else "off")
    ours_dtype = pick_dtype(tc.dtype, device)
    ours = GPT(cfg).to(device).train()
    ours_opts = ours.optimizers(tc, device.type)
    ref_cfg = ref_lib.RefConfig(block_size=cfg.block_size, vocab_size=cfg.vocab_size, n_layer=cfg.n_layer,
                                n_head=cfg.n_head, n_embd=cfg.n_embd, dropout=0.0, bias=True)  # fmt: skip
    ref = ref_lib.NanoGPT(ref_cfg).to(device).train()
    ref_opt = ref.configure_optimizers(ref_lib.WEIGHT_DECAY, ref_lib.LEARNING_RATE, ref_lib.BETAS, device.type)
    ref_dtype = ref_lib.train_dtype(device)
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, cfg.vocab_size, (batch, cfg.block_size), generator=gen).to(device)
    y = torch.randint(0, cfg.vocab_size, (batch, cfg.block_size), generator=gen).to(device)

    def stepper(model: torch.nn.Module, opts: list[torch.optim.Optimizer], dtype: torch.dtype, clip: float,
                compile: bool) -> Callable[[], float]:  # fmt: skip
        run = torch.compile(model) if compile else model
        scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
        params = list(model.parameters())

        def timed() -> float:
            _sync(device)
            t = time.perf_counter()
            for _ in range(steps):
                with autocast(device, dtype):
                    _, loss = run(x, y)
                scaler.scale(loss).backward()
                for opt in opts:
                    scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(params, clip)
                for opt in opts:
                    scaler.step(opt)
                scaler.update()
                for opt in opts:
                    opt.zero_grad(set_to_none=True)
            _sync(device)
            return 1000 * (time.perf_counter() - t) / steps

        return timed

    fns = {
        "ours": stepper(ours, ours_opts, ours_dtype, tc.grad_clip if tc.grad_clip > 0 else float("inf"), ours_compile),
        "reference": stepper(ref, [ref_opt], ref_dtype, ref_lib.GRAD_CLIP, ref_compile),
    }
    med = interleaved(fns, runs, warmup)
    name = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}
    return {**med, "dtype": name[ours_dtype], "reference_dtype": name[ref_dtype], "ours_compiled": ours_compile,
            "reference_compiled": ref_compile, "tokens_per_step": batch * cfg.block_size}  # fmt: skip


def gpu_decode_case(cfg: ModelConfig, runs: int, new_tokens: int, dtype: torch.dtype, device: torch.device,
                    compiled: bool = True) -> dict[str, Any]:  # fmt: skip
    """Greedy decoding at batch 1, tokens/s: ours (`stream`, the model moved to the device, in `dtype`) against
    Hugging Face `generate` on the same weights (`twins`) with its default dynamic cache, with
    cache_implementation="static" (transformers' automatic compile of static-cache generation switched off:
    disable_compile=True), and, with `compiled`, static cache + torch.compile(model.forward, mode="reduce-overhead",
    fullgraph=True), HF's documented recipe (its own automatic compile off, so that one compile is measured)."""
    ours, hf = twins(cfg)
    ours = ours.to(device=device, dtype=dtype).eval()
    hf = hf.to(device=device, dtype=dtype).eval()
    tok = ByteTokenizer() if cfg.vocab_size <= 256 else _IdTokenizer(cfg.vocab_size)
    prompt = tok.encode("0123456789")  # 10 tokens for both
    ids = torch.tensor([prompt], device=device)
    greedy = SampleConfig(temperature=0.0, max_new_tokens=new_tokens, seed=0)

    def ours_run() -> float:
        _sync(device)
        t = time.perf_counter()
        count = sum(1 for _ in stream(ours, tok, "0123456789", greedy))
        _sync(device)
        return count / (time.perf_counter() - t)

    def hf_run(model: Any, **kw: Any) -> Callable[[], float]:
        def run() -> float:
            _sync(device)
            t = time.perf_counter()
            with torch.no_grad():
                n = new_tokens
                out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=n,
                                     min_new_tokens=n, pad_token_id=0, **kw)  # fmt: skip
            _sync(device)
            return (out.shape[1] - len(prompt)) / (time.perf_counter() - t)

        return run

    fns = {
        "ours": ours_run,
        "reference": hf_run(hf),
        "reference_static": hf_run(hf, cache_implementation="static", disable_compile=True),
    }
    if compiled:
        hf_c = copy.deepcopy(hf)
        hf_c.forward = torch.compile(hf_c.forward, mode="reduce-overhead", fullgraph=True)
        fns["reference_static_compiled"] = hf_run(hf_c, cache_implementation="static", disable_compile=True)
    med = interleaved(fns, runs, 2)
    name = str(dtype).replace("torch.", "")
    return {**med, "dtype": name, "reference_dtype": name}


class _IdTokenizer(ByteTokenizer):
    """Token ids as they are (no text work): generation speed of the model, not of decoding."""

    def __init__(self, vocab_size: int) -> None:
        self.vocab_size = vocab_size

    def decode_bytes(self, ids: list[int]) -> bytes:
        return b"x" * len(ids)


_PREPARE_CHILD = """
import json, sys, tempfile, time
from gpt.data import prepare
t = time.perf_counter()
prepare([sys.argv[1]], tokenizer=sys.argv[2], out=tempfile.mkdtemp(prefix="bench-prep-"))
seconds = time.perf_counter() - t
hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM"))
print(json.dumps({"seconds": seconds, "peak_rss_mb": hwm / 1024}))
"""


def prepare_case(tokenizer: str, corpus: Path) -> dict[str, float]:
    """prepare() in a fresh process (cold cache): MB/s of the preparation and the process's peak RSS (VmHWM)."""
    done = subprocess.run([sys.executable, "-c", _PREPARE_CHILD, str(corpus), tokenizer], check=True,
                          capture_output=True, text=True)  # fmt: skip
    r = json.loads(done.stdout.strip().splitlines()[-1])
    return {"mb_per_s": corpus.stat().st_size / 1e6 / r["seconds"], **r}


def big_corpus(mb: int) -> Path:
    from gpt.corpus import sample_corpus_path

    path = Path(tempfile.gettempdir()) / f"bench-corpus-{mb}mb.txt"
    if not path.is_file() or path.stat().st_size < mb * 1e6:
        text = sample_corpus_path().read_text(encoding="utf-8")
        with open(path, "w", encoding="utf-8") as f:
            while f.tell() < mb * 1e6:
                f.write(text)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (default: all cores)")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="fewer new tokens, no 124M generation, 20 MB corpus")
    cases_help = (
        "comma-separated subset to run (default train,generate,prepare,app; with --device cuda train,generate); "
        "nanogpt: on CPU, training ours against the nanoGPT-style reference, eager, tiny shape"
    )
    ap.add_argument("--cases", default=None, help=cases_help)
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="cpu (default) | cuda: the GPU cases")
    ap.add_argument("--smoke", action="store_true", help="does it still run: every case, tiny sizes, seconds")
    ap.add_argument("--json", default=None, help="where the figures go (default bench/results/compare.json)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.smoke:
        args.runs, args.quick = 1, True
    json_path = args.json or (Path(tempfile.mkdtemp()) / "compare.json" if args.smoke else "bench/results/compare.json")
    cuda = args.device == "cuda"
    gpu = torch.cuda.get_device_name() if cuda and torch.cuda.is_available() else None
    c32 = c16 = 0.0
    if cuda:
        print(f"device cuda: {gpu or 'not available (no CUDA in this torch build or no GPU)'}", flush=True)
    else:
        ceiling_size = (256, 2) if args.smoke else ()
        c32, c16 = matmul_ceiling(torch.float32, *ceiling_size), matmul_ceiling(torch.bfloat16, *ceiling_size)
        print(f"threads {torch.get_num_threads()} | matmul ceiling fp32 {c32 / 1e9:.0f}, bf16 {c16 / 1e9:.0f} GFLOP/s")
    rows: list[dict[str, Any]] = []

    def report(case: str, unit: str, r: dict[str, Any], extra: str = "", fmt: str = ",.0f") -> None:
        ratio = r["ours"] / r["reference"]
        rows.append({"case": case, "unit": unit, **r, "ratio": ratio})
        same = r.get("reference_same_dtype")
        same_txt = f" | reference in {r['dtype']} {same:,.0f} ({r['ours'] / same:.2f}x)" if same else ""
        ref_dtype = r.get("reference_dtype", "float32")
        print(f"{case:20s} ours {r['ours']:9{fmt}} {unit} ({r['dtype']}) | reference {r['reference']:9{fmt}} "
              f"({ref_dtype}) | {ratio:5.2f}x{same_txt} {extra}", flush=True)  # fmt: skip

    def skipped(case: str) -> bool:
        """A CUDA case on a machine without CUDA: one line saying so (and a row in the JSON)."""
        if gpu is not None:
            return False
        rows.append({"case": case, "skipped": "CUDA is not available"})
        print(f"{case}: skipped, CUDA is not available", flush=True)
        return True

    # (the smoke leaves out the app case unless asked: `python -m bench.app_latency --smoke` runs the same measure)
    every = "train,generate" if cuda else "train,generate,prepare" if args.smoke else "train,generate,prepare,app"
    cases = set((args.cases or every).split(","))
    for name, (cfg, batch) in TRAIN_SHAPES.items() if "train" in cases and not cuda else ():
        if args.smoke and name != "tiny":
            continue
        r = train_case(cfg, batch, args.runs, 0 if args.smoke else 2)
        flops = r["ours"] * r.pop("flops_per_token")
        report(f"train {name}", "tok/s", r, f"| MFU {flops / c32:.0%} of fp32, {flops / c16:.0%} of bf16")
    if "nanogpt" in cases and not cuda:  # the nanoGPT-style reference on CPU: both eager, tiny shape
        cfg, batch = TRAIN_SHAPES["tiny"]
        r = nanogpt_train_case(cfg, batch, args.runs, 0 if args.smoke else 2, torch.device("cpu"), False, False,
                               1 if args.smoke else 3)  # fmt: skip
        report("train tiny nanogpt eager", "ms/step", r, f"| ours {r['tokens_per_step'] / r['ours'] * 1000:,.0f} tok/s",
               ".1f")  # fmt: skip
    for shape, variants in GPU_TRAIN_CASES.items() if cuda and cases & {"train", "nanogpt"} else ():
        name, cfg, batch = GPU_SMOKE_TRAIN[shape] if args.smoke else (shape, *GPU_TRAIN[shape])
        for variant, ours_compile, ref_compile in variants:
            case = f"train {name} {variant}"
            if skipped(case):
                continue
            r = nanogpt_train_case(cfg, batch, args.runs, 1 if args.smoke else 2, torch.device("cuda"),
                                   ours_compile, ref_compile, 1 if args.smoke else 10)  # fmt: skip
            how = f"ours {'compiled' if ours_compile else 'eager'}, nanoGPT {'compiled' if ref_compile else 'eager'}"
            report(case, "ms/step", r, f"| {how} | ours {r['tokens_per_step'] / r['ours'] * 1000:,.0f} tok/s", ".1f")
    for dtype in (torch.float32, torch.bfloat16) if cuda and "generate" in cases else ():
        name = "tiny" if args.smoke else "gpt2-124M"
        case = f"decode {name} {str(dtype).replace('torch.', '')}"
        if skipped(case):
            continue
        r = gpu_decode_case(GEN_SHAPES[name], args.runs, 10 if args.smoke else 200, dtype, torch.device("cuda"))
        report(case, "tok/s", r, f"| HF static {r['reference_static']:,.0f} ({r['ours'] / r['reference_static']:.2f}x)"
               f" | HF static + compile {r['reference_static_compiled']:,.0f} "
               f"({r['ours'] / r['reference_static_compiled']:.2f}x)")  # fmt: skip
    for name, cfg in GEN_SHAPES.items() if "generate" in cases and not cuda else ():
        if args.quick and name != "tiny":
            continue
        shared = twins(cfg) if args.smoke else None  # (--smoke: one pair of models, one compile, no warm-up)
        for sampling in SAMPLING if name == "tiny" else ["top-k"]:
            r = generation_case(cfg, args.runs, 10 if args.smoke else 50 if args.quick else 200, sampling,
                                0 if args.smoke else 1, shared)  # fmt: skip
            static = ""
            if "ours_eager" in r:
                built = (f"compile failed ({r['compile_error']}) " if r["compile_error"] else
                         f"compiled in {r['compile_s']:.1f} s (before timing) ")  # fmt: skip
                ratio = r["ours"] / r["ours_eager"]
                static = f"| eager (static step off) {r['ours_eager']:,.0f}: static {ratio:.2f}x, {built}"
            report(f"generate {name} ({sampling})", "tok/s", r,
                   f"{static}| first token {r['ours_ttft_ms']:.1f} ms vs {r['reference_ttft_ms']:.1f}")  # fmt: skip
    for tokenizer in ("gpt2", "char") if "prepare" in cases else ():
        corpus = big_corpus(1 if args.smoke else 20 if args.quick else 200)
        r = prepare_case(tokenizer, corpus)
        rows.append({"case": f"prepare {tokenizer}", **r})
        print(f"prepare {tokenizer:20s} {r['mb_per_s']:6.1f} MB/s, peak RSS {r['peak_rss_mb']:.0f} MB")
    if "app" in cases:
        from bench.app_latency import measure

        requests = 2 if args.smoke else 20
        r = measure(requests, args.smoke)
        rows.append({"case": "app first token", "unit": "ms", **r})
        print(f"app: slider change to first token, median of {requests}: {r['ours']:.1f} ms (p90 {r['p90']:.1f}) | "
              f"the library in-process {r['reference']:.1f} ms", flush=True)  # fmt: skip
    out = Path(json_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    head: dict[str, Any] = {"device": "cuda", "gpu": gpu} if cuda else {}
    ceilings = {"ceiling_fp32": None, "ceiling_bf16": None} if cuda else {"ceiling_fp32": c32, "ceiling_bf16": c16}
    out.write_text(json.dumps({**head, "threads": torch.get_num_threads(), **ceilings, "rows": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
