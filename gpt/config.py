"""Configuration: one dataclass per concern, YAML load/save, and dotted command-line overrides.

A run is described by a `Config` holding a `ModelConfig`, `DataConfig`, `TrainConfig` and `SampleConfig`.
`validate()` checks every field and raises `UserInputError` with a message that says what to change.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, get_args

import yaml

from gpt.errors import UserInputError
from gpt.tokenizer import TokenizerName, check_bpe_vocab

# Hard upper bounds that no config may exceed: they keep nonsense values (layers = 10 000) from
# allocating the machine away. Hosting caps (playground) are stricter and set by env vars.
MAX_LAYERS = 96
MAX_EMBD = 12288
MAX_BLOCK_SIZE = 32768
MAX_VOCAB = 1_000_000
# A task's sizes (gpt/tasks.py): each example is a row of tokens held in memory, and every number is a token.
MAX_MODULUS = 400  # modular addition: p * p examples, one token per residue
MAX_TASK_LENGTH = 64  # sort, reverse, copy, parity, brackets: the input's tokens
MAX_TASK_VALUES = 1000  # sort, reverse, copy: numbers 0 .. values - 1, one token each
MAX_DIGITS = 30  # addition: digits of each operand
MAX_EXAMPLES = 200_000  # examples generated, train and held-out together
MAX_EVAL_EXAMPLES = 10_000  # examples of each split scored at every evaluation
PRESETS_DIR = Path(__file__).resolve().parent.parent / "configs"  # tiny.yaml, small.yaml, gpt2.yaml
# A config is sections of settings, a setting at most a list of strings: YAML deeper than this, larger than this, or
# with anchors and aliases (whose expansion is a "billion laughs" bomb) is refused before anything is built from it.
MAX_YAML_DEPTH = 8
MAX_YAML_BYTES = 1 << 20


# The architecture's and the optimizer's choices, declared once: validation, the CLI's messages and the app's
# controls all read them from here. The first of each is GPT-2's (2019); a missing key in an old checkpoint's
# config means that one.
Position = Literal["learned", "rope"]
Norm = Literal["layernorm", "rmsnorm"]
Activation = Literal["gelu", "relu2", "swiglu"]
OptimizerName = Literal["adamw", "muon"]
Schedule = Literal["cosine", "linear", "constant", "wsd"]
CompileMode = Literal["auto", "on", "off"]  # auto: on for CUDA (about 1.5x the steps/s there), off elsewhere
# The algorithmic tasks (gpt/tasks.py generates them): a model learns one from examples, scored by exact match.
TaskName = Literal["modular-addition", "sort", "reverse", "copy", "addition", "parity", "brackets"]


def choices(kind: Any) -> list[str]:
    """The values of a `Literal` type, in order: choices(Norm) == ["layernorm", "rmsnorm"]."""
    return list(get_args(kind))


def _switch(label: str, why: str) -> dict[str, Any]:
    """A model or training switch's label and its one plain sentence (shown next to it in the Train tab)."""
    return {"label": label, "why": why}


def padded_vocab(vocab_size: int) -> int:
    """The model's vocabulary for a tokenizer of `vocab_size` tokens (ModelConfig.vocab_size): large vocabularies are
    padded to a multiple of 64 (faster matmuls); the sampler never picks the padding."""
    return vocab_size if vocab_size <= 1024 else (vocab_size + 63) // 64 * 64


