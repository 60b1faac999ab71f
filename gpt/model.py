"""The GPT-2 architecture in one file, in the spirit of nanoGPT's model.py, with the modern recipe's switches.

GPT-2 (2019): token + learned position embeddings, pre-LayerNorm blocks (causal multi-head self-attention, GELU
MLP), residual connections, a final LayerNorm and a language-model head tied to the token embedding.
The switches in `ModelConfig` (each a plain branch below) turn it into the recipe nanochat and modded-nanogpt train:
rotary positions (`pos="rope"`), parameter-free RMSNorm (`norm`), ReLU² or SwiGLU in the MLP (`activation`), normalised
queries and keys (`qk_norm`), an untied head (`tie_head=False`), zero-initialised output projections (`zero_init`)
and no biases (`bias=False`). `GPT.optimizers` adds Muon for the hidden matrices (`train.optimizer="muon"`).

Three ways through attention, all giving the same logits:
- fast: `F.scaled_dot_product_attention` (training, default);
- explicit: softmax(QK^T / sqrt(d)) V written out, taken only while a hook reads the attention pattern (its
  probabilities exist only there);
- cached: a preallocated key/value cache (`KVCache`) so generation feeds one new token per step.

Hook points (TransformerLens's): identity modules at the activations worth reading, which a forward hook reads or
replaces. `forward_inspect` (the Inspect tab, health, circuits) is a normal forward pass with hooks on them:
  transformer.hook_embed               the residual stream entering block 0 (B, T, n_embd)
  transformer.h.{i}.attn.hook_pattern  attention probabilities (B, n_head, T, past + T), rows sum to 1
  transformer.h.{i}.attn.hook_z        each head's output before c_proj mixes them (B, n_head, T, head_dim)
  transformer.h.{i}.mlp.hook_post      the MLP's hidden activation, c_proj's input (B, T, hidden)
  transformer.h.{i}.hook_mlp_out       the MLP's output (B, T, n_embd)
  transformer.h.{i}.hook_resid_post    the residual stream after the block (B, T, n_embd)
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, cast

import torch
import torch.nn as nn
from torch.nn import functional as F

from gpt.config import ModelConfig, TrainConfig
from gpt.device import slow_bf16


class KVCache:
    """Keys and values of every layer, preallocated to the context length: per layer (B, kv heads, T, head_dim)
    each (grouped-query attention keeps only n_kv_head heads of them: a cache n_head / n_kv_head times smaller).

    One tensor per layer, not one for all: the static decode step updates them in place, and a compiled step can
    write into a whole input, where writing into a slice of one would copy it. `zeroed` for the static step, which
    reads every position and masks those past the newest: a masked 0 weighs nothing, where uninitialised memory could
    hold a NaN (0 x NaN is NaN)."""

    def __init__(
        self, cfg: ModelConfig, batch_size: int, device: torch.device | str, dtype: torch.dtype, zeroed: bool = False
    ) -> None:
        shape = (batch_size, cfg.kv_heads, cfg.block_size, cfg.head_dim)
        make = torch.zeros if zeroed else torch.empty
        self.layers = [
            (make(shape, device=device, dtype=dtype), make(shape, device=device, dtype=dtype))
            for _ in range(cfg.n_layer)
        ]
        self.pos = 0  # number of positions filled

    def reset(self) -> None:
        self.pos = 0

    def tensors(self) -> list[torch.Tensor]:
        """Every layer's keys and values, in order (the static step's inputs)."""
        return [t for kv in self.layers for t in kv]

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store the new positions' keys and values (B, kv heads, T, head_dim); return all of them so far."""
        B, T = k.size(0), k.size(2)
        keys, values = self.layers[layer]
        keys[:B].narrow(2, self.pos, T).copy_(k)
        values[:B].narrow(2, self.pos, T).copy_(v)
        return keys[:B].narrow(2, 0, self.pos + T), values[:B].narrow(2, 0, self.pos + T)


