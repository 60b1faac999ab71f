"""Corpus files -> token ids on disk -> training batches.

`prepare()` reads one file, several, or folders of .txt/.md files as UTF-8, tokenizes them in a streaming
fashion (memory stays flat in the corpus size) and writes `train.bin`, `val.bin` (numpy memmaps, uint16
when the vocabulary fits, else uint32) and `meta.json`. The output is keyed by a hash of the content and
the tokenizer, so preparing the same corpus again returns at once. With the "bpe" tokenizer a byte-level BPE
is first trained on the corpus (`gpt.tokenizer.train_bpe`), cached by content and vocabulary size likewise.
`Batches` draws (x, y) windows from a split: random windows as in nanoGPT, or sliding windows with a stride; its
state can be saved and restored for exact resume. A task's examples (gpt/tasks.py) are written the same way, one
example a row (`write_examples`), and drawn as whole rows whose loss counts only the answer (`ExampleBatches`).
"""

from __future__ import annotations

import codecs
import functools
import hashlib
import io
import json
import math
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gpt.config import DataConfig
from gpt.errors import UserInputError
from gpt.paths import cache_dir
from gpt.tokenizer import BPETokenizer, Tokenizer, check_bpe_vocab, from_spec, train_bpe

TEXT_SUFFIXES = (".txt", ".md", ".text", ".markdown")
READ_BLOCK = 1 << 20  # bytes read at a time
FORMAT_VERSION = 1
MAX_META_BYTES = 16 << 20  # meta.json: a char vocabulary and the list of files; nothing near this
SPECIAL_ROOTS = ("/proc", "/sys", "/dev")  # pseudo files a corpus folder may link to: never read
DEFAULT_BPE_VOCAB = (
    DataConfig.bpe_vocab_size
)  # 2048: about 2.6 characters a token on the built-in corpus, against GPT-2's 3.3 with 50,257

# Called as preparing goes on: what it is doing ("training the tokenizer", "tokenizing") and the share done, 0 to 1.
Progress = Callable[[str, float], None]


def open_regular(path: str | Path) -> io.BufferedReader:
    """Open a file for reading in binary, refusing anything but a regular file (a FIFO, device or socket) with an
    OSError *before* blocking on it: the file is opened non-blocking and checked with fstat, so a named pipe swapped
    in after a check cannot hang the reader."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{Path(path).name} is not a regular file (a pipe, device, socket or folder)")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _is_plain_file(f: Path) -> bool:
    """A regular file (through symlinks) that is not a pseudo file of /proc, /sys or /dev (/proc/self/mem, say)."""
    try:
        if not stat.S_ISREG(f.stat().st_mode):
            return False
        real = os.path.realpath(f)
    except (OSError, RuntimeError):  # a dangling or looping link
        return False
    return not any(real == root or real.startswith(root + os.sep) for root in SPECIAL_ROOTS)


@dataclass(frozen=True)
class ExampleRows:
    """How a task's data set is laid out (gpt/tasks.py writes it): one example a row of `width` tokens, its prompt's
    `prompt` tokens then its answer's, the rows one after another in train.bin and val.bin."""

    width: int
    prompt: int

    @property
    def answer(self) -> int:
        return self.width - self.prompt


