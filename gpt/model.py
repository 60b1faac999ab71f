"""The GPT-2 architecture in one file, in the spirit of nanoGPT's model.py.

Token + learned position embeddings, pre-LayerNorm blocks (causal multi-head self-attention, GELU MLP),
residual connections, a final LayerNorm and a language-model head tied to the token embedding.

Three ways through attention, all giving the same logits:
- fast: `F.scaled_dot_product_attention` (training, default);
- explicit: softmax(QK^T / sqrt(d)) V written out, which also returns every layer's and head's attention
  probabilities (`forward_inspect`, for the Inspect tab);
- cached: a preallocated key/value cache (`KVCache`) so generation feeds one new token per step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
from torch.nn import functional as F

from gpt.config import ModelConfig


class KVCache:
    """Keys and values of every layer, preallocated to the context length: (layers, B, heads, T, head_dim)."""

    def __init__(self, cfg: ModelConfig, batch_size: int, device: torch.device | str, dtype: torch.dtype) -> None:
        shape = (cfg.n_layer, batch_size, cfg.n_head, cfg.block_size, cfg.n_embd // cfg.n_head)
        self.k = torch.empty(shape, device=device, dtype=dtype)  # positions past `pos` are never read
        self.v = torch.empty(shape, device=device, dtype=dtype)
        self.pos = 0  # number of positions filled
        self._layers = [(self.k[i], self.v[i]) for i in range(cfg.n_layer)]  # per-layer views, made once

    def reset(self) -> None:
        self.pos = 0

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store the new positions' keys and values (B, heads, T, head_dim); return all of them so far."""
        B, T = k.size(0), k.size(2)
        keys, values = self._layers[layer]
        keys[:B].narrow(2, self.pos, T).copy_(k)
        values[:B].narrow(2, self.pos, T).copy_(v)
        return keys[:B].narrow(2, 0, self.pos + T), values[:B].narrow(2, 0, self.pos + T)


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.c_attn = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=cfg.bias)
        self.c_proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.attn_dropout = _dropout(cfg.dropout)
        self.resid_dropout = _dropout(cfg.dropout)
        self.n_head, self.n_embd, self.dropout = cfg.n_head, cfg.n_embd, cfg.dropout

    def forward(
        self,
        x: torch.Tensor,
        cache: KVCache | None = None,
        layer: int = 0,
        explicit: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        B, T, C = x.shape
        # (B, T, 3C) -> three (B, heads, T, head_dim) views
        q, k, v = self.c_attn(x).view(B, T, 3, self.n_head, C // self.n_head).permute(2, 0, 3, 1, 4).unbind(0)
        past = 0
        if cache is not None:
            past = cache.pos
            k, v = cache.append(layer, k, v)
        probs = None
        if explicit:
            att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
            att = att.masked_fill(~_causal_mask(T, past, x.device), float("-inf"))
            probs = F.softmax(att, dim=-1)
            y = self.attn_dropout(probs) @ v
        elif x.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
            # Under bf16 autocast on CPU, SDPA's backward is about 3x slower in bf16 than in fp32 at our head sizes
            # (torch 2.13): attention runs in fp32 there, the matmuls around it in bf16.
            with torch.autocast("cpu", enabled=False):
                y = self._sdpa(q.float(), k.float(), v.float(), past)
        else:
            y = self._sdpa(q, k, v, past)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y)), probs

    def _sdpa(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, past: int) -> torch.Tensor:
        p = self.dropout if self.training else 0.0
        T = q.size(2)
        if past == 0:
            return F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)
        if T == 1:  # one new query sees every cached key
            return F.scaled_dot_product_attention(q, k, v, dropout_p=p)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=_causal_mask(T, past, q.device), dropout_p=p)


def _dropout(p: float) -> nn.Module:
    """Dropout, or nothing at all when p is 0 (each skipped call saves a few microseconds per generated token)."""
    return nn.Dropout(p) if p > 0 else nn.Identity()


