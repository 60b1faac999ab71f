"""Sampling: the logits processors and the pick of the next token, as plain functions below the decoding loop.

Each processor is a plain function on a 1-D logits vector, so each can be checked by hand. `process_stages` applies
them in the order HF `transformers` does (penalties, temperature, then top-k / top-p / min-p filters); `pick` draws
the next token from what they leave. `pick_static` is the same pick without a branch on the settings, for the static
decode step (gpt.decode), which takes the settings as data (`sample_params`, from `SampleConfig`'s fields named in
`STATIC_FIELDS`). The loop that drives the model, the decoder and these, and streams the tokens, is gpt.generate.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch.nn import functional as F

from gpt.config import SampleConfig
from gpt.errors import UserInputError
from gpt.model import GPT
from gpt.tokenizer import Tokenizer

NEG_INF = float("-inf")


def repetition_penalty(logits: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    """CTRL / HF: for tokens already present, divide positive logits by `penalty`, multiply negative ones."""
    if penalty == 1.0 or seen.numel() == 0:
        return logits
    out = logits.clone()
    vals = out[seen]
    out[seen] = torch.where(vals > 0, vals / penalty, vals * penalty)
    return out


def presence_frequency_penalty(
    logits: torch.Tensor, counts: torch.Tensor, presence: float, frequency: float
) -> torch.Tensor:
    """OpenAI-style: subtract `presence` once for every token seen and `frequency` times its count."""
    if presence == 0.0 and frequency == 0.0:
        return logits
    return logits - presence * (counts > 0).to(logits.dtype) - frequency * counts.to(logits.dtype)


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the k largest logits (ties at the k-th value kept); k = 0 keeps all."""
    if k <= 0 or k >= logits.size(-1):
        return logits
    kth = torch.topk(logits, k).values[-1]
    return logits.masked_fill(logits < kth, NEG_INF)


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus: keep the smallest set of most likely tokens whose probability sums to at least p."""
    if p >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, descending=True)
    cum = torch.softmax(sorted_logits, dim=-1).cumsum(-1)
    remove = cum - torch.softmax(sorted_logits, dim=-1) >= p  # mass before this token already reaches p
    remove[0] = False
    return logits.masked_fill(remove.scatter(0, order, remove), NEG_INF)


def min_p_filter(logits: torch.Tensor, min_p: float) -> torch.Tensor:
    """Drop tokens whose probability is below min_p times the top token's probability."""
    if min_p <= 0.0:
        return logits
    probs = torch.softmax(logits, dim=-1)
    return logits.masked_fill(probs < min_p * probs.max(), NEG_INF)


STAGES = ("penalties", "temperature", "top-k", "top-p", "min-p")  # the order in which they apply


def process_stages(logits: torch.Tensor, history: torch.Tensor, cfg: SampleConfig) -> Iterator[torch.Tensor]:
    """The logits after each of STAGES in turn (unchanged by a stage that is off); `history` is every token id so
    far (prompt included). The sampler uses the last; the Generate tab's explainer draws them all."""
    logits = logits.float()
    if cfg.repetition_penalty != 1.0 or cfg.presence_penalty or cfg.frequency_penalty:
        counts = torch.bincount(history, minlength=logits.size(-1))[: logits.size(-1)]
        logits = repetition_penalty(logits, torch.nonzero(counts).flatten(), cfg.repetition_penalty)
        logits = presence_frequency_penalty(logits, counts, cfg.presence_penalty, cfg.frequency_penalty)
    yield logits
    if cfg.temperature > 0:  # 0 is greedy: the argmax, which a temperature does not move
        logits = logits / cfg.temperature
    yield logits
    yield (logits := top_k_filter(logits, cfg.top_k))
    yield (logits := top_p_filter(logits, cfg.top_p))
    yield min_p_filter(logits, cfg.min_p)