@dataclass
class PreparedData:
    """A prepared data set on disk, opened as memmaps: a text corpus, or a task's examples (`examples` says how)."""

    dir: Path
    meta: dict[str, Any]
    tokenizer: Tokenizer
    train: np.ndarray
    val: np.ndarray
    examples: ExampleRows | None = None  # a task's: the rows' layout; None for text

    def rows(self, split: str) -> np.ndarray:
        """A task's examples of one split ("train" or "val"), one a row (a view of the memmap)."""
        if self.examples is None:
            raise UserInputError("this data set is text, not a task's examples")
        return (self.train if split == "train" else self.val).reshape(-1, self.examples.width)

    def check_fits(self, block_size: int) -> None:
        """Raise a clear error if a split is too short for one window of `block_size` + 1 tokens."""
        if self.examples is not None and block_size < self.examples.width - 1:
            raise UserInputError(
                f"this task's examples are {self.examples.width} tokens long, but the model's context is "
                f"{block_size}; it needs at least {self.examples.width - 1}"
            )
        need = block_size + 1
        for name, arr in (("training", self.train), ("validation", self.val)):
            if len(arr) < need:
                total = len(self.train) + len(self.val)
                hint = f"lower model.block_size to at most {len(arr) - 1}" if len(arr) > 1 else "add more text"
                raise UserInputError(
                    f"the {name} split has {len(arr):,} tokens (corpus: {total:,}), but a context of "
                    f"{block_size} needs at least {need:,}; add more text or {hint}"
                )

    @functools.cached_property
    def val_bytes(self) -> int:
        """UTF-8 bytes of the text that the val split's tokens stand for: meta.json's, or (data prepared before it
        was recorded there) counted now, one pass over the split."""
        stored = self.meta.get("val_bytes")
        if isinstance(stored, int) and not isinstance(stored, bool) and stored >= len(self.val):  # >= a byte a token
            return stored
        return text_bytes(self.tokenizer, self.val)

    def bits_per_byte(self, loss: float) -> float:
        """A val loss (nats per token) in bits per byte of the text: loss / ln 2 * tokens / bytes. It does not depend
        on the tokenizer (nanochat's measure), so a char, a byte and a BPE run compare; a byte model's is loss / ln 2.
        A task's examples are no text: there it is bits per answer token (loss / ln 2).
        """
        if self.examples is not None:
            return loss / math.log(2)
        return loss / math.log(2) * len(self.val) / max(1, self.val_bytes)


def text_bytes(tok: Tokenizer, ids: np.ndarray) -> int:
    """How many UTF-8 bytes of text the token ids decode to: each token's bytes (a char's 1 to 4, a byte token's 1,
    a BPE token's its merged bytes), times how often it occurs."""
    counts = np.bincount(ids, minlength=tok.vocab_size)[: tok.vocab_size] if len(ids) else np.zeros(tok.vocab_size)
    sizes = np.array([len(tok.decode_bytes([i])) for i in range(tok.vocab_size)], dtype=np.int64)
    return int(counts.astype(np.int64) @ sizes)


def collect_files(inputs: Sequence[str | Path]) -> list[Path]:
    """Expand files and folders (recursively: .txt/.md files, sorted) into a list of files.

    In folders only regular files are taken: links to pipes, devices or pseudo files (/proc/self/mem) are skipped.
    A file named directly must be a regular file too."""
    files: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.suffix.lower() in TEXT_SUFFIXES and _is_plain_file(f))
            if not found:
                raise UserInputError(f"folder {str(p)!r} has no .txt or .md files")
            files.extend(found)
        elif _is_plain_file(p):
            files.append(p)
        elif p.exists():
            raise UserInputError(f"{str(p)!r} is not a regular file (a pipe, device or pseudo file); give a text file")
        else:
            raise UserInputError(f"{str(p)!r} does not exist")
    if not files:
        raise UserInputError("no input files given")
    return files


def prepare(
    inputs: Sequence[str | Path],
    tokenizer: str = "char",
    out: str | Path | None = None,
    val_fraction: float = 0.1,
    cache: str | Path | None = None,
    vocab_size: int = DEFAULT_BPE_VOCAB,
    progress: Progress | None = None,
) -> PreparedData:
    """Tokenize the corpus into `out` (default: `cache`, else the cache directory, keyed by content). Instant when
    already done. `vocab_size`: the "bpe" tokenizer's, trained on this corpus (and cached beside the data sets)."""
    if not 0.0 < val_fraction <= 0.5:
        raise UserInputError(f"val_fraction must be above 0 and at most 0.5, got {val_fraction!r}")
    if tokenizer == "bpe":
        check_bpe_vocab(vocab_size)
    if tokenizer == "symbols":
        raise UserInputError("the symbols tokenizer is a task's (gpt-prepare --task NAME); for text choose char, "
                             "byte, gpt2 or bpe")  # fmt: skip
    files = collect_files(inputs)
    scan = _scan(files, want_chars=(tokenizer == "char"))
    base = Path(cache) if cache else cache_dir() / "datasets"
    if tokenizer == "bpe":
        tok: Tokenizer = _trained_bpe(files, scan, vocab_size, base / "tokenizers", progress)
    else:
        tok = from_spec({"type": tokenizer, "chars": scan.chars})
    key = hashlib.sha256(json.dumps([FORMAT_VERSION, scan.digest, tok.spec(), val_fraction]).encode()).hexdigest()[:24]
    target = Path(out) if out is not None else base / key
    meta_path = target / "meta.json"
    if target.exists() and not target.is_dir():
        raise UserInputError(f"the output {str(target)!r} is a file; give a folder for train.bin, val.bin, meta.json")
    if meta_path.is_file():
        try:
            if _read_meta(meta_path).get("key") == key:
                return load_prepared(target)
        except (OSError, ValueError, UserInputError):
            pass  # a broken earlier output: prepare again
    return _write(files, tok, target, key, val_fraction, scan, progress)


