"""Circuit scores (gpt.circuits): hand-wired heads score what they were wired to do, a trained model grows induction
heads. Ablation and direct logit attribution (gpt.inspect): nothing ablated is the identity, an ablation is the same
as cutting the weights, the attribution's parts add up to the logit, for every switch of the model."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import pytest
import torch

from gpt.circuits import even_score, head_scores, repeated_tokens
from gpt.config import ModelConfig, SampleConfig, load_config, resolve_config_path
from gpt.errors import UserInputError
from gpt.generate import generate
from gpt.inspect import Component, ablate, attribute
from gpt.model import GPT, Ablation
from gpt.tokenizer import CharTokenizer, GPT2Tokenizer


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """These models are small: one thread is faster than two fighting over a busy machine's two cores (a 20 ms
    test took 20 s so)."""
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
    assert s.induction[0][1] == pytest.approx(even_score(8), abs=1e-4)  # what "no pattern" reads as
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


@pytest.mark.slow
def test_the_tiny_preset_grows_induction_heads_on_repeated_sequences() -> None:
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


# Ablation and direct logit attribution, on small random models with every switch of the architecture.

TEXT = "the cat sat on the mat. the dog sat on the log.\n"
CHARS = CharTokenizer.from_text(TEXT)  # 17 characters; the models' vocabularies are padded past them
SWITCHES = {
    "gpt2": dict(pos="learned", norm="layernorm", activation="gelu", bias=True, tie_head=True),
    "modern": dict(pos="rope", norm="rmsnorm", activation="relu2", qk_norm=True, bias=False, tie_head=False),
    "qwen3-like": dict(
        pos="rope",
        norm="rmsnorm",
        norm_gain=True,
        activation="swiglu",
        qk_norm=True,
        n_kv_head=1,
        bias=False,
        tie_head=False,
    ),  # fmt: skip
    "layernorm, no bias": dict(pos="learned", norm="layernorm", activation="relu2", bias=False, tie_head=True),
}


def random_model(**switches: object) -> GPT:
    """Weights far from their init (norm gains and biases too), so every part of the model matters."""
    torch.manual_seed(0)
    m = GPT(ModelConfig(vocab_size=24, block_size=32, n_layer=2, n_head=4, n_embd=32, **switches))
    with torch.no_grad():
        for name, p in m.named_parameters():
            gain = p.dim() == 1 and name.endswith("weight")  # a norm's: around 1
            p.copy_((1.0 if gain else 0.0) + 0.3 * torch.randn_like(p))
    return m.eval()


@pytest.mark.parametrize("switches", SWITCHES.values(), ids=SWITCHES.keys())
def test_inspected_pass_is_the_forward_pass_and_its_parts_make_the_residual(switches: dict[str, object]) -> None:
    m = random_model(**switches)
    x = torch.tensor([CHARS.encode(TEXT[:20])])
    out = m.forward_inspect(x)
    assert torch.allclose(out.logits, m(x)[0], atol=1e-4)
    assert out.head_outputs[0].shape == (1, 4, 20, 8) and out.mlp_outputs[1].shape == (1, 20, 32)
    with pytest.raises(ValueError, match="no such component"):
        m.forward_inspect(x, Ablation(layer=2))


def test_ablating_nothing_is_the_identity() -> None:
    m = random_model(**SWITCHES["modern"])
    r = ablate(m, CHARS, "the cat", None)
    assert r.ablated == r.original and r.component is None and r.ablated_probs == r.original_probs
    assert len(r.original.next_tokens) == 10 and abs(sum(p for _, p in r.original.next_tokens) - 1) < 0.5
    assert r.original.loss is not None and r.original.loss > 0
    # the greedy continuation is the sampler's at temperature 0
    greedy = generate(m, CHARS, "the cat", SampleConfig(temperature=0.0, max_new_tokens=20))
    assert r.original.continuation == greedy and len(greedy) == 20
    assert ablate(m, CHARS, "t", None).original.loss is None  # one token: nothing to predict within it


def cut(m: GPT, c: Component) -> GPT:
    """A copy of `m` whose weights cannot produce component `c`'s output: a head's columns of c_proj zeroed (its
    output's only way into the residual stream), or an MLP's output projection and bias zeroed."""
    import copy

    m = copy.deepcopy(m)
    with torch.no_grad():
        block = m.transformer.h[c.layer]
        if c.head is None:
            block.mlp.c_proj.weight.zero_()
            if block.mlp.c_proj.bias is not None:
                block.mlp.c_proj.bias.zero_()
        else:
            hd = m.config.head_dim
            block.attn.c_proj.weight[:, c.head * hd : (c.head + 1) * hd] = 0
    return m


@pytest.mark.parametrize("component", [Component(0, 1), Component(1, 3), Component(0), Component(1)], ids=str)
def test_zero_ablation_is_cutting_the_weights(component: Component) -> None:
    m = random_model(**SWITCHES["gpt2"])
    r = ablate(m, CHARS, "the dog sat", component, "zero")
    cut_r = ablate(cut(m, component), CHARS, "the dog sat", None)
    assert r.ablated.loss == pytest.approx(cut_r.original.loss, abs=1e-5)
    assert r.ablated.continuation == cut_r.original.continuation
    assert r.ablated.next_token_ids == cut_r.original.next_token_ids
    assert r.ablated.next_tokens != r.original.next_tokens  # and the component did something
    # the chart's candidates: both top-10s, each with its probability under both
    assert set(r.candidate_ids) == set(r.original.next_token_ids) | set(r.ablated.next_token_ids)
    assert dict(zip(r.candidates, r.ablated_probs, strict=True))[r.ablated.next_tokens[0][0]] == pytest.approx(
        r.ablated.next_tokens[0][1]
    )
    assert r.original == ablate(m, CHARS, "the dog sat", None).original


def test_mean_ablation_puts_the_prompts_mean_output_at_every_position() -> None:
    """Mean-ablating head 2 of layer 1 is cutting its columns of c_proj and adding, through them, its mean output
    over the prompt to c_proj's bias."""
    m = random_model(**SWITCHES["gpt2"])
    ids = torch.tensor([CHARS.encode("the dog sat")])
    mean = m.forward_inspect(ids).head_outputs[0][0, 1].mean(dim=0)  # (head_dim,)
    r = ablate(m, CHARS, "the dog sat", Component(0, 1), "mean")
    surgery = cut(m, Component(0, 1))
    hd = m.config.head_dim
    with torch.no_grad():
        w = m.transformer.h[0].attn.c_proj.weight[:, hd : 2 * hd]
        surgery.transformer.h[0].attn.c_proj.bias += w @ mean
    with torch.no_grad():
        _, loss = surgery(ids[:, :-1], ids[:, 1:])
    assert r.ablated.loss == pytest.approx(float(loss), abs=1e-5)
    assert r.ablated.loss != pytest.approx(ablate(m, CHARS, "the dog sat", Component(0, 1), "zero").ablated.loss)


def test_ablation_refuses_what_the_model_lacks() -> None:
    m = random_model(**SWITCHES["modern"])
    with pytest.raises(UserInputError, match="head 5 is not in this model: each layer has heads 1 to 4"):
        ablate(m, CHARS, "the", Component(0, 4))
    with pytest.raises(UserInputError, match="layer 3 is not in this model: it has layers 1 to 2"):
        ablate(m, CHARS, "the", Component(2))
    with pytest.raises(UserInputError, match="zero or mean"):
        ablate(m, CHARS, "the", Component(0), "half")  # type: ignore[arg-type]
    with pytest.raises(UserInputError, match="never saw"):
        ablate(m, CHARS, "the €", Component(0))


@pytest.mark.parametrize("switches", SWITCHES.values(), ids=SWITCHES.keys())
def test_logit_attribution_parts_add_up_to_the_logit(switches: dict[str, object]) -> None:
    m = random_model(**switches)
    a = attribute(m, CHARS, TEXT[:30])
    assert a.top and a.token_id == int(m(torch.tensor([CHARS.encode(TEXT[:30])]))[0][0, -1, :17].argmax())
    assert sum(a.contributions) + a.norm_bias == pytest.approx(a.logit, abs=1e-4)
    heads = [c for c in a.components if " H" in c]
    assert len(heads) == 8 and a.components[-1] == "L2 MLP"
    assert ("position embedding" in a.components) == (switches["pos"] == "learned")
    assert ("L1 attn bias" in a.components) == switches["bias"]
    assert (a.norm_bias != 0) == (switches["norm"] == "layernorm" and switches["bias"])
    assert a.norm_scale > 0
    other = attribute(m, CHARS, TEXT[:30], "␣")  # a space, as the charts label it
    assert other.token_id == CHARS.encode(" ")[0] and other.token == "␣"
    assert sum(other.contributions) + other.norm_bias == pytest.approx(other.logit, abs=1e-4)


def test_logit_attribution_refuses_what_is_not_one_token() -> None:
    m = random_model(**SWITCHES["modern"])
    with pytest.raises(UserInputError, match="'ca' is 2 tokens for this tokenizer"):
        attribute(m, CHARS, "the", "ca")
    with pytest.raises(UserInputError, match="not a token this model knows"):
        attribute(m, CHARS, "the", "€")
    with pytest.raises(UserInputError, match="enter a prompt"):
        attribute(m, CHARS, "", "")
