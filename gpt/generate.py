"""Generation: the loop that drives the model, the decoder and the sampler, and streams the tokens it makes.

`stream()` yields every new token with its probability and the model's top alternatives; `generate()` joins them.
Each token is made by the static decode step where it is ready (gpt.decode: compiled on a CPU, a CUDA graph on a
GPU), else by the eager forward with the KV cache and `gpt.sampling.pick`; both pick the same tokens from the same
random draws. The sampling itself (processors, picks) stays plain functions below, in gpt.sampling.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch

from gpt.config import SampleConfig
from gpt.decode import N_ALTERNATIVES, UncapturedError, decoder
from gpt.model import GPT, KVCache
from gpt.sampling import Pick, checked_ids, encode_prompt, pick, sample_params, sampling_vocab, window_start
from gpt.tokenizer import Tokenizer


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
    ready; the eager forward and `pick` make the first, those after the window moved, and all of them elsewhere.
    Both pick the same tokens from the same random draws."""
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
                    if cfg.temperature > 0:  # (drawn as `pick` draws them: the same seed, the same tokens)
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
                next_id, prob, top = pick(logits, history[:n], cfg, gen, vocab, n_alternatives)
                seeked = False
                with torch.inference_mode():
                    d.counts[next_id] += 1
            pending.append(next_id)
            last = next_id
            n += 1
            yield next_id, prob, top


# Inference mode is entered and left inside the helpers (`_forward`, `pick`), never held across a `yield`: it is
# thread-local state, and a suspended generator would leave it switched on in a web server's worker thread.


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


def generate(model: GPT, tokenizer: Tokenizer, prompt: str, cfg: SampleConfig) -> str:
    """The whole continuation as one string."""
    return "".join(t.text for t in stream(model, tokenizer, prompt, cfg))


def _find_stop(text: str, stops: list[str]) -> int | None:
    hits = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(hits) if hits else None