def _trained_bpe(files: list[Path], scan: _Scan, vocab_size: int, cache: Path, progress: Progress | None) -> Tokenizer:
    """A BPE of `vocab_size` trained on the corpus: from the cache when this corpus has had one of that size."""
    key = hashlib.sha256(json.dumps(["bpe", 1, scan.digest, vocab_size]).encode()).hexdigest()[:24]
    path = cache / f"{key}.json"
    if path.is_file():
        try:
            with open_regular(path) as fh:
                return BPETokenizer(fh.read(MAX_META_BYTES).decode("utf-8"))
        except (OSError, ValueError, UserInputError):
            pass  # a broken earlier one: train again
    done = [0]

    def read(n_chars: int) -> None:
        done[0] += n_chars
        if progress is not None:
            progress("training the tokenizer", min(1.0, done[0] / max(scan.n_bytes, 1)))

    tok = train_bpe(iter_text_chunks(files), vocab_size, read)
    if progress is not None:
        progress("training the tokenizer", 1.0)
    try:
        cache.mkdir(parents=True, exist_ok=True)
        _atomic_write_bytes(path, tok.hf_json().encode("utf-8"))
    except OSError:
        pass  # (a cache: a read-only disk only costs training it again)
    return tok


def prepare_text(
    text: str,
    tokenizer: str = "char",
    val_fraction: float = 0.1,
    cache: str | Path | None = None,
    vocab_size: int = DEFAULT_BPE_VOCAB,
    progress: Progress | None = None,
) -> PreparedData:
    """Prepare pasted text like a file holding it. The file is read once and removed: the data set keeps the tokens
    (and is found again by the text's content)."""
    if not text.strip():
        raise UserInputError("the text is empty; paste some text or upload a file")
    base = Path(cache) if cache else cache_dir() / "datasets"
    base.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".paste-", dir=base))
    try:
        path = work / "pasted.txt"
        _atomic_write_bytes(path, text.encode("utf-8"))
        return prepare(
            [path], tokenizer, val_fraction=val_fraction, cache=base, vocab_size=vocab_size, progress=progress
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


def load_prepared(path: str | Path) -> PreparedData:
    """Open a prepared data set (the directory `prepare` wrote)."""
    d = Path(path)
    try:
        meta = _read_meta(d / "meta.json")
        dtype = np.dtype(meta["dtype"])
        if dtype not in (np.uint16, np.uint32):
            raise ValueError("dtype")
        tok = from_spec(meta["tokenizer"])
        train = _open_split(d / "train.bin", dtype)
        val = _open_split(d / "val.bin", dtype)
        for field, arr in (("train_tokens", train), ("val_tokens", val)):
            if meta.get(field) != len(arr) or isinstance(meta.get(field), bool):
                raise ValueError(f"meta.json says {field}={str(meta.get(field))[:20]}, the file holds {len(arr)}")
        if meta.get("vocab_size") != tok.vocab_size:
            raise ValueError(f"meta.json's vocab_size is not its tokenizer's {tok.vocab_size}")
        examples = _example_rows(meta.get("examples"), train, val)
    except (OSError, ValueError, KeyError, TypeError, RecursionError) as e:
        raise UserInputError(
            f"{str(d)!r} is not a prepared data set ({type(e).__name__}: {str(e)[:200]}); "
            "run gpt-prepare on your files first"
        ) from None
    for name, arr in (("train.bin", train), ("val.bin", val)):
        top = int(arr.max()) if len(arr) else 0  # one pass over the memmap: an id past the vocabulary would index
        if top >= tok.vocab_size:  # past the embedding table deep inside the model
            raise UserInputError(
                f"{str(d)!r} is corrupt: {name} holds token id {top:,}, but its {tok.name} tokenizer has only "
                f"{tok.vocab_size:,} tokens; run gpt-prepare on your files again"
            )
    return PreparedData(d, meta, tok, train, val, examples)


def _example_rows(spec: Any, train: np.ndarray, val: np.ndarray) -> ExampleRows | None:
    """meta.json's "examples" (a task's data set), checked against the splits: whole rows, at least one in each."""
    if spec is None:
        return None
    width, prompt = (spec.get("width"), spec.get("prompt")) if isinstance(spec, dict) else (None, None)
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (width, prompt)):
        raise ValueError("meta.json's examples are not a width and a prompt length")
    assert isinstance(width, int) and isinstance(prompt, int)  # (for mypy: checked just above)
    if not 1 <= prompt < width <= 1 << 16:
        raise ValueError(f"meta.json's examples have a prompt of {prompt} tokens in rows of {width}")
    if len(train) % width or len(val) % width or not len(train) or not len(val):
        raise ValueError(f"the splits are not whole, non-empty rows of {width} tokens")
    return ExampleRows(width, prompt)


