"""This machine's costs (gpt.estimate.Costs), measured by running the trainer's own code on a few small shapes.

Each kind of work the trainer does (`Trainer._train_step`, `estimate_val_loss`, `sample_text`, `_save`) is timed on
`SHAPES`, taking turns (`time_shapes`, a few seconds), and the coefficients of gpt.estimate's cost model are fitted to
the timings (`fit`: non-negative, on relative error). The calibration runs once per machine (CPU or GPU model,
threads, torch version, dtype: `gpt.estimate.machine_key`) and lands in gpt.estimate's store; `costs` is the cached
median, or a calibration made now.

Above gpt.trainer (it builds Trainers), so that gpt.estimate, which the trainer uses, stays pure formulas. The web
server must not measure in its own process: AdamW's constructor imports torch._dynamo (~100 MB, 1.5 s), and its
threads have used torch, which slows GNU OpenMP (see playground/jobs.py). There it runs in a child process
(`python -m gpt.calibrate`), in the background (`start_calibration`, at the app's start-up); a process that trains
anyway (the CLI's) measures in place.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gpt.config import Config, ModelConfig, TrainConfig
from gpt.data import PreparedData
from gpt.device import pick_device
from gpt.estimate import (
    DEFAULT_COSTS,
    KEEP,
    KINDS,
    Costs,
    add_calibration,
    cache_path,
    calibrations,
    features,
    known_costs,
    machine_key,
)
from gpt.events import format_duration
from gpt.paths import cache_dir
from gpt.tokenizer import ByteTokenizer
from gpt.trainer import Trainer

log = logging.getLogger(__name__)

REFRESH_S = 7 * 24 * 3600  # a full cache older than this is measured again (in the background) at the app's start
GAP_S = 3600  # ... and one not full yet, once its newest calibration is older than this
WAIT_S = 5.0  # how long an estimate waits for the calibration started in the background before using the defaults
QUIET_S = 60.0  # how long the background calibration waits for idle processors (the app's own start-up, a run)
# Processors busy with other work, on average, past which a calibration is not kept (it would price the machine's
# quiet steps at a busy moment's speed: estimates 3x off were seen) and the estimate says the machine is busy
BUSY = 0.5
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


def costs_for(tc: TrainConfig) -> Costs:
    """`costs` for the device, dtype and threads a run trains with."""
    return costs(tc.device, tc.dtype, tc.threads)


def _calibrate(key: str, device: str, dtype: str, threads: int) -> Costs:
    """Measure now and cache it; the default costs if it fails (the estimate must never break what asked)."""
    try:
        if "torch._dynamo" in sys.modules:  # a process that has built an optimizer: it trains, it can measure
            measure_and_keep(device, dtype, threads)
        else:
            _measure_in_child(device, dtype, threads)
        return known_costs(device, dtype, threads) or DEFAULT_COSTS
    except subprocess.TimeoutExpired:
        log.warning("calibrating the time estimate took over %d s (a busy machine); using defaults", CHILD_TIMEOUT_S)
        return DEFAULT_COSTS
    except Exception:  # noqa: BLE001 - an estimate is not worth an error
        log.exception("calibrating the time estimate failed; using defaults")
        return DEFAULT_COSTS


def _measure_in_child(device: str, dtype: str, threads: int) -> None:
    cmd = [sys.executable, "-m", "gpt.calibrate", "--device", device, "--dtype", dtype, "--threads", str(threads)]
    subprocess.run(cmd, check=True, timeout=CHILD_TIMEOUT_S, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def start_calibration(device: str = "auto", dtype: str = "auto", threads: int = 0) -> None:
    """Measure this machine again in a child process, in the background, unless its cache is full and recent. The
    estimates switch to the new median once it lands; until then they use the cache (or wait for the first)."""
    key = machine_key(device, dtype, threads)
    slot = f"{cache_path()}|{key}"
    entries = calibrations(key)
    age = time.time() - max((t for t, _ in entries), default=-math.inf)
    if age < (REFRESH_S if len(entries) >= KEEP else GAP_S):
        return

    def run() -> None:
        try:
            if wait_quiet(QUIET_S) or not entries:  # (busy all along: next time, unless there is nothing yet)
                _measure_in_child(device, dtype, threads)
        except subprocess.TimeoutExpired:  # a machine too busy to measure in time: no fault of ours, no traceback
            log.warning("calibrating the time estimate took over %d s (a busy machine): the estimates keep what they "
                        "had", CHILD_TIMEOUT_S)  # fmt: skip
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


def _cpu_times() -> tuple[int, int] | None:
    """(all, idle) processor time since boot, in ticks, from Linux's /proc/stat; None where unknown."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text(encoding="ascii").split("\n", 1)[0].split()[1:]]
        return sum(fields), fields[3] + (fields[4] if len(fields) > 4 else 0)  # total, idle + iowait
    except (OSError, ValueError, IndexError):
        return None


