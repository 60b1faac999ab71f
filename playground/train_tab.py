"""The Train tab: choose a preset or custom sizes, start / stop / resume, watch live curves, manage checkpoints."""

from __future__ import annotations

import functools
import html
import logging
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import gradio as gr
import torch

from gpt import checkpoint as ckpt
from gpt.archive import zip_dir
from gpt.config import Config, apply_overrides, load_config
from gpt.data import load_prepared
from gpt.device import pick_device, pick_dtype
from gpt.errors import UserInputError
from gpt.model import GPT
from gpt.trainer import format_duration, padded_vocab
from playground import charts, jobs
from playground.common import (
    NEW_MODEL,
    check_model_size,
    checkpoint_dropdown_update,
    pretrained_row,
    start_from_update,
    user_errors,
)
from playground.data_tab import current_data
from playground.hosting import Visitor, enforce_quota, visitor
from playground.inputs import number, text
from playground.jobs import REGISTRY, Series
from playground.settings import HEAVY, LIMITS, PRIVATE

log = logging.getLogger("playground")
CONFIGS = Path(__file__).resolve().parent.parent / "configs"
PRESETS = ["tiny", "small", "custom"]

# (setting, label, kind, range): the fields of the form, in order; kind picks the component.
FIELDS: list[tuple[str, str, str, tuple[float, float, float] | list[str] | None]] = [
    ("model.n_layer", "Layers", "slider", (1, 12, 1)),
    ("model.n_head", "Heads", "slider", (1, 12, 1)),
    ("model.n_embd", "Embedding size", "slider", (16, 768, 16)),
    ("model.block_size", "Context length", "slider", (8, LIMITS.max_context, 8)),
    ("model.dropout", "Dropout", "slider", (0.0, 0.5, 0.05)),
    ("train.batch_size", "Batch size", "slider", (1, 64, 1)),
    ("train.lr", "Learning rate", "number", None),
    ("train.schedule", "LR schedule", "dropdown", ["cosine", "linear", "constant"]),
    ("train.warmup_steps", "Warmup steps", "number", None),
    ("train.max_steps", "Steps", "number", None),
    ("train.eval_interval", "Eval every N steps", "number", None),
    ("train.sample_interval", "Sample text every N steps (0: never)", "number", None),
    ("train.seed", "Seed", "number", None),
]


def preset_values(name: str) -> list[Any]:
    cfg = load_config(CONFIGS / f"{name}.yaml")
    return [_get(cfg, key) for key, *_ in FIELDS]


def _get(cfg: Config, dotted: str) -> Any:
    section, key = dotted.split(".")
    return getattr(getattr(cfg, section), key)


def build_config(preset: str, values: list[Any]) -> Config:
    """The preset's YAML with the form's values applied (validated: nonsense values get a clear message)."""
    cfg = load_config(CONFIGS / f"{preset if preset != 'custom' else 'tiny'}.yaml")
    overrides = []
    if len(values) != len(FIELDS):
        raise UserInputError(f"expected {len(FIELDS)} settings, got {len(values)}")
    for (key, label, kind, _), value in zip(FIELDS, values, strict=True):
        if value is None or value == "":
            raise UserInputError(f"{label} is empty; enter a value")
        if kind != "dropdown":  # a number from the wire: finite, and plain (no "1e3; x=y" smuggled into an override)
            value = number(value, label)
            value = int(value) if value == int(value) and abs(value) < 2**63 else value
        else:
            value = text(value, label, 40)
        overrides.append(f"{key}={value}")
    return apply_overrides(cfg, overrides)


def model_size(cfg: Config, vocab_size: int) -> tuple[int, float]:
    """(parameters, training FLOPs per token) of the model the form describes, for this vocabulary."""
    model_cfg = Config.from_dict({"model": cfg.to_dict()["model"]}).model
    model_cfg.vocab_size = padded_vocab(vocab_size)
    with torch.device("meta"):  # shapes only: no memory, even for absurd sizes
        model = GPT(model_cfg)
    return model.num_params(), model.flops_per_token()


def check_limits(cfg: Config, params: int) -> None:
    check_model_size(cfg.model, params)
    if cfg.train.max_steps > LIMITS.max_steps:
        raise UserInputError(f"{cfg.train.max_steps:,} steps asked; the limit here is {LIMITS.max_steps:,}")