def write_examples(
    target: Path, tok: Tokenizer, train: np.ndarray, val: np.ndarray, prompt: int, meta: dict[str, Any]
) -> PreparedData:
    """Write a task's examples (rows of token ids: train and held-out) as a prepared data set in `target`: train.bin,
    val.bin and meta.json, as `prepare` writes a corpus's, with the rows' layout and `meta` added. Each file is
    written under a temporary name and renamed into place."""
    dtype = np.uint16 if tok.vocab_size <= 65536 else np.uint32
    try:
        target.mkdir(parents=True, exist_ok=True)
        for name, rows in (("train.bin", train), ("val.bin", val)):
            _atomic_write_bytes(target / name, np.ascontiguousarray(rows, dtype=dtype).tobytes())
    except OSError as e:
        raise UserInputError(
            f"cannot write the data set to {str(target)!r} ({e.strerror or type(e).__name__}); give a folder you "
            "can write to"
        ) from None
    ids = np.concatenate([train.ravel(), val.ravel()])
    counts = np.bincount(ids, minlength=tok.vocab_size)
    chars = text_bytes(tok, ids)  # the symbols' own characters (ASCII), without the spaces between them
    full = {
        "format": FORMAT_VERSION,
        "tokenizer": tok.spec(),
        "vocab_size": tok.vocab_size,
        "dtype": np.dtype(dtype).name,
        "files": [],
        "bytes": chars,
        "chars": chars,
        "train_tokens": int(train.size),
        "val_tokens": int(val.size),
        "val_fraction": len(val) / (len(train) + len(val)),
        "vocab_used": int(np.count_nonzero(counts)),
        "forced_cuts": 0,
        "examples": {"width": int(train.shape[1]), "prompt": prompt},
        **meta,
    }
    _atomic_write_bytes(target / "meta.json", json.dumps(full, indent=2).encode())
    return load_prepared(target)


def _read_meta(path: Path) -> dict[str, Any]:
    """meta.json, read bounded from a regular file; a JSON object or ValueError."""
    with open_regular(path) as fh:
        raw = fh.read(MAX_META_BYTES + 1)
    if len(raw) > MAX_META_BYTES:
        raise ValueError(f"meta.json is larger than {MAX_META_BYTES >> 20} MB")
    meta = json.loads(raw.decode("utf-8"))
    if not isinstance(meta, dict):
        raise ValueError("meta.json is not a JSON object")
    return meta


