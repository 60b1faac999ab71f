"""The modern recipe's switches, Muon and the warmup-stable-decay schedule: each works everywhere a model goes.

Per switch: causality, the KV cache and the explicit (Inspect) path equal the fast forward pass, a checkpoint
round-trips exactly, a short run learns and resumes exactly. Muon: its updates are near-orthogonal, it holds the
blocks' matrices only, and its state is saved, checked and restored."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from gpt import checkpoint as ckpt
from gpt.config import Activation, Config, ModelConfig, Norm, Position, apply_overrides, choices, load_config
from gpt.data import prepare
from gpt.errors import CheckpointError, UserInputError
from gpt.interop import export_refusals, gpt2_incompatible
from gpt.model import GPT
from gpt.tokenizer import CharTokenizer
from gpt.trainer import Trainer, lr_at
from tests.test_trainer import losses, run, small_config

# Each switch alone (against GPT-2's default), and all of them at once: the modern recipe.
SWITCHES: list[dict[str, object]] = [
    *({"pos": v} for v in choices(Position)[1:]),
    *({"norm": v} for v in choices(Norm)[1:]),
    *({"activation": v} for v in choices(Activation)[1:]),
    {"qk_norm": True},
    {"tie_head": False},
    {"zero_init": True},
    {"bias": False},
    {
        "pos": "rope",
        "norm": "rmsnorm",
        "activation": "relu2",
        "qk_norm": True,
        "tie_head": False,
        "zero_init": True,
        "bias": False,
    },  # fmt: skip
]
IDS = ["-".join(f"{k}={v}" for k, v in s.items()) if len(s) == 1 else "modern" for s in SWITCHES]


def model(**switches: object) -> GPT:
    torch.manual_seed(0)
    m = GPT(ModelConfig(vocab_size=50, block_size=16, n_layer=2, n_head=2, n_embd=32, **switches))  # type: ignore[arg-type]
    with torch.no_grad():  # zero-initialised projections would make every check below trivially true
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return m.eval()


@pytest.mark.parametrize("switches", SWITCHES, ids=IDS)
def test_a_future_token_cannot_change_an_earlier_logit(switches: dict[str, object]) -> None:
    m = model(**switches)
    x = torch.randint(0, 50, (1, 12))
    y = x.clone()
    y[0, 7:] = (y[0, 7:] + 1) % 50
    a, b = m(x)[0], m(y)[0]
    assert torch.allclose(a[0, :7], b[0, :7], atol=1e-6)
    assert not torch.allclose(a[0, 7:], b[0, 7:], atol=1e-4)


@pytest.mark.parametrize("switches", SWITCHES, ids=IDS)
def test_kv_cache_and_inspect_paths_equal_the_full_forward_pass(switches: dict[str, object]) -> None:
    m = model(**switches)
    x = torch.randint(0, 50, (2, 16))
    full, _ = m(x)
    assert (m.forward_inspect(x).logits - full).abs().max() < 1e-5
    cache = m.new_cache(2)
    # a prompt, then one token at a time (rope at each cached offset), then a chunk after the cached positions
    parts = [m(x[:, :5], cache=cache)[0]] + [m(x[:, i : i + 1], cache=cache)[0] for i in range(5, 9)]
    parts.append(m(x[:, 9:], cache=cache)[0])
    assert (torch.cat(parts, dim=1) - full).abs().max() < 1e-5


@pytest.mark.parametrize("switches", SWITCHES, ids=IDS)
def test_a_checkpoint_round_trips_exactly(switches: dict[str, object], tmp_path: Path) -> None:
    m = model(**switches)
    cfg = Config(model=m.config)
    ckpt.save(tmp_path / "c", m, cfg, CharTokenizer("abcdefghij"), 7)
    loaded = ckpt.load(tmp_path / "c")
    assert loaded.config.model == m.config
    assert loaded.model.tied == (m.config.tie_head is True)
    x = torch.randint(0, 50, (1, 16))
    assert torch.equal(loaded.model(x)[0], m(x)[0])


def test_an_old_checkpoint_without_the_switches_loads_as_gpt2(tmp_path: Path) -> None:
    """config.json written before the switches existed: missing keys mean the GPT-2 recipe."""
    import json

    m = model()
    ckpt.save(tmp_path / "old", m, Config(model=m.config), CharTokenizer("abcdefghij"), 1)
    meta = json.loads((tmp_path / "old" / "config.json").read_text())
    for key in ("pos", "norm", "activation", "qk_norm", "tie_head", "zero_init"):
        del meta["config"]["model"][key]
    for key in ("optimizer", "muon_lr", "decay_fraction"):
        del meta["config"]["train"][key]
    (tmp_path / "old" / "config.json").write_text(json.dumps(meta))
    loaded = ckpt.load(tmp_path / "old")
    assert loaded.config.model == ModelConfig(vocab_size=50, block_size=16, n_layer=2, n_head=2, n_embd=32)
    assert loaded.config.train.optimizer == "adamw" and loaded.model.tied


@pytest.fixture
def data(corpus_file: Path, tmp_path: Path):
    return prepare([corpus_file], tokenizer="char", out=tmp_path / "data")


def recipe(switches: dict[str, object], **train: object) -> Config:
    cfg = small_config(**train)
    for k, v in switches.items():
        setattr(cfg.model, k, v)
    return cfg.validate()


@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
@pytest.mark.parametrize("switches", [SWITCHES[0], SWITCHES[2], SWITCHES[-1]], ids=["rope", "relu2", "modern"])
def test_a_short_run_learns_and_resumes_exactly(
    switches: dict[str, object], optimizer: str, data, tmp_path: Path
) -> None:
    cfg = recipe(switches, max_steps=24, optimizer=optimizer, schedule="wsd", lr=3e-3)
    full = losses(run(cfg, data, tmp_path / "full"))
    assert full[24] < full[1] - 0.5  # it learns
    part = Trainer(cfg, data, tmp_path / "part")
    part.listeners.append(lambda e: part.stop() if e.kind == "step" and e.step == 12 else None)
    assert part.run().status == "stopped"
    resumed = losses(run(cfg, data, tmp_path / "part", resume=tmp_path / "part"))
    assert sorted(resumed) == list(range(13, 25))
    for step, loss in resumed.items():
        assert loss == pytest.approx(full[step], abs=1e-6), step


def test_muon_takes_the_blocks_matrices_and_adamw_the_rest() -> None:
    m = model(tie_head=False)
    adamw, muon = m.optimizers(small_config(optimizer="muon").train, "cpu")
    assert isinstance(adamw, torch.optim.AdamW) and isinstance(muon, torch.optim.Muon)
    names = {id(p): n for n, p in m.named_parameters()}
    in_muon = {names[id(p)] for g in muon.param_groups for p in g["params"]}
    in_adamw = {names[id(p)] for g in adamw.param_groups for p in g["params"]}
    assert in_muon == {n for n, p in m.named_parameters() if ".h." in n and p.dim() == 2}
    assert {"transformer.wte.weight", "lm_head.weight", "transformer.wpe.weight"} <= in_adamw
    assert not in_muon & in_adamw and len(in_muon | in_adamw) == len(list(m.parameters()))
    assert all(g["base_lr"] == 0.02 for g in muon.param_groups)  # muon_lr, scaled by the schedule from there


def test_a_muon_step_is_close_to_orthogonal() -> None:
    """Newton-Schulz leaves the update U S' V^T with every singular value S' in a band around 1 (Keller Jordan's
    quintic: roughly 0.5 to 1.5), whatever the gradient's own spread of singular values."""
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.zeros(64, 32))
    opt = torch.optim.Muon([w], lr=1.0, weight_decay=0.0, momentum=0.0, nesterov=False)
    w.grad = torch.randn(64, 4) @ torch.randn(4, 32) + 0.01 * torch.randn(64, 32)  # nearly rank 4
    opt.step()
    update = -w.detach()
    s = torch.linalg.svdvals(update / (64 / 32) ** 0.5)  # torch scales the rate by sqrt(rows / cols)
    top = s[:4]
    assert top.min() > 0.5 and top.max() < 1.5, s
    g = torch.linalg.svdvals(w.grad)
    assert g[0] / g[3] > 1.5  # the gradient's were spread; the update's are not


