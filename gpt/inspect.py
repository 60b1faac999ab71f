"""Looking inside a model: attention maps, next-token probabilities, the logit lens, embedding maps, and how the
sampler's settings reshape a next-token distribution.

Everything returns plain Python / numpy data (no plotting), so the UI, notebooks and tests can use it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from gpt.config import SampleConfig
from gpt.errors import UserInputError
from gpt.model import GPT
from gpt.sampling import STAGES, process_stages, window_start
from gpt.tokenizer import Tokenizer

_VISIBLE = {"\n": "↵", "\t": "⇥", " ": "␣", "\r": "␍"}  # a space as "·" read like a full stop


def label(text: str) -> str:
    """A token's text with whitespace made visible, for axis labels and tables."""
    return "".join(_VISIBLE.get(c, c) for c in text) or "∅"


@dataclass
class Analysis:
    tokens: list[str]  # the prompt's tokens as text (cropped to the context length)
    token_ids: list[int]
    attention: np.ndarray  # (layers, heads, T, T): row i = how position i spreads its attention
    next_tokens: list[tuple[str, float]]  # top-k next-token candidates with probabilities
    lens_tokens: list[list[str]]  # (layers + 1) x T: the top token each layer would predict at each position
    lens_probs: np.ndarray  # (layers + 1, T): that token's probability
    lens_layers: list[str]  # row names: "embed", "layer 1", ...
    dropped: int = 0  # tokens cut from the start of the prompt (the context, or the per-request cap, is shorter)


# The Inspect tab's work per request: the logit lens reads every position through the head at every layer
# ((layers + 1) x tokens x vocabulary values) and the heatmaps send tokens² cells per head to the browser. A prompt is
# cut to its last MAX_TOKENS tokens, and the lens is computed a few positions at a time, within LENS_CHUNK values.
MAX_TOKENS = 128
LENS_CHUNK = 1 << 22


