"""Background training jobs: start / stop / resume, each collecting its trainer's events for the UI to poll.

A `Job` runs one `gpt.trainer.Trainer` in its own process and keeps the series the charts need; a thread reads
the child's events from a queue. A process, not a thread: in the web server's process, training ran at 0.65x of
the CLI's tokens/s with no browser attached (GNU OpenMP throttles its spin-waiting as soon as a second thread of the
process has used torch, and the server's threads all have), and it shared the GIL with every request. In its own
process it trains as fast as `gpt-train`, its memory goes back to the system when it ends, and a crash in it
cannot take the app down. Children fork from a server process that has imported torch once (start ~0.1 s).

The `Registry` caps how many jobs train at once; a request over the cap gets `BusyError`, whose message shows the
progress of the run that holds the slot.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import threading
import time
import uuid
from dataclasses import dataclass, field
from multiprocessing.synchronize import Event as StopFlag
from pathlib import Path
from typing import Any

from gpt.config import Config
from gpt.data import PreparedData
from gpt.errors import UserInputError
from gpt.trainer import Event, error_data, format_duration

ACTIVE = ("starting", "running")  # a job's statuses while it holds a training slot
KEEP_FINISHED = 50  # finished jobs kept for their sessions' charts and Resume; older ones are forgotten
START_TIMEOUT_S = 300  # how long Start waits for the child to build its model and say "start" (or what is wrong)

# Windows has no fork server: there each child starts a fresh interpreter (spawn), a few seconds slower to start.
_FORKSERVER = "forkserver" in multiprocessing.get_all_start_methods()
_CTX = multiprocessing.get_context("forkserver") if _FORKSERVER else multiprocessing.get_context("spawn")
if _FORKSERVER:
    # The server imports the app's main module once too: children forked from it inherit it instead of each
    # importing it again (multiprocessing re-imports the parent's __main__ in every child, and app.py imports Gradio).
    # Also what every run would import before its first step: AdamW's constructor imports torch._dynamo (1.5 s),
    # the TensorBoard writer its package (0.2 s).
    _CTX.set_forkserver_preload(["__main__", "gpt.trainer", "torch._dynamo", "torch.utils.tensorboard"])


class BusyError(UserInputError):
    """All training slots are taken."""


def warm_up() -> None:
    """Start the fork server now (it imports torch once), so the first Start click does not wait for it."""
    if _FORKSERVER:
        from multiprocessing import forkserver

        forkserver.ensure_running()


def _train_in_child(spec: dict[str, Any], events: Any, stop: StopFlag) -> None:
    """The child process: build the trainer, run it, send every event home. Errors travel as "error" events."""
    from gpt.data import load_prepared
    from gpt.trainer import Trainer

    def send(e: Event) -> None:
        events.put((e.kind, e.step, e.data))

    try:
        trainer = Trainer(Config.from_dict(spec["config"]), load_prepared(spec["data_dir"]), spec["run_dir"],
                          resume=spec["resume"], init_from=spec["init_from"], listeners=[send])  # fmt: skip
    except Exception as e:  # noqa: BLE001 - reported to the UI, the child ends
        send(Event("error", 0, error_data(e)))
        return
    parent = os.getppid()

    def watch() -> None:  # Stop pressed, or the app went away: finish the step, save, end
        while not stop.wait(1.0):
            if os.getppid() != parent:
                break
        trainer.stop()

    threading.Thread(target=watch, daemon=True).start()
    try:
        trainer.run()
    except Exception:  # noqa: BLE001, S110 - the trainer has already sent it as an "error" event
        pass


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
    def __init__(
        self,
        config: Config,
        data: PreparedData,
        run_dir: Path,
        resume: Path | None = None,
        init_from: Path | None = None,
        history: Series | None = None,
    ) -> None:
        self.id = uuid.uuid4().hex[:12]
        self.run_dir = run_dir
        self.series = history or Series()
        self.status = "starting"  # starting | running | completed | stopped | error
        self.message = ""
        self.last: dict[str, Any] = {"step": 0, "max_steps": config.train.max_steps}
        self.samples: list[tuple[int, str]] = []
        self.started = time.time()
        self.version = 0  # bumped on every event: pollers skip redrawing when it has not moved
        self._lock = threading.Lock()
        self._answered = threading.Event()  # the child said "start" or what went wrong
        self._events = _CTX.Queue()
        self._stop = _CTX.Event()
        spec = {
            "config": config.to_dict(),
            "data_dir": str(data.dir),
            "run_dir": str(run_dir),
            "resume": str(resume) if resume else None,
            "init_from": str(init_from) if init_from else None,
        }
        self.process = _CTX.Process(target=_train_in_child, args=(spec, self._events, self._stop), daemon=True)
        self._reader = threading.Thread(target=self._read, name=f"train-{self.id}", daemon=True)

    def start(self) -> None:
        """Start the child and wait until it trains; bad settings it finds raise UserInputError here."""
        self.process.start()
        self._reader.start()
        if not self._answered.wait(START_TIMEOUT_S):
            self.stop()
            raise UserInputError(f"training did not start within {START_TIMEOUT_S} s; try a smaller model")
        if self.status == "error":
            raise UserInputError(self.message)

    def _read(self) -> None:
        while True:
            try:
                kind, step, data = self._events.get(timeout=1.0)
            except queue.Empty:
                if self.process.is_alive():
                    continue
                if self.active:  # killed (out of memory, say) before it could report
                    code = self.process.exitcode
                    self._finish("error", f"the training process ended unexpectedly (exit code {code})")
                break
            self._on_event(Event(kind, step, data))
            if kind in ("done", "error"):
                break
        self.process.join(timeout=60)

    def _finish(self, status: str, message: str) -> None:
        with self._lock:
            self.status, self.message = status, message
            self.version += 1
        self._answered.set()

    def _on_event(self, e: Event) -> None:
        with self._lock:
            d = e.data
            if e.kind == "start":
                self.status = "running"
                self.last["step"] = e.step
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
                self.status = "error"
                self.message = d["message"] if d.get("user") else f"training failed: {d['type']}: {d['message']}"
            self.version += 1
        if e.kind in ("start", "error"):
            self._answered.set()

    @property
    def active(self) -> bool:
        return self.status in ACTIVE

    def stop(self) -> None:
        self._stop.set()

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
            job = Job(config, data, run_dir, resume=resume, init_from=init_from, history=history)
            job.start()  # raises UserInputError for bad settings (the child found them)
            self._jobs[job.id] = job
            finished = [j for j in self._jobs.values() if not j.active]
            for old in finished[: max(0, len(finished) - KEEP_FINISHED)]:  # oldest first (dicts keep order)
                del self._jobs[old.id]
            return job

    def get(self, job_id: str | None) -> Job | None:
        return self._jobs.get(job_id) if job_id else None

    def active(self) -> list[Job]:
        return [j for j in self._jobs.values() if j.active]
