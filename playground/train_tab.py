"""The Train tab: choose a preset or custom sizes, start / stop / resume, watch live curves, manage checkpoints."""

from __future__ import annotations

import dataclasses
import functools
import html
import logging
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from gpt import checkpoint as ckpt
from gpt.calibrate import busy_note, costs_for
from gpt.config import (
    Activation,
    Config,
    ModelConfig,
    Norm,
    OptimizerName,
    Position,
    Schedule,
    TrainConfig,
    apply_overrides,
    choices,
    load_config,
    resolve_config_path,
)
from gpt.data import load_prepared
from gpt.errors import UserInputError
from gpt.estimate import model_size, train_seconds
from gpt.events import Curves, compile_line, format_duration, read_metrics
from gpt.interop import HF_CLASS, export_refusals, hf_target
from playground import charts, checkpoint_panel, health_panel, jobs, live_chart, task_lab
from playground.common import (
    NEW_MODEL,
    check_model_size,
    current_data,
    own_data,
    pretrained_row,
    start_from_update,
    user_errors,
)
from playground.hosting import Visitor, client_address, enforce_quota, remember, visitor
from playground.inputs import number, text
from playground.jobs import REGISTRY, STATUS, RunRequest, Snapshot
from playground.session import Session
from playground.settings import LIMITS, PRIVATE

log = logging.getLogger("playground")
PRESETS = ["tiny", "small", "grokking", "sort", "custom"]
# Presets that learn a task (configs/grokking.yaml, configs/sort.yaml): each names its task, prepared for the visitor
# at Start unless their data set is that task already; their recipe is their own (no -2019 twin)
TASK_PRESETS = ("grokking", "sort")
# The recipe picks the preset's file: configs/tiny.yaml is the modern recipe, configs/tiny-2019.yaml GPT-2's.
RECIPES = {"modern": "Modern (nanochat, speedrun)", "gpt2": "GPT-2 (2019)", "custom": "Custom switches"}
RECIPE_FILE = {"modern": "", "gpt2": "-2019"}

# (setting, label, kind, range): the fields of the form, in the order of the start_training API; kind picks the
# component. The switches (a label and a sentence of their own in gpt.config) come last, in their own section.
FIELDS: list[tuple[str, str, str, tuple[float, float, float] | list[str] | None]] = [
    ("model.n_layer", "Layers", "slider", (1, 12, 1)),
    ("model.n_head", "Heads", "slider", (1, 12, 1)),
    ("model.n_embd", "Embedding size", "slider", (16, 768, 16)),
    ("model.block_size", "Context length", "slider", (8, LIMITS.max_context, 8)),
    ("model.dropout", "Dropout", "slider", (0.0, 0.5, 0.05)),
    ("train.batch_size", "Batch size", "number", None),  # (a box, not a slider: a task's full batch is grokking's 4096)
    ("train.lr", "Learning rate", "number", None),
    ("train.schedule", "LR schedule", "dropdown", choices(Schedule)),
    ("train.warmup_steps", "Warmup steps", "number", None),
    ("train.max_steps", "Steps", "number", None),
    ("train.eval_interval", "Eval every N steps", "number", None),
    ("train.sample_interval", "Sample text every N steps (0: never)", "number", None),
    ("train.seed", "Seed", "number", None),
]
# The recipe's switches: a label of "" takes the setting's own (gpt.config's metadata).
SWITCH_FIELDS: list[tuple[str, str, str, tuple[float, float, float] | list[str] | None]] = [
    ("model.pos", "", "dropdown", choices(Position)),
    ("model.norm", "", "dropdown", choices(Norm)),
    ("model.activation", "", "dropdown", choices(Activation)),
    ("model.qk_norm", "", "checkbox", None),
    ("model.tie_head", "", "checkbox", None),
    ("model.zero_init", "", "checkbox", None),
    ("model.bias", "", "checkbox", None),
    ("train.optimizer", "", "dropdown", choices(OptimizerName)),
    ("train.muon_lr", "Muon's learning rate (the blocks' matrices)", "number", None),
    ("train.min_lr", "Final learning rate (the schedule's end)", "number", None),
]
FIELDS += SWITCH_FIELDS
# Last, after the switches (the start_training API's order: earlier calls that leave it out keep the preset's); shown
# with the model and training settings, its sentence under it (gpt.config's metadata)
FIELDS += [("train.weight_decay", "", "number", None)]
KEYS = [key for key, *_ in FIELDS]  # the settings of the form, in FIELDS' order
SWITCHES = [key for key, *_ in SWITCH_FIELDS]


def switch_text(dotted: str) -> tuple[str, str | None]:
    """(label, the sentence that says what it changes and why): from the setting's own metadata in gpt.config."""
    section, key = dotted.split(".")
    for f in dataclasses.fields(ModelConfig if section == "model" else TrainConfig):
        if f.name == key and "why" in f.metadata:
            return f.metadata["label"], f.metadata["why"]
    return next(label for k, label, *_ in FIELDS if k == dotted), None


