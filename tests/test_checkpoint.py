"""Checkpoints: round trip, atomic layout, and refusal of corrupt or hostile files."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest
import torch

from gpt import checkpoint as ckpt
from gpt.config import Config
from gpt.errors import CheckpointError
from gpt.model import GPT
from gpt.tokenizer import CharTokenizer


def saved(tmp_path: Path, with_state: bool = True) -> Path:
    cfg = Config()
    cfg.model.vocab_size, cfg.model.block_size, cfg.model.n_layer, cfg.model.n_head, cfg.model.n_embd = 5, 8, 1, 1, 8
    torch.manual_seed(0)
    model = GPT(cfg.model)
    state = {"step": 3, "weights": torch.ones(2)} if with_state else None
    return ckpt.save(tmp_path / "run" / "latest", model, cfg, CharTokenizer("abcde"), 3, {"val_loss": 1.5}, state)


def test_round_trip(tmp_path: Path) -> None:
    path = saved(tmp_path)
    assert sorted(p.name for p in path.iterdir()) == ["config.json", "model.safetensors", "trainer.pt"]
    loaded = ckpt.load(tmp_path / "run")  # a run directory resolves to its latest/
    assert loaded.step == 3 and loaded.tokenizer.encode("bad") == [1, 0, 3]
    assert loaded.model.lm_head.weight is loaded.model.transformer.wte.weight
    torch.manual_seed(0)
    ref = GPT(loaded.config.model)
    x = torch.tensor([[0, 1, 2]])
    assert torch.equal(ref.eval()(x)[0], loaded.model(x)[0])
    assert ckpt.load_trainer_state(path)["step"] == 3
    rows = ckpt.list_checkpoints(tmp_path)
    assert [r["step"] for r in rows] == [3] and rows[0]["val_loss"] == 1.5


def test_half_written_checkpoints_are_not_listed(tmp_path: Path) -> None:
    saved(tmp_path)
    tmp = tmp_path / "run" / ".latest.tmp123"
    tmp.mkdir()
    (tmp / "config.json").write_text((tmp_path / "run" / "latest" / "config.json").read_text())
    assert len(ckpt.list_checkpoints(tmp_path)) == 1


def test_malicious_pickle_in_trainer_state_is_not_executed(tmp_path: Path) -> None:
    path = saved(tmp_path)
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    with open(path / "trainer.pt", "wb") as f:
        pickle.dump({"step": Evil()}, f)
    with pytest.raises(CheckpointError, match="cannot be loaded safely"):
        ckpt.load_trainer_state(path)
    assert not marker.exists()


def test_corrupt_weights_are_rejected(tmp_path: Path) -> None:
    path = saved(tmp_path)
    data = (path / "model.safetensors").read_bytes()
    (path / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="missing or corrupt"):
        ckpt.load(path)


def test_config_that_does_not_match_tensors_is_rejected(tmp_path: Path) -> None:
    path = saved(tmp_path)
    meta = json.loads((path / "config.json").read_text())
    meta["config"]["model"]["n_embd"] = 16
    meta["config"]["model"]["n_head"] = 2
    (path / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="do not match"):
        ckpt.load(path)


@pytest.mark.parametrize(
    "mutate,message",
    [
        (lambda m: m.update(format="something-else"), "not a GPT Playground checkpoint"),
        (lambda m: m["config"]["model"].update(n_layer=10000), "bad config"),
        (lambda m: m.update(tokenizer={"type": "evil"}), "bad config"),
    ],
)
def test_foreign_or_absurd_configs_are_rejected(tmp_path: Path, mutate, message: str) -> None:
    path = saved(tmp_path)
    meta = json.loads((path / "config.json").read_text())
    mutate(meta)
    (path / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=message):
        ckpt.load(path)


def test_not_json_and_not_a_checkpoint(tmp_path: Path) -> None:
    path = saved(tmp_path)
    (path / "config.json").write_bytes(b"\x80\x04not json")
    with pytest.raises(CheckpointError, match="corrupt"):
        ckpt.load(path)
    with pytest.raises(CheckpointError, match="not a checkpoint"):
        ckpt.load(tmp_path / "elsewhere")


def test_a_save_killed_between_its_renames_is_recovered(tmp_path: Path) -> None:
    path = saved(tmp_path)
    os.replace(path, path.with_name(".latest.old4242"))  # the state a kill between the two renames leaves
    assert ckpt.load(tmp_path / "run").step == 3
    assert path.is_dir() and not path.with_name(".latest.old4242").exists()