Rope = tuple[torch.Tensor, torch.Tensor]  # (cos, sin) of the positions being computed: (T, head_dim / 2) each


def rope_angles(cfg: ModelConfig, positions: torch.Tensor) -> Rope:
    """cos and sin of the rotation angles of `positions` (1-D integer tensor; RoFormer, base `rope_theta`, 10,000 by
    default as in Llama).

    Pair i of each query and key turns by position x theta^(-2i / head_dim): fast-turning pairs tell near positions
    apart, slow ones far positions. Computed per call, in float32: a few microseconds, and nothing to keep in sync
    with the weights (a checkpoint holds no buffers). The positions are a tensor, so that the static decode step can
    take its position as data, not as a constant baked into a compiled graph."""
    half = cfg.head_dim // 2
    freqs = cfg.rope_theta ** (-torch.arange(half, device=positions.device, dtype=torch.float32) / half)
    angles = positions.float()[:, None] * freqs[None, :]
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, rope: Rope) -> torch.Tensor:
    """Rotate each (first half, second half) pair of x (B, T, ..., head_dim) by its position's angle.

    Pair i is (x[i], x[i + head_dim / 2]), not neighbours (x[2i], x[2i + 1]) as in RoFormer's paper: the layout of
    Hugging Face's Llama (`rotate_half`), so its q and k weights need no permuting on the way in or out."""
    cos, sin = (r.to(x.dtype).view(r.size(0), *[1] * (x.dim() - 3), r.size(1)) for r in rope)
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


class HookPoint(nn.Identity):
    """A spot in the forward pass where an activation can be read or replaced (TransformerLens's HookPoint).

    The identity: without hooks the model computes exactly what it would without it, for the cost of one module call
    (nothing at all once compiled). A forward hook registered on it (`register_forward_hook`, or `GPT.hooks`) sees the
    activation as its output; one that returns a tensor replaces it downstream. No parameters, no buffers: a
    checkpoint's keys are the same with or without them. Only `forward` passes through them, not the static decode
    step (`GPT.decode_step`)."""

    @property
    def hooked(self) -> bool:
        """Whether anything is registered on it (for an activation that is only computed to be read)."""
        return bool(self._forward_hooks or self._forward_pre_hooks)


ForwardHook = Callable[[nn.Module, tuple[Any, ...], torch.Tensor], torch.Tensor | None]


def _norm(cfg: ModelConfig) -> nn.Module:
    """GPT-2's LayerNorm (learned gain, and offset with biases) or a parameter-free RMSNorm (nanochat's; with
    `norm_gain`, a learned gain as in Llama)."""
    if cfg.norm == "rmsnorm":
        return nn.RMSNorm(cfg.n_embd, eps=cfg.norm_eps or None, elementwise_affine=cfg.norm_gain)
    return nn.LayerNorm(cfg.n_embd, eps=cfg.norm_eps or 1e-5, bias=cfg.bias)