def preset_values(name: str, recipe: str = "modern") -> list[Any]:
    if name not in PRESETS or name == "custom":
        raise UserInputError(f"the preset is one of {', '.join(p for p in PRESETS if p != 'custom')}")
    cfg = load_config(resolve_config_path(name if name in TASK_PRESETS else name + RECIPE_FILE.get(recipe, "")))
    return [_get(cfg, key) for key in KEYS]


def recipe_values(preset: str, recipe: str) -> list[Any]:
    """The switches (and rates) of a recipe, at the preset's size ("custom" size: the tiny preset's)."""
    if recipe not in RECIPE_FILE:
        raise UserInputError(f"the recipe is one of {', '.join(RECIPE_FILE)}")
    values = preset_values(preset if preset not in ("custom", *TASK_PRESETS) else "tiny", recipe)
    recipe_keys = {*SWITCHES, "train.lr", "train.schedule", "train.warmup_steps", "train.batch_size", "train.max_steps",
                   "train.eval_interval", "train.sample_interval"}  # fmt: skip
    if preset in TASK_PRESETS:  # its steps, batch and rates are its task's: only the switches change
        recipe_keys = set(SWITCHES)
    return [v if k in recipe_keys else gr.skip() for k, v in zip(KEYS, values, strict=True)]


def _get(cfg: Config, dotted: str) -> Any:
    section, key = dotted.split(".")
    return getattr(getattr(cfg, section), key)


def build_config(preset: str, values: list[Any]) -> Config:
    """The preset's YAML with the form's values applied (validated: nonsense values get a clear message)."""
    if preset not in PRESETS:  # a name of ours, never a path on the server's disk
        raise UserInputError(f"the preset is one of {', '.join(PRESETS)}")
    cfg = load_config(resolve_config_path(preset if preset != "custom" else "tiny"))
    overrides = []
    if len(values) != len(FIELDS):
        raise UserInputError(f"expected {len(FIELDS)} settings, got {len(values)}")
    for (key, label, kind, _), value in zip(FIELDS, values, strict=True):
        label = label or switch_text(key)[0]
        if value is None or value == "":
            raise UserInputError(f"{label} is empty; enter a value")
        if kind == "checkbox":
            if not isinstance(value, bool):
                raise UserInputError(f"{label} is a yes / no switch, not {str(value)[:20]!r}")
            value = str(value).lower()
        elif kind != "dropdown":  # a number from the wire: finite, and plain (no "1e3; x=y" smuggled into an override)
            value = number(value, label)
            value = int(value) if value == int(value) and abs(value) < 2**63 else value
        else:
            value = text(value, label, 40)
        overrides.append(f"{key}={value}")
    return apply_overrides(cfg, overrides)


def checkpoint_size(meta: dict[str, Any]) -> tuple[int, float]:
    """(parameters, training FLOPs per token) of a checkpoint's model, from its config (its vocabulary is padded)."""
    cfg = Config.from_dict(meta["config"])
    return model_size(cfg, cfg.model.vocab_size)


def check_limits(cfg: Config, params: int) -> None:
    check_model_size(cfg.model, params)
    if cfg.train.max_steps > LIMITS.max_steps:
        raise UserInputError(f"{cfg.train.max_steps:,} steps asked; the limit here is {LIMITS.max_steps:,}")


def describe(preset: str, state: Session, *values: Any) -> str:
    try:
        cfg = build_config(preset, list(values))
        data = load_prepared(state.data_dir) if state.data_dir else None
        task_data = data
        if data is not None and cfg.task.name and not task_lab.is_task_data(data, cfg.task.name):
            task_data = None  # (a task preset on other data trains on its own task, prepared at Start)
        cfg, task_vocab = task_lab.fitted(cfg, task_data)
        vocab = task_vocab or (data.meta["vocab_size"] if data is not None else 80)
        params, flops = model_size(cfg, vocab)
    except UserInputError as e:
        return f"⚠️ {e}"
    except Exception:  # noqa: BLE001 - the form's live description must never break; the log has the details
        log.exception("describe")
        return "⚠️ these settings cannot be estimated; check the values"
    here = costs_for(cfg.train)  # this machine's costs (cached, else measured in a child process)
    per_100 = train_seconds(cfg, flops, 100, extras=False, costs=here, corrected=True)  # the steps alone
    total = train_seconds(cfg, flops, costs=here, corrected=True)  # and the evals, samples and saves
    busy = busy_note(total)
    return (
        f"**{params / 1e6:.2f}M parameters** (without position embeddings) · about **{per_100:.1f} s per 100 steps** "
        f"on this machine · {cfg.train.max_steps:,} steps ≈ {format_duration(total)} with evaluations and samples"
        + (f"  \n*{busy[0].upper()}{busy[1:]}.*" if busy else "")
    )