@functools.lru_cache(maxsize=1)
def machine_flops() -> float:
    """A rough training speed for this machine: a 1024² matmul's FLOP/s in the dtype the trainer picks, times the
    share of it our training reaches (`python -m bench.compare`: ~70% of the fp32 ceiling in fp32, ~35% of the bf16
    ceiling under bf16 autocast, whose non-matmul work does not get faster)."""
    device = pick_device()
    dtype = pick_dtype("auto", device)
    if dtype not in (torch.float32, torch.bfloat16):  # CUDA fp16 etc.: a rough guess is all the estimate needs
        dtype = torch.float32
    a = torch.randn(1024, 1024, dtype=dtype, device=device)
    best = float("inf")
    for _ in range(8):  # best of several: a busy moment must not make every estimate pessimistic
        t = time.perf_counter()
        a @ a
        if a.device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    share = 0.7 if dtype == torch.float32 else 0.35
    return share * 2 * 1024**3 / best


def estimate_s(cfg: Config, flops_per_token: float, steps: int | None = None) -> float:
    """Seconds to train `steps` (default: all of them) on this machine."""
    steps = cfg.train.max_steps if steps is None else steps
    return steps * flops_per_token * cfg.train.batch_size * cfg.model.block_size / machine_flops()


def describe(preset: str, state: dict[str, Any], *values: Any) -> str:
    try:
        cfg = build_config(preset, list(values))
        vocab = load_prepared(state["data_dir"]).meta["vocab_size"] if state.get("data_dir") else 80
        params, flops = model_size(cfg, vocab)
    except UserInputError as e:
        return f"⚠️ {e}"
    except Exception:  # noqa: BLE001 - the form's live description must never break; the log has the details
        log.exception("describe")
        return "⚠️ these settings cannot be estimated; check the values"
    per_100 = estimate_s(cfg, flops, 100)
    total = estimate_s(cfg, flops)
    return (
        f"**{params / 1e6:.2f}M parameters** (without position embeddings) · about **{per_100:.1f} s per 100 steps** "
        f"on this machine · {cfg.train.max_steps:,} steps ≈ {format_duration(total)}"
    )


@user_errors
def start_training(
    state: dict[str, Any],
    init_from: str,
    preset: str,
    request: gr.Request,
    profile: gr.OAuthProfile | None,
    *values: Any,
) -> tuple[dict[str, Any], str]:
    """Start a new run: a new model from the form, or (fine-tuning) a checkpoint's weights and architecture.
    When the slots are taken, the run waits in line."""
    me = visitor(request, profile)
    cfg = build_config(preset, list(values))
    start_from = ckpt.resolve(me.resolve(init_from)) if init_from else None
    if start_from is not None:
        meta = ckpt.read_meta(start_from)
        # No data chosen yet: the built-in corpus, tokenized the way the model expects (GPT-2 BPE for GPT-2).
        data = current_data(state, tokenizer=meta["tokenizer"].get("type", "char"))
        params = int(meta.get("params", 0))
        flops = 6.0 * params
    else:
        data = current_data(state)
        params, flops = model_size(cfg, data.tokenizer.vocab_size)
    check_limits(cfg, params)
    run_dir = me.home / f"run-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:4]}"
    job = _submit(state, me, request, cfg, data, run_dir, estimate_s(cfg, flops), init_from=start_from)
    state = {**state, "job_id": job.id, "run_dir": str(run_dir)}
    what = f"fine-tuning `{me.name(start_from)}`" if start_from else "training started"
    if job.status == jobs.QUEUED:
        what = "in line: the run starts when the runs ahead of it end"
    return state, f"{what[0].upper()}{what[1:]} → `{me.name(run_dir)}`"


def _submit(state: dict[str, Any], me: Visitor, request: gr.Request, cfg: Config, data: Any, run_dir: Path,
            estimate: float, **kwargs: Any) -> jobs.Job:  # fmt: skip
    """Start or queue a run of this session's, after making room on disk for it."""
    old = REGISTRY.get(state.get("job_id"))
    if old is not None and (old.active or old.status == jobs.QUEUED):
        raise UserInputError("your run is still training or waiting; stop it (or leave the queue) first")
    enforce_quota(protected=[run_dir])
    session = request.session_hash if request else None
    # One waiting run per visitor: their account or session on a shared server, their session locally.
    return REGISTRY.start(cfg, data, run_dir, owner=me.owner or session, session=session, estimate_s=estimate,
                          **kwargs)  # fmt: skip


@user_errors
def stop_training(state: dict[str, Any]) -> str:
    job = REGISTRY.get(state.get("job_id"))
    if job is not None and REGISTRY.leave(job.id):
        return "You left the queue."
    if job is None or not job.active:
        raise UserInputError("no training run of yours is in progress")
    job.stop()
    return f"Stopping after the current step (step {job.last.get('step', 0):,})…"