def _open_split(path: Path, dtype: np.dtype) -> np.ndarray:
    with open_regular(path) as fh:  # a pipe or device is refused, not waited on
        size = os.fstat(fh.fileno()).st_size
        if size == 0:
            return np.zeros(0, dtype=dtype)
        return np.memmap(fh, dtype=dtype, mode="r")


@dataclass
class _Scan:
    digest: str
    n_bytes: int
    chars: str | None


def _scan(files: list[Path], want_chars: bool) -> _Scan:
    """First pass: check every file is UTF-8 text, hash the content, collect the characters (char tokenizer)."""
    h = hashlib.sha256()
    chars: set[str] = set()
    total = 0
    for f in files:
        decoder = codecs.getincrementaldecoder("utf-8-sig")(errors="strict")
        size = 0
        try:
            fh = open_regular(f)
        except OSError as e:
            raise UserInputError(f"{f.name} cannot be read ({e.strerror or e}); give plain text files") from None
        with fh:
            while block := _read_block(fh, f):
                if b"\x00" in block:
                    raise UserInputError(
                        f"{f.name} is not a text file (it has NUL bytes: binary data, or UTF-16 text); "
                        "upload plain text saved as UTF-8"
                    )
                try:
                    text = decoder.decode(block)
                except UnicodeDecodeError as e:
                    raise UserInputError(
                        f"{f.name} is not UTF-8 text (bad byte at offset {size + e.start:,}); "
                        "re-save it as UTF-8 plain text"
                    ) from None
                if want_chars:
                    chars.update(text)
                h.update(block)
                size += len(block)
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            raise UserInputError(f"{f.name} ends in the middle of a UTF-8 character; re-save it as UTF-8") from None
        h.update(b"\x00file-end\x00")
        total += size
    if total == 0:
        raise UserInputError("the corpus is empty; give it some text")
    return _Scan(h.hexdigest(), total, "".join(sorted(chars)) if want_chars else None)


def _read_block(fh: io.BufferedReader, f: Path) -> bytes:
    try:
        return fh.read(READ_BLOCK)
    except OSError as e:  # /proc/self/mem and other files that open but do not read
        raise UserInputError(f"{f.name} cannot be read ({e.strerror or e}); give plain text files") from None


MAX_RUN = 1 << 20  # characters: longer stretches with no safe cut are cut anyway (see iter_text_chunks)


def iter_text_chunks(
    files: list[Path], chunk_chars: int = READ_BLOCK, forced: list[int] | None = None
) -> Iterator[str]:
    """Yield the corpus as text chunks cut just after a newline that precedes a non-space character.

    Cutting there gives the same GPT-2 pre-tokenization as encoding the whole text at once. A stretch of more than
    MAX_RUN characters with no such newline is cut before a space that follows a non-space character (also exact),
    and failing that (megabytes of digits, say) anywhere: without a cut the whole stretch would be one chunk, whose
    tokenization takes minutes. Each such forced cut is counted in `forced` (tokens may differ at those points).
    """
    carry = ""
    for f in files:
        with io.TextIOWrapper(open_regular(f), encoding="utf-8-sig", newline="") as fh:
            while block := fh.read(chunk_chars):
                text = carry + block
                cut = _last_safe_cut(text)
                if cut == 0 and len(text) > MAX_RUN:
                    cut = _last_space_cut(text)
                    if cut == 0:
                        cut = len(text)
                        if forced is not None:
                            forced.append(1)
                carry, piece = text[cut:], text[:cut]
                if piece:
                    yield piece
    if carry:
        yield carry


def _last_safe_cut(text: str) -> int:
    i = len(text) - 1
    while True:
        i = text.rfind("\n", 0, i)
        if i < 0:
            return 0
        if not text[i + 1].isspace():
            return i + 1


def _last_space_cut(text: str) -> int:
    """The last position just before a space that follows a non-space character: " word" pre-tokenizes the same
    whether or not the text is cut there."""
    i = len(text)
    while True:
        i = text.rfind(" ", 0, i)
        if i <= 0:
            return 0
        if not text[i - 1].isspace():
            return i


