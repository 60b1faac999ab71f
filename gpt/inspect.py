"""Looking inside a model: attention maps, next-token probabilities, the logit lens, embedding maps, and how the
sampler's settings reshape a next-token distribution.

Everything returns plain Python / numpy data (no plotting), so the UI, notebooks and tests can use it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal, cast

import numpy as np
import torch
import torch.nn as nn
from torch.nn import functional as F

from gpt.config import SampleConfig
from gpt.errors import UserInputError
from gpt.model import GPT, Ablation, Block, Internals
from gpt.sampling import STAGES, process_stages, sampling_vocab, window_start
from gpt.tokenizer import Tokenizer

_VISIBLE = {"\n": "↵", "\t": "⇥", " ": "␣", "\r": "␍"}  # a space as "·" read like a full stop
_UNVISIBLE = {v: k for k, v in _VISIBLE.items()}


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
    """One forward pass over the prompt's last `max_tokens` tokens with hooks on every hook point (`forward_inspect`:
    explicit attention), read out every way the Inspect tab shows."""
    ids, dropped = _prompt_ids(model, tokenizer, prompt, max_tokens)
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
        dropped=dropped,
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


@dataclass(frozen=True)
class Spectrum:
    """The token embeddings of the numbers 0 .. n - 1 in the Fourier basis over those numbers: how much of each
    frequency the embedding holds. A model that has learned modular addition (mod n) computes with a few waves of the
    numbers, cos(2 pi k a / n) and sin(...) for a few frequencies k, so a few frequencies stand out once it
    generalises (Nanda et al. 2023, "Progress measures for grokking via mechanistic interpretability"); a model that
    memorised, or an untrained one, spreads its embedding over them all about evenly."""

    n: int  # the numbers' count (the modulus)
    frequencies: list[int]  # 1 .. n // 2: frequency k and n - k are one wave (its cosine and sine together)
    norms: list[float]  # the embedding's norm at each frequency (orthonormal DFT: the squares add up to the whole)
    constant: float  # frequency 0: the part every number's embedding shares
    key: list[int]  # the frequencies that stand out (KEY_OVER_MEDIAN), the strongest first
    top_share: float  # the share of the embedding's energy (frequency 0 left out) in its TOP strongest waves


KEY_OVER_MEDIAN = 3.0  # a frequency stands out at this many times the median frequency's norm (the noise floor)
KEY_MAX = 10
TOP = 5  # (Nanda et al.'s models, cleaned up by weight decay: about five key frequencies)


@torch.no_grad()
def embedding_spectrum(model: GPT, n: int) -> Spectrum:
    """The discrete Fourier transform of the token embeddings of tokens 0 .. n - 1 (a task's numbers: token i is the
    number i) along the numbers, its norm over the embedding's dimensions at each frequency."""
    if not 3 <= n <= model.config.vocab_size:
        raise UserInputError(f"the Fourier spectrum needs 3 to {model.config.vocab_size} number tokens, got {n}")
    w = model.transformer.wte.weight[:n].float().cpu()
    f = torch.fft.rfft(w, dim=0, norm="ortho")  # (n // 2 + 1, d): frequency k's cosine and sine parts
    energy = f.abs().pow(2).sum(dim=1)
    waves = energy[1:].clone()
    waves[: (n - 1) // 2] *= 2  # k and n - k are conjugates: each holds the same energy (not n / 2, for even n)
    norms = waves.sqrt().tolist()
    total = float(waves.sum()) or 1.0
    order = sorted(range(len(norms)), key=lambda i: -norms[i])
    floor = float(np.median(norms))
    key = [i + 1 for i in order if norms[i] > KEY_OVER_MEDIAN * floor][:KEY_MAX]
    top = sum(float(waves[i]) for i in order[:TOP]) / total
    return Spectrum(n, list(range(1, len(norms) + 1)), norms, float(energy[0].sqrt()), key, top)


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


# Ablation and direct logit attribution: what one head or MLP does to the prediction.

AblationMode = Literal["zero", "mean"]
CONTINUATION_TOKENS = 20


@dataclass(frozen=True)
class Component:
    """An attention head (layer, head) or, with `head` None, a layer's MLP; 0-based."""

    layer: int
    head: int | None = None

    @property
    def name(self) -> str:
        return f"L{self.layer + 1} MLP" if self.head is None else f"L{self.layer + 1} H{self.head + 1}"

    def check(self, model: GPT) -> None:
        n_layer, n_head = model.config.n_layer, model.config.n_head
        if not 0 <= self.layer < n_layer:
            raise UserInputError(f"layer {self.layer + 1} is not in this model: it has layers 1 to {n_layer}")
        if self.head is not None and not 0 <= self.head < n_head:
            raise UserInputError(f"head {self.head + 1} is not in this model: each layer has heads 1 to {n_head}")


@dataclass(frozen=True)
class Outcome:
    """What the model makes of the prompt, as it is or with a component ablated."""

    loss: float | None  # mean cross-entropy of each prompt token given those before it (None: a one-token prompt)
    next_tokens: list[tuple[str, float]]  # top-k after the prompt, with probabilities
    next_token_ids: list[int]
    continuation: str  # the greedy continuation (temperature 0)


@dataclass(frozen=True)
class AblationResult:
    component: Component | None  # None: nothing ablated (the ablated outcome is the original)
    mode: AblationMode
    original: Outcome
    ablated: Outcome
    # the two top-k's together (the original's order, then the ablated's newcomers), with each one's probability
    # under both: what moved
    candidates: list[str]
    candidate_ids: list[int]
    original_probs: list[float]
    ablated_probs: list[float]
    tokens: list[str]  # the prompt's tokens as inspected (its last MAX_TOKENS)
    dropped: int = 0


@torch.no_grad()
def ablate(
    model: GPT,
    tokenizer: Tokenizer,
    prompt: str,
    component: Component | None,
    mode: AblationMode = "zero",
    top_k: int = 10,
    new_tokens: int = CONTINUATION_TOKENS,
) -> AblationResult:
    """The prompt's loss, next-token distribution and greedy continuation with `component` zero- or mean-ablated,
    beside the original's.

    Zero ablation sets the component's output to 0 at every position. Mean ablation sets it to its mean output over
    the prompt's positions (the original run's): TransformerLens takes the mean over a batch of reference prompts,
    which here is one; across positions it keeps what the component adds on average (its bias, a constant
    direction) and removes what depends on the tokens. The continuation keeps that same vector, so each new token
    sees the same ablation. A head's output is taken before c_proj mixes the heads (TransformerLens's hook_z)."""
    ids, dropped = _prompt_ids(model, tokenizer, prompt)
    if mode not in ("zero", "mean"):
        raise UserInputError(f"ablate by zero or mean, not {str(mode)[:40]!r}")
    if component is not None:
        component.check(model)
    x = torch.tensor([ids], device=model.lm_head.weight.device)
    with _eval(model):
        first = model.forward_inspect(x)
        original, p_original = _outcome(model, tokenizer, ids, first, None, top_k, new_tokens)
        if component is None:
            ablated, p_ablated = original, p_original
        else:
            value = None
            if mode == "mean":  # (B, T, n_embd) or (B, heads, T, head_dim): the mean over T
                layer, head = component.layer, component.head
                out = first.mlp_outputs[layer][0] if head is None else first.head_outputs[layer][0, head]
                value = out.mean(dim=0)
            how = Ablation(component.layer, component.head, value)
            ablated, p_ablated = _outcome(model, tokenizer, ids, model.forward_inspect(x, how), how, top_k, new_tokens)
    both = list(dict.fromkeys(original.next_token_ids + ablated.next_token_ids))
    return AblationResult(
        component=component,
        mode=mode,
        original=original,
        ablated=ablated,
        candidates=[label(tokenizer.token_text(i)) for i in both],
        candidate_ids=both,
        original_probs=[float(p_original[i]) for i in both],
        ablated_probs=[float(p_ablated[i]) for i in both],
        tokens=[label(tokenizer.token_text(i)) for i in ids],
        dropped=dropped,
    )


def _outcome(
    model: GPT, tokenizer: Tokenizer, ids: list[int], first: Internals, how: Ablation | None, top_k: int, n: int
) -> tuple[Outcome, torch.Tensor]:
    """Loss and top-k from the prompt's pass (`first`), then `n` greedy tokens, each a whole forward pass over the
    last block_size tokens with the same ablation (a cache would keep the unablated keys); and the next-token
    probabilities."""
    vocab = sampling_vocab(model, tokenizer)
    logits = first.logits[0].float()
    loss = None
    if len(ids) > 1:  # over the whole vocabulary, as training measures it
        loss = float(F.cross_entropy(logits[:-1], torch.tensor(ids[1:], device=logits.device)))
    logits = logits[:, :vocab]  # what can be predicted: never the vocabulary's padding
    probs = torch.softmax(logits[-1], dim=-1)
    top = torch.topk(probs, min(top_k, vocab))
    seq, new = list(ids), []
    nxt = int(logits[-1].argmax())
    device = first.logits.device
    for i in range(n):
        new.append(nxt)
        seq.append(nxt)
        if i + 1 < n:
            window = torch.tensor([seq[-model.config.block_size :]], device=device)
            nxt = int(model.forward_inspect(window, how).logits[0, -1, :vocab].argmax())
    outcome = Outcome(
        loss=loss,
        next_tokens=[
            (label(tokenizer.token_text(int(i))), float(p)) for p, i in zip(top.values, top.indices, strict=True)
        ],
        next_token_ids=[int(i) for i in top.indices],
        continuation=tokenizer.decode(new),
    )
    return outcome, probs


@dataclass(frozen=True)
class Attribution:
    """Direct logit attribution: how much each component's output, read straight through the final norm and the
    head, adds to one token's logit at the prompt's last position.

    The final norm divides the residual stream by its size (RMSNorm: its root mean square; LayerNorm: its standard
    deviation, after centring): that scale, taken from the actual final residual, is frozen, so the read-out is
    linear and the parts add up: logit = sum(contributions) + norm_bias. LayerNorm's centring is linear too, and is
    applied to each part."""

    token: str  # the attributed token, as a label
    token_id: int
    logit: float  # its logit at the last position (the model's own)
    components: list[str]  # "token embedding", "position embedding", "L1 H1", ..., "L1 attn bias", "L1 MLP", ...
    contributions: list[float]  # each one's share of the logit
    norm_scale: float  # the final norm's divisor at the last position
    norm_bias: float  # the final LayerNorm's offset's share of the logit (0 for RMSNorm, or without biases)
    top: bool  # the token is the model's top prediction
    tokens: list[str]  # the prompt's tokens as attributed


@torch.no_grad()
def attribute(model: GPT, tokenizer: Tokenizer, prompt: str, token: str = "") -> Attribution:
    """Direct logit attribution of `token` (text of one token; empty: the top prediction) after `prompt`."""
    ids, _ = _prompt_ids(model, tokenizer, prompt)
    vocab = sampling_vocab(model, tokenizer)
    with _eval(model):
        out = model.forward_inspect(torch.tensor([ids], device=model.lm_head.weight.device))
    logits = out.logits[0, -1, :vocab].float()
    best = int(logits.argmax())
    target = best if not token else token_id(tokenizer, token, vocab)
    cfg, h = model.config, model.transformer
    # every part of the final residual at the last position, in float64 so that they add up to the last digit
    names, parts = ["token embedding"], [h.wte.weight[ids[-1]]]
    if cfg.pos == "learned":
        names.append("position embedding")
        parts.append(h.wpe.weight[len(ids) - 1])
    for layer, block in enumerate(h.h):
        attn = cast(Block, block).attn
        z = out.head_outputs[layer][0, :, -1]  # (heads, head_dim)
        w_o = attn.c_proj.weight.view(cfg.n_embd, cfg.n_head, cfg.head_dim)  # head h's slice of c_proj's inputs
        per_head = torch.einsum("hd,chd->hc", z.double(), w_o.double())
        for head in range(cfg.n_head):
            names.append(f"L{layer + 1} H{head + 1}")
            parts.append(per_head[head])
        if attn.c_proj.bias is not None:
            names.append(f"L{layer + 1} attn bias")
            parts.append(attn.c_proj.bias)
        names.append(f"L{layer + 1} MLP")
        parts.append(out.mlp_outputs[layer][0, -1])
    stack = torch.stack([p.double() for p in parts])  # (parts, n_embd): sums to the final residual
    final = out.hidden_states[-1][0, -1].double()
    ln_f = h.ln_f
    direction = model.lm_head.weight[target].double()
    gain = getattr(ln_f, "weight", None)  # (LayerNorm's; RMSNorm's with norm_gain)
    if isinstance(gain, torch.Tensor):
        direction = direction * gain.double()
    norm_bias = 0.0
    if isinstance(ln_f, nn.LayerNorm):
        stack = stack - stack.mean(dim=-1, keepdim=True)
        scale = float(torch.sqrt(final.var(unbiased=False) + ln_f.eps))
        if ln_f.bias is not None:
            norm_bias = float(ln_f.bias.double() @ model.lm_head.weight[target].double())
    else:
        eps = cast(nn.RMSNorm, ln_f).eps
        eps = torch.finfo(out.hidden_states[-1].dtype).eps if eps is None else eps
        scale = float(torch.sqrt(final.square().mean() + eps))
    contributions = (stack @ direction / scale).tolist()
    return Attribution(
        token=label(tokenizer.token_text(target)),
        token_id=target,
        logit=float(logits[target]),
        components=names,
        contributions=contributions,
        norm_scale=scale,
        norm_bias=norm_bias,
        top=target == best,
        tokens=[label(tokenizer.token_text(i)) for i in ids],
    )


def token_id(tokenizer: Tokenizer, token: str, vocab: int) -> int:
    """The id of the one token `token` stands for: its text, or its label (␣ for a space, ↵ for a newline)."""
    unlabelled = "".join(_UNVISIBLE.get(c, c) for c in token)
    found: list[int] = []
    for candidate in dict.fromkeys([token, unlabelled]):
        try:
            found = tokenizer.encode(candidate)
        except UserInputError:
            continue
        if len(found) == 1 and found[0] < vocab:
            return found[0]
    if not found:
        raise UserInputError(f"{token[:40]!r} is not a token this model knows; type one from its vocabulary")
    raise UserInputError(
        f"{token[:40]!r} is {len(found)} tokens for this tokenizer, not one; type a single token (as the next-token "
        "chart shows them)"
    )


def _prompt_ids(model: GPT, tokenizer: Tokenizer, prompt: str, max_tokens: int = MAX_TOKENS) -> tuple[list[int], int]:
    """The prompt's last `max_tokens` tokens (within the context), and how many were cut before them."""
    if not prompt:
        raise UserInputError("enter a prompt to inspect")
    all_ids = tokenizer.encode(prompt)
    ids = all_ids[-min(model.config.block_size, max_tokens) :]
    if not ids:
        raise UserInputError("the prompt has no tokens; enter some text")
    return ids, len(all_ids) - len(ids)


@contextmanager
def _eval(model: GPT) -> Iterator[None]:
    """Eval mode (no dropout) for the duration, the model's own mode after."""
    was = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was)
