"""The Data tab: pick the built-in corpus, upload files (or a zip of them), or paste text; see the tokens. With the
BPE tokenizer trained on the corpus, see what it learned: its first merges, its longest tokens, a word merged step by
step, and its compression beside char, byte and GPT-2 on the same text. Or a task: an algorithm's examples
(playground/task_lab.py), shown with the prompt and the answer marked."""

from __future__ import annotations

import dataclasses
import html
import shutil
import tempfile
from pathlib import Path
from typing import Any

import gradio as gr

from gpt.archive import Budget, safe_extract
from gpt.config import DataConfig, load_config, resolve_config_path
from gpt.corpus import repeats_corpus_path, sample_corpus_path
from gpt.data import DEFAULT_BPE_VOCAB, TEXT_SUFFIXES, PreparedData, load_prepared, prepare, prepare_text
from gpt.errors import UserInputError
from gpt.paths import cache_dir
from gpt.tokenizer import (
    BPE_MAX_VOCAB,
    BPE_MIN_VOCAB,
    BPETokenizer,
    ByteTokenizer,
    CharTokenizer,
    GPT2Tokenizer,
    Tokenizer,
    bpe_report,
    compression,
    merge_steps,
)
from playground import inputs, task_lab
from playground.common import current_data, user_errors
from playground.hosting import Visitor, enforce_quota, remember, visitor
from playground.inputs import number
from playground.session import Session
from playground.settings import HEAVY, LIMITS

SAMPLE, UPLOAD, PASTE = "Shakespeare (built-in)", "Upload files", "Paste text"
TASK = "Task (an algorithm)"  # generated examples of an algorithmic task (gpt/tasks.py), prepared by its own button
REPEATS = "Repeated words (induction heads)"  # built in too: a word twice a line, only a look back predicts the second
BUILT_IN = {SAMPLE: sample_corpus_path, REPEATS: repeats_corpus_path}
SOURCES = [SAMPLE, REPEATS, UPLOAD, PASTE, TASK]
TOKENIZERS = [("Character-level", "char"), ("GPT-2 BPE", "gpt2"), ("Byte-level", "byte"),
              ("BPE trained on this corpus", "bpe")]  # fmt: skip
DEFAULT_VAL_FRACTION = DataConfig().val_fraction
COMPARED_TOKENS = 40_000  # the corpus's first tokens: the text the tokenizers are compared on
VIEW_CHARS = 240  # the text the side-by-side token views show
EXAMPLE_WORD = " understanding"
TINY_CONTEXT = load_config(resolve_config_path("tiny")).model.block_size  # the preset a new user trains first
_COLOURS = ["#fde2e4", "#e2ece9", "#dfe7fd", "#fff1c1", "#e8dff5", "#d8f3dc", "#ffd6a5", "#cddafd"]


def corpus_files(source: str, files: list[str] | None, workdir: Path) -> list[Path]:
    """The files to prepare for the chosen source, with uploads checked against the limits (zips unpack in workdir)."""
    if source in BUILT_IN:
        return [BUILT_IN[source]()]
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
    return _token_spans(d.tokenizer, [int(i) for i in d.train[:n_tokens]], "max-height:320px")


def _token_spans(tok: Tokenizer, ids: list[int], style: str = "") -> str:
    spans = []
    for k, i in enumerate(ids):
        text = html.escape(tok.token_text(i)).replace("\n", "↵<br>")
        spans.append(f'<span class="tok" style="background:{_COLOURS[k % len(_COLOURS)]}" title="id {i}">{text}</span>')
    return (
        '<div class="token-view" style="font-family:monospace;white-space:pre-wrap;line-height:1.7;overflow:auto;'
        f'{style}">' + "".join(spans) + "</div>"
    )


def _shown(token: str) -> str:
    """A token's text with its spaces and line breaks visible (" the" reads ␣the)."""
    return html.escape(token.replace(" ", "␣").replace("\n", "↵").replace("\t", "⇥"))


def compared_tokenizers(tok: Tokenizer, text: str) -> dict[str, Tokenizer]:
    """This data set's tokenizer and the others, on the same text (GPT-2 where its files are at hand)."""
    out = {f"this BPE ({tok.vocab_size:,})" if tok.name == "bpe" else tok.name: tok}
    out.setdefault("char", CharTokenizer.from_text(text))
    out.setdefault("byte", ByteTokenizer())
    try:
        out.setdefault("GPT-2 (50,257)", GPT2Tokenizer())
    except UserInputError:
        pass  # (no GPT-2 files offline: the row is left out)
    return out


