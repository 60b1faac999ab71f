"""GPT-2, Llama, Qwen3 and Arcee weights in and out of the Hugging Face format, checked against `transformers` itself.

The Llama-family models are random ones built by `transformers` in the test (tiny shapes, grouped-query attention,
tied and untied heads, norm gains other than one), so nothing is downloaded."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gpt import checkpoint as ckpt
from gpt import interop
from gpt.config import Config, ModelConfig, load_config
from gpt.errors import CheckpointError, UserInputError
from gpt.interop import HF_CLASS, export_refusals, from_hf, hf_target, load_hf, to_hf
from gpt.model import GPT
from gpt.tokenizer import ByteTokenizer, CharTokenizer, GPT2Tokenizer, SymbolTokenizer, Tokenizer

transformers = pytest.importorskip("transformers")
# Arcee (Llama with a ReLU² MLP) came in transformers 4.53: where it is missing, its cases are skipped
needs_arcee = pytest.mark.skipif(not hasattr(transformers, "ArceeForCausalLM"), reason="transformers < 4.53: no Arcee")

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
    cfg = Config(model=ModelConfig(vocab_size=9, block_size=16, n_layer=1, n_head=1, n_embd=8))
    tok = CharTokenizer("abcde \né🐍")
    ckpt.save(tmp_path / "ours", GPT(cfg.model), cfg, tok, step=1)
    to_hf(tmp_path / "ours", tmp_path / "hf")
    assert json.loads((tmp_path / "hf" / "gpt_playground_tokenizer.json").read_text())["chars"] == "".join(tok.chars)
    assert transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "hf").config.vocab_size == 9
    model, back = load_hf(tmp_path / "hf")
    assert back.encode("bad") == tok.encode("bad")
    theirs = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")  # from the tokenizer.json written for it
    for text in ["bad cab", "  a\n\nb ", "é🐍 dé"]:
        assert theirs(text)["input_ids"] == tok.encode(text) and theirs.decode(tok.encode(text)) == text


@pytest.mark.parametrize("sep", [" ", ""])
def test_a_task_models_symbols_export_as_a_tokenizer_transformers_reads(sep: str, tmp_path: Path) -> None:
    """A task's model (its numbers and signs one token each, gpt/tasks.py) leaves with a tokenizer.json giving our
    ids; a model whose tokenizer had none was refused only after its weights were written: now nothing is written."""
    symbols = [str(i) for i in range(13)] + ["+", "="] if sep else list("0123456789+=")
    tok = SymbolTokenizer(symbols, sep)
    cfg = Config(model=ModelConfig(vocab_size=len(symbols), block_size=16, n_layer=1, n_head=1, n_embd=8))
    ckpt.save(tmp_path / "ours", GPT(cfg.model), cfg, tok, step=1)
    to_hf(tmp_path / "ours", tmp_path / "hf")
    theirs = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    text = "12 + 7 = 6" if sep else "12+7=19"
    assert theirs(text)["input_ids"] == tok.encode(text)
    assert theirs.decode(tok.encode(text)) == tok.decode(tok.encode(text))
    model, back = load_hf(tmp_path / "hf")  # and back in, with its symbols
    assert back.encode(text) == tok.encode(text)
    # a tokenizer without Hugging Face files: refused with nothing written
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(interop, "_simple_tokenizer_json", lambda t: (_ for _ in ()).throw(UserInputError("no json")))
        with pytest.raises(UserInputError, match="no json"):
            to_hf(tmp_path / "ours", tmp_path / "hf-odd")
    assert not (tmp_path / "hf-odd").exists()


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
    assert "GPT2LMHeadModel" in r.stdout and "Context limit: 64 tokens" in r.stdout  # learned positions end there
    r = run("from-hf", str(tmp_path / "nowhere"), str(tmp_path / "x"))
    assert r.returncode == 2 and "not a Hugging Face model directory" in r.stderr
    # a Llama in and out, and a model with no Hugging Face equivalent refused in one line
    llama_family("llama", tied=False).save_pretrained(tmp_path / "llama")
    (tmp_path / "llama" / "tokenizer.json").write_text(BYTE_JSON)
    assert run("from-hf", str(tmp_path / "llama"), str(tmp_path / "ours_llama")).returncode == 0
    r = run("to-hf", str(tmp_path / "ours_llama"), str(tmp_path / "llama_back"))
    assert r.returncode == 0 and "LlamaForCausalLM" in r.stdout, r.stderr
    assert "Context limit" not in r.stdout  # rotary positions have no end
    save_ours(tmp_path / "relu2", dict(MODERN, activation="relu2", qk_norm=True))
    r = run("to-hf", str(tmp_path / "relu2"), str(tmp_path / "relu2_hf"))
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode == 2 and len(lines) == 1 and "model.activation=relu2 with model.qk_norm=true" in lines[0]
    assert not (tmp_path / "relu2_hf").exists()


# ----- the Llama family: LlamaForCausalLM, Qwen3ForCausalLM --------------------------------------------------------

LLAMA = dict(vocab_size=256, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
             max_position_embeddings=48, head_dim=16)  # fmt: skip


def byte_json() -> str:
    from gpt.interop import _simple_tokenizer_json

    return _simple_tokenizer_json(ByteTokenizer())


BYTE_JSON = byte_json()  # a byte-level BPE of 256 tokens without merges: byte b is token b


def llama_family(kind: str, tied: bool, kv_heads: int = 2, seed: int = 0, **extra: object):
    """A random Llama or Qwen3 of `transformers`' own making; its norms' gains other than one, its weights of a
    trained model's size (a fresh init's logits are nearly all equal, which would make greedy text a coin toss)."""
    torch.manual_seed(seed)
    make = {"llama": transformers.LlamaConfig, "qwen3": transformers.Qwen3Config}.get(kind)
    make = make or transformers.ArceeConfig
    theta = 1e6 if kind == "qwen3" else 10000.0  # Qwen3's base: our rope_theta must follow it
    hf_cfg = make(**LLAMA, num_key_value_heads=kv_heads, tie_word_embeddings=tied, rms_norm_eps=1e-6,
                  rope_theta=theta, **extra)  # fmt: skip
    model = transformers.AutoModelForCausalLM.from_config(hf_cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
            else:
                p.add_(torch.randn_like(p) * 0.05)
    return model


def greedy_ids(model: GPT, prompt: list[int], n: int) -> list[int]:
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(n):
            ids.append(int(model(torch.tensor([ids]))[0][0, -1].argmax()))
    return ids[len(prompt) :]


CASES = [("llama", False, 2), ("llama", True, 2), ("llama", False, 4), ("qwen3", False, 2), ("qwen3", True, 1),
         ("arcee", False, 2), ("arcee", True, 4)]  # fmt: skip


@pytest.mark.parametrize(
    ("kind", "tied", "kv_heads"),
    [pytest.param(*c, marks=[needs_arcee] if c[0] == "arcee" else []) for c in CASES],
    ids=[f"{k}-{'tied' if t else 'untied'}-kv{n}" for k, t, n in CASES],
)
def test_llama_family_imports_with_the_same_logits_and_greedy_text(
    kind: str, tied: bool, kv_heads: int, tmp_path: Path
) -> None:
    ref = llama_family(kind, tied, kv_heads)
    ref.save_pretrained(tmp_path / "hf")
    (tmp_path / "hf" / "tokenizer.json").write_text(BYTE_JSON)
    seen: list[ModelConfig] = []
    out = from_hf(tmp_path / "hf", tmp_path / "ours", check=seen.append)
    mc = seen[0]
    assert (mc.n_head, mc.kv_heads, mc.qk_norm, mc.tie_head) == (4, kv_heads, kind == "qwen3", tied)
    assert mc.activation == ("relu2" if kind == "arcee" else "swiglu")
    loaded = ckpt.load(out)
    ours = loaded.model
    assert loaded.tokenizer.name == "bpe" and loaded.tokenizer.encode("hé\n") == list("hé\n".encode())
    x = torch.randint(0, 256, (2, 48))
    with torch.no_grad():
        diff = (ref(x).logits - ours(x)[0]).abs().max().item()
    print(f"{kind} tied={tied} kv={kv_heads}: import max |logit diff| = {diff:.2e}")
    assert diff < 1e-4
    prompt = [72, 101, 108]
    want = ref.generate(torch.tensor([prompt]), max_new_tokens=40, do_sample=False, pad_token_id=0)[0, 3:].tolist()
    assert greedy_ids(ours, prompt, 40) == want


MODERN = dict(pos="rope", norm="rmsnorm", activation="swiglu", bias=False)
EXPORTS = {
    "llama-tied": dict(MODERN),
    "llama-untied-gqa": dict(MODERN, tie_head=False, n_kv_head=2),
    "qwen3-tied": dict(MODERN, qk_norm=True),
    "qwen3-untied-mqa": dict(MODERN, qk_norm=True, tie_head=False, n_kv_head=1, zero_init=True),
    "arcee-untied": dict(MODERN, activation="relu2", tie_head=False, zero_init=True),
    "arcee-tied-gqa": dict(MODERN, activation="relu2", n_kv_head=2),
}


def save_ours(d: Path, switches: dict[str, object], tokenizer: Tokenizer | None = None, seed: int = 1) -> GPT:
    tok = tokenizer or ByteTokenizer()
    vocab = max(256, tok.vocab_size)
    cfg = Config(model=ModelConfig(vocab_size=vocab, block_size=32, n_layer=2, n_head=4, n_embd=64, **switches))  # type: ignore[arg-type]
    cfg.data.tokenizer = tok.name
    torch.manual_seed(seed)
    model = GPT(cfg.model).eval()
    with torch.no_grad():  # (trained-size weights: see llama_family)
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    ckpt.save(d, model, cfg, tok, step=3)
    return model


@pytest.mark.parametrize("name", [pytest.param(n, marks=[needs_arcee] if "arcee" in n else []) for n in EXPORTS])
def test_modern_models_export_as_llama_qwen3_or_arcee_with_the_same_logits(name: str, tmp_path: Path) -> None:
    model = save_ours(tmp_path / "ours", EXPORTS[name])
    to_hf(tmp_path / "ours", tmp_path / "hf")
    theirs = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    assert type(theirs).__name__ == HF_CLASS[name.split("-")[0]]
    x = torch.randint(0, 256, (2, 32))
    with torch.no_grad():
        diff = (theirs(x).logits - model(x)[0]).abs().max().item()
    print(f"{name}: export max |logit diff| = {diff:.2e}")
    assert diff < 1e-4
    prompt = [84, 104, 101]
    want = theirs.generate(torch.tensor([prompt]), max_new_tokens=25, do_sample=False, pad_token_id=0)[0, 3:]
    assert greedy_ids(model, prompt, 25) == want.tolist()
    tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    text = "Zwölf Boxkämpfer\n jagen 🐍 über den Sylter Deich"
    assert tok(text)["input_ids"] == ByteTokenizer().encode(text) and tok.decode(ByteTokenizer().encode(text)) == text
    back, _ = load_hf(tmp_path / "hf")  # and back in: the same model
    with torch.no_grad():
        assert (back(x)[0] - model(x)[0]).abs().max() < 1e-5


@pytest.mark.parametrize(
    ("switches", "named"),
    [
        (dict(MODERN, activation="relu2", qk_norm=True), "model.activation=relu2 with model.qk_norm=true"),
        (dict(MODERN, activation="gelu"), "model.activation=gelu"),
        (dict(MODERN, pos="learned"), "model.pos=learned"),
        (dict(MODERN, bias=True), "model.bias=true"),
        (dict(MODERN, norm="layernorm"), "model.norm=layernorm"),
        (dict(qk_norm=True), "model.qk_norm=true"),  # GPT-2's body with a switch GPT-2 has no place for
        (dict(n_kv_head=2), "model.n_kv_head=2"),
    ],
)
def test_a_model_without_a_hugging_face_equivalent_is_refused_naming_the_switch(
    switches: dict[str, object], named: str, tmp_path: Path
) -> None:
    save_ours(tmp_path / "ours", switches)
    with pytest.raises(UserInputError, match=named.replace(".", r"\.")):
        to_hf(tmp_path / "ours", tmp_path / "hf")
    assert not (tmp_path / "hf").exists()  # refused before anything is written
    assert named in " ".join(export_refusals(ModelConfig(**switches)))  # type: ignore[arg-type]  # (the Train tab's)


@pytest.mark.parametrize("preset", ["tiny", "small"])
def test_the_default_recipe_trained_briefly_exports_and_loads_with_the_same_logits(preset: str, tmp_path: Path) -> None:
    """The model every learner trains (the presets' modern recipe) leaves the app: a few real optimizer steps (its
    zero-initialised projections move), then to_hf, then `AutoModelForCausalLM` without remote code."""
    cfg = load_config(f"configs/{preset}.yaml")
    tok = CharTokenizer("".join(chr(c) for c in range(32, 127)) + "\n")
    cfg.model.vocab_size = tok.vocab_size
    assert export_refusals(cfg.model) == []
    torch.manual_seed(0)
    model = GPT(cfg.model)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(3):
        x = torch.randint(0, tok.vocab_size, (4, cfg.model.block_size + 1))
        _, loss = model(x[:, :-1], x[:, 1:])
        assert loss is not None
        loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()
    ckpt.save(tmp_path / "ours", model, cfg, tok, step=3)
    to_hf(tmp_path / "ours", tmp_path / "hf")
    theirs = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    assert type(theirs).__name__ == HF_CLASS[hf_target(cfg.model)]
    x = torch.randint(0, tok.vocab_size, (2, cfg.model.block_size))
    with torch.no_grad():
        assert (theirs(x).logits - model(x)[0]).abs().max() < 1e-4
    hf_tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    assert hf_tok("ROMEO:\nBut soft")["input_ids"] == tok.encode("ROMEO:\nBut soft")
    card = (tmp_path / "hf" / "README.md").read_text()
    assert HF_CLASS[hf_target(cfg.model)] in card and "Context limit" not in card  # rotary: no hard end


def test_a_gpt2_export_says_its_context_limit_where_transformers_stops(tmp_path: Path) -> None:
    """Learned positions end at the context: transformers raises an IndexError past it (our model slides its
    window), and the export's model card says so."""
    save_ours(tmp_path / "ours", {}, ByteTokenizer())  # GPT-2's recipe, context 32
    to_hf(tmp_path / "ours", tmp_path / "hf")
    card = (tmp_path / "hf" / "README.md").read_text()
    assert "Context limit: 32 tokens" in card and "IndexError" in card and "GPT2LMHeadModel" in card
    theirs = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    with torch.no_grad():
        theirs(torch.zeros(1, 32, dtype=torch.long))
        with pytest.raises(IndexError):  # the claim the card makes, checked
            theirs(torch.zeros(1, 33, dtype=torch.long))


