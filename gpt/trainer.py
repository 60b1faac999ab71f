"""The training loop, shared by the CLI, the web UI (in a background thread) and torchrun (DDP).

`Trainer(config, data, out_dir).run()` trains and returns a `Result`. Listeners receive `Event`s:
step (loss, lr, tokens/s, grad norm, ETA), eval (val loss, perplexity), sample (text), checkpoint, done
(status "completed" or "stopped") and error. `stop()` may be called from any thread: the loop finishes
its step, writes a checkpoint and reports "stopped at step N".

Exact resume: the checkpoint's trainer.pt holds optimizer, step, RNG and data-sampler state; evaluation
and samples use their own generators so they never disturb the training RNG stream.
Fine-tuning: `init_from` starts from a checkpoint's weights and architecture, with a fresh optimizer at step 0.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from gpt import checkpoint as ckpt
from gpt.config import Config, SampleConfig, TrainConfig
from gpt.data import Batches, PreparedData
from gpt.device import autocast, pick_device, pick_dtype
from gpt.errors import UserInputError
from gpt.model import GPT
from gpt.sampling import generate


class DivergenceError(UserInputError):
    """The loss became NaN or infinite."""


@dataclass
class Event:
    kind: str  # step | eval | sample | checkpoint | done | error
    step: int
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class Result:
    status: str  # completed | stopped
    step: int
    train_loss: float | None
    val_loss: float | None
    run_dir: Path


Listener = Callable[[Event], None]


def error_data(e: Exception) -> dict[str, Any]:
    """An "error" event's data: the message, the exception's type, and whether it is the user's to fix."""
    return {"message": str(e), "type": type(e).__name__, "user": isinstance(e, UserInputError)}


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warmup to cfg.lr, then cosine, linear or constant decay to cfg.min_lr at max_steps."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant" or cfg.max_steps <= cfg.warmup_steps:
        return cfg.lr
    progress = min(1.0, (step - cfg.warmup_steps) / (cfg.max_steps - cfg.warmup_steps))
    if cfg.schedule == "linear":
        coeff = 1.0 - progress
    else:
        coeff = 0.5 * (1.0 + math.cos(math.pi * progress))
    return cfg.min_lr + coeff * (cfg.lr - cfg.min_lr)


def padded_vocab(vocab_size: int) -> int:
    """Large vocabularies are padded to a multiple of 64 (faster matmuls); the sampler never picks the padding."""
    return vocab_size if vocab_size <= 1024 else (vocab_size + 63) // 64 * 64


