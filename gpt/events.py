"""What the trainer reports, and the listeners that present it.

The trainer fires an `Event` at each step it logs, evaluation, sample, checkpoint, and at start and end (minGPT's
callbacks are the model); it never prints. Whoever runs it decides what to do with them: the CLI prints them
(`print_event`) and logs TensorBoard scalars (`TensorBoard`), the web app sends them to its Train tab.

One dataclass per kind of payload, so a misspelt field is a type error, not a KeyError at step 10,000.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from gpt.baselines import Baselines
from gpt.circuits import CircuitScores
from gpt.config import Config, recipe_summary
from gpt.errors import UserInputError
from gpt.health import STEP_SCALES, Finding, FindingKind, Health, InitCheck, diagnose, findings

EventKind = Literal["start", "compile", "step", "eval", "sample", "checkpoint", "done", "error", "health", "init",
                    "circuits"]  # fmt: skip
Status = Literal["completed", "stopped"]


@dataclass(frozen=True)
class Start:
    params: int
    tokens_per_step: int
    max_steps: int
    device: str
    dtype: str
    world: int  # processes training together (DDP)
    run_dir: str
    config: dict[str, Any]  # the run's settings as it trains them (a checkpoint's architecture when fine-tuning)
    baselines: Baselines | None = None  # the val split under unigram and bigram counts, in bits per byte (text only)


@dataclass(frozen=True)
class Compile:
    """torch.compile's phase of a run, which happens inside the first step: reported apart, so that it does not look
    like a stalled first step (and its minutes do not count as a step's)."""

    seconds: float | None  # None: compiling now; else what it took
    fallback: str = ""  # why the run goes on without it (eager), if it failed


@dataclass(frozen=True)
class Step:
    loss: float  # mean train loss since the last logged step
    lr: float
    grad_norm: float
    tokens_per_s: float
    step_time: float  # seconds per training step since the last logged step (evaluations, samples, saves apart)
    elapsed: float  # seconds since the start of this run (or of this resumed part)
    eta: float  # seconds to the end of the run: its steps at the measured pace, its evaluations, samples and saves
    max_steps: int


@dataclass(frozen=True)
class Eval:
    val_loss: float  # nats per token
    perplexity: float
    best: bool  # the lowest val loss so far (saved to best/)
    val_bpb: float  # the val loss in bits per byte of text (`PreparedData.bits_per_byte`): compares across tokenizers
    # a task's (gpt/tasks.py): the share of a fixed sample of train / held-out examples whose whole answer the model
    # gets right by greedy decoding, 0 to 1 (there the losses are its answers' alone); None on text
    train_acc: float | None = None
    val_acc: float | None = None


@dataclass(frozen=True)
class Sample:
    text: str


@dataclass(frozen=True)
class Checkpoint:
    path: str
    name: str  # latest | best


@dataclass(frozen=True)
class Done:
    status: Status
    train_loss: float | None
    val_loss: float | None


@dataclass(frozen=True)
class Failed:
    message: str
    type: str  # the exception's class name
    user: bool  # a UserInputError: the message says what to change

    @classmethod
    def of(cls, e: Exception) -> Failed:
        from gpt.errors import UserInputError

        return cls(str(e), type(e).__name__, isinstance(e, UserInputError))


# (Health and InitCheck live in gpt.health, CircuitScores in gpt.circuits: what they measure is explained there)
Payload = Start | Compile | Step | Eval | Sample | Checkpoint | Done | Failed | Health | InitCheck | CircuitScores
KINDS: dict[type, EventKind] = {Start: "start", Compile: "compile", Step: "step", Eval: "eval", Sample: "sample",
                                Checkpoint: "checkpoint", Done: "done", Failed: "error", Health: "health",
                                InitCheck: "init", CircuitScores: "circuits"}  # fmt: skip


@dataclass(frozen=True)
class Event:
    step: int  # the optimizer steps taken so far
    data: Payload

    @property
    def kind(self) -> EventKind:
        return KINDS[type(self.data)]


Listener = Callable[[Event], None]


def series(at: EventKind, key: str = "") -> Any:
    """A field of `Curves`: a list with a point at each event of kind `at`, stored under `key` in metrics.jsonl
    (default: the field's name)."""
    return field(default_factory=list, metadata={"at": at, "key": key})


@dataclass
class Curves:
    """A run's curves, from its first step (a resumed run's parts continue them): what the Train tab's live charts
    draw (`playground.jobs` records them from the run's events), what metrics.jsonl holds (`MetricsLog` writes what
    `record` adds, `read_metrics` reads it back) and what the Compare tab overlays.

    Adding a series: a field here (`series(kind)`), its append in `record`; the file, the live job and Compare follow.
    The x of a kind's series is its "step" series (`steps`, `eval_steps`)."""

    # at each logged step
    steps: list[int] = series("step", "step")
    loss: list[float] = series("step")  # mean train loss since the last logged step
    tokens: list[int] = series("step")  # trained on so far
    times: list[float] = series("step", "time")  # seconds of training so far, over every part of a resumed run
    tokens_per_s: list[float] = series("step")
    lr: list[float] = series("step")
    grad_norm: list[float] = series("step")
    # at each evaluation
    eval_steps: list[int] = series("eval", "step")
    val_loss: list[float] = series("eval")
    val_bpb: list[float | None] = series("eval")  # None in files from before it was recorded
    train_acc: list[float | None] = series("eval")  # a task's exact-match accuracy (gpt/tasks.py); None on text
    val_acc: list[float | None] = series("eval")
    # at each training-health reading (gpt.health.Health): one value per group or layer at each point
    health_steps: list[int] = series("health", "step")
    health_groups: list[list[str]] = series("health", "groups")
    update_ratio: list[list[float | None]] = series("health")
    group_grad_norm: list[list[float]] = series("health", "grad_norm")
    dead_units: list[list[float]] = series("health")
    off_share: list[list[float] | None] = series("health")  # None in files from before it was recorded
    attn_entropy: list[list[float]] = series("health")
    attn_uniform: list[float] = series("health")
    step_test: list[list[float] | None] = series("health")  # None in files from before it was recorded
    judge_rate: list[bool | None] = series("health")
    lr_scale: list[float | None] = series("health")
    group_muon: list[list[bool] | None] = series("health", "muon")
    previous_test: list[list[float] | None] = series("health")
    step_noise: list[float | None] = series("health")  # None in files from before it was recorded
    # at each evaluation and before the first step (gpt.circuits.CircuitScores): [layer][head] at each point
    circuit_steps: list[int] = series("circuits", "step")
    previous_token: list[list[list[float]]] = series("circuits")
    induction: list[list[list[float]]] = series("circuits")
    in_context: list[float] = series("circuits")
    # the loss at step 0 against ln(vocabulary), for a run from scratch
    init: InitCheck | None = None
    # the run's settings and size, from its start (the latest part's, for a resumed run)
    config: dict[str, Any] | None = None
    params: int | None = None
    baselines: Baselines | None = None  # (bits per byte) the loss chart's dashed lines
    # what recording needs: the tokens of a step, the training time of the earlier parts; the smoothed loss so far
    _tokens_per_step: int = field(default=0, init=False, repr=False)
    _time_offset: float = field(default=0.0, init=False, repr=False)
    _smooth: list[float] = field(default_factory=list, init=False, repr=False)
    _first_found: dict[FindingKind, tuple[int, Finding]] = field(default_factory=dict, init=False, repr=False)
    _found_upto: int = field(default=0, init=False, repr=False)

    def record(self, e: Event) -> dict[str, Any] | None:
        """Append what event `e` adds; returns it as a line of metrics.jsonl (None: it adds no point)."""
        match e.data:
            case Start() as d:
                times = [t for t in self.times if isinstance(t, int | float)]
                self._tokens_per_step, self._time_offset = d.tokens_per_step, times[-1] if times else 0.0
                self.config, self.params, self.baselines = d.config, d.params, d.baselines
                said = {"baselines": dataclasses.asdict(d.baselines)} if d.baselines else {}
                return {"start": e.step, "config": d.config, "params": d.params, **said}
            case Step() as d:
                self.steps.append(e.step)
                self.loss.append(d.loss)
                self.tokens.append(e.step * self._tokens_per_step)
                self.times.append(round(self._time_offset + d.elapsed, 3))
                self.tokens_per_s.append(d.tokens_per_s)
                self.lr.append(d.lr)
                self.grad_norm.append(d.grad_norm)
                self._smoothed()  # as the points come: a refresh of the chart costs its new points only
            case Eval() as d:
                self.eval_steps.append(e.step)
                self.val_loss.append(d.val_loss)
                self.val_bpb.append(d.val_bpb)
                self.train_acc.append(d.train_acc)
                self.val_acc.append(d.val_acc)
            case Health() as d:
                self.health_steps.append(e.step)
                self.health_groups.append(d.groups)
                self.update_ratio.append(d.update_ratio)
                self.group_grad_norm.append(d.grad_norm)
                self.dead_units.append(d.dead_units)
                self.off_share.append(d.off_share)
                self.attn_entropy.append(d.attn_entropy)
                self.attn_uniform.append(d.attn_uniform)
                self.step_test.append(d.step_test)
                self.judge_rate.append(d.judge_rate)
                self.lr_scale.append(d.lr_scale)
                self.group_muon.append(d.muon)
                self.previous_test.append(d.previous_test)
                self.step_noise.append(d.step_noise)
            case CircuitScores() as d:
                self.circuit_steps.append(e.step)
                self.previous_token.append(d.previous_token)
                self.induction.append(d.induction)
                self.in_context.append(d.in_context)
            case InitCheck() as d:
                self.init = d
                return {"kind": "init", **dataclasses.asdict(d)}
            case _:
                return None
        return {"kind": e.kind, **{key: getattr(self, name)[-1] for name, key in _SERIES[e.kind]}}

    def read_line(self, line: dict[str, Any]) -> None:
        """Append a line of metrics.jsonl (as `record` returned it; or an older file's, which have no "kind")."""
        if "config" in line:
            self.config, self.params = line["config"], line.get("params")
            with contextlib.suppress(KeyError, TypeError, ValueError):  # (none, or of another shape: no lines drawn)
                self.baselines = Baselines(float(line["baselines"]["unigram"]), float(line["baselines"]["bigram"]))
            return
        kind = line.get("kind") or ("step" if "loss" in line else "eval" if "val_loss" in line else None)
        if kind == "init":
            with contextlib.suppress(KeyError, TypeError, ValueError):  # (a line of another shape: no check shown)
                self.init = InitCheck(
                    float(line["loss"]), float(line["expected"]), bool(line["ok"]), str(line["message"])
                )
            return
        for name, key in next((s for k, s in _SERIES.items() if k == kind), []):  # (a kind unknown here: skipped)
            getattr(self, name).append(line.get(key))

    def health(self, i: int = -1) -> Health | None:
        """The `i`-th training-health reading as the trainer reported it (what `gpt.health.diagnose` reads); None
        when there is none."""
        if not self.health_steps or not -len(self.health_steps) <= i < len(self.health_steps):
            return None
        dead = self.dead_units[i]
        off = self.off_share[i]
        scale = self.lr_scale[i]
        return Health(self.health_groups[i], self.update_ratio[i], self.group_grad_norm[i],
                      [f"layer {n + 1}" for n in range(len(dead))], dead, off if off is not None else [],
                      self.attn_entropy[i], self.attn_uniform[i], self.step_test[i], bool(self.judge_rate[i]),
                      1.0 if scale is None else scale, self.group_muon[i] or [], self.previous_test[i],
                      self.step_noise[i])  # fmt: skip

    def first_findings(self) -> dict[FindingKind, tuple[int, Finding]]:
        """The step and text of each kind of finding (`gpt.health.findings`) where a reading first showed it, in the
        order they appeared; each call reads only the readings recorded since the last (the panel asks at every
        refresh)."""
        for i in range(self._found_upto, len(self.health_steps)):
            reading = self.health(i)
            for f in findings(reading) if reading is not None else []:
                self._first_found.setdefault(f.kind, (self.health_steps[i], f))
        self._found_upto = len(self.health_steps)
        return self._first_found

    @property
    def smooth(self) -> list[float]:
        """The train loss's exponential moving average (TensorBoard's smoothing, 0.6), one point per logged step."""
        return self._smoothed()

    def _smoothed(self) -> list[float]:
        for v in self.loss[len(self._smooth) :]:
            last = self._smooth[-1] if self._smooth else None
            self._smooth.append(v if last is None or v is None else 0.6 * last + 0.4 * v)
        return self._smooth

    def train_bpb(self) -> list[float] | None:
        """The train losses in bits per byte, at the bytes per token of the val split (the ratio of the latest
        evaluation's two figures: both splits are the same text); None before an evaluation has recorded it."""
        ratios = [b / v for v, b in zip(self.val_loss, self.val_bpb, strict=False) if v and b is not None]
        if not ratios:
            return None
        return [loss * ratios[-1] for loss in self.loss]

    def copy(self) -> Curves:
        """A copy that later appends do not reach (what one refresh of the page shows)."""
        out = copy.copy(self)
        for f in dataclasses.fields(self):
            if isinstance(v := getattr(self, f.name), list):
                setattr(out, f.name, list(v))
        return out


# kind -> (field, key in metrics.jsonl) of each of its series, in the field order
_SERIES: dict[EventKind, list[tuple[str, str]]] = {}
for _f in dataclasses.fields(Curves):
    if "at" in _f.metadata:
        _SERIES.setdefault(_f.metadata["at"], []).append((_f.name, _f.metadata["key"] or _f.name))


def format_duration(seconds: float) -> str:
    """As people write it: "14 s", "2 min 5 s", "1 h 3 min" (seconds dropped past an hour)."""
    seconds = max(0, round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    if h:
        return f"{h} h {m} min" if m else f"{h} h"
    if m:
        return f"{m} min {s} s" if s else f"{m} min"
    return f"{s} s"


def print_event(e: Event) -> None:
    """The console view of a run, as `gpt-train` prints it."""
    match e.data:
        case Start() as d:
            line = (f"training {d.params / 1e6:.2f}M parameters on {d.device} ({d.dtype}, {d.world} process(es)) "
                    f"for {d.max_steps} steps -> {d.run_dir}")  # fmt: skip
            with contextlib.suppress(UserInputError, TypeError, AttributeError):  # a config from elsewhere: no line
                cfg = Config.from_dict(d.config)
                line += f"\nrecipe: {recipe_summary(cfg.model, cfg.train)}"
        case Compile() as d:
            line = compile_line(d)
        case Step() as d:
            line = (f"step {e.step}/{d.max_steps} | loss {d.loss:.4f} | lr {d.lr:.2e} | {d.tokens_per_s:,.0f} tok/s | "
                    f"{d.step_time * 1000:.0f} ms/step | eta {format_duration(d.eta)}")  # fmt: skip
        case Eval() as d:
            line = eval_line(e.step, d)
        case Sample() as d:
            line = f"--- sample at step {e.step} ---\n{d.text}\n---"
        case Checkpoint() as d:
            line = f"saved checkpoint {d.path}"
        case Done() as d:
            line = f"training {d.status} at step {e.step}"
        case Health() as d:
            line = health_line(e.step, d)
        case InitCheck() as d:
            line = ("" if d.ok else "warning: ") + d.message
        case CircuitScores() as d:
            line = circuits_line(e.step, d)
        case Failed():
            return  # the caller reports errors (the CLI prints one line and exits with code 2)
    print(line, flush=True)


def eval_line(step: int, d: Eval) -> str:
    """An evaluation in a line: the val loss (and in bits per byte), or on a task the answers' loss and the
    exact-match accuracy on train and held-out examples."""
    if d.train_acc is not None and d.val_acc is not None:
        return (f"step {step} | train acc {d.train_acc:.1%} | val acc {d.val_acc:.1%} | val loss {d.val_loss:.4f} "
                "(answers)")  # fmt: skip
    return f"step {step} | val loss {d.val_loss:.4f} ({d.val_bpb:.3f} bits/byte) | perplexity {d.perplexity:.2f}"


def health_line(step: int, d: Health) -> str:
    """A health reading in a few words (gpt-train prints it): the spread of the update:data ratio, the largest
    gradient, dead units and attention entropy, then what looks wrong."""
    ratios = [r for r in d.update_ratio if r is not None]
    spread = f"10^{min(ratios):.1f}..10^{max(ratios):.1f}" if ratios else "n/a"
    top = max(range(len(d.grad_norm)), key=d.grad_norm.__getitem__) if d.grad_norm else None
    grad = f"{d.grad_norm[top]:.3g} ({d.groups[top]})" if top is not None else "n/a"
    dead = f"{max(d.dead_units):.0%}" if d.dead_units else "n/a"
    entropy = f"{min(d.attn_entropy):.2f}..{max(d.attn_entropy):.2f}" if d.attn_entropy else "n/a"
    line = (f"step {step} | health: update:data {spread} | largest grad norm {grad} | dead MLP units {dead} | "
            f"attention entropy {entropy} of {d.attn_uniform:.2f} nats")  # fmt: skip
    if d.step_test is not None and len(d.step_test) == len(STEP_SCALES):
        one, double = d.step_test
        line += f" | a step twice the size: {double - one:+.3f} nats held-out"
    return "\n".join([line, *(f"  ! {w}" for w in diagnose(d))])


def circuits_line(step: int, d: CircuitScores) -> str:
    """The best previous-token and induction head and the in-context score, in one line."""
    parts = []
    for name, label in (("previous_token", "previous-token"), ("induction", "induction")):
        layer, head, score = d.best_head(name)  # type: ignore[arg-type]
        parts.append(f"best {label} head L{layer + 1}H{head + 1} {score:.2f}")
    return f"step {step} | circuits: {' | '.join(parts)} | in-context {d.in_context:+.2f} nats ({d.in_context_on})"


def compile_line(d: Compile) -> str:
    """The compile phase in words (the CLI prints it, the Train tab shows it)."""
    if d.fallback:
        return f"torch.compile failed ({d.fallback}); training on without it (eager), as fast as train.compile=off"
    if d.seconds is None:
        return "compiling the model (torch.compile; the first step waits for it, a minute or so)..."
    return f"compiled in {format_duration(d.seconds)}"


class TensorBoard:
    """Train and val scalars and samples into a TensorBoard log (`tensorboard --logdir RUN_DIR`).

    The writer opens at the first event, so processes that never receive one (DDP ranks other than 0) write nothing.
    """

    def __init__(self, log_dir: str | Path) -> None:
        self.log_dir = Path(log_dir)
        self._writer: Any = None

    def __call__(self, e: Event) -> None:
        if self._writer is None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is optional for the library
                return
            self._writer = SummaryWriter(str(self.log_dir))
        w = self._writer
        match e.data:
            case Step() as d:
                for key in ("loss", "lr", "tokens_per_s", "grad_norm"):
                    w.add_scalar(f"train/{key}", getattr(d, key), e.step)
            case Eval() as d:
                w.add_scalar("val/loss", d.val_loss, e.step)
                w.add_scalar("val/bpb", d.val_bpb, e.step)
                w.add_scalar("val/perplexity", d.perplexity, e.step)
                if d.train_acc is not None and d.val_acc is not None:
                    w.add_scalar("train/acc", d.train_acc, e.step)
                    w.add_scalar("val/acc", d.val_acc, e.step)
            case Sample() as d:
                w.add_text("sample", d.text, e.step)
            case Health() as d:
                for group, r, g in zip(d.groups, d.update_ratio, d.grad_norm, strict=True):
                    if r is not None:
                        w.add_scalar(f"health/update_ratio/{group}", r, e.step)
                    w.add_scalar(f"health/grad_norm/{group}", g, e.step)
                for layer, dead, ent in zip(d.layers, d.dead_units, d.attn_entropy, strict=True):
                    w.add_scalar(f"health/dead_units/{layer}", dead, e.step)
                    w.add_scalar(f"health/attn_entropy/{layer}", ent, e.step)
                if d.step_test is not None:  # what a step twice the size would have done (nats)
                    for scale, loss in zip(STEP_SCALES, d.step_test, strict=True):
                        w.add_scalar(f"health/step_test/x{scale:g}", loss - d.step_test[0], e.step)
            case CircuitScores() as d:
                for i, (prev, ind) in enumerate(zip(d.best_per_layer("previous_token"), d.best_per_layer("induction"),
                                                    strict=True)):  # fmt: skip
                    w.add_scalar(f"circuits/previous_token/layer {i + 1}", prev, e.step)
                    w.add_scalar(f"circuits/induction/layer {i + 1}", ind, e.step)
                w.add_scalar("circuits/in_context", d.in_context, e.step)
            case Done() | Failed():
                w.close()
                self._writer = None


class MetricsLog:
    """Each logged step and evaluation as a line of JSON in RUN_DIR/metrics.jsonl, for comparing runs (the app's
    Compare tab reads it while a run trains): what `Curves.record` adds. A resumed run appends; its training time
    continues where it was."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._curves = Curves()

    def __call__(self, e: Event) -> None:
        if isinstance(e.data, Start):
            self._curves = read_metrics(self.path)  # a resumed run's earlier part: its time goes on from there
        line = self._curves.record(e)
        if line is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(line) + "\n")


def read_metrics(path: str | Path, max_bytes: int = 64 << 20) -> Curves:
    """A metrics.jsonl as curves (files from before a series existed read as None for it). A missing file is an
    empty run; unreadable lines are skipped."""
    curves = Curves()
    p = Path(path)
    if not p.is_file():
        return curves
    with open(p, "rb") as f:
        raw = f.read(max_bytes)  # bounded: a run writes a line per log interval, far below this
    for text in raw.decode("utf-8", "replace").splitlines():
        try:
            line = json.loads(text)
        except ValueError:
            continue  # a line cut short by a kill
        if isinstance(line, dict):
            curves.read_line(line)
    return curves


def run_listeners(run_dir: str | Path, tensorboard: bool, echo: bool = False) -> list[Listener]:
    """What a run reports to by default: RUN_DIR/metrics.jsonl, TensorBoard under RUN_DIR/tb (if on), and the
    console (if `echo`)."""
    out: list[Listener] = [MetricsLog(Path(run_dir) / "metrics.jsonl")]
    out += [TensorBoard(Path(run_dir) / "tb")] if tensorboard else []
    return out + ([print_event] if echo else [])
