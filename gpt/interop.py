"""GPT-2 weights in and out of the Hugging Face `transformers` format (`GPT2LMHeadModel` directories).

Hugging Face's GPT-2 stores its attention and MLP matrices as `Conv1D` weights, shaped (in, out): the
transpose of `nn.Linear`'s (out, in). The head is tied to the token embedding and may be absent from the file.
No `transformers` import is needed here: the format is plain safetensors (or a `pytorch_model.bin` read with
`weights_only=True`) plus a JSON config.

How tokenizers travel on export: GPT-2 BPE models get GPT-2's own `vocab.json` and `merges.txt` (from the same
hash-checked files the tokenizer uses), so `AutoTokenizer.from_pretrained` works; char- and byte-level models get
`gpt_playground_tokenizer.json` (our tokenizer spec, with the char vocabulary), which `from_hf` reads back.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from gpt import checkpoint as ckpt
from gpt.config import Config, ModelConfig
from gpt.errors import CheckpointError, UserInputError
from gpt.model import GPT
from gpt.tokenizer import GPT2Tokenizer, Tokenizer, from_spec

CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
TOKENIZER_FILE = "gpt_playground_tokenizer.json"
MAX_HF_CONFIG_BYTES = 1 << 20  # a GPT-2 config.json is ~1 kB: read no more than this before parsing
MAX_TOKENIZER_BYTES = 4 << 20  # gpt_playground_tokenizer.json: a char vocabulary, as in a checkpoint's config.json
HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}(/[A-Za-z0-9][\w.-]{0,95})?$")  # "gpt2", "openai-community/gpt2"

# Called with a model's config before its weights are read or downloaded: raises UserInputError to refuse it.
SizeCheck = Callable[[ModelConfig], None]


def hf_config_to_model(hf: dict[str, Any]) -> ModelConfig:
    if hf.get("model_type", "gpt2") != "gpt2":
        raise UserInputError(f"only GPT-2 models can be imported, this is {hf.get('model_type')!r}")
    act = hf.get("activation_function", "gelu_new")
    if act not in ("gelu_new", "gelu_pytorch_tanh"):
        raise UserInputError(f"activation {act!r} is not GPT-2's tanh GELU; this model cannot be imported exactly")
    try:
        cfg = ModelConfig(
            vocab_size=int(hf["vocab_size"]),
            block_size=int(hf.get("n_positions", hf.get("n_ctx", 1024))),
            n_layer=int(hf["n_layer"]),
            n_head=int(hf["n_head"]),
            n_embd=int(hf["n_embd"]),
            dropout=float(hf.get("resid_pdrop", 0.0)),
            bias=True,
        )
    except (KeyError, TypeError, ValueError) as e:
        raise UserInputError(f"the Hugging Face config.json lacks a GPT-2 field ({e})") from None
    cfg.validate()
    return cfg


def model_to_hf_config(cfg: ModelConfig, tokenizer: Tokenizer) -> dict[str, Any]:
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
        "n_inner": None,
        "activation_function": "gelu_new",
        "resid_pdrop": cfg.dropout,
        "embd_pdrop": cfg.dropout,
        "attn_pdrop": cfg.dropout,
        "layer_norm_epsilon": 1e-5,
        "initializer_range": 0.02,
        "scale_attn_weights": True,
        "tie_word_embeddings": True,
        "bos_token_id": eos,
        "eos_token_id": eos,
        "torch_dtype": "float32",
    }


def hf_state_to_ours(state: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        k = key if key.startswith(("transformer.", "lm_head.")) else f"transformer.{key}"  # GPT2Model has no prefix
        if k.endswith((".attn.bias", ".attn.masked_bias")):
            continue  # causal-mask buffers of older checkpoints, not weights
        if any(k.endswith(c) for c in CONV1D):
            value = value.t()
        out[k] = value.contiguous()
    out.setdefault("lm_head.weight", out.get("transformer.wte.weight", torch.empty(0)))
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
    return [f"model.{k}={_value(getattr(cfg, k))} ({NOT_GPT2[k]})" for k in differ]


def _value(v: Any) -> str:
    return str(v).lower() if isinstance(v, bool) else str(v)


def ours_to_hf_state(model: GPT) -> dict[str, torch.Tensor]:
    bad = gpt2_incompatible(model.config)
    if bad:
        raise UserInputError(
            f"this model cannot be exported as Hugging Face GPT-2: {'; '.join(bad)}. Train it with the GPT-2 recipe "
            "to export (zero-init projections export fine)"
        )
    out = {}
    for k, v in model.state_dict().items():
        if k == "lm_head.weight":
            continue  # tied to transformer.wte.weight
        v = v.detach().cpu()
        out[k] = (v.t() if any(k.endswith(c) for c in CONV1D) else v).contiguous()
    return out


def read_hf_state(hf_dir: Path) -> dict[str, torch.Tensor]:
    st, pt = hf_dir / "model.safetensors", hf_dir / "pytorch_model.bin"
    try:
        if st.is_file():
            return load_file(str(st))
        if pt.is_file():
            return torch.load(pt, map_location="cpu", weights_only=True)
    except (SafetensorError, OSError, RuntimeError, ValueError) as e:
        raise CheckpointError(f"cannot read the weights in {hf_dir} ({type(e).__name__}: {e})") from None
    except Exception as e:  # noqa: BLE001 - an unsafe or broken pickle: refuse it, say why
        raise CheckpointError(f"{pt} cannot be loaded safely ({type(e).__name__}); use model.safetensors") from None
    raise CheckpointError(f"{hf_dir} has neither model.safetensors nor pytorch_model.bin")


def read_hf_config(path: str | Path) -> ModelConfig:
    """A Hugging Face config.json as our model config; the file is size-checked before it is read."""
    f = Path(path)
    hf_cfg = ckpt.read_json(f, MAX_HF_CONFIG_BYTES, "a Hugging Face model directory")
    if not isinstance(hf_cfg, dict):
        raise CheckpointError(f"{f.parent.name}: config.json is not a JSON object")
    return hf_config_to_model(hf_cfg)


def load_hf(hf_dir: str | Path, check: SizeCheck | None = None) -> tuple[GPT, Tokenizer]:
    """A Hugging Face GPT-2 directory as our model (eval mode) and its tokenizer.

    `check` sees the model's config before any weight is read, so an oversized model is refused cheaply."""
    d = Path(hf_dir)
    cfg = read_hf_config(d / "config.json")
    if check is not None:
        check(cfg)
    tokenizer = _hf_tokenizer(d, cfg.vocab_size)
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
    model.transformer.wte.weight = model.lm_head.weight
    return model.eval(), tokenizer


