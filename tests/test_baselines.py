"""The counting models the loss chart draws as dashed lines (gpt.baselines), against hand counts."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gpt.baselines import PRIOR, baselines


def test_the_unigram_and_bigram_losses_are_the_hand_counted_ones() -> None:
    train = np.array([0, 1, 0, 1, 0, 1, 0, 2])  # 0 always followed by 1, except once by 2
    val = np.array([0, 1, 2])
    b = baselines(train, val, vocab_size=4)
    assert b is not None
    # unigram, add-one: counts 4, 3, 1, 0 of 8 -> (5, 4, 2, 1) / 12
    p = np.array([5, 4, 2, 1]) / 12
    assert b.unigram == pytest.approx(-(math.log(p[0]) + math.log(p[1]) + math.log(p[2])) / 3)
    # bigram: after 0 came 1 three times of four, 2 once; after 1 came 0 three times of three
    p01 = (3 + PRIOR * p[1]) / (4 + PRIOR)
    p12 = (0 + PRIOR * p[2]) / (3 + PRIOR)  # never seen: the unigram model's share
    assert b.bigram == pytest.approx(-(math.log(p01) + math.log(p12)) / 2)


def test_a_text_with_structure_has_a_bigram_loss_below_its_unigram_loss() -> None:
    rng = np.random.default_rng(0)
    text = np.tile(np.arange(20), 500)  # each token always followed by the next
    b = baselines(text, text[:1000], vocab_size=20)
    assert b is not None and b.bigram < 0.1 < math.log(20) - 0.1 < b.unigram
    noise = rng.integers(0, 20, 10_000)  # no structure: the bigram model learns nothing the unigram one does not
    b = baselines(noise, rng.integers(0, 20, 2_000), vocab_size=20)
    assert b is not None and abs(b.bigram - b.unigram) < 0.05


def test_too_short_splits_have_no_baselines() -> None:
    assert baselines(np.array([1]), np.array([1, 2]), 4) is None
