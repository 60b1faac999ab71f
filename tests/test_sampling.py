"""Logits processors against hand-computed examples, parameter validation, the static step's settings, and the
streaming generator (gpt.generate)."""

from __future__ import annotations

import dataclasses
import math
import weakref
from itertools import islice
from typing import Any

import pytest
import torch

from gpt import decode
from gpt.config import ModelConfig, SampleConfig
from gpt.errors import UserInputError
from gpt.generate import generate, stream
from gpt.inspect import next_logits
from gpt.model import GPT, KVCache
from gpt.sampling import (
    NOT_STATIC,
    STATIC_FIELDS,
    exponential_race,
    min_p_filter,
    pick,
    presence_frequency_penalty,
    process_logits,
    repetition_penalty,
    sample_params,
    top_k_filter,
    top_p_filter,
    window_start,
)
from gpt.tokenizer import ByteTokenizer, CharTokenizer

INF = float("-inf")


def test_repetition_penalty_divides_positive_and_multiplies_negative() -> None:
    logits = torch.tensor([2.0, -1.0, 0.5, 3.0])
    out = repetition_penalty(logits, torch.tensor([0, 1]), 2.0)
    assert out.tolist() == [1.0, -2.0, 0.5, 3.0]


def test_presence_and_frequency_penalties() -> None:
    logits = torch.tensor([1.0, 1.0, 1.0])
    counts = torch.tensor([0, 1, 3])
    out = presence_frequency_penalty(logits, counts, presence=0.5, frequency=0.25)
    assert out.tolist() == [1.0, 0.25, -0.25]


def test_top_k_keeps_k_largest() -> None:
    out = top_k_filter(torch.tensor([1.0, 4.0, 3.0, 2.0]), 2)
    assert out.tolist() == [INF, 4.0, 3.0, INF]
    assert top_k_filter(torch.tensor([1.0, 2.0]), 0).tolist() == [1.0, 2.0]


def test_top_p_keeps_smallest_set_reaching_p() -> None:
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    logits = probs.log()
    kept = top_p_filter(logits, 0.8)  # 0.5 + 0.3 = 0.8 reaches p: the rest go
    assert torch.isfinite(kept).tolist() == [True, True, False, False]
    kept = top_p_filter(logits, 0.81)  # needs the third token too
    assert torch.isfinite(kept).tolist() == [True, True, True, False]
    assert torch.isfinite(top_p_filter(logits, 0.1)).tolist() == [True, False, False, False]


def test_min_p_drops_tokens_below_fraction_of_top() -> None:
    logits = torch.tensor([0.5, 0.3, 0.15, 0.05]).log()
    kept = min_p_filter(logits, 0.4)  # threshold 0.2
    assert torch.isfinite(kept).tolist() == [True, True, False, False]


def test_temperature_scales_logits_before_filters() -> None:
    cfg = SampleConfig(temperature=2.0)
    out = process_logits(torch.tensor([2.0, 4.0]), torch.tensor([], dtype=torch.long), cfg)
    assert out.tolist() == [1.0, 2.0]


@pytest.mark.parametrize(
    "field,value",
    [
        ("top_p", 0.0),
        ("top_p", 1.5),
        ("top_k", -1),
        ("temperature", -1.0),
        ("temperature", math.nan),
        ("min_p", 2.0),
        ("repetition_penalty", 0.0),
        ("max_new_tokens", 0),
        ("max_new_tokens", 10**9),
    ],
)
def test_bad_parameters_get_clear_messages(field: str, value: float) -> None:
    cfg = SampleConfig(**{field: value})
    with pytest.raises(UserInputError, match=field):
        cfg.validate()


def test_every_sampling_setting_reaches_the_static_step_or_is_exempt() -> None:
    """A new SampleConfig field must be named in STATIC_FIELDS (the fast path takes it as data, in pick_static's
    order) or in NOT_STATIC (the loop around the step handles it): else the static step would silently ignore it."""
    names = [f.name for f in dataclasses.fields(SampleConfig)]
    unplaced = set(names) - set(STATIC_FIELDS) - set(NOT_STATIC)
    assert not unplaced, f"SampleConfig fields neither in STATIC_FIELDS nor in NOT_STATIC: {sorted(unplaced)}"
    assert not set(STATIC_FIELDS) & set(NOT_STATIC)
    assert sorted([*STATIC_FIELDS, *NOT_STATIC]) == sorted(names)  # no stale or repeated names either


