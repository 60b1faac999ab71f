"""Where and how fast: the device to run on and the fastest settings for it, chosen for the user.

Every default here was measured with `python -m bench.compare` (the figures are in the notes of the speed issue):
bf16 autocast for training on CPUs with native bf16, bf16 weights for sampling from large models on them.
"""

from __future__ import annotations

import contextlib
import copy
import os
from typing import Any, TypeVar

import torch
from torch import nn

# From about this size a model's weights no longer fit in the CPU's caches and generating a token is bound by reading
# them: bf16 halves that (10.7M parameters 1.5x fp32's tokens/s, 124M 1.7x). Smaller models are bound by per-op
# overhead and run slower in bf16 (0.8M: 0.6x, 2.7M: 0.9x).
BF16_SAMPLING_MIN_PARAMS = 8_000_000


# Sharing the cores between a server a person waits on and a run that trains beside it (the app does both): measured
# with `python -m bench.contention`, figures in its docstring.
BACKGROUND_NICENESS = 10  # a run's CPU priority below the server's (0 is normal, 19 the lowest)


def cores() -> int:
    """The CPU cores this process may run on (a container's share, where the OS says)."""
    affinity = getattr(os, "sched_getaffinity", None)
    return len(affinity(0)) if affinity else os.cpu_count() or 1


def serve_in_foreground() -> None:
    """For a process whose requests a person waits on (the web server): torch on half the cores, so that a request
    never fights a training run for all of them (each thread of an op waits for the slowest: two threads on two
    busy cores ran a generation at 0.14x its speed, one thread holds most of it)."""
    torch.set_num_threads(max(1, cores() // 2))


def train_in_background() -> None:
    """For a process that trains while others serve (a run the app started): a lower CPU priority, so that the
    scheduler hands a core to a waiting request at once and the run takes whatever is left; on a quiet machine
    it trains as fast as before."""
    if hasattr(os, "nice"):  # (not on Windows)
        os.nice(BACKGROUND_NICENESS)


def pick_device(name: str = "auto") -> torch.device:
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes in bfloat16 natively (AVX-512 BF16 or AMX); elsewhere bf16 is emulated and slow."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def pick_dtype(name: str, device: torch.device) -> torch.dtype:
    """The compute dtype for "auto": the fastest that trains well on this device.

    CUDA: bf16 where supported, else fp16 (with a grad scaler). CPU: bf16 autocast where the CPU has native bf16
    (1.3-1.6x fp32's tokens/s at our presets on an AVX-512 BF16 CPU; `python -m bench.compare`), else fp32.
    MPS: fp32. Weights and optimizer state stay fp32 in every case; only the compute runs in lower precision.
    """
    if name != "auto":
        return getattr(torch, name)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and cpu_has_native_bf16():
        return torch.bfloat16
    return torch.float32


def slow_bf16(device: torch.device) -> bool:
    """Whether bfloat16 matrix products are emulated on `device` (a CPU without native bf16: on a 2-core AMD EPYC
    2 GFLOP/s against float32's 75, torch 2.13), so that work done in bf16 for speed elsewhere is better in fp32."""
    return device.type == "cpu" and not cpu_has_native_bf16()


def autocast(device: torch.device, dtype: torch.dtype) -> contextlib.AbstractContextManager[Any]:
    """Mixed precision when the compute dtype is not fp32 (a context manager that can be re-entered)."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


Model = TypeVar("Model", bound=nn.Module)


def weights(model: nn.Module) -> int:
    """How many numbers a pass over the model reads (a tied matrix once): what `BF16_SAMPLING_MIN_PARAMS` counts."""
    return sum(p.numel() for p in model.parameters())


def sampling_model(model: Model) -> Model:
    """The model to generate from: a bf16 copy of a large fp32 model on a CPU with native bf16, else the model itself.

    A copy, so the original keeps its fp32 weights for training and for the Inspect tab's exact numbers.
    """
    w = next(model.parameters())
    if (
        w.device.type != "cpu"
        or w.dtype != torch.float32
        or weights(model) < BF16_SAMPLING_MIN_PARAMS
        or not cpu_has_native_bf16()
    ):
        return model
    return copy.deepcopy(model).to(torch.bfloat16).eval()
