"""The static decode step (gpt.decode): the same logits and tokens as the eager path, compiled or not.

The compiled tests compile for real (a few seconds each with torch's on-disk cache, 10-20 s without it)."""

from __future__ import annotations

import threading
from typing import Any

import pytest
import torch

from gpt import decode
from gpt.config import ModelConfig, SampleConfig
from gpt.generate import stream
from gpt.model import GPT
from gpt.sampling import pick, pick_static, sample_params
from gpt.tokenizer import ByteTokenizer

SMALL = dict(vocab_size=256, block_size=32, n_layer=2, n_head=2, n_embd=32)
SWITCHES: list[dict[str, Any]] = [
    {},  # GPT-2's
    dict(pos="rope", norm="rmsnorm", activation="relu2", qk_norm=True, tie_head=False, bias=False),  # the modern
    dict(activation="swiglu", pos="rope"),
    # Llama's / Qwen3's: grouped-query attention (4 query heads sharing 2 key/value heads), learned norm gains
    dict(
        pos="rope",
        norm="rmsnorm",
        activation="swiglu",
        qk_norm=True,
        norm_gain=True,
        n_head=4,
        n_kv_head=2,
        bias=False,
        tie_head=False,
    ),  # fmt: skip
]
ALL_ON = dict(top_k=20, top_p=0.9, min_p=0.05, repetition_penalty=1.3, presence_penalty=0.2, frequency_penalty=0.1)


def model_with(seed: int = 0, **switches: Any) -> GPT:
    torch.manual_seed(seed)
    m = GPT(ModelConfig(**{**SMALL, **switches})).eval()
    with torch.no_grad():  # weights of a trained model's size: a random init's logits are nearly all equal
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return m