def test_zero_biases_export_as_none(tmp_path: Path) -> None:
    model = save_ours(tmp_path / "ours", dict(MODERN, bias=True))
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.endswith(".bias"):
                p.zero_()
    loaded = ckpt.load(tmp_path / "ours")
    ckpt.save(tmp_path / "zero", model, loaded.config, loaded.tokenizer, step=3)
    to_hf(tmp_path / "zero", tmp_path / "hf")
    theirs = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    x = torch.randint(0, 256, (1, 32))
    with torch.no_grad():
        assert (theirs(x).logits - model(x)[0]).abs().max() < 1e-4


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (dict(rope_scaling={"rope_type": "linear", "factor": 2.0}), "rope scaling"),
        (dict(rope_parameters={"rope_type": "llama3", "rope_theta": 5e5, "factor": 8.0}), "rope scaling"),
        (dict(attention_bias=True), "biases"),
        (dict(hidden_act="gelu"), "hidden_act 'gelu'"),
        (dict(model_type="arcee", hidden_act="silu"), "hidden_act 'silu' \\(our ReLU² MLP is relu2\\)"),
        (dict(head_dim=32), "head_dim 32"),
        (dict(model_type="qwen3", use_sliding_window=True, sliding_window=16), "sliding-window"),
        (dict(model_type="mistral"), "only GPT-2, Llama, Qwen3 and Arcee"),
    ],
)
def test_unsupported_llama_configs_are_refused_before_any_weight_is_read(
    change: dict[str, object], named: str, tmp_path: Path
) -> None:
    llama_family("llama", tied=False).save_pretrained(tmp_path / "hf")
    hf_cfg = json.loads((tmp_path / "hf" / "config.json").read_text())
    (tmp_path / "hf" / "config.json").write_text(json.dumps({**hf_cfg, **change}))
    (tmp_path / "hf" / "model.safetensors").write_bytes(b"not weights")  # reading them would be a CheckpointError
    with pytest.raises(UserInputError, match=named):
        load_hf(tmp_path / "hf")


