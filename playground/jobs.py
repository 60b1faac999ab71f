"""Background training jobs: start / stop / resume, each collecting its trainer's events for the UI to poll.

A `Job` runs one `gpt.trainer.Trainer` (asked for as a `RunRequest`) in its own process and records the run's
curves (`gpt.events.Curves`) for the charts; a thread reads the child's events from a queue. A process, not a thread:
in the web server's process, training ran at 0.65x of the CLI's tokens/s with no browser attached (GNU OpenMP
throttles its spin-waiting as soon as a second thread of the process has used torch, and the server's threads all
have), and it shared the GIL with every request. In its own process it trains as fast as `gpt-train`, its memory
goes back to the system when it ends, and a crash in it cannot take the app down. Children fork from a server
process that has imported torch once (start ~0.1 s).

The `Registry` caps how many jobs train at once. A run asked for while the slots are taken waits in a fair queue
(first come, first served; one run per visitor, training or waiting, claimed atomically; a capped length, and a cap
per address): its visitor sees its position and when it should start, can leave, and keeps the place only while a
page of theirs asks for it (a reload keeps it; a closed page lets it lapse). Runs start in order as slots free up.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import threading
import time
import uuid
from dataclasses import dataclass
from multiprocessing.synchronize import Event as StopFlag
from pathlib import Path
from typing import Any, Literal

from gpt.config import Config
from gpt.data import PreparedData
from gpt.errors import UserInputError
from gpt.events import Compile, Curves, Done, Event, Failed, Sample, Start, Step, run_listeners
from playground.settings import LIMITS, scrub_paths

# Where a job is: waiting for a slot, starting (its child builds the model), training, ended (as the trainer says:
# completed or stopped; or in error), or left the queue before it started.
JobStatus = Literal["queued", "starting", "running", "completed", "stopped", "error", "left"]


@dataclass(frozen=True)
class StatusLook:
    label: str  # what the page says of a job in that state that has no message of its own
    colour: str  # its progress bar's


STATUS: dict[JobStatus, StatusLook] = {
    "queued": StatusLook("Waiting in line", "#1f77b4"),
    "starting": StatusLook("Starting…", "#1f77b4"),
    "running": StatusLook("Training…", "#1f77b4"),
    "completed": StatusLook("Training completed", "#2ca02c"),
    "stopped": StatusLook("Training stopped", "#ff7f0e"),
    "error": StatusLook("Training failed", "#d62728"),
    "left": StatusLook("Left the queue", "#7f7f7f"),
}
ACTIVE: tuple[JobStatus, ...] = ("starting", "running")  # a job's statuses while it holds a training slot
QUEUED: JobStatus = "queued"  # waiting for a slot
KEEP_FINISHED = 50  # finished jobs kept for their sessions' charts and Resume; older ones are forgotten
START_TIMEOUT_S = 300  # how long Start waits for the child to build its model and say "start" (or what is wrong)

# Windows has no fork server: there each child starts a fresh interpreter (spawn), a few seconds slower to start.
_FORKSERVER = "forkserver" in multiprocessing.get_all_start_methods()
_CTX = multiprocessing.get_context("forkserver") if _FORKSERVER else multiprocessing.get_context("spawn")
if _FORKSERVER:
    # The server imports once what every run would import before its first step: AdamW's constructor imports
    # torch._dynamo (1.5 s), the TensorBoard writer its package (0.2 s). (Each child still runs the parent's main
    # file again, whatever is preloaded, so app.py imports nothing heavy at its top.)
    _CTX.set_forkserver_preload(["gpt.trainer", "torch._dynamo", "torch.utils.tensorboard"])


class BusyError(UserInputError):
    """The queue is full, or this visitor already has a run waiting."""


def warm_up() -> None:
    """Start the fork server now (it imports torch once), so the first Start click does not wait for it."""
    if _FORKSERVER:
        from multiprocessing import forkserver

        forkserver.ensure_running()


def _train_in_child(spec: dict[str, Any], events: Any, stop: StopFlag) -> None:
    """The child process: build the trainer, run it, send every event home. Errors travel as `Failed` events."""
    from gpt.data import load_prepared
    from gpt.device import train_in_background
    from gpt.trainer import Trainer

    train_in_background()  # the server's requests, which a person waits on, come first
    config = Config.from_dict(spec["config"])
    listeners = [*run_listeners(spec["run_dir"], config.train.tensorboard), events.put]  # events: our own dataclasses
    try:
        trainer = Trainer(config, load_prepared(spec["data_dir"]), spec["run_dir"], resume=spec["resume"],
                          init_from=spec["init_from"], listeners=listeners)  # fmt: skip
    except Exception as e:  # noqa: BLE001 - reported to the UI, the child ends
        events.put(Event(0, Failed.of(e)))
        return

    def watch() -> None:  # Stop pressed, or the app went away: finish the step, save, end
        # The app, not this process's parent: that is the fork server, which can outlive the app. And stop in any
        # case: the stop flag lives in the app, and waiting on it may fail once the app is gone.
        try:
            while _alive(spec["app_pid"]) and not stop.wait(1.0):
                pass
        finally:
            trainer.stop()

    threading.Thread(target=watch, daemon=True).start()
    try:
        trainer.run()
    except Exception:  # noqa: BLE001, S110 - the trainer has already sent it as an "error" event
        pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, as another user
        return True
    return True


@dataclass(frozen=True)
class RunRequest:
    """A run asked for: what to train on what, where, from which checkpoint; whose it is and how long it should take."""

    config: Config
    data: PreparedData
    run_dir: Path
    resume: Path | None = None  # a run directory to continue (its trainer state)
    init_from: Path | None = None  # a checkpoint to fine-tune (its weights, step 0)
    history: Curves | None = None  # the curves of the run's earlier part, when resuming: the charts go on from them
    owner: str | None = None  # whose run it is (Visitor.key)
    session: str | None = None  # the page session that asked
    estimate_s: float = 0.0  # how long it should train, for the ETAs of the runs queued behind it
    address: str = ""  # where the request came from (the per-address cap of the queue)


class Job:
    def __init__(self, request: RunRequest) -> None:
        r = request  # (not kept: its data's memmaps would stay open as long as the job is remembered)
        self.id = uuid.uuid4().hex[:12]
        self.run_dir, self.owner, self.session, self.address = r.run_dir, r.owner, r.session, r.address
        self.seen_at = time.monotonic()  # when a page of its visitor last asked about it (a waiting run's place lapses)
        self.shown_wait: tuple[float, float] | None = None  # (wait, when) last shown while it waits: it counts down
        # what it reads while it trains: kept on disk by the quota while it trains or waits
        self.sources = [Path(p) for p in (r.data.dir, r.resume, r.init_from) if p is not None]
        self.estimate_s = r.estimate_s
        self.on_end: list[Any] = []  # called (with the job) once it has finished, for the registry
        self.curves = r.history.copy() if r.history is not None else Curves()
        self.compile: Compile | None = None  # see Snapshot.compile
        self.status: JobStatus = "starting"
        self.message = ""
        self.step, self.max_steps = 0, r.config.train.max_steps
        self.last: Step | None = None  # the latest logged step (loss, speed, ETA)
        self.samples: list[tuple[int, str]] = []
        self.version = 0  # bumped on every event: pollers skip redrawing when it has not moved
        self._lock = threading.Lock()
        self._answered = threading.Event()  # the child said "start" or what went wrong
        self._events = _CTX.Queue()
        self._stop = _CTX.Event()
        spec = {
            "config": r.config.to_dict(),
            "data_dir": str(r.data.dir),
            "run_dir": str(r.run_dir),
            "resume": str(r.resume) if r.resume else None,
            "init_from": str(r.init_from) if r.init_from else None,
            "app_pid": os.getpid(),
        }
        self.process = _CTX.Process(target=_train_in_child, args=(spec, self._events, self._stop), daemon=True)
        self._reader = threading.Thread(target=self._read, name=f"train-{self.id}", daemon=True)

    def start(self) -> None:
        """Start the child and wait until it trains; bad settings it finds raise UserInputError here."""
        with self._lock:
            self.status, self.message = "starting", ""
            self.version += 1
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
                event: Event = self._events.get(timeout=1.0)
            except queue.Empty:
                if self.process.is_alive():
                    continue
                if self.active:  # killed (out of memory, say) before it could report
                    code = self.process.exitcode
                    self._finish("error", f"the training process ended unexpectedly (exit code {code})")
                break
            self._on_event(event)
            if isinstance(event.data, Done | Failed):
                break
        self.process.join(timeout=60)
        for callback in self.on_end:
            callback(self)

    def _finish(self, status: JobStatus, message: str) -> None:
        with self._lock:
            self.status, self.message = status, scrub_paths(message)
            self.version += 1
        self._answered.set()

    def _on_event(self, e: Event) -> None:
        with self._lock:
            self.step = e.step
            self.curves.record(e)
            match e.data:
                case Start():
                    self.status = "running"
                case Compile() as d:
                    self.compile = d
                case Step() as d:
                    self.last, self.max_steps = d, d.max_steps
                case Sample() as d:
                    self.samples.append((e.step, d.text))
                case Done() as d:
                    self.status, self.message = d.status, f"Training {d.status} at step {e.step}."
                case Failed() as d:
                    self.status = "error"
                    # scrubbed here, where it is made: every view of it (progress, API, Resume) shows no server path
                    self.message = scrub_paths(d.message if d.user else f"training failed: {d.type}: {d.message}")
            self.version += 1
        if isinstance(e.data, Start | Failed):
            self._answered.set()

    @property
    def active(self) -> bool:
        return self.status in ACTIVE

    def stop(self) -> None:
        self._stop.set()

    def remaining_s(self) -> float:
        """Seconds until this run should end: the trainer's ETA once it trains, else the estimate."""
        if self.status == "running" and self.last is not None:
            return max(0.0, self.last.eta)
        return self.estimate_s

    def snapshot(self) -> Snapshot:
        """A consistent copy for one UI refresh."""
        with self._lock:
            sample = self.samples[-1] if self.samples else None
            return Snapshot(self.id, self.status, self.message, self.version, self.step, self.max_steps, self.last,
                            str(self.run_dir), self.curves.copy(), sample, stopping=self._stop.is_set(),
                            compile=self.compile)  # fmt: skip


