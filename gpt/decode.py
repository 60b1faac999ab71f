"""The static decode step, run as fast as the device allows: compiled on a CPU, captured as a CUDA graph on a GPU.

Generating a token from a small model is a few hundred tiny operations (17 matrix-vector products and the norms,
rotations, softmaxes and sampling filters around them), and each costs more to launch than to compute: the tiny
model's weights are 3 MB, yet a token took 0.75 ms eagerly. The static step (`GPT.decode_step` followed by
`gpt.sampling.pick_static`) has shapes that never change and takes the position, the token counts and the sampling
settings as data, so it can be made once and replayed for every token and every setting:

- CPU: `torch.compile` fuses it into a few C++ kernels around the matrix products (`cpp_wrapper`: the graph is called
  from C++, not through a Python wrapper), and, once the step is built for a model, its guards are skipped: a
  `Decoder` calls it only with the inputs it was built for (shapes fixed by the model's config, eval mode,
  inference mode), and checks the weights' dtype and device itself once per generation. Each row-times-matrix
  product is compiled as a multiply and a sum fused with its neighbours, not a call into the matrix library (whose
  launch costs more than the product at these sizes). Compiling takes seconds
  (about 30 s cold on two cores, 3-5 s when torch's on-disk cache has the model's shape), so it runs in a
  background thread (`warm_up`) while generation goes on eagerly, and the stream switches to the compiled step at
  the next token once it is ready. Only small models compile: from `BF16_SAMPLING_MIN_PARAMS` on, a token is bound
  by reading the weights, which a compiler cannot make faster.
- CUDA: the step is captured as a CUDA graph at a decoder's first token and replayed; launching the whole graph
  costs about what launching one kernel does.
- Anywhere else, or while compiling, or when compiling failed: the eager path (`GPT.forward` with the cache and
  `gpt.sampling.pick`), which picks the same tokens.

The loop that chooses between the two for each token and streams them is gpt.generate, above this module.

Each model gets a small pool of decoders (each with its KV cache): a decoder serves one generation at a time, so two
visitors sampling from one shared model never write into one cache.
"""

from __future__ import annotations

import contextlib
import threading
import time
import types
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from gpt.device import BF16_SAMPLING_MIN_PARAMS, weights
from gpt.model import GPT, KVCache
from gpt.sampling import STATIC_FIELDS, pick_static

N_ALTERNATIVES = 5  # the alternatives the static step returns with each token (the Generate tab shows 5)
POOL = 2  # idle decoders kept per model
# Where one generation alone is worth a compile (gpt-generate): eagerly the tiny model takes 0.75 ms a token, compiled
# 0.25 ms, and compiling takes 3-5 s with torch's cache warm, 30 s cold; it pays after 6,000-60,000 tokens.
PAYS_AFTER_TOKENS = 20_000
ENABLED = True  # False: every token through the eager path (bench.compare times both in one run)

StepFn = Callable[..., torch.Tensor]


def _full_step(
    model: GPT, idx: torch.Tensor, pos: torch.Tensor, counts: torch.Tensor, params: torch.Tensor, noise: torch.Tensor,
    *kv: torch.Tensor,
) -> torch.Tensor:  # fmt: skip
    """One token in, the next one picked: the model's static step and the branch-free sampler, as one graph.

    It leaves `idx` and `pos` set for the next step (the picked token, one position on), so that the next call needs
    nothing from Python, and returns [token, its probability, N_ALTERNATIVES ids, their probabilities] as one float64
    vector: one read back per token."""
    layers = list(zip(kv[::2], kv[1::2], strict=True))
    logits = model.decode_step(idx, pos, layers)[0, : counts.size(0)].float()  # never pick vocabulary padding
    next_id, prob, top_ids, top_probs = pick_static(logits, counts, params, noise, N_ALTERNATIVES)
    idx.copy_(next_id.view(1, 1))
    pos.add_(1)
    return torch.cat([next_id.view(1).double(), prob.view(1).double(), top_ids.double(), top_probs.double()])