def _busy_between(before: tuple[int, int] | None, after: tuple[int, int] | None) -> float | None:
    """How many processors were busy on average between two `_cpu_times` readings."""
    if before is None or after is None or after[0] <= before[0]:
        return None
    return (1 - (after[1] - before[1]) / (after[0] - before[0])) * (os.cpu_count() or 1)


def _busy_cores(interval: float = 0.5) -> float | None:
    """How many processors were busy over `interval` seconds, None where unknown."""
    before = _cpu_times()
    time.sleep(interval)
    return _busy_between(before, _cpu_times())


_last_reading: list[tuple[float, tuple[int, int] | None]] = []  # (when, `_cpu_times`) of `busy_now`'s last call
_last_busy: list[float | None] = [None]


def busy_now(min_interval: float = 0.25) -> float | None:
    """Processors busy lately, without making the caller wait (the Train tab asks at every change of its form):
    over the time since the last call, once that is `min_interval` long (the first call waits that long)."""
    with _lock:
        now = time.monotonic()
        if not _last_reading:
            _last_reading.append((now, _cpu_times()))
            time.sleep(min_interval)
            now = time.monotonic()
        when, before = _last_reading[0]
        if now - when >= min_interval:
            reading = _cpu_times()
            _last_busy[0] = _busy_between(before, reading)
            _last_reading[0] = (now, reading)
        return _last_busy[0]


def busy_note(seconds: float) -> str:
    """What the estimate of a run of `seconds` (on the quiet machine) becomes while other work keeps the machine busy
    now, in words ("" when quiet): a run on every core shares them in turn with that work, so it takes up to
    (cores + busy) / cores as long while the work goes on."""
    busy, cores = busy_now(), os.cpu_count() or 1
    if busy is None or busy < BUSY:
        return ""
    slow = seconds * (cores + busy) / cores
    return (f"this machine is busy now ({busy:.1f} of {cores} processors in use): {format_duration(seconds)} if it "
            f"calms down, up to {format_duration(slow)} while it stays so")  # fmt: skip


def wait_quiet(limit_s: float, busy: float = BUSY) -> bool:
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


# ----- measuring --------------------------------------------------------------------------------------------------


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


def _trainer(shape: Sequence[int], device: str, dtype: str, threads: int, work: Path) -> Trainer:
    """A real Trainer of one shape (n_layer, n_embd, n_head, block_size, batch_size, vocab), on random tokens."""
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

        def step(i: int) -> Callable[[], None]:
            tr = trainers[i]

            def run() -> None:  # what the loop does per step: set the learning rate, step
                for o in tr.optimizers:
                    for g in o.param_groups:
                        g["lr"] = g["base_lr"]
                tr._train_step(sums[i])

            return run

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
    """The coefficients of each kind from timed shapes (`time_shapes`), fitted on relative error (a 2 ms step counts
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
    work = cache_dir()  # the saves are timed on a real disk, not a RAM-backed /tmp
    work.mkdir(parents=True, exist_ok=True)
    return fit(time_shapes(SHAPES, device, dtype, threads, work_dir=work))


def measure_and_keep(device: str = "auto", dtype: str = "auto", threads: int = 0) -> tuple[Costs, float | None]:
    """`measure`, kept in the store only if the machine was otherwise quiet meanwhile: the processors busy with
    other work (all busy ones, less this process's own CPU time) are returned too."""
    before, cpu0, t0 = _cpu_times(), _own_cpu(), time.monotonic()
    found = measure(device, dtype, threads)
    busy = _busy_between(before, _cpu_times())
    others = None if busy is None else max(0.0, busy - (_own_cpu() - cpu0) / max(1e-9, time.monotonic() - t0))
    key = machine_key(device, dtype, threads)
    if others is None or others < BUSY or not calibrations(key):  # (a first one beats the defaults, busy or not)
        add_calibration(key, found)
    else:
        log.warning("calibration not kept: %.1f processors were busy with other work meanwhile", others)
    return found, others


def _own_cpu() -> float:
    t = os.times()
    return t.user + t.system


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m gpt.calibrate`: measure this machine, add it to the cache, print the costs."""
    p = argparse.ArgumentParser(prog="python -m gpt.calibrate", description=main.__doc__)
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
    found, others = measure_and_keep(args.device, args.dtype, args.threads)
    key = machine_key(args.device, args.dtype, args.threads)
    print(json.dumps({"machine": key, "costs": found.to_dict(), "calibrations": len(calibrations(key)),
                      "busy_elsewhere": others}))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
