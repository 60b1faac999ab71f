"""What a model learns beyond letter frequencies: the val split's loss under counting models of the train split.

A unigram model predicts each token from how often it occurs; a bigram model from how often it follows the one
before. Both are fitted on the train split in one pass of counting and scored on the val split like the transformer
(nats per token, then bits per byte of text), so the loss chart can draw them as dashed lines: a run below the bigram
line has learned more than which token tends to follow which.

Smoothing: add-one for the unigram model (every token of the vocabulary stays possible); the bigram model backs off
to the unigram one with a pseudo-count of `PRIOR` observations, p(b | a) = (n(a, b) + PRIOR p(b)) / (n(a) + PRIOR),
so a pair never seen in training costs what the unigram model says, not infinity.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from gpt.data import PreparedData

MAX_TRAIN = 4_000_000  # tokens counted (the first ones): seconds at most, and the counts have settled long before
MAX_VAL = 500_000  # tokens scored
PRIOR = 1.0  # the bigram model's pseudo-count towards the unigram model


@dataclass(frozen=True)
class Baselines:
    """The val split's loss (nats per token) under the two counting models."""

    unigram: float
    bigram: float


def baselines(train: np.ndarray, val: np.ndarray, vocab_size: int) -> Baselines | None:
    """The unigram and bigram models of `train` scored on `val` (token ids); None when a split is too short."""
    train = np.asarray(train[:MAX_TRAIN], dtype=np.int64)
    val = np.asarray(val[:MAX_VAL], dtype=np.int64)
    if len(train) < 2 or len(val) < 2 or vocab_size < 1:
        return None
    counts = np.bincount(train, minlength=vocab_size).astype(np.float64)
    p_uni = (counts + 1.0) / (counts.sum() + vocab_size)
    unigram = float(-np.log(p_uni[val]).mean())

    # pairs as one integer each: the counts of those seen in training, looked up for the val pairs
    pairs, seen = np.unique(train[:-1] * vocab_size + train[1:], return_counts=True)
    asked = val[:-1] * vocab_size + val[1:]
    at = np.clip(np.searchsorted(pairs, asked), 0, len(pairs) - 1)
    n_ab = np.where(pairs[at] == asked, seen[at], 0).astype(np.float64)
    n_a = np.bincount(train[:-1], minlength=vocab_size).astype(np.float64)[val[:-1]]
    p_bi = (n_ab + PRIOR * p_uni[val[1:]]) / (n_a + PRIOR)
    bigram = float(-np.log(p_bi).mean())
    return Baselines(unigram, bigram) if math.isfinite(unigram) and math.isfinite(bigram) else None


def baseline_bpb(data: PreparedData) -> Baselines | None:
    """`baselines` of a prepared corpus, in bits per byte of its text (the loss chart's scale that compares across
    tokenizers); None for a task's examples (no text: its answers are scored by accuracy) or splits too short."""
    if data.examples is not None:
        return None
    found = baselines(data.train, data.val, data.tokenizer.vocab_size)
    return None if found is None else Baselines(data.bits_per_byte(found.unigram), data.bits_per_byte(found.bigram))