def _encode_to(
    out_path: Path, files: list[Path], tok: Tokenizer, dtype: type, n_bytes: int, progress: Progress | None
) -> tuple[int, np.ndarray, int]:
    """Tokenize the corpus into one flat file of ids, a few chunks at a time (tokenized in parallel).
    Returns (characters read, count of each token id, forced cuts)."""
    counts = np.zeros(tok.vocab_size, dtype=np.int64)
    n_chars, forced, batch = 0, [], []  # type: int, list[int], list[str]
    with open(out_path, "wb") as out:

        def flush() -> None:
            for ids in tok.encode_arrays(batch):
                ids = ids.astype(dtype, copy=False)
                counts[:] += np.bincount(ids, minlength=tok.vocab_size)[: tok.vocab_size]
                ids.tofile(out)
            batch.clear()

        for chunk in iter_text_chunks(files, forced=forced):
            n_chars += len(chunk)
            batch.append(chunk)
            if len(batch) >= 2 * (os.cpu_count() or 1):
                flush()
                if progress is not None:  # (characters against bytes: exact for ASCII, short of 1 otherwise)
                    progress("tokenizing", min(1.0, n_chars / max(n_bytes, 1)))
        flush()
    if progress is not None:
        progress("tokenizing", 1.0)
    return n_chars, counts, len(forced)


def _write(
    files: list[Path], tok: Tokenizer, target: Path, key: str, val_fraction: float, scan: _Scan,
    progress: Progress | None = None,
) -> PreparedData:  # fmt: skip
    dtype = np.uint16 if tok.vocab_size <= 65536 else np.uint32
    try:
        target.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=".prepare-", dir=target))
    except OSError as e:
        raise UserInputError(
            f"cannot write the data set to {str(target)!r} ({e.strerror or type(e).__name__}); give a folder you "
            "can write to"
        ) from None
    try:
        all_path = work / "tokens.bin"
        n_chars, counts, forced = _encode_to(all_path, files, tok, dtype, scan.n_bytes, progress)
        # the last val_fraction of the ids is the validation split: moved out, the rest truncated in place
        itemsize = np.dtype(dtype).itemsize
        n_total = all_path.stat().st_size // itemsize
        n_val = int(n_total * val_fraction)
        n_train = n_total - n_val
        with open(all_path, "rb") as src, open(work / "val.bin", "wb") as dst:
            src.seek(n_train * itemsize)
            shutil.copyfileobj(src, dst, READ_BLOCK)
        os.truncate(all_path, n_train * itemsize)
        val = np.memmap(work / "val.bin", dtype=dtype, mode="r") if n_val else np.zeros(0, dtype=dtype)
        val_bytes = text_bytes(tok, val)  # for bits per byte
        del val  # (closed before the file moves)
        meta = {
            "key": key,
            "format": FORMAT_VERSION,
            "tokenizer": tok.spec(),
            "vocab_size": tok.vocab_size,
            "dtype": np.dtype(dtype).name,
            "files": [str(f) for f in files],
            "bytes": scan.n_bytes,
            "chars": n_chars,
            "train_tokens": n_train,
            "val_tokens": n_val,
            "val_bytes": val_bytes,
            "val_fraction": val_fraction,
            "vocab_used": int(np.count_nonzero(counts)),
            "forced_cuts": forced,
        }
        os.replace(all_path, target / "train.bin")
        os.replace(work / "val.bin", target / "val.bin")
        _atomic_write_bytes(target / "meta.json", json.dumps(meta, indent=2).encode())
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return load_prepared(target)


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


