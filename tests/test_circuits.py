"""Circuit scores (gpt.circuits): hand-wired heads score what they were wired to do, a trained model grows induction
heads."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import pytest
import torch

from gpt.circuits import head_scores, repeated_tokens
from gpt.config import ModelConfig, load_config, resolve_config_path
from gpt.errors import UserInputError
from gpt.model import GPT
from gpt.tokenizer import GPT2Tokenizer


@pytest.fixture
def one_thread() -> Iterator[None]:
    """These models are small: one thread is faster than two fighting over a busy machine's two cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def previous_token_model() -> GPT:
    """One layer, two heads. Head 0 is wired to attend to the previous position: learned position embeddings are
    one-hot (dimension p for position p), token embeddings zero; head 0's keys read the position, its queries the
    position shifted by one, so query i meets key i - 1 with a score of ~57 and every other key with 0. Head 1's
    queries and keys are zero: it spreads its attention evenly."""
    cfg = ModelConfig(vocab_size=20, block_size=16, n_layer=1, n_head=2, n_embd=32, pos="learned", norm="rmsnorm",
                      bias=False, tie_head=False)  # fmt: skip
    m = GPT(cfg)
    C, hd = cfg.n_embd, cfg.head_dim
    with torch.no_grad():
        m.transformer.wte.weight.zero_()
        m.transformer.wpe.weight.copy_(torch.eye(cfg.block_size, C))  # after rmsnorm: sqrt(32) at dimension p
        w = m.transformer.h[0].attn.c_attn.weight  # rows: [q (C) | k (C) | v (C)], head h at h*hd:(h+1)*hd
        w[: 2 * C].zero_()
        for d in range(hd - 1):
            w[d, d + 1] = 10.0  # head 0's query at position i: dimension i - 1
        for d in range(hd):
            w[C + d, d] = 1.0  # head 0's key at position j: dimension j
    return m


def test_a_head_wired_to_the_previous_token_scores_one() -> None:
    m = previous_token_model()
    s = head_scores(m)
    assert s.seq_len == 8  # half the context of 16
    (prev_head, even_head), (dup_head, _), (ind_head, _) = s.previous_token[0], s.duplicate_token[0], s.induction[0]
    assert prev_head > 0.99
    assert dup_head < 0.01 and ind_head < 0.01  # it looks one step back, nowhere else
    # the even head: 1/(i+1) at each position i, averaged over i = 1..15
    assert even_head == pytest.approx(sum(1 / (i + 1) for i in range(1, 16)) / 15, abs=1e-4)
    assert s.best_per_layer("previous_token") == [prev_head]
    assert s.best_head("previous_token") == (0, 0, prev_head)


def test_a_random_model_has_no_induction_head_and_scores_are_deterministic() -> None:
    torch.manual_seed(0)
    m = GPT(ModelConfig(vocab_size=65, block_size=64, n_layer=2, n_head=4, n_embd=64))
    m.train()
    s = head_scores(m)
    assert m.training  # the mode is restored
    assert len(s.induction) == 2 and all(len(layer) == 4 for layer in s.induction)
    assert max(s.best_per_layer("induction")) < 0.05 and max(s.best_per_layer("duplicate_token")) < 0.05
    assert abs(s.in_context) < 0.1  # nothing to learn from a context it cannot use
    torch.manual_seed(123)  # the global seed does not matter; the scoring seed does
    assert head_scores(m) == s
    assert head_scores(m, seed=1) != s


def test_random_sequences_repeat_never_use_padding_or_end_of_text() -> None:
    m = GPT(ModelConfig(vocab_size=50304, block_size=64, n_layer=1, n_head=2, n_embd=32))
    x = repeated_tokens(m, 32, 4, tokenizer=GPT2Tokenizer())
    assert x.shape == (4, 64) and torch.equal(x[:, :32], x[:, 32:])
    assert int(x.max()) < 50256  # GPT-2's <|endoftext|> is 50256, the padding after it
    assert all(len(set(row[:32].tolist())) == 32 for row in x)  # no duplicates within a repeat
    small = GPT(ModelConfig(vocab_size=5, block_size=64, n_layer=1, n_head=2, n_embd=32))
    assert int(repeated_tokens(small, 32, 2).max()) < 5  # fewer tokens than a repeat: drawn with replacement


def test_bad_arguments_are_refused_with_a_message() -> None:
    m = GPT(ModelConfig(vocab_size=20, block_size=16, n_layer=1, n_head=2, n_embd=32))
    with pytest.raises(UserInputError, match="seq_len must be 2 to 8"):
        head_scores(m, seq_len=9)
    with pytest.raises(UserInputError, match=r"text must be \(batch, 10..16\)"):
        head_scores(m, text=torch.zeros(2, 5, dtype=torch.long))
    with pytest.raises(UserInputError, match="context of at least 4"):
        head_scores(GPT(ModelConfig(vocab_size=20, block_size=3, n_layer=1, n_head=2, n_embd=32)))


def tiny_preset(vocab: int = 65) -> tuple[GPT, list[torch.optim.Optimizer]]:
    cfg = load_config(resolve_config_path("tiny"))
    torch.manual_seed(0)
    m = GPT(replace(cfg.model, vocab_size=vocab))
    return m, m.optimizers(cfg.train, "cpu")


def test_the_tiny_preset_grows_induction_heads_on_repeated_sequences(one_thread: None) -> None:
    """150 steps of the tiny preset (its shape, recipe and learning rates, warmed up over 20 steps) on batches of
    16 repeated random sequences [r, r] of 32 tokens (about 20 s on one core). The loss falls from ln(65) = 4.17
    towards 2.1: the first repeat stays unpredictable, the second is copied."""
    m, opts = tiny_preset()
    before = head_scores(m)
    g = torch.Generator().manual_seed(100)
    for step in range(150):
        x = torch.randint(65, (16, 32), generator=g).repeat(1, 2)
        _, loss = m(x[:, :-1], x[:, 1:])
        assert loss is not None
        loss.backward()
        torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
        for opt in opts:
            for group in opt.param_groups:
                group["lr"] = group["base_lr"] * min(1.0, (step + 1) / 20)
            opt.step()
            opt.zero_grad(set_to_none=True)
    after = head_scores(m)
    print(f"induction per layer: {before.best_per_layer('induction')} -> {after.best_per_layer('induction')}; "
          f"in-context {before.in_context:.2f} -> {after.in_context:.2f}")  # fmt: skip
    assert max(before.best_per_layer("induction")) < 0.05
    assert max(after.best_per_layer("induction")) > 0.3  # clearly an induction head (random: 0.025)
    assert after.best_head("induction")[0] > 0  # not in the first layer: it needs a previous-token head before it
    assert abs(before.in_context) < 0.1 and after.in_context < -2  # the second repeat's loss falls, the first's not
    # on "text" of the same kind, late (the second repeat) minus early (the first): the same story
    text = repeated_tokens(m, 32, 4, seed=7)
    on_text = head_scores(m, text=text)
    assert on_text.in_context_on == "text" and on_text.in_context < -2
