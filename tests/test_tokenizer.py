"""Tokenizers: known GPT-2 ids offline, round trips, decoding that never raises, the hash-verified files."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from gpt.errors import UserInputError
from gpt.tokenizer import (
    GPT2_FILES,
    ByteTokenizer,
    CharTokenizer,
    GPT2Tokenizer,
    from_spec,
    gpt2_file_paths,
)

TEXT = "Hello world! Ünïcödé — 日本語 🙂\n\tTabs and  spaces."


def test_gpt2_known_ids_offline() -> None:
    tok = GPT2Tokenizer()
    assert tok.encode("Hello world") == [15496, 995]
    assert tok.encode(" the") == [262]
    assert tok.vocab_size == 50257
    assert tok.decode(tok.encode(TEXT)) == TEXT
    # user text containing the special token's spelling is plain text, not token 50256
    assert 50256 not in tok.encode("<|endoftext|>")


@pytest.mark.parametrize("tok", [ByteTokenizer(), CharTokenizer.from_text(TEXT), GPT2Tokenizer()])
def test_round_trip_and_spec(tok) -> None:
    assert tok.decode(tok.encode(TEXT)) == TEXT
    again = from_spec(tok.spec())
    assert again.encode(TEXT) == tok.encode(TEXT)
    assert again.vocab_size == tok.vocab_size


@pytest.mark.parametrize("tok", [ByteTokenizer(), CharTokenizer("abc"), GPT2Tokenizer()])
def test_decode_never_raises(tok) -> None:
    assert isinstance(tok.decode([-1, 10**9, 0, 1]), str)
    assert tok.decode([10**9]) == "\ufffd"


def test_stream_decoder_holds_back_partial_utf8() -> None:
    tok = ByteTokenizer()
    ids = tok.encode("é🙂")
    dec = tok.stream_decoder()
    pieces = [dec.push(i) for i in ids]
    assert pieces[0] == "" and "".join(pieces) == "é🙂"
    assert ByteTokenizer().decode(ids[:3]) == "é\ufffd"  # a cut sequence decodes to a replacement, no error


def test_char_tokenizer_is_sorted_and_rejects_unseen() -> None:
    tok = CharTokenizer.from_text("hello")
    assert tok.chars == ["e", "h", "l", "o"]
    assert tok.encode("hole") == [1, 3, 2, 0]
    with pytest.raises(UserInputError, match="never saw"):
        tok.encode("help")


def test_bad_spec_is_rejected() -> None:
    with pytest.raises(UserInputError):
        from_spec({"type": "pickle"})


def test_gpt2_files_prefer_tiktoken_cache_and_ignore_wrong_hashes(tmp_path: Path, monkeypatch) -> None:
    package_paths = gpt2_file_paths()
    assert set(package_paths) == {"vocab.bpe", "encoder.json"}
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    url, _ = GPT2_FILES["vocab.bpe"]
    cached = tmp_path / hashlib.sha1(url.encode()).hexdigest()
    cached.write_bytes(package_paths["vocab.bpe"].read_bytes())
    assert gpt2_file_paths()["vocab.bpe"] == cached  # the cache wins when its hash is right
    cached.write_bytes(b"tampered")
    assert gpt2_file_paths()["vocab.bpe"] == package_paths["vocab.bpe"]  # a bad hash is ignored
