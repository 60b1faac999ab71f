"""The Data tab: pick the built-in corpus, upload files (or a zip of them), or paste text; see the tokens."""

from __future__ import annotations

import html
import shutil
import tempfile
from pathlib import Path
from typing import Any

import gradio as gr

from gpt.archive import Budget, safe_extract
from gpt.config import load_config, resolve_config_path
from gpt.corpus import sample_corpus_path
from gpt.data import TEXT_SUFFIXES, PreparedData, load_prepared, prepare, prepare_text
from gpt.errors import UserInputError
from gpt.paths import cache_dir
from playground import inputs
from playground.common import user_errors
from playground.hosting import Visitor, enforce_quota, remember, visitor
from playground.inputs import number
from playground.settings import HEAVY, LIMITS

SAMPLE, UPLOAD, PASTE = "Shakespeare (built-in)", "Upload files", "Paste text"
TOKENIZERS = [("Character-level", "char"), ("GPT-2 BPE", "gpt2"), ("Byte-level", "byte")]
TINY_CONTEXT = load_config(resolve_config_path("tiny")).model.block_size  # the preset a new user trains first
_COLOURS = ["#fde2e4", "#e2ece9", "#dfe7fd", "#fff1c1", "#e8dff5", "#d8f3dc", "#ffd6a5", "#cddafd"]


def corpus_files(source: str, files: list[str] | None, workdir: Path) -> list[Path]:
    """The files to prepare for the chosen source, with uploads checked against the limits (zips unpack in workdir)."""
    if source == SAMPLE:
        return [sample_corpus_path()]
    if not files:
        raise UserInputError("choose one or more .txt / .md files (or a .zip of them) to upload")
    paths = [Path(f) for f in files]
    if len(paths) > LIMITS.max_files:
        raise UserInputError(f"{len(paths)} files uploaded; at most {LIMITS.max_files} are allowed")
    cap = LIMITS.max_upload_mb * 1_000_000
    total = sum(p.stat().st_size for p in paths)
    if total > cap:
        raise UserInputError(f"the upload is {total / 1e6:.1f} MB; the limit here is {LIMITS.max_upload_mb} MB")
    out: list[Path] = []
    # One budget for the whole upload: plain files and every archive's expanded text together stay under the cap.
    budget = Budget(cap, used=sum(p.stat().st_size for p in paths if p.suffix.lower() != ".zip"))
    for p in paths:
        if p.suffix.lower() == ".zip":
            dest = Path(tempfile.mkdtemp(prefix="zip-", dir=workdir))
            extracted = safe_extract(p, dest, max_bytes=budget, max_files=max(0, LIMITS.max_files - len(out)))
            texts = [f for f in extracted if f.suffix.lower() in TEXT_SUFFIXES]
            if not texts:
                raise UserInputError(f"{p.name} has no .txt or .md files inside")
            out.extend(sorted(texts))
        else:
            out.append(p)
    return out


def _uploads_dir() -> Path:
    d = cache_dir() / "uploads"
    d.mkdir(parents=True, exist_ok=True)
    return d


def stats_markdown(d: PreparedData, label: str) -> str:
    m = d.meta
    tokens = m["train_tokens"] + m["val_tokens"]
    return (
        f"**{html.escape(label)}** — {m['tokenizer']['type']} tokenizer\n\n"
        "| characters | tokens | vocabulary used | chars / token | train tokens | val tokens |\n"
        "|---|---|---|---|---|---|\n"
        f"| {m['chars']:,} | {tokens:,} | {m['vocab_used']:,} of {m['vocab_size']:,} | "
        f"{m['chars'] / max(tokens, 1):.2f} | {m['train_tokens']:,} | {m['val_tokens']:,} |"
    ) + (
        f"\n\n{m['forced_cuts']:,} stretch(es) of over a million characters with no line break or space were cut "
        "to keep tokenizing fast; tokens at those cuts may differ from tokenizing the text whole."
        if m.get("forced_cuts")
        else ""
    )


def token_view_html(d: PreparedData, n_tokens: int = 300) -> str:
    """The first tokens of the corpus, each a coloured span with its id on hover."""
    ids = [int(i) for i in d.train[:n_tokens]]
    spans = []
    for k, i in enumerate(ids):
        text = html.escape(d.tokenizer.token_text(i)).replace("\n", "↵<br>")
        spans.append(f'<span class="tok" style="background:{_COLOURS[k % len(_COLOURS)]}" title="id {i}">{text}</span>')
    return (
        '<div class="token-view" style="font-family:monospace;white-space:pre-wrap;line-height:1.7;'
        'max-height:320px;overflow:auto">' + "".join(spans) + "</div>"
    )


def data_home(me: Visitor) -> Path | None:
    """Where this visitor's data sets go: their home on a shared server (their share of the disk counts them), else
    the cache."""
    return None if me.owner is None else me.home / "data"


