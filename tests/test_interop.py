"""GPT-2 weights in and out of the Hugging Face format, checked against `transformers` itself."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gpt import checkpoint as ckpt
from gpt.config import Config, ModelConfig
from gpt.errors import CheckpointError
from gpt.interop import from_hf, load_hf, to_hf
from gpt.model import GPT
from gpt.tokenizer import CharTokenizer, GPT2Tokenizer

transformers = pytest.importorskip("transformers")

SHAPES = {
    "tiny": dict(n_layer=2, n_head=2, n_embd=64, n_positions=64, vocab_size=50257),
    "wide": dict(n_layer=3, n_head=4, n_embd=128, n_positions=128, vocab_size=50257),
}


def hf_model(shape: dict[str, int], seed: int = 0):
    torch.manual_seed(seed)
    cfg = transformers.GPT2Config(**shape, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    return transformers.GPT2LMHeadModel(cfg).eval()


@pytest.mark.parametrize("name", SHAPES)
def test_import_gives_the_same_logits_and_greedy_ids(name: str, tmp_path: Path) -> None:
    ref = hf_model(SHAPES[name])
    ref.save_pretrained(tmp_path / "hf")
    out = from_hf(tmp_path / "hf", tmp_path / "ours")
    ours = ckpt.load(out).model
    x = torch.randint(0, 50257, (2, SHAPES[name]["n_positions"]))
    with torch.no_grad():
        diff = (ref(x).logits - ours(x)[0]).abs().max().item()
    print(f"{name}: import max |logit diff| = {diff:.2e} (transformers {transformers.__version__})")
    assert diff < 1e-4
    prompt = torch.tensor([[464, 3290, 318]])
    want = ref.generate(prompt, max_new_tokens=50, do_sample=False, pad_token_id=50256)[0, 3:].tolist()
    ids = prompt[0].tolist()
    with torch.no_grad():
        for _ in range(50):
            ids.append(int(ours(torch.tensor([ids[-SHAPES[name]["n_positions"] :]]))[0][0, -1].argmax()))
    assert ids[3:] == want


@pytest.mark.parametrize("name", SHAPES)
def test_export_loads_in_transformers_with_the_same_logits(name: str, tmp_path: Path) -> None:
    s = SHAPES[name]
    cfg = Config(model=ModelConfig(vocab_size=50304, block_size=s["n_positions"], n_layer=s["n_layer"],
                                   n_head=s["n_head"], n_embd=s["n_embd"]))  # fmt: skip
    cfg.data.tokenizer = "gpt2"
    torch.manual_seed(1)
    model = GPT(cfg.model).eval()
    ckpt.save(tmp_path / "ours", model, cfg, GPT2Tokenizer(), step=5)
    to_hf(tmp_path / "ours", tmp_path / "hf")
    theirs = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "hf").eval()
    x = torch.randint(0, 50257, (2, s["n_positions"]))
    with torch.no_grad():
        diff = (theirs(x).logits - model(x)[0]).abs().max().item()
    print(f"{name}: export max |logit diff| = {diff:.2e}")
    assert diff < 1e-4
    tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    assert tok("Hello world")["input_ids"] == [15496, 995]


def test_round_trip_is_bit_exact(tmp_path: Path) -> None:
    ref = hf_model(SHAPES["tiny"])
    ref.save_pretrained(tmp_path / "hf")
    from_hf(tmp_path / "hf", tmp_path / "ours")
    to_hf(tmp_path / "ours", tmp_path / "hf2")
    again = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "hf2")
    a, b = ref.state_dict(), again.state_dict()
    for k in a:
        if k.endswith((".attn.bias", ".attn.masked_bias")):
            continue
        assert torch.equal(a[k], b[k]), k


def test_char_model_exports_with_its_tokenizer(tmp_path: Path) -> None:
    cfg = Config(model=ModelConfig(vocab_size=5, block_size=16, n_layer=1, n_head=1, n_embd=8))
    tok = CharTokenizer("abcde")
    ckpt.save(tmp_path / "ours", GPT(cfg.model), cfg, tok, step=1)
    to_hf(tmp_path / "ours", tmp_path / "hf")
    assert json.loads((tmp_path / "hf" / "gpt_playground_tokenizer.json").read_text())["chars"] == "abcde"
    assert transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "hf").config.vocab_size == 5
    model, back = load_hf(tmp_path / "hf")
    assert back.encode("bad") == tok.encode("bad")


def test_pytorch_bin_is_read_without_unpickling_code(tmp_path: Path) -> None:
    ref = hf_model(SHAPES["tiny"])
    ref.save_pretrained(tmp_path / "hf")
    (tmp_path / "hf" / "model.safetensors").unlink()  # the older format: a pickled state dict
    torch.save(ref.state_dict(), tmp_path / "hf" / "pytorch_model.bin")
    model, _ = load_hf(tmp_path / "hf")
    x = torch.randint(0, 50257, (1, 8))
    with torch.no_grad():
        assert (ref(x).logits - model(x)[0]).abs().max() < 1e-4
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"x": Evil()}, tmp_path / "hf" / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="cannot be loaded safely"):
        load_hf(tmp_path / "hf")
    assert not marker.exists()


def test_gpt_convert_cli(tmp_path: Path) -> None:
    hf_model(SHAPES["tiny"]).save_pretrained(tmp_path / "hf")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    run = lambda *a: subprocess.run(
        [sys.executable, "-m", "gpt.cli", "convert", *a], capture_output=True, text=True, env=env
    )  # noqa: E501
    r = run("from-hf", str(tmp_path / "hf"), str(tmp_path / "ours"))
    assert r.returncode == 0, r.stderr
    r = run("to-hf", str(tmp_path / "ours"), str(tmp_path / "back"))
    assert r.returncode == 0 and (tmp_path / "back" / "model.safetensors").is_file()
    r = run("from-hf", str(tmp_path / "nowhere"), str(tmp_path / "x"))
    assert r.returncode == 2 and "not a Hugging Face model directory" in r.stderr