def learned_html(d: PreparedData) -> tuple[str, str, str]:
    """What the data set's BPE learned (first merges with their counts, longest tokens), how it compresses against
    the other tokenizers, and their token views side by side: three HTML blocks for the Data tab."""
    tok = d.tokenizer
    assert isinstance(tok, BPETokenizer)
    text = tok.decode([int(i) for i in d.train[:COMPARED_TOKENS]])
    report = bpe_report(tok, text)
    rows = "".join(
        f"<tr><td>{m.rank}</td><td><code>{_shown(m.left)}</code> + <code>{_shown(m.right)}</code></td>"
        f"<td><code>{_shown(m.merged)}</code></td><td>{m.count:,}</td></tr>"
        for m in report.merges
    )
    longest = " ".join(f"<code>{_shown(t)}</code>" for t in report.longest)
    merges = (
        f"<p><b>The first merges</b>, in the order learned: the pair seen most often in the text becomes a token, "
        f"then again, {report.vocab_size - 256:,} times (counts in the first {report.counted_chars:,} "
        f"characters).</p><table class='merges'><tr><th>#</th><th>pair</th><th>becomes</th><th>seen</th></tr>{rows}"
        f"</table><p><b>Longest tokens:</b> {longest}</p>"
    )
    tokenizers = compared_tokenizers(tok, text)
    table = "".join(
        f"<tr><td>{html.escape(c.tokenizer)}</td><td>{c.vocab_size:,}</td><td>{c.tokens:,}</td>"
        f"<td>{c.chars_per_token:.2f}</td><td>{c.bytes_per_token:.2f}</td></tr>"
        for c in compression(text, tokenizers)
    )
    compared = (
        f"<p><b>Compression</b> on the same {len(text):,} characters: more text per token means longer contexts "
        "for the same cost, but a bigger vocabulary to learn.</p><table class='compression'><tr><th>tokenizer</th>"
        f"<th>vocabulary</th><th>tokens</th><th>chars / token</th><th>bytes / token</th></tr>{table}</table>"
    )
    view = text[:VIEW_CHARS]
    columns = "".join(
        f"<div style='flex:1;min-width:0'><b>{html.escape(name)}</b> · {len(t.encode(view))} tokens"
        f"{_token_spans(t, t.encode(view), 'max-height:220px')}</div>"
        for name, t in tokenizers.items()
    )
    views = f"<div class='token-views' style='display:flex;gap:12px'>{columns}</div>"
    return merges, compared, views


def merge_steps_html(d: PreparedData, word: str) -> str:
    """`word` merged by the data set's BPE one step at a time (the Data tab's 'see a word merged')."""
    tok = d.tokenizer
    if not isinstance(tok, BPETokenizer):
        return ""
    steps = merge_steps(tok, inputs.text(word, "word", 200))
    lines = "".join(
        f"<div>{'bytes' if k == 0 else f'merge {k}'}: "
        + " ".join(f"<code class='tok'>{_shown(t)}</code>" for t in step)
        + "</div>"
        for k, step in enumerate(steps)
    )
    return f"<div class='merge-steps'>{lines}<div>{len(steps[-1])} token(s).</div></div>"


def data_home(me: Visitor) -> Path | None:
    """Where this visitor's data sets go: their home on a shared server (their share of the disk counts them), else
    the cache."""
    return None if me.owner is None else me.home / "data"


def shared(source: str, tokenizer: str, val_fraction: float, vocab: int) -> bool:
    """Whether a data set goes to the shared cache, prepared once for everyone: a built-in corpus at the form's
    defaults (a handful in all). Any other split or vocabulary size goes to the visitor's own home, where their share
    of the disk counts it: otherwise 0.1001, 0.1002, ... would each add 12 MB to a cache nothing bounds."""
    return (
        source in BUILT_IN
        and val_fraction == DEFAULT_VAL_FRACTION
        and (tokenizer != "bpe" or vocab == DEFAULT_BPE_VOCAB)
    )


