"""Background training jobs: start / stop / resume, each collecting its trainer's events for the UI to poll.

A `Job` runs one `gpt.trainer.Trainer` in a thread and keeps the series the charts need. The `Registry`
caps how many jobs train at once; a request over the cap gets `BusyError`, whose message shows the progress of
the run that holds the slot.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gpt.config import Config
from gpt.data import PreparedData
from gpt.errors import UserInputError
from gpt.trainer import Event, Trainer, format_duration

KEEP_FINISHED = 50  # finished jobs kept for their sessions' charts and Resume; older ones are forgotten


class BusyError(UserInputError):
    """All training slots are taken."""


@dataclass
class Series:
    """What the charts show: all of it, from the first step (resumed runs continue the same series)."""

    steps: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    smooth: list[float] = field(
        default_factory=list
    )  # exponential moving average of loss (TensorBoard's 0.6), kept as it comes
    lr: list[float] = field(default_factory=list)
    tokens_per_s: list[float] = field(default_factory=list)
    eval_steps: list[int] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)


class Job:
    def __init__(self, trainer: Trainer, history: Series | None = None) -> None:
        self.id = uuid.uuid4().hex[:12]
        self.trainer = trainer
        self.run_dir = trainer.out_dir
        self.series = history or Series()
        self.status = "starting"  # starting | running | completed | stopped | error
        self.message = ""
        self.last: dict[str, Any] = {"step": trainer.step, "max_steps": trainer.cfg.train.max_steps}
        self.samples: list[tuple[int, str]] = []
        self.started = time.time()
        self.version = 0  # bumped on every event: pollers skip redrawing when it has not moved
        self._lock = threading.Lock()
        trainer.listeners.append(self._on_event)
        self.thread = threading.Thread(target=self._run, name=f"train-{self.id}", daemon=True)

    def _run(self) -> None:
        try:
            self.trainer.run()
        except UserInputError as e:
            self._finish("error", str(e))
        except Exception as e:  # noqa: BLE001 - shown to the user; the app keeps serving
            self._finish("error", f"training failed: {type(e).__name__}: {e}")
        finally:
            # The model and optimizer live on in the checkpoint: a finished job keeps only its series.
            self.trainer = None  # type: ignore[assignment]

    def _finish(self, status: str, message: str) -> None:
        with self._lock:
            self.status, self.message = status, message
            self.version += 1

    def _on_event(self, e: Event) -> None:
        with self._lock:
            d = e.data
            if e.kind == "start":
                self.status = "running"
            elif e.kind == "step":
                s = self.series
                s.steps.append(e.step)
                s.loss.append(d["loss"])
                s.smooth.append(d["loss"] if not s.smooth else 0.6 * s.smooth[-1] + 0.4 * d["loss"])
                s.lr.append(d["lr"])
                s.tokens_per_s.append(d["tokens_per_s"])
                self.last = {"step": e.step, **d}
            elif e.kind == "eval":
                self.series.eval_steps.append(e.step)
                self.series.val_loss.append(d["val_loss"])
            elif e.kind == "sample":
                self.samples.append((e.step, d["text"]))
            elif e.kind == "done":
                self.status = d["status"]
                self.last["step"] = e.step
                word = "completed" if d["status"] == "completed" else "stopped"
                self.message = f"Training {word} at step {e.step}."
            elif e.kind == "error":
                self.status, self.message = "error", d["message"]
            self.version += 1

    @property
    def active(self) -> bool:
        return self.status in ("starting", "running")

    def stop(self) -> None:
        trainer = self.trainer
        if trainer is not None:
            trainer.stop()

    def progress_line(self) -> str:
        step, total = self.last.get("step", 0), self.last.get("max_steps", 0)
        eta = self.last.get("eta")
        return f"step {step}/{total}" + (f", ETA {format_duration(eta)}" if eta is not None else "")

    def snapshot(self) -> dict[str, Any]:
        """A consistent copy for one UI refresh."""
        with self._lock:
            s = self.series
            return {
                "id": self.id,
                "status": self.status,
                "message": self.message,
                "version": self.version,
                "last": dict(self.last),
                "run_dir": str(self.run_dir),
                "series": Series(**{k: list(v) for k, v in vars(s).items()}),
                "sample": self.samples[-1] if self.samples else None,
            }


class Registry:
    """All jobs of this process; at most `max_jobs` train at once."""

    def __init__(self, max_jobs: int) -> None:
        self.max_jobs = max_jobs
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()

    def start(
        self,
        config: Config,
        data: PreparedData,
        run_dir: Path,
        resume: Path | None = None,
        history: Series | None = None,
        init_from: Path | None = None,
    ) -> Job:
        with self._lock:
            running = [j for j in self._jobs.values() if j.active]
            if len(running) >= self.max_jobs:
                raise BusyError(
                    f"Busy: {len(running)} training run(s) in progress ({running[0].progress_line()}); "
                    "this server trains one at a time — try again when it finishes."
                )
            trainer = Trainer(config, data, run_dir, resume=resume, init_from=init_from)  # may raise UserInputError
            job = Job(trainer, history)
            self._jobs[job.id] = job
            finished = [j for j in self._jobs.values() if not j.active]
            for old in finished[: max(0, len(finished) - KEEP_FINISHED)]:  # oldest first (dicts keep order)
                del self._jobs[old.id]
            job.thread.start()
            return job

    def get(self, job_id: str | None) -> Job | None:
        return self._jobs.get(job_id) if job_id else None

    def active(self) -> list[Job]:
        return [j for j in self._jobs.values() if j.active]