@dataclass
class Snapshot:
    """One job as one UI refresh sees it."""

    id: str
    status: JobStatus
    message: str
    version: int  # bumped at every event
    step: int
    max_steps: int
    last: Step | None
    run_dir: str
    curves: Curves
    sample: tuple[int, str] | None
    queue: tuple[int, int, float] | None = None  # (position, length, wait) while queued
    stopping: bool = False  # Stop was pressed; the run finishes its step and saves
    compile: Compile | None = None  # torch.compile's phase, its latest event (compiling, compiled, or failed)


class Registry:
    """All jobs of this process: at most `max_jobs` train at once, at most `max_queue` wait in line."""

    def __init__(self, max_jobs: int, max_queue: int = 8) -> None:
        self.max_jobs, self.max_queue = max_jobs, max_queue
        self._jobs: dict[str, Job] = {}
        self._queue: list[Job] = []  # waiting, in order
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._dispatcher: threading.Thread | None = None

    def start(self, request: RunRequest, per_address: int = 0) -> Job:
        """Start a run now if a slot is free and nobody waits (errors it finds raise here), else queue it.

        One run per owner at a time, training or waiting: checked and claimed under the lock, so two Starts sent at
        once make one run, and every run has a visitor who can stop it. At most `per_address` (0: any number) of the
        waiting runs come from one address."""
        job = Job(request)
        owner, address = request.owner, request.address
        job.on_end.append(self._ended)
        with self._lock:
            self._lapse()
            if owner is not None and any(j.owner == owner for j in [*self.active(), *self._queue]):
                raise BusyError("your run is still training or waiting in line; stop it (or leave the queue) first")
            if len(self.active()) < self.max_jobs and not self._queue:
                job_now = True
                self._add(job)
            else:
                job_now = False
                if per_address and address and sum(j.address == address for j in self._queue) >= per_address:
                    raise BusyError(
                        f"{per_address} runs from your address are already waiting in line, the most this server "
                        "allows; wait for one of them to start"
                    )
                if len(self._queue) >= self.max_queue:
                    raise BusyError(
                        f"Busy: {self.max_jobs} run(s) training and {len(self._queue)} waiting, the most this "
                        "server queues; try again in a while"
                    )
                job.status = QUEUED
                self._queue.append(job)
                self._add(job)
                self._ensure_dispatcher()
        if job_now:
            job.start()  # raises UserInputError for bad settings (the child found them)
        return job

    def _add(self, job: Job) -> None:
        self._jobs[job.id] = job
        finished = [j for j in self._jobs.values() if not j.active and j.status != QUEUED]
        for old in finished[: max(0, len(finished) - KEEP_FINISHED)]:  # oldest first (dicts keep order)
            del self._jobs[old.id]

    def leave(self, job_id: str | None, why: str = "You left the queue.") -> bool:
        """Take a waiting run out of the queue; False if it is not waiting (it may have started)."""
        with self._lock:
            job = self._jobs.get(job_id) if job_id else None
            if job is None or job not in self._queue:
                return False
            self._queue.remove(job)
            job._finish("left", why)
            self._wake.notify_all()
            return True

    def touch(self, job_id: str | None) -> None:
        """A page of the run's visitor asked about it: a waiting run keeps its place."""
        job = self.get(job_id)
        if job is not None:
            job.seen_at = time.monotonic()

    def _lapse(self, lapse_s: float | None = None) -> None:
        """Waiting runs whose pages stopped asking (closed, or a client that never had one) leave the line. Under
        the lock."""
        lapse_s = LIMITS.queue_lapse_s if lapse_s is None else lapse_s
        now = time.monotonic()
        for job in [j for j in self._queue if now - j.seen_at > lapse_s]:
            self._queue.remove(job)
            job._finish("left", "No page asked about this run for a while (it was closed), so it left the queue.")
            self._wake.notify_all()

    def forget(self, owner: str) -> None:
        """The visitor asked to be forgotten: their ended runs leave the registry too."""
        with self._lock:
            for job in [j for j in self._jobs.values() if j.owner == owner and not j.active and j.status != QUEUED]:
                del self._jobs[job.id]

    def latest(self, owner: str) -> Job | None:
        """The visitor's run that trains or waits, else their newest one (what a reloaded page shows again)."""
        mine = [j for j in list(self._jobs.values()) if j.owner == owner]
        live = [j for j in mine if j.active or j.status == QUEUED]
        return (live or mine)[-1] if mine else None

    def queue_position(self, job_id: str) -> tuple[int, int, float] | None:
        """(position from 1, queue length, seconds until it should start) of a waiting run, else None.

        The seconds: the runs in the slots end at their ETAs, and each run ahead takes its estimate in the first slot
        to free up."""
        with self._lock:
            self._lapse()
            ids = [j.id for j in self._queue]
            if job_id not in ids:
                return None
            active = self.active()
            free_at = sorted(j.remaining_s() for j in active)
            free_at += [0.0] * max(0, self.max_jobs - len(free_at))
            # Estimates come from a FLOP count and a matmul benchmark; a run in progress shows how far off they are
            # on this machine (by 3x or more where the matmul has an accelerator that training barely uses).
            observed = [(j.last.elapsed + j.last.eta) / j.estimate_s for j in active
                        if j.estimate_s > 0 and j.last is not None]  # fmt: skip
            scale = observed[0] if observed else 1.0
            for ahead in self._queue[: ids.index(job_id)]:
                soonest = free_at.pop(0)
                free_at = sorted([*free_at, soonest + ahead.estimate_s * scale])
            return ids.index(job_id) + 1, len(ids), self._countdown(self._jobs[job_id], free_at[0])

    @staticmethod
    def _countdown(job: Job, wait: float) -> float:
        """The wait to show: what was shown, counted down, unless the new figure is clearly different (by a
        quarter and 5 s), so that estimates refined from the running run's pace do not make it tick up and down."""
        now = time.monotonic()
        if job.shown_wait is not None:
            shown, at = job.shown_wait
            left = max(0.0, shown - (now - at))
            if abs(wait - left) <= 0.25 * left + 5.0:
                return left
        job.shown_wait = (wait, now)
        return wait

    def _ended(self, job: Job) -> None:
        with self._lock:
            self._wake.notify_all()

    def _ensure_dispatcher(self) -> None:
        if self._dispatcher is None or not self._dispatcher.is_alive():
            self._dispatcher = threading.Thread(target=self._dispatch, name="train-queue", daemon=True)
            self._dispatcher.start()

    def _dispatch(self) -> None:
        """Start waiting runs, in order, as slots free up; ends when the queue is empty."""
        while True:
            with self._lock:
                while self._queue and len(self.active()) >= self.max_jobs:
                    self._wake.wait(timeout=2.0)
                    self._lapse()
                if not self._queue:
                    self._dispatcher = None
                    return
                job = self._queue.pop(0)
                job.status = "starting"  # holds its slot from now on
                job.version += 1
            try:
                job.start()
            except UserInputError:
                pass  # the job's status and message say what went wrong; its session's poll shows them
            except Exception as e:  # noqa: BLE001 - the child could not even be started: report it to its session
                job._finish("error", f"the run could not start ({type(e).__name__}: {e})")

    def stop_owner(self, owner: str) -> list[Job]:
        """Stop every run of this visitor's (training, starting or waiting); returns them."""
        mine = [j for j in list(self._jobs.values()) if j.owner == owner and (j.active or j.status == QUEUED)]
        for job in mine:
            if not self.leave(job.id):
                job.stop()
        return mine

    def get(self, job_id: str | None) -> Job | None:
        return self._jobs.get(job_id) if job_id else None

    def active(self) -> list[Job]:
        return [j for j in list(self._jobs.values()) if j.active]

    def waiting(self) -> list[Job]:
        return list(self._queue)


REGISTRY = Registry(LIMITS.max_jobs, LIMITS.max_queue)  # this server's runs


def in_use() -> list[Path]:
    """What must stay on disk: the runs training or waiting in line, and what each reads (data, checkpoints)."""
    return [p for j in [*REGISTRY.active(), *REGISTRY.waiting()] for p in (j.run_dir, *j.sources)]
