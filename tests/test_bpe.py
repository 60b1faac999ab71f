"""The BPE tokenizer trained on the user's corpus: a hand-computed merge sequence, round trips of any text, the same
ids as `transformers`' fast tokenizer from our tokenizer.json, the cache, and hostile input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpt import checkpoint as ckpt
from gpt.config import Config
from gpt.data import load_prepared, prepare
from gpt.errors import UserInputError
from gpt.model import GPT
from gpt.tokenizer import (
    BPE_MAX_VOCAB,
    BPETokenizer,
    ByteTokenizer,
    CharTokenizer,
    bpe_report,
    compression,
    from_spec,
    merge_steps,
    train_bpe,
)

CORPUS = ("It was the best of times, it was the worst of times, it was the age of wisdom, it was the age of "
          "foolishness. Ünïcödé 日本語 🙂 naïve café\n\n\tTabs and  spaces, 12345 numbers.\n") * 40  # fmt: skip


@pytest.fixture(scope="module")
def bpe() -> BPETokenizer:
    return train_bpe([CORPUS], 400)


def test_hand_computed_merges() -> None:
    # "ababab abab ab" splits (GPT-2's pattern) into "ababab", " abab", " ab". Pairs: a+b 3 + 2 + 1 = 6 times, more
    # than b+a (3) or space+a (2): "ab" first. Then ab+ab stands twice in "ab ab ab" and once in " ab ab": 3, more
    # than space+ab (2): "abab". Every pair left is seen once, below the trainer's minimum of 2: it stops.
    tok = train_bpe(["ababab abab ab"], 300)
    assert tok.vocab_size == 256 + 2
    report = bpe_report(tok, "ababab abab ab")
    assert [(m.left, m.right, m.merged, m.count) for m in report.merges] == [
        ("a", "b", "ab", 6),
        ("ab", "ab", "abab", 3),
    ]
    assert [tok.token_text(i) for i in tok.encode("ababab")] == ["abab", "ab"]
    assert merge_steps(tok, "ababab") == [["a", "b", "a", "b", "a", "b"], ["ab", "ab", "ab"], ["abab", "ab"]]
    assert report.longest[0] == "abab"


@settings(max_examples=150, deadline=None)
@given(st.text(st.characters(exclude_categories=["Cs"]), max_size=200))  # (lone surrogates are not text: below)
def test_round_trip_any_unicode(bpe: BPETokenizer, text: str) -> None:
    ids = bpe.encode(text)
    assert all(0 <= i < bpe.vocab_size for i in ids)
    assert bpe.decode(ids) == text
    assert b"".join(bpe.token_bytes(i) for i in ids) == text.encode("utf-8")


def test_learns_and_compresses(bpe: BPETokenizer) -> None:
    assert 300 < bpe.vocab_size <= 400  # (fewer when every word of the corpus is one token already)
    assert len(bpe.encode(" the worst of times")) < 6  # whole words became tokens
    steps = merge_steps(bpe, " foolishness")
    assert steps[0] == list(" foolishness") and len(steps) > 3
    assert steps[-1] == [bpe.token_text(i) for i in bpe.encode(" foolishness")]  # what the encoder gives
    rows = {c.tokenizer: c for c in compression(CORPUS, {"bpe": bpe, "byte": ByteTokenizer(),
                                                          "char": CharTokenizer.from_text(CORPUS)})}  # fmt: skip
    assert rows["byte"].bytes_per_token == 1 and rows["char"].chars_per_token == 1
    assert rows["bpe"].chars_per_token > 3 * rows["char"].chars_per_token
    report = bpe_report(bpe, CORPUS)
    assert report.merges[0].count >= report.merges[-1].count > 0  # the most frequent pair is merged first


def test_same_ids_as_transformers_fast_tokenizer(bpe: BPETokenizer, tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    path = tmp_path / "tokenizer.json"
    path.write_text(bpe.hf_json(), encoding="utf-8")
    fast = transformers.PreTrainedTokenizerFast(tokenizer_file=str(path))
    for text in (CORPUS, "<|endoftext|> it was", "  leading spaces\r\n\x00nul 🙂🙂", "x" * 3000, ""):
        assert fast(text, add_special_tokens=False)["input_ids"] == bpe.encode(text)
        assert fast.decode(bpe.encode(text)) == text


def test_spec_round_trip_and_checkpoint(bpe: BPETokenizer, tmp_path: Path) -> None:
    again = from_spec(json.loads(json.dumps(bpe.spec())))
    assert again.spec() == bpe.spec() and again.encode(CORPUS) == bpe.encode(CORPUS)
    cfg = Config()
    cfg.model.vocab_size, cfg.model.n_layer, cfg.model.n_embd, cfg.model.n_head, cfg.model.block_size = (
        448,
        1,
        32,
        2,
        16,
    )
    saved = ckpt.save(tmp_path / "ck", GPT(cfg.model), cfg, bpe, step=0)
    assert json.loads((saved / ckpt.HF_TOKENIZER).read_text()) == json.loads(bpe.hf_json())
    loaded = ckpt.load(saved)
    assert loaded.tokenizer.encode(CORPUS) == bpe.encode(CORPUS)
    # its zip (the app's download) goes back in through the upload's checks, tokenizer.json and all
    from gpt.archive import zip_dir

    archive = zip_dir(saved, tmp_path / "ck.zip")
    unpacked = ckpt.unpack(archive, tmp_path / "up", max_bytes=50 << 20)
    assert ckpt.load(unpacked).tokenizer.spec() == bpe.spec()


def test_prepare_trains_once_and_caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    corpus = tmp_path / "c.txt"
    corpus.write_text(CORPUS * 5, encoding="utf-8")
    seen: list[tuple[str, float]] = []
    d = prepare([corpus], "bpe", cache=tmp_path / "cache", vocab_size=300, progress=lambda w, f: seen.append((w, f)))
    assert d.tokenizer.name == "bpe" and d.meta["vocab_size"] == 300
    assert d.tokenizer.decode([int(i) for i in d.train]) + d.tokenizer.decode([int(i) for i in d.val]) == CORPUS * 5
    assert ("training the tokenizer", 1.0) in seen
    assert load_prepared(d.dir).tokenizer.spec() == d.tokenizer.spec()
    import gpt.data

    def no_training(*_a: object, **_k: object) -> BPETokenizer:
        raise AssertionError("trained again")

    monkeypatch.setattr(gpt.data, "train_bpe", no_training)
    other = prepare([corpus], "bpe", cache=tmp_path / "cache", vocab_size=300, val_fraction=0.2)  # a new data set
    assert other.tokenizer.spec() == d.tokenizer.spec()  # the cached tokenizer
    with pytest.raises(AssertionError, match="trained again"):
        prepare([corpus], "bpe", cache=tmp_path / "cache", vocab_size=301)  # another size: trained afresh


@pytest.mark.parametrize("size", [10**9, 259, 0, -5, True, 2.5, "512"])
def test_vocabulary_size_out_of_range_is_refused(size: object, tmp_path: Path) -> None:
    corpus = tmp_path / "c.txt"
    corpus.write_text(CORPUS, encoding="utf-8")
    with pytest.raises(UserInputError, match=f"260 .* to {BPE_MAX_VOCAB:,}"):
        prepare([corpus], "bpe", cache=tmp_path, vocab_size=size)  # type: ignore[arg-type]


def test_cli_refuses_a_huge_vocabulary_in_one_line(tmp_path: Path) -> None:
    corpus = tmp_path / "c.txt"
    corpus.write_text(CORPUS, encoding="utf-8")
    r = subprocess.run([sys.executable, "-m", "gpt.cli", "prepare", str(corpus), "--tokenizer", "bpe", "--vocab-size",
                        "1000000000", "--out", str(tmp_path / "d")], capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "32,768" in r.stderr and "Traceback" not in r.stderr


def test_hostile_corpora(tmp_path: Path) -> None:
    # one huge line with no spaces (3 MB of letters, then of digits): trains and tokenizes in bounded time
    corpus = tmp_path / "line.txt"
    corpus.write_text("abcdefghij" * 300_000 + "0123456789" * 10_000, encoding="utf-8")
    d = prepare([corpus], "bpe", cache=tmp_path / "cache", vocab_size=512)
    assert d.meta["train_tokens"] + d.meta["val_tokens"] < 1_000_000
    tok = d.tokenizer
    with pytest.raises(UserInputError, match="surrogate"):
        tok.encode("bad \ud800 text")
    with pytest.raises(UserInputError, match="tokenizer.json"):
        BPETokenizer("{not json")
    with pytest.raises(UserInputError, match="byte-level BPE"):
        BPETokenizer(
            json.dumps({"version": "1.0", "model": {"type": "WordLevel", "vocab": {"a": 0}, "unk_token": "a"}})
        )
    with pytest.raises(UserInputError, match="at most"):
        from_spec({"type": "bpe", "tokenizer_json": " " * (4 << 20)})
