"""The counting models the loss chart draws as dashed lines (gpt.baselines), against hand counts."""

from __future__ import annotations

import math
from pathlib import Path

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


def test_a_run_records_its_corpus_baselines_and_the_loss_chart_draws_them(tmp_path: Path) -> None:
    from gpt.config import Config, ModelConfig
    from gpt.corpus import sample_corpus_path
    from gpt.data import prepare
    from gpt.events import read_metrics, run_listeners
    from gpt.trainer import Trainer
    from playground.charts import loss_figure

    cfg = Config()
    cfg.model = ModelConfig(block_size=16, n_layer=1, n_head=2, n_embd=16)
    t = cfg.train
    t.max_steps, t.batch_size, t.eval_interval, t.eval_iters, t.sample_interval, t.health_interval = 2, 2, 2, 1, 0, 0
    t.tensorboard = False
    data = prepare([sample_corpus_path()], tokenizer="char")
    Trainer(cfg, data, tmp_path / "run", listeners=run_listeners(tmp_path / "run", False)).run()
    curves = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert curves.baselines is not None
    b = baselines(data.train, data.val, data.tokenizer.vocab_size)
    assert b is not None and curves.baselines.bigram == pytest.approx(data.bits_per_byte(b.bigram), rel=1e-6)
    assert 2.5 < curves.baselines.bigram < curves.baselines.unigram < 5  # Shakespeare, in bits per character
    figure = loss_figure(curves)
    lines = [s for s in figure.layout.shapes if s.line.dash == "dash"]
    assert [round(s.y0, 6) for s in lines] == [round(curves.baselines.unigram, 6), round(curves.baselines.bigram, 6)]
