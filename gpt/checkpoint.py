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
from gpt.errors import CheckpointError, UserInputError
from gpt.model import GPT
from gpt.tokenizer import Tokenizer, from_spec

WEIGHTS, CONFIG, TRAINER = "model.safetensors", "config.json", "trainer.pt"
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
        with open(path, "rb") as fh:
            raw = fh.read(max_bytes + 1)
    except OSError as e:
        raise CheckpointError(
            f"{path.parent.name} is not {what}: no readable {path.name} ({type(e).__name__})"
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
        state = load_file(str(p / WEIGHTS), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{p}: {WEIGHTS} is missing or corrupt ({e})") from None
    with torch.device("meta"):
        model = GPT(config.model)  # shapes only: cheap even for big configs
    expected = {k: v for k, v in model.state_dict().items() if k != "transformer.wte.weight"}
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
    state["transformer.wte.weight"] = state["lm_head.weight"]
    model.load_state_dict(state, strict=True)
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
    extra = [n.as_posix() for n in names if n.name not in (CONFIG, WEIGHTS, TRAINER)]
    if extra or len({n.parent for n in names}) != 1 or not {CONFIG, WEIGHTS} <= {n.name for n in names}:
        found = ", ".join(n.as_posix()[:60] for n in names[:5]) or "nothing"
        raise CheckpointError(
            f"{label} must hold one checkpoint: a folder with {CONFIG}, {WEIGHTS} and optionally {TRAINER}, "
            f"nothing else (it holds {found})"
        )
    declared = sum(i.file_size for i, _ in files)
    if declared > max_bytes:
        raise CheckpointError(
            f"{label} holds {declared / 1e6:.0f} MB; checkpoints here are at most {max_bytes / 1e6:.0f} MB"
        )
    safe_extract(archive, dest, max_bytes=max_bytes, max_files=3)
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