@dataclass
class _Compiled:
    """A model's compiled step (CPU), built in the background."""

    vocab: int  # the tokenizer's vocabulary: the sampler's size (the model's may be padded beyond it)
    dtype: torch.dtype
    step: StepFn | None = None
    error: str | None = None
    seconds: float = 0.0
    done: threading.Event = field(default_factory=threading.Event)


_compiled: weakref.WeakKeyDictionary[GPT, _Compiled] = weakref.WeakKeyDictionary()
_pools: weakref.WeakKeyDictionary[GPT, list[Decoder]] = weakref.WeakKeyDictionary()
_lock = threading.Lock()
_capture_lock = threading.Lock()  # one CUDA graph capture at a time in the process


def compiles(model: GPT) -> bool:
    """Whether this model's decode step is worth compiling here: a small model, on a CPU."""
    w = model.lm_head.weight
    return w.device.type == "cpu" and weights(model) < BF16_SAMPLING_MIN_PARAMS


def warm_up(model: GPT, vocab: int, wait: bool = False) -> _Compiled | None:
    """Start building `model`'s compiled decode step for a tokenizer of `vocab` tokens in a background thread (once
    per model; where `compiles`; from an eval-mode model). Generation does not wait for it: it decodes eagerly until
    the step is ready. `wait`: block until it is."""
    if not compiles(model) or model.training:
        return None
    with _lock:
        state = _compiled.get(model)
        if state is None or (state.vocab, state.dtype) != (vocab, model.lm_head.weight.dtype):
            state = _compiled[model] = _Compiled(vocab, model.lm_head.weight.dtype)
            ref = weakref.ref(model)
            threading.Thread(target=_build, args=(ref, state), daemon=True, name="decode-compile").start()
    if wait:
        state.done.wait()
    return state


def _build(ref: weakref.ref[GPT], state: _Compiled) -> None:
    t = time.perf_counter()
    try:
        model = ref()
        if model is None:
            return
        # Its own copy of the function, with a code object of its own: torch keeps compiled graphs per code object,
        # and with no guards a second model would be handed the first one's graph.
        fn = _full_step
        own = types.FunctionType(fn.__code__.replace(), fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__)
        options: dict[str, Any] = {
            "cpp_wrapper": True,
            "compile_threads": 1,  # (in this process: no pool of compile workers kept alive in a web server)
            # Guards are the compiled graph's per-call check of every input and weight (about 30 us here, an eighth
            # of the step): the decoder keeps to the inputs the graph was built for, and checks the weights itself.
            "guard_filter_fn": torch.compiler.skip_all_guards_unsafe,
            # A row times a matrix as a multiply and a sum, fused with the ops around it: each matrix-library call
            # costs about 10 us to launch here, and a token makes 17 of them (tiny: 0.29 -> 0.21 ms a step; a 4.7M
            # model: 2.9 -> 0.9 ms). Inductor does it on a CPU for one row and both sides up to 2048.
            "post_grad_fusion_options": {"decompose_mm_pass": {}},
        }
        step = torch.compile(own, fullgraph=True, dynamic=False, options=options)
        trial = Decoder(model, state.vocab)
        with torch.inference_mode():
            step(model, *trial.seek(0, 0))  # compiles (the first call), on the trial decoder's own cache
        del model
        state.step = step
    except Exception as e:  # noqa: BLE001 - no compiler, an unsupported op...: decoding stays eager
        state.error = f"{type(e).__name__}: {e}".splitlines()[0][:300]
    finally:
        state.seconds = time.perf_counter() - t
        state.done.set()