class Trainer:
    def __init__(
        self,
        config: Config,
        data: PreparedData,
        out_dir: str | Path,
        resume: str | Path | None = None,
        listeners: Iterable[Listener] = (),
        init_from: str | Path | None = None,
        echo: bool = False,
    ) -> None:
        self.cfg = config
        self.data = data
        self.out_dir = Path(out_dir)
        self.listeners = list(listeners)
        self.echo = echo
        self._stop = threading.Event()
        self.step = 0
        self.best_val = float("inf")
        self.last_val: float | None = None
        self.last_train: float | None = None

        tc = config.train
        self.ddp = int(os.environ.get("WORLD_SIZE", "1")) > 1
        self.rank, self.world = 0, 1
        if self.ddp:
            self._init_ddp()
        else:
            self.device = pick_device(tc.device)
        if tc.threads:
            torch.set_num_threads(tc.threads)
        self.dtype = pick_dtype(tc.dtype, self.device)
        if self.dtype == torch.bfloat16 and self.device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise UserInputError("this GPU has no bfloat16; set train.dtype=float16 or float32")

        self.tokenizer = tokenizer = data.tokenizer
        start_from = resume or init_from
        loaded = ckpt.load(start_from) if start_from else None
        if loaded is not None:
            if loaded.tokenizer.spec() != tokenizer.spec():
                kind = loaded.tokenizer.name
                raise UserInputError(
                    f"the checkpoint at {start_from} uses the {kind} tokenizer"
                    + (" with its own character set" if kind == "char" else "")
                    + f"; prepare the data with the same tokenizer (this data uses {tokenizer.name})"
                )
            config.model = loaded.config.model  # the architecture comes with the weights
        else:
            config.model.vocab_size = padded_vocab(tokenizer.vocab_size)
        config.validate()
        data.check_fits(config.model.block_size)

        torch.manual_seed(tc.seed + self.rank)
        self.model = loaded.model.to(self.device).train() if loaded else GPT(config.model).to(self.device)
        state = None
        if resume:
            state = ckpt.load_trainer_state(resume)
            if state is None:
                raise UserInputError(f"{resume} has no trainer state (trainer.pt); it cannot be resumed, only sampled")
        self.raw_model = self.model
        self.optimizer = self.model.optimizer(tc.lr, tc.weight_decay, (tc.beta1, tc.beta2), self.device.type)
        self.batches = Batches(
            data.train,
            config.model.block_size,
            tc.batch_size,
            config.data.sampling,
            config.data.stride,
            seed=tc.seed,
            rank=self.rank,
            world=self.world,
        )
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.dtype == torch.float16)
        if state is not None:
            self._load_state(state)
        if tc.compile:
            self.model = torch.compile(self.model)  # type: ignore[assignment]
        if self.ddp:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = DDP(self.model, device_ids=ids)  # type: ignore[assignment]
        self.tokens_per_step = tc.batch_size * config.model.block_size * tc.grad_accum * self.world
        self._writer: Any = None

    # ----- public -----------------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the loop to stop after the current step (thread-safe)."""
        self._stop.set()

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def run(self) -> Result:
        try:
            return self._run()
        except Exception as e:
            self._emit("error", error_data(e))
            raise
        finally:
            if self._writer is not None:
                self._writer.close()
            if self.ddp and dist.is_initialized():
                dist.destroy_process_group()

    # ----- the loop ---------------------------------------------------------------------------------

    def _run(self) -> Result:
        tc = self.cfg.train
        if self.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            if tc.tensorboard:
                self._writer = _tensorboard(self.out_dir / "tb")
        amp = autocast(self.device, self.dtype)
        self._emit(
            "start",
            {
                "params": self.raw_model.num_params(),
                "max_steps": tc.max_steps,
                "device": str(self.device),
                "dtype": str(self.dtype).replace("torch.", ""),
                "world": self.world,
                "run_dir": str(self.out_dir),
            },
        )
        loss_sum = torch.zeros((), device=self.device)
        n_in_window, t_window, start_time = 0, time.perf_counter(), time.perf_counter()
        step_time_ema: float | None = None
        status = "completed"
        while self.step < tc.max_steps:
            if self._stop.is_set():
                status = "stopped"
                break
            lr = lr_at(self.step, tc)
            for g in self.optimizer.param_groups:
                g["lr"] = lr
            for micro in range(tc.grad_accum):
                x, y = (t.to(self.device, non_blocking=True) for t in self.batches.next())
                sync = micro == tc.grad_accum - 1
                ctx = self.model.no_sync() if self.ddp and not sync else contextlib.nullcontext()  # type: ignore[operator]
                with ctx, amp:
                    _, loss = self.model(x, y)
                    loss = loss / tc.grad_accum
                self.scaler.scale(loss).backward()
                loss_sum += loss.detach()
            self.scaler.unscale_(self.optimizer)
            grad_norm = torch.nn.utils.clip_grad_norm_(
                self.model.parameters(), tc.grad_clip if tc.grad_clip > 0 else float("inf")
            )
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.optimizer.zero_grad(set_to_none=True)
            self.step += 1
            n_in_window += 1

            last = self.step == tc.max_steps
            if self.step % tc.log_interval == 0 or last:
                # One host sync per log interval, not per step.
                if self.ddp:
                    dist.all_reduce(loss_sum, op=dist.ReduceOp.AVG)
                train_loss = float(loss_sum) / n_in_window
                if not math.isfinite(train_loss):
                    raise DivergenceError(
                        f"the loss became {train_loss} at step {self.step}; the learning rate ({tc.lr:g}) is "
                        "probably too high: lower train.lr and start again"
                    )
                now = time.perf_counter()
                step_time = (now - t_window) / n_in_window
                step_time_ema = step_time if step_time_ema is None else 0.7 * step_time_ema + 0.3 * step_time
                self.last_train = train_loss
                self._emit(
                    "step",
                    {
                        "loss": train_loss,
                        "lr": lr,
                        "grad_norm": float(grad_norm),
                        "tokens_per_s": self.tokens_per_step / step_time,
                        "step_time": step_time,
                        "elapsed": now - start_time,
                        "eta": step_time_ema * (tc.max_steps - self.step),
                        "max_steps": tc.max_steps,
                    },
                )
                loss_sum.zero_()
                n_in_window, t_window = 0, time.perf_counter()
            if self.step % tc.eval_interval == 0 or last:
                self._evaluate()
            if tc.sample_interval and (self.step % tc.sample_interval == 0 or last) and self.is_main:
                self._emit("sample", {"text": self.sample_text()})
            if tc.checkpoint_interval and self.step % tc.checkpoint_interval == 0 and not last:
                self._save("latest")
        self._save("latest")
        self._emit("done", {"status": status, "train_loss": self.last_train, "val_loss": self.last_val})
        return Result(status, self.step, self.last_train, self.last_val, self.out_dir)

    @torch.no_grad()
    def evaluate(self) -> float:
        """Mean val loss over eval_iters batches, always the same windows (own generator)."""
        tc, mc = self.cfg.train, self.cfg.model
        batches = Batches(
            self.data.val, mc.block_size, tc.batch_size, seed=tc.seed + 7, rank=self.rank, world=self.world
        )
        self.model.eval()
        total = torch.zeros((), device=self.device)
        amp = autocast(self.device, self.dtype)
        for _ in range(tc.eval_iters):
            x, y = (t.to(self.device) for t in batches.next())
            with amp:
                _, loss = self.raw_model(x, y)
            total += loss
        self.model.train()
        if self.ddp:
            dist.all_reduce(total, op=dist.ReduceOp.AVG)
        return float(total) / tc.eval_iters

    def sample_text(self) -> str:
        cfg = SampleConfig(max_new_tokens=self.cfg.train.sample_tokens, temperature=0.8, top_k=50, seed=self.step)
        return generate(self.raw_model, self.tokenizer, "", cfg)  # unconditional: the sampler picks the start

    # ----- helpers ----------------------------------------------------------------------------------

    def _evaluate(self) -> None:
        val = self.evaluate()
        self.last_val = val
        improved = val < self.best_val
        self.best_val = min(self.best_val, val)
        self._emit("eval", {"val_loss": val, "perplexity": math.exp(min(val, 50.0)), "best": improved})
        if improved:
            self._save("best", with_state=False)

    def _metrics(self) -> dict[str, float]:
        m: dict[str, float] = {}
        if self.last_train is not None:
            m["train_loss"] = self.last_train
        if self.last_val is not None:
            m["val_loss"] = self.last_val
        if math.isfinite(self.best_val):
            m["best_val_loss"] = self.best_val
        return m

    def _save(self, name: str, with_state: bool = True) -> None:
        if not self.is_main:
            return
        state = self._state() if with_state else None
        path = ckpt.save(
            self.out_dir / name,
            self.raw_model,
            self.cfg,
            self.tokenizer,
            self.step,
            self._metrics(),
            state,
            extra={"data_dir": str(self.data.dir)},
        )
        self._emit("checkpoint", {"path": str(path), "name": name})

    def _state(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "best_val": self.best_val,
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "batches": self.batches.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state() if self.device.type == "cuda" else torch.zeros(0, dtype=torch.uint8),
        }

    def _load_state(self, state: dict[str, Any]) -> None:
        try:
            self.step = int(state["step"])
            self.best_val = float(state["best_val"])
            self.optimizer.load_state_dict(state["optimizer"])
            if state.get("scaler"):
                self.scaler.load_state_dict(state["scaler"])
            self.batches.load_state_dict(state["batches"])
            torch.set_rng_state(state["torch_rng"])
            if self.device.type == "cuda" and state["cuda_rng"].numel():
                torch.cuda.set_rng_state(state["cuda_rng"])
        except (KeyError, ValueError, RuntimeError, TypeError) as e:
            raise UserInputError(
                f"trainer state does not fit this run ({type(e).__name__}: {e}); start a new run"
            ) from None
        if self.step >= self.cfg.train.max_steps:
            raise UserInputError(
                f"the checkpoint is at step {self.step}, which already reaches "
                f"train.max_steps={self.cfg.train.max_steps}; raise it to continue "
                f"(e.g. train.max_steps={2 * self.step})"
            )

    def _emit(self, kind: str, data: dict[str, Any]) -> None:
        if not self.is_main:
            return
        event = Event(kind, self.step, data)
        if self._writer is not None:
            _log_scalars(self._writer, event)
        if self.echo:
            _echo(event)
        for listener in self.listeners:
            listener(event)

    def _init_ddp(self) -> None:
        self.rank = int(os.environ["RANK"])
        self.world = int(os.environ["WORLD_SIZE"])
        local = int(os.environ.get("LOCAL_RANK", "0"))
        use_cuda = torch.cuda.is_available() and self.cfg.train.device in ("auto", "cuda")
        if use_cuda:
            self.device = torch.device("cuda", local)
            torch.cuda.set_device(self.device)
        else:
            self.device = torch.device("cpu")
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")