def export_sentence(mc: ModelConfig, whose: str) -> str:
    """Whether a model of `mc` can leave the app in Hugging Face's format, and if not, which switches keep it in:
    gpt.interop's own rule (the one the export applies), said before any training."""
    if reasons := export_refusals(mc):
        return f"⚠️ **{whose} cannot be exported to Hugging Face's format:** {'; '.join(reasons)}."
    said = f"✅ {whose} exports to Hugging Face's format as `{HF_CLASS[hf_target(mc)]}` (Checkpoints: Download in " \
           "Hugging Face format)."  # fmt: skip
    if mc.pos == "learned":  # transformers raises an IndexError past the learned positions; this app slides instead
        said += f" Its context stops at {mc.block_size} tokens there (learned positions)."
    return said


@user_errors
def export_note(init_from: str, preset: str, request: gr.Request, profile: gr.OAuthProfile | None, *values: Any) -> str:
    """The sentence under the recipe switches (`export_sentence`): of the form's model, or of the checkpoint it
    fine-tunes (whose architecture the run keeps). Settings that do not hold together say nothing here (the size
    line above says what is wrong)."""
    try:
        if init_from:
            meta = ckpt.read_meta(ckpt.resolve(visitor(request, profile).resolve(init_from)))
            return export_sentence(Config.from_dict(meta["config"]).model, "The checkpoint you fine-tune")
        return export_sentence(build_config(preset, list(values)).model, "A model of these settings")
    except (UserInputError, KeyError):
        return ""


@user_errors
def start_training(
    state: Session,
    init_from: str,
    preset: str,
    request: gr.Request,
    profile: gr.OAuthProfile | None,
    *values: Any,
) -> tuple[Session, str]:
    """Start a new run: a new model from the form, or (fine-tuning) a checkpoint's weights and architecture.
    When the slots are taken, the run waits in line."""
    me = visitor(request, profile)
    cfg = build_config(preset, list(values))
    start_from = ckpt.resolve(me.resolve(init_from)) if init_from else None
    prepared = ""
    if start_from is not None:
        meta = ckpt.read_meta(start_from)
        # No data chosen yet: the built-in corpus, tokenized the way the model expects (GPT-2 BPE for GPT-2).
        data = current_data(state, tokenizer=meta["tokenizer"].get("type", "char"))
        params, flops = checkpoint_size(meta)
    else:
        data = current_data(state)
        if cfg.task.name and not task_lab.is_task_data(data, cfg.task.name):  # a task preset on other data: its task
            data = task_lab.prepare_for(me, cfg.task)
            state = dataclasses.replace(state, data_dir=str(data.dir), data_label=task_lab.label_of(cfg.task))
            prepared = f" · its task is your data set now (the Data tab shows it): {data.meta.get('description')}"
        cfg = task_lab.fitted(cfg, data)[0]  # (what the trainer will run: the estimate's size)
        params, flops = model_size(cfg, data.tokenizer.vocab_size)
    check_limits(cfg, params)
    run_dir = me.home / f"run-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:4]}"
    estimate = train_seconds(cfg, flops, costs=costs_for(cfg.train), corrected=True)
    asked = RunRequest(cfg, data, run_dir, init_from=start_from, estimate_s=estimate)
    job = _submit(me, request, profile, asked)
    state = dataclasses.replace(state, job_id=job.id, run_dir=str(run_dir))
    snap = job.snapshot()
    if snap.status in jobs.ACTIVE and not snap.stopping:
        what = f"Fine-tuning `{me.name(start_from)}`" if start_from else "Training started"
        return state, f"{what} → `{me.name(run_dir)}`{prepared}"
    return state, headline(snap, me.name(run_dir)) + prepared


def _submit(me: Visitor, request: gr.Request, profile: gr.OAuthProfile | None, asked: RunRequest) -> jobs.Job:
    """Start or queue a run of this visitor's, after making room on disk for it (within their share)."""
    sources = [p for p in (asked.data.dir, asked.init_from, asked.resume) if p is not None]
    enforce_quota(me, protected=[asked.run_dir, *sources])
    # One run per visitor (their account, browser or session); the per-address cap counts anonymous visitors only.
    per_address = LIMITS.max_queue_per_address if profile is None else 0
    asked = dataclasses.replace(asked, owner=me.key, session=request.session_hash if request else None,
                                address=client_address(request))  # fmt: skip
    job = REGISTRY.start(asked, per_address=per_address)
    remember(me, run_dir=str(asked.run_dir))
    return job


def my_job(state: Session, me: Visitor) -> jobs.Job | None:
    """This page's run, else the visitor's live one (started from another tab, or before a reload)."""
    job = REGISTRY.get(state.job_id)
    if job is not None and job.owner == me.key:
        return job
    return REGISTRY.latest(me.key)


@user_errors
def stop_training(state: Session, request: gr.Request, profile: gr.OAuthProfile | None) -> str:
    job = my_job(state, visitor(request, profile))
    if job is not None and REGISTRY.leave(job.id):
        return "You left the queue."
    if job is None or not job.active:
        raise UserInputError("no training run of yours is in progress")
    job.stop()
    return f"Stopping after the current step (step {job.step:,})…"