def test_the_size_check_sees_a_llama_config_before_its_weights(tmp_path: Path) -> None:
    llama_family("qwen3", tied=True, kv_heads=1).save_pretrained(tmp_path / "hf")
    (tmp_path / "hf" / "model.safetensors").write_bytes(b"not weights")

    def too_big(cfg: ModelConfig) -> None:
        assert cfg.kv_heads == 1 and cfg.qk_norm and cfg.rope_theta == 1e6 and cfg.norm_eps == 1e-6
        raise UserInputError("over the cap")

    with pytest.raises(UserInputError, match="over the cap"):
        load_hf(tmp_path / "hf", too_big)


def test_byte_models_tokenizer_json_gives_our_ids_in_auto_tokenizer(tmp_path: Path) -> None:
    save_ours(tmp_path / "ours", {}, ByteTokenizer())  # GPT-2's architecture, byte tokens
    to_hf(tmp_path / "ours", tmp_path / "hf")
    tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    for text in ["", "plain ascii", "  two  spaces\n\ttab", "é 中文 🐍 \x00\x7f", "<|endoftext|>"]:
        ids = ByteTokenizer().encode(text)
        assert tok(text)["input_ids"] == ids, text
        assert tok.decode(ids) == text
    _, back = load_hf(tmp_path / "hf")
    assert back.name == "byte"


