"""Models in and out of the Hugging Face `transformers` format: GPT-2, Llama, Qwen3 and Arcee.

Which architecture a model goes out as follows from its switches alone (`hf_target`; `export_refusals` says what
keeps a config out, before any training, and the Train tab shows it):
- GPT-2's (learned positions, LayerNorm, GELU, tied head, biases): `GPT2LMHeadModel`, as nanoGPT's checkpoints. Its
  learned positions end at the context length: `transformers` raises an IndexError past it (`context_note`);
- the Llama family's (rope, rmsnorm, no biases; tied or untied head, grouped-query attention with `n_kv_head`):
  `LlamaForCausalLM` with swiglu, `Qwen3ForCausalLM` with swiglu and `qk_norm` (Qwen3 normalises each query and
  key head before the rotation, as we do), `ArceeForCausalLM` with relu2 and no `qk_norm` (Arcee is Llama with a
  non-gated ReLU² MLP, up_proj and down_proj; in `transformers` since 4.53);
- anything else (ReLU² with QK-norm, learned positions with RMSNorm, ...) has no equivalent: the export is refused
  (`ExportRefusedError`) with a message naming each switch that keeps it out. Biases that are all zero count as none.
Coming in, `gpt2`, `llama`, `qwen3` and `arcee` configs are read; their config.json is checked (and the caller's
`SizeCheck` run) before any weight is read, and what we cannot compute exactly (rope scaling, attention or MLP
biases, sliding windows, an activation other than SiLU (Arcee: ReLU²), a head size other than hidden / heads) is
refused.

Conventions that had to line up, checked against `transformers` by tests/test_interop.py (logits within 1e-4):
- RoPE: we rotate pairs (x[i], x[i + head_dim/2]), Hugging Face's `rotate_half` layout, with the same frequencies
  theta^(-2i/head_dim) (`rope_theta`, Llama's 10,000 by default): q and k weights need no permuting.
- RMSNorm: ours has no gain (nanochat's) and torch's epsilon (the dtype's machine epsilon); an export writes gains
  of one and that epsilon as `rms_norm_eps`. An import keeps its gains (`norm_gain`) and epsilon (`norm_eps`).
- Attention: our c_attn is [q | k | v] with n_kv_head heads of keys and values; Llama's q_proj, k_proj, v_proj
  are its three row blocks. SwiGLU's c_fc is [gate | up] (silu(gate) x up), Llama's gate_proj and up_proj; ReLU²'s
  c_fc is Arcee's up_proj.
- Hugging Face's GPT-2 stores its attention and MLP matrices as `Conv1D` weights, shaped (in, out): the transpose
  of `nn.Linear`'s (out, in). A tied head may be absent from the file.
No `transformers` import is needed here: the format is plain safetensors (or a `pytorch_model.bin` read with
`weights_only=True`) plus a JSON config.

How tokenizers travel on export: every export has a `tokenizer.json` that `AutoTokenizer.from_pretrained` loads and
that gives our ids (a trained BPE's own; for char and byte models one built with the `tokenizers` library: a
character or a byte per token, with our ids), except GPT-2 BPE models, which get GPT-2's own `vocab.json` and
`merges.txt` (from the same hash-checked files the tokenizer uses). Char, byte and GPT-2 models also carry
`gpt_playground_tokenizer.json` (our spec), which `from_hf` prefers; a directory without it is read through its
tokenizer.json (a byte-level BPE, as SmolLM2's and Qwen3's), or as GPT-2's for a GPT-2 of GPT-2's vocabulary.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from gpt import checkpoint as ckpt
from gpt.config import MAX_BLOCK_SIZE, Activation, Config, ModelConfig, recipe_summary
from gpt.data import open_regular
from gpt.errors import CheckpointError, UserInputError
from gpt.model import GPT, mlp_width
from gpt.tokenizer import (
    MAX_BPE_JSON_CHARS,
    BPETokenizer,
    ByteTokenizer,
    CharTokenizer,
    GPT2Tokenizer,
    SymbolTokenizer,
    Tokenizer,
    bytes_to_unicode,
    from_spec,
)

CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
TOKENIZER_FILE = "gpt_playground_tokenizer.json"
HF_TOKENIZER = "tokenizer.json"
MAX_HF_CONFIG_BYTES = 1 << 20  # a GPT-2 config.json is ~1 kB: read no more than this before parsing
MAX_TOKENIZER_BYTES = 4 << 20  # gpt_playground_tokenizer.json: a char vocabulary, as in a checkpoint's config.json
MAX_HF_TOKENIZER_BYTES = 4 * MAX_BPE_JSON_CHARS  # a tokenizer.json: as many characters as BPETokenizer takes
HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}(/[A-Za-z0-9][\w.-]{0,95})?$")  # "gpt2", "openai-community/gpt2"

# Called with a model's config before its weights are read or downloaded: raises UserInputError to refuse it.
SizeCheck = Callable[[ModelConfig], None]
Architecture = Literal["gpt2", "llama", "qwen3", "arcee"]
HF_CLASS: dict[str, str] = {"gpt2": "GPT2LMHeadModel", "llama": "LlamaForCausalLM", "qwen3": "Qwen3ForCausalLM",
                            "arcee": "ArceeForCausalLM"}  # fmt: skip
HF_NAME = {"gpt2": "GPT-2", "llama": "Llama", "qwen3": "Qwen3", "arcee": "Arcee"}
# The Llama family's MLP activation, in their config.json's words and ours
HIDDEN_ACT: dict[str, tuple[str, Activation]] = {"llama": ("silu", "swiglu"), "qwen3": ("silu", "swiglu"),
                                                 "arcee": ("relu2", "relu2")}  # fmt: skip


def hf_config_to_model(hf: dict[str, Any]) -> ModelConfig:
    """A Hugging Face config.json (GPT-2, Llama, Qwen3 or Arcee) as our model config, or a UserInputError saying what in
    it we cannot compute exactly, or which value is of the wrong type or range (a file can hold anything)."""
    f = Fields(hf)
    kind = f.text("model_type", "gpt2")
    if kind not in HF_CLASS:
        raise UserInputError(
            "only GPT-2, Llama, Qwen3 and Arcee models can be imported (model_type gpt2, llama, qwen3, arcee), this "
            f"is {kind[:40]!r}"
        )
    try:
        cfg = _gpt2_config(f) if kind == "gpt2" else _llama_config(f, kind)
        cfg.validate()
    except ValueError as e:  # (a size out of ModelConfig's range)
        raise UserInputError(f"config.json: {e}") from None
    return cfg


_MISSING: Any = object()


class Fields:
    """The values of an imported config.json, each checked for its type (and being finite, or positive) as it is
    read, so that a wrong one is refused with its name instead of failing somewhere inside (`"linear"` where a
    mapping belongs, a list where a number does). `default` is used where the key is absent or null."""

    def __init__(self, raw: dict[str, Any], where: str = "config.json") -> None:
        self.raw, self.where = raw, where

    def _get(self, key: str, default: Any) -> Any:
        value = self.raw.get(key)
        if value is None:
            if default is _MISSING:
                raise UserInputError(f"{self.where} has no {key}")
            return default
        return value

    def _wrong(self, key: str, what: str, value: Any) -> UserInputError:
        return UserInputError(f"{self.where}: {key} must be {what}, not {str(value)[:40]!r} ({type(value).__name__})")

    def whole(self, key: str, default: Any = _MISSING, low: int = 1) -> int:
        v = self._get(key, default)
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v != int(v) or v < low:
            raise self._wrong(key, f"a whole number of at least {low}", v)
        return int(v)

    def number(self, key: str, default: Any = _MISSING) -> float:
        v = self._get(key, default)
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise self._wrong(key, "a finite number", v)
        return float(v)

    def text(self, key: str, default: Any = _MISSING) -> str:
        v = self._get(key, default)
        if not isinstance(v, str):
            raise self._wrong(key, "a string", v)
        return v

    def flag(self, key: str, default: bool = False) -> bool:
        v = self._get(key, default)
        if not isinstance(v, bool):
            raise self._wrong(key, "true or false", v)
        return v

    def mapping(self, key: str) -> Fields:
        v = self._get(key, {})
        if not isinstance(v, dict):
            raise self._wrong(key, "a mapping", v)
        return Fields(v, f"{self.where}'s {key}")

    def strings(self, key: str) -> list[str]:
        v = self._get(key, [])
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            raise self._wrong(key, "a list of strings", v)
        return v


def _gpt2_config(f: Fields) -> ModelConfig:
    act = f.text("activation_function", "gelu_new")
    if act not in ("gelu_new", "gelu_pytorch_tanh"):
        raise UserInputError(f"activation {act[:40]!r} is not GPT-2's tanh GELU; this model cannot be imported exactly")
    eps = f.number("layer_norm_epsilon", 1e-5)
    return ModelConfig(
        vocab_size=f.whole("vocab_size"),
        block_size=f.whole("n_positions", f.whole("n_ctx", 1024)),
        n_layer=f.whole("n_layer"),
        n_head=f.whole("n_head"),
        n_embd=f.whole("n_embd"),
        mlp_hidden=f.whole("n_inner", 0, low=0),
        dropout=f.number("resid_pdrop", 0.0),
        norm_eps=0.0 if eps == 1e-5 else eps,  # 0: LayerNorm's own 1e-5, as every model of ours has
        bias=True,
    )


def _llama_config(f: Fields, kind: str) -> ModelConfig:
    """Llama's, Qwen3's and Arcee's config: refused where it asks for what our model does not compute."""
    name, (want_act, activation) = HF_NAME[kind], HIDDEN_ACT[kind]
    refuse: list[str] = []
    if (act := f.text("hidden_act", want_act)) != want_act:
        ours = "our SwiGLU uses SiLU" if want_act == "silu" else "our ReLU² MLP is relu2"
        refuse.append(f"hidden_act {act[:30]!r} ({ours})")
    rope = f.mapping("rope_parameters")  # transformers 5; older configs: rope_theta and rope_scaling at the top
    scaling = f.mapping("rope_scaling")
    kinds = [rope.text("rope_type", "default")]
    if scaling.raw:  # (older configs name its kind "type"; one without a kind is some scaling all the same)
        kinds.append(scaling.text("rope_type", scaling.text("type", "unnamed")))
    if scaled := [k for k in kinds if k != "default"]:
        refuse.append(f"rope scaling ({', '.join(scaled)[:60]}; only plain RoPE is computed here)")
    if rope.number("partial_rotary_factor", f.number("partial_rotary_factor", 1.0)) != 1.0:
        refuse.append("partial rotary embeddings")
    if f.flag("attention_bias") or f.flag("mlp_bias"):
        refuse.append("attention or MLP biases (imports have none)")
    if f.flag("use_sliding_window") or any(t != "full_attention" for t in f.strings("layer_types")):
        refuse.append("sliding-window attention")
    hidden, heads = f.whole("hidden_size"), f.whole("num_attention_heads")
    if (head_dim := f.whole("head_dim", max(1, hidden // heads))) * heads != hidden:
        refuse.append(f"head_dim {head_dim} x {heads} heads != hidden_size {hidden}")
    if refuse:
        raise UserInputError(f"this {name} model cannot be imported exactly: it has {'; '.join(refuse)}")
    return ModelConfig(
        vocab_size=f.whole("vocab_size"),
        # rope positions are no weights: a context past our cap only shortens what it reads at once
        block_size=min(f.whole("max_position_embeddings", 2048), MAX_BLOCK_SIZE),
        n_layer=f.whole("num_hidden_layers"),
        n_head=heads,
        n_kv_head=f.whole("num_key_value_heads", heads),
        n_embd=hidden,
        mlp_hidden=f.whole("intermediate_size"),
        dropout=0.0,
        bias=False,
        pos="rope",
        norm="rmsnorm",
        activation=activation,
        qk_norm=kind == "qwen3",
        tie_head=f.flag("tie_word_embeddings"),  # (both classes' default)
        rope_theta=rope.number("rope_theta", f.number("rope_theta", 10000.0)),
        norm_eps=f.number("rms_norm_eps", 1e-5 if kind == "arcee" else 1e-6),  # (each class's default)
        norm_gain=True,  # their norms learn a gain per channel
    )


def model_to_hf_config(cfg: ModelConfig, tokenizer: Tokenizer) -> dict[str, Any]:
    """The config.json of `cfg` exported as Hugging Face GPT-2 (see `hf_architecture`'s for the others)."""
    eos = tokenizer.eos_id
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": cfg.vocab_size,
        "n_positions": cfg.block_size,
        "n_ctx": cfg.block_size,
        "n_embd": cfg.n_embd,
        "n_layer": cfg.n_layer,
        "n_head": cfg.n_head,
        "n_inner": cfg.mlp_hidden or None,
        "activation_function": "gelu_new",
        "resid_pdrop": cfg.dropout,
        "embd_pdrop": cfg.dropout,
        "attn_pdrop": cfg.dropout,
        "layer_norm_epsilon": cfg.norm_eps or 1e-5,
        "initializer_range": 0.02,
        "scale_attn_weights": True,
        "tie_word_embeddings": True,
        "bos_token_id": eos,
        "eos_token_id": eos,
        "torch_dtype": "float32",
    }


def _llama_hf_config(cfg: ModelConfig, arch: Architecture, tokenizer: Tokenizer) -> dict[str, Any]:
    eos = tokenizer.eos_id
    # Our parameter-free RMSNorm divides by sqrt(mean + torch's epsilon): the float32 machine epsilon
    eps = cfg.norm_eps or torch.finfo(torch.float32).eps
    out: dict[str, Any] = {
        "architectures": [HF_CLASS[arch]],
        "model_type": arch,
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.n_embd,
        "intermediate_size": mlp_width(cfg),
        "num_hidden_layers": cfg.n_layer,
        "num_attention_heads": cfg.n_head,
        "num_key_value_heads": cfg.kv_heads,
        "head_dim": cfg.head_dim,
        "hidden_act": HIDDEN_ACT[arch][0],
        "max_position_embeddings": cfg.block_size,
        "rms_norm_eps": eps,
        "rope_parameters": {"rope_type": "default", "rope_theta": cfg.rope_theta},  # transformers 5
        "rope_theta": cfg.rope_theta,  # (and transformers 4's spelling)
        "rope_scaling": None,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "tie_word_embeddings": cfg.tie_head,
        "initializer_range": 0.02,
        "bos_token_id": eos,
        "eos_token_id": eos,
        "torch_dtype": "float32",
    }
    if arch in ("llama", "arcee"):
        out["mlp_bias"] = False
    else:
        out["use_sliding_window"] = False
        out["sliding_window"] = None
    return out


def hf_state_to_ours(state: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """Their weights under our names and layouts. Each tensor is compared with the shape `cfg` implies before any
    operation on it (a transpose, a concatenation), and one that differs is refused by its name."""
    ours = _shapes(cfg)
    if cfg.pos == "rope":
        return _llama_state_to_ours(state, cfg, ours)
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        k = key if key.startswith(("transformer.", "lm_head.")) else f"transformer.{key}"  # GPT2Model has no prefix
        if k.endswith((".attn.bias", ".attn.masked_bias")):
            continue  # causal-mask buffers of older checkpoints, not weights
        conv1d = any(k.endswith(c) for c in CONV1D)
        if k in ours:
            _check_shape(key, value, ours[k][::-1] if conv1d else ours[k])
        out[k] = (value.t() if conv1d else value).contiguous()
    out.setdefault("lm_head.weight", out.get("transformer.wte.weight", torch.empty(0)))
    return out


def _shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Our model's weights' shapes for `cfg`, by name (a meta-device model: nothing allocated)."""
    with torch.device("meta"):
        return {k: tuple(v.shape) for k, v in GPT(cfg).state_dict().items()}


def _check_shape(name: str, value: Any, want: tuple[int, ...]) -> None:
    if not isinstance(value, torch.Tensor) or not value.is_floating_point():
        raise CheckpointError(f"the weight {name[:120]} is not a floating-point tensor")
    if tuple(value.shape) != want:
        raise CheckpointError(
            f"the weight {name[:120]} has shape {tuple(value.shape)}; the model's config.json implies {want}"
        )


# Llama's / Qwen3's names for ours, per layer; (theirs, ...) tuples are stacked in order into one of ours (Arcee's:
# `layer_names`)
LLAMA_LAYER: dict[str, tuple[str, ...]] = {
    "ln_1.weight": ("input_layernorm.weight",),
    "ln_2.weight": ("post_attention_layernorm.weight",),
    "attn.c_attn.weight": ("self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight"),
    "attn.c_proj.weight": ("self_attn.o_proj.weight",),
    "attn.q_norm.weight": ("self_attn.q_norm.weight",),  # Qwen3 only
    "attn.k_norm.weight": ("self_attn.k_norm.weight",),
    "mlp.c_fc.weight": ("mlp.gate_proj.weight", "mlp.up_proj.weight"),  # silu(gate) x up: [gate | up]
    "mlp.c_proj.weight": ("mlp.down_proj.weight",),
}


def layer_names(cfg: ModelConfig) -> dict[str, tuple[str, ...]]:
    """Per layer, the Llama family's names for our weights: a ReLU² MLP (Arcee's) has no gate, its c_fc is up_proj."""
    if cfg.activation == "relu2":
        return {**LLAMA_LAYER, "mlp.c_fc.weight": ("mlp.up_proj.weight",)}
    return LLAMA_LAYER


def _llama_state_to_ours(
    state: dict[str, torch.Tensor], cfg: ModelConfig, ours: dict[str, tuple[int, ...]]
) -> dict[str, torch.Tensor]:
    """Llama's / Qwen3's / Arcee's weights under our names; whatever is missing is left out (`load_hf` names it)."""
    theirs = {k.removeprefix("model."): v for k, v in state.items()}
    named = {k.removeprefix("model."): k for k in state}  # (a refusal names the tensor as the file does)
    out: dict[str, torch.Tensor] = {}
    pairs: list[tuple[str, tuple[str, ...]]] = [
        ("transformer.wte.weight", ("embed_tokens.weight",)),
        ("transformer.ln_f.weight", ("norm.weight",)),
    ]
    for i in range(cfg.n_layer):
        pairs += [(f"transformer.h.{i}.{ours}", tuple(f"layers.{i}.{t}" for t in names))
                  for ours, names in layer_names(cfg).items()]  # fmt: skip
    q, kv = cfg.n_head * cfg.head_dim, cfg.kv_heads * cfg.head_dim
    rows = {3: (q, kv, kv), 2: (mlp_width(cfg),) * 2}  # the row blocks stacked into c_attn, c_fc
    for name, names in pairs:
        if name in ours and all(n in theirs for n in names):
            want = ours[name]
            for n, r in zip(names, rows.get(len(names), (want[0],)), strict=True):
                _check_shape(named[n], theirs[n], (r, *want[1:]))
            out[name] = torch.cat([theirs[n] for n in names]).contiguous()
    head = state.get("lm_head.weight")
    if head is not None and not cfg.tie_head:
        _check_shape("lm_head.weight", head, ours["lm_head.weight"])
        out["lm_head.weight"] = head.contiguous()
    elif "transformer.wte.weight" in out:  # tied: the head is the embedding (and often absent from the file)
        out["lm_head.weight"] = out["transformer.wte.weight"]
    return out


# The switches GPT-2's format has no place for, and why: each value differs from ModelConfig's default (GPT-2's).
NOT_GPT2 = {
    "bias": "GPT-2 always has biases",
    "pos": "GPT-2 adds learned position embeddings, it has no rotary positions",
    "norm": "GPT-2's norms are LayerNorms",
    "activation": "GPT-2's MLP uses GELU",
    "qk_norm": "GPT-2 has no query/key norm",
    "tie_head": "GPT-2's head is tied to its token embedding",
}


def gpt2_incompatible(cfg: ModelConfig) -> list[str]:
    """What keeps a model of this config out of GPT-2's format: one phrase per switch (empty: it exports)."""
    default = ModelConfig()
    differ = [k for k in NOT_GPT2 if getattr(cfg, k) != getattr(default, k)]
    bad = [f"model.{k}={_value(getattr(cfg, k))} ({NOT_GPT2[k]})" for k in differ]
    if cfg.kv_heads != cfg.n_head:
        bad.append(f"model.n_kv_head={cfg.n_kv_head} (GPT-2 has a key and a value head for every query head)")
    return bad


def llama_incompatible(cfg: ModelConfig, zero_biases: bool = False) -> list[str]:
    """What keeps a model of this config out of the Llama family's formats (Llama, Qwen3, Arcee): one phrase per
    switch (empty: it exports). `zero_biases`: its biases are all zero, which count as none."""
    bad = []
    if cfg.pos != "rope":
        bad.append(
            f"model.pos={cfg.pos} (Llama, Qwen3 and Arcee have rotary positions, no learned position embeddings)"
        )
    if cfg.norm != "rmsnorm":
        bad.append(f"model.norm={cfg.norm} (Llama's, Qwen3's and Arcee's norms are RMSNorms)")
    if cfg.activation == "gelu":
        bad.append("model.activation=gelu (Llama's and Qwen3's MLP is SwiGLU, Arcee's ReLU²)")
    elif cfg.activation == "relu2" and cfg.qk_norm:  # each half of the pair has a format, not both together
        bad.append("model.activation=relu2 with model.qk_norm=true (Arcee, the format with ReLU², has no QK-norm; "
                   "Qwen3, the one with QK-norm, has SwiGLU)")  # fmt: skip
    if cfg.bias and not zero_biases:
        bad.append("model.bias=true (Llama, Qwen3 and Arcee have no biases)")
    return bad


def _value(v: Any) -> str:
    return str(v).lower() if isinstance(v, bool) else str(v)


def _gpt2_body(cfg: ModelConfig) -> bool:
    """GPT-2's body (learned positions, LayerNorm, GELU) goes out as GPT-2 or not at all; any other as the Llama
    family or not at all: a refusal names what differs from the nearer one."""
    return cfg.pos == "learned" and cfg.norm == "layernorm" and cfg.activation == "gelu"


def export_refusals(cfg: ModelConfig, zero_biases: bool = False) -> list[str]:
    """What keeps a model of this config out of every Hugging Face format written here: one phrase per switch
    (empty: it exports, as `hf_target(cfg)`). Pure: the Train tab asks it before any training."""
    return gpt2_incompatible(cfg) if _gpt2_body(cfg) else llama_incompatible(cfg, zero_biases)


def hf_target(cfg: ModelConfig) -> Architecture:
    """The architecture a model of this config goes out as, where `export_refusals` has nothing against it."""
    if _gpt2_body(cfg):
        return "gpt2"
    if cfg.activation == "relu2":
        return "arcee"
    return "qwen3" if cfg.qk_norm else "llama"


class ExportRefusedError(UserInputError):
    """A model whose switches no Hugging Face format has: the message names each one."""


def refusal_message(cfg: ModelConfig, reasons: list[str]) -> str:
    if _gpt2_body(cfg):
        return (f"this model cannot be exported as Hugging Face GPT-2: {'; '.join(reasons)}. Train it with the GPT-2 "
                "recipe to export (zero-init projections export fine)")  # fmt: skip
    return (
        f"this model cannot be exported to Hugging Face (GPT-2, Llama, Qwen3 or Arcee): {'; '.join(reasons)}. With "
        "rope and rmsnorm, no biases, a model exports as Llama (swiglu), Qwen3 (swiglu with qk_norm) or Arcee (relu2 "
        "without qk_norm); GPT-2's recipe as GPT-2"
    )


def _zero_biases(model: GPT) -> bool:
    return all(not bool(p.detach().any()) for n, p in model.named_parameters() if n.endswith(".bias"))


def hf_architecture(model: GPT) -> Architecture:
    """The Hugging Face architecture a model exports as (`hf_target`), or an ExportRefusedError naming each switch that
    keeps it out (`export_refusals`; biases that are all zero count as none)."""
    cfg = model.config
    if bad := export_refusals(cfg, zero_biases=cfg.bias and _zero_biases(model)):
        raise ExportRefusedError(refusal_message(cfg, bad))
    return hf_target(cfg)


def context_note(hf_cfg: dict[str, Any]) -> str:
    """What a user of an exported model must know about its context: a GPT-2's learned positions end at n_positions,
    and `transformers` raises an IndexError on a longer input, where our model slides its window over the last
    block_size tokens. Rotary positions have no such end (only quality fades past the trained length): ""."""
    if hf_cfg.get("model_type") != "gpt2":
        return ""
    n = hf_cfg["n_positions"]
    return (
        f"Context limit: {n} tokens. This GPT-2 has learned positions for {n} tokens only: in transformers, an input "
        f"(prompt and generated text together) longer than {n} tokens raises an IndexError, where this app slides its "
        f"window over the last {n}. Keep generate()'s prompt plus max_new_tokens within {n}, or feed it the last {n} "
        "tokens yourself."
    )


def ours_to_hf_state(model: GPT) -> dict[str, torch.Tensor]:
    """The weights of a model exported as Hugging Face GPT-2 (refused where `gpt2_incompatible` says why)."""
    if bad := gpt2_incompatible(model.config):
        raise ExportRefusedError(refusal_message(model.config, bad))
    out = {}
    for k, v in model.state_dict().items():
        if k == "lm_head.weight":
            continue  # tied to transformer.wte.weight
        v = v.detach().cpu()
        out[k] = (v.t() if any(k.endswith(c) for c in CONV1D) else v).contiguous()
    return out


def _ours_to_llama_state(model: GPT) -> dict[str, torch.Tensor]:
    """The weights as Llama's / Qwen3's / Arcee's names. Where our norms have no gain, theirs get gains of one."""
    cfg = model.config
    ours = {k: v.detach().cpu().float() for k, v in model.state_dict().items()}
    ones = torch.ones(cfg.n_embd)
    kv = cfg.kv_heads * cfg.head_dim
    sizes = {"attn.c_attn.weight": [cfg.n_embd, kv, kv], "mlp.c_fc.weight": [mlp_width(cfg)] * 2}  # (where stacked)
    out = {"model.embed_tokens.weight": ours["transformer.wte.weight"],
           "model.norm.weight": ours.get("transformer.ln_f.weight", ones)}  # fmt: skip
    if not cfg.tie_head:
        out["lm_head.weight"] = ours["lm_head.weight"]
    for i in range(cfg.n_layer):
        for mine, names in layer_names(cfg).items():
            if "q_norm" in mine or "k_norm" in mine:
                if not cfg.qk_norm:
                    continue
                default = torch.ones(cfg.head_dim)
            else:
                default = ones
            w = ours.get(f"transformer.h.{i}.{mine}", default)
            parts = w.split(sizes[mine]) if len(names) > 1 else (w,)
            for name, part in zip(names, parts, strict=True):
                out[f"model.layers.{i}.{name}"] = part
    return {k: v.contiguous().clone() for k, v in out.items()}


def read_hf_state(hf_dir: Path) -> dict[str, torch.Tensor]:
    st, pt = hf_dir / "model.safetensors", hf_dir / "pytorch_model.bin"
    if not st.is_file() and not pt.is_file():
        raise CheckpointError(f"{hf_dir} has neither model.safetensors nor pytorch_model.bin")
    try:
        state = load_file(str(st)) if st.is_file() else torch.load(pt, map_location="cpu", weights_only=True)
    except (SafetensorError, OSError, RuntimeError, ValueError) as e:
        raise CheckpointError(f"cannot read the weights in {hf_dir} ({type(e).__name__}: {e})") from None
    except Exception as e:  # noqa: BLE001 - an unsafe or broken pickle: refuse it, say why
        raise CheckpointError(f"{pt} cannot be loaded safely ({type(e).__name__}); use model.safetensors") from None
    if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):  # (a pickle may hold anything)
        raise CheckpointError(f"{pt.name} holds no mapping of weight names to tensors")
    return state


def read_hf_config(path: str | Path) -> ModelConfig:
    """A Hugging Face config.json as our model config; the file is size-checked before it is read."""
    f = Path(path)
    hf_cfg = ckpt.read_json(f, MAX_HF_CONFIG_BYTES, "a Hugging Face model directory")
    if not isinstance(hf_cfg, dict):
        raise CheckpointError(f"{f.parent.name}: config.json is not a JSON object")
    return hf_config_to_model(hf_cfg)


def load_hf(hf_dir: str | Path, check: SizeCheck | None = None) -> tuple[GPT, Tokenizer]:
    """A Hugging Face GPT-2, Llama, Qwen3 or Arcee directory as our model (eval mode) and its tokenizer.

    `check` sees the model's config before any weight is read, so an oversized model is refused cheaply."""
    d = Path(hf_dir)
    cfg = read_hf_config(d / "config.json")
    if check is not None:
        check(cfg)
    tokenizer = _hf_tokenizer(d, cfg)
    state = hf_state_to_ours(read_hf_state(d), cfg)
    with torch.device("meta"):
        model = GPT(cfg)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    wrong = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    if missing or wrong:
        raise CheckpointError(f"{d}: weights do not match its config (missing {missing[:3]}, shape of {wrong[:3]})")
    model = model.to_empty(device="cpu")
    model.load_state_dict({k: state[k] for k in expected}, strict=True)
    if cfg.tie_head:
        model.transformer.wte.weight = model.lm_head.weight
    return model.eval(), tokenizer


def _hf_tokenizer(d: Path, cfg: ModelConfig) -> Tokenizer:
    """Our spec where we wrote one; else GPT-2's for a GPT-2 of GPT-2's vocabulary (what older exports and bare
    GPT-2 weights have); else the directory's tokenizer.json (a byte-level BPE, as SmolLM2's)."""
    ours, theirs = d / TOKENIZER_FILE, d / HF_TOKENIZER
    tokenizer: Tokenizer
    if ours.exists():  # read bounded, from a regular file; anything broken is one message
        spec = ckpt.read_json(ours, MAX_TOKENIZER_BYTES, "a Hugging Face model directory of ours")
        if not isinstance(spec, dict):
            raise CheckpointError(f"{d.name}: {TOKENIZER_FILE} is not a JSON object; it is corrupt")
        try:
            tokenizer = from_spec(spec)
        except UserInputError as e:
            raise CheckpointError(f"{d.name}: {TOKENIZER_FILE} is corrupt: {e}") from None
        source = TOKENIZER_FILE
    elif cfg.pos == "learned" and cfg.vocab_size >= GPT2Tokenizer.vocab_size:  # a GPT-2: GPT-2's, as always
        return GPT2Tokenizer()
    elif theirs.exists():
        tokenizer, source = BPETokenizer(_read_text(theirs, MAX_HF_TOKENIZER_BYTES)), HF_TOKENIZER
    else:
        raise UserInputError(
            f"{d}: vocabulary of {cfg.vocab_size} tokens and neither {HF_TOKENIZER} nor {TOKENIZER_FILE}; cannot "
            "tell its tokenizer"
        )
    if tokenizer.vocab_size > cfg.vocab_size:
        raise CheckpointError(f"{d.name}: {source} has {tokenizer.vocab_size} tokens, the model only {cfg.vocab_size}")
    return tokenizer


def _read_text(path: Path, max_bytes: int) -> str:
    """A text file of at most `max_bytes`, from a regular file (a named pipe or an endless link is refused)."""
    try:
        with open_regular(path) as fh:
            raw = fh.read(max_bytes + 1)
    except OSError as e:
        raise CheckpointError(f"{path.parent.name}: {path.name} cannot be read ({e.strerror or e})") from None
    if len(raw) > max_bytes:
        raise UserInputError(f"{path.parent.name}: {path.name} is larger than {max_bytes >> 20} MB; it is refused")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise CheckpointError(f"{path.parent.name}: {path.name} is not UTF-8 text; it is corrupt") from None


def from_hf(hf_dir: str | Path, out_dir: str | Path, check: SizeCheck | None = None) -> Path:
    """Convert a Hugging Face GPT-2, Llama, Qwen3 or Arcee directory into our checkpoint directory (`check`: see
    `load_hf`).

    An existing `out_dir` is replaced only when it holds nothing but checkpoint files: a file, or a folder with
    anything else in it (the Hugging Face directory itself, say), is refused, as saving would delete it."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UserInputError(f"the output {str(out)!r} is a file; give a folder for the checkpoint")
    ours = {ckpt.CONFIG, ckpt.WEIGHTS, ckpt.TRAINER}
    if out.is_dir() and any(f.name not in ours for f in out.iterdir()):
        raise UserInputError(
            f"the output folder {str(out)!r} is not empty and not a checkpoint; give a new folder (saving replaces it)"
        )
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        reason = e.strerror or type(e).__name__
        raise UserInputError(f"cannot create the folder {str(out.parent)!r} ({reason})") from None
    model, tokenizer = load_hf(hf_dir, check)
    cfg = Config(model=model.config)
    cfg.data.tokenizer = tokenizer.name
    return ckpt.save(out_dir, model, cfg, tokenizer, step=0, extra={"source": f"hf:{Path(hf_dir).name}"})


def export_hf(model: GPT, tokenizer: Tokenizer) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """A model's Hugging Face config.json and weights, in the architecture `hf_architecture` picks for it."""
    arch = hf_architecture(model)
    if arch == "gpt2":
        return model_to_hf_config(model.config, tokenizer), ours_to_hf_state(model)
    return _llama_hf_config(model.config, arch, tokenizer), _ours_to_llama_state(model)


def to_hf(ckpt_dir: str | Path, hf_dir: str | Path) -> Path:
    """Write our checkpoint as a directory that `AutoModelForCausalLM.from_pretrained` loads (GPT-2, Llama, Qwen3 or
    Arcee: see `hf_architecture`) and `AutoTokenizer.from_pretrained` reads the tokenizer of, with a README.md (its
    model card, which says its context limit where it has one)."""
    loaded = ckpt.load(ckpt_dir)
    hf_cfg, state = export_hf(loaded.model, loaded.tokenizer)  # refused before anything is written
    tokenizer_files = hf_tokenizer_files(loaded.tokenizer, loaded.config.model.block_size)  # likewise
    out = Path(hf_dir)
    if out.exists() and not out.is_dir():
        raise UserInputError(f"the output {str(out)!r} is a file; give a folder for the Hugging Face model")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserInputError(f"cannot create the folder {str(out)!r} ({e.strerror or type(e).__name__})") from None
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps(hf_cfg, indent=2), encoding="utf-8")
    (out / "generation_config.json").write_text(
        json.dumps({"bos_token_id": hf_cfg["bos_token_id"], "eos_token_id": hf_cfg["eos_token_id"]}), encoding="utf-8"
    )
    for name, content in tokenizer_files.items():
        if isinstance(content, Path):
            shutil.copyfile(content, out / name)
        else:
            (out / name).write_text(content, encoding="utf-8")
    (out / "README.md").write_text(model_card(loaded.config.model, hf_cfg, loaded.step), encoding="utf-8")
    return out


