"""The model: shapes, causality, the three attention paths agree, init loss, learning, hook points."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from gpt.config import ModelConfig
from gpt.model import GPT, record, rope_angles


def tiny(**kw: object) -> GPT:
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=50, block_size=16, n_layer=2, n_head=2, n_embd=32, **kw)
    return GPT(cfg).eval()


def test_shapes_and_loss() -> None:
    m = tiny()
    x = torch.randint(0, 50, (3, 10))
    logits, loss = m(x, x)
    assert logits.shape == (3, 10, 50)
    assert loss is not None and loss.ndim == 0
    last, _ = m(x, last_only=True)
    assert last.shape == (3, 1, 50)
    assert torch.allclose(last[:, 0], logits[:, -1], atol=1e-6)


def test_causality_future_tokens_do_not_change_earlier_logits() -> None:
    m = tiny()
    x = torch.randint(0, 50, (1, 12))
    y = x.clone()
    y[0, 7:] = (y[0, 7:] + 1) % 50
    a, _ = m(x)
    b, _ = m(y)
    assert torch.allclose(a[0, :7], b[0, :7], atol=1e-6)
    assert not torch.allclose(a[0, 7:], b[0, 7:], atol=1e-3)


@pytest.mark.parametrize("bias", [True, False])
def test_sdpa_explicit_and_kv_cache_paths_agree(bias: bool) -> None:
    m = tiny(bias=bias)
    x = torch.randint(0, 50, (2, 16))
    fast, _ = m(x)
    inspected = m.forward_inspect(x)
    assert (fast - inspected.logits).abs().max() < 1e-5
    cache = m.new_cache(2)
    parts = [m(x[:, :5], cache=cache)[0]] + [m(x[:, i : i + 1], cache=cache)[0] for i in range(5, 9)]
    parts.append(m(x[:, 9:], cache=cache)[0])  # a multi-token chunk after cached positions (masked SDPA)
    cached = torch.cat(parts, dim=1)
    assert (fast - cached).abs().max() < 1e-5


def test_attention_probabilities_are_causal_distributions() -> None:
    m = tiny()
    out = m.forward_inspect(torch.randint(0, 50, (1, 9)))
    assert len(out.attentions) == 2 and len(out.hidden_states) == 3
    att = out.attentions[0]
    assert att.shape == (1, 2, 9, 9)
    assert torch.allclose(att.sum(-1), torch.ones(1, 2, 9), atol=1e-6)
    assert torch.all(att.triu(diagonal=1) == 0)
    # the logit lens on the last hidden state is the model's own output
    assert torch.allclose(m.logit_lens(out.hidden_states[-1]), out.logits, atol=1e-5)


def test_loss_at_init_is_about_ln_vocab() -> None:
    torch.manual_seed(0)
    m = GPT(ModelConfig(vocab_size=65, block_size=32, n_layer=2, n_head=2, n_embd=64))
    x = torch.randint(0, 65, (8, 32))
    _, loss = m(x, torch.randint(0, 65, (8, 32)))
    assert abs(float(loss) - math.log(65)) < 0.1


def test_weight_tying_and_param_count() -> None:
    m = tiny()
    assert m.lm_head.weight is m.transformer.wte.weight
    total = sum(p.numel() for p in m.parameters())
    assert m.num_params() == total - 16 * 32
    assert m.num_params(non_embedding=False) == total


def test_residual_projections_use_scaled_init() -> None:
    torch.manual_seed(0)
    m = GPT(ModelConfig(vocab_size=50, block_size=16, n_layer=8, n_head=4, n_embd=256))
    std = m.transformer.h[0].attn.c_proj.weight.std().item()
    assert abs(std - 0.02 / math.sqrt(16)) < 0.001
    assert abs(m.transformer.h[0].mlp.c_fc.weight.std().item() - 0.02) < 0.001


def test_tiny_model_overfits_one_batch() -> None:
    # A 2-layer model memorising 4 sequences of 16 tokens: the loss must fall from ln(50) ~ 3.9 to near zero.
    # 0.1 leaves a wide margin (it reaches ~0.01 in 200 steps) while being far below what guessing gives.
    m = tiny().train()
    x = torch.randint(0, 50, (4, 17))
    opt = m.optimizer(3e-3, 0.0, (0.9, 0.99), "cpu")
    for _ in range(200):
        _, loss = m(x[:, :-1], x[:, 1:])
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss) < 0.1


def test_sequence_longer_than_context_is_refused() -> None:
    with pytest.raises(ValueError, match="context length"):
        tiny()(torch.zeros(1, 17, dtype=torch.long))


def test_grouped_query_attention_is_multi_head_attention_with_shared_keys_and_values() -> None:
    """n_kv_head=2 of 4 heads: query head i reads key/value head i // 2 (Llama's grouping). The same model written as
    ordinary multi-head attention, each key/value head copied for both of its query heads, gives the same logits, and
    the fast, explicit and cached paths agree."""
    torch.manual_seed(0)
    kw = dict(vocab_size=50, block_size=16, n_layer=2, n_head=4, n_embd=32, pos="rope", norm="rmsnorm", bias=False,
              qk_norm=True, norm_gain=True)  # fmt: skip
    gqa = GPT(ModelConfig(**kw, n_kv_head=2)).eval()  # type: ignore[arg-type]
    mha = GPT(ModelConfig(**kw)).eval()  # type: ignore[arg-type]
    with torch.no_grad():
        for p in gqa.parameters():  # norm gains other than 1, so that the test sees them
            if p.dim() == 1:
                p.uniform_(0.5, 1.5)
    state = gqa.state_dict()
    for key, w in list(state.items()):
        if key.endswith("attn.c_attn.weight"):  # [q | k | v], heads of 8: k and v each head twice
            q, k, v = w.split([32, 16, 16])
            k, v = (t.view(2, 8, 32).repeat_interleave(2, dim=0).reshape(32, 32) for t in (k, v))
            state[key] = torch.cat([q, k, v])
    mha.load_state_dict(state)
    x = torch.randint(0, 50, (2, 16))
    fast, _ = gqa(x)
    assert (fast - mha(x)[0]).abs().max() < 1e-5
    assert (fast - gqa.forward_inspect(x).logits).abs().max() < 1e-5
    cache = gqa.new_cache(2)
    assert cache.layers[0][0].shape == (2, 2, 16, 8)  # the cache holds only the key/value heads
    parts = [gqa(x[:, :5], cache=cache)[0]] + [gqa(x[:, i : i + 1], cache=cache)[0] for i in range(5, 9)]
    parts.append(gqa(x[:, 9:], cache=cache)[0])
    assert (fast - torch.cat(parts, dim=1)).abs().max() < 1e-5
    assert gqa.transformer.h[0].attn.c_attn.weight.shape == (64, 32)  # 4 query heads + 2 + 2 of 8
    assert GPT.size_of(gqa.config) < GPT.size_of(mha.config)


def test_n_kv_head_must_divide_n_head_and_zero_means_n_head() -> None:
    from gpt.errors import UserInputError

    with pytest.raises(UserInputError, match="n_kv_head.*must divide"):
        ModelConfig(n_head=4, n_kv_head=3).validate()
    assert ModelConfig(n_head=4).kv_heads == 4
    # n_kv_head = n_head is the plain model: an older checkpoint's c_attn (3 x n_embd) loads into it unchanged
    old = tiny().state_dict()
    tiny(n_kv_head=2).load_state_dict(old)


# Hook points: identities that change nothing unhooked, and let a plain forward hook read or replace an activation.

SWITCHES = {
    "gpt2": {},
    "modern": dict(pos="rope", norm="rmsnorm", activation="relu2", qk_norm=True, bias=False, tie_head=False),
    "llama": dict(pos="rope", norm="rmsnorm", activation="swiglu", qk_norm=True, norm_gain=True, n_kv_head=1),
}


def written_out(m: GPT, idx: torch.Tensor) -> torch.Tensor:
    """The forward pass as it was before hook points (nanoGPT's blocks, SDPA attention), from the model's own
    weights: the reference an unhooked model must equal bit for bit."""
    cfg, h = m.config, m.transformer
    B, T = idx.shape
    x, rope = h.wte(idx), None
    if cfg.pos == "rope":
        rope = rope_angles(cfg, torch.arange(T))
    else:
        x = x + h.wpe.weight[:T]
    for block in h.h:
        attn, mlp = block.attn, block.mlp
        q, k, v = attn._qkv(block.ln_1(x), rope)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=attn.n_kv_head != attn.n_head)
        x = x + attn.c_proj(y.transpose(1, 2).contiguous().view(B, T, cfg.n_embd))
        u = mlp.c_fc(block.ln_2(x))
        if cfg.activation == "relu2":
            u = F.relu(u).square()
        elif cfg.activation == "swiglu":
            gate, value = u.chunk(2, dim=-1)
            u = F.silu(gate) * value
        else:
            u = F.gelu(u, approximate="tanh")
        x = x + mlp.c_proj(u)
    return m.lm_head(h.ln_f(x))


@pytest.mark.parametrize("switches", SWITCHES.values(), ids=SWITCHES.keys())
def test_unhooked_hook_points_change_nothing(switches: dict[str, object]) -> None:
    m = tiny(**switches)
    x = torch.randint(0, 50, (2, 16))
    with torch.no_grad():
        assert torch.equal(m(x)[0], written_out(m, x))
        # a hook that reads (returns None) anywhere but the pattern keeps SDPA: still the same bits
        seen: list[torch.Tensor] = []
        handle = m.transformer.h[1].attn.hook_z.register_forward_hook(lambda _m, _a, out: seen.append(out))
        assert torch.equal(m(x)[0], written_out(m, x)) and seen[0].shape == (2, 2, 16, 16)
        handle.remove()
        m.forward_inspect(x)  # (hooks every point, then removes them all)
        assert not any(p.hooked for p in m.hook_points().values())
        assert torch.equal(m(x)[0], written_out(m, x))
    # hook points hold nothing: a checkpoint's keys are the weights' alone
    assert not any("hook" in k for k in m.state_dict())
    names = [n for n in m.hook_points() if n.startswith("transformer.h.0.")]
    assert names == [f"transformer.h.0.{n}" for n in ("attn.hook_pattern", "attn.hook_z", "mlp.hook_post",
                                                      "hook_mlp_out", "hook_resid_post")]  # fmt: skip


def test_a_plain_forward_hook_reads_the_attention_pattern() -> None:
    m = tiny(pos="rope", n_kv_head=1)
    x = torch.randint(0, 50, (1, 9))
    patterns: list[torch.Tensor] = []
    point = m.transformer.h[1].attn.hook_pattern
    handle = point.register_forward_hook(lambda _m, _a, out: patterns.append(out))
    assert point.hooked
    with torch.no_grad():
        logits, _ = m(x)
    handle.remove()
    (att,) = patterns
    assert att.shape == (1, 2, 9, 9) and torch.all(att.triu(diagonal=1) == 0)
    assert torch.allclose(att.sum(-1), torch.ones(1, 2, 9), atol=1e-6)
    assert torch.allclose(att, m.forward_inspect(x).attentions[1]) and not point.hooked
    assert (logits - m(x)[0]).abs().max() < 1e-5  # the explicit path it took: the same logits, up to rounding


def test_a_hook_that_returns_a_tensor_replaces_the_activation() -> None:
    """Zeroing layer 1's MLP output with a hook is forward_inspect's MLP ablation."""
    from gpt.model import Ablation

    m = tiny()
    x = torch.randint(0, 50, (1, 9))
    with torch.no_grad(), m.hooks([("transformer.h.0.hook_mlp_out", lambda _m, _a, out: torch.zeros_like(out))]):
        ablated, _ = m(x)
    assert torch.allclose(ablated, m.forward_inspect(x, Ablation(layer=0)).logits, atol=1e-5)
    assert (ablated - m(x)[0]).abs().max() > 1e-3
    with (
        pytest.raises(KeyError, match="no hook point 'transformer.h.9.hook_z'"),
        m.hooks([("transformer.h.9.hook_z", record([]))]),
    ):
        pass


def test_hooks_fire_only_in_the_thread_that_registered_them() -> None:
    """The web UI's tabs share a model: one tab's inspection must not record (or ablate) another's forward pass."""
    import threading

    m = tiny()
    x = torch.randint(0, 50, (1, 9))
    seen: list[torch.Tensor] = []
    with torch.no_grad(), m.hooks([("transformer.h.1.hook_resid_post", record(seen))]):
        other = threading.Thread(target=m, args=(x,))
        other.start()
        other.join()
        assert seen == []
        m(x)
    assert len(seen) == 1 and seen[0].shape == (1, 9, 32)
