"""How big a model is and how long training it takes on this machine, before anything is built or trained.

The Train tab shows these next to its form, `gpt-train` prints them before it starts, the app's queue uses them for
the wait of runs that have not started yet, and the trainer's ETA uses them for what it has not timed yet.

How long: one FLOP rate mispredicts (it was 2-2.5x optimistic). A small model's step is bound by per-operation
overhead and by its elementwise work (GELU, LayerNorm, casts, the optimizer) more than by its FLOPs, and a run does
more than steps: evaluations, samples, checkpoint saves. So each kind of work the trainer does costs a linear
combination of the shape's `FEATURES` (per call, per layer, per parameter, per activation, per matmul FLOP, per
attention term, per logit), whose non-negative coefficients are fitted to the trainer's own code
(`Trainer._train_step`, `estimate_val_loss`, `sample_text`, `_save`) timed on a few small shapes, taking turns
(`measure`, a few seconds); `plan` counts what a run will do. Each finished run records how long it took against its
estimate, and the next estimates here (app or CLI: `where`) are corrected by the median of the last ones
(`run_factor`): what the model cannot know, such as a browser on the same cores drawing the live charts.

The calibration runs once per machine (CPU or GPU model, threads, torch version, dtype) and is cached in the cache
directory; the estimate is the median of the last `KEEP` calibrations, so one taken at a busy moment does not make it
jump between starts of the app. The web server must not measure in its own process: AdamW's constructor imports
torch._dynamo (~100 MB, 1.5 s), and its threads have used torch, which slows GNU OpenMP (see playground/jobs.py).
There it runs in a child process (`python -m gpt.estimate`), in the background (`machine_flops` at start-up).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import json
import logging
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gpt.config import Config, ModelConfig, TrainConfig

log = logging.getLogger(__name__)

FEATURES = ("call", "layer", "param", "activation", "matmul", "attention", "logit")
KINDS = ("step", "first", "eval", "token")  # a training step, the first one's extra, an eval forward, a sampled token
KEEP = 5  # calibrations kept per machine; the estimate is their median
REFRESH_S = 7 * 24 * 3600  # a full cache older than this is measured again (in the background) at the app's start
GAP_S = 3600  # ... and one not full yet, once its newest calibration is older than this
WAIT_S = 5.0  # how long an estimate waits for the calibration started in the background before using the defaults
QUIET_S = 60.0  # how long the background calibration waits for idle processors (the app's own start-up, a run)
CACHE_VERSION = 1
CHILD_TIMEOUT_S = 120

# The shapes `measure` trains a few steps of, each weighing on another feature (n_layer, n_embd, n_head, block_size,
# batch_size, vocab): the bare call, layers, parameters, activations, FLOPs, logits.
SHAPES = (
    (1, 32, 2, 16, 2, 64),
    (8, 32, 2, 16, 2, 64),
    (1, 512, 8, 16, 2, 64),
    (2, 64, 4, 32, 32, 64),
    (1, 64, 4, 256, 16, 64),
    (2, 256, 4, 128, 8, 64),
    (1, 32, 2, 32, 8, 8192),
    (4, 128, 4, 64, 12, 80),  # the tiny preset, the most trained shape
)


def padded_vocab(vocab_size: int) -> int:
    """Large vocabularies are padded to a multiple of 64 (faster matmuls); the sampler never picks the padding."""
    return vocab_size if vocab_size <= 1024 else (vocab_size + 63) // 64 * 64


def model_size(cfg: Config, vocab_size: int) -> tuple[int, float]:
    """(parameters, training FLOPs per token) of the model `cfg` describes, for a tokenizer of `vocab_size`."""
    model_cfg = ModelConfig(**{**vars(cfg.model), "vocab_size": padded_vocab(vocab_size)})
    return _size(model_cfg)


def _size(model_cfg: ModelConfig) -> tuple[int, float]:
    return _size_of(tuple(sorted(vars(model_cfg).items())))


@functools.lru_cache(maxsize=256)
def _size_of(fields: tuple[tuple[str, Any], ...]) -> tuple[int, float]:
    """GPT(cfg).num_params() and .flops_per_token(), counted from the shapes (tests/test_estimate.py checks them
    against the model): building even a meta-device model runs its init through torch._refs, which imports
    torch._dynamo, and the web server calls this at every change of the form."""
    from gpt.model import mlp_width  # (a plain function: importing the module builds nothing)

    cfg = ModelConfig(**dict(fields))
    c, bias = cfg.n_embd, int(cfg.bias)
    if cfg.norm == "layernorm":  # a norm's gain (and offset with biases); RMSNorm's gain only with norm_gain
        norm = c + bias * c
    else:
        norm = int(cfg.norm_gain) * c
    qkv = (cfg.n_head + 2 * cfg.kv_heads) * cfg.head_dim  # grouped-query attention: fewer keys and values
    attn = (c + bias) * qkv + (c + bias) * c + (2 * cfg.head_dim if cfg.qk_norm and cfg.norm_gain else 0)
    hidden = mlp_width(cfg)
    fc = 2 * hidden if cfg.activation == "swiglu" else hidden  # SwiGLU's gate and value side by side
    mlp = (c + bias) * fc + (hidden + bias) * c
    block = 2 * norm + attn + mlp
    head = 0 if cfg.tie_head else cfg.vocab_size * c
    params = cfg.vocab_size * c + head + cfg.n_layer * block + norm  # the embedding (tied or not), blocks, ln_f
    return params, float(6 * params + 12 * cfg.n_layer * c * cfg.block_size)


# ----- the cost model ---------------------------------------------------------------------------------------------


def features(
    mc: ModelConfig, tokens: int, params: int | None = None, flops_per_token: float | None = None
) -> list[float]:
    """What a forward (and backward) over `tokens` tokens of the model `mc` weighs, in the order of `FEATURES`."""
    if params is None or flops_per_token is None:
        params, flops_per_token = _size(mc)
    width = tokens * mc.n_embd * mc.n_layer
    attention = width * mc.block_size  # causal attention over the context: 12 FLOPs each (flops_per_token)
    return [
        1.0,
        float(mc.n_layer),
        float(params),
        float(width),
        tokens * flops_per_token - 12.0 * attention,  # the matmuls: 6 per parameter and token
        float(attention),
        float(tokens * mc.vocab_size),
    ]


@dataclass(frozen=True)
class Costs:
    """Seconds per unit of each feature, for each kind of work (`KINDS`), and of a checkpoint save (per save, per
    byte). `spread`: how far the calibrations behind it disagree (relative), for information."""

    step: tuple[float, ...]
    first: tuple[float, ...]
    eval: tuple[float, ...]
    token: tuple[float, ...]
    save: tuple[float, float]
    spread: float = 0.0

    def seconds(self, kind: str, feats: Sequence[float]) -> float:
        return float(sum(c * f for c, f in zip(getattr(self, kind), feats, strict=True)))

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Costs:
        n = len(FEATURES)
        parts = {k: tuple(float(x) for x in d[k]) for k in KINDS}
        if any(len(v) != n or not all(math.isfinite(x) and x >= 0 for x in v) for v in parts.values()):
            raise ValueError("bad coefficients")
        save = tuple(float(x) for x in d["save"])
        if len(save) != 2 or not all(math.isfinite(x) and x >= 0 for x in save):
            raise ValueError("bad save coefficients")
        return cls(**parts, save=(save[0], save[1]), spread=float(d.get("spread", 0.0)))

    @classmethod
    def median(cls, many: Sequence[Costs]) -> Costs:
        """Coefficient by coefficient: one slow (busy) or odd calibration does not move it."""
        if len(many) == 1:
            return many[0]

        def med(kind: str) -> tuple[float, ...]:
            return tuple(statistics.median(vals) for vals in zip(*(getattr(c, kind) for c in many), strict=True))

        out = cls(**{k: med(k) for k in KINDS}, save=(med("save")[0], med("save")[1]))  # type: ignore[arg-type]
        # the spread of a tiny preset step's predictions, as a measure of how noisy the calibrations were
        tiny = features(ModelConfig(vocab_size=80), 12 * 64)
        preds = [c.seconds("step", tiny) for c in many]
        return dataclasses.replace(out, spread=(max(preds) - min(preds)) / max(statistics.median(preds), 1e-12))


# Coefficients measured on a 2-core Xeon (bf16 autocast, torch 2.13): what estimates use until this machine's own
# calibration is known, and the ratios the trainer's ETA scales to its measured pace.
DEFAULT_COSTS = Costs(
    step=(2.36e-3, 1.54e-3, 3.07e-9, 5.26e-8, 3.09e-13, 1.14e-10, 5.71e-9),
    first=(2.25e-2, 1.53e-3, 3.02e-9, 5e-8, 4.24e-13, 1.2e-10, 5.64e-9),
    eval=(5.77e-4, 4.72e-4, 6.9e-10, 1.93e-8, 0.0, 3.96e-11, 1.55e-9),
    token=(2.3e-4, 1.78e-4, 1.44e-10, 2.83e-7, 0.0, 0.0, 7e-8),
    save=(1e-2, 1.5e-9),
)


@dataclass(frozen=True)
class Plan:
    """What a run does after a given step: its training steps, evaluations, samples and checkpoint saves."""

    steps: int
    evals: int
    samples: int
    latest: int  # saves with the trainer state: every checkpoint_interval, and the last one
    best: int  # saves of the weights at an evaluation that improves (counted as if each one did)


def _multiples(after: int, last: int, every: int) -> int:
    """How many steps s with after < s <= last are multiples of `every`."""
    return max(0, last // every - after // every) if every > 0 else 0


def plan(tc: TrainConfig, after: int = 0) -> Plan:
    """What the trainer does for the steps after step `after` up to tc.max_steps (it mirrors `Trainer._run`): an
    evaluation every eval_interval and at the last step, a sample every sample_interval and at the last step, a
    checkpoint every checkpoint_interval except at the last step, and one after the loop."""
    last = tc.max_steps
    if after >= last:
        return Plan(0, 0, 0, 0, 0)
    ends = 1 if after < last else 0  # the last step evaluates (and samples) whatever its number
    evals = _multiples(after, last - 1, tc.eval_interval) + ends
    samples = _multiples(after, last - 1, tc.sample_interval) + ends if tc.sample_interval else 0
    latest = _multiples(after, last - 1, tc.checkpoint_interval) + 1
    return Plan(last - after, evals, samples, latest, evals)


@dataclass(frozen=True)
class Units:
    """Seconds of each thing a run of one config does."""

    step: float
    first: float  # the first step's extra (allocations, kernels picked)
    eval: float  # one evaluation (eval_iters forward passes)
    sample: float  # one sample of sample_tokens tokens
    latest: float  # one checkpoint save with the trainer state
    best: float  # one save of the weights only


def units(cfg: Config, flops_per_token: float | None = None, costs: Costs | None = None) -> Units:
    """The seconds of each thing a run of `cfg` does on this machine. `flops_per_token` (from `model_size`) carries
    the vocabulary when cfg.model.vocab_size is not the data's."""
    mc, tc = cfg.model, cfg.train
    costs = costs or _costs_for(tc)
    if flops_per_token is None:
        params, flops_per_token = _size(mc)
    else:  # the vocabulary from the FLOPs (they grow by 6 * n_embd per token of vocabulary)
        base_params, base_flops = _size(dataclasses.replace(mc, vocab_size=1))
        vocab = max(1, 1 + round((flops_per_token - base_flops) / (6 * mc.n_embd)))
        mc = dataclasses.replace(mc, vocab_size=vocab)
        params = base_params + (vocab - 1) * mc.n_embd
    micro = features(mc, tc.batch_size * mc.block_size, params, flops_per_token)
    token = features(mc, 1, params, flops_per_token)
    weights = 4.0 * params  # fp32 weights; the trainer state adds AdamW's two moments
    return Units(
        step=tc.grad_accum * costs.seconds("step", micro),
        first=costs.seconds("first", micro),
        eval=tc.eval_iters * costs.seconds("eval", micro),
        sample=tc.sample_tokens * costs.seconds("token", token),
        latest=costs.save[0] + costs.save[1] * 3 * weights,
        best=costs.save[0] + costs.save[1] * weights,
    )