def model_card(cfg: ModelConfig, hf_cfg: dict[str, Any], step: int) -> str:
    """The exported folder's README.md (the Hub shows it as the model card): what the model is, how to load it, and
    its context limit where it has one (`context_note`)."""
    arch = hf_cfg["architectures"][0]
    context = context_note(hf_cfg) or (
        f"Context: trained on windows of {cfg.block_size} tokens (max_position_embeddings). Its rotary positions go "
        "on past that length, but the text it writes there gets worse."
    )
    return "\n".join([
        "---", "library_name: transformers", "pipeline_tag: text-generation", "tags: [gpt-playground]", "---", "",
        f"# A small GPT trained with GPT Playground, as `{arch}`", "",
        f"Trained from scratch for {step:,} steps; its recipe: {recipe_summary(cfg)}.", "",
        "```python", "from transformers import AutoModelForCausalLM, AutoTokenizer", "",
        'model = AutoModelForCausalLM.from_pretrained("path/to/this/folder")',
        'tokenizer = AutoTokenizer.from_pretrained("path/to/this/folder")', "```", "",
        context, "",
    ])  # fmt: skip


def hf_tokenizer_files(tokenizer: Tokenizer, max_length: int) -> dict[str, str | Path]:
    """The tokenizer files `AutoTokenizer.from_pretrained` loads, giving our ids (see the module's note): each file's
    text, or the file to copy. Made before anything is written, so that a tokenizer without them refuses the export
    before a half-written folder."""
    tok_cfg: dict[str, Any] = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": max_length}
    files: dict[str, str | Path] = {}
    if hf_files := tokenizer.hf_files():  # GPT-2 BPE: Hugging Face's own tokenizer files
        files.update((name, Path(source)) for name, source in hf_files.items())
        eot = "<|endoftext|>"
        tok_cfg.update(tokenizer_class="GPT2Tokenizer", bos_token=eot, eos_token=eot, unk_token=eot)
    else:
        files[HF_TOKENIZER] = (
            tokenizer.hf_json() if isinstance(tokenizer, BPETokenizer) else _simple_tokenizer_json(tokenizer)
        )
        if tokenizer.eos_id is not None:
            tok_cfg["eos_token"] = tokenizer.token_text(tokenizer.eos_id)
    if not isinstance(tokenizer, BPETokenizer):  # (a BPE's spec is its tokenizer.json: no second copy)
        files[TOKENIZER_FILE] = json.dumps(tokenizer.spec())
    files["tokenizer_config.json"] = json.dumps(tok_cfg, indent=2)
    return files


