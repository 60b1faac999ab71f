"""Checkpoints: a directory with `model.safetensors`, `config.json` and, for resuming, `trainer.pt`.

Nothing a user could hand in is unpickled: weights are safetensors, metadata is JSON, and the trainer
state is read with `torch.load(weights_only=True)`. Writes are atomic: the directory is written under a
temporary name and renamed into place, so a crash never leaves a half-written checkpoint under a real name.

A run directory holds `latest/` and `best/` checkpoints plus TensorBoard logs under `tb/`;
`resolve()` accepts either a run directory or a checkpoint directory.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import struct
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from gpt.archive import check_entries, safe_extract
from gpt.config import Config
from gpt.data import open_regular
from gpt.errors import CheckpointError, UserInputError
from gpt.model import GPT
from gpt.tokenizer import BPETokenizer, Tokenizer, from_spec

WEIGHTS, CONFIG, TRAINER = "model.safetensors", "config.json", "trainer.pt"
# A trained BPE's tokenizer.json, beside the weights for Hugging Face's tools (what we load is the copy in
# config.json's tokenizer spec; this one is written from it and never read back).
HF_TOKENIZER = "tokenizer.json"
FORMAT = "gpt-playground-checkpoint"
log = logging.getLogger(__name__)
MAX_CONFIG_BYTES = 4 << 20  # a char vocabulary is small; anything bigger is not ours


@dataclass
class Checkpoint:
    """A loaded checkpoint: the model (eval mode), its config, tokenizer and metadata."""

    path: Path
    model: GPT
    config: Config
    tokenizer: Tokenizer
    meta: dict[str, Any]  # step, metrics, time, ...

    @property
    def step(self) -> int:
        return int(self.meta.get("step", 0))


def save(
    path: str | Path,
    model: GPT,
    config: Config,
    tokenizer: Tokenizer,
    step: int,
    metrics: dict[str, float] | None = None,
    trainer_state: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write a checkpoint directory atomically (replacing an existing one at `path`)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    _recover(target)
    # Left by a process killed while saving (.tmp) or while deleting the checkpoint it had just replaced (.old; any
    # complete one was put back above when `target` was missing).
    for stale in [*target.parent.glob(f".{target.name}.tmp*"), *target.parent.glob(f".{target.name}.old*")]:
        shutil.rmtree(stale, ignore_errors=True)
    tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
    tmp.mkdir()
    # Tied weights are stored once (lm_head.weight), as safetensors refuses shared memory.
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    if model.tied:
        state.pop("transformer.wte.weight", None)
    save_file(state, str(tmp / WEIGHTS), metadata={"format": FORMAT})
    meta = {
        "format": FORMAT,
        "step": step,
        "metrics": metrics or {},
        "time": time.time(),
        "params": model.num_params(),
        "tokenizer": tokenizer.spec(),
        "config": config.to_dict(),
        **(extra or {}),
    }
    (tmp / CONFIG).write_text(json.dumps(meta, indent=2), encoding="utf-8")
    if isinstance(tokenizer, BPETokenizer):
        (tmp / HF_TOKENIZER).write_text(tokenizer.hf_json(), encoding="utf-8")
    if trainer_state is not None:
        torch.save(trainer_state, tmp / TRAINER)
    _fsync_dir(tmp)
    old = target.with_name(f".{target.name}.old{os.getpid()}")
    if target.exists():
        os.replace(target, old)
    os.replace(tmp, target)
    shutil.rmtree(old, ignore_errors=True)
    return target


def _recover(target: Path) -> None:
    """If a save was killed between its two renames, `target` is missing and `.target.old*` holds the previous
    complete checkpoint: put it back."""
    if target.exists():
        return
    for old in sorted(target.parent.glob(f".{target.name}.old*")):
        if (old / CONFIG).is_file() and (old / WEIGHTS).is_file():
            os.replace(old, target)
            return


def resolve(path: str | Path) -> Path:
    """A checkpoint directory from a checkpoint or run directory (its `latest/`, else `best/`)."""
    p = Path(path)
    if (p / CONFIG).is_file():
        return p
    for name in ("latest", "best"):
        _recover(p / name)
        if (p / name / CONFIG).is_file():
            return p / name
    raise CheckpointError(f"{str(p)!r} is not a checkpoint: it has no {CONFIG} (nor latest/ or best/ inside)")


def read_json(path: Path, max_bytes: int, what: str) -> Any:
    """A small JSON file (a config), read bounded before it is parsed: the path could be a link to an endless file.
    Anything unreadable, too large or not JSON is a CheckpointError saying its folder is not `what`."""
    try:
        with open_regular(path) as fh:  # a named pipe is refused, not waited on forever
            raw = fh.read(max_bytes + 1)
    except OSError as e:
        raise CheckpointError(
            f"{path.parent.name} is not {what}: no readable {path.name} ({e.strerror or e})"
        ) from None
    if len(raw) > max_bytes:
        raise CheckpointError(f"{path.name} is larger than {max_bytes >> 10} kB; {path.parent.name} is not {what}")
    try:
        return json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError) as e:
        raise CheckpointError(
            f"{path.name} is corrupt: not valid JSON ({type(e).__name__}); {path.parent.name} is not {what}"
        ) from None


def read_meta(path: str | Path) -> dict[str, Any]:
    """config.json of a checkpoint, checked to be ours: read at most MAX_CONFIG_BYTES, every field typed."""
    p = resolve(path)
    meta = read_json(p / CONFIG, MAX_CONFIG_BYTES, "a usable GPT Playground checkpoint")
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{p} is not a GPT Playground checkpoint (no format marker in {CONFIG})")
    _check_meta(meta, p)
    return meta


def _check_meta(meta: dict[str, Any], p: Path) -> None:
    """The fields `save` writes, with their types and ranges: anything else is a corrupt or foreign file."""

    def bad(field: str, what: str) -> CheckpointError:
        return CheckpointError(f"{p.name}: {CONFIG} field {field!r} must be {what}; the checkpoint is corrupt")

    def whole(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**53

    if not whole(meta.get("step", 0)):
        raise bad("step", "a whole number from 0")
    if not whole(meta.get("params", 0)):
        raise bad("params", "a whole number from 0")
    t = meta.get("time", 0)
    if not isinstance(t, int | float) or isinstance(t, bool) or not math.isfinite(t):
        raise bad("time", "a number (seconds since 1970)")
    metrics = meta.get("metrics", {})
    if not isinstance(metrics, dict) or not all(
        isinstance(k, str) and (v is None or (isinstance(v, int | float) and not isinstance(v, bool)))
        for k, v in metrics.items()
    ):
        raise bad("metrics", "an object of numbers")
    for field in ("tokenizer", "config"):
        if not isinstance(meta.get(field), dict):
            raise bad(field, "an object")


def load(path: str | Path, device: str | torch.device = "cpu") -> Checkpoint:
    """Load weights + config safely; any mismatch or corruption raises CheckpointError with the reason."""
    p = resolve(path)
    meta = read_meta(p)
    try:
        config = Config.from_dict(meta["config"]).validate()
        tokenizer = from_spec(meta["tokenizer"])
    except (KeyError, UserInputError) as e:
        raise CheckpointError(f"{p}: bad config in {CONFIG}: {e}") from None
    if tokenizer.vocab_size > config.model.vocab_size:
        raise CheckpointError(
            f"{p}: tokenizer has {tokenizer.vocab_size} tokens but the model only {config.model.vocab_size}"
        )
    try:
        open_regular(p / WEIGHTS).close()  # safetensors would block on a named pipe
        state = load_file(str(p / WEIGHTS), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{p}: {WEIGHTS} is missing or corrupt ({e})") from None
    with torch.device("meta"):
        model = GPT(config.model)  # shapes only: cheap even for big configs
    tied = model.tied
    expected = {k: v for k, v in model.state_dict().items() if not (tied and k == "transformer.wte.weight")}
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    wrong = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    if missing or extra or wrong:
        detail = (
            (missing and f"missing {missing[:3]}") or (extra and f"unexpected {extra[:3]}") or f"shape of {wrong[:3]}"
        )
        raise CheckpointError(f"{p}: weights do not match the config ({detail})")
    broken = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if broken:
        raise CheckpointError(
            f"{p}: the weights hold NaN or infinite values ({broken[0]}): the training diverged; "
            "use an earlier checkpoint, or train again with a lower learning rate"
        )
    model = model.to_empty(device="cpu")
    if tied:
        state["transformer.wte.weight"] = state["lm_head.weight"]
    model.load_state_dict(state, strict=True)
    if tied:
        model.transformer.wte.weight = model.lm_head.weight  # re-tie after to_empty
    model.to(device).eval()
    return Checkpoint(p, model, config, tokenizer, meta)


def load_trainer_state(path: str | Path) -> dict[str, Any] | None:
    """The optimizer / schedule / RNG / data state, loaded without unpickling arbitrary objects."""
    f = resolve(path) / TRAINER
    if not f.is_file():
        return None
    try:
        return torch.load(f, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure here means an unusable file; say so
        raise CheckpointError(f"{f} cannot be loaded safely ({type(e).__name__}); it is corrupt or not ours") from None


# Where trainer.pt keeps each optimizer's state: AdamW's under the key it always had, Muon's (if it runs) beside it.
OPTIMIZER_KEYS = ("optimizer", "muon")
MAX_STEP = 2**53  # steps, data positions: whole numbers a float still holds exactly


def check_trainer_state(
    state: Any,
    optimizers: torch.optim.Optimizer | list[torch.optim.Optimizer],
    scaler: torch.amp.GradScaler | None = None,
    device: torch.device | None = None,
) -> None:
    """Check a loaded trainer.pt against the run about to resume from it, before any of it is used.

    `torch.load(weights_only=True)` only promises plain tensors and containers: a crafted file can still hold an
    optimizer state of the wrong shape, which fused AdamW writes past (a segfault, or worse), or an RNG state whose
    index points past its array. So every part is checked: the step and data position (whole numbers), the optimizer
    (as many parameter groups, the same parameters, the same flags, and for each parameter exactly its state tensors:
    dense, contiguous, on the CPU, of the parameter's shape and dtype, finite; a scalar step), the grad scaler's
    numbers, and the RNG states (uint8 tensors of the generator's size with a consistent position).
    Raises CheckpointError saying which part does not fit."""

    def bad(what: str) -> CheckpointError:
        return CheckpointError(
            f"{TRAINER} does not fit this model: {what}; start a new run, or resume the one it is from"
        )

    if not isinstance(state, dict):
        raise bad(f"it holds a {type(state).__name__}, not the trainer state")
    missing = [k for k in ("step", "best_val", "optimizer", "batches", "torch_rng") if k not in state]
    if missing:
        raise bad(f"it has no {', '.join(missing)}")
    if not _whole(state["step"]):
        raise bad(f"step is {_kind(state['step'])}, not a whole number")
    best = state["best_val"]
    if not isinstance(best, int | float) or isinstance(best, bool) or math.isnan(best):
        raise bad(f"best_val is {_kind(best)}, not a number")
    optimizers = optimizers if isinstance(optimizers, list) else [optimizers]
    for optimizer, key in zip(optimizers, OPTIMIZER_KEYS, strict=False):
        if key not in state:
            raise bad(f"it has no {key} state: the run it is from used another train.optimizer")
        _check_optimizer(state[key], optimizer, bad)
    if len(optimizers) == 1 and "muon" in state:
        raise bad("it holds Muon's state: the run it is from used train.optimizer=muon")
    _check_scaler(state.get("scaler"), bad)
    batches = state["batches"]
    if not isinstance(batches, dict) or set(batches) != {"generator", "cursor"}:
        raise bad("the data position (batches) is not a generator state and a cursor")
    if not _whole(batches["cursor"]):
        raise bad(f"the data cursor is {_kind(batches['cursor'])}, not a whole number")
    _check_rng(batches["generator"], "the data generator's state", bad)
    _check_rng(state["torch_rng"], "torch_rng", bad)
    cuda_rng = state.get("cuda_rng")
    if cuda_rng is not None:
        if not isinstance(cuda_rng, torch.Tensor) or cuda_rng.dtype != torch.uint8 or cuda_rng.dim() != 1:
            raise bad(f"cuda_rng is {_kind(cuda_rng)}, not a uint8 vector")
        if device is not None and device.type == "cuda" and cuda_rng.numel():
            size = torch.cuda.get_rng_state(device).numel()
            if cuda_rng.numel() != size or not _plain(cuda_rng):
                raise bad(f"cuda_rng has {cuda_rng.numel()} bytes, expected {size}")


def _whole(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v < MAX_STEP


def _kind(v: Any) -> str:
    """How a value reads in a message: a tensor's shape and dtype, else its type (and a short repr)."""
    if isinstance(v, torch.Tensor):
        return f"a {str(v.dtype).replace('torch.', '')} tensor of shape {tuple(v.shape)}"
    if isinstance(v, bool | int | float | str | type(None)):
        text = repr(v)
        return text if len(text) <= 40 else text[:37] + "..."
    return f"a {type(v).__name__}"


def _plain(t: torch.Tensor) -> bool:
    """A dense tensor on the CPU whose elements lie inside its storage, one after another."""
    if t.layout != torch.strided or t.device.type != "cpu" or t.is_quantized or not t.is_contiguous():
        return False
    return t.untyped_storage().nbytes() >= (t.storage_offset() + t.numel()) * t.element_size()


def _check_optimizer(saved: Any, optimizer: torch.optim.Optimizer, bad: Any) -> None:
    current = optimizer.state_dict()
    muon = isinstance(optimizer, torch.optim.Muon)
    name = "Muon" if muon else "the optimizer"
    if not isinstance(saved, dict) or set(saved) != set(current):
        raise bad(f"{name} state is {_kind(saved)} without the keys {sorted(current)}")
    groups, now = saved["param_groups"], current["param_groups"]
    if not isinstance(groups, list) or len(groups) != len(now):
        count = len(groups) if isinstance(groups, list) else _kind(groups)
        raise bad(f"{name} has {count} parameter groups, expected {len(now)}")
    # torch fills in flags that an older torch did not save (amsgrad, fused, ...): only these must be there
    needed = {"params", "lr", "momentum", "weight_decay", *MUON_FIXED} if muon else {"params", "lr", "betas", "eps",
                                                                                       "weight_decay"}  # fmt: skip
    params: dict[int, tuple[torch.Tensor, dict[str, Any]]] = {}  # saved id -> (parameter, its group's settings)
    for g, (group, ref, live) in enumerate(zip(groups, now, optimizer.param_groups, strict=True)):
        if not isinstance(group, dict) or not needed <= set(group):
            raise bad(f"{name} parameter group {g} has other settings than {sorted(ref)}")
        odd = [k for k, v in group.items() if k not in ref and not _plain_setting(v)]
        if odd:
            raise bad(f"{name} parameter group {g} has an unknown setting {_kind(odd[0])}")
        ids = group["params"]
        if not isinstance(ids, list) or not all(_whole(i) for i in ids) or ids != ref["params"]:
            n = len(ids) if isinstance(ids, list) else _kind(ids)
            raise bad(f"{name} parameter group {g} lists other parameters ({n}, expected {len(ref['params'])})")
        for key, want in ref.items():
            if key == "params" or key not in group:
                continue
            if muon and key in MUON_FIXED:  # how it orthogonalises (a coefficient is negative): exactly this run's
                value = list(group[key]) if isinstance(group[key], tuple | list) else group[key]
                if value != (list(want) if isinstance(want, tuple | list) else want):
                    raise bad(f"Muon's setting {key} of group {g} is {_kind(group[key])}, this run uses {want}")
            else:
                _check_setting(group[key], want, key, f"{name} setting {key} of group {g}", bad)
        params.update((i, (p, ref)) for i, p in zip(ref["params"], live["params"], strict=True))
    state = saved["state"]
    if not isinstance(state, dict):
        raise bad(f"{name}'s per-parameter state is {_kind(state)}")
    for i, entry in state.items():
        if not _whole(i) or i not in params:
            raise bad(f"{name} holds state for parameter {_kind(i)}, which this model does not have")
        param, group = params[i]
        if muon:
            keys = {"momentum_buffer"}
        else:
            keys = {"step", "exp_avg", "exp_avg_sq"} | ({"max_exp_avg_sq"} if group.get("amsgrad") else set())
        if not isinstance(entry, dict) or set(entry) != keys:
            found = sorted(map(str, entry)) if isinstance(entry, dict) else _kind(entry)
            raise bad(f"{name} state for parameter {i} has {found}, expected {sorted(keys)}")
        if not muon:
            step = entry["step"]
            scalar = isinstance(step, torch.Tensor) and step.dim() == 0 and step.is_floating_point()
            if not scalar or not _plain(step):
                raise bad(f"optimizer state for parameter {i}: step is {_kind(step)}, expected a scalar float tensor")
            if not (0 <= float(step) < MAX_STEP):
                raise bad(f"optimizer state for parameter {i}: step is {float(step)}")
        for key in sorted(keys - {"step"}):
            t = entry[key]
            if not isinstance(t, torch.Tensor) or tuple(t.shape) != tuple(param.shape) or t.dtype != param.dtype:
                expected = f"a {str(param.dtype).replace('torch.', '')} tensor of shape {tuple(param.shape)}"
                raise bad(f"{name} state for parameter {i} ({key}) is {_kind(t)}, expected {expected}")
            if not _plain(t):
                raise bad(f"{name} state for parameter {i} ({key}) is not a dense tensor in CPU memory")
            signed = key in ("exp_avg", "momentum_buffer")
            if not bool(torch.isfinite(t).all()) or (not signed and bool((t < 0).any())):
                raise bad(f"{name} state for parameter {i} ({key}) holds NaN, infinite or negative values")


MUON_FIXED = ("nesterov", "ns_coefficients", "eps", "ns_steps", "adjust_lr_fn")


def _plain_setting(v: Any) -> bool:
    """A value torch stores in a parameter group without using it: a scalar, a string, or a list of strings."""
    if isinstance(v, list):
        return len(v) <= 1_000_000 and all(isinstance(x, str) for x in v)
    return v is None or isinstance(v, bool | int | float | str)


def _check_setting(value: Any, want: Any, key: str, what: str, bad: Any) -> None:
    """An optimizer hyperparameter: numbers finite and not negative; flags true, false or none, and those that change
    what the state holds (amsgrad) or where it lives (capturable, differentiable) the same as this run's. `fused` and
    `foreach` only pick an implementation and may differ (a run from another device)."""
    if isinstance(want, bool | str) or want is None:
        flag = isinstance(value, bool) or value is None
        same = type(value) is type(want) and value == want
        if not same and (isinstance(want, str) or not flag or key in STRICT_FLAGS):
            raise bad(f"{what} is {_kind(value)}, this run uses {_kind(want)}")
        return
    if isinstance(want, tuple | list):
        if not isinstance(value, tuple | list) or len(value) != len(want):
            raise bad(f"{what} is {_kind(value)}, expected {len(want)} numbers")
        for v, w in zip(value, want, strict=True):
            _check_setting(v, w, key, what, bad)
        return
    if isinstance(want, torch.Tensor):
        if not isinstance(value, torch.Tensor) or value.shape != want.shape or value.dtype != want.dtype:
            raise bad(f"{what} is {_kind(value)}, expected {_kind(want)}")
        value = float(value) if value.numel() == 1 else 0.0
    if isinstance(value, torch.Tensor) or not isinstance(value, int | float) or isinstance(value, bool):
        raise bad(f"{what} is {_kind(value)}, not a number")
    if not math.isfinite(value) or value < 0:
        raise bad(f"{what} is {value}")


STRICT_FLAGS = ("amsgrad", "capturable", "differentiable")
SCALER_KEYS = {"scale": float, "growth_factor": float, "backoff_factor": float, "growth_interval": int,
               "_growth_tracker": int}  # fmt: skip


def _check_scaler(saved: Any, bad: Any) -> None:
    if saved is None or (isinstance(saved, dict) and not saved):
        return  # saved without a grad scaler (fp32 or bf16): the run's own stays as it is
    if not isinstance(saved, dict) or set(saved) != set(SCALER_KEYS):
        raise bad(f"the grad scaler state is {_kind(saved)} without the keys {sorted(SCALER_KEYS)}")
    for key, kind in SCALER_KEYS.items():
        v = saved[key]
        ok = isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) and v >= 0
        if not ok or (kind is int and (not isinstance(v, int) or v >= MAX_STEP)):
            raise bad(f"the grad scaler's {key} is {_kind(v)}")
    if saved["scale"] <= 0 or saved["growth_interval"] < 1 or not 0 < saved["backoff_factor"] < 1:
        raise bad("the grad scaler's numbers are out of range")


# torch's CPU generator state: a CPUGeneratorImplState, starting with the seed (u64), `left` (i32), `seeded` (i32),
# `next` (u64) and the 624 words of the Mersenne twister. torch checks 1 <= left <= 624 and next <= 624, but not that
# the `left - 1` draws before the next refill stay inside the array (they read from `next` on): so left + next <= 625.
_MT_WORDS = 624


def _check_rng(t: Any, what: str, bad: Any) -> None:
    size = torch.get_rng_state().numel()
    if not isinstance(t, torch.Tensor) or t.dtype != torch.uint8 or t.dim() != 1 or t.numel() != size:
        raise bad(f"{what} is {_kind(t)}, expected a uint8 tensor of {size} bytes")
    if not _plain(t):
        raise bad(f"{what} is not a dense tensor in CPU memory")
    left, seeded, nxt = struct.unpack_from("<iiQ", t.numpy().tobytes()[:24], 8)
    if _rng_layout_known() and not (seeded == 1 and 1 <= left <= _MT_WORDS and left + nxt <= _MT_WORDS + 1):
        raise bad(f"{what} is not a valid generator state (position {nxt}, {left} left)")


def _rng_layout_known() -> bool:
    """Whether this torch's generator state has the layout `_check_rng` reads (checked on a fresh generator)."""
    g = torch.Generator().manual_seed(1)
    torch.rand(3, generator=g)
    left, seeded, nxt = struct.unpack_from("<iiQ", g.get_state().numpy().tobytes()[:24], 8)
    return seeded == 1 and left + nxt == _MT_WORDS + 1


def unpack(archive: str | Path, dest: str | Path, max_bytes: int) -> Path:
    """Extract an uploaded checkpoint .zip under `dest` and return its directory. The zip must hold one checkpoint
    (config.json and model.safetensors, optionally trainer.pt, in one folder) and nothing else; its sizes are checked
    before anything is written. The result still has to pass `load` before it is trusted."""
    label = Path(archive).name[:80]
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
        raise CheckpointError(f"{label} is not a valid zip archive ({e})") from None
    with zf:
        files = check_entries(zf, label, max_files=100)
    names = [n for _, n in files]
    extra = [n.as_posix() for n in names if n.name not in (CONFIG, WEIGHTS, TRAINER, HF_TOKENIZER)]
    if extra or len({n.parent for n in names}) != 1 or not {CONFIG, WEIGHTS} <= {n.name for n in names}:
        found = ", ".join(n.as_posix()[:60] for n in names[:5]) or "nothing"
        raise CheckpointError(
            f"{label} must hold one checkpoint: a folder with {CONFIG}, {WEIGHTS} and optionally {TRAINER} and "
            f"{HF_TOKENIZER}, nothing else (it holds {found})"
        )
    declared = sum(i.file_size for i, _ in files)
    if declared > max_bytes:
        raise CheckpointError(
            f"{label} holds {declared / 1e6:.0f} MB; checkpoints here are at most {max_bytes / 1e6:.0f} MB"
        )
    safe_extract(archive, dest, max_bytes=max_bytes, max_files=4)
    return Path(dest).joinpath(*names[0].parent.parts)


def list_checkpoints(root: str | Path) -> list[dict[str, Any]]:
    """Every complete checkpoint under `root` (run/latest, run/best, ...), newest first."""
    rows = []
    for old in Path(root).glob("**/.*.old*"):  # a save killed between its renames: the previous one goes back
        _recover(old.parent / old.name[1:].split(".old")[0])
    for cfg_file in Path(root).glob("**/" + CONFIG):
        d = cfg_file.parent
        if any(part.startswith(".") for part in d.relative_to(root).parts) or not (d / WEIGHTS).is_file():
            continue  # temporary (half-written) directories start with a dot
        try:
            meta = read_meta(d)
        except (CheckpointError, OSError) as e:  # one bad directory must not break the list for everyone
            log.warning("not listed: %s (%s)", d, e)
            continue
        size = sum(f.stat().st_size for f in d.iterdir() if f.is_file())
        rows.append(
            {
                "path": str(d),
                "step": meta.get("step", 0),
                "val_loss": meta.get("metrics", {}).get("val_loss"),
                "params": meta.get("params"),
                "size_mb": round(size / 1e6, 2),
                "time": meta.get("time", 0),
            }
        )
    return sorted(rows, key=lambda r: r["time"], reverse=True)


def _fsync_dir(d: Path) -> None:
    for f in d.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