def run_seconds(p: Plan, u: Units, first: bool = True) -> float:
    """Seconds of what `p` counts, at the costs `u`."""
    return (p.steps * u.step + (u.first if first and p.steps else 0.0) + p.evals * u.eval + p.samples * u.sample
            + p.latest * u.latest + p.best * u.best)  # fmt: skip


def train_seconds(
    cfg: Config, flops_per_token: float, steps: int | None = None, *, extras: bool = True, costs: Costs | None = None
) -> float:
    """Seconds to train the last `steps` steps of the run (default: all of them; a resumed run: those left) of a
    model with `flops_per_token` on this machine: its steps, evaluations, samples and checkpoint saves, from the
    trainer's first step to its end (not the process start nor building the model). `extras=False`: the training
    steps alone, at their steady pace. With this machine's costs (`costs` None), corrected by how the last runs
    here went against their estimates (`run_factor`)."""
    tc = cfg.train
    steps = tc.max_steps if steps is None else steps
    u = units(cfg, flops_per_token, costs)
    factor = run_factor(tc) if costs is None else 1.0
    if not extras:
        return factor * steps * u.step
    return factor * run_seconds(plan(tc, max(0, tc.max_steps - steps)), u)


# ----- calibration ------------------------------------------------------------------------------------------------


def machine_key(device: str = "auto", dtype: str = "auto", threads: int = 0) -> str:
    """What a calibration holds for: the processor (or GPU), threads, torch version, device and dtype."""
    from gpt.device import pick_device, pick_dtype

    dev = pick_device(device)
    if dev.type == "cuda":
        proc = torch.cuda.get_device_name(dev)
    else:
        proc = _cpu_name()
    n = threads or torch.get_num_threads()
    return f"{proc}|{os.cpu_count()} cpus|{n} threads|torch {torch.__version__}|{dev.type}|{pick_dtype(dtype, dev)}"