def test_sample_params_are_in_the_order_pick_static_unbinds_them() -> None:
    cfg = SampleConfig(temperature=0.5, top_k=7, top_p=0.9, repetition_penalty=1.25, min_p=0.05,
                       presence_penalty=0.75, frequency_penalty=-0.5, seed=3, max_new_tokens=9, stop=["x"])  # fmt: skip
    # pick_static: rep, presence, frequency, temperature, top_k, top_p, min_p = params.unbind()
    assert sample_params(cfg, torch.device("cpu")).tolist() == pytest.approx([1.25, 0.75, -0.5, 0.5, 7.0, 0.9, 0.05])


@pytest.fixture(scope="module")
def model() -> GPT:
    torch.manual_seed(0)
    return GPT(ModelConfig(vocab_size=256, block_size=16, n_layer=2, n_head=2, n_embd=32)).eval()


def reference_greedy(model: GPT, ids: list[int], n: int) -> list[int]:
    """Greedy decoding without a cache, cropping to the context as nanoGPT does."""
    out = list(ids)
    for _ in range(n):
        logits, _ = model(torch.tensor([out[-model.config.block_size :]]))
        out.append(int(logits[0, -1].argmax()))
    return out[len(ids) :]


def sliding_start(n: int, block: int) -> int:
    """The refill rule step by step from the first token: when the view would exceed the context, it restarts from
    its last ceil(block / 2) tokens."""
    start = 0
    for m in range(1, n + 1):
        if m - start > block:
            start = m - (block + 1) // 2
    return start


def test_window_start_is_the_step_by_step_refill_rule() -> None:
    for block in (1, 2, 3, 7, 16, 1024):
        assert [window_start(n, block) for n in range(3 * block + 5)] == [
            sliding_start(n, block) for n in range(3 * block + 5)
        ]


def test_greedy_stream_within_the_context_equals_the_no_cache_crop(model: GPT) -> None:
    tok = ByteTokenizer()
    ids = [t.id for t in stream(model, tok, "hello", SampleConfig(max_new_tokens=11, temperature=0))]
    assert ids == reference_greedy(model, tok.encode("hello"), 11)  # 5 + 11 = 16 tokens: the whole context


def test_greedy_past_the_context_is_what_a_fresh_forward_of_the_cached_window_predicts(
    model: GPT, monkeypatch: pytest.MonkeyPatch
) -> None:
    block = model.config.block_size
    caches: list[KVCache] = []
    new_cache = model.new_cache
    monkeypatch.setattr(model, "new_cache", lambda b=1, **kw: caches.append(new_cache(b, **kw)) or caches[-1])
    monkeypatch.setattr(decode, "_pools", weakref.WeakKeyDictionary())  # a decoder (and cache) made in this test
    for prompt in ("hello", "a prompt longer than the context"):
        tok = ByteTokenizer()
        history = tok.encode(prompt)
        tokens = stream(model, tok, prompt, SampleConfig(max_new_tokens=4 * block, temperature=0))
        for t in islice(tokens, 4 * block):  # (a last one may follow: the flush of an incomplete UTF-8 character)
            # The cache holds the window the token was predicted from: its keys and values are those of a
            # fresh forward over exactly those tokens, re-run from position 0, and the token is its argmax.
            window = history[sliding_start(len(history), block) :]
            cache, fresh = caches[-1], new_cache(1)
            with torch.no_grad():
                logits, _ = model(torch.tensor([window]), cache=fresh)
            assert cache.pos == len(window)
            assert torch.allclose(*(torch.stack(c.tensors())[..., : len(window), :] for c in (cache, fresh)), atol=1e-5)
            assert t.id == int(logits[0, -1].argmax())
            history.append(t.id)


