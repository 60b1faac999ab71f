"""Sampling: logits processors and a streaming generator with a KV cache.

Each processor is a plain function on a 1-D logits vector, so each can be checked by hand. `stream()`
applies them in the order HF `transformers` does (penalties, temperature, then top-k / top-p / min-p
filters) and yields every new token with its probability and the model's top alternatives.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch
from torch.nn import functional as F

from gpt.config import SampleConfig
from gpt.errors import UserInputError
from gpt.model import GPT, KVCache
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


def sample_params(cfg: SampleConfig, device: torch.device) -> torch.Tensor:
    """The settings `pick_static` takes, as data: one graph serves every setting (no recompile on a slider move)."""
    values = [cfg.repetition_penalty, cfg.presence_penalty, cfg.frequency_penalty, cfg.temperature, cfg.top_k,
              cfg.top_p, cfg.min_p]  # fmt: skip
    return torch.tensor(values, dtype=torch.float32, device=device)


def pick_static(
    raw: torch.Tensor, counts: torch.Tensor, params: torch.Tensor, noise: torch.Tensor, n_alternatives: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """`process_stages` and `_pick` without a branch on the settings or a read back to Python: the static decode
    step's sampler, compiled or captured with the model's step (gpt.decode).

    raw: (V,) float32 logits; counts: (V,) float32 count of each token in the history, updated here with the pick;
    params: `sample_params`; noise: Exp(1) draws (V,), read only when the temperature is above 0. Each setting that
    is off leaves the logits exactly as they were (penalty 1 divides by 1, top-k 0 keeps the k = V largest, ...), so
    this picks what `_pick` picks. Returns the token, the model's probability of it and its top alternatives' ids and
    probabilities (as 0-d / 1-d tensors)."""
    rep, presence, frequency, temperature, top_k, top_p, min_p = params.unbind()
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


@dataclass
class Token:
    """One generated token, as the stream yields it."""

    id: int
    text: str  # the new text this token completes (may be "" while a UTF-8 character is incomplete)
    prob: float  # the model's probability of this token (softmax of the raw logits)
    alternatives: list[tuple[str, float]]  # the model's top alternatives at this step: (token text, probability)
    alternative_ids: list[int] = field(default_factory=list)  # their token ids, in the same order (to branch from)


def stream(
    model: GPT,
    tokenizer: Tokenizer,
    prompt: str | Sequence[int],
    cfg: SampleConfig,
    n_alternatives: int = 5,
) -> Iterator[Token]:
    """Generate token by token after `prompt`: text, or token ids (to continue exactly from a sequence, as a branch
    does from a prefix and a token chosen in place of the model's). Stops after `max_new_tokens` or when a stop string
    appears (not emitted); the text yielded is the continuation's only."""
    cfg.validate()
    ids = encode_prompt(tokenizer, prompt) if isinstance(prompt, str) else checked_ids(prompt, tokenizer)
    decoder = tokenizer.stream_decoder()
    text, emitted = "", 0  # generated text so far, and how much of it was yielded
    hold = max((len(s) for s in cfg.stop), default=1) - 1  # chars held back that could start a stop string
    was_training = model.training
    if was_training:  # (switching modes walks every module: worth skipping when sampling from an eval model)
        model.eval()
    last = ids[-1]
    try:
        vocab = sampling_vocab(model, tokenizer)
        picks = _picks(model, ids, cfg, vocab, min(n_alternatives, vocab))
        for n, (next_id, prob, top) in enumerate(picks):
            last = next_id
            alternatives = [(tokenizer.token_text(i), p) for i, p in top]
            alternative_ids = [i for i, _ in top]
            text += decoder.push(next_id)
            stop_at = _find_stop(text, cfg.stop)
            if stop_at is not None:
                if stop_at > emitted:
                    yield Token(next_id, text[emitted:stop_at], prob, alternatives, alternative_ids)
                return
            # (max: while the text is shorter than `hold`, len - hold is negative, and as a slice's end it would
            # emit text that could still start a stop string, and emit it again later)
            ready = max(emitted, len(text) - hold) if cfg.stop else len(text)
            yield Token(next_id, text[emitted:ready], prob, alternatives, alternative_ids)
            emitted = ready
            if n + 1 == cfg.max_new_tokens:
                break
        tail = text + decoder.flush()
        if len(tail) > emitted:
            yield Token(last, tail[emitted:], 0.0, [])
    finally:
        if was_training:
            model.train()


def _picks(model: GPT, ids: list[int], cfg: SampleConfig, vocab: int, n_alternatives: int) -> Iterator[Pick]:
    """The generated tokens after `ids`, endlessly: each with the model's probability of it and its top
    alternatives; never an id past the tokenizer's `vocab` (the model's vocabulary may be padded). The static step
    (gpt.decode: compiled on a CPU, a CUDA graph on a GPU) makes each token where it is
    ready; the eager forward and `_pick` make the first, those after the window moved, and all of them elsewhere.
    Both pick the same tokens from the same random draws."""
    from gpt.decode import N_ALTERNATIVES, UncapturedError, decoder  # (gpt.decode builds on this module's pick_static)

    device = model.lm_head.weight.device
    gen = torch.Generator(device=device)
    if cfg.seed is not None:
        gen.manual_seed(cfg.seed)
    else:
        gen.seed()
    block = model.config.block_size
    history = torch.empty(len(ids) + cfg.max_new_tokens, dtype=torch.long, device=device)
    history[: len(ids)] = torch.tensor(ids, dtype=torch.long)
    n, last = len(ids), ids[-1]
    fast, seeked = None, False  # the static step, and whether its inputs already hold (last, cache.pos)
    with decoder(model, vocab) as d:
        cache = d.cache
        cache.reset()
        with torch.inference_mode():
            d.counts.zero_().index_add_(0, history[:n], torch.ones(n, device=device))
            d.params.copy_(sample_params(cfg, device))
        pending: list[int] = []  # the static step's tokens, not yet in `history` (written when the eager path needs it)
        while True:
            if fast is None and n_alternatives <= N_ALTERNATIVES and d.fits():
                fast = d.fast_step()  # (becomes ready when the background compile is done)
            if fast is not None and cache.pos == n - 1 - window_start(n, block):  # the cache holds all but `last`
                with torch.inference_mode():
                    before = gen.get_state() if d.graph is None and d.device.type == "cuda" else None
                    if cfg.temperature > 0:  # (drawn as `_pick` draws them: the same seed, the same tokens)
                        d.noise.exponential_(generator=gen)
                    args = d.args if seeked else d.seek(last, cache.pos)
                    try:
                        out = fast(*args).tolist()
                    except UncapturedError:  # (the eager path draws this token's noise again: rewind)
                        if before is not None:
                            gen.set_state(before)
                        fast = None
                        continue
                cache.pos += 1
                seeked = True
                next_id, prob = int(out[0]), out[1]
                k = 2 + (len(out) - 2) // 2  # (out: token, probability, the alternatives' ids, their probabilities)
                top = [(int(i), p) for i, p in zip(out[2:k], out[k:], strict=True)][:n_alternatives]
            else:
                while n > history.numel():  # (past max_new_tokens: the caller did not stop asking; make room)
                    history = torch.cat([history, torch.empty_like(history)])
                if pending:
                    history[n - len(pending) : n] = torch.tensor(pending, device=device)
                    pending.clear()
                logits = _forward(model, cache, history[:n], block)
                next_id, prob, top = _pick(logits, history[:n], cfg, gen, vocab, n_alternatives)
                seeked = False
                with torch.inference_mode():
                    d.counts[next_id] += 1
            pending.append(next_id)
            last = next_id
            n += 1
            yield next_id, prob, top


Pick = tuple[int, float, list[tuple[int, float]]]  # a token, the model's probability of it, its top alternatives


# Inference mode is entered and left inside these helpers, never held across a `yield`: it is thread-local
# state, and a suspended generator would leave it switched on in a web server's worker thread.


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


@torch.inference_mode()
def _forward(model: GPT, cache: KVCache, history: torch.Tensor, block: int) -> torch.Tensor:
    """Logits for the next position: feed the new token, or, when starting or when the window moved, refill the
    cache from the window (see `window_start`)."""
    start = window_start(history.numel(), block)
    if cache.pos != history.numel() - 1 - start:  # the cache does not hold the window but its newest token
        # Positions are learned absolute embeddings, baked into the cached keys: the window cannot be kept by
        # shifting them, so it is re-run from position 0.
        cache.reset()
        return model(history[start:].view(1, -1), cache=cache, last_only=True)[0][0, -1]
    return model(history[-1:].view(1, 1), cache=cache, last_only=True)[0][0, -1]


@torch.inference_mode()
def _pick(
    logits: torch.Tensor,
    history: torch.Tensor,
    cfg: SampleConfig,
    gen: torch.Generator,
    vocab_size: int,
    n_alternatives: int,
) -> tuple[int, float, list[tuple[int, float]]]:
    """Choose the next token; return it, the model's probability of it, and the model's top alternatives."""
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


def generate(model: GPT, tokenizer: Tokenizer, prompt: str, cfg: SampleConfig) -> str:
    """The whole continuation as one string."""
    return "".join(t.text for t in stream(model, tokenizer, prompt, cfg))


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


def _find_stop(text: str, stops: list[str]) -> int | None:
    hits = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(hits) if hits else None
