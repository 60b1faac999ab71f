"""The Checkpoints panel of the Train tab: this visitor's checkpoints, download (ours or Hugging Face's format, with a
line on what the export made or why it refused), upload."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import gradio as gr

from gpt import checkpoint as ckpt
from gpt.archive import zip_dir
from gpt.errors import UserInputError
from playground.common import check_model_size, checkpoint_dropdown_update, user_errors
from playground.hosting import Visitor, enforce_quota, visitor
from playground.session import Session
from playground.settings import HEAVY, LIMITS


def checkpoint_rows(me: Visitor) -> list[list[Any]]:
    return [
        [r["name"], r["step"], None if r["val_loss"] is None else round(r["val_loss"], 4), r["params"], r["size_mb"]]
        for r in me.checkpoints()
    ]


@user_errors
def refresh_checkpoints(
    current: str | None = None,
    state: Session | None = None,
    request: gr.Request | None = None,
    profile: gr.OAuthProfile | None = None,
) -> tuple[list[list[Any]], dict[str, Any]]:
    return checkpoint_rows(visitor(request, profile)), checkpoint_dropdown_update(current, state, request, profile)


DOWNLOAD_TTL_S = 3600


def download_dir() -> Path:
    """A fresh folder for one download; folders older than an hour (Gradio has served them) are removed. The root is
    this user's (a fixed name in the shared /tmp, made by another user first, refused every download here)."""
    user = os.getuid() if hasattr(os, "getuid") else os.getlogin()
    root = Path(tempfile.gettempdir()) / f"gpt-playground-downloads-{user}"
    if root.is_dir():
        for old in root.iterdir():
            if time.time() - old.stat().st_mtime > DOWNLOAD_TTL_S:
                shutil.rmtree(old, ignore_errors=True)
    return root / uuid.uuid4().hex[:8]


SERVER_ONLY = ("data_dir",)  # what a checkpoint's config.json holds for this server alone (a path on its disk)


@user_errors
def download_checkpoint(name: str | None, request: gr.Request, profile: gr.OAuthProfile | None) -> str:
    src = ckpt.resolve(visitor(request, profile).resolve(name))
    meta = ckpt.read_meta(src)
    out = download_dir()
    name = f"{src.parent.name}-{src.name}.zip"
    public = {k: v for k, v in meta.items() if k not in SERVER_ONLY}
    return str(zip_dir(src, out / name, replace={ckpt.CONFIG: json.dumps(public, indent=2).encode()}))


@user_errors
def export_hf(name: str | None, request: gr.Request, profile: gr.OAuthProfile | None) -> tuple[Any, str]:
    """The checkpoint as a Hugging Face directory, zipped (ready for from_pretrained or the Hub), and a line on it.
    A model that no format holds is refused in that line, where the download would have been (a toast vanishes),
    and the last download stays."""
    from gpt.interop import ExportRefusedError, context_note, to_hf

    src = ckpt.resolve(visitor(request, profile).resolve(name))
    out = download_dir()
    name = f"{src.parent.name}-{src.name}-hf"
    try:
        hf_dir = to_hf(src, out / name)
    except ExportRefusedError as e:
        return gr.skip(), f"⚠️ **Not exported:** {e}."
    hf_cfg = json.loads((hf_dir / "config.json").read_text(encoding="utf-8"))
    said = f"✅ Exported as `{hf_cfg['architectures'][0]}`: `AutoModelForCausalLM.from_pretrained` loads the folder."
    if note := context_note(hf_cfg):
        said += f"\n\n⚠️ {note}"
    return str(zip_dir(hf_dir, out / f"{name}.zip")), said


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
        check_model_size(loaded.config.model, loaded.model.num_params())
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(found), target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    enforce_quota(me, protected=[target])
    rows, dropdown = refresh_checkpoints(me.name(target), None, request, profile)
    return f"Imported checkpoint at step {loaded.step} → `{me.name(target)}`", rows, dropdown


def build(ready: Any, state: gr.State, job_status: gr.Textbox) -> tuple[gr.Dataframe, gr.Dropdown]:
    """The panel; it refreshes when the session's run changes status. Returns its table and checkpoint choice."""
    with gr.Accordion("Checkpoints", open=False):
        table = gr.Dataframe(headers=["checkpoint", "step", "val loss", "parameters", "size MB"], interactive=False)
        with gr.Row():
            chosen = gr.Dropdown(label="Checkpoint", choices=[], allow_custom_value=True, scale=3)
            refresh = gr.Button("Refresh", scale=1)
            download = gr.Button("Download .zip", scale=1)
            download_hf = gr.Button("Download in Hugging Face format", scale=1)
        zip_out = gr.File(label="Download")
        export_msg = gr.Markdown()  # what the Hugging Face export made, or why it refused
        upload = gr.File(label="Upload a checkpoint .zip", file_types=[".zip"])
        upload_msg = gr.Markdown()
    job_status.change(refresh_checkpoints, [chosen, state], [table, chosen], api_visibility="private")
    refresh.click(refresh_checkpoints, [chosen, state], [table, chosen], api_name="list_checkpoints")
    # a .zip of ours replaces the download: a line on an earlier export would speak of another file
    download.click(download_checkpoint, chosen, zip_out, api_name="download_checkpoint", **HEAVY).success(
        lambda: "", None, export_msg, queue=False, api_visibility="private"
    )
    download_hf.click(export_hf, chosen, [zip_out, export_msg], api_name="export_hf", **HEAVY)
    upload.upload(upload_checkpoint, upload, [upload_msg, table, chosen], api_name="upload_checkpoint", **HEAVY)
    ready.then(refresh_checkpoints, [chosen, state], [table, chosen], api_visibility="private")
    return table, chosen