@user_errors
def leave_queue(state: Session, request: gr.Request, profile: gr.OAuthProfile | None) -> str:
    job = my_job(state, visitor(request, profile))
    if job is None or not REGISTRY.leave(job.id):
        raise UserInputError("no run of yours is waiting in line")
    return "You left the queue."


@user_errors
def resume_training(
    state: Session, max_steps: float, request: gr.Request, profile: gr.OAuthProfile | None
) -> tuple[Session, str]:
    max_steps = number(max_steps, "Steps", 1, None, integer=True)
    me = visitor(request, profile)
    old = my_job(state, me)
    if not state.run_dir:
        raise UserInputError("nothing to resume yet: start a training run first")
    run_dir = me.resolve(me.name(state.run_dir))  # still this visitor's (the state is the server's own)
    meta = ckpt.read_meta(run_dir)
    cfg = Config.from_dict(meta["config"])
    cfg = apply_overrides(cfg, [f"train.max_steps={max_steps}"])
    params, flops = checkpoint_size(meta)
    check_limits(cfg, params)
    data = own_data(meta.get("data_dir"), me) or current_data(state)
    history = old.snapshot().curves if old is not None and old.run_dir == run_dir else None
    left = max(0, cfg.train.max_steps - int(meta.get("step", 0)))
    estimate = train_seconds(cfg, flops, left, costs=costs_for(cfg.train), corrected=True)
    asked = RunRequest(cfg, data, run_dir, resume=run_dir, history=history, estimate_s=estimate)
    job = _submit(me, request, profile, asked)
    return dataclasses.replace(state, job_id=job.id), headline(
        job.snapshot(), me.name(run_dir), resumed_from=int(meta["step"])
    )


def headline(snap: Snapshot, run_name: str, resumed_from: int | None = None) -> str:
    """What the run is doing, in one line: the status beside the buttons and the progress box say the same."""
    name = f" → `{run_name}`" if run_name else ""
    if snap.status == jobs.QUEUED:
        return f"In line{' to resume' if resumed_from is not None else ''}: the run starts by itself when the runs " \
               f"ahead of it end{name}"  # fmt: skip
    if snap.status in jobs.ACTIVE:
        if snap.stopping:
            return f"Stopping after the current step (step {snap.step:,})…"
        if snap.status == "starting":
            return f"{STATUS['starting'].label}{name}"
        c = snap.compile
        if c is not None and (c.seconds is None or c.fallback):  # compiling, or (kept in view) eager instead
            line = compile_line(c)
            return f"{line[0].upper()}{line[1:]}{name}"
        if snap.last is None and resumed_from is None:  # (the first numbers come at the first logged step)
            return f"First steps: scoring the untrained model, then training{name}"
        resumed = f"Resumed from step {resumed_from:,}" if resumed_from is not None else STATUS["running"].label
        return f"{resumed}{name}"
    return snap.message or STATUS[snap.status].label


def progress_html(snap: Snapshot, run_name: str) -> str:
    """The progress bar and its line; while the run waits in line, its position and when it should start."""
    if snap.status == jobs.QUEUED and snap.queue is not None:
        position, length, wait = snap.queue
        when = f"in about {format_duration(wait)}" if wait >= 1 else "any moment now"
        return (
            f'<div class="progress-box"><b>Waiting in line: position {position} of {length}</b> · '
            f"the runs ahead should end {when}; yours starts then by itself. "
            "Keep this page open (a reload keeps your place; closing it gives the place up) or press Leave.</div>"
        )
    if snap.status in ("left", jobs.QUEUED) or (snap.status == "error" and snap.last is None):
        # it never trained: no bar, no steps, no checkpoint to point to
        return f'<div class="progress-box"><b>{html.escape(headline(snap, run_name))}</b></div>'
    pct = 100 * snap.step / max(1, snap.max_steps)
    bits = [f"step {snap.step:,} / {snap.max_steps:,}"]
    if (last := snap.last) is not None:
        bits.append(f"elapsed {format_duration(last.elapsed)}")
        if snap.status == "running" and not snap.stopping:
            bits.append(f"ETA {format_duration(last.eta)}")
        bits += [f"{last.tokens_per_s:,.0f} tokens/s", f"loss {last.loss:.3f}"]
    if (val := val_line(snap.curves)) is not None:
        bits.append(val)
    status = headline(snap, "")
    colour = STATUS[snap.status].colour
    return (
        f'<div class="progress-box"><div style="background:#eee;border-radius:6px;height:14px;overflow:hidden">'
        f'<div style="width:{pct:.1f}%;background:{colour};height:14px"></div></div>'
        f'<div style="margin-top:6px"><b>{html.escape(status)}</b> · {" · ".join(bits)}</div>'
        f'<div style="color:#666;font-size:0.9em">{tensorboard_hint(snap.run_dir, run_name, snap.step > 0)}</div></div>'
    )