def _simple_tokenizer_json(tokenizer: Tokenizer) -> str:
    """A tokenizer.json of our char or byte tokenizer, built with the `tokenizers` library: a BPE without merges
    over our vocabulary, so each character (char) or byte (byte, as GPT-2's byte-level alphabet) is one token, with
    our id."""
    from tokenizers import Regex, decoders, models, pre_tokenizers
    from tokenizers import Tokenizer as HFTokenizer

    if isinstance(tokenizer, CharTokenizer):
        tok = HFTokenizer(models.BPE(vocab={c: i for i, c in enumerate(tokenizer.chars)}, merges=[]))
        tok.decoder = decoders.Fuse()  # the characters joined as they are
    elif isinstance(tokenizer, ByteTokenizer):
        alphabet = bytes_to_unicode()  # byte b as a printable character, as GPT-2's vocabulary stores bytes
        tok = HFTokenizer(models.BPE(vocab={alphabet[b]: b for b in range(256)}, merges=[]))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
        tok.decoder = decoders.ByteLevel()
    elif isinstance(tokenizer, SymbolTokenizer):  # a task's symbols: one word each, split at spaces (or each a char)
        tok = HFTokenizer(models.WordLevel(vocab={c: i for i, c in enumerate(tokenizer.symbols)}, unk_token=None))
        split: list[Any] = [pre_tokenizers.WhitespaceSplit()]
        if not tokenizer.sep:
            split.append(pre_tokenizers.Split(Regex(r"\S"), behavior="isolated"))
        tok.pre_tokenizer = pre_tokenizers.Sequence(split)
        tok.decoder = decoders.Fuse() if not tokenizer.sep else None  # (none: the words are joined with spaces)
    else:
        raise UserInputError(f"the {tokenizer.name} tokenizer has no Hugging Face tokenizer.json")
    return tok.to_str()