class CausalSelfAttention(nn.Module):
    """Causal self-attention with n_head query heads and n_kv_head key/value heads (grouped-query attention: query
    head i reads key/value head i // (n_head / n_kv_head), as in Hugging Face's Llama; equal counts are GPT-2's)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.n_head, self.n_kv_head, self.head_dim = cfg.n_head, cfg.kv_heads, cfg.head_dim
        # One matmul makes queries, keys and values, laid out [q | k | v]: with n_kv_head == n_head that is GPT-2's
        # c_attn (3 x n_embd), so every older checkpoint loads as it is.
        self.c_attn = nn.Linear(cfg.n_embd, (cfg.n_head + 2 * cfg.kv_heads) * cfg.head_dim, bias=cfg.bias)
        self.c_proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.attn_dropout = _dropout(cfg.dropout)
        self.resid_dropout = _dropout(cfg.dropout)
        self.n_embd, self.dropout = cfg.n_embd, cfg.dropout
        self.qk_norm, self.eps = cfg.qk_norm, cfg.norm_eps or None
        # Learned QK-norm gains (Qwen3's q_norm / k_norm, one per channel, shared by the heads), or none (nanochat's)
        self.q_norm = self.k_norm = None
        if cfg.qk_norm and cfg.norm_gain:
            self.q_norm = nn.RMSNorm(cfg.head_dim, eps=self.eps)
            self.k_norm = nn.RMSNorm(cfg.head_dim, eps=self.eps)
        self.hook_pattern = HookPoint()  # (B, n_head, T, past + T): the attention probabilities
        self.hook_z = HookPoint()  # (B, n_head, T, head_dim): each head's output, before c_proj mixes the heads

    def forward(
        self, x: torch.Tensor, rope: Rope | None = None, cache: KVCache | None = None, layer: int = 0
    ) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self._qkv(x, rope)
        past = 0
        if cache is not None:
            past = cache.pos
            k, v = cache.append(layer, k, v)
        # SDPA never forms the probabilities: the slower written-out path runs only when something reads them
        if self.hook_pattern.hooked:
            y = self._explicit(q, k, v, past)
        elif x.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
            # Under bf16 autocast on CPU, SDPA's backward is about 3x slower in bf16 than in fp32 at our head sizes
            # (torch 2.13): attention runs in fp32 there, the matmuls around it in bf16.
            with torch.autocast("cpu", enabled=False):
                y = self._sdpa(q.float(), k.float(), v.float(), past)
        else:
            y = self._sdpa(q, k, v, past)
        y = self.hook_z(y).transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))

    def _explicit(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, past: int = 0) -> torch.Tensor:
        """softmax(QK^T / sqrt(d)) V written out: each head's output (B, n_head, T, head_dim), before c_proj mixes the
        heads; the probabilities (B, n_head, T, past + T) pass through `hook_pattern` (which may replace them)."""
        T = q.size(2)
        if self.n_kv_head != self.n_head:  # every query head gets its own copy of its group's keys and values
            k, v = (t.repeat_interleave(self.n_head // self.n_kv_head, dim=1) for t in (k, v))
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
        att = att.masked_fill(~_causal_mask(T, past, q.device), float("-inf"))
        probs = self.hook_pattern(F.softmax(att, dim=-1))
        return self.attn_dropout(probs) @ v

    def _qkv(self, x: torch.Tensor, rope: Rope | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Queries (B, n_head, T, head_dim), keys and values (B, n_kv_head, T, head_dim) of x (B, T, C), normalised
        and rotated as switched."""
        B, T, _ = x.shape
        H, KV = self.n_head, self.n_kv_head
        qkv = self.c_attn(x).view(B, T, H + 2 * KV, self.head_dim)
        # queries and keys side by side as H + KV heads: the norm and the rotation are per head, one op for both
        qk, v = qkv.split([H + KV, KV], dim=2)
        if self.qk_norm:  # unit-size queries and keys: a score is at most sqrt(head_dim), whatever the weights
            qk = F.rms_norm(qk, (self.head_dim,), eps=self.eps)
            if self.q_norm is not None and self.k_norm is not None:  # learned gains (Qwen3), before the rotation
                qk = qk * torch.cat([self.q_norm.weight.expand(H, -1), self.k_norm.weight.expand(KV, -1)])
        if rope is not None:  # before the cache: cached keys keep the rotation of their own position
            qk = apply_rope(qk, rope)
        q, k = qk.split([H, KV], dim=2)
        return q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)

    def step(
        self, x: torch.Tensor, rope: Rope | None, keys: torch.Tensor, values: torch.Tensor, pos: torch.Tensor
    ) -> torch.Tensor:
        """The static decode step's attention: x (B, 1, C) at position `pos` (0-d tensor), the cache's whole
        (B, kv heads, block, head_dim) keys and values, updated in place. Every shape is fixed: all `block` positions
        are scored and those after `pos` masked, which costs a little arithmetic and buys one graph for every step.
        Written out (not SDPA): a compiler fuses it into one kernel with the cache write."""
        B, _, C = x.shape
        q, k, v = self._qkv(x, rope)
        keys.index_copy_(2, pos.view(1), k)
        values.index_copy_(2, pos.view(1), v)
        # The query heads of one key/value group stand in a row, as T queries would: (B, kv heads, group, head_dim)
        # against that group's keys, no copy of the cache (with n_kv_head == n_head the group is one query).
        q = q.reshape(B, self.n_kv_head, self.n_head // self.n_kv_head, self.head_dim)
        att = (q.float() @ keys.float().transpose(-2, -1)) * (1.0 / math.sqrt(keys.size(-1)))  # (fp32, as SDPA)
        visible = torch.arange(keys.size(2), device=x.device) <= pos
        att = att.masked_fill(~visible, float("-inf")).softmax(dim=-1)
        y = att.to(values.dtype) @ values  # (B, kv heads, group, head_dim): query head i at [i // group, i % group]
        return self.c_proj(y.reshape(B, 1, C))

    def _sdpa(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, past: int) -> torch.Tensor:
        p = self.dropout if self.training else 0.0
        T = q.size(2)
        gqa = self.n_kv_head != self.n_head  # SDPA shares each key/value head among its group of query heads
        if past == 0:
            return F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True, enable_gqa=gqa)
        if T == 1:  # one new query sees every cached key
            return F.scaled_dot_product_attention(q, k, v, dropout_p=p, enable_gqa=gqa)
        mask = _causal_mask(T, past, q.device)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p, enable_gqa=gqa)


