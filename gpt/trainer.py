"""The training loop, shared by the CLI, the web app (in a training process of its own) and torchrun (DDP).

`Trainer(config, data, out_dir, listeners=[...]).run()` trains and returns a `Result`. The trainer only fires
`gpt.events.Event`s (start, step, eval, sample, checkpoint, done, error); its listeners decide what to show
(`gpt.events.print_event`, `gpt.events.TensorBoard`, the app's Train tab). `stop()` may be called from any thread:
the loop finishes its step, writes a checkpoint and reports "stopped at step N".

Three starting points, one function (`starting_point`): from scratch; fine-tuning (`init_from`: a checkpoint's
weights and architecture, a fresh optimizer at step 0); resuming (`resume`: the weights plus trainer.pt's optimizer,
step, RNG and data position, so the losses continue exactly as if the run had never stopped). Evaluation and
samples use their own generators, so they never disturb the training RNG stream.

On a task's examples (gpt/tasks.py) the same loop trains on whole examples whose loss counts only the answer, each
evaluation adds exact-match accuracy on fixed samples of train and held-out examples (`Eval.train_acc`, `val_acc`),
and the samples are the model's answers to a few held-out prompts. `train.grokfast` filters the gradients
(gpt/grokfast.py) between the backward pass and the optimizer step, on text too.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from gpt import checkpoint as ckpt
from gpt.baselines import baseline_bpb
from gpt.circuits import MIN_CONTEXT, CircuitScores, head_scores
from gpt.config import Config, SampleConfig, TaskConfig, TrainConfig, padded_vocab
from gpt.data import Batches, DeviceBatches, ExampleBatches, PreparedData, answer_xy
from gpt.device import autocast, pick_device, pick_dtype
from gpt.errors import UserInputError
from gpt.estimate import DEFAULT_COSTS, Units, known_costs, plan, record_run, run_seconds, units
from gpt.events import Checkpoint, Compile, Done, Eval, Event, Failed, Listener, Payload, Sample, Start, Status, Step
from gpt.generate import generate
from gpt.grokfast import Grokfast
from gpt.health import PROBE_ROWS, Probe, init_check
from gpt.model import GPT
from gpt.tasks import Scorer, Scores, answers_preview, answers_text, load_task, task_config

SAMPLE_EXAMPLES = 4  # held-out prompts a task run's samples answer


class DivergenceError(UserInputError):
    """The loss became NaN or infinite."""


@dataclass
class Result:
    status: Status
    step: int
    train_loss: float | None
    val_loss: float | None
    run_dir: Path


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warmup to cfg.lr, then cosine, linear or constant decay to cfg.min_lr at max_steps; or wsd
    (warmup-stable-decay, the "trapezoid"): cfg.lr until the last `decay_fraction` of the steps, then linearly
    down to cfg.min_lr. Muon's groups follow the same curve, scaled from their own rate (`base_lr`)."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant" or cfg.max_steps <= cfg.warmup_steps:
        return cfg.lr
    if cfg.schedule == "wsd":
        decay_start = max(cfg.warmup_steps, cfg.max_steps - round(cfg.decay_fraction * cfg.max_steps))
        if step < decay_start:
            return cfg.lr
        progress = min(1.0, (step - decay_start) / max(1, cfg.max_steps - decay_start))
        return cfg.lr + progress * (cfg.min_lr - cfg.lr)
    progress = min(1.0, (step - cfg.warmup_steps) / (cfg.max_steps - cfg.warmup_steps))
    if cfg.schedule == "linear":
        coeff = 1.0 - progress
    else:
        coeff = 0.5 * (1.0 + math.cos(math.pi * progress))
    return cfg.min_lr + coeff * (cfg.lr - cfg.min_lr)


class Meter:
    """The loop's clock, and the run's ETA.

    Training steps are timed apart from the evaluations, samples and saves between them. The pace leaves out the
    first step (allocations, kernels picked) and starts afresh at the second window (its neighbours are slow too),
    then follows a moving average. The ETA is what the rest of the run will do (`gpt.estimate.plan`): its steps at
    that pace, and each evaluation, sample and save at what the last one took; before the first one, at the
    estimate's figure (`guess`) scaled by the pace measured against the estimated one."""

    def __init__(self, tc: TrainConfig, guess: Units, clock: Callable[[], float] = time.perf_counter) -> None:
        self.tc, self.guess, self.clock = tc, guess, clock
        self.start = self.window_start = clock()
        self.steps = 0  # in the current window
        self.other = 0.0  # seconds of evaluations, samples and saves in the current window
        self.windows = 0
        self.first_end: float | None = None  # when the first step ended
        self.pace: float | None = None  # seconds per training step, smoothed
        self.took: dict[str, float] = {}  # seconds of the last eval, sample, latest and best save

    def tick(self) -> None:
        """A training step ended."""
        self.steps += 1
        if self.first_end is None:
            self.first_end = self.clock()

    @contextlib.contextmanager
    def timing(self, kind: str) -> Iterator[None]:
        """Time an evaluation, a sample or a save ("eval", "sample", "latest", "best") apart from the steps."""
        t = self.clock()
        try:
            yield
        finally:
            took = self.clock() - t
            self.other += took
            self.took[kind] = took

    def lap(self, step: int) -> tuple[float, float, float]:
        """(seconds per training step in this window, seconds since the start, ETA at `step`); starts a new window."""
        now = self.clock()
        start, steps = self.window_start, self.steps
        if self.windows == 0 and steps > 1 and self.first_end is not None:
            start, steps = self.first_end, steps - 1
        step_time = max(0.0, now - start - self.other) / max(1, steps)
        self.windows += 1
        if self.pace is None or self.windows == 2:
            self.pace = step_time
        else:
            self.pace = 0.75 * self.pace + 0.25 * step_time
        self.window_start, self.steps, self.other = now, 0, 0.0
        return step_time, now - self.start, self.eta(step)

    def eta(self, step: int) -> float:
        """Seconds to the end of the run, at `step` (its evaluation, sample and save still to come)."""
        g = self.guess
        pace = self.pace if self.pace is not None else g.step
        scale = pace / g.step if g.step > 0 else 1.0

        def cost(kind: str) -> float:
            return self.took.get(kind, getattr(g, kind) * scale)

        left = dataclasses.replace(plan(self.tc, step - 1), steps=max(0, self.tc.max_steps - step))
        now = Units(pace, 0.0, cost("eval"), cost("sample"), cost("latest"), cost("best"))
        return run_seconds(left, now, first=False)