def test_a_token_past_the_context_costs_about_what_one_inside_it_costs(
    model: GPT, monkeypatch: pytest.MonkeyPatch
) -> None:
    processed: list[int] = []
    forward = model.forward

    def counting(idx: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        processed.append(idx.size(1))
        return forward(idx, *args, **kwargs)

    monkeypatch.setattr(model, "forward", counting)
    n = 10 * model.config.block_size
    assert len(list(stream(model, ByteTokenizer(), "hi", SampleConfig(max_new_tokens=n, temperature=0)))) >= n
    # Refilling 8 of 16 positions every 9 tokens: under 2 tokens through the model per new token (re-running the
    # whole window every step, as before: about 16).
    assert sum(processed) / n < 2


def test_the_explainer_sees_the_window_the_sampler_saw_past_the_context(model: GPT) -> None:
    tok = ByteTokenizer()
    history = tok.encode("hello")
    n = 4 * model.config.block_size
    for t in islice(stream(model, tok, "hello", SampleConfig(max_new_tokens=n, seed=0)), n):
        assert torch.softmax(next_logits(model, history), -1)[t.id].item() == pytest.approx(t.prob, abs=1e-5)
        history.append(t.id)


@pytest.mark.parametrize(
    "settings",
    [
        dict(temperature=1.0),
        dict(temperature=0.7, top_k=5),
        dict(temperature=1.3, top_p=0.6),
        dict(temperature=0.9, min_p=0.2),
        dict(temperature=0.8, repetition_penalty=1.5, presence_penalty=0.5, frequency_penalty=0.3),
        dict(temperature=0.0, repetition_penalty=1.3),
    ],  # fmt: skip
)
def test_every_sampling_option_runs_past_the_context(model: GPT, settings: dict[str, float]) -> None:
    n = 4 * model.config.block_size  # 5 + 64 tokens: six refills of the cache
    toks = list(stream(model, ByteTokenizer(), "hello", SampleConfig(max_new_tokens=n, seed=0, **settings)))
    assert len(toks) >= n
    assert all(0 <= t.id < 256 and 0.0 <= t.prob <= 1.0 for t in toks)


def test_a_stop_string_past_the_context_ends_generation() -> None:
    torch.manual_seed(0)
    tok = CharTokenizer("ab")
    m = GPT(ModelConfig(vocab_size=2, block_size=8, n_layer=1, n_head=1, n_embd=8)).eval()
    full = generate(m, tok, "a", SampleConfig(max_new_tokens=80, seed=1, temperature=1.0))
    # A 5-character stop first generated at character 20 or later, well past the context of 8. (5: the stream holds
    # back 4 characters, more than it has generated at first.)
    stop = next(full[i : i + 5] for i in range(20, 70) if full.find(full[i : i + 5]) >= 20)
    cut = generate(m, tok, "a", SampleConfig(max_new_tokens=80, seed=1, temperature=1.0, stop=[stop]))
    assert cut == full[: full.index(stop)]


def test_seed_makes_sampling_reproducible(model: GPT) -> None:
    tok = ByteTokenizer()
    a = generate(model, tok, "ab", SampleConfig(max_new_tokens=30, seed=3, temperature=1.0))
    b = generate(model, tok, "ab", SampleConfig(max_new_tokens=30, seed=3, temperature=1.0))
    c = generate(model, tok, "ab", SampleConfig(max_new_tokens=30, seed=4, temperature=1.0))
    assert a == b and a != c


def test_stream_yields_probabilities_and_alternatives(model: GPT) -> None:
    toks = list(stream(model, ByteTokenizer(), "x", SampleConfig(max_new_tokens=5, seed=0, top_k=3)))
    assert len(toks) >= 5
    for t in toks[:5]:
        assert 0.0 < t.prob <= 1.0
        assert len(t.alternatives) == 5
        probs = [p for _, p in t.alternatives]
        assert probs == sorted(probs, reverse=True)


def test_top_k_one_is_greedy(model: GPT) -> None:
    tok = ByteTokenizer()
    greedy = generate(model, tok, "q", SampleConfig(max_new_tokens=20, temperature=0))
    topk1 = generate(model, tok, "q", SampleConfig(max_new_tokens=20, temperature=1.5, top_k=1, seed=9))
    assert greedy == topk1


def test_stop_string_ends_generation_and_is_not_emitted() -> None:
    torch.manual_seed(0)
    tok = CharTokenizer("ab")
    m = GPT(ModelConfig(vocab_size=2, block_size=8, n_layer=1, n_head=1, n_embd=8)).eval()
    full = generate(m, tok, "a", SampleConfig(max_new_tokens=50, seed=1, temperature=1.0))
    assert "ab" in full
    cut = generate(m, tok, "a", SampleConfig(max_new_tokens=50, seed=1, temperature=1.0, stop=["ab"]))
    assert cut == full[: full.index("ab")]


def test_repetition_penalty_changes_output(model: GPT) -> None:
    tok = ByteTokenizer()
    plain = generate(model, tok, "aaaa", SampleConfig(max_new_tokens=30, temperature=0))
    penalised = generate(model, tok, "aaaa", SampleConfig(max_new_tokens=30, temperature=0, repetition_penalty=5.0))
    assert plain != penalised


def test_unseen_prompt_characters_get_a_clear_error() -> None:
    m = GPT(ModelConfig(vocab_size=3, block_size=8, n_layer=1, n_head=1, n_embd=8))
    with pytest.raises(UserInputError, match="never saw"):
        generate(m, CharTokenizer("abc"), "abz", SampleConfig(max_new_tokens=3))


def test_empty_prompt_samples_unconditionally(model: GPT) -> None:
    assert len(list(stream(model, ByteTokenizer(), "", SampleConfig(max_new_tokens=4, seed=0)))) >= 1


def test_sampling_draws_from_the_processed_distribution() -> None:
    # 20,000 draws from known logits: each token's frequency is within 0.015 of its probability (about 5 standard
    # errors), and top-k 2 never draws the other two.
    logits = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))
    gen = torch.Generator().manual_seed(0)
    history = torch.tensor([0])

    def freqs(cfg: SampleConfig) -> torch.Tensor:
        draws = [pick(logits, history, cfg, gen, 4, 0)[0] for _ in range(20_000)]
        return torch.bincount(torch.tensor(draws), minlength=4) / len(draws)

    assert (freqs(SampleConfig(temperature=1.0)) - torch.tensor([0.5, 0.3, 0.15, 0.05])).abs().max() < 0.015
    assert (freqs(SampleConfig(temperature=1.0, top_k=2)) - torch.tensor([0.625, 0.375, 0, 0])).abs().max() < 0.015