class Decoder:
    """One sequence's decoding state: its KV cache, token counts and the static step's other inputs."""

    def __init__(self, model: GPT, vocab: int) -> None:
        # (weakly: decoders are pooled under the model, and a pool that held its model would keep it for ever)
        self._model = weakref.ref(model)
        w = model.lm_head.weight
        self.device, self.dtype = w.device, w.dtype
        self.vocab = vocab  # the tokenizer's: ids past it are the model's padding, never picked
        # Zero-filled only where the static step will read it: the eager path never reads a position it has not
        # written, and zeroing the cache (37 MB at 124M) for each new decoder would be wasted work there.
        self.cache: KVCache = model.new_cache(1, zeroed=self.device.type == "cuda" or compiles(model))
        self.idx = torch.zeros(1, 1, dtype=torch.long, device=self.device)
        self.pos = torch.zeros((), dtype=torch.long, device=self.device)
        self.counts = torch.zeros(self.vocab, dtype=torch.float32, device=self.device)
        self.params = torch.zeros(len(STATIC_FIELDS), dtype=torch.float32, device=self.device)  # sample_params
        self.noise = torch.ones(self.vocab, dtype=torch.float32, device=self.device)
        self.args = (self.idx, self.pos, self.counts, self.params, self.noise, *self.cache.tensors())
        self.graph: Any = None  # the captured CUDA graph and its output
        self.out: torch.Tensor | None = None
        self.broken = False  # the capture failed: decode eagerly

    @property
    def model(self) -> GPT:
        model = self._model()
        assert model is not None, "the model is gone: a decoder lives within one generation from it"
        return model

    def seek(self, token: int, pos: int) -> tuple[torch.Tensor, ...]:
        """Set the step's inputs to feed `token` at position `pos`; return them (the step's arguments). After a static
        step they are already set for the next one."""
        self.idx.fill_(token)
        self.pos.fill_(pos)
        return self.args

    def fits(self) -> bool:
        """Whether the model's weights are still where and what they were when this decoder was made."""
        w = self.model.lm_head.weight
        return (w.device, w.dtype) == (self.device, self.dtype) and not self.model.training

    def fast_step(self) -> StepFn | None:
        """The static step to call now (with `args`): the compiled or captured one, or None (decode eagerly)."""
        if self.broken or not ENABLED:
            return None
        if self.device.type == "cuda":
            return self._replay
        state = _compiled.get(self.model)
        if state is None or state.step is None or (state.vocab, state.dtype) != (self.vocab, self.dtype):
            return None
        step = state.step
        return lambda *inputs: step(self.model, *inputs)

    def _replay(self, *inputs: torch.Tensor) -> torch.Tensor:
        """CUDA: capture the step at the first call (the inputs are this decoder's own buffers), replay after."""
        if self.graph is None:
            try:
                with _capture_lock, torch.cuda.device(self.device):
                    self.graph, self.out = self._capture(inputs)
            except Exception:  # noqa: BLE001 - an op that cannot be captured: this decoder decodes eagerly
                self.broken = True
                raise UncapturedError from None
        self.graph.replay()
        assert self.out is not None
        return self.out

    def _capture(self, inputs: tuple[torch.Tensor, ...]) -> tuple[Any, torch.Tensor]:
        moved = (self.idx, self.pos, self.counts)  # the step moves them on: each warm-up starts where the step will
        saved = [t.clone() for t in moved]
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):  # (kernels choose their algorithms on a first call, which must not be captured)
                _full_step(self.model, *inputs)  # (writes this position's keys and values: the step itself will)
                for t, s in zip(moved, saved, strict=True):
                    t.copy_(s)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        # thread_local: another visitor's generation, in another thread, may go on while this one captures
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):
            out = _full_step(self.model, *inputs)
        return graph, out


class UncapturedError(Exception):
    """The step could not be captured as a CUDA graph; the sampler goes on eagerly."""


@contextlib.contextmanager
def decoder(model: GPT, vocab: int) -> Iterator[Decoder]:
    """A decoder for one generation from `model` with a tokenizer of `vocab` tokens: an idle one from its pool, else
    a new one."""
    with _lock:
        pool = _pools.setdefault(model, [])
        d = next((d for d in pool if d.vocab == vocab), None)
        if d is not None:
            pool.remove(d)
    if d is None or not d.fits():
        d = Decoder(model, vocab)
    try:
        yield d
    finally:
        with _lock:
            if len(pool) < POOL:
                pool.append(d)