@user_errors
def leave_queue(state: dict[str, Any]) -> str:
    if not REGISTRY.leave(state.get("job_id")):
        raise UserInputError("no run of yours is waiting in line")
    return "You left the queue."


def page_closed(request: gr.Request) -> None:
    """The visitor closed the page: a run of theirs that waits in line leaves it (a started one goes on)."""
    if request is not None and request.session_hash:
        REGISTRY.leave_session(request.session_hash)


@user_errors
def resume_training(
    state: dict[str, Any], max_steps: float, request: gr.Request, profile: gr.OAuthProfile | None
) -> tuple[dict[str, Any], str]:
    max_steps = number(max_steps, "Steps", 1, None, integer=True)
    me = visitor(request, profile)
    old = REGISTRY.get(state.get("job_id"))
    if not state.get("run_dir"):
        raise UserInputError("nothing to resume yet: start a training run first")
    run_dir = Path(state["run_dir"])
    meta = ckpt.read_meta(run_dir)
    cfg = Config.from_dict(meta["config"])
    cfg = apply_overrides(cfg, [f"train.max_steps={max_steps}"])
    check_limits(cfg, int(meta.get("params", 0)))
    data = load_prepared(meta["data_dir"]) if meta.get("data_dir") else current_data(state)
    history = old.snapshot()["series"] if old is not None else Series()
    left = max(0, cfg.train.max_steps - int(meta.get("step", 0)))
    estimate = estimate_s(cfg, 6.0 * int(meta.get("params", 0)), left)
    job = _submit(state, me, request, cfg, data, run_dir, estimate, resume=run_dir, history=history)
    what = "In line to resume" if job.status == jobs.QUEUED else "Resumed"
    return {**state, "job_id": job.id}, f"{what} from step {meta['step']} → `{me.name(run_dir)}`"


def progress_html(snap: dict[str, Any], run_name: str) -> str:
    """The progress bar and its line; while the run waits in line, its position and when it should start."""
    if snap["status"] == jobs.QUEUED and snap["queue"] is not None:
        position, length, wait = snap["queue"]
        return (
            f'<div class="progress-box"><b>Waiting in line: position {position} of {length}</b> · '
            f"the runs ahead should end in about {format_duration(wait)}; yours starts then. "
            "Keep this page open (closing it leaves the queue) or press Leave.</div>"
        )
    last = snap["last"]
    step, total = last.get("step", 0), max(1, last.get("max_steps", 1))
    pct = 100 * step / total
    bits = [f"step {step:,} / {total:,}"]
    if "elapsed" in last:
        bits.append(f"elapsed {format_duration(last['elapsed'])}")
    if snap["status"] == "running" and "eta" in last:
        bits.append(f"ETA {format_duration(last['eta'])}")
    if "tokens_per_s" in last:
        bits.append(f"{last['tokens_per_s']:,.0f} tokens/s")
    if "loss" in last:
        bits.append(f"loss {last['loss']:.3f}")
    status = snap["message"] or {"starting": "Starting…", "running": "Training…"}.get(snap["status"], "")
    colour = {"error": "#d62728", "stopped": "#ff7f0e", "completed": "#2ca02c"}.get(snap["status"], "#1f77b4")
    return (
        f'<div class="progress-box"><div style="background:#eee;border-radius:6px;height:14px;overflow:hidden">'
        f'<div style="width:{pct:.1f}%;background:{colour};height:14px"></div></div>'
        f'<div style="margin-top:6px"><b>{status}</b> · {" · ".join(bits)}</div>'
        f'<div style="color:#666;font-size:0.9em">{tensorboard_hint(snap["run_dir"], run_name)}</div></div>'
    )


def tensorboard_hint(run_dir: str, run_name: str) -> str:
    if PRIVATE:  # visitors of a shared server see names, not the server's paths
        return f"Run <code>{html.escape(run_name)}</code>: download its checkpoint below to keep it."
    return f"TensorBoard logs: <code>{run_dir}/tb</code> — open with <code>tensorboard --logdir {run_dir}</code>"


# Chart refresh period while this session's run trains. Each refresh of the two figures costs headless chromium ~450 ms
# of CPU and the server ~100 ms, taken from the training when they share a small machine (`python -m bench.train_tab`:
# 0.62-0.73x of the CLI's tokens/s on 2 cores with the tab open); 2 s keeps the curves live at half of 1 s's cost.
# Between runs the timer is off.
REFRESH_S = 2.0