def _hf_tokenizer(d: Path, vocab_size: int) -> Tokenizer:
    ours = d / TOKENIZER_FILE
    if ours.exists():  # read bounded, from a regular file; anything broken is one message
        spec = ckpt.read_json(ours, MAX_TOKENIZER_BYTES, "a Hugging Face model directory of ours")
        if not isinstance(spec, dict):
            raise CheckpointError(f"{d.name}: {TOKENIZER_FILE} is not a JSON object; it is corrupt")
        try:
            tokenizer = from_spec(spec)
        except UserInputError as e:
            raise CheckpointError(f"{d.name}: {TOKENIZER_FILE} is corrupt: {e}") from None
        if tokenizer.vocab_size > vocab_size:
            raise CheckpointError(
                f"{d.name}: {TOKENIZER_FILE} has {tokenizer.vocab_size} tokens, the model only {vocab_size}"
            )
        return tokenizer
    if vocab_size >= 50257:
        return GPT2Tokenizer()
    raise UserInputError(f"{d}: vocabulary of {vocab_size} tokens and no {TOKENIZER_FILE}; cannot tell its tokenizer")


def from_hf(hf_dir: str | Path, out_dir: str | Path, check: SizeCheck | None = None) -> Path:
    """Convert a Hugging Face GPT-2 directory into our checkpoint directory (`check`: see `load_hf`).

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


def to_hf(ckpt_dir: str | Path, hf_dir: str | Path) -> Path:
    """Write our checkpoint as a directory that `GPT2LMHeadModel.from_pretrained` loads."""
    loaded = ckpt.load(ckpt_dir)
    out = Path(hf_dir)
    if out.exists() and not out.is_dir():
        raise UserInputError(f"the output {str(out)!r} is a file; give a folder for the Hugging Face model")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserInputError(f"cannot create the folder {str(out)!r} ({e.strerror or type(e).__name__})") from None
    save_file(ours_to_hf_state(loaded.model), str(out / "model.safetensors"), metadata={"format": "pt"})
    hf_cfg = model_to_hf_config(loaded.config.model, loaded.tokenizer)
    (out / "config.json").write_text(json.dumps(hf_cfg, indent=2), encoding="utf-8")
    (out / "generation_config.json").write_text(
        json.dumps({"bos_token_id": hf_cfg["bos_token_id"], "eos_token_id": hf_cfg["eos_token_id"]}), encoding="utf-8"
    )
    if hf_files := loaded.tokenizer.hf_files():  # GPT-2 BPE: Hugging Face's own tokenizer files
        for name, source in hf_files.items():
            shutil.copyfile(source, out / name)
        eot = "<|endoftext|>"
        tok_cfg = {"tokenizer_class": "GPT2Tokenizer", "model_max_length": loaded.config.model.block_size,
                   "bos_token": eot, "eos_token": eot, "unk_token": eot}  # fmt: skip
        (out / "tokenizer_config.json").write_text(json.dumps(tok_cfg, indent=2), encoding="utf-8")
    else:
        (out / TOKENIZER_FILE).write_text(json.dumps(loaded.tokenizer.spec()), encoding="utf-8")
    return out


def fetch_hf(name: str, check: SizeCheck | None = None) -> Path:
    """Download a GPT-2 from the Hugging Face Hub (or find it in the local cache): config.json first, and the
    weights only if `check` accepts the config. Download progress goes through huggingface_hub's tqdm bars."""
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
            "GPT2LMHeadModel with save_pretrained) and load that directory"
        ) from None
    if check is not None:
        check(read_hf_config(config))
    try:
        return Path(snapshot_download(name, allow_patterns=["config.json", "model.safetensors"]))
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