def _causal_mask(T: int, past: int, device: torch.device) -> torch.Tensor:
    """(T, past+T) boolean mask: query i (at position past+i) may see keys 0..past+i."""
    return torch.ones(T, past + T, dtype=torch.bool, device=device).tril(diagonal=past)


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd, bias=cfg.bias)
        self.gelu = nn.GELU(approximate="tanh")  # GPT-2's GELU
        self.c_proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.dropout = _dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.mlp = MLP(cfg)

    def forward(
        self, x: torch.Tensor, cache: KVCache | None = None, layer: int = 0, explicit: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        a, probs = self.attn(self.ln_1(x), cache, layer, explicit)
        x = x + a
        x = x + self.mlp(self.ln_2(x))
        return x, probs


class Transformer(nn.Module):
    """Embeddings, blocks and final norm, named as in GPT-2's checkpoints (transformer.wte, transformer.h.0)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.wpe = nn.Embedding(cfg.block_size, cfg.n_embd)
        self.drop = _dropout(cfg.dropout)
        self.h = nn.ModuleList([Block(cfg) for _ in range(cfg.n_layer)])
        self.ln_f = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)


@dataclass
class Internals:
    """What `forward_inspect` returns: logits plus what each layer saw and produced."""

    logits: torch.Tensor  # (B, T, vocab)
    attentions: list[torch.Tensor]  # per layer: (B, heads, T, T), rows sum to 1
    hidden_states: list[torch.Tensor]  # residual stream after the embeddings and after each block: n_layer+1


class GPT(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        cfg.validate()
        self.config = cfg
        self.transformer = Transformer(cfg)
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        self.transformer.wte.weight = self.lm_head.weight  # weight tying
        self.apply(self._init_weights)
        # GPT-2: scale the residual projections by 1/sqrt(2 * n_layer)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                torch.nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))

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
        if non_embedding:
            n -= self.transformer.wpe.weight.numel()
        return n

    def _embed(self, idx: torch.Tensor, start: int = 0) -> torch.Tensor:
        T = idx.size(1)
        if start + T > self.config.block_size:
            raise ValueError(f"sequence of {start + T} tokens exceeds the context length {self.config.block_size}")
        pos = self.transformer.wpe.weight[start : start + T]  # the embeddings of positions start .. start+T-1
        return self.transformer.drop(self.transformer.wte(idx) + pos)

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
        x = self._embed(idx, start)
        for i, block in enumerate(self.transformer.h):
            x, _ = block(x, cache, i)
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

    @torch.no_grad()
    def forward_inspect(self, idx: torch.Tensor) -> Internals:
        """Explicit attention: logits equal `forward`'s, plus attention probabilities and hidden states."""
        x = self._embed(idx)
        attentions, hidden = [], [x]
        for block in self.transformer.h:
            x, probs = block(x, explicit=True)
            assert probs is not None
            attentions.append(probs)
            hidden.append(x)
        logits = self.lm_head(self.transformer.ln_f(x))
        return Internals(logits, attentions, hidden)

    def logit_lens(self, hidden: torch.Tensor) -> torch.Tensor:
        """Read a residual-stream state through the final LayerNorm and the head (the "logit lens")."""
        return self.lm_head(self.transformer.ln_f(hidden))

    def new_cache(self, batch_size: int = 1) -> KVCache:
        p = self.lm_head.weight
        return KVCache(self.config, batch_size, p.device, p.dtype)

    def optimizer(
        self, lr: float, weight_decay: float, betas: tuple[float, float], device_type: str
    ) -> torch.optim.AdamW:
        """AdamW with weight decay on matrices (matmul weights, embeddings) and none on biases / LayerNorms."""
        params = [p for p in self.parameters() if p.requires_grad]
        groups = [
            {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
        ]
        # Fused AdamW: faster on CUDA, and on CPU too (tiny preset +8% tokens/s over the foreach path).
        fused = device_type in ("cuda", "cpu")
        return torch.optim.AdamW(groups, lr=lr, betas=betas, fused=fused)

    def flops_per_token(self) -> float:
        """Training FLOPs per token: 6 x parameters plus attention (PaLM appendix B, as in nanoGPT)."""
        cfg = self.config
        return 6 * self.num_params() + 12 * cfg.n_layer * cfg.n_embd * cfg.block_size