def fetch_hf(name: str, check: SizeCheck | None = None) -> Path:
    """Download a GPT-2, Llama, Qwen3 or Arcee from the Hugging Face Hub (or find it in the local cache): config.json
    first, and the weights (and tokenizer) only if `check` accepts the config. Download progress goes through
    huggingface_hub's tqdm bars."""
    if not HUB_NAME.match(name):
        raise UserInputError(f"{name[:80]!r} is not a Hugging Face model name (such as gpt2 or openai-community/gpt2)")
    try:
        from huggingface_hub import hf_hub_download, snapshot_download

        _hub_reachable()
        config = hf_hub_download(name, "config.json")
    except Exception as e:  # noqa: BLE001 - offline, unknown name, no huggingface_hub: one clear message
        raise UserInputError(
            f"{name!r} is not available ({type(e).__name__}): it is not in the local Hugging Face cache and could "
            f"not be downloaded. On a machine with internet run `huggingface-cli download {name}` (or save a "
            "model with save_pretrained) and load that directory"
        ) from None
    if check is not None:
        check(read_hf_config(config))
    files = ["config.json", "model.safetensors", HF_TOKENIZER, TOKENIZER_FILE]
    try:
        return Path(snapshot_download(name, allow_patterns=files))
    except Exception as e:  # noqa: BLE001 - a failed download: say so, nothing half-done is kept by the hub cache
        raise UserInputError(f"the weights of {name!r} could not be downloaded ({type(e).__name__})") from None


def _hub_reachable(timeout: float = 3.0) -> None:
    """Fail at once when the Hub cannot be reached: huggingface_hub itself retries for ~25 s before giving up."""
    from urllib.parse import urlparse

    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        raise ConnectionError("HF_HUB_OFFLINE is set")
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    with socket.create_connection((url.hostname or "huggingface.co", url.port or 443), timeout=timeout):
        pass


def hf_cache_dirs(name: str = "gpt2") -> list[Path]:
    """Snapshots of `name` in the local Hugging Face cache (no download), newest first."""
    home = Path(
        os.environ.get("HF_HUB_CACHE") or Path(os.environ.get("HF_HOME", Path.home() / ".cache/huggingface")) / "hub"
    )
    snaps = home / f"models--{name.replace('/', '--')}" / "snapshots"
    found = [p for p in snaps.glob("*") if (p / "config.json").is_file()] if snaps.is_dir() else []
    return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)
