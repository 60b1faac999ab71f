"""How big a model is and how long training it takes on this machine, before anything is built or trained.

The Train tab shows these next to its form, `gpt-train` prints them before it starts, the app's queue uses them for
the wait of runs that have not started yet, and the trainer's ETA uses them for what it has not timed yet.

How long: one FLOP rate mispredicts (it was 2-2.5x optimistic). A small model's step is bound by per-operation
overhead and by its elementwise work (GELU, LayerNorm, casts, the optimizer) more than by its FLOPs, and a run does
more than steps: evaluations, samples, checkpoint saves. So each kind of work the trainer does costs a linear
combination of the shape's `FEATURES` (per call, per layer, per parameter, per activation, per matmul FLOP, per
attention term, per logit), whose non-negative coefficients (`Costs`) gpt.calibrate fits to the trainer's own code
timed on a few small shapes; `plan` counts what a run will do, `units` prices each thing at given costs. Each
finished run records how long it took against its estimate, and the next estimates here (app or CLI: `where`) are
corrected by the median of the last ones (`run_factor`): what the model cannot know, such as a browser on the same
cores drawing the live charts.

Pure: formulas, and the per-machine store of past calibrations and runs (`cache_path`). Nothing here measures or
starts a process, so the trainer can use it (it sits below gpt.trainer; gpt.calibrate, which builds trainers to
measure, sits above it). Costs are always passed in: this machine's from `gpt.calibrate.costs` (cached, else
measured), or what is cached here (`known_costs`, never measures), or `DEFAULT_COSTS`. The store keeps the last
`KEEP` calibrations per machine (CPU or GPU model, threads, torch version, dtype: `machine_key`), and the estimate is
their median, so one taken at a busy moment does not make it jump between starts of the app.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import os
import platform
import statistics
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from gpt.config import Config, ModelConfig, TrainConfig, padded_vocab
from gpt.device import pick_device, pick_dtype
from gpt.model import mlp_width
from gpt.paths import cache_dir

log = logging.getLogger(__name__)

FEATURES = ("call", "layer", "param", "activation", "matmul", "attention", "logit")
KINDS = ("step", "first", "eval", "token")  # a training step, the first one's extra, an eval forward, a sampled token
KEEP = 5  # calibrations kept per machine; the estimate is their median
CACHE_VERSION = 1


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
    torch._dynamo, and the web server calls this at every change of the form (gpt.model's mlp_width is a plain
    function: importing the module builds nothing)."""
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


def units(cfg: Config, flops_per_token: float | None = None, *, costs: Costs) -> Units:
    """The seconds of each thing a run of `cfg` does at `costs`. `flops_per_token` (from `model_size`) carries the
    vocabulary when cfg.model.vocab_size is not the data's."""
    mc, tc = cfg.model, cfg.train
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
    cfg: Config,
    flops_per_token: float,
    steps: int | None = None,
    *,
    costs: Costs,
    extras: bool = True,
    corrected: bool = False,
) -> float:
    """Seconds to train the last `steps` steps of the run (default: all of them; a resumed run: those left) of a
    model with `flops_per_token` at `costs`: its steps, evaluations, samples and checkpoint saves, from the trainer's
    first step to its end (not the process start nor building the model). `extras=False`: the training steps alone,
    at their steady pace. `corrected`: `costs` are this machine's own (gpt.calibrate.costs), so the figure is scaled
    by how the last runs here went against their estimates (`run_factor`); other costs give the model alone."""
    tc = cfg.train
    steps = tc.max_steps if steps is None else steps
    u = units(cfg, flops_per_token, costs=costs)
    factor = run_factor(tc) if corrected else 1.0
    if not extras:
        return factor * steps * u.step
    return factor * run_seconds(plan(tc, max(0, tc.max_steps - steps)), u)


# ----- the store of calibrations and runs, per machine ------------------------------------------------------------


def machine_key(device: str = "auto", dtype: str = "auto", threads: int = 0) -> str:
    """What a calibration holds for: the processor (or GPU), threads, torch version, device and dtype."""
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
    """The store: this user's calibrations and past runs' times, per machine."""
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


def calibrations(key: str) -> list[tuple[float, Costs]]:
    """The calibrations stored for machine `key`: (when, costs), oldest first; an unreadable one is skipped."""
    out = []
    for e in _read_cache().get(key, []):
        try:
            out.append((float(e["time"]), Costs.from_dict(e["costs"])))
        except (KeyError, TypeError, ValueError):
            continue
    return out


def add_calibration(key: str, costs: Costs) -> None:
    """Add a calibration to the store (the last KEEP per machine), atomically."""
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
    entries = calibrations(machine_key(device, dtype, threads))
    return Costs.median([c for _, c in entries]) if entries else None