def _tensorboard(path: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional for the library
        return None
    return SummaryWriter(str(path))


def _log_scalars(writer: Any, e: Event) -> None:
    if e.kind == "step":
        for key in ("loss", "lr", "tokens_per_s", "grad_norm"):
            writer.add_scalar(f"train/{key}", e.data[key], e.step)
    elif e.kind == "eval":
        writer.add_scalar("val/loss", e.data["val_loss"], e.step)
        writer.add_scalar("val/perplexity", e.data["perplexity"], e.step)
    elif e.kind == "sample":
        writer.add_text("sample", e.data["text"], e.step)
    elif e.kind == "done":
        writer.flush()


def format_duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


def _echo(e: Event) -> None:
    d = e.data
    if e.kind == "start":
        print(
            f"training {d['params'] / 1e6:.2f}M parameters on {d['device']} ({d['dtype']}, {d['world']} process(es)) "
            f"for {d['max_steps']} steps -> {d['run_dir']}",
            flush=True,
        )
    elif e.kind == "step":
        print(
            f"step {e.step}/{d['max_steps']} | loss {d['loss']:.4f} | lr {d['lr']:.2e} | "
            f"{d['tokens_per_s']:,.0f} tok/s | {d['step_time'] * 1000:.0f} ms/step | eta {format_duration(d['eta'])}",
            flush=True,
        )
    elif e.kind == "eval":
        print(f"step {e.step} | val loss {d['val_loss']:.4f} | perplexity {d['perplexity']:.2f}", flush=True)
    elif e.kind == "sample":
        print(f"--- sample at step {e.step} ---\n{d['text']}\n---", flush=True)
    elif e.kind == "checkpoint":
        print(f"saved checkpoint {d['path']}", flush=True)
    elif e.kind == "done":
        word = "completed" if d["status"] == "completed" else "stopped"
        print(f"training {word} at step {e.step}", flush=True)