class Batches:
    """Draws (x, y) token windows from one split.

    mode "random": `batch_size` random offsets per call (nanoGPT). mode "sliding": consecutive windows
    `stride` tokens apart, wrapping around. Under DDP each rank draws different windows (`rank`, `world`).
    """

    def __init__(
        self,
        data: np.ndarray,
        block_size: int,
        batch_size: int,
        mode: str = "random",
        stride: int = 0,
        seed: int = 0,
        rank: int = 0,
        world: int = 1,
    ) -> None:
        if len(data) < block_size + 1:
            raise UserInputError(f"{len(data)} tokens cannot fill a window of {block_size + 1}")
        self.data, self.block_size, self.batch_size = data, block_size, batch_size
        self.mode, self.stride = mode, stride or block_size
        self.rank, self.world = rank, world
        self.n_windows = len(data) - block_size  # number of valid start offsets
        self.generator = torch.Generator().manual_seed(seed * 1000 + rank)
        self.cursor = 0

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.mode == "random":
            starts = torch.randint(self.n_windows, (self.batch_size,), generator=self.generator).numpy()
        else:
            k = np.arange(self.batch_size) * self.world + self.rank + self.cursor
            starts = (k * self.stride) % self.n_windows
            self.cursor += self.batch_size * self.world
        rows = self.data[starts[:, None] + np.arange(self.block_size + 1)]
        t = torch.from_numpy(rows.astype(np.int64))
        return t[:, :-1], t[:, 1:]

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state(), "cursor": self.cursor}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
        self.cursor = int(state["cursor"])


def answer_xy(rows: torch.Tensor, prompt: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, y) of whole examples (rows of token ids, the answer after `prompt` tokens): x each row but its last token,
    y the next tokens with every target outside the answer set to -1, which the model's cross-entropy ignores, so
    that the loss counts only the answer's tokens (the prompt is given, not predicted)."""
    x, y = rows[:, :-1], rows[:, 1:].clone()
    y[:, : prompt - 1] = -1
    return x, y


class ExampleBatches:
    """Draws (x, y) from a task's examples (`answer_xy`): `batch_size` different rows at random per call, or, when
    the batch holds them all (the classic grokking setting: full batch), every row each call, the same tensors.
    Under DDP each rank draws its own rows (full batch: every world-th row). Its state, like `Batches`', is the
    generator and a cursor, so a resumed run draws what the uninterrupted one would have."""

    def __init__(self, rows: np.ndarray, prompt: int, batch_size: int, seed: int = 0, rank: int = 0,
                 world: int = 1) -> None:  # fmt: skip
        self.rows, self.prompt, self.batch_size = rows, prompt, batch_size
        self.generator = torch.Generator().manual_seed(seed * 1000 + rank)
        self.cursor = 0  # (unused: kept for the state's shape, which trainer.pt's check expects)
        self.full: tuple[torch.Tensor, torch.Tensor] | None = None
        if batch_size * world >= len(rows):
            self.full = answer_xy(torch.from_numpy(rows[rank::world].astype(np.int64)), prompt)

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.full is not None:
            return self.full
        picked = torch.randperm(len(self.rows), generator=self.generator)[: self.batch_size].numpy()
        return answer_xy(torch.from_numpy(self.rows[picked].astype(np.int64)), self.prompt)

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state(), "cursor": self.cursor}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
        self.cursor = int(state["cursor"])


class DeviceBatches:
    """`Batches` on the training device, one batch ahead (as nanoGPT's loop fetches): the next batch is drawn and,
    on CUDA, put in pinned memory and copied asynchronously while the GPU still runs the current step; the loop
    never waits for a copy, and never syncs with the GPU for one.

    Its state is that of the batches not yet handed out: a run resumed from it draws exactly the batch that the
    uninterrupted run was about to use, not the one after."""

    def __init__(self, batches: Batches | ExampleBatches, device: torch.device) -> None:
        self.batches, self.device = batches, device
        self._ahead: tuple[torch.Tensor, torch.Tensor, dict[str, Any]] | None = None

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        current = self._ahead or self._fetch()
        self._ahead = self._fetch()
        return current[0], current[1]

    def _fetch(self) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
        state = self.batches.state_dict()
        x, y = self.batches.next()
        if self.device.type == "cuda":
            x, y = x.pin_memory(), y.pin_memory()  # (an asynchronous copy needs page-locked memory)
        return x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True), state

    def state_dict(self) -> dict[str, Any]:
        return self._ahead[2] if self._ahead is not None else self.batches.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.batches.load_state_dict(state)
        self._ahead = None