@user_errors
def prepare_data(
    source: str,
    files: list[str] | None,
    text: str,
    tokenizer: str,
    val_fraction: float,
    state: dict[str, Any],
    request: gr.Request,
    profile: gr.OAuthProfile | None,
) -> tuple[str, str, dict[str, Any]]:
    val_fraction = number(val_fraction, "val_fraction")
    if source not in (SAMPLE, UPLOAD, PASTE):
        raise UserInputError(f"the corpus is one of {SAMPLE!r}, {UPLOAD!r} or {PASTE!r}")
    me = visitor(request, profile)
    home = data_home(me)
    if source == PASTE:
        d = prepare_text(inputs.text(text, "pasted text", LIMITS.max_paste_chars), tokenizer, val_fraction, home)
        label = "Pasted text"
    else:
        workdir = Path(tempfile.mkdtemp(prefix="upload-", dir=_uploads_dir()))
        try:
            paths = corpus_files(source, files, workdir)
            # the built-in corpus is everyone's: its tokens are prepared once, in the shared cache
            d = prepare(paths, tokenizer=tokenizer, val_fraction=val_fraction, cache=None if source == SAMPLE else home)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)  # read once: the prepared tokens are cached by content
        label = source if source == SAMPLE else f"{len(paths)} uploaded file(s)"
    enforce_quota(me, protected=[d.dir])
    remember(me, data_dir=str(d.dir), data_label=label)
    short = min(len(d.train), len(d.val))
    if short < TINY_CONTEXT + 1:
        gr.Warning(
            f"This corpus is short: its smaller split has {short:,} tokens, but the tiny preset's context of "
            f"{TINY_CONTEXT} needs at least {TINY_CONTEXT + 1}. Add text, raise the validation fraction, or lower the "
            "context length in the Train tab."
        )
    state = {**state, "data_dir": str(d.dir), "data_label": label}
    return stats_markdown(d, label), token_view_html(d), state


def current_data(state: dict[str, Any], tokenizer: str = "char") -> PreparedData:
    """This session's data set; until the user prepares one, the built-in corpus with `tokenizer`."""
    if state.get("data_dir"):
        if not (Path(state["data_dir"]) / "meta.json").is_file():
            raise UserInputError(
                "your prepared data set is no longer on the server (removed to stay within the storage quota, or "
                "by Forget me); prepare it again in the Data tab"
            )
        return load_prepared(state["data_dir"])
    return prepare([sample_corpus_path()], tokenizer=tokenizer)


def shown_data(state: dict[str, Any]) -> tuple[Any, Any]:
    """The Data tab's statistics for the session's data set (after a reload), or as they are."""
    if not state.get("data_dir"):
        return gr.skip(), gr.skip()
    try:
        d = load_prepared(state["data_dir"])
    except UserInputError:
        return gr.skip(), gr.skip()
    return stats_markdown(d, state.get("data_label") or "Your data set"), token_view_html(d)


def build(demo: gr.Blocks, state: gr.State, tab: gr.Tab, ready: Any) -> None:
    gr.Markdown(
        "Choose what the model learns from. The built-in corpus is Shakespeare's plays (about 4.8 M characters). "
        f"Uploads: .txt / .md files or a .zip of them, up to {LIMITS.max_upload_mb} MB."
    )
    with gr.Row():
        with gr.Column(scale=1):
            source = gr.Radio([SAMPLE, UPLOAD, PASTE], value=SAMPLE, label="Corpus")
            files = gr.File(
                label="Text files or a .zip", file_count="multiple", file_types=[*TEXT_SUFFIXES, ".zip"], visible=False
            )
            text = gr.Textbox(label="Paste text", lines=8, visible=False, max_length=LIMITS.max_paste_chars)
            tokenizer = gr.Dropdown(TOKENIZERS, value="char", label="Tokenizer")
            val_fraction = gr.Slider(0.01, 0.5, value=0.1, step=0.01, label="Validation fraction")
            prepare_btn = gr.Button("Prepare data", variant="primary")
        with gr.Column(scale=2):
            stats = gr.Markdown("Press **Prepare data** to tokenize the corpus and see its statistics.")
            tokens = gr.HTML(label="Token view")
    source.change(
        lambda s: (gr.update(visible=s == UPLOAD), gr.update(visible=s == PASTE)),
        source,
        [files, text],
        api_visibility="private",
    )
    # The press answers at once (the button says what it does); a bad upload shows its message and leaves the last
    # statistics in place (Gradio's progress tracker would cover them with "Error" badges).
    prepare_btn.click(
        lambda: gr.update(value="Preparing…", interactive=False), None, prepare_btn, queue=False,
        api_visibility="private",
    ).then(
        prepare_data,
        [source, files, text, tokenizer, val_fraction, state],
        [stats, tokens, state],
        api_name="prepare_data",
        show_progress="hidden",
        **HEAVY,
    ).then(
        lambda: gr.update(value="Prepare data", interactive=True), None, prepare_btn, queue=False,
        api_visibility="private",
    )  # fmt: skip
    ready.then(shown_data, state, [stats, tokens], api_visibility="private")