def test_bpe_models_export_their_tokenizer_json(tmp_path: Path) -> None:
    from gpt.tokenizer import train_bpe

    text = "the cat sat on the mat; the hat is on the cat. " * 40 + "Zwölf Boxkämpfer 🐍\n"
    bpe = train_bpe([text], 300)
    model = save_ours(tmp_path / "ours", dict(MODERN), bpe)
    to_hf(tmp_path / "ours", tmp_path / "hf")
    assert (tmp_path / "hf" / "tokenizer.json").read_text() == bpe.hf_json()
    tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    for sample in [text[:200], "the mat. Zwölf 🐍", " spaces  and\ttabs\n"]:
        assert tok(sample)["input_ids"] == bpe.encode(sample), sample
    loaded, back = load_hf(tmp_path / "hf")  # back in through tokenizer.json: the same tokenizer
    assert back.name == "bpe" and back.encode(text[:300]) == bpe.encode(text[:300])
    x = torch.randint(0, 256, (1, 32))
    with torch.no_grad():
        assert (loaded(x)[0] - model(x)[0]).abs().max() < 1e-5


# ----- hostile imports: values of the wrong type, weights of the wrong shape ---------------------------------------


@pytest.mark.parametrize(
    ("kind", "change", "named"),
    [
        ("llama", dict(rope_scaling="linear"), "rope_scaling must be a mapping"),
        ("llama", dict(rope_scaling=["linear"]), "rope_scaling must be a mapping"),
        ("llama", dict(rope_scaling={"type": "linear", "factor": 2.0}), "rope scaling"),
        ("llama", dict(rope_parameters=[1, 2]), "rope_parameters must be a mapping"),
        ("llama", dict(rope_parameters={"rope_type": 7}), "rope_type must be a string"),
        ("llama", dict(rope_parameters={"rope_theta": "ten thousand"}), "rope_theta must be a finite number"),
        ("llama", dict(vocab_size="256"), "vocab_size must be a whole number"),
        ("llama", dict(num_hidden_layers=2.5), "num_hidden_layers must be a whole number"),
        ("llama", dict(num_attention_heads=True), "num_attention_heads must be a whole number"),
        ("llama", dict(intermediate_size=-96), "intermediate_size must be a whole number of at least 1"),
        ("llama", dict(tie_word_embeddings="yes"), "tie_word_embeddings must be true or false"),
        ("llama", dict(layer_types="full_attention"), "layer_types must be a list of strings"),
        ("llama", dict(hidden_act=["silu"]), "hidden_act must be a string"),
        ("llama", dict(rms_norm_eps=float("inf")), "rms_norm_eps must be a finite number"),
        ("qwen3", dict(attention_bias="false"), "attention_bias must be true or false"),
        ("qwen3", dict(head_dim={"q": 16}), "head_dim must be a whole number"),
        ("gpt2", dict(n_layer=[2]), "n_layer must be a whole number"),
        ("gpt2", dict(activation_function=None, layer_norm_epsilon="1e-5"), "layer_norm_epsilon must be a finite"),
        ("gpt2", dict(model_type=["gpt2"]), "model_type must be a string"),
        ("gpt2", dict(n_embd=1 << 40), "n_embd"),
    ],
)
def test_an_imported_config_with_a_value_of_the_wrong_type_is_refused_naming_it(
    kind: str, change: dict[str, object], named: str, tmp_path: Path
) -> None:
    if kind == "gpt2":
        hf_model(SHAPES["tiny"]).save_pretrained(tmp_path / "hf")
    else:
        llama_family(kind, tied=False).save_pretrained(tmp_path / "hf")
    hf_cfg = json.loads((tmp_path / "hf" / "config.json").read_text())
    (tmp_path / "hf" / "config.json").write_text(json.dumps({**hf_cfg, **change}))
    with pytest.raises(UserInputError, match=named):
        load_hf(tmp_path / "hf")