def val_line(curves: Curves) -> str | None:
    """The latest val loss, with its bits per byte (the figure that compares across tokenizers)."""
    if not curves.val_loss:
        return None
    bpb = curves.val_bpb[-1] if curves.val_bpb else None
    return f"val {curves.val_loss[-1]:.3f}" + (f" ({bpb:.2f} bits/byte)" if bpb is not None else "")


def tensorboard_hint(run_dir: str, run_name: str, has_checkpoint: bool = True) -> str:
    if PRIVATE:  # visitors of a shared server see names, not the server's paths
        keep = ": download its checkpoint below to keep it" if has_checkpoint else ""
        return f"Run <code>{html.escape(run_name)}</code>{keep}."
    return f"TensorBoard logs: <code>{run_dir}/tb</code> — open with <code>tensorboard --logdir {run_dir}</code>"


NO_RUN = '<div class="progress-box">No training run yet.</div>'
GONE = '<div class="progress-box">Your last run is no longer on this server (deleted). Start a new one.</div>'
STARTING = '<div class="progress-box"><b>Starting…</b> (building the model)</div>'

# Chart refresh period while this session's run trains: the page appends the new points only (playground.live_chart),
# so a tick costs little. Between runs the timer is off.
REFRESH_S = 2.0


# What a tick updates, by name (poll's keys; _wire_run maps each to its component). The order is the /poll API's
# outputs' (an API client reads the progress first, the status fifth): the later views' come after the first ones'.
POLLED = ("progress", "loss", "rate", "sample", "status", "leave", "seen", "timer", "message", "health", "circuits",
          "health_note", "circuits_note", "start", "resume", "accuracy", "accuracy_view")  # fmt: skip


def buttons(live: bool) -> dict[str, Any]:
    """Start and Resume as the visitor's run allows: off while it trains or waits in line, on otherwise. Said at
    every change of the run, in every tab of the visitor, whatever a press in one of them left behind."""
    return {"start": gr.update(interactive=not live), "resume": gr.update(interactive=not live)}


def poll(
    state: Session,
    seen: dict[str, Any],
    held: dict[str, Any] | None = None,
    request: gr.Request | None = None,
    profile: gr.OAuthProfile | None = None,
) -> dict[str, Any]:
    """Timer tick, keyed by POLLED (what is left out stays as it is): refresh only when the job has new events since
    this session's last refresh (`seen`), the charts with what each lacks of what the page says it holds (`held`,
    per chart), the sample and the Leave button only when they change (every value the page gets costs it a
    re-render); once the run has ended and its last state is shown, switch the timer off (Start and Resume switch
    it on again). While the run waits in line, only its position and wait are refreshed; each tick keeps its place."""
    job = REGISTRY.get(state.job_id)
    if job is None and state.run_dir:
        return {**buttons(False), **logged_run(state.run_dir, seen or {}, held or {}, visitor(request, profile))}
    if job is None or (request is not None and job.owner != visitor(request, profile).key):
        return {"timer": gr.Timer(REFRESH_S, active=False), **buttons(False)}
    REGISTRY.touch(job.id)
    snap = job.snapshot()
    run_name = Visitor(None).name(snap.run_dir) if not PRIVATE else Path(snap.run_dir).name
    if snap.status == jobs.QUEUED:
        snap.queue = REGISTRY.queue_position(job.id)
        return {"progress": progress_html(snap, run_name), "status": snap.status, "leave": gr.update(visible=True),
                "seen": {}, "message": headline(snap, run_name), **buttons(True)}  # fmt: skip
    timer = {} if snap.status in jobs.ACTIVE else {"timer": gr.Timer(REFRESH_S, active=False)}
    seen = seen or {}
    version = f"{snap.id}:{snap.version}:{snap.stopping}"  # per run: a new run's first events redraw too
    if version == seen.get("version"):
        return {"seen": seen, **timer}  # never empty: Gradio takes an empty dict for a single value
    sample = f"[step {snap.sample[0]}]\n{snap.sample[1]}" if snap.sample else ""
    out = {
        "progress": progress_html(snap, run_name),
        **views(snap.id, snap.curves, version, sample, seen, held or {}),
        "status": snap.status,
        "message": headline(snap, run_name),
        **buttons(snap.status in jobs.ACTIVE),
        **timer,
    }
    if not seen:  # a new session, or the run just left the line (the Leave button showed)
        out["leave"] = gr.update(visible=False)
    return out


def views(run: str, curves: Curves, version: str, sample: str, seen: dict[str, Any], held: dict[str, Any]) -> Any:
    """What the charts lack of what the page says it holds (`held`, per chart), and the sample and the views' notes
    when they changed since the last refresh (`seen`, which this one's `version` replaces)."""
    now = {"version": version, "sample": sample, "health_note": health_panel.health_note(curves),
           "circuits_note": health_panel.circuits_note(curves),
           "task": bool(charts.accuracy_traces(curves))}  # fmt: skip
    out = {name: live_chart.update(name, run, curves, held.get(name)) or gr.skip() for name in live_chart.CHARTS}
    changed = {key: text for key, text in now.items() if key not in ("version", "task") and text != seen.get(key)}
    if now["task"] != seen.get("task"):  # a task run's accuracy chart shows above its loss; a text run has none
        changed["accuracy_view"] = gr.Column(visible=True if now["task"] else "hidden")
    return {**out, **changed, "seen": now}


