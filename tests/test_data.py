"""Preparing corpora (files, folders, bad input, the cache) and drawing batches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gpt.corpus import markdown_to_text, sample_corpus_path
from gpt.data import Batches, iter_text_chunks, load_prepared, prepare, prepare_text
from gpt.errors import UserInputError
from gpt.tokenizer import GPT2Tokenizer


def test_prepare_multi_file_and_folder(tmp_path: Path) -> None:
    folder = tmp_path / "corpus"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text("First file.\n" * 50, encoding="utf-8")
    (folder / "sub" / "b.md").write_text("Second file.\n" * 50, encoding="utf-8")
    (folder / "ignored.bin").write_bytes(b"\x00\x01")
    d = prepare([folder], tokenizer="char", out=tmp_path / "out")
    assert len(d.meta["files"]) == 2
    text = (folder / "a.txt").read_text() + (folder / "sub" / "b.md").read_text()
    ids = np.concatenate([d.train, d.val]).tolist()
    assert d.tokenizer.decode(ids) == text
    assert d.meta["train_tokens"] + d.meta["val_tokens"] == len(text)
    assert d.meta["val_tokens"] == int(len(text) * 0.1)
    assert d.train.dtype == np.uint16
    # two files given one by one give the same tokens
    d2 = prepare([folder / "a.txt", folder / "sub" / "b.md"], tokenizer="char", out=tmp_path / "out2")
    assert np.array_equal(d2.train, d.train)


def test_gpt2_prepare_equals_encoding_the_whole_text(tmp_path: Path) -> None:
    p = tmp_path / "t.txt"
    text = "".join(f"Line {i}: some words, and  spaces\n\n  indented {i}\n" for i in range(30000))
    p.write_text(text, encoding="utf-8")
    d = prepare([p], tokenizer="gpt2", out=tmp_path / "o", val_fraction=0.05)
    assert len(list(iter_text_chunks([p]))) > 1  # really chunked
    assert np.concatenate([d.train, d.val]).tolist() == GPT2Tokenizer().encode(text)


def test_second_prepare_is_a_cache_hit(corpus_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "o"
    prepare([corpus_file], tokenizer="byte", out=out)
    mtime = (out / "train.bin").stat().st_mtime_ns
    again = prepare([corpus_file], tokenizer="byte", out=out)
    assert (out / "train.bin").stat().st_mtime_ns == mtime
    assert again.meta["key"] == load_prepared(out).meta["key"]
    # changed content or tokenizer: prepared anew
    other = prepare([corpus_file], tokenizer="char", out=out)
    assert other.meta["tokenizer"]["type"] == "char"


@pytest.mark.parametrize(
    "content,message",
    [
        (b"", "empty"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "not a text file"),
        ("hello world".encode("utf-16"), "not a text file"),
        ("caf\xe9 cr\xe8me".encode("latin-1"), "not UTF-8"),
        (b"ok\n\xc3", "middle of a UTF-8"),
    ],
)
def test_bad_files_get_clear_errors_naming_the_file(tmp_path: Path, content: bytes, message: str) -> None:
    bad = tmp_path / "bad_input.txt"
    bad.write_bytes(content)
    with pytest.raises(UserInputError, match=message) as err:
        prepare([bad], tokenizer="char", out=tmp_path / "o")
    assert "bad_input.txt" in str(err.value) or message == "empty"


def test_missing_path_and_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match="does not exist"):
        prepare([tmp_path / "nope.txt"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserInputError, match="no .txt or .md"):
        prepare([tmp_path / "empty"])


def test_too_short_corpus_says_how_many_tokens(tmp_path: Path) -> None:
    p = tmp_path / "short.txt"
    p.write_text("just a few words here", encoding="utf-8")
    d = prepare([p], tokenizer="char", out=tmp_path / "o")
    with pytest.raises(UserInputError, match=r"has \d+ tokens .* needs at least 65"):
        d.check_fits(64)


def test_prepare_text_for_pasted_input() -> None:
    d = prepare_text("To be, or not to be, that is the question.\n" * 20, tokenizer="char")
    assert d.meta["vocab_used"] == len(set("To be, or not to be, that is the question.\n"))
    with pytest.raises(UserInputError, match="empty"):
        prepare_text("   \n")


def test_random_batches_are_shifted_windows_and_restorable(corpus_file: Path, tmp_path: Path) -> None:
    d = prepare([corpus_file], tokenizer="char", out=tmp_path / "o")
    b = Batches(d.train, block_size=16, batch_size=4, seed=1)
    x, y = b.next()
    assert x.shape == y.shape == (4, 16)
    assert np.array_equal(x[:, 1:].numpy(), y[:, :-1].numpy())
    state = b.state_dict()
    expected = b.next()
    b2 = Batches(d.train, block_size=16, batch_size=4, seed=99)
    b2.load_state_dict(state)
    got = b2.next()
    assert all(np.array_equal(a.numpy(), c.numpy()) for a, c in zip(expected, got, strict=True))


def test_sliding_batches_step_by_stride(corpus_file: Path, tmp_path: Path) -> None:
    d = prepare([corpus_file], tokenizer="char", out=tmp_path / "o")
    b = Batches(d.train, block_size=8, batch_size=3, mode="sliding", stride=4)
    x, _ = b.next()
    data = np.asarray(d.train)
    assert [x[i].tolist() for i in range(3)] == [data[s : s + 8].tolist() for s in (0, 4, 8)]
    x2, _ = b.next()
    assert x2[0].tolist() == data[12:20].tolist()


def test_sample_corpus_is_plain_shakespeare() -> None:
    text = sample_corpus_path().read_text(encoding="utf-8")
    assert len(text) > 1_000_000
    assert "HAMLET:\n" in text and "**" not in text and "#" not in text
    md = "# Play\n\n## ACT I\n\n_Enter ROMEO_\n\n**ROMEO**  \nBut, soft!  \nWhat light.\n"
    assert markdown_to_text(md) == "ROMEO:\nBut, soft!\nWhat light.\n"


def test_bits_per_byte_count_the_texts_real_bytes(tmp_path: Path) -> None:
    """Each "ab€" line is 4 characters, 6 UTF-8 bytes; the last tenth of 1,000 lines is the val split: 100 whole."""
    import json
    import math

    corpus = tmp_path / "euro.txt"
    corpus.write_text("ab€\n" * 1000, encoding="utf-8")
    byte = prepare([corpus], tokenizer="byte", out=tmp_path / "byte")
    assert byte.meta["val_bytes"] == byte.meta["val_tokens"] == 600
    assert byte.bits_per_byte(2.0) == 2.0 / math.log(2)  # a byte model: a token is a byte
    char = prepare([corpus], tokenizer="char", out=tmp_path / "char")
    assert (char.meta["val_tokens"], char.meta["val_bytes"]) == (400, 600)
    assert char.bits_per_byte(2.0) == pytest.approx(2.0 / math.log(2) * 400 / 600)
    for name in ("bpe", "gpt2"):  # any tokenizer: the bytes its val tokens decode to
        d = prepare([corpus], tokenizer=name, out=tmp_path / name, vocab_size=300)
        assert d.val_bytes == len(d.tokenizer.decode_bytes(d.val.tolist())), name
    # data prepared before the byte count was recorded: counted when asked for, the same
    meta = json.loads((tmp_path / "char" / "meta.json").read_text())
    del meta["val_bytes"]
    (tmp_path / "char" / "meta.json").write_text(json.dumps(meta))
    old = load_prepared(tmp_path / "char")
    assert "val_bytes" not in old.meta and old.val_bytes == 600 and old.bits_per_byte(2.0) == char.bits_per_byte(2.0)