def _rewrite_weights(d: Path, change) -> None:  # type: ignore[no-untyped-def]
    from safetensors.torch import load_file, save_file

    state = load_file(str(d / "model.safetensors"))
    change(state)
    save_file({k: v.contiguous() for k, v in state.items()}, str(d / "model.safetensors"))


@pytest.mark.parametrize(
    ("kind", "name", "value"),
    [
        ("llama", "model.layers.0.self_attn.q_proj.weight", torch.zeros(8, 8)),
        ("llama", "model.layers.1.self_attn.k_proj.weight", torch.zeros(64, 64)),  # two kv heads, not four
        ("llama", "model.layers.0.mlp.up_proj.weight", torch.zeros(96, 64, 1)),
        ("llama", "model.norm.weight", torch.zeros(63)),
        ("llama", "lm_head.weight", torch.zeros(256, 32)),
        ("llama", "model.embed_tokens.weight", torch.zeros(256, 64, dtype=torch.int32)),
        ("qwen3", "model.layers.0.self_attn.q_norm.weight", torch.zeros(64)),
        ("gpt2", "transformer.h.0.attn.c_attn.weight", torch.zeros(64, 64, 3)),
        ("gpt2", "transformer.h.1.mlp.c_fc.weight", torch.zeros(256, 64)),  # nn.Linear's layout, not Conv1D's
        ("gpt2", "transformer.wpe.weight", torch.zeros(32, 64)),
    ],
)
def test_imported_weights_of_the_wrong_shape_are_refused_naming_the_tensor(
    kind: str, name: str, value: torch.Tensor, tmp_path: Path
) -> None:
    if kind == "gpt2":
        hf_model(SHAPES["tiny"]).save_pretrained(tmp_path / "hf")
    else:
        llama_family(kind, tied=False).save_pretrained(tmp_path / "hf")
        (tmp_path / "hf" / "tokenizer.json").write_text(BYTE_JSON)
    _rewrite_weights(tmp_path / "hf", lambda state: state.__setitem__(name, value))
    with pytest.raises(CheckpointError, match=re.escape(name)):
        load_hf(tmp_path / "hf")


def test_gpt_convert_names_what_is_wrong_with_an_imported_model(tmp_path: Path) -> None:
    """The CLI's line says what is wrong with the input, never only an exception's class."""
    llama_family("llama", tied=False).save_pretrained(tmp_path / "hf")
    (tmp_path / "hf" / "tokenizer.json").write_text(BYTE_JSON)
    hf_cfg = json.loads((tmp_path / "hf" / "config.json").read_text())
    (tmp_path / "hf" / "config.json").write_text(json.dumps({**hf_cfg, "rope_scaling": "linear"}))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    cmd = [sys.executable, "-m", "gpt.cli", "convert", "from-hf", str(tmp_path / "hf"), str(tmp_path / "out")]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode == 2 and len(lines) == 1 and "rope_scaling must be a mapping" in lines[0], r.stderr
    assert "Error" not in lines[0] and "Traceback" not in r.stderr