@user_errors
def prepare_data(
    source: str,
    files: list[str] | None,
    text: str,
    tokenizer: str,
    val_fraction: float,
    state: Session,
    request: gr.Request,
    profile: gr.OAuthProfile | None,
    vocab_size: float = DEFAULT_BPE_VOCAB,
    word: str = EXAMPLE_WORD,
    progress: gr.Progress = gr.Progress(),  # noqa: B008 - Gradio's way: a default it replaces with the live tracker
) -> tuple[Any, ...]:
    val_fraction = number(val_fraction, "val_fraction")
    vocab = int(number(vocab_size, "vocabulary size")) if tokenizer == "bpe" else DEFAULT_BPE_VOCAB
    if source not in SOURCES:
        raise UserInputError(f"the corpus is one of {', '.join(map(repr, SOURCES))}")
    if source == TASK:
        raise UserInputError("a task is prepared with its own button, Prepare task (the API's /prepare_task)")
    me = visitor(request, profile)
    home = data_home(me)

    def report(what: str, done: float) -> None:
        progress(done, desc=what)

    if source == PASTE:
        pasted = inputs.text(text, "pasted text", LIMITS.max_paste_chars)
        d = prepare_text(pasted, tokenizer, val_fraction, home, vocab, report)
        label = "Pasted text"
    else:
        workdir = Path(tempfile.mkdtemp(prefix="upload-", dir=_uploads_dir()))
        try:
            paths = corpus_files(source, files, workdir)
            where = None if shared(source, tokenizer, val_fraction, vocab) else home
            d = prepare(paths, tokenizer, None, val_fraction, where, vocab, report)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)  # read once: the prepared tokens are cached by content
        label = source if source in BUILT_IN else f"{len(paths)} uploaded file(s)"
    enforce_quota(me, protected=[d.dir])
    remember(me, data_dir=str(d.dir), data_label=label)
    short = min(len(d.train), len(d.val))
    if short < TINY_CONTEXT + 1:
        gr.Warning(
            f"This corpus is short: its smaller split has {short:,} tokens, but the tiny preset's context of "
            f"{TINY_CONTEXT} needs at least {TINY_CONTEXT + 1}. Add text, raise the validation fraction, or lower the "
            "context length in the Train tab."
        )
    state = dataclasses.replace(state, data_dir=str(d.dir), data_label=label)
    return stats_markdown(d, label), token_view_html(d), state, *_learned_outputs(d, word)


def _learned_outputs(d: PreparedData, word: str) -> tuple[Any, str, str, str, str]:
    """The 'what the tokenizer learned' section: shown for a trained BPE, hidden otherwise."""
    if not isinstance(d.tokenizer, BPETokenizer):
        return gr.update(visible=False), "", "", "", ""
    merges, compared, views = learned_html(d)
    return gr.update(visible=True), merges, compared, views, merge_steps_html(d, word or EXAMPLE_WORD)


@user_errors
def show_merge_steps(word: str, state: Session) -> str:
    """A word merged step by step by this session's BPE (the Data tab's box)."""
    d = current_data(state)
    if not isinstance(d.tokenizer, BPETokenizer):
        raise UserInputError("prepare the data with the BPE tokenizer first: the steps are that tokenizer's merges")
    return merge_steps_html(d, word)


def shown_data(state: Session) -> tuple[Any, ...]:
    """The Data tab's statistics for the session's data set (after a reload), or as they are."""
    if not state.data_dir:
        return (gr.skip(),) * 7
    try:
        d = load_prepared(state.data_dir)
    except UserInputError:
        return (gr.skip(),) * 7
    label = state.data_label or "Your data set"
    if d.examples is not None:  # a task: its numbers and a few examples, no tokenizer section
        hidden = (gr.update(visible=False), "", "", "", "")
        return task_lab.stats_markdown(d, label), task_lab.examples_html(d), *hidden
    return stats_markdown(d, label), token_view_html(d), *_learned_outputs(d, EXAMPLE_WORD)


def shown_again(state: Session, stats: Any) -> tuple[Any, ...]:
    """The Data tab opened: the session's data set, unless it is the one shown (the Train tab may have prepared a
    preset's task since)."""
    label = state.data_label or "Your data set"
    if state.data_dir and isinstance(stats, str) and stats.startswith(f"**{html.escape(label)}**"):
        return (gr.skip(),) * 7
    return shown_data(state)