class Trainer:
    def __init__(
        self,
        config: Config,
        data: PreparedData,
        out_dir: str | Path,
        resume: str | Path | None = None,
        listeners: Iterable[Listener] = (),
        init_from: str | Path | None = None,
    ) -> None:
        self.cfg = cfg = copy.deepcopy(config)  # the architecture may come from a checkpoint: the caller's stays
        self.data, self.tokenizer = data, data.tokenizer
        self.out_dir = Path(out_dir)
        self.listeners = list(listeners)
        self._stop = threading.Event()
        self.step = 0
        self.best_val = float("inf")
        self.last_val: float | None = None
        self.last_train: float | None = None
        self._probe_xy: tuple[torch.Tensor, torch.Tensor] | None = None
        self._judged_test: list[float] | None = None  # the latest judged reading's step-size test

        tc = cfg.train
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

        loaded, state = self.starting_point(resume, init_from)
        self.from_scratch = loaded is None
        torch.manual_seed(tc.seed + self.rank)  # before the new model's random init
        self.model = loaded.model.to(self.device).train() if loaded else GPT(cfg.model).to(self.device)
        self.raw_model = self.model  # the plain module, whatever wraps self.model below
        # AdamW, or AdamW and Muon (`GPT.optimizers`): every one is stepped, saved and restored alike
        self.optimizers = self.model.optimizers(tc, self.device.type)
        self._muon_ids = {id(p) for o in self.optimizers if isinstance(o, torch.optim.Muon)
                          for g in o.param_groups for p in g["params"]}  # fmt: skip
        draw: Batches | ExampleBatches
        if data.examples is not None:  # a task: whole examples, the loss on their answers only
            draw = ExampleBatches(data.rows("train"), data.examples.prompt, tc.batch_size, seed=tc.seed,
                                  rank=self.rank, world=self.world)  # fmt: skip
        else:
            draw = Batches(data.train, cfg.model.block_size, tc.batch_size, cfg.data.sampling, cfg.data.stride,
                           seed=tc.seed, rank=self.rank, world=self.world)  # fmt: skip
        self.batches = DeviceBatches(draw, self.device)
        self.scorer = Scorer(data, cfg.task.eval_examples, self.device) if data.examples is not None else None
        params = [p for p in self.raw_model.parameters() if p.requires_grad]
        self.grokfast = Grokfast(params, tc.grokfast_alpha, tc.grokfast_lamb) if tc.grokfast else None
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.dtype == torch.float16)
        if state is not None:
            self._load_state(state)
        self.compiling = compile_wanted(tc.compile, self.device)  # until the first step has compiled (or failed to)
        self._wrap(self.compiling)
        self.tokens_per_step = tc.batch_size * cfg.model.block_size * tc.grad_accum * self.world

    def _wrap(self, compiled: bool) -> None:
        """self.model: the raw model, compiled or not, in DDP's wrapper under torchrun."""
        self.model = torch.compile(self.raw_model) if compiled else self.raw_model  # type: ignore[assignment]
        if self.ddp:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = DDP(self.model, device_ids=ids)  # type: ignore[assignment]

    def starting_point(
        self, resume: str | Path | None, init_from: str | Path | None
    ) -> tuple[ckpt.Checkpoint | None, dict[str, Any] | None]:
        """The checkpoint to start from (None: from scratch) and the trainer state to restore (resume only).

        The architecture comes with a checkpoint's weights; from scratch it is the config's, with the vocabulary of
        the data's tokenizer. Either way the data must fit the context."""
        cfg, tokenizer = self.cfg, self.tokenizer
        start_from = resume or init_from
        loaded = ckpt.load(start_from) if start_from else None
        if loaded is not None:
            if loaded.tokenizer.spec() != tokenizer.spec():
                kind = loaded.tokenizer.name
                raise UserInputError(
                    f"the checkpoint at {start_from} uses the {kind} tokenizer"
                    + (" with its own character set" if kind == "char" else "")
                    + (" trained on its own corpus" if kind == "bpe" else "")
                    + f"; prepare the data with the same tokenizer (this data uses {tokenizer.name})"
                )
            cfg.model = loaded.config.model
        else:
            cfg.model.vocab_size = padded_vocab(tokenizer.vocab_size)
        cfg.data.tokenizer = tokenizer.name  # (the saved config says what the run used, not the preset's default)
        self._fit_task(from_scratch=loaded is None)
        cfg.validate()
        self.data.check_fits(cfg.model.block_size)
        state = None
        if resume:
            state = ckpt.load_trainer_state(resume)
            if state is None:
                raise UserInputError(f"{resume} has no trainer state (trainer.pt); it cannot be resumed, only sampled")
        return loaded, state

    def _fit_task(self, from_scratch: bool) -> None:
        """The config's task is the data's (the saved config says what the run learned): a task's examples set the
        context (from scratch: an example less its last token), and a batch past the examples is the full batch."""
        cfg, examples = self.cfg, self.data.examples
        recorded = task_config(self.data)
        cfg.task = replace(recorded or TaskConfig(), eval_examples=cfg.task.eval_examples)
        if examples is None:
            return
        if from_scratch:
            cfg.model.block_size = examples.width - 1
        per_process = -(-len(self.data.rows("train")) // self.world)
        cfg.train.batch_size = min(cfg.train.batch_size, per_process)

    # ----- public -----------------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the loop to stop after the current step (thread-safe)."""
        self._stop.set()

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def run(self) -> Result:
        try:
            if self.is_main:
                self.out_dir.mkdir(parents=True, exist_ok=True)
            return self._run()
        except Exception as e:
            self._emit(Failed.of(e))
            raise
        finally:
            if self.ddp and dist.is_initialized():
                dist.destroy_process_group()

    # ----- the loop ---------------------------------------------------------------------------------

    def _run(self) -> Result:
        tc = self.cfg.train
        dtype = str(self.dtype).replace("torch.", "")
        self._emit(Start(self.raw_model.num_params(), self.tokens_per_step, tc.max_steps, str(self.device), dtype,
                         self.world, str(self.out_dir), self.cfg.to_dict(), baseline_bpb(self.data)))  # fmt: skip
        known, start_step = known_costs(tc.device, tc.dtype, tc.threads), self.step
        guess = units(self.cfg, costs=known or DEFAULT_COSTS)
        meter, status = Meter(tc, guess), "completed"  # type: Meter, Status
        loss_sum = torch.zeros((), device=self.device)  # summed on the device: read once per log interval
        if self.step == 0:
            if self.from_scratch:  # a fresh model guesses every token about equally: its loss near ln(vocab)
                self._emit(init_check(self.estimate_val_loss(iters=1), self.cfg.model.vocab_size))
            if self.is_main and (circuits := self._circuits()) is not None:
                self._emit(circuits)  # the heads before any training: the baseline their curves rise from
        while self.step < tc.max_steps:
            # termination: Stop (or Ctrl-C, or the app going away) ends the loop here; the checkpoint is saved below
            if self._stop.is_set():
                status = "stopped"
                break

            # determine and set the learning rate for this step
            lr = lr_at(self.step, tc)
            for optimizer in self.optimizers:
                for group in optimizer.param_groups:
                    group["lr"] = group["base_lr"] * lr / tc.lr

            # forward, backward and update, over grad_accum micro-batches (the first one compiles, if on); every
            # health_interval steps a probe reads the gradients and the update the step makes
            every = tc.health_interval
            due = every and (self.step + 1) % every == 0 and self.is_main
            probe = Probe(self.raw_model, self._muon_ids) if due else None
            grad_norm = self._compile_step(loss_sum) if self.compiling else self._train_step(loss_sum, probe)
            self.step += 1
            meter.tick()
            last = self.step == tc.max_steps

            # training health: the probe's readings and one small forward pass's (not per step: see gpt/health.py)
            if probe is not None:
                # the rate is judged past the warmup (twice it: the weights first settle) and near the peak rate
                judge = self.step >= max(50, 2 * tc.warmup_steps) and lr >= 0.5 * tc.lr
                with meter.timing("health"):
                    health = probe.health(self.raw_model, *self._probe_batch(), lr / tc.lr, judge, self._judged_test)
                self._judged_test = health.step_test if judge else self._judged_test
                self._emit(health)

            # timing and logging: one host sync per log interval, not per step
            if self.step % tc.log_interval == 0 or last:
                self._log(loss_sum, lr, grad_norm, meter)

            # evaluate on the validation split (a task: also exact-match accuracy), keep the best model in best/
            if self.step % tc.eval_interval == 0 or last:
                self._evaluate(meter)

            # sample some text: how the model writes now
            if tc.sample_interval and (self.step % tc.sample_interval == 0 or last) and self.is_main:
                with meter.timing("sample"):
                    text = self.sample_text()
                self._emit(Sample(text))

            # checkpoint now and then, so that a crash loses little (the last one is saved after the loop)
            if tc.checkpoint_interval and self.step % tc.checkpoint_interval == 0 and not last:
                with meter.timing("latest"):
                    self._save("latest")
        self._save("latest")
        self._emit(Done(status, self.last_train, self.last_val))
        if status == "completed" and known is not None and self.is_main and self.step - start_step >= 50:
            # how long it took against the estimate: the next estimates here learn from it
            record_run(tc, time.perf_counter() - meter.start, run_seconds(plan(tc, start_step), guess))
        return Result(status, self.step, self.last_train, self.last_val, self.out_dir)

    def _evaluate(self, meter: Meter) -> None:
        """The validation loss (a task's: with exact-match accuracy) and the heads' circuit scores; a better model is
        kept in best/."""
        with meter.timing("eval"):
            scores = self._scores()
            val = scores.val_loss if scores is not None else self.estimate_val_loss()
        improved, self.best_val, self.last_val = val < self.best_val, min(self.best_val, val), val
        train_acc, val_acc = (scores.train_acc, scores.val_acc) if scores is not None else (None, None)
        self._emit(Eval(val, math.exp(min(val, 50.0)), improved, self.data.bits_per_byte(val), train_acc, val_acc))
        if self.is_main:  # which heads have become previous-token and induction heads
            with meter.timing("eval"):
                circuits = self._circuits()
            if circuits is not None:
                self._emit(circuits)
        if improved:
            with meter.timing("best"):
                self._save("best", with_state=False)

    def _compile_step(self, loss_sum: torch.Tensor) -> torch.Tensor:
        """The first step of a compiled run: torch.compile works inside it. Its time is reported as its own phase;
        if compiling fails (no compiler, an unsupported op or GPU), the run goes on eagerly and says so."""
        self._emit(Compile(None))
        t = time.perf_counter()
        self.compiling = False
        try:
            grad_norm = self._train_step(loss_sum)
        except Exception as e:
            if not _is_compile_error(e):
                raise
            failure = _compile_error_line(e)
            if self.ddp:  # (every process would have to agree to fall back, and DDP's wrapper be made again by all)
                raise UserInputError(
                    f"torch.compile failed ({failure}); under torchrun, set train.compile=off"
                ) from None
        else:
            if self.device.type == "cuda":
                torch.cuda.synchronize()  # (the step's kernels are queued: the compile is over when they have run)
            self._emit(Compile(time.perf_counter() - t))
            return grad_norm
        # (out of the except block, so the failed step's frames, its graph and activations, are freed first)
        self._emit(Compile(time.perf_counter() - t, failure))
        for optimizer in self.optimizers:  # (a failure in the backward may have left partial gradients)
            optimizer.zero_grad(set_to_none=True)
        loss_sum.zero_()
        self._wrap(compiled=False)
        return self._train_step(loss_sum)

    def _train_step(self, loss_sum: torch.Tensor, probe: Probe | None = None) -> torch.Tensor:
        """One optimizer step over grad_accum micro-batches; adds the loss to `loss_sum`, returns the grad norm.
        A `probe` reads the gradients before they are clipped and the weights before and after the update."""
        tc = self.cfg.train
        amp = autocast(self.device, self.dtype)
        for micro in range(tc.grad_accum):
            x, y = self.batches.next()
            # DDP averages gradients across processes at each backward: only the last micro-batch needs it
            sync = micro == tc.grad_accum - 1
            ctx = self.model.no_sync() if self.ddp and not sync else contextlib.nullcontext()  # type: ignore[operator]
            with ctx, amp:
                _, loss = self.model(x, y)
                # the gradients add up over micro-batches: scaled, their sum is the mean over the whole batch
                loss = loss / tc.grad_accum
            self.scaler.scale(loss).backward()
            loss_sum += loss.detach()
        for optimizer in self.optimizers:
            self.scaler.unscale_(optimizer)  # clip the true gradients, not fp16-scaled ones
        if self.grokfast is not None:  # (on the true gradients, before clipping: the slow part amplified is kept)
            self.grokfast.apply()
        if probe is not None:
            probe.before_update()
        grad_norm = torch.nn.utils.clip_grad_norm_(
            self.model.parameters(), tc.grad_clip if tc.grad_clip > 0 else float("inf")
        )
        for optimizer in self.optimizers:
            self.scaler.step(optimizer)
        self.scaler.update()
        if probe is not None:
            probe.after_update()
        for optimizer in self.optimizers:
            optimizer.zero_grad(set_to_none=True)
        return grad_norm

    def _log(self, loss_sum: torch.Tensor, lr: float, grad_norm: torch.Tensor, meter: Meter) -> None:
        """Report the mean train loss of the window, its speed and the ETA; stop a run whose loss diverged."""
        tc = self.cfg.train
        window = meter.steps
        if self.ddp:
            dist.all_reduce(loss_sum, op=dist.ReduceOp.AVG)
        train_loss = float(loss_sum) / window
        loss_sum.zero_()
        if not math.isfinite(train_loss):
            raise DivergenceError(
                f"the loss became {train_loss} at step {self.step}; the learning rate ({tc.lr:g}) is "
                "probably too high: lower train.lr and start again"
            )
        step_time, elapsed, eta = meter.lap(self.step)
        self.last_train = train_loss
        self._emit(Step(train_loss, lr, float(grad_norm), self.tokens_per_step / step_time, step_time, elapsed, eta,
                        tc.max_steps))  # fmt: skip

    @torch.no_grad()
    def estimate_val_loss(self, iters: int | None = None) -> float:
        """Mean val loss over `iters` (default eval_iters) batches, always the same windows (own generator).

        It runs the raw model: the compiled one would compile again for eval mode, and DDP's wrapper is only
        needed to average gradients. Each process evaluates its own share and the results are averaged.
        On a task: the loss of the answers of the fixed held-out sample (the same in every process)."""
        tc, mc = self.cfg.train, self.cfg.model
        if self.scorer is not None:
            return self.scorer.val_loss(self.raw_model, self.dtype)
        batches = Batches(
            self.data.val, mc.block_size, tc.batch_size, seed=tc.seed + 7, rank=self.rank, world=self.world
        )
        self.raw_model.eval()
        total = torch.zeros((), device=self.device)
        amp = autocast(self.device, self.dtype)
        iters = iters or tc.eval_iters
        for _ in range(iters):
            x, y = (t.to(self.device) for t in batches.next())
            with amp:
                _, loss = self.raw_model(x, y)
            total += loss
        self.raw_model.train()
        if self.ddp:
            dist.all_reduce(total, op=dist.ReduceOp.AVG)
        return float(total) / iters

    def _scores(self) -> Scores | None:
        """A task's exact-match accuracy on its fixed train and held-out samples and its held-out loss; on text None."""
        return self.scorer.score(self.raw_model, self.dtype) if self.scorer is not None else None

    def _probe_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The health probe reads the same few validation sequences each time (own generator); a task's: the first
        held-out examples, the loss on their answers."""
        if self._probe_xy is None:
            tc, mc = self.cfg.train, self.cfg.model
            rows = min(tc.batch_size, PROBE_ROWS)
            if self.data.examples is not None:
                held_out = torch.from_numpy(self.data.rows("val")[:PROBE_ROWS].astype("int64"))
                x, y = answer_xy(held_out, self.data.examples.prompt)
            else:
                x, y = Batches(self.data.val, mc.block_size, rows, seed=tc.seed + 11).next()
            self._probe_xy = x.to(self.device), y.to(self.device)
        return self._probe_xy

    def _circuits(self) -> CircuitScores | None:
        """Every head's previous-token, duplicate-token and induction score, and in-context learning on real text.
        None on a task: its short examples are neither text nor the repeated tokens these heads read."""
        mc = self.cfg.model
        if mc.block_size < MIN_CONTEXT or self.data.examples is not None:
            return None
        text = None
        if mc.block_size >= 10:
            text, _ = Batches(self.data.val, mc.block_size, 4, seed=self.cfg.train.seed + 13).next()
            text = text.to(self.device)
        return head_scores(self.raw_model, seed=self.cfg.train.seed, tokenizer=self.tokenizer, text=text)

    def sample_text(self) -> str:
        """Text the model writes from nothing; on a task, its answers to the first few held-out prompts."""
        if self.data.examples is not None:
            return answers_text(answers_preview(self.raw_model, load_task(self.data), n=SAMPLE_EXAMPLES))
        cfg = SampleConfig(max_new_tokens=self.cfg.train.sample_tokens, temperature=0.8, top_k=50, seed=self.step)
        return generate(self.raw_model, self.tokenizer, "", cfg)  # unconditional: the sampler picks the start

    # ----- helpers ----------------------------------------------------------------------------------

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
        path = ckpt.save(self.out_dir / name, self.raw_model, self.cfg, self.tokenizer, self.step, self._metrics(),
                         state, extra={"data_dir": str(self.data.dir)})  # fmt: skip
        self._emit(Checkpoint(str(path), name))

    def _state(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "best_val": self.best_val,
            **{key: opt.state_dict() for opt, key in zip(self.optimizers, ckpt.OPTIMIZER_KEYS, strict=False)},
            "scaler": self.scaler.state_dict(),
            "batches": self.batches.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state() if self.device.type == "cuda" else torch.zeros(0, dtype=torch.uint8),
            **({"grokfast": self.grokfast.state_dict()} if self.grokfast is not None else {}),
        }

    def _load_state(self, state: dict[str, Any]) -> None:
        ckpt.check_trainer_state(state, self.optimizers, self.scaler, self.device)  # before any of it reaches torch
        try:
            self.step = int(state["step"])
            self.best_val = float(state["best_val"])
            for optimizer, key in zip(self.optimizers, ckpt.OPTIMIZER_KEYS, strict=False):
                base = [group["base_lr"] for group in optimizer.param_groups]
                optimizer.load_state_dict(state[key])
                for group, lr in zip(optimizer.param_groups, base, strict=True):  # this run's rates, not the saved
                    group["base_lr"] = lr
            if state.get("scaler"):
                self.scaler.load_state_dict(state["scaler"])
            self.batches.load_state_dict(state["batches"])
            torch.set_rng_state(state["torch_rng"])
            if self.device.type == "cuda" and state["cuda_rng"].numel():
                torch.cuda.set_rng_state(state["cuda_rng"])
            if self.grokfast is not None and "grokfast" in state:  # (turned on at a resume: its average starts now)
                self.grokfast.load_state_dict(state["grokfast"])
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

    def _emit(self, data: Payload) -> None:
        if not self.is_main:
            return
        event = Event(self.step, data)
        for listener in self.listeners:
            listener(event)

    def _init_ddp(self) -> None:
        self.rank = int(os.environ["RANK"])
        self.world = int(os.environ["WORLD_SIZE"])
        local = int(os.environ.get("LOCAL_RANK", "0"))
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(local + 1)))  # (torchrun sets it)
        use_cuda = ddp_uses_cuda(self.cfg.train.device, local_world, torch.cuda.device_count())
        if use_cuda:
            self.device = torch.device("cuda", local)
            torch.cuda.set_device(self.device)
        else:
            self.device = torch.device("cpu")
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")


def compile_wanted(mode: str, device: torch.device) -> bool:
    """train.compile: "on", "off", or "auto": on for CUDA, where it is faster once compiled (bench.compare --device
    cuda), off on a CPU, where compiling takes longer than our short runs gain from it."""
    return mode == "on" or (mode == "auto" and device.type == "cuda")


def _is_compile_error(e: Exception) -> bool:
    """Whether an exception came from torch.compile's machinery (Dynamo, Inductor, a backend), not from the step."""
    from torch._dynamo.exc import TorchDynamoException

    kind = type(e).__module__
    return isinstance(e, TorchDynamoException) or kind.startswith(("torch._dynamo", "torch._inductor"))


def _compile_error_line(e: BaseException) -> str:
    """What went wrong, in one line: the backend's own error (Dynamo wraps it in a paragraph of advice)."""
    inner = getattr(e, "inner_exception", None) or e.__cause__
    if isinstance(inner, BaseException) and inner is not e:
        return _compile_error_line(inner)
    first = next((line for line in str(e).splitlines() if line.strip()), "")
    return f"{type(e).__name__}: {first.strip()[:200]}"


def ddp_uses_cuda(device: str, local_processes: int, gpus: int) -> bool:
    """Whether torchrun's processes train on CUDA (NCCL), one GPU each; or on CPUs (gloo).

    Every process decides alike, from the same numbers: more processes on this machine than GPUs would make a
    device ordinal out of a rank that has no GPU ("CUDA error: invalid device ordinal"). With train.device=cuda
    that is an error naming the fix; with auto, the run falls back to gloo on the CPU and says so."""
    if device not in ("auto", "cuda") or gpus == 0:
        if device == "cuda":
            raise UserInputError("train.device=cuda, but torch sees no GPU here; use train.device=auto or cpu")
        return False
    if local_processes <= gpus:
        return True
    fix = f"run torchrun --nproc_per_node={gpus} (one process per GPU), or set train.device=cpu to train on the CPU"
    if device == "cuda":
        raise UserInputError(f"{local_processes} processes on this machine but {gpus} GPU(s): {fix}")
    if int(os.environ.get("LOCAL_RANK", "0")) == 0:
        print(f"note: {local_processes} processes on this machine but {gpus} GPU(s): training on the CPU (gloo) "
              f"instead; {fix}", flush=True)  # fmt: skip
    return False