def test_sampling_leaves_the_model_in_the_mode_it_found_it() -> None:
    torch.manual_seed(0)
    m = GPT(ModelConfig(vocab_size=256, block_size=16, n_layer=1, n_head=2, n_embd=32, dropout=0.5))
    for training in (True, False):
        m.train(training)
        a = generate(m, ByteTokenizer(), "ab", SampleConfig(max_new_tokens=20, temperature=0))
        b = generate(m, ByteTokenizer(), "ab", SampleConfig(max_new_tokens=20, temperature=0))
        assert a == b  # dropout is off while sampling, even from a model in training mode
        assert m.training is training


def test_the_race_never_picks_a_filtered_token_even_when_the_noise_is_zero() -> None:
    probs = torch.tensor([0.0, 0.7, 0.3, 0.0])  # tokens 0 and 3 were filtered out
    assert exponential_race(probs, torch.tensor([0.0, 1.0, 1.0, 0.0])) == 1
    assert exponential_race(probs, torch.tensor([1.0, 1.0, 0.0, 1.0])) == 2  # zero noise on a live token: it wins


@pytest.mark.parametrize(
    "settings",
    [
        dict(temperature=1.0),
        dict(temperature=0.7, top_k=5),
        dict(temperature=1.3, top_p=0.6),
        dict(temperature=0.9, min_p=0.2, repetition_penalty=1.5, presence_penalty=0.5, frequency_penalty=0.3),
        dict(temperature=0.0, top_k=3),
    ],  # fmt: skip
)
def test_the_explainer_shows_exactly_what_the_sampler_draws_from(settings: dict[str, float]) -> None:
    from gpt.inspect import explain_sampling
    from gpt.sampling import process_logits

    torch.manual_seed(0)
    tok = ByteTokenizer()
    logits, history = torch.randn(tok.vocab_size) * 3, torch.tensor([104, 101, 108, 108, 111, 108])
    cfg = SampleConfig(**settings)
    step = explain_sampling(logits, history.tolist(), cfg, tok, top=40)
    processed = process_logits(logits, history, cfg)  # the sampler's own distribution
    if cfg.temperature == 0:
        expected = torch.zeros_like(processed)
        expected[int(torch.argmax(processed))] = 1.0
    else:
        expected = torch.softmax(processed, dim=-1)
    assert step.final == pytest.approx([float(expected[i]) for i in step.token_ids], abs=1e-7)
    assert step.drawable == int((expected > 0).sum())
    assert step.model == pytest.approx([float(torch.softmax(logits, -1)[i]) for i in step.token_ids], abs=1e-7)
    for p, why in zip(step.final, step.removed_by, strict=True):  # a filter's name marks exactly the removed ones
        assert (why is not None) == (p == 0.0) or cfg.temperature == 0