def build(demo: gr.Blocks, state: gr.State, tab: gr.Tab, ready: Any) -> None:
    gr.Markdown(
        "Choose what the model learns from. Built in: Shakespeare's plays (about 4.8 M characters), and repeated "
        "words (a random word twice a line: the tiny preset forms induction heads on it within a few hundred steps, "
        f"which the Train tab's circuits chart shows). Uploads: .txt / .md files or a .zip of them, up to "
        f"{LIMITS.max_upload_mb} MB. Or a **task**: an algorithm's examples (modular addition, sorting, reversing, "
        "copying, addition, parity, balanced brackets), generated from a seed and split into examples trained on and "
        "held out, scored by exact match (the Train tab's grokking and sort presets learn two of them)."
    )
    with gr.Row():
        with gr.Column(scale=1):
            source = gr.Radio(SOURCES, value=SAMPLE, label="Corpus")
            task = task_lab.form()
            files = gr.File(
                label="Text files or a .zip", file_count="multiple", file_types=[*TEXT_SUFFIXES, ".zip"], visible=False
            )
            text = gr.Textbox(label="Paste text", lines=8, visible=False, max_length=LIMITS.max_paste_chars)
            tokenizer = gr.Dropdown(TOKENIZERS, value="char", label="Tokenizer")
            vocab_size = gr.Slider(
                BPE_MIN_VOCAB, BPE_MAX_VOCAB, value=DEFAULT_BPE_VOCAB, step=1, label="BPE vocabulary size",
                info="256 bytes + this many merges, learned from your corpus", visible=False,
            )  # fmt: skip
            val_fraction = gr.Slider(0.01, 0.5, value=DEFAULT_VAL_FRACTION, step=0.01, label="Validation fraction")
            prepare_btn = gr.Button("Prepare data", variant="primary")
            progress_box = gr.HTML("", elem_classes="prepare-progress")  # (where the progress bar shows)
        with gr.Column(scale=2):
            stats = gr.Markdown("Press **Prepare data** to tokenize the corpus and see its statistics.")
            tokens = gr.HTML(label="Token view")
    with gr.Column(visible=False, elem_id="tokenizer-learned") as learned:
        gr.Markdown("### What your tokenizer learned")
        with gr.Row():
            merges = gr.HTML()
            with gr.Column():
                compared = gr.HTML()
                word = gr.Textbox(EXAMPLE_WORD, label="See a word merged step by step (Enter)", max_length=200)
                steps = gr.HTML()
        views = gr.HTML()
    tokenizer.change(lambda t: gr.update(visible=t == "bpe"), tokenizer, vocab_size, api_visibility="private")
    word.submit(show_merge_steps, [word, state], steps, api_name="merge_steps", show_progress="hidden")
    source.change(
        lambda s, t: (gr.update(visible=s == UPLOAD), gr.update(visible=s == PASTE), gr.update(visible=s == TASK),
                      *[gr.update(visible=s != TASK)] * 3, gr.update(visible=s != TASK and t == "bpe")),
        [source, tokenizer],
        [files, text, task.box, tokenizer, val_fraction, prepare_btn, vocab_size],
        api_visibility="private",
    )  # fmt: skip
    task_lab.wire(task, state, [stats, tokens, state, learned], progress_box)
    # The press answers at once (the button says what it does); a bad upload shows its message and leaves the last
    # statistics in place (Gradio's progress tracker would cover them with "Error" badges).
    prepare_btn.click(
        lambda: gr.update(value="Preparing…", interactive=False), None, prepare_btn, queue=False,
        api_visibility="private",
    ).then(
        prepare_data,
        [source, files, text, tokenizer, val_fraction, state, vocab_size, word],
        [stats, tokens, state, learned, merges, compared, views, steps],
        api_name="prepare_data",
        # the progress bar in its own box: a bad upload's error badge must not cover the last statistics
        show_progress="full",
        show_progress_on=progress_box,
        **HEAVY,
    ).then(
        lambda: gr.update(value="Prepare data", interactive=True), None, prepare_btn, queue=False,
        api_visibility="private",
    )  # fmt: skip
    shown = [stats, tokens, learned, merges, compared, views, steps]
    ready.then(shown_data, state, shown, api_visibility="private")
    tab.select(shown_again, [state, stats], shown, api_visibility="private", show_progress="hidden")
