"""The repeated-words corpus: the built-in text on which the tiny preset forms induction heads (gpt.corpus)."""

from __future__ import annotations

import re

from gradio_client import Client

from gpt.corpus import REPEATS_CHARS, repeats_corpus_path
from gpt.data import prepare


def test_each_line_is_a_random_word_twice_and_the_text_is_the_same_every_time() -> None:
    text = repeats_corpus_path().read_text(encoding="utf-8")
    lines = text.splitlines()
    assert REPEATS_CHARS <= len(text) < REPEATS_CHARS + 100
    assert all(re.fullmatch(r"([a-z]{8,28}) \1", line) for line in lines)
    assert len(set(lines)) > 0.99 * len(lines)  # random words: nothing to learn but the second copy
    assert prepare([repeats_corpus_path()], tokenizer="char").tokenizer.vocab_size == 28  # a-z, space, newline


def test_the_data_tab_offers_it(app_url: str) -> None:
    c = Client(app_url, verbose=False)
    stats, tokens, *_ = c.predict("Repeated words (induction heads)", [], "", "char", 0.1, api_name="/prepare_data")
    assert "Repeated words (induction heads)" in stats and "28" in stats
    assert re.search(r"([a-z]{8,28})\s*\1", re.sub(r"<[^>]+>", "", tokens).replace("↵", "\n"))
