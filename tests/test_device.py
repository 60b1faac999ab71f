"""The speed defaults chosen for the user: compute dtype, mixed precision on CPU, bf16 sampling copies."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import gpt.device as device
from gpt.config import Config, ModelConfig, SampleConfig
from gpt.data import prepare
from gpt.device import autocast, pick_dtype, sampling_model
from gpt.events import Event
from gpt.generate import stream
from gpt.model import GPT
from gpt.sampling import window_start
from gpt.tokenizer import ByteTokenizer
from gpt.trainer import Trainer

CPU = torch.device("cpu")


def tiny(block_size: int = 32) -> GPT:
    torch.manual_seed(0)
    return GPT(ModelConfig(vocab_size=256, block_size=block_size, n_layer=2, n_head=2, n_embd=64))


@pytest.mark.parametrize("native", [True, False])
def test_auto_dtype_on_cpu_is_bf16_only_where_the_cpu_has_it(native: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(device, "cpu_has_native_bf16", lambda: native)
    assert pick_dtype("auto", CPU) == (torch.bfloat16 if native else torch.float32)
    assert pick_dtype("float32", CPU) == torch.float32  # an explicit choice always wins
    assert pick_dtype("auto", torch.device("mps")) == torch.float32


def test_bf16_autocast_gives_fp32s_loss_and_gradients_within_bf16_precision() -> None:
    m = tiny().train()
    x = torch.randint(0, 256, (4, 32))
    _, loss32 = m(x, x)
    assert loss32 is not None
    grads32 = torch.autograd.grad(loss32, list(m.parameters()))
    with autocast(CPU, torch.bfloat16):
        _, loss16 = m(x, x)
    assert loss16 is not None and loss16.dtype == torch.float32  # the loss itself is computed in fp32
    grads16 = torch.autograd.grad(loss16, list(m.parameters()))
    assert abs(loss16.item() - loss32.item()) < 0.02 * loss32.item()
    for g32, g16 in zip(grads32, grads16, strict=True):
        assert g16.dtype == torch.float32  # weights and their gradients stay fp32
        cos = torch.nn.functional.cosine_similarity(g32.flatten(), g16.flatten(), dim=0)
        assert cos > 0.99


def test_training_with_bf16_autocast_learns(corpus_file: Path, tmp_path: Path) -> None:
    cfg = Config()
    cfg.model.block_size, cfg.model.n_layer, cfg.model.n_head, cfg.model.n_embd = 32, 2, 2, 64
    t = cfg.train
    t.batch_size, t.max_steps, t.warmup_steps, t.lr, t.eval_interval, t.eval_iters = 8, 150, 10, 3e-3, 150, 4
    t.log_interval, t.sample_interval, t.checkpoint_interval, t.tensorboard = 10, 0, 0, False
    t.dtype = "bfloat16"
    events: list[Event] = []
    data = prepare([corpus_file], tokenizer="char", out=tmp_path / "data")
    Trainer(cfg.validate(), data, tmp_path / "run", listeners=[events.append]).run()
    assert events[0].data.dtype == "bfloat16"
    steps = [e.data.loss for e in events if e.kind == "step"]
    assert steps[-1] < 0.6 * steps[0]  # a repeated verse: the loss must fall well below where it started


def test_sampling_copy_is_bf16_for_large_models_and_leaves_the_original(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(device, "cpu_has_native_bf16", lambda: True)
    monkeypatch.setattr(device, "BF16_SAMPLING_MIN_PARAMS", 1)
    m = tiny().eval()
    fast = sampling_model(m)
    assert fast is not m and fast.lm_head.weight.dtype == torch.bfloat16
    assert fast.lm_head.weight is fast.transformer.wte.weight  # still tied
    assert m.lm_head.weight.dtype == torch.float32  # the original keeps its exact weights
    x = torch.randint(0, 256, (1, 20))
    exact, approx = m(x)[0], fast(x)[0].float()
    assert (exact - approx).abs().max() < 0.05 * exact.abs().max()
    # The KV cache works in bf16 too: a greedy stream equals greedy decoding without a cache over the window the
    # sampler keeps, past the context as well.
    tok = ByteTokenizer()
    streamed = [t.id for t in stream(fast, tok, "hello", SampleConfig(max_new_tokens=40, temperature=0))]
    ids = tok.encode("hello")
    with torch.no_grad():
        for _ in range(40):
            ids.append(int(fast(torch.tensor([ids[window_start(len(ids), 32) :]]))[0][0, -1].argmax()))
    assert streamed == ids[5:]


@pytest.mark.parametrize("native, min_params", [(True, 10**9), (False, 1)])
def test_small_models_and_cpus_without_bf16_sample_from_the_model_itself(
    native: bool, min_params: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(device, "cpu_has_native_bf16", lambda: native)
    monkeypatch.setattr(device, "BF16_SAMPLING_MIN_PARAMS", min_params)
    m = tiny().eval()
    assert sampling_model(m) is m