def logged_run(run_dir: str, seen: dict[str, Any], held: dict[str, Any], me: Visitor) -> dict[str, Any]:
    """The visitor's last run when this server holds no job of it (the app restarted since it trained): its curves
    as its metrics.jsonl has them, drawn once."""
    off = {"timer": gr.Timer(REFRESH_S, active=False)}
    # deleted (Forget me in another tab, the storage quota): the page must not go on showing it as it was
    gone = {"progress": GONE, "message": "", "status": "", **off}
    try:
        path = me.resolve(me.name(run_dir))  # still this visitor's
    except UserInputError:
        return gone
    log_file = path / "metrics.jsonl"
    if not log_file.is_file():
        return gone if not path.exists() else off
    version = f"log:{path}:{log_file.stat().st_mtime_ns}"
    if version == seen.get("version"):
        return {"seen": seen, **off}
    curves = read_metrics(log_file)
    bits = [f"step {curves.steps[-1]:,}" if curves.steps else "no steps logged", val_line(curves)]
    line = f"<b>Your last run</b> <code>{html.escape(me.name(path))}</code>, as its log has it: "
    progress = f'<div class="progress-box">{line}{" · ".join(b for b in bits if b)}</div>'
    return {"progress": progress, **views(f"log:{path}", curves, version, "", seen, held), **off}


def settings_form(keys: list[str]) -> dict[str, Any]:
    """One control per FIELDS row among `keys`, showing the tiny preset; a switch with its sentence under it."""
    inputs: dict[str, Any] = {}
    for (key, label, kind, spec), value in zip(FIELDS, preset_values("tiny"), strict=True):
        if key not in keys:
            continue
        label, why = switch_text(key)
        if kind == "slider" and isinstance(spec, tuple):
            lo, hi, step = spec
            inputs[key] = gr.Slider(lo, hi, value=value, step=step, label=label, info=why)
        elif kind == "dropdown" and isinstance(spec, list):
            inputs[key] = gr.Dropdown(spec, value=value, label=label, info=why)
        elif kind == "checkbox":
            inputs[key] = gr.Checkbox(value=value, label=label, info=why)
        else:
            inputs[key] = gr.Number(value=value, label=label, info=why)
    return inputs


@dataclass
class Form:
    """The Train tab's left column: what to train, and the buttons that run it."""

    init_from: gr.Dropdown  # "Start from": a new model, or a checkpoint to fine-tune
    preset: gr.Dropdown
    recipe: gr.Radio
    info: gr.Markdown  # the settings' size and time, estimated again at every change
    start: gr.Button
    stop: gr.Button
    resume: gr.Button
    status: gr.Markdown  # what the run is doing, in one line (headline)
    inputs: list[Any]  # one control per setting, in FIELDS' order (the start_training API's)
    export: gr.Markdown  # under the switches: whether the model will export to Hugging Face's format (export_note)

    @property
    def max_steps(self) -> Any:
        return self.inputs[KEYS.index("train.max_steps")]


@dataclass
class RunView:
    """The Train tab's right column: the run's progress, its live charts and their notes, its latest sample."""

    leave: gr.Button  # shown while the run waits in line
    progress: gr.HTML
    charts: dict[str, gr.HTML]  # by name, in live_chart.CHARTS' order: each tick sends what the page holds back
    notes: dict[str, Any]  # "health_note", "circuits_note": what the readings say; "accuracy_view": a task run's
    sample: gr.Textbox
    job_status: gr.Textbox  # hidden: the run's status, which the checkpoint panel and "Start from" follow


def form_column() -> Form:
    init_from = gr.Dropdown(
        [NEW_MODEL], value="", label="Start from (a checkpoint: fine-tune it)", allow_custom_value=True
    )
    pretrained_row(init_from, with_new=True)
    preset = gr.Dropdown(PRESETS, value="tiny", label="Preset")
    recipe = gr.Radio(
        [(label, key) for key, label in RECIPES.items()], value="modern", label="Recipe",
        info="How the model is built and trained: the switches below; GPT-2's or today's",
    )  # fmt: skip
    with gr.Row():  # (above the estimate, which grows a line on a busy machine: Start stays in view at 1366x768)
        start = gr.Button("Start", variant="primary")
        stop = gr.Button("Stop", variant="stop")
        resume = gr.Button("Resume")
    status = gr.Markdown()
    info = gr.Markdown()
    with gr.Accordion("Model and training settings", open=True):
        controls = settings_form([k for k in KEYS if k not in SWITCHES])
    with gr.Accordion("Recipe switches: what each one changes", open=True):
        controls |= settings_form(SWITCHES)
        export = gr.Markdown()
    inputs = [controls[k] for k in KEYS]
    return Form(init_from, preset, recipe, info, start, stop, resume, status, inputs, export)