@torch.no_grad()
def analyse(model: GPT, tokenizer: Tokenizer, prompt: str, top_k: int = 20, max_tokens: int = MAX_TOKENS) -> Analysis:
    """One explicit-attention forward pass over the prompt's last `max_tokens` tokens, read out every way the
    Inspect tab shows."""
    if not prompt:
        raise UserInputError("enter a prompt to inspect")
    all_ids = tokenizer.encode(prompt)
    ids = all_ids[-min(model.config.block_size, max_tokens) :]
    if not ids:
        raise UserInputError("the prompt has no tokens; enter some text")
    device = model.lm_head.weight.device
    out = model.forward_inspect(torch.tensor([ids], device=device))
    vocab = tokenizer.vocab_size
    probs = torch.softmax(out.logits[0, -1, :vocab].float(), dim=-1)
    top = torch.topk(probs, min(top_k, vocab))
    lens_tokens, lens_probs = [], []
    step = max(1, LENS_CHUNK // model.config.vocab_size)  # positions per chunk
    for h in out.hidden_states:
        best_p, best_i = [], []
        for i in range(0, len(ids), step):
            logits = model.logit_lens(h[:, i : i + step])[0, :, :vocab].float()
            top1 = logits.max(dim=-1)
            best_p.append(torch.exp(top1.values - torch.logsumexp(logits, dim=-1)))  # softmax of the top token only
            best_i.append(top1.indices)
        lens_tokens.append([label(tokenizer.token_text(int(i))) for i in torch.cat(best_i)])
        lens_probs.append(torch.cat(best_p).cpu().numpy())
    return Analysis(
        tokens=[label(tokenizer.token_text(i)) for i in ids],
        token_ids=ids,
        attention=torch.stack([a[0] for a in out.attentions]).float().cpu().numpy(),
        next_tokens=[
            (label(tokenizer.token_text(int(i))), float(p)) for p, i in zip(top.values, top.indices, strict=True)
        ],
        lens_tokens=lens_tokens,
        lens_probs=np.stack(lens_probs),
        lens_layers=["embed"] + [f"layer {i + 1}" for i in range(model.config.n_layer)],
        dropped=len(all_ids) - len(ids),
    )


@dataclass
class Projection:
    labels: list[str]
    token_ids: list[int]
    xy: np.ndarray  # (n, 2) PCA coordinates
    explained: tuple[float, float]  # share of variance along each axis


@torch.no_grad()
def embedding_projection(model: GPT, tokenizer: Tokenizer, words: str = "", limit: int = 400) -> Projection:
    """PCA of token embeddings to 2-D: the tokens of `words` if given, else the first `limit` of the vocabulary."""
    if words.strip():
        ids = list(dict.fromkeys(tokenizer.encode(words)))[: 5 * limit]  # a map of thousands of labels is unreadable
    else:
        ids = list(range(min(limit, tokenizer.vocab_size)))
    if len(ids) < 3:
        raise UserInputError("give at least 3 distinct tokens to project")
    emb = model.transformer.wte.weight[ids].float().cpu()
    centered = emb - emb.mean(dim=0)
    _, s, v = torch.linalg.svd(centered, full_matrices=False)
    xy = (centered @ v[:2].T).numpy()
    var = (s**2) / (s**2).sum()
    return Projection([label(tokenizer.token_text(i)) for i in ids], ids, xy, (float(var[0]), float(var[1])))


def parameter_table(model: GPT) -> list[dict[str, object]]:
    """Parameters per module (embeddings, each block's attention and MLP, final norm), with shares."""
    rows: dict[str, int] = {}
    seen: set[int] = set()
    for name, p in model.named_parameters():
        if id(p) in seen:  # the tied head shares the token embedding
            continue
        seen.add(id(p))
        parts = name.split(".")
        if parts[0] == "lm_head":  # untied: a read-out of its own
            key = "output head"
        elif parts[1] == "h":  # transformer.h.3.attn.c_attn.weight -> block 3 attn
            key = f"block {int(parts[2]) + 1} {parts[3]}"
        else:
            wte = "token embedding (tied head)" if model.tied else "token embedding"
            key = {"wte": wte, "wpe": "position embedding", "ln_f": "final layer norm"}.get(parts[1], parts[1])
        rows[key] = rows.get(key, 0) + p.numel()
    total = sum(rows.values())
    return [{"module": k, "parameters": n, "share": round(100 * n / total, 2)} for k, n in rows.items()]


@dataclass
class SamplingStep:
    """How the sampler's settings reshape one next-token distribution, for its most likely candidates."""

    labels: list[str]  # the candidates (the model's top tokens, and the sampled one)
    token_ids: list[int]
    model: list[float]  # the model's probability of each (softmax of the raw logits)
    stages: list[tuple[str, list[float]]]  # each stage of the sampler: the probability of each candidate after it
    removed_by: list[str | None]  # the stage that took each candidate out of the draw, if one did
    final: list[float]  # what the sampler draws from: the last stage (at temperature 0, all on the argmax)
    drawable: int  # tokens of the whole vocabulary that can still be drawn


@torch.no_grad()
def next_logits(model: GPT, ids: list[int]) -> torch.Tensor:
    """The raw logits for the token after `ids`, seeing the window of them the sampler sees: one forward pass."""
    x = torch.tensor([ids[window_start(len(ids), model.config.block_size) :]], device=model.lm_head.weight.device)
    return model(x, last_only=True)[0][0, -1].float().cpu()


def explain_sampling(
    logits: torch.Tensor, history: list[int], cfg: SampleConfig, tokenizer: Tokenizer, top: int = 20
) -> SamplingStep:
    """Each stage of `gpt.sampling.process_stages` (the sampler's own code) applied to `logits`, read out for the
    `top` tokens the model finds most likely."""
    raw = logits[: tokenizer.vocab_size].float()  # as the sampler: never the vocabulary padding
    stages = list(process_stages(raw, torch.tensor(history, dtype=torch.long), cfg))
    probs = [torch.softmax(s, dim=-1) for s in stages]
    final = probs[-1]
    if cfg.temperature == 0:  # greedy: the sampler takes the argmax of the processed logits
        final = torch.zeros_like(final)
        final[int(torch.argmax(stages[-1]))] = 1.0
    candidates = torch.topk(raw, min(top, raw.numel())).indices.tolist()
    removed_by: list[str | None] = []
    for i in candidates:
        gone = [name for name, s in zip(STAGES, stages, strict=True) if s[i] == float("-inf")]
        removed_by.append(gone[0] if gone else None)
    model_probs = torch.softmax(raw, dim=-1)
    return SamplingStep(
        labels=[label(tokenizer.token_text(i)) for i in candidates],
        token_ids=candidates,
        model=[float(model_probs[i]) for i in candidates],
        stages=[(name, [float(p[i]) for i in candidates]) for name, p in zip(STAGES, probs, strict=True)],
        removed_by=removed_by,
        final=[float(final[i]) for i in candidates],
        drawable=int((final > 0).sum()),
    )