@pytest.mark.parametrize("nesterov", [True, False])
def test_muon_in_float32_where_bf16_is_slow_takes_torchs_step(nesterov: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where bf16 matrix products are emulated (a CPU without native bf16) our Muon orthogonalises in float32; it is
    torch's update all the same (up to bf16's rounding, which torch's own path has), step after step, wide and tall
    matrices, and the same momentum buffers (a checkpoint resumes on either path)."""
    import gpt.model as model_module

    torch.manual_seed(0)
    weights = [torch.randn(64, 32), torch.randn(16, 48)]
    ours_p = [torch.nn.Parameter(w.clone()) for w in weights]
    ref_p = [torch.nn.Parameter(w.clone()) for w in weights]
    kw = dict(lr=0.02, weight_decay=0.01, nesterov=nesterov)
    ours, ref = model_module.Muon(ours_p, **kw), torch.optim.Muon(ref_p, **kw)
    monkeypatch.setattr(model_module, "slow_bf16", lambda device: True)
    for _ in range(3):
        for a, b in zip(ours_p, ref_p, strict=True):
            a.grad = b.grad = torch.randn_like(a)
        ours.step()
        ref.step()
    for a, b, w in zip(ours_p, ref_p, weights, strict=True):
        moved = (b - w).norm()
        assert (a - b).norm() < 0.02 * moved  # bf16's rounding, no more
        assert torch.equal(ours.state[a]["momentum_buffer"], ref.state[b]["momentum_buffer"])
    monkeypatch.setattr(model_module, "slow_bf16", lambda device: False)  # where bf16 is fast: torch's own step
    for a, b in zip(ours_p, ref_p, strict=True):
        a.grad = b.grad = torch.randn_like(a)
    before = [a.detach().clone() for a in ours_p]
    ours.step()
    ref.step()
    assert all(not torch.equal(a, x) for a, x in zip(ours_p, before, strict=True))


def test_a_muon_state_from_adamw_or_crafted_is_refused(data, tmp_path: Path) -> None:
    run(recipe({}, max_steps=6, optimizer="muon"), data, tmp_path / "muon")
    run(recipe({}, max_steps=6), data, tmp_path / "adamw")
    with pytest.raises(UserInputError, match="optimizer"):
        Trainer(recipe({}, max_steps=12), data, tmp_path / "x", resume=tmp_path / "muon")
    with pytest.raises(UserInputError, match="optimizer"):
        Trainer(recipe({}, max_steps=12, optimizer="muon"), data, tmp_path / "y", resume=tmp_path / "adamw")
    trainer = Trainer(recipe({}, max_steps=12, optimizer="muon"), data, tmp_path / "z")
    state = ckpt.load_trainer_state(tmp_path / "muon")
    assert state is not None and "muon" in state
    ckpt.check_trainer_state(state, trainer.optimizers)  # as saved: fits
    buf = next(iter(state["muon"]["state"].values()))
    buf["momentum_buffer"] = buf["momentum_buffer"][:1]
    with pytest.raises(CheckpointError, match="Muon state for parameter"):
        ckpt.check_trainer_state(state, trainer.optimizers)
    state = ckpt.load_trainer_state(tmp_path / "muon")
    assert state is not None
    state["muon"]["param_groups"][0]["ns_steps"] = 99  # 20x the work of every later step
    with pytest.raises(CheckpointError, match="ns_steps"):
        ckpt.check_trainer_state(state, trainer.optimizers)


def test_warmup_stable_decay_holds_the_rate_then_falls_linearly() -> None:
    tc = small_config(lr=1.0, min_lr=0.1, warmup_steps=10, max_steps=110, schedule="wsd", decay_fraction=0.2).train
    assert lr_at(0, tc) == pytest.approx(0.1)
    assert lr_at(9, tc) == pytest.approx(1.0)
    assert lr_at(50, tc) == lr_at(87, tc) == 1.0  # stable until the last 22 steps
    assert lr_at(99, tc) == pytest.approx(1.0 - 0.9 * 11 / 22)
    assert lr_at(110, tc) == pytest.approx(0.1)


def test_bad_choices_say_what_they_may_be() -> None:
    with pytest.raises(UserInputError, match="model.pos must be learned or rope, not 'alibi'"):
        apply_overrides(Config(), ["model.pos=alibi"])
    with pytest.raises(UserInputError, match="train.optimizer must be adamw or muon"):
        apply_overrides(Config(), ["train.optimizer=sgd"])
    with pytest.raises(UserInputError, match="even size"):
        apply_overrides(Config(), ["model.pos=rope", "model.n_embd=20", "model.n_head=4"])


def test_the_presets_are_the_recipes() -> None:
    """configs/tiny.yaml and small.yaml train the modern recipe; their -2019 twins GPT-2's, at nanoGPT's settings."""
    for size in ("tiny", "small"):
        modern, old = load_config(f"configs/{size}.yaml"), load_config(f"configs/{size}-2019.yaml")
        shape = ("block_size", "n_layer", "n_head", "n_embd")
        assert [getattr(modern.model, k) for k in shape] == [getattr(old.model, k) for k in shape]
        assert old.model.switches == ModelConfig().switches and old.train.optimizer == "adamw"
        assert modern.model.pos == "rope" and modern.train.optimizer == "muon" and modern.train.schedule == "wsd"
        assert gpt2_incompatible(old.model) == [] and "model.pos=rope" in " ".join(gpt2_incompatible(modern.model))
        assert export_refusals(modern.model) == []  # the model every learner trains leaves the app (Hugging Face)