def run_column() -> RunView:
    # at the top, beside the line's position and wait: in reach at 1366x768 while the visitor waits
    leave = gr.Button("Leave the queue", visible=False, size="sm")
    progress = gr.HTML(NO_RUN)
    charts, notes = chart_views()
    sample = gr.Textbox(label="Sample text from the model during training", lines=8, interactive=False)
    return RunView(leave, progress, charts, notes, sample, job_status=gr.Textbox(visible=False))


def _wire_form(ready: Any, tab: gr.Tab, state: gr.State, form: Form, job_status: gr.Textbox) -> None:
    """What the form does: a preset or a recipe fills it (a switch flipped by hand makes the recipe "custom"),
    every change re-estimates size and time, "Start from" stays fresh."""
    preset, recipe, inputs = form.preset, form.recipe, form.inputs
    preset.change(
        lambda p, r: preset_values(p, r) if p != "custom" else [gr.skip()] * len(FIELDS),  # preset_values checks p
        [preset, recipe],
        inputs,
        api_visibility="private",
    )
    # a task preset's switches are its own recipe (neither GPT-2's nor today's as they stand)
    preset.change(lambda p: "custom" if p in TASK_PRESETS else gr.skip(), preset, recipe, api_visibility="private")
    recipe.input(
        lambda p, r: recipe_values(p, r) if r != "custom" else [gr.skip()] * len(FIELDS),
        [preset, recipe],
        inputs,
        api_visibility="private",
    )
    switches = [inputs[KEYS.index(key)] for key in SWITCHES]
    gr.on([c.input for c in switches], lambda: "custom", None, recipe, api_visibility="private")
    gr.on([c.change for c in [preset, *inputs]], describe, [preset, state, *inputs], form.info,
          api_visibility="private")  # fmt: skip
    ready.then(describe, [preset, state, *inputs], form.info, api_visibility="private")
    gr.on([c.change for c in [form.init_from, preset, *inputs]], export_note, [form.init_from, preset, *inputs],
          form.export, api_name="export_note", queue=False, show_progress="hidden")  # fmt: skip
    ready.then(export_note, [form.init_from, preset, *inputs], form.export, api_visibility="private")
    for trigger in (tab.select, ready.then, job_status.change):
        trigger(start_from_update, form.init_from, form.init_from, api_visibility="private")
    # Muon's own rate says nothing to a run that trains with AdamW alone
    optimizer, muon_lr = inputs[KEYS.index("train.optimizer")], inputs[KEYS.index("train.muon_lr")]
    for trigger in (optimizer.change, ready.then):
        trigger(lambda o: gr.update(visible=o == "muon"), optimizer, muon_lr, queue=False, api_visibility="private")


def busy() -> tuple[Any, Any, str, str]:
    """What a press of Start or Resume shows at once."""
    return gr.update(interactive=False), gr.update(interactive=False), "Starting…", STARTING


def restore_watch(state: Session) -> Any:
    """After a reload: watch the visitor's run again if it trains or waits."""
    job = REGISTRY.get(state.job_id)
    return gr.Timer(REFRESH_S, active=job is not None and (job.active or job.status == jobs.QUEUED))


# The chart area's views, one at a time: the loss, the training health (gpt.health), the circuits (gpt.circuits)
VIEWS = ("Loss", "Training health", "Circuits")
ACCURACY_NOTE = (
    "<small>Exact match: the whole answer right by greedy decoding, on a fixed sample of the examples trained on and "
    "of the held-out ones. Memorising takes train accuracy to 100% first; held out follows only once the model finds "
    "the algorithm, which weight decay pushes it to (grokking: on the log-steps scale, a late second rise).</small>"
)


def chart_views() -> tuple[dict[str, gr.HTML], dict[str, Any]]:
    """The chart area: a choice of view above the views. Every view's charts are in the page from the start (a
    hidden one too, unlike a Gradio tab's, which is only built when first opened), so each gets each point once.
    Returns the live charts and the notes (and the accuracy chart's box, shown for a task run), by name."""
    choice = gr.Radio(list(VIEWS), value=VIEWS[0], show_label=False, container=False, elem_id="chart-view")
    with gr.Column(elem_classes="chart-views"):  # (no gap: a hidden view takes no room)
        with gr.Column() as loss_view:
            with gr.Column(visible="hidden") as accuracy_view:  # (shown while the run learns a task: `views`)
                accuracy = live_chart.live_chart("accuracy", "Accuracy appears here at the first evaluation.")
                gr.Markdown(ACCURACY_NOTE, elem_classes="accuracy-note")
            live = {
                "accuracy": accuracy,
                "loss": live_chart.live_chart("loss", "The loss curves appear here once training starts."),
                "rate": live_chart.live_chart("rate", "Learning rate and throughput appear here."),
            }
        with gr.Column(visible="hidden") as health_view:
            health = health_panel.health_view()
        with gr.Column(visible="hidden") as circuits_view:
            circuits = health_panel.circuits_view()
    choice.change(lambda v: [gr.Column(visible=True if v == name else "hidden") for name in VIEWS], choice,
                  [loss_view, health_view, circuits_view], queue=False, api_visibility="private")  # fmt: skip
    parts = {**live, **health, **circuits}
    notes = {k: v for k, v in parts.items() if k.endswith("_note")}
    return {name: parts[name] for name in live_chart.CHARTS}, {**notes, "accuracy_view": accuracy_view}