def poll(state: dict[str, Any], seen: str) -> tuple[Any, ...]:
    """Timer tick: redraw only when the job has new events since this session's last refresh; once the run has
    ended and its last state is shown, switch the timer off (Start and Resume switch it on again). While the run
    waits in line, only the line with its position and wait is refreshed."""
    job = REGISTRY.get(state.get("job_id"))
    if job is None:
        return (gr.skip(),) * 6 + (seen, gr.Timer(active=False))
    snap = job.snapshot()
    name = Visitor(None).name(snap["run_dir"]) if not PRIVATE else Path(snap["run_dir"]).name
    leave = gr.update(visible=snap["status"] == jobs.QUEUED)
    if snap["status"] == jobs.QUEUED:
        snap["queue"] = REGISTRY.queue_position(job.id)
        return (progress_html(snap, name), *(gr.skip(),) * 3, snap["status"], leave, seen, gr.skip())
    timer = gr.skip() if snap["status"] in jobs.ACTIVE else gr.Timer(active=False)
    version = f"{snap['id']}:{snap['version']}"  # per run: a new run's first events must redraw too
    if version == seen:
        return (gr.skip(),) * 6 + (seen, timer)
    sample = f"[step {snap['sample'][0]}]\n{snap['sample'][1]}" if snap["sample"] else ""
    return (
        progress_html(snap, name),
        charts.loss_figure(snap["series"]),
        charts.rate_figure(snap["series"]),
        sample,
        snap["status"],
        leave,
        version,
        timer,
    )


def checkpoint_rows(me: Visitor) -> list[list[Any]]:
    return [
        [r["name"], r["step"], None if r["val_loss"] is None else round(r["val_loss"], 4), r["params"], r["size_mb"]]
        for r in me.checkpoints()
    ]


@user_errors
def refresh_checkpoints(
    current: str | None = None,
    state: dict[str, Any] | None = None,
    request: gr.Request | None = None,
    profile: gr.OAuthProfile | None = None,
) -> tuple[list[list[Any]], dict[str, Any]]:
    return checkpoint_rows(visitor(request, profile)), checkpoint_dropdown_update(current, state, request, profile)


DOWNLOAD_TTL_S = 3600


def download_dir() -> Path:
    """A fresh folder for one download; folders older than an hour (Gradio has served them) are removed."""
    root = Path(tempfile.gettempdir()) / "gpt-playground-downloads"
    if root.is_dir():
        for old in root.iterdir():
            if time.time() - old.stat().st_mtime > DOWNLOAD_TTL_S:
                shutil.rmtree(old, ignore_errors=True)
    return root / uuid.uuid4().hex[:8]


@user_errors
def download_checkpoint(name: str | None, request: gr.Request, profile: gr.OAuthProfile | None) -> str:
    src = ckpt.resolve(visitor(request, profile).resolve(name))
    ckpt.read_meta(src)
    out = download_dir()
    name = f"{src.parent.name}-{src.name}.zip"
    return str(zip_dir(src, out / name))


@user_errors
def export_hf(name: str | None, request: gr.Request, profile: gr.OAuthProfile | None) -> str:
    """The checkpoint as a Hugging Face GPT-2 directory, zipped: ready for from_pretrained or the Hub."""
    from gpt.interop import to_hf

    src = ckpt.resolve(visitor(request, profile).resolve(name))
    out = download_dir()
    name = f"{src.parent.name}-{src.name}-hf"
    hf_dir = to_hf(src, out / name)
    return str(zip_dir(hf_dir, out / f"{name}.zip"))


@user_errors
def upload_checkpoint(
    file: str | None, request: gr.Request, profile: gr.OAuthProfile | None
) -> tuple[str, list[list[Any]], dict[str, Any]]:
    if not file:
        raise UserInputError("choose a checkpoint .zip to upload")
    me = visitor(request, profile)
    stem = "".join(c if c.isalnum() or c in "-_." else "-" for c in Path(file).stem)[:40]
    target = me.home / "uploaded" / f"{stem}-{uuid.uuid4().hex[:6]}"
    staging = Path(tempfile.mkdtemp(prefix="ckpt-upload-"))
    try:
        # At most the weights of the largest model allowed here, plus its optimizer state (2 more copies) and config.
        found = ckpt.unpack(file, staging, max_bytes=4 * 3 * LIMITS.max_params + ckpt.MAX_CONFIG_BYTES)
        loaded = ckpt.load(found)  # validates format, config and tensors without unpickling anything
        if (found / ckpt.TRAINER).exists():
            ckpt.load_trainer_state(found)
        check_limits(loaded.config, loaded.model.num_params())
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(found), target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    enforce_quota(protected=[target])
    rows, dropdown = refresh_checkpoints(me.name(target), None, request, profile)
    return f"Imported checkpoint at step {loaded.step} → `{me.name(target)}`", rows, dropdown