@functools.lru_cache(maxsize=1)
def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cache_path() -> Path:
    from gpt.paths import cache_dir

    return cache_dir() / "estimate.json"


def _read_raw() -> dict[str, Any]:
    try:
        raw = json.loads(cache_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return raw if isinstance(raw, dict) and raw.get("version") == CACHE_VERSION else {}


def _part(raw: dict[str, Any], name: str) -> dict[str, list[Any]]:
    part = raw.get(name)
    return {k: v for k, v in part.items() if isinstance(v, list)} if isinstance(part, dict) else {}


def _read_cache() -> dict[str, list[dict[str, Any]]]:
    return _part(_read_raw(), "machines")


def _write(machines: dict[str, list[Any]], runs: dict[str, list[Any]]) -> None:
    path = cache_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")
    tmp.write_text(json.dumps({"version": CACHE_VERSION, "machines": machines, "runs": runs}, indent=1),
                   encoding="utf-8")  # fmt: skip
    os.replace(tmp, path)


def _entries(key: str) -> list[tuple[float, Costs]]:
    out = []
    for e in _read_cache().get(key, []):
        try:
            out.append((float(e["time"]), Costs.from_dict(e["costs"])))
        except (KeyError, TypeError, ValueError):
            continue
    return out


def _store(key: str, costs: Costs) -> None:
    """Add a calibration to the cache (the last KEEP per machine), atomically."""
    raw = _read_raw()
    machines = _part(raw, "machines")
    machines[key] = [*machines.get(key, []), {"time": time.time(), "costs": costs.to_dict()}][-KEEP:]
    _write(machines, _part(raw, "runs"))


def where() -> str:
    """Where this process trains or estimates: "app" (the web app's server and its training children, which fork
    from a process that imported it) or "cli". Their runs differ: in the app a browser on the same machine may be
    drawing the live charts, and the app's start counts."""
    return "app" if "playground" in sys.modules else "cli"


def record_run(tc: TrainConfig, real_s: float, estimated_s: float) -> None:
    """A finished run's real time against what the estimate said: `run_factor` corrects the next estimates here
    by the median of the last KEEP (per machine, and app or CLI)."""
    if not (math.isfinite(real_s) and math.isfinite(estimated_s) and real_s > 0 and estimated_s > 0):
        return
    try:
        key = f"{machine_key(tc.device, tc.dtype, tc.threads)}|{where()}"
        raw = _read_raw()
        runs = _part(raw, "runs")
        runs[key] = [*runs.get(key, []), round(real_s / estimated_s, 4)][-KEEP:]
        _write(_part(raw, "machines"), runs)
    except OSError:
        log.exception("could not record the run's time")


def run_factor(tc: TrainConfig) -> float:
    """How much longer than estimated the last runs here took (1 with none; kept within 0.5-3)."""
    key = f"{machine_key(tc.device, tc.dtype, tc.threads)}|{where()}"
    ratios = [float(r) for r in _part(_read_raw(), "runs").get(key, []) if isinstance(r, int | float) and r > 0]
    return min(3.0, max(0.5, statistics.median(ratios))) if ratios else 1.0


def known_costs(device: str = "auto", dtype: str = "auto", threads: int = 0) -> Costs | None:
    """This machine's cached calibration (the median of the last ones), or None; never measures."""
    entries = _entries(machine_key(device, dtype, threads))
    return Costs.median([c for _, c in entries]) if entries else None


_lock = threading.Lock()
_memo: dict[str, Costs] = {}
_running: dict[str, threading.Thread] = {}


def costs(device: str = "auto", dtype: str = "auto", threads: int = 0) -> Costs:
    """This machine's costs: cached, else measured now (here in a process that trains anyway, else in a child)."""
    key = machine_key(device, dtype, threads)
    slot = f"{cache_path()}|{key}"
    with _lock:
        if slot in _memo:
            return _memo[slot]
        running = _running.get(slot)
    if running is not None:  # started in the background at start-up: wait a little for it rather than measure twice
        running.join(WAIT_S)
    found = known_costs(device, dtype, threads)
    if found is None:
        if running is not None and running.is_alive():
            return DEFAULT_COSTS  # not remembered: the next estimate looks again
        found = _calibrate(key, device, dtype, threads)
    with _lock:
        _memo[slot] = found
    return found


def _costs_for(tc: TrainConfig) -> Costs:
    return costs(tc.device, tc.dtype, tc.threads)


def _calibrate(key: str, device: str, dtype: str, threads: int) -> Costs:
    """Measure now and cache it; the default costs if it fails (the estimate must never break what asked)."""
    try:
        if "torch._dynamo" in sys.modules:  # a process that has built an optimizer: it trains, it can measure
            found = measure(device, dtype, threads)
            _store(key, found)
        else:
            _measure_in_child(device, dtype, threads)
        return known_costs(device, dtype, threads) or DEFAULT_COSTS
    except Exception:  # noqa: BLE001 - an estimate is not worth an error
        log.exception("calibrating the time estimate failed; using defaults")
        return DEFAULT_COSTS


def _measure_in_child(device: str, dtype: str, threads: int) -> None:
    cmd = [sys.executable, "-m", "gpt.estimate", "--device", device, "--dtype", dtype, "--threads", str(threads)]
    subprocess.run(cmd, check=True, timeout=CHILD_TIMEOUT_S, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def start_calibration(device: str = "auto", dtype: str = "auto", threads: int = 0) -> None:
    """Measure this machine again in a child process, in the background, unless its cache is full and recent. The
    estimates switch to the new median once it lands; until then they use the cache (or wait for the first)."""
    key = machine_key(device, dtype, threads)
    slot = f"{cache_path()}|{key}"
    entries = _entries(key)
    age = time.time() - max((t for t, _ in entries), default=-math.inf)
    if age < (REFRESH_S if len(entries) >= KEEP else GAP_S):
        return

    def run() -> None:
        try:
            wait_quiet(QUIET_S)
            _measure_in_child(device, dtype, threads)
        except Exception:  # noqa: BLE001 - the cache (or the defaults) stays
            log.exception("calibrating the time estimate failed")
        finally:
            with _lock:
                _memo.pop(slot, None)  # the next estimate reads the new median
                _running.pop(slot, None)

    with _lock:
        if slot in _running:
            return
        _running[slot] = thread = threading.Thread(target=run, name="estimate-calibration", daemon=True)
    thread.start()


def _busy_cores(interval: float = 0.5) -> float | None:
    """How many processors were busy over `interval` seconds (Linux's /proc/stat), None where unknown."""

    def read() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text(encoding="ascii").split("\n", 1)[0].split()[1:]]
        return sum(fields), fields[3] + (fields[4] if len(fields) > 4 else 0)  # total, idle + iowait

    try:
        total0, idle0 = read()
        time.sleep(interval)
        total1, idle1 = read()
    except (OSError, ValueError, IndexError):
        return None
    if total1 <= total0:
        return None
    return (1 - (idle1 - idle0) / (total1 - total0)) * (os.cpu_count() or 1)


def wait_quiet(limit_s: float, busy: float = 0.5) -> bool:
    """Wait (up to `limit_s`) until at most `busy` processors are busy, so that a calibration does not time the
    app's start-up or someone's run: with every core taken, a multi-threaded step can run 10x slower. True if quiet."""
    end = time.monotonic() + limit_s
    while True:
        now = _busy_cores()
        if now is None:
            return True
        if now <= busy:
            return True
        if time.monotonic() >= end:
            return False


def machine_flops() -> float:
    """The FLOP/s a training step of the tiny preset's shape reaches here (of a small model, a fraction of the
    machine's peak: see `Costs`). Called at the app's start-up: it starts measuring the machine in the background
    (`start_calibration`) and does not wait; the figure is the cached calibration's, or the defaults' until the first
    one lands."""
    start_calibration()
    with _lock:
        known = next(iter(_memo.values()), None)
    known = known or known_costs() or DEFAULT_COSTS
    mc = ModelConfig(vocab_size=80, block_size=64, n_layer=4, n_head=4, n_embd=128)
    tokens = 12 * mc.block_size
    return tokens * _size(mc)[1] / max(known.seconds("step", features(mc, tokens)), 1e-12)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def _rng_kept(device: torch.device) -> Iterator[None]:
    """The trainer seeds torch's generator: a calibration inside a training process must not change its stream."""
    state = torch.get_rng_state()
    cuda = torch.cuda.get_rng_state() if device.type == "cuda" else None
    try:
        yield
    finally:
        torch.set_rng_state(state)
        if cuda is not None:
            torch.cuda.set_rng_state(cuda)


def _trainer(shape: Sequence[int], device: str, dtype: str, threads: int, work: Path) -> Any:
    """A real Trainer of one shape (n_layer, n_embd, n_head, block_size, batch_size, vocab), on random tokens."""
    from gpt.data import PreparedData
    from gpt.tokenizer import ByteTokenizer
    from gpt.trainer import Trainer

    n_layer, n_embd, n_head, block, batch, vocab = shape
    cfg = Config()
    cfg.model = ModelConfig(vocab_size=vocab, block_size=block, n_layer=n_layer, n_head=n_head, n_embd=n_embd,
                            dropout=0.0)  # fmt: skip
    tc = cfg.train
    tc.batch_size, tc.device, tc.dtype, tc.threads, tc.tensorboard = batch, device, dtype, threads, False
    tc.eval_iters, tc.sample_tokens, tc.max_steps = 3, 16, 1000
    tokenizer = ByteTokenizer()
    tokenizer.vocab_size = vocab  # ids past 255 decode to a replacement character: fine for timing
    ids = np.random.default_rng(0).integers(0, vocab, 8_000 + 2 * block).astype(np.uint16)
    data = PreparedData(work, {}, tokenizer, ids[: len(ids) // 2], ids[len(ids) // 2 :])
    return Trainer(cfg, data, work / "-".join(map(str, shape)))


def time_shapes(shapes: Sequence[Sequence[int]], device: str = "auto", dtype: str = "auto", threads: int = 0,
                rounds: int = 5, work_dir: Path | None = None) -> list[dict[str, Any]]:  # fmt: skip
    """Seconds of the trainer's own work on each shape (n_layer, n_embd, n_head, block_size, batch_size, vocab): a
    training step, the first step's extra, an evaluation forward, a sampled token, two checkpoint saves. The shapes
    take turns, `rounds` times, and each keeps its median: a busy moment slows a round of all of them (the fit's
    proportions hold), not all the steps of one shape."""
    from gpt.device import pick_device

    dev = pick_device(device)
    times: list[dict[str, list[float]]] = [{} for _ in shapes]

    def timed(i: int, kind: str, fn: Any) -> None:
        t = time.perf_counter()
        fn()
        _sync(dev)
        times[i].setdefault(kind, []).append(time.perf_counter() - t)

    with contextlib.ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(dir=work_dir, prefix="estimate-")))
        stack.enter_context(_rng_kept(dev))
        trainers = [_trainer(s, device, dtype, threads, work) for s in shapes]
        sums = [torch.zeros((), device=t.device) for t in trainers]

        def step(i: int) -> Any:
            tr = trainers[i]
            return lambda: (  # what the loop does per step: set the learning rate, step
                [g.__setitem__("lr", g["base_lr"]) for o in tr.optimizers for g in o.param_groups],
                tr._train_step(sums[i]),
            )

        for i in range(len(shapes)):
            timed(i, "first", step(i))
        for r in range(rounds + 1):  # the first round warms up
            for i in range(len(shapes)):
                timed(i, "step" if r else "warm", step(i))
        for _ in range(2):
            for i, tr in enumerate(trainers):
                timed(i, "eval", tr.estimate_val_loss)
        for r in range(3):  # the first sample picks kernels for new shapes; a run's later samples do not
            for i, tr in enumerate(trainers):
                timed(i, "token" if r else "warm", tr.sample_text)
        for i, tr in enumerate(trainers):
            timed(i, "latest", lambda tr=tr: tr._save("latest"))
            timed(i, "best", lambda tr=tr: tr._save("best", with_state=False))
        rows = []
        for shape, tr, t in zip(shapes, trainers, times, strict=True):
            tc, med = tr.cfg.train, {k: statistics.median(v) for k, v in t.items()}
            params, flops = tr.raw_model.num_params(), tr.raw_model.flops_per_token()
            rows.append({"shape": list(shape), "params": params, "flops_per_token": flops, "step": med["step"],
                         "first": max(0.0, med["first"] - med["step"]), "eval": med["eval"] / tc.eval_iters,
                         "token": med["token"] / tc.sample_tokens,
                         "saves": [(12.0 * params, med["latest"]), (4.0 * params, med["best"])]})  # fmt: skip
    return rows


def nnls(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """x >= 0 minimizing |a x - b| (Lawson and Hanson's active set method), columns scaled to 1 for conditioning."""
    scale = np.abs(a).max(axis=0)
    scale[scale == 0] = 1.0
    a = a / scale
    n = a.shape[1]
    x = np.zeros(n)
    passive = np.zeros(n, dtype=bool)
    for _ in range(3 * n):
        w = a.T @ (b - a @ x)
        if passive.all() or (w[~passive] <= 1e-12 * max(1.0, float(np.abs(w).max()))).all():
            break
        passive[int(np.argmax(np.where(passive, -np.inf, w)))] = True
        for _ in range(3 * n):
            z = np.zeros(n)
            z[passive] = np.linalg.lstsq(a[:, passive], b, rcond=None)[0]
            if (z[passive] > 0).all():
                x = z
                break
            neg = passive & (z <= 0)
            alpha = float(np.min(x[neg] / np.maximum(x[neg] - z[neg], 1e-300)))
            x = x + alpha * (z - x)
            passive &= x > 1e-15
            x[~passive] = 0.0
    return x / scale


def fit(rows: Sequence[dict[str, Any]]) -> Costs:
    """The coefficients of each kind from timed shapes (`time_shape`), fitted on relative error (a 2 ms step counts
    as much as a 200 ms one)."""
    out: dict[str, tuple[float, ...]] = {}
    for kind in KINDS:
        feats, target = [], []
        for r in rows:
            n_layer, n_embd, n_head, block, batch, vocab = r["shape"]
            mc = ModelConfig(vocab_size=vocab, block_size=block, n_layer=n_layer, n_head=n_head, n_embd=n_embd)
            tokens = 1 if kind == "token" else batch * block
            feats.append(features(mc, tokens, r["params"], r["flops_per_token"]))
            target.append(r[kind])
        a, b = np.array(feats), np.array(target)
        weight = 1.0 / np.maximum(b, 1e-6)
        out[kind] = tuple(float(x) for x in nnls(a * weight[:, None], b * weight))
    saves = [s for r in rows for s in r["saves"]]
    a = np.array([[1.0, size] for size, _ in saves])
    b = np.array([t for _, t in saves])
    weight = 1.0 / np.maximum(b, 1e-6)
    save = nnls(a * weight[:, None], b * weight)
    return Costs(**out, save=(float(save[0]), float(save[1])))  # type: ignore[arg-type]


def measure(device: str = "auto", dtype: str = "auto", threads: int = 0) -> Costs:
    """Time the trainer's work on `SHAPES` here and fit the costs (a few seconds). In a process that may import
    torch._dynamo (the trainer's, or a child of the web server)."""
    from gpt.paths import cache_dir

    work = cache_dir()  # the saves are timed on a real disk, not a RAM-backed /tmp
    work.mkdir(parents=True, exist_ok=True)
    return fit(time_shapes(SHAPES, device, dtype, threads, work_dir=work))


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m gpt.estimate`: measure this machine, add it to the cache, print the costs."""
    p = argparse.ArgumentParser(prog="python -m gpt.estimate", description=main.__doc__)
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--threads", type=int, default=0)
    args = p.parse_args(argv)
    parent = os.getppid()

    def orphaned() -> None:  # the app that asked went away: stop burning its processors
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    if parent > 1:
        threading.Thread(target=orphaned, daemon=True).start()
    found = measure(args.device, args.dtype, args.threads)
    key = machine_key(args.device, args.dtype, args.threads)
    _store(key, found)
    print(json.dumps({"machine": key, "costs": found.to_dict(), "calibrations": len(_entries(key))}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