def eager_ids(model: GPT, prompt: str, cfg: SampleConfig, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    with monkeypatch.context() as mp:
        mp.setattr(decode.Decoder, "fast_step", lambda self: None)
        return [t.id for t in stream(model, ByteTokenizer(), prompt, cfg)]


@pytest.mark.parametrize("switches", SWITCHES)
def test_the_static_step_gives_the_logits_of_the_cached_forward(switches: dict[str, Any]) -> None:
    m = model_with(**switches)
    ids = torch.randint(0, 256, (1, 20))
    d = decode.Decoder(m, 256)
    with torch.inference_mode():
        m(ids[:, :5], cache=d.cache)  # prefill eagerly, as the sampler does
        expected, _ = m(ids, last_only=False)
        for t in range(5, 20):
            logits = m.decode_step(ids[:, t : t + 1], torch.tensor(t), d.cache.layers)
            assert torch.allclose(logits[0], expected[0, t], atol=1e-5)


def test_the_branch_free_sampler_picks_what_the_eager_one_picks() -> None:
    gen = torch.Generator().manual_seed(0)
    V = 50
    for trial in range(200):
        raw = torch.randn(V, generator=gen) * 3
        history = torch.randint(0, V, (int(torch.randint(1, 30, (1,), generator=gen)),), generator=gen)
        cfg = SampleConfig(
            temperature=[0.0, 0.7, 1.3][trial % 3],
            top_k=[0, 5, 49, 50, 80][trial % 5],
            top_p=[1.0, 0.9, 0.3, 0.05][trial % 4],
            min_p=[0.0, 0.1][trial % 2],
            repetition_penalty=[1.0, 1.5][trial % 2],
            presence_penalty=[0.0, 0.5][(trial // 2) % 2],
            frequency_penalty=[0.0, 0.3, -0.2][trial % 3],
        )
        seed = 1000 + trial
        want = pick(raw, history, cfg, torch.Generator().manual_seed(seed), V, 5)
        counts = torch.bincount(history, minlength=V).float()
        noise = torch.empty(V).exponential_(generator=torch.Generator().manual_seed(seed))
        got = pick_static(raw, counts, sample_params(cfg, raw.device), noise, 5)
        assert int(got[0]) == want[0], cfg
        assert float(got[1]) == pytest.approx(want[1], rel=1e-6)
        assert got[2].tolist() == [i for i, _ in want[2]]
        assert counts[want[0]] == torch.bincount(history, minlength=V)[want[0]] + 1  # the pick is counted


@pytest.fixture(scope="module")
def compiled() -> list[GPT]:
    """GPT-2's recipe, the modern one, GPT-2's at another width and a grouped-query (Llama-like) model: compiled once
    for the tests below."""
    models = [model_with(**SWITCHES[0]), model_with(**SWITCHES[1]), model_with(1, n_embd=48, n_head=3)]
    models.append(model_with(**SWITCHES[3]))
    for m in models:
        decode.warm_up(m, 256)  # (in the background: all three at once)
    for m in models:
        decode.warm_up(m, 256, wait=True)
    return models


def test_compiled_decoding_is_token_for_token_the_eager_one(
    compiled: list[GPT], monkeypatch: pytest.MonkeyPatch
) -> None:
    for m in (compiled[0], compiled[1], compiled[3]):
        state = decode.warm_up(m, 256, wait=True)
        assert state is not None and state.error is None and state.step is not None
        with decode.decoder(m, 256) as d:
            assert d.fast_step() is not None
        # 100 tokens from a 32-token context: the compiled step makes most, the eager refills of the window the rest
        for cfg in (
            SampleConfig(max_new_tokens=100, temperature=0),
            SampleConfig(max_new_tokens=100, seed=3, **ALL_ON),
        ):
            compiled = [t.id for t in stream(m, ByteTokenizer(), "The cat", cfg)]
            assert compiled == eager_ids(m, "The cat", cfg, monkeypatch)


def test_each_model_gets_its_own_compiled_step(compiled: list[GPT]) -> None:
    """Guards are skipped: a second model of another shape must not be handed the first one's graph."""
    a, b = compiled[0], compiled[2]
    cfg = SampleConfig(max_new_tokens=20, temperature=0)
    for m in (a, b):
        with torch.inference_mode():
            ids, want = ByteTokenizer().encode("hello"), []
            for _ in range(20):
                want.append(int(m(torch.tensor([ids + want]))[0][0, -1].argmax()))
        assert [t.id for t in stream(m, ByteTokenizer(), "hello", cfg)] == want


def test_two_generations_at_once_from_one_model_do_not_share_a_cache(compiled: list[GPT]) -> None:
    m = compiled[1]
    cfg = SampleConfig(max_new_tokens=60, temperature=0)
    alone = {p: [t.id for t in stream(m, ByteTokenizer(), p, cfg)] for p in ("abc", "xyz")}
    together: dict[str, list[int]] = {}
    start = threading.Barrier(2)

    def run(p: str) -> None:
        start.wait()
        together[p] = [t.id for t in stream(m, ByteTokenizer(), p, cfg)]

    threads = [threading.Thread(target=run, args=(p,)) for p in alone]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert together == alone


def test_vocabulary_padding_is_never_picked_nor_shown(compiled: list[GPT], monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(5)
    m = GPT(ModelConfig(**{**SMALL, "vocab_size": 320})).eval()  # 256 byte tokens + 64 of padding
    with torch.no_grad():
        m.lm_head.weight[256:] += 5.0  # the padding's logits the highest of all: a sampler that looked would take them
        m.transformer.wte.weight[256:] = m.lm_head.weight[256:]
    state = decode.warm_up(m, 256, wait=True)
    assert state is not None and state.step is not None
    for cfg in (SampleConfig(max_new_tokens=60, temperature=0), SampleConfig(max_new_tokens=60, seed=1, **ALL_ON)):
        tokens = list(stream(m, ByteTokenizer(), "hello", cfg))
        assert all(t.id < 256 for t in tokens) and all(len(t.alternatives) == 5 for t in tokens if t.alternatives)
        assert [t.id for t in tokens] == eager_ids(m, "hello", cfg, monkeypatch)


def test_a_failed_compile_leaves_decoding_eager(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("no C++ compiler here")

    monkeypatch.setattr(torch, "compile", broken)
    m = model_with(4)
    state = decode.warm_up(m, 256, wait=True)
    assert state is not None and state.step is None and "no C++ compiler" in (state.error or "")
    cfg = SampleConfig(max_new_tokens=10, temperature=0)
    assert len([t.id for t in stream(m, ByteTokenizer(), "hi", cfg)]) == 10


def test_large_models_and_other_devices_do_not_compile() -> None:
    big = GPT(ModelConfig(vocab_size=256, block_size=64, n_layer=8, n_head=8, n_embd=512))  # 25M parameters
    assert not decode.compiles(big) and decode.warm_up(big, 256) is None
    assert decode.compiles(model_with())


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.mark.cuda
@cuda
def test_the_cuda_graph_decodes_token_for_token_as_the_eager_path(monkeypatch: pytest.MonkeyPatch) -> None:
    for switches in SWITCHES:
        m = model_with(**switches).cuda()
        for cfg in (SampleConfig(max_new_tokens=80, temperature=0), SampleConfig(max_new_tokens=80, seed=3, **ALL_ON)):
            graphed = [t.id for t in stream(m, ByteTokenizer(), "The cat", cfg)]
            assert graphed == eager_ids(m, "The cat", cfg, monkeypatch)
        with decode.decoder(m, 256) as d:
            assert d.graph is not None and not d.broken  # captured, and replayed for the second generation
        # a prompt one short of the context: the first static step is at the last position (the capture's warm-up
        # must not step past it)
        cfg = SampleConfig(max_new_tokens=40, temperature=0)
        prompt = "x" * (m.config.block_size - 1)
        assert [t.id for t in stream(m, ByteTokenizer(), prompt, cfg)] == eager_ids(m, prompt, cfg, monkeypatch)


@pytest.mark.cuda
@cuda
def test_cuda_training_compiles_by_default_and_reports_it(tmp_path: Any) -> None:
    from gpt.data import prepare
    from gpt.trainer import Trainer

    corpus = tmp_path / "c.txt"
    corpus.write_text("to be or not to be, that is the question. " * 400)
    data = prepare([corpus], tokenizer="char", out=tmp_path / "data")
    cfg = ModelConfig(block_size=32, n_layer=2, n_head=2, n_embd=64)
    from gpt.config import Config

    c = Config()
    c.model = cfg
    c.train.max_steps, c.train.eval_interval, c.train.eval_iters, c.train.sample_interval = 20, 10, 2, 10
    c.train.tensorboard = False
    events: list[Any] = []
    Trainer(c.validate(), data, tmp_path / "run", listeners=[events.append]).run()
    compiles = [e.data for e in events if e.kind == "compile"]
    assert compiles[0].seconds is None and compiles[1].seconds > 0 and not compiles[1].fallback
    assert events[-1].data.status == "completed"


def test_a_dropped_model_is_freed_with_its_decoders_and_compiled_step() -> None:
    """The app keeps its 4 latest models: the pools and compiled steps kept per model must not keep them alive."""
    import gc
    import weakref

    refs = []
    for seed in range(2):
        m = model_with(seed)
        decode.warm_up(m, 256, wait=True)
        assert len([t for t in stream(m, ByteTokenizer(), "hi", SampleConfig(max_new_tokens=20))]) >= 20
        refs.append(weakref.ref(m))
        del m
    gc.collect()
    assert [r() for r in refs] == [None, None]