def build(demo: gr.Blocks, state: gr.State, tab: gr.Tab) -> None:
    machine_flops()  # measured once at start-up, while the machine is quiet
    jobs.warm_up()  # the process training jobs fork from
    with gr.Row():
        with gr.Column(scale=1, min_width=320):
            init_from = gr.Dropdown(
                [NEW_MODEL], value="", label="Start from (a checkpoint: fine-tune it)", allow_custom_value=True
            )
            pretrained_row(init_from, with_new=True)
            preset = gr.Dropdown(PRESETS, value="tiny", label="Preset")
            info = gr.Markdown()
            with gr.Row():
                start = gr.Button("Start", variant="primary")
                stop = gr.Button("Stop", variant="stop")
                resume = gr.Button("Resume")
                leave = gr.Button("Leave the queue", visible=False)
            status = gr.Markdown()
            with gr.Accordion("Model and training settings", open=True):
                inputs: list[Any] = []
                for (_key, label, kind, spec), value in zip(FIELDS, preset_values("tiny"), strict=True):
                    if kind == "slider" and isinstance(spec, tuple):
                        lo, hi, step = spec
                        inputs.append(gr.Slider(lo, hi, value=value, step=step, label=label))
                    elif kind == "dropdown" and isinstance(spec, list):
                        inputs.append(gr.Dropdown(spec, value=value, label=label))
                    else:
                        inputs.append(gr.Number(value=value, label=label))
        with gr.Column(scale=2):
            progress = gr.HTML('<div class="progress-box">No training run yet.</div>')
            loss_plot = gr.Plot(label="Loss", show_label=False)
            rate_plot = gr.Plot(label="Learning rate and throughput", show_label=False)
            sample = gr.Textbox(label="Sample text from the model during training", lines=8, interactive=False)
            job_status = gr.Textbox(visible=False)
    with gr.Accordion("Checkpoints", open=False):
        table = gr.Dataframe(headers=["checkpoint", "step", "val loss", "parameters", "size MB"], interactive=False)
        with gr.Row():
            chosen = gr.Dropdown(label="Checkpoint", choices=[], allow_custom_value=True, scale=3)
            refresh = gr.Button("Refresh", scale=1)
            download = gr.Button("Download .zip", scale=1)
            download_hf = gr.Button("Download in Hugging Face format", scale=1)
        zip_out = gr.File(label="Download")
        upload = gr.File(label="Upload a checkpoint .zip", file_types=[".zip"])
        upload_msg = gr.Markdown()

    seen = gr.State("")
    timer = gr.Timer(REFRESH_S, active=False)
    preset.change(
        lambda p: preset_values(p) if p != "custom" else [gr.skip()] * len(FIELDS),
        preset,
        inputs,
        api_visibility="private",
    )
    for comp in [preset, *inputs]:
        comp.change(describe, [preset, state, *inputs], info, api_visibility="private")
    watch = functools.partial(gr.Timer, active=True)
    start_event = start.click(
        start_training, [state, init_from, preset, *inputs], [state, status], api_name="start_training"
    )
    start_event.success(watch, None, timer, api_visibility="private")
    stop.click(stop_training, state, status, api_name="stop_training")
    leave.click(leave_queue, state, status, api_name="leave_queue")
    demo.unload(page_closed)
    max_steps = inputs[[k for k, *_ in FIELDS].index("train.max_steps")]
    resume_event = resume.click(resume_training, [state, max_steps], [state, status], api_name="resume_training")
    resume_event.success(watch, None, timer, api_visibility="private")
    timer.tick(
        poll,
        [state, seen],
        [progress, loss_plot, rate_plot, sample, job_status, leave, seen, timer],
        api_name="poll",
        queue=False,
        show_progress="hidden",  # no loading animation on the charts at every tick: the browser would redraw them
    )
    job_status.change(refresh_checkpoints, [chosen, state], [table, chosen], api_visibility="private")
    refresh.click(refresh_checkpoints, [chosen, state], [table, chosen], api_name="list_checkpoints")
    download.click(download_checkpoint, chosen, zip_out, api_name="download_checkpoint", **HEAVY)
    download_hf.click(export_hf, chosen, zip_out, api_name="export_hf", **HEAVY)
    for trigger in (tab.select, demo.load, job_status.change):
        trigger(start_from_update, init_from, init_from, api_visibility="private")
    upload.upload(upload_checkpoint, upload, [upload_msg, table, chosen], api_name="upload_checkpoint", **HEAVY)
    demo.load(describe, [preset, state, *inputs], info, api_visibility="private")
    demo.load(refresh_checkpoints, [chosen, state], [table, chosen], api_visibility="private")