def process_logits(logits: torch.Tensor, history: torch.Tensor, cfg: SampleConfig) -> torch.Tensor:
    """All processors in order: what the sampler draws from (softmax of it; its argmax at temperature 0)."""
    *_, final = process_stages(logits, history, cfg)
    return final


# The SampleConfig fields the static decode step takes as data, in the order `pick_static` unbinds them. A setting
# that changes what is picked must be here (and in `pick_static`, branch-free) or the fast path would ignore it;
# NOT_STATIC names the rest, which the loop around the step handles (gpt.generate). tests/test_sampling.py checks
# that every SampleConfig field is in exactly one of the two.
STATIC_FIELDS = ("repetition_penalty", "presence_penalty", "frequency_penalty", "temperature", "top_k", "top_p",
                 "min_p")  # fmt: skip
NOT_STATIC = ("max_new_tokens", "seed", "stop")


def sample_params(cfg: SampleConfig, device: torch.device) -> torch.Tensor:
    """The settings `pick_static` takes, as data (`STATIC_FIELDS`, in order): one graph serves every setting (no
    recompile on a slider move)."""
    values = [float(getattr(cfg, name)) for name in STATIC_FIELDS]
    return torch.tensor(values, dtype=torch.float32, device=device)


def pick_static(
    raw: torch.Tensor, counts: torch.Tensor, params: torch.Tensor, noise: torch.Tensor, n_alternatives: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """`process_stages` and `pick` without a branch on the settings or a read back to Python: the static decode
    step's sampler, compiled or captured with the model's step (gpt.decode).

    raw: (V,) float32 logits; counts: (V,) float32 count of each token in the history, updated here with the pick;
    params: `sample_params` (`STATIC_FIELDS`, in order); noise: Exp(1) draws (V,), read only when the temperature is
    above 0. Each setting that is off leaves the logits exactly as they were (penalty 1 divides by 1, top-k 0 keeps
    the k = V largest, ...), so this picks what `pick` picks. Returns the token, the model's probability of it and
    its top alternatives' ids and probabilities (as 0-d / 1-d tensors)."""
    rep, presence, frequency, temperature, top_k, top_p, min_p = params.unbind()  # (STATIC_FIELDS' order)
    seen = counts > 0
    logits = torch.where(seen, torch.where(raw > 0, raw / rep, raw * rep), raw)
    logits = logits - presence * seen.float() - frequency * counts
    logits = torch.where(temperature > 0, logits / temperature.clamp(min=1e-30), logits)
    V = logits.size(-1)
    ordered, order = torch.sort(logits, descending=True)
    k = torch.where(top_k > 0, top_k, float(V)).clamp(1, V).long()
    kth = ordered.gather(0, k.view(1) - 1)  # (ties at the k-th value kept, as top_k_filter keeps them)
    logits = logits.masked_fill(logits < kth, NEG_INF)
    ordered = ordered.masked_fill(ordered < kth, NEG_INF)  # still in order: top-k cut a tail
    p_sorted = torch.softmax(ordered, dim=-1)
    remove = (p_sorted.cumsum(-1) - p_sorted >= top_p) & (torch.arange(V, device=raw.device) > 0) & (top_p < 1)
    logits = logits.masked_fill(remove.scatter(0, order, remove), NEG_INF)
    probs = torch.softmax(logits, dim=-1)
    logits = logits.masked_fill((probs < min_p * probs.max()) & (min_p > 0), NEG_INF)
    probs = torch.softmax(logits, dim=-1)
    drawn = torch.argmax(probs / noise.clamp(min=torch.finfo(probs.dtype).tiny))
    next_id = torch.where(temperature > 0, drawn, torch.argmax(logits))
    counts.index_add_(0, next_id.view(1), torch.ones(1, dtype=counts.dtype, device=counts.device))
    probs_raw = torch.softmax(raw, dim=-1)
    top = torch.topk(probs_raw, min(n_alternatives, V))
    return next_id, probs_raw.gather(0, next_id.view(1))[0], top.indices, top.values


Pick = tuple[int, float, list[tuple[int, float]]]  # a token, the model's probability of it, its top alternatives


@torch.inference_mode()
def pick(
    logits: torch.Tensor,
    history: torch.Tensor,
    cfg: SampleConfig,
    gen: torch.Generator,
    vocab_size: int,
    n_alternatives: int,
) -> Pick:
    """Choose the next token from `logits` (eagerly: `process_logits`, then a draw from `gen`); return it, the
    model's probability of it, and the model's top alternatives. In inference mode inside, never across the
    caller's `yield`: it is thread-local state, and a suspended generator would leave it on in a web server's
    worker thread."""
    raw = logits[:vocab_size].float()  # never pick vocabulary padding
    probs_raw = F.softmax(raw, dim=-1)
    processed = process_logits(raw, history, cfg)
    if cfg.temperature == 0:
        next_id = int(torch.argmax(processed))
    else:
        probs = F.softmax(processed, dim=-1)
        next_id = exponential_race(probs, torch.empty_like(probs).exponential_(generator=gen))
    top = torch.topk(probs_raw, min(n_alternatives, probs_raw.numel()))
    return next_id, float(probs_raw[next_id]), list(zip(top.indices.tolist(), top.values.tolist(), strict=True))


def exponential_race(probs: torch.Tensor, exp_noise: torch.Tensor) -> int:
    """A draw from `probs` given Exp(1) noise: argmax of p / E. The same distribution as torch.multinomial, at a
    fifth of its cost per token on CPU. E is kept above 0: an exact 0 under a filtered-out token (p = 0) would
    make 0/0 = NaN, which argmax would pick."""
    return int(torch.argmax(probs / exp_noise.clamp_(min=torch.finfo(probs.dtype).tiny)))


def window_start(n: int, block: int) -> int:
    """Where the model's view begins when it predicts the token after the first `n` ids, for a context of `block`.

    Inside the context (n <= block) it sees everything. Past it, the view slides in jumps, as a sliding window with
    refill does: when full, it restarts from its last `keep` = ceil(block / 2) tokens and grows by one token a step
    until full again. So the model sees between `keep` and `block` tokens of history (not always the last `block`,
    as re-running the whole window every step would), and the KV cache is refilled (`keep` tokens in one batched
    forward) once every `block - keep + 1` tokens: a token past the context costs about what one inside it costs.
    A function of `n` alone, so the sampler, the explainer (gpt.inspect.next_logits) and a generation restarted
    from its own output all see the same window."""
    if n <= block:
        return 0
    keep = (block + 1) // 2
    # The first refill is at n = block + 1 (window: the last `keep`); the window then grows until it holds `block`.
    return n - keep - (n - block - 1) % (block - keep + 1)


def encode_prompt(tokenizer: Tokenizer, prompt: str) -> list[int]:
    """The ids generation starts from; an empty prompt: the tokenizer's start (unconditional sampling)."""
    ids = tokenizer.encode(prompt) if prompt else []
    return ids or tokenizer.start_ids()  # an empty prompt: unconditional sampling


def sampling_vocab(model: GPT, tokenizer: Tokenizer) -> int:
    """The ids the sampler may pick: the tokenizer's (a model's vocabulary may be padded past them), and never more
    than the model has."""
    return min(tokenizer.vocab_size, model.config.vocab_size)


def checked_ids(ids: Sequence[int], tokenizer: Tokenizer) -> list[int]:
    """Token ids to start from, each checked to be one of the tokenizer's (they may come from an API call)."""
    out = [i for i in ids if isinstance(i, int) and not isinstance(i, bool) and 0 <= i < tokenizer.vocab_size]
    if len(out) != len(ids):
        raise UserInputError(f"token ids must be integers from 0 to {tokenizer.vocab_size - 1}")
    return out or tokenizer.start_ids()