def _wire_run(ready: Any, tab: gr.Tab, state: gr.State, form: Form, view: RunView) -> None:
    """The run: start, stop, leave the queue, resume; the timer watches it while it trains or waits."""
    seen = gr.State({})
    timer = gr.Timer(REFRESH_S, active=False)
    # What poll's keys name; POLLED orders them (the /poll API's outputs). Keyed, so nothing lines up by position.
    polled = {"progress": view.progress, **view.charts, **view.notes, "sample": view.sample, "status": view.job_status,
              "leave": view.leave, "seen": seen, "timer": timer, "message": form.status, "start": form.start,
              "resume": form.resume}  # fmt: skip
    outputs = [polled[name] for name in POLLED]
    charts = list(view.charts.values())  # as inputs: what the page holds

    def tick(request: gr.Request, profile: gr.OAuthProfile | None, st: Session, sn: dict[str, Any],
             *held: Any) -> dict[Any, Any]:  # fmt: skip
        by_chart = dict(zip(view.charts, held, strict=True))
        return {polled[k]: v for k, v in poll(st, sn, by_chart, request, profile).items()}

    def tick_fresh(request: gr.Request, profile: gr.OAuthProfile | None, st: Session, *held: Any) -> Any:
        """After a press of Start, Resume, Stop or Leave: everything said again, whether or not the run moved (and
        with no run, that there is none: a Start that failed took back its "Starting…")."""
        return {polled["progress"]: NO_RUN, polled["message"]: "", **tick(request, profile, st, {}, *held)}

    poll_now = dict(fn=tick_fresh, inputs=[state, *charts], outputs=outputs, show_progress="hidden",
                    api_visibility="private")  # fmt: skip
    _wire_buttons(state, form, view, timer, poll_now)
    timer.tick(
        tick,
        [state, seen, *charts],
        outputs,
        api_name="poll",
        queue=False,
        show_progress="hidden",  # no loading animation on the charts at every tick: the browser would redraw them
    )
    # a reloaded page (or a second tab) finds the visitor's run: the timer goes on if it trains or waits
    ready.then(restore_watch, state, timer, api_visibility="private").then(**poll_now)
    # opened (its charts are built then, after a reload that showed another tab): they ask for what they lack
    tab.select(None, js="() => new Promise((done) => setTimeout(done, 300))").then(**poll_now)


def _wire_buttons(state: gr.State, form: Form, view: RunView, timer: gr.Timer, poll_now: dict[str, Any]) -> None:
    """Start, Resume, Stop and Leave, each followed by a fresh poll (`poll_now`); a run started turns the timer on."""
    # the period again: a Timer sent as an update without one goes back to Gradio's default, 1 s
    watch = functools.partial(gr.Timer, REFRESH_S, active=True)
    for button, handler, handler_inputs, api_name in (
        (form.start, start_training, [state, form.init_from, form.preset, *form.inputs], "start_training"),
        (form.resume, resume_training, [state, form.max_steps], "resume_training"),
    ):
        # Every press answers at once: the buttons off and "Starting…" (the child takes seconds to build its model),
        # then the run's own status; the buttons come back whatever happened.
        pressed = button.click(busy, None, [form.start, form.resume, form.status, view.progress], queue=False,
                               api_visibility="private", trigger_mode="once")  # fmt: skip
        run = pressed.then(handler, handler_inputs, [state, form.status], api_name=api_name)
        run.then(**poll_now)  # (which says what the buttons are now, from the run's own state)
        run.success(watch, None, timer, api_visibility="private")
    form.stop.click(stop_training, state, form.status, api_name="stop_training").then(**poll_now)
    view.leave.click(leave_queue, state, form.status, api_name="leave_queue").then(**poll_now)


def build(demo: gr.Blocks, state: gr.State, tab: gr.Tab, ready: Any) -> gr.Dataframe:
    """The tab's layout and wiring. Returns its checkpoint table (a click on a run there opens it in Compare)."""
    with gr.Row():
        with gr.Column(scale=1, min_width=320):
            form = form_column()
        with gr.Column(scale=2):
            view = run_column()
    table, _ = checkpoint_panel.build(ready, state, view.job_status)
    _wire_form(ready, tab, state, form, view.job_status)
    _wire_run(ready, tab, state, form, view)
    return table