@dataclass
class ModelConfig:
    vocab_size: int = 50304  # replaced by the tokenizer's vocabulary size when data is prepared
    block_size: int = 64
    n_layer: int = 4
    n_head: int = 4
    n_kv_head: int = 0  # grouped-query attention: heads of keys and values, each shared by n_head / n_kv_head
    # query heads (Llama's, Qwen3's); 0 means n_head (one each: GPT-2's multi-head attention)
    n_embd: int = 128
    dropout: float = 0.0
    # What imported Llama-family models need, each defaulting to what a model of ours has always done:
    mlp_hidden: int = 0  # the MLP's hidden width; 0: 4 x n_embd (SwiGLU: 8/3 x n_embd, rounded up to 8)
    rope_theta: float = 10000.0  # RoPE's base: larger turns the slowest pairs slower (Qwen3: 1e6)
    norm_eps: float = 0.0  # the norms' epsilon; 0: torch's (LayerNorm 1e-5, RMSNorm the dtype's machine epsilon)
    norm_gain: bool = False  # rmsnorm (and QK-norm) with a learned per-channel gain, as Llama's and Qwen3's
    bias: bool = field(
        default=True,
        metadata=_switch(
            "Biases",
            "Adds a learned offset to every linear layer and norm; modern models drop them: fewer parameters, "
            "the same loss.",
        ),
    )
    pos: Position = field(
        default="learned",
        metadata=_switch(
            "Positions",
            "learned: a trained vector per position is added to each token; rope: queries and keys are "
            "rotated by an angle that grows with the position, so attention sees how far apart two tokens are.",
        ),
    )
    norm: Norm = field(
        default="layernorm",
        metadata=_switch(
            "Norm",
            "layernorm centres and scales each vector, with a learned gain and offset; rmsnorm only scales it "
            "to unit size, with nothing to learn: cheaper, and as good.",
        ),
    )
    activation: Activation = field(
        default="gelu",
        metadata=_switch(
            "MLP activation",
            "gelu: GPT-2's smooth curve; relu2: max(0, x) squared, sparser and faster to learn; "
            "swiglu: one half of the layer gates the other (Llama's), with the width cut to keep the size.",
        ),
    )
    qk_norm: bool = field(
        default=False,
        metadata=_switch(
            "QK-norm",
            "Normalises queries and keys before they meet, so attention scores cannot blow up and a "
            "higher learning rate stays stable.",
        ),
    )
    tie_head: bool = field(
        default=True,
        metadata=_switch(
            "Tied head",
            "The output layer reuses the token embedding (fewer parameters); untied, each learns its own "
            "job (reading tokens in, predicting tokens out) and learns faster.",
        ),
    )
    zero_init: bool = field(
        default=False,
        metadata=_switch(
            "Zero-init projections",
            "Each block's output projections start at zero, so a new model starts as the "
            "identity and every block learns what to add, instead of adding noise first.",
        ),
    )

    def validate(self) -> None:
        _check_int("model.vocab_size", self.vocab_size, 1, MAX_VOCAB)
        _check_int("model.block_size", self.block_size, 1, MAX_BLOCK_SIZE)
        _check_int("model.n_layer", self.n_layer, 1, MAX_LAYERS)
        _check_int("model.n_head", self.n_head, 1, 256)
        _check_int("model.n_kv_head", self.n_kv_head, 0, 256)
        _check_int("model.n_embd", self.n_embd, 1, MAX_EMBD)
        _check_int("model.mlp_hidden", self.mlp_hidden, 0, 8 * MAX_EMBD)
        _check_float("model.rope_theta", self.rope_theta, 1.0, 1e9)
        _check_float("model.norm_eps", self.norm_eps, 0.0, 1.0)
        _check_float("model.dropout", self.dropout, 0.0, 0.99)
        _check_choice("model.pos", self.pos, Position)
        _check_choice("model.norm", self.norm, Norm)
        _check_choice("model.activation", self.activation, Activation)
        if self.n_embd % self.n_head:
            raise UserInputError(
                f"model.n_embd ({self.n_embd}) must be divisible by model.n_head ({self.n_head}); "
                f"try n_embd={self.n_head * max(1, round(self.n_embd / self.n_head))}"
            )
        if self.n_head % self.kv_heads:
            raise UserInputError(
                f"model.n_kv_head ({self.n_kv_head}) must divide model.n_head ({self.n_head}): each key/value head "
                f"serves the same number of query heads; try one of "
                f"{', '.join(str(d) for d in range(1, self.n_head + 1) if self.n_head % d == 0)}"
            )
        if self.pos == "rope" and (self.n_embd // self.n_head) % 2:
            raise UserInputError(
                f"model.pos=rope rotates pairs of numbers, so each head needs an even size; n_embd/n_head is "
                f"{self.n_embd // self.n_head}: change n_embd or n_head"
            )

    @property
    def kv_heads(self) -> int:
        """The number of key/value heads (n_kv_head, or n_head where it is 0)."""
        return self.n_kv_head or self.n_head

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @property
    def switches(self) -> dict[str, Any]:
        """The architecture switches and their values (what the Inspect and Compare tabs show)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if "why" in f.metadata}


@dataclass
class DataConfig:
    tokenizer: TokenizerName = "char"
    bpe_vocab_size: int = 2048  # the bpe tokenizer's vocabulary, trained on the corpus
    val_fraction: float = 0.1
    sampling: str = "random"  # random windows (nanoGPT) | sliding windows with a stride
    stride: int = 0  # sliding mode: step between windows; 0 means block_size (no overlap)

    def validate(self) -> None:
        _check_choice("data.tokenizer", self.tokenizer, TokenizerName)
        if self.tokenizer == "bpe":
            check_bpe_vocab(self.bpe_vocab_size)
        _check_float("data.val_fraction", self.val_fraction, 0.0, 0.5, low_open=True)
        if self.sampling not in ("random", "sliding"):
            raise UserInputError(f"data.sampling must be random or sliding, not {_short(self.sampling)}")
        _check_int("data.stride", self.stride, 0, MAX_BLOCK_SIZE)


@dataclass
class TrainConfig:
    batch_size: int = 12
    grad_accum: int = 1
    max_steps: int = 2000
    lr: float = 1e-3  # AdamW's; with muon, the embeddings', head's, norms' and biases'
    min_lr: float = 1e-4  # where the schedule ends (muon_lr follows it down in proportion)
    schedule: Schedule = field(
        default="cosine",
        metadata=_switch(
            "LR schedule",
            "After the warmup: cosine and linear lower the rate all along; wsd (warmup-stable-decay) "
            "holds it high and only lowers it over the last part of the run, which learns faster.",
        ),
    )
    decay_fraction: float = 0.2  # wsd: the last fraction of the steps, over which the rate falls to min_lr
    optimizer: OptimizerName = field(
        default="adamw",
        metadata=_switch(
            "Optimizer",
            "adamw steps each number by its own running average; muon makes each weight matrix's whole "
            "update orthogonal (every direction moves as much), so fewer steps reach the same loss.",
        ),
    )
    muon_lr: float = 0.02  # muon: the rate of the hidden weight matrices
    warmup_steps: int = 100
    weight_decay: float = field(
        default=0.1,
        metadata=_switch(
            "Weight decay",
            "Shrinks every weight matrix a little at each step, so only weights that keep earning their place "
            "survive: on an algorithmic task it is what turns a memorised table into the algorithm (without it "
            "the held-out accuracy stays near chance long after the train accuracy is 100%).",
        ),
    )
    grokfast: bool = field(
        default=False,
        metadata=_switch(
            "Grokfast",
            "Adds to each gradient a slow moving average of the past gradients (times grokfast_lamb): the slow "
            "direction that generalises is amplified, so the held-out accuracy follows the train accuracy "
            "sooner (Grokfast, arXiv 2405.20233).",
        ),
    )
    grokfast_alpha: float = 0.98  # the average's decay per step: it spans about 1 / (1 - alpha) steps
    grokfast_lamb: float = 2.0  # how much of the average is added to the gradient
    beta1: float = 0.9
    beta2: float = 0.99
    grad_clip: float = 1.0  # 0 disables clipping
    eval_interval: int = 250
    eval_iters: int = 20
    log_interval: int = 10
    health_interval: int = 25  # steps between training-health readings (gpt/health.py); 0: none
    sample_interval: int = 500  # 0 disables sample text during training
    sample_tokens: int = 200
    checkpoint_interval: int = 500  # 0: only at evals that improve val loss, and at the end
    seed: int = 1337
    device: str = "auto"  # auto | cpu | cuda | mps
    dtype: str = "auto"  # auto | float32 | bfloat16 | float16
    compile: str = "auto"  # CompileMode; true / false (older configs) mean on / off
    threads: int = 0  # CPU threads for torch; 0 keeps torch's default (one per core)
    tensorboard: bool = True

    def validate(self) -> None:
        _check_int("train.batch_size", self.batch_size, 1, 65536)
        _check_int("train.grad_accum", self.grad_accum, 1, 4096)
        _check_int("train.max_steps", self.max_steps, 1, 10_000_000)
        _check_float("train.lr", self.lr, 0.0, 10.0, low_open=True)
        _check_float("train.min_lr", self.min_lr, 0.0, 10.0)
        _check_choice("train.schedule", self.schedule, Schedule)
        _check_float("train.decay_fraction", self.decay_fraction, 0.0, 1.0)
        _check_choice("train.optimizer", self.optimizer, OptimizerName)
        self.compile = {"true": "on", "false": "off"}.get(str(self.compile).lower(), self.compile)
        _check_choice("train.compile", self.compile, CompileMode)
        _check_float("train.muon_lr", self.muon_lr, 0.0, 10.0, low_open=True)
        _check_int("train.warmup_steps", self.warmup_steps, 0, 10_000_000)
        _check_float("train.weight_decay", self.weight_decay, 0.0, 10.0)
        _check_float("train.grokfast_alpha", self.grokfast_alpha, 0.0, 0.9999)
        _check_float("train.grokfast_lamb", self.grokfast_lamb, 0.0, 100.0)
        _check_float("train.beta1", self.beta1, 0.0, 0.9999)
        _check_float("train.beta2", self.beta2, 0.0, 0.99999)
        _check_float("train.grad_clip", self.grad_clip, 0.0, 1e6)
        _check_int("train.eval_interval", self.eval_interval, 1, 10_000_000)
        _check_int("train.eval_iters", self.eval_iters, 1, 10_000)
        _check_int("train.log_interval", self.log_interval, 1, 10_000_000)
        _check_int("train.health_interval", self.health_interval, 0, 10_000_000)
        _check_int("train.sample_interval", self.sample_interval, 0, 10_000_000)
        _check_int("train.sample_tokens", self.sample_tokens, 1, 100_000)
        _check_int("train.checkpoint_interval", self.checkpoint_interval, 0, 10_000_000)
        _check_int("train.seed", self.seed, 0, 2**63 - 1)
        _check_int("train.threads", self.threads, 0, 1024)
        if self.device not in ("auto", "cpu", "cuda", "mps") and not re.fullmatch(r"cuda:\d{1,4}", self.device):
            raise UserInputError(f"train.device must be auto, cpu, cuda, cuda:N or mps, not {_short(self.device)}")
        if self.dtype not in ("auto", "float32", "bfloat16", "float16"):
            raise UserInputError(f"train.dtype must be auto, float32, bfloat16 or float16, not {_short(self.dtype)}")


@dataclass
class TaskConfig:
    """An algorithmic task to learn instead of a text corpus (gpt/tasks.py generates it): `name` "" means text.
    Only the named task's options matter (modulus for modular addition, length and values for sort, reverse and
    copy, length for parity and brackets, digits for addition); the others keep their defaults."""

    name: str = ""  # "" (a text corpus) or one of TaskName
    modulus: int = 97  # modular-addition: a + b mod p, each of the p * p pairs once
    length: int = 8  # sort, reverse, copy, parity, brackets: tokens of the input
    values: int = 10  # sort, reverse, copy: the numbers 0 .. values - 1, one token each
    digits: int = 3  # addition: digits of each operand
    examples: int = 10_000  # the other tasks: distinct examples drawn (all there are, where there are fewer)
    train_fraction: float = 0.3  # of the examples, the share trained on; the rest are held out
    seed: int = 0  # the examples and their split: the same seed, the same data
    eval_examples: int = 1000  # every evaluation scores this many train and this many held-out examples (fixed)

    def validate(self) -> None:
        if self.name != "":
            _check_choice("task.name", self.name, TaskName)
        _check_int("task.modulus", self.modulus, 2, MAX_MODULUS)
        _check_int("task.length", self.length, 1, MAX_TASK_LENGTH)
        _check_int("task.values", self.values, 2, MAX_TASK_VALUES)
        _check_int("task.digits", self.digits, 1, MAX_DIGITS)
        _check_int("task.examples", self.examples, 2, MAX_EXAMPLES)
        _check_float("task.train_fraction", self.train_fraction, 0.0, 1.0, low_open=True)
        if self.train_fraction >= 1.0:
            raise UserInputError("task.train_fraction must be below 1: some examples must be held out")
        _check_int("task.seed", self.seed, 0, 2**63 - 1)
        _check_int("task.eval_examples", self.eval_examples, 1, MAX_EVAL_EXAMPLES)
        if self.name == "brackets" and self.length % 2:
            raise UserInputError(f"task.length must be even for brackets (a balanced string pairs them), got "
                                 f"{self.length}")  # fmt: skip


def _ui(label: str, lo: float | None = None, hi: float | None = None, step: float | None = None, ui: Any = None,
        more: bool = False) -> dict[str, Any]:  # fmt: skip
    return {"label": label, "range": (lo, hi, step), "ui": ui, "more": more}


@dataclass
class SampleConfig:
    """How to sample. Each field's metadata is the one description of the setting: `gpt-generate` makes its flag
    from it and the Generate tab its control (label, range and step of the slider; "ui": the app's starting value
    where it differs from the library's default; "more": under the "More" fold). The fields are in the order of
    the Generate tab's controls and of its API."""

    temperature: float = field(default=0.8, metadata=_ui("Temperature (0 = greedy)", 0.0, 2.0, 0.05))
    top_k: int = field(default=0, metadata=_ui("Top-k (0 = off)", 0, 200, 1, ui=40))
    top_p: float = field(default=1.0, metadata=_ui("Top-p", 0.05, 1.0, 0.05))
    repetition_penalty: float = field(default=1.0, metadata=_ui("Repetition penalty", 1.0, 2.0, 0.05))
    min_p: float = field(default=0.0, metadata=_ui("Min-p (1 = greedy)", 0.0, 1.0, 0.01))
    max_new_tokens: int = field(default=200, metadata=_ui("Max new tokens", 1, None, 1))
    seed: int | None = field(default=None, metadata=_ui("Seed (same seed: same text)", ui=42))
    presence_penalty: float = field(default=0.0, metadata=_ui("Presence penalty", -2.0, 2.0, 0.1, more=True))
    frequency_penalty: float = field(default=0.0, metadata=_ui("Frequency penalty", -2.0, 2.0, 0.1, more=True))
    stop: list[str] = field(default_factory=list, metadata=_ui("Stop text (separate several with |)", more=True))

    def validate(self) -> None:
        _check_int("max_new_tokens", self.max_new_tokens, 1, 100_000)
        _check_float("temperature", self.temperature, 0.0, 100.0)
        _check_int("top_k", self.top_k, 0, MAX_VOCAB)
        _check_float("top_p", self.top_p, 0.0, 1.0, low_open=True)
        _check_float("min_p", self.min_p, 0.0, 1.0)
        _check_float("repetition_penalty", self.repetition_penalty, 0.0, 100.0, low_open=True)
        _check_float("presence_penalty", self.presence_penalty, -100.0, 100.0)
        _check_float("frequency_penalty", self.frequency_penalty, -100.0, 100.0)
        if self.seed is not None:
            _check_int("seed", self.seed, 0, 2**63 - 1)
        if not isinstance(self.stop, list) or not all(isinstance(s, str) and s for s in self.stop):
            raise UserInputError("stop must be a list of non-empty strings")


def recipe_summary(model: ModelConfig, train: TrainConfig | None = None) -> str:
    """The recipe in a few words: "rope positions · rmsnorm · relu2 · qk-norm · untied head · ... · muon, wsd"."""
    words = [f"{model.pos} positions", model.norm, model.activation, *(["qk-norm"] if model.qk_norm else []),
             "tied head" if model.tie_head else "untied head", *(["zero-init projections"] if model.zero_init else []),
             "biases" if model.bias else "no biases"]  # fmt: skip
    if train is not None:
        words += [f"{'muon + adamw' if train.optimizer == 'muon' else 'adamw'}, {train.schedule} schedule"]
    return " · ".join(words)


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    task: TaskConfig = field(default_factory=TaskConfig)

    def validate(self) -> Config:
        self.model.validate()
        self.data.validate()
        self.train.validate()
        self.sample.validate()
        self.task.validate()
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Config:
        if not isinstance(d, dict):
            raise UserInputError(f"a config must be a mapping with sections {SECTIONS}")
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            shown = ", ".join(sorted(_cut(k if isinstance(k, str) else _short(k), 40) for k in unknown)[:5])
            raise UserInputError(f"unknown config section(s): {shown}; the sections are {SECTIONS}")
        cfg = cls()
        for section, values in d.items():
            if values is None:
                continue
            target = getattr(cfg, section)
            if not isinstance(values, dict):
                raise UserInputError(f"config section {section!r} must be a mapping")
            for key, value in values.items():
                _set_field(target, section, key, value)
        return cfg


SECTIONS = ", ".join(f.name for f in fields(Config))


class _Refused(yaml.YAMLError):
    """YAML that is well-formed but not a config: anchors, aliases or too deep."""


class _ConfigLoader(yaml.SafeLoader):
    """The safe loader, refusing anchors and aliases and nesting deeper than MAX_YAML_DEPTH (PyYAML composes nodes
    recursively: 5,000 levels are a RecursionError, an alias bomb expands to gigabytes)."""

    _depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise _Refused(f"it has an anchor or alias (&name, *name) at line {_line(event)}; configs may not")
        if self._depth >= MAX_YAML_DEPTH:
            raise _Refused(f"it nests deeper than {MAX_YAML_DEPTH} levels (line {_line(event)})")
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _line(event: Any) -> int:
    return event.start_mark.line + 1 if event.start_mark is not None else 0


def parse_yaml(text: str) -> Any:
    """YAML text as plain data, through `_ConfigLoader` (at most MAX_YAML_BYTES); raises yaml.YAMLError."""
    if len(text) > MAX_YAML_BYTES:
        raise _Refused(f"it is larger than {MAX_YAML_BYTES >> 10} kB")
    loader = _ConfigLoader(text)
    try:
        return loader.get_single_data()
    except RecursionError:  # the depth bound should make this impossible: refuse rather than crash
        raise _Refused("it nests too deeply") from None
    except (ValueError, OverflowError) as e:  # a constructor's own error: an int of 5,000 digits, a bad date
        raise yaml.YAMLError(f"a value cannot be read ({type(e).__name__}: {str(e)[:100]})") from None
    finally:
        loader.dispose()


def load_config(path: str | Path) -> Config:
    """Read a YAML config file (validated): a regular file of at most MAX_YAML_BYTES, see `parse_yaml`."""
    p = Path(path)
    if not p.is_file():
        raise UserInputError(f"config file {str(p)!r} not found; pick one of configs/*.yaml")
    try:
        with open(p, "rb") as fh:
            raw = fh.read(MAX_YAML_BYTES + 1)
    except OSError as e:
        raise UserInputError(f"config file {str(p)!r} cannot be read ({e.strerror or type(e).__name__})") from None
    try:
        if len(raw) > MAX_YAML_BYTES:
            raise _Refused(f"it is larger than {MAX_YAML_BYTES >> 10} kB")
        d = parse_yaml(raw.decode("utf-8")) or {}
    except _Refused as e:
        raise UserInputError(f"config file {str(p)!r} is refused: {e}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise UserInputError(f"config file {str(p)!r} is not valid YAML: {str(e).splitlines()[0]}") from None
    return Config.from_dict(d).validate()


def save_config(cfg: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False), encoding="utf-8")


def apply_overrides(cfg: Config, overrides: list[str]) -> Config:
    """Apply `section.key=value` strings (values parsed as YAML: 3e-4, true, [a, b]) and re-validate."""
    for item in overrides:
        if "=" not in item or "." not in item.split("=", 1)[0]:
            raise UserInputError(f"override {_short(item)} must look like section.key=value, e.g. train.lr=3e-4")
        dotted, raw = item.split("=", 1)
        section, key = dotted.split(".", 1)
        if section not in {f.name for f in fields(Config)}:
            raise UserInputError(f"override {_short(item)}: unknown section {_short(section)}; use {SECTIONS}")
        try:
            value = parse_yaml(raw) if raw != "" else ""
        except _Refused as e:
            raise UserInputError(f"override {_short(item)} is refused: {e}; give a plain value") from None
        except yaml.YAMLError:
            value = raw
        _set_field(getattr(cfg, section), section, key, value)
    return cfg.validate()


def _set_field(target: Any, section: str, key: str, value: Any) -> None:
    names = {f.name: f for f in fields(target)}
    if not isinstance(key, str) or key not in names:
        shown = _cut(key if isinstance(key, str) else _short(key), 60)
        raise UserInputError(f"unknown setting {section}.{shown}; known: {', '.join(names)}")
    default = getattr(type(target)(), key)
    setattr(target, key, _coerce(f"{section}.{key}", value, default))


def _coerce(name: str, value: Any, default: Any) -> Any:
    """Convert a YAML/JSON/UI value to the type of the field's default, or raise a clear error.

    Values are plain scalars (a list setting: a list of them): nested lists and mappings are refused."""
    try:
        if isinstance(value, dict) or (
            isinstance(value, list | tuple)
            and (not isinstance(default, list) or any(isinstance(v, dict | list | tuple) for v in value))
        ):
            raise ValueError
        if isinstance(default, bool):
            if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
                return value.lower() in ("true", "yes", "1")
            if isinstance(value, bool | int):
                return bool(value)
            raise ValueError
        if isinstance(default, int) and not isinstance(default, bool):
            if isinstance(value, float):
                if not math.isfinite(value) or value != int(value):
                    raise ValueError
                return int(value)
            if isinstance(value, bool):
                raise ValueError
            return int(value)
        if isinstance(default, float):
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if isinstance(default, list):
            if isinstance(value, str):
                return [value] if value else []
            return list(value)
        if default is None:  # optional int (sample.seed)
            return None if value in (None, "", "none", "None") else int(value)
        return str(value)
    except (TypeError, ValueError, OverflowError):
        raise UserInputError(f"{name} = {_short(value)} is not a valid {type(default).__name__}") from None


def _short(value: Any, limit: int = 80) -> str:
    """repr(value) for a message, cut to `limit` characters (a value may be a 4,000-digit number or 6 kB of YAML)."""
    try:
        text = repr(value)
    except (RecursionError, ValueError):  # nested too deep, or an int with too many digits to print
        text = f"<{type(value).__name__}>"
    return _cut(text, limit)


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _check_int(name: str, value: Any, lo: int, hi: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise UserInputError(f"{name} must be a whole number from {lo} to {hi:,}, got {_short(value)}")


def _check_choice(name: str, value: Any, kind: Any) -> None:
    options = choices(kind)
    if value not in options:
        listed = " or ".join([", ".join(options[:-1]), options[-1]])
        raise UserInputError(f"{name} must be {listed}, not {_short(value)}")


def _check_float(name: str, value: Any, lo: float, hi: float, low_open: bool = False) -> None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (lo < value if low_open else lo <= value) and value <= hi
    if not ok:
        lo_s = f"above {lo}" if low_open else f"from {lo}"
        raise UserInputError(f"{name} must be a number {lo_s} up to {hi}, got {_short(value)}")


def resolve_config_path(name: str) -> Path:
    """A YAML file, or the name of a preset in configs/ ("tiny", "small.yaml")."""
    p = Path(name)
    if p.is_file():
        return p
    preset = PRESETS_DIR / (name if name.endswith(".yaml") else f"{name}.yaml")
    if preset.is_file():
        return preset
    known = ", ".join(sorted(f.stem for f in PRESETS_DIR.glob("*.yaml")))
    raise UserInputError(f"config {_short(name)} not found; give a YAML file or a preset ({known})")