def _dropout(p: float) -> nn.Module:
    """Dropout, or nothing at all when p is 0 (each skipped call saves a few microseconds per generated token)."""
    return nn.Dropout(p) if p > 0 else nn.Identity()


def _causal_mask(T: int, past: int, device: torch.device) -> torch.Tensor:
    """(T, past+T) boolean mask: query i (at position past+i) may see keys 0..past+i."""
    return torch.ones(T, past + T, dtype=torch.bool, device=device).tril(diagonal=past)


def mlp_width(cfg: ModelConfig) -> int:
    """The MLP's hidden width: `mlp_hidden` where set (an imported model's), else 4 x n_embd; SwiGLU's two input
    halves get 2/3 of that each (Llama), rounded up to a multiple of 8, so that the layer keeps about the same size."""
    if cfg.mlp_hidden:
        return cfg.mlp_hidden
    if cfg.activation == "swiglu":
        return -(-8 * cfg.n_embd // 3 // 8) * 8
    return 4 * cfg.n_embd


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        hidden = mlp_width(cfg)
        # SwiGLU's c_fc makes the gate and the value side by side: one matmul instead of two
        self.c_fc = nn.Linear(cfg.n_embd, 2 * hidden if cfg.activation == "swiglu" else hidden, bias=cfg.bias)
        self.c_proj = nn.Linear(hidden, cfg.n_embd, bias=cfg.bias)
        self.dropout = _dropout(cfg.dropout)
        self.activation = cfg.activation
        self.hook_post = HookPoint()  # (B, T, hidden): the hidden activation, c_proj's input

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.c_fc(x)
        if self.activation == "relu2":  # modded-nanogpt's: zero for half the inputs, and cheap
            h = F.relu(h).square()
        elif self.activation == "swiglu":
            gate, value = h.chunk(2, dim=-1)
            h = F.silu(gate) * value
        else:
            h = F.gelu(h, approximate="tanh")  # GPT-2's GELU
        return self.dropout(self.c_proj(self.hook_post(h)))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.ln_1 = _norm(cfg)
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = _norm(cfg)
        self.mlp = MLP(cfg)
        self.hook_mlp_out = HookPoint()  # (B, T, n_embd): what the MLP adds to the residual stream
        self.hook_resid_post = HookPoint()  # (B, T, n_embd): the residual stream after the block

    def forward(
        self, x: torch.Tensor, rope: Rope | None = None, cache: KVCache | None = None, layer: int = 0
    ) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), rope, cache, layer)
        x = x + self.hook_mlp_out(self.mlp(self.ln_2(x)))
        return self.hook_resid_post(x)

    def step(
        self, x: torch.Tensor, rope: Rope | None, kv: tuple[torch.Tensor, torch.Tensor], pos: torch.Tensor
    ) -> torch.Tensor:
        x = x + self.attn.step(self.ln_1(x), rope, *kv, pos)
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    """Embeddings, blocks and final norm, named as in GPT-2's checkpoints (transformer.wte, transformer.h.0)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        if cfg.pos == "learned":  # with rope, positions live in the attention's rotation: nothing to learn here
            self.wpe = nn.Embedding(cfg.block_size, cfg.n_embd)
        self.drop = _dropout(cfg.dropout)
        self.h = nn.ModuleList([Block(cfg) for _ in range(cfg.n_layer)])
        self.ln_f = _norm(cfg)
        self.hook_embed = HookPoint()  # (B, T, n_embd): the embeddings, as the residual stream enters block 0


@dataclass
class Internals:
    """What `forward_inspect` returns: logits plus what each layer saw and produced."""

    logits: torch.Tensor  # (B, T, vocab)
    attentions: list[torch.Tensor]  # per layer: (B, heads, T, T), rows sum to 1
    hidden_states: list[torch.Tensor]  # residual stream after the embeddings and after each block: n_layer+1
    # per layer, as they entered the residual stream (an ablated one as it was replaced):
    head_outputs: list[torch.Tensor]  # each head's output before c_proj mixes them: (B, heads, T, head_dim)
    mlp_outputs: list[torch.Tensor]  # the MLP's output: (B, T, n_embd)


@dataclass(frozen=True)
class Ablation:
    """One component's output replaced in `forward_inspect`: head `head` of layer `layer` (its output before c_proj,
    TransformerLens's hook_z: c_proj's bias, shared by the heads, stays), or with `head` None that layer's MLP
    output. `value` None zeroes it (zero ablation); else that vector, (head_dim,) or (n_embd,), stands at every
    position (mean ablation: the caller takes the component's mean output over a reference)."""

    layer: int
    head: int | None = None
    value: torch.Tensor | None = None


class GPT(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        cfg.validate()
        self.config = cfg
        self.transformer = Transformer(cfg)
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        if cfg.tie_head:
            self.transformer.wte.weight = self.lm_head.weight  # weight tying
        self.apply(self._init_weights)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                if cfg.zero_init:  # each block starts by adding nothing to the residual stream
                    torch.nn.init.zeros_(p)
                else:  # GPT-2: scale the residual projections by 1/sqrt(2 * n_layer)
                    torch.nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))
        if cfg.zero_init and not cfg.tie_head:  # a zero head predicts uniformly: the loss starts at log(vocab)
            torch.nn.init.zeros_(self.lm_head.weight)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)

    @staticmethod
    def size_of(cfg: ModelConfig) -> int:
        """`num_params()` of a model of this shape, without allocating it (meta tensors: cheap for any size)."""
        with torch.device("meta"):
            return GPT(cfg).num_params()

    def num_params(self, non_embedding: bool = True) -> int:
        """Parameter count; by default without position embeddings (as nanoGPT reports it)."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding and self.config.pos == "learned":
            n -= self.transformer.wpe.weight.numel()
        return n

    def _embed(self, idx: torch.Tensor, start: int = 0) -> tuple[torch.Tensor, Rope | None]:
        """The token (and learned position) embeddings, and with rope the rotation angles of these positions."""
        T = idx.size(1)
        if start + T > self.config.block_size:
            raise ValueError(f"sequence of {start + T} tokens exceeds the context length {self.config.block_size}")
        x = self.transformer.wte(idx)
        rope = None
        if self.config.pos == "rope":
            rope = rope_angles(self.config, torch.arange(start, start + T, device=idx.device))
        else:
            x = x + self.transformer.wpe.weight[start : start + T]  # the embeddings of positions start .. start+T-1
        return self.transformer.hook_embed(self.transformer.drop(x)), rope

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        cache: KVCache | None = None,
        last_only: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits (B, T, vocab) — (B, 1, vocab) with `last_only` — and the mean cross-entropy if targets given.

        With a `cache`, `idx` holds only the new tokens; they are placed after the cached positions.
        """
        start = cache.pos if cache is not None else 0
        x, rope = self._embed(idx, start)
        for i, block in enumerate(self.transformer.h):
            x = block(x, rope, cache, i)
        if cache is not None:
            cache.pos += idx.size(1)
        x = self.transformer.ln_f(x)
        if last_only:
            x = x[:, -1:, :]
        logits = self.lm_head(x)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)).float(), targets.reshape(-1), ignore_index=-1)
        return logits, loss

    def decode_step(
        self, idx: torch.Tensor, pos: torch.Tensor, layers: Sequence[tuple[torch.Tensor, torch.Tensor]]
    ) -> torch.Tensor:
        """Logits (B, vocab) of one new token per sequence, `idx` (B, 1), placed at position `pos` (a 0-d tensor).

        `layers`: each layer's (keys, values), as `KVCache.layers`. The static-shape step: it reads and writes the
        cache's whole preallocated tensors and takes the position as data, so its shapes never change and one compiled
        graph (CPU) or one captured CUDA graph serves every token (gpt.decode). It leaves `cache.pos` to the caller.
        Same logits as `forward` with the cache, up to rounding."""
        x = self.transformer.wte(idx)
        rope = None
        if self.config.pos == "rope":
            rope = rope_angles(self.config, pos.view(1))
        else:  # (an embedding lookup, not weight[pos]: indexing by a tensor's value would make the graph depend on it)
            x = x + F.embedding(pos.view(1, 1), self.transformer.wpe.weight)
        for block, kv in zip(self.transformer.h, layers, strict=True):
            x = cast(Block, block).step(x, rope, kv, pos)
        return self.lm_head(self.transformer.ln_f(x))[:, -1]

    def hook_points(self) -> dict[str, HookPoint]:
        """Every hook point by its module name (`transformer.h.0.attn.hook_pattern`), in the forward pass's order."""
        return {name: m for name, m in self.named_modules() if isinstance(m, HookPoint)}

    @contextmanager
    def hooks(self, fwd_hooks: Iterable[tuple[str, ForwardHook]]) -> Iterator[None]:
        """Forward hooks on hook points, by name, for the duration of the `with` block (TransformerLens's
        `model.hooks`). Each fires only in the thread that registered it: the web UI's tabs share one model, and
        another thread's forward pass meanwhile must be neither recorded nor changed by them (though it takes the
        explicit attention path while the pattern is hooked: the same logits, up to rounding)."""
        points = self.hook_points()
        me = threading.get_ident()

        def here(fn: ForwardHook) -> ForwardHook:
            def hook(m: nn.Module, args: tuple[Any, ...], out: torch.Tensor) -> torch.Tensor | None:
                return fn(m, args, out) if threading.get_ident() == me else None

            return hook

        handles = []
        try:
            for name, fn in fwd_hooks:
                if name not in points:
                    raise KeyError(f"no hook point {name!r} (GPT.hook_points() names them all)")
                handles.append(points[name].register_forward_hook(here(fn)))
            yield
        finally:
            for handle in handles:
                handle.remove()

    @torch.no_grad()
    def forward_inspect(self, idx: torch.Tensor, ablate: Ablation | None = None) -> Internals:
        """`forward` with hooks on the hook points: logits equal `forward`'s, plus attention probabilities, hidden
        states and each head's and MLP's output; `ablate` replaces one of those outputs on the way (the Inspect tab's
        ablation: a hook that returns the replaced tensor at hook_z or hook_mlp_out)."""
        n_layer, n_head = self.config.n_layer, self.config.n_head
        if ablate is not None and not (
            0 <= ablate.layer < n_layer and (ablate.head is None or 0 <= ablate.head < n_head)
        ):
            raise ValueError(f"no such component: {ablate} (the model has {n_layer} layers of {n_head} heads)")
        hooks: list[tuple[str, ForwardHook]] = []
        if ablate is not None:  # first: the hooks after it record the replaced output, as it entered the stream
            hooks.append((_ablated_point(ablate), _ablation(ablate)))
        attentions: list[torch.Tensor] = []
        hidden: list[torch.Tensor] = []
        heads: list[torch.Tensor] = []
        mlps: list[torch.Tensor] = []
        hooks.append(("transformer.hook_embed", record(hidden)))
        for i in range(n_layer):
            h = f"transformer.h.{i}"
            hooks += [(f"{h}.attn.hook_pattern", record(attentions)), (f"{h}.attn.hook_z", record(heads)),
                      (f"{h}.hook_mlp_out", record(mlps)), (f"{h}.hook_resid_post", record(hidden))]  # fmt: skip
        with self.hooks(hooks):
            logits, _ = self.forward(idx)
        return Internals(logits, attentions, hidden, heads, mlps)

    def logit_lens(self, hidden: torch.Tensor) -> torch.Tensor:
        """Read a residual-stream state through the final LayerNorm and the head (the "logit lens")."""
        return self.lm_head(self.transformer.ln_f(hidden))

    def new_cache(self, batch_size: int = 1, zeroed: bool = False) -> KVCache:
        p = self.lm_head.weight
        return KVCache(self.config, batch_size, p.device, p.dtype, zeroed)

    @property
    def tied(self) -> bool:
        return self.lm_head.weight is self.transformer.wte.weight

    def optimizer(
        self, lr: float, weight_decay: float, betas: tuple[float, float], device_type: str
    ) -> torch.optim.AdamW:
        """AdamW with weight decay on matrices (matmul weights, embeddings) and none on biases / LayerNorms."""
        return self._adamw([p for p in self.parameters() if p.requires_grad], lr, weight_decay, betas, device_type)

    def optimizers(self, tc: TrainConfig, device_type: str) -> list[torch.optim.Optimizer]:
        """The optimizers of `tc.optimizer`: AdamW alone, or [AdamW, Muon].

        Muon (`Muon` below: torch.optim.Muon) takes the blocks' weight matrices: it orthogonalises each one's momentum
        with a few Newton-Schulz iterations, so every direction of the matrix moves by about the same amount.
        Embeddings and the head are lookups and read-outs, not maps between hidden spaces, so they stay with AdamW, as
        do the norms' gains and the biases (vectors). Each parameter group keeps its `base_lr`: the trainer's
        schedule scales every group from it."""
        betas = (tc.beta1, tc.beta2)
        params = [p for p in self.parameters() if p.requires_grad]
        if tc.optimizer == "adamw":
            adamw = self._adamw(params, tc.lr, tc.weight_decay, betas, device_type)
            return [_with_base_lr(adamw)]
        hidden = {id(p) for block in self.transformer.h for p in block.parameters() if p.dim() == 2}
        rest = [p for p in params if id(p) not in hidden]
        # No weight decay in Muon: its updates have a fixed size, so the matrices cannot drift far (as in the
        # speedrun); torch's Muon would decay by lr x weight_decay, 20x AdamW's at muon_lr = 0.02.
        muon = Muon([p for p in params if id(p) in hidden], lr=tc.muon_lr, weight_decay=0.0)
        return [_with_base_lr(self._adamw(rest, tc.lr, tc.weight_decay, betas, device_type)), _with_base_lr(muon)]

    @staticmethod
    def _adamw(
        params: list[nn.Parameter], lr: float, weight_decay: float, betas: tuple[float, float], device_type: str
    ) -> torch.optim.AdamW:
        groups = [
            {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
        ]
        # Fused AdamW: faster on CUDA, and on CPU too (tiny preset +8% tokens/s over the foreach path).
        fused = device_type in ("cuda", "cpu")
        return torch.optim.AdamW(groups, lr=lr, betas=betas, fused=fused)

    def flops_per_token(self) -> float:
        """Training FLOPs per token: 6 x parameters plus attention (PaLM appendix B, as in nanoGPT; grouped-query
        attention has fewer parameters, the same scores: every query head still scores every key)."""
        cfg = self.config
        return 6 * self.num_params() + 12 * cfg.n_layer * cfg.n_embd * cfg.block_size


def record(into: list[torch.Tensor]) -> ForwardHook:
    """A hook that appends the activation to `into` and leaves it as it is (one entry per call, in call order)."""

    def hook(_m: nn.Module, _args: tuple[Any, ...], out: torch.Tensor) -> None:
        into.append(out)

    return hook


def _ablated_point(ablate: Ablation) -> str:
    block = f"transformer.h.{ablate.layer}"
    return f"{block}.hook_mlp_out" if ablate.head is None else f"{block}.attn.hook_z"


def _ablation(ablate: Ablation) -> ForwardHook:
    """The hook that replaces the ablated output: one head's slice of hook_z, or the MLP's whole output."""

    def hook(_m: nn.Module, _args: tuple[Any, ...], out: torch.Tensor) -> torch.Tensor:
        if ablate.head is None:
            return torch.zeros_like(out) if ablate.value is None else ablate.value.expand_as(out)
        out = out.clone()  # (B, n_head, T, head_dim)
        out[:, ablate.head] = 0.0 if ablate.value is None else ablate.value
        return out

    return hook


def _with_base_lr(opt: torch.optim.Optimizer) -> torch.optim.Optimizer:
    for group in opt.param_groups:
        group["base_lr"] = group["lr"]
    return opt


class Muon(torch.optim.Muon):
    """torch.optim.Muon, with its Newton-Schulz iterations in float32 where bfloat16 is slow.

    torch runs them in bfloat16, which a GPU or a CPU with native bf16 multiplies fast; elsewhere (most laptops, and
    the AMD EPYC CI runs on) bf16 matrix products are emulated, 2 GFLOP/s against float32's 75, and the tiny preset's
    step took 1.2 s instead of 40 ms. There the same update is computed in float32 (an orthogonalisation: bf16 was
    only ever for speed). The momentum buffers are torch's, so checkpoints resume either way."""

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        groups = [g for g in self.param_groups if g["params"]]
        if not groups or not slow_bf16(groups[0]["params"][0].device):
            return super().step(closure)
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in groups:
            assert group["adjust_lr_fn"] in (None, "original"), "the float32 path scales the rate as torch's default"
            momentum, lr = group["momentum"], float(group["lr"])
            for p in group["params"]:
                if p.grad is None:
                    continue
                buf = self.state[p].setdefault("momentum_buffer", torch.zeros_like(p.grad))
                buf.lerp_(p.grad, 1 - momentum)
                update = p.grad.lerp(buf, momentum) if group["nesterov"] else buf
                update = _orthogonalise(update, group["ns_coefficients"], group["ns_steps"], group["eps"])
                p.mul_(1 - lr * group["weight_decay"])
                p.add_(update, alpha=-lr * math.sqrt(max(1.0, p.size(0) / p.size(1))))  # (torch's "original")
        return loss


def _orthogonalise(g: torch.Tensor, abc: tuple[float, float, float], steps: int, eps: float) -> torch.Tensor:
    """Muon's quintic Newton-Schulz iteration (Keller Jordan's coefficients), in float32: g's singular values pushed
    towards one, its singular vectors kept."""
    a, b, c = abc
    x = g.float()
    tall = x.size(0) > x.size(1)
    if tall:  # (the Gram matrix of the shorter side is the smaller one)
        x = x.T
    x = x / x.norm().clamp(min=eps)  # spectral norm at most 1
    for _ in range(steps):
        gram = x @ x.T
        x = torch.addmm(x, torch.addmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    return x.T if tall else x
